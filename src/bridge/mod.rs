//! The backend bridge: client messages, rpcs and lifecycle events carried to the
//! application's backend over HTTP, batched, from the reactor's own loop. One [`Bridge`] per
//! reactor: a bounded queue of items, one keep-alive connection to the backend, at most one
//! request in flight (what arrives meanwhile waits and goes in the next batch, so batches
//! grow with load and cost nothing when idle), retries with backoff for the same items until
//! their deadline, then a failure reported for each to its sender.
//!
//! Owns: the queue, the backend connection and its state, retries and deadlines. Does not
//! touch: connections (answers and failures go through [`BridgeHost`]), the JSON of items
//! (`wire`) or HTTP parsing (`http`).

pub(crate) mod http;
pub(crate) mod wire;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::Interest;
use mio::Token;
use mio::event::Source;
use serde_json::value::RawValue;

use crate::config::BackendConfig;
use crate::metrics::ReactorMetrics;

/// What the bridge may do with its reactor. Every call runs on the reactor's thread.
pub(crate) trait BridgeHost {
    /// This turn's time (the reactor's clock).
    fn now(&self) -> Instant;
    fn register(&mut self, source: &mut dyn Source, interest: Interest) -> io::Result<()>;
    fn deregister(&mut self, source: &mut dyn Source) -> io::Result<()>;
    /// Calls [`Bridge::on_timer`] once, `after` from now (rounded up to the reactor's tick).
    fn set_timer(&mut self, after: Duration);
    /// An item of `sender` was not forwarded (or its outcome is unknown).
    fn failed(&mut self, sender: &Sender, failure: Failure);
    /// The backend answered rpc `sender`.
    fn answered(&mut self, sender: &Sender, outcome: wire::Outcome);
    /// The backend took rpc `sender` without answering it yet: its answer may come through
    /// the admin route until its deadline.
    fn awaiting(&mut self, sender: &Sender);
}

/// Most bytes of one response read before it is given up on (its head and body bounds, and
/// framing overhead).
const RESPONSE_CAP: usize = http::MAX_HEAD + 2 * http::MAX_BODY;

/// Most bytes of items in one request.
const BATCH_BYTES: usize = 1 << 20;
/// Most bytes of items queued per reactor (with `BackendConfig::queue`, the memory bound).
pub(crate) const QUEUE_BYTES: usize = 64 << 20;

/// What a forwarded message is.
pub(crate) enum Forwarded<'a> {
    Message {
        kind: &'a str,
        data: Option<&'a RawValue>,
    },
    /// An rpc: the client's `id` is required (its answer carries it).
    Rpc {
        id: &'a RawValue,
        method: &'a str,
        params: Option<&'a RawValue>,
    },
}

/// Who waits to hear about an item: a connection (its token: slot and generation), with what
/// identifies the message to it.
#[derive(Debug, Clone)]
pub(crate) struct Sender {
    pub(crate) conn: Token,
    pub(crate) message_id: uuid::Uuid,
    /// The client's own `id` of the message, echoed in answers and errors.
    pub(crate) client_id: Option<Box<RawValue>>,
    /// An rpc: it gets a result or an error in any case.
    pub(crate) rpc: bool,
    /// An authentication check of a handshake (`conn` is still in its upgrade).
    pub(crate) auth: bool,
    /// With `auth`: a permission check of an open connection (a join or a subscribe).
    pub(crate) check: bool,
}

