//! Accepted connections still in their handshake, in accept order, for the per-reactor limit
//! on pending handshakes.
//!
//! Owns: the list and when it is compacted next. Does not touch: connections (the core says
//! which entries are still pending, and evicts).

use std::collections::VecDeque;

use mio::Token;

/// The list is compacted when it reaches this length (or the limit).
const COMPACT_AT: usize = 1024;

/// Tokens of accepted connections in accept order; entries whose handshake ended are dropped
/// lazily, at compaction.
pub(crate) struct PendingHandshakes {
    list: VecDeque<Token>,
    /// Length at which the list is compacted next.
    compact_at: usize,
}

impl Default for PendingHandshakes {
    fn default() -> Self {
        PendingHandshakes {
            list: VecDeque::new(),
            compact_at: COMPACT_AT,
        }
    }
}

impl PendingHandshakes {
    /// Records an accepted connection; true if the list should now be compacted (it is over
    /// `limit`, or over its compaction mark: compacting well before the limit keeps the list
    /// to the few connections actually pending).
    pub(crate) fn push(&mut self, token: Token, limit: usize) -> bool {
        self.list.push_back(token);
        self.list.len() > limit.min(self.compact_at)
    }

    /// Forgets the entries that are no longer pending. The next compaction comes once the list
    /// has doubled: during a connect storm with thousands legitimately pending, compacting on
    /// every accept was quadratic.
    pub(crate) fn compact(&mut self, still_pending: impl Fn(Token) -> bool) {
        self.list.retain(|&t| still_pending(t));
        if self.list.capacity() > 4 * COMPACT_AT.max(self.list.len()) {
            self.list.shrink_to(2 * self.list.len());
        }
        self.compact_at = COMPACT_AT.max(2 * self.list.len());
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// The oldest entry.
    pub(crate) fn oldest(&self) -> Option<Token> {
        self.list.front().copied()
    }

    pub(crate) fn forget_oldest(&mut self) {
        self.list.pop_front();
    }
}
