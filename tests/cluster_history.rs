//! History on a cluster, kept in a real `redis-server`: positions and offsets given by Redis,
//! publish on one node and recover on another, offline users, recoveries racing publishes,
//! every reason for `recovered: false`, a flushed Redis giving a new epoch, gaps filled after
//! the subscription was silently lost, and the admin history routes from any node.
mod common;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use common::http::json;
use common::redis::Redis;
use common::*;
use serde_json::{Value, json};
use wsedge::{Config, RunningServer};

fn node_on(url: wsedge::config::RedisUrl, prefix: &str, id: &str, tweak: impl FnOnce(&mut Config)) -> RunningServer {
    common::redis::cluster_node(url, prefix, id, |c| {
        c.rate_limit_messages = 0;
        tweak(c);
    })
}

fn node(redis: &Redis, prefix: &str, id: &str, tweak: impl FnOnce(&mut Config)) -> RunningServer {
    node_on(redis.url(), prefix, id, tweak)
}

fn admin() -> String {
    admin_token("root")
}

fn send(addr: SocketAddr, user: &str, i: u64) -> Value {
    let (status, body) = json(
        addr,
        "POST",
        &format!("/ws/users/{user}/messages"),
        Some(&admin()),
        Some(json!({"type": "note", "data": {"i": i}})),
    );
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

fn position(hello: &Value) -> (u64, String) {
    let p = &hello["data"]["position"];
    (p["offset"].as_u64().unwrap(), p["epoch"].as_str().unwrap().to_string())
}

fn connect_from(addr: SocketAddr, user: &str, offset: u64, epoch: &str) -> (Ws, Value) {
    let path = format!(
        "/ws?token={}&recover_offset={offset}&recover_epoch={epoch}",
        token(user)
    );
    let mut ws = try_connect(addr, &path, &[]).unwrap();
    let hello = recv_json(&mut ws);
    assert_eq!(hello["type"], "connection.established", "{hello}");
    (ws, hello)
}

fn subscribe(ws: &mut Ws, recover: Value) -> Value {
    send_json(
        ws,
        json!({"type": "subscribe", "data": {"events": ["review.updated"], "recover": recover}}),
    );
    let ack = recv_json(ws);
    assert_eq!(ack["type"], "subscription.acknowledged", "{ack}");
    ack["data"]["positions"]["review.updated"].clone()
}

#[test]
fn publish_on_one_node_and_recover_on_another() {
    let redis = Redis::start();
    let p = "hist";
    let n1 = node(&redis, p, "h1", |_| {});
    let n2 = node(&redis, p, "h2", |_| {});
    let (mut ws, hello) = connect(n2.local_addr(), &token("ann"));
    let (offset, epoch) = position(&hello);
    assert_eq!(
        (hello["data"]["position"]["channel"].as_str(), offset),
        (Some("user:ann"), 0)
    );

    let body = send(n1.local_addr(), "ann", 1);
    assert_eq!(
        (body["nodes_reached"].as_u64(), body["connections_reached"].as_u64()),
        (Some(1), Some(0))
    );
    let m = recv_json(&mut ws);
    assert_eq!(
        (m["channel"].as_str(), m["offset"].as_u64(), m["epoch"].as_str()),
        (Some("user:ann"), Some(1), Some(epoch.as_str())),
        "{m}"
    );
    let body = send(n2.local_addr(), "ann", 2);
    assert_eq!(body["connections_reached"], 1, "counted when this node delivered it");
    assert_eq!(recv_json(&mut ws)["offset"], 2);
    drop(ws);

    // Offline: kept in Redis, no node subscribed.
    wait_until("no node holds ann", || redis.numsub(&format!("{p}:user:ann")) == 0);
    for i in 3..=7 {
        assert_eq!(send(n2.local_addr(), "ann", i)["nodes_reached"], 0);
    }
    let (mut ws, hello) = connect_from(n1.local_addr(), "ann", 2, &epoch);
    assert_eq!(
        hello["data"]["recovery"],
        json!({"recovered": true, "offset": 7, "epoch": epoch})
    );
    assert_eq!(position(&hello), (7, epoch.clone()));
    for i in 3..=7 {
        let m = recv_json(&mut ws);
        assert_eq!(
            (m["data"]["i"].as_u64(), m["offset"].as_u64()),
            (Some(i), Some(i)),
            "{m}"
        );
    }
    send(n2.local_addr(), "ann", 8);
    assert_eq!(recv_json(&mut ws)["offset"], 8, "live after the replay");

    // The recover message, on the node that did not publish.
    send_json(
        &mut ws,
        json!({"type": "recover", "data": {"channels": {"user:ann": {"offset": 5, "epoch": epoch}}}}),
    );
    let ack = recv_json(&mut ws);
    assert_eq!(ack["data"]["channels"]["user:ann"]["recovered"], true, "{ack}");
    for i in 6..=8 {
        assert_eq!(recv_json(&mut ws)["offset"], i);
    }
    send_json(&mut ws, json!({"type": "ping", "data": {}}));
    assert_eq!(recv_json(&mut ws)["type"], "pong", "nothing more");
}

#[test]
fn recovery_racing_publishes_from_both_nodes_has_no_gap_and_no_duplicate() {
    let redis = Redis::start();
    let p = "race";
    let n1 = node(&redis, p, "r1", |_| {});
    let n2 = node(&redis, p, "r2", |_| {});
    let (mut ws, _) = connect(n1.local_addr(), &token("u0"));
    let epoch = subscribe(&mut ws, json!({}))["epoch"].as_str().unwrap().to_string();
    drop(ws);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishers: Vec<_> = [n1.handle(), n2.handle()]
        .into_iter()
        .map(|h| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    h.publish("review.updated", json!({})).unwrap();
                }
            })
        })
        .collect();
    let mut last = 0;
    for round in 0..8 {
        let addr = [n1.local_addr(), n2.local_addr()][round % 2];
        let (mut ws, _) = connect(addr, &token(&format!("u{round}")));
        let pos = subscribe(&mut ws, json!({"review.updated": {"offset": last, "epoch": epoch}}));
        assert_eq!(pos["recovered"], true, "round {round}: {pos}");
        let until = pos["offset"].as_u64().unwrap() + 20;
        while last < until {
            let m = recv_json(&mut ws);
            assert_eq!(m["offset"].as_u64(), Some(last + 1), "round {round}: {m}");
            last += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.join().unwrap();
    }
}

