//! Admin routes. Every `/ws/*` route needs a JWT with `role: "admin"` (401 without a valid
//! token, 403 without the role); `/health`, `/ready`, `/metrics`, the dashboard page and the
//! JavaScript client are open (the page asks for the token and sends it to `/ws/stats`). Each route turns
//! its request into a [`Plan`]: what to ask which reactors, and the response made from their
//! answers.

use serde_json::{Value, json};

use super::message::{delivered, idempotency_key, kind_and_data, take_exclude_user};
use super::plan::AdminHost;
use super::plan::{Plan, Response};
use crate::ask::{Answer, Ask, Census, Target, merge_pages};
use crate::http::upgrade::{PlainRequest, percent_decode};
use crate::outgoing::Outgoing;

/// The path's segments, percent-decoded (`/ws/rooms/a%20b/` -> `["ws", "rooms", "a b"]`).
fn segments(path: &str) -> Vec<String> {
    path.trim_end_matches('/')
        .split('/')
        .skip(1)
        .map(percent_decode)
        .collect()
}

/// The path the routes see: with `--admin-prefix P`, `P/ws/stats` is `/ws/stats` (and the
/// unprefixed path still works).
fn routed<'a>(h: &dyn AdminHost, path: &'a str) -> &'a str {
    match h.config().admin_prefix.as_deref().and_then(|p| path.strip_prefix(p)) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

pub(crate) fn route(h: &dyn AdminHost, req: &PlainRequest, body: &[u8]) -> Plan {
    let segs = segments(routed(h, &req.path));
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = req.method.as_str();
    let now = |r: Response| Plan::Now(r);
    match segs.as_slice() {
        ["health"] => now(only(m, &["GET", "HEAD"], || {
            // How many are connected is not for every client of the public port (as /metrics).
            let counts = req.admin_port || h.config().public_metrics || authorize(h, req).is_ok();
            if !counts {
                return Response::json(200, &json!({"status": "ok"}));
            }
            let s = h.stats();
            let unix = crate::protocol::Timestamp::now().unix_secs_f64() as u64;
            Response::json(
                200,
                &json!({
                    "status": "ok",
                    "node_id": h.config().node_id,
                    "connections": s.connections,
                    "users": s.users,
                    "subscriptions": s.subscriptions,
                    "uptime_seconds": unix.saturating_sub(h.started_at()),
                }),
            )
        })),
        ["ready"] => now(only(m, &["GET", "HEAD"], || {
            if h.dead_reactors() > 0 {
                Response::json(503, &json!({"status": "failed", "dead_reactors": h.dead_reactors()}))
            } else if h.is_draining() {
                Response::json(503, &json!({"status": "draining"}))
            } else if let Some(c) = h
                .cluster_metrics()
                .filter(|c| !c.up.load(std::sync::atomic::Ordering::Acquire))
            {
                // Not part of the cluster: publishes here fail or reach this node only.
                let why = if c.auth_failed.load(std::sync::atomic::Ordering::Acquire) {
                    "auth failed"
                } else {
                    "down"
                };
                Response::json(503, &json!({"status": "not ready", "cluster": why}))
            } else {
                Response::json(200, &json!({"status": "ready"}))
            }
        })),
        // Users, connections and failure reasons are not for every client of the public port:
        // open on --admin-listen (or with --public-metrics), else to an admin token.
        ["metrics"] => {
            let open = req.admin_port || h.config().public_metrics;
            match if open { Ok(()) } else { authorize(h, req) } {
                Err(refusal) => now(refusal),
                Ok(()) => now(only(m, &["GET", "HEAD"], || Response {
                    status: 200,
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    headers: Vec::new(),
                    body: super::prometheus::render(h).into_bytes(),
                })),
            }
        }
        // The live dashboard (the admin token is entered in the page; /ws/stats checks it).
        ["dashboard"] => now(only(m, &["GET", "HEAD"], || {
            Response {
                status: 200,
                content_type: "text/html; charset=utf-8",
                headers: Vec::new(),
                body: include_str!("dashboard.html").as_bytes().to_vec(),
            }
            .with_header("Cache-Control", "no-cache")
            .with_header("X-Frame-Options", "DENY")
        })),
        // The JavaScript client and its types: importable from any origin, with no build step.
        ["client", file @ ("wsedge.js" | "wsedge.d.ts")] => now(only(m, &["GET", "HEAD"], || {
            let (content_type, text) = match *file {
                "wsedge.js" => ("text/javascript; charset=utf-8", crate::client::WSEDGE_JS),
                _ => ("application/typescript; charset=utf-8", crate::client::WSEDGE_D_TS),
            };
            Response {
                status: 200,
                content_type,
                headers: Vec::new(),
                body: text.as_bytes().to_vec(),
            }
            .with_header("Access-Control-Allow-Origin", "*")
            .with_header("Cache-Control", "public, max-age=300")
        })),
        ["ws", rest @ ..] if is_admin_route(rest) => match authorize(h, req) {
            Err(r) => Plan::Now(r),
            Ok(()) => admin(h, m, rest, req.query.as_deref(), req.idempotency_key.as_deref(), body),
        },
        // The WebSocket endpoint only takes GET (with an upgrade): other methods are 405.
        ["ws"] | ["ws", _] if m != "GET" && m != "HEAD" => {
            now(Response::error(405, "method not allowed").with_header("Allow", "GET"))
        }
        ["ws"] | ["ws", _] => now(Response::error(426, "WebSocket upgrade required")
            .with_header("Upgrade", "websocket")
            .with_header("Sec-WebSocket-Version", "13")),
        _ => now(Response::error(404, "not found")),
    }
}

