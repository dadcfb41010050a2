//! Counters: one set per reactor, written only by that reactor's thread, summed on read.
//!
//! Owns: what is counted and the snapshot type. Does not touch: formatting for Prometheus or
//! HTTP (readers do that), or any connection state.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::auth::AuthError;

/// Log lines a logger dropped instead of waiting (its queue full, or its output broken): the
/// binary's loggers count here, and `/metrics` shows it as `wsedge_log_lines_dropped_total`.
/// A logger that cannot write must never block or stop the thread that logs.
pub static LOG_LINES_DROPPED: AtomicU64 = AtomicU64::new(0);

/// A counter with a single writer: increments are a plain load and store (no locked
/// instruction on the hot path); readers on other threads see a recent value.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0
            .store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of the publish-to-write latency histogram's buckets.
pub(crate) const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A latency histogram with a single writer (see [`Counter`]): counts per bucket (not
/// cumulative; readers add them up), the sum in microseconds, and the count.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    buckets: [Counter; LATENCY_BUCKETS.len()],
    sum_us: Counter,
    count: Counter,
}

impl Histogram {
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].inc();
        }
        self.sum_us.add(d.as_micros() as u64);
        self.count.inc();
    }
}

/// A histogram summed over reactors: cumulative counts per latency bucket (0.1 ms to 10 s,
/// as `/metrics` lists them in `le`), the sum in seconds and the count (observations above
/// the last bucket only count in `+Inf`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct HistogramSnapshot {
    pub cumulative: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl HistogramSnapshot {
    fn collect<'a>(hs: impl Iterator<Item = &'a Histogram> + Clone) -> Self {
        let mut running = 0;
        let cumulative = (0..LATENCY_BUCKETS.len())
            .map(|i| {
                running += hs.clone().map(|h| h.buckets[i].get()).sum::<u64>();
                running
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            sum_seconds: hs.clone().map(|h| h.sum_us.get()).sum::<u64>() as f64 / 1e6,
            count: hs.map(|h| h.count.get()).sum(),
        }
    }
}

/// HTTP statuses a handshake can be refused with, for per-status counts.
pub(crate) const REFUSAL_STATUSES: [u16; 11] = [400, 401, 403, 404, 405, 408, 426, 429, 431, 500, 503];

/// One reactor's counters.
#[derive(Debug, Default)]
pub(crate) struct ReactorMetrics {
    /// Recoveries answered `recovered: true` / `false`.
    pub recoveries: Counter,
    pub recoveries_lost: Counter,
    /// Channels, messages and bytes of history kept (gauges).
    pub history_channels: Counter,
    pub history_messages: Counter,
    pub history_bytes: Counter,
    /// Open WebSockets on this reactor (gauge).
    pub connections: Counter,
    /// Users with at least one open connection here (gauge).
    pub users: Counter,
    /// Event subscriptions of the open connections here, one per connection and event (gauge).
    pub subscriptions: Counter,
    /// TCP connections accepted.
    pub accepted: Counter,
    /// Upgrades completed and authenticated.
    pub handshakes: Counter,
    /// Handshakes refused, by HTTP status (index into [`REFUSAL_STATUSES`]).
    pub refused: [Counter; REFUSAL_STATUSES.len()],
    /// Authentication failures by reason (index: position in [`AuthError::ALL`]).
    pub auth_failures: [Counter; AuthError::ALL.len()],
    pub messages_in: Counter,
    pub messages_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub rate_limited: Counter,
    /// Oldest connections closed by the per-user limit (evict-oldest).
    pub evictions: Counter,
    /// New connections refused by the per-user limit (reject).
    pub user_limit_rejections: Counter,
    pub slow_consumer_closes: Counter,
    /// Connections failed for RFC 6455 violations (1002/1007/1009).
    pub protocol_errors: Counter,
    /// Connections closed for silence (connection timeout).
    pub timeouts: Counter,
    /// Sockets handed to the user's home reactor after authentication.
    pub handovers: Counter,
    /// Fanned-out frames compressed (once each, whatever the number of recipients).
    pub compressions: Counter,
    /// Compressed client messages inflated.
    pub inflations: Counter,
    /// Messages queued by fan-out (one per recipient).
    pub fanout_deliveries: Counter,
    /// Bytes waiting in outbound queues (gauge).
    pub queued_bytes: Counter,
    /// Microseconds the last loop turn spent working (gauge).
    pub loop_busy_us: Counter,
    /// `upload.cancel` requests handed to the application.
    pub upload_cancels: Counter,
    /// Connections closed because their user's token expired.
    pub token_expirations: Counter,
    /// Connections closed for sending too many control frames.
    pub control_frame_closes: Counter,
    /// Handler callbacks that panicked (their connection was closed with 1011).
    pub handler_panics: Counter,
    /// Time from a publish to the socket write that gave its last recipient on this reactor
    /// the message.
    pub publish_latency: Histogram,
    /// The backend bridge's counters (all zero without `--backend-url`).
    pub backend: BackendMetrics,
    /// The auth proxy's counters (all zero without `--auth-proxy`).
    pub auth_proxy: BackendMetrics,
}

