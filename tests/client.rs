//! `wsedge::client` against a real server: a typed error for each failure, `wss://` with a
//! private CA, subprotocols and the measured ping round trip; a session that restores its
//! subscriptions and rooms after its connection is closed and recovers exactly, survives a
//! server restart (reporting the recovery as not exact: the epoch changed), and refreshes its
//! token from a provider before it expires.
mod common;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use serde_json::json;
use wsedge::Config;
use wsedge::client::{
    BackoffPolicy, Client, ClientConfig, ClientError, Roots, Session, SessionConfig, SessionEvent, TokenSource,
};

fn url(addr: SocketAddr, token: &str) -> String {
    format!("ws://{addr}/ws?token={token}")
}

fn quick() -> ClientConfig {
    ClientConfig {
        open_timeout: TIMEOUT,
        ..ClientConfig::default()
    }
}

#[test]
fn each_failure_has_its_own_error() {
    let s = start(config());
    let addr = s.local_addr();

    let mut c = Client::connect(&url(addr, "not-a-token"), quick()).unwrap();
    match c.recv() {
        Err(ClientError::AuthenticationFailed(reason)) => assert!(reason.contains("malformed"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Once closed, it stays closed with the same answer.
    assert!(matches!(c.recv(), Err(ClientError::AuthenticationFailed(_))));

    match Client::connect(&format!("ws://{addr}/nowhere"), quick()) {
        Err(ClientError::Rejected { status: 404, .. }) => {}
        other => panic!("{:?}", other.err()),
    }
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    assert!(matches!(
        Client::connect(&url(closed_port, "t"), quick()),
        Err(ClientError::ConnectionFailed(_))
    ));
    assert!(matches!(
        Client::connect("http://example.com/", quick()),
        Err(ClientError::Url(_))
    ));

    // Our limit: refused before sending.
    let mut c = Client::connect(
        &url(addr, &token("ola")),
        ClientConfig {
            max_message_size: 1000,
            ..quick()
        },
    )
    .unwrap();
    assert_eq!(c.recv_json().unwrap()["type"], "connection.established");
    assert!(matches!(
        c.send_text("x".repeat(2000)),
        Err(ClientError::MessageTooLarge(_))
    ));
    // Received over the limit: the connection fails with the same error.
    assert_eq!(
        s.handle()
            .send_to_user("ola", "big", json!({"text": "z".repeat(3000)}))
            .unwrap(),
        1
    );
    assert!(matches!(c.recv(), Err(ClientError::MessageTooLarge(_))));
    // The server's limit (64 KiB): its error message, then 1009.
    let mut c = Client::connect(&url(addr, &token("ola")), quick()).unwrap();
    assert_eq!(c.recv_json().unwrap()["type"], "connection.established");
    c.send_text("y".repeat(70_000)).unwrap();
    assert_eq!(c.recv_json().unwrap()["data"]["code"], "MESSAGE_TOO_LARGE");
    assert!(matches!(c.recv(), Err(ClientError::MessageTooLarge(_))));

    // A close from the server: its code and reason.
    let mut c = Client::connect(&url(addr, &token("cid")), quick()).unwrap();
    assert_eq!(c.recv_json().unwrap()["type"], "connection.established");
    assert_eq!(
        s.handle()
            .disconnect(wsedge::Target::User("cid".into()), 4001, "go away")
            .unwrap(),
        1
    );
    match c.recv() {
        Err(ClientError::Closed { code: 4001, reason }) => assert_eq!(reason, "go away"),
        other => panic!("{other:?}"),
    }
    // And a close we start: the server's close frame comes back.
    let mut c = Client::connect(&url(addr, &token("cid")), quick()).unwrap();
    assert_eq!(c.recv_json().unwrap()["type"], "connection.established");
    assert_eq!(c.close(1000, "done").unwrap(), 1000);
}

#[test]
fn wss_with_a_private_ca_a_chosen_subprotocol_and_a_measured_round_trip() {
    let dir = std::env::temp_dir().join(format!("wsedge-client-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let s = start(Config {
        tls_cert: Some(dir.join("cert.pem")),
        tls_key: Some(dir.join("key.pem")),
        ..config()
    });
    let port = s.local_addr().port();
    let wss = format!("wss://localhost:{port}/ws");
    // The system's authorities do not know this certificate.
    let system = Client::connect(&wss, quick());
    assert!(
        matches!(system, Err(ClientError::ConnectionFailed(_))),
        "{:?}",
        system.err()
    );
    // The token as a subprotocol (`bearer, <token>`): the server picks `bearer`.
    let config = ClientConfig {
        roots: Roots::Pem(ck.cert.pem().into_bytes()),
        subprotocols: vec!["bearer".into(), token("tls-user")],
        ping_interval: Some(Duration::from_millis(20)),
        ..quick()
    };
    let mut c = Client::connect(&wss, config).unwrap();
    assert_eq!(c.subprotocol(), Some("bearer"));
    let hello = c.recv_json().unwrap();
    assert_eq!(hello["data"]["user_id"], "tls-user");
    // Pings go out while receiving; the first pong sets the round trip.
    let mut waited = 0;
    while c.latency().is_none() {
        assert!(c.recv_timeout(Some(Duration::from_millis(20))).unwrap().is_none());
        waited += 1;
        assert!(waited < 500, "no pong");
    }
    c.send_json(&json!({"type": "ping", "data": {"pingId": 7}})).unwrap();
    assert_eq!(c.recv_json().unwrap()["data"]["pingId"], 7);
    let _ = std::fs::remove_dir_all(&dir);
}

fn session_config(seed: u64) -> SessionConfig {
    SessionConfig {
        client: quick(),
        backoff: BackoffPolicy {
            base: Duration::from_millis(5),
            cap: Duration::from_millis(50),
            ..BackoffPolicy::default()
        },
        seed: Some(seed),
        ..SessionConfig::default()
    }
}

/// Events until `done` says so (at most 200).
fn collect(session: &mut Session, mut done: impl FnMut(&[SessionEvent]) -> bool) -> Vec<SessionEvent> {
    let mut seen = Vec::new();
    while !done(&seen) {
        assert!(seen.len() < 200, "{seen:#?}");
        seen.push(session.next_event().unwrap());
    }
    seen
}

fn texts(events: &[SessionEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Message(v) if v["data"]["text"].is_string() => v["data"]["text"].as_str().map(str::to_string),
            _ => None,
        })
        .collect()
}

fn recovered(events: &[SessionEvent]) -> Vec<(String, bool)> {
    let mut r: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Recovered { channel, exact } => Some((channel.clone(), *exact)),
            _ => None,
        })
        .collect();
    r.sort();
    r
}

