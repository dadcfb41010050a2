//! HTTP/1.1 on the WebSocket listener: the upgrade parser and plain responses.
//!
//! Owns: turning request bytes into an upgrade decision or an HTTP status, and encoding
//! responses. Does not touch: sockets, JWT verification, or connection state.

pub mod upgrade;

use std::io::Write;

/// Standard reason phrase for the statuses we send.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Appends a complete response that closes the connection; `body` is sent as-is.
pub fn write_response(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)], content_type: &str, body: &[u8]) {
    write_response_to(out, status, headers, content_type, body, Framing::default());
}

/// How a response is framed on its connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Framing {
    /// The answer to `HEAD`: the headers (with the body's length) and no body.
    pub head_only: bool,
    /// The connection stays open for the next request (no `Connection: close`).
    pub keep_alive: bool,
}

/// [`write_response`] with explicit framing.
pub fn write_response_to(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
    framing: Framing,
) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", status, reason_phrase(status));
    for (k, v) in headers {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    let connection = if framing.keep_alive { "keep-alive" } else { "close" };
    let _ = write!(
        out,
        "Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
        body.len()
    );
    if !framing.head_only {
        out.extend_from_slice(body);
    }
}

/// Appends a JSON error response `{"error": message}`.
pub fn write_error(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)], message: &str) {
    let body = serde_json::json!({ "error": message, "status": status }).to_string();
    write_response(out, status, headers, "application/json", body.as_bytes());
}

/// Appends the 101 response that completes an upgrade.
pub fn write_switching_protocols(out: &mut Vec<u8>, accept: &str, bearer_subprotocol: bool, deflate: bool) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    if bearer_subprotocol {
        out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: bearer");
    }
    if deflate {
        out.extend_from_slice(b"\r\nSec-WebSocket-Extensions: ");
        out.extend_from_slice(crate::ws::deflate::ACCEPTED.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
}
