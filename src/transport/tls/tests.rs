//! A real rustls client against a session, bytes carried in memory in pieces of seeded sizes:
//! every cipher suite of both versions, records cut anywhere, KeyUpdate both ways,
//! close_notify, padding, records of every type, and records that must be refused.

use std::io::{IoSlice, Read, Write};
use std::sync::Arc;

use rustls::ClientConnection;
use rustls::crypto::ring::cipher_suite as cs;

use super::fuzzing::{self, Cuts};
use super::session::SessionError;
use super::{TlsSession, TlsShared, Writer};

fn server_config() -> Arc<rustls::ServerConfig> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    fuzzing::server_config(ck.cert.pem().as_bytes(), ck.signing_key.serialize_pem().as_bytes())
}

fn client(suite: rustls::SupportedCipherSuite) -> ClientConnection {
    ClientConnection::new(fuzzing::client_config(suite, false), "localhost".try_into().unwrap()).unwrap()
}

struct Pair {
    client: ClientConnection,
    server: TlsSession,
    shared: TlsShared,
    cuts: Cuts,
    /// Plaintext the server has received.
    got: Vec<u8>,
    peer_closed: bool,
}

impl Pair {
    fn new(suite: rustls::SupportedCipherSuite, seed: u64) -> Pair {
        Self::with_first_bytes(suite, seed, b"")
    }

    /// `first` is written before the handshake ends: it leaves with the client's Finished.
    fn with_first_bytes(suite: rustls::SupportedCipherSuite, seed: u64, first: &[u8]) -> Pair {
        let mut p = Pair {
            client: client(suite),
            server: TlsSession::new(server_config()).unwrap(),
            shared: TlsShared::default(),
            cuts: Cuts(seed),
            got: Vec::new(),
            peer_closed: false,
        };
        p.client.writer().write_all(first).unwrap();
        while p.client.is_handshaking() {
            p.pass_up().unwrap();
            p.pass_down();
        }
        // The client's Finished, then what the server sends after it (TLS 1.3 tickets).
        p.pass_up().unwrap();
        p.pass_down();
        assert_eq!(p.client.negotiated_cipher_suite(), Some(suite));
        p
    }

    /// Everything the client has to send, given to the server in pieces as reads would.
    fn pass_up(&mut self) -> Result<(), SessionError> {
        let mut wire = Vec::new();
        while self.client.wants_write() {
            self.client.write_tls(&mut wire).unwrap();
        }
        let mut rest = &wire[..];
        while !rest.is_empty() {
            let n = self.cuts.piece().min(rest.len());
            let k = self.server.kept_len();
            let mut buf = vec![0; k + n];
            buf[k..].copy_from_slice(&rest[..n]);
            self.server.restore_kept(&mut buf[..k], &mut self.shared);
            let r = self.server.receive(&mut buf, &mut self.shared)?;
            self.got.extend_from_slice(&buf[..r.plain]);
            self.peer_closed |= r.closed;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// What the server owes, into the client; returns the plaintext the client got.
    fn pass_down(&mut self) -> Vec<u8> {
        let mut wire = Vec::new();
        assert!(self.server.flush(&mut wire, &mut self.shared).unwrap());
        self.client_reads(&wire)
    }

    /// Ciphertext from the server into the client; the plaintext it yields.
    fn client_reads(&mut self, wire: &[u8]) -> Vec<u8> {
        let mut rest = wire;
        let mut plain = Vec::new();
        while !rest.is_empty() {
            self.client.read_tls(&mut rest).unwrap();
            self.client.process_new_packets().unwrap();
            let _ = self.client.reader().read_to_end(&mut plain);
        }
        plain
    }

    fn server_sends(&mut self, parts: &[&[u8]]) -> Vec<u8> {
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut wire = Vec::new();
        let mut w = Writer {
            session: &mut self.server,
            shared: &mut self.shared,
            sock: &mut wire,
        };
        let total: usize = parts.iter().map(|p| p.len()).sum();
        assert_eq!(w.write_vectored(&slices).unwrap(), total.min(super::session::MAX_BATCH));
        self.client_reads(&wire)
    }
}

fn suites() -> [rustls::SupportedCipherSuite; 6] {
    fuzzing::suites()
}

fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt)).collect()
}

#[test]
fn every_suite_carries_data_both_ways_in_records_cut_anywhere() {
    for (i, suite) in suites().into_iter().enumerate() {
        for seed in [1u64, 77, 9_001] {
            let mut p = Pair::with_first_bytes(suite, seed + i as u64, b"GET / HTTP/1.1");
            assert_eq!(
                p.got, b"GET / HTTP/1.1",
                "{suite:?}: bytes sent with the client's Finished"
            );
            p.got.clear();
            let up = pattern(50_000, 3);
            p.client.writer().write_all(&up).unwrap();
            p.client.writer().write_all(b"").unwrap();
            p.pass_up().unwrap();
            assert_eq!(p.got, up, "{suite:?} seed {seed}");
            // Several slices, one of them empty, more than a record in all.
            let a = pattern(10_000, 9);
            let b = pattern(20_000, 1);
            let down = p.server_sends(&[&a, &[], &b, b"tail"]);
            assert_eq!(down, [&a[..], &b[..], b"tail"].concat(), "{suite:?}");
            // Idle between messages: nothing kept.
            assert_eq!(p.server.kept_len(), 0);
        }
    }
}

