//! The generator's TLS client configuration: any certificate is accepted (it measures a
//! server on loopback, usually with a self-signed certificate; it never carries secrets).

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

use rustls::crypto::SupportedKxGroup;
use rustls::crypto::ring::kx_group;

/// X25519 first, as browsers and wsedge's own client offer it (ring's default order changes
/// between rustls releases).
pub const DEFAULT_GROUPS: [&dyn SupportedKxGroup; 3] = [kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];

/// Key exchange groups from a list like `p384,x25519`.
pub fn groups(list: &str) -> Result<Vec<&'static dyn SupportedKxGroup>, String> {
    list.split(',')
        .map(|name| match name.trim() {
            "x25519" => Ok(kx_group::X25519),
            "p256" => Ok(kx_group::SECP256R1),
            "p384" => Ok(kx_group::SECP384R1),
            other => Err(format!("--tls-groups: unknown group {other:?} (x25519, p256, p384)")),
        })
        .collect()
}

/// `resume`: keep the server's tickets and resume with them (rustls's default); without it
/// every connection makes a full handshake. `groups`: the key exchange groups offered, in order.
pub fn any_certificate(resume: bool, groups: &[&'static dyn SupportedKxGroup]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        kx_groups: groups.to_vec(),
        ..rustls::crypto::ring::default_provider()
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(config)
}
