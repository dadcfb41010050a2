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

/// The chart is full when the page opens (the node keeps its last minutes of rates:
/// /ws/stats/history), and the operator's actions work from the page, pressed in Chromium:
/// publish to a user and to an event, look up a user's connections and disconnect one, then
/// the user, and read a channel's history.
#[test]
fn the_dashboard_opens_with_history_and_its_actions_work() {
    let s = start(config());
    let addr = s.local_addr();
    let admin = admin_token("ops");
    let (mut alice1, _) = connect(addr, &token("alice"));
    let (mut alice2, _) = connect(addr, &token("alice"));
    let (mut bob, _) = connect(addr, &token("bob"));
    send_json(
        &mut bob,
        json!({"type": "subscribe", "data": {"events": ["review.updated"]}}),
    );
    assert_eq!(recv_json(&mut bob)["type"], "subscription.acknowledged");
    // A few seconds of samples on the server before the page opens (each request is a turn).
    wait_until("three seconds of rate samples", || {
        send_json(&mut alice1, json!({"type": "ping", "data": {}}));
        let _ = recv_json(&mut alice1);
        let (_, h) = common::http::json(addr, "GET", "/ws/stats/history", Some(&admin), None);
        h["data"]["samples"].as_array().is_some_and(|a| a.len() >= 3)
    });
    let mut page = common::cdp::Browser::open(&format!("http://{addr}/dashboard#token={admin}"));
    page.wait_for("the first poll", "document.body.dataset.ready === 'true'");
    let points = page.eval("Number(document.body.dataset.samples)").as_u64().unwrap();
    assert!(
        points >= 2,
        "the chart starts with the server's history: {points} points"
    );

    let set = |page: &mut common::cdp::Browser, id: &str, value: &str| {
        page.eval(&format!("document.getElementById('{id}').value = {}", json!(value)));
    };
    let press = |page: &mut common::cdp::Browser, id: &str| {
        page.eval("delete document.getElementById('action_result').dataset.status");
        page.eval(&format!("document.getElementById('{id}').click()"));
        page.wait_for(id, "'status' in document.getElementById('action_result').dataset");
        page.eval("document.getElementById('action_result').dataset.status")
    };
    // Publish to a user.
    set(&mut page, "pub_kind", "user");
    set(&mut page, "pub_name", "alice");
    set(&mut page, "pub_type", "notice");
    set(&mut page, "pub_data", r#"{"from": "the dashboard"}"#);
    assert_eq!(press(&mut page, "pub_send"), "200");
    for ws in [&mut alice1, &mut alice2] {
        let m = recv_json(ws);
        assert_eq!(
            (m["type"].as_str(), m["data"]["from"].as_str()),
            (Some("notice"), Some("the dashboard"))
        );
    }
    // Publish to an event.
    set(&mut page, "pub_kind", "event");
    set(&mut page, "pub_name", "review.updated");
    set(&mut page, "pub_data", r#"{"r": 7}"#);
    assert_eq!(press(&mut page, "pub_send"), "200");
    assert_eq!(recv_json(&mut bob)["data"]["r"], 7);
    // Bad JSON is refused on the page, nothing sent.
    set(&mut page, "pub_data", "{not json");
    assert_eq!(press(&mut page, "pub_send"), "invalid");
    // Presence and connections, then one disconnected from its row.
    set(&mut page, "user_id", "alice");
    assert_eq!(press(&mut page, "lookup"), "200");
    page.wait_for("two rows", "document.body.dataset.presence === '2'");
    page.eval("document.querySelector('#presence button').click()");
    page.wait_for("one row left", "document.body.dataset.presence === '1'");
    let closed = [&mut alice1, &mut alice2]
        .into_iter()
        .filter_map(|ws| {
            ws.get_ref()
                .set_read_timeout(Some(std::time::Duration::from_millis(200)))
                .unwrap();
            match ws.read() {
                Ok(tungstenite::Message::Close(Some(f))) => Some(u16::from(f.code)),
                _ => None,
            }
        })
        .count();
    assert_eq!(closed, 1, "exactly one of alice's connections closed");
    // The user, whole.
    assert_eq!(press(&mut page, "disconnect_user"), "200");
    // A channel's history.
    set(&mut page, "hist_channel", "user:alice");
    assert_eq!(press(&mut page, "hist_read"), "200");
    let shown = page.eval("document.getElementById('action_result').textContent");
    assert!(shown.as_str().unwrap().contains("the dashboard"), "{shown}");
}
