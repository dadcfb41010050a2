//! `POST /ws/batch`: several publish/send commands in one request, one answer per command, in
//! order. Each command is the body of the matching single route plus its path parameters:
//!
//! | `method` | `params` | same as |
//! | --- | --- | --- |
//! | `publish` | `event`, `data` | `POST /ws/events/{event}` |
//! | `send_to_user` | `user_id`, `type`, `data` | `POST /ws/users/{user_id}/messages` |
//! | `send_to_room` | `room`, `type` (default `room.message`), `data`, `exclude_user` | `POST /ws/rooms/{room}/messages` |
//! | `broadcast` | the message object, `exclude_user` | `POST /ws/broadcast` |
//!
//! Every message of a batch is encoded once and posted to the reactors together, in order:
//! messages of one channel (and messages to everyone) reach each connection in the order of
//! the batch; messages of different channels are given their offsets by different reactors
//! (each channel's home), so their relative order is not kept.

use serde_json::{Map, Value, json};

use super::message::{delivered, kind_and_data, take_exclude_user};
use super::plan::AdminHost;
use super::plan::{Plan, Response};
use crate::ask::Target;
use crate::outgoing::Outgoing;

/// Most commands in one batch.
pub(crate) const MAX_COMMANDS: usize = 1000;

pub(super) fn plan(h: &dyn AdminHost, mut body: Map<String, Value>) -> Result<Plan, Response> {
    let commands = match body.remove("commands") {
        Some(Value::Array(c)) if !c.is_empty() && c.len() <= MAX_COMMANDS => c,
        _ => {
            return Err(Response::error(
                400,
                &format!("'commands' must be a list of 1 to {MAX_COMMANDS} commands"),
            ));
        }
    };
    let mut asks = Vec::new();
    // Per command: its error, or the range of its asks and its message id.
    let mut parts: Vec<Result<(std::ops::Range<usize>, uuid::Uuid), Response>> = Vec::new();
    for c in commands {
        match command(h, c) {
            Ok(o) => {
                let first = asks.len();
                asks.extend(h.topology().deliver_asks(&o, std::time::Instant::now()));
                parts.push(Ok((first..asks.len(), o.message_id)));
            }
            Err(e) => parts.push(Err(e)),
        }
    }
    Ok(Plan::later(asks, move |mut answers| {
        let replies: Vec<Value> = parts
            .into_iter()
            .map(|p| {
                let r = match p {
                    Ok((range, id)) => delivered(&answers[range].iter_mut().map(std::mem::take).collect(), id),
                    Err(e) => e,
                };
                serde_json::from_slice(&r.body).unwrap_or(Value::Null)
            })
            .collect();
        Response::success(json!({ "replies": replies }))
    }))
}

/// One command as the message it sends.
fn command(h: &dyn AdminHost, c: Value) -> Result<Outgoing, Response> {
    let Value::Object(mut c) = c else {
        return Err(Response::error(400, "a command must be an object"));
    };
    let mut params = match c.remove("params") {
        Some(Value::Object(p)) => p,
        None => Map::new(),
        Some(_) => return Err(Response::error(400, "'params' must be an object")),
    };
    let key = match params.remove("idempotency_key") {
        None => None,
        Some(Value::String(k)) => Some(k),
        Some(_) => return Err(Response::error(400, "'params.idempotency_key' must be a string")),
    };
    let key = super::message::idempotency_key(key.as_deref())?.map(str::to_string);
    let key = key.as_deref();
    let mut text = |name: &str| match params.remove(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(Response::error(
            400,
            &format!("'params.{name}' must be a non-empty string"),
        )),
    };
    match c.get("method").and_then(Value::as_str) {
        Some("publish") => {
            let event = text("event")?;
            let bit = h
                .config()
                .event_bit(&event)
                .ok_or_else(|| Response::error(404, &format!("unknown event type {event:?}")))?;
            let data = params.remove("data").unwrap_or(json!({}));
            Ok(Outgoing::envelope_keyed(key, Target::Subscribers(bit), &event, data))
        }
        Some("send_to_user") => {
            let user = text("user_id")?;
            let (kind, data) = kind_and_data(params, None)?;
            Ok(Outgoing::envelope_keyed(key, Target::User(user.into()), &kind, data))
        }
        Some("send_to_room") => {
            let room = text("room")?;
            let exclude = take_exclude_user(&mut params)?;
            let (kind, data) = kind_and_data(params, Some("room.message"))?;
            Ok(Outgoing::envelope_keyed(key, Target::Room(room.into()), &kind, data).excluding(exclude.as_deref()))
        }
        Some("broadcast") => {
            let exclude = take_exclude_user(&mut params)?;
            Ok(Outgoing::admin_broadcast_keyed(key, params).excluding(exclude.as_deref()))
        }
        _ => Err(Response::error(
            400,
            "'method' must be one of publish, send_to_user, send_to_room, broadcast",
        )),
    }
}
