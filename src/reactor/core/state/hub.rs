//! The hub's records (reactor 0 of a cluster node with history): per channel, its position,
//! the node's own publishes waiting for their echo, queries in flight, recoveries waiting
//! behind their marker, and gap fills.
//!
//! Owns: these records and their bookkeeping. Does not touch: deliveries or the engine
//! (`core::hub`, `core::hub_recovery`).

use std::collections::{HashMap, VecDeque};

use tungstenite::Bytes;

use super::fanout::Waiter;
use crate::ask::{Answer, ReplyTo, Target};
use crate::cluster::broker::{EngineError, Range};
use crate::history::Position;

#[derive(Default)]
pub(crate) struct Hub {
    pub(crate) next_id: u64,
    pub(crate) publishes: HashMap<u64, OwnPublish>,
    pub(crate) queries: HashMap<u64, Query>,
    /// Channels with something going on here: recent messages, held ones, recoveries.
    pub(crate) tracks: HashMap<Box<str>, Track>,
    /// Quiet channels this node is subscribed to, compactly: where each stands here (a hash
    /// of its name → last offset delivered, epoch), to find what a broken subscription missed.
    pub(crate) quiet: HashMap<u64, (u64, u32)>,
    /// Recovery interest to drop, with when.
    pub(crate) phantoms: Vec<(Box<[u8]>, u64)>,
}

/// This node's publish to a channel with history.
pub(crate) struct OwnPublish {
    pub(crate) to: Option<ReplyTo>,
    /// Redis took it and this node is subscribed: its copy is on the way.
    pub(crate) echo_at: Option<u64>,
    /// Its copy came back and was delivered (the count is answered).
    pub(crate) delivered: bool,
}

pub(crate) enum Query {
    /// Recoveries of one channel asked together.
    Recover {
        channel: Box<str>,
        waiters: Vec<RecoverWaiter>,
        reply: Option<Result<Range, EngineError>>,
        /// The marker came through the subscription.
        marked: bool,
    },
    Fill {
        channel: Box<str>,
        /// Offset before which the gap ends (the first held message), if known.
        upto: Option<u64>,
    },
    Read {
        to: Option<ReplyTo>,
    },
    Clear {
        to: Option<ReplyTo>,
    },
}

/// A message (or a recovery's marker) of a channel as the subscription brought it.
pub(crate) enum Incoming {
    Message {
        offset: u64,
        epoch: Box<str>,
        target: Target,
        frame: Bytes,
        exclude_user: Option<Box<str>>,
        /// This node's publish id, if it published it.
        own: Option<u64>,
    },
    Marker(u64),
}

/// This node's position in one channel.
pub(crate) struct Track {
    pub(crate) epoch: Box<str>,
    /// Last offset delivered here (`None`: not known yet, the next message sets it).
    pub(crate) last: Option<u64>,
    pub(crate) held: VecDeque<Incoming>,
    /// A fill from the stream is in flight.
    pub(crate) filling: bool,
    /// A fill Redis could not answer (the command connection was away): asked again at this
    /// time (ms), up to this offset. Loss is concluded only from what the stream says.
    pub(crate) fill_again: Option<(u64, Option<u64>)>,
    /// Fills that failed while the node was up (Redis answered with an error): past a bound
    /// the channel stops waiting and its connections here are told.
    pub(crate) fill_errors: u8,
    /// A recovery's marker was reached and its reply is not in.
    pub(crate) waiting_for: Option<u64>,
    /// The subscription broke since the last message: fill from `last` once it is back.
    pub(crate) stale: bool,
    pub(crate) touched_ms: u64,
    /// The recovery query in flight.
    pub(crate) recovering: Option<u64>,
    /// Recoveries that came meanwhile: asked together when it is answered.
    pub(crate) next_batch: Vec<RecoverWaiter>,
}

