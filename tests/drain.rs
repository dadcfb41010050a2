//! Drain: `/ready` turns 503, connections are closed with 1001 in batches spread over the drain
//! window (not all at once), the handler's `on_drain` runs first, then the server exits.
mod common;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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
    let start = Instant::now();
    handle.drain();
    // The main listener is closed (a successor sharing the port gets new connections); the
    // admin listener keeps answering, and says not ready.
    assert_eq!(
        json(admin, "GET", "/ready", None, None).0,
        503,
        "not ready while draining"
    );
    assert!(std::net::TcpStream::connect(addr).is_err(), "no longer accepting");
    let times: Vec<Duration> = std::thread::scope(|s| {
        let joins: Vec<_> = clients
            .into_iter()
            .map(|mut ws| {
                s.spawn(move || {
                    assert_eq!(expect_close(&mut ws).0, 1001);
                    start.elapsed()
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    });
    let first = *times.iter().min().unwrap();
    let last = *times.iter().max().unwrap();
    assert!(first < Duration::from_millis(600), "first batch at once: {first:?}");
    assert!(
        last >= Duration::from_millis(1000),
        "closes spread over the window: last at {last:?}"
    );
    assert!(last < Duration::from_millis(3000), "{last:?}");
    server.wait();
    wait_until("admin listener released after stop", || {
        std::net::TcpStream::connect(admin).is_err()
    });
}

struct Goodbye(Arc<AtomicUsize>);
impl Handler for Goodbye {
    fn on_drain(&self, ctx: &mut Ctx<'_>) {
        self.0.fetch_add(1, Ordering::SeqCst);
        ctx.send_text("goodbye");
    }
}

#[test]
fn on_drain_runs_before_the_close() {
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
    server.wait();
    assert_eq!(count.load(Ordering::SeqCst), 1);
}
