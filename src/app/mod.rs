//! The built-in applications: the wsedge protocol server and the echo server.
//!
//! Owns: what client messages mean (ping, heartbeat, subscribe, unsubscribe, join, leave,
//! upload.cancel) and the echo/broadcast behaviour for conformance suites and peer benchmarks.
//! Does not touch: frames, sockets or limits enforcement beyond asking `Ctx`.

mod forward;
mod helpers;

pub use helpers::EventHelpers;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::handler::{Ctx, Handler};
use crate::protocol::{ErrorCode, Timestamp, data_as, parse_client_message};
use crate::ws::Violation;

/// Features announced in `connection.established`.
/// A fixed list (clients may compare it).
pub const FEATURES: [&str; 4] = ["heartbeat", "subscriptions", "rate_limiting", "message_validation"];

/// Most rooms or events one `join`/`leave`/`subscribe`/`unsubscribe` may name: each costs an
/// authorization check and a line in the reply, so a single message's cost stays bounded.
pub const MAX_ITEMS_PER_REQUEST: usize = 64;

/// Application hooks of the protocol server, for message types the protocol hands over.
pub trait ProtocolHooks: Send + Sync + 'static {
    /// A validated `upload.cancel`.
    fn on_upload_cancel(&self, ctx: &mut Ctx<'_>, upload_id: &str) {
        log::info!("upload cancel requested: {upload_id} from {}", ctx.connection_id());
    }
    /// A message of a type the protocol does not know (rate limit and format already checked).
    /// Return true if handled; false answers `INVALID_MESSAGE_TYPE`.
    fn on_message(&self, _ctx: &mut Ctx<'_>, _kind: &str, _data: Option<&RawValue>) -> bool {
        false
    }
    /// A binary message (rate limit already applied).
    fn on_binary(&self, ctx: &mut Ctx<'_>, data: &[u8]) {
        log::debug!("binary message of {} bytes from {}", data.len(), ctx.connection_id());
    }
}

/// Hooks that only log.
pub struct LogHooks;
impl ProtocolHooks for LogHooks {}

/// The wsedge protocol server (the `wsedge` binary's application).
pub struct ProtocolApp {
    hooks: Box<dyn ProtocolHooks>,
}

impl Default for ProtocolApp {
    fn default() -> Self {
        ProtocolApp {
            hooks: Box::new(LogHooks),
        }
    }
}

impl ProtocolApp {
    pub fn with_hooks(hooks: impl ProtocolHooks) -> Self {
        ProtocolApp { hooks: Box::new(hooks) }
    }
}

#[derive(Serialize)]
struct Limits {
    max_message_size: usize,
    rate_limit_messages: u32,
    rate_limit_window: f64,
    heartbeat_interval: f64,
}

#[derive(Serialize)]
struct Established<'a> {
    connection_id: uuid::fmt::Hyphenated,
    user_id: Option<&'a str>,
    server_time: Timestamp,
    features: &'a [&'a str],
    limits: Limits,
    /// Where the user's channel stands (with history on): the place to recover from later.
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<ChannelPosition>,
    /// The outcome of the recovery the request asked for (`recover_offset`, `recover_epoch`);
    /// when recovered, the missing messages follow this message.
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery: Option<Recovered>,
}

#[derive(Serialize)]
struct ChannelPosition {
    channel: String,
    offset: u64,
    epoch: String,
}

#[derive(Deserialize)]
struct RecoverData {
    channels: std::collections::BTreeMap<String, RecoverFrom>,
}

#[derive(Deserialize)]
struct RecoverFrom {
    offset: u64,
    /// May be left out with offset 0: "from the first message kept, whatever the epoch" (a
    /// client that has never seen the channel).
    #[serde(default)]
    epoch: String,
    /// The position in this connection's `connection.established`: later messages were sent
    /// live on this connection and are not replayed.
    #[serde(default)]
    until: Option<u64>,
}

#[derive(Serialize)]
struct Recovered {
    recovered: bool,
    offset: u64,
    epoch: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

#[derive(Deserialize)]
struct PingData<'a> {
    #[serde(rename = "pingId", borrow, default)]
    ping_id: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct PongData<'a> {
    timestamp: Timestamp,
    #[serde(rename = "pingId")]
    ping_id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct EventsData {
    #[serde(default)]
    events: Option<Vec<serde_json::Value>>,
    /// Per event: where the client's copy of the channel ends (subscribe only).
    #[serde(default)]
    recover: Option<std::collections::BTreeMap<String, RecoverFrom>>,
}

#[derive(Serialize)]
struct SubscriptionAck<'a> {
    action: &'a str,
    events: Vec<&'a str>,
    invalid_events: Vec<&'a serde_json::Value>,
    subscriptions: Vec<&'a str>,
    /// Events the backend refused (`--auth-proxy-check subscribe`), with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    refused: Vec<Value>,
}

