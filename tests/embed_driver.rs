//! Embedding on your own thread, turn by turn: a reactor driven with `ReactorDriver::turn`,
//! handlers handed to each reactor by value (`each_reactor`), `on_close` with its reactor,
//! `on_stop`, cancelled timers, and `ServerHandle` calls made inside a callback refused
//! instead of answering wrong.
mod common;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use wsedge::{
    Closed, Ctx, HandleError, Handler, ReactorCtx, ReactorHandler, Server, ServerError, TimerId, each_reactor,
};

#[derive(Debug, PartialEq)]
enum Seen {
    Timer(TimerId),
    Closed { code: u16, reactor: usize },
    Stopped,
}

/// Owns its sender outright: no lock, no `Option`, no `Sync` needed of the handler.
struct Probe {
    seen: mpsc::Sender<Seen>,
}

impl ReactorHandler for Probe {
    fn on_start(&mut self, r: &mut ReactorCtx<'_>) {
        r.set_timer(1, Duration::from_millis(100));
        r.set_timer(2, Duration::from_millis(100));
        r.cancel_timer(2);
        // Due in the same tick as timer 1, and cancelled by it: it must not fire either.
        r.set_timer(3, Duration::from_millis(100));
    }
    fn on_timer(&mut self, r: &mut ReactorCtx<'_>, timer: TimerId) {
        if timer == 1 {
            r.cancel_timer(3);
        }
        let _ = self.seen.send(Seen::Timer(timer));
    }
    fn on_text(&mut self, ctx: &mut Ctx<'_>, text: &str) {
        ctx.send_text(text);
    }
    fn on_close(&mut self, r: &mut ReactorCtx<'_>, closed: &Closed<'_>) {
        let _ = self.seen.send(Seen::Closed {
            code: closed.code,
            reactor: r.reactor(),
        });
    }
    fn on_stop(&mut self, _r: &mut ReactorCtx<'_>) {
        let _ = self.seen.send(Seen::Stopped);
    }
}

#[test]
fn a_reactor_driven_turn_by_turn_fires_timers_reports_closes_and_stops() {
    let (tx, rx) = mpsc::channel();
    let prepared = Server::prepare(config(), each_reactor(vec![Probe { seen: tx }])).unwrap();
    let addr = prepared.handle.local_addr();
    let handle = prepared.handle.clone();
    let mut driver = prepared.reactors.into_iter().next().unwrap().into_driver();
    assert!(
        std::os::fd::AsRawFd::as_raw_fd(&driver) >= 0,
        "a poll descriptor to nest"
    );
    // This thread drives the reactor: a call that would wait for it is refused, not stalled.
    assert!(matches!(handle.census(), Err(HandleError::OnReactorThread)));
    let client = std::thread::spawn(move || {
        let mut ws = try_connect(addr, &format!("/ws?token={}", token("driven")), &[]).unwrap();
        ws.send(tungstenite::Message::text("echo me")).unwrap();
        let back = ws.read().unwrap();
        ws.close(Some(tungstenite::protocol::CloseFrame {
            code: tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "done".into(),
        }))
        .unwrap();
        while ws.read().is_ok() {}
        back.into_text().unwrap().to_string()
    });
    let mut seen = Vec::new();
    let mut turns = 0;
    while !(seen.contains(&Seen::Timer(1)) && seen.iter().any(|s| matches!(s, Seen::Closed { .. }))) {
        assert!(driver.turn(Some(Duration::from_millis(20))).unwrap(), "still running");
        seen.extend(rx.try_iter());
        turns += 1;
        assert!(turns < 1000, "timer and close never came: {seen:?}");
    }
    assert_eq!(client.join().unwrap(), "echo me");
    handle.drain();
    while driver.turn(Some(Duration::from_millis(20))).unwrap() {}
    seen.extend(rx.try_iter());
    assert!(
        !seen.contains(&Seen::Timer(2)),
        "a cancelled timer never fires: {seen:?}"
    );
    assert!(
        !seen.contains(&Seen::Timer(3)),
        "nor one cancelled in the same turn: {seen:?}"
    );
    assert!(seen.contains(&Seen::Closed { code: 1000, reactor: 0 }), "{seen:?}");
    assert_eq!(seen.last(), Some(&Seen::Stopped), "on_stop comes last: {seen:?}");
    assert!(
        !driver.turn(Some(Duration::ZERO)).unwrap(),
        "a finished reactor stays finished"
    );
}

