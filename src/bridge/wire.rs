//! What the bridge's batches carry, as JSON: one object per forwarded message, rpc or
//! lifecycle event (written once, when it is queued), the batch around them, and the
//! `results` a backend may answer with.
//!
//! Owns: the item and batch formats (documented in `docs/backend.md`) and reading results.
//! Does not touch: HTTP framing (`bridge::http`) or where answers go (the reactor).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::protocol::Timestamp;

/// Who an item is about: the connection and what the node knows of its user.
pub(crate) struct Identity<'a> {
    pub(crate) connection_id: uuid::Uuid,
    pub(crate) user_id: Option<&'a str>,
    pub(crate) email: Option<&'a str>,
    pub(crate) name: Option<&'a str>,
    pub(crate) is_admin: bool,
    pub(crate) node_id: &'a str,
}

#[derive(Serialize)]
struct Claims<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    is_admin: bool,
}

#[derive(Serialize)]
struct ItemHead<'a> {
    kind: &'a str,
    message_id: String,
    connection_id: String,
    user_id: Option<&'a str>,
    claims: Claims<'a>,
    node_id: &'a str,
    at: String,
}

fn head<'a>(kind: &'a str, message_id: uuid::Uuid, who: &Identity<'a>, at: Timestamp) -> ItemHead<'a> {
    ItemHead {
        kind,
        message_id: message_id.hyphenated().to_string(),
        connection_id: who.connection_id.hyphenated().to_string(),
        user_id: who.user_id,
        claims: Claims {
            email: who.email,
            name: who.name,
            is_admin: who.is_admin,
        },
        node_id: who.node_id,
        at: at.to_string(),
    }
}

/// `{"kind":"message", identity.., "type", "id"?, "data"}`: a client message forwarded.
pub(crate) fn message_item(
    message_id: uuid::Uuid,
    who: &Identity<'_>,
    at: Timestamp,
    kind: &str,
    client_id: Option<&RawValue>,
    data: Option<&RawValue>,
) -> Vec<u8> {
    #[derive(Serialize)]
    struct Item<'a> {
        #[serde(flatten)]
        head: ItemHead<'a>,
        #[serde(rename = "type")]
        kind: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
        data: Option<&'a RawValue>,
    }
    let item = Item {
        head: head("message", message_id, who, at),
        kind,
        id: client_id,
        data,
    };
    serde_json::to_vec(&item).unwrap_or_default()
}

/// `{"kind":"rpc", identity.., "id", "method", "params"}`: a client's call waiting for a result.
pub(crate) fn rpc_item(
    message_id: uuid::Uuid,
    who: &Identity<'_>,
    at: Timestamp,
    client_id: &RawValue,
    method: &str,
    params: Option<&RawValue>,
) -> Vec<u8> {
    #[derive(Serialize)]
    struct Item<'a> {
        #[serde(flatten)]
        head: ItemHead<'a>,
        id: &'a RawValue,
        method: &'a str,
        params: Option<&'a RawValue>,
    }
    let item = Item {
        head: head("rpc", message_id, who, at),
        id: client_id,
        method,
        params,
    };
    serde_json::to_vec(&item).unwrap_or_default()
}

/// `{"kind":<event>, identity.., fields..}`: a lifecycle event (`fields`: a JSON object of
/// the event's own fields, merged in).
pub(crate) fn event_item(
    event: &str,
    event_id: uuid::Uuid,
    who: &Identity<'_>,
    at: Timestamp,
    fields: serde_json::Value,
) -> Vec<u8> {
    #[derive(Serialize)]
    struct Item<'a> {
        #[serde(flatten)]
        head: ItemHead<'a>,
        #[serde(flatten)]
        fields: serde_json::Value,
    }
    let item = Item {
        head: head(event, event_id, who, at),
        fields,
    };
    serde_json::to_vec(&item).unwrap_or_default()
}

