//! The TLS record layer after the handshake: application data sealed and opened by us.
//!
//! Owns: the traffic keys of one established TLS connection (raw bytes and sequence numbers,
//! about a hundred bytes), opening records in place in a buffer the caller lends, sealing
//! plaintext into records in a buffer the caller lends, and the few post-handshake messages
//! a server must handle (close_notify and other alerts, TLS 1.3 KeyUpdate). Does not touch:
//! sockets, buffering (the session keeps partial records and unsent bytes), or the handshake
//! (rustls did it and computes updated secrets through its `KernelConnection`).
//!
//! Keys are expanded (AES key schedule, GHASH table: about 550 bytes per direction) only for
//! the duration of one call, so an idle connection keeps nothing but the raw secrets.

use std::io::IoSlice;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::ConnectionTrafficSecrets;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;

/// Record header: type, legacy version, length.
pub const HEADER: usize = 5;
const TAG: usize = 16;
/// The largest plaintext a record may carry (RFC 8446 5.1, RFC 5246 6.2.1).
pub const MAX_PLAINTEXT: usize = 1 << 14;
/// The largest ciphertext body accepted: TLS 1.3 allows 2^14 + 256 (RFC 8446 5.2), TLS 1.2
/// 2^14 + 2048 (RFC 5246 6.2.3); longer is record_overflow.
const MAX_BODY_13: usize = MAX_PLAINTEXT + 256;
const MAX_BODY_12: usize = MAX_PLAINTEXT + 2048;
/// Consecutive KeyUpdates, and consecutive empty records, accepted without application data
/// between them (rustls's limits): each costs us work and sends nothing useful.
const MAX_IN_A_ROW: u8 = 32;
/// Records sealed with one AES-GCM key before it is replaced (TLS 1.3) or the connection ends
/// (TLS 1.2), below the suites' confidentiality limits.
const AES_GCM_LIMIT: u64 = 1 << 23;
/// Records opened under one key, at most: only to keep the sequence from wrapping (the limits
/// on a key are the sender's to keep, RFC 8446 5.5; rustls stops at the same place).
const RX_SEQ_LIMIT: u64 = u64::MAX - 0xffff;

const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const KEY_UPDATE: u8 = 24;

/// Why a connection's records can no longer be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record too long ({0} bytes)")]
    Overflow(usize),
    #[error("malformed {0}")]
    Decode(&'static str),
    #[error("{0} in a row with no data between")]
    Abuse(&'static str),
    #[error("record failed authentication")]
    BadRecord,
    #[error("unexpected record type {0}")]
    Unexpected(u8),
    #[error("peer sent alert {0}")]
    Alert(u8),
    #[error("key update: {0}")]
    KeyUpdate(String),
    #[error("too many records under one key")]
    Exhausted,
    /// TLS 1.2: a record whose header names another version than the one negotiated (3,3).
    #[error("record version {0}.{1} (TLS 1.2 records carry 3.3)")]
    Version(u8, u8),
}

impl RecordError {
    /// The alert description a peer is told before the connection closes (RFC 8446 6.2).
    pub fn alert(&self) -> Option<u8> {
        match self {
            RecordError::Overflow(_) => Some(22),
            RecordError::Decode(_) => Some(50),
            RecordError::Abuse(_) => Some(10),
            RecordError::Version(..) => Some(70),
            RecordError::BadRecord => Some(20),
            RecordError::Unexpected(_) | RecordError::KeyUpdate(_) => Some(10),
            RecordError::Alert(_) | RecordError::Exhausted => None,
        }
    }
}

/// One direction's key: raw bytes, kept small; expanded per call.
struct Keys {
    key: [u8; 32],
    key_len: u8,
    iv: [u8; 12],
    seq: u64,
}

impl Keys {
    fn new(seq: u64, secrets: &ConnectionTrafficSecrets) -> Option<(Self, &'static aead::Algorithm)> {
        let (alg, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&aead::CHACHA20_POLY1305, key, iv),
            _ => return None,
        };
        let (key, iv) = (key.as_ref(), iv.as_ref());
        if key.len() > 32 || iv.len() != 12 {
            return None;
        }
        let mut k = Keys {
            key: [0; 32],
            key_len: key.len() as u8,
            iv: [0; 12],
            seq,
        };
        k.key[..key.len()].copy_from_slice(key);
        k.iv.copy_from_slice(iv);
        Some((k, alg))
    }

    fn expand(&self, alg: &'static aead::Algorithm) -> Option<LessSafeKey> {
        UnboundKey::new(alg, &self.key[..self.key_len as usize])
            .ok()
            .map(LessSafeKey::new)
    }

    /// iv XOR the sequence number (RFC 8446 5.3; TLS 1.2 ChaCha20 and GCM's sent nonce alike).
    fn nonce(&self) -> [u8; 12] {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        n
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        // Not a guarantee against every copy, but the secrets do not linger in freed memory.
        self.key = [0; 32];
        self.iv = [0; 12];
    }
}

