//! Asks this reactor makes of every reactor (itself included) without waiting: an admin plan
//! for an HTTP request, or a handler's call that answers later (`Ticket`).
//!
//! Owns: the table of asks in flight, their tickets, collecting answers, and what happens when
//! the last one is in (the HTTP response, or a `Reply` for the handler). Does not touch: HTTP
//! framing (`http`) or the handler itself (the loop hands it the replies).
//!
//! This reactor's own share is carried out on the spot (deliveries join the current group);
//! the others are posted to their inboxes with a ticket and answer into ours. A reactor that
//! never answers (it stopped) is given up on after `ANSWER_DEADLINE`.

use std::time::Duration;

use super::Core;
use super::state::asks::{Owner, ReplyKind, split_ticket, ticket};
use super::state::clock::ticks;
use super::state::fanout::Waiter;
use crate::admin::Answers;
use crate::ask::{Answer, Ask, ReplyTo};
use crate::callback::{Reply, Ticket};
use crate::runtime::Command;

/// Answers from other reactors are waited for this long; then the result is made from what
/// came (a reactor that stopped never answers).
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

impl Core {
    /// Sends `asks` (each to its reactors) for `owner`; returns the ticket, or `None` if the
    /// table is too full to name it (far beyond any real load).
    pub(super) fn send_asks(&mut self, owner: Owner, asks: Vec<(Ask, Vec<usize>)>) -> Option<u64> {
        // Another node's request is this node's share only; anything else is the cluster's too.
        let clustered = self.cluster.is_some() && !matches!(owner, Owner::Remote { .. } | Owner::Forward(_));
        let (key, serial) = self.asks.open(owner, asks.len(), self.clock.now)?;
        for (i, (ask, reactors)) in asks.into_iter().enumerate() {
            let now = if clustered {
                self.cluster_step(key, serial, i, ask, reactors)
            } else {
                Some((ask, reactors))
            };
            if let Some((ask, reactors)) = now {
                self.distribute(key, i, serial, ask, reactors);
            }
        }
        self.answer_local(key, usize::MAX, Answer::Lost);
        Some(ticket(key, 0, serial))
    }

    /// Sends ask `i` of entry `key` to each of `reactors` (this one carries it out at once).
    pub(super) fn distribute(&mut self, key: usize, i: usize, serial: u32, ask: Ask, reactors: Vec<usize>) {
        if matches!(ask, Ask::Sequence { .. }) {
            return self.send_sequence(key, i, serial, ask, reactors);
        }
        let home = match &ask {
            Ask::ReadHistory { channel, .. } | Ask::ClearHistory { channel } | Ask::Recover { channel, .. } => {
                Some(self.rt.topology.channel_home(channel))
            }
            _ => None,
        };
        for r in home.map_or(reactors, |h| vec![h]) {
            let Some(f) = self.asks.get_mut(key) else {
                return;
            };
            if r == self.id {
                f.waiting += 1;
                self.carry_out(ask.clone(), Some(Waiter::Local { key, ask: i }));
                continue;
            }
            let reply = Some(ReplyTo::Reactor {
                reactor: self.id,
                ticket: ticket(key, i, serial),
            });
            let lost = Answer::lost_for(&ask);
            let posted = self.rt.links.get(r).is_some_and(|l| {
                l.send(Command::Ask {
                    ask: ask.clone(),
                    reply,
                })
            });
            let Some(f) = self.asks.get_mut(key) else {
                return;
            };
            if posted {
                f.waiting += 1;
            } else {
                f.answers[i].push((r, lost));
            }
        }
    }

    /// The serial of in-flight entry `key` (0 if gone).
    pub(super) fn serial_of(&self, key: usize) -> u32 {
        self.asks.serial_of(key)
    }

    /// An answer from this reactor to ask `ask` of entry `key` (`usize::MAX`: none, only the
    /// end of `send_asks`).
    pub(super) fn answer_local(&mut self, key: usize, ask: usize, answer: Answer) {
        self.record_answer(key, ask, self.id, answer);
    }

    /// Reactor `from` answered an ask of ours.
    pub fn on_answer(&mut self, ticket: u64, from: usize, answer: Answer) {
        let (key, i, serial) = split_ticket(ticket);
        if self.asks.is_current(key, serial) {
            self.record_answer(key, i, from, answer);
        }
    }

