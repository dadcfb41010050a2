//! Embedding: an application built on the library handles its own message type, keeps typed
//! per-connection data, decides upgrades from the verified claims, and publishes from another
//! thread through the `ServerHandle`.
mod common;
use common::*;
use serde_json::json;
use serde_json::value::RawValue;
use wsedge::app::{ProtocolApp, ProtocolHooks};
use wsedge::auth::Claims;
use wsedge::{Ctx, Handler, Refusal, Server};

/// The protocol server plus a `chat.send` message type.
struct Chat;
impl ProtocolHooks for Chat {
    fn on_message(&self, ctx: &mut Ctx<'_>, kind: &str, data: Option<&RawValue>) -> bool {
        if kind != "chat.send" {
            return false;
        }
        let text = data
            .and_then(|d| serde_json::from_str::<serde_json::Value>(d.get()).ok())
            .and_then(|v| v["text"].as_str().map(str::to_string));
        match text {
            Some(t) => ctx.send_message("chat.sent", json!({"echo": t, "from": ctx.user_id()})),
            None => ctx.send_error(
                wsedge::protocol::ErrorCode::InvalidMessageFormat,
                "chat.send needs data.text",
            ),
        };
        true
    }
}

#[test]
fn custom_message_type_and_publish_from_another_thread() {
    let server = Server::start(config(), ProtocolApp::with_hooks(Chat)).unwrap();
    let (mut ws, _) = connect(server.local_addr(), &token("writer"));
    send_json(&mut ws, json!({"type": "chat.send", "data": {"text": "hello"}}));
    let m = recv_json(&mut ws);
    assert_eq!(
        (
            m["type"].as_str(),
            m["data"]["echo"].as_str(),
            m["data"]["from"].as_str()
        ),
        (Some("chat.sent"), Some("hello"), Some("writer"))
    );
    send_json(&mut ws, json!({"type": "chat.unknown"}));
    assert_eq!(recv_json(&mut ws)["data"]["code"], "INVALID_MESSAGE_TYPE");

    send_json(
        &mut ws,
        json!({"type": "subscribe", "data": {"events": ["system.notification"]}}),
    );
    recv_json(&mut ws);
    let handle = server.handle();
    let publisher = std::thread::spawn(move || {
        handle
            .publish("system.notification", json!({"message": "from a worker thread"}))
            .unwrap()
    });
    assert_eq!(publisher.join().unwrap(), 1);
    assert_eq!(recv_json(&mut ws)["data"]["message"], "from a worker thread");
}

/// A handler of its own: counts messages per connection, refuses banned users.
#[derive(Default)]
struct Counter;

#[derive(Default)]
struct Seen(u32);

impl Handler for Counter {
    fn on_upgrade(&self, claims: Option<&Claims>) -> Result<(), Refusal> {
        match claims {
            Some(c) if c.user_id.starts_with("banned") => Err(Refusal::forbidden("banned user")),
            _ => Ok(()),
        }
    }

    fn on_text(&self, ctx: &mut Ctx<'_>, text: &str) {
        let seen = ctx.data::<Seen>();
        seen.0 += 1;
        let n = seen.0;
        ctx.send_text(&format!("{n}: {text}"));
    }
}

#[test]
fn typed_per_connection_data_and_upgrade_decision() {
    let server = Server::start(wsedge::Config { workers: 2, ..config() }, Counter).unwrap();
    let addr = server.local_addr();
    let mut a = try_connect(addr, &format!("/ws?token={}", token("a")), &[]).unwrap();
    let mut b = try_connect(addr, &format!("/ws?token={}", token("b")), &[]).unwrap();
    for name in ["a1", "a2"] {
        a.send(tungstenite::Message::text(name)).unwrap();
    }
    b.send(tungstenite::Message::text("b1")).unwrap();
    a.send(tungstenite::Message::text("a3")).unwrap();
    assert_eq!(a.read().unwrap(), tungstenite::Message::text("1: a1"));
    assert_eq!(a.read().unwrap(), tungstenite::Message::text("2: a2"));
    assert_eq!(a.read().unwrap(), tungstenite::Message::text("3: a3"));
    assert_eq!(
        b.read().unwrap(),
        tungstenite::Message::text("1: b1"),
        "each connection has its own data"
    );
    match try_connect(addr, &format!("/ws?token={}", token("banned-7")), &[]) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| "upgrade")),
    }
    assert_eq!(
        server.handle().open_connections(),
        2,
        "the refused upgrade holds no slot"
    );
}

/// (user, close code, messages) of each close.
type CloseLog = std::sync::Arc<std::sync::Mutex<Vec<(Option<String>, u16, u32)>>>;

/// Records every close it is told about.
#[derive(Default)]
struct Closes(CloseLog);
impl Handler for Closes {
    fn on_text(&self, ctx: &mut Ctx<'_>, _: &str) {
        ctx.close(4000, "app says bye");
    }
    fn on_close(&self, closed: &wsedge::Closed<'_>) {
        let user = closed.user_id.map(str::to_string);
        self.0.lock().unwrap().push((user, closed.code, closed.messages));
    }
}

#[test]
fn on_close_reports_user_code_and_messages() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = Server::start(config(), Closes(seen.clone())).unwrap();
    let addr = server.local_addr();
    let mut a = try_connect(addr, &format!("/ws?token={}", token("closer")), &[]).unwrap();
    a.send(tungstenite::Message::text("bye please")).unwrap();
    assert_eq!(expect_close(&mut a), (4000, "app says bye".to_string()));
    drop(a);
    let mut b = try_connect(addr, &format!("/ws?token={}", token("peer-closer")), &[]).unwrap();
    b.close(Some(tungstenite::protocol::CloseFrame {
        code: 1000u16.into(),
        reason: "".into(),
    }))
    .unwrap();
    while b.read().is_ok() {}
    wait_until("two closes reported", || seen.lock().unwrap().len() == 2);
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(
        got,
        vec![
            (Some("closer".to_string()), 4000, 1),
            (Some("peer-closer".to_string()), 1000, 0)
        ]
    );
}
