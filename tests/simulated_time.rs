//! The reactor on a virtual clock (`Harness::advance`): its real turn, simulated streams, and
//! time that moves only when the test says so. Handshake timeouts, heartbeats and idle
//! timeouts, the close handshake's timeout, token expiry and the rate-limit window are each
//! checked on both sides of their deadline, with no sleep and no wall-clock assertion.
mod common;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use wsedge::testing::{Harness, SimClient};

/// One simulated client: what it received, as the 101 head and then frames.
struct Peer {
    end: SimClient,
    inbox: Vec<u8>,
    head: Option<String>,
    frames: Vec<(u8, Vec<u8>)>,
}

impl Peer {
    fn connect(h: &mut Harness<wsedge::app::ProtocolApp>, seed: u64) -> Peer {
        Peer {
            end: h.sim_connect(seed).expect("admitted"),
            inbox: Vec::new(),
            head: None,
            frames: Vec::new(),
        }
    }

    fn absorb(&mut self) {
        self.inbox.extend(self.end.take_received());
        if self.head.is_none() {
            let Some(end) = self.inbox.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            self.head = Some(String::from_utf8_lossy(&self.inbox[..end]).to_string());
            self.inbox.drain(..end + 4);
        }
        while let Some((first, payload, used)) = server_frame(&self.inbox) {
            self.inbox.drain(..used);
            self.frames.push((first & 0x0F, payload));
        }
    }

    fn texts(&self) -> Vec<Value> {
        self.frames
            .iter()
            .filter(|(op, _)| *op == 1)
            .map(|(_, p)| serde_json::from_slice(p).unwrap())
            .collect()
    }

    fn close(&self) -> Option<(u16, String)> {
        self.frames.iter().find(|(op, _)| *op == 8).map(|(_, p)| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                String::from_utf8_lossy(&p[2..]).to_string(),
            )
        })
    }
}

/// One whole unmasked frame at the start of `b`: (first byte, payload, bytes used).
fn server_frame(b: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (head, len) = match *b.get(1)? {
        126 => (4, u16::from_be_bytes(b.get(2..4)?.try_into().ok()?) as usize),
        n if n < 126 => (2, n as usize),
        _ => panic!("unexpected frame length"),
    };
    Some((b[0], b.get(head..head + len)?.to_vec(), head + len))
}

/// Turns at the same virtual instant until `done` holds (the streams' faults may take a few).
fn settle(h: &mut Harness<wsedge::app::ProtocolApp>, p: &mut Peer, mut done: impl FnMut(&Peer) -> bool) {
    for _ in 0..500 {
        h.sim_turn();
        p.absorb();
        if done(p) {
            return;
        }
    }
    panic!("never settled; received {:?} and {:?}", p.head, p.texts());
}

fn harness(config: wsedge::Config) -> Harness<wsedge::app::ProtocolApp> {
    Harness::new(config, wsedge::app::ProtocolApp::default()).unwrap()
}

/// A connection upgraded with `token`, its greeting read.
fn open(h: &mut Harness<wsedge::app::ProtocolApp>, seed: u64, token: &str) -> Peer {
    let mut p = Peer::connect(h, seed);
    p.end.send(upgrade_request(&format!("/ws?token={token}")).as_bytes());
    settle(h, &mut p, |p| {
        p.texts().iter().any(|m| m["type"] == "connection.established")
    });
    assert!(p.head.as_deref().unwrap().starts_with("HTTP/1.1 101"));
    p
}

#[test]
fn a_handshake_that_never_completes_gets_408_at_its_timeout_not_before() {
    let mut h = harness(wsedge::Config {
        handshake_timeout: Duration::from_secs(5),
        ..config()
    });
    // Eight streams: the 408 is written once, as is, so a stream whose write the seed refuses
    // or cuts short gets none or part of it (the connection is closed all the same).
    let peers: Vec<Peer> = (1..=8).map(|seed| Peer::connect(&mut h, seed)).collect();
    for p in &peers {
        p.end.send(b"GET /ws HTTP/1.1\r\nHost: x\r\n");
    }
    h.advance(Duration::from_millis(4_800));
    assert_eq!(h.sim_open(), 8, "still waiting at 4.8 s");
    h.advance(Duration::from_millis(400));
    assert_eq!(h.sim_open(), 0, "gone at 5.2 s");
    let response = b"HTTP/1.1 408 Request Timeout\r\n";
    let mut answered = 0;
    for p in &peers {
        let got = p.end.take_received();
        let n = got.len().min(response.len());
        assert_eq!(&got[..n], &response[..n], "{}", String::from_utf8_lossy(&got));
        answered += usize::from(n >= 12);
    }
    assert!(answered > 0, "some stream took the status line's \"HTTP/1.1 408\"");
}