    /// Keeps reactor `from`'s answer to ask `i` of entry `key` (a recovery's answer is acted on
    /// at once: see `channels`) and completes the entry once nothing more is awaited.
    pub(super) fn record_answer(&mut self, key: usize, i: usize, from: usize, answer: Answer) {
        let recovering = self
            .asks
            .get(key)
            .is_some_and(|f| matches!(f.owner, Some(Owner::Recovery(_))));
        let answer = if recovering {
            self.recovery_answer(key, i, answer)
        } else {
            answer
        };
        let Some(f) = self.asks.get_mut(key) else {
            return;
        };
        if let Some(slot) = f.answers.get_mut(i) {
            slot.push((from, answer));
        }
        if from == crate::ask::REMOTE && f.uncounted_requests > 0 {
            // Not yet expected: counted off once Redis says how many nodes will answer.
            f.early_answers += 1;
            return;
        }
        f.waiting = f.waiting.saturating_sub(1);
        if f.waiting == 0 {
            self.complete(key);
        }
    }

    fn complete(&mut self, key: usize) {
        let Some(mut f) = self.asks.remove(key) else {
            return;
        };
        let answers = std::mem::take(&mut f.answers);
        match f.owner.take() {
            Some(Owner::Http { conn, seq, finish }) => self.http_plan_done(conn, seq, finish, answers),
            Some(Owner::Handler(kind)) => {
                let reply = reply_of(kind, answers);
                self.embedder
                    .handler_replies
                    .push((Ticket(ticket(key, 0, f.serial)), reply));
            }
            Some(Owner::Thread(tx)) => {
                let _ = tx.send(answers);
            }
            Some(Owner::Remote {
                origin,
                reactor,
                ticket,
            }) => {
                let all = answers.into_iter().flatten().collect();
                self.answer_remote(&origin, reactor, ticket, all);
            }
            Some(Owner::Recovery(p)) => self.finish_recovery(*p, answers),
            Some(Owner::Forward(to)) => {
                let n = answers.iter().flatten().map(|(_, a)| a.count()).sum();
                self.hub_forwarded(to, n);
            }
            Some(Owner::Nobody) | None => {}
        }
    }

    /// Completes asks whose answers are overdue with what came (called every tick).
    pub fn expire_asks(&mut self) {
        if self.asks.is_empty() {
            return;
        }
        let overdue = self.asks.overdue(self.clock.now, ticks(ANSWER_DEADLINE));
        for key in overdue {
            log::warn!("a reactor did not answer in {ANSWER_DEADLINE:?}; going on with what came");
            self.complete(key);
        }
    }

    /// A handler's asynchronous call: the asks go out now, the `Reply` comes back later
    /// through `on_reply` with the returned ticket.
    pub fn handler_ask(&mut self, kind: ReplyKind, asks: Vec<(Ask, Vec<usize>)>) -> Ticket {
        match self.send_asks(Owner::Handler(kind), asks) {
            Some(t) => Ticket(t),
            None => {
                // Never aliases a live ticket: serials only go up to 2^24 and this one is spent.
                let t = Ticket(ticket(0xFF_FFFF, 0, self.asks.next_serial()));
                self.embedder.handler_replies.push((t, reply_of(kind, Vec::new())));
                t
            }
        }
    }
}

fn reply_of(kind: ReplyKind, answers: Answers) -> Reply {
    let all = answers.into_iter().flatten().map(|(_, a)| a);
    match kind {
        ReplyKind::Delivered => {
            let all: Vec<Answer> = all.collect();
            if all.iter().any(|a| matches!(a, Answer::Unknown)) {
                return Reply::ClusterOutcomeUnknown;
            }
            if all.iter().any(|a| matches!(a, Answer::Unavailable)) {
                return Reply::ClusterUnavailable;
            }
            Reply::Delivered {
                recipients: all.iter().map(Answer::count).sum(),
            }
        }
        ReplyKind::Member => Reply::Member(
            all.filter_map(|a| match a {
                Answer::Member(n) => n,
                _ => None,
            })
            .reduce(|a, b| a + b),
        ),
        ReplyKind::Census => {
            let mut total = crate::Census::default();
            for a in all {
                match a {
                    Answer::Census(c) => total.merge(c),
                    Answer::Node(n) => total.merge(n.census),
                    _ => {}
                }
            }
            Reply::Census(total)
        }
    }
}