impl Track {
    pub(crate) fn new(now_ms: u64) -> Self {
        Track {
            epoch: "".into(),
            last: None,
            held: VecDeque::new(),
            filling: false,
            fill_again: None,
            fill_errors: 0,
            waiting_for: None,
            stale: false,
            touched_ms: now_ms,
            recovering: None,
            next_batch: Vec::new(),
        }
    }

    pub(crate) fn blocked(&self) -> bool {
        self.filling || self.fill_again.is_some() || self.waiting_for.is_some()
    }

    pub(crate) fn idle(&self) -> bool {
        !self.blocked() && self.held.is_empty() && self.recovering.is_none() && self.next_batch.is_empty()
    }
}

impl Hub {
    /// Keeps where a retired track stood (a quiet channel is looked at again whenever its
    /// subscription is confirmed anew). Epochs are 8 hex digits (made by wsedge's scripts).
    pub(crate) fn keep_quiet(&mut self, name: &str, t: &Track) {
        let epoch = u32::from_str_radix(&t.epoch, 16).ok().filter(|_| t.epoch.len() == 8);
        if let (Some(last), Some(epoch)) = (t.last, epoch) {
            self.quiet.insert(name_hash(name), (last, epoch));
        }
    }
}

pub(crate) fn name_hash(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

/// The target of a history channel name.
pub(crate) fn target_of(name: &str, events: &[String]) -> Option<Target> {
    if name == crate::cluster::broker::ALL {
        return Some(Target::All);
    }
    let (kind, rest) = name.split_once(':')?;
    match kind {
        "event" => events
            .iter()
            .position(|e| e == rest)
            .map(|b| Target::Subscribers(b as u32)),
        "room" => Some(Target::Room(rest.into())),
        "user" => Some(Target::User(rest.into())),
        _ => None,
    }
}

pub(crate) fn to_of(w: Option<Waiter>, me: usize, serial: impl Fn(usize) -> u32) -> Option<ReplyTo> {
    match w? {
        Waiter::Reply(to) => Some(to),
        Waiter::Local { key, ask } => Some(ReplyTo::Reactor {
            reactor: me,
            ticket: super::asks::ticket(key, ask, serial(key)),
        }),
    }
}

/// A recovery's channel stays subscribed this long after its answer, so the connection's own
/// interest (on its way from its reactor) arrives first and the node never unsubscribes.
pub(crate) const PHANTOM_MS: u64 = 1_000;

/// One connection's recovery (or position) of a channel.
pub(crate) struct RecoverWaiter {
    pub(crate) from: Option<(u64, Box<str>)>,
    pub(crate) until: Option<u64>,
    /// Who recovers: entries stored with `exclude_user` naming them are left out.
    pub(crate) reader: Option<Box<str>>,
    pub(crate) to: Option<ReplyTo>,
}

impl RecoverWaiter {
    /// The answer from `range` (shared frames): exactly the messages after the waiter's
    /// offset, or none at all.
    pub(crate) fn answer(&self, range: &Result<Range, EngineError>, max: u64) -> Answer {
        let Ok(r) = range else {
            return Answer::Recovered {
                frames: None,
                position: Position::default(),
            };
        };
        let p = &r.position;
        let frames = self.from.as_ref().and_then(|(offset, epoch)| {
            let offset = *offset;
            if !crate::history::same_epoch(offset, epoch, &p.epoch) || offset > p.offset || p.offset - offset > max {
                return None;
            }
            let mine = r.entries.iter().filter(|e| e.0 > offset);
            let first = r.entries.iter().find(|e| e.0 > offset).map(|e| e.0);
            let whole = mine.clone().count() as u64 == p.offset - offset && first.is_none_or(|f| f == offset + 1);
            whole.then(|| {
                mine.filter(|e| self.until.is_none_or(|u| e.0 <= u))
                    .filter(|e| self.reader.is_none() || e.2.as_deref() != self.reader.as_deref())
                    .map(|e| e.1.clone())
                    .collect()
            })
        });
        Answer::Recovered {
            frames,
            position: p.clone(),
        }
    }
}
