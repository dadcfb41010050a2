//! The core's side of the backend bridge: forwarded messages, rpcs and lifecycle events made
//! into items (with the sender's identity) for the bridge, and the bridge's answers and
//! failures written to their connections.
//!
//! Owns: the outbox of items made this turn (handed to the bridge by the loop) and the frames
//! a sender gets back (`rpc.result`, and errors with the message's ids and outcome). Does not
//! touch: batching, the backend connection or retries (`bridge`).

use mio::Token;
use serde::Serialize;
use serde_json::value::RawValue;
use tungstenite::protocol::frame::coding::{Data, OpCode};

use super::Core;
use crate::bridge::wire::{self, Identity, Outcome};
use crate::bridge::{Failure, Forwarded, Item, Sender};
use crate::cluster::broker::{EngineError, EngineOp};
use crate::config::BackendTarget;
use crate::conn::Phase;
use crate::protocol::{ErrorCode, Timestamp, write_envelope};
use crate::reactor::core::state::rpc::{CheckFinish, CheckGroup};

#[derive(Serialize)]
struct BackendError<'a> {
    code: ErrorCode,
    message: &'a str,
    message_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct RpcResult<'a> {
    id: Option<&'a RawValue>,
    message_id: String,
    result: &'a RawValue,
}

impl Core {
    /// The identity of connection `idx` as items carry it.
    fn identity(&self, idx: usize) -> Identity<'_> {
        let c = &self.conns[idx];
        let user = self.users.get(c.user);
        let extras = user.and_then(|u| u.extras.as_deref());
        Identity {
            connection_id: uuid::Uuid::from_bytes(self.conn_id(idx)),
            user_id: user.map(|u| u.id.as_str()),
            email: extras.and_then(|e| e.email.as_deref()),
            name: extras.and_then(|e| e.name.as_deref()),
            is_admin: c.has(crate::conn::flags::ADMIN),
            node_id: &self.rt.config.node_id,
        }
    }

    /// Queues a client message (or rpc) of connection `idx` for the backend; returns its
    /// message id. Nothing is queued without a backend (the caller checks `forwards`).
    pub(crate) fn forward(&mut self, idx: usize, client_id: Option<&RawValue>, what: Forwarded<'_>) -> uuid::Uuid {
        let message_id = self.ids.uuid();
        let Some(b) = &self.rt.config.backend else {
            return message_id;
        };
        let deadline = self.clock.instant + b.deadline;
        let who = self.identity(idx);
        let (json, rpc, client_id) = match what {
            Forwarded::Message { kind, data } => (
                wire::message_item(message_id, &who, Timestamp::now(), kind, client_id, data),
                false,
                client_id,
            ),
            Forwarded::Rpc { id, method, params } => (
                wire::rpc_item(message_id, &who, Timestamp::now(), id, method, params),
                true,
                Some(id),
            ),
        };
        let sender = Sender {
            conn: self.token_of(idx),
            message_id,
            client_id: client_id.map(ToOwned::to_owned),
            rpc,
            auth: false,
            check: false,
        };
        if rpc {
            // Waiting from now: an answer through the admin route may come before the batch's
            // (or the XADD's) reply is read.
            if self.rpcs.len() >= b.queue {
                self.metrics.backend.failed.inc();
                self.rpcs.insert(message_id, self.waiting(&sender, deadline));
                self.backend_failed(&sender, Failure::NotDelivered("too many rpcs waiting for the backend"));
                return message_id;
            }
            self.rpcs.insert(message_id, self.waiting(&sender, deadline));
        }
        self.queue_item(Item {
            json,
            sender: Some(sender),
            deadline,
            sent: false,
        });
        message_id
    }

    fn waiting(&self, s: &Sender, deadline: std::time::Instant) -> crate::reactor::core::state::rpc::Waiting {
        crate::reactor::core::state::rpc::Waiting {
            conn: s.conn,
            client_id: s.client_id.clone(),
            deadline,
            delivered: false,
        }
    }

    /// Queues lifecycle event `event` of connection `idx` (`fields`: its own fields).
    pub(crate) fn backend_event(&mut self, idx: usize, event: &str, fields: serde_json::Value) {
        let Some(b) = &self.rt.config.backend else { return };
        let deadline = self.clock.instant + b.deadline;
        let event_id = self.ids.uuid();
        let who = self.identity(idx);
        let json = wire::event_item(event, event_id, &who, Timestamp::now(), fields);
        self.queue_item(Item {
            json,
            sender: None,
            deadline,
            sent: false,
        });
    }

    /// Queues the `disconnect` event of a connection already removed (its id and user given).
    pub(super) fn backend_disconnect(&mut self, id: [u8; 16], user: Option<&str>, fields: serde_json::Value) {
        let Some(b) = &self.rt.config.backend else { return };
        let event_id = self.ids.uuid();
        let who = Identity {
            connection_id: uuid::Uuid::from_bytes(id),
            user_id: user,
            email: None,
            name: None,
            is_admin: false,
            node_id: &self.rt.config.node_id,
        };
        let json = wire::event_item("disconnect", event_id, &who, Timestamp::now(), fields);
        let deadline = self.clock.instant + b.deadline;
        self.queue_item(Item {
            json,
            sender: None,
            deadline,
            sent: false,
        });
    }

    /// Hands an item to its transport: the bridge's outbox (HTTP), or an `XADD` through the
    /// cluster engine (a Redis stream), at most `--backend-queue` of them unconfirmed.
    fn queue_item(&mut self, item: Item) {
        let Some(b) = &self.rt.config.backend else { return };
        let BackendTarget::Stream { key, maxlen } = &b.target else {
            self.outbox.push(item);
            return;
        };
        let (stream, maxlen, queue) = (key.as_bytes().into(), *maxlen, b.queue);
        if self.appends.by_id.len() >= queue || self.cluster.is_none() {
            self.metrics.backend.failed.inc();
            if let Some(s) = &item.sender {
                self.backend_failed(s, Failure::NotDelivered("backend queue full"));
            }
            return;
        }
        let id = self.appends.next_id();
        self.appends.by_id.insert(id, item.sender);
        self.metrics.backend.queue_depth.set(self.appends.by_id.len() as u64);
        if let Some(c) = self.cluster.as_mut() {
            c.ops.push(EngineOp::Append {
                id,
                stream,
                maxlen,
                item: item.json,
            });
        }
    }

    /// Redis confirmed (or not) the `XADD` of append `id`.
    pub(crate) fn stream_appended(&mut self, id: u64, result: Result<(), EngineError>) {
        let Some(sender) = self.appends.by_id.remove(&id) else {
            return;
        };
        self.metrics.backend.queue_depth.set(self.appends.by_id.len() as u64);
        let failure = match result {
            Ok(()) => {
                self.metrics.backend.forwarded.inc();
                if let Some(s) = sender.filter(|s| s.rpc) {
                    self.rpcs_delivered(&s);
                }
                return;
            }
            Err(EngineError::Unknown) => Failure::Unknown("redis took the XADD but did not confirm it"),
            Err(_) => Failure::NotDelivered("redis is unavailable"),
        };
        self.metrics.backend.failed.inc();
        if let Some(s) = &sender {
            self.backend_failed(s, failure);
        }
    }

    /// Asks the auth proxy whether connection `idx` may `kind` (`may_join` a room,
    /// `may_subscribe` to an event) each of `names`; `finish` runs with the verdicts once all
    /// are in (at once, all allowed, without an auth proxy).
    pub(crate) fn check_permissions(&mut self, idx: usize, kind: &str, names: Vec<String>, finish: CheckFinish) {
        if self.rt.config.auth_proxy.is_none() || names.is_empty() {
            let n = names.len();
            return finish(self, idx, vec![Ok(()); n]);
        }
        let field = if kind == "may_join" { "room" } else { "event" };
        let group = self.checks.next_group();
        let deadline = self.clock.instant + self.rt.config.auth_proxy_wait();
        for (i, name) in names.iter().enumerate() {
            let message_id = self.ids.uuid();
            let who = self.identity(idx);
            let json = wire::event_item(
                kind,
                message_id,
                &who,
                Timestamp::now(),
                serde_json::json!({ field: name }),
            );
            let sender = Sender {
                conn: self.token_of(idx),
                message_id,
                client_id: None,
                rpc: true,
                auth: true,
                check: true,
            };
            self.checks.by_id.insert(message_id, (group, i));
            self.auth_outbox.push(Item {
                json,
                sender: Some(sender),
                deadline,
                sent: false,
            });
        }
        let g = CheckGroup {
            conn: self.token_of(idx),
            verdicts: vec![None; names.len()],
            finish,
        };
        self.checks.groups.insert(group, g);
    }

    /// The auth proxy's verdict on permission check `message_id`; the request continues once
    /// all of its checks have one.
    pub(crate) fn check_answered(&mut self, message_id: &uuid::Uuid, verdict: Result<(), String>) {
        let Some((group, i)) = self.checks.by_id.remove(message_id) else {
            return;
        };
        let Some(g) = self.checks.groups.get_mut(&group) else {
            return;
        };
        if let Some(v) = g.verdicts.get_mut(i) {
            *v = Some(verdict);
        }
        if g.verdicts.iter().any(Option::is_none) {
            return;
        }
        let Some(g) = self.checks.groups.remove(&group) else {
            return;
        };
        let Some(idx) = self.live(g.conn) else { return };
        let verdicts = g.verdicts.into_iter().map(|v| v.unwrap_or(Ok(()))).collect();
        (g.finish)(self, idx, verdicts);
    }

    /// Items for the auth proxy made since the loop last asked.
    pub(crate) fn take_auth_outbox(&mut self) -> Vec<Item> {
        std::mem::take(&mut self.auth_outbox)
    }

    /// The items made since the loop last asked.
    pub(crate) fn take_outbox(&mut self) -> Vec<Item> {
        std::mem::take(&mut self.outbox)
    }

    pub(crate) fn has_outbox(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// The open connection `conn` still is (the same generation), if any.
    fn sender_conn(&self, conn: Token) -> Option<usize> {
        self.live(conn).filter(|i| self.conns[*i].phase == Phase::Open)
    }

    /// Tells the sender of an item that it failed.
    pub(crate) fn backend_failed(&mut self, s: &Sender, f: Failure) {
        if s.rpc && self.rpcs.take(&s.message_id, s.conn).is_none() {
            // Answered through the admin route already, or timed out.
            return;
        }
        let Some(idx) = self.sender_conn(s.conn) else { return };
        let (code, message, outcome, status) = match f {
            Failure::NotDelivered(why) => (ErrorCode::BackendUnavailable, why, Some("not_delivered"), None),
            Failure::Unknown(why) if s.rpc => (ErrorCode::RpcTimeout, why, Some("unknown"), None),
            Failure::Unknown(why) => (ErrorCode::BackendUnavailable, why, Some("unknown"), None),
            Failure::Rejected(st) => (
                ErrorCode::BackendRejected,
                "the backend refused the message",
                None,
                Some(st),
            ),
        };
        let data = BackendError {
            code,
            message,
            message_id: s.message_id.hyphenated().to_string(),
            id: s.client_id.as_deref(),
            outcome,
            status,
            error: None,
        };
        self.send_envelope(idx, "error", data);
    }

    /// The backend took rpc `s` and will answer through the admin route (it has waited in
    /// `rpcs` since it was queued; a timeout from now on says `delivered`).
    pub(crate) fn rpcs_delivered(&mut self, s: &Sender) {
        self.rpcs.mark_delivered(&s.message_id);
    }

    /// Rpcs past their deadline with no answer: their senders get `RPC_TIMEOUT`.
    pub(crate) fn expire_rpcs(&mut self) {
        for (message_id, w) in self.rpcs.expired(self.clock.instant) {
            let Some(idx) = self.sender_conn(w.conn) else { continue };
            let data = BackendError {
                code: ErrorCode::RpcTimeout,
                message: if w.delivered {
                    "the backend took the rpc and did not answer before the deadline"
                } else {
                    "no answer from the backend before the deadline"
                },
                message_id: message_id.hyphenated().to_string(),
                id: w.client_id.as_deref(),
                outcome: Some(if w.delivered { "delivered" } else { "unknown" }),
                status: None,
                error: None,
            };
            self.send_envelope(idx, "error", data);
        }
    }

    /// An answer from the admin route to rpc `message_id` of connection `connection`: 1 if
    /// that rpc was waiting here (its sender gets the answer), else 0.
    pub(crate) fn rpc_reply(
        &mut self,
        connection: &uuid::Uuid,
        message_id: &uuid::Uuid,
        outcome: &Result<Box<RawValue>, Box<RawValue>>,
    ) -> usize {
        let Some(idx) = self.find_by_id(connection) else {
            return 0;
        };
        let Some(w) = self.rpcs.take(message_id, self.token_of(idx)) else {
            return 0;
        };
        let s = Sender {
            conn: w.conn,
            message_id: *message_id,
            client_id: w.client_id,
            rpc: true,
            auth: false,
            check: false,
        };
        let outcome = match outcome {
            Ok(r) => Outcome::Result(r.clone()),
            Err(e) => Outcome::Error(e.clone()),
        };
        self.answer_rpc(&s, outcome);
        1
    }

    /// The backend's answer to rpc `s` in a batch response: its sender gets it, unless the
    /// admin route answered it first (or it timed out).
    pub(crate) fn backend_answered(&mut self, s: &Sender, outcome: Outcome) {
        if self.rpcs.take(&s.message_id, s.conn).is_none() {
            return;
        }
        self.answer_rpc(s, outcome);
    }

    /// Gives an rpc's sender the backend's answer.
    fn answer_rpc(&mut self, s: &Sender, outcome: Outcome) {
        let Some(idx) = self.sender_conn(s.conn) else { return };
        match outcome {
            Outcome::Result(result) => {
                let data = RpcResult {
                    id: s.client_id.as_deref(),
                    message_id: s.message_id.hyphenated().to_string(),
                    result: &result,
                };
                self.send_envelope(idx, "rpc.result", data);
            }
            Outcome::Error(error) => {
                let data = BackendError {
                    code: ErrorCode::RpcError,
                    message: "the backend answered the rpc with an error",
                    message_id: s.message_id.hyphenated().to_string(),
                    id: s.client_id.as_deref(),
                    outcome: None,
                    status: None,
                    error: Some(&error),
                };
                self.send_envelope(idx, "error", data);
            }
        }
    }

    fn send_envelope<D: Serialize>(&mut self, idx: usize, kind: &str, data: D) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        write_envelope(&mut buf, &mut self.ids, kind, data);
        self.queue_frame(idx, OpCode::Data(Data::Text), &buf);
        self.scratch = buf;
    }
}