/// A refusal that does not need the body: an admin route without a valid admin token gets its
/// 401/403 before a byte of the body is read.
pub(crate) fn refuse_early(h: &dyn AdminHost, req: &PlainRequest) -> Option<Response> {
    let segs = segments(routed(h, &req.path));
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["ws", rest @ ..] if is_admin_route(rest) => authorize(h, req).err(),
        _ => None,
    }
}

fn is_admin_route(rest: &[&str]) -> bool {
    matches!(
        rest,
        ["stats"]
            | ["stats", "history"]
            | ["connections"]
            | ["connections", _]
            | ["connections", _, "messages"]
            | ["connections", _, "rpc"]
            | ["users", _]
            | ["users", _, "messages"]
            | ["users", _, "presence"]
            | ["rooms", _, "members"]
            | ["broadcast"]
            | ["batch"]
            | ["events", _]
            | ["rooms", _, "messages"]
            | ["rooms", _, "members", _]
            | ["helpers", _]
            | ["history", _]
    )
}

/// Runs `f` if the method is allowed, else 405 with `Allow`.
fn only(method: &str, allowed: &[&str], f: impl FnOnce() -> Response) -> Response {
    if allowed.contains(&method) {
        f()
    } else {
        not_allowed(allowed)
    }
}

fn authorize(h: &dyn AdminHost, req: &PlainRequest) -> Result<(), Response> {
    let unauthorized = |why: &str| Response::error(401, why).with_header("WWW-Authenticate", "Bearer");
    let Some(verifier) = h.verifier() else {
        return Err(unauthorized("admin API needs JWT authentication configured"));
    };
    let token = req.bearer.as_deref().or_else(|| {
        req.query
            .as_deref()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
    });
    match verifier.verify(token) {
        Err(e) => Err(unauthorized(&format!("invalid token: {e}"))),
        Ok(c) if !c.admin => Err(Response::error(403, "Admin access required")),
        Ok(_) => Ok(()),
    }
}

/// Parses a JSON body; `None` body means `{}`.
fn json_body(body: &[u8]) -> Result<Value, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| Response::error(400, &format!("malformed JSON: {e}")))
}

fn object_body(body: &[u8]) -> Result<serde_json::Map<String, Value>, Response> {
    match json_body(body)? {
        Value::Object(o) => Ok(o),
        _ => Err(Response::error(400, "body must be a JSON object")),
    }
}

/// Delivers `o` to its targets; answers with the recipients reached.
pub(super) fn send(h: &dyn AdminHost, o: Outgoing) -> Plan {
    let id = o.message_id;
    Plan::later(
        h.topology().deliver_asks(&o, std::time::Instant::now()),
        move |answers| delivered(&answers, id),
    )
}

