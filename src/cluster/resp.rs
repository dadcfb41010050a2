//! One non-blocking Redis connection as a reactor source: connect, send pipelined commands,
//! read reply frames.
//!
//! Owns: the socket, its unwritten command bytes and unread reply bytes. Does not touch: what
//! a reply answers (the engine keeps that, in order) or when to reconnect (the engine's
//! timers). Commands are RESP arrays of bulk strings, encoded here; replies are decoded by the
//! `redis-protocol` crate into frames that share the read buffer (a message's payload is never
//! copied on its way to the reactor).

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use bytes::BytesMut;
use mio::Interest;
use mio::net::TcpStream;
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;

use crate::embed::SourceId;
use crate::reactor::reactor_ctx::ReactorCtx;

/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// Unwritten command bytes beyond which the connection is taken as stuck (Redis stopped
/// reading): it is dropped and everything in flight fails.
pub(crate) const MAX_UNWRITTEN: usize = 64 << 20;

pub(crate) struct Conn {
    source: SourceId,
    sock: Option<TcpStream>,
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
            connected: false,
            out: Vec::new(),
            written: 0,
            input: BytesMut::new(),
            queued: 0,
            sent: 0,
        }
    }

    /// Starts connecting (the outcome arrives as events on the source).
    pub fn connect(&mut self, r: &mut ReactorCtx<'_>, addr: SocketAddr) -> io::Result<()> {
        self.close(r);
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
    pub fn close(&mut self, r: &mut ReactorCtx<'_>) {
        if let Some(mut s) = self.sock.take() {
            let _ = r.deregister(&mut s);
        }
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
        while self.written < self.out.len() {
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

/// The bytes of a bulk or simple string reply.
pub(crate) fn bytes_of(f: &BytesFrame) -> Option<&bytes::Bytes> {
    match f {
        BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => Some(b),
        _ => None,
    }
}
