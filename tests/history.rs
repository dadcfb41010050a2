//! Channel history on one node: offsets and epochs on delivered messages, the position in
//! `connection.established`, exact recovery of the user channel (also for a user who was
//! offline, also while publishes race it, paced under the outbound cap), every reason for
//! `recovered: false`, and the admin history routes.
mod common;
use common::http::json;
use common::*;
use serde_json::{Value, json};
use wsedge::Config;

fn admin() -> String {
    admin_token("root")
}

fn send(addr: std::net::SocketAddr, user: &str, i: u64) -> Value {
    let (status, body) = json(
        addr,
        "POST",
        &format!("/ws/users/{user}/messages"),
        Some(&admin()),
        Some(json!({"type": "note", "data": {"i": i}})),
    );
    assert_eq!(status, 200, "{body}");
    body
}

fn position(hello: &Value) -> (u64, String) {
    let p = &hello["data"]["position"];
    (p["offset"].as_u64().unwrap(), p["epoch"].as_str().unwrap().to_string())
}

fn recover(ws: &mut Ws, user: &str, offset: u64, epoch: &str) -> Value {
    let channel = format!("user:{user}");
    send_json(
        ws,
        json!({"type": "recover", "data": {"channels": {channel.clone(): {"offset": offset, "epoch": epoch}}}}),
    );
    let ack = recv_json(ws);
    assert_eq!(ack["type"], "recovery.result", "{ack}");
    ack["data"]["channels"][channel].clone()
}

#[test]
fn messages_carry_positions_and_a_returning_client_gets_exactly_what_it_missed() {
    let server = start(Config { workers: 2, ..config() });
    let addr = server.local_addr();
    let (mut ws, hello) = connect(addr, &token("ann"));
    let (offset, epoch) = position(&hello);
    assert_eq!(hello["data"]["position"]["channel"], "user:ann");
    assert_eq!(offset, 0, "nothing published yet");
    send(addr, "ann", 1);
    let m = recv_json(&mut ws);
    assert_eq!(
        (m["channel"].as_str(), m["offset"].as_u64(), m["epoch"].as_str()),
        (Some("user:ann"), Some(1), Some(epoch.as_str())),
        "{m}"
    );
    assert_eq!(m["data"]["i"], 1);
    drop(ws);

    // Offline: five messages are kept for her.
    for i in 2..=6 {
        send(addr, "ann", i);
    }
    let (mut ws, hello) = connect(addr, &token("ann"));
    assert_eq!(position(&hello), (6, epoch.clone()), "the position says what there is");
    let r = recover(&mut ws, "ann", 1, &epoch);
    assert_eq!(r, json!({"recovered": true, "offset": 6, "epoch": epoch}));
    for i in 2..=6 {
        let m = recv_json(&mut ws);
        assert_eq!((m["offset"].as_u64(), m["data"]["i"].as_u64()), (Some(i), Some(i)));
    }
    // Nothing else came: the next message is the next live one.
    send(addr, "ann", 7);
    assert_eq!(recv_json(&mut ws)["offset"], 7);
    // Up to date: recovered, nothing replayed.
    let r = recover(&mut ws, "ann", 7, &epoch);
    assert_eq!(r["recovered"], true);
    send_json(&mut ws, json!({"type": "ping", "data": {}}));
    assert_eq!(recv_json(&mut ws)["type"], "pong");
}

#[test]
fn recovered_false_for_another_epoch_trimmed_history_too_many_missing_or_a_future_offset() {
    let server = start(Config {
        history_size: 10,
        recovery_max: 5,
        ..config()
    });
    let addr = server.local_addr();
    let (mut ws, hello) = connect(addr, &token("bo"));
    let (_, epoch) = position(&hello);
    for i in 1..=12 {
        send(addr, "bo", i);
        recv_json(&mut ws);
    }
    let lost = |r: Value| {
        assert_eq!(r, json!({"recovered": false, "offset": 12, "epoch": epoch.clone()}));
    };
    lost(recover(&mut ws, "bo", 8, "another-epoch"));
    lost(recover(&mut ws, "bo", 1, &epoch)); // 2 and 3 were trimmed (10 kept)
    lost(recover(&mut ws, "bo", 6, &epoch)); // 6 missing > recovery_max 5
    lost(recover(&mut ws, "bo", 13, &epoch));
    // Nothing was replayed by any of them.
    send_json(&mut ws, json!({"type": "ping", "data": {}}));
    assert_eq!(recv_json(&mut ws)["type"], "pong");
    let r = recover(&mut ws, "bo", 7, &epoch);
    assert_eq!(r["recovered"], true, "exactly 5 missing is within the limit");
    for i in 8..=12 {
        assert_eq!(recv_json(&mut ws)["offset"], i);
    }
    // Someone else's channel is refused.
    send_json(
        &mut ws,
        json!({"type": "recover", "data": {"channels": {"user:eve": {"offset": 0, "epoch": epoch}}}}),
    );
    let ack = recv_json(&mut ws);
    assert_eq!(ack["data"]["channels"]["user:eve"]["recovered"], false, "{ack}");
    send_json(&mut ws, json!({"type": "recover", "data": {"channels": "nope"}}));
    assert_eq!(recv_json(&mut ws)["data"]["code"], "INVALID_MESSAGE_FORMAT");
}

