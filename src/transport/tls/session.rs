//! One TLS connection: its handshake (rustls, unbuffered), then its records (`record.rs`).
//!
//! Owns: the stage a connection is in, the bytes of an incomplete record it read (kept between
//! reads, copied back in front of the next read), and ciphertext the socket has not taken yet.
//! Both are empty vectors (no allocation) on an idle connection; while in use they come from
//! and go back to the reactor's spares. Does not touch: readiness, or what the plaintext means.

use std::io::{self, IoSlice, Write};
use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError};

use super::hello::{self, Groups};
use super::record::{RecordError, Traffic};
use super::{ServerConfigs, TlsShared};

/// The most a session keeps of an incomplete handshake flight or record.
const MAX_KEPT: usize = 32 * 1024;
/// Plaintext sealed per write call: a few records, so one slow socket holds at most this much
/// ciphertext.
pub(super) const MAX_BATCH: usize = 64 * 1024;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("handshake: {0}")]
    Handshake(#[from] rustls::Error),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("peer sent {0} bytes without completing a record")]
    TooMuchKept(usize),
}

enum Stage {
    /// Nothing read yet: the ClientHello decides which configuration rustls gets.
    Hello(Arc<ServerConfigs>),
    /// rustls at work, and how many of the kept bytes it has been shown already (it may have
    /// rewritten them in place, joining a message's fragments): those are shown again whole.
    Handshake(Box<UnbufferedServerConnection>, usize),
    Traffic(Box<Traffic>),
    /// A fatal alert was queued (or the handshake failed): nothing more is sealed or opened;
    /// the keys are gone.
    Failed,
}

/// A connection's TLS state (see the module comment for what it keeps).
pub struct TlsSession {
    stage: Stage,
    kept: Vec<u8>,
    unsent: Vec<u8>,
    unsent_at: usize,
    /// close_notify is queued: no application data is sealed after it.
    close_sent: bool,
}

/// What [`TlsSession::receive`] made of the bytes it was given.
#[derive(Debug, Default)]
pub struct Received {
    /// Bytes of plaintext now at the front of the buffer.
    pub plain: usize,
    /// The peer closed its side cleanly (close_notify).
    pub closed: bool,
}

impl TlsSession {
    pub fn new(configs: Arc<ServerConfigs>) -> Self {
        TlsSession {
            stage: Stage::Hello(configs),
            kept: Vec::new(),
            unsent: Vec::new(),
            unsent_at: 0,
            close_sent: false,
        }
    }

    /// Bytes are waiting to go out (handshake records, an alert, a KeyUpdate owed).
    pub fn wants_write(&self) -> bool {
        self.unsent.len() > self.unsent_at
            || matches!(&self.stage, Stage::Traffic(t) if t.key_update_owed && !self.close_sent)
    }

    /// Bytes of an incomplete record kept from the last read: the next read goes after them.
    pub fn kept_len(&self) -> usize {
        self.kept.len()
    }

    /// Copies the kept bytes into `front` (exactly [`Self::kept_len`] long) and lets them go.
    pub fn restore_kept(&mut self, front: &mut [u8], shared: &mut TlsShared) {
        if !self.kept.is_empty() {
            front.copy_from_slice(&self.kept);
            shared.give(std::mem::take(&mut self.kept));
        }
    }

    /// Takes ciphertext (`buf`, starting with any restored bytes) and leaves the plaintext it
    /// carried at the front of `buf`. Records owed to the peer are queued (see `flush`).
    pub fn receive(&mut self, buf: &mut [u8], shared: &mut TlsShared) -> Result<Received, SessionError> {
        let mut out = Received::default();
        let mut at = 0;
        if let Stage::Hello(configs) = &self.stage {
            let config = match hello::groups(buf) {
                Groups::Incomplete => None,
                Groups::SteerToX25519 => Some(configs.x25519.clone()),
                Groups::AsOffered => Some(configs.all.clone()),
            };
            if let Some(config) = config {
                self.stage = Stage::Handshake(Box::new(UnbufferedServerConnection::new(config)?), 0);
            }
        }
        if let Stage::Handshake(conn, seen) = &mut self.stage {
            let (consumed, done, closed) = match handshake(conn, buf, &mut self.unsent, shared, seen) {
                Ok(r) => r,
                Err(e) => {
                    // The alert rustls queued for the failure, if any, goes out before closing.
                    self.stage = Stage::Failed;
                    return Err(e);
                }
            };
            at = consumed.0;
            out.plain = consumed.1;
            out.closed = closed;
            if done {
                let Stage::Handshake(conn, _) = std::mem::replace(&mut self.stage, Stage::Failed) else {
                    unreachable!("matched above")
                };
                let (secrets, kernel) = conn.dangerous_into_kernel_connection()?;
                let traffic = Traffic::new(secrets, kernel).ok_or(SessionError::Handshake(rustls::Error::General(
                    "negotiated cipher suite cannot be used".into(),
                )))?;
                self.stage = Stage::Traffic(Box::new(traffic));
            }
        }
        if let Stage::Traffic(t) = &mut self.stage
            && !out.closed
        {
            let opened = match t.open(&mut buf[at..]) {
                Ok(o) => o,
                Err(e) => {
                    if let Some(desc) = e.alert() {
                        let _ = t.seal_alert(2, desc, &mut self.unsent);
                    }
                    // The alert is the last record: dropping the keys makes it so.
                    self.stage = Stage::Failed;
                    return Err(e.into());
                }
            };
            buf.copy_within(at..at + opened.plain, out.plain);
            out.plain += opened.plain;
            out.closed = opened.closed;
            at += opened.rest_from;
        }
        let rest = buf.len() - at;
        if rest > MAX_KEPT {
            return Err(SessionError::TooMuchKept(rest));
        }
        if rest > 0 && !out.closed {
            self.kept = shared.take();
            self.kept.extend_from_slice(&buf[at..]);
        }
        Ok(out)
    }

