//! The echo server: no auth, any path, text echoed as text and binary as binary (including
//! fragmented and large messages), `broadcast...` text sent to every connection.
mod common;
use std::net::SocketAddr;

use common::*;
use tungstenite::Message;
use wsedge::app::EchoApp;
use wsedge::{AuthMode, Config, Server};

fn echo_server() -> wsedge::RunningServer {
    let cfg = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        auth: AuthMode::Anonymous,
        ws_path: None,
        max_message_size: 16 << 20,
        max_outbound_bytes: 64 << 20,
        ..Config::default()
    };
    Server::start(cfg, EchoApp).unwrap()
}

fn client(addr: SocketAddr, path: &str) -> Ws {
    try_connect(addr, path, &[]).expect("anonymous upgrade on any path")
}

#[test]
fn echoes_text_and_binary_unchanged() {
    let server = echo_server();
    let mut ws = client(server.local_addr(), "/any/path?x=1");
    ws.send(Message::text("héllo")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("héllo"));
    ws.send(Message::binary(vec![0u8, 255, 1])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![0u8, 255, 1]));
    let big = "x".repeat(1 << 20);
    ws.send(Message::text(big.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text(big));
}

#[test]
fn sixteen_mib_message_in_many_fragments_is_echoed() {
    let server = echo_server();
    let mut s = raw(server.local_addr());
    std::io::Write::write_all(&mut s, upgrade_request("/").as_bytes()).unwrap();
    assert_eq!(read_http(&mut s).0, 101);
    let total = 16 << 20;
    let chunk = total / 65_536;
    let mut bytes = Vec::with_capacity(total + 65_536 * 8);
    for i in 0..65_536 {
        let first = match i {
            0 => 0x02,
            65_535 => 0x80,
            _ => 0x00,
        };
        bytes.extend(frame(first, &vec![(i % 251) as u8; chunk]));
    }
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || std::io::Write::write_all(&mut s, &bytes).unwrap())
    };
    s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let (first, payload) = read_frame(&mut s);
    writer.join().unwrap();
    assert_eq!(first, 0x82);
    assert_eq!(payload.len(), total);
    assert!(
        payload
            .chunks(chunk)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&b| b == (i % 251) as u8))
    );
}

#[test]
fn broadcast_goes_to_every_connection_on_every_reactor() {
    let server = echo_server();
    let addr = server.local_addr();
    let mut clients: Vec<Ws> = (0..8).map(|_| client(addr, "/")).collect();
    clients[0].send(Message::text("broadcast hello all")).unwrap();
    for ws in &mut clients {
        assert_eq!(ws.read().unwrap(), Message::text("broadcast hello all"));
    }
}
