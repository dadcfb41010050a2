//! permessage-deflate (RFC 7692) with no context takeover in either direction: every message is
//! compressed and inflated on its own, so a reactor needs one compressor and one decompressor
//! (reset per message) and a connection needs nothing.
//!
//! Owns: the negotiation answer, compressing a run of server frames (for a fan-out: once for
//! every recipient that negotiated it) and inflating a client message within the size limit.
//! Does not touch: which connections negotiated it (the reactor keeps that), or framing beyond
//! rewriting the frames it compresses.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::Violation;

/// The extension as the server accepts it: both sides start every message from scratch.
pub const ACCEPTED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// The tail a sync flush ends with; stripped on send, put back to inflate (RFC 7692 7.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// True if one of the `Sec-WebSocket-Extensions` offers is a `permessage-deflate` the server
/// can accept: its parameters known, none twice, and no `server_max_window_bits` below 15 (the
/// server compresses with the full window). `client_max_window_bits` only says the client could
/// take a limit; none is asked.
pub fn acceptable_offer<'a>(values: impl IntoIterator<Item = &'a str>) -> bool {
    values.into_iter().flat_map(|v| v.split(',')).any(|offer| {
        let mut parts = offer.split(';').map(str::trim);
        if !parts
            .next()
            .is_some_and(|name| name.eq_ignore_ascii_case("permessage-deflate"))
        {
            return false;
        }
        let mut seen: Vec<String> = Vec::new();
        for p in parts {
            let (key, value) = match p.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().trim_matches('"'))),
                None => (p.to_ascii_lowercase(), None),
            };
            if seen.contains(&key) {
                return false;
            }
            let ok = match (key.as_str(), value) {
                ("server_no_context_takeover" | "client_no_context_takeover", None) => true,
                ("client_max_window_bits", None) => true,
                ("client_max_window_bits", Some(v)) => window_bits(v).is_some(),
                ("server_max_window_bits", Some(v)) => v == "15",
                _ => false,
            };
            if !ok {
                return false;
            }
            seen.push(key);
        }
        true
    })
}

/// A window-bits value as RFC 7692 writes it: a decimal 8 to 15, digits only, no leading zero
/// (`08`, `+9` and ` 9` are not values).
fn window_bits(v: &str) -> Option<u8> {
    let digits = !v.is_empty() && v.len() <= 2 && v.bytes().all(|b| b.is_ascii_digit()) && !v.starts_with('0');
    digits
        .then(|| v.parse().ok())
        .flatten()
        .filter(|b| (8..=15).contains(b))
}

/// A reactor's compressor, and the buffers one message is compressed and framed in.
pub struct Deflater {
    comp: Compress,
    payload: Vec<u8>,
    frame: Vec<u8>,
}

impl Default for Deflater {
    fn default() -> Self {
        Deflater {
            comp: Compress::new(Compression::default(), false),
            payload: Vec::new(),
            frame: Vec::new(),
        }
    }
}

impl Deflater {
    /// Appends `payload` compressed as one message (raw deflate, the sync tail removed).
    pub fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        self.comp.reset();
        out.reserve(payload.len() / 2 + 64);
        let mut input = payload;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before = self.comp.total_in();
            // Writing into a Vec's spare capacity cannot fail for a raw stream.
            let _ = self.comp.compress_vec(input, out, FlushCompress::Sync);
            input = &input[(self.comp.total_in() - before) as usize..];
            // All taken, and room was left over: the flush is complete.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
    }

    /// One compressed, unfragmented server frame (`first`: FIN and opcode) for `payload`; the
    /// bytes live until the next call.
    pub fn frame(&mut self, first: u8, payload: &[u8]) -> &[u8] {
        let mut compressed = std::mem::take(&mut self.payload);
        compressed.clear();
        self.compress(payload, &mut compressed);
        self.frame.clear();
        push_header(&mut self.frame, first | 0x40, compressed.len());
        self.frame.extend_from_slice(&compressed);
        self.payload = compressed;
        if self.payload.capacity() > 1 << 20 {
            self.payload = Vec::new();
        }
        &self.frame
    }

    /// `frames` (whole unmasked server frames back to back) with every unfragmented data frame
    /// of at least `min_size` payload bytes compressed (RSV1 set); the others as they are.
    pub fn compress_frames(&mut self, frames: &[u8], min_size: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(frames.len() / 2 + 16);
        let mut payload = Vec::new();
        let mut at = 0;
        while at < frames.len() {
            let Some((head, len)) = super::frame::server_frame_bounds(&frames[at..]) else {
                out.extend_from_slice(&frames[at..]);
                break;
            };
            let frame = &frames[at..at + head + len];
            at += head + len;
            let first = frame[0];
            let data = matches!(first & 0x0F, 0x1 | 0x2) && first & 0x80 != 0 && first & 0x70 == 0;
            if !data || len < min_size {
                out.extend_from_slice(frame);
                continue;
            }
            payload.clear();
            self.compress(&frame[head..], &mut payload);
            push_header(&mut out, first | 0x40, payload.len());
            out.extend_from_slice(&payload);
        }
        out
    }
}

/// An unmasked frame header.
fn push_header(out: &mut Vec<u8>, first: u8, len: usize) {
    out.push(first);
    match len {
        n if n < 126 => out.push(n as u8),
        n if n < 65536 => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
}

/// A reactor's decompressor and the buffer a message is inflated into.
pub struct Inflater {
    decomp: Decompress,
    out: Vec<u8>,
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater {
            decomp: Decompress::new(false),
            out: Vec::new(),
        }
    }
}

