//! What the command connection's replies answer: publishes, admissions, registrations,
//! history ops, the liveness heartbeat and the probe; and what a reply that refuses the
//! node (wrong credentials, not the master) means for the connection.
//!
//! Owns: the meaning of each reply, in the order the commands were sent. Does not touch: the
//! socket (`resp`) or reconnecting (the engine half decides what a failure costs).

use std::sync::atomic::Ordering;
use std::time::Instant;

use redis_protocol::resp2::types::BytesFrame;

use super::link::is_auth_error;
use super::state::{Expect, Half};
use crate::cluster::broker::EngineHost;
use crate::cluster::broker::{Admission, EngineError};
use crate::cluster::resp::bytes_of;

impl Half {
    /// Refreshes this node's liveness key. Its value names this process, so a second live
    /// node started with the same id is noticed (and logged), and a key that expired (Redis
    /// forgot this node, or took it for dead) is noticed too.
    pub(super) fn heartbeat(&mut self) {
        let key = format!("{}{}", self.shared.channels.alive_prefix(), self.shared.node);
        let ttl = self.shared.node_ttl.as_millis().to_string();
        let instance = self.shared.instance.clone();
        self.send(
            &[
                b"SET",
                key.as_bytes(),
                instance.as_bytes(),
                b"PX",
                ttl.as_bytes(),
                b"GET",
            ],
            Expect::Heartbeat,
        );
        self.last_heartbeat = Some(Instant::now());
    }

