//! The Redis engine's history ops: running the history scripts on the command connection,
//! and holding the ones that must wait until the node is subscribed to their channel.
//!
//! Owns: the scripts' arguments and what each reply answers. Does not touch: the scripts
//! themselves or their replies' layout (`cluster::history`), or what the node does with the
//! answers (the reactor core's hub).

use redis_protocol::resp2::types::BytesFrame;

use super::state::{Expect, Half, Pending, Script};
use crate::cluster::broker::EngineHost;
use crate::cluster::broker::{EngineError, EngineOp, HistoryAnswer};
use crate::cluster::history::{parse_appended, parse_range};
use crate::cluster::wire;
use crate::history::Position;

/// Answers a history op that will not run.
pub(super) fn fail(r: &mut dyn EngineHost, op: EngineOp) {
    if let EngineOp::PublishHistory { id, .. } | EngineOp::HistoryRange { id, .. } | EngineOp::HistoryClear { id, .. } =
        op
    {
        r.history(id, Err(EngineError::Unavailable));
    }
}

impl Half {
    pub(super) fn apply_history(&mut self, r: &mut dyn EngineHost, op: EngineOp) {
        if !self.is_up() {
            if matches!(op, EngineOp::PublishHistory { .. }) {
                self.shared.metrics.publish_failures.inc();
            }
            return fail(r, op);
        }
        let ttl = self.shared.history_ttl_ms.to_string();
        let epoch = crate::history::History::process_epoch();
        match op {
            EngineOp::PublishHistory {
                id,
                name,
                exclude_user,
                object,
                dedupe,
            } => {
                let channel = self.shared.channels.of_history(&name);
                let (stream, meta) = self.shared.channels.history_keys(&name);
                let dedupe = dedupe.map(|k| self.shared.channels.idempotency(&k));
                let mut keys: Vec<&[u8]> = vec![&stream, &meta];
                keys.extend(dedupe.as_deref());
                let window = self.shared.dedupe_window_ms.clone();
                let head = wire::history_head(&self.shared.node, exclude_user.as_deref(), id);
                let mut field = b",\"channel\":".to_vec();
                let _ = serde_json::to_writer(&mut field, &*name);
                let size = self.shared.history_size.to_string();
                self.shared.metrics.publishes.inc();
                self.run_script(
                    Script::Publish,
                    Expect::History(Pending::Publish {
                        id,
                        channel: channel.clone(),
                    }),
                    &keys,
                    &[
                        &channel,
                        &head,
                        &object,
                        &field,
                        size.as_bytes(),
                        ttl.as_bytes(),
                        epoch.as_bytes(),
                        exclude_user.as_deref().unwrap_or("").as_bytes(),
                        window.as_bytes(),
                        if *name == *crate::cluster::broker::ALL {
                            b"1"
                        } else {
                            b"0"
                        },
                    ],
                );
            }
            EngineOp::HistoryRange {
                id,
                name,
                after,
                max,
                mark,
            } => {
                let channel = self.shared.channels.of_history(&name);
                if mark {
                    let confirmed = self
                        .sub
                        .as_ref()
                        .and_then(|s| s.channels.get(&channel))
                        .is_some_and(|i| i.confirmed());
                    if !confirmed {
                        let op = EngineOp::HistoryRange {
                            id,
                            name,
                            after,
                            max,
                            mark,
                        };
                        self.parked.push((channel, op));
                        return;
                    }
                }
                let (stream, meta) = self.shared.channels.history_keys(&name);
                let after = after.map(|a| a.to_string()).unwrap_or_default();
                let max = max.to_string();
                let marker = if mark {
                    wire::marker(&self.shared.node, id)
                } else {
                    Vec::new()
                };
                let marker_channel: &[u8] = if mark { &channel } else { b"" };
                self.run_script(
                    Script::Range,
                    Expect::History(Pending::Range { id }),
                    &[&stream, &meta],
                    &[
                        after.as_bytes(),
                        max.as_bytes(),
                        ttl.as_bytes(),
                        epoch.as_bytes(),
                        marker_channel,
                        &marker,
                    ],
                );
            }
            EngineOp::HistoryClear { id, name } => {
                let (stream, meta) = self.shared.channels.history_keys(&name);
                self.run_script(
                    Script::Clear,
                    Expect::History(Pending::Clear {
                        id,
                        epoch: epoch.clone(),
                    }),
                    &[&stream, &meta],
                    &[ttl.as_bytes(), epoch.as_bytes()],
                );
            }
            other => fail(r, other),
        }
    }

    /// The node is now subscribed to `channel`: the ops waiting for it run.
    pub(super) fn unpark(&mut self, r: &mut dyn EngineHost, channel: &[u8]) {
        let (ready, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|(c, _)| **c == *channel);
        self.parked = rest;
        for (_, op) in ready {
            self.apply_history(r, op);
        }
    }

    pub(super) fn history_reply(&mut self, r: &mut dyn EngineHost, p: Pending, f: BytesFrame) {
        let answer = match (&p, &f) {
            (_, BytesFrame::Error(e)) => {
                log::warn!("cluster: a history script failed: {e}");
                None
            }
            (Pending::Publish { channel, .. }, f) => parse_appended(f).map(|mut a| {
                // Subscribed now: the message comes back through the subscription, in order.
                let control = **channel == *self.shared.channels.all()
                    && self.shared.sub_up.load(std::sync::atomic::Ordering::Acquire);
                a.echo = !a.duplicate
                    && (control
                        || self
                            .sub
                            .as_ref()
                            .and_then(|s| s.channels.get(channel))
                            .is_some_and(|i| i.confirmed()));
                HistoryAnswer::Appended(a)
            }),
            (Pending::Range { .. }, f) => parse_range(f).map(HistoryAnswer::Range),
            (Pending::Clear { epoch, .. }, BytesFrame::Integer(n)) => Some(HistoryAnswer::Cleared {
                existed: *n > 0,
                position: Position {
                    offset: 0,
                    epoch: epoch.clone(),
                },
            }),
            (Pending::Clear { .. }, _) => None,
        };
        if answer.is_none() && matches!(p, Pending::Publish { .. }) {
            self.shared.metrics.publish_failures.inc();
        }
        r.history(p.id(), answer.ok_or(EngineError::Unavailable));
    }
}
