//! `GET /metrics` is valid Prometheus text (parsed by the `prometheus-parse` crate) and its
//! counters move with real traffic.
mod common;
use common::http::request;
use common::*;
use prometheus_parse::{Scrape, Value};
use serde_json::json;

fn scrape(addr: std::net::SocketAddr) -> Scrape {
    let (status, head, body) = request(addr, "GET", "/metrics", Some(&admin_token("metrics")), None);
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("valid exposition format")
}

fn value(s: &Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
        .map(|x| match x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("unexpected type for {name}"),
        })
        .sum()
}

#[test]
fn metrics_parse_and_count_real_traffic() {
    let server = start(wsedge::Config {
        workers: 2,
        rate_limit_messages: 3,
        ..config()
    });
    let addr = server.local_addr();
    let (mut ws, _) = connect(addr, &token("m"));
    for _ in 0..4 {
        send_json(&mut ws, json!({"type": "ping"}));
        recv_json(&mut ws);
    }
    let mut bad = try_connect(
        addr,
        &format!("/ws?token={}", sign(json!({"sub": "x", "exp": now() - 100}))),
        &[],
    )
    .unwrap();
    expect_close(&mut bad);
    let (status, _, _) = request(addr, "GET", "/nope-404", None, None);
    assert_eq!(status, 404);

    let s = scrape(addr);
    for name in [
        "wsedge_connections",
        "wsedge_handshakes_total",
        "wsedge_auth_failures_total",
        "wsedge_messages_in_total",
        "wsedge_messages_out_total",
        "wsedge_bytes_in_total",
        "wsedge_bytes_out_total",
        "wsedge_rate_limited_total",
        "wsedge_evictions_total",
        "wsedge_slow_consumer_closes_total",
        "wsedge_fanout_deliveries_total",
        "wsedge_queued_bytes",
        "wsedge_loop_busy_microseconds",
        "wsedge_handshake_refusals_total",
    ] {
        assert!(s.samples.iter().any(|x| x.metric == name), "missing {name}");
        assert!(s.docs.contains_key(name), "missing HELP for {name}");
    }
    assert_eq!(value(&s, "wsedge_connections", None), 1.0);
    assert_eq!(
        s.samples.iter().filter(|x| x.metric == "wsedge_connections").count(),
        2,
        "one per reactor"
    );
    assert_eq!(value(&s, "wsedge_messages_in_total", None), 4.0);
    assert_eq!(value(&s, "wsedge_rate_limited_total", None), 1.0);
    assert_eq!(
        value(&s, "wsedge_auth_failures_total", Some(("reason", "expired"))),
        1.0
    );
    assert!(value(&s, "wsedge_bytes_in_total", None) > 0.0);
    assert!(matches!(
        s.samples
            .iter()
            .find(|x| x.metric == "wsedge_handshakes_total")
            .unwrap()
            .value,
        Value::Counter(_)
    ));
}

#[test]
fn metrics_are_open_on_the_admin_listener_and_need_a_token_on_the_public_port() {
    let server = start(wsedge::Config {
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..config()
    });
    let public = server.local_addr();
    let admin_port = server.admin_addr().expect("admin listener");
    assert_eq!(request(public, "GET", "/metrics", None, None).0, 401);
    assert_eq!(request(public, "GET", "/metrics", Some(&token("user")), None).0, 403);
    assert_eq!(
        request(public, "GET", "/metrics", Some(&admin_token("ops")), None).0,
        200
    );
    assert_eq!(request(admin_port, "GET", "/metrics", None, None).0, 200);
    let open = start(wsedge::Config {
        public_metrics: true,
        ..config()
    });
    assert_eq!(request(open.local_addr(), "GET", "/metrics", None, None).0, 200);
}