/// What one call to [`Traffic::open`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Opened {
    /// Bytes of plaintext now at the front of the buffer.
    pub plain: usize,
    /// Bytes the caller must keep (an incomplete record) and offer again with more.
    pub rest_from: usize,
    /// The peer sent close_notify: it will send nothing more.
    pub closed: bool,
}

/// The keys of an established connection.
pub struct Traffic {
    kernel: KernelConnection<ServerConnectionData>,
    shape: Shape,
    tx: Keys,
    rx: Keys,
    /// The peer asked for our KeyUpdate: sent with the next output.
    pub key_update_owed: bool,
    /// KeyUpdates, and empty records, received since the last application data.
    updates_in_a_row: u8,
    empty_in_a_row: u8,
}

impl Traffic {
    pub fn new(secrets: rustls::ExtractedSecrets, kernel: KernelConnection<ServerConnectionData>) -> Option<Self> {
        let tls12 = kernel.protocol_version() == rustls::ProtocolVersion::TLSv1_2;
        let (tx, alg) = Keys::new(secrets.tx.0, &secrets.tx.1)?;
        let (rx, _) = Keys::new(secrets.rx.0, &secrets.rx.1)?;
        Some(Traffic {
            kernel,
            shape: Shape { alg, tls12 },
            tx,
            rx,
            key_update_owed: false,
            updates_in_a_row: 0,
            empty_in_a_row: 0,
        })
    }

    /// Moves this direction's sequence (tests: the limits without sealing millions of records).
    #[cfg(test)]
    pub(super) fn set_tx_seq(&mut self, seq: u64) {
        self.tx.seq = seq;
    }

    /// The records a key may seal before it is replaced (TLS 1.3) or the connection closes.
    #[cfg(test)]
    pub(super) fn tx_limit(&self) -> u64 {
        self.limit()
    }

    fn limit(&self) -> u64 {
        if std::ptr::eq(self.shape.alg, &aead::CHACHA20_POLY1305) {
            u64::MAX
        } else {
            AES_GCM_LIMIT
        }
    }

    /// Opens every complete record in `buf` in place, moving application data to the front.
    /// Stops after a close_notify (nothing after it counts).
    pub fn open(&mut self, buf: &mut [u8]) -> Result<Opened, RecordError> {
        let mut out = Opened::default();
        let mut pos = 0;
        let mut key: Option<LessSafeKey> = None;
        while buf.len() - pos >= HEADER {
            let typ = buf[pos];
            let len = u16::from_be_bytes([buf[pos + 3], buf[pos + 4]]) as usize;
            if len > if self.shape.tls12 { MAX_BODY_12 } else { MAX_BODY_13 } {
                return Err(RecordError::Overflow(len));
            }
            if buf.len() - pos - HEADER < len {
                break;
            }
            if self.rx.seq >= RX_SEQ_LIMIT {
                return Err(RecordError::Exhausted);
            }
            let k = match &key {
                Some(k) => k,
                None => key.insert(self.rx.expand(self.shape.alg).ok_or(RecordError::BadRecord)?),
            };
            let header: [u8; HEADER] = buf[pos..pos + HEADER].try_into().unwrap_or_default();
            let body = &mut buf[pos + HEADER..pos + HEADER + len];
            let (inner, start, plain_len) = if self.shape.tls12 {
                open12(k, &self.rx, header, body)?
            } else {
                if typ != APPLICATION_DATA {
                    return Err(RecordError::Unexpected(typ));
                }
                open13(k, &self.rx, header, body)?
            };
            self.rx.seq += 1;
            let from = pos + HEADER + start;
            pos += HEADER + len;
            match inner {
                APPLICATION_DATA if plain_len == 0 => {
                    self.empty_in_a_row += 1;
                    if self.empty_in_a_row > MAX_IN_A_ROW {
                        return Err(RecordError::Abuse("empty records"));
                    }
                }
                APPLICATION_DATA => {
                    self.empty_in_a_row = 0;
                    self.updates_in_a_row = 0;
                    buf.copy_within(from..from + plain_len, out.plain);
                    out.plain += plain_len;
                }
                ALERT => {
                    // One alert per record, two bytes (RFC 8446 6, 5.1).
                    if plain_len != 2 {
                        return Err(RecordError::Decode("alert"));
                    }
                    // close_notify (level ignored, as TLS 1.3 says); anything else aborts.
                    let desc = buf[from + 1];
                    if desc != 0 {
                        return Err(RecordError::Alert(desc));
                    }
                    out.closed = true;
                    out.rest_from = buf.len();
                    return Ok(out);
                }
                HANDSHAKE if !self.shape.tls12 => {
                    let msg = &buf[from..from + plain_len];
                    self.on_handshake(msg)?;
                    key = None;
                }
                other => return Err(RecordError::Unexpected(other)),
            }
        }
        out.rest_from = pos;
        Ok(out)
    }

