//! From accepted socket to open WebSocket: accept, the upgrade request, admission, JWT,
//! hand-over to the user's home reactor, per-user limits, and the 101 response.
//!
//! Owns: the handshake phase. Does not touch: frames after the upgrade (see `read`).

use std::io;

use mio::Interest;

use super::{Admitting, Reactor};
use crate::auth::Claims;
use crate::cluster::broker::Admission;
use crate::config::LimitPolicy;
use crate::conn::{Input, Phase, flags};
use crate::http::upgrade::{self, Parsed, UpgradeRequest};
use crate::http::write_error;
use crate::protocol::ErrorCode;
use crate::reactor::core::Core;
use crate::reactor::ctx::Ctx;
use crate::reactor::embed::ReactorHandler;
use crate::runtime::{Command, Handover};

/// Answer to a socket over `max_connections_per_ip`, written once without waiting.
const TOO_MANY_FROM_ADDRESS: &[u8] =
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n";
/// The same refusal on a TLS listener: a fatal access_denied alert (49), unencrypted as alerts
/// before a handshake are (RFC 8446 6). No plain HTTP on a TLS port, and no handshake work
/// for an address that already holds its share.
const TOO_MANY_FROM_ADDRESS_TLS: &[u8] = &[21, 3, 3, 0, 2, 2, 49];

impl<H: ReactorHandler> Reactor<H> {
    /// Accepts every waiting connection on the main listener (or, with `admin`, on the admin
    /// listener, whose connections are plain HTTP from the start).
    pub(super) fn accept_all(&mut self, admin: bool) {
        loop {
            let listener = if admin {
                self.admin_listener.as_ref()
            } else {
                self.listener.as_ref()
            };
            let Some(listener) = listener else { return };
            match listener.accept() {
                Ok((mut sock, peer)) => {
                    let rt = &self.core.rt;
                    let bucket = rt.per_ip.bucket(peer.ip());
                    if !rt.per_ip.try_admit(bucket, rt.config.max_connections_per_ip) {
                        // One address holds its whole share: refuse before reading anything.
                        self.core.metrics.refused_with(429);
                        self.core.metrics.accepted.inc();
                        let refusal = if rt.tls.is_some() && !admin {
                            TOO_MANY_FROM_ADDRESS_TLS
                        } else {
                            TOO_MANY_FROM_ADDRESS
                        };
                        let _ = io::Write::write(&mut sock, refusal);
                        continue;
                    }
                    let _ = sock.set_nodelay(true);
                    let session = match (&rt.tls, admin) {
                        (Some(tls), false) => Some(tls.session()),
                        _ => None,
                    };
                    let idx = self.core.insert_conn(crate::transport::Stream::Tcp(sock), bucket);
                    if let Some(s) = session {
                        self.core.codecs.tls_sessions.insert(idx, s);
                    }
                    if self.register(idx) {
                        if admin {
                            self.core.conns[idx].flags |= flags::ADMIN_PORT;
                            self.core.start_http(idx, Vec::new());
                        } else {
                            self.core.track_pending(idx);
                        }
                    }
                    self.core.metrics.accepted.inc();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    // Out of descriptors or memory: leave the rest in the backlog and retry on
                    // the next tick instead of spinning.
                    log::warn!("reactor {}: accept failed: {e}; retrying shortly", self.core.id);
                    self.accept_paused = true;
                    return;
                }
            }
        }
    }

    fn register(&mut self, idx: usize) -> bool {
        let token = self.core.token_of(idx);
        let c = &mut self.core.conns[idx];
        if let Err(e) = c
            .sock
            .register(self.poll.registry(), token, Interest::READABLE | Interest::WRITABLE)
        {
            log::warn!("register failed: {e}");
            self.core.drop_conn(idx, 1006);
            return false;
        }
        true
    }

    /// Bytes of the HTTP request (possibly followed by the first frames).
    pub(super) fn on_handshake_bytes(&mut self, idx: usize, data: &[u8]) {
        let cfg = &self.core.rt.config;
        let (max, ws_path) = (cfg.max_request_bytes, cfg.ws_path.clone());
        let mut input = self.core.take_input(idx);
        let buf: &[u8] = match input.as_mut() {
            Some(inp) => {
                inp.pending.extend_from_slice(data);
                &inp.pending
            }
            None => data,
        };
        match upgrade::parse(buf, max, ws_path.as_deref()) {
            Parsed::Partial => {
                let mut inp = input.unwrap_or_else(|| {
                    Box::new(Input {
                        pending: data.to_vec(),
                        ..Input::default()
                    })
                });
                inp.pending.shrink_to_fit();
                self.core.set_input(idx, Some(inp));
            }
            Parsed::Reject(r) => {
                self.core.metrics.refused_with(r.status);
                log::debug!("upgrade refused with {}: {}", r.status, r.message);
                let mut resp = Vec::new();
                let extra: Vec<(&str, &str)> = r.header.into_iter().collect();
                write_error(&mut resp, r.status, &extra, r.message);
                self.core.respond_http(idx, &resp);
            }
            Parsed::Plain(_) => {
                let bytes = buf.to_vec();
                self.answer_plain(idx, bytes)
            }
            Parsed::Upgrade(u, n) => {
                let leftover = buf[n..].to_vec();
                // What the auth proxy is to see of the request (only with one configured).
                let asked = (self.core.rt.config.auth_proxy.as_ref())
                    .map(|a| crate::http::upgrade::chosen_headers(&buf[..n], &a.headers));
                self.begin_session(idx, u, leftover, asked);
            }
        }
    }