#[test]
fn a_session_comes_back_with_its_subscriptions_and_rooms_and_recovers_exactly() {
    let s = start(config());
    let addr = s.local_addr();
    let h = s.handle();
    let tok = sign(json!({"sub": "sam", "exp": now() + 3600, "rooms": ["lobby"]}));
    let mut session = Session::new(&format!("ws://{addr}/ws"), TokenSource::Fixed(tok), session_config(1));
    assert!(matches!(
        session.next_event().unwrap(),
        SessionEvent::Connected { reconnected: false, .. }
    ));
    session.subscribe(&["review.updated"]).unwrap();
    session.join(&["lobby"]).unwrap();
    let acks = collect(&mut session, |e| {
        e.iter()
            .filter(|e| matches!(e, SessionEvent::Message(v) if v["type"] == "subscription.acknowledged" || v["type"] == "room.joined"))
            .count()
            == 2
    });
    assert!(recovered(&acks).is_empty());
    h.publish("review.updated", json!({"text": "event 1"})).unwrap();
    h.send_to_room("lobby", "chat", json!({"text": "room 1"})).unwrap();
    h.send_to_user("sam", "note", json!({"text": "user 1"})).unwrap();
    let live = collect(&mut session, |e| texts(e).len() == 3);
    assert_eq!(texts(&live).len(), 3);

    // The connection is closed (1012: come back); meanwhile one more message on each channel.
    assert_eq!(
        h.disconnect(wsedge::Target::User("sam".into()), 1012, "restart")
            .unwrap(),
        1
    );
    match session.next_event().unwrap() {
        SessionEvent::Disconnected {
            code: 1012, retry_in, ..
        } => assert!(retry_in <= Duration::from_millis(5)),
        other => panic!("{other:?}"),
    }
    h.publish("review.updated", json!({"text": "event 2"})).unwrap();
    h.send_to_room("lobby", "chat", json!({"text": "room 2"})).unwrap();
    h.send_to_user("sam", "note", json!({"text": "user 2"})).unwrap();

    let back = collect(&mut session, |e| texts(e).len() == 3 && recovered(e).len() == 3);
    assert!(matches!(back[0], SessionEvent::Connected { reconnected: true, .. }));
    let mut got = texts(&back);
    got.sort();
    assert_eq!(got, ["event 2", "room 2", "user 2"], "exactly the missed ones, once");
    assert_eq!(
        recovered(&back),
        [
            ("event:review.updated".to_string(), true),
            ("room:lobby".into(), true),
            ("user:sam".into(), true)
        ]
    );
    assert_eq!(session.recovered_exactly("room:lobby"), Some(true));
    // And it is subscribed and in the room again.
    h.publish("review.updated", json!({"text": "event 3"})).unwrap();
    h.send_to_room("lobby", "chat", json!({"text": "room 3"})).unwrap();
    let after = collect(&mut session, |e| texts(e).len() == 2);
    assert_eq!(texts(&after), ["event 3", "room 3"]);
    session.ping().unwrap();
    collect(&mut session, |e| {
        e.iter()
            .any(|e| matches!(e, SessionEvent::Message(v) if v["type"] == "pong"))
    });
    assert!(session.rtt().is_some());
}

