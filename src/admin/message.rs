//! What the message routes (and `/ws/batch`'s commands) read from a request and say back: the
//! `type` and `data` of a body, its `exclude_user`, an `Idempotency-Key`, and the answer to a
//! message (recipients, nodes reached, or 503 / 504 with what is known).
//!
//! Owns: those body fields and that answer. Does not touch: routing or planning (`routes`,
//! `batch` both use this; neither uses the other's internals).

use serde_json::{Value, json};

use super::plan::{Answers, Response};

/// The answer to a message: this node's recipients (summed over its reactors) and the nodes
/// that received it, or 503 if the cluster could not take it (then nobody got it).
pub(super) fn delivered(answers: &Answers, message_id: uuid::Uuid) -> Response {
    match crate::ask::delivery_of(answers, message_id) {
        Ok(d) if d.duplicate => Response::success(json!({
            "message_sent": false,
            "duplicate": true,
            "connections_reached": 0,
            "nodes_reached": 0,
            "message_id": message_id.to_string(),
        })),
        Ok(d) => Response::success(json!({
            "message_sent": true,
            "connections_reached": d.recipients,
            "nodes_reached": d.nodes_reached,
            "message_id": message_id.to_string(),
        })),
        Err(crate::ask::HandleError::ClusterOutcomeUnknown) => Response::json(
            504,
            &json!({
                "status": "error",
                "code": 504,
                "detail": "cluster outcome unknown: redis took the message but did not answer; it may have \
                           reached some, all or none of the other nodes (retry with the same Idempotency-Key to \
                           have it delivered at most once)",
                "outcome": "unknown",
                "message_id": message_id.to_string(),
            }),
        ),
        Err(_) => Response::error(503, "cluster unavailable").with_header("Retry-After", "1"),
    }
}

/// An idempotency key as the routes take it: 1 to 128 visible ASCII characters.
pub(super) fn idempotency_key(key: Option<&str>) -> Result<Option<&str>, Response> {
    match key {
        Some(k) if k.is_empty() || k.len() > 128 || !k.bytes().all(|b| b.is_ascii_graphic()) => Err(Response::error(
            400,
            "Idempotency-Key must be 1 to 128 visible ASCII characters",
        )),
        k => Ok(k),
    }
}

/// Removes `exclude_user` (a user id whose connections the message skips) from a body.
pub(super) fn take_exclude_user(b: &mut serde_json::Map<String, Value>) -> Result<Option<String>, Response> {
    match b.remove("exclude_user") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(u)) if !u.is_empty() => Ok(Some(u)),
        Some(_) => Err(Response::error(400, "'exclude_user' must be a non-empty string")),
    }
}

/// `{"type": ..., "data": ...}` from a body; `type` is required unless a default is given.
pub(super) fn kind_and_data(
    b: serde_json::Map<String, Value>,
    default: Option<&str>,
) -> Result<(String, Value), Response> {
    let kind = match (b.get("type"), default) {
        (Some(Value::String(t)), _) if !t.is_empty() => t.clone(),
        (None, Some(d)) => d.to_string(),
        _ => return Err(Response::error(400, "body needs a non-empty string 'type'")),
    };
    Ok((kind, b.get("data").cloned().unwrap_or(json!({}))))
}
