//! The seed's client messages: ping/pong, heartbeat, subscribe/unsubscribe acks, upload.cancel,
//! and the validation errors (INVALID_MESSAGE_FORMAT, INVALID_MESSAGE_TYPE).
mod common;
use common::*;
use serde_json::json;
use tungstenite::Message;

#[test]
fn ping_is_answered_with_pong_echoing_ping_id() {
    let server = start(config());
    let (mut ws, _) = connect(server.local_addr(), &token("u"));
    send_json(
        &mut ws,
        json!({"type": "ping", "data": {"pingId": "abc-1"}, "timestamp": "2025-01-08T10:30:00Z", "id": "m1"}),
    );
    let pong = recv_json(&mut ws);
    assert_eq!(pong["type"], "pong");
    assert_eq!(pong["data"]["pingId"], "abc-1");
    assert!(pong["data"]["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(uuid::Uuid::parse_str(pong["id"].as_str().unwrap()).is_ok());
    // No data at all still gets a pong.
    send_json(&mut ws, json!({"type": "ping"}));
    assert_eq!(recv_json(&mut ws)["type"], "pong");
}

#[test]
fn heartbeat_is_silent() {
    let server = start(config());
    let (mut ws, _) = connect(server.local_addr(), &token("u"));
    send_json(&mut ws, json!({"type": "heartbeat", "data": {}}));
    send_json(&mut ws, json!({"type": "ping", "data": {"pingId": "next"}}));
    let next = recv_json(&mut ws);
    assert_eq!(next["type"], "pong", "heartbeat must not produce a reply: {next}");
}

#[test]
fn subscribe_and_unsubscribe_are_acknowledged() {
    let server = start(config());
    let (mut ws, _) = connect(server.local_addr(), &token("u"));
    send_json(
        &mut ws,
        json!({"type": "subscribe", "data": {"events": ["upload.progress", "bogus.event", 42, "file.ready"]}}),
    );
    let ack = recv_json(&mut ws);
    assert_eq!(ack["type"], "subscription.acknowledged");
    assert_eq!(ack["data"]["events"], json!(["upload.progress", "file.ready"]));
    assert_eq!(ack["data"]["invalid_events"], json!(["bogus.event", 42]));
    assert_eq!(ack["data"]["action"], "subscribe");
    // Then the failure itself, as an error naming what was left out.
    let err = recv_json(&mut ws);
    assert_eq!(err["data"]["code"], "SUBSCRIPTION_FAILED");
    assert_eq!(
        err["data"]["message"],
        r#"Invalid subscription events: "bogus.event", 42"#
    );
    send_json(
        &mut ws,
        json!({"type": "unsubscribe", "data": {"events": ["upload.progress"]}}),
    );
    let ack = recv_json(&mut ws);
    assert_eq!(ack["type"], "subscription.acknowledged");
    assert_eq!(ack["data"]["action"], "unsubscribe");
    assert_eq!(ack["data"]["events"], json!(["upload.progress"]));
    assert_eq!(ack["data"]["subscriptions"], json!(["file.ready"]));
    send_json(
        &mut ws,
        json!({"type": "subscribe", "data": {"events": "upload.progress"}}),
    );
    let err = recv_json(&mut ws);
    assert_eq!(err["data"]["code"], "INVALID_MESSAGE_FORMAT");
}

#[test]
fn upload_cancel_is_validated_and_counted() {
    let server = start(config());
    let (mut ws, _) = connect(server.local_addr(), &token("u"));
    send_json(
        &mut ws,
        json!({"type": "upload.cancel", "data": {"upload_id": "upload_456"}}),
    );
    wait_until("upload.cancel counted", || server.handle().stats().upload_cancels == 1);
    send_json(&mut ws, json!({"type": "upload.cancel", "data": {}}));
    let err = recv_json(&mut ws);
    assert_eq!(err["type"], "error");
    assert_eq!(err["data"]["code"], "INVALID_MESSAGE_FORMAT");
    assert_eq!(server.handle().stats().upload_cancels, 1);
}

#[test]
fn malformed_messages_get_the_seed_error_envelope() {
    let server = start(config());
    let (mut ws, _) = connect(server.local_addr(), &token("u"));
    for bad in ["not json", "[1,2,3]", "\"text\"", r#"{"data":{}}"#, r#"{"type":7}"#] {
        ws.send(Message::text(bad)).unwrap();
        let err = recv_json(&mut ws);
        assert_eq!(err["type"], "error", "{bad}");
        assert_eq!(err["data"]["code"], "INVALID_MESSAGE_FORMAT", "{bad}");
        assert!(err["data"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(uuid::Uuid::parse_str(err["id"].as_str().unwrap()).is_ok());
    }
    send_json(&mut ws, json!({"type": "launch.missiles"}));
    let err = recv_json(&mut ws);
    assert_eq!(err["data"]["code"], "INVALID_MESSAGE_TYPE");
    assert_eq!(err["data"]["message"], "Unknown message type: launch.missiles");
    // The connection survives all of that.
    send_json(&mut ws, json!({"type": "ping", "data": {"pingId": "alive"}}));
    assert_eq!(recv_json(&mut ws)["data"]["pingId"], "alive");
}
