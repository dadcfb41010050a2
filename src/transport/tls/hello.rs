//! A look at a client's first flight before rustls sees it: which key exchange groups the
//! ClientHello lists, so that the server, not the client, picks the group.
//!
//! Owns: reading `supported_groups` out of a ClientHello record, nothing else (no validation:
//! rustls parses the hello for real and refuses what is wrong). Does not touch: the
//! handshake, which configuration exists, or the bytes (it only reads them).
//!
//! Why: rustls takes the first group of the *client's* list that the server supports. Clients
//! that follow rustls 0.23.48's ring default list P-384 first and send only a P-384 key share;
//! a P-384 handshake costs the server about five times the CPU of an X25519 one. Such a client
//! that also lists X25519 is given a configuration with X25519 alone: rustls then answers with
//! a HelloRetryRequest for an X25519 share (one more round trip for that client, ~1.1 ms of
//! server CPU saved).

/// TLS group code points (RFC 8446 4.2.7).
const X25519: u16 = 0x001d;
const SECP256R1: u16 = 0x0017;
const SECP384R1: u16 = 0x0018;
const SUPPORTED_GROUPS: u16 = 10;
const RECORD_HEADER: usize = 5;

/// What the first bytes of a connection say about the client's groups.
#[derive(Debug, PartialEq, Eq)]
pub enum Groups {
    /// The ClientHello is not complete yet: wait for more bytes.
    Incomplete,
    /// The client lists X25519, after another group the server supports: make it use X25519.
    SteerToX25519,
    /// Anything else (X25519 first, no X25519 at all, not a ClientHello): rustls decides.
    AsOffered,
}

/// Reads the ClientHello at the start of `buf`.
pub fn groups(buf: &[u8]) -> Groups {
    let Some(header) = buf.get(..RECORD_HEADER) else {
        // A TLS record starts with 22 (handshake): anything else is rustls's to refuse now.
        return if buf.first().is_none_or(|&b| b == 22) {
            Groups::Incomplete
        } else {
            Groups::AsOffered
        };
    };
    if header[0] != 22 {
        return Groups::AsOffered;
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    let Some(record) = buf.get(RECORD_HEADER..RECORD_HEADER + len) else {
        return Groups::Incomplete;
    };
    // A hello split over several records is rare: it is left as offered.
    match client_groups(record) {
        Some(list) => steer(&list),
        None => Groups::AsOffered,
    }
}

fn steer(list: &[u16]) -> Groups {
    let first_ours = list.iter().find(|g| matches!(**g, X25519 | SECP256R1 | SECP384R1));
    if first_ours.is_some_and(|g| *g != X25519) && list.contains(&X25519) {
        Groups::SteerToX25519
    } else {
        Groups::AsOffered
    }
}

/// The `supported_groups` list of a ClientHello handshake message wholly inside `msg`.
fn client_groups(msg: &[u8]) -> Option<Vec<u16>> {
    let mut r = Reader(msg);
    if r.u8()? != 1 {
        return None;
    }
    let body_len = r.u24()?;
    let mut body = Reader(r.take(body_len)?);
    body.take(2 + 32)?; // legacy_version, random
    let sid = usize::from(body.u8()?);
    body.take(sid)?;
    let suites = usize::from(body.u16()?);
    body.take(suites)?;
    let compression = usize::from(body.u8()?);
    body.take(compression)?;
    let ext_len = usize::from(body.u16()?);
    let mut exts = Reader(body.take(ext_len)?);
    while !exts.0.is_empty() {
        let typ = exts.u16()?;
        let len = usize::from(exts.u16()?);
        let data = exts.take(len)?;
        if typ == SUPPORTED_GROUPS {
            let mut d = Reader(data);
            let n = usize::from(d.u16()?);
            let list = d.take(n)?;
            return Some(list.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect());
        }
    }
    None
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_picks_x25519_when_the_client_lists_it_anywhere() {
        assert_eq!(steer(&[SECP384R1, X25519]), Groups::SteerToX25519);
        assert_eq!(steer(&[SECP256R1, SECP384R1, X25519]), Groups::SteerToX25519);
        // An unknown group first (a post-quantum hybrid) does not count: X25519 is ours first.
        assert_eq!(steer(&[0x11ec, X25519, SECP256R1]), Groups::AsOffered);
        assert_eq!(steer(&[X25519, SECP384R1]), Groups::AsOffered);
        assert_eq!(steer(&[SECP384R1]), Groups::AsOffered);
        assert_eq!(steer(&[]), Groups::AsOffered);
    }

    #[test]
    fn partial_and_foreign_first_bytes() {
        assert_eq!(groups(b""), Groups::Incomplete);
        assert_eq!(groups(&[22, 3, 1]), Groups::Incomplete);
        assert_eq!(groups(&[22, 3, 1, 0, 10, 1, 0]), Groups::Incomplete);
        assert_eq!(groups(b"GET / HTTP/1.1\r\n"), Groups::AsOffered);
        assert_eq!(groups(&[22, 3, 1, 0, 2, 1, 0]), Groups::AsOffered);
        // Truncated lengths inside a complete record never read past it.
        for cut in 0..40 {
            let mut rec = vec![22, 3, 1, 0, cut as u8, 1, 0, 0, 200];
            rec.resize(5 + cut, 0xff);
            assert_eq!(groups(&rec), Groups::AsOffered);
        }
    }
}
