//! The admin HTTP API: every route, its status codes, admin authorization (401/403), bodies
//! (400/413), unknown paths (404) and wrong methods (405); on the main listener and on
//! `admin_listen`.
mod common;
use common::http::{json, request};
use common::*;
use serde_json::json;

fn admin() -> String {
    admin_token("root")
}

#[test]
fn authorization_401_and_403() {
    let server = start(config());
    let addr = server.local_addr();
    let (status, head, _) = request(addr, "GET", "/ws/stats", None, None);
    assert_eq!(status, 401);
    assert!(head.contains("WWW-Authenticate: Bearer"), "{head}");
    assert_eq!(json(addr, "GET", "/ws/stats", Some("garbage"), None).0, 401);
    let expired = sign(json!({"sub": "root", "role": "admin", "exp": now() - 100}));
    assert_eq!(json(addr, "GET", "/ws/stats", Some(&expired), None).0, 401);
    let (status, body) = json(addr, "GET", "/ws/stats", Some(&token("user")), None);
    assert_eq!(status, 403);
    assert_eq!(body["detail"], "Admin access required");
    assert_eq!(json(addr, "GET", "/ws/stats", Some(&admin()), None).0, 200);
}

#[test]
fn health_ready_404_405() {
    let server = start(config());
    let addr = server.local_addr();
    assert_eq!(json(addr, "GET", "/health", None, None), (200, json!({"status": "ok"})));
    assert_eq!(
        json(addr, "GET", "/ready", None, None),
        (200, json!({"status": "ready"}))
    );
    assert_eq!(json(addr, "GET", "/nope", Some(&admin()), None).0, 404);
    assert_eq!(
        json(addr, "GET", "/ws/nothing/here/at/all", Some(&admin()), None).0,
        404
    );
    let (status, head, _) = request(addr, "POST", "/ws/stats", Some(&admin()), Some("{}"));
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET"), "{head}");
    assert_eq!(json(addr, "GET", "/ws/broadcast", Some(&admin()), None).0, 405);
    assert_eq!(json(addr, "POST", "/health", None, None).0, 405);
}

#[test]
fn stats_has_the_seed_shape() {
    let server = start(wsedge::Config { workers: 2, ..config() });
    let addr = server.local_addr();
    let _a = connect(addr, &token("a"));
    let _a2 = connect(addr, &token("a"));
    let _b = connect(addr, &token("b"));
    let (status, body) = json(addr, "GET", "/ws/stats", Some(&admin()), None);
    assert_eq!(status, 200);
    assert_eq!(body["status"], "success");
    let d = &body["data"];
    assert_eq!(d["total_connections"], 3);
    assert_eq!(d["unique_users"], 2);
    assert_eq!(d["average_connections_per_user"], 1.5);
    assert_eq!(d["connections_per_user"]["max"], 2);
    assert_eq!(d["server_info"]["max_connections_per_user"], 3);
    assert_eq!(d["server_info"]["max_total_connections"], 1000);
    assert_eq!(d["server_info"]["rate_limit_messages"], 100);
    assert_eq!(d["server_info"]["heartbeat_interval"], 30.0);
    assert_eq!(d["server_info"]["connection_timeout"], 60.0);
}