/// Asks `reactors` once and makes the response from their answers.
fn ask(ask: Ask, reactors: Vec<usize>, finish: impl FnOnce(Vec<(usize, Answer)>) -> Response + Send + 'static) -> Plan {
    Plan::later(vec![(ask, reactors)], move |mut answers| {
        finish(answers.pop().unwrap_or_default())
    })
}

/// The sum of `Count` answers.
fn total(answers: &[(usize, Answer)]) -> usize {
    answers.iter().map(|(_, a)| a.count()).sum()
}

fn admin(h: &dyn AdminHost, m: &str, rest: &[&str], query: Option<&str>, key: Option<&str>, body: &[u8]) -> Plan {
    let now = |r: Response| Ok(Plan::Now(r));
    let key = match idempotency_key(key) {
        Ok(k) => k,
        Err(r) => return Plan::Now(r),
    };
    let result = match rest {
        ["stats"] => match m {
            "GET" => Ok(stats(h)),
            _ => now(not_allowed(&["GET"])),
        },
        ["stats", "history"] => match m {
            "GET" => now(Response::success(json!({
                "node_id": h.config().node_id,
                "interval_seconds": 1,
                "samples": h.rate_history(),
            }))),
            _ => now(not_allowed(&["GET"])),
        },
        ["connections"] => match m {
            "GET" => Ok(list_connections(h, query)),
            _ => now(not_allowed(&["GET"])),
        },
        ["connections", id] => match m {
            "GET" | "DELETE" => Ok(connection(h, m, id)),
            _ => now(not_allowed(&["GET", "DELETE"])),
        },
        ["users", user] => match m {
            "GET" => Ok(user_view(h, user)),
            "DELETE" => {
                let user = user.to_string();
                let target = Target::User(user.as_str().into());
                let reactors = h.topology().reactors_for(&target);
                let why = Ask::Disconnect {
                    target,
                    code: 1000,
                    reason: "disconnected by admin".into(),
                };
                Ok(ask(why, reactors, move |a| match total(&a) {
                    0 => Response::error(404, "user has no connections"),
                    n => Response::success(json!({"user_id": user, "disconnected": n})),
                }))
            }
            _ => now(not_allowed(&["GET", "DELETE"])),
        },
        ["users", user, "presence"] => match m {
            "GET" => Ok(presence(h, user)),
            _ => now(not_allowed(&["GET"])),
        },
        ["rooms", room, "members"] => match m {
            "GET" => Ok(room_members(h, room)),
            _ => now(not_allowed(&["GET"])),
        },
        ["connections", id, "messages"] => post(m, body, |b| {
            let Ok(id) = uuid::Uuid::parse_str(id) else {
                return Err(Response::error(400, "connection id must be a UUID"));
            };
            let (kind, data) = kind_and_data(b, None)?;
            Ok(send(
                h,
                Outgoing::envelope_keyed(key, Target::Connection(id), &kind, data),
            ))
        }),
        ["connections", id, "rpc"] => post(m, body, |b| rpc_reply(h, id, b)),
        ["users", user, "messages"] => post(m, body, |b| {
            let (kind, data) = kind_and_data(b, None)?;
            Ok(send(
                h,
                Outgoing::envelope_keyed(key, Target::User((*user).into()), &kind, data),
            ))
        }),
        ["broadcast"] => post(m, body, |mut b| {
            let exclude = take_exclude_user(&mut b)?;
            Ok(send(
                h,
                Outgoing::admin_broadcast_keyed(key, b).excluding(exclude.as_deref()),
            ))
        }),
        ["batch"] if key.is_some() => now(Response::error(
            400,
            "a batch takes no Idempotency-Key header: give each command params.idempotency_key",
        )),
        ["batch"] => post(m, body, |b| super::batch::plan(h, b)),
        ["events", event] => post(m, body, |b| {
            let data = b.get("data").cloned().unwrap_or(json!({}));
            match h.config().event_bit(event) {
                Some(bit) => Ok(send(
                    h,
                    Outgoing::envelope_keyed(key, Target::Subscribers(bit), event, data),
                )),
                None => Err(Response::error(404, &format!("unknown event type {event:?}"))),
            }
        }),
        ["rooms", room, "messages"] => post(m, body, |mut b| {
            let exclude = take_exclude_user(&mut b)?;
            let (kind, data) = kind_and_data(b, Some("room.message"))?;
            let target = Target::Room((*room).into());
            Ok(send(
                h,
                Outgoing::envelope_keyed(key, target, &kind, data).excluding(exclude.as_deref()),
            ))
        }),
        ["rooms", room, "members", user] => match m {
            "PUT" | "DELETE" => {
                let add = m == "PUT";
                let (room, user) = (room.to_string(), user.to_string());
                let change = Ask::Membership {
                    room: room.as_str().into(),
                    user: user.as_str().into(),
                    add,
                };
                Ok(ask(
                    change,
                    vec![h.topology().home_of(&user)],
                    move |a| match crate::ask::member_count(&a) {
                        Some(n) => {
                            Response::success(json!({"room": room, "user_id": user, "member": add, "connections": n}))
                        }
                        None => Response::error(404, "user has no connections"),
                    },
                ))
            }
            _ => now(not_allowed(&["PUT", "DELETE"])),
        },
        ["helpers", name] => post(m, body, |b| helper(h, name, b)),
        ["history", channel] => match m {
            "GET" | "DELETE" => Ok(history(h, m, channel, query)),
            _ => now(not_allowed(&["GET", "DELETE"])),
        },
        _ => now(Response::error(404, "not found")),
    };
    result.unwrap_or_else(Plan::Now)
}

