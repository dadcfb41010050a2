//! Client wire helpers for the benchmark: URL parsing, source addresses, masked frames.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// `ws://host:port/path?query` (or `wss://`) split into address and request target.
pub fn parse_url(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .ok_or("URL must start with ws:// or wss://")?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = host.parse().map_err(|e| format!("{host}: {e} (use an IP:port)"))?;
    Ok((addr, if path.is_empty() { "/".into() } else { path.into() }))
}

/// True for a `wss://` URL.
pub fn is_tls(url: &str) -> bool {
    url.starts_with("wss://")
}

/// Source address number `i` of `n`: 127.0.0.2, 127.0.0.3, ...
pub fn source(i: usize, n: usize, base: usize) -> IpAddr {
    let k = 2 + base as u32 + (i % n.max(1)) as u32;
    IpAddr::V4(Ipv4Addr::from(0x7F00_0000 + k))
}

/// Appends a masked client text frame.
pub fn encode_masked_text(out: &mut Vec<u8>, payload: &[u8], mask: [u8; 4]) {
    wsedge::encode_client_frame(out, 0x81, payload, mask);
}
