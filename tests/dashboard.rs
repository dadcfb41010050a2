//! GET /dashboard in headless Chromium: after the page has polled, the numbers it shows are
//! those of /ws/stats and /metrics (connections, users, rooms, rate-limited, slow consumers,
//! handshake failures by reason). A screenshot goes to target/dashboard.png (not committed).
mod common;
use std::io::Write;

use common::*;
use serde_json::json;

/// The text of the element with `id` in a dumped DOM.
fn text_of(dom: &str, id: &str) -> String {
    let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id}"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    let end = start + dom[start..].find('<').unwrap();
    dom[start..end].to_string()
}

fn metric_sum(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn the_dashboard_shows_what_stats_and_metrics_say() {
    let s = start(wsedge::Config {
        rate_limit_messages: 2,
        ..config()
    });
    let addr = s.local_addr();
    let rooms = |sub: &str| sign(json!({"sub": sub, "exp": now() + 3600, "rooms": ["lobby", "den"]}));
    let (mut a1, _) = connect(addr, &rooms("ana"));
    let (_a2, _) = connect(addr, &rooms("ana"));
    let (mut b, _) = connect(addr, &rooms("ben"));
    let (_c, _) = connect(addr, &token("cy"));
    send_json(&mut a1, json!({"type": "join", "data": {"rooms": ["lobby"]}}));
    assert_eq!(recv_json(&mut a1)["type"], "room.joined");
    send_json(&mut b, json!({"type": "join", "data": {"rooms": ["den"]}}));
    assert_eq!(recv_json(&mut b)["type"], "room.joined");
    // One message over ben's rate limit (2 per window: the join was the first).
    for _ in 0..2 {
        send_json(&mut b, json!({"type": "ping", "data": {}}));
    }
    assert_eq!(recv_json(&mut b)["type"], "pong");
    assert_eq!(recv_json(&mut b)["data"]["code"], "RATE_LIMIT_EXCEEDED");
    // Two bad tokens and an upgrade to a wrong path.
    for bad in ["x", "y.z"] {
        let mut ws = try_connect(addr, &format!("/ws?token={bad}"), &[]).unwrap();
        assert_eq!(expect_close(&mut ws).0, 1008);
    }
    let mut wrong = raw(addr);
    wrong.write_all(upgrade_request("/elsewhere").as_bytes()).unwrap();
    assert_eq!(read_http(&mut wrong).0, 404);

    let admin = admin_token("ops");
    let url = format!("http://{addr}/dashboard#token={admin}");
    let profile = std::env::temp_dir().join(format!("wsedge-dashboard-{}", std::process::id()));
    let browser = |url: &str, extra: &[&str]| {
        headless_chromium(&profile)
            .args(["--virtual-time-budget=4000", "--window-size=1100,900"])
            .args(extra)
            .arg(url)
            .output()
            .expect("chromium runs")
    };
    let dom = String::from_utf8_lossy(&browser(&url, &["--dump-dom"]).stdout).into_owned();
    assert!(dom.contains("data-ready=\"true\""), "the page never rendered: {dom}");
    // With a token the form is gone and the board shows.
    assert!(dom.contains("<form id=\"login\" hidden"), "{dom}");

    let (_, stats) = common::http::json(addr, "GET", "/ws/stats", Some(&admin), None);
    let (_, _, metrics) = common::http::request(addr, "GET", "/metrics", Some(&admin_token("metrics")), None);
    let d = &stats["data"];
    assert_eq!(text_of(&dom, "connections"), d["total_connections"].to_string());
    assert_eq!(text_of(&dom, "connections"), "4");
    assert_eq!(text_of(&dom, "users"), d["unique_users"].to_string());
    assert_eq!(text_of(&dom, "rooms"), d["rooms"].to_string());
    assert_eq!(
        text_of(&dom, "rate_limited"),
        metric_sum(&metrics, "wsedge_rate_limited_total").to_string()
    );
    assert_eq!(text_of(&dom, "rate_limited"), "1");
    assert_eq!(
        text_of(&dom, "slow_consumers"),
        metric_sum(&metrics, "wsedge_slow_consumer_closes_total").to_string()
    );
    let failures =
        metric_sum(&metrics, "wsedge_auth_failures_total") + metric_sum(&metrics, "wsedge_handshake_refusals_total");
    assert_eq!(text_of(&dom, "handshake_failures"), failures.to_string());
    assert_eq!(failures, 3);
    assert!(dom.contains("authentication: malformed"), "{dom}");
    assert!(dom.contains("HTTP 404"), "{dom}");
    assert!(dom.contains(d["nodes"][0]["node_id"].as_str().unwrap()));

    // A screenshot for people (target/ is never committed).
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard.png");
    let out = browser(&url, &[&format!("--screenshot={}", shot.display())]);
    assert!(shot.exists(), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&profile);

    // A wrong token: the page says so.
    let dom = browser(&format!("http://{addr}/dashboard#token=not-a-token"), &["--dump-dom"]);
    assert!(String::from_utf8_lossy(&dom.stdout).contains("admin token refused (HTTP 401)"));
    let _ = std::fs::remove_dir_all(&profile);
}
