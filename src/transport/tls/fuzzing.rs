//! A session established with a real rustls client in memory, for unit tests and the
//! `tls_records` fuzz target: records (valid, forged, of any type, padded) sealed with the
//! client's keys and given to the session cut at arbitrary points, as reads would.
//!
//! Owns nothing of the server: it only drives [`TlsSession`] through its public calls.

use std::sync::Arc;

use rustls::ClientConnection;
use rustls::crypto::ring::cipher_suite as cs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use super::ServerConfigs;
use super::record::PeerSealer;
use super::{TlsSession, TlsShared};

/// Every suite the server offers, TLS 1.3 first.
pub fn suites() -> [rustls::SupportedCipherSuite; 6] {
    [
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
}

/// A client that trusts any certificate and speaks only `suite`.
pub fn client_config(suite: rustls::SupportedCipherSuite, extract: bool) -> Arc<rustls::ClientConfig> {
    client_config_with_groups(suite, extract, rustls::crypto::ring::default_provider().kx_groups)
}

/// The same, offering key exchange `groups` in that order (a key share for the first).
pub fn client_config_with_groups(
    suite: rustls::SupportedCipherSuite,
    extract: bool,
    groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>,
) -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct Any(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for Any {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![suite],
        kx_groups: groups,
        ..rustls::crypto::ring::default_provider()
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[suite.version()])
        .expect("ring supports both versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Any(provider)))
        .with_no_client_auth();
    config.enable_secret_extraction = extract;
    Arc::new(config)
}

/// A server configuration from PEM text (what `--tls-cert`/`--tls-key` files hold).
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Arc<super::ServerConfigs> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .expect("a PEM certificate");
    let key = PrivateKeyDer::from_pem_slice(key_pem).expect("a PEM key");
    super::build(certs, key).expect("a usable certificate")
}

/// Runs a client's bytes and the server's answers until the client's handshake is done and
/// the server has taken its Finished. Returns the server session.
pub fn establish(
    client: &mut ClientConnection,
    server: Arc<super::ServerConfigs>,
    shared: &mut TlsShared,
) -> Option<TlsSession> {
    let mut session = TlsSession::new(server);
    for _ in 0..8 {
        let mut up = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut up).ok()?;
        }
        let r = session.receive(&mut up, shared).ok()?;
        if r.plain > 0 || r.closed {
            return None;
        }
        let mut down = Vec::new();
        session.flush(&mut down, shared).ok()?;
        let mut rest = &down[..];
        while !rest.is_empty() {
            client.read_tls(&mut rest).ok()?;
            client.process_new_packets().ok()?;
        }
        if !client.is_handshaking() && !client.wants_write() {
            return Some(session);
        }
    }
    None
}

/// Piece sizes for cutting a byte stream, from a seed.
pub struct Cuts(pub u64);

impl Cuts {
    pub fn piece(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        [1, 2, 5, 6, 17, 300, 4096, 16_389, 40_000][(self.0 % 9) as usize]
    }
}

/// Record sizes around the limits: plaintext 2^14 - 1, 2^14, 2^14 + 1 and ciphertext bodies
/// around 2^14 + 256 (TLS 1.3's limit) and 2^14 + 2048 (TLS 1.2's), reached with padding.
const SIZES: [(usize, usize); 8] = [
    (16_383, 0),
    (16_384, 0),
    (16_385, 0),
    (16_000, 622),
    (16_000, 623),
    (16_000, 624),
    (16_384, 2_000),
    (16_384, 2_031),
];

/// The fuzz target's body. `data`: a byte choosing the suite and the cuts, then segments
/// `[kind][len][len bytes]`: kind 0 application data, 1 a record of the type its first byte
/// names, 2 raw bytes, 3 padded application data (TLS 1.3), 4 a record of a size around the
/// limits (`len` picks it from `SIZES`), 5 `len` KeyUpdates in a row (the first byte of the
/// segment says whether each asks for ours; every one is sealed under the client's first key,
/// so the session changes keys once and refuses the rest), 6 an alert record of `len` bytes.
pub fn records(server: &Arc<super::ServerConfigs>, clients: &[Arc<rustls::ClientConfig>], data: &[u8]) {
    let Some((&pick, mut rest)) = data.split_first() else {
        return;
    };
    let suite = suites()[pick as usize % 6];
    let config = clients[pick as usize % clients.len()].clone();
    let mut shared = TlsShared::default();
    let Ok(mut client) = ClientConnection::new(config, "localhost".try_into().expect("a name")) else {
        return;
    };
    let Some(mut session) = establish(&mut client, server.clone(), &mut shared) else {
        panic!("handshake with {suite:?} failed");
    };
    let tls12 = suite.version() == &rustls::version::TLS12;
    let Ok(secrets) = client.dangerous_extract_secrets() else {
        return;
    };
    let Some(mut sealer) = PeerSealer::new(secrets.tx.0, &secrets.tx.1, tls12) else {
        return;
    };
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    let mut only_data = true;
    // Empty data records in a row: past the limit the session refuses them, rightly.
    let mut empty_in_a_row = 0;
    while let [kind, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let bytes = &tail[..n];
        if matches!(kind % 7, 0 | 3) {
            empty_in_a_row = if n == 0 { empty_in_a_row + 1 } else { 0 };
            only_data &= empty_in_a_row <= 32;
        }
        match kind % 7 {
            0 => {
                sealer.seal(23, bytes, 0, &mut wire);
                expected.extend_from_slice(bytes);
            }
            1 => {
                only_data = false;
                let typ = bytes.first().copied().unwrap_or(0);
                sealer.seal(typ, bytes.get(1..).unwrap_or_default(), 0, &mut wire);
            }
            2 => {
                only_data = false;
                wire.extend_from_slice(bytes);
            }
            3 => {
                sealer.seal(23, bytes, n % 7, &mut wire);
                expected.extend_from_slice(bytes);
            }
            4 => {
                only_data = false;
                let (plain, padding) = SIZES[*len as usize % SIZES.len()];
                sealer.seal(23, &vec![b'z'; plain], padding, &mut wire);
                rest = tail;
                continue;
            }
            5 => {
                only_data = false;
                let ask = bytes.first().copied().unwrap_or(0);
                for i in 0..usize::from(*len).min(64) {
                    sealer.seal(22, &[24, 0, 0, 1, (ask >> (i % 8)) & 1], 0, &mut wire);
                }
                rest = tail;
                continue;
            }
            _ => {
                only_data = false;
                sealer.seal(21, bytes, 0, &mut wire);
            }
        }
        rest = &tail[n..];
    }
    let mut cuts = Cuts(u64::from(pick) + 1);
    let mut got = Vec::new();
    let mut left = &wire[..];
    while !left.is_empty() {
        let n = cuts.piece().min(left.len());
        let kept = session.kept_len();
        let mut buf = vec![0; kept + n];
        buf[kept..].copy_from_slice(&left[..n]);
        session.restore_kept(&mut buf[..kept], &mut shared);
        match session.receive(&mut buf, &mut shared) {
            Ok(r) => got.extend_from_slice(&buf[..r.plain]),
            Err(_) => {
                assert!(!only_data, "valid records refused");
                return;
            }
        }
        left = &left[n..];
    }
    if only_data {
        assert_eq!(got, expected, "plaintext differs");
        assert_eq!(session.kept_len(), 0, "whole records left bytes behind");
    }
}
