//! Failures inside the server stay contained and visible: a panicking handler costs only its
//! connection; a dead reactor makes the server unready and its exit a failure; a handler
//! calling back into the server never stalls its own reactor.
mod common;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::http::json;
use common::*;
use tungstenite::Message;
use wsedge::{Ctx, Handler, Server};

struct Fragile;
impl Handler for Fragile {
    fn on_text(&self, ctx: &mut Ctx<'_>, text: &str) {
        if text == "boom" {
            panic!("handler bug");
        }
        ctx.send_text(text);
    }
}

#[test]
fn a_panicking_handler_closes_only_its_connection() {
    let server = Server::start(config(), Fragile).unwrap();
    let addr = server.local_addr();
    let connect_raw = |user: &str| try_connect(addr, &format!("/ws?token={}", token(user)), &[]).unwrap();
    let mut victim = connect_raw("v");
    let mut bystander = connect_raw("b");
    victim.send(Message::text("boom")).unwrap();
    assert_eq!(expect_close(&mut victim), (1011, "internal error".to_string()));
    bystander.send(Message::text("still here")).unwrap();
    assert_eq!(bystander.read().unwrap(), Message::text("still here"));
    assert_eq!(server.handle().stats().handler_panics, 1);
    assert_eq!(json(addr, "GET", "/ready", None, None).0, 200);
}

#[test]
fn a_dead_reactor_is_visible_and_the_exit_is_a_failure() {
    let server = start(wsedge::Config {
        workers: 2,
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        drain_window: std::time::Duration::from_millis(500),
        close_timeout: std::time::Duration::from_secs(1),
        ..config()
    });
    let admin = server.admin_addr().unwrap();
    assert_eq!(json(admin, "GET", "/ready", None, None).0, 200);
    // A connection on the reactor that stays alive keeps the drain (and so the admin
    // listener) going while we look. Its id's fifth byte names its reactor.
    let addr = server.local_addr();
    let _live = (0..64)
        .map(|i| connect(addr, &token(&format!("u{i}"))))
        .find(|(_, hello)| {
            let id: uuid::Uuid = hello["data"]["connection_id"].as_str().unwrap().parse().unwrap();
            id.as_bytes()[4] == 0
        })
        .expect("a user homed on reactor 0");
    let handle = server.handle();
    handle.inject_reactor_panic(1);
    wait_until("the reactor is marked dead", || handle.dead_reactors() == 1);
    let (status, body) = json(admin, "GET", "/ready", None, None);
    assert_eq!((status, body["status"].as_str()), (503, Some("failed")));
    let (_, _, metrics) = common::http::request(admin, "GET", "/metrics", Some(&admin_token("metrics")), None);
    assert!(metrics.contains("wsedge_dead_reactors 1"), "{metrics}");
    // Calls that need the dead reactor answer at once instead of waiting for it.
    let _ = handle.census().unwrap();
    let err = server.wait().expect_err("a dead reactor makes wait() fail");
    assert!(matches!(err, wsedge::ServerError::ReactorDied(1)), "{err}");
}

/// Calls back into the server from inside a callback, then answers with what it was told.
struct Reentrant(Arc<AtomicUsize>);
impl Handler for Reentrant {
    fn on_text(&self, ctx: &mut Ctx<'_>, _text: &str) {
        let h = ctx.handle();
        let census = h.census();
        let sent = h.broadcast("system.notification", serde_json::json!({"m": 1}));
        self.0.fetch_add(1, Ordering::SeqCst);
        ctx.send_text(&format!("done: {census:?} {sent:?}"));
    }
}

#[test]
fn a_handler_calling_the_handle_is_refused_at_once_not_stalled_or_answered_wrong() {
    let calls = Arc::new(AtomicUsize::new(0));
    let server = Server::start(config(), Reentrant(calls.clone())).unwrap();
    let mut ws = try_connect(server.local_addr(), &format!("/ws?token={}", token("r")), &[]).unwrap();
    // Once, the reactor waited 10 s for its own reply (the client's 5 s read timeout would
    // fail here); then it answered without waiting, and wrongly (a census of 0). Now both
    // calls are refused, and nothing is sent.
    ws.send(Message::text("go")).unwrap();
    let reply = loop {
        match ws.read().expect("answer without stalling") {
            Message::Text(t) => break t.to_string(),
            _ => continue,
        }
    };
    assert_eq!(reply, "done: Err(OnReactorThread) Err(OnReactorThread)");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The refused broadcast reached no one: the next message is the answer to the next text.
    ws.send(Message::text("again")).unwrap();
    let next = loop {
        match ws.read().expect("second answer") {
            Message::Text(t) => break t.to_string(),
            _ => continue,
        }
    };
    assert!(next.starts_with("done:"), "{next}");
}

/// A second server on a port another one holds fails clearly, unless both share it on purpose.
#[test]
fn a_busy_port_is_an_error_unless_shared_with_reuse_port() {
    let first = start(config());
    let addr = first.local_addr();
    match wsedge::Server::start(
        wsedge::Config {
            listen: addr,
            ..config()
        },
        wsedge::app::ProtocolApp::default(),
    ) {
        Err(e @ wsedge::ServerError::Bind { .. }) => {
            assert!(e.to_string().contains("Address already in use"), "{e}")
        }
        Err(e) => panic!("expected a bind error, got {e}"),
        Ok(_) => panic!("a second server started silently on a busy port"),
    }
    drop(first);
    let shared = |addr| wsedge::Config {
        listen: addr,
        reuse_port: true,
        ..config()
    };
    let a = start(shared("127.0.0.1:0".parse().unwrap()));
    let b = start(shared(a.local_addr()));
    assert_eq!(a.local_addr(), b.local_addr());
    // Both serve: connections spread by the kernel reach one or the other.
    for i in 0..8 {
        connect(a.local_addr(), &token(&format!("shared-{i}")));
    }
    assert_eq!(a.handle().stats().accepted + b.handle().stats().accepted, 8);
}