#[test]
fn epoch_trimming_and_the_recovery_limit_say_recovered_false() {
    let redis = Redis::start();
    let p = "lost";
    let n = node(&redis, p, "l1", |c| {
        c.history_size = 5;
        c.recovery_max = 3;
    });
    let addr = n.local_addr();
    let (ws, hello) = connect(addr, &token("bo"));
    let (_, epoch) = position(&hello);
    drop(ws);
    for i in 1..=8 {
        send(addr, "bo", i);
    }
    let check = |offset: u64, epoch: &str, recovered: bool| {
        let (mut ws, hello) = connect_from(addr, "bo", offset, epoch);
        assert_eq!(
            hello["data"]["recovery"]["recovered"], recovered,
            "from {offset}: {hello}"
        );
        assert_eq!(hello["data"]["recovery"]["offset"], 8);
        send_json(&mut ws, json!({"type": "ping", "data": {}}));
        let next = recv_json(&mut ws);
        if recovered {
            assert_eq!(next["offset"], offset + 1);
        } else {
            assert_eq!(next["type"], "pong", "nothing replayed: {next}");
        }
    };
    check(5, &epoch, true);
    check(4, &epoch, false); // four missing, the limit is three
    check(2, &epoch, false); // trimmed: only 4..8 are kept
    check(7, "another", false);
    check(9, &epoch, false); // ahead of the channel

    // Redis flushed: a new epoch, and the old position no longer recovers.
    redis.cli(&["FLUSHALL"]);
    let (_, hello) = connect_from(addr, "bo", 8, &epoch);
    assert_eq!(hello["data"]["recovery"]["recovered"], false);
    let (offset, new_epoch) = position(&hello);
    assert_eq!(offset, 0);
    assert_ne!(new_epoch, epoch);
}

