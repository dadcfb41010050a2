//! Client frame decoding and server frame encoding on tungstenite's `FrameHeader`.
//!
//! Owns: the per-connection fragment state ([`Decoder`]) and the RFC 6455 rules. Does not touch:
//! I/O. The caller hands in a mutable byte slice (unmasked in place) and gets [`Event`]s that
//! borrow from it, so a complete single-frame message is never copied.

use std::io::Cursor;

use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// A server ping with an empty payload, pre-encoded.
pub const PING_FRAME: [u8; 2] = [0x89, 0x00];

/// Why the connection must be failed; maps to a close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// 1002 with the given reason.
    Protocol(&'static str),
    /// 1007: text that is not UTF-8.
    InvalidUtf8,
    /// 1009: message larger than the limit.
    TooBig,
}

impl Violation {
    pub fn close_code(self) -> u16 {
        match self {
            Violation::Protocol(_) => 1002,
            Violation::InvalidUtf8 => 1007,
            Violation::TooBig => 1009,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Violation::Protocol(r) => r,
            Violation::InvalidUtf8 => "invalid UTF-8 in text message",
            Violation::TooBig => "message too large",
        }
    }
}

/// What one frame meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong,
    /// The peer's close: code and reason, or `None` for an empty close payload.
    Close(Option<(u16, &'a str)>),
    /// A non-final fragment was absorbed; nothing to deliver yet.
    Fragment,
    /// A whole permessage-deflate message (text or binary), still compressed: the caller
    /// inflates it (and checks text for UTF-8 then).
    Compressed {
        text: bool,
        payload: &'a [u8],
    },
}

/// The header of the frame at the start of a buffer, already validated.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    pub fin: bool,
    /// RSV1: the message is compressed (permessage-deflate; first frame only).
    pub rsv1: bool,
    pub opcode: OpCode,
    pub mask: [u8; 4],
    pub header_len: usize,
    pub payload_len: usize,
}

impl Head {
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// Parses and validates the client frame header at the start of `buf`; `Ok(None)` means more
/// bytes are needed. Checks are made before any payload arrives, so an oversized frame is refused
/// without buffering it.
pub fn parse_head(buf: &[u8], max_payload: usize) -> Result<Option<Head>, Violation> {
    parse_head_ext(buf, max_payload, false)
}

/// [`parse_head`], with RSV1 allowed on the first frame of a data message when `compressed_ok`
/// (the connection negotiated permessage-deflate).
pub fn parse_head_ext(buf: &[u8], max_payload: usize, compressed_ok: bool) -> Result<Option<Head>, Violation> {
    let mut cursor = Cursor::new(buf);
    let (h, len) = match FrameHeader::parse(&mut cursor) {
        Ok(Some(x)) => x,
        Ok(None) => return Ok(None),
        Err(_) => return Err(Violation::Protocol("reserved opcode")),
    };
    let first_data = matches!(h.opcode, OpCode::Data(Data::Text | Data::Binary));
    if h.rsv2 || h.rsv3 || (h.rsv1 && !(compressed_ok && first_data)) {
        return Err(Violation::Protocol("reserved bits set"));
    }
    let Some(mask) = h.mask else {
        return Err(Violation::Protocol("client frames must be masked"));
    };
    if let OpCode::Control(_) = h.opcode {
        if !h.is_final {
            return Err(Violation::Protocol("fragmented control frame"));
        }
        if len > 125 {
            return Err(Violation::Protocol("control frame payload over 125 bytes"));
        }
    }
    if len > max_payload as u64 {
        return Err(Violation::TooBig);
    }
    Ok(Some(Head {
        fin: h.is_final,
        rsv1: h.rsv1,
        opcode: h.opcode,
        mask,
        header_len: cursor.position() as usize,
        payload_len: len as usize,
    }))
}

/// XORs the client mask into `payload`, eight bytes at a time.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = payload.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) ^ wide;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Per-connection fragment state. Idle (and cheap to drop) between messages.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Reassembled payload of a fragmented message.
    message: Vec<u8>,
    /// Kind of the fragmented message in progress.
    kind: Option<Data>,
    /// The fragmented message in progress is compressed (its text is checked once inflated).
    compressed: bool,
    /// Prefix of `message` known to be valid UTF-8 (text only).
    utf8_checked: usize,
    /// Payload bytes of the incomplete frame at the head of the input already validated, and
    /// the incomplete code point they end with (fail-fast UTF-8 for frames arriving in parts).
    partial_checked: usize,
    partial_carry: ([u8; 4], u8),
}

