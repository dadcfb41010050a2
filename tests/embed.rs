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
            None => ctx.send_error(wsedge::ErrorCode::InvalidMessageFormat, "chat.send needs data.text"),
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

// ---- per-reactor handlers (ReactorHandler), asks that answer later, backpressure, own sources

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;
use wsedge::{ReactorCtx, ReactorHandler, Reply, SendStatus, Ticket, per_reactor};

/// A chat service whose state is per reactor, in plain fields (no lock): messages relayed by
/// this reactor, and which sender each relay's ticket belongs to.
#[derive(Default)]
struct ChatService {
    relayed: u64,
    senders: HashMap<Ticket, uuid::Uuid>,
}

impl ReactorHandler for ChatService {
    fn on_open(&mut self, ctx: &mut Ctx<'_>) {
        ctx.join_room("lobby").expect("admin tokens may join any room");
        ctx.send_message("joined", json!({"reactor": "ok"}));
    }
    fn on_text(&mut self, ctx: &mut Ctx<'_>, text: &str) {
        if text == "census" {
            let t = ctx.asks().census();
            self.senders.insert(t, ctx.connection_id());
            return;
        }
        self.relayed += 1;
        let from = ctx.user_id().map(str::to_string);
        let t = ctx
            .asks()
            .send_to_room("lobby", "chat", json!({"text": text, "from": from}), from.as_deref());
        self.senders.insert(t, ctx.connection_id());
    }
    fn on_reply(&mut self, r: &mut ReactorCtx<'_>, ticket: Ticket, reply: Reply) {
        let Some(sender) = self.senders.remove(&ticket) else {
            return;
        };
        let data = match reply {
            Reply::Delivered { recipients } => json!({"recipients": recipients, "relayed_here": self.relayed}),
            Reply::Census(c) => json!({"connections": c.connections}),
            Reply::Member(n) => json!({"member": n}),
            Reply::ClusterUnavailable => json!({"error": "cluster unavailable"}),
            Reply::ClusterOutcomeUnknown => json!({"error": "cluster outcome unknown"}),
        };
        r.asks().send_to_connection(sender, "receipt", data);
    }
}

#[test]
fn chat_with_per_reactor_state_and_replies_that_come_later() {
    let server = Server::start(
        wsedge::Config { workers: 2, ..config() },
        per_reactor(|_| ChatService::default()),
    )
    .unwrap();
    let addr = server.local_addr();
    let open = |user: &str| {
        let mut ws = try_connect(addr, &format!("/ws?token={}", admin_token(user)), &[]).unwrap();
        assert_eq!(recv_json(&mut ws)["type"], "joined");
        ws
    };
    // Users land on both reactors (placed by a hash of their id).
    let mut users: Vec<Ws> = (0..4).map(|i| open(&format!("chatter-{i}"))).collect();
    users[0].send(tungstenite::Message::text("hello all")).unwrap();
    // The sender is skipped; the three others, wherever they are, get it.
    for ws in &mut users[1..] {
        let m = recv_json(ws);
        assert_eq!(
            (m["type"].as_str(), m["data"]["text"].as_str()),
            (Some("chat"), Some("hello all"))
        );
        assert_eq!(m["data"]["from"], "chatter-0");
    }
    let receipt = recv_json(&mut users[0]);
    assert_eq!(receipt["type"], "receipt");
    assert_eq!(receipt["data"]["recipients"], 3, "{receipt}");
    assert_eq!(receipt["data"]["relayed_here"], 1);
    users[1].send(tungstenite::Message::text("census")).unwrap();
    assert_eq!(recv_json(&mut users[1])["data"]["connections"], 4);
}

/// Streams `n` numbered messages, pausing on backpressure until `on_writable`.
#[derive(Default)]
struct Producer {
    left: HashMap<uuid::Uuid, (u32, u32, u32)>,
}

impl Producer {
    fn produce(&mut self, ctx: &mut Ctx<'_>) {
        let id = ctx.connection_id();
        let Some((next, total, pauses)) = self.left.get_mut(&id) else {
            return;
        };
        let chunk = "x".repeat(1000);
        while *next < *total {
            let status = ctx.send_text(&format!("{} {chunk}", *next));
            assert_ne!(status, SendStatus::Dropped, "a paced producer is never cut off");
            *next += 1;
            if status == SendStatus::Backpressure {
                *pauses += 1;
                return;
            }
        }
        let pauses = *pauses;
        self.left.remove(&id);
        ctx.send_text(&format!("done after {pauses} pauses"));
    }
}

impl ReactorHandler for Producer {
    fn on_text(&mut self, ctx: &mut Ctx<'_>, text: &str) {
        let total = text.parse().unwrap_or(0);
        self.left.insert(ctx.connection_id(), (0, total, 0));
        self.produce(ctx);
    }
    fn on_writable(&mut self, ctx: &mut Ctx<'_>) {
        assert!(ctx.buffered_amount() == 0);
        self.produce(ctx);
    }
}

