//! Channel history: positions (offset within epoch) and the last messages of each channel, kept
//! by the reactor the channel is homed on (the in-memory engine).
//!
//! Owns: per channel a bounded ring of framed messages with their offsets and publish times,
//! the channel's next offset and its epoch; trimming by size, age and a byte budget; and the
//! answer to "what came after offset n of epoch e". Does not touch: delivery (the reactor
//! fans out what `append` returns) or the protocol around recovery.
//!
//! Offsets are contiguous from 1 within an epoch. An epoch changes whenever a channel's history
//! is lost: at every process start (the in-memory engine keeps nothing across restarts), and
//! when the history is deleted or expires whole.

use std::collections::{HashMap, VecDeque};

use tungstenite::Bytes;

/// A channel's position: the last offset given out, in which epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub offset: u64,
    pub epoch: String,
}

/// A channel to subscribe to, and where to recover it from (`None`: only its position).
#[derive(Debug, Clone)]
pub struct RecoverItem {
    pub channel: String,
    /// The event type's bit (see `Config::event_bit`), for an event's channel.
    pub bit: u32,
    /// For a room's channel: the room the user joins.
    pub room: Option<String>,
    /// (offset, epoch) of the last message the client has.
    pub from: Option<(u64, String)>,
    /// Replay only up to this offset (the client had the later ones live).
    pub until: Option<u64>,
}

/// One channel's outcome, for the acknowledgement.
#[derive(Debug, Clone)]
pub struct RecoveryOutcome {
    pub channel: String,
    /// Asked to recover: whether exactly the missing messages follow (`None`: not asked).
    pub recovered: Option<bool>,
    /// The channel's position when the connection joined it (`None`: its reactor did not
    /// answer).
    pub position: Option<Position>,
}

/// One kept message.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub offset: u64,
    /// Milliseconds on the reactor's clock when it was published.
    pub at_ms: u64,
    /// The WebSocket frame as delivered (channel, offset and epoch included).
    pub frame: Bytes,
    /// The user it was not delivered to (`exclude_user`): not replayed to them either.
    pub exclude_user: Option<Box<str>>,
}

struct Ring {
    epoch: Box<str>,
    /// The last offset given out.
    top: u64,
    entries: VecDeque<Entry>,
    bytes: usize,
    /// When the last message was published (an empty ring idle past the TTL is forgotten).
    last_ms: u64,
}

/// What a recovery finds.
#[derive(Debug)]
pub(crate) enum Recovery {
    /// Exactly the messages after the client's offset, in order (possibly none).
    Replay(Vec<Bytes>, Position),
    /// The client must reload: another epoch, trimmed past its offset, or too many missing.
    Lost(Position),
}

/// The channels homed on one reactor.
pub(crate) struct History {
    channels: HashMap<Box<str>, Ring>,
    /// This process's epoch, for channels that never lost history since it started.
    epoch: Box<str>,
    size: usize,
    ttl_ms: u64,
    max_bytes: usize,
    bytes: usize,
    messages: usize,
}

/// Whether a recovery from `offset` of `epoch` can be answered in a channel now in `current`:
/// the same epoch, or offset 0 with no epoch (a client that never saw the channel asks for
/// everything kept). In memory and from Redis alike.
pub(crate) fn same_epoch(offset: u64, epoch: &str, current: &str) -> bool {
    epoch == current || (offset == 0 && epoch.is_empty())
}

/// A fresh epoch: 8 random hex digits.
fn new_epoch() -> Box<str> {
    uuid::Uuid::new_v4().simple().to_string()[..8].into()
}

impl History {
    /// `size` messages per channel, `ttl_ms` at most, `max_bytes` of frames in all (this
    /// reactor's share of the node's budget).
    pub fn new(size: usize, ttl_ms: u64, max_bytes: usize, epoch: &str) -> Self {
        History {
            channels: HashMap::new(),
            epoch: epoch.into(),
            size,
            ttl_ms,
            max_bytes,
            bytes: 0,
            messages: 0,
        }
    }

    /// A new process epoch (shared by every reactor of the process).
    pub fn process_epoch() -> String {
        new_epoch().into()
    }

    /// The channel's position (offset 0 if nothing was ever published).
    pub fn position(&self, channel: &str) -> Position {
        match self.channels.get(channel) {
            Some(r) => Position {
                offset: r.top,
                epoch: r.epoch.to_string(),
            },
            None => Position {
                offset: 0,
                epoch: self.epoch.to_string(),
            },
        }
    }