    /// A heartbeat's reply: the value the liveness key had.
    fn heartbeat_answered(&mut self, old: Option<&[u8]>) {
        self.heartbeats += 1;
        let first = self.heartbeats == 1;
        match old {
            Some(v) if v == self.shared.instance.as_bytes() => {}
            Some(_) if !first && self.reactor == 0 => log::error!(
                "cluster: another live node uses node id {:?}; node ids must be unique (messages between the two \
                 are lost)",
                self.shared.node
            ),
            // A previous incarnation's key: its entries stopped counting as this one took over.
            Some(_) => {}
            None if first => {}
            None => {
                // Redis forgot this node (it restarted, or the key expired while Redis was
                // slow): its entries may have been dropped as a dead node's.
                log::warn!("cluster: redis had forgotten this node; counting its connections again");
                self.shared.reregister.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    pub(super) fn on_cmd_replies(&mut self, r: &mut dyn EngineHost) -> Option<String> {
        let mut failure = None;
        for f in std::mem::take(&mut self.frames) {
            let Some(a) = self.expect.pop_front() else {
                log::warn!("cluster: a redis reply nobody asked for: {f:?}");
                continue;
            };
            if let BytesFrame::Error(e) = &f {
                let setup = matches!(a.what, Expect::Setup | Expect::Role | Expect::ScriptLoad(_));
                if e.starts_with("NOSCRIPT") {
                    // The scripts were flushed: run them by their text until loaded again.
                    self.script_sha = Default::default();
                }
                if e.starts_with("NOAUTH") || e.starts_with("WRONGPASS") || setup && is_auth_error(e) {
                    self.shared.metrics.auth_failed.store(true, Ordering::Release);
                    failure.get_or_insert_with(|| format!("redis refused the credentials: {e}"));
                } else if setup {
                    // LOADING (a restart reading its data), BUSY, a SELECT of a database Redis
                    // does not have: this connection is of no use yet; try again later.
                    failure.get_or_insert_with(|| format!("redis refused the connection's setup: {e}"));
                }
            }
            match (a.what, f) {
                (Expect::Publish(id), BytesFrame::Integer(n)) if n < 0 => r.published(id, Err(EngineError::Duplicate)),
                (Expect::Publish(id), BytesFrame::Integer(n)) => r.published(id, Ok(n as usize)),
                (Expect::Publish(id), other) => {
                    log::warn!("cluster: PUBLISH failed: {other:?}");
                    self.shared.metrics.publish_failures.inc();
                    r.published(id, Err(EngineError::Unavailable));
                }
                (Expect::Append(id), BytesFrame::BulkString(_)) => r.appended(id, Ok(())),
                (Expect::Append(id), other) => {
                    log::warn!("backend stream: XADD failed: {other:?}");
                    r.appended(id, Err(EngineError::Unavailable));
                }
                (Expect::Admit(id), BytesFrame::Integer(n)) => r.admitted(
                    id,
                    if n == 1 {
                        Admission::Admitted
                    } else {
                        Admission::Refused
                    },
                ),
                (Expect::Admit(id), other) => {
                    log::warn!("cluster: per-user limit script failed: {other:?}");
                    r.admitted(id, Admission::Local);
                }
                (Expect::Register, f @ BytesFrame::Error(_)) => {
                    self.counted_alone = true;
                    self.registered(r, f);
                }
                (Expect::Register, f) => self.registered(r, f),
                (Expect::Role, f) => {
                    if let Some(role) = not_master(&f) {
                        failure.get_or_insert_with(|| format!("redis at this address is a {role} now, not the master"));
                    }
                }
                (Expect::ScriptLoad(which), f) => {
                    if let Some(sha) = bytes_of(&f) {
                        self.script_sha[which as usize] = Some(sha.clone());
                    }
                    // The last script loaded, and nothing before it refused: the connection works.
                    let last = !self.expect.iter().any(|a| matches!(a.what, Expect::ScriptLoad(_)));
                    if last && failure.is_none() && !self.cmd_ready && bytes_of(&f).is_some() {
                        self.shared.metrics.auth_failed.store(false, Ordering::Release);
                        self.cmd.works(self.reactor, "command");
                        self.cmd_ready = true;
                        self.shared.reached.fetch_add(1, Ordering::AcqRel);
                        if std::mem::take(&mut self.counted_alone) {
                            // Connections this reactor admitted on its own count while Redis
                            // was away: count them in Redis now.
                            r.register_connections();
                        }
                    }
                }
                (Expect::History(p), f) => self.history_reply(r, p, f),
                (Expect::Heartbeat, BytesFrame::BulkString(old)) => self.heartbeat_answered(Some(&old)),
                (Expect::Heartbeat, BytesFrame::Null) => self.heartbeat_answered(None),
                // Not even this node is subscribed to its own channel: the subscription is not
                // what the node thinks it is.
                (Expect::Probe(nonce), BytesFrame::Integer(0))
                    if self.probe.is_some_and(|(n, _)| n == nonce) && self.shared.sub_up.load(Ordering::Acquire) =>
                {
                    log::warn!("cluster: redis has no subscriber on this node's channel; resubscribing");
                    self.shared.metrics.probe_failures.inc();
                    if let Some(sub) = self.sub.as_mut() {
                        sub.link
                            .failed(self.reactor, "subscription", "not subscribed in redis".into());
                    }
                    self.sub_lost(r);
                }
                (Expect::Heartbeat, BytesFrame::Error(e)) => {
                    // A refused password is reported as such (above); anything else is a Redis
                    // that does not know SET ... GET.
                    if is_auth_error(&e) || std::mem::replace(&mut self.heartbeat_refused, true) {
                        log::debug!("cluster: the liveness heartbeat failed: {e}");
                    } else {
                        log::error!(
                            "cluster: the liveness heartbeat failed ({e}): SET ... GET needs Redis 6.2 or later; \
                             cluster-wide per-user limits do not hold without it"
                        );
                    }
                }
                (Expect::Setup | Expect::Ignore | Expect::Probe(_), BytesFrame::Error(e)) => {
                    log::debug!("cluster: redis said: {e}")
                }
                (Expect::Release { user, connection }, BytesFrame::Error(_)) => self.keep_release(user, connection),
                _ => {}
            }
        }
        failure
    }
}

/// The role in a ROLE reply if it is not `master`.
pub(super) fn not_master(f: &BytesFrame) -> Option<String> {
    let BytesFrame::Array(parts) = f else {
        return Some("server that does not say its role".into());
    };
    let role = parts.first().and_then(bytes_of)?;
    (role.as_ref() != b"master").then(|| String::from_utf8_lossy(role).into_owned())
}
