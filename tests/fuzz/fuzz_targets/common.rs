//! Shared by the targets: a hand-driven protocol server, tokens it accepts, and splitting input
//! at fuzzer-chosen points.
#![allow(dead_code)]

use wsedge::app::ProtocolApp;
use wsedge::testing::Harness;
use wsedge::{AuthMode, Config, JwtConfig};

pub const SECRET: &str = "fuzz-secret";

pub fn harness() -> Harness<ProtocolApp> {
    let config = Config {
        auth: AuthMode::Jwt(JwtConfig::hs256(SECRET)),
        max_message_size: 4096,
        max_request_bytes: 2048,
        rate_limit_messages: 0,
        ..Config::default()
    };
    Harness::new(config, ProtocolApp::default()).expect("harness")
}

/// A token valid for ten years, with a rooms claim; `admin` adds the admin role.
pub fn token(sub: &str, admin: bool) -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 10 * 365 * 86_400;
    let mut claims = serde_json::json!({"sub": sub, "exp": exp, "rooms": ["lobby", "team-*"]});
    if admin {
        claims["role"] = "admin".into();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token")
}

pub fn upgrade(token: &str) -> Vec<u8> {
    format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Splits `data` into chunks at points drawn from `seed` (a small xorshift), like reads of a
/// socket that delivers bytes in arbitrary pieces.
pub fn split(data: &[u8], seed: u32) -> Vec<&[u8]> {
    let mut x = seed | 1;
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = 1 + (x as usize % (data.len() - at).min(64 + (x as usize >> 24)));
        out.push(&data[at..at + n]);
        at += n;
    }
    out
}

/// A masked client frame (the crate's own encoder).
pub fn frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    wsedge::encode_client_frame(&mut out, first, payload, mask);
    out
}