/// One reactor's backend bridge counters.
#[derive(Debug, Default)]
pub(crate) struct BackendMetrics {
    /// Items (messages, rpcs, events) the backend took (a 2xx answer to their batch).
    pub forwarded: Counter,
    /// Items sent again after a failed request.
    pub retried: Counter,
    /// Items given up on (queue full, deadline passed, batch refused); their senders were told.
    pub failed: Counter,
    /// Requests (batches) sent.
    pub requests: Counter,
    /// Responses that could not be read or did not match the batch.
    pub bad_responses: Counter,
    /// Items waiting or in flight (gauge).
    pub queue_depth: Counter,
    /// A batch's request to its answer.
    pub latency: Histogram,
}

impl BackendSnapshot {
    fn collect(reactors: &[std::sync::Arc<ReactorMetrics>], of: fn(&ReactorMetrics) -> &BackendMetrics) -> Self {
        let sum = |f: &dyn Fn(&BackendMetrics) -> u64| reactors.iter().map(|r| f(of(r))).sum::<u64>();
        BackendSnapshot {
            forwarded: sum(&|b| b.forwarded.get()),
            retried: sum(&|b| b.retried.get()),
            failed: sum(&|b| b.failed.get()),
            requests: sum(&|b| b.requests.get()),
            bad_responses: sum(&|b| b.bad_responses.get()),
            queue_depth: sum(&|b| b.queue_depth.get()),
            latency: HistogramSnapshot::collect(reactors.iter().map(|r| &of(r).latency)),
        }
    }
}

/// The backend bridge's counters summed over reactors.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BackendSnapshot {
    pub forwarded: u64,
    pub retried: u64,
    pub failed: u64,
    pub requests: u64,
    pub bad_responses: u64,
    pub queue_depth: u64,
    pub latency: HistogramSnapshot,
}

impl ReactorMetrics {
    pub fn refused_with(&self, status: u16) {
        if let Some(i) = REFUSAL_STATUSES.iter().position(|s| *s == status) {
            self.refused[i].inc();
        }
    }

    pub fn auth_failed(&self, reason: AuthError) {
        if let Some(i) = AuthError::ALL.iter().position(|r| *r == reason) {
            self.auth_failures[i].inc();
        }
    }
}

/// A counter several threads add to.
#[derive(Debug, Default)]
pub struct SharedCounter(AtomicU64);

impl SharedCounter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
}

