//! JWT verification: from a raw token to verified claims or a typed reason for refusal.
//!
//! Owns: key loading, the one accepted algorithm, claim checks, and the short close reasons sent
//! to clients. Does not touch: HTTP parsing (the upgrade parser finds the token) or sockets.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::{ConfigError, JwtConfig};

/// Why a token was refused. Each variant is counted and named in the 1008 close reason.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthError {
    #[error("missing token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("invalid signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("algorithm not allowed")]
    WrongAlgorithm,
    #[error("invalid issuer")]
    WrongIssuer,
    #[error("invalid audience")]
    WrongAudience,
    #[error("missing sub claim")]
    MissingSubject,
    #[error("missing exp claim")]
    MissingExpiry,
}

impl AuthError {
    /// Every reason, in a fixed order (metrics index by `as usize`).
    pub const ALL: [AuthError; 10] = [
        AuthError::Missing,
        AuthError::Malformed,
        AuthError::BadSignature,
        AuthError::Expired,
        AuthError::NotYetValid,
        AuthError::WrongAlgorithm,
        AuthError::WrongIssuer,
        AuthError::WrongAudience,
        AuthError::MissingSubject,
        AuthError::MissingExpiry,
    ];

    /// Stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongAlgorithm => "wrong_algorithm",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::MissingSubject => "missing_subject",
            AuthError::MissingExpiry => "missing_exp",
        }
    }
}

/// What a verified token tells us about the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `sub`: the user id (a non-empty string of at most 256 bytes).
    pub user_id: Box<str>,
    /// `role == "admin"`.
    pub admin: bool,
    pub email: Option<Box<str>>,
    pub name: Option<Box<str>>,
    /// `rooms`: room names or `*` patterns this user may join.
    pub rooms: Option<Vec<String>>,
    /// `exp` in Unix seconds (leeway included), if the token has one.
    pub expires_at: Option<u64>,
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Option<serde_json::Value>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
    #[serde(default)]
    exp: Option<serde_json::Value>,
}

/// Verifies tokens against one key and one algorithm.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    leeway: u64,
}

impl Verifier {
    pub fn new(cfg: &JwtConfig) -> Result<Self, ConfigError> {
        let key = cfg.decoding_key()?;
        let mut validation = Validation::new(cfg.algorithm);
        validation.required_spec_claims = ["sub".to_string()].into();
        if cfg.require_exp {
            validation.required_spec_claims.insert("exp".into());
        }
        validation.leeway = cfg.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = cfg.audience.is_some();
        if let Some(aud) = &cfg.audience {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".into());
        }
        if let Some(iss) = &cfg.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        Ok(Verifier {
            key,
            validation,
            leeway: cfg.leeway_secs,
        })
    }

    /// Verifies `token`; `None` means the client sent none.
    pub fn verify(&self, token: Option<&str>) -> Result<Claims, AuthError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let data =
            jsonwebtoken::decode::<RawClaims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm | ErrorKind::UnsupportedAlgorithm => {
                    AuthError::WrongAlgorithm
                }
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::MissingRequiredClaim(c) if c == "sub" => AuthError::MissingSubject,
                ErrorKind::MissingRequiredClaim(c) if c == "iss" => AuthError::WrongIssuer,
                ErrorKind::MissingRequiredClaim(c) if c == "aud" => AuthError::WrongAudience,
                ErrorKind::MissingRequiredClaim(c) if c == "exp" => AuthError::MissingExpiry,
                _ => AuthError::Malformed,
            })?;
        let c = data.claims;
        let user_id: Box<str> = match c.sub {
            Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= 256 => s.into(),
            _ => return Err(AuthError::MissingSubject),
        };
        Ok(Claims {
            user_id,
            admin: c.role.as_deref() == Some("admin"),
            email: c.email.map(Into::into),
            name: c.name.map(Into::into),
            rooms: c.rooms,
            expires_at: c
                .exp
                .and_then(|v| v.as_f64())
                .map(|e| (e.max(0.0) as u64).saturating_add(self.leeway)),
        })
    }
}

/// Claims written by [`mint_hs256`].
#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
}

