//! Shutdown through the handle: stop accepting, close every connection with 1001, exit.
mod common;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn shutdown_closes_everyone_with_1001_and_stops() {
    let server = start(wsedge::Config {
        workers: 2,
        shutdown_timeout: Duration::from_secs(3),
        ..config()
    });
    let addr = server.local_addr();
    let mut clients: Vec<Ws> = (0..6).map(|i| connect(addr, &token(&format!("s{i}"))).0).collect();
    server.handle().shutdown();
    for ws in &mut clients {
        assert_eq!(expect_close(ws), (1001, "server shutting down".to_string()));
    }
    drop(clients);
    let start = Instant::now();
    server.wait().expect("no reactor died");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "reactors should stop once connections are gone"
    );
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "still accepting"
    );
}
