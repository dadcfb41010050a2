//! Prometheus text exposition (format 0.0.4) of the server's counters.

use std::fmt::Write;

use super::plan::AdminHost;

pub(crate) fn render(h: &dyn AdminHost) -> String {
    let s = h.stats();
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP wsedge_{name} {help}\n# TYPE wsedge_{name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "wsedge_{name}{labels} {v}");
        }
    };
    let one = |v: u64| vec![(String::new(), v)];
    let per_reactor: Vec<(String, u64)> = s
        .connections_per_reactor
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("{{reactor=\"{i}\"}}"), *v))
        .collect();
    metric("connections", "gauge", "Open WebSocket connections.", &per_reactor);
    metric(
        "log_lines_dropped_total",
        "counter",
        "Log lines dropped rather than waited for (the log's queue full or its output broken).",
        &one(crate::metrics::LOG_LINES_DROPPED.load(std::sync::atomic::Ordering::Relaxed)),
    );
    metric(
        "accepted_total",
        "counter",
        "TCP connections accepted.",
        &one(s.accepted),
    );
    metric(
        "handshakes_total",
        "counter",
        "WebSocket upgrades completed and authenticated.",
        &one(s.handshakes),
    );
    let refused: Vec<(String, u64)> = s
        .refused
        .iter()
        .map(|(st, v)| (format!("{{status=\"{st}\"}}"), *v))
        .collect();
    metric(
        "handshake_refusals_total",
        "counter",
        "Upgrade requests refused, by HTTP status.",
        &refused,
    );
    let auth: Vec<(String, u64)> = s
        .auth_failures
        .iter()
        .map(|(r, v)| (format!("{{reason=\"{r}\"}}"), *v))
        .collect();
    metric(
        "auth_failures_total",
        "counter",
        "Authentication failures, by reason.",
        &auth,
    );
    metric(
        "messages_in_total",
        "counter",
        "Data messages received.",
        &one(s.messages_in),
    );
    metric(
        "messages_out_total",
        "counter",
        "Data messages queued to clients.",
        &one(s.messages_out),
    );
    metric(
        "bytes_in_total",
        "counter",
        "Bytes read from sockets.",
        &one(s.bytes_in),
    );
    metric(
        "bytes_out_total",
        "counter",
        "Bytes written to sockets.",
        &one(s.bytes_out),
    );
    metric(
        "rate_limited_total",
        "counter",
        "Messages refused by the rate limit.",
        &one(s.rate_limited),
    );
    metric(
        "evictions_total",
        "counter",
        "Oldest connections closed by the per-user limit.",
        &one(s.evictions),
    );
    metric(
        "user_limit_rejections_total",
        "counter",
        "Connections refused by the per-user limit.",
        &one(s.user_limit_rejections),
    );
    metric(
        "slow_consumer_closes_total",
        "counter",
        "Connections closed for exceeding the outbound queue limit.",
        &one(s.slow_consumer_closes),
    );
    metric(
        "protocol_errors_total",
        "counter",
        "Connections failed for RFC 6455 violations.",
        &one(s.protocol_errors),
    );
    metric(
        "timeouts_total",
        "counter",
        "Connections closed for silence.",
        &one(s.timeouts),
    );
    metric(
        "handovers_total",
        "counter",
        "Sockets moved to their user's home reactor.",
        &one(s.handovers),
    );
    metric(
        "compressions_total",
        "counter",
        "Fanned-out frames compressed with permessage-deflate (once each, for every recipient that negotiated it).",
        &one(s.compressions),
    );
    metric(
        "inflations_total",
        "counter",
        "Compressed client messages inflated.",
        &one(s.inflations),
    );
    metric(
        "fanout_deliveries_total",
        "counter",
        "Shared frames queued to recipients.",
        &one(s.fanout_deliveries),
    );
    metric(
        "queued_bytes",
        "gauge",
        "Bytes waiting in outbound queues.",
        &one(s.queued_bytes),
    );
    let busy: Vec<(String, u64)> = s
        .loop_busy_us
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("{{reactor=\"{i}\"}}"), *v))
        .collect();
    metric(
        "loop_busy_microseconds",
        "gauge",
        "Time the reactor's last loop turn spent working.",
        &busy,
    );
    metric(
        "upload_cancels_total",
        "counter",
        "upload.cancel requests handed to the application.",
        &one(s.upload_cancels),
    );
    metric(
        "token_expirations_total",
        "counter",
        "Connections closed because their user's token expired.",
        &one(s.token_expirations),
    );
    metric(
        "control_frame_closes_total",
        "counter",
        "Connections closed for exceeding the control-frame rate.",
        &one(s.control_frame_closes),
    );
    metric(
        "handler_panics_total",
        "counter",
        "Handler callbacks that panicked; their connection was closed with 1011.",
        &one(s.handler_panics),
    );
    metric(
        "dead_reactors",
        "gauge",
        "Reactor threads stopped by a panic (readiness fails while any is).",
        &one(s.dead_reactors),
    );
    metric(
        "history_channels",
        "gauge",
        "Channels with history kept on this node.",
        &one(s.history_channels),
    );
    metric(
        "history_messages",
        "gauge",
        "Messages kept in channel history.",
        &one(s.history_messages),
    );
    metric(
        "history_bytes",
        "gauge",
        "Bytes of messages kept in channel history.",
        &one(s.history_bytes),
    );
    metric(
        "recoveries_total",
        "counter",
        "Recoveries, by outcome (recovered: the missing messages were replayed; lost: the client must reload).",
        &[
            ("{outcome=\"recovered\"}".to_string(), s.recoveries),
            ("{outcome=\"lost\"}".to_string(), s.recoveries_lost),
        ],
    );
    if let Some(c) = h.cluster_metrics() {
        let up = u64::from(c.up.load(std::sync::atomic::Ordering::Acquire));
        metric(
            "cluster_up",
            "gauge",
            "1 while this node can publish to and receive from the cluster.",
            &one(up),
        );
        metric(
            "cluster_auth_failed",
            "gauge",
            "1 while Redis refuses this node's credentials (retried with backoff).",
            &one(u64::from(c.auth_failed.load(std::sync::atomic::Ordering::Acquire))),
        );
        for (name, help, v) in [
            (
                "cluster_reconnects_total",
                "Connections to Redis made again after one was lost.",
                &c.reconnects,
            ),
            (
                "cluster_publish_failures_total",
                "Publishes not handed to Redis (failed, delivered nowhere).",
                &c.publish_failures,
            ),
            (
                "cluster_publishes_total",
                "PUBLISH commands (and history publish scripts) sent to Redis.",
                &c.publishes,
            ),
            (
                "cluster_probes_total",
                "Subscription probes published (once a second).",
                &c.probes,
            ),
            (
                "cluster_messages_received_total",
                "Messages received from Redis subscriptions.",
                &c.received,
            ),
            (
                "cluster_probe_failures_total",
                "Subscription probes that did not come back in time (subscription reconnected).",
                &c.probe_failures,
            ),
            (
                "cluster_malformed_total",
                "Messages from Redis this node did not understand (dropped).",
                &c.malformed,
            ),
            (
                "cluster_history_gap_fills_total",
                "Gaps in a history channel's offsets seen here and filled from the Redis stream.",
                &c.gap_fills,
            ),
            (
                "cluster_history_gaps_lost_total",
                "Gaps the stream could no longer fill (the channel's connections here closed with 1012).",
                &c.gaps_lost,
            ),
            (
                "cluster_timeouts_total",
                "Redis commands with no reply within --redis-timeout (the connection was dropped and made again).",
                &c.timeouts,
            ),
            (
                "cluster_publish_outcome_unknown_total",
                "Publishes written to Redis whose reply never came (answered 504: the outcome is unknown).",
                &c.outcome_unknown,
            ),
            (
                "cluster_missed_resets_total",
                "Times the subscription came back after a loss with history off and this node's connections were closed with 1012.",
                &c.missed_closes,
            ),
        ] {
            metric(name, "counter", help, &one(v.get()));
        }
        metric(
            "cluster_subscriptions",
            "gauge",
            "Redis channels this node is subscribed to.",
            &one(c.subscriptions.get()),
        );
    }
    metric(
        "inbox_drops_total",
        "counter",
        "Cross-reactor broadcasts dropped because a reactor's inbox was full.",
        &one(s.inbox_drops),
    );
    metric(
        "draining",
        "gauge",
        "1 while the server drains.",
        &one(u64::from(h.is_draining())),
    );
    if h.config().backend.is_some() {
        let b = &s.backend;
        for (name, help, v) in [
            (
                "backend_forwarded_total",
                "Items (messages, rpcs, events) the backend took.",
                b.forwarded,
            ),
            (
                "backend_retried_total",
                "Items sent again after a failed backend request.",
                b.retried,
            ),
            (
                "backend_failed_total",
                "Items given up on (queue full, deadline passed, batch refused).",
                b.failed,
            ),
            ("backend_requests_total", "Batches sent to the backend.", b.requests),
            (
                "backend_bad_responses_total",
                "Backend responses that could not be read or did not match their batch.",
                b.bad_responses,
            ),
        ] {
            metric(name, "counter", help, &one(v));
        }
        metric(
            "backend_queue_depth",
            "gauge",
            "Items waiting for the backend or in flight.",
            &one(b.queue_depth),
        );
    }
    if h.config().auth_proxy.is_some() {
        let a = &s.auth_proxy;
        for (name, help, v) in [
            (
                "auth_proxy_answered_total",
                "Items the auth proxy answered (handshakes and permission checks).",
                a.forwarded,
            ),
            (
                "auth_proxy_failed_total",
                "Items the auth proxy could not answer in time (refused).",
                a.failed,
            ),
            (
                "auth_proxy_requests_total",
                "Batches sent to the auth proxy.",
                a.requests,
            ),
            (
                "auth_proxy_bad_responses_total",
                "Auth proxy responses that could not be read.",
                a.bad_responses,
            ),
        ] {
            metric(name, "counter", help, &one(v));
        }
    }
    histogram(
        &mut out,
        "wsedge_message_latency_seconds",
        "Time from a publish to the socket write that gave its last recipient on a reactor the message.",
        &s.publish_latency,
    );
    if h.config().auth_proxy.is_some() {
        histogram(
            &mut out,
            "wsedge_auth_proxy_latency_seconds",
            "Time from a batch's request to the auth proxy's answer.",
            &s.auth_proxy.latency,
        );
    }
    if h.config().backend.is_some() {
        histogram(
            &mut out,
            "wsedge_backend_latency_seconds",
            "Time from a batch's request to the backend's answer.",
            &s.backend.latency,
        );
    }
    out
}

fn histogram(out: &mut String, name: &str, help: &str, l: &crate::metrics::HistogramSnapshot) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound, n) in crate::metrics::LATENCY_BUCKETS.iter().zip(&l.cumulative) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", l.count);
    let _ = writeln!(out, "{name}_sum {}", l.sum_seconds);
    let _ = writeln!(out, "{name}_count {}", l.count);
}