    /// Gives the next offset of `channel` to a message and keeps it: `frame_of` makes the
    /// frame from the position. Returns the frame (to deliver) and its position.
    pub fn append(
        &mut self,
        channel: &str,
        now_ms: u64,
        exclude_user: Option<Box<str>>,
        frame_of: impl FnOnce(&Position) -> Bytes,
    ) -> (Bytes, Position) {
        let epoch = &self.epoch;
        let ring = self.channels.entry(channel.into()).or_insert_with(|| Ring {
            epoch: epoch.clone(),
            top: 0,
            entries: VecDeque::new(),
            bytes: 0,
            last_ms: now_ms,
        });
        ring.top += 1;
        ring.last_ms = now_ms;
        let pos = Position {
            offset: ring.top,
            epoch: ring.epoch.to_string(),
        };
        let frame = frame_of(&pos);
        ring.bytes += frame.len();
        self.bytes += frame.len();
        self.messages += 1;
        ring.entries.push_back(Entry {
            offset: ring.top,
            at_ms: now_ms,
            frame: frame.clone(),
            exclude_user,
        });
        while ring.entries.len() > self.size {
            drop_oldest(ring, &mut self.bytes, &mut self.messages);
        }
        // Over the byte budget: this channel's oldest go first (the one that just grew).
        while self.bytes > self.max_bytes && ring.entries.len() > 1 {
            drop_oldest(ring, &mut self.bytes, &mut self.messages);
        }
        (frame, pos)
    }

    /// The messages after `offset` of `epoch` (up to `until`, if given), if all of them are
    /// still kept and there are at most `max`; those excluded for `reader` are left out (they
    /// still count as kept: the offsets stay contiguous).
    #[allow(clippy::too_many_arguments)]
    pub fn since(
        &mut self,
        channel: &str,
        offset: u64,
        epoch: &str,
        until: Option<u64>,
        max: usize,
        now_ms: u64,
        reader: Option<&str>,
    ) -> Recovery {
        self.expire_channel(channel, now_ms);
        let pos = self.position(channel);
        if !same_epoch(offset, epoch, &pos.epoch) || offset > pos.offset {
            return Recovery::Lost(pos);
        }
        let last = until.map_or(pos.offset, |u| u.min(pos.offset));
        let missing = last.saturating_sub(offset) as usize;
        if missing == 0 {
            return Recovery::Replay(Vec::new(), pos);
        }
        if missing > max {
            return Recovery::Lost(pos);
        }
        let Some(ring) = self.channels.get(channel) else {
            return Recovery::Lost(pos);
        };
        // Contiguous offsets: the first kept must be at most offset + 1.
        match ring.entries.front() {
            Some(first) if first.offset <= offset + 1 => {}
            _ => return Recovery::Lost(pos),
        }
        let frames = ring
            .entries
            .iter()
            .filter(|e| e.offset > offset && e.offset <= last)
            .filter(|e| reader.is_none() || e.exclude_user.as_deref() != reader)
            .map(|e| e.frame.clone())
            .collect();
        Recovery::Replay(frames, pos)
    }