/// The cluster engine's counters (all zero on a node without one).
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    /// 1 while this node can publish to and receive from the cluster.
    pub up: std::sync::atomic::AtomicBool,
    /// Connections to Redis made again after one was lost.
    pub reconnects: SharedCounter,
    /// Publishes that could not be handed to Redis (failed, nothing delivered).
    pub publish_failures: SharedCounter,
    /// PUBLISH commands sent (messages, requests, answers).
    pub publishes: SharedCounter,
    /// Probes published (a node's message to itself, once a second).
    pub probes: SharedCounter,
    /// Messages received from subscriptions.
    pub received: SharedCounter,
    /// Subscription probes that did not come back in time (the subscription was reconnected).
    pub probe_failures: SharedCounter,
    /// Channels this node is subscribed to.
    pub subscriptions: SharedCounter,
    /// Received messages that were not ours or not understood.
    pub malformed: SharedCounter,
    /// Gaps in a history channel's offsets seen here, filled from the stream.
    pub gap_fills: SharedCounter,
    /// Gaps the stream could no longer fill (the channel's connections here were closed to
    /// recover).
    pub gaps_lost: SharedCounter,
    /// Redis refuses this node's credentials (WRONGPASS, NOAUTH): it retries with backoff.
    pub auth_failed: std::sync::atomic::AtomicBool,
    /// Commands Redis did not answer within `--redis-timeout` (the connection was dropped).
    pub timeouts: SharedCounter,
    /// Publishes whose outcome is unknown: written to Redis, no reply before the connection
    /// was lost (answered 504, not 200 or 503).
    pub outcome_unknown: SharedCounter,
    /// Times the subscription came back after a loss with history off, and this node's
    /// connections were closed with 1012 (what they missed cannot be told or filled).
    pub missed_closes: SharedCounter,
}

/// A point-in-time sum over reactors.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Snapshot {
    pub connections: u64,
    pub connections_per_reactor: Vec<u64>,
    /// Users with at least one open connection (on this node).
    pub users: u64,
    /// Event subscriptions of open connections (one per connection and event).
    pub subscriptions: u64,
    pub accepted: u64,
    pub handshakes: u64,
    pub refused: Vec<(u16, u64)>,
    pub auth_failures: Vec<(&'static str, u64)>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub rate_limited: u64,
    pub evictions: u64,
    pub user_limit_rejections: u64,
    pub slow_consumer_closes: u64,
    pub protocol_errors: u64,
    pub timeouts: u64,
    pub handovers: u64,
    pub compressions: u64,
    pub inflations: u64,
    pub fanout_deliveries: u64,
    pub queued_bytes: u64,
    pub upload_cancels: u64,
    pub token_expirations: u64,
    pub control_frame_closes: u64,
    pub handler_panics: u64,
    /// Reactors that stopped because of a panic (the server is not ready while any is).
    pub dead_reactors: u64,
    pub loop_busy_us: Vec<u64>,
    /// Fire-and-forget cross-reactor deliveries dropped because a reactor's inbox was full.
    pub inbox_drops: u64,
    /// Publish to last socket write, per reactor, summed over reactors.
    pub publish_latency: HistogramSnapshot,
    pub history_channels: u64,
    pub history_messages: u64,
    pub history_bytes: u64,
    pub recoveries: u64,
    pub recoveries_lost: u64,
    pub backend: BackendSnapshot,
    pub auth_proxy: BackendSnapshot,
}