/// Why an item has no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Never handed to the backend: the queue was full, or the backend could not be reached
    /// before the deadline.
    NotDelivered(&'static str),
    /// Sent, but no answer came before the deadline: the backend may or may not have it.
    Unknown(&'static str),
    /// The backend answered the request with this status (a 4xx other than 408 and 429): it
    /// refused the batch; not retried.
    Rejected(u16),
}

/// One thing to forward: its JSON object and who to tell if it fails.
pub(crate) struct Item {
    pub(crate) json: Vec<u8>,
    /// None for lifecycle events (nobody to tell; failures are counted and logged).
    pub(crate) sender: Option<Sender>,
    pub(crate) deadline: Instant,
    /// It was in a request whose answer never came (its outcome is unknown from then on).
    pub(crate) sent: bool,
}

enum State {
    /// No connection (or an idle keep-alive one in `conn`).
    Idle,
    /// Connecting or writing the request (`written` bytes of `request` so far).
    Writing { written: usize },
    /// Reading the response into `response`.
    Reading,
    /// Waiting after a failure until `until`.
    Backoff { until: Instant },
}

/// Which counters a bridge keeps: the backend's or the auth proxy's.
#[derive(Clone, Copy)]
pub(crate) enum Role {
    Backend,
    AuthProxy,
}

pub(crate) struct Bridge {
    role: Role,
    cfg: BackendConfig,
    /// Where the backend is and its `Host` and path.
    addr: std::net::SocketAddr,
    host: String,
    path: String,
    node_id: String,
    metrics: std::sync::Arc<ReactorMetrics>,
    queue: VecDeque<Item>,
    queued_bytes: usize,
    in_flight: Vec<Item>,
    conn: Option<mio::net::TcpStream>,
    state: State,
    request: Vec<u8>,
    response: Vec<u8>,
    /// When the request in flight was started (for the latency histogram).
    started: Option<Instant>,
    /// When the request in flight is given up: its timeout, or the earliest deadline of its
    /// items if that comes first (an item is never held past its deadline by a slow request).
    give_up_at: Option<Instant>,
    failures: u32,
    /// The last failure logged (a repeat is logged at debug level).
    problem: Option<String>,
    /// When the earliest timer set is due (none set: `None`): a later one is not set too.
    timer_at: Option<Instant>,
}

impl Bridge {
    /// A bridge to an HTTP backend (`None` for any other target).
    pub(crate) fn new(
        role: Role,
        cfg: BackendConfig,
        node_id: String,
        metrics: std::sync::Arc<ReactorMetrics>,
    ) -> Option<Self> {
        let crate::config::BackendTarget::Http { addr, host, path } = cfg.target.clone() else {
            return None;
        };
        Some(Bridge {
            role,
            cfg,
            addr,
            host,
            path,
            node_id,
            metrics,
            queue: VecDeque::new(),
            queued_bytes: 0,
            in_flight: Vec::new(),
            conn: None,
            state: State::Idle,
            request: Vec::new(),
            response: Vec::new(),
            started: None,
            give_up_at: None,
            failures: 0,
            problem: None,
            timer_at: None,
        })
    }

    fn m(&self) -> &crate::metrics::BackendMetrics {
        match self.role {
            Role::Backend => &self.metrics.backend,
            Role::AuthProxy => &self.metrics.auth_proxy,
        }
    }

    /// Items waiting or in flight.
    pub(crate) fn depth(&self) -> usize {
        self.queue.len() + self.in_flight.len()
    }

    /// Queues `item`, or fails it at once if the queue is full.
    pub(crate) fn push(&mut self, h: &mut dyn BridgeHost, item: Item) {
        if self.depth() >= self.cfg.queue || self.queued_bytes + item.json.len() > QUEUE_BYTES {
            self.m().failed.inc();
            if let Some(s) = &item.sender {
                h.failed(s, Failure::NotDelivered("backend queue full"));
            }
            return;
        }
        self.queued_bytes += item.json.len();
        self.queue.push_back(item);
        self.m().queue_depth.set(self.depth() as u64);
    }

    /// End of a loop turn: if nothing is in flight, send what waits.
    pub(crate) fn flush(&mut self, h: &mut dyn BridgeHost) {
        if matches!(self.state, State::Idle) && !self.queue.is_empty() {
            self.start_request(h);
        }
    }

    fn start_request(&mut self, h: &mut dyn BridgeHost) {
        let now = h.now();
        self.expire(h, now);
        if self.queue.is_empty() {
            return;
        }
        let mut bytes = 0;
        while let Some(item) = self.queue.front() {
            if self.in_flight.len() >= self.cfg.batch || (bytes > 0 && bytes + item.json.len() > BATCH_BYTES) {
                break;
            }
            bytes += item.json.len();
            let item = self.queue.pop_front().expect("front exists");
            self.queued_bytes -= item.json.len();
            self.in_flight.push(item);
        }
        let batch_id = uuid::Uuid::new_v4().hyphenated().to_string();
        let mut body = Vec::with_capacity(bytes + self.in_flight.len() + 128);
        wire::write_batch(
            &mut body,
            &batch_id,
            &self.node_id,
            self.in_flight.iter().map(|i| &i.json[..]),
        );
        self.request.clear();
        http::write_request(&mut self.request, &self.host, &self.path, &batch_id, &body);
        self.response.clear();
        self.started = Some(now);
        let first_deadline = self.in_flight.iter().map(|i| i.deadline).min();
        let give_up = first_deadline.map_or(now + self.cfg.timeout, |d| d.min(now + self.cfg.timeout));
        self.give_up_at = Some(give_up);
        self.m().requests.inc();
        self.arm(h, give_up);
        if self.conn.is_none() {
            match mio::net::TcpStream::connect(self.addr) {
                Ok(mut s) => {
                    let _ = s.set_nodelay(true);
                    if let Err(e) = h.register(&mut s, Interest::READABLE | Interest::WRITABLE) {
                        return self.request_failed(h, format!("cannot register the backend socket: {e}"), false);
                    }
                    self.conn = Some(s);
                    // Writable once connected: the write starts from the event.
                    self.state = State::Writing { written: 0 };
                    return;
                }
                Err(e) => return self.request_failed(h, format!("cannot connect to the backend: {e}"), false),
            }
        }
        self.state = State::Writing { written: 0 };
        self.write(h);
    }

    /// The backend socket is ready.
    pub(crate) fn on_event(&mut self, h: &mut dyn BridgeHost, event: &mio::event::Event) {
        if event.is_error() {
            let sent = !matches!(self.state, State::Writing { written: 0 });
            return self.request_failed(h, "backend connection error".into(), sent);
        }
        match self.state {
            State::Writing { .. } if event.is_writable() => self.write(h),
            State::Reading if event.is_readable() || event.is_read_closed() => self.read(h),
            State::Idle if event.is_read_closed() || event.is_readable() => {
                // The backend closed (or wrote unasked into) an idle keep-alive connection.
                self.drop_conn(h);
            }
            _ => {}
        }
    }

    fn write(&mut self, h: &mut dyn BridgeHost) {
        let State::Writing { mut written } = self.state else {
            return;
        };
        let Some(s) = self.conn.as_mut() else { return };
        while written < self.request.len() {
            match s.write(&self.request[written..]) {
                Ok(0) => return self.request_failed(h, "backend closed the connection".into(), written > 0),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.state = State::Writing { written };
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    // Still connecting: the writable event comes when it is done.
                    self.state = State::Writing { written };
                    return;
                }
                Err(e) => return self.request_failed(h, format!("cannot write to the backend: {e}"), written > 0),
            }
        }
        self.state = State::Reading;
        self.read(h);
    }

    fn read(&mut self, h: &mut dyn BridgeHost) {
        let Some(s) = self.conn.as_mut() else { return };
        let mut buf = [0u8; 16 * 1024];
        let mut eof = false;
        loop {
            match s.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    self.response.extend_from_slice(&buf[..n]);
                    if self.response.len() > RESPONSE_CAP {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.request_failed(h, format!("cannot read from the backend: {e}"), true),
            }
        }
        match http::parse_response(&self.response) {
            Ok(Some(mut r)) => {
                // A connection the backend closed (or that it wrote more on than the one
                // response) is not used again.
                r.keep_alive &= !eof && self.response.len() <= RESPONSE_CAP;
                self.answered(h, r)
            }
            Ok(None) if eof => self.request_failed(h, "backend closed the connection mid-response".into(), true),
            Ok(None) if self.response.len() > RESPONSE_CAP => {
                self.m().bad_responses.inc();
                self.request_failed(h, "backend response too large".into(), true);
            }
            Ok(None) => {}
            Err(e) => {
                self.m().bad_responses.inc();
                self.request_failed(h, format!("bad response from the backend: {e}"), true);
            }
        }
    }

    fn answered(&mut self, h: &mut dyn BridgeHost, r: http::Response) {
        let now = h.now();
        self.give_up_at = None;
        if let Some(t) = self.started.take() {
            self.m().latency.observe(now.saturating_duration_since(t));
        }
        match r.status {
            200..=299 => {
                self.works(h);
                let batch = std::mem::take(&mut self.in_flight);
                self.m().forwarded.add(batch.len() as u64);
                let results = match wire::parse_results(&r.body) {
                    Ok(results) => Ok(results),
                    Err(why) => {
                        self.m().bad_responses.inc();
                        log::warn!("backend answered a batch with a bad body: {why}");
                        Err(why)
                    }
                };
                self.deliver_results(h, batch, results);
                if r.keep_alive {
                    self.state = State::Idle;
                    self.response.clear();
                } else {
                    self.drop_conn(h);
                }
                self.m().queue_depth.set(self.depth() as u64);
                self.flush(h);
            }
            408 | 429 | 500..=599 => self.request_failed(h, format!("backend answered {}", r.status), true),
            status => {
                // The backend refuses the batch: retrying would be refused again.
                self.works(h);
                log::warn!("backend refused a batch with status {status}");
                let batch = std::mem::take(&mut self.in_flight);
                self.m().failed.add(batch.len() as u64);
                for item in &batch {
                    if let Some(s) = &item.sender {
                        h.failed(s, Failure::Rejected(status));
                    }
                }
                if r.keep_alive {
                    self.state = State::Idle;
                } else {
                    self.drop_conn(h);
                }
                self.flush(h);
            }
        }
    }

    /// Hands each rpc of an accepted batch its result, or leaves it waiting for the admin
    /// route (no result in the body, or a body that could not be read).
    fn deliver_results(
        &mut self,
        h: &mut dyn BridgeHost,
        batch: Vec<Item>,
        results: Result<Vec<(String, wire::Outcome)>, &'static str>,
    ) {
        let mut results: std::collections::HashMap<String, wire::Outcome> =
            results.unwrap_or_default().into_iter().collect();
        let mut matched = 0;
        for item in &batch {
            let Some(s) = item.sender.as_ref().filter(|s| s.rpc) else {
                continue;
            };
            match results.remove(&s.message_id.hyphenated().to_string()) {
                Some(outcome) => {
                    matched += 1;
                    h.answered(s, outcome);
                }
                None => h.awaiting(s),
            }
        }
        if !results.is_empty() {
            self.m().bad_responses.inc();
            log::warn!(
                "backend answered {} result(s) for message ids not in the batch (or not rpcs); {matched} matched",
                results.len()
            );
        }
    }

    /// The request in flight failed: its items go back to the front of the queue (marked
    /// `sent` if the backend may have seen them), the connection is dropped and the next
    /// attempt waits out a backoff.
    fn request_failed(&mut self, h: &mut dyn BridgeHost, why: String, sent: bool) {
        self.drop_conn(h);
        self.started = None;
        self.give_up_at = None;
        if self.problem.as_deref() == Some(why.as_str()) {
            log::debug!("{}: {why}; retrying with backoff", self.name());
        } else {
            log::warn!("{}: {why}; retrying with backoff", self.name());
            self.problem = Some(why);
        }
        let batch = std::mem::take(&mut self.in_flight);
        if !batch.is_empty() {
            self.m().retried.add(batch.len() as u64);
        }
        for mut item in batch.into_iter().rev() {
            item.sent |= sent;
            self.queued_bytes += item.json.len();
            self.queue.push_front(item);
        }
        let cap = 50u64.saturating_mul(1 << self.failures.min(6)).min(2000);
        self.failures = self.failures.saturating_add(1);
        let jitter = (uuid::Uuid::new_v4().as_u128() as u64) % (cap / 2 + 1);
        let delay = Duration::from_millis(cap / 2 + jitter);
        let now = h.now();
        self.state = State::Backoff { until: now + delay };
        self.arm(h, now + delay);
        self.expire(h, now);
        // A deadline inside the backoff is kept to the moment, not to the backoff's end.
        if let Some(first) = self.queue.front() {
            let at = first.deadline;
            self.arm(h, at);
        }
    }

    fn works(&mut self, _h: &mut dyn BridgeHost) {
        self.failures = 0;
        if self.problem.take().is_some() {
            log::info!("{} answers again", self.name());
        }
    }

    fn name(&self) -> &'static str {
        match self.role {
            Role::Backend => "backend",
            Role::AuthProxy => "auth proxy",
        }
    }

    fn drop_conn(&mut self, h: &mut dyn BridgeHost) {
        if let Some(mut s) = self.conn.take() {
            let _ = h.deregister(&mut s);
        }
        self.state = State::Idle;
    }

    /// Fails the queued items whose deadline has passed.
    fn expire(&mut self, h: &mut dyn BridgeHost, now: Instant) {
        // The queue is in deadline order: items are queued in arrival order with one deadline
        // offset, and a failed batch (older than everything queued) goes back to the front.
        while self.queue.front().is_some_and(|i| i.deadline <= now) {
            let item = self.queue.pop_front().expect("front exists");
            self.queued_bytes -= item.json.len();
            self.m().failed.inc();
            if let Some(s) = &item.sender {
                h.failed(
                    s,
                    if item.sent {
                        Failure::Unknown("no answer from the backend before the deadline")
                    } else {
                        Failure::NotDelivered("the backend could not be reached before the deadline")
                    },
                );
            }
        }
        self.m().queue_depth.set(self.depth() as u64);
    }

    /// Makes sure a timer fires at `at` (or earlier).
    fn arm(&mut self, h: &mut dyn BridgeHost, at: Instant) {
        if self.timer_at.is_some_and(|t| t <= at) {
            return;
        }
        self.timer_at = Some(at);
        h.set_timer(at.saturating_duration_since(h.now()));
    }

    /// The bridge's timer fired: a request overdue, a backoff over, or deadlines to check.
    pub(crate) fn on_timer(&mut self, h: &mut dyn BridgeHost) {
        let now = h.now();
        // Whatever was armed has fired (the wheel may fire a little early): what is still due
        // is armed again below.
        self.timer_at = None;
        match self.state {
            State::Writing { .. } | State::Reading => match self.give_up_at {
                Some(at) if now >= at => {
                    let sent = !matches!(self.state, State::Writing { written: 0 });
                    self.request_failed(h, format!("backend did not answer within {:?}", self.cfg.timeout), sent);
                }
                Some(at) => self.arm(h, at),
                None => {
                    let sent = !matches!(self.state, State::Writing { written: 0 });
                    self.request_failed(h, "backend request without a deadline".into(), sent);
                }
            },
            State::Backoff { until } if now >= until => {
                self.state = State::Idle;
                self.flush(h);
            }
            State::Backoff { until } => self.arm(h, until),
            State::Idle => {}
        }
        self.expire(h, now);
        // While nothing is in flight, queued items still reach their deadlines.
        if !matches!(self.state, State::Writing { .. } | State::Reading)
            && let Some(first) = self.queue.front()
        {
            let at = first.deadline;
            self.arm(h, at);
        }
    }
}

/// The response parser, the results reader and the auth verdict on arbitrary bytes (for the
/// fuzz target): never panics, never reports a body over the bound, and a response found in
/// a prefix is the response found in the whole.
#[cfg(feature = "testing")]
pub fn fuzz_response(data: &[u8]) {
    let full = http::parse_response(data);
    if let Ok(Some(r)) = &full {
        assert!(r.body.len() <= http::MAX_BODY);
        if let Ok(results) = wire::parse_results(&r.body) {
            for (_, outcome) in results {
                let _ = wire::verdict_of(Some(outcome));
            }
        }
    }
    for cut in [data.len() / 3, data.len() / 2, data.len().saturating_sub(1)] {
        if let Ok(Some(r)) = http::parse_response(&data[..cut]) {
            // A complete response never changes when more bytes follow it.
            assert_eq!(Ok(Some(r)), full);
        }
    }
}
