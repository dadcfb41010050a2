//! The backend bridge's view of its reactor: [`BridgeCtx`] implements [`BridgeHost`] over
//! the reactor's core and registry.
//!
//! Owns: the bridge's one source token and timer id (in the engine's namespace, with
//! [`BRIDGE_ID`] set). Does not touch: what the bridge does (`bridge`) or the frames its
//! answers become (`core::backend`).

use std::io;
use std::time::{Duration, Instant};

use mio::Interest;
use mio::event::Source;

use super::core::Core;
use super::reactor_ctx::source_token;
use crate::bridge::wire::Outcome;
use crate::bridge::{BridgeHost, Failure, Sender};
use crate::callback::SourceId;

/// The bridge's source and timer id in the engine's namespace (engines use small ids).
pub(crate) const BRIDGE_ID: SourceId = 1 << 31;
/// The auth proxy's bridge's.
pub(crate) const AUTH_ID: SourceId = (1 << 31) | 1;

pub(crate) struct BridgeCtx<'r> {
    pub core: &'r mut Core,
    pub registry: &'r mio::Registry,
    /// `BRIDGE_ID` or `AUTH_ID`.
    pub id: SourceId,
}

impl BridgeHost for BridgeCtx<'_> {
    fn now(&self) -> Instant {
        self.core.clock.instant
    }

    fn register(&mut self, source: &mut dyn Source, interest: Interest) -> io::Result<()> {
        self.registry.register(source, source_token(self.id, true), interest)
    }

    fn deregister(&mut self, source: &mut dyn Source) -> io::Result<()> {
        self.registry.deregister(source)
    }

    fn set_timer(&mut self, after: Duration) {
        self.core.set_app_timer(self.id, after, true);
    }

    fn failed(&mut self, sender: &Sender, failure: Failure) {
        if sender.check {
            let refusal = Err("the permission check could not be made".to_string());
            return self.core.check_verdicts.push((sender.message_id, refusal));
        }
        if sender.auth {
            let verdict = crate::bridge::wire::verdict_of(None);
            return self.core.auth_answers.push((sender.conn, verdict));
        }
        self.core.backend_failed(sender, failure);
    }

    fn answered(&mut self, sender: &Sender, outcome: Outcome) {
        if sender.check {
            return self
                .core
                .check_answered(&sender.message_id, crate::bridge::wire::permission_of(outcome));
        }
        if sender.auth {
            let verdict = crate::bridge::wire::verdict_of(Some(outcome));
            return self.core.auth_answers.push((sender.conn, verdict));
        }
        self.core.backend_answered(sender, outcome);
    }

    fn awaiting(&mut self, sender: &Sender) {
        if sender.check {
            let refusal = Err("the backend gave no answer".to_string());
            return self.core.check_verdicts.push((sender.message_id, refusal));
        }
        if sender.auth {
            // An auth check needs its answer in the response.
            let refusal = Err((503, "the authentication backend gave no answer".to_string()));
            return self.core.auth_answers.push((sender.conn, refusal));
        }
        self.core.rpcs_delivered(sender);
    }
}