#[test]
fn connection_info_and_disconnects() {
    let server = start(wsedge::Config { workers: 2, ..config() });
    let addr = server.local_addr();
    let t = sign(json!({"sub": "info", "email": "i@x", "exp": now() + 60}));
    let (mut ws, hello) = connect(addr, &t);
    let id = hello["data"]["connection_id"].as_str().unwrap().to_string();
    let (status, body) = json(addr, "GET", &format!("/ws/connections/{id}"), Some(&admin()), None);
    assert_eq!(status, 200);
    assert_eq!(body["data"]["connection_id"], id);
    assert_eq!(body["data"]["user_id"], "info");
    assert_eq!(body["data"]["email"], "i@x");
    assert!(body["data"]["peer_address"].as_str().unwrap().starts_with("127.0.0.1:"));
    // RFC 3339 UTC, like every other time: 2026-11-29T20:00:00.000000Z.
    let at = body["data"]["connected_at"].as_str().expect("a string");
    assert!(at.len() == 27 && at.ends_with('Z') && at.as_bytes()[10] == b'T', "{at}");
    for field in ["last_activity", "last_heartbeat"] {
        let t = body["data"][field].as_str().expect("a string");
        assert!(
            t.len() == 27 && t.ends_with('Z') && t[..16] >= at[..16],
            "{field} {t} vs {at}"
        );
    }
    assert!(body["data"]["rooms"].is_array() && body["data"]["queued_bytes"].is_number());
    assert_eq!(
        json(addr, "GET", "/ws/connections/not-a-uuid", Some(&admin()), None).0,
        400
    );
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(
        json(addr, "GET", &format!("/ws/connections/{unknown}"), Some(&admin()), None).0,
        404
    );
    assert_eq!(
        json(
            addr,
            "DELETE",
            &format!("/ws/connections/{unknown}"),
            Some(&admin()),
            None
        )
        .0,
        404
    );
    let (status, _) = json(addr, "DELETE", &format!("/ws/connections/{id}"), Some(&admin()), None);
    assert_eq!(status, 200);
    assert_eq!(expect_close(&mut ws), (1000, "disconnected by admin".to_string()));

    let (mut u1, _) = connect(addr, &token("kick"));
    let (mut u2, _) = connect(addr, &token("kick"));
    let (status, body) = json(addr, "DELETE", "/ws/users/kick", Some(&admin()), None);
    assert_eq!((status, &body["data"]["disconnected"]), (200, &json!(2)));
    assert_eq!(expect_close(&mut u1).0, 1000);
    assert_eq!(expect_close(&mut u2).0, 1000);
    assert_eq!(json(addr, "DELETE", "/ws/users/nobody", Some(&admin()), None).0, 404);
}

#[test]
fn broadcast_user_event_and_room_messages() {
    let server = start(wsedge::Config { workers: 2, ..config() });
    let addr = server.local_addr();
    let (mut a, _) = connect(addr, &token("alice"));
    let (mut b, _) = connect(addr, &token("bob"));

    let (status, body) = json(
        addr,
        "POST",
        "/ws/broadcast",
        Some(&admin()),
        Some(json!({"type": "announcement", "data": {"text": "hi"}})),
    );
    assert_eq!(status, 200);
    assert_eq!(body["data"]["connections_reached"], 2);
    assert_eq!(body["data"]["message_sent"], true);
    let message_id = body["data"]["message_id"].as_str().unwrap().to_string();
    for ws in [&mut a, &mut b] {
        let m = recv_json(ws);
        assert_eq!(m["type"], "announcement");
        assert_eq!(m["source"], "admin_broadcast");
        assert_eq!(m["id"], message_id.as_str());
        assert!(m["timestamp"].is_string());
    }

    let (status, body) = json(
        addr,
        "POST",
        "/ws/users/alice/messages",
        Some(&admin()),
        Some(json!({"type": "dm", "data": {"x": 1}})),
    );
    assert_eq!((status, body["data"]["connections_reached"].as_u64()), (200, Some(1)));
    assert_eq!(recv_json(&mut a)["type"], "dm");
    assert_eq!(
        json(
            addr,
            "POST",
            "/ws/users/alice/messages",
            Some(&admin()),
            Some(json!({"data": {}}))
        )
        .0,
        400
    );

    send_json(&mut b, json!({"type": "subscribe", "data": {"events": ["file.ready"]}}));
    recv_json(&mut b);
    let (status, body) = json(
        addr,
        "POST",
        "/ws/events/file.ready",
        Some(&admin()),
        Some(json!({"data": {"file_id": "f"}})),
    );
    assert_eq!((status, body["data"]["connections_reached"].as_u64()), (200, Some(1)));
    let m = recv_json(&mut b);
    assert_eq!(
        (m["type"].as_str(), m["data"]["file_id"].as_str()),
        (Some("file.ready"), Some("f"))
    );
    assert_eq!(
        json(
            addr,
            "POST",
            "/ws/events/no.such.event",
            Some(&admin()),
            Some(json!({}))
        )
        .0,
        404
    );

    let (status, _) = json(addr, "PUT", "/ws/rooms/ops/members/alice", Some(&admin()), None);
    assert_eq!(status, 200);
    assert_eq!(recv_json(&mut a)["type"], "room.joined", "alice is told");
    assert_eq!(
        json(addr, "PUT", "/ws/rooms/ops/members/ghost", Some(&admin()), None).0,
        404
    );
    let (status, body) = json(
        addr,
        "POST",
        "/ws/rooms/ops/messages",
        Some(&admin()),
        Some(json!({"data": {"alert": true}})),
    );
    assert_eq!((status, body["data"]["connections_reached"].as_u64()), (200, Some(1)));
    let m = recv_json(&mut a);
    assert_eq!(
        (m["type"].as_str(), m["data"]["alert"].as_bool()),
        (Some("room.message"), Some(true))
    );
    assert_eq!(
        json(addr, "DELETE", "/ws/rooms/ops/members/alice", Some(&admin()), None).0,
        200
    );
    let (_, body) = json(
        addr,
        "POST",
        "/ws/rooms/ops/messages",
        Some(&admin()),
        Some(json!({"type": "x"})),
    );
    assert_eq!(body["data"]["connections_reached"], 0);
}