#[test]
fn each_reactor_needs_one_handler_per_reactor() {
    let cfg = wsedge::Config { workers: 2, ..config() };
    let (tx, _rx) = mpsc::channel();
    match Server::start(cfg, each_reactor(vec![Probe { seen: tx }])) {
        Err(ServerError::Factory(why)) => assert!(why.contains("1 handlers for 2 reactors"), "{why}"),
        other => panic!("expected a factory error, got {:?}", other.map(|_| ())),
    }
}

/// Answers each message with what a `ServerHandle` call made inside the callback returned.
struct AsksTheHandle;
impl Handler for AsksTheHandle {
    fn on_text(&self, ctx: &mut Ctx<'_>, _text: &str) {
        let answer = match ctx.handle().census() {
            Ok(c) => format!("census: {} connections", c.connections),
            Err(e) => format!("error: {e:?}"),
        };
        ctx.send_text(&answer);
    }
}

#[test]
fn a_waiting_server_handle_call_inside_a_callback_is_refused_not_answered_wrong() {
    let server = Server::start(config(), AsksTheHandle).unwrap();
    let addr = server.local_addr();
    let mut open: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|u| try_connect(addr, &format!("/ws?token={}", token(u)), &[]).unwrap())
        .collect();
    open[0].send(tungstenite::Message::text("how many?")).unwrap();
    let reply = open[0].read().unwrap().into_text().unwrap().to_string();
    assert_eq!(reply, format!("error: {:?}", HandleError::OnReactorThread));
    // The same call from any other thread waits and answers.
    assert_eq!(server.handle().census().unwrap().connections, 3);
}

/// Anonymous connections in a room the application names: each joins on its own in `on_open`,
/// a message from one reaches the others, and the room goes with its last member.
struct Lobby;
impl Handler for Lobby {
    fn on_open(&self, ctx: &mut Ctx<'_>) {
        assert_eq!(ctx.add_to_room("lobby"), Ok(true));
        assert_eq!(ctx.add_to_room("lobby"), Ok(false), "already in it");
        assert_eq!(ctx.rooms(), vec!["lobby".to_string()]);
    }
    fn on_text(&self, ctx: &mut Ctx<'_>, text: &str) {
        if text == "leave" {
            assert!(ctx.leave_room("lobby"));
            ctx.send_text("left");
            return;
        }
        ctx.asks().send_to_room("lobby", "chat", text, None);
    }
}

fn next_text(ws: &mut common::Ws) -> String {
    loop {
        match ws.read().expect("a message") {
            tungstenite::Message::Text(t) => return t.to_string(),
            _ => continue,
        }
    }
}

#[test]
fn anonymous_connections_join_rooms_the_application_names() {
    let cfg = wsedge::Config {
        auth: wsedge::AuthMode::Anonymous,
        workers: 2,
        ..config()
    };
    let server = Server::start(cfg, Lobby).unwrap();
    let addr = server.local_addr();
    let mut a = try_connect(addr, "/ws", &[]).unwrap();
    let mut b = try_connect(addr, "/ws", &[]).unwrap();
    let mut c = try_connect(addr, "/ws", &[]).unwrap();
    wait_until("three open, one room per reactor that has a member", || {
        let census = server.handle().census().unwrap();
        census.connections == 3 && census.rooms >= 1
    });
    a.send(tungstenite::Message::text("hello")).unwrap();
    for ws in [&mut a, &mut b, &mut c] {
        let m: serde_json::Value = serde_json::from_str(&next_text(ws)).unwrap();
        assert_eq!((m["type"].as_str(), m["data"].as_str()), (Some("chat"), Some("hello")));
    }
    c.send(tungstenite::Message::text("leave")).unwrap();
    assert_eq!(next_text(&mut c), "left");
    b.send(tungstenite::Message::text("again")).unwrap();
    for ws in [&mut a, &mut b] {
        let m: serde_json::Value = serde_json::from_str(&next_text(ws)).unwrap();
        assert_eq!(m["data"], "again");
    }
    c.send(tungstenite::Message::text("ping-self")).unwrap();
    // c left: the message it sends to the room reaches a and b, not c itself.
    for ws in [&mut a, &mut b] {
        assert!(next_text(ws).contains("ping-self"));
    }
    drop((a, b, c));
    wait_until("the room goes with its last member", || {
        let census = server.handle().census().unwrap();
        census.connections == 0 && census.rooms == 0
    });
}