#[test]
fn messages_missed_while_the_subscription_was_silent_are_filled_from_the_stream() {
    let redis = Redis::start();
    let proxy = common::redis::Proxy::new(redis.port);
    let p = "gap";
    let publisher = node(&redis, p, "direct", |_| {});
    let behind = node_on(proxy.url(), p, "proxied", |_| {});
    let (mut ivy, _) = connect(behind.local_addr(), &token("ivy"));
    // jay's channel never had a message: the node knows only where it stands.
    let (mut jay, _) = connect(behind.local_addr(), &token("jay"));
    for user in ["ivy", "jay"] {
        wait_until("the channel is subscribed", || {
            redis.numsub(&format!("{p}:user:{user}")) == 1
        });
    }
    send(publisher.local_addr(), "ivy", 1);
    assert_eq!(recv_json(&mut ivy)["offset"], 1);

    proxy.freeze_subscriptions();
    for i in 2..=4 {
        send(publisher.local_addr(), "ivy", i);
    }
    send(publisher.local_addr(), "jay", 1);
    let m = behind.handle();
    wait_until("the silent subscription is noticed and made again", || {
        m.cluster_metrics().unwrap().probe_failures.get() >= 1
    });
    for i in 2..=4 {
        let msg = recv_json(&mut ivy);
        assert_eq!(
            (msg["offset"].as_u64(), msg["data"]["i"].as_u64()),
            (Some(i), Some(i)),
            "{msg}"
        );
    }
    let m1 = recv_json(&mut jay);
    assert_eq!(
        (m1["offset"].as_u64(), m1["data"]["i"].as_u64()),
        (Some(1), Some(1)),
        "{m1}"
    );
    assert!(m.cluster_metrics().unwrap().gap_fills.get() >= 2);
    wait_until("resubscribed", || redis.numsub(&format!("{p}:user:ivy")) == 1);
    send(publisher.local_addr(), "ivy", 5);
    assert_eq!(recv_json(&mut ivy)["offset"], 5, "live again, nothing twice");
    let (_, _, metrics) = common::http::request(
        behind.local_addr(),
        "GET",
        "/metrics",
        Some(&admin_token("metrics")),
        None,
    );
    assert!(metrics.contains("wsedge_cluster_history_gap_fills_total"), "{metrics}");
}

