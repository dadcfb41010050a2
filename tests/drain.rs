//! Drain: `/ready` turns 503, connections are closed with 1001 in batches spread over the drain
//! window (not all at once), the handler's `on_server_draining` runs first, then the server exits.
mod common;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::http::json;
use common::*;
use wsedge::{Ctx, Handler, Server};

#[test]
fn drain_spreads_closes_over_the_window() {
    let server = start(wsedge::Config {
        workers: 2,
        drain_window: Duration::from_millis(1500),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..config()
    });
    let addr = server.local_addr();
    let admin = server.admin_addr().unwrap();
    assert_eq!(json(admin, "GET", "/ready", None, None).0, 200);
    let clients: Vec<Ws> = (0..20).map(|i| connect(addr, &token(&format!("d{i}"))).0).collect();
    let handle = server.handle();
    handle.drain();
    // The main listener is closed (a successor sharing the port gets new connections); the
    // admin listener keeps answering, and says not ready.
    assert_eq!(
        json(admin, "GET", "/ready", None, None).0,
        503,
        "not ready while draining"
    );
    assert!(std::net::TcpStream::connect(addr).is_err(), "no longer accepting");
    // Closes come in batches: when the first client sees its 1001, most others are still open
    // (not closing yet). Checked by order of events, not by the clock.
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let joins: Vec<_> = clients
            .into_iter()
            .map(|mut ws| {
                let first_tx = first_tx.clone();
                s.spawn(move || {
                    assert_eq!(expect_close(&mut ws).0, 1001);
                    let _ = first_tx.send(());
                })
            })
            .collect();
        first_rx.recv().unwrap();
        let still_open = handle.open_connections();
        assert!(
            still_open >= 5,
            "a drain closes in batches, not all at once: {still_open} of 20 left after the first close"
        );
        for j in joins {
            j.join().unwrap();
        }
    });
    server.wait().expect("no reactor died");
    wait_until("admin listener released after stop", || {
        std::net::TcpStream::connect(admin).is_err()
    });
}

struct Goodbye(Arc<AtomicUsize>);
impl Handler for Goodbye {
    fn on_server_draining(&self, ctx: &mut Ctx<'_>) {
        self.0.fetch_add(1, Ordering::SeqCst);
        ctx.send_text("goodbye");
    }
}

#[test]
fn on_server_draining_runs_before_the_close() {
    let count = Arc::new(AtomicUsize::new(0));
    let server = Server::start(
        wsedge::Config {
            drain_window: Duration::ZERO,
            ..config()
        },
        Goodbye(count.clone()),
    )
    .unwrap();
    let mut ws = try_connect(server.local_addr(), &format!("/ws?token={}", token("g")), &[]).unwrap();
    server.handle().drain();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("goodbye"));
    assert_eq!(expect_close(&mut ws).0, 1001);
    drop(ws);
    server.wait().expect("no reactor died");
    assert_eq!(count.load(Ordering::SeqCst), 1);
}