#[test]
fn publishes_racing_a_recovery_give_no_gap_and_no_duplicate() {
    let server = start(Config {
        workers: 2,
        rate_limit_messages: 0,
        ..config()
    });
    let addr = server.local_addr();
    let (ws, hello) = connect(addr, &token("cy"));
    let (_, epoch) = position(&hello);
    drop(ws);
    let h = server.handle();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 50 {
                n += 1;
                h.send_to_user("cy", "tick", json!({"n": n})).unwrap();
            }
            n
        })
    };
    let mut last = 0;
    for _round in 0..5 {
        // Recovery asked for in the request: replayed before any live message.
        let path = format!("/ws?token={}&recover_offset={last}&recover_epoch={epoch}", token("cy"));
        let mut ws = try_connect(addr, &path, &[]).unwrap();
        let hello = recv_json(&mut ws);
        let r = &hello["data"]["recovery"];
        assert_eq!(r["recovered"], true, "{hello}");
        // Everything after `last` arrives in order, replayed then live, without a gap.
        let until = r["offset"].as_u64().unwrap() + 20;
        while last < until {
            let m = recv_json(&mut ws);
            assert_eq!(m["offset"].as_u64(), Some(last + 1), "{m}");
            last += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total = publisher.join().unwrap();
    assert!(total >= last);
}

#[test]
fn recover_on_an_open_connection_stops_where_live_messages_began() {
    let server = start(config());
    let addr = server.local_addr();
    let (ws, hello) = connect(addr, &token("flo"));
    let (_, epoch) = position(&hello);
    drop(ws);
    for i in 1..=3 {
        send(addr, "flo", i);
    }
    let (mut ws, hello) = connect(addr, &token("flo"));
    let (at_open, _) = position(&hello);
    assert_eq!(at_open, 3);
    send(addr, "flo", 4);
    assert_eq!(recv_json(&mut ws)["offset"], 4, "live");
    let channel = "user:flo";
    send_json(
        &mut ws,
        json!({"type": "recover", "data": {"channels": {channel: {"offset": 1, "epoch": epoch, "until": at_open}}}}),
    );
    let ack = recv_json(&mut ws);
    assert_eq!(
        ack["data"]["channels"][channel],
        json!({"recovered": true, "offset": 4, "epoch": epoch})
    );
    assert_eq!(recv_json(&mut ws)["offset"], 2);
    assert_eq!(recv_json(&mut ws)["offset"], 3);
    send(addr, "flo", 5);
    assert_eq!(recv_json(&mut ws)["offset"], 5, "4 is not sent twice");
    // A bad request is refused before the upgrade.
    let bad = format!("/ws?token={}&recover_offset=x&recover_epoch={epoch}", token("flo"));
    assert!(try_connect(addr, &bad, &[]).is_err());
    let half = format!("/ws?token={}&recover_offset=1", token("flo"));
    assert!(try_connect(addr, &half, &[]).is_err());
    // A lost recovery at connect says so and replays nothing.
    let path = format!("/ws?token={}&recover_offset=1&recover_epoch=old", token("flo"));
    let mut ws = try_connect(addr, &path, &[]).unwrap();
    let hello = recv_json(&mut ws);
    assert_eq!(
        hello["data"]["recovery"],
        json!({"recovered": false, "offset": 5, "epoch": epoch})
    );
    send_json(&mut ws, json!({"type": "ping", "data": {}}));
    assert_eq!(recv_json(&mut ws)["type"], "pong");
}

#[test]
fn a_large_recovery_is_paced_under_the_outbound_cap() {
    let server = start(Config {
        max_outbound_bytes: 256 * 1024,
        max_message_size: 64 * 1024,
        admin_max_body: 128 * 1024,
        rate_limit_messages: 0,
        ..config()
    });
    let addr = server.local_addr();
    let (ws, hello) = connect(addr, &token("di"));
    let (_, epoch) = position(&hello);
    drop(ws);
    let blob = "x".repeat(40 * 1024);
    for i in 1..=30u64 {
        let (status, _) = json(
            addr,
            "POST",
            "/ws/users/di/messages",
            Some(&admin()),
            Some(json!({"type": "big", "data": {"i": i, "blob": blob}})),
        );
        assert_eq!(status, 200);
    }
    // 30 x 40 KB = 1.2 MB to replay, 4.7 times the cap: paced, not closed as slow.
    let (mut ws, _) = connect(addr, &token("di"));
    assert_eq!(recover(&mut ws, "di", 0, &epoch)["recovered"], true);
    for i in 1..=30 {
        assert_eq!(recv_json(&mut ws)["data"]["i"], i);
    }
    let (_, _, metrics) = common::http::request(addr, "GET", "/metrics", Some(&admin_token("metrics")), None);
    assert!(metrics.contains("wsedge_slow_consumer_closes_total 0"), "{metrics}");
}

#[test]
fn admin_history_routes_read_and_delete() {
    let server = start(Config { workers: 2, ..config() });
    let addr = server.local_addr();
    let (mut ws, _) = connect(addr, &token("eli"));
    send_json(
        &mut ws,
        json!({"type": "subscribe", "data": {"events": ["review.updated"]}}),
    );
    recv_json(&mut ws);
    for i in 1..=3 {
        let (status, _) = json(
            addr,
            "POST",
            "/ws/events/review.updated",
            Some(&admin()),
            Some(json!({"data": {"i": i}})),
        );
        assert_eq!(status, 200);
        let m = recv_json(&mut ws);
        assert_eq!(
            (m["channel"].as_str(), m["offset"].as_u64()),
            (Some("event:review.updated"), Some(i))
        );
    }
    let (status, body) = json(
        addr,
        "GET",
        "/ws/history/event:review.updated?since=1&limit=1",
        Some(&admin()),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["offset"], 3);
    assert_eq!(body["data"]["position"]["offset"], 3);
    assert_eq!(body["data"]["messages"].as_array().unwrap().len(), 1);
    assert_eq!(body["data"]["messages"][0]["offset"], 2);
    let epoch = body["data"]["epoch"].as_str().unwrap().to_string();
    let (status, body) = json(addr, "DELETE", "/ws/history/event:review.updated", Some(&admin()), None);
    assert_eq!(status, 200);
    assert_eq!(body["data"]["deleted"], true);
    assert_eq!(body["data"]["offset"], 0);
    assert_ne!(body["data"]["epoch"], epoch, "history lost: a new epoch");
    json(
        addr,
        "POST",
        "/ws/events/review.updated",
        Some(&admin()),
        Some(json!({"data": {}})),
    );
    let m = recv_json(&mut ws);
    assert_eq!(m["offset"], 1);
    assert_eq!(m["epoch"], body["data"]["epoch"]);
    for bad in [
        "/ws/history/nope",
        "/ws/history/event:unknown",
        "/ws/history/room:",
        "/ws/history/user:",
    ] {
        assert_eq!(json(addr, "GET", bad, Some(&admin()), None).0, 404, "{bad}");
    }
    assert_eq!(
        json(addr, "GET", "/ws/history/user:eli?limit=0", Some(&admin()), None).0,
        400
    );
    assert_eq!(
        json(addr, "GET", "/ws/history/user:eli", Some(&token("eli")), None).0,
        403
    );
    let off = start(Config {
        history_size: 0,
        ..config()
    });
    let (_, hello) = connect(off.local_addr(), &token("eli"));
    assert!(hello["data"].get("position").is_none(), "no history: no position");
    assert_eq!(
        json(off.local_addr(), "GET", "/ws/history/user:eli", Some(&admin()), None).0,
        404
    );
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

fn publish(addr: std::net::SocketAddr, i: u64) {
    let (status, _) = json(
        addr,
        "POST",
        "/ws/events/review.updated",
        Some(&admin()),
        Some(json!({"data": {"i": i}})),
    );
    assert_eq!(status, 200);
}

#[test]
fn subscribe_says_where_the_channel_stands_and_recovers_what_was_missed() {
    let server = start(Config { workers: 2, ..config() });
    let addr = server.local_addr();
    let (mut ws, _) = connect(addr, &token("gil"));
    let p = subscribe(&mut ws, json!({}));
    assert_eq!(p["channel"], "event:review.updated");
    assert_eq!(p["offset"], 0);
    assert!(p.get("recovered").is_none(), "nothing asked, nothing said: {p}");
    let epoch = p["epoch"].as_str().unwrap().to_string();
    for i in 1..=3 {
        publish(addr, i);
        assert_eq!(recv_json(&mut ws)["offset"], i);
    }
    drop(ws);
    for i in 4..=5 {
        publish(addr, i);
    }
    let (mut ws, _) = connect(addr, &token("gil"));
    let p = subscribe(&mut ws, json!({"review.updated": {"offset": 3, "epoch": epoch}}));
    assert_eq!(
        p,
        json!({"channel": "event:review.updated", "offset": 5, "epoch": epoch, "recovered": true})
    );
    for i in 4..=5 {
        assert_eq!(recv_json(&mut ws)["data"]["i"], i);
    }
    publish(addr, 6);
    assert_eq!(recv_json(&mut ws)["offset"], 6);
    let (mut other, _) = connect(addr, &token("hugo"));
    let p = subscribe(&mut other, json!({"review.updated": {"offset": 3, "epoch": "stale"}}));
    assert_eq!(p["recovered"], false);
    publish(addr, 7);
    assert_eq!(
        recv_json(&mut other)["offset"],
        7,
        "subscribed anyway, nothing replayed"
    );
}

#[test]
fn event_recovery_racing_publishes_has_no_gap_and_no_duplicate() {
    let server = start(Config {
        workers: 2,
        rate_limit_messages: 0,
        ..config()
    });
    let addr = server.local_addr();
    let (mut ws, _) = connect(addr, &token("u0"));
    let epoch = subscribe(&mut ws, json!({}))["epoch"].as_str().unwrap().to_string();
    drop(ws);
    let h = server.handle();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                h.publish("review.updated", json!({"n": n})).unwrap();
            }
        })
    };
    let mut last = 0;
    // Users on either reactor: the channel's home is one of them.
    for round in 0..8 {
        let (mut ws, _) = connect(addr, &token(&format!("u{round}")));
        let p = subscribe(&mut ws, json!({"review.updated": {"offset": last, "epoch": epoch}}));
        assert_eq!(p["recovered"], true, "{p}");
        let until = p["offset"].as_u64().unwrap() + 20;
        while last < until {
            let m = recv_json(&mut ws);
            assert_eq!(m["offset"].as_u64(), Some(last + 1), "round {round}: {m}");
            last += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.join().unwrap();
}

#[test]
fn join_with_recover_replays_the_room_messages_that_were_missed() {
    let server = start(Config { workers: 2, ..config() });
    let addr = server.local_addr();
    let t = sign(json!({"sub": "ivo", "exp": now() + 3600, "rooms": ["lobby", "den"]}));
    let room_msg = |i: u64| {
        let (status, _) = json(
            addr,
            "POST",
            "/ws/rooms/lobby/messages",
            Some(&admin()),
            Some(json!({"data": {"i": i}})),
        );
        assert_eq!(status, 200);
    };
    let (mut ws, _) = connect(addr, &t);
    send_json(&mut ws, json!({"type": "join", "data": {"rooms": ["lobby"]}}));
    assert_eq!(recv_json(&mut ws)["type"], "room.joined");
    room_msg(1);
    let m = recv_json(&mut ws);
    assert_eq!(
        (m["channel"].as_str(), m["offset"].as_u64()),
        (Some("room:lobby"), Some(1))
    );
    let epoch = m["epoch"].as_str().unwrap().to_string();
    drop(ws);
    // The user left with its last connection; the room's channel keeps what is sent meanwhile.
    let (mut other, _) = connect(
        addr,
        &sign(json!({"sub": "joy", "exp": now() + 3600, "rooms": ["lobby"]})),
    );
    send_json(&mut other, json!({"type": "join", "data": {"rooms": ["lobby"]}}));
    recv_json(&mut other);
    for i in 2..=4 {
        room_msg(i);
    }
    let (mut ws, _) = connect(addr, &t);
    send_json(
        &mut ws,
        json!({"type": "join", "data": {"rooms": ["lobby", "den", "vault"], "recover": {"lobby": {"offset": 1, "epoch": epoch}}}}),
    );
    let ack = recv_json(&mut ws);
    assert_eq!(ack["type"], "room.joined", "{ack}");
    assert_eq!(ack["data"]["rooms"], json!(["lobby", "den"]));
    assert_eq!(ack["data"]["refused"][0]["room"], "vault");
    assert_eq!(ack["data"]["memberships"].as_array().unwrap().len(), 2);
    assert_eq!(
        ack["data"]["positions"]["lobby"],
        json!({"channel": "room:lobby", "offset": 4, "epoch": epoch, "recovered": true})
    );
    for i in 2..=4 {
        assert_eq!(recv_json(&mut ws)["data"]["i"], i);
    }
    room_msg(5);
    assert_eq!(recv_json(&mut ws)["offset"], 5);
}

#[test]
fn a_client_asking_for_more_replays_than_it_reads_is_closed_as_a_slow_consumer() {
    let server = start(Config {
        history_size: 50,
        recovery_max: 50,
        max_outbound_bytes: 64 * 1024,
        admin_max_body: 64 * 1024,
        rate_limit_messages: 0,
        ..config()
    });
    let addr = server.local_addr();
    let (mut ws, hello) = connect(addr, &token("kim"));
    let (_, epoch) = position(&hello);
    let blob = "y".repeat(16 * 1024);
    for i in 1..=50u64 {
        let (status, _) = json(
            addr,
            "POST",
            "/ws/users/kim/messages",
            Some(&admin()),
            Some(json!({"type": "big", "data": {"i": i, "blob": blob}})),
        );
        assert_eq!(status, 200);
    }
    // 60 recoveries of 50 x 16 KB, never reading: far more than the socket and queue take.
    let ask = json!({"type": "recover", "data": {"channels": {"user:kim": {"offset": 0, "epoch": epoch}}}});
    for _ in 0..60 {
        ws.send(tungstenite::Message::text(ask.to_string())).unwrap();
    }
    let code = loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(Some(f))) => break u16::from(f.code),
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    };
    assert_eq!(code, 1008);
    let (_, _, metrics) = common::http::request(addr, "GET", "/metrics", Some(&admin_token("metrics")), None);
    assert!(metrics.contains("wsedge_slow_consumer_closes_total 1"), "{metrics}");
}