    /// TLS 1.3 post-handshake messages from a client: only KeyUpdate is valid, one whole
    /// message ending its record (nothing may follow a key change under the old key, RFC 8446
    /// 5.1), and no empty handshake records.
    fn on_handshake(&mut self, msg: &[u8]) -> Result<(), RecordError> {
        match msg {
            [] => Err(RecordError::Unexpected(HANDSHAKE)),
            [KEY_UPDATE, 0, 0, 1, request @ (0 | 1)] => {
                self.updates_in_a_row += 1;
                if self.updates_in_a_row > MAX_IN_A_ROW {
                    return Err(RecordError::Abuse("key updates"));
                }
                let (seq, secrets) = self
                    .kernel
                    .update_rx_secret()
                    .map_err(|e| RecordError::KeyUpdate(e.to_string()))?;
                self.rx = Keys::new(seq, &secrets).ok_or(RecordError::BadRecord)?.0;
                // Several requests while we are silent are answered by one KeyUpdate (4.6.3).
                self.key_update_owed |= *request == 1;
                Ok(())
            }
            [KEY_UPDATE, 0, 0, 1, _] => Err(RecordError::Decode("key update")),
            [KEY_UPDATE, ..] if msg.len() > 5 => Err(RecordError::KeyUpdate(
                "more after a KeyUpdate in the same record".into(),
            )),
            [typ, ..] => Err(RecordError::Unexpected(*typ)),
        }
    }