#[test]
fn bad_bodies_400_and_413() {
    let server = start(wsedge::Config {
        admin_max_body: 1024,
        ..config()
    });
    let addr = server.local_addr();
    let (status, _, _) = request(addr, "POST", "/ws/broadcast", Some(&admin()), Some("{not json"));
    assert_eq!(status, 400);
    let (status, _, _) = request(addr, "POST", "/ws/broadcast", Some(&admin()), Some("[1,2]"));
    assert_eq!(status, 400);
    let big = format!("{{\"type\":\"x\",\"data\":\"{}\"}}", "a".repeat(2000));
    let (status, _, _) = request(addr, "POST", "/ws/broadcast", Some(&admin()), Some(&big));
    assert_eq!(status, 413);
}

#[test]
fn separate_admin_listener_serves_the_same_api() {
    let server = start(wsedge::Config {
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..config()
    });
    let admin_addr = server.admin_addr().expect("admin listener");
    assert_ne!(admin_addr, server.local_addr());
    let _c = connect(server.local_addr(), &token("x"));
    let (status, body) = json(admin_addr, "GET", "/ws/stats", Some(&admin()), None);
    assert_eq!((status, body["data"]["total_connections"].as_u64()), (200, Some(1)));
    assert_eq!(json(admin_addr, "GET", "/health", None, None).0, 200);
    assert_eq!(json(admin_addr, "GET", "/ws/stats", None, None).0, 401);
}

#[test]
fn event_helper_endpoints() {
    let server = start(wsedge::Config { workers: 2, ..config() });
    let addr = server.local_addr();
    let (mut u, _) = connect(addr, &token("uploader"));
    let (mut other, _) = connect(addr, &token("other"));
    let post = |path: &str, body: serde_json::Value| json(addr, "POST", path, Some(&admin()), Some(body));
    assert_eq!(
        post(
            "/ws/helpers/upload-progress",
            json!({"user_id": "uploader", "upload_id": "up1", "progress": 45})
        )
        .0,
        200
    );
    let m = recv_json(&mut u);
    assert_eq!(
        (
            m["type"].as_str(),
            m["data"]["progress"].as_u64(),
            m["data"]["upload_id"].as_str()
        ),
        (Some("upload.progress"), Some(45), Some("up1"))
    );
    assert!(m["data"]["timestamp"].is_string());
    // The byte counts travel with it when given, and bad ones are refused.
    let body =
        json!({"user_id": "uploader", "upload_id": "up1", "progress": 50, "bytes_uploaded": 512, "total_bytes": 1024});
    assert_eq!(post("/ws/helpers/upload-progress", body).0, 200);
    let m = recv_json(&mut u);
    assert_eq!(
        (m["data"]["bytes_uploaded"].clone(), m["data"]["total_bytes"].clone()),
        (json!(512), json!(1024))
    );
    let body = json!({"user_id": "uploader", "upload_id": "up1", "progress": 50, "total_bytes": -1});
    assert_eq!(post("/ws/helpers/upload-progress", body).0, 400);
    post(
        "/ws/helpers/upload-completed",
        json!({"user_id": "uploader", "upload_id": "up1", "result": {"ok": true}}),
    );
    assert_eq!(recv_json(&mut u)["data"]["result"]["ok"], true);
    post(
        "/ws/helpers/upload-error",
        json!({"user_id": "uploader", "upload_id": "up1", "error": "disk full"}),
    );
    assert_eq!(recv_json(&mut u)["data"]["error"], "disk full");
    post(
        "/ws/helpers/file-status",
        json!({"user_id": "uploader", "file_id": "f1", "status": "processing", "progress": 10}),
    );
    assert_eq!(recv_json(&mut u)["type"], "file.processing");
    post(
        "/ws/helpers/file-status",
        json!({"user_id": "uploader", "file_id": "f1", "status": "done"}),
    );
    assert_eq!(recv_json(&mut u)["type"], "file.ready");
    let (_, body) = post(
        "/ws/helpers/system-notification",
        json!({"message": "maintenance", "level": "warning"}),
    );
    assert_eq!(body["data"]["connections_reached"], 2);
    assert_eq!(recv_json(&mut u)["data"]["level"], "warning");
    assert_eq!(recv_json(&mut other)["data"]["message"], "maintenance");
    let (_, body) = post(
        "/ws/helpers/system-notification",
        json!({"message": "just you", "target_users": ["other"]}),
    );
    assert_eq!(body["data"]["connections_reached"], 1);
    assert_eq!(recv_json(&mut other)["data"]["message"], "just you");
    let (_, body) = post(
        "/ws/helpers/review-updated",
        json!({"review_id": "r1", "changes": {"s": 1}, "target_users": ["uploader"]}),
    );
    assert_eq!(body["data"]["connections_reached"], 1);
    assert_eq!(recv_json(&mut u)["type"], "review.updated");
    assert_eq!(
        post(
            "/ws/helpers/upload-progress",
            json!({"user_id": "uploader", "upload_id": "x", "progress": 500})
        )
        .0,
        400
    );
    assert_eq!(post("/ws/helpers/unknown-helper", json!({})).0, 404);
}

