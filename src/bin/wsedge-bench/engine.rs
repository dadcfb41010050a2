//! A mio client engine: many non-blocking WebSocket clients on one thread, driven by a
//! scenario. Client-side buffers are plain Vecs: the benchmark's own memory does not matter,
//! its CPU does, so it never copies more than once and never blocks.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::wire::{encode_masked_text, source};

/// What the clients connect to.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    /// Tokens per user (protocol server), `None` for the echo server.
    pub tokens: Option<Vec<String>>,
    pub per_user: usize,
    pub sources: usize,
    /// The first source address is 127.0.0.(2 + this).
    pub source_base: usize,
    /// Offer permessage-deflate.
    pub deflate: bool,
    /// Speak TLS (`wss://`; any certificate is accepted: this is a load generator).
    pub tls: bool,
    /// Resume TLS sessions from earlier connections' tickets.
    pub tls_resume: bool,
    pub tls_groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>,
}

impl Target {
    /// The server at `url` (`ws://` or `wss://`) with the usual defaults: sources from
    /// 127.0.0.2, no compression offered, full TLS handshakes.
    pub fn at(url: &str, tokens: Option<Vec<String>>, per_user: usize, sources: usize) -> Result<Target, String> {
        let (addr, path) = crate::wire::parse_url(url)?;
        Ok(Target {
            addr,
            path,
            tokens,
            per_user,
            sources,
            source_base: 0,
            deflate: false,
            tls: crate::wire::is_tls(url),
            tls_resume: false,
            tls_groups: crate::tls::DEFAULT_GROUPS.to_vec(),
        })
    }

    /// The protocol server sends `connection.established` right after the upgrade.
    pub fn protocol(&self) -> bool {
        self.tokens.is_some()
    }
}

#[derive(PartialEq, Eq, Clone, Copy, Debug)]
pub enum State {
    Connecting,
    Upgrading,
    AwaitHello,
    Open,
}

pub struct Client {
    pub sock: TcpStream,
    pub state: State,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    pub started: Instant,
    /// Scenario's own per-client number (e.g. index of the subscriber).
    pub tag: usize,
    tls: Option<Box<rustls::ClientConnection>>,
}

/// Callbacks of a scenario.
pub trait Driver {
    fn on_open(&mut self, e: &mut Engine, id: usize);
    fn on_message(&mut self, e: &mut Engine, id: usize, opcode: u8, payload: &[u8]);
    fn on_closed(&mut self, _e: &mut Engine, _id: usize, _tag: usize) {}
    /// Called every loop turn; return false to stop.
    fn tick(&mut self, e: &mut Engine) -> bool;
}

pub struct Engine {
    poll: Poll,
    pub clients: Slab<Client>,
    pub target: Target,
    opened: usize,
    pub errors: usize,
    mask_seed: u32,
    /// Bytes of data frames received (as on the wire: compressed ones compressed).
    pub wire_bytes: u64,
    /// The code of the close frame behind the last `on_closed` (`None`: the connection failed
    /// or ended without one).
    pub last_close: Option<u16>,
    /// For permessage-deflate: one decompressor (reset per message) and its output.
    inflater: Option<(flate2::Decompress, Vec<u8>)>,
    /// For `wss://`: the client configuration (any certificate accepted), and plaintext
    /// decrypted from a read.
    tls_config: Option<Arc<rustls::ClientConfig>>,
    plain: Vec<u8>,
}

impl Engine {
    pub fn new(target: Target) -> io::Result<Self> {
        Ok(Engine {
            poll: Poll::new()?,
            clients: Slab::new(),
            opened: 0,
            errors: 0,
            mask_seed: 0x1234_5678,
            wire_bytes: 0,
            last_close: None,
            inflater: None,
            tls_config: target
                .tls
                .then(|| crate::tls::any_certificate(target.tls_resume, &target.tls_groups)),
            plain: Vec::new(),
            target,
        })
    }

