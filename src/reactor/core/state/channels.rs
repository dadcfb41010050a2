//! A channel's records on the reactor: replays in progress, recoveries waiting for answers,
//! and the envelope fields `channel`, `offset`, `epoch` written into a frame.
//!
//! Owns: these records and pure functions over frames. Does not touch: sequencing or
//! recovering (`core::channels`).

use std::collections::{HashMap, VecDeque};

use tungstenite::Bytes;
use tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::history::{History, Position};

/// The channels side of the reactor.
pub(crate) struct ChannelState {
    /// History of the channels homed here.
    pub(crate) history: History,
    /// Recoveries being fed, by slot.
    pub(crate) replays: HashMap<usize, Replay>,
    /// When history was last swept for expired entries (milliseconds of the core's clock).
    pub(crate) history_swept_ms: u64,
    /// Recoveries asked for in upgrade requests, until the connection opens.
    pub(crate) connect_recoveries: HashMap<usize, (u64, String)>,
    /// The outcome of the recovery of the connection being opened, for the handler's greeting.
    pub(crate) opening_recovery: Option<(bool, Position)>,
}

impl ChannelState {
    pub(crate) fn new(history: History) -> Self {
        ChannelState {
            history,
            replays: HashMap::new(),
            history_swept_ms: 0,
            connect_recoveries: HashMap::new(),
            opening_recovery: None,
        }
    }
}

/// Messages a connection still has to receive from a recovery, and live ones of the same
/// connection queued behind them, fed as its backlog drains.
pub(crate) struct Replay {
    pub(crate) generation: u32,
    pub(crate) frames: VecDeque<Bytes>,
    /// While a recovery's acknowledgement is not sent: nothing is fed, and live messages wait
    /// in `live`, then follow the replayed ones.
    pub(crate) held: bool,
    pub(crate) live: VecDeque<Bytes>,
    /// Replays answered so far for the held recovery, by request item.
    pub(crate) answered: Vec<(usize, Vec<Bytes>)>,
}

/// What joining a channel means for the connection.
pub(crate) enum Join {
    Event(u32),
    /// The whole user joins the room.
    Room(String),
    /// Nothing: the connection is in the channel already (its user's own).
    Already,
}

/// A connection's subscriptions with recovery, waiting for the channels' home reactors.
pub(crate) struct PendingRecovery {
    pub(crate) conn: mio::Token,
    /// Per request item: the channel, what joining it means, and whether it recovers.
    pub(crate) items: Vec<(String, Join, bool)>,
    pub(crate) finish: RecoveryFinish,
}

/// Runs once every channel of a recovery has answered: with the connection's slot and the
/// outcomes (the handler API wraps the embedder's callback in one of these).
///
/// The core is passed as `dyn Any` (it is always the reactor's `Core`): these records sit
/// below the core and cannot name it; the handler API, which built the callback, downcasts.
pub(crate) type RecoveryFinish =
    Box<dyn FnOnce(&mut dyn std::any::Any, usize, Vec<crate::history::RecoveryOutcome>) + Send>;

/// The payload of one whole unmasked (server) frame: what follows its 2-, 4- or 10-byte
/// header, when the header's length says exactly that.
pub(crate) fn payload_of(frame: &[u8]) -> Option<&[u8]> {
    let (head, len) = crate::ws::frame::server_frame_bounds(frame)?;
    (frame.len() == head + len).then(|| &frame[head..])
}

/// `frames` (one or more whole server frames) without those of `channel` whose offset is at
/// most `through` (`None` if nothing is left).
pub(crate) fn drop_through(frames: &Bytes, channel: &str, through: u64) -> Option<Bytes> {
    let mut needle = b",\"channel\":".to_vec();
    let _ = serde_json::to_writer(&mut needle, channel);
    needle.extend_from_slice(b",\"offset\":");
    let mut kept: Vec<Bytes> = Vec::new();
    let mut at = 0;
    while at < frames.len() {
        let Some(len) = crate::ws::frame::server_frame_bounds(&frames[at..]).map(|(h, l)| h + l) else {
            kept.push(frames.slice(at..));
            break;
        };
        let frame = frames.slice(at..at + len);
        at += len;
        let offset = payload_of(&frame).and_then(|p| {
            let i = p.windows(needle.len()).rposition(|w| w == needle.as_slice())? + needle.len();
            let digits = p[i..].iter().take_while(|b| b.is_ascii_digit()).count();
            std::str::from_utf8(&p[i..i + digits]).ok()?.parse::<u64>().ok()
        });
        if offset.is_none_or(|o| o > through) {
            kept.push(frame);
        }
    }
    match kept.len() {
        0 => None,
        1 => kept.pop(),
        _ => Some(Bytes::from(kept.concat())),
    }
}

