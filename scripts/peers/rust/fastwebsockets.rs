//! Echo/broadcast peer on fastwebsockets, current-thread runtime. The HTTP upgrade is done by
//! hand (fastwebsockets' server upgrade needs hyper). Each connection: a reader (collecting
//! fragments) and a writer fed by a channel; broadcast shares one buffer across channels.
//! TLS_CERT and TLS_KEY (PEM files) make it serve wss:// through tokio-rustls (ring), set up
//! the ordinary way.
use std::cell::RefCell;
use std::rc::Rc;

use base64::Engine as _;
use fastwebsockets::{FragmentCollectorRead, Frame, OpCode, Payload, Role, WebSocket, WebSocketError};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

type Out = (OpCode, Rc<[u8]>);
type Peers = Rc<RefCell<slab::Slab<mpsc::UnboundedSender<Out>>>>;

fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(9105);
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let tls = tls_acceptor();
        println!("fastwebsockets listening on {port} (tls: {})", tls.is_some());
        let peers: Peers = Rc::default();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let peers = peers.clone();
            let tls = tls.clone();
            tokio::task::spawn_local(async move {
                let _ = match tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(s) => handle(s, peers).await,
                        Err(_) => Ok(()),
                    },
                    None => handle(stream, peers).await,
                };
            });
        }
    });
}

fn tls_acceptor() -> Option<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = std::env::var("TLS_CERT").ok()?;
    let key = std::env::var("TLS_KEY").ok()?;
    let certs = CertificateDer::pem_file_iter(&cert).expect("cert").collect::<Result<Vec<_>, _>>().expect("cert");
    let key = PrivateKeyDer::from_pem_file(&key).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("certificate");
    Some(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

/// Reads the request head and answers 101; leftover bytes are not expected from clients that
/// wait for the response.
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> Result<(), Box<dyn std::error::Error>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Err("bad request".into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let key = text
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case("sec-websocket-key")).map(|(_, v)| v.trim().to_string()))
        .ok_or("no key")?;
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    let resp = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
    stream.write_all(resp.as_bytes()).await?;
    Ok(())
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin + 'static>(mut stream: S, peers: Peers) -> Result<(), Box<dyn std::error::Error>> {
    upgrade(&mut stream).await?;
    let mut ws = WebSocket::after_handshake(stream, Role::Server);
    ws.set_max_message_size(16 << 20);
    ws.set_auto_pong(true);
    ws.set_auto_close(true);
    let (read, mut write) = ws.split(tokio::io::split);
    let mut read = FragmentCollectorRead::new(read);
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let id = peers.borrow_mut().insert(tx.clone());
    let writer = tokio::task::spawn_local(async move {
        while let Some((op, data)) = rx.recv().await {
            if write.write_frame(Frame::new(true, op, None, Payload::Borrowed(&data))).await.is_err() {
                break;
            }
        }
    });
    loop {
        let obligated = tx.clone();
        let frame = read
            .read_frame(&mut move |f: Frame<'_>| {
                let _ = obligated.send((f.opcode, Rc::from(&f.payload[..])));
                async { Ok::<_, WebSocketError>(()) }
            })
            .await;
        let Ok(frame) = frame else { break };
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text if frame.payload.starts_with(b"broadcast") => {
                let shared: Rc<[u8]> = Rc::from(&frame.payload[..]);
                for (_, p) in peers.borrow().iter() {
                    let _ = p.send((OpCode::Text, shared.clone()));
                }
            }
            OpCode::Text | OpCode::Binary => {
                let _ = tx.send((frame.opcode, Rc::from(&frame.payload[..])));
            }
            _ => {}
        }
    }
    peers.borrow_mut().remove(id);
    drop(tx);
    let _ = writer.await;
    Ok(())
}