/// The most of a `pingId` echoed back: a scalar of bounded size, never a structure the client
/// chose (a 30,000-deep array would otherwise be reflected).
fn echoable_ping_id(id: &RawValue) -> bool {
    let raw = id.get();
    raw.len() <= 128 && !raw.starts_with(['[', '{'])
}

#[derive(Deserialize)]
struct TokenData {
    #[serde(default)]
    token: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct TokenRefreshed {
    /// Unix seconds; null for a token without `exp`.
    expires_at: Option<u64>,
}

#[derive(Deserialize)]
struct UploadCancelData {
    #[serde(default)]
    upload_id: Option<serde_json::Value>,
}

impl Handler for ProtocolApp {
    fn on_open(&self, ctx: &mut Ctx<'_>) {
        let cfg = ctx.config();
        let limits = Limits {
            max_message_size: cfg.max_message_size,
            rate_limit_messages: cfg.rate_limit_messages,
            rate_limit_window: cfg.rate_limit_window.as_secs_f64(),
            heartbeat_interval: cfg.heartbeat_interval.as_secs_f64(),
        };
        let id = ctx.connection_id().hyphenated();
        let user = ctx.user_id().map(str::to_owned);
        let greet = move |ctx: &mut Ctx<'_>, position: Option<ChannelPosition>, recovery: Option<Recovered>| {
            ctx.send_message(
                "connection.established",
                Established {
                    connection_id: id,
                    user_id: user.as_deref(),
                    server_time: Timestamp::now(),
                    features: &FEATURES,
                    limits,
                    position,
                    recovery,
                },
            );
        };
        if ctx.is_clustered() && ctx.keeps_history() {
            // The position lives in Redis: the greeting goes out when it answered (the user's
            // messages meanwhile wait behind it and the replay).
            let from = ctx.take_recovery_request();
            let asked = from.is_some();
            let channel = format!("user:{}", ctx.user_id().unwrap_or_default());
            ctx.recover_user_from(from, None, move |ctx, recovered, pos| {
                let recovery = asked.then(|| Recovered {
                    recovered,
                    offset: pos.offset,
                    epoch: pos.epoch.clone(),
                    error: None,
                });
                let position = ChannelPosition {
                    channel,
                    offset: pos.offset,
                    epoch: pos.epoch.clone(),
                };
                greet(ctx, Some(position), recovery);
            });
            return;
        }
        let recovery = ctx.opening_recovery().map(|(recovered, p)| Recovered {
            recovered,
            offset: p.offset,
            epoch: p.epoch,
            error: None,
        });
        let position = ctx.user_position().map(|(channel, p)| ChannelPosition {
            channel,
            offset: p.offset,
            epoch: p.epoch,
        });
        greet(ctx, position, recovery);
    }

