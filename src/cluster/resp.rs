//! One non-blocking Redis connection as a reactor source: connect (in plain TCP, or TLS with
//! rustls for `rediss://`), send pipelined commands, read reply frames.
//!
//! Owns: the socket, its TLS session, its unwritten command bytes and unread reply bytes.
//! Does not touch: what
//! a reply answers (the engine keeps that, in order) or when to reconnect (the engine's
//! timers). Commands are RESP arrays of bulk strings, encoded here; replies are decoded by the
//! `redis-protocol` crate into frames that share the read buffer (a message's payload is never
//! copied on its way to the reactor).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use mio::Interest;
use mio::net::TcpStream;
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;

use crate::callback::SourceId;
use crate::cluster::broker::EngineHost;

/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// Unwritten command bytes beyond which the connection is taken as stuck (Redis stopped
/// reading): it is dropped and everything in flight fails.
pub(crate) const MAX_UNWRITTEN: usize = 64 << 20;

/// TLS for a Redis connection: the client configuration and the name the certificate must
/// carry.
#[derive(Clone)]
pub(crate) struct Tls {
    pub config: Arc<rustls::ClientConfig>,
    pub name: rustls::pki_types::ServerName<'static>,
}

pub(crate) struct Conn {
    source: SourceId,
    sock: Option<TcpStream>,
    /// The TLS session of `rediss://` (plaintext goes in, records go to the socket).
    tls: Option<Box<rustls::ClientConnection>>,
    connected: bool,
    out: Vec<u8>,
    written: usize,
    input: BytesMut,
    /// Command bytes appended and written since the connection was made (a command whose end
    /// is past `sent` never reached Redis whole, so Redis never ran it).
    queued: u64,
    sent: u64,
}

impl Conn {
    pub fn new(source: SourceId) -> Self {
        Conn {
            source,
            sock: None,
            tls: None,
            connected: false,
            out: Vec::new(),
            written: 0,
            input: BytesMut::new(),
            queued: 0,
            sent: 0,
        }
    }

    /// Starts connecting (the outcome arrives as events on the source).
    pub fn connect(&mut self, r: &mut dyn EngineHost, addr: SocketAddr, tls: Option<&Tls>) -> io::Result<()> {
        self.close(r);
        if let Some(t) = tls {
            let session = rustls::ClientConnection::new(t.config.clone(), t.name.clone()).map_err(io::Error::other)?;
            self.tls = Some(Box::new(session));
        }
        let mut sock = TcpStream::connect(addr)?;
        r.register(&mut sock, self.source, Interest::READABLE | Interest::WRITABLE)?;
        let _ = sock.set_nodelay(true);
        self.sock = Some(sock);
        Ok(())
    }

    pub fn is_open(&self) -> bool {
        self.sock.is_some()
    }

    /// Connected and not known to be broken.
    pub fn is_connected(&self) -> bool {
        self.sock.is_some() && self.connected
    }

    /// Drops the socket and whatever was unwritten or unread.
    pub fn close(&mut self, r: &mut dyn EngineHost) {
        if let Some(mut s) = self.sock.take() {
            let _ = r.deregister(&mut s);
        }
        self.tls = None;
        self.connected = false;
        self.out = Vec::new();
        self.written = 0;
        self.input = BytesMut::new();
        self.queued = 0;
        self.sent = 0;
    }

