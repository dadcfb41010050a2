//! Restarts that refuse no one, with real processes: a second `wsedge` started with the same
//! `--handover-socket` takes over the listening sockets of the running one, which drains (its
//! connections closed with 1001) and exits; handshakes made all the while never fail.
mod common;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::*;

fn spawn(listen: &str, socket: &std::path::Path) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsedge"))
        .args(["serve", "--listen", listen, "--workers", "2", "--jwt-secret", SECRET])
        .args([
            "--drain-window",
            "1",
            "--max-connections-per-ip",
            "0",
            "--rate-limit-messages",
            "0",
        ])
        .arg("--handover-socket")
        .arg(socket)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let addr = listening_addr(&mut child);
    (child, addr)
}

#[test]
fn a_successor_takes_the_sockets_and_no_handshake_fails() {
    let dir = std::env::temp_dir().join(format!("wsedge-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("handover.sock");
    let (mut old, addr) = spawn("127.0.0.1:0", &socket);
    let mut before: Vec<Ws> = (0..20).map(|i| connect(addr, &token(&format!("old{i}"))).0).collect();

    // A steady stream of handshakes through the whole restart.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stream = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match try_connect(addr, &format!("/ws?token={}", token("stream")), &[]) {
                    Ok(mut ws) => {
                        let hello = recv_json(&mut ws);
                        assert_eq!(hello["type"], "connection.established");
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(e.to_string());
                    }
                }
            }
            errors
        })
    };
    wait_until("handshakes flow", || ok.load(Ordering::Relaxed) >= 20);

    let (mut new, new_addr) = spawn(&addr.to_string(), &socket);
    assert_eq!(new_addr, addr, "the same port");
    for ws in before.iter_mut() {
        let (code, reason) = expect_close(ws);
        assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
    }
    let status = old.wait().unwrap();
    assert!(status.success(), "the old process drained and exited: {status:?}");
    let at_exit = ok.load(Ordering::Relaxed);
    wait_until("handshakes go on with the new process alone", || {
        ok.load(Ordering::Relaxed) >= at_exit + 50
    });
    stop.store(true, Ordering::Relaxed);
    let errors = stream.join().unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "refused or reset: {errors:?}");

    // And the new process hands over in turn.
    let (mut third, _) = spawn(&addr.to_string(), &socket);
    assert!(new.wait().unwrap().success());
    let (mut ws, _) = connect(addr, &token("after"));
    send_json(&mut ws, serde_json::json!({"type": "ping", "data": {}}));
    assert_eq!(recv_json(&mut ws)["type"], "pong");
    let _ = third.kill();
    let _ = third.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