    fn on_text(&self, ctx: &mut Ctx<'_>, text: &str) {
        if let Err(limited) = ctx.check_rate() {
            ctx.send_rate_limited(limited);
            return;
        }
        let msg = match parse_client_message(text) {
            Ok(m) => m,
            Err(why) => {
                ctx.send_error(ErrorCode::InvalidMessageFormat, why);
                return;
            }
        };
        match &*msg.kind {
            "ping" => match data_as::<PingData>(msg.data) {
                Ok(PingData { ping_id: Some(id) }) if !echoable_ping_id(id) => {
                    ctx.send_error(
                        ErrorCode::InvalidMessageFormat,
                        "pingId must be a string, number, boolean or null of at most 128 bytes",
                    );
                }
                Ok(d) => {
                    ctx.send_message(
                        "pong",
                        PongData {
                            timestamp: Timestamp::now(),
                            ping_id: d.ping_id,
                        },
                    );
                }
                Err(_) => {
                    ctx.send_error(ErrorCode::InvalidMessageFormat, "ping data must be an object");
                }
            },
            // Any message refreshes liveness; heartbeat exists for exactly that, and pong is the
            // answer of clients to the JSON-level ping (--json-heartbeat).
            "heartbeat" | "pong" => {}
            "subscribe" | "unsubscribe" => self.subscription(ctx, &msg.kind, msg.data),
            "token.refresh" => match data_as::<TokenData>(msg.data) {
                Ok(TokenData {
                    token: Some(serde_json::Value::String(token)),
                }) => match ctx.refresh_token(&token) {
                    Ok(expires_at) => {
                        ctx.send_message("token.refreshed", TokenRefreshed { expires_at });
                    }
                    Err(e) => {
                        ctx.send_error(ErrorCode::InvalidToken, &e.to_string());
                    }
                },
                _ => {
                    ctx.send_error(
                        ErrorCode::InvalidMessageFormat,
                        "token.refresh needs data.token (a string)",
                    );
                }
            },
            "join" | "leave" => self.rooms(ctx, &msg.kind, msg.data),
            "recover" => self.recover(ctx, msg.data),
            "upload.cancel" => match data_as::<UploadCancelData>(msg.data) {
                Ok(UploadCancelData {
                    upload_id: Some(serde_json::Value::String(id)),
                }) if !id.is_empty() => {
                    ctx.count_upload_cancel();
                    if !forward::forward(ctx, "upload.cancel", msg.id, msg.data) {
                        self.hooks.on_upload_cancel(ctx, &id);
                    }
                }
                _ => {
                    ctx.send_error(
                        ErrorCode::InvalidMessageFormat,
                        "upload.cancel needs data.upload_id (a non-empty string)",
                    );
                }
            },
            other if forward::forward(ctx, other, msg.id, msg.data) => {}
            other if self.hooks.on_message(ctx, other, msg.data) => {}
            other => {
                let shown: String = other.chars().take(64).collect();
                ctx.send_error(ErrorCode::InvalidMessageType, &format!("Unknown message type: {shown}"));
            }
        }
    }

    fn on_binary(&self, ctx: &mut Ctx<'_>, data: &[u8]) {
        if let Err(limited) = ctx.check_rate() {
            ctx.send_rate_limited(limited);
            return;
        }
        self.hooks.on_binary(ctx, data);
    }

    fn on_violation(&self, ctx: &mut Ctx<'_>, violation: Violation) {
        if violation == Violation::TooBig {
            let max = ctx.config().max_message_size;
            ctx.send_error(ErrorCode::MessageTooLarge, &format!("Message exceeds {max} bytes"));
        }
    }
}

/// An acknowledgement's `positions`: per name (event or room), its channel, where it stands,
/// and whether it was recovered (only if asked).
fn positions_of(names: &[String], outcomes: Vec<crate::history::RecoveryOutcome>) -> serde_json::Map<String, Value> {
    let mut positions = serde_json::Map::new();
    for (name, o) in names.iter().zip(outcomes) {
        let mut p = json!({"channel": o.channel});
        if let Some(pos) = o.position {
            p["offset"] = pos.offset.into();
            p["epoch"] = pos.epoch.into();
        }
        if let Some(r) = o.recovered {
            p["recovered"] = r.into();
        }
        positions.insert(name.clone(), p);
    }
    positions
}