    /// Up to `limit` kept messages after `since`, with the position.
    pub fn read(&mut self, channel: &str, since: u64, limit: usize, now_ms: u64) -> (Vec<Entry>, Position) {
        self.expire_channel(channel, now_ms);
        let entries = self
            .channels
            .get(channel)
            .map(|r| {
                r.entries
                    .iter()
                    .filter(|e| e.offset > since)
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        (entries, self.position(channel))
    }

    /// Forgets a channel's history: its next message starts a new epoch at offset 1. Returns
    /// whether there was any.
    pub fn clear(&mut self, channel: &str) -> bool {
        match self.channels.get_mut(channel) {
            Some(ring) => {
                self.bytes -= ring.bytes;
                self.messages -= ring.entries.len();
                *ring = Ring {
                    epoch: new_epoch(),
                    top: 0,
                    entries: VecDeque::new(),
                    bytes: 0,
                    last_ms: ring.last_ms,
                };
                true
            }
            None => false,
        }
    }

    fn expire_channel(&mut self, channel: &str, now_ms: u64) {
        let ttl = self.ttl_ms;
        if let Some(ring) = self.channels.get_mut(channel) {
            while ring
                .entries
                .front()
                .is_some_and(|e| now_ms.saturating_sub(e.at_ms) > ttl)
            {
                drop_oldest(ring, &mut self.bytes, &mut self.messages);
            }
        }
    }

    /// Drops messages older than the TTL everywhere, and channels idle that long (their epoch
    /// goes with them: a later message starts a new one). Called about once a second.
    ///
    /// A channel with nothing kept answers "offset 0 of the current epoch", so once any
    /// channel is forgotten the current epoch is replaced: a client holding offset 0 (or any
    /// offset) of the old one cannot be told it missed nothing; it is told to reload.
    pub fn expire(&mut self, now_ms: u64) {
        let ttl = self.ttl_ms;
        let (bytes, messages) = (&mut self.bytes, &mut self.messages);
        let before = self.channels.len();
        self.channels.retain(|_, ring| {
            while ring
                .entries
                .front()
                .is_some_and(|e| now_ms.saturating_sub(e.at_ms) > ttl)
            {
                drop_oldest(ring, bytes, messages);
            }
            !(ring.entries.is_empty() && now_ms.saturating_sub(ring.last_ms) > ttl)
        });
        if self.channels.len() < before {
            self.epoch = new_epoch();
        }
        if self.channels.capacity() > 2 * self.channels.len() + 64 {
            self.channels.shrink_to_fit();
        }
    }

    /// (channels, messages, bytes) kept.
    pub fn usage(&self) -> (usize, usize, usize) {
        (self.channels.len(), self.messages, self.bytes)
    }
}

fn drop_oldest(ring: &mut Ring, bytes: &mut usize, messages: &mut usize) {
    if let Some(e) = ring.entries.pop_front() {
        ring.bytes -= e.frame.len();
        *bytes -= e.frame.len();
        *messages -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(p: &Position) -> Bytes {
        Bytes::from(format!("m{}", p.offset))
    }

    #[test]
    fn offsets_are_contiguous_and_recovery_is_exact_or_refused() {
        let mut h = History::new(5, 10_000, 1 << 20, "e0");
        assert_eq!(h.position("c").offset, 0);
        for _ in 0..7 {
            h.append("c", 0, None, frame);
        }
        let pos = h.position("c");
        assert_eq!((pos.offset, pos.epoch.as_str()), (7, "e0"));
        match h.since("c", 4, "e0", None, 300, 0, None) {
            Recovery::Replay(f, _) => assert_eq!(f, [Bytes::from("m5"), Bytes::from("m6"), Bytes::from("m7")]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(h.since("c", 7, "e0", None, 300, 0, None), Recovery::Replay(f, _) if f.is_empty()));
        assert!(
            matches!(h.since("c", 1, "e0", None, 300, 0, None), Recovery::Lost(_)),
            "2 was trimmed (size 5)"
        );
        assert!(
            matches!(h.since("c", 4, "other", None, 300, 0, None), Recovery::Lost(_)),
            "another epoch"
        );
        assert!(
            matches!(h.since("c", 8, "e0", None, 300, 0, None), Recovery::Lost(_)),
            "from the future"
        );
        assert!(
            matches!(h.since("c", 4, "e0", None, 2, 0, None), Recovery::Lost(_)),
            "more than max missing"
        );
        match h.since("c", 4, "e0", Some(6), 2, 0, None) {
            Recovery::Replay(f, pos) => {
                assert_eq!(f, [Bytes::from("m5"), Bytes::from("m6")], "up to `until`");
                assert_eq!(pos.offset, 7, "the position is still the channel's");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ttl_budget_and_clear() {
        let mut h = History::new(100, 1000, 1 << 20, "e0");
        h.append("c", 0, None, frame);
        h.append("c", 900, None, frame);
        assert!(
            matches!(h.since("c", 0, "e0", None, 300, 1500, None), Recovery::Lost(_)),
            "the first expired"
        );
        assert!(matches!(h.since("c", 1, "e0", None, 300, 1500, None), Recovery::Replay(f, _) if f.len() == 1));
        h.expire(5000);
        assert_eq!(h.usage(), (0, 0, 0), "an idle channel goes, with its epoch");
        let pos = h.position("c");
        assert_eq!(pos.offset, 0);
        assert_ne!(
            pos.epoch, "e0",
            "a forgotten channel is not at offset 0 of its old epoch"
        );
        assert!(matches!(
            h.since("c", 0, "e0", None, 300, 5000, None),
            Recovery::Lost(_)
        ));
        let (_, next) = h.append("c", 5000, None, frame);
        assert_eq!(
            (next.offset, next.epoch),
            (1, pos.epoch),
            "its next message starts the new one"
        );
        let mut h = History::new(100, 1000, 4, "e0");
        for _ in 0..3 {
            h.append("c", 0, None, frame);
        }
        assert_eq!(h.usage().1, 2, "two 2-byte frames fit a 4-byte budget");
        assert!(h.clear("c"));
        let pos = h.position("c");
        assert_eq!(pos.offset, 0);
        assert_ne!(pos.epoch, "e0", "history lost: a new epoch");
    }
}
