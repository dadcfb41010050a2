//! Recoveries and history reads on a cluster node's hub (reactor 0): asking Redis, and the
//! marker that says which live messages an answer covers.
//!
//! Owns: batching the recoveries of one channel (those that come while one is in flight are
//! asked together next, in one script, and answered from one reply: a reconnect storm costs
//! Redis a few reads, and every replayed frame is shared), each connection's answer, and the
//! admin reads and deletes. Does not touch: the order of live messages (`hub`) or the replay
//! to the connection (`channels`).

use super::state::channels::frame_json;
use super::state::hub::{PHANTOM_MS, Query, RecoverWaiter};
use super::{Core, Waiter};
use crate::ask::Answer;
use crate::cluster::broker::{EngineError, EngineOp, HistoryAnswer, Range};

impl Core {
    /// `Ask::Recover` on a cluster node: joins the channel's next batch (see the module).
    pub(super) fn hub_recover(
        &mut self,
        channel: Box<str>,
        from: Option<(u64, Box<str>)>,
        until: Option<u64>,
        reader: Option<Box<str>>,
        w: Option<Waiter>,
    ) {
        let to = self.waiter_to(w);
        let Some(t) = self.track(&channel) else { return };
        t.next_batch.push(RecoverWaiter {
            from,
            until,
            reader,
            to,
        });
        if t.recovering.is_none() {
            self.launch_recoveries(&channel);
        }
    }

    /// Asks Redis for the channel's waiting batch: from the lowest offset, enough messages for
    /// the highest; the node is subscribed to the channel (held until a while after the answer)
    /// and the script's marker follows.
    fn launch_recoveries(&mut self, channel: &str) {
        let max = self.rt.config.recovery_max as u64;
        let Some(t) = self.hub().and_then(|h| h.tracks.get_mut(channel)) else {
            return;
        };
        let waiters = std::mem::take(&mut t.next_batch);
        if waiters.is_empty() {
            return;
        }
        let offsets = waiters.iter().filter_map(|w| w.from.as_ref().map(|f| f.0));
        let (low, high) = offsets.fold((None, 0u64), |(lo, hi), o| {
            (Some(lo.map_or(o, |l: u64| l.min(o))), hi.max(o))
        });
        let span = low.map_or(0, |l| high - l);
        let Some(hub) = self.hub() else { return };
        hub.next_id += 1;
        let id = hub.next_id;
        if let Some(t) = hub.tracks.get_mut(channel) {
            t.recovering = Some(id);
        }
        hub.queries.insert(
            id,
            Query::Recover {
                channel: channel.into(),
                waiters,
                reply: None,
                marked: false,
            },
        );
        if let Some(pubsub) = self.cluster.as_ref().map(|c| c.channels.of_history(channel)) {
            self.cluster_interest(pubsub, true);
        }
        self.engine_op(EngineOp::HistoryRange {
            id,
            name: channel.into(),
            after: low,
            // Offsets come from clients: a span beyond any stream is just "everything".
            max: span.saturating_add(max + 1).min(u32::MAX as u64) as usize,
            mark: true,
        });
    }

    /// `Ask::ReadHistory` on a cluster node.
    pub(super) fn hub_read(&mut self, channel: Box<str>, since: u64, limit: usize, w: Option<Waiter>) {
        let to = self.waiter_to(w);
        let Some(hub) = self.hub() else { return };
        hub.next_id += 1;
        let id = hub.next_id;
        hub.queries.insert(id, Query::Read { to });
        self.engine_op(EngineOp::HistoryRange {
            id,
            name: channel,
            after: Some(since),
            max: limit,
            mark: false,
        });
    }

    /// `Ask::ClearHistory` on a cluster node.
    pub(super) fn hub_clear(&mut self, channel: Box<str>, w: Option<Waiter>) {
        let to = self.waiter_to(w);
        let Some(hub) = self.hub() else { return };
        hub.next_id += 1;
        let id = hub.next_id;
        hub.queries.insert(id, Query::Clear { to });
        self.engine_op(EngineOp::HistoryClear { id, name: channel });
    }