#[test]
fn deleted_or_expired_history_cannot_be_recovered() {
    let server = start(Config {
        history_ttl: std::time::Duration::from_secs(1),
        ..config()
    });
    let addr = server.local_addr();
    let (mut ws, hello) = connect(addr, &token("lu"));
    let (_, epoch) = position(&hello);
    send(addr, "lu", 1);
    recv_json(&mut ws);
    // Deleted: a new epoch, so the old position is refused.
    let (status, body) = json(addr, "DELETE", "/ws/history/user:lu", Some(&admin()), None);
    assert_eq!((status, body["data"]["deleted"].as_bool()), (200, Some(true)));
    let r = recover(&mut ws, "lu", 0, &epoch);
    assert_eq!(r["recovered"], false);
    assert_ne!(r["epoch"], epoch.as_str());
    let epoch = r["epoch"].as_str().unwrap().to_string();
    send(addr, "lu", 2);
    assert_eq!(recv_json(&mut ws)["offset"], 1, "offsets start again in the new epoch");
    // Expired: once the message is older than the TTL it is gone, and recovery says so.
    wait_until("the kept message expires", || {
        let (_, body) = json(addr, "GET", "/ws/history/user:lu", Some(&admin()), None);
        body["data"]["messages"].as_array().is_some_and(|m| m.is_empty())
    });
    let r = recover(&mut ws, "lu", 0, &epoch);
    assert_eq!(r["recovered"], false, "{r}");
}

