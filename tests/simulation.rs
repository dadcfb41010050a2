//! The reactor driven with no sockets (`transport::sim`): many connections whose every read
//! and write the reactor makes is short, refused with `WouldBlock`, or reset, as a seeded
//! generator decides; the clients' own bytes arrive in random pieces too. Half the clients
//! speak TLS (a rustls client over the simulated bytes, the server's session as a TLS
//! listener would give it), so the record layer sees the same cuts. Whatever the seed, every
//! client that is not reset completes its handshake, gets each of its pongs and each published
//! message exactly once and in order, and closes with 1000; reset clients are dropped; nothing
//! is left behind. A failure names its seed, and the run replays it.
mod common;
use common::*;
use serde_json::{Value, json};
use wsedge::testing::{Harness, Rng, SimClient};

const CLIENTS: usize = 48;
const PINGS: u64 = 20;
const EVENTS: u64 = 30;

#[derive(PartialEq, Debug)]
enum Stage {
    Upgrading,
    Greeted,
    Subscribed,
    Closing,
    Closed,
}

/// A client's side of the wire: the simulated stream, and for TLS the rustls client whose
/// records travel on it.
struct Wire {
    end: SimClient,
    tls: Option<rustls::ClientConnection>,
}

impl Wire {
    /// Hands the reactor application bytes (sealed first, on TLS).
    fn send(&mut self, bytes: &[u8]) {
        match &mut self.tls {
            None => self.end.send(bytes),
            Some(t) => {
                std::io::Write::write_all(&mut t.writer(), bytes).unwrap();
                self.flush_tls();
            }
        }
    }

    /// TLS records the client owes (handshake, data, alerts) onto the stream.
    fn flush_tls(&mut self) {
        if let Some(t) = &mut self.tls {
            let mut out = Vec::new();
            while t.wants_write() {
                t.write_tls(&mut out).unwrap();
            }
            if !out.is_empty() {
                self.end.send(&out);
            }
        }
    }

    /// Application bytes the reactor wrote (opened first, on TLS).
    fn take_received(&mut self) -> Vec<u8> {
        let raw = self.end.take_received();
        let Some(t) = &mut self.tls else { return raw };
        let mut rd = &raw[..];
        while !rd.is_empty() {
            t.read_tls(&mut rd).unwrap();
            t.process_new_packets().expect("records the server sealed open");
        }
        let mut plain = Vec::new();
        match std::io::Read::read_to_end(&mut t.reader(), &mut plain) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("TLS read: {e}"),
        }
        self.flush_tls();
        plain
    }
}

struct Client {
    end: Wire,
    /// Bytes still to hand to the reactor (in random pieces).
    outbox: Vec<u8>,
    inbox: Vec<u8>,
    stage: Stage,
    pings_sent: u64,
    pongs: Vec<u64>,
    events: Vec<u64>,
    reset: bool,
    close_code: Option<u16>,
}

impl Client {
    fn queue(&mut self, v: Value) {
        self.outbox.extend(frame(0x81, v.to_string().as_bytes()));
    }

    /// Hands a random piece of what it has to send to the reactor.
    fn trickle(&mut self, rng: &mut Rng) {
        if self.outbox.is_empty() || self.reset {
            return;
        }
        let n = 1 + rng.below(self.outbox.len() as u64) as usize;
        let piece: Vec<u8> = self.outbox.drain(..n).collect();
        self.end.send(&piece);
        self.end.flush_tls();
    }

    /// Takes what the reactor wrote: the 101, then frames.
    fn absorb(&mut self) {
        self.inbox.extend(self.end.take_received());
        if self.stage == Stage::Upgrading {
            let Some(end) = self.inbox.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            let head = String::from_utf8_lossy(&self.inbox[..end]).to_string();
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            self.inbox.drain(..end + 4);
            self.stage = Stage::Greeted;
        }
        while let Some((first, payload, used)) = server_frame(&self.inbox) {
            self.inbox.drain(..used);
            match first & 0x0F {
                0x1 => self.on_text(serde_json::from_slice(&payload).expect("server JSON")),
                0x8 => {
                    self.close_code = Some(u16::from_be_bytes([payload[0], payload[1]]));
                    self.stage = Stage::Closed;
                }
                op => panic!("unexpected opcode {op}"),
            }
        }
    }

    fn on_text(&mut self, m: Value) {
        match m["type"].as_str() {
            Some("connection.established") => {
                self.queue(json!({"type": "subscribe", "data": {"events": ["review.updated"]}}));
            }
            Some("subscription.acknowledged") => self.stage = Stage::Subscribed,
            Some("pong") => self.pongs.push(m["data"]["pingId"].as_u64().unwrap()),
            Some("review.updated") => self.events.push(m["data"]["n"].as_u64().unwrap()),
            other => panic!("unexpected message {other:?}: {m}"),
        }
    }
}

/// One whole unmasked frame at the start of `b`: (first byte, payload, bytes used).
fn server_frame(b: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (head, len) = match *b.get(1)? {
        126 => (4, u16::from_be_bytes(b.get(2..4)?.try_into().ok()?) as usize),
        127 => (10, u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize),
        n if n < 126 => (2, n as usize),
        _ => panic!("a masked server frame"),
    };
    let payload = b.get(head..head + len)?.to_vec();
    Some((b[0], payload, head + len))
}