#[test]
fn a_session_survives_a_server_restart_and_says_its_recovery_was_not_exact() {
    let s = start(Config {
        drain_window: Duration::from_millis(100),
        shutdown_timeout: Duration::from_millis(500),
        ..config()
    });
    let addr = s.local_addr();
    let mut session = Session::new(
        &format!("ws://{addr}/ws"),
        TokenSource::Fixed(token("rex")),
        session_config(2),
    );
    session.next_event().unwrap();
    session.subscribe(&["file.ready"]).unwrap();
    s.handle().publish("file.ready", json!({"text": "before"})).unwrap();
    collect(&mut session, |e| texts(e).len() == 1);

    s.handle().shutdown();
    match session.next_event().unwrap() {
        SessionEvent::Disconnected { code: 1001, .. } => {}
        other => panic!("{other:?}"),
    }
    s.wait().unwrap();
    // Sent while no server is there: it waits and goes out after the reconnect.
    session
        .send(json!({"type": "ping", "data": {"pingId": "while-away"}}))
        .unwrap();
    let s = start(Config {
        listen: addr,
        ..config()
    });
    let pong = |e: &[SessionEvent]| {
        e.iter()
            .any(|e| matches!(e, SessionEvent::Message(v) if v["data"]["pingId"] == "while-away"))
    };
    let back = collect(&mut session, |e| recovered(e).len() == 2 && pong(e));
    // A new server: new epochs, so nothing could be recovered, and the client is told.
    assert_eq!(
        recovered(&back),
        [("event:file.ready".to_string(), false), ("user:rex".into(), false)]
    );
    s.handle().publish("file.ready", json!({"text": "after"})).unwrap();
    let after = collect(&mut session, |e| texts(e).len() == 1);
    assert_eq!(texts(&after), ["after"]);
    session.close();
    assert!(matches!(
        session.next_event(),
        Err(ClientError::Closed { code: 1000, .. })
    ));
}

#[test]
fn a_token_provider_is_asked_again_before_the_token_expires() {
    let s = start(config());
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    // The first token expires in a minute and is refreshed 59 s before (due a second after
    // connecting); the second lasts an hour, so no third call comes during the test.
    let provider = move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        Ok(sign(
            json!({"sub": "tia", "exp": now() + if n == 0 { 60 } else { 3600 }}),
        ))
    };
    let mut session = Session::new(
        &format!("ws://{}/ws", s.local_addr()),
        TokenSource::Provider(Box::new(provider)),
        SessionConfig {
            refresh_before: Duration::from_secs(59),
            ..session_config(3)
        },
    );
    session.next_event().unwrap();
    let refreshed = collect(&mut session, |e| {
        e.iter()
            .any(|e| matches!(e, SessionEvent::Message(v) if v["type"] == "token.refreshed"))
    });
    let last = refreshed.last().unwrap();
    let SessionEvent::Message(v) = last else { panic!() };
    assert!(v["data"]["expires_at"].as_u64().unwrap() >= now() + 3500);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "once to connect, once to refresh");
}

#[test]
fn a_server_that_upgrades_and_says_nothing_is_a_timed_out_attempt() {
    // Answers the upgrade properly, then stays silent.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = std::thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..2 {
            let (mut sock, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                std::io::Read::read_exact(&mut sock, &mut byte).unwrap();
                head.push(byte[0]);
            }
            let text = String::from_utf8(head).unwrap();
            let key = text
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Sec-WebSocket-Key: ")
                        .or_else(|| l.strip_prefix("sec-websocket-key: "))
                })
                .unwrap()
                .trim()
                .to_string();
            let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            std::io::Write::write_all(&mut sock, resp.as_bytes()).unwrap();
            held.push(sock);
        }
        held
    });
    let mut config = session_config(4);
    config.client.open_timeout = Duration::from_millis(200);
    config.backoff.max_attempts = 1;
    let mut session = Session::new(&format!("ws://{addr}/ws"), TokenSource::Fixed(token("quiet")), config);
    match session.next_event() {
        Ok(SessionEvent::Disconnected { code: 1006, reason, .. }) => {
            assert!(reason.contains("connection.established"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // One attempt allowed: the second silent upgrade ends the session.
    assert!(matches!(session.next_event(), Err(ClientError::Timeout(_))));
    drop(silent.join().unwrap());
}