    /// A request that is not an upgrade: from here on the connection is plain HTTP (admin API,
    /// health, metrics), served on this reactor (see `core::http`).
    fn answer_plain(&mut self, idx: usize, bytes: Vec<u8>) {
        self.core.start_http(idx, bytes);
    }

    /// A valid upgrade request: global limit, then authentication, then the home reactor.
    fn begin_session(
        &mut self,
        idx: usize,
        u: UpgradeRequest,
        leftover: Vec<u8>,
        asked: Option<(String, Vec<(String, String)>)>,
    ) {
        if self.core.conns[idx].has(flags::COUNTED) {
            // A second upgrade request on a connection whose first is being decided.
            self.core.drop_conn(idx, 1002);
            return;
        }
        let rt = self.core.rt.clone();
        let allowed = &rt.config.allowed_origins;
        if let Some(origin) = &u.origin
            && !allowed.is_empty()
            && !allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
        {
            self.core.metrics.refused_with(403);
            let mut resp = Vec::new();
            write_error(&mut resp, 403, &[], "origin not allowed");
            self.core.respond_http(idx, &resp);
            return;
        }
        if !rt.admission.try_admit(rt.config.max_connections) {
            self.core.metrics.refused_with(503);
            let mut resp = Vec::new();
            write_error(
                &mut resp,
                503,
                &[("Retry-After", "1")],
                "server connection limit reached",
            );
            self.core.respond_http(idx, &resp);
            return;
        }
        let c = &mut self.core.conns[idx];
        c.flags |= flags::COUNTED;
        if u.offers_bearer {
            c.flags |= flags::BEARER;
        }
        if rt.config.compression && u.offers_deflate {
            self.core.codecs.deflate_slots.insert(idx);
        }
        if let Some(asked) = asked {
            return self.begin_auth(idx, u, leftover, asked);
        }
        let claims = match &rt.verifier {
            None => None,
            Some(v) => match v.verify(u.token.as_deref()) {
                Ok(claims) => Some(claims),
                Err(reason) => {
                    self.core.metrics.auth_failed(reason);
                    c.flags &= !flags::COUNTED;
                    noisy!(&mut self.core, Info, "authentication failed: {reason}");
                    rt.admission.release();
                    // Upgrade, then close with 1008 so browsers can tell auth from network.
                    self.core.write_101(idx, &u.accept);
                    self.core.conns[idx].phase = Phase::Open;
                    self.core
                        .close_with(idx, 1008, &format!("authentication failed: {reason}"));
                    return;
                }
            },
        };
        self.continue_session(idx, u, leftover, claims);
    }