    /// Redis answered query `id` (a recovery batch, a read or a delete).
    pub(super) fn query_answered(&mut self, id: u64, q: Query, result: Result<HistoryAnswer, EngineError>) {
        match q {
            Query::Recover {
                channel,
                waiters,
                marked,
                ..
            } => {
                let range = match result {
                    Ok(HistoryAnswer::Range(r)) => Ok(r),
                    _ => Err(EngineError::Unavailable),
                };
                if marked || range.is_err() {
                    self.finish_recoveries(id, &channel, waiters, range);
                } else if let Some(hub) = self.hub() {
                    // The marker is still on its way: what comes before it goes out first.
                    hub.queries.insert(
                        id,
                        Query::Recover {
                            channel,
                            waiters,
                            reply: Some(range),
                            marked,
                        },
                    );
                }
            }
            Query::Read { to } => {
                let answer = match result {
                    Ok(HistoryAnswer::Range(r)) => Answer::History {
                        messages: r.entries.iter().map(|(_, f, _)| frame_json(f)).collect(),
                        position: r.position,
                    },
                    _ => Answer::Unavailable,
                };
                self.hub_reply(&to, 0, answer);
            }
            Query::Clear { to } => {
                let answer = match result {
                    Ok(HistoryAnswer::Cleared { existed, position }) => Answer::Cleared { existed, position },
                    _ => Answer::Unavailable,
                };
                self.hub_reply(&to, 0, answer);
            }
            Query::Fill { .. } => {}
        }
    }

    /// The subscription reached recovery `id`'s marker: answered now if Redis' reply is in,
    /// else the channel waits for it.
    pub(super) fn marker_reached(&mut self, name: &str, id: u64) {
        let Some(hub) = self.hub() else { return };
        let Some(Query::Recover { reply, marked, .. }) = hub.queries.get_mut(&id) else {
            return;
        };
        if reply.is_none() {
            *marked = true;
            if let Some(t) = hub.tracks.get_mut(name) {
                t.waiting_for = Some(id);
            }
            return;
        }
        if let Some(Query::Recover {
            channel,
            waiters,
            reply: Some(range),
            ..
        }) = hub.queries.remove(&id)
        {
            self.finish_recoveries(id, &channel, waiters, range);
        }
    }

    /// A batch's reply and marker are both in (or it failed): every waiter is answered, then
    /// the channel goes on (the next batch is asked, held messages go out).
    fn finish_recoveries(
        &mut self,
        id: u64,
        channel: &str,
        waiters: Vec<RecoverWaiter>,
        range: Result<Range, EngineError>,
    ) {
        let max = self.rt.config.recovery_max as u64;
        for w in &waiters {
            let answer = w.answer(&range, max);
            self.hub_reply(&w.to, 0, answer);
        }
        let pubsub = self.cluster.as_ref().map(|c| c.channels.of_history(channel));
        let at = self.clock.now_ms + PHANTOM_MS;
        let Some(hub) = self.hub() else { return };
        if let Some(pubsub) = pubsub {
            hub.phantoms.push((pubsub, at));
        }
        let Some(t) = hub.tracks.get_mut(channel) else { return };
        if t.recovering == Some(id) {
            t.recovering = None;
        }
        if t.waiting_for == Some(id) {
            t.waiting_for = None;
        }
        if let (None, Ok(r)) = (t.last, &range) {
            // Everything after the marker comes after this position.
            t.epoch = r.position.epoch.as_str().into();
            t.last = Some(r.position.offset);
        }
        self.launch_recoveries(channel);
        self.drain(channel);
        self.retire_if_idle(channel);
    }

    /// The subscription broke: markers not reached yet never will; their batches fail.
    pub(super) fn fail_unmarked_recoveries(&mut self) {
        let Some(hub) = self.hub() else { return };
        let lost: Vec<u64> = hub
            .queries
            .iter()
            .filter(|(_, q)| matches!(q, Query::Recover { marked: false, .. }))
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            if let Some(Query::Recover { channel, waiters, .. }) = self.hub().and_then(|h| h.queries.remove(&id)) {
                self.finish_recoveries(id, &channel, waiters, Err(EngineError::Unavailable));
            }
        }
    }
}
