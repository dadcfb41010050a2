//! The wsedge protocol's JSON: envelopes, message types, error codes, timestamps and ids.
//!
//! Owns: the wire format of application messages. Does not touch: frames, sockets,
//! connection state; writers append to a caller's buffer so the hot path reuses one scratch Vec.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Error codes of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    RateLimitExceeded,
    InvalidMessageType,
    InvalidMessageFormat,
    SubscriptionFailed,
    MessageTooLarge,
    ConnectionLimitExceeded,
    InternalError,
    /// A `token.refresh` whose token was refused (the connection stays open until its current
    /// token expires).
    InvalidToken,
    /// A forwarded message or rpc did not reach the backend (`outcome: "not_delivered"`), or
    /// no answer came before the deadline (`outcome: "unknown"`).
    BackendUnavailable,
    /// The backend refused the batch the message was in (an HTTP 4xx, in `status`).
    BackendRejected,
    /// The backend answered an rpc with an error (in `error`).
    RpcError,
    /// No answer to an rpc came before its deadline (`outcome`: `unknown` if the backend may
    /// not even have it, `delivered` if it took it and did not answer).
    RpcTimeout,
}

/// An RFC 3339 UTC timestamp with microseconds, e.g. `2025-01-08T10:30:00.123456Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(SystemTime::now())
    }

    /// Seconds since the Unix epoch, as the float in `reset_time`.
    pub fn unix_secs_f64(&self) -> f64 {
        self.0.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
        let (y, m, day) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
            d.subsec_micros()
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Fast per-thread random numbers for message ids (seeded from the OS once). Not for secrets.
#[derive(Debug, Clone)]
pub struct IdGen(u64);

impl IdGen {
    pub fn from_os() -> Self {
        let seed = u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap_or([7; 8]));
        IdGen(seed | 1)
    }

    /// Ids derived from `key` (SHA-256): the same key always gives the same ids.
    pub fn from_key(key: &str) -> Self {
        let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
        let seed = u64::from_le_bytes(d.as_ref()[..8].try_into().unwrap_or([7; 8]));
        IdGen(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random (version 4) UUID.
    pub fn uuid(&mut self) -> uuid::Uuid {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        b[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(b).into_uuid()
    }
}

/// The envelope both directions use: `{"type","data","timestamp","id"}`.
#[derive(Serialize)]
pub struct Envelope<'a, D: Serialize> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub data: D,
    pub timestamp: Timestamp,
    pub id: uuid::fmt::Hyphenated,
}

/// Appends `{"type":kind,"data":data,"timestamp":now,"id":uuid}` to `out`; returns the id.
pub fn write_envelope<D: Serialize>(out: &mut Vec<u8>, ids: &mut IdGen, kind: &str, data: D) -> uuid::Uuid {
    let id = ids.uuid();
    let env = Envelope {
        kind,
        data,
        timestamp: Timestamp::now(),
        id: id.hyphenated(),
    };
    // Serializing plain data into a Vec cannot fail; a failure would only mean a bug in `D`.
    if let Err(e) = serde_json::to_writer(out, &env) {
        log::error!("envelope {kind} failed to serialize: {e}");
    }
    id
}

#[derive(Serialize)]
struct ErrorData<'a> {
    code: ErrorCode,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reset_time: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

/// Appends an error envelope (`type: "error"`).
pub fn write_error(out: &mut Vec<u8>, ids: &mut IdGen, code: ErrorCode, message: &str) {
    write_envelope(
        out,
        ids,
        "error",
        ErrorData {
            code,
            message,
            reset_time: None,
            retry_after: None,
        },
    );
}

/// Appends `RATE_LIMIT_EXCEEDED` with `reset_time` (Unix seconds, fractional) and
/// `retry_after` (whole seconds, rounded up, so waiting that long always suffices).
pub fn write_rate_limited(out: &mut Vec<u8>, ids: &mut IdGen, retry_after_ms: u64) {
    let reset = Timestamp::now().unix_secs_f64() + retry_after_ms as f64 / 1000.0;
    let data = ErrorData {
        code: ErrorCode::RateLimitExceeded,
        message: "Too many messages",
        reset_time: Some((reset * 1000.0).round() / 1000.0),
        retry_after: Some(retry_after_ms.div_ceil(1000).max(1)),
    };
    write_envelope(out, ids, "error", data);
}

/// A client message's outer shape; `data` stays raw until its type says what it should be.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

/// A validated client message.
#[derive(Debug)]
pub struct ClientMessage<'a> {
    pub kind: Cow<'a, str>,
    /// `data` as raw JSON (`None` when absent or null).
    pub data: Option<&'a RawValue>,
    /// The client's own `id` for the message (forwarded messages and rpcs echo it).
    pub id: Option<&'a RawValue>,
}

/// Parses a text message into type and data. Errors carry the `INVALID_MESSAGE_FORMAT` text.
pub fn parse_client_message(text: &str) -> Result<ClientMessage<'_>, &'static str> {
    if !text.trim_start().starts_with('{') {
        return Err(if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
            "Message must be an object"
        } else {
            "Invalid JSON"
        });
    }
    let msg: Incoming<'_> = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            "Message 'type' must be a string"
        } else {
            "Invalid JSON"
        }
    })?;
    let kind = msg.kind.ok_or("Message must have 'type' field")?;
    Ok(ClientMessage {
        kind,
        data: msg.data,
        id: msg.id,
    })
}

