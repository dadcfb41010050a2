//! The backend bridge's Redis Streams transport against a real `redis-server`: items in a
//! consumer group, at-least-once (unacknowledged entries stay pending for another consumer),
//! rpcs answered through the admin route, Redis down reported to the sender.

mod common;

use std::sync::atomic::Ordering;

use common::redis::{Redis, cluster_node, wait_long};
use common::*;
use serde_json::{Value, json};
use wsedge::config::{BackendConfig, Forwarding, LifecycleEvents};

const STREAM: &str = "app:inbox";

fn streamed(redis: &Redis, id: &str) -> wsedge::RunningServer {
    cluster_node(redis.url(), "bs", id, |c| {
        c.backend = Some(BackendConfig::stream(STREAM).unwrap());
        c.forward = Forwarding::parse("chat,rpc").unwrap();
        c.backend_events = LifecycleEvents::parse("connect,disconnect").unwrap();
        c.rate_limit_messages = 0;
    })
}

/// Reads new entries for consumer `who` of group `workers`: (entry id, item) pairs.
fn read_group(redis: &Redis, who: &str) -> Vec<(String, Value)> {
    let out = redis.cli(&[
        "XREADGROUP",
        "GROUP",
        "workers",
        who,
        "COUNT",
        "100",
        "BLOCK",
        "5000",
        "STREAMS",
        STREAM,
        ">",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    let mut entries = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if *l == "item" && i > 0 && i + 1 < lines.len() {
            entries.push((
                lines[i - 1].to_string(),
                serde_json::from_str(lines[i + 1]).expect("item JSON"),
            ));
        }
    }
    entries
}

/// Entries until one matches `pred`.
fn until(redis: &Redis, who: &str, pred: impl Fn(&Value) -> bool) -> (String, Value) {
    for _ in 0..20 {
        if let Some(e) = read_group(redis, who).into_iter().find(|(_, v)| pred(v)) {
            return e;
        }
    }
    panic!("no matching stream entry");
}

#[test]
fn items_reach_a_consumer_group_and_stay_pending_until_acknowledged() {
    let redis = Redis::start();
    assert_eq!(
        redis
            .cli(&["XGROUP", "CREATE", STREAM, "workers", "$", "MKSTREAM"])
            .trim(),
        "OK"
    );
    let server = streamed(&redis, "s1");
    let (mut ws, hello) = connect(server.local_addr(), &token("amy"));
    let conn = hello["data"]["connection_id"].clone();
    let (_, connected) = until(&redis, "w1", |v| v["kind"] == "connect");
    assert_eq!(
        (connected["connection_id"].clone(), connected["node_id"].clone()),
        (conn.clone(), json!("s1"))
    );
    send_json(&mut ws, json!({"type": "chat", "id": "c1", "data": {"text": "hi"}}));
    let (entry, chat) = until(&redis, "w1", |v| v["kind"] == "message");
    assert_eq!(
        (chat["type"].clone(), chat["id"].clone(), chat["user_id"].clone()),
        (json!("chat"), json!("c1"), json!("amy"))
    );
    // Consumer w1 dies before acknowledging: the entry stays pending for the group, and
    // another consumer claims it (at least once, whatever the backend's uptime).
    let claimed = redis.cli(&["XCLAIM", STREAM, "workers", "w2", "0", &entry]);
    assert!(claimed.contains("\"c1\""), "{claimed}");
    assert_eq!(redis.cli(&["XACK", STREAM, "workers", &entry]).trim(), "1");
    let m = server.handle().stats();
    assert!(m.backend.forwarded >= 2 && m.backend.failed == 0, "{:?}", m.backend);
    drop(ws);
    let (_, gone) = until(&redis, "w1", |v| v["kind"] == "disconnect");
    assert_eq!(gone["connection_id"], conn);
}

#[test]
fn rpcs_over_the_stream_are_answered_through_the_admin_route() {
    let redis = Redis::start();
    redis.cli(&["XGROUP", "CREATE", STREAM, "workers", "$", "MKSTREAM"]);
    let server = streamed(&redis, "s2");
    let addr = server.local_addr();
    let (mut ws, hello) = connect(addr, &token("ben"));
    let conn = hello["data"]["connection_id"].as_str().unwrap().to_string();
    send_json(
        &mut ws,
        json!({"type": "rpc", "id": 9, "data": {"method": "sum", "params": [1, 2]}}),
    );
    let (_, rpc) = until(&redis, "w1", |v| v["kind"] == "rpc");
    assert_eq!(
        (rpc["method"].clone(), rpc["params"].clone()),
        (json!("sum"), json!([1, 2]))
    );
    let body = json!({"message_id": rpc["message_id"], "result": 3});
    let (status, r) = http::json(
        addr,
        "POST",
        &format!("/ws/connections/{conn}/rpc"),
        Some(&admin_token("root")),
        Some(body),
    );
    assert_eq!(status, 200, "{r}");
    let m = next_of(&mut ws, "rpc.result");
    assert_eq!(
        (m["data"]["id"].clone(), m["data"]["result"].clone()),
        (json!(9), json!(3))
    );
}

#[test]
fn redis_down_is_reported_to_the_sender() {
    let mut redis = Redis::start();
    let server = streamed(&redis, "s3");
    let (mut ws, _) = connect(server.local_addr(), &token("cal"));
    redis.kill_now();
    let h = server.handle();
    wait_long("the node sees redis gone", || {
        !h.cluster_metrics().unwrap().up.load(Ordering::Acquire)
    });
    send_json(&mut ws, json!({"type": "chat", "id": "lost", "data": {}}));
    let m = next_of(&mut ws, "error");
    assert_eq!(m["data"]["code"], "BACKEND_UNAVAILABLE");
    assert_eq!(m["data"]["outcome"], "not_delivered");
    assert_eq!(m["data"]["id"], "lost");
}

#[test]
fn replies_and_sends_by_connection_id_reach_another_node() {
    let redis = Redis::start();
    redis.cli(&["XGROUP", "CREATE", STREAM, "workers", "$", "MKSTREAM"]);
    let n1 = streamed(&redis, "s4");
    let n2 = streamed(&redis, "s5");
    let (mut ws, hello) = connect(n1.local_addr(), &token("dee"));
    let conn = hello["data"]["connection_id"].as_str().unwrap().to_string();
    let admin = admin_token("root");
    // A send by connection id through the other node.
    let body = json!({"type": "notice", "data": {"n": 1}});
    let (status, r) = http::json(
        n2.local_addr(),
        "POST",
        &format!("/ws/connections/{conn}/messages"),
        Some(&admin),
        Some(body),
    );
    assert_eq!(status, 200, "{r}");
    let m = next_of(&mut ws, "notice");
    assert_eq!(m["data"]["n"], 1);
    // An rpc answered through the other node.
    send_json(&mut ws, json!({"type": "rpc", "id": "x", "data": {"method": "m"}}));
    let (_, rpc) = until(&redis, "w1", |v| v["kind"] == "rpc");
    let route = format!("/ws/connections/{conn}/rpc");
    let body = json!({"message_id": rpc["message_id"], "result": "from n2"});
    let (status, r) = http::json(n2.local_addr(), "POST", &route, Some(&admin), Some(body.clone()));
    assert_eq!(status, 200, "{r}");
    let m = next_of(&mut ws, "rpc.result");
    assert_eq!(
        (m["data"]["id"].clone(), m["data"]["result"].clone()),
        (json!("x"), json!("from n2"))
    );
    // Answered: nothing waits any more, on any node.
    assert_eq!(
        http::json(n2.local_addr(), "POST", &route, Some(&admin), Some(body)).0,
        404
    );
}

#[test]
fn the_python_stream_consumer_example_answers_rpcs() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import redis"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "this test needs redis-py: `pip install redis` (.ci/run does)");
    let redis = Redis::start();
    let server = streamed(&redis, "s6");
    let addr = server.local_addr();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let mut consumer = std::process::Command::new("python3")
        .args([
            "scripts/examples/stream_consumer.py",
            "--redis",
            &url,
            "--stream",
            STREAM,
            "--group",
            "workers",
        ])
        .args([
            "--consumer",
            "c1",
            "--wsedge",
            &format!("http://{addr}"),
            "--admin-token",
            &admin_token("b"),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("python3 runs");
    let (mut ws, _) = connect(addr, &token("eli"));
    // The consumer creates the group from the stream's start: nothing sent before it is lost.
    send_json(
        &mut ws,
        json!({"type": "rpc", "id": "sum", "data": {"method": "math.add", "params": [20, 22]}}),
    );
    let result = loop {
        let m = recv_json_long(&mut ws);
        if m["type"] == "rpc.result" {
            break m;
        }
    };
    assert_eq!(
        (result["data"]["id"].clone(), result["data"]["result"].clone()),
        (json!("sum"), json!(42))
    );
    // Every entry is acknowledged once handled (the answer goes out just before its XACK).
    wait_until("every entry acknowledged", || {
        redis
            .cli(&["XPENDING", STREAM, "workers"])
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            == "0"
    });
    let _ = consumer.kill();
    let _ = consumer.wait();
}

/// A message within 20 s (python and its imports start slower than the socket timeout).
fn recv_json_long(ws: &mut Ws) -> Value {
    ws.get_mut()
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let m = recv_json(ws);
    ws.get_mut().set_read_timeout(Some(TIMEOUT)).unwrap();
    m
}