    /// Appends up to `limit` bytes of `plain` to `out` as records of at most [`MAX_PLAINTEXT`]
    /// bytes each (plaintext is copied once, into its place in the record, and sealed there).
    /// Returns the plaintext bytes taken.
    pub fn seal(&mut self, plain: &[IoSlice<'_>], limit: usize, out: &mut Vec<u8>) -> Result<usize, RecordError> {
        let key = self.prepare_tx(out)?;
        let total = plain.iter().map(|p| p.len()).sum::<usize>().min(limit);
        let mut parts = plain.iter().map(|p| &p[..]);
        let mut current: &[u8] = &[];
        let mut left = total;
        while left > 0 {
            let n = left.min(MAX_PLAINTEXT);
            let start = self.shape.begin(&self.tx, out, APPLICATION_DATA, n);
            let mut need = n;
            while need > 0 {
                if current.is_empty() {
                    current = parts.next().unwrap_or_default();
                }
                let take = need.min(current.len());
                out.extend_from_slice(&current[..take]);
                current = &current[take..];
                need -= take;
            }
            self.shape.finish(&mut self.tx, &key, out, start, APPLICATION_DATA)?;
            left -= n;
        }
        Ok(total)
    }

    /// An alert: close_notify is (1, 0); a fatal one (2, reason) before closing on an error.
    pub fn seal_alert(&mut self, level: u8, desc: u8, out: &mut Vec<u8>) -> Result<(), RecordError> {
        let key = self.prepare_tx(out)?;
        self.shape.seal(&mut self.tx, &key, ALERT, &[level, desc], out)
    }

    /// The expanded sending key, after any KeyUpdate owed or due has been sealed with the old one.
    fn prepare_tx(&mut self, out: &mut Vec<u8>) -> Result<LessSafeKey, RecordError> {
        if self.tx.seq >= self.limit() - 1 {
            if self.shape.tls12 {
                // TLS 1.2 cannot change keys: the last record this key seals says goodbye, so
                // the peer sees an orderly close, not a cut.
                if self.tx.seq == self.limit() - 1 {
                    let key = self.tx.expand(self.shape.alg).ok_or(RecordError::BadRecord)?;
                    self.shape.seal(&mut self.tx, &key, ALERT, &[1, 0], out)?;
                }
                return Err(RecordError::Exhausted);
            }
            self.key_update_owed = true;
        }
        if self.key_update_owed {
            self.key_update_owed = false;
            let old = self.tx.expand(self.shape.alg).ok_or(RecordError::BadRecord)?;
            self.shape
                .seal(&mut self.tx, &old, HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], out)?;
            let (seq, secrets) = self
                .kernel
                .update_tx_secret()
                .map_err(|e| RecordError::KeyUpdate(e.to_string()))?;
            self.tx = Keys::new(seq, &secrets).ok_or(RecordError::BadRecord)?.0;
        }
        self.tx.expand(self.shape.alg).ok_or(RecordError::BadRecord)
    }
}

/// What a record looks like under one cipher and version.
#[derive(Clone, Copy)]
struct Shape {
    alg: &'static aead::Algorithm,
    tls12: bool,
}

impl Shape {
    /// One whole record of `typ` carrying `plain`.
    fn seal(
        self,
        keys: &mut Keys,
        key: &LessSafeKey,
        typ: u8,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        let start = self.begin(keys, out, typ, plain.len());
        out.extend_from_slice(plain);
        self.finish(keys, key, out, start, typ)
    }

    /// Writes a record header (and TLS 1.2 GCM's explicit nonce) for `n` plaintext bytes;
    /// returns where the record starts.
    fn begin(self, keys: &Keys, out: &mut Vec<u8>, typ: u8, n: usize) -> usize {
        let start = out.len();
        let explicit = self.explicit_nonce_len();
        let body = if self.tls12 { explicit + n + TAG } else { n + 1 + TAG };
        let outer = if self.tls12 { typ } else { APPLICATION_DATA };
        out.reserve(HEADER + body);
        out.extend_from_slice(&[outer, 3, 3]);
        out.extend_from_slice(&(body as u16).to_be_bytes());
        if explicit > 0 {
            out.extend_from_slice(&keys.nonce()[4..]);
        }
        start
    }

    fn explicit_nonce_len(self) -> usize {
        if self.tls12 && !std::ptr::eq(self.alg, &aead::CHACHA20_POLY1305) {
            8
        } else {
            0
        }
    }

    /// Seals the plaintext written after `begin` in place and appends the tag. On failure the
    /// record is taken out again: plaintext never stays in `out` unsealed.
    fn finish(
        self,
        keys: &mut Keys,
        key: &LessSafeKey,
        out: &mut Vec<u8>,
        start: usize,
        typ: u8,
    ) -> Result<(), RecordError> {
        let nonce = Nonce::assume_unique_for_key(keys.nonce());
        let explicit = self.explicit_nonce_len();
        let tag = if self.tls12 {
            let plain_len = out.len() - start - HEADER - explicit;
            let aad = aad12(keys.seq, typ, plain_len);
            key.seal_in_place_separate_tag(nonce, Aad::from(aad), &mut out[start + HEADER + explicit..])
        } else {
            out.push(typ);
            let header: [u8; HEADER] = out[start..start + HEADER].try_into().unwrap_or_default();
            key.seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[start + HEADER..])
        }
        .map_err(|_| {
            out.truncate(start);
            RecordError::BadRecord
        })?;
        out.extend_from_slice(tag.as_ref());
        keys.seq += 1;
        Ok(())
    }
}