    /// Queues a close_notify (once); `flush` sends it.
    pub fn close_notify(&mut self) {
        if let Stage::Traffic(t) = &mut self.stage
            && !self.close_sent
        {
            self.close_sent = true;
            let _ = t.seal_alert(1, 0, &mut self.unsent);
        }
    }

    /// The record layer, once the handshake is done (tests).
    #[cfg(test)]
    pub(crate) fn traffic(&mut self) -> Option<&mut super::record::Traffic> {
        match &mut self.stage {
            Stage::Traffic(t) => Some(t),
            _ => None,
        }
    }

    /// Writes what is waiting; true once nothing is left. A KeyUpdate owed is sealed only
    /// once everything before it is written: a peer that asks for many while not reading gets
    /// one answer, and what waits here stays bounded.
    pub fn flush(&mut self, sock: &mut impl Write, shared: &mut TlsShared) -> io::Result<bool> {
        if !self.write_unsent(sock)? {
            return Ok(false);
        }
        if let Stage::Traffic(t) = &mut self.stage
            && t.key_update_owed
            && !self.close_sent
        {
            self.unsent.clear();
            self.unsent_at = 0;
            if self.unsent.capacity() == 0 {
                self.unsent = shared.take();
            }
            if let Err(e) = t.seal(&[], 0, &mut self.unsent) {
                self.stage = Stage::Failed;
                return Err(io::Error::other(e));
            }
            if !self.write_unsent(sock)? {
                return Ok(false);
            }
        }
        self.unsent_at = 0;
        shared.give(std::mem::take(&mut self.unsent));
        Ok(true)
    }