impl Decoder {
    /// No fragmented message in progress.
    pub fn is_idle(&self) -> bool {
        self.kind.is_none()
    }

    /// Decodes the frame at the start of `buf` (unmasking it in place). Returns the event and the
    /// bytes consumed, `Ok(None)` when the frame is incomplete, or the violation that must close
    /// the connection.
    #[allow(dead_code)] // for the fuzz targets and tests, which decode without compression
    pub fn decode<'a>(
        &'a mut self,
        buf: &'a mut [u8],
        max_message: usize,
    ) -> Result<Option<(Event<'a>, usize)>, Violation> {
        self.decode_ext(buf, max_message, false)
    }

    /// [`decode`](Self::decode) on a connection that negotiated permessage-deflate when
    /// `compressed_ok`: compressed messages come out as [`Event::Compressed`].
    pub fn decode_ext<'a>(
        &'a mut self,
        buf: &'a mut [u8],
        max_message: usize,
        compressed_ok: bool,
    ) -> Result<Option<(Event<'a>, usize)>, Violation> {
        if self.kind.is_none() && !self.message.is_empty() {
            self.reset();
        }
        let Some(head) = parse_head_ext(buf, max_message, compressed_ok)? else {
            return Ok(None);
        };
        let total = head.frame_len();
        if buf.len() < total {
            return Ok(None);
        }
        self.partial_checked = 0;
        self.partial_carry = ([0; 4], 0);
        let payload = &mut buf[head.header_len..total];
        unmask(payload, head.mask);
        let event = match head.opcode {
            OpCode::Control(Control::Ping) => Event::Ping(payload),
            OpCode::Control(Control::Pong) => Event::Pong,
            OpCode::Control(Control::Close) => Event::Close(parse_close(payload)?),
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                return Err(Violation::Protocol("reserved opcode"));
            }
            OpCode::Data(Data::Continue) => {
                let kind = self
                    .kind
                    .ok_or(Violation::Protocol("continuation frame without a message"))?;
                if self.message.len() + payload.len() > max_message {
                    return Err(Violation::TooBig);
                }
                self.message.extend_from_slice(payload);
                if kind == Data::Text && !self.compressed {
                    self.check_utf8(head.fin)?;
                }
                if !head.fin {
                    return Ok(Some((Event::Fragment, total)));
                }
                self.kind = None;
                if std::mem::take(&mut self.compressed) {
                    return Ok(Some((
                        Event::Compressed {
                            text: kind == Data::Text,
                            payload: &self.message,
                        },
                        total,
                    )));
                }
                match kind {
                    Data::Text => Event::Text(std::str::from_utf8(&self.message).map_err(|_| Violation::InvalidUtf8)?),
                    _ => Event::Binary(&self.message),
                }
            }
            OpCode::Data(kind) => {
                if self.kind.is_some() {
                    return Err(Violation::Protocol("new message before the fragmented one ended"));
                }
                if head.fin && head.rsv1 {
                    Event::Compressed {
                        text: kind == Data::Text,
                        payload,
                    }
                } else if head.fin {
                    match kind {
                        Data::Text => Event::Text(std::str::from_utf8(payload).map_err(|_| Violation::InvalidUtf8)?),
                        _ => Event::Binary(payload),
                    }
                } else {
                    self.kind = Some(kind);
                    self.compressed = head.rsv1;
                    self.message.extend_from_slice(payload);
                    if kind == Data::Text && !head.rsv1 {
                        self.check_utf8(false)?;
                    }
                    Event::Fragment
                }
            }
        };
        Ok(Some((event, total)))
    }

    /// For a text frame at the head of `buf` whose payload has only partly arrived, validates
    /// the UTF-8 received so far (each byte once across calls), so invalid text fails before the
    /// rest of the frame comes. Complete frames are left to [`decode`](Self::decode).
    pub fn check_incomplete(&mut self, buf: &[u8], max_message: usize) -> Result<(), Violation> {
        let Ok(Some(head)) = parse_head(buf, max_message) else {
            return Ok(());
        };
        let is_text = match head.opcode {
            OpCode::Data(Data::Text) => self.kind.is_none(),
            OpCode::Data(Data::Continue) => self.kind == Some(Data::Text) && !self.compressed,
            _ => false,
        };
        if !is_text || buf.len() >= head.frame_len() {
            return Ok(());
        }
        if self.partial_checked == 0 && head.opcode == OpCode::Data(Data::Continue) {
            // Continue from the message's own incomplete code point.
            let tail = &self.message[self.utf8_checked..];
            self.partial_carry.0[..tail.len()].copy_from_slice(tail);
            self.partial_carry.1 = tail.len() as u8;
        }
        let payload = &buf[head.header_len..];
        let mut chunk = [0u8; 4 + 4096];
        while self.partial_checked < payload.len() {
            let (carry, carry_len) = (self.partial_carry.0, self.partial_carry.1 as usize);
            chunk[..carry_len].copy_from_slice(&carry[..carry_len]);
            let n = (payload.len() - self.partial_checked).min(4096);
            for i in 0..n {
                let at = self.partial_checked + i;
                chunk[carry_len + i] = payload[at] ^ head.mask[at & 3];
            }
            let filled = &chunk[..carry_len + n];
            let rest = match std::str::from_utf8(filled) {
                Ok(_) => &[][..],
                Err(e) if e.error_len().is_none() => &filled[e.valid_up_to()..],
                Err(_) => return Err(Violation::InvalidUtf8),
            };
            self.partial_carry.0[..rest.len()].copy_from_slice(rest);
            self.partial_carry.1 = rest.len() as u8;
            self.partial_checked += n;
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.message.clear();
        self.utf8_checked = 0;
        if self.message.capacity() > 64 * 1024 {
            self.message = Vec::new();
        }
    }

    /// Validates the new tail of `message`, failing fast on a sequence that can never become
    /// valid; an incomplete code point at the end waits for the next fragment unless `fin`.
    fn check_utf8(&mut self, fin: bool) -> Result<(), Violation> {
        match std::str::from_utf8(&self.message[self.utf8_checked..]) {
            Ok(_) => self.utf8_checked = self.message.len(),
            Err(e) if e.error_len().is_none() && !fin => self.utf8_checked += e.valid_up_to(),
            Err(_) => return Err(Violation::InvalidUtf8),
        }
        Ok(())
    }
}

