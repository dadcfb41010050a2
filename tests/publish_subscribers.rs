//! Broadcast to subscribers through the library API: only subscribers receive it, counts are
//! exact across two reactors, unknown event types are an error.
mod common;
use common::*;
use serde_json::json;
use wsedge::HandleError;

#[test]
fn publish_reaches_exactly_the_subscribers() {
    let server = start(wsedge::Config { workers: 2, ..config() });
    let addr = server.local_addr();
    let handle = server.handle();
    let mut subscribers = Vec::new();
    let mut others = Vec::new();
    for i in 0..10 {
        let (mut ws, _) = connect(addr, &token(&format!("u{i}")));
        if i % 2 == 0 {
            send_json(
                &mut ws,
                json!({"type": "subscribe", "data": {"events": ["review.updated"]}}),
            );
            assert_eq!(recv_json(&mut ws)["type"], "subscription.acknowledged");
            subscribers.push(ws);
        } else {
            send_json(
                &mut ws,
                json!({"type": "subscribe", "data": {"events": ["file.ready"]}}),
            );
            recv_json(&mut ws);
            others.push(ws);
        }
    }
    let n = handle
        .publish(
            "review.updated",
            json!({"review_id": "r1", "changes": {"status": "approved"}}),
        )
        .unwrap();
    assert_eq!(n, 5);
    for ws in &mut subscribers {
        let m = recv_json(ws);
        assert_eq!(m["type"], "review.updated");
        assert_eq!(m["data"]["review_id"], "r1");
        assert!(uuid::Uuid::parse_str(m["id"].as_str().unwrap()).is_ok());
    }
    for ws in &mut others {
        send_json(ws, json!({"type": "ping", "data": {"pingId": "p"}}));
        assert_eq!(
            recv_json(ws)["type"],
            "pong",
            "non-subscribers got nothing before their pong"
        );
    }
    assert_eq!(
        handle.publish("nope.event", json!({})),
        Err(HandleError::UnknownEvent("nope.event".into()))
    );
    assert_eq!(
        handle.send_to_user("u3", "system.notification", json!({"message": "hi"})),
        Ok(1)
    );
    let m = recv_json(&mut others[1]);
    assert_eq!(
        (m["type"].as_str(), m["data"]["message"].as_str()),
        (Some("system.notification"), Some("hi"))
    );
    assert_eq!(handle.broadcast("system.maintenance", json!({"in": 5})), Ok(10));
    assert!(handle.stats().fanout_deliveries >= 16);
}

#[test]
fn connection_info_and_census_through_the_handle() {
    let server = start(wsedge::Config { workers: 2, ..config() });
    let addr = server.local_addr();
    let t = sign(json!({"sub": "info-user", "email": "i@example.com", "name": "Info", "exp": now() + 60}));
    let (mut a, hello) = connect(addr, &t);
    let (_b, _) = connect(addr, &t);
    let (_c, _) = connect(addr, &token("loner"));
    send_json(&mut a, json!({"type": "subscribe", "data": {"events": ["file.ready"]}}));
    recv_json(&mut a);
    let id = uuid::Uuid::parse_str(hello["data"]["connection_id"].as_str().unwrap()).unwrap();
    let info = server.handle().connection_info(id).unwrap().expect("known connection");
    assert_eq!(info.user_id.as_deref(), Some("info-user"));
    assert_eq!(info.email.as_deref(), Some("i@example.com"));
    assert_eq!(info.name.as_deref(), Some("Info"));
    assert_eq!(info.subscriptions, vec!["file.ready".to_string()]);
    assert_eq!(info.message_count, 1);
    assert!(info.peer_address.unwrap().starts_with("127.0.0.1:"));
    assert!(server.handle().connection_info(uuid::Uuid::new_v4()).unwrap().is_none());
    let census = server.handle().census().unwrap();
    assert_eq!(
        (census.connections, census.unique_users, census.max_connections_per_user),
        (3, 2, 2)
    );
    assert_eq!(census.histogram, vec![0, 1, 1]);
}

#[test]
fn send_to_one_connection_by_id() {
    let server = start(wsedge::Config { workers: 2, ..config() });
    let addr = server.local_addr();
    let t = token("same-user");
    let (mut a, hello) = connect(addr, &t);
    let (mut b, _) = connect(addr, &t);
    let id = uuid::Uuid::parse_str(hello["data"]["connection_id"].as_str().unwrap()).unwrap();
    let d = server
        .handle()
        .send_envelope(wsedge::Target::Connection(id), "direct", json!({"only": "a"}))
        .expect("a node alone always delivers");
    assert_eq!(d.nodes_reached, 1);
    assert_eq!(d.recipients, 1);
    let m = recv_json(&mut a);
    assert_eq!(
        (m["type"].as_str(), m["id"].as_str()),
        (Some("direct"), Some(d.message_id.to_string().as_str()))
    );
    send_json(&mut b, json!({"type": "ping"}));
    assert_eq!(
        recv_json(&mut b)["type"],
        "pong",
        "the other connection of the same user got nothing"
    );
    let unknown = wsedge::Target::Connection(uuid::Uuid::new_v4());
    assert_eq!(
        server
            .handle()
            .send_envelope(unknown, "direct", json!({}))
            .unwrap()
            .recipients,
        0
    );
}

/// The subscriber index follows subscribe, unsubscribe and disconnect exactly.
#[test]
fn publish_counts_follow_unsubscribe_and_disconnect() {
    let server = start(config());
    let addr = server.local_addr();
    let handle = server.handle();
    let mut clients: Vec<Ws> = (0..6)
        .map(|i| {
            let (mut ws, _) = connect(addr, &token(&format!("s{i}")));
            send_json(
                &mut ws,
                json!({"type": "subscribe", "data": {"events": ["file.ready", "review.created"]}}),
            );
            assert_eq!(recv_json(&mut ws)["type"], "subscription.acknowledged");
            ws
        })
        .collect();
    assert_eq!(handle.publish("file.ready", json!({})).unwrap(), 6);
    send_json(
        &mut clients[0],
        json!({"type": "unsubscribe", "data": {"events": ["file.ready"]}}),
    );
    assert_eq!(recv_json(&mut clients[0])["type"], "file.ready");
    assert_eq!(recv_json(&mut clients[0])["type"], "subscription.acknowledged");
    assert_eq!(handle.publish("file.ready", json!({})).unwrap(), 5);
    assert_eq!(handle.publish("review.created", json!({})).unwrap(), 6);
    let mut gone = clients.pop().unwrap();
    gone.close(None).unwrap();
    wait_until("the closed subscriber is dropped", || {
        handle.publish("review.created", json!({})).unwrap() == 5
    });
    assert_eq!(handle.publish("file.ready", json!({})).unwrap(), 4);
}