#[test]
fn the_byte_budget_bounds_history_and_metrics_show_it() {
    let server = start(Config {
        history_max_bytes: 4096,
        rate_limit_messages: 0,
        ..config()
    });
    let addr = server.local_addr();
    let (mut ws, hello) = connect(addr, &token("mo"));
    let (_, epoch) = position(&hello);
    for i in 1..=60 {
        send(addr, "mo", i);
        recv_json(&mut ws);
    }
    let (_, _, metrics) = common::http::request(addr, "GET", "/metrics", Some(&admin_token("metrics")), None);
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let (bytes, messages) = (value("wsedge_history_bytes "), value("wsedge_history_messages "));
    assert!(
        bytes <= 4096 && messages > 0 && messages < 60,
        "{bytes} B, {messages} messages"
    );
    assert!(
        recover(&mut ws, "mo", 0, &epoch)["recovered"] == false,
        "the oldest were dropped"
    );
    let r = recover(&mut ws, "mo", 60 - messages, &epoch);
    assert_eq!(r["recovered"], true, "what is kept is whole: {r}");
    for i in (61 - messages)..=60 {
        assert_eq!(recv_json(&mut ws)["offset"], i);
    }
    let (_, _, metrics) = common::http::request(addr, "GET", "/metrics", Some(&admin_token("metrics")), None);
    assert!(
        metrics.contains("wsedge_recoveries_total{outcome=\"lost\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wsedge_recoveries_total{outcome=\"recovered\"} 1"),
        "{metrics}"
    );
}