/// Mints an HS256 token (for `wsedge token`, dev mode and tests).
pub fn mint_hs256(
    secret: &[u8],
    sub: &str,
    role: Option<&str>,
    ttl_secs: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = MintClaims {
        sub,
        iat: now,
        exp: now + ttl_secs,
        role,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
}

/// Mints an HS256 token with `sub`, `iat`, `exp` (now + `ttl_secs`) and every claim in
/// `extra` (a JSON object; it may override none of the three).
pub fn mint_hs256_with(
    secret: &[u8],
    sub: &str,
    ttl_secs: u64,
    extra: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = extra.clone();
    claims.insert("sub".into(), sub.into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + ttl_secs).into());
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::Value::Object(claims),
        &EncodingKey::from_secret(secret),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sign(secret: &[u8], claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn verifier() -> Verifier {
        Verifier::new(&JwtConfig::hs256("s3cret")).unwrap()
    }

    #[test]
    fn valid_token_gives_claims() {
        let now = jsonwebtoken::get_current_timestamp();
        let t = sign(
            b"s3cret",
            json!({"sub": "42", "exp": now + 60, "role": "admin", "email": "a@b"}),
        );
        let c = verifier().verify(Some(&t)).unwrap();
        assert_eq!(&*c.user_id, "42");
        assert!(c.admin);
        assert_eq!(c.email.as_deref(), Some("a@b"));
        // `sub` is a StringOrURI (RFC 7519): a number is refused like a missing one.
        let t = sign(b"s3cret", json!({"sub": 7, "exp": now + 60}));
        assert_eq!(verifier().verify(Some(&t)), Err(AuthError::MissingSubject));
    }

    #[test]
    fn each_failure_has_its_reason() {
        let now = jsonwebtoken::get_current_timestamp();
        let v = verifier();
        assert_eq!(v.verify(None), Err(AuthError::Missing));
        assert_eq!(v.verify(Some("abc")), Err(AuthError::Malformed));
        let t = sign(b"other", json!({"sub": "1"}));
        assert_eq!(v.verify(Some(&t)), Err(AuthError::BadSignature));
        let t = sign(b"s3cret", json!({"sub": "1", "exp": now - 10}));
        assert_eq!(v.verify(Some(&t)), Err(AuthError::Expired));
        let t = sign(b"s3cret", json!({"sub": "1", "nbf": now + 100, "exp": now + 200}));
        assert_eq!(v.verify(Some(&t)), Err(AuthError::NotYetValid));
        let t = sign(b"s3cret", json!({"name": "x", "exp": now + 60}));
        assert_eq!(v.verify(Some(&t)), Err(AuthError::MissingSubject));
        let t = sign(b"s3cret", json!({"sub": "", "exp": now + 60}));
        assert_eq!(v.verify(Some(&t)), Err(AuthError::MissingSubject));
        let t = sign(b"s3cret", json!({"sub": "1"}));
        assert_eq!(v.verify(Some(&t)), Err(AuthError::MissingExpiry));
    }

    #[test]
    fn exp_is_required_unless_configured_otherwise_and_reported() {
        let now = jsonwebtoken::get_current_timestamp();
        let forever = sign(b"s3cret", json!({"sub": "1", "role": "admin"}));
        assert_eq!(verifier().verify(Some(&forever)), Err(AuthError::MissingExpiry));
        let mut cfg = JwtConfig::hs256("s3cret");
        cfg.require_exp = false;
        cfg.leeway_secs = 5;
        let v = Verifier::new(&cfg).unwrap();
        assert_eq!(v.verify(Some(&forever)).unwrap().expires_at, None);
        let t = sign(b"s3cret", json!({"sub": "1", "exp": now + 60}));
        assert_eq!(v.verify(Some(&t)).unwrap().expires_at, Some(now + 65));
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        // {"alg":"none"} header with a valid-looking payload and empty signature.
        let t = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIn0.";
        assert!(matches!(
            verifier().verify(Some(t)),
            Err(AuthError::Malformed | AuthError::WrongAlgorithm)
        ));
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &json!({"sub": "1", "exp": jsonwebtoken::get_current_timestamp() + 60}),
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert_eq!(verifier().verify(Some(&t)), Err(AuthError::WrongAlgorithm));
    }

    #[test]
    fn issuer_and_audience_checked_when_configured() {
        let exp = jsonwebtoken::get_current_timestamp() + 60;
        let mut cfg = JwtConfig::hs256("s3cret");
        cfg.issuer = Some("me".into());
        cfg.audience = Some("edge".into());
        let v = Verifier::new(&cfg).unwrap();
        let ok = sign(b"s3cret", json!({"sub": "1", "iss": "me", "aud": "edge", "exp": exp}));
        assert!(v.verify(Some(&ok)).is_ok());
        let t = sign(b"s3cret", json!({"sub": "1", "iss": "you", "aud": "edge", "exp": exp}));
        assert_eq!(v.verify(Some(&t)), Err(AuthError::WrongIssuer));
        let t = sign(b"s3cret", json!({"sub": "1", "iss": "me", "aud": "other", "exp": exp}));
        assert_eq!(v.verify(Some(&t)), Err(AuthError::WrongAudience));
        let t = sign(b"s3cret", json!({"sub": "1", "iss": "me", "exp": exp}));
        assert_eq!(v.verify(Some(&t)), Err(AuthError::WrongAudience));
    }
}