    /// Appends one command (written on the next `flush`); returns where it ends in the
    /// connection's byte stream (see `reached_redis`).
    pub fn command(&mut self, args: &[&[u8]]) -> u64 {
        let out = &mut self.out;
        let before = out.len();
        out.push(b'*');
        out.extend_from_slice(args.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        for a in args {
            out.push(b'$');
            out.extend_from_slice(a.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.queued += (out.len() - before) as u64;
        self.queued
    }

    /// The command ending at `end` was written whole: Redis may have run it.
    pub fn reached_redis(&self, end: u64) -> bool {
        end <= self.sent
    }

    pub fn unwritten(&self) -> usize {
        self.out.len() - self.written
    }

    /// Writes what it can; an error means the connection is broken.
    pub fn flush(&mut self) -> io::Result<()> {
        let Some(sock) = self.sock.as_mut() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if !self.connected {
            return Ok(());
        }
        if let Some(tls) = self.tls.as_mut() {
            flush_tls(tls, sock, &self.out, &mut self.written, &mut self.sent)?;
        }
        while self.tls.is_none() && self.written < self.out.len() {
            match sock.write(&self.out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    self.sent += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
            if self.out.capacity() > READ_CHUNK {
                self.out = Vec::new();
            }
        } else if self.unwritten() > MAX_UNWRITTEN {
            return Err(io::Error::other("redis is not reading its commands"));
        }
        Ok(())
    }

    /// Handles a readiness event: finishes connecting, writes, reads. Appends every complete
    /// reply frame to `frames`. Returns true when the connection just finished connecting. An
    /// error means the connection is broken (closed by the peer, refused, or a reply that is
    /// not RESP).
    pub fn on_event(&mut self, event: &mio::event::Event, frames: &mut Vec<BytesFrame>) -> io::Result<bool> {
        let Some(sock) = self.sock.as_mut() else {
            return Ok(false);
        };
        let mut just_connected = false;
        if !self.connected {
            if let Some(e) = sock.take_error()? {
                return Err(e);
            }
            match sock.peer_addr() {
                Ok(_) => {
                    self.connected = true;
                    just_connected = true;
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        if event.is_writable() || just_connected {
            self.flush()?;
        }
        self.read(frames)?;
        Ok(just_connected)
    }

    fn read(&mut self, frames: &mut Vec<BytesFrame>) -> io::Result<()> {
        if self.tls.is_some() {
            return self.read_tls(frames);
        }
        loop {
            let Some(sock) = self.sock.as_mut() else {
                return Ok(());
            };
            let len = self.input.len();
            self.input.resize(len + READ_CHUNK, 0);
            match sock.read(&mut self.input[len..]) {
                Ok(0) => {
                    self.input.truncate(len);
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Ok(n) => self.input.truncate(len + n),
                Err(e) => {
                    self.input.truncate(len);
                    match e.kind() {
                        io::ErrorKind::WouldBlock => break,
                        io::ErrorKind::Interrupted => continue,
                        _ => return Err(e),
                    }
                }
            }
            self.decode(frames)?;
        }
        self.decode(frames)
    }

    /// Reads TLS records, opens them, and decodes the plaintext; then writes what the session
    /// owes (handshake messages, alerts, and commands it held until the handshake was done).
    fn read_tls(&mut self, frames: &mut Vec<BytesFrame>) -> io::Result<()> {
        let (Some(sock), Some(tls)) = (self.sock.as_mut(), self.tls.as_mut()) else {
            return Ok(());
        };
        // Replies that came before the end are still answers.
        let mut ended = false;
        loop {
            match tls.read_tls(sock) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let state = tls.process_new_packets().map_err(io::Error::other)?;
            let mut left = state.plaintext_bytes_to_read();
            while left > 0 {
                let len = self.input.len();
                self.input.resize(len + left, 0);
                let n = tls.reader().read(&mut self.input[len..])?;
                self.input.truncate(len + n);
                left -= n.min(left);
                if n == 0 {
                    break;
                }
            }
            if state.peer_has_closed() {
                ended = true;
                break;
            }
        }
        self.decode(frames)?;
        if ended {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.flush()
    }

    fn decode(&mut self, frames: &mut Vec<BytesFrame>) -> io::Result<()> {
        loop {
            match decode_bytes_mut(&mut self.input) {
                Ok(Some((frame, _, _))) => frames.push(frame),
                Ok(None) => return Ok(()),
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
        }
    }
}

/// Hands unwritten commands to the TLS session and its records to the socket (as much as
/// either takes). Plaintext the session took counts as sent: a command it holds may reach
/// Redis, so a loss then is reported as unknown, never as "not run".
fn flush_tls(
    tls: &mut rustls::ClientConnection,
    sock: &mut TcpStream,
    out: &[u8],
    written: &mut usize,
    sent: &mut u64,
) -> io::Result<()> {
    loop {
        let mut took = 0;
        if *written < out.len() {
            took = tls.writer().write(&out[*written..])?;
            *written += took;
            *sent += took as u64;
        }
        while tls.wants_write() {
            match tls.write_tls(sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Everything is out, or the session takes no more for now (its buffer is full
        // until the handshake is done).
        if *written == out.len() || took == 0 {
            return Ok(());
        }
    }
}

/// The bytes of a bulk or simple string reply.
pub(crate) fn bytes_of(f: &BytesFrame) -> Option<&bytes::Bytes> {
    match f {
        BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => Some(b),
        _ => None,
    }
}
