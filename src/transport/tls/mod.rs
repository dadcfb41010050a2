//! TLS termination with rustls, behind the transport seam.
//!
//! Owns: the certificate (loaded at start, reloaded on request), a [`TlsSession`] per connection
//! of a TLS listener, decrypting what a socket gave (in the reactor's read buffer) into
//! plaintext, and encrypting queued output on its way to the socket (in a per-reactor scratch
//! buffer). Does not touch: the socket's readiness or the bytes' meaning (the reactor reads
//! plaintext exactly as it reads a plain socket).
//!
//! rustls runs the handshake through its unbuffered API, with buffers we own; once the handshake
//! is done the traffic secrets are taken out of it and records are sealed and opened here
//! (`record.rs`), so an established idle connection holds raw keys and rustls's small key
//! schedule, no buffers. Sessions live in a per-reactor table beside the connections, so plain
//! connections pay nothing for TLS.

#[cfg(any(test, feature = "testing"))]
pub mod fuzzing;
mod hello;
mod record;
mod session;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use session::{TlsSession, Writer};

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("certificate and key do not go together: {0}")]
    Pair(String),
    #[error("setting up TLS: {0}")]
    Setup(String),
}

/// The certificate files and the configuration made from them.
pub struct TlsConfig {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfigs>>,
}

/// One certificate, two key exchange policies: every group, and X25519 alone for clients that
/// list X25519 after a costlier group (see `hello`). They share the certificate, the ticket
/// key and the session cache, so either resumes the other's sessions.
pub struct ServerConfigs {
    all: Arc<ServerConfig>,
    x25519: Arc<ServerConfig>,
}

fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfigs>, TlsError> {
    let file_err = |path: &Path, e: &dyn std::fmt::Display| TlsError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert, &e))?;
    if certs.is_empty() {
        return Err(file_err(cert, &"no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, &e))?;
    build(certs, key_der)
}

fn build(certs: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Arc<ServerConfigs>, TlsError> {
    let all = configure(provider(), certs, key)?;
    let x25519_only = rustls::crypto::CryptoProvider {
        kx_groups: vec![rustls::crypto::ring::kx_group::X25519],
        ..provider()
    };
    let mut x25519 = ServerConfig::builder_with_provider(Arc::new(x25519_only))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Pair(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(all.cert_resolver.clone());
    x25519.alpn_protocols = all.alpn_protocols.clone();
    x25519.ignore_client_order = all.ignore_client_order;
    x25519.ticketer = all.ticketer.clone();
    x25519.session_storage = all.session_storage.clone();
    x25519.send_tls13_tickets = all.send_tls13_tickets;
    x25519.enable_secret_extraction = all.enable_secret_extraction;
    Ok(Arc::new(ServerConfigs {
        all: Arc::new(all),
        x25519: Arc::new(x25519),
    }))
}

fn configure(
    provider: rustls::crypto::CryptoProvider,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Pair(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Pair(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Our order, not the client's: see `provider`.
    config.ignore_client_order = true;
    // Stateless tickets (encrypted with a key rotated every 6 hours): a returning client
    // resumes without the certificate and its signature however many clients there are (a
    // session cache would hold a few hundred). One per connection: each resumption brings
    // the next.
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| TlsError::Setup(e.to_string()))?;
    config.send_tls13_tickets = 1;
    // We seal and open application data ourselves once the handshake is done.
    config.enable_secret_extraction = true;
    Ok(config)
}

/// ring's suites with SHA-256 ones first: SHA-256 runs on the CPU's SHA extensions where
/// SHA-384 does not, and the handshake hashes its transcript and derives every key with it
/// (SHA-384 was an eighth of a handshake's server CPU). AES-128-GCM first among equals, as
/// Go and BoringSSL order them. Key exchange X25519 first (see `KX_GROUPS`).
fn provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::cipher_suite as cs;
    rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ],
        kx_groups: KX_GROUPS.to_vec(),
        ..rustls::crypto::ring::default_provider()
    }
}

/// Key exchange groups, X25519 first, for servers and clients alike: ring's own default order
/// changed between rustls releases (0.23.48 puts P-384 first), and a P-384 handshake costs the
/// server about five times the CPU of an X25519 one. A rustls server picks the first group of
/// the client's list that it supports, so this order decides what our clients offer; on the
/// server, a client that lists X25519 after P-256/P-384 is steered to X25519 (`hello`), and
/// one that lists only P-256/P-384 gets those.
pub(crate) const KX_GROUPS: [&dyn rustls::crypto::SupportedKxGroup; 3] = [
    rustls::crypto::ring::kx_group::X25519,
    rustls::crypto::ring::kx_group::SECP256R1,
    rustls::crypto::ring::kx_group::SECP384R1,
];

impl TlsConfig {
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(TlsConfig {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(load(cert, key)?),
        })
    }

    /// Reads the files again; new connections use them, open ones keep theirs. On error the
    /// old certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// A session for a new connection.
    pub fn session(&self) -> TlsSession {
        let configs = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
        TlsSession::new(configs)
    }
}

/// Per-reactor buffers every TLS connection of the reactor borrows: the scratch records are
/// sealed into, and spare vectors for the few connections that must keep bytes for a while.
#[derive(Default)]
pub struct TlsShared {
    scratch: Vec<u8>,
    spare: Vec<Vec<u8>>,
}

/// Spare vectors kept per reactor, and the largest capacity worth keeping.
const SPARE_MAX: usize = 64;
const SPARE_CAPACITY: usize = 32 * 1024;

impl TlsShared {
    fn take(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    fn give(&mut self, mut v: Vec<u8>) {
        if v.capacity() == 0 {
            return;
        }
        if self.spare.len() < SPARE_MAX && v.capacity() <= SPARE_CAPACITY {
            v.clear();
            self.spare.push(v);
        }
    }
}