/// `exclude_user` on a broadcast or a room message skips that user's connections (a chat does
/// not echo to its sender), is not part of the message, and must be a string.
#[test]
fn broadcasts_and_room_messages_can_exclude_a_user() {
    let server = start(config());
    let addr = server.local_addr();
    let admin = admin_token("ops");
    let (mut sender, _) = connect(addr, &admin_token("sender"));
    let (mut sender2, _) = connect(addr, &admin_token("sender"));
    let (mut other, _) = connect(addr, &admin_token("other"));
    for ws in [&mut sender, &mut sender2, &mut other] {
        send_json(ws, serde_json::json!({"type": "join", "data": {"rooms": ["chat"]}}));
        assert_eq!(recv_json(ws)["type"], "room.joined");
    }
    let (status, body) = json(
        addr,
        "POST",
        "/ws/rooms/chat/messages",
        Some(&admin),
        Some(serde_json::json!({"type": "chat", "data": {"text": "hi"}, "exclude_user": "sender"})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["connections_reached"], 1, "{body}");
    assert_eq!(recv_json(&mut other)["data"]["text"], "hi");
    let (status, body) = json(
        addr,
        "POST",
        "/ws/broadcast",
        Some(&admin),
        Some(serde_json::json!({"type": "note", "n": 2, "exclude_user": "sender"})),
    );
    assert_eq!(
        (status, &body["data"]["connections_reached"]),
        (200, &serde_json::json!(1))
    );
    let got = recv_json(&mut other);
    assert_eq!(got["n"], 2);
    assert!(got.get("exclude_user").is_none(), "{got}");
    // The excluded user's connections got neither: the next thing they see is this ping's pong.
    for ws in [&mut sender, &mut sender2] {
        send_json(ws, serde_json::json!({"type": "ping", "data": {"pingId": 9}}));
        assert_eq!(recv_json(ws)["type"], "pong");
    }
    let (status, _) = json(
        addr,
        "POST",
        "/ws/broadcast",
        Some(&admin),
        Some(serde_json::json!({"type": "note", "exclude_user": 5})),
    );
    assert_eq!(status, 400);
}

/// `GET /ws/connections` pages through every open connection exactly once (across reactors),
/// filters by user, and refuses bad paging parameters.
#[test]
fn connections_are_listed_in_pages_and_by_user() {
    let server = start(wsedge::Config { workers: 2, ..config() });
    let addr = server.local_addr();
    let admin = admin_token("ops");
    let mut ids = std::collections::BTreeSet::new();
    let mut clients = Vec::new();
    for i in 0..7 {
        let (ws, hello) = connect(addr, &token(&format!("u{i}")));
        ids.insert(hello["data"]["connection_id"].as_str().unwrap().to_string());
        clients.push(ws);
    }
    let (ws, hello) = connect(addr, &token("u0"));
    ids.insert(hello["data"]["connection_id"].as_str().unwrap().to_string());
    clients.push(ws);
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let path = format!("/ws/connections?limit=3{after}");
        let (status, body) = json(addr, "GET", &path, Some(&admin), None);
        assert_eq!(status, 200, "{body}");
        for c in body["data"]["connections"].as_array().unwrap() {
            seen.push(c["connection_id"].as_str().unwrap().to_string());
        }
        match body["data"]["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    let unique: std::collections::BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), unique.len(), "no connection twice: {seen:?}");
    assert_eq!(unique, ids);
    let (_, body) = json(addr, "GET", "/ws/connections?user_id=u0", Some(&admin), None);
    let mine = body["data"]["connections"].as_array().unwrap();
    assert_eq!(mine.len(), 2);
    assert!(mine.iter().all(|c| c["user_id"] == "u0"));
    for bad in ["limit=0", "limit=1001", "limit=x", "after=nope"] {
        let (status, _) = json(addr, "GET", &format!("/ws/connections?{bad}"), Some(&admin), None);
        assert_eq!(status, 400, "{bad}");
    }
    assert_eq!(json(addr, "GET", "/ws/connections", None, None).0, 401);
}

/// Presence and room membership answer over every reactor.
#[test]
fn presence_and_room_members() {
    let server = start(wsedge::Config {
        workers: 2,
        node_id: "edge-1".into(),
        ..config()
    });
    let addr = server.local_addr();
    let (_a1, hello) = connect(addr, &admin_token("ann"));
    let (_a2, _) = connect(addr, &admin_token("ann"));
    let mut members = Vec::new();
    for user in ["bob", "cy", "dee"] {
        let (mut ws, _) = connect(addr, &admin_token(user));
        send_json(&mut ws, json!({"type": "join", "data": {"rooms": ["ops"]}}));
        assert_eq!(recv_json(&mut ws)["type"], "room.joined");
        members.push(ws);
    }
    let (status, body) = json(addr, "GET", "/ws/users/ann/presence", Some(&admin()), None);
    assert_eq!(status, 200);
    let p = &body["data"];
    assert_eq!(p["online"], true);
    let conns = p["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 2);
    assert!(conns.iter().all(|c| c["node_id"] == "edge-1"));
    assert!(
        conns
            .iter()
            .any(|c| c["connection_id"] == hello["data"]["connection_id"]),
        "{body}"
    );
    let (_, body) = json(addr, "GET", "/ws/users/nobody/presence", Some(&admin()), None);
    assert_eq!(
        body["data"],
        json!({"user_id": "nobody", "online": false, "connections": []})
    );

    let (status, body) = json(addr, "GET", "/ws/rooms/ops/members", Some(&admin()), None);
    assert_eq!(status, 200);
    assert_eq!(
        body["data"],
        json!({"room": "ops", "members": ["bob", "cy", "dee"], "count": 3})
    );
    drop(members.remove(1));
    wait_until("cy left with its connection", || {
        json(addr, "GET", "/ws/rooms/ops/members", Some(&admin()), None).1["data"]["members"] == json!(["bob", "dee"])
    });
    assert_eq!(
        json(addr, "GET", "/ws/rooms/empty/members", Some(&admin()), None).1["data"]["count"],
        0
    );
    assert_eq!(json(addr, "GET", "/ws/rooms/ops/members", None, None).0, 401);
    assert_eq!(
        json(addr, "POST", "/ws/users/ann/presence", Some(&admin()), None).0,
        405
    );
    let (_, stats) = json(addr, "GET", "/ws/stats", Some(&admin()), None);
    assert_eq!(stats["data"]["server_info"]["node_id"], "edge-1");
}

#[test]
fn an_admin_prefix_serves_the_admin_api_under_the_applications_path() {
    let mut c = config();
    c.admin_prefix = Some("/api/v1".into());
    let server = start(c);
    let addr = server.local_addr();
    let admin = admin_token("root");
    let (status, body) = http::json(addr, "GET", "/api/v1/ws/stats", Some(&admin), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(http::json(addr, "GET", "/api/v1/ws/stats", None, None).0, 401);
    assert_eq!(http::json(addr, "GET", "/api/v1/health", None, None).0, 200);
    assert_eq!(http::json(addr, "GET", "/ws/stats", Some(&admin), None).0, 200);
    assert_eq!(http::json(addr, "GET", "/api/v1x/ws/stats", Some(&admin), None).0, 404);
    assert_eq!(http::json(addr, "GET", "/api/v2/ws/stats", Some(&admin), None).0, 404);
    let body = json!({"type": "system.notification", "data": {"n": 1}});
    assert_eq!(
        http::json(addr, "POST", "/api/v1/ws/broadcast", Some(&admin), Some(body)).0,
        200
    );
    let mut bad = config();
    bad.admin_prefix = Some("api/".into());
    assert!(wsedge::Server::start(bad, wsedge::app::ProtocolApp::default()).is_err());
}

#[test]
fn health_has_counts_for_admins_and_the_admin_port() {
    let mut c = config();
    c.max_connections_per_user = 5;
    let server = start(c);
    let addr = server.local_addr();
    let admin = admin_token("root");
    let (mut a1, _) = connect(addr, &token("amy"));
    let (a2, _) = connect(addr, &token("amy"));
    let (b, _) = connect(addr, &token("bob"));
    send_json(
        &mut a1,
        json!({"type": "subscribe", "data": {"events": ["file.ready", "review.updated"]}}),
    );
    next_of(&mut a1, "subscription.acknowledged");
    let (status, h) = json(addr, "GET", "/health", Some(&admin), None);
    assert_eq!(status, 200);
    assert_eq!(
        (h["connections"].clone(), h["users"].clone(), h["subscriptions"].clone()),
        (json!(3), json!(2), json!(2)),
        "{h}"
    );
    assert!(
        h["uptime_seconds"].as_u64().is_some() && h["node_id"].is_string(),
        "{h}"
    );
    // Without the admin token, the public port says only that it is alive.
    assert_eq!(json(addr, "GET", "/health", None, None), (200, json!({"status": "ok"})));
    let (_, stats) = json(addr, "GET", "/ws/stats", Some(&admin), None);
    assert_eq!(stats["data"]["active_users"], 2, "{stats}");
    drop((a1, a2, b));
    wait_until("the counts come back to zero", || {
        let (_, h) = json(addr, "GET", "/health", Some(&admin), None);
        h["connections"] == 0 && h["users"] == 0 && h["subscriptions"] == 0
    });
}

#[test]
fn a_users_view_adds_up_its_connections() {
    let mut c = config();
    c.max_connections_per_user = 5;
    let server = start(c);
    let addr = server.local_addr();
    let admin = admin_token("root");
    let t = sign(json!({"sub": "vic", "exp": now() + 600, "rooms": ["r1"]}));
    let (mut a, _) = connect(addr, &t);
    let (mut b, _) = connect(addr, &t);
    send_json(&mut a, json!({"type": "subscribe", "data": {"events": ["file.ready"]}}));
    next_of(&mut a, "subscription.acknowledged");
    send_json(&mut b, json!({"type": "join", "data": {"rooms": ["r1"]}}));
    next_of(&mut b, "room.joined");
    let (status, v) = json(addr, "GET", "/ws/users/vic", Some(&admin), None);
    assert_eq!(status, 200, "{v}");
    let d = &v["data"];
    assert_eq!(
        (d["online"].clone(), d["connection_count"].clone()),
        (json!(true), json!(2)),
        "{v}"
    );
    assert_eq!(
        (d["rooms"].clone(), d["subscriptions"].clone()),
        (json!(["r1"]), json!(["file.ready"]))
    );
    assert_eq!(d["message_count"], 2);
    assert_eq!(d["connections"].as_array().unwrap().len(), 2);
    assert!(d["last_activity"].is_string());
    let (_, v) = json(addr, "GET", "/ws/users/nobody", Some(&admin), None);
    assert_eq!(
        (v["data"]["online"].clone(), v["data"]["connection_count"].clone()),
        (json!(false), json!(0))
    );
    assert_eq!(json(addr, "GET", "/ws/users/vic", None, None).0, 401);
}
