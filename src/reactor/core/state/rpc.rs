//! What waits on the backend outside the HTTP bridge: rpcs the backend took and has not
//! answered yet (an answer may come later through the admin route,
//! `POST /ws/connections/{id}/rpc`, until the rpc's deadline), and items written to the
//! backend's Redis stream whose `XADD` Redis has not confirmed.
//!
//! Owns: these tables. Does not touch: frames (the core writes answers and errors).

use std::collections::HashMap;
use std::time::Instant;

use mio::Token;
use serde_json::value::RawValue;

/// An rpc waiting for its answer.
pub(crate) struct Waiting {
    pub(crate) conn: Token,
    pub(crate) client_id: Option<Box<RawValue>>,
    pub(crate) deadline: Instant,
    /// The backend took it (a 2xx, or Redis confirmed the XADD): a timeout says `delivered`,
    /// not `unknown`.
    pub(crate) delivered: bool,
}

/// Items handed to the engine as `XADD`s, by append id: who to tell how it went.
#[derive(Default)]
pub(crate) struct Appends {
    pub(crate) by_id: HashMap<u64, Option<crate::bridge::Sender>>,
    next_id: u64,
}

impl Appends {
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

#[derive(Default)]
pub(crate) struct PendingRpcs {
    by_id: HashMap<uuid::Uuid, Waiting>,
    /// The earliest deadline (none: nothing waits), so most ticks look at one number.
    next: Option<Instant>,
}

impl PendingRpcs {
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn insert(&mut self, message_id: uuid::Uuid, w: Waiting) {
        self.next = Some(self.next.map_or(w.deadline, |n| n.min(w.deadline)));
        self.by_id.insert(message_id, w);
    }

    pub(crate) fn mark_delivered(&mut self, message_id: &uuid::Uuid) {
        if let Some(w) = self.by_id.get_mut(message_id) {
            w.delivered = true;
        }
    }

    /// The rpc `message_id` of connection `conn`, taken out.
    pub(crate) fn take(&mut self, message_id: &uuid::Uuid, conn: Token) -> Option<Waiting> {
        match self.by_id.get(message_id) {
            Some(w) if w.conn == conn => self.by_id.remove(message_id),
            _ => None,
        }
    }

    /// The rpcs whose deadline has passed at `now`, taken out (with their message ids).
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<(uuid::Uuid, Waiting)> {
        if self.next.is_none_or(|n| n > now) {
            return Vec::new();
        }
        let ids: Vec<uuid::Uuid> = self
            .by_id
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        let out = ids
            .into_iter()
            .filter_map(|id| self.by_id.remove(&id).map(|w| (id, w)))
            .collect();
        self.next = self.by_id.values().map(|w| w.deadline).min();
        out
    }
}

/// Runs once every permission check of a request has its verdict: with the connection's slot
/// and, per name asked, allowed or the refusal's reason. The core is passed as `dyn Any` (see
/// `RecoveryFinish`): the handler API that built the callback downcasts.
pub(crate) type CheckFinish = Box<dyn FnOnce(&mut dyn std::any::Any, usize, Vec<Result<(), String>>) + Send>;

/// A request's permission checks waiting for the auth proxy.
pub(crate) struct CheckGroup {
    pub(crate) conn: Token,
    pub(crate) verdicts: Vec<Option<Result<(), String>>>,
    pub(crate) finish: CheckFinish,
}

/// Permission checks in flight, by group and by the message id of each check.
#[derive(Default)]
pub(crate) struct Checks {
    pub(crate) groups: HashMap<u64, CheckGroup>,
    pub(crate) by_id: HashMap<uuid::Uuid, (u64, usize)>,
    next: u64,
}

impl Checks {
    pub(crate) fn next_group(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}
