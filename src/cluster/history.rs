//! Channel history kept in Redis: the scripts that give a message its offset and keep it, and
//! the one that reads a channel's position and messages; their arguments and replies.
//!
//! Owns: the keys (`{prefix}:history:{channel}`, a stream whose entry ids are `{offset}-1`, and
//! `{prefix}:history-meta:{channel}`, a hash with the epoch `e` and the last offset `s`), the
//! scripts, and what their replies mean. Does not touch: connections (the engine sends the
//! commands) or order of delivery (the reactor core's hub does).
//!
//! One publish is one round trip: the script takes the next offset (starting a new epoch, and
//! an empty stream, when the hash is gone: expired, flushed, deleted), makes the frame with the
//! channel, offset and epoch added, appends it to the stream (trimmed to `--history-size`),
//! renews both keys' expiry (`--history-ttl` after the channel's last message) and publishes
//! it to the nodes. The frame is made once, there; nodes deliver its bytes as they are.

use redis_protocol::resp2::types::BytesFrame;

use super::broker::{Appended, Range};
use super::resp::bytes_of;
use crate::history::Position;

/// KEYS: stream, meta, and the idempotency key if the publish has one. ARGV: pub/sub channel,
/// payload head (see `wire::history_head`), the JSON object without its closing brace,
/// `,"channel":"..."`, size, ttl (ms), epoch to start if there is none, the user the message
/// skips ('' for none), the idempotency window (ms), '1' if ARGV[3] is the whole frame to keep
/// as it is (messages to everyone). Returns {nodes reached, offset, epoch},
/// or {-1, 0, ''} for a key seen within the window (nothing is kept or published).
pub(crate) const PUBLISH_SCRIPT: &str = r#"
if KEYS[3] and not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[9]) then
  return {-1, 0, ''}
end
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[7]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', epoch, 's', 0)
end
local offset = redis.call('HINCRBY', KEYS[2], 's', 1)
local frame
if ARGV[10] == '1' then
  frame = ARGV[3]
else
  local json = ARGV[3] .. ARGV[4] .. ',"offset":' .. offset .. ',"epoch":"' .. epoch .. '"}'
  local n = #json
  local head
  if n < 126 then
    head = string.char(129, n)
  elseif n < 65536 then
    head = string.char(129, 126, math.floor(n / 256), n % 256)
  else
    head = string.char(129, 127, 0, 0, 0, 0, math.floor(n / 16777216) % 256,
      math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  end
  frame = head .. json
end
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[5], offset .. '-1', 'f', frame, 'x', ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
local nodes = redis.call('PUBLISH', ARGV[1], ARGV[2] .. offset .. '\n' .. epoch .. '\n' .. frame)
return {nodes, offset, epoch}
"#;

/// KEYS: stream, meta. ARGV: the offset to read after ('' for the position only), at most
/// how many, ttl (ms), epoch to start if there is none, marker channel ('' for none), marker
/// payload. Returns {last offset, epoch, entries}. The marker is published in the same step,
/// so on the marker channel it falls exactly after the messages the reply covers.
pub(crate) const RANGE_SCRIPT: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[4]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', epoch, 's', 0)
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
local top = tonumber(redis.call('HGET', KEYS[2], 's'))
local entries = {}
if ARGV[1] ~= '' then
  local after = tonumber(ARGV[1])
  if after < top then
    entries = redis.call('XRANGE', KEYS[1], (after + 1) .. '-1', '+', 'COUNT', ARGV[2])
  end
end
if ARGV[5] ~= '' then
  redis.call('PUBLISH', ARGV[5], ARGV[6])
end
return {top, epoch, entries}
"#;

/// KEYS: the idempotency key. ARGV: pub/sub channel, payload, window (ms). Publishes unless
/// the key was seen within the window; returns the nodes reached, or -1 for a duplicate.
pub(crate) const DEDUPE_PUBLISH_SCRIPT: &str = r#"
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[3]) then
  return -1
end
return redis.call('PUBLISH', ARGV[1], ARGV[2])
"#;

/// KEYS: stream, meta. ARGV: ttl (ms), the new epoch. Returns how many keys existed.
pub(crate) const CLEAR_SCRIPT: &str = r#"
local existed = redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[2], 'e', ARGV[2], 's', 0)
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return existed
"#;

fn int_of(f: &BytesFrame) -> Option<i64> {
    match f {
        BytesFrame::Integer(n) => Some(*n),
        other => std::str::from_utf8(bytes_of(other)?).ok()?.parse().ok(),
    }
}