/// Inflated bytes are produced this many at a time, so a bomb stops at the limit.
const INFLATE_STEP: usize = 16 * 1024;

impl Inflater {
    /// Inflates one compressed message; at most `max` bytes come out (more is `TooBig`,
    /// stopped as soon as it is known), and bytes that are not deflate are a `Protocol`
    /// violation.
    pub fn inflate(&mut self, payload: &[u8], max: usize) -> Result<&[u8], Violation> {
        self.decomp.reset(false);
        self.out.clear();
        if self.out.capacity() > 1 << 20 {
            self.out = Vec::new();
        }
        let mut ended = false;
        for input in [payload, &TAIL[..]] {
            let mut input = input;
            while !ended {
                if self.out.len() > max {
                    return Err(Violation::TooBig);
                }
                // Exactly this much room: one call never inflates past the limit by more.
                let room = (max + 1 - self.out.len()).min(INFLATE_STEP);
                if self.out.capacity() - self.out.len() < room {
                    self.out.reserve_exact(room);
                }
                let (before_in, before_out) = (self.decomp.total_in(), self.decomp.total_out());
                let status = self
                    .decomp
                    .decompress_vec(input, &mut self.out, FlushDecompress::Sync)
                    .map_err(|_| Violation::Protocol("invalid compressed data"))?;
                let consumed = (self.decomp.total_in() - before_in) as usize;
                let produced = self.decomp.total_out() - before_out;
                input = &input[consumed..];
                if status == Status::StreamEnd {
                    // A final block is legal; nothing may follow it in the message.
                    if !input.is_empty() {
                        return Err(Violation::Protocol("data after the end of a compressed message"));
                    }
                    ended = true;
                } else if input.is_empty() && self.out.len() < self.out.capacity() {
                    break;
                } else if consumed == 0 && produced == 0 {
                    return Err(Violation::Protocol("invalid compressed data"));
                }
            }
        }
        if self.out.len() > max {
            return Err(Violation::TooBig);
        }
        Ok(&self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_are_accepted_only_when_the_server_can_honour_them() {
        assert!(acceptable_offer(["permessage-deflate"]));
        assert!(acceptable_offer(["permessage-deflate; client_max_window_bits"]));
        assert!(acceptable_offer([
            "x-webkit-deflate-frame, permessage-deflate; server_no_context_takeover; client_max_window_bits=10"
        ]));
        assert!(acceptable_offer([
            "permessage-deflate; server_max_window_bits=10, permessage-deflate"
        ]));
        assert!(!acceptable_offer(["permessage-deflate; server_max_window_bits=10"]));
        assert!(!acceptable_offer(["permessage-deflate; foo"]));
        assert!(!acceptable_offer([
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover"
        ]));
        assert!(!acceptable_offer(["permessage-deflate; client_max_window_bits=16"]));
        for bad in ["08", "+9", "009", "", "1e1", "015", "9.0"] {
            let offer = format!("permessage-deflate; client_max_window_bits={bad}");
            assert!(!acceptable_offer([offer.as_str()]), "{offer}");
        }
        assert!(acceptable_offer(["permessage-deflate; client_max_window_bits=\"9\""]));
        assert!(!acceptable_offer(["deflate-stream"]));
        assert!(!acceptable_offer([]));
    }

    #[test]
    fn messages_round_trip_and_bombs_stop_at_the_limit() {
        let mut d = Deflater::default();
        let mut i = Inflater::default();
        let text = br#"{"type":"review.updated","data":{"text":"hello hello hello hello"}}"#.repeat(20);
        let mut c = Vec::new();
        d.compress(&text, &mut c);
        assert!(c.len() < text.len() / 4, "{} of {}", c.len(), text.len());
        assert_eq!(i.inflate(&c, text.len()).unwrap(), &text[..]);
        assert_eq!(i.inflate(&c, text.len() - 1), Err(Violation::TooBig));
        // Reset per message: the same bytes again inflate the same.
        assert_eq!(i.inflate(&c, 1 << 20).unwrap(), &text[..]);
        let mut empty = Vec::new();
        d.compress(b"", &mut empty);
        assert_eq!(i.inflate(&empty, 10).unwrap(), b"");
        // 64 MiB of zeros in a few KB: stopped at the limit, not inflated whole.
        let zeros = vec![0u8; 64 << 20];
        let mut bomb = Vec::new();
        d.compress(&zeros, &mut bomb);
        assert!(bomb.len() < 100_000);
        assert_eq!(i.inflate(&bomb, 1 << 20), Err(Violation::TooBig));
        assert!(i.inflate(b"\xff\xff\xff\xff garbage", 1000).is_err());
    }

    #[test]
    fn only_data_frames_over_the_minimum_are_compressed() {
        let mut d = Deflater::default();
        let mut i = Inflater::default();
        let big = vec![b'a'; 300];
        let mut frames = Vec::new();
        super::super::encode_frame(
            &mut frames,
            tungstenite::protocol::frame::coding::OpCode::Data(tungstenite::protocol::frame::coding::Data::Text),
            &big,
        );
        super::super::encode_frame(
            &mut frames,
            tungstenite::protocol::frame::coding::OpCode::Data(tungstenite::protocol::frame::coding::Data::Text),
            b"small",
        );
        let out = d.compress_frames(&frames, 100);
        assert_eq!(out[0], 0xC1, "FIN, RSV1, text");
        let (head, len) = crate::ws::frame::server_frame_bounds(&out).unwrap();
        assert_eq!(i.inflate(&out[head..head + len], 1000).unwrap(), &big[..]);
        assert_eq!(&out[head + len..], b"\x81\x05small", "under the minimum: as it was");
    }
}