#[test]
fn a_producer_paced_by_backpressure_sends_everything_to_a_slow_reader() {
    // 4 MB through a connection allowed 256 KiB of backlog: without pacing it would be closed
    // as a slow consumer; paced, every message arrives.
    let server = Server::start(
        wsedge::Config {
            max_outbound_bytes: 256 * 1024,
            ..config()
        },
        per_reactor(|_| Producer::default()),
    )
    .unwrap();
    let mut ws = try_connect(server.local_addr(), &format!("/ws?token={}", token("reader")), &[]).unwrap();
    ws.send(tungstenite::Message::text("4000")).unwrap();
    for i in 0..4000 {
        let m = ws.read().unwrap().into_text().unwrap();
        assert!(
            m.starts_with(&format!("{i} ")),
            "message {i} out of order: {}",
            &m[..10]
        );
        if i % 500 == 0 {
            // A slow reader: the server's queue fills while we sleep.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let done = ws.read().unwrap().into_text().unwrap();
    let pauses: u32 = done.split(' ').nth(2).unwrap().parse().unwrap();
    assert!(pauses > 0, "the producer was paused at least once: {done}");
    assert_eq!(server.handle().stats().slow_consumer_closes, 0);
}

/// Reads lines `room text` from its own TCP listener (registered on the reactor) and posts
/// each to that room; a timer announces itself three times.
struct Feed {
    listener: Option<mio::net::TcpListener>,
    peers: HashMap<u32, (mio::net::TcpStream, Vec<u8>)>,
    ticks: u32,
}

const FEED_LISTENER: u32 = 0;

impl ReactorHandler for Feed {
    fn on_start(&mut self, r: &mut ReactorCtx<'_>) {
        if let Some(l) = self.listener.as_mut() {
            r.register(l, FEED_LISTENER, mio::Interest::READABLE).unwrap();
            r.set_timer(1, Duration::from_millis(100));
        }
    }
    fn on_timer(&mut self, r: &mut ReactorCtx<'_>, _timer: u32) {
        self.ticks += 1;
        r.asks()
            .send_to_room("lobby", "feed.tick", json!({"n": self.ticks}), None);
        if self.ticks < 3 {
            r.set_timer(1, Duration::from_millis(100));
        }
    }
    fn on_source(&mut self, r: &mut ReactorCtx<'_>, source: u32, _event: &mio::event::Event) {
        if source == FEED_LISTENER {
            while let Some(Ok((mut s, _))) = self.listener.as_ref().map(|l| l.accept()) {
                let id = self.peers.len() as u32 + 1;
                r.register(&mut s, id, mio::Interest::READABLE).unwrap();
                self.peers.insert(id, (s, Vec::new()));
            }
            return;
        }
        let Some((s, buf)) = self.peers.get_mut(&source) else {
            return;
        };
        let mut chunk = [0u8; 4096];
        loop {
            match std::io::Read::read(s, &mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => break,
            }
        }
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).to_string();
            if let Some((room, text)) = line.split_once(' ') {
                r.asks().send_to_room(room, "feed", json!({"text": text}), None);
            }
        }
    }
}

#[test]
fn an_own_tcp_source_and_timer_feed_rooms() {
    let feed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    feed.set_nonblocking(true).unwrap();
    let feed_addr = feed.local_addr().unwrap();
    let slot = std::sync::Mutex::new(Some(feed));
    let server = Server::start(
        wsedge::Config { workers: 2, ..config() },
        per_reactor(move |reactor| Feed {
            // Only one reactor owns the source.
            listener: if reactor == 0 {
                slot.lock().unwrap().take().map(mio::net::TcpListener::from_std)
            } else {
                None
            },
            peers: HashMap::new(),
            ticks: 0,
        }),
    )
    .unwrap();
    let mut ws = try_connect(
        server.local_addr(),
        &format!("/ws?token={}", admin_token("watcher")),
        &[],
    )
    .unwrap();
    // Join through the admin API (the handler has no join message).
    server.handle().add_to_room("lobby", "watcher").expect("connected");
    let mut ticks = 0;
    let mut source = std::net::TcpStream::connect(feed_addr).unwrap();
    source
        .write_all(b"lobby first line\nelsewhere not for us\nlobby second")
        .unwrap();
    source.write_all(b" line\n").unwrap();
    let mut lines = Vec::new();
    while lines.len() < 2 || ticks < 3 {
        let m = recv_json(&mut ws);
        match m["type"].as_str() {
            Some("feed") => lines.push(m["data"]["text"].as_str().unwrap().to_string()),
            Some("feed.tick") => ticks = m["data"]["n"].as_u64().unwrap(),
            _ => {}
        }
    }
    assert_eq!(lines, ["first line", "second line"]);
}

#[test]
fn reactors_run_on_threads_the_application_owns() {
    let prepared = Server::prepare(wsedge::Config { workers: 2, ..config() }, ProtocolApp::default()).unwrap();
    let handle = prepared.handle.clone();
    let threads: Vec<_> = prepared
        .reactors
        .into_iter()
        .map(|r| std::thread::spawn(move || r.run()))
        .collect();
    let (mut ws, hello) = connect(handle.local_addr(), &token("own-threads"));
    assert_eq!(hello["type"], "connection.established");
    send_json(&mut ws, json!({"type": "ping"}));
    assert_eq!(recv_json(&mut ws)["type"], "pong");
    handle.drain();
    for t in threads {
        t.join().unwrap().expect("no reactor died");
    }
}