fn not_allowed(allowed: &[&str]) -> Response {
    Response::error(405, "method not allowed").with_header("Allow", allowed.join(", "))
}

fn post(
    m: &str,
    body: &[u8],
    f: impl FnOnce(serde_json::Map<String, Value>) -> Result<Plan, Response>,
) -> Result<Plan, Response> {
    if m != "POST" {
        return Ok(Plan::Now(not_allowed(&["POST"])));
    }
    f(object_body(body)?)
}

/// `POST /ws/connections/{id}/rpc` `{"message_id", "result" | "error"}`: the backend's answer
/// to an rpc it took without answering, to the connection that sent it, on whatever node.
fn rpc_reply(h: &dyn AdminHost, id: &str, b: serde_json::Map<String, Value>) -> Result<Plan, Response> {
    let Ok(connection) = uuid::Uuid::parse_str(id) else {
        return Err(Response::error(400, "connection id must be a UUID"));
    };
    let Some(Ok(message_id)) = b.get("message_id").and_then(Value::as_str).map(uuid::Uuid::parse_str) else {
        return Err(Response::error(400, "message_id must be the rpc's message id (a UUID)"));
    };
    let raw = |v: &Value| serde_json::value::to_raw_value(v).map_err(|_| Response::error(400, "bad JSON value"));
    let outcome = match (b.get("result"), b.get("error")) {
        (Some(r), None) => Ok(raw(r)?),
        (None, Some(e)) => Err(raw(e)?),
        _ => return Err(Response::error(400, "give exactly one of result and error")),
    };
    let reactors = h.topology().reactor_of(&connection).into_iter().collect();
    let reply = Ask::RpcReply {
        connection,
        message_id,
        outcome,
    };
    Ok(ask(reply, reactors, move |a| {
        let unanswered = a
            .iter()
            .any(|(_, x)| matches!(x, Answer::Lost | Answer::Unavailable | Answer::Unknown));
        match total(&a) {
            // A reactor or node that did not answer may hold the rpc: not a 404.
            0 if unanswered => Response::json(
                504,
                &json!({"status": "error", "code": 504, "outcome": "unknown",
                        "detail": "a reactor or node that may hold the connection did not answer"}),
            ),
            0 => Response::error(
                404,
                "no rpc with this message id is waiting on this connection (answered, timed out, or never sent)",
            ),
            _ => Response::success(json!({"delivered": true, "message_id": message_id.to_string()})),
        }
    }))
}

