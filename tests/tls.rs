//! TLS on the main listener (`--tls-cert`, `--tls-key`), with real TLS clients: rustls under
//! tungstenite for `wss://` (TLS 1.3 and 1.2), curl for the admin API over the same listener,
//! a message large enough to span many records, the certificate reloaded without dropping
//! open connections, and what a bad certificate or a plaintext client gets.
mod common;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use serde_json::{Value, json};
use tungstenite::Message;
use wsedge::Config;

type TlsWs = tungstenite::WebSocket<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>;

struct Pki {
    dir: PathBuf,
    cert_pem: String,
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files in a fresh
/// directory.
fn pki(tag: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("wsedge-tls-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_cert(&dir)
}

fn write_cert(dir: &Path) -> Pki {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_pem = ck.cert.pem();
    std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    Pki {
        dir: dir.to_path_buf(),
        cert_pem,
    }
}

fn server(p: &Pki) -> wsedge::RunningServer {
    start(Config {
        workers: 2,
        handshake_timeout: std::time::Duration::from_secs(1),
        tls_cert: Some(p.dir.join("cert.pem")),
        tls_key: Some(p.dir.join("key.pem")),
        ..config()
    })
}

fn client_config(cert_pem: &str, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn wss(
    addr: SocketAddr,
    user: &str,
    cert_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (TlsWs, Value) {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(client_config(cert_pem, versions), name).unwrap();
    let tls = rustls::StreamOwned::new(conn, tcp);
    let url = format!("wss://localhost:{}/ws?token={}", addr.port(), token(user));
    let (mut ws, _) = tungstenite::client(url.as_str(), tls).unwrap();
    let hello = read_json(&mut ws);
    assert_eq!(hello["type"], "connection.established");
    (ws, hello)
}

fn read_json(ws: &mut TlsWs) -> Value {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn websockets_and_the_admin_api_speak_tls_1_3_and_1_2() {
    let p = pki("basic");
    let s = server(&p);
    let addr = s.local_addr();
    for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
        let (mut ws, _) = wss(addr, "tia", &p.cert_pem, versions);
        ws.send(Message::text(
            json!({"type": "ping", "data": {"pingId": "over tls"}}).to_string(),
        ))
        .unwrap();
        let pong = read_json(&mut ws);
        assert_eq!(
            (pong["type"].as_str(), pong["data"]["pingId"].as_str()),
            (Some("pong"), Some("over tls"))
        );
        // Larger than a TLS record (16 KiB): many records, one message.
        let text = "records ".repeat(6000);
        assert_eq!(s.handle().send_to_user("tia", "big", json!({"text": text})).unwrap(), 1);
        assert_eq!(read_json(&mut ws)["data"]["text"], text.as_str());
        ws.close(None).unwrap();
        loop {
            match ws.read() {
                Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed) => break,
                Ok(_) => continue,
                Err(e) => panic!("closing: {e}"),
            }
        }
    }
    require("curl", "curl");
    let out = std::process::Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(p.dir.join("cert.pem"))
        .args(["--resolve", &format!("localhost:{}:127.0.0.1", addr.port())])
        .arg(format!("https://localhost:{}/health", addr.port()))
        .output()
        .expect("curl is installed");
    assert_eq!(String::from_utf8_lossy(&out.stdout), r#"{"status":"ok"}"#);
    let _ = std::fs::remove_dir_all(&p.dir);
}

#[test]
fn a_reloaded_certificate_serves_new_connections_and_open_ones_stay() {
    let p = pki("reload");
    let s = server(&p);
    let addr = s.local_addr();
    let (mut old, _) = wss(addr, "rey", &p.cert_pem, &[&rustls::version::TLS13]);
    let fresh = write_cert(&p.dir);
    assert!(s.handle().reload_tls().unwrap());
    let (mut new, _) = wss(addr, "rey", &fresh.cert_pem, &[&rustls::version::TLS13]);
    for ws in [&mut old, &mut new] {
        ws.send(Message::text(r#"{"type":"ping","data":{}}"#)).unwrap();
        assert_eq!(read_json(ws)["type"], "pong");
    }
    // A broken file leaves the working certificate in place.
    std::fs::write(p.dir.join("key.pem"), "not a key").unwrap();
    assert!(s.handle().reload_tls().is_err());
    let (mut again, _) = wss(addr, "rey", &fresh.cert_pem, &[&rustls::version::TLS13]);
    again.send(Message::text(r#"{"type":"ping","data":{}}"#)).unwrap();
    assert_eq!(read_json(&mut again)["type"], "pong");
    let _ = std::fs::remove_dir_all(&p.dir);
}

#[test]
fn bad_certificates_fail_at_start_and_plaintext_clients_are_dropped() {
    let p = pki("bad");
    std::fs::write(
        p.dir.join("key.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = wsedge::Server::start(
        Config {
            tls_cert: Some(p.dir.join("cert.pem")),
            tls_key: Some(p.dir.join("key.pem")),
            ..config()
        },
        wsedge::app::ProtocolApp::default(),
    )
    .err()
    .expect("refused");
    assert!(err.to_string().starts_with("tls: "), "{err}");
    let err = wsedge::Server::start(
        Config {
            tls_cert: Some(p.dir.join("cert.pem")),
            ..config()
        },
        wsedge::app::ProtocolApp::default(),
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("go together"), "{err}");

    let p = pki("plain");
    let s = server(&p);
    let mut plain = raw(s.local_addr());
    plain.write_all(upgrade_request("/ws").as_bytes()).unwrap();
    expect_eof(&mut plain);
    // A client that never starts its TLS handshake is closed at the handshake timeout, with
    // nothing written in plain text on the TLS port.
    let mut silent = raw(s.local_addr());
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut silent, &mut got);
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    // The server is fine afterwards.
    let (mut ws, _) = wss(s.local_addr(), "ok", &p.cert_pem, &[&rustls::version::TLS13]);
    ws.send(Message::text(r#"{"type":"ping","data":{}}"#)).unwrap();
    assert_eq!(read_json(&mut ws)["type"], "pong");
    let _ = std::fs::remove_dir_all(&p.dir);
}

#[test]
fn an_address_over_its_share_is_refused_in_tls_not_in_plain_http() {
    let p = pki("per-ip");
    let s = start(Config {
        max_connections_per_ip: 2,
        tls_cert: Some(p.dir.join("cert.pem")),
        tls_key: Some(p.dir.join("key.pem")),
        ..config()
    });
    let addr = s.local_addr();
    let _held: Vec<TcpStream> = (0..2).map(|_| from(addr, "127.0.0.5")).collect();
    // The third socket gets one fatal access_denied alert record and EOF.
    let mut third = from(addr, "127.0.0.5");
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut third, &mut got);
    assert_eq!(got, [21, 3, 3, 0, 2, 2, 49]);
    // A real TLS client reads it as the alert it is.
    let tcp = from(addr, "127.0.0.5");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(client_config(&p.cert_pem, &[&rustls::version::TLS13]), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let err = tls.write_all(b"GET / HTTP/1.1\r\n\r\n").and_then(|_| tls.flush());
    let err = match err {
        Err(e) => e,
        Ok(()) => std::io::Read::read(&mut tls, &mut [0; 16]).expect_err("refused"),
    };
    assert!(err.to_string().contains("AccessDenied"), "{err}");
    // Other addresses are served.
    let (mut ws, _) = wss(addr, "elsewhere", &p.cert_pem, &[&rustls::version::TLS13]);
    ws.send(Message::text(r#"{"type":"ping","data":{}}"#)).unwrap();
    assert_eq!(read_json(&mut ws)["type"], "pong");
    assert!(s.handle().stats().refused_with(429) >= 2);
    let _ = std::fs::remove_dir_all(&p.dir);
}

#[test]
fn a_returning_client_resumes_its_session_from_a_ticket() {
    let p = pki("resume");
    let s = server(&p);
    let addr = s.local_addr();
    let config = client_config(&p.cert_pem, &[&rustls::version::TLS13]);
    let connect = || {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
        let url = format!("wss://localhost:{}/ws?token={}", addr.port(), token("ria"));
        let (mut ws, _) = tungstenite::client(url.as_str(), rustls::StreamOwned::new(conn, tcp)).unwrap();
        // The greeting comes after the ticket: reading it stores the ticket.
        assert_eq!(read_json(&mut ws)["type"], "connection.established");
        ws
    };
    let first = connect();
    assert_eq!(first.get_ref().conn.handshake_kind(), Some(rustls::HandshakeKind::Full));
    for _ in 0..3 {
        // Each resumed connection brings the ticket for the next.
        let again = connect();
        assert_eq!(
            again.get_ref().conn.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        );
    }
    let _ = std::fs::remove_dir_all(&p.dir);
}
