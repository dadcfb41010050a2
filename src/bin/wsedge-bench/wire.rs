//! Minimal blocking WebSocket client pieces for the benchmark: URL parsing, source-address
//! binding, the upgrade, and masked frames.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};

/// `ws://host:port/path?query` split into address and request target.
pub fn parse_url(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = url.strip_prefix("ws://").ok_or("URL must start with ws://")?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = host.parse().map_err(|e| format!("{host}: {e} (use an IP:port)"))?;
    Ok((addr, if path.is_empty() { "/".into() } else { path.into() }))
}

/// Source address number `i` of `n`: 127.0.0.2, 127.0.0.3, ...
pub fn source(i: usize, n: usize) -> IpAddr {
    let k = 2 + (i % n.max(1)) as u32;
    IpAddr::V4(Ipv4Addr::from(0x7F00_0000 + k))
}

pub fn connect_from(src: IpAddr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.bind(&SocketAddr::new(src, 0).into())?;
    s.connect(&dst.into())?;
    let s: TcpStream = s.into();
    s.set_nodelay(true)?;
    Ok(s)
}

/// Sends the upgrade request and reads the response head; errors unless it is 101.
pub fn upgrade(s: &mut TcpStream, addr: SocketAddr, target: &str) -> Result<(), String> {
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut head = Vec::with_capacity(256);
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).map_err(|e| e.to_string())? == 0 {
            return Err("closed during handshake".into());
        }
        head.push(b[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(format!(
            "upgrade refused: {}",
            String::from_utf8_lossy(&head).lines().next().unwrap_or("")
        ));
    }
    Ok(())
}

/// Appends a masked client text frame.
pub fn encode_masked_text(out: &mut Vec<u8>, payload: &[u8], mask: [u8; 4]) {
    wsedge::ws::frame::encode_client_frame(out, 0x81, payload, mask);
}

/// Writes a masked text frame.
pub fn send_text(s: &mut TcpStream, text: &str) -> std::io::Result<()> {
    let mut f = Vec::with_capacity(text.len() + 14);
    encode_masked_text(&mut f, text.as_bytes(), [0x12, 0x34, 0x56, 0x78]);
    s.write_all(&f)
}

/// Reads one server frame; returns (first byte, payload).
pub fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h)?;
    let len = match h[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b)?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b)?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut p = vec![0; len];
    s.read_exact(&mut p)?;
    Ok((h[0], p))
}

/// Reads frames until a data frame (answering nothing; pings are skipped).
pub fn read_data(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    loop {
        let (first, p) = read_frame(s)?;
        match first & 0x0F {
            0x1 | 0x2 => return Ok(p),
            0x8 => return Err(std::io::Error::other("server closed the connection")),
            _ => continue,
        }
    }
}
