//! Where things live on one node: which reactor owns a user, a connection, a channel; which
//! reactors an ask about a target goes to; how a message becomes the ask that delivers it
//! (sequenced through its channel when the channel keeps history); how a page of connections
//! is asked for.
//!
//! Owns: these placement rules, as pure functions of a few facts fixed at start (the number of
//! reactors, whether users are homed, whether the node is on a cluster, whether history is
//! kept). Does not touch: reactors, sockets or waiting. The loop, the admin plans, the
//! cluster's side of the core and [`crate::ServerHandle`] all place things through it, so they
//! agree.

use std::time::Instant;

use tungstenite::Bytes;

use crate::ask::{Ask, Target};
use crate::config::Config;
use crate::outgoing::Outgoing;

/// The placement facts of a node.
pub(crate) struct Topology {
    reactors: usize,
    /// Users are authenticated (JWT): every connection of a user lives on its home reactor.
    users_homed: bool,
    clustered: bool,
    history: bool,
    /// The configured event types, by bit (a subscribers target names its event by bit).
    events: Vec<String>,
}

impl Topology {
    pub fn new(config: &Config, reactors: usize, users_homed: bool, clustered: bool) -> Self {
        Topology {
            reactors: reactors.max(1),
            users_homed,
            clustered,
            history: config.history_enabled(),
            events: config.subscribable_events.clone(),
        }
    }

    pub fn all_reactors(&self) -> Vec<usize> {
        (0..self.reactors).collect()
    }

    /// The node is joined to others (`--redis`).
    pub fn is_clustered(&self) -> bool {
        self.clustered
    }

    /// The reactor that owns every connection of `user_id` (a fixed hash, the same on all
    /// threads).
    pub fn home_of(&self, user_id: &str) -> usize {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        user_id.hash(&mut h);
        (h.finish() % self.reactors as u64) as usize
    }

    /// The reactor that keeps a channel's history and gives out its offsets: a user's channel
    /// lives with the user's connections; other channels are spread by a hash of their name.
    /// On a cluster node, the hub: the reactor holding the node's subscription (0).
    pub fn channel_home(&self, channel: &str) -> usize {
        if self.clustered {
            return 0;
        }
        match channel.strip_prefix("user:") {
            Some(user) => self.home_of(user),
            None => self.home_of(channel),
        }
    }

    /// The reactor a connection id names (its byte 4), if this node has it.
    pub fn reactor_of(&self, id: &uuid::Uuid) -> Option<usize> {
        let r = id.as_bytes()[4] as usize;
        (r < self.reactors).then_some(r)
    }

    /// The reactors that may hold connections matching `target`.
    pub fn reactors_for(&self, target: &Target) -> Vec<usize> {
        match target {
            Target::User(u) if self.users_homed => vec![self.home_of(u)],
            Target::Connection(id) => self.reactor_of(id).into_iter().collect(),
            _ => self.all_reactors(),
        }
    }

    /// The ask that delivers `frame` to `target` on `reactors`: sequenced through its channel
    /// when the channel keeps history, else a plain delivery.
    pub fn deliver_ask(
        &self,
        target: Target,
        frame: Bytes,
        exclude_user: Option<Box<str>>,
        published_at: Instant,
        reactors: &[usize],
        dedupe: Option<Box<str>>,
    ) -> Ask {
        let channel = match &target {
            // On a cluster node a message to everyone is kept too (unchanged, in the stream
            // `all`), so a node whose subscription broke can fill what it missed.
            Target::All if self.history && self.clustered => Some(crate::cluster::broker::ALL.to_string()),
            t => self.history.then(|| t.channel(&self.events)).flatten(),
        };
        match channel {
            Some(channel) => Ask::Sequence {
                channel: channel.into(),
                target,
                frame,
                exclude_user,
                published_at,
                reactors: reactors.to_vec(),
                dedupe,
            },
            None => Ask::Deliver {
                target,
                frame,
                exclude_user,
                published_at,
                dedupe,
            },
        }
    }

    /// The asks that deliver `o`, published at `now`: one per target, to each reactor that
    /// may hold it.
    pub fn deliver_asks(&self, o: &Outgoing, now: Instant) -> Vec<(Ask, Vec<usize>)> {
        o.targets
            .iter()
            .map(|t| {
                let reactors = self.reactors_for(t);
                let ask = self.deliver_ask(
                    t.clone(),
                    o.frame.clone(),
                    o.exclude_user.clone(),
                    now,
                    &reactors,
                    o.dedupe.clone(),
                );
                (ask, reactors)
            })
            .collect()
    }

    /// The asks that make up one page of connections: every reactor from the one `after`
    /// names on is asked for a full page at once (the first from just past `after`), and the
    /// answers are merged in order.
    pub fn page_asks(&self, user: Option<&str>, after: Option<uuid::Uuid>, limit: usize) -> Vec<(Ask, Vec<usize>)> {
        let limit = limit.clamp(1, 1000);
        // A connection id carries its slot (bytes 0-3) and reactor (byte 4) in the clear.
        let (first, start) = after.map_or((0, 0), |id| {
            let b = id.as_bytes();
            (b[4] as usize, u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize + 1)
        });
        let only = user.filter(|_| self.users_homed).map(|u| self.home_of(u));
        (first..self.reactors)
            .filter(|r| only.is_none_or(|h| h == *r))
            .map(|r| {
                let ask = Ask::List {
                    start: if r == first { start } else { 0 },
                    limit,
                    user: user.map(Into::into),
                };
                (ask, vec![r])
            })
            .collect()
    }
}