/// `{"kind":"auth", "message_id", "path", "headers", "remote_addr", "node_id", "at"}`: a
/// handshake asking to be let in.
pub(crate) fn auth_item(
    message_id: uuid::Uuid,
    target: &str,
    headers: &[(String, String)],
    remote_addr: Option<String>,
    node_id: &str,
    at: Timestamp,
) -> Vec<u8> {
    let headers: serde_json::Map<String, serde_json::Value> =
        headers.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
    let item = serde_json::json!({
        "kind": "auth",
        "message_id": message_id.hyphenated().to_string(),
        "path": target,
        "headers": headers,
        "remote_addr": remote_addr,
        "node_id": node_id,
        "at": at.to_string(),
    });
    serde_json::to_vec(&item).unwrap_or_default()
}

/// An auth proxy's accepting answer (`result`): who the user is.
#[derive(Debug, Deserialize)]
pub(crate) struct AuthAccept {
    pub(crate) user_id: String,
    #[serde(default)]
    pub(crate) role: Option<String>,
    #[serde(default)]
    pub(crate) email: Option<String>,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) rooms: Option<Vec<String>>,
    /// Unix seconds after which the connection is closed (1008 token expired).
    #[serde(default)]
    pub(crate) exp: Option<u64>,
}

/// An auth proxy's refusal (`error`): the status the client gets (400-599; else 403).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuthRefusal {
    #[serde(default)]
    pub(crate) status: Option<u16>,
    #[serde(default)]
    pub(crate) message: Option<String>,
}

/// What the auth proxy said about a handshake: who the user is, or the status and message
/// the client is refused with.
pub(crate) type AuthVerdict = Result<crate::auth::Claims, (u16, String)>;

/// The proxy's answer (`None`: the bridge could not get one) as a verdict.
pub(crate) fn verdict_of(answer: Option<Outcome>) -> AuthVerdict {
    match answer {
        Some(Outcome::Result(raw)) => match serde_json::from_str::<AuthAccept>(raw.get()) {
            Ok(a) if !a.user_id.is_empty() && a.user_id.len() <= 256 => Ok(crate::auth::Claims {
                user_id: a.user_id.into(),
                admin: a.role.as_deref() == Some("admin"),
                email: a.email.map(Into::into),
                name: a.name.map(Into::into),
                rooms: a.rooms,
                expires_at: a.exp,
            }),
            _ => {
                log::warn!("auth proxy: an accepting answer without a valid user_id (1-256 bytes)");
                Err((503, "authentication backend answered badly".into()))
            }
        },
        Some(Outcome::Error(raw)) => {
            let r: AuthRefusal = serde_json::from_str(raw.get()).unwrap_or_default();
            let status = r.status.filter(|s| (400..600).contains(s)).unwrap_or(403);
            Err((status, r.message.unwrap_or_else(|| "authentication refused".into())))
        }
        None => Err((503, "authentication backend unavailable".into())),
    }
}

/// A permission check's answer: `true` allows; `false`, anything else, or an error refuses
/// (with the error's `message`, if it has one).
pub(crate) fn permission_of(outcome: Outcome) -> Result<(), String> {
    match outcome {
        Outcome::Result(v) if v.get() == "true" => Ok(()),
        Outcome::Result(_) => Err("refused by the backend".into()),
        Outcome::Error(e) => {
            let r: AuthRefusal = serde_json::from_str(e.get()).unwrap_or_default();
            Err(r.message.unwrap_or_else(|| "refused by the backend".into()))
        }
    }
}

/// Appends the batch body: `{"batch_id", "node_id", "items": [..]}`.
pub(crate) fn write_batch<'a>(out: &mut Vec<u8>, batch_id: &str, node_id: &str, items: impl Iterator<Item = &'a [u8]>) {
    out.extend_from_slice(b"{\"batch_id\":\"");
    out.extend_from_slice(batch_id.as_bytes());
    out.extend_from_slice(b"\",\"node_id\":");
    out.extend_from_slice(&serde_json::to_vec(node_id).unwrap_or_default());
    out.extend_from_slice(b",\"items\":[");
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"]}");
}