#[test]
fn a_silent_connection_is_pinged_at_the_heartbeat_then_closed_at_the_timeout() {
    let mut h = harness(wsedge::Config {
        heartbeat_interval: Duration::from_secs(10),
        connection_timeout: Duration::from_secs(25),
        close_timeout: Duration::from_secs(3),
        ..config()
    });
    let mut p = open(&mut h, 12, &token("quiet"));
    h.advance(Duration::from_millis(9_800));
    p.absorb();
    assert!(!p.frames.iter().any(|(op, _)| *op == 9), "no ping before the heartbeat");
    h.advance(Duration::from_millis(400));
    p.absorb();
    assert_eq!(
        p.frames.iter().filter(|(op, _)| *op == 9).count(),
        1,
        "one ping at 10 s"
    );
    h.advance(Duration::from_millis(14_600));
    p.absorb();
    assert_eq!(p.close(), None, "open at 24.8 s");
    h.advance(Duration::from_millis(400));
    p.absorb();
    assert_eq!(p.close(), Some((1000, "Connection timeout".into())), "closed at 25.2 s");
    // The client never answers the close (sent at 25 s): dropped after the close timeout.
    h.advance(Duration::from_millis(2_600));
    assert_eq!(h.sim_open(), 1, "the close handshake is waited for");
    h.advance(Duration::from_millis(400));
    assert_eq!(h.sim_open(), 0, "and given up on");
    assert_eq!(h.census().connections, 0);
}

#[test]
fn activity_keeps_a_connection_alive_past_its_timeout() {
    let mut h = harness(wsedge::Config {
        heartbeat_interval: Duration::from_secs(10),
        connection_timeout: Duration::from_secs(25),
        ..config()
    });
    let mut p = open(&mut h, 13, &token("chatty"));
    for i in 0..6 {
        h.advance(Duration::from_secs(8));
        let ping = json!({"type": "ping", "data": {"pingId": i}});
        p.end.send(&frame(0x81, ping.to_string().as_bytes()));
        settle(&mut h, &mut p, |p| p.texts().iter().any(|m| m["data"]["pingId"] == i));
    }
    assert_eq!(p.close(), None, "48 s of activity every 8 s: never idle for 25 s");
    assert!(!p.frames.iter().any(|(op, _)| *op == 9), "and never pinged");
}

#[test]
fn a_token_expiring_while_connected_closes_with_1008_at_its_exp() {
    let mut h = harness(config());
    // Tokens are checked against the system clock on arrival; the virtual clock starts there.
    let exp = now() + 4;
    let mut p = open(&mut h, 14, &sign(json!({"sub": "short", "exp": exp})));
    h.advance(Duration::from_secs(2));
    p.absorb();
    assert_eq!(p.close(), None, "valid 2 s later");
    h.advance(Duration::from_secs(4));
    p.absorb();
    assert_eq!(
        p.close(),
        Some((1008, "token expired".into())),
        "closed once exp passed"
    );
}

#[test]
fn with_expiry_checked_at_connect_only_an_expiring_token_keeps_its_connection() {
    let mut h = harness(wsedge::Config {
        close_at_token_expiry: false,
        ..config()
    });
    let exp = now() + 4;
    let mut p = open(&mut h, 16, &sign(json!({"sub": "seedclient", "exp": exp})));
    h.advance(Duration::from_secs(6));
    p.absorb();
    assert_eq!(p.close(), None, "still open past exp");
    let ping = json!({"type": "ping", "data": {"pingId": 1}});
    p.end.send(&frame(0x81, ping.to_string().as_bytes()));
    settle(&mut h, &mut p, |p| p.texts().iter().any(|m| m["type"] == "pong"));
}