    /// An authenticated upgrade (or an anonymous one): the handler's say, then the user's
    /// home reactor.
    pub(super) fn continue_session(
        &mut self,
        idx: usize,
        u: UpgradeRequest,
        leftover: Vec<u8>,
        claims: Option<Claims>,
    ) {
        let rt = self.core.rt.clone();
        let handler = &mut self.handler;
        let decision = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.on_upgrade(claims.as_ref())))
            .unwrap_or_else(|_| {
                self.core.metrics.handler_panics.inc();
                log::error!("reactor {}: on_upgrade panicked; refusing with 500", self.core.id);
                Err(crate::callback::Refusal {
                    status: 500,
                    message: "internal error".into(),
                })
            });
        if let Err(refusal) = decision {
            self.core.conns[idx].flags &= !flags::COUNTED;
            rt.admission.release();
            let status = if (400..600).contains(&refusal.status) {
                refusal.status
            } else {
                403
            };
            self.core.metrics.refused_with(status);
            let mut resp = Vec::new();
            write_error(&mut resp, status, &[], &refusal.message);
            self.core.respond_http(idx, &resp);
            return;
        }
        if let Some(claims) = claims {
            let home = rt.topology.home_of(&claims.user_id);
            if rt.links[home].stopped.load(std::sync::atomic::Ordering::Acquire) {
                // The user's home reactor is gone (it panicked, or the server is stopping).
                self.core.conns[idx].flags &= !flags::COUNTED;
                rt.admission.release();
                self.core.metrics.refused_with(503);
                let mut resp = Vec::new();
                write_error(&mut resp, 503, &[("Retry-After", "1")], "server unavailable");
                self.core.respond_http(idx, &resp);
                return;
            }
            if home != self.core.id {
                let mut conn = self.core.conns.remove(idx);
                let _ = conn.sock.deregister(self.poll.registry());
                let deflate = self.core.codecs.deflate_slots.contains(idx);
                let tls = self.core.codecs.tls_sessions.remove(&idx);
                if deflate {
                    self.core.codecs.deflate_slots.remove(idx);
                }
                self.core.metrics.handovers.inc();
                let h = Handover {
                    ip_bucket: conn.ip_bucket,
                    sock: conn.sock,
                    claims,
                    accept: u.accept,
                    recover: u.recover,
                    bearer: u.offers_bearer,
                    deflate,
                    tls,
                    leftover,
                };
                if !rt.links[home].send(Command::Adopt(Box::new(h))) {
                    rt.admission.release();
                    rt.per_ip.release(conn.ip_bucket);
                }
                return;
            }
            if let Some(r) = u.recover {
                self.core.channels.connect_recoveries.insert(idx, r);
            }
            self.open_session(idx, Some(claims), &u.accept, leftover);
        } else {
            self.open_session(idx, None, &u.accept, leftover);
        }
    }

    /// A socket handed over by another reactor: register it here and open the session.
    pub(super) fn adopt(&mut self, h: Handover) {
        let idx = self.core.insert_conn(h.sock, h.ip_bucket);
        if !self.register(idx) {
            // drop_conn released the address; the global slot was not yet the connection's.
            self.core.rt.admission.release();
            return;
        }
        self.core.conns[idx].flags |= flags::COUNTED | if h.bearer { flags::BEARER } else { 0 };
        if h.deflate {
            self.core.codecs.deflate_slots.insert(idx);
        }
        if let Some(t) = h.tls {
            self.core.codecs.tls_sessions.insert(idx, t);
        }
        if let Some(r) = h.recover {
            self.core.channels.connect_recoveries.insert(idx, r);
        }
        if self.draining_until.is_some() {
            // Its handshake began before the drain: it completes, then closes with 1001 in a
            // batch like the others (a client never sees its upgrade refused by a restart).
            let token = self.core.token_of(idx);
            self.drain.queue.insert(0, token);
            self.drain.total += 1;
        }
        self.open_session(idx, Some(h.claims), &h.accept, h.leftover);
    }

    /// In a cluster, asks it to count the connection first (the handshake waits, reading
    /// nothing, until the verdict); then opens the session.
    fn open_session(&mut self, idx: usize, claims: Option<Claims>, accept: &str, leftover: Vec<u8>) {
        if let Some(c) = claims.as_ref()
            && let Some(id) = self.core.cluster_admit(idx, &c.user_id)
        {
            let waiting = Admitting {
                idx,
                generation: self.core.conns[idx].generation,
                connection: uuid::Uuid::from_bytes(self.core.conn_id(idx)),
                claims: c.clone(),
                accept: accept.to_string(),
                leftover,
            };
            self.admitting.insert(id, Box::new(waiting));
            self.admitting_slots.insert(idx);
            return;
        }
        self.open_admitted(idx, claims, accept, leftover, Admission::Local);
    }

    /// True while connection `idx` waits for the cluster's verdict (its bytes stay unread).
    pub(super) fn is_admitting(&self, idx: usize) -> bool {
        (!self.admitting_slots.is_empty() && self.admitting_slots.contains(&idx))
            || (!self.auth.waiting.is_empty()
                && self.auth.waiting.get(&idx).is_some_and(|w| {
                    // An entry of an earlier connection in this slot (it closed while the
                    // proxy thought) holds nothing back.
                    self.core.conns.get(idx).is_some_and(|c| c.generation == w.generation)
                }))
    }

    /// Opens the sessions the cluster decided on this turn.
    pub(super) fn finish_admissions(&mut self) {
        let Some(done) = self.core.cluster.as_mut().map(|c| std::mem::take(&mut c.admitted)) else {
            return;
        };
        for (id, verdict) in done {
            let Some(a) = self.admitting.remove(&id) else { continue };
            self.admitting_slots.remove(&a.idx);
            let alive = self
                .core
                .conns
                .get(a.idx)
                .is_some_and(|c| c.generation == a.generation && c.phase == Phase::Handshake);
            if !alive {
                // Gone while waiting (handshake timeout, reset): it must not keep counting.
                if verdict == Admission::Admitted {
                    self.core.cluster_release_id(&a.claims.user_id, a.connection);
                }
                continue;
            }
            let token = self.core.token_of(a.idx);
            self.open_admitted(a.idx, Some(a.claims), &a.accept, a.leftover, verdict);
            // Bytes that arrived while it waited.
            self.read_again.push(token);
        }
    }

    /// Sends 101, applies the per-user limit, and tells the handler.
    fn open_admitted(
        &mut self,
        idx: usize,
        claims: Option<Claims>,
        accept: &str,
        mut leftover: Vec<u8>,
        verdict: Admission,
    ) {
        // Deliveries still grouped were published before this connection existed: out to the
        // others first (a recovery it asked for covers them, and must not see them twice).
        self.core.fan_out_groups();
        self.core.write_101(idx, accept);
        let now = self.core.clock.now;
        let c = &mut self.core.conns[idx];
        c.phase = Phase::Open;
        c.last_seen = now;
        c.mark = now;
        if let Some(claims) = claims {
            if claims.admin {
                c.flags |= flags::ADMIN;
            }
            if !self.apply_user_limit(idx, &claims, verdict) {
                return;
            }
        }
        self.core.conns[idx].opened_at = (self.core.clock.unix_now as u32).max(1);
        self.core.index_open(idx);
        self.core.arm_expiry(idx);
        let m = &self.core.metrics;
        m.handshakes.inc();
        m.connections.set(m.connections.get() + 1);
        let generation = self.core.conns[idx].generation;
        if log::log_enabled!(log::Level::Debug) {
            let c = &self.core.conns[idx];
            let user = self.core.users.get(c.user).map(|u| u.id.to_string());
            log::debug!(
                "connection opened: id={} user={} peer={} reactor={}",
                uuid::Uuid::from_bytes(self.core.conn_id(idx)),
                user.as_deref().unwrap_or("-"),
                c.sock.peer_addr().map_or_else(|| "-".to_string(), |a| a.to_string()),
                self.core.id
            );
        }
        // A recovery asked for in the request: looked up now, told to the handler (the
        // application's greeting says how it went), replayed right after it.
        let replay = self.core.begin_connect_recovery(idx);
        self.with_ctx(idx, |h, ctx| h.on_open(ctx));
        if self.core.rt.config.backend_events.connect
            && self.core.conns.get(idx).is_some_and(|c| c.generation == generation)
        {
            let peer = self.core.conns[idx].sock.peer_addr().map(|a| a.to_string());
            self.core
                .backend_event(idx, "connect", serde_json::json!({ "remote_addr": peer }));
        }
        self.core.channels.opening_recovery = None;
        if !self.core.channels.connect_recoveries.is_empty() {
            self.core.channels.connect_recoveries.remove(&idx);
        }
        if let Some(frames) = replay
            && self.core.conns.get(idx).is_some_and(|c| c.generation == generation)
        {
            self.core.replay(idx, frames);
        }
        if !leftover.is_empty() && self.core.conns.get(idx).is_some_and(|c| c.generation == generation) {
            self.on_frame_bytes(idx, generation, &mut leftover);
        }
    }

    /// Links the connection to its user; false if the reject policy refused it. The cluster's
    /// verdict, when there is one, replaces this node's count (an eviction it made reaches the
    /// node holding that connection).
    fn apply_user_limit(&mut self, idx: usize, claims: &Claims, verdict: Admission) -> bool {
        let max = self.core.rt.config.max_connections_per_user as u32;
        let u = self.core.users.get_or_insert(&claims.user_id);
        self.core.record_claims(u, claims);
        let over = |core: &Core, limit: u32| core.users.get(u).is_some_and(|user| user.count >= limit);
        let refused = match verdict {
            Admission::Refused => true,
            Admission::Admitted => false,
            Admission::Local => {
                self.core.cluster_admitted_alone(idx);
                self.core.rt.config.per_user_limit_policy == LimitPolicy::Reject && over(&self.core, max)
            }
        };
        if refused {
            self.core.metrics.user_limit_rejections.inc();
            let mut ctx = Ctx {
                core: &mut self.core,
                idx,
            };
            ctx.send_error(
                ErrorCode::ConnectionLimitExceeded,
                &format!("Maximum {max} connections per user"),
            );
            ctx.close(1008, "connection limit exceeded");
            return false;
        }
        // Link first, then evict: the user never drops to zero connections (and so keeps its
        // rooms and rate window) while one connection replaces another.
        self.core.link_user(idx, u);
        while verdict == Admission::Local && over(&self.core, max + 1) {
            let Some(oldest) = self.core.users.get(u).map(|user| user.head as usize) else {
                break;
            };
            self.core.metrics.evictions.inc();
            noisy!(
                &mut self.core,
                Info,
                "user {}: evicting oldest connection (limit {max})",
                claims.user_id
            );
            self.core.close_with(oldest, 1008, "connection limit exceeded");
        }
        true
    }
}