#[test]
fn admin_history_routes_answer_from_any_node() {
    let redis = Redis::start();
    let p = "admin";
    let n1 = node(&redis, p, "a1", |_| {});
    let n2 = node(&redis, p, "a2", |_| {});
    for i in 1..=3 {
        send(n1.local_addr(), "cy", i);
    }
    let (status, body) = json(
        n2.local_addr(),
        "GET",
        "/ws/history/user:cy?since=1",
        Some(&admin()),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let messages = body["data"]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{body}");
    assert_eq!(
        (messages[0]["offset"].as_u64(), messages[1]["data"]["i"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(body["data"]["offset"], 3);
    let epoch = body["data"]["epoch"].as_str().unwrap().to_string();

    let (status, body) = json(n2.local_addr(), "DELETE", "/ws/history/user:cy", Some(&admin()), None);
    assert_eq!(status, 200, "{body}");
    let (_, body) = json(n1.local_addr(), "GET", "/ws/history/user:cy", Some(&admin()), None);
    assert_eq!(body["data"]["messages"], json!([]));
    assert_eq!(body["data"]["offset"], 0);
    assert_ne!(body["data"]["epoch"], epoch.as_str(), "a new epoch");
    let (mut ws, hello) = connect(n1.local_addr(), &token("cy"));
    assert_eq!(hello["data"]["position"]["epoch"], body["data"]["epoch"]);
    send(n2.local_addr(), "cy", 4);
    assert_eq!(recv_json(&mut ws)["offset"], 1);
}

#[test]
fn recoveries_arriving_together_are_each_exact() {
    let redis = Redis::start();
    let n = node(&redis, "batch", "b1", |_| {});
    let addr = n.local_addr();
    let (mut first, _) = connect(addr, &token("b0"));
    let epoch = subscribe(&mut first, json!({}))["epoch"].as_str().unwrap().to_string();
    drop(first);
    let h = n.handle();
    for i in 1..=30 {
        h.publish("review.updated", json!({"i": i})).unwrap();
    }
    let mut clients: Vec<(u64, Ws)> = (0..10)
        .map(|i| (i * 3, connect(addr, &token(&format!("b{i}"))).0))
        .collect();
    // One client far ahead of the channel, in the same batch: not recovered, the others are.
    let (mut ahead, _) = connect(addr, &token("bx"));
    send_json(
        &mut ahead,
        json!({"type": "subscribe", "data": {"events": ["review.updated"], "recover": {"review.updated": {"offset": u64::MAX, "epoch": epoch}}}}),
    );
    // All asked before any is answered.
    for (from, ws) in clients.iter_mut() {
        send_json(
            ws,
            json!({"type": "subscribe", "data": {"events": ["review.updated"], "recover": {"review.updated": {"offset": *from, "epoch": epoch}}}}),
        );
    }
    let ack = recv_json(&mut ahead);
    assert_eq!(ack["data"]["positions"]["review.updated"]["recovered"], false, "{ack}");
    for (from, ws) in clients.iter_mut() {
        let ack = recv_json(ws);
        assert_eq!(
            ack["data"]["positions"]["review.updated"]["recovered"], true,
            "from {from}: {ack}"
        );
        for o in *from + 1..=30 {
            assert_eq!(recv_json(ws)["offset"], o, "from {from}");
        }
    }
    h.publish("review.updated", json!({})).unwrap();
    for (_, ws) in clients.iter_mut() {
        assert_eq!(recv_json(ws)["offset"], 31);
    }
    assert_eq!(recv_json(&mut ahead)["offset"], 31, "subscribed anyway");
}

/// On a cluster too: a first connect (`recover_offset=0`, no epoch) gets what was sent while
/// the user had never connected, and a room message sent with `exclude_user` is not replayed
/// to that user (the stream entry keeps the exclusion in its `x` field).
#[test]
fn first_connects_and_exclusions_hold_in_the_cluster_history() {
    let redis = Redis::start();
    let p = "firsts";
    let n1 = node(&redis, p, "n1", |_| {});
    let n2 = node(&redis, p, "n2", |_| {});
    for i in 1..=3 {
        send(n1.local_addr(), "newbie", i);
    }
    let path = format!("/ws?token={}&recover_offset=0", token("newbie"));
    let mut ws = try_connect(n2.local_addr(), &path, &[]).unwrap();
    let hello = recv_json(&mut ws);
    assert_eq!(hello["data"]["recovery"]["recovered"], true, "{hello}");
    for i in 1..=3 {
        assert_eq!(recv_json(&mut ws)["data"]["i"], i);
    }

    let t = |u: &str| sign(json!({"sub": u, "exp": now() + 3600, "rooms": ["lobby"]}));
    let room_msg = |i: u64, exclude: Option<&str>| {
        let mut body = json!({"data": {"i": i}});
        if let Some(u) = exclude {
            body["exclude_user"] = json!(u);
        }
        let (status, body) = json(
            n1.local_addr(),
            "POST",
            "/ws/rooms/lobby/messages",
            Some(&admin()),
            Some(body),
        );
        assert_eq!(status, 200, "{body}");
    };
    let join = |ws: &mut Ws, recover: Value| {
        send_json(
            ws,
            json!({"type": "join", "data": {"rooms": ["lobby"], "recover": recover}}),
        );
        let ack = recv_json(ws);
        assert_eq!(ack["type"], "room.joined", "{ack}");
        ack
    };
    let (mut hank, _) = connect(n2.local_addr(), &t("hank"));
    join(&mut hank, json!({}));
    wait_until("the room is subscribed", || {
        redis.numsub(&format!("{p}:room:lobby")) >= 1
    });
    room_msg(1, None);
    let epoch = recv_json(&mut hank)["epoch"].as_str().unwrap().to_string();
    drop(hank);
    room_msg(2, Some("hank"));
    room_msg(3, None);
    let (mut hank, _) = connect(n2.local_addr(), &t("hank"));
    let ack = join(&mut hank, json!({"lobby": {"offset": 1, "epoch": epoch}}));
    assert_eq!(ack["data"]["positions"]["lobby"]["recovered"], true, "{ack}");
    assert_eq!(recv_json(&mut hank)["data"]["i"], 3, "2 excluded hank");
}