/// Parses a close payload: empty, or a valid code and a UTF-8 reason.
pub fn parse_close(payload: &[u8]) -> Result<Option<(u16, &str)>, Violation> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(Violation::Protocol("close payload of one byte")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !is_valid_close_code(code) {
                return Err(Violation::Protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| Violation::InvalidUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// Codes a peer may send (RFC 6455 7.4.1 and 7.4.2; 1004-1006 and 1015 are reserved).
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// The unmasked (server) frame `b` starts with: (header length, payload length), if it is all
/// there (`None`: cut short, or masked).
pub fn server_frame_bounds(b: &[u8]) -> Option<(usize, usize)> {
    let second = *b.get(1)?;
    if second & 0x80 != 0 {
        return None;
    }
    let (head, len): (usize, usize) = match second {
        126 => (4, usize::from(u16::from_be_bytes(b.get(2..4)?.try_into().ok()?))),
        127 => (
            10,
            usize::try_from(u64::from_be_bytes(b.get(2..10)?.try_into().ok()?)).ok()?,
        ),
        n => (2, usize::from(n)),
    };
    (b.len() >= head.checked_add(len)?).then_some((head, len))
}

/// Appends an unmasked, final server frame.
pub fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    // Formatting into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// Appends a masked client frame (`first` is the FIN/RSV/opcode byte), for load generators and
/// tests; the server itself never masks.
pub fn encode_client_frame(out: &mut Vec<u8>, first: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(first);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// Appends a close frame; the reason is cut at a character boundary to fit 123 bytes.
pub fn encode_close(out: &mut Vec<u8>, code: Option<u16>, reason: &str) {
    let mut payload = [0u8; 125];
    let len = match code {
        None => 0,
        Some(code) => {
            let mut cut = reason.len().min(123);
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            payload[..2].copy_from_slice(&code.to_be_bytes());
            payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
            2 + cut
        }
    };
    encode_frame(out, OpCode::Control(Control::Close), &payload[..len]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_client_frame(&mut out, first, payload, [1, 2, 3, 4]);
        out
    }

    fn decode_all(bytes: &mut [u8], max: usize) -> Result<Vec<String>, Violation> {
        let mut d = Decoder::default();
        let mut pos = 0;
        let mut out = vec![];
        while pos < bytes.len() {
            let Some((ev, n)) = d.decode(&mut bytes[pos..], max)? else {
                break;
            };
            out.push(format!("{ev:?}"));
            pos += n;
        }
        Ok(out)
    }

    #[test]
    fn single_frames() {
        let mut b = frame(0x81, b"hello");
        b.extend(frame(0x82, &[0, 1]));
        b.extend(frame(0x89, b"p"));
        b.extend(frame(0x8A, b""));
        b.extend(frame(0x88, &[0x03, 0xE8, b'b', b'y']));
        assert_eq!(
            decode_all(&mut b, 100).unwrap(),
            vec![
                "Text(\"hello\")",
                "Binary([0, 1])",
                "Ping([112])",
                "Pong",
                "Close(Some((1000, \"by\")))"
            ]
        );
    }

    #[test]
    fn fragments_with_interleaved_control() {
        let mut b = frame(0x01, b"he");
        b.extend(frame(0x89, b""));
        b.extend(frame(0x00, b"ll"));
        b.extend(frame(0x80, b"o"));
        assert_eq!(
            decode_all(&mut b, 100).unwrap(),
            vec!["Fragment", "Ping([])", "Fragment", "Text(\"hello\")"]
        );
    }

    #[test]
    fn incomplete_frames_wait() {
        let b = frame(0x81, &[b'x'; 300]);
        let mut d = Decoder::default();
        for cut in [0, 1, 2, 3, 7, 299] {
            let mut part = b[..cut].to_vec();
            assert_eq!(d.decode(&mut part, 1000).unwrap(), None, "cut {cut}");
        }
    }

    #[test]
    fn violations() {
        let v = |mut b: Vec<u8>| decode_all(&mut b, 100).unwrap_err();
        assert_eq!(
            v(vec![0x81, 0x01, b'a']),
            Violation::Protocol("client frames must be masked")
        );
        assert_eq!(v(frame(0xC1, b"a")), Violation::Protocol("reserved bits set"));
        assert_eq!(v(frame(0x83, b"a")), Violation::Protocol("reserved opcode"));
        assert_eq!(v(frame(0x8B, b"a")), Violation::Protocol("reserved opcode"));
        assert_eq!(v(frame(0x09, b"a")), Violation::Protocol("fragmented control frame"));
        assert_eq!(
            v(frame(0x89, &[0; 126])),
            Violation::Protocol("control frame payload over 125 bytes")
        );
        assert_eq!(
            v(frame(0x80, b"a")),
            Violation::Protocol("continuation frame without a message")
        );
        let mut b = frame(0x01, b"a");
        b.extend(frame(0x81, b"b"));
        assert_eq!(v(b), Violation::Protocol("new message before the fragmented one ended"));
        assert_eq!(v(frame(0x81, &[b'a'; 101])), Violation::TooBig);
        let mut b = frame(0x01, &[b'a'; 60]);
        b.extend(frame(0x80, &[b'a'; 60]));
        assert_eq!(v(b), Violation::TooBig);
        assert_eq!(v(frame(0x81, &[0xFF])), Violation::InvalidUtf8);
        assert_eq!(v(frame(0x88, &[3])), Violation::Protocol("close payload of one byte"));
        assert_eq!(v(frame(0x88, &[0x03, 0xED])), Violation::Protocol("invalid close code"));
        assert_eq!(v(frame(0x88, &[0x03, 0xE8, 0xFF])), Violation::InvalidUtf8);
    }

    #[test]
    fn utf8_split_across_fragments() {
        // "€" is E2 82 AC: split inside the code point is fine...
        let mut b = frame(0x01, &[b'a', 0xE2]);
        b.extend(frame(0x00, &[0x82]));
        b.extend(frame(0x80, &[0xAC]));
        assert_eq!(
            decode_all(&mut b, 100).unwrap(),
            vec!["Fragment", "Fragment", "Text(\"a€\")"]
        );
        // ...an impossible sequence fails at the fragment that makes it impossible...
        let mut b = frame(0x01, &[0xE2]);
        b.extend(frame(0x00, &[0x28]));
        let mut d = Decoder::default();
        let (_, n) = d.decode(&mut b, 100).unwrap().unwrap();
        assert_eq!(d.decode(&mut b[n..], 100), Err(Violation::InvalidUtf8));
        // ...and a truncated code point fails at the final fragment.
        let mut b = frame(0x01, b"a");
        b.extend(frame(0x80, &[0xE2, 0x82]));
        assert_eq!(decode_all(&mut b, 100).unwrap_err(), Violation::InvalidUtf8);
    }

    #[test]
    fn invalid_text_fails_before_the_frame_is_complete() {
        // One text frame: valid text, then a UTF-16 surrogate (never valid), then more to come.
        let mut payload = "hello κόσμε".as_bytes().to_vec();
        let bad = payload.len();
        payload.extend_from_slice(&[0xED, 0xA0, 0x80]);
        payload.extend_from_slice(&[b'z'; 100]);
        let f = frame(0x81, &payload);
        let header = f.len() - payload.len();
        let mut d = Decoder::default();
        for cut in header..f.len() {
            let r = d.check_incomplete(&f[..cut], 1000);
            if cut <= header + bad + 1 {
                assert_eq!(r, Ok(()), "cut {cut}: not yet decidable");
            } else {
                assert_eq!(r, Err(Violation::InvalidUtf8), "cut {cut}");
                return;
            }
        }
        panic!("invalid UTF-8 never detected early");
    }

    #[test]
    fn valid_text_in_parts_passes_and_continuations_carry_state() {
        let text = "ωмega €uro ".repeat(50);
        let f = frame(0x01, text.as_bytes());
        let mut d = Decoder::default();
        for cut in (1..f.len()).step_by(7) {
            assert_eq!(d.check_incomplete(&f[..cut], 10_000), Ok(()), "cut {cut}");
        }
        let mut whole = f.clone();
        assert_eq!(d.decode(&mut whole, 10_000).unwrap().unwrap().0, Event::Fragment);
        // A message whose first fragment ends inside '€' (E2 82 AC), continued in parts.
        let mut d = Decoder::default();
        let mut first = frame(0x01, &[b'a', 0xE2]);
        d.decode(&mut first, 100).unwrap();
        let c = frame(0x80, &[0x82, 0xAC, b'b', b'c', b'd']);
        for cut in 1..c.len() {
            assert_eq!(d.check_incomplete(&c[..cut], 100), Ok(()), "cut {cut}");
        }
        let c = frame(0x80, &[0x28, b'b', b'c', b'd']); // 0xE2 0x28: impossible
        let mut d2 = Decoder::default();
        let mut first = frame(0x01, &[b'a', 0xE2]);
        d2.decode(&mut first, 100).unwrap();
        assert_eq!(d2.check_incomplete(&c[..c.len() - 1], 100), Err(Violation::InvalidUtf8));
    }

    #[test]
    fn unmask_matches_bytewise() {
        let mask = [0xA1, 0xB2, 0xC3, 0xD4];
        for len in 0..40 {
            let orig: Vec<u8> = (0..len as u8).collect();
            let mut fast = orig.clone();
            unmask(&mut fast, mask);
            let slow: Vec<u8> = orig.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
            assert_eq!(fast, slow);
        }
    }

    #[test]
    fn encoders() {
        let mut out = vec![];
        encode_frame(&mut out, OpCode::Data(Data::Text), b"hi");
        assert_eq!(out, [0x81, 2, b'h', b'i']);
        out.clear();
        encode_frame(&mut out, OpCode::Data(Data::Binary), &[7; 200]);
        assert_eq!(&out[..4], &[0x82, 126, 0, 200]);
        out.clear();
        encode_close(&mut out, Some(1008), &"é".repeat(100));
        assert_eq!(out[1] as usize, out.len() - 2);
        assert!(out.len() - 2 <= 125);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }
}
