//! A real HTTP backend for the bridge tests: a listener on 127.0.0.1:0, a thread per
//! connection, keep-alive, every request's JSON body recorded, and an answer chosen per
//! request by the test.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// What the backend does with one request.
pub enum Answer {
    /// Status and body (JSON text).
    Reply(u16, String),
    /// Raw bytes written as the response (malformed, huge, half a response...), then the
    /// connection is closed.
    Raw(Vec<u8>),
    /// Read the request and never answer (the connection stays open until the test ends).
    Stall,
    /// Wait for the test's go-ahead on this channel, then answer.
    After(Receiver<()>, Box<Answer>),
}

pub type Policy = Box<dyn FnMut(&Value) -> Answer + Send>;

pub struct Backend {
    pub addr: SocketAddr,
    /// Every request body, as JSON, in arrival order.
    pub requests: Receiver<Value>,
    /// Connections accepted.
    pub connections: Arc<Mutex<usize>>,
}

impl Backend {
    /// A backend answering each request as `policy` says.
    pub fn start(policy: impl FnMut(&Value) -> Answer + Send + 'static) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = channel();
        let policy: Arc<Mutex<Policy>> = Arc::new(Mutex::new(Box::new(policy)));
        let connections = Arc::new(Mutex::new(0));
        let conns = connections.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { return };
                *conns.lock().unwrap() += 1;
                let (tx, policy) = (tx.clone(), policy.clone());
                std::thread::spawn(move || serve(s, tx, policy));
            }
        });
        Backend {
            addr,
            requests: rx,
            connections,
        }
    }

    /// A backend that takes everything with `200 {}`.
    pub fn accepting() -> Backend {
        Backend::start(|_| Answer::Reply(200, "{}".into()))
    }

    pub fn url(&self) -> String {
        format!("http://{}/events", self.addr)
    }

    /// The next request's body.
    pub fn next(&self) -> Value {
        self.requests
            .recv_timeout(Duration::from_secs(10))
            .expect("a backend request")
    }

    /// Requests until one has an item matching `pred`; returns that item.
    pub fn item(&self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let batch = self.next();
            if let Some(i) = batch["items"].as_array().unwrap().iter().find(|i| pred(i)) {
                return i.clone();
            }
        }
    }
}

/// Replies to `rpc` items of a batch with `f(item)` as their `result`.
pub fn results(batch: &Value, f: impl Fn(&Value) -> Value) -> String {
    let results: Vec<Value> = batch["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "rpc")
        .map(|i| serde_json::json!({"message_id": i["message_id"], "result": f(i)}))
        .collect();
    serde_json::json!({ "results": results }).to_string()
}

fn serve(mut s: TcpStream, tx: Sender<Value>, policy: Arc<Mutex<Policy>>) {
    let mut buf = Vec::new();
    loop {
        let Some((head_len, body_len)) = read_head(&mut s, &mut buf) else {
            return;
        };
        while buf.len() < head_len + body_len {
            let mut chunk = [0u8; 65536];
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Value = serde_json::from_slice(&buf[head_len..head_len + body_len]).expect("a JSON body");
        buf.drain(..head_len + body_len);
        let answer = policy.lock().unwrap()(&body);
        let _ = tx.send(body);
        if !answer_with(&mut s, answer) {
            return;
        }
    }
}

/// Writes the answer; false if the connection is done.
fn answer_with(s: &mut TcpStream, answer: Answer) -> bool {
    match answer {
        Answer::Reply(status, body) => {
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).is_ok() && s.write_all(body.as_bytes()).is_ok()
        }
        Answer::Raw(bytes) => {
            let _ = s.write_all(&bytes);
            false
        }
        Answer::Stall => {
            let mut sink = [0u8; 1024];
            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
            false
        }
        Answer::After(go, then) => {
            let _ = go.recv();
            answer_with(s, *then)
        }
    }
}

/// Reads until a whole request head is in `buf`: its length and the body's.
fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(usize, usize)> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = req.parse(buf) {
            assert_eq!(req.method, Some("POST"));
            assert_eq!(req.path, Some("/events"));
            let len = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .expect("Content-Length");
            assert!(
                req.headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case("x-wsedge-batch"))
            );
            return Some((n, len));
        }
        let mut chunk = [0u8; 65536];
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
