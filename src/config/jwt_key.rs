//! Turning the JWT settings into the key tokens are checked with: the one place a key is read,
//! used by `validate()` (a bad key stops the start) and by `auth::Verifier`.
//!
//! Owns: matching the key to the algorithm's family and parsing it. Does not touch: tokens.

use jsonwebtoken::DecodingKey;

use super::{ConfigError, JwtConfig, JwtKey};

impl JwtConfig {
    /// The verification key, or why the key and the algorithm do not go together.
    pub(crate) fn decoding_key(&self) -> Result<DecodingKey, ConfigError> {
        use jsonwebtoken::AlgorithmFamily as F;
        match (&self.key, self.algorithm.family()) {
            (JwtKey::Secret(s), F::Hmac) => {
                if s.is_empty() {
                    return Err(ConfigError::Key("empty secret".into()));
                }
                Ok(DecodingKey::from_secret(s))
            }
            (JwtKey::PublicKeyPem(p), F::Rsa) => DecodingKey::from_rsa_pem(p),
            (JwtKey::PublicKeyPem(p), F::Ec) => DecodingKey::from_ec_pem(p),
            (JwtKey::PublicKeyPem(p), F::Ed) => DecodingKey::from_ed_pem(p),
            (JwtKey::Secret(_), _) => {
                return Err(ConfigError::Key(format!(
                    "{:?} needs a public key, not a secret",
                    self.algorithm
                )));
            }
            (JwtKey::PublicKeyPem(_), _) => {
                return Err(ConfigError::Key(format!(
                    "{:?} needs a secret, not a public key",
                    self.algorithm
                )));
            }
        }
        .map_err(|e| ConfigError::Key(e.to_string()))
    }
}
