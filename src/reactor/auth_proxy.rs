//! Authentication by the backend (`--auth-proxy`): a handshake's chosen headers go to the
//! backend as an `auth` item (batched by a second bridge), the handshake waits as loop state
//! (its bytes unread, bounded by the handshake timeout), and the answer lets it in with the
//! user and claims the backend gave, or refuses it with the backend's status.
//!
//! Owns: asking the proxy, using and filling the cache, and letting in or refusing on its
//! verdict. Does not touch: the records it keeps (`auth_state`), batching and the backend
//! connection (`bridge`), or what follows an accepted upgrade (`session`).

use std::hash::BuildHasher;

use mio::Token;

use super::Reactor;
use super::auth_state::{Authorizing, CACHE_MAX};
use super::embed::ReactorHandler;
use crate::bridge::wire::AuthVerdict;
use crate::bridge::{Item, Sender};
use crate::conn::flags;
use crate::http::upgrade::UpgradeRequest;
use crate::http::write_error;
use crate::protocol::Timestamp;

impl<H: ReactorHandler> Reactor<H> {
    /// Asks the proxy about the upgrade at `idx` (or lets it in from the cache).
    pub(super) fn begin_auth(
        &mut self,
        idx: usize,
        u: UpgradeRequest,
        leftover: Vec<u8>,
        (target, headers): (String, Vec<(String, String)>),
    ) {
        if self.core.rt.config.auth_proxy.is_none() {
            return;
        }
        let cache_key = self.auth.hasher.hash_one((&target, &headers));
        let now = self.core.clock.instant;
        if let Some((claims, until)) = self.auth.cache.get(&cache_key) {
            if *until > now {
                let claims = claims.clone();
                return self.continue_session(idx, u, leftover, Some(claims));
            }
            self.auth.cache.remove(&cache_key);
        }
        // The handshake timeout counts from accept, so does the proxy's time to answer.
        let accepted = self.core.clock.start + crate::runtime::TICK * self.core.conns[idx].mark;
        let message_id = self.core.ids.uuid();
        let peer = self.core.conns[idx].sock.peer_addr().map(|a| a.to_string());
        let node = &self.core.rt.config.node_id;
        let json = crate::bridge::wire::auth_item(message_id, &target, &headers, peer, node, Timestamp::now());
        let item = Item {
            json,
            sender: Some(Sender {
                conn: self.core.token_of(idx),
                message_id,
                client_id: None,
                rpc: true,
                auth: true,
                check: false,
            }),
            deadline: accepted + self.core.rt.config.auth_proxy_wait(),
            sent: false,
        };
        let waiting = Authorizing {
            generation: self.core.conns[idx].generation,
            upgrade: u,
            leftover,
            cache_key,
        };
        self.auth.waiting.insert(idx, Box::new(waiting));
        self.with_bridge(true, |b, r| b.push(r, item));
    }

    /// Lets in (or refuses) the handshakes the proxy answered this turn, and continues the
    /// joins and subscribes whose checks it answered (a panic in one is contained, counted and
    /// logged, like any handler callback's).
    pub(super) fn finish_auths(&mut self) {
        for (message_id, verdict) in std::mem::take(&mut self.core.check_verdicts) {
            let core = &mut self.core;
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                core.check_answered(&message_id, verdict)
            }));
            if ok.is_err() {
                self.core.metrics.handler_panics.inc();
                log::error!("reactor {}: a join or subscribe continuation panicked", self.core.id);
            }
        }
        for (token, verdict) in std::mem::take(&mut self.core.auth_answers) {
            let (idx, generation) = crate::runtime::split_token(token);
            if self.auth.waiting.get(&idx).is_none_or(|w| w.generation != generation) {
                continue;
            }
            let Some(w) = self.auth.waiting.remove(&idx) else {
                continue;
            };
            if self.core.live(token).is_none() {
                // The handshake timed out (or the client left) while the proxy thought.
                continue;
            }
            self.finish_auth(idx, token, *w, verdict);
        }
    }

    fn finish_auth(&mut self, idx: usize, token: Token, w: Authorizing, verdict: AuthVerdict) {
        match verdict {
            Ok(claims) => {
                let ttl = self
                    .core
                    .rt
                    .config
                    .auth_proxy
                    .as_ref()
                    .map_or_else(Default::default, |a| a.cache);
                if !ttl.is_zero() {
                    if self.auth.cache.len() >= CACHE_MAX {
                        self.auth.cache.clear();
                    }
                    let until = self.core.clock.instant + ttl;
                    self.auth.cache.insert(w.cache_key, (claims.clone(), until));
                }
                self.continue_session(idx, w.upgrade, w.leftover, Some(claims));
                // Frames the client sent behind its request wait in the socket: read them now
                // (a connection handed to its user's home reactor is read there).
                self.read_again.push(token);
            }
            Err((status, message)) => {
                let rt = self.core.rt.clone();
                self.core.conns[idx].flags &= !flags::COUNTED;
                rt.admission.release();
                self.core.metrics.refused_with(status);
                let retry = [("Retry-After", "1")];
                let extra: &[(&str, &str)] = if status == 503 { &retry } else { &[] };
                let mut resp = Vec::new();
                write_error(&mut resp, status, extra, &message);
                self.core.respond_http(idx, &resp);
            }
        }
    }
}