impl ProtocolApp {
    /// `join` with history on: every room joins when its channel's reactor has answered, so the
    /// acknowledgement carries each room's exact position (`positions`); rooms named in
    /// `recover` get their missing messages right after it.
    fn join_recovering(
        ctx: &mut Ctx<'_>,
        rooms: Vec<serde_json::Value>,
        recover: std::collections::BTreeMap<String, RecoverFrom>,
        denied: Vec<(Value, String)>,
    ) {
        let mut accepted: Vec<String> = Vec::new();
        let mut refused: Vec<Value> = denied
            .into_iter()
            .map(|(room, reason)| json!({"room": room, "reason": reason}))
            .collect();
        let mut items = Vec::new();
        let mut named = Vec::new();
        let mut member_of = ctx.rooms();
        for room in rooms {
            let Some(name) = room.as_str().map(str::to_string) else {
                refused.push(json!({"room": room, "reason": "room names are strings"}));
                continue;
            };
            if named.contains(&name) {
                // Named twice: one join, listed as asked.
                accepted.push(name);
                continue;
            }
            // The rooms of this request count toward the limit before they are joined.
            let over = !member_of.contains(&name) && member_of.len() >= ctx.config().max_rooms_per_user;
            let check = if over {
                Err(crate::handler::RoomRefusal::TooManyRooms)
            } else {
                ctx.may_join_room(&name)
            }
            .map(|()| {
                items.push(crate::history::RecoverItem {
                    channel: format!("room:{name}"),
                    bit: 0,
                    room: Some(name.clone()),
                    from: recover.get(&name).map(|f| (f.offset, f.epoch.clone())),
                    until: None,
                });
                named.push(name.clone());
                if !member_of.contains(&name) {
                    member_of.push(name.clone());
                }
            });
            match check {
                Ok(()) => accepted.push(name),
                Err(why) => refused.push(json!({"room": room, "reason": why.to_string()})),
            }
        }
        let finish = Box::new(
            move |ctx: &mut Ctx<'_>, outcomes: Vec<crate::history::RecoveryOutcome>| {
                let positions = positions_of(&named, outcomes);
                let names: Vec<&str> = accepted.iter().map(String::as_str).collect();
                forward::membership_event(ctx, "join", &names);
                let memberships = ctx.rooms();
                ctx.send_message(
                    "room.joined",
                    json!({"rooms": accepted, "refused": refused, "memberships": memberships, "positions": positions}),
                );
            },
        );
        ctx.subscribe_with_positions(items, finish);
    }

    /// `subscribe` with history on: every event joins at its channel's exact position (told in
    /// the acknowledgement's `positions`), and those named in `recover` get the messages after
    /// the client's offset first (`recovered: true`) or nothing (`recovered: false`).
    fn subscribe_at_positions(
        ctx: &mut Ctx<'_>,
        events: Vec<serde_json::Value>,
        recover: std::collections::BTreeMap<String, RecoverFrom>,
        denied: Vec<(Value, String)>,
    ) {
        let refused: Vec<Value> = denied
            .into_iter()
            .map(|(event, reason)| json!({"event": event, "reason": reason}))
            .collect();
        let mut valid: Vec<String> = Vec::new();
        let mut invalid = Vec::new();
        let mut items = Vec::new();
        for e in events {
            match e
                .as_str()
                .and_then(|s| ctx.config().event_bit(s).map(|b| (s.to_string(), b)))
            {
                Some((name, _)) if valid.contains(&name) => {}
                Some((name, bit)) => {
                    items.push(crate::history::RecoverItem {
                        channel: format!("event:{name}"),
                        bit,
                        room: None,
                        from: recover.get(&name).map(|r| (r.offset, r.epoch.clone())),
                        until: None,
                    });
                    valid.push(name);
                }
                None => invalid.push(e),
            }
        }
        let finish = Box::new(
            move |ctx: &mut Ctx<'_>, outcomes: Vec<crate::history::RecoveryOutcome>| {
                let names: Vec<&str> = valid.iter().map(String::as_str).collect();
                forward::membership_event(ctx, "subscribe", &names);
                let bits = ctx.subscriptions();
                let current: Vec<&str> = ctx
                    .config()
                    .subscribable_events
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| bits & (1 << i) != 0)
                    .map(|(_, e)| e.as_str())
                    .collect();
                let positions = positions_of(&valid, outcomes);
                let mut ack = serde_json::json!({
                    "action": "subscribe",
                    "events": valid,
                    "invalid_events": invalid,
                    "subscriptions": current,
                    "positions": positions,
                });
                if !refused.is_empty() {
                    ack["refused"] = Value::Array(refused);
                }
                let failed = crate::protocol::subscription_failure(&ack);
                ctx.send_message("subscription.acknowledged", ack);
                if let Some(why) = failed {
                    ctx.send_error(ErrorCode::SubscriptionFailed, &why);
                }
            },
        );
        ctx.subscribe_with_positions(items, finish);
    }

    /// `recover`: `{"channels": {"user:<id>": {"offset", "epoch"}}}` answers `recovery.result`
    /// with, per channel, `recovered` and the current position; the missing messages of a
    /// recovered channel follow it. Only the connection's own user channel can be recovered
    /// this way (events and rooms recover with `subscribe` and `join`).
    fn recover(&self, ctx: &mut Ctx<'_>, data: Option<&RawValue>) {
        let Ok(req) = data_as::<RecoverData>(data) else {
            ctx.send_error(
                ErrorCode::InvalidMessageFormat,
                "recover needs data.channels: {channel: {offset, epoch}}",
            );
            return;
        };
        if req.channels.len() > MAX_ITEMS_PER_REQUEST {
            ctx.send_error(ErrorCode::InvalidMessageFormat, "too many channels in one recover");
            return;
        }
        let own = ctx.user_id().map(|u| format!("user:{u}"));
        let mut results = serde_json::Map::new();
        let mut replay = None;
        let keeps = ctx.keeps_history();
        for (channel, from) in req.channels {
            let r = if keeps && Some(&channel) == own.as_ref() {
                replay = Some(from);
                continue;
            } else if keeps {
                Recovered {
                    recovered: false,
                    offset: 0,
                    epoch: ctx.user_position().map(|(_, p)| p.epoch).unwrap_or_default(),
                    error: Some("only the connection's own user channel can be recovered here"),
                }
            } else {
                Recovered {
                    recovered: false,
                    offset: 0,
                    epoch: String::new(),
                    error: Some("history is off"),
                }
            };
            results.insert(channel, serde_json::to_value(r).unwrap_or_default());
        }
        // The acknowledgement goes first; the replayed messages are queued right behind it.
        let Some(from) = replay else {
            ctx.send_message("recovery.result", serde_json::json!({ "channels": results }));
            return;
        };
        let channel = own.unwrap_or_default();
        ctx.recover_user(from.offset, &from.epoch, from.until, move |ctx, recovered, pos| {
            let r = Recovered {
                recovered,
                offset: pos.offset,
                epoch: pos.epoch.clone(),
                error: None,
            };
            results.insert(channel, serde_json::to_value(r).unwrap_or_default());
            ctx.send_message("recovery.result", serde_json::json!({ "channels": results }));
        });
    }
}