/// The publish script's reply (`echo` is filled by the engine).
pub(crate) fn parse_appended(f: &BytesFrame) -> Option<Appended> {
    let BytesFrame::Array(parts) = f else { return None };
    let nodes = int_of(parts.first()?)?;
    if nodes < 0 {
        return Some(Appended {
            nodes: 0,
            position: Position::default(),
            echo: false,
            duplicate: true,
        });
    }
    let offset = int_of(parts.get(1)?)?;
    let epoch = std::str::from_utf8(bytes_of(parts.get(2)?)?).ok()?;
    Some(Appended {
        nodes: nodes.max(0) as usize,
        position: Position {
            offset: offset.max(0) as u64,
            epoch: epoch.to_string(),
        },
        echo: false,
        duplicate: false,
    })
}

/// The range script's reply.
pub(crate) fn parse_range(f: &BytesFrame) -> Option<Range> {
    let BytesFrame::Array(parts) = f else { return None };
    let top = int_of(parts.first()?)?;
    let epoch = std::str::from_utf8(bytes_of(parts.get(1)?)?).ok()?;
    let BytesFrame::Array(list) = parts.get(2)? else {
        return None;
    };
    let mut entries = Vec::with_capacity(list.len());
    for e in list {
        let BytesFrame::Array(pair) = e else { return None };
        let id = std::str::from_utf8(bytes_of(pair.first()?)?).ok()?;
        let offset = id.split_once('-')?.0.parse().ok()?;
        let BytesFrame::Array(fields) = pair.get(1)? else {
            return None;
        };
        let exclude = fields
            .get(3)
            .and_then(bytes_of)
            .filter(|x| !x.is_empty())
            .and_then(|x| std::str::from_utf8(x).ok())
            .map(Into::into);
        entries.push((offset, bytes_of(fields.get(1)?)?.clone(), exclude));
    }
    Some(Range {
        position: Position {
            offset: top.max(0) as u64,
            epoch: epoch.to_string(),
        },
        entries,
    })
}

/// The part of a frame's JSON object the publish script extends: everything but the closing
/// brace (`None`: not one text frame holding an object).
pub(crate) fn open_object(frame: &[u8]) -> Option<&[u8]> {
    let (head, len) = crate::ws::frame::server_frame_bounds(frame)?;
    let json = &frame[head..];
    if frame[0] != 0x81 || json.len() != len || json.last() != Some(&b'}') || len < 3 {
        return None;
    }
    Some(&json[..len - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn bulk(s: &str) -> BytesFrame {
        BytesFrame::BulkString(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn replies_parse_and_garbage_does_not() {
        let a = BytesFrame::Array(vec![BytesFrame::Integer(2), BytesFrame::Integer(7), bulk("ab12")]);
        let got = parse_appended(&a).unwrap();
        assert_eq!(
            (got.nodes, got.position.offset, got.position.epoch.as_str()),
            (2, 7, "ab12")
        );
        let entry = |id: &str, f: &str| BytesFrame::Array(vec![bulk(id), BytesFrame::Array(vec![bulk("f"), bulk(f)])]);
        let r = BytesFrame::Array(vec![
            BytesFrame::Integer(9),
            bulk("e"),
            BytesFrame::Array(vec![entry("8-1", "x"), entry("9-1", "y")]),
        ]);
        let got = parse_range(&r).unwrap();
        assert_eq!(got.position.offset, 9);
        assert_eq!(
            got.entries,
            vec![(8, Bytes::from("x"), None), (9, Bytes::from("y"), None)]
        );
        assert_eq!(parse_range(&BytesFrame::Integer(1)), None);
        assert_eq!(parse_appended(&BytesFrame::Array(vec![bulk("x")])), None);
    }

    #[test]
    fn only_whole_text_objects_open() {
        assert_eq!(
            open_object(&[0x81, 7, b'{', b'"', b'a', b'"', b':', b'1', b'}']),
            Some(&b"{\"a\":1"[..])
        );
        assert_eq!(
            open_object(&[0x81, 2, b'{', b'}']),
            None,
            "empty: nothing to add a field after"
        );
        assert_eq!(open_object(&[0x82, 3, b'{', b'1', b'}']), None);
        assert_eq!(open_object(&[0x81, 9, b'{', b'1', b'}']), None);
    }
}