/// Seals records as a client would, including ones no client should send (tests and fuzz
/// targets feed them to a session).
#[cfg(any(test, feature = "testing"))]
pub struct PeerSealer {
    shape: Shape,
    keys: Keys,
}

#[cfg(any(test, feature = "testing"))]
impl PeerSealer {
    pub fn new(seq: u64, secrets: &ConnectionTrafficSecrets, tls12: bool) -> Option<Self> {
        let (keys, alg) = Keys::new(seq, secrets)?;
        Some(PeerSealer {
            shape: Shape { alg, tls12 },
            keys,
        })
    }

    /// A record of (inner) type `typ`; TLS 1.3 adds `padding` zero bytes after the type.
    pub fn seal(&mut self, typ: u8, plain: &[u8], padding: usize, out: &mut Vec<u8>) {
        let Some(key) = self.keys.expand(self.shape.alg) else {
            return;
        };
        if self.shape.tls12 || padding == 0 {
            let _ = self.shape.seal(&mut self.keys, &key, typ, plain, out);
            return;
        }
        let start = out.len();
        let body = plain.len() + 1 + padding + TAG;
        out.extend_from_slice(&[APPLICATION_DATA, 3, 3]);
        out.extend_from_slice(&(body as u16).to_be_bytes());
        out.extend_from_slice(plain);
        out.push(typ);
        out.resize(out.len() + padding, 0);
        let header: [u8; HEADER] = out[start..start + HEADER].try_into().unwrap_or_default();
        let nonce = Nonce::assume_unique_for_key(self.keys.nonce());
        if let Ok(tag) = key.seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[start + HEADER..]) {
            out.extend_from_slice(tag.as_ref());
        }
        self.keys.seq += 1;
    }
}

fn aad12(seq: u64, typ: u8, len: usize) -> [u8; 13] {
    let mut a = [0u8; 13];
    a[..8].copy_from_slice(&seq.to_be_bytes());
    a[8] = typ;
    a[9] = 3;
    a[10] = 3;
    a[11..].copy_from_slice(&(len as u16).to_be_bytes());
    a
}

/// A TLS 1.3 record: (inner content type, plaintext offset in body, plaintext length).
fn open13(
    key: &LessSafeKey,
    rx: &Keys,
    header: [u8; HEADER],
    body: &mut [u8],
) -> Result<(u8, usize, usize), RecordError> {
    let nonce = Nonce::assume_unique_for_key(rx.nonce());
    let plain = key
        .open_in_place(nonce, Aad::from(header), body)
        .map_err(|_| RecordError::BadRecord)?;
    // The content type is the last non-zero byte; zeros after it are padding.
    let end = plain.iter().rposition(|&b| b != 0).ok_or(RecordError::Unexpected(0))?;
    if end > MAX_PLAINTEXT {
        return Err(RecordError::Overflow(end));
    }
    Ok((plain[end], 0, end))
}

/// A TLS 1.2 record (AES-GCM with its explicit nonce, or ChaCha20-Poly1305).
fn open12(
    key: &LessSafeKey,
    rx: &Keys,
    header: [u8; HEADER],
    body: &mut [u8],
) -> Result<(u8, usize, usize), RecordError> {
    let typ = header[0];
    // RFC 5246 6.2.1: every record after the hellos carries the negotiated version; its bytes
    // are also authenticated (the AAD below writes 3,3), so a record that says otherwise is
    // refused as what it is, not as a forgery.
    if header[1..3] != [3, 3] {
        return Err(RecordError::Version(header[1], header[2]));
    }
    let gcm = !std::ptr::eq(key.algorithm(), &aead::CHACHA20_POLY1305);
    let explicit = if gcm { 8 } else { 0 };
    if body.len() < explicit + TAG {
        return Err(RecordError::BadRecord);
    }
    let nonce = if gcm {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&rx.iv[..4]);
        n[4..].copy_from_slice(&body[..8]);
        n
    } else {
        rx.nonce()
    };
    let plain_len = body.len() - explicit - TAG;
    if plain_len > MAX_PLAINTEXT {
        return Err(RecordError::Overflow(plain_len));
    }
    let aad = aad12(rx.seq, typ, plain_len);
    key.open_in_place(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut body[explicit..],
    )
    .map_err(|_| RecordError::BadRecord)?;
    Ok((typ, explicit, plain_len))
}
