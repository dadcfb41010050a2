//! The FastAPI example backend (scripts/examples/fastapi_backend.py) run for real beside a
//! server: auth proxy by cookie, rpcs answered in the batch and later through the admin
//! route, chat relayed to a room without echo, upload.cancel answered to one connection.

mod common;

use std::process::{Child, Command, Stdio};

use common::redis::reserve_port;
use common::*;
use serde_json::json;
use wsedge::config::{AuthProxyConfig, BackendConfig, Forwarding, LifecycleEvents};

struct Python(Child);

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fastapi_installed() {
    let ok = Command::new("python3")
        .args(["-c", "import fastapi, uvicorn"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test needs FastAPI: `pip install fastapi uvicorn` (.ci/run does)"
    );
}

#[test]
fn the_fastapi_example_backend_works_end_to_end() {
    fastapi_installed();
    let port = reserve_port();
    let base = format!("http://127.0.0.1:{}/wsedge", port.port);
    let mut c = config();
    c.backend = Some(BackendConfig::from_url(&format!("{base}/events")).unwrap());
    c.forward = Forwarding::parse("chat,upload.cancel,rpc").unwrap();
    c.backend_events = LifecycleEvents::parse("all").unwrap();
    c.auth_proxy = Some(AuthProxyConfig::from_url(&format!("{base}/auth")).unwrap());
    let server = start(c);
    let addr = server.local_addr();
    let python = Command::new("python3")
        .args(["scripts/examples/fastapi_backend.py", "--port", &port.port.to_string()])
        .args([
            "--wsedge",
            &format!("http://{addr}"),
            "--admin-token",
            &admin_token("backend"),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let _python = Python(python);
    drop(port);
    wait_until("the example backend listens", || {
        std::net::TcpStream::connect(("127.0.0.1", server_port(&base))).is_ok()
    });
    let mut alice = try_connect(addr, "/ws", &[("Cookie", "session=alice")]).expect("alice is let in");
    assert_eq!(recv_json(&mut alice)["data"]["user_id"], "alice");
    match try_connect(addr, "/ws", &[("Cookie", "session=")]) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    send_json(
        &mut alice,
        json!({"type": "rpc", "id": 1, "data": {"method": "math.add", "params": [2, 3]}}),
    );
    assert_eq!(next_of(&mut alice, "rpc.result")["data"]["result"], 5);
    send_json(
        &mut alice,
        json!({"type": "rpc", "id": 2, "data": {"method": "tasks.later", "params": "job"}}),
    );
    let r = next_of(&mut alice, "rpc.result");
    assert_eq!(
        (r["data"]["id"].clone(), r["data"]["result"].clone()),
        (json!(2), json!({"done": "job"}))
    );
    send_json(&mut alice, json!({"type": "rpc", "id": 3, "data": {"method": "nope"}}));
    assert_eq!(next_of(&mut alice, "error")["data"]["error"]["code"], "unknown_method");
    send_json(
        &mut alice,
        json!({"type": "upload.cancel", "data": {"upload_id": "u1"}}),
    );
    assert_eq!(next_of(&mut alice, "upload.cancelled")["data"]["upload_id"], "u1");
    // A chat reaches the room's other members, not its sender.
    let mut bob = try_connect(addr, "/ws", &[("Cookie", "session=bob")]).expect("bob is let in");
    recv_json(&mut bob);
    for ws in [&mut alice, &mut bob] {
        send_json(ws, json!({"type": "join", "data": {"rooms": ["lobby"]}}));
        next_of(ws, "room.joined");
    }
    send_json(
        &mut alice,
        json!({"type": "chat", "data": {"room": "lobby", "text": "hi bob"}}),
    );
    let chat = next_of(&mut bob, "chat");
    assert_eq!(
        (chat["data"]["from"].clone(), chat["data"]["text"].clone()),
        (json!("alice"), json!("hi bob"))
    );
    send_json(&mut alice, json!({"type": "ping", "data": {}}));
    assert_eq!(recv_json(&mut alice)["type"], "pong", "alice got no echo of her chat");
}

fn server_port(base: &str) -> u16 {
    base.trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