#[test]
fn a_client_key_update_is_followed_and_answered() {
    for suite in [cs::TLS13_AES_128_GCM_SHA256, cs::TLS13_CHACHA20_POLY1305_SHA256] {
        let mut p = Pair::new(suite, 5);
        for round in 0..3u8 {
            // rustls asks the peer to update too (update_requested).
            p.client.refresh_traffic_keys().unwrap();
            p.client.writer().write_all(&[round; 100]).unwrap();
            p.pass_up().unwrap();
            assert_eq!(p.got, vec![round; 100]);
            p.got.clear();
            assert!(p.server.wants_write(), "a KeyUpdate is owed");
            // Our KeyUpdate goes first, sealed with the old key; what follows uses the new one.
            assert_eq!(p.server_sends(&[b"after update"]), b"after update");
        }
    }
}

#[test]
fn close_notify_ends_input_and_is_answered_once() {
    let mut p = Pair::new(cs::TLS13_AES_256_GCM_SHA384, 11);
    p.client.writer().write_all(b"last words").unwrap();
    p.client.send_close_notify();
    p.pass_up().unwrap();
    assert_eq!(p.got, b"last words");
    assert!(p.peer_closed);
    p.server.close_notify();
    p.server.close_notify();
    let mut wire = Vec::new();
    assert!(p.server.flush(&mut wire, &mut p.shared).unwrap());
    // One alert record: header, type byte, level and description, tag.
    assert_eq!(wire.len(), 5 + 2 + 1 + 16);
    let mut rest = &wire[..];
    p.client.read_tls(&mut rest).unwrap();
    let state = p.client.process_new_packets().unwrap();
    assert!(state.peer_has_closed());
}

#[test]
fn forged_and_oversized_records_are_refused_with_an_alert() {
    for suite in suites() {
        let mut p = Pair::new(suite, 3);
        p.client.writer().write_all(b"x").unwrap();
        let mut wire = Vec::new();
        p.client.write_tls(&mut wire).unwrap();
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let k = p.server.kept_len();
        assert_eq!(k, 0);
        let err = p.server.receive(&mut wire, &mut p.shared).expect_err("forged record");
        assert!(err.to_string().contains("authentication"), "{err}");
        assert!(p.server.wants_write(), "bad_record_mac goes out");
    }
    let mut p = Pair::new(cs::TLS13_AES_128_GCM_SHA256, 4);
    let mut huge = vec![23, 3, 3, 0xff, 0xff];
    let err = p.server.receive(&mut huge, &mut p.shared).expect_err("oversized");
    assert!(err.to_string().contains("too long"), "{err}");
    // Plaintext before the handshake is not TLS at all.
    let mut fresh = TlsSession::new(server_config()).unwrap();
    let mut http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    assert!(fresh.receive(&mut http, &mut TlsShared::default()).is_err());
}

#[test]
fn records_of_any_type_and_padding_never_upset_a_session() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let server = fuzzing::server_config(ck.cert.pem().as_bytes(), ck.signing_key.serialize_pem().as_bytes());
    let clients: Vec<_> = suites().iter().map(|s| fuzzing::client_config(*s, true)).collect();
    for pick in 0..6u8 {
        // Data, padded data (TLS 1.3), then data again: all of it arrives.
        fuzzing::records(
            &server,
            &clients,
            &[pick, 0, 3, b'a', b'b', b'c', 3, 5, 1, 2, 3, 4, 5, 0, 0],
        );
        // An alert (close_notify and a fatal one), a handshake message, a change_cipher_spec,
        // type 0, garbage: refused, never a panic.
        for bad in [
            &[1u8, 3, 21, 1, 0][..],
            &[1, 3, 21, 2, 40],
            &[1, 5, 22, 24, 0, 0, 1],
            &[1, 2, 20, 1],
            &[1, 1, 0],
            &[2, 4, 23, 3, 3, 0],
        ] {
            let mut input = vec![pick, 0, 2, b'o', b'k'];
            input.extend_from_slice(bad);
            fuzzing::records(&server, &clients, &input);
        }
    }
}

#[test]
fn a_tls12_record_with_another_version_is_refused_with_protocol_version() {
    let tls12: Vec<_> = suites()
        .into_iter()
        .filter(|s| s.version() == &rustls::version::TLS12)
        .collect();
    assert!(tls12.len() >= 2);
    for suite in tls12 {
        let mut p = Pair::new(suite, 5);
        p.client.writer().write_all(b"x").unwrap();
        let mut wire = Vec::new();
        p.client.write_tls(&mut wire).unwrap();
        assert_eq!(wire[1..3], [3, 3]);
        wire[2] = 1; // "TLS 1.0"
        let err = p.server.receive(&mut wire, &mut p.shared).expect_err("wrong version");
        assert!(err.to_string().contains("record version 3.1"), "{err}");
        assert!(p.server.wants_write(), "the protocol_version alert goes out");
    }
}

#[test]
fn at_its_aes_gcm_limit_a_tls12_key_says_close_notify_not_nothing() {
    let suite = cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256;
    let mut p = Pair::new(suite, 6);
    let t = p.server.traffic().expect("handshake done");
    let limit = t.tx_limit();
    t.set_tx_seq(limit - 1);
    let mut out = Vec::new();
    let err = t
        .seal(&[std::io::IoSlice::new(b"more")], 1 << 20, &mut out)
        .expect_err("the key is spent");
    assert!(err.to_string().contains("too many records"), "{err}");
    // One record, an alert (type 21): close_notify, sealed with the last sequence number.
    assert_eq!(out[0], 21, "{out:?}");
    let len = u16::from_be_bytes([out[3], out[4]]) as usize;
    assert_eq!(out.len(), 5 + len, "nothing after it");
    // And nothing more, ever, under this key.
    let mut again = Vec::new();
    assert!(t.seal(&[std::io::IoSlice::new(b"x")], 1 << 20, &mut again).is_err());
    assert!(again.is_empty());
}