/// The JSON a kept frame holds (`null` if it holds none).
pub(crate) fn frame_json(frame: &[u8]) -> serde_json::Value {
    let payload = payload_of(frame).unwrap_or_default();
    serde_json::from_slice(payload).unwrap_or(serde_json::Value::Null)
}

/// The frame with `"channel"`, `"offset"` and `"epoch"` added to its JSON object (a frame
/// that is not a text frame holding an object is kept as it is).
pub fn with_position(frame: &[u8], channel: &str, pos: &Position) -> Bytes {
    // The object's closing brace: the last byte that is not whitespace.
    let close = payload_of(frame)
        .filter(|_| frame[0] == 0x81)
        .and_then(|p| p.iter().rposition(|b| !b.is_ascii_whitespace()).map(|i| (p, i)))
        .filter(|&(p, i)| p[i] == b'}');
    let Some((payload, close)) = close else {
        return Bytes::copy_from_slice(frame);
    };
    let body = &payload[..close];
    // `{}` gets no comma before the first field.
    let empty = body.iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let mut json = Vec::with_capacity(payload.len() + channel.len() + 64);
    json.extend_from_slice(body);
    json.extend_from_slice(if empty {
        &b"\"channel\":"[..]
    } else {
        &b",\"channel\":"[..]
    });
    let _ = serde_json::to_writer(&mut json, channel);
    json.extend_from_slice(format!(",\"offset\":{},\"epoch\":", pos.offset).as_bytes());
    let _ = serde_json::to_writer(&mut json, &pos.epoch);
    json.push(b'}');
    let mut out = Vec::with_capacity(json.len() + 10);
    crate::ws::encode_frame(&mut out, OpCode::Data(Data::Text), &json);
    Bytes::from(out)
}

impl Replay {
    pub(crate) fn new(generation: u32) -> Self {
        Replay {
            generation,
            frames: VecDeque::new(),
            held: false,
            live: VecDeque::new(),
            answered: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_fields_are_added_to_the_object() {
        let mut f = Vec::new();
        crate::ws::encode_frame(&mut f, OpCode::Data(Data::Text), br#"{"type":"t","data":{}}"#);
        let pos = Position {
            offset: 7,
            epoch: "ab".into(),
        };
        let out = with_position(&f, "user:a\"b", &pos);
        let v: serde_json::Value = serde_json::from_slice(&out[2..]).unwrap();
        assert_eq!(v["channel"], "user:a\"b");
        assert_eq!((v["offset"].as_u64(), v["epoch"].as_str()), (Some(7), Some("ab")));
        assert_eq!(out[1] as usize, out.len() - 2, "the length is the new one");
        let big = format!(r#"{{"data":"{}"}}"#, "x".repeat(200));
        let mut f = Vec::new();
        crate::ws::encode_frame(&mut f, OpCode::Data(Data::Text), big.as_bytes());
        let out = with_position(&f, "event:e", &pos);
        let v: serde_json::Value = serde_json::from_slice(&out[4..]).unwrap();
        assert_eq!(v["offset"], 7);
        let binary = [0x82, 1, b'}'];
        assert_eq!(&with_position(&binary, "c", &pos)[..], &binary, "not text: unchanged");
    }

    /// Found by the `cluster_payload` fuzz target: an empty object, and a header whose length
    /// is not the frame's.
    #[test]
    fn empty_objects_and_lying_headers() {
        let pos = Position {
            offset: 1,
            epoch: "e".into(),
        };
        let out = with_position(&[0x81, 4, b'{', b' ', b' ', b'}'], "c", &pos);
        let v: serde_json::Value = serde_json::from_slice(&out[2..]).unwrap();
        assert_eq!(v["offset"], 1);
        let lying = [0x81, 10, b'{', b'}'];
        assert_eq!(
            &with_position(&lying, "c", &pos)[..],
            &lying,
            "not a whole frame: unchanged"
        );
        let masked = [0x81, 0x82, 0, 0, 0, 0, b'{', b'}'];
        assert_eq!(&with_position(&masked, "c", &pos)[..], &masked);
    }

    #[test]
    fn whitespace_after_the_object_is_still_an_object() {
        // Found by the cluster_payload fuzz target: `{ }` followed by whitespace.
        let pos = Position {
            offset: 12,
            epoch: "e".into(),
        };
        let frame = b"\x81\x0a{\n\n\t\t\n}\t  ";
        let out = with_position(frame, "user:x", &pos);
        let v: serde_json::Value = serde_json::from_slice(&out[2..]).unwrap();
        assert_eq!(
            (v["offset"].as_u64(), v["channel"].as_str()),
            (Some(12), Some("user:x"))
        );
        let frame = b"\x81\x0a{\"a\":1}\n \t";
        let v: serde_json::Value = serde_json::from_slice(&with_position(frame, "c", &pos)[2..]).unwrap();
        assert_eq!((v["a"].as_u64(), v["epoch"].as_str()), (Some(1), Some("e")));
    }
}