/// After a `subscribe` acknowledgement that left events out (unknown ones, or refused by the
/// backend): the `SUBSCRIPTION_FAILED` error's message naming them.
pub(crate) fn subscription_failure(ack: &serde_json::Value) -> Option<String> {
    let mut names: Vec<String> = Vec::new();
    for v in ack["invalid_events"].as_array().into_iter().flatten() {
        names.push(v.to_string());
    }
    for r in ack["refused"].as_array().into_iter().flatten() {
        names.push(r["event"].to_string());
    }
    (!names.is_empty()).then(|| format!("Invalid subscription events: {}", names.join(", ")))
}

/// Deserializes `data` as `T`, treating a missing `data` as `{}`.
pub fn data_as<'a, T: Deserialize<'a>>(data: Option<&'a RawValue>) -> Result<T, serde_json::Error> {
    serde_json::from_str(data.map_or("{}", |d| d.get()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339() {
        let t = Timestamp(UNIX_EPOCH + Duration::from_micros(1_736_332_200_123_456));
        assert_eq!(t.to_string(), "2025-01-08T10:30:00.123456Z");
        assert_eq!(Timestamp(UNIX_EPOCH).to_string(), "1970-01-01T00:00:00.000000Z");
        let leap = Timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)); // 2000-02-29
        assert_eq!(leap.to_string(), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn envelope_shape() {
        let mut out = vec![];
        let mut ids = IdGen::from_os();
        write_error(
            &mut out,
            &mut ids,
            ErrorCode::InvalidMessageType,
            "Unknown message type: x",
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["data"]["code"], "INVALID_MESSAGE_TYPE");
        assert!(uuid::Uuid::parse_str(v["id"].as_str().unwrap()).is_ok());
        assert_eq!(
            uuid::Uuid::parse_str(v["id"].as_str().unwrap())
                .unwrap()
                .get_version_num(),
            4
        );
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn client_message_validation() {
        assert_eq!(parse_client_message("nope").unwrap_err(), "Invalid JSON");
        assert_eq!(parse_client_message("[1,2]").unwrap_err(), "Message must be an object");
        assert_eq!(
            parse_client_message("{\"a\":1}").unwrap_err(),
            "Message must have 'type' field"
        );
        assert_eq!(
            parse_client_message("{\"type\":5}").unwrap_err(),
            "Message 'type' must be a string"
        );
        assert_eq!(parse_client_message("{\"type\":\"ping\"").unwrap_err(), "Invalid JSON");
        let m = parse_client_message(r#"{"type":"p\u0069ng","data":{"pingId":"x"}}"#).unwrap();
        assert_eq!(m.kind, "ping");
        assert_eq!(m.data.unwrap().get(), r#"{"pingId":"x"}"#);
        assert!(
            parse_client_message(r#"{"type":"ping","data":null}"#)
                .unwrap()
                .data
                .is_none()
        );
    }
}