/// `GET /ws/connections?user_id=&limit=&after=`: a page of connection info (default 100, at
/// most 1000) and `next` (the id to pass as `after` for the next page, null at the end).
fn list_connections(h: &dyn AdminHost, query: Option<&str>) -> Plan {
    let param = |name: &str| {
        query.and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                .map(percent_decode)
        })
    };
    let limit = match param("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => return Plan::Now(Response::error(400, "limit must be between 1 and 1000")),
    };
    let after = match param("after").map(|a| a.parse::<uuid::Uuid>()) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return Plan::Now(Response::error(400, "after must be a connection id")),
    };
    let user = param("user_id").filter(|u| !u.is_empty());
    Plan::later(h.topology().page_asks(user.as_deref(), after, limit), move |answers| {
        let pages = answers
            .into_iter()
            .flatten()
            .filter_map(|(r, a)| match a {
                Answer::Page(p) => Some((r, p)),
                _ => None,
            })
            .collect();
        let (page, next) = merge_pages(pages, limit);
        Response::success(json!({
            "connections": page,
            "count": page.len(),
            "next": next.map(|n| n.to_string()),
        }))
    })
}

/// `GET /ws/history/{channel}?since=&limit=` and `DELETE /ws/history/{channel}`, answered by
/// the channel's home reactor.
fn history(h: &dyn AdminHost, m: &str, channel: &str, query: Option<&str>) -> Plan {
    let cfg = h.config();
    if !cfg.history_enabled() {
        return Plan::Now(Response::error(404, "history is off on this node"));
    }
    let known = match channel.split_once(':') {
        Some(("event", e)) => cfg.event_bit(e).is_some(),
        Some(("room", r)) => crate::rooms::valid_room_name(r),
        Some(("user", u)) => !u.is_empty(),
        _ => false,
    };
    if !known {
        return Plan::Now(Response::error(
            404,
            "a channel is event:<known event type>, room:<room> or user:<user id>",
        ));
    }
    let name = channel.to_string();
    if m == "DELETE" {
        let ask = Ask::ClearHistory {
            channel: channel.into(),
        };
        return self::ask(ask, h.topology().all_reactors(), move |a| match a.into_iter().next() {
            Some((_, Answer::Cleared { existed, position })) => Response::success(json!({
                "channel": name, "deleted": existed, "offset": position.offset, "epoch": position.epoch,
                "position": position,
            })),
            _ => Response::error(503, "the channel's reactor did not answer"),
        });
    }
    let param = |key: &str| {
        query.and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        })
    };
    let since = match param("since").map(str::parse::<u64>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return Plan::Now(Response::error(400, "since must be an offset (a number)")),
    };
    let limit = match param("limit").map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => return Plan::Now(Response::error(400, "limit must be between 1 and 1000")),
    };
    let ask = Ask::ReadHistory {
        channel: channel.into(),
        since,
        limit,
    };
    self::ask(ask, h.topology().all_reactors(), move |a| match a.into_iter().next() {
        Some((_, Answer::History { messages, position })) => Response::success(json!({
            "channel": name, "messages": messages, "offset": position.offset, "epoch": position.epoch,
            "position": position,
        })),
        _ => Response::error(503, "the channel's reactor did not answer"),
    })
}

/// `GET /ws/users/{user_id}/presence`: whether the user is connected, and where.
fn presence(h: &dyn AdminHost, user: &str) -> Plan {
    let user_id = user.to_string();
    Plan::later(h.topology().page_asks(Some(user), None, 1000), move |answers| {
        let connections: Vec<Value> = pages(answers)
            .map(|c| json!({"connection_id": c.connection_id, "node_id": c.node_id, "connected_at": c.connected_at}))
            .collect();
        Response::success(json!({
            "user_id": user_id,
            "online": !connections.is_empty(),
            "connections": connections,
        }))
    })
}

/// The connections listed in the answers of page asks.
fn pages(answers: super::plan::Answers) -> impl Iterator<Item = crate::ask::ConnectionInfo> {
    answers
        .into_iter()
        .flatten()
        .filter_map(|(_, a)| match a {
            Answer::Page(p) => Some(p),
            _ => None,
        })
        .flatten()
}

