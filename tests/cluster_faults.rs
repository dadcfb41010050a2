//! Real faults under a real `redis-server`: a Redis frozen with SIGSTOP, one node's link
//! stalled, cut or refusing commands through a TCP proxy, wrong credentials, a node killed and
//! started again with the same id. Each test checks a promise of src/docs/cluster.md's "Failure modes":
//! a 200 means delivered (or recoverable), an unknown outcome says so, faults are seen, and
//! nobody is locked out by connections that no longer exist.
mod common;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::http::json;
use common::redis::{Proxy, Redis, fault_config, fault_node, wait_long};
use common::*;
use serde_json::{Value, json};
use wsedge::config::RedisUrl;
use wsedge::{Config, LimitPolicy, RunningServer};

fn node_config(url: RedisUrl, prefix: &str, id: &str, tweak: impl FnOnce(&mut Config)) -> Config {
    fault_config(url, prefix, id, tweak)
}

fn node(url: RedisUrl, prefix: &str, id: &str, tweak: impl FnOnce(&mut Config)) -> RunningServer {
    fault_node(url, prefix, id, tweak)
}

/// The close frame the server sends within 30 s (pings and messages before it are skipped).
fn close_within(ws: &mut Ws) -> (u16, String) {
    ws.get_ref().set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no close frame within 30 s");
        match ws.read() {
            Ok(tungstenite::Message::Close(Some(f))) => return (f.code.into(), f.reason.to_string()),
            Ok(tungstenite::Message::Close(None)) => return (1005, String::new()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    }
}

fn up(n: &RunningServer) -> bool {
    n.handle().cluster_metrics().unwrap().up.load(Ordering::Acquire)
}

fn admin() -> String {
    admin_token("root")
}

fn post(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    json(addr, "POST", path, Some(&admin()), Some(body))
}

fn ready(addr: SocketAddr) -> (u16, Value) {
    json(addr, "GET", "/ready", None, None)
}

/// Connects `user` and waits until the cluster routes the user's messages to it.
fn connect_user(redis: &Redis, prefix: &str, addr: SocketAddr, user: &str) -> Ws {
    let (ws, _) = connect(addr, &token(user));
    let channel = format!("{prefix}:user:{user}");
    wait_until("the user's channel is subscribed", || redis.numsub(&channel) >= 1);
    ws.get_ref().set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    ws
}

#[test]
fn a_frozen_redis_is_seen_and_a_publish_in_flight_is_answered_unknown_never_200() {
    let redis = Redis::start();
    let p = "frozen";
    let n1 = node(redis.url(), p, "f1", |_| {});
    let a = n1.local_addr();
    let mut ivy = connect_user(&redis, p, a, "ivy");
    assert_eq!(ready(a).0, 200);

    redis.freeze(true);
    // Written to Redis, never answered: the outcome is unknown, and the answer says so.
    let (status, body) = post(a, "/ws/users/ivy/messages", json!({"type": "m", "data": {"i": 1}}));
    assert_eq!(status, 504, "{body}");
    assert_eq!(
        (body["outcome"].as_str(), body["code"].as_u64()),
        (Some("unknown"), Some(504)),
        "{body}"
    );
    assert!(body["message_id"].as_str().is_some_and(|s| s.len() == 36), "{body}");
    // The stall is seen: not ready, cluster down.
    wait_long("/ready says the cluster is down", || {
        ready(a) == (503, json!({"status": "not ready", "cluster": "down"}))
    });
    assert!(!up(&n1));
    // A publish now is refused outright (delivered nowhere).
    let (status, _) = post(a, "/ws/users/ivy/messages", json!({"type": "m", "data": {"i": 2}}));
    assert_eq!(status, 503);
    // A handshake waiting on the cluster-wide limit falls back to the node's own count.
    let (_late, hello) = connect(a, &token("jay"));
    assert_eq!(hello["type"], "connection.established");

    redis.freeze(false);
    wait_long("the node is back", || ready(a).0 == 200);
    let (status, body) = post(a, "/ws/users/ivy/messages", json!({"type": "m", "data": {"i": 3}}));
    assert_eq!(status, 200, "{body}");
    // What the user gets: the unknown one at most once (Redis may have taken it: with history
    // on, the node fills it from the stream), the refused one never, then the last.
    let mut got = Vec::new();
    loop {
        let m = recv_json(&mut ivy);
        got.push(m["data"]["i"].as_u64().unwrap());
        if got.last() == Some(&3) {
            break;
        }
    }
    assert!(got == [3] || got == [1, 3], "{got:?}");
    let handle = n1.handle();
    let metrics = handle.cluster_metrics().unwrap();
    assert!(metrics.outcome_unknown.get() >= 1);
    assert!(metrics.timeouts.get() >= 1);
}

#[test]
fn wrong_credentials_are_retried_shown_and_the_node_joins_once_they_work() {
    let mut redis = Redis::start_with(&["--requirepass", "right"]);
    let url: RedisUrl = format!("redis://:wrong@127.0.0.1:{}", redis.port).parse().unwrap();
    let n1 = start(node_config(url, "auth", "a1", |_| {}));
    let a = n1.local_addr();
    wait_long("/ready says the credentials are refused", || {
        ready(a) == (503, json!({"status": "not ready", "cluster": "auth failed"}))
    });
    let metrics = common::http::request(a, "GET", "/metrics", Some(&admin()), None).2;
    assert!(metrics.contains("wsedge_cluster_auth_failed 1"), "{metrics}");
    let (status, _) = post(a, "/ws/broadcast", json!({"type": "x"}));
    assert_eq!(status, 503);

    // The operator fixes the password on the Redis side: no restart of the node.
    redis.cli(&["CONFIG", "SET", "requirepass", "wrong"]);
    redis.cli_password("wrong");
    wait_long("the node joins", || up(&n1));
    assert_eq!(ready(a).0, 200);
    let metrics = common::http::request(a, "GET", "/metrics", Some(&admin()), None).2;
    assert!(metrics.contains("wsedge_cluster_auth_failed 0"), "{metrics}");
}

#[test]
fn a_node_restarted_with_the_same_id_does_not_lock_its_users_out() {
    let redis = Redis::start();
    let spawn = || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wsedge"))
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--jwt-secret", SECRET, "--node-id", "same", "--node-ttl", "60"])
            .args(["--redis", &format!("redis://127.0.0.1:{}", redis.port)])
            .args(["--redis-prefix", "same"])
            .args(["--max-connections-per-user", "1", "--per-user-limit-policy", "reject"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let addr = listening_addr(&mut child);
        (child, addr)
    };
    let (mut first, addr) = spawn();
    wait_long("the process joins", || redis.numsub("same:node:same") == 1);
    let (_held, _) = connect(addr, &token("kim"));
    wait_until("the connection is counted", || {
        redis.cli(&["ZCARD", "same:conns:kim"]).trim() == "1"
    });
    first.kill().unwrap();
    first.wait().unwrap();

    // Same id, well within --node-ttl: the old process's entry must not count.
    let (mut second, addr) = spawn();
    wait_long("the new process joins", || redis.numsub("same:node:same") == 1);
    let mut ws = try_connect(addr, &format!("/ws?token={}", token("kim")), &[]).unwrap();
    let hello = recv_json(&mut ws);
    assert_eq!(hello["type"], "connection.established", "{hello}");
    second.kill().unwrap();
    second.wait().unwrap();
}

#[test]
fn releases_made_while_redis_was_away_are_replayed() {
    let redis = Redis::start();
    let p = "replay";
    let one = |c: &mut Config| {
        c.max_connections_per_user = 1;
        c.per_user_limit_policy = LimitPolicy::Reject;
    };
    let n1 = node(redis.url(), p, "r1", one);
    let n2 = node(redis.url(), p, "r2", one);
    let (leo, _) = connect(n1.local_addr(), &token("leo"));
    wait_until("the connection is counted", || {
        redis.cli(&["ZCARD", "replay:conns:leo"]).trim() == "1"
    });

    redis.freeze(true);
    wait_long("node 1 sees the stall", || !up(&n1));
    drop(leo); // closed while Redis cannot hear of it
    wait_until("node 1 closed it", || n1.handle().stats().connections == 0);
    redis.freeze(false);

    wait_long("the release reaches redis", || {
        redis.cli(&["ZCARD", "replay:conns:leo"]).trim() == "0"
    });
    wait_long("node 2 is back", || up(&n2));
    let (_again, hello) = connect(n2.local_addr(), &token("leo"));
    assert_eq!(hello["type"], "connection.established");
}

#[test]
fn after_nodes_counted_alone_the_policy_brings_every_user_back_within_the_limit() {
    let redis = Redis::start();
    let p = "excess";
    let two = |c: &mut Config| {
        c.max_connections_per_user = 2;
        c.per_user_limit_policy = LimitPolicy::Reject;
        c.node_ttl = Duration::from_secs(1);
    };
    let n1 = node(redis.url(), p, "e1", two);
    let n2 = node(redis.url(), p, "e2", two);
    let mut old: Vec<Ws> = (0..2).map(|_| connect(n2.local_addr(), &token("max")).0).collect();
    wait_until("both are counted", || {
        redis.cli(&["ZCARD", "excess:conns:max"]).trim() == "2"
    });

    redis.freeze(true);
    wait_long("node 1 sees the stall", || !up(&n1));
    // Node 1 decides alone: two more for the same user.
    let mut new: Vec<Ws> = (0..2).map(|_| connect(n1.local_addr(), &token("max")).0).collect();
    // The fault lasts longer than --node-ttl: every liveness key has expired when Redis
    // wakes (a fault's length, not a wait for something to happen).
    std::thread::sleep(Duration::from_millis(1500));
    redis.freeze(false);

    // Reject keeps the oldest: the two newest (node 1's) are closed with 1008.
    for ws in new.iter_mut() {
        assert_eq!(close_within(ws), (1008, "connection limit exceeded".into()));
    }
    wait_long("redis counts two", || {
        redis.cli(&["ZCARD", "excess:conns:max"]).trim() == "2"
    });
    for ws in old.iter_mut() {
        send_json(ws, json!({"type": "ping"}));
        assert_eq!(recv_json(ws)["type"], "pong", "the oldest stay open");
    }
}

#[test]
fn a_subscription_back_before_the_command_connection_waits_to_fill_and_closes_no_one() {
    let redis = Redis::start();
    let proxy = Proxy::new(redis.port);
    let p = "order";
    let events = |c: &mut Config| c.subscribable_events = vec!["job.done".into()];
    let n1 = node(proxy.url(), p, "o1", events);
    let n2 = node(redis.url(), p, "o2", events);
    let mut sub = connect_user(&redis, p, n1.local_addr(), "ned");
    send_json(&mut sub, json!({"type": "subscribe", "data": {"events": ["job.done"]}}));
    assert_eq!(recv_json(&mut sub)["type"], "subscription.acknowledged");
    wait_until("subscribed", || redis.numsub(&format!("{p}:event:job.done")) == 1);
    let publish = |i: u64| {
        let (status, body) = post(n2.local_addr(), "/ws/events/job.done", json!({"data": {"i": i}}));
        assert_eq!(status, 200, "{body}");
    };
    publish(1);
    assert_eq!(recv_json(&mut sub)["data"]["i"], 1);

    // Node 1's links break; its subscription comes back, its command connections do not.
    proxy.refuse_commands(true);
    proxy.cut();
    publish(2);
    publish(3);
    wait_long("node 1 resubscribed", || {
        redis.numsub(&format!("{p}:event:job.done")) == 1
    });
    publish(4); // node 1 sees offset 4 after 1: a gap it cannot fill yet
    proxy.refuse_commands(false);

    for i in 2..=4 {
        let m = recv_json(&mut sub);
        assert_eq!(
            m["data"]["i"], i,
            "filled in order once Redis could be asked, no 1012: {m}"
        );
    }
    assert_eq!(n1.handle().cluster_metrics().unwrap().gaps_lost.get(), 0);
}

#[test]
fn with_history_off_a_lost_subscription_tells_its_connections_to_reload() {
    let redis = Redis::start();
    let proxy = Proxy::new(redis.port);
    let p = "nohist";
    let off = |c: &mut Config| c.history_size = 0;
    let n1 = node(proxy.url(), p, "h1", off);
    let n2 = node(redis.url(), p, "h2", off);
    let mut ola = connect_user(&redis, p, n1.local_addr(), "ola");

    proxy.stall(true);
    wait_long("node 1 sees the stall", || !up(&n1));
    // Answered 200 by node 2 (reaching no node): node 1's user missed it.
    let (status, _) = post(n2.local_addr(), "/ws/users/ola/messages", json!({"type": "m"}));
    assert_eq!(status, 200);
    proxy.stall(false);
    proxy.cut();

    let (code, reason) = close_within(&mut ola);
    assert_eq!((code, reason.as_str()), (1012, "missed messages: reconnect and reload"));
    wait_long("node 1 is back", || up(&n1));
}

/// POST with an `Idempotency-Key` header.
fn post_keyed(addr: SocketAddr, path: &str, key: &str, body: Value) -> (u16, Value) {
    use std::io::Write;
    let body = body.to_string();
    let mut s = raw(addr);
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nIdempotency-Key: {key}\r\nContent-Type: \
         application/json\r\nContent-Length: {}\r\n\r\n{body}",
        admin(),
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let (status, _, text) = read_http(&mut s);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Messages of `ws` up to and including the one whose `data.i` is `last`.
fn until_i(ws: &mut Ws, last: u64) -> Vec<u64> {
    let mut got = Vec::new();
    loop {
        let m = recv_json(ws);
        got.push(m["data"]["i"].as_u64().unwrap());
        if got.last() == Some(&last) {
            return got;
        }
    }
}

fn retries_with_one_key_are_delivered_once(history: bool) {
    let redis = Redis::start();
    let p = if history { "idem-h" } else { "idem" };
    let tweak = |c: &mut Config| {
        if !history {
            c.history_size = 0;
        }
    };
    let n1 = node(redis.url(), p, "i1", tweak);
    let n2 = node(redis.url(), p, "i2", tweak);
    let mut pia = connect_user(&redis, p, n2.local_addr(), "pia");
    let a = n1.local_addr();
    let path = "/ws/users/pia/messages";
    let (s1, first) = post_keyed(a, path, "order-17", json!({"type": "m", "data": {"i": 1}}));
    assert_eq!(s1, 200, "{first}");
    assert_eq!(first["data"]["message_sent"], true);
    // The same key again, on another node: not delivered again, the same message id.
    let (s2, again) = post_keyed(
        n2.local_addr(),
        path,
        "order-17",
        json!({"type": "m", "data": {"i": 1}}),
    );
    assert_eq!(s2, 200, "{again}");
    assert_eq!(again["data"]["duplicate"], true, "{again}");
    assert_eq!(again["data"]["message_sent"], false);
    assert_eq!(again["data"]["message_id"], first["data"]["message_id"]);
    let (s3, _) = post(a, path, json!({"type": "m", "data": {"i": 2}}));
    assert_eq!(s3, 200);
    assert_eq!(until_i(&mut pia, 2), [1, 2], "the retry was not delivered");

    // The case keys are for: a 504, then a retry with the same key.
    redis.freeze(true);
    let (s4, unknown) = post_keyed(a, path, "order-18", json!({"type": "m", "data": {"i": 3}}));
    assert_eq!(s4, 504, "{unknown}");
    redis.freeze(false);
    wait_long("node 1 is back", || ready(a).0 == 200);
    let (s5, retry) = post_keyed(a, path, "order-18", json!({"type": "m", "data": {"i": 3}}));
    assert_eq!(s5, 200, "{retry}");
    assert_eq!(retry["data"]["message_id"], unknown["message_id"]);
    let (s6, _) = post(a, path, json!({"type": "m", "data": {"i": 4}}));
    assert_eq!(s6, 200);
    let (got, closed) = until_i_or_close(&mut pia, 4);
    let threes = got.iter().filter(|&&i| i == 3).count();
    match closed {
        // History off: node 2's subscription may have broken in the freeze too, and then its
        // connections are told (1012) rather than filled; still never a duplicate.
        Some(code) => assert!(!history && code == 1012 && threes <= 1, "{code} {got:?}"),
        None => assert_eq!(threes, 1, "delivered exactly once: {got:?}"),
    }

    // A key that is not one: 400, nothing sent.
    let (s7, bad) = post_keyed(a, path, "", json!({"type": "m"}));
    assert_eq!(s7, 400, "{bad}");
}

/// Like `until_i`, but a close frame ends it too (its code is returned).
fn until_i_or_close(ws: &mut Ws, last: u64) -> (Vec<u64>, Option<u16>) {
    let mut got = Vec::new();
    loop {
        match ws.read().expect("a message or a close") {
            tungstenite::Message::Text(t) => {
                let m: Value = serde_json::from_str(&t).unwrap();
                got.push(m["data"]["i"].as_u64().unwrap());
                if got.last() == Some(&last) {
                    return (got, None);
                }
            }
            tungstenite::Message::Close(f) => return (got, Some(f.map_or(1005, |f| f.code.into()))),
            _ => {}
        }
    }
}

#[test]
fn retries_with_one_idempotency_key_are_delivered_once_with_history() {
    retries_with_one_key_are_delivered_once(true);
}

#[test]
fn retries_with_one_idempotency_key_are_delivered_once_without_history() {
    retries_with_one_key_are_delivered_once(false);
}

#[test]
fn with_history_on_broadcasts_a_node_missed_are_filled_in_order() {
    let redis = Redis::start();
    let proxy = Proxy::new(redis.port);
    let p = "bfill";
    let n1 = node(proxy.url(), p, "b1", |_| {});
    let n2 = node(redis.url(), p, "b2", |_| {});
    let mut rex = connect_user(&redis, p, n1.local_addr(), "rex");
    let broadcast = |i: u64| {
        let (status, body) = post(n2.local_addr(), "/ws/broadcast", json!({"type": "b", "data": {"i": i}}));
        assert_eq!(status, 200, "{body}");
    };
    broadcast(1);
    assert_eq!(recv_json(&mut rex)["data"]["i"], 1);

    proxy.stall(true);
    wait_long("node 1 sees the stall", || !up(&n1));
    broadcast(2); // reaches node 2 only: node 1 must fill it
    broadcast(3);
    proxy.stall(false);
    proxy.cut();
    wait_long("node 1 is back", || up(&n1));
    broadcast(4);
    let (got, closed) = until_i_or_close(&mut rex, 4);
    assert_eq!((got, closed), (vec![2, 3, 4], None), "filled in order, nobody closed");
    assert_eq!(n1.handle().cluster_metrics().unwrap().gaps_lost.get(), 0);
}

/// A question to every node (room members here) is answered only with every node's answer,
/// even when answers come back before Redis's reply that says how many to wait for. n1's
/// replies are held until n2's answer and then n3's (held at n3 until then) reached n1.
#[test]
fn a_cluster_question_waits_for_every_answer_even_ahead_of_the_count() {
    let redis = Redis::start();
    let p = "early";
    let (via1, via3) = (Proxy::new(redis.port), Proxy::new(redis.port));
    let n1 = node(via1.url(), p, "n1", |_| {});
    let _n2 = node(redis.url(), p, "n2", |_| {});
    let n3 = node(via3.url(), p, "n3", |_| {});
    let mut bob = connect_user(&redis, p, n3.local_addr(), "bob");
    let (status, _) = json(
        n3.local_addr(),
        "PUT",
        "/ws/rooms/lobby/members/bob",
        Some(&admin()),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(recv_json(&mut bob)["type"], "room.joined");
    // An answer from another node starts with 'A', the origin's length and name (wire.rs).
    via1.count_on_subscriptions(b"A\x02n");
    via1.hold_replies(true);
    via3.hold_commands(true);
    let a1 = n1.local_addr();
    let asking =
        std::thread::spawn(move || json(a1, "GET", "/ws/rooms/lobby/members", Some(&admin_token("root")), None));
    wait_until("n2's answer reached n1", || via1.marker_seen() >= 1);
    via3.hold_commands(false);
    wait_until("n3's answer reached n1", || via1.marker_seen() >= 2);
    via1.hold_replies(false);
    let (status, body) = asking.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["members"], json!(["bob"]), "{body}");
}

/// Redis not there when the node starts, by address or by name: the node starts on its own
/// (/ready 503, cluster down) and joins once Redis answers (an unresolvable name is retried).
#[test]
fn a_redis_missing_at_start_is_waited_for_not_fatal() {
    let reserved = common::redis::reserve_port();
    let url: RedisUrl = format!("redis://127.0.0.1:{}", reserved.port).parse().unwrap();
    let n = node_config(url, "late", "n1", |_| {});
    let n = start(n);
    let (status, body) = ready(n.local_addr());
    assert_eq!((status, body["cluster"].as_str()), (503, Some("down")), "{body}");
    let _redis = Redis::start_on(reserved, &[]);
    wait_long("the node joins once Redis answers", || ready(n.local_addr()).0 == 200);
    // A name that does not resolve: started all the same, not ready.
    let url: RedisUrl = "redis://no-such-host.invalid:6379".parse().unwrap();
    let m = start(node_config(url, "late", "n2", |_| {}));
    let (status, body) = ready(m.local_addr());
    assert_eq!((status, body["cluster"].as_str()), (503, Some("down")), "{body}");
}
