//! Rooms: clients join only rooms their token allows (names or `*` patterns; admins any), acks
//! list accepted and refused rooms, room messages reach exactly the members across reactors,
//! the server can add/remove users, and leaving or disconnecting cleans every index.
mod common;
use common::*;
use serde_json::json;

fn room_token(sub: &str, rooms: serde_json::Value) -> String {
    sign(json!({"sub": sub, "exp": now() + 600, "rooms": rooms}))
}

#[test]
fn join_is_authorized_by_the_rooms_claim() {
    let server = start(wsedge::Config { workers: 2, ..config() });
    let addr = server.local_addr();
    let (mut ws, _) = connect(addr, &room_token("alice", json!(["lobby", "team-*"])));
    send_json(
        &mut ws,
        json!({"type": "join", "data": {"rooms": ["lobby", "team-red", "secret", 5, ""]}}),
    );
    let ack = recv_json(&mut ws);
    assert_eq!(ack["type"], "room.joined");
    assert_eq!(ack["data"]["rooms"], json!(["lobby", "team-red"]));
    let refused: Vec<&serde_json::Value> = ack["data"]["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["room"])
        .collect();
    assert_eq!(refused, vec![&json!("secret"), &json!(5), &json!("")]);
    assert_eq!(ack["data"]["refused"][0]["reason"], "not allowed by token");
    assert_eq!(ack["data"]["memberships"], json!(["lobby", "team-red"]));

    // No claim: nothing allowed. Admin: anything.
    let (mut plain, _) = connect(addr, &token("bob"));
    send_json(&mut plain, json!({"type": "join", "data": {"rooms": ["lobby"]}}));
    assert_eq!(recv_json(&mut plain)["data"]["rooms"], json!([]));
    let (mut admin, _) = connect(addr, &admin_token("root"));
    send_json(&mut admin, json!({"type": "join", "data": {"rooms": ["secret"]}}));
    assert_eq!(recv_json(&mut admin)["data"]["rooms"], json!(["secret"]));
    send_json(&mut admin, json!({"type": "join", "data": "lobby"}));
    assert_eq!(recv_json(&mut admin)["data"]["code"], "INVALID_MESSAGE_FORMAT");
}

#[test]
fn room_messages_reach_exactly_the_members_across_reactors() {
    let server = start(wsedge::Config { workers: 2, ..config() });
    let addr = server.local_addr();
    let handle = server.handle();
    let mut members = Vec::new();
    let mut outsiders = Vec::new();
    for i in 0..8 {
        let (mut ws, _) = connect(addr, &room_token(&format!("m{i}"), json!(["*"])));
        if i < 5 {
            send_json(&mut ws, json!({"type": "join", "data": {"rooms": ["general"]}}));
            assert_eq!(recv_json(&mut ws)["data"]["rooms"], json!(["general"]));
            members.push(ws);
        } else {
            outsiders.push(ws);
        }
    }
    assert_eq!(
        handle.send_to_room("general", "chat.message", json!({"text": "hello room"})),
        Ok(5)
    );
    for ws in &mut members {
        let m = recv_json(ws);
        assert_eq!(
            (m["type"].as_str(), m["data"]["text"].as_str()),
            (Some("chat.message"), Some("hello room"))
        );
    }
    for ws in &mut outsiders {
        send_json(ws, json!({"type": "ping"}));
        assert_eq!(recv_json(ws)["type"], "pong");
    }
    // Leave: no longer a recipient.
    send_json(
        &mut members[0],
        json!({"type": "leave", "data": {"rooms": ["general", "never-joined"]}}),
    );
    let left = recv_json(&mut members[0]);
    assert_eq!(left["type"], "room.left");
    assert_eq!(left["data"]["rooms"], json!(["general"]));
    assert_eq!(left["data"]["refused"][0]["reason"], "not a member");
    assert_eq!(handle.send_to_room("general", "chat.message", json!({})), Ok(4));
}

#[test]
fn server_adds_and_removes_users_and_indexes_are_cleaned() {
    let server = start(wsedge::Config { workers: 2, ..config() });
    let addr = server.local_addr();
    let handle = server.handle();
    let t = token("carol");
    let (mut a, _) = connect(addr, &t);
    let (mut b, _) = connect(addr, &t);
    assert_eq!(handle.add_to_room("vip", "carol").unwrap(), Some(2));
    assert_eq!(handle.add_to_room("vip", "nobody").unwrap(), None);
    assert_eq!(
        handle.send_to_room("vip", "vip.news", json!({"n": 1})),
        Ok(2),
        "both of carol's connections"
    );
    // Each connection is told about the server's change first, then gets the room's message.
    for ws in [&mut a, &mut b] {
        let joined = recv_json(ws);
        assert_eq!(joined["type"], "room.joined", "{joined}");
        assert_eq!(joined["data"]["rooms"], json!(["vip"]));
        assert_eq!(joined["data"]["memberships"], json!(["vip"]));
        assert_eq!(joined["data"]["by"], "server");
        assert_eq!(recv_json(ws)["type"], "vip.news");
    }
    assert_eq!(handle.census().unwrap().rooms, 1);
    assert_eq!(
        handle.add_to_room("vip", "carol").unwrap(),
        Some(2),
        "already a member: no news"
    );
    assert_eq!(handle.remove_from_room("vip", "carol").unwrap(), Some(2));
    for ws in [&mut a, &mut b] {
        let left = recv_json(ws);
        assert_eq!(left["type"], "room.left", "{left}");
        assert_eq!(left["data"]["memberships"], json!([]));
    }
    assert_eq!(handle.census().unwrap().rooms, 0, "the room goes with its last member");
    assert_eq!(handle.send_to_room("vip", "vip.news", json!({})), Ok(0));

    // Disconnect cleans rooms too.
    handle.add_to_room("temp", "carol").unwrap();
    assert_eq!(handle.census().unwrap().rooms, 1);
    a.close(None).unwrap();
    b.close(None).unwrap();
    while a.read().is_ok() {}
    while b.read().is_ok() {}
    wait_until("room removed after disconnect", || handle.census().unwrap().rooms == 0);
    assert_eq!(handle.census().unwrap().unique_users, 0);
}

#[test]
fn eviction_keeps_membership_for_the_users_remaining_connections() {
    let server = start(wsedge::Config {
        workers: 2,
        max_connections_per_user: 1,
        ..config()
    });
    let addr = server.local_addr();
    let t = room_token("dave", json!(["r"]));
    let (mut first, _) = connect(addr, &t);
    send_json(&mut first, json!({"type": "join", "data": {"rooms": ["r"]}}));
    recv_json(&mut first);
    let (mut second, _) = connect(addr, &t);
    assert_eq!(expect_close(&mut first).0, 1008);
    // The user still has a connection, so the user stays in the room.
    assert_eq!(server.handle().send_to_room("r", "x", json!({})), Ok(1));
    assert_eq!(recv_json(&mut second)["type"], "x");
}

#[test]
fn a_user_can_join_only_so_many_rooms() {
    let server = start(wsedge::Config {
        max_rooms_per_user: 3,
        ..config()
    });
    let (mut ws, _) = connect(server.local_addr(), &room_token("hoarder", json!(["*"])));
    send_json(
        &mut ws,
        json!({"type": "join", "data": {"rooms": ["a", "b", "c", "d", "a"]}}),
    );
    let ack = recv_json(&mut ws);
    assert_eq!(
        ack["data"]["rooms"],
        json!(["a", "b", "c", "a"]),
        "re-joining a room is not a new room"
    );
    assert_eq!(ack["data"]["refused"][0]["room"], "d");
    assert_eq!(ack["data"]["refused"][0]["reason"], "room limit reached");
    // The server may still add more.
    assert_eq!(server.handle().add_to_room("e", "hoarder").unwrap(), Some(1));
}