/// `GET /ws/users/{user_id}`: one user's view over every node: its connections (full info),
/// and what they add up to.
fn user_view(h: &dyn AdminHost, user: &str) -> Plan {
    let user_id = user.to_string();
    Plan::later(h.topology().page_asks(Some(user), None, 1000), move |answers| {
        let conns: Vec<crate::ask::ConnectionInfo> = pages(answers).collect();
        let mut rooms: Vec<&str> = conns.iter().flat_map(|c| c.rooms.iter().map(String::as_str)).collect();
        rooms.sort_unstable();
        rooms.dedup();
        let mut subscriptions: Vec<&str> = conns
            .iter()
            .flat_map(|c| c.subscriptions.iter().map(String::as_str))
            .collect();
        subscriptions.sort_unstable();
        subscriptions.dedup();
        let last_activity = conns.iter().map(|c| c.last_activity.as_str()).max();
        Response::success(json!({
            "user_id": user_id,
            "online": !conns.is_empty(),
            "connection_count": conns.len(),
            "message_count": conns.iter().map(|c| c.message_count).sum::<u64>(),
            "last_activity": last_activity,
            "rooms": rooms,
            "subscriptions": subscriptions,
            "connections": conns,
        }))
    })
}

/// `GET /ws/rooms/{room}/members`: the users in the room (sorted), over every reactor.
fn room_members(h: &dyn AdminHost, room: &str) -> Plan {
    let name = room.to_string();
    let ask = Ask::RoomMembers { room: room.into() };
    self::ask(ask, h.topology().all_reactors(), move |answers| {
        let mut users: Vec<String> = answers
            .into_iter()
            .filter_map(|(_, a)| match a {
                Answer::Users(u) => Some(u),
                _ => None,
            })
            .flatten()
            .collect();
        users.sort_unstable();
        users.dedup();
        Response::success(json!({"room": name, "members": users, "count": users.len()}))
    })
}

fn stats(h: &dyn AdminHost) -> Plan {
    Plan::later_reading(vec![(Ask::Census, h.topology().all_reactors())], move |answers, h| {
        let mut mine = Census::default();
        let mut others = Vec::new();
        for (_, a) in answers.into_iter().flatten() {
            match a {
                Answer::Census(c) => mine.merge(c),
                Answer::Node(n) => others.push(n),
                _ => {}
            }
        }
        let now = crate::protocol::Timestamp::now().to_string();
        let node = |id: &str, started: u64, c: &Census| {
            json!({
                "node_id": id,
                "connections": c.connections,
                "users": c.unique_users,
                "started_at": crate::protocol::Timestamp(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(started)
                ).to_string(),
                "last_seen": now,
            })
        };
        let mut nodes = vec![node(&h.config().node_id, h.started_at(), &mine)];
        others.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let mut census = mine;
        for n in &others {
            nodes.push(node(&n.node_id, n.started_at, &n.census));
            census.merge(n.census.clone());
        }
        let mut r = stats_response(h, &census);
        if let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&r.body) {
            if let Some(Value::Object(data)) = body.get_mut("data") {
                data.insert("nodes".into(), Value::Array(nodes));
                data.insert("clustered".into(), Value::Bool(h.topology().is_clustered()));
            }
            r.body = Value::Object(body).to_string().into_bytes();
        }
        r
    })
}

fn stats_response(h: &dyn AdminHost, census: &Census) -> Response {
    let cfg = h.config();
    let histogram: serde_json::Map<String, Value> = census
        .histogram
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (k.to_string(), json!(n)))
        .collect();
    let average = if census.unique_users == 0 {
        0.0
    } else {
        census.connections as f64 / census.unique_users as f64
    };
    Response::success(json!({
        "total_connections": census.connections,
        "unique_users": census.unique_users,
        "active_users": census.unique_users,
        "connections_per_user": {
            "average": (average * 100.0).round() / 100.0,
            "max": census.max_connections_per_user,
            "histogram": histogram,
        },
        "average_connections_per_user": (average * 100.0).round() / 100.0,
        "rooms": census.rooms,
        "connections_per_reactor": h.stats().connections_per_reactor,
        "draining": h.is_draining(),
        "server_info": {
            "max_connections_per_user": cfg.max_connections_per_user,
            "max_total_connections": cfg.max_connections,
            "rate_limit_messages": cfg.rate_limit_messages,
            "rate_limit_window": cfg.rate_limit_window.as_secs_f64(),
            "heartbeat_interval": cfg.heartbeat_interval.as_secs_f64(),
            "connection_timeout": cfg.connection_timeout.as_secs_f64(),
            "max_message_size": cfg.max_message_size,
            "max_outbound_bytes": cfg.max_outbound_bytes,
            "workers": cfg.workers,
            "node_id": cfg.node_id,
        },
    }))
}

