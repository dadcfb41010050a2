//! The embedded admin HTTP API: health, readiness, Prometheus metrics and the `/ws/*` admin
//! routes (stats, connection info, disconnects, messages to users/events/rooms/everyone, batches
//! of them, room membership, the event helpers).
//!
//! Owns: routing, admin authorization (JWT with `role: "admin"`), request bodies and JSON
//! responses. Does not touch: sockets or waiting. It is sans-io: a request becomes a [`Plan`],
//! either a response now or asks for reactors and a function that turns their answers into the
//! response. The reactor that read the request carries the plan out as state in its event
//! loop (`reactor::http`), so no thread is ever held by an admin client.

mod batch;
mod message;
mod prometheus;
mod routes;

use std::time::Instant;

use crate::ask::{Answer, Ask};
use crate::http::upgrade::PlainRequest;
use crate::server::ServerHandle;

/// A response about to be written.
pub(crate) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: value.to_string().into_bytes(),
        }
    }

    /// `{"status": "success", "data": data}` (the admin API's response shape).
    pub fn success(data: serde_json::Value) -> Self {
        Self::json(200, &serde_json::json!({ "status": "success", "data": data }))
    }

    /// `{"status": "error", "code": status, "detail": detail}`.
    pub fn error(status: u16, detail: &str) -> Self {
        Self::json(
            status,
            &serde_json::json!({ "status": "error", "code": status, "detail": detail }),
        )
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Appends the response as HTTP/1.1 bytes: without its body for a `HEAD` request (the
    /// length still says what a `GET` would get), and with `Connection: close` unless the
    /// connection stays open for another request.
    pub fn write(&self, out: &mut Vec<u8>, head_only: bool, keep_alive: bool) {
        let headers: Vec<(&str, &str)> = self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        crate::http::write_response_to(
            out,
            self.status,
            &headers,
            self.content_type,
            &self.body,
            crate::http::Framing { head_only, keep_alive },
        );
    }
}

/// Answers to a plan's asks: for each ask, the `(reactor, answer)` pairs that came back.
pub(crate) type Answers = Vec<Vec<(usize, Answer)>>;

/// Turns the answers into the response.
pub(crate) type Finish = Box<dyn FnOnce(Answers) -> Response + Send>;

/// What a complete request calls for.
pub(crate) enum Plan {
    Now(Response),
    /// Ask each listed reactor; once every answer is in (or lost), `finish` makes the response.
    Later {
        asks: Vec<(Ask, Vec<usize>)>,
        finish: Finish,
    },
}

impl Plan {
    pub fn later(asks: Vec<(Ask, Vec<usize>)>, finish: impl FnOnce(Answers) -> Response + Send + 'static) -> Self {
        Plan::Later {
            asks,
            finish: Box::new(finish),
        }
    }
}

/// A refusal the head alone decides, before any of the body is read: a body over
/// `admin_max_body` (413), or an admin route without a valid admin token (401/403).
pub(crate) fn check_head(h: &ServerHandle, req: &PlainRequest) -> Option<Response> {
    if req.content_length > h.config().admin_max_body {
        return Some(Response::error(413, "request body too large"));
    }
    routes::refuse_early(h, req)
}

/// The plan for a complete request (head and body).
pub(crate) fn plan(h: &ServerHandle, req: &PlainRequest, body: &[u8]) -> Plan {
    routes::route(h, req, body)
}

/// For fuzz targets: the status and body the admin API gives a complete request (carrying a
/// plan out by waiting for the reactors), or `None` if the bytes are not a complete request.
#[cfg(feature = "testing")]
pub fn respond_for_testing(handle: &ServerHandle, bytes: &[u8]) -> Option<(u16, Vec<u8>)> {
    use crate::http::upgrade::{self, Parsed};
    let cfg = handle.config();
    let r = match upgrade::parse(bytes, cfg.max_request_bytes, cfg.ws_path.as_deref()) {
        Parsed::Partial => return None,
        Parsed::Reject(r) => Response::error(r.status, r.message),
        Parsed::Upgrade(..) => Response::error(400, "WebSocket upgrades are served on the main listener"),
        Parsed::Plain(req) => match check_head(handle, &req) {
            Some(r) => r,
            None if bytes.len() < req.head_len + req.content_length => return None,
            None => match plan(handle, &req, &bytes[req.head_len..req.head_len + req.content_length]) {
                Plan::Now(r) => r,
                Plan::Later { asks, finish } => finish(handle.carry_out_waiting(asks)),
            },
        },
    };
    Some((r.status, r.body))
}

/// One line per admin request at info level (target `wsedge::access`): peer, method, path
/// without its query (which may hold a token), status, body bytes, milliseconds from the
/// request's first byte to its response being queued.
pub(crate) fn access_log(
    peer: Option<std::net::SocketAddr>,
    method: &str,
    path: &str,
    response: &Response,
    started: Instant,
) {
    if !log::log_enabled!(target: "wsedge::access", log::Level::Info) {
        return;
    }
    log::info!(
        target: "wsedge::access",
        "admin {method} {path} -> {} {}B {}ms peer={}",
        response.status,
        response.body.len(),
        started.elapsed().as_millis(),
        peer.map_or_else(|| "-".to_string(), |a| a.to_string())
    );
}
