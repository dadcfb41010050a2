//! Headless Chromium driven over the DevTools protocol: open a page, evaluate JavaScript in
//! it (awaiting promises), read values back. For pages whose buttons a test must press.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct Browser {
    child: Child,
    ws: tungstenite::WebSocket<TcpStream>,
    next_id: u64,
    profile: std::path::PathBuf,
}

impl Browser {
    /// Chromium on `url`, with a fresh profile; returns once the page's target is attached.
    pub fn open(url: &str) -> Browser {
        let profile = std::env::temp_dir().join(format!(
            "wsedge-cdp-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let mut child = super::headless_chromium(&profile)
            .args(["--remote-debugging-port=0", "--window-size=1100,1000"])
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium runs");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID" on stderr.
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let port: u16 = loop {
            let mut line = String::new();
            assert!(err.read_line(&mut line).unwrap() > 0, "chromium exited");
            if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                break rest.split('/').next().unwrap().parse().unwrap();
            }
        };
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = err.read_to_end(&mut sink);
        });
        // The page's own target.
        let deadline = Instant::now() + super::TIMEOUT;
        let target = loop {
            let body = json_list(port);
            let list: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let page = list
                .as_array()
                .and_then(|l| {
                    l.iter()
                        .find(|t| t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with("http")))
                })
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_string));
            if let Some(p) = page {
                break p;
            }
            assert!(Instant::now() < deadline, "no page target: {body}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (ws, _) = tungstenite::client(target.as_str(), stream).unwrap();
        Browser {
            child,
            ws,
            next_id: 0,
            profile,
        }
    }

    /// Evaluates `expression` in the page (a promise is awaited); its value as JSON.
    pub fn eval(&mut self, expression: &str) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let call = json!({"id": id, "method": "Runtime.evaluate",
            "params": {"expression": expression, "awaitPromise": true, "returnByValue": true}});
        self.ws.send(tungstenite::Message::text(call.to_string())).unwrap();
        loop {
            let m = self.ws.read().expect("devtools answers");
            let Ok(text) = m.into_text() else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                if let Some(e) = v["result"].get("exceptionDetails") {
                    panic!("{expression}: {e}");
                }
                return v["result"]["result"]["value"].clone();
            }
        }
    }

    /// Evaluates `expression` until it is true (a page that updates by itself).
    pub fn wait_for(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        // The page may still be loading: an exception counts as "not yet".
        let guarded = format!("(() => {{ try {{ return ({expression}); }} catch (_) {{ return false; }} }})()");
        while self.eval(&guarded) != Value::Bool(true) {
            assert!(Instant::now() < deadline, "{what}: never true: {expression}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// DevTools' target list (its Host header must name an IP address or localhost).
fn json_list(port: u16) -> String {
    use std::io::Write;
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(format!("GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes());
    // Read the head, then exactly Content-Length bytes (the connection may stay open).
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&raw).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return body.to_string();
            }
        }
        match s.read(&mut buf) {
            Ok(n @ 1..) => raw.extend_from_slice(&buf[..n]),
            _ => return String::new(),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