fn connection(h: &dyn AdminHost, m: &str, id: &str) -> Plan {
    let Ok(id) = uuid::Uuid::parse_str(id) else {
        return Plan::Now(Response::error(400, "connection id must be a UUID"));
    };
    let reactors: Vec<usize> = h.topology().reactor_of(&id).into_iter().collect();
    if m == "DELETE" {
        let close = Ask::Disconnect {
            target: Target::Connection(id),
            code: 1000,
            reason: "disconnected by admin".into(),
        };
        return ask(close, reactors, move |a| match total(&a) {
            0 => Response::error(404, "Connection not found"),
            n => Response::success(json!({"connection_id": id.to_string(), "disconnected": n})),
        });
    }
    ask(Ask::Inspect { id }, reactors, |a| {
        let found = a.into_iter().find_map(|(_, a)| match a {
            Answer::Info(Some(info)) => Some(info),
            _ => None,
        });
        match found {
            Some(info) => Response::success(serde_json::to_value(info).unwrap_or_default()),
            None => Response::error(404, "Connection not found"),
        }
    })
}

fn field<'a>(b: &'a serde_json::Map<String, Value>, name: &str) -> Result<&'a str, Response> {
    b.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Response::error(400, &format!("'{name}' must be a non-empty string")))
}

fn users(b: &serde_json::Map<String, Value>) -> Result<Option<Vec<String>>, Response> {
    match b.get("target_users") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|u| {
                u.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Response::error(400, "'target_users' must be strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Err(Response::error(400, "'target_users' must be a list")),
    }
}

/// The event helpers.
fn helper(h: &dyn AdminHost, name: &str, b: serde_json::Map<String, Value>) -> Result<Plan, Response> {
    let progress = |b: &serde_json::Map<String, Value>| -> Result<u64, Response> {
        b.get("progress")
            .and_then(Value::as_u64)
            .filter(|p| *p <= 100)
            .ok_or_else(|| Response::error(400, "'progress' must be an integer 0..=100"))
    };
    let o = match name {
        "upload-progress" => {
            // The byte counts, when given, travel with it (non-negative integers).
            let bytes = |k: &str| match b.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| Response::error(400, &format!("'{k}' must be a non-negative integer"))),
            };
            Outgoing::upload_progress_bytes(
                field(&b, "user_id")?,
                field(&b, "upload_id")?,
                progress(&b)?,
                bytes("bytes_uploaded")?,
                bytes("total_bytes")?,
            )
        }
        "upload-completed" => Outgoing::upload_completed(
            field(&b, "user_id")?,
            field(&b, "upload_id")?,
            b.get("result").cloned().unwrap_or(json!({})),
        ),
        "upload-error" => Outgoing::upload_error(field(&b, "user_id")?, field(&b, "upload_id")?, field(&b, "error")?),
        "system-notification" => Outgoing::system_notification(
            field(&b, "message")?,
            b.get("level").and_then(Value::as_str).unwrap_or("info"),
            users(&b)?.as_deref(),
        ),
        "review-updated" => Outgoing::review_updated(
            field(&b, "review_id")?,
            b.get("changes").cloned().unwrap_or(json!({})),
            users(&b)?.as_deref(),
            h.config().event_bit("review.updated"),
        ),
        "file-status" => {
            let p = if b.contains_key("progress") {
                Some(progress(&b)?)
            } else {
                None
            };
            Outgoing::file_status(field(&b, "user_id")?, field(&b, "file_id")?, field(&b, "status")?, p)
        }
        _ => return Ok(Plan::Now(Response::error(404, "unknown helper"))),
    };
    Ok(send(h, o))
}