impl Snapshot {
    pub(crate) fn collect(reactors: &[std::sync::Arc<ReactorMetrics>]) -> Self {
        let sum = |f: &dyn Fn(&ReactorMetrics) -> u64| reactors.iter().map(|r| f(r)).sum::<u64>();
        Snapshot {
            connections: sum(&|r| r.connections.get()),
            connections_per_reactor: reactors.iter().map(|r| r.connections.get()).collect(),
            users: sum(&|r| r.users.get()),
            subscriptions: sum(&|r| r.subscriptions.get()),
            accepted: sum(&|r| r.accepted.get()),
            handshakes: sum(&|r| r.handshakes.get()),
            refused: REFUSAL_STATUSES
                .iter()
                .enumerate()
                .map(|(i, s)| (*s, sum(&|r| r.refused[i].get())))
                .collect(),
            auth_failures: AuthError::ALL
                .iter()
                .enumerate()
                .map(|(i, e)| (e.label(), sum(&|r| r.auth_failures[i].get())))
                .collect(),
            messages_in: sum(&|r| r.messages_in.get()),
            messages_out: sum(&|r| r.messages_out.get()),
            bytes_in: sum(&|r| r.bytes_in.get()),
            bytes_out: sum(&|r| r.bytes_out.get()),
            rate_limited: sum(&|r| r.rate_limited.get()),
            evictions: sum(&|r| r.evictions.get()),
            user_limit_rejections: sum(&|r| r.user_limit_rejections.get()),
            slow_consumer_closes: sum(&|r| r.slow_consumer_closes.get()),
            protocol_errors: sum(&|r| r.protocol_errors.get()),
            timeouts: sum(&|r| r.timeouts.get()),
            handovers: sum(&|r| r.handovers.get()),
            compressions: sum(&|r| r.compressions.get()),
            inflations: sum(&|r| r.inflations.get()),
            fanout_deliveries: sum(&|r| r.fanout_deliveries.get()),
            queued_bytes: sum(&|r| r.queued_bytes.get()),
            upload_cancels: sum(&|r| r.upload_cancels.get()),
            token_expirations: sum(&|r| r.token_expirations.get()),
            control_frame_closes: sum(&|r| r.control_frame_closes.get()),
            handler_panics: sum(&|r| r.handler_panics.get()),
            dead_reactors: 0,
            loop_busy_us: reactors.iter().map(|r| r.loop_busy_us.get()).collect(),
            inbox_drops: 0,
            publish_latency: HistogramSnapshot::collect(reactors.iter().map(|r| &r.publish_latency)),
            history_channels: sum(&|r| r.history_channels.get()),
            history_messages: sum(&|r| r.history_messages.get()),
            history_bytes: sum(&|r| r.history_bytes.get()),
            recoveries: sum(&|r| r.recoveries.get()),
            recoveries_lost: sum(&|r| r.recoveries_lost.get()),
            backend: BackendSnapshot::collect(reactors, |r| &r.backend),
            auth_proxy: BackendSnapshot::collect(reactors, |r| &r.auth_proxy),
        }
    }

    /// Auth failures for one reason.
    pub fn auth_failures_for(&self, reason: AuthError) -> u64 {
        self.auth_failures
            .iter()
            .find(|(l, _)| *l == reason.label())
            .map_or(0, |(_, n)| *n)
    }

    /// Handshakes refused with one HTTP status.
    pub fn refused_with(&self, status: u16) -> u64 {
        self.refused.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n)
    }
}

/// Seconds of message rates a node keeps for its dashboard.
pub(crate) const RATE_HISTORY_SECS: usize = 300;

/// One second's totals (counters since start, summed over reactors).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct RateSample {
    /// Unix seconds.
    pub at: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub deliveries: u64,
}

/// The node's message totals once a second for the last [`RATE_HISTORY_SECS`] seconds: fixed
/// memory (300 samples of 32 bytes), so a dashboard opened now draws the last five minutes.
/// Sampled by whichever reactor starts a turn first in a new second, before that turn's work:
/// a second with no turn anywhere saw no messages (the next sample's totals are unchanged).
#[derive(Debug, Default)]
pub(crate) struct RateHistory {
    last: AtomicU64,
    samples: std::sync::Mutex<std::collections::VecDeque<RateSample>>,
}

impl RateHistory {
    /// Takes the sample of second `unix_secs` unless another reactor took it already.
    pub fn sample<'a>(&self, unix_secs: u64, reactors: impl Iterator<Item = &'a ReactorMetrics> + Clone) {
        let last = self.last.load(Ordering::Relaxed);
        // Any other second than the last one sampled (a clock stepped back samples again).
        if last == unix_secs
            || self
                .last
                .compare_exchange(last, unix_secs, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let sum = |f: &dyn Fn(&ReactorMetrics) -> u64| reactors.clone().map(f).sum::<u64>();
        let s = RateSample {
            at: unix_secs,
            messages_in: sum(&|r| r.messages_in.get()),
            messages_out: sum(&|r| r.messages_out.get()),
            deliveries: sum(&|r| r.fanout_deliveries.get()),
        };
        let mut q = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        while q.len() >= RATE_HISTORY_SECS {
            q.pop_front();
        }
        q.push_back(s);
    }

    /// The samples of the last [`RATE_HISTORY_SECS`] seconds, oldest first.
    pub fn samples(&self, now_unix_secs: u64) -> Vec<RateSample> {
        let q = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let from = now_unix_secs.saturating_sub(RATE_HISTORY_SECS as u64);
        q.iter().filter(|s| s.at > from).copied().collect()
    }
}
