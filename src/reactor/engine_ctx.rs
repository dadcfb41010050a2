//! The cluster engine's view of its reactor: [`EngineCtx`] implements the broker seam's
//! [`EngineHost`] over the reactor's core and registry.
//!
//! Owns: turning an engine's reports into the core's calls, and the engine's own namespace of
//! source and timer ids. Does not touch: what the engine does (`cluster`) or the handler's API
//! (`reactor_ctx`).

use std::io;
use std::time::Duration;

use mio::Interest;
use mio::event::Source;

use super::core::Core;
use super::reactor_ctx::source_token;
use crate::callback::{SourceId, TimerId};
use crate::cluster::broker::{Admission, EngineError, EngineHost, HistoryAnswer};
use crate::config::Config;

/// What an engine half is given in each call.
pub(crate) struct EngineCtx<'r> {
    pub core: &'r mut Core,
    pub registry: &'r mio::Registry,
}

impl EngineHost for EngineCtx<'_> {
    fn reactor(&self) -> usize {
        self.core.id
    }

    fn config(&self) -> &Config {
        &self.core.rt.config
    }

    fn register(&mut self, source: &mut dyn Source, id: SourceId, interest: Interest) -> io::Result<()> {
        self.registry.register(source, source_token(id, true), interest)
    }

    fn reregister(&mut self, source: &mut dyn Source, id: SourceId, interest: Interest) -> io::Result<()> {
        self.registry.reregister(source, source_token(id, true), interest)
    }

    fn deregister(&mut self, source: &mut dyn Source) -> io::Result<()> {
        self.registry.deregister(source)
    }

    fn set_timer(&mut self, id: TimerId, after: Duration) {
        self.core.set_app_timer(id, after, true);
    }

    fn published(&mut self, id: u64, result: Result<usize, EngineError>) {
        self.core.cluster_published(id, result);
    }

    fn received(&mut self, channel: &[u8], payload: bytes::Bytes) {
        self.core.cluster_received(channel, payload);
    }

    fn register_connections(&mut self) {
        self.core.cluster_register_all();
    }

    fn admitted(&mut self, id: u64, verdict: Admission) {
        self.core.cluster_admitted(id, verdict);
    }

    fn history(&mut self, id: u64, result: Result<HistoryAnswer, EngineError>) {
        self.core.hub_history_answer(id, result);
    }

    fn subscription(&mut self, channel: &[u8], subscribed: bool) {
        self.core.hub_subscription(channel, subscribed);
    }

    fn subscription_lost(&mut self) {
        self.core.hub_subscription_lost();
    }

    fn subscription_restored(&mut self) {
        self.core.cluster_subscription_restored();
    }

    fn appended(&mut self, id: u64, result: Result<(), EngineError>) {
        self.core.stream_appended(id, result);
    }

    fn evict(&mut self, connection: uuid::Uuid) {
        self.core.cluster_evict(connection);
    }
}
