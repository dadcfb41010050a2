//! Echo/broadcast peer on tokio-tungstenite, current-thread runtime (one core, like wsedge
//! pinned). Each connection: a reader task and a writer fed by a channel; broadcast clones the
//! message (a refcount) into every connection's channel.
use std::cell::RefCell;
use std::rc::Rc;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

type Peers = Rc<RefCell<slab::Slab<mpsc::UnboundedSender<Message>>>>;

fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(9104);
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        println!("tokio-tungstenite listening on {port}");
        let peers: Peers = Rc::default();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let peers = peers.clone();
            tokio::task::spawn_local(async move {
                let _ = handle(stream, peers).await;
            });
        }
    });
}

async fn handle(stream: tokio::net::TcpStream, peers: Peers) -> Result<(), Box<dyn std::error::Error>> {
    let config = WebSocketConfig::default().max_message_size(Some(16 << 20)).max_frame_size(Some(16 << 20));
    let ws = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let id = peers.borrow_mut().insert(tx.clone());
    let writer = tokio::task::spawn_local(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
    });
    while let Some(msg) = source.next().await {
        match msg {
            Ok(Message::Text(t)) if t.as_str().starts_with("broadcast") => {
                for (_, p) in peers.borrow().iter() {
                    let _ = p.send(Message::Text(t.clone()));
                }
            }
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                let _ = tx.send(m);
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    peers.borrow_mut().remove(id);
    drop(tx);
    let _ = writer.await;
    Ok(())
}