    /// Writes `unsent` from `unsent_at`; true once all of it is written.
    fn write_unsent(&mut self, sock: &mut impl Write) -> io::Result<bool> {
        while self.unsent_at < self.unsent.len() {
            match sock.write(&self.unsent[self.unsent_at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.unsent_at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// Drives the handshake over `buf`, whose first `seen` bytes rustls was shown before (kept
/// from the last read; updated for the next). Returns ((ciphertext consumed, plaintext placed
/// at the front), handshake done, peer closed).
fn handshake(
    conn: &mut UnbufferedServerConnection,
    buf: &mut [u8],
    unsent: &mut Vec<u8>,
    shared: &mut TlsShared,
    seen: &mut usize,
) -> Result<((usize, usize), bool, bool), SessionError> {
    let mut at = 0;
    // rustls is shown one record more each time it needs one, never what follows the record
    // that ends the handshake: a KeyUpdate sent in the same flight as Finished is then ours
    // to answer. (rustls would queue its answer and change its sending key, and the queued
    // answer does not survive the hand-over to our record layer: the client would never hear
    // of the new key.) What it was shown before is shown again whole: rustls remembers how far
    // it read, and may have moved fragments' payloads over their headers meanwhile, so those
    // bytes can neither be cut shorter nor parsed as records again.
    // The end of the last record shown (past the end of `buf` while it is incomplete).
    let mut boundary = if *seen > 0 {
        *seen
    } else {
        record_end(buf, 0).unwrap_or(0)
    };
    // Application data that came with the client's last flight (its first request, usually).
    let mut plain: Vec<u8> = Vec::new();
    let (done, closed) = loop {
        // Nothing new to show is fine: rustls may still have output to give or a state to
        // report (the handshake's end comes after the tickets it encodes).
        let limit = boundary.clamp(at, buf.len());
        let status = conn.process_tls_records(&mut buf[at..limit]);
        let discard = status.discard;
        let state = match status.state {
            Ok(s) => s,
            Err(e) => {
                queue_alert(conn, unsent);
                return Err(e.into());
            }
        };
        match state {
            ConnectionState::ReadTraffic(mut r) => {
                let mut extra = 0;
                while let Some(rec) = r.next_record() {
                    let rec = rec?;
                    extra += rec.discard;
                    if plain.capacity() == 0 {
                        plain = shared.take();
                    }
                    plain.extend_from_slice(rec.payload);
                }
                at += discard + extra;
            }
            ConnectionState::EncodeTlsData(mut e) => {
                encode(&mut e, unsent)?;
                at += discard;
            }
            ConnectionState::TransmitTlsData(t) => {
                // The bytes are ours now (`unsent`); `flush` writes them.
                t.done();
                at += discard;
            }
            ConnectionState::BlockedHandshake => {
                at += discard;
                // The record shown is whole and more bytes follow: the next record.
                if boundary < buf.len()
                    && let Some(next) = record_end(buf, boundary)
                {
                    boundary = next;
                    continue;
                }
                break (false, false);
            }
            ConnectionState::WriteTraffic(_) => {
                at += discard;
                break (true, false);
            }
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                at += discard;
                break (false, true);
            }
            _ => {
                return Err(SessionError::Handshake(rustls::Error::General(
                    "unexpected TLS state".into(),
                )));
            }
        }
    };
    *seen = boundary.saturating_sub(at);
    let n = plain.len();
    // Plaintext is never longer than the records it came in, all of them before `at`.
    buf[..n].copy_from_slice(&plain);
    shared.give(plain);
    Ok(((at, n), done, closed))
}

/// Where the record starting at `from` ends (possibly past the end of `buf`), once its header
/// is there.
fn record_end(buf: &[u8], from: usize) -> Option<usize> {
    let h = buf.get(from..from + super::record::HEADER)?;
    Some(from + super::record::HEADER + usize::from(u16::from_be_bytes([h[3], h[4]])))
}

fn encode(
    e: &mut rustls::unbuffered::EncodeTlsData<'_, rustls::server::ServerConnectionData>,
    unsent: &mut Vec<u8>,
) -> Result<(), SessionError> {
    let start = unsent.len();
    let mut room = 4096;
    loop {
        unsent.resize(start + room, 0);
        match e.encode(&mut unsent[start..]) {
            Ok(n) => {
                unsent.truncate(start + n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(s)) => room = s.required_size,
            Err(other) => {
                unsent.truncate(start);
                return Err(SessionError::Handshake(rustls::Error::General(other.to_string())));
            }
        }
    }
}

/// After a failed handshake step rustls may hold an alert for the peer: queue it.
fn queue_alert(conn: &mut UnbufferedServerConnection, unsent: &mut Vec<u8>) {
    let status = conn.process_tls_records(&mut []);
    if let Ok(ConnectionState::EncodeTlsData(mut e)) = status.state {
        let _ = encode(&mut e, unsent);
    }
}

/// Plaintext in, ciphertext out to the socket: what a TLS connection's output queue writes to.
/// Plaintext is sealed into the reactor's scratch buffer and written from there; only what the
/// socket does not take is copied into the session.
pub struct Writer<'a, W: Write> {
    pub session: &'a mut TlsSession,
    pub shared: &'a mut TlsShared,
    pub sock: &'a mut W,
}

impl<W: Write> Write for Writer<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // What was sealed before goes first; nothing more is taken while some of it waits.
        if !self.session.flush(self.sock, self.shared)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let t = match &mut self.session.stage {
            Stage::Traffic(t) if !self.session.close_sent => t,
            // The handshake is not done yet: data waits in the output queue.
            Stage::Hello(_) | Stage::Handshake(..) => return Err(io::ErrorKind::WouldBlock.into()),
            // After close_notify or a fatal alert, nothing more: by construction, not by care.
            _ => return Err(io::ErrorKind::BrokenPipe.into()),
        };
        let mut scratch = std::mem::take(&mut self.shared.scratch);
        scratch.clear();
        let taken = match t.seal(bufs, MAX_BATCH, &mut scratch) {
            Ok(n) => n,
            Err(e) => {
                // What was sealed before the error (a close_notify at the key's limit: a
                // failed record is never left in `scratch`) is offered to the socket once;
                // the connection ends either way, and nothing is sealed after this.
                let _ = self.sock.write(&scratch);
                self.shared.scratch = scratch;
                self.session.stage = Stage::Failed;
                return Err(io::Error::other(e));
            }
        };
        let mut written = 0;
        let result = loop {
            if written == scratch.len() {
                break Ok(taken);
            }
            match self.sock.write(&scratch[written..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Sealed records are the connection's now: keep what the socket refused.
                    let mut keep = self.shared.take();
                    keep.extend_from_slice(&scratch[written..]);
                    self.session.unsent = keep;
                    self.session.unsent_at = 0;
                    break Ok(taken);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.shared.scratch = scratch;
        result
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