#[derive(Deserialize)]
struct RoomsData {
    #[serde(default)]
    rooms: Option<Vec<serde_json::Value>>,
    /// Per room: where the client's copy of the room's channel ends (join only).
    #[serde(default)]
    recover: Option<std::collections::BTreeMap<String, RecoverFrom>>,
}

#[derive(Serialize)]
struct Refused<'a> {
    room: &'a serde_json::Value,
    reason: String,
}

#[derive(Serialize)]
struct RoomsAck<'a> {
    rooms: Vec<&'a str>,
    refused: Vec<Refused<'a>>,
    memberships: Vec<String>,
}

impl ProtocolApp {
    /// `join` / `leave` `{rooms: [...]}` → `room.joined` / `room.left` listing accepted and
    /// refused rooms.
    fn rooms(&self, ctx: &mut Ctx<'_>, action: &str, data: Option<&RawValue>) {
        let (rooms, recover) = match data_as::<RoomsData>(data) {
            Ok(RoomsData { rooms: Some(r), .. }) if r.len() > MAX_ITEMS_PER_REQUEST => {
                ctx.send_error(
                    ErrorCode::InvalidMessageFormat,
                    &format!("at most {MAX_ITEMS_PER_REQUEST} rooms per request"),
                );
                return;
            }
            Ok(RoomsData {
                rooms: Some(r),
                recover,
            }) => (r, recover.unwrap_or_default()),
            _ => {
                ctx.send_error(
                    ErrorCode::InvalidMessageFormat,
                    "data.rooms must be a list of room names (and data.recover, if given, \
                     {room: {offset, epoch}})",
                );
                return;
            }
        };
        if action == "join" && ctx.permission_checks().0 {
            return forward::gate(ctx, "may_join", rooms, move |ctx, kept, denied| {
                Self::join_or_leave(ctx, "join", kept, recover, denied)
            });
        }
        Self::join_or_leave(ctx, action, rooms, recover, Vec::new());
    }

    /// `join` / `leave` of `rooms` (those in `denied` were refused by the backend already).
    fn join_or_leave(
        ctx: &mut Ctx<'_>,
        action: &str,
        rooms: Vec<Value>,
        recover: std::collections::BTreeMap<String, RecoverFrom>,
        denied: Vec<(Value, String)>,
    ) {
        if action == "join" && ctx.keeps_history() {
            return Self::join_recovering(ctx, rooms, recover, denied);
        }
        let mut accepted = Vec::new();
        let mut refused: Vec<Refused<'_>> = denied
            .iter()
            .map(|(room, reason)| Refused {
                room,
                reason: reason.clone(),
            })
            .collect();
        for room in &rooms {
            let Some(name) = room.as_str() else {
                refused.push(Refused {
                    room,
                    reason: "room names are strings".into(),
                });
                continue;
            };
            if action == "join" {
                match ctx.join_room(name) {
                    Ok(_) => accepted.push(name),
                    Err(why) => refused.push(Refused {
                        room,
                        reason: why.to_string(),
                    }),
                }
            } else if ctx.leave_room(name) {
                accepted.push(name);
            } else {
                refused.push(Refused {
                    room,
                    reason: "not a member".into(),
                });
            }
        }
        forward::membership_event(ctx, action, &accepted);
        let memberships = ctx.rooms();
        let kind = if action == "join" { "room.joined" } else { "room.left" };
        ctx.send_message(
            kind,
            RoomsAck {
                rooms: accepted,
                refused,
                memberships,
            },
        );
    }