/// A backend's answer to one rpc of a batch.
#[derive(Debug)]
pub(crate) enum Outcome {
    Result(Box<RawValue>),
    /// The backend's error object (or value), passed to the client as it is.
    Error(Box<RawValue>),
}

#[derive(Deserialize)]
struct Results {
    #[serde(default)]
    results: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// The results in a 2xx body, by message id. An empty body has none; a body that is not
/// `{"results": [...]}` (with a `message_id` and a `result` or an `error` in each, `null`
/// being a result like any other) is an error.
pub(crate) fn parse_results(body: &[u8]) -> Result<Vec<(String, Outcome)>, &'static str> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let parsed: Results = serde_json::from_slice(body).map_err(|_| "the body is not {\"results\": [...]}")?;
    let mut out = Vec::with_capacity(parsed.results.len());
    for mut e in parsed.results {
        let Some(serde_json::Value::String(id)) = e.remove("message_id") else {
            return Err("a result without a message_id");
        };
        let raw = |v: serde_json::Value| serde_json::value::to_raw_value(&v).map_err(|_| "a value that cannot be kept");
        let outcome = match (e.remove("result"), e.remove("error")) {
            (_, Some(err)) => Outcome::Error(raw(err)?),
            (Some(r), None) => Outcome::Result(raw(r)?),
            (None, None) => return Err("a result has neither \"result\" nor \"error\""),
        };
        out.push((id, outcome));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_and_batches_are_json() {
        let who = Identity {
            connection_id: uuid::Uuid::nil(),
            user_id: Some("u1"),
            email: None,
            name: Some("Ann"),
            is_admin: false,
            node_id: "n\"1",
        };
        let data = RawValue::from_string("{\"text\":\"hi\"}".into()).unwrap();
        let id = RawValue::from_string("7".into()).unwrap();
        let m = message_item(
            uuid::Uuid::nil(),
            &who,
            Timestamp::now(),
            "chat",
            Some(&id),
            Some(&data),
        );
        let e = event_item(
            "join",
            uuid::Uuid::nil(),
            &who,
            Timestamp::now(),
            serde_json::json!({"room": "r"}),
        );
        let mut body = Vec::new();
        write_batch(&mut body, "b1", who.node_id, [&m[..], &e[..]].into_iter());
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["node_id"], "n\"1");
        assert_eq!(v["items"][0]["type"], "chat");
        assert_eq!(v["items"][0]["id"], 7);
        assert_eq!(v["items"][0]["data"]["text"], "hi");
        assert_eq!(v["items"][0]["claims"]["name"], "Ann");
        assert_eq!(v["items"][1]["kind"], "join");
        assert_eq!(v["items"][1]["room"], "r");
    }

    #[test]
    fn results_are_read_strictly() {
        assert!(parse_results(b" \n").is_ok_and(|r| r.is_empty()));
        assert!(parse_results(b"{}").is_ok_and(|r| r.is_empty()));
        let r = parse_results(br#"{"results":[{"message_id":"a","result":{"x":1}},{"message_id":"b","error":"no"}]}"#)
            .unwrap();
        assert_eq!(r.len(), 2);
        assert!(matches!(&r[0], (id, Outcome::Result(v)) if id == "a" && v.get() == r#"{"x":1}"#));
        assert!(matches!(&r[1], (id, Outcome::Error(v)) if id == "b" && v.get() == r#""no""#));
        assert!(parse_results(b"[1]").is_err());
        assert!(parse_results(br#"{"results":[{"message_id":"a"}]}"#).is_err());
        let null = parse_results(br#"{"results":[{"message_id":"a","result":null}]}"#).unwrap();
        assert!(matches!(&null[0], (_, Outcome::Result(v)) if v.get() == "null"));
        assert!(parse_results(b"{\"results\":").is_err());
    }
}