#[test]
fn a_json_heartbeat_is_sent_with_the_ping_and_a_json_pong_keeps_the_connection() {
    let mut h = harness(wsedge::Config {
        heartbeat_interval: Duration::from_secs(10),
        connection_timeout: Duration::from_secs(25),
        json_heartbeat: true,
        ..config()
    });
    let mut p = open(&mut h, 17, &token("seedclient"));
    h.advance(Duration::from_millis(10_200));
    p.absorb();
    assert!(
        p.texts().iter().any(|m| *m == json!({"type": "ping", "data": {}})),
        "{:?}",
        p.texts()
    );
    // The client answers with a JSON pong at 20 s: alive past the 25 s timeout, no error.
    h.advance(Duration::from_millis(9_800));
    p.end.send(&frame(0x81, br#"{"type":"pong"}"#));
    h.advance(Duration::from_millis(6_000));
    p.absorb();
    assert_eq!(p.close(), None, "open at 26 s");
    assert!(!p.texts().iter().any(|m| m["type"] == "error"), "{:?}", p.texts());
}

#[test]
fn the_rate_window_refuses_the_extra_message_and_slides_on_the_virtual_clock() {
    let mut h = harness(wsedge::Config {
        rate_limit_messages: 3,
        rate_limit_window: Duration::from_secs(2),
        ..config()
    });
    let mut p = open(&mut h, 15, &token("limited"));
    let send = |p: &mut Peer, i: u64| {
        let ping = json!({"type": "ping", "data": {"pingId": i}});
        p.end.send(&frame(0x81, ping.to_string().as_bytes()));
    };
    for i in 0..4 {
        send(&mut p, i);
    }
    settle(&mut h, &mut p, |p| p.texts().len() >= 5);
    let texts = p.texts();
    let pongs: Vec<_> = texts.iter().filter(|m| m["type"] == "pong").collect();
    assert_eq!(pongs.len(), 3, "{texts:?}");
    let refused = texts
        .iter()
        .find(|m| m["type"] == "error")
        .expect("the fourth is refused");
    assert_eq!(refused["data"]["code"], "RATE_LIMIT_EXCEEDED");
    // Inside the window nothing more gets through; once it has slid past, a message does.
    h.advance(Duration::from_millis(1_000));
    send(&mut p, 10);
    settle(&mut h, &mut p, |p| p.texts().len() >= 6);
    assert_eq!(p.texts()[5]["data"]["code"], "RATE_LIMIT_EXCEEDED", "{:?}", p.texts());
    h.advance(Duration::from_millis(1_200));
    send(&mut p, 11);
    settle(&mut h, &mut p, |p| p.texts().len() >= 7);
    assert_eq!(p.texts()[6]["type"], "pong", "{:?}", p.texts());
    assert_eq!(p.close(), None);
}

/// Subscribes `p` to `review.updated`, recovering from `from` (offset, epoch) if given; returns
/// the acknowledgement's position for the event.
fn subscribe(h: &mut Harness<wsedge::app::ProtocolApp>, p: &mut Peer, from: Option<(u64, &str)>) -> Value {
    let mut data = json!({"events": ["review.updated"]});
    if let Some((offset, epoch)) = from {
        data["recover"] = json!({"review.updated": {"offset": offset, "epoch": epoch}});
    }
    let m = json!({"type": "subscribe", "data": data});
    p.end.send(&frame(0x81, m.to_string().as_bytes()));
    settle(h, p, |p| {
        p.texts().iter().any(|m| m["type"] == "subscription.acknowledged")
    });
    let texts = p.texts();
    let ack = texts.iter().find(|m| m["type"] == "subscription.acknowledged").unwrap();
    ack["data"]["positions"]["review.updated"].clone()
}

#[test]
fn history_is_recoverable_until_its_ttl_and_not_after() {
    let mut h = harness(wsedge::Config {
        history_ttl: Duration::from_secs(10),
        ..config()
    });
    let mut a = open(&mut h, 21, &token("a"));
    let start = subscribe(&mut h, &mut a, None);
    let epoch = start["epoch"].as_str().unwrap().to_string();
    assert!(h.sim_publish("review.updated", json!({"n": 1})));
    settle(&mut h, &mut a, |p| {
        p.texts().iter().any(|m| m["type"] == "review.updated")
    });
    h.advance(Duration::from_secs(3));
    let mut b = open(&mut h, 22, &token("b"));
    let before = subscribe(&mut h, &mut b, Some((0, &epoch)));
    settle(&mut h, &mut b, |p| {
        p.texts().iter().any(|m| m["type"] == "review.updated")
    });
    assert_eq!(before["recovered"], true, "{before}");
    h.advance(Duration::from_secs(12));
    let mut c = open(&mut h, 23, &token("c"));
    let after = subscribe(&mut h, &mut c, Some((0, &epoch)));
    for _ in 0..50 {
        h.sim_turn();
    }
    c.absorb();
    assert_eq!(after["recovered"], false, "the message outlived its TTL: {after}");
    assert!(
        !c.texts().iter().any(|m| m["type"] == "review.updated"),
        "{:?}",
        c.texts()
    );
}

#[test]
fn a_departed_users_entry_is_cleaned_up_once_its_rate_window_cools() {
    let mut h = harness(wsedge::Config {
        rate_limit_messages: 10,
        rate_limit_window: Duration::from_secs(5),
        ..config()
    });
    let mut p = open(&mut h, 31, &token("leaves"));
    let ping = json!({"type": "ping", "data": {"pingId": 1}});
    p.end.send(&frame(0x81, ping.to_string().as_bytes()));
    settle(&mut h, &mut p, |p| p.texts().iter().any(|m| m["type"] == "pong"));
    p.end.send(&frame(0x88, &1000u16.to_be_bytes()));
    settle(&mut h, &mut p, |p| p.close().is_some());
    p.end.close();
    h.advance(Duration::from_millis(200));
    assert_eq!(h.sim_open(), 0);
    assert_eq!(
        h.census().user_entries,
        1,
        "the user's rate window is kept while it is warm"
    );
    // The sliding window still weighs the previous window: warm through the next one.
    h.advance(Duration::from_secs(6));
    assert_eq!(h.census().user_entries, 1, "still counted 6 s later (one window on)");
    h.advance(Duration::from_secs(5));
    assert_eq!(h.census().user_entries, 0, "forgotten once two windows have passed");
}
