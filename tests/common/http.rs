//! A tiny blocking HTTP/1.1 client for admin API tests.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;

use serde_json::Value;

/// Sends one request; returns (status, response head, body).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String, String) {
    let mut s = super::raw(addr);
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes()).unwrap();
    super::read_http(&mut s)
}

/// Sends a request and parses the JSON body.
pub fn json(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let (status, _, text) = request(addr, method, path, token, body.as_deref());
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}
