//! The reactor's cluster records: channel names, work for the engine, publishes waiting for
//! it, admissions decided, and the hub of channels with history (reactor 0).
//!
//! Owns: these records. Does not touch: what they mean for connections (`core::cluster`).

use std::collections::HashMap;

use crate::ask::{Ask, Target};
use crate::cluster::broker::{Admission, EngineOp};
use crate::cluster::channels::Channels;

/// This reactor's cluster state.
pub(crate) struct CoreCluster {
    pub(crate) channels: Channels,
    /// Work for the engine, handed over by the loop (in order).
    pub(crate) ops: Vec<EngineOp>,
    pub(crate) next_id: u64,
    pub(crate) pending: HashMap<u64, Pending>,
    /// Cluster-wide admissions decided this turn, for the loop to finish the handshakes.
    pub(crate) admitted: Vec<(u64, Admission)>,
    /// Open connections admitted on this node's own count (Redis was away): when they are
    /// counted in Redis they rank as the newest, after every connection the cluster admitted.
    pub(crate) admitted_alone: std::collections::HashSet<uuid::Uuid>,
    /// Channels with history (reactor 0 only).
    pub(crate) hub: super::hub::Hub,
}

/// A publish waiting for the engine.
pub(crate) enum Pending {
    /// Ask `ask` of in-flight entry `key`: carried out here once the cluster has the message.
    Deliver {
        key: usize,
        serial: u32,
        index: usize,
        ask: Ask,
        reactors: Vec<usize>,
    },
    /// Ask `index` of in-flight entry `key` went to every node: each other node will answer.
    Request { key: usize, serial: u32, index: usize },
}

impl CoreCluster {
    pub fn new(prefix: &str, node: &str) -> Self {
        CoreCluster {
            channels: Channels::new(prefix, node),
            ops: Vec::new(),
            next_id: 0,
            pending: HashMap::new(),
            admitted: Vec::new(),
            admitted_alone: Default::default(),
            hub: Default::default(),
        }
    }

    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The channel a delivery to `target` is published on (one connection: every node's).
    pub(crate) fn channel_of(&self, target: &Target, events: &[String]) -> Option<Box<[u8]>> {
        Some(match target {
            Target::All => self.channels.all(),
            Target::Subscribers(bit) => self.channels.event(events.get(*bit as usize)?),
            Target::User(u) => self.channels.user(u),
            Target::Room(r) => self.channels.room(r),
            Target::Connection(_) => self.channels.nodes(),
        })
    }
}