    /// Starts a connection (from the next source address); returns its id.
    pub fn open(&mut self, tag: usize) -> io::Result<usize> {
        let n = self.opened;
        self.opened += 1;
        let std = {
            let s = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            s.set_nonblocking(true)?;
            s.bind(&SocketAddr::new(source(n, self.target.sources, self.target.source_base), 0).into())?;
            match s.connect(&self.target.addr.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(115) || e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            std::net::TcpStream::from(s)
        };
        let mut sock = TcpStream::from_std(std);
        let _ = sock.set_nodelay(true);
        let entry = self.clients.vacant_entry();
        let id = entry.key();
        self.poll
            .registry()
            .register(&mut sock, Token(id), Interest::READABLE | Interest::WRITABLE)?;
        let path = match &self.target.tokens {
            Some(tokens) => {
                let sep = if self.target.path.contains('?') { '&' } else { '?' };
                format!(
                    "{}{sep}token={}",
                    self.target.path,
                    tokens[n / self.target.per_user.max(1) % tokens.len()]
                )
            }
            None => self.target.path.clone(),
        };
        let extensions = if self.target.deflate {
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        } else {
            ""
        };
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extensions}\r\n",
            self.target.addr
        );
        let tls = match &self.tls_config {
            Some(config) => {
                let name = rustls::pki_types::ServerName::IpAddress(self.target.addr.ip().into());
                Some(Box::new(
                    rustls::ClientConnection::new(config.clone(), name).map_err(io::Error::other)?,
                ))
            }
            None => None,
        };
        entry.insert(Client {
            sock,
            state: State::Connecting,
            rbuf: Vec::new(),
            wbuf: req.into_bytes(),
            started: Instant::now(),
            tag,
            tls,
        });
        Ok(id)
    }

    /// Opens connections (tagged with their number) until `total` are started or
    /// `concurrency` are still connecting (`settled`: open or failed so far). Returns how many
    /// could not even start.
    pub fn ramp(&mut self, started: &mut usize, settled: usize, total: usize, concurrency: usize) -> usize {
        let mut failed = 0;
        while *started < total && started.saturating_sub(settled + failed) < concurrency {
            if self.open(*started).is_err() {
                failed += 1;
            }
            *started += 1;
        }
        failed
    }

    /// Queues a masked text frame and tries to write it now.
    pub fn send_text(&mut self, id: usize, text: &[u8]) {
        self.mask_seed = self.mask_seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let mask = self.mask_seed.to_le_bytes();
        let Some(c) = self.clients.get_mut(id) else { return };
        encode_masked_text(&mut c.wbuf, text, mask);
        if c.state == State::Open {
            Self::flush(c);
        }
    }

    /// Queues several masked text frames and writes them together (one write for all).
    pub fn send_texts<'t>(&mut self, id: usize, texts: impl Iterator<Item = &'t [u8]>) {
        let Some(c) = self.clients.get_mut(id) else { return };
        for text in texts {
            self.mask_seed = self.mask_seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            encode_masked_text(&mut c.wbuf, text, self.mask_seed.to_le_bytes());
        }
        if c.state == State::Open {
            Self::flush(c);
        }
    }

    /// Sends a close frame and drops the connection.
    pub fn close(&mut self, id: usize) {
        if let Some(mut c) = self.clients.try_remove(id) {
            let _ = c.sock.write(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8]);
            let _ = self.poll.registry().deregister(&mut c.sock);
        }
    }

    fn flush(c: &mut Client) -> bool {
        if let Some(tls) = c.tls.as_mut() {
            if !c.wbuf.is_empty() && tls.writer().write_all(&c.wbuf).is_err() {
                return false;
            }
            c.wbuf.clear();
            while tls.wants_write() {
                match tls.write_tls(&mut c.sock) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            return true;
        }
        while !c.wbuf.is_empty() {
            match c.sock.write(&c.wbuf) {
                Ok(n) => {
                    c.wbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Runs until the driver's `tick` says stop (or `limit` passes).
    pub fn run(&mut self, d: &mut impl Driver, limit: Duration) {
        let start = Instant::now();
        let mut events = Events::with_capacity(4096);
        let mut buf = vec![0u8; 256 * 1024];
        while d.tick(self) && start.elapsed() < limit {
            if self.poll.poll(&mut events, Some(Duration::from_millis(5))).is_err() {
                continue;
            }
            for ev in events.iter() {
                let id = ev.token().0;
                let Some(c) = self.clients.get_mut(id) else { continue };
                if c.state == State::Connecting && (ev.is_writable() || ev.is_error()) {
                    match c.sock.peer_addr() {
                        Ok(_) => c.state = State::Upgrading,
                        Err(e) if e.kind() == io::ErrorKind::NotConnected && !ev.is_error() => continue,
                        Err(_) => {
                            self.fail(d, id);
                            continue;
                        }
                    }
                }
                if ev.is_writable() && !Self::flush(c) {
                    self.fail(d, id);
                    continue;
                }
                if ev.is_readable() || ev.is_read_closed() {
                    self.read(d, id, &mut buf);
                }
            }
        }
    }

    fn fail(&mut self, d: &mut impl Driver, id: usize) {
        if let Some(c) = self.clients.try_remove(id) {
            self.errors += 1;
            self.last_close = None;
            d.on_closed(self, id, c.tag);
        }
    }

    fn read(&mut self, d: &mut impl Driver, id: usize, buf: &mut [u8]) {
        loop {
            let Some(c) = self.clients.get_mut(id) else { return };
            match c.sock.read(buf) {
                Ok(0) => {
                    let tag = c.tag;
                    if let Some(mut c) = self.clients.try_remove(id) {
                        let _ = self.poll.registry().deregister(&mut c.sock);
                    }
                    self.last_close = None;
                    d.on_closed(self, id, tag);
                    return;
                }
                Ok(n) if c.tls.is_some() => {
                    let mut plain = std::mem::take(&mut self.plain);
                    plain.clear();
                    let ok = decrypt(c.tls.as_deref_mut(), &buf[..n], &mut plain);
                    let flushed = Self::flush(c);
                    if !ok || !flushed {
                        self.plain = plain;
                        return self.fail(d, id);
                    }
                    c.rbuf.extend_from_slice(&plain);
                    let pending = std::mem::take(&mut c.rbuf);
                    let used = self.process(d, id, &pending);
                    if let Some(c) = self.clients.get_mut(id) {
                        c.rbuf = pending[used..].to_vec();
                    }
                    self.plain = plain;
                }
                Ok(n) => {
                    // Frames are handled straight from the read buffer; only an incomplete tail
                    // is kept per client (a copy of every byte into per-client buffers cost
                    // the generator page faults and memory in large fan-outs).
                    if c.rbuf.is_empty() {
                        let used = self.process(d, id, &buf[..n]);
                        if let Some(c) = self.clients.get_mut(id) {
                            c.rbuf.extend_from_slice(&buf[used..n]);
                        }
                    } else {
                        c.rbuf.extend_from_slice(&buf[..n]);
                        let pending = std::mem::take(&mut c.rbuf);
                        let used = self.process(d, id, &pending);
                        if let Some(c) = self.clients.get_mut(id) {
                            c.rbuf = pending[used..].to_vec();
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(d, id),
            }
        }
    }

    /// Handles the complete response head and frames at the start of `rbuf`; returns how many
    /// bytes it used (all of them if the client is gone).
    fn process(&mut self, d: &mut impl Driver, id: usize, rbuf: &[u8]) -> usize {
        let Some(c) = self.clients.get_mut(id) else {
            return rbuf.len();
        };
        let mut pos = 0;
        if c.state == State::Upgrading || c.state == State::Connecting {
            let Some(end) = rbuf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return 0;
            };
            if !rbuf.starts_with(b"HTTP/1.1 101") {
                self.fail(d, id);
                return rbuf.len();
            }
            pos = end + 4;
            if self.target.protocol() {
                c.state = State::AwaitHello;
            } else {
                c.state = State::Open;
                Self::flush(c);
                d.on_open(self, id);
            }
        }
        // Frames (server frames are unmasked).
        while let Some((first, start, end)) = parse(&rbuf[pos..]) {
            let opcode = first & 0x0F;
            let (ps, pe) = (pos + start, pos + end);
            pos += end;
            if opcode < 0x8 {
                self.wire_bytes += end as u64;
            }
            let Some(c) = self.clients.get_mut(id) else {
                return rbuf.len();
            };
            match opcode {
                0x9 => {
                    let payload = rbuf[ps..pe].to_vec();
                    c.wbuf
                        .extend_from_slice(&[0x8A, 0x80 | payload.len() as u8, 0, 0, 0, 0]);
                    c.wbuf.extend_from_slice(&payload);
                    Self::flush(c);
                }
                0xA => {}
                0x8 => {
                    let tag = c.tag;
                    self.last_close = rbuf.get(ps..ps + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                    if let Some(mut c) = self.clients.try_remove(id) {
                        let _ = self.poll.registry().deregister(&mut c.sock);
                    }
                    d.on_closed(self, id, tag);
                    return rbuf.len();
                }
                _ if c.state == State::AwaitHello => {
                    c.state = State::Open;
                    Self::flush(c);
                    d.on_open(self, id);
                }
                _ if first & 0x40 != 0 => {
                    let (mut z, mut out) = self
                        .inflater
                        .take()
                        .unwrap_or_else(|| (flate2::Decompress::new(false), Vec::new()));
                    z.reset(false);
                    out.clear();
                    let mut input = rbuf[ps..pe].to_vec();
                    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
                    out.reserve(input.len() * 8 + 1024);
                    while z.total_in() < input.len() as u64 {
                        let at = z.total_in() as usize;
                        if out.capacity() == out.len() {
                            out.reserve(out.capacity());
                        }
                        if z.decompress_vec(&input[at..], &mut out, flate2::FlushDecompress::Sync)
                            .is_err()
                        {
                            break;
                        }
                    }
                    d.on_message(self, id, opcode, &out);
                    self.inflater = Some((z, out));
                }
                _ => d.on_message(self, id, opcode, &rbuf[ps..pe]),
            }
        }
        pos
    }
}

/// Takes ciphertext into the session; appends the plaintext it yields. False on a TLS error.
fn decrypt(tls: Option<&mut rustls::ClientConnection>, mut cipher: &[u8], plain: &mut Vec<u8>) -> bool {
    let Some(tls) = tls else { return false };
    while !cipher.is_empty() {
        if tls.read_tls(&mut cipher).is_err() {
            return false;
        }
        let Ok(state) = tls.process_new_packets() else {
            return false;
        };
        let n = state.plaintext_bytes_to_read();
        if n > 0 {
            let start = plain.len();
            plain.resize(start + n, 0);
            let got = tls.reader().read(&mut plain[start..]).unwrap_or(0);
            plain.truncate(start + got);
        }
    }
    true
}

/// A complete unmasked frame at the start of `b`: (first byte, payload start, payload end).
fn parse(b: &[u8]) -> Option<(u8, usize, usize)> {
    if b.len() < 2 {
        return None;
    }
    let (len, hl) = match b[1] & 0x7F {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().ok()?) as usize, 10),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    (b.len() >= hl + len).then_some((b[0], hl, hl + len))
}
