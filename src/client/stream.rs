//! The client's byte stream: a TCP socket, or TLS over one (rustls, ring).
//!
//! Owns: building the TLS client configuration from the chosen roots, and the socket's
//! timeouts. Does not touch: WebSocket framing (tungstenite drives it).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::error::ClientError;

/// Which certificate authorities a `wss://` client trusts.
#[derive(Debug, Clone, Default)]
pub enum Roots {
    /// The operating system's store (e.g. /etc/ssl/certs).
    #[default]
    System,
    /// Mozilla's list, compiled in (webpki-roots): for machines without a store.
    Bundled,
    /// Only the certificates in this PEM text (a private CA, or a self-signed server).
    Pem(Vec<u8>),
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl ClientStream {
    pub fn tls(tcp: TcpStream, host: &str, roots: &Roots) -> Result<Self, ClientError> {
        let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_string())
            .map_err(|e| ClientError::Url(format!("{host}: {e}")))?;
        let conn = rustls::ClientConnection::new(tls_config(roots, vec![b"http/1.1".to_vec()])?, name)
            .map_err(|e| ClientError::ConnectionFailed(e.to_string()))?;
        Ok(ClientStream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(s) => s,
            ClientStream::Tls(s) => &s.sock,
        }
    }

    /// Read and write timeout (`None`: block).
    pub fn set_timeout(&self, t: Option<Duration>) {
        let _ = self.tcp().set_read_timeout(t);
        let _ = self.tcp().set_write_timeout(t);
    }
}

/// A TLS client configuration trusting `roots`, offering `alpn` (also used for `rediss://`).
pub(crate) fn tls_config(roots: &Roots, alpn: Vec<Vec<u8>>) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut store = rustls::RootCertStore::empty();
    match roots {
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = store.add(cert);
            }
            if store.is_empty() {
                return Err(ClientError::ConnectionFailed(format!(
                    "no system certificate authorities found ({} errors); use Roots::Bundled or Roots::Pem",
                    found.errors.len()
                )));
            }
        }
        Roots::Bundled => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Roots::Pem(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| ClientError::ConnectionFailed(format!("trusted certificates: {e}")))?;
                store
                    .add(cert)
                    .map_err(|e| ClientError::ConnectionFailed(format!("trusted certificates: {e}")))?;
            }
        }
    }
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        kx_groups: crate::transport::tls::KX_GROUPS.to_vec(),
        ..rustls::crypto::ring::default_provider()
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::ConnectionFailed(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    Ok(Arc::new(config))
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.read(buf),
            ClientStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.write(buf),
            ClientStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.flush(),
            ClientStream::Tls(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_offers_x25519_first() {
        let config = tls_config(&Roots::Bundled, Vec::new()).unwrap();
        let groups: Vec<_> = config.crypto_provider().kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(
            groups,
            [
                rustls::NamedGroup::X25519,
                rustls::NamedGroup::secp256r1,
                rustls::NamedGroup::secp384r1
            ]
        );
    }
}
