//! The protocol's side of the backend bridge: client message types listed in `--forward`
//! (and `rpc`) checked and handed to the bridge, and the lifecycle events of subscriptions
//! and rooms.
//!
//! Owns: what a forwarded message must look like (its `id`, an rpc's `method` and `params`).
//! Does not touch: batching or answers (`bridge`, `reactor::core::backend`).

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::bridge::Forwarded;
use crate::handler::Ctx;
use crate::protocol::{ErrorCode, data_as};

/// A client `id` echoed back: a string or number of at most 128 bytes (never a structure
/// the client chose).
fn valid_client_id(id: &RawValue) -> bool {
    let raw = id.get();
    raw.len() <= 128 && (raw.starts_with('"') || raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()))
}

#[derive(Deserialize)]
struct RpcData<'a> {
    #[serde(borrow, default)]
    method: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

/// Forwards a message of a `--forward` type; `rpc` asks for a result. False if `kind` is
/// not forwarded (the caller answers it).
pub(super) fn forward(ctx: &mut Ctx<'_>, kind: &str, id: Option<&RawValue>, data: Option<&RawValue>) -> bool {
    if !ctx.forwards(kind) {
        return false;
    }
    if let Some(id) = id
        && !valid_client_id(id)
    {
        ctx.send_error(
            ErrorCode::InvalidMessageFormat,
            "id must be a string or a number of at most 128 bytes",
        );
        return true;
    }
    if kind != "rpc" {
        ctx.forward(id, Forwarded::Message { kind, data });
        return true;
    }
    let Some(id) = id else {
        ctx.send_error(
            ErrorCode::InvalidMessageFormat,
            "rpc needs an id (a string or a number)",
        );
        return true;
    };
    match data_as::<RpcData<'_>>(data) {
        Ok(RpcData {
            method: Some(method),
            params,
        }) if !method.is_empty() && method.len() <= 128 => {
            ctx.forward(
                Some(id),
                Forwarded::Rpc {
                    id,
                    method: &method,
                    params,
                },
            );
        }
        _ => {
            ctx.send_error(
                ErrorCode::InvalidMessageFormat,
                "rpc needs data.method (a string of 1-128 bytes) and may have data.params",
            );
        }
    }
    true
}

/// Sends lifecycle event `event` (`subscribe`, `unsubscribe`, `join`, `leave`) for the names
/// a request changed, if the backend wants it and there are any.
pub(super) fn membership_event(ctx: &mut Ctx<'_>, event: &str, names: &[&str]) {
    let e = ctx.lifecycle();
    let wanted = match event {
        "subscribe" => e.subscribe,
        "unsubscribe" => e.unsubscribe,
        "join" => e.join,
        "leave" => e.leave,
        _ => false,
    };
    if !wanted || names.is_empty() {
        return;
    }
    let field = if event.ends_with("subscribe") {
        "events"
    } else {
        "rooms"
    };
    ctx.backend_event(event, serde_json::json!({ field: names }));
}

/// Asks the backend (`--auth-proxy-check`) about each name of a `join` or `subscribe`
/// (`kind`: `may_join`, `may_subscribe`), then runs `then` with the items it allowed (and those
/// that are not names: the request's own checks refuse them) and the refused ones with reasons.
pub(super) fn gate(
    ctx: &mut Ctx<'_>,
    kind: &str,
    items: Vec<serde_json::Value>,
    then: impl FnOnce(&mut Ctx<'_>, Vec<serde_json::Value>, Vec<(serde_json::Value, String)>) + Send + 'static,
) {
    let mut names: Vec<String> = Vec::new();
    for name in items.iter().filter_map(serde_json::Value::as_str) {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    let asked = names.clone();
    ctx.check_permissions(kind, names, move |ctx, verdicts| {
        let refusals: Vec<(&String, String)> = asked
            .iter()
            .zip(verdicts)
            .filter_map(|(name, v)| v.err().map(|why| (name, why)))
            .collect();
        let mut kept = Vec::new();
        let mut denied = Vec::new();
        for item in items {
            let refusal = item
                .as_str()
                .and_then(|s| refusals.iter().find(|(n, _)| n.as_str() == s));
            match refusal {
                Some((_, why)) if !denied.iter().any(|(d, _): &(serde_json::Value, String)| *d == item) => {
                    denied.push((item, why.clone()))
                }
                Some(_) => {}
                None => kept.push(item),
            }
        }
        then(ctx, kept, denied);
    });
}