fn run(seed: u64) {
    let config = wsedge::Config {
        rate_limit_messages: 0,
        max_connections_per_user: 100,
        ..config()
    };
    let mut h = Harness::new(config, wsedge::app::ProtocolApp::default()).unwrap();
    let mut rng = Rng::new(seed);
    let (server_tls, client_tls) = tls_pair(seed);
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|i| {
            let stream_seed = seed.wrapping_mul(1000) + i as u64;
            let end = if i % 2 == 1 {
                let end = h.sim_connect_tls(stream_seed, &server_tls).expect("admitted");
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let mut wire = Wire {
                    end,
                    tls: Some(rustls::ClientConnection::new(client_tls.clone(), name).unwrap()),
                };
                wire.flush_tls();
                wire
            } else {
                Wire {
                    end: h.sim_connect(stream_seed).expect("admitted"),
                    tls: None,
                }
            };
            let request = upgrade_request(&format!("/ws?token={}", token(&format!("u{}", i % 7))));
            Client {
                end,
                outbox: request.into_bytes(),
                inbox: Vec::new(),
                stage: Stage::Upgrading,
                pings_sent: 0,
                pongs: Vec::new(),
                events: Vec::new(),
                reset: false,
                close_code: None,
            }
        })
        .collect();
    let mut published = 0;
    for turn in 0..20_000 {
        for c in clients.iter_mut() {
            c.trickle(&mut rng);
        }
        h.sim_turn();
        for c in clients.iter_mut().filter(|c| !c.reset) {
            c.absorb();
            if c.stage == Stage::Subscribed && c.pings_sent < PINGS && rng.chance(30) {
                c.queue(json!({"type": "ping", "data": {"pingId": c.pings_sent}}));
                c.pings_sent += 1;
            }
        }
        // A few clients vanish mid-stream (their next read or write fails).
        if turn % 50 == 7 {
            let i = rng.below(CLIENTS as u64) as usize;
            if clients[i].stage != Stage::Closed && !clients[i].reset && rng.chance(50) {
                clients[i].end.end.reset();
                clients[i].reset = true;
            }
        }
        let live: Vec<&Client> = clients.iter().filter(|c| !c.reset).collect();
        if published < EVENTS && live.iter().all(|c| c.stage == Stage::Subscribed) && rng.chance(40) {
            assert!(h.sim_publish("review.updated", json!({"n": published})));
            published += 1;
        }
        let done = |c: &&Client| c.pongs.len() as u64 == PINGS && c.events.len() as u64 == EVENTS;
        if published == EVENTS && live.iter().all(done) {
            for c in clients.iter_mut().filter(|c| !c.reset && c.stage == Stage::Subscribed) {
                c.outbox.extend(frame(0x88, &1000u16.to_be_bytes()));
                c.stage = Stage::Closing;
            }
        }
        if clients.iter().all(|c| c.reset || c.stage == Stage::Closed) {
            for c in clients.iter().filter(|c| !c.reset) {
                c.end.end.close();
            }
            for _ in 0..200 {
                h.sim_turn();
                if h.sim_open() == 0 {
                    break;
                }
            }
            break;
        }
    }
    let ordered: Vec<u64> = (0..PINGS).collect();
    let events: Vec<u64> = (0..EVENTS).collect();
    let mut survivors = 0;
    for (i, c) in clients.iter().enumerate().filter(|(_, c)| !c.reset) {
        survivors += 1;
        assert_eq!(c.pongs, ordered, "seed {seed}, client {i}: pongs");
        assert_eq!(c.events, events, "seed {seed}, client {i}: published messages");
        assert_eq!(c.close_code, Some(1000), "seed {seed}, client {i}: {:?}", c.stage);
    }
    assert!(survivors > CLIENTS / 2, "seed {seed}: most clients stay");
    let tls_done = clients
        .iter()
        .filter(|c| !c.reset)
        .filter(|c| c.end.tls.as_ref().is_some_and(|t| !t.is_handshaking()))
        .count();
    assert!(
        tls_done >= CLIENTS / 8,
        "seed {seed}: TLS clients completed too ({tls_done})"
    );
    assert_eq!(h.sim_open(), 0, "seed {seed}: every connection is gone");
    assert_eq!(h.census().connections, 0, "seed {seed}");
}

#[test]
fn many_connections_with_short_refused_and_reset_io_get_everything_once_in_order() {
    for seed in 1..=12 {
        run(seed);
    }
}

/// A TLS listener's configuration (a fresh self-signed certificate for `localhost`) and a
/// client that trusts it, on the suite the seed picks.
fn tls_pair(
    seed: u64,
) -> (
    std::sync::Arc<wsedge::testing::tls::ServerConfigs>,
    std::sync::Arc<rustls::ClientConfig>,
) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let server =
        wsedge::testing::tls::server_config(cert.cert.pem().as_bytes(), cert.signing_key.serialize_pem().as_bytes());
    let suites = wsedge::testing::tls::suites();
    let client = wsedge::testing::tls::client_config(suites[seed as usize % suites.len()], false);
    (server, client)
}
