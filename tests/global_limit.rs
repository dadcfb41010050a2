//! Over `max_connections` the upgrade is refused with HTTP 503 before upgrading.
mod common;
use common::*;

#[test]
fn over_the_global_limit_gets_503() {
    let server = start(wsedge::Config {
        max_connections: 2,
        workers: 2,
        ..config()
    });
    let addr = server.local_addr();
    let (mut a, _) = connect(addr, &token("a"));
    let (_b, _) = connect(addr, &token("b"));
    match try_connect(addr, &format!("/ws?token={}", token("c")), &[]) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("expected 503, got {:?}", other.map(|_| "upgraded")),
    }
    assert_eq!(server.handle().stats().refused_with(503), 1);
    a.close(None).unwrap();
    while a.read().is_ok() {}
    wait_until("slot freed", || server.handle().open_connections() == 1);
    connect(addr, &token("c"));
}