/// `exclude_user` holds in history too: a room message sent with `exclude_user: hank` is not
/// replayed to hank when he recovers (a chat sender does not get their own message back),
/// while others recover it; the offsets stay contiguous.
#[test]
fn a_message_excluding_a_user_is_not_replayed_to_them() {
    let server = start(Config { workers: 2, ..config() });
    let addr = server.local_addr();
    let token_of = |u: &str| sign(json!({"sub": u, "exp": now() + 3600, "rooms": ["lobby"]}));
    let room_msg = |i: u64, exclude: Option<&str>| {
        let mut body = json!({"data": {"i": i}});
        if let Some(u) = exclude {
            body["exclude_user"] = json!(u);
        }
        let (status, _) = json(addr, "POST", "/ws/rooms/lobby/messages", Some(&admin()), Some(body));
        assert_eq!(status, 200);
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
    let (mut hank, _) = connect(addr, &token_of("hank"));
    let (mut joy, _) = connect(addr, &token_of("joy"));
    join(&mut hank, json!({}));
    join(&mut joy, json!({}));
    room_msg(1, None);
    let epoch = recv_json(&mut hank)["epoch"].as_str().unwrap().to_string();
    assert_eq!(recv_json(&mut joy)["data"]["i"], 1);
    drop(hank);
    drop(joy);
    room_msg(2, Some("hank"));
    room_msg(3, None);
    room_msg(4, Some("joy"));
    // hank recovers 3 and 4; then 5 is sent live (to him); joy recovers 2, 3 and 5.
    for (user, top, want) in [("hank", 4, vec![3, 4]), ("joy", 5, vec![2, 3, 5])] {
        let (mut ws, _) = connect(addr, &token_of(user));
        let ack = join(&mut ws, json!({"lobby": {"offset": 1, "epoch": epoch}}));
        assert_eq!(
            ack["data"]["positions"]["lobby"],
            json!({"channel": "room:lobby", "offset": top, "epoch": epoch, "recovered": true}),
            "{user}"
        );
        for i in want {
            assert_eq!(recv_json(&mut ws)["data"]["i"], i, "{user}");
        }
        // Nothing more: the next message is the next live one.
        room_msg(top + 1, None);
        assert_eq!(recv_json(&mut ws)["data"]["i"], top + 1, "{user}");
    }
}

/// A user who has never connected (no epoch to give) gets what was sent while they were away:
/// `recover_offset=0` alone (or `{"offset": 0}` in `recover`) means "everything kept".
#[test]
fn a_first_connect_with_offset_zero_gets_what_was_sent_before() {
    let server = start(config());
    let addr = server.local_addr();
    for i in 1..=3 {
        send(addr, "newbie", i);
    }
    let t = sign(json!({"sub": "newbie", "exp": now() + 3600}));
    let mut ws = try_connect(addr, &format!("/ws?token={t}&recover_offset=0"), &[]).unwrap();
    let hello = recv_json(&mut ws);
    assert_eq!(hello["type"], "connection.established");
    assert_eq!(hello["data"]["recovery"]["recovered"], true, "{hello}");
    assert_eq!(hello["data"]["recovery"]["offset"], 3, "{hello}");
    for i in 1..=3 {
        assert_eq!(recv_json(&mut ws)["data"]["i"], i);
    }
    // On an open connection, the same with the message.
    send_json(
        &mut ws,
        json!({"type": "recover", "data": {"channels": {"user:newbie": {"offset": 0}}}}),
    );
    let ack = recv_json(&mut ws);
    assert_eq!(ack["data"]["channels"]["user:newbie"]["recovered"], true, "{ack}");
    for i in 1..=3 {
        assert_eq!(recv_json(&mut ws)["data"]["i"], i);
    }
    // Any other offset still needs its epoch.
    let err = try_connect(addr, &format!("/ws?token={t}&recover_offset=2"), &[]).unwrap_err();
    assert!(format!("{err:?}").contains("400"), "{err:?}");
}
