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

fn server_config() -> Arc<super::ServerConfigs> {
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
        Self::start(suite, seed, first, false)
    }

    /// With `key_update`, the client's KeyUpdate (update_requested) follows its Finished in
    /// the same flight.
    fn start(suite: rustls::SupportedCipherSuite, seed: u64, first: &[u8], key_update: bool) -> Pair {
        let mut p = Pair {
            client: client(suite),
            server: TlsSession::new(server_config()),
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
        if key_update {
            p.client.refresh_traffic_keys().unwrap();
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
fn a_key_update_in_the_flight_of_finished_is_answered_not_skipped() {
    for suite in [cs::TLS13_AES_128_GCM_SHA256, cs::TLS13_CHACHA20_POLY1305_SHA256] {
        // Seed 7's first piece is larger than the whole flight: Finished and KeyUpdate arrive
        // in one read, as they do from a client that sends them together.
        for seed in [7, 5, 11] {
            let mut p = Pair::start(suite, seed, b"", true);
            // Our KeyUpdate is owed (or sent); every byte we send must read under the keys
            // the client has been told about.
            assert_eq!(p.server_sends(&[b"first reply"]), b"first reply", "seed {seed}");
            p.client.writer().write_all(b"more").unwrap();
            p.pass_up().unwrap();
            assert_eq!(p.got, b"more");
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
    let mut fresh = TlsSession::new(server_config());
    let mut http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    assert!(fresh.receive(&mut http, &mut TlsShared::default()).is_err());
}

#[test]
fn records_of_any_type_and_padding_never_upset_a_session() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let server = fuzzing::server_config(ck.cert.pem().as_bytes(), ck.signing_key.serialize_pem().as_bytes());
    let clients: Vec<_> = suites().iter().map(|s| fuzzing::client_config(*s, true)).collect();
    // Found by the fuzzer: 33 empty data records in a row are refused (the limit), which the
    // harness must not take for valid data refused.
    let mut many_empty = vec![96u8];
    many_empty.extend_from_slice(&[0; 66]);
    many_empty.push(97);
    fuzzing::records(&server, &clients, &many_empty);
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
            // Sizes around the limits, KeyUpdates in a row, a short alert.
            &[4, 0],
            &[4, 2],
            &[4, 4],
            &[4, 5],
            &[4, 7],
            &[5, 40, 0xff],
            &[6, 1, 2],
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

/// A session and a sealer holding its client's sending keys, for records no client would send.
fn session_and_sealer(suite: rustls::SupportedCipherSuite) -> (TlsSession, TlsShared, super::record::PeerSealer) {
    let mut shared = TlsShared::default();
    let mut client =
        ClientConnection::new(fuzzing::client_config(suite, true), "localhost".try_into().unwrap()).unwrap();
    let session = fuzzing::establish(&mut client, server_config(), &mut shared).unwrap();
    #[allow(deprecated)]
    let secrets = client.dangerous_extract_secrets().unwrap();
    let tls12 = suite.version() == &rustls::version::TLS12;
    let sealer = super::record::PeerSealer::new(secrets.tx.0, &secrets.tx.1, tls12).unwrap();
    (session, shared, sealer)
}

/// Gives `wire` to the session in one read: the plaintext, or the error.
fn feed(session: &mut TlsSession, shared: &mut TlsShared, mut wire: Vec<u8>) -> Result<Vec<u8>, String> {
    let r = session.receive(&mut wire, shared).map_err(|e| e.to_string())?;
    Ok(wire[..r.plain].to_vec())
}

#[test]
fn tls13_records_past_its_limits_are_refused_with_the_rfc_alerts() {
    let suite = cs::TLS13_AES_128_GCM_SHA256;
    // Ciphertext of exactly 2^14 + 256 bytes is allowed; one more is record_overflow.
    for (extra, ok) in [(0usize, true), (1, false)] {
        let (mut s, mut shared, mut sealer) = session_and_sealer(suite);
        let plain = vec![7u8; 16_000];
        let padding = (1 << 14) + 256 + extra - plain.len() - 1 - 16;
        let mut wire = Vec::new();
        sealer.seal(23, &plain, padding, &mut wire);
        assert_eq!(wire.len() - 5, (1 << 14) + 256 + extra);
        match feed(&mut s, &mut shared, wire) {
            Ok(got) => assert!(ok && got == plain),
            Err(e) => assert!(!ok && e.contains("too long"), "{e}"),
        }
    }
    // A record carrying an empty handshake message, two KeyUpdates, a 1-byte alert, a
    // 3-byte alert: each refused, each with an alert queued for the client.
    for (typ, body, says) in [
        (22u8, &[][..], "unexpected record type 22"),
        (22, &[24, 0, 0, 1, 0, 24, 0, 0, 1, 0], "more after a KeyUpdate"),
        (22, &[24, 0, 0, 1, 2], "malformed key update"),
        (21, &[2], "malformed alert"),
        (21, &[1, 0, 0], "malformed alert"),
    ] {
        let (mut s, mut shared, mut sealer) = session_and_sealer(suite);
        let mut wire = Vec::new();
        sealer.seal(typ, body, 0, &mut wire);
        let e = feed(&mut s, &mut shared, wire).expect_err("refused");
        assert!(e.contains(says), "{e} (wanted {says})");
        assert!(s.wants_write(), "an alert goes out");
    }
}

#[test]
fn empty_records_and_key_updates_in_a_row_are_limited() {
    for suite in [
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ] {
        let (mut s, mut shared, mut sealer) = session_and_sealer(suite);
        let mut wire = Vec::new();
        for _ in 0..32 {
            sealer.seal(23, b"", 0, &mut wire);
        }
        sealer.seal(23, b"data resets the count", 0, &mut wire);
        for _ in 0..32 {
            sealer.seal(23, b"", 0, &mut wire);
        }
        assert_eq!(feed(&mut s, &mut shared, wire).unwrap(), b"data resets the count");
        let mut wire = Vec::new();
        sealer.seal(23, b"", 0, &mut wire);
        let e = feed(&mut s, &mut shared, wire).expect_err("the 33rd empty record in a row");
        assert!(e.contains("empty records in a row"), "{e}");
    }
    let mut p = Pair::new(cs::TLS13_CHACHA20_POLY1305_SHA256, 7);
    for round in 0..2 {
        for _ in 0..32 {
            p.client.refresh_traffic_keys().unwrap();
            p.pass_up().unwrap();
        }
        p.client.writer().write_all(&[round]).unwrap();
        p.pass_up().unwrap();
        assert_eq!(p.got, [round]);
        p.got.clear();
        // Thirty-two requests while we were silent: one KeyUpdate answers them all.
        let mut wire = Vec::new();
        assert!(p.server.flush(&mut wire, &mut p.shared).unwrap());
        assert_eq!(wire.len(), 5 + 5 + 1 + 16, "one KeyUpdate record");
        p.client_reads(&wire);
    }
    for _ in 0..33 {
        p.client.refresh_traffic_keys().unwrap();
    }
    let e = p.pass_up().expect_err("the 33rd KeyUpdate in a row");
    assert!(e.to_string().contains("key updates in a row"), "{e}");
}

#[test]
fn after_a_fatal_alert_nothing_more_is_sealed() {
    let mut p = Pair::new(cs::TLS13_AES_128_GCM_SHA256, 3);
    p.client.writer().write_all(b"x").unwrap();
    let mut wire = Vec::new();
    p.client.write_tls(&mut wire).unwrap();
    let last = wire.len() - 1;
    wire[last] ^= 1;
    p.server.receive(&mut wire, &mut p.shared).expect_err("forged record");
    // A queued reply tries to go out after the alert: refused, and only the alert leaves.
    let mut out = Vec::new();
    let mut w = Writer {
        session: &mut p.server,
        shared: &mut p.shared,
        sock: &mut out,
    };
    let e = w
        .write_vectored(&[IoSlice::new(&[b'y'; 60_000])])
        .expect_err("no data after a fatal alert");
    assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    assert_eq!(
        out.len(),
        5 + 2 + 1 + 16,
        "the bad_record_mac alert alone: {}",
        out.len()
    );
    assert!(!p.server.wants_write());
    // After close_notify, likewise.
    let mut p = Pair::new(cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, 4);
    p.server.close_notify();
    let mut out = Vec::new();
    let mut w = Writer {
        session: &mut p.server,
        shared: &mut p.shared,
        sock: &mut out,
    };
    assert!(w.write(b"late").is_err());
    assert_eq!(out.len(), 5 + 8 + 2 + 16, "close_notify alone");
}

#[test]
fn the_server_steers_clients_that_list_x25519_to_it() {
    use rustls::HandshakeKind::{Full, FullWithHelloRetryRequest};
    use rustls::NamedGroup::{X25519, secp256r1, secp384r1};
    use rustls::crypto::ring::kx_group as kx;
    let cases: [(Vec<&'static dyn rustls::crypto::SupportedKxGroup>, _, _); 4] = [
        // A P-384-first client (rustls 0.23.48's default) that also lists X25519: one
        // HelloRetryRequest, then X25519.
        (vec![kx::SECP384R1, kx::X25519], X25519, FullWithHelloRetryRequest),
        (
            vec![kx::SECP256R1, kx::SECP384R1, kx::X25519],
            X25519,
            FullWithHelloRetryRequest,
        ),
        // X25519 first (browsers, wsedge's client): as offered.
        (vec![kx::X25519, kx::SECP384R1], X25519, Full),
        // No X25519 at all: the client's first choice, no retry.
        (vec![kx::SECP384R1, kx::SECP256R1], secp384r1, Full),
    ];
    for suite in [
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ] {
        for (groups, want, kind) in &cases {
            let config = fuzzing::client_config_with_groups(suite, false, groups.clone());
            let mut client = ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
            let mut shared = TlsShared::default();
            let mut server = fuzzing::establish(&mut client, server_config(), &mut shared).expect("handshake");
            let got = client.negotiated_key_exchange_group().map(|g| g.name());
            assert_eq!(got, Some(*want), "{suite:?} {groups:?}");
            if suite.version() == &rustls::version::TLS13 {
                assert_eq!(client.handshake_kind(), Some(*kind), "{groups:?}");
            }
            // And it carries data.
            client.writer().write_all(b"hi").unwrap();
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            let r = server.receive(&mut wire, &mut shared).unwrap();
            assert_eq!(&wire[..r.plain], b"hi");
        }
    }
    let _ = secp256r1;
}

/// A ClientHello in three handshake records (legal fragmentation), the first two in one read
/// and the third later: rustls has read past the first record and joined the fragments in
/// place when the next read comes, so the next call must show it those bytes whole (found in
/// review: a shorter slice made rustls panic, and a panicking reactor stops the server).
#[test]
fn a_client_hello_fragmented_over_reads_completes() {
    for suite in [
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ] {
        let mut client = client(suite);
        let mut hello = Vec::new();
        client.write_tls(&mut hello).unwrap();
        assert_eq!(hello[0], 22);
        let body = hello[5..].to_vec();
        // Three records of a third of the handshake message each.
        let third = body.len() / 3;
        let mut records = Vec::new();
        for part in [&body[..third], &body[third..2 * third], &body[2 * third..]] {
            let mut r = vec![22, 3, 1];
            r.extend_from_slice(&(part.len() as u16).to_be_bytes());
            r.extend_from_slice(part);
            records.push(r);
        }
        let mut server = TlsSession::new(server_config());
        let mut shared = TlsShared::default();
        let mut feed = |server: &mut TlsSession, bytes: &[u8]| {
            let k = server.kept_len();
            let mut buf = vec![0; k + bytes.len()];
            buf[k..].copy_from_slice(bytes);
            server.restore_kept(&mut buf[..k], &mut shared);
            server.receive(&mut buf, &mut shared).unwrap();
        };
        feed(&mut server, &[records[0].clone(), records[1].clone()].concat());
        feed(&mut server, &records[2]);
        // The handshake goes on as usual from here.
        let mut down = Vec::new();
        assert!(server.flush(&mut down, &mut shared).unwrap());
        let mut rest = &down[..];
        while !rest.is_empty() {
            client.read_tls(&mut rest).unwrap();
            client.process_new_packets().unwrap();
        }
        let mut pair = Pair {
            client,
            server,
            shared,
            cuts: Cuts(9),
            got: Vec::new(),
            peer_closed: false,
        };
        while pair.client.is_handshaking() {
            pair.pass_up().unwrap();
            pair.pass_down();
        }
        pair.pass_up().unwrap();
        pair.pass_down();
        pair.client.writer().write_all(b"after a fragmented hello").unwrap();
        pair.pass_up().unwrap();
        assert_eq!(pair.got, b"after a fragmented hello");
    }
}