    fn subscription(&self, ctx: &mut Ctx<'_>, action: &str, data: Option<&RawValue>) {
        let (events, recover) = match data_as::<EventsData>(data) {
            Ok(EventsData { events: Some(e), .. }) if e.len() > MAX_ITEMS_PER_REQUEST => {
                ctx.send_error(
                    ErrorCode::InvalidMessageFormat,
                    &format!("at most {MAX_ITEMS_PER_REQUEST} events per request"),
                );
                return;
            }
            Ok(EventsData {
                events: Some(e),
                recover,
            }) => (e, recover.unwrap_or_default()),
            _ => {
                ctx.send_error(
                    ErrorCode::InvalidMessageFormat,
                    "data.events must be a list of event types (and data.recover, if given, \
                     {event: {offset, epoch}})",
                );
                return;
            }
        };
        if action == "subscribe" && ctx.permission_checks().1 {
            return forward::gate(ctx, "may_subscribe", events, move |ctx, kept, denied| {
                Self::subscribe_or_not(ctx, "subscribe", kept, recover, denied)
            });
        }
        Self::subscribe_or_not(ctx, action, events, recover, Vec::new());
    }

    /// `subscribe` / `unsubscribe` of `events` (those in `denied` refused by the backend).
    fn subscribe_or_not(
        ctx: &mut Ctx<'_>,
        action: &str,
        events: Vec<Value>,
        recover: std::collections::BTreeMap<String, RecoverFrom>,
        denied: Vec<(Value, String)>,
    ) {
        if action == "subscribe" && ctx.keeps_history() {
            return Self::subscribe_at_positions(ctx, events, recover, denied);
        }
        let mut bits = ctx.subscriptions();
        let mut valid = Vec::new();
        let mut invalid = Vec::new();
        for e in &events {
            match e.as_str().and_then(|s| ctx.config().event_bit(s).map(|b| (s, b))) {
                Some((name, bit)) => {
                    if action == "subscribe" {
                        bits |= 1 << bit;
                    } else {
                        bits &= !(1 << bit);
                    }
                    if !valid.contains(&name) {
                        valid.push(name);
                    }
                }
                None => invalid.push(e),
            }
        }
        if !invalid.is_empty() {
            log::debug!("invalid subscription events from {}: {invalid:?}", ctx.connection_id());
        }
        ctx.set_subscriptions(bits);
        forward::membership_event(ctx, action, &valid);
        let cfg = ctx.config();
        let current: Vec<&str> = cfg
            .subscribable_events
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, e)| e.as_str())
            .collect();
        let refused: Vec<Value> = denied
            .into_iter()
            .map(|(event, reason)| json!({"event": event, "reason": reason}))
            .collect();
        let ack = SubscriptionAck {
            action,
            events: valid,
            invalid_events: invalid,
            subscriptions: current,
            refused,
        };
        let mut buf = Vec::new();
        if let Err(e) = serde_json::to_writer(&mut buf, &ack) {
            log::error!("ack serialization failed: {e}");
            return;
        }
        let raw: Box<RawValue> = match RawValue::from_string(String::from_utf8_lossy(&buf).into_owned()) {
            Ok(r) => r,
            Err(_) => return,
        };
        let failed = (action == "subscribe")
            .then(|| serde_json::from_str::<Value>(raw.get()).ok())
            .flatten()
            .and_then(|ack| crate::protocol::subscription_failure(&ack));
        ctx.send_message("subscription.acknowledged", raw);
        if let Some(why) = failed {
            ctx.send_error(ErrorCode::SubscriptionFailed, &why);
        }
    }
}

/// Echo server: every data message comes back unchanged (text as text, binary as binary); a
/// text message starting with `broadcast` goes to every connection instead.
pub struct EchoApp;

impl Handler for EchoApp {
    fn on_text(&self, ctx: &mut Ctx<'_>, text: &str) {
        if text.starts_with("broadcast") {
            ctx.broadcast_text(text);
        } else {
            ctx.send_text(text);
        }
    }

    fn on_binary(&self, ctx: &mut Ctx<'_>, data: &[u8]) {
        ctx.send_binary(data);
    }
}
