//! TLS termination with rustls, behind the transport seam.
//!
//! Owns: the certificate (loaded at start, reloaded on request), a TLS session per connection
//! of a TLS listener, decrypting what a socket gave into plaintext, and encrypting queued
//! output on its way to the socket. Does not touch: the socket's readiness or the bytes'
//! meaning (the reactor reads plaintext exactly as it reads a plain socket).
//!
//! Sessions live in a per-reactor table beside the connections, so plain connections pay
//! nothing for TLS. This first version uses rustls's buffered `ServerConnection`; its
//! per-connection buffers are what `scripts/density.sh --tls` would measure.

use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerConnection;

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("certificate and key do not go together: {0}")]
    Pair(String),
}

/// Ciphertext a session may hold unwritten before it takes no more plaintext.
const MAX_UNSENT: usize = 64 * 1024;

/// The certificate files and the configuration made from them.
pub struct TlsConfig {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Pair(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| TlsError::Pair(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

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

    pub fn session(&self) -> Option<Box<ServerConnection>> {
        let config = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
        ServerConnection::new(config).ok().map(Box::new)
    }
}

/// Takes `cipher` (bytes the socket gave) into the session and appends the plaintext it
/// yields to `plain`. An error means the peer broke the protocol (the connection is dropped).
pub fn decrypt(tls: &mut ServerConnection, mut cipher: &[u8], plain: &mut Vec<u8>) -> io::Result<()> {
    while !cipher.is_empty() {
        tls.read_tls(&mut cipher)?;
        let state = tls
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut left = state.plaintext_bytes_to_read();
        while left > 0 {
            let start = plain.len();
            plain.resize(start + left, 0);
            let n = tls.reader().read(&mut plain[start..])?;
            plain.truncate(start + n);
            left -= n.min(left);
            if n == 0 {
                break;
            }
        }
    }
    Ok(())
}

/// Writes the session's pending ciphertext; true once none is left.
pub fn flush(tls: &mut ServerConnection, sock: &mut impl Write) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Plaintext in, ciphertext out to the socket: what the connection's output queue writes to.
pub struct Writer<'a, W: Write> {
    pub tls: &'a mut ServerConnection,
    pub sock: &'a mut W,
}

impl<W: Write> Write for Writer<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // What was encrypted before goes first; the session takes no more while much waits.
        if !flush(self.tls, self.sock)? && self.tls.wants_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut taken = 0;
        for b in bufs {
            if taken >= MAX_UNSENT {
                break;
            }
            let n = self.tls.writer().write(&b[..b.len().min(MAX_UNSENT - taken)])?;
            taken += n;
            if n < b.len() {
                break;
            }
        }
        flush(self.tls, self.sock)?;
        if taken == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
