//! Each kind of bad token: the upgrade completes, then the server closes with 1008 and a reason
//! naming the cause; each reason is counted.
mod common;
use common::*;
use serde_json::json;
use wsedge::auth::AuthError;
use wsedge::{AuthMode, JwtConfig};

fn close_reason_for(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut ws = try_connect(addr, path, &[]).expect("upgrade completes even for bad tokens");
    expect_close(&mut ws)
}

#[test]
fn every_bad_token_gets_1008_with_its_reason_and_is_counted() {
    let server = start(config());
    let addr = server.local_addr();
    let other_key = jsonwebtoken::EncodingKey::from_secret(b"not-the-secret");
    let wrong_sig = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &json!({"sub": "x"}), &other_key).unwrap();
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &json!({"sub": "x"}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    // alg "none": header {"alg":"none","typ":"JWT"}, payload {"sub":"x"}, no signature.
    let alg_none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4In0.";
    let cases = [
        ("/ws".to_string(), AuthError::Missing),
        ("/ws?token=not-a-jwt".to_string(), AuthError::Malformed),
        (format!("/ws?token={wrong_sig}"), AuthError::BadSignature),
        (
            format!("/ws?token={}", sign(json!({"sub": "x", "exp": now() - 60}))),
            AuthError::Expired,
        ),
        (
            format!(
                "/ws?token={}",
                sign(json!({"sub": "x", "nbf": now() + 600, "exp": now() + 900}))
            ),
            AuthError::NotYetValid,
        ),
        (
            format!("/ws?token={}", sign(json!({"sub": "x", "role": "admin"}))),
            AuthError::MissingExpiry,
        ),
        (format!("/ws?token={hs512}"), AuthError::WrongAlgorithm),
        (
            format!("/ws?token={}", sign(json!({"name": "no subject", "exp": now() + 60}))),
            AuthError::MissingSubject,
        ),
    ];
    for (path, reason) in &cases {
        let (code, text) = close_reason_for(addr, path);
        assert_eq!(code, 1008, "{path}");
        assert_eq!(text, format!("authentication failed: {reason}"), "{path}");
    }
    let (code, _) = close_reason_for(addr, &format!("/ws?token={alg_none}"));
    assert_eq!(code, 1008, "alg none must be refused");

    let stats = server.handle().stats();
    for (_, reason) in &cases {
        assert!(
            stats.auth_failures_for(*reason) >= 1,
            "{reason:?} not counted: {:?}",
            stats.auth_failures
        );
    }
    assert_eq!(stats.handshakes, 0, "no failed token counts as an open connection");
    assert_eq!(server.handle().open_connections(), 0);
}

#[test]
fn issuer_and_audience_are_enforced_when_configured() {
    let mut jwt = JwtConfig::hs256(SECRET);
    jwt.issuer = Some("auth.example".into());
    jwt.audience = Some("edge".into());
    let server = start(wsedge::Config {
        auth: AuthMode::Jwt(jwt),
        ..config()
    });
    let addr = server.local_addr();
    let good = sign(json!({"sub": "u", "iss": "auth.example", "aud": "edge", "exp": now() + 60}));
    connect(addr, &good);
    let bad_iss = sign(json!({"sub": "u", "iss": "evil", "aud": "edge", "exp": now() + 60}));
    assert_eq!(
        close_reason_for(addr, &format!("/ws?token={bad_iss}")).1,
        "authentication failed: invalid issuer"
    );
    let bad_aud = sign(json!({"sub": "u", "iss": "auth.example", "aud": "other", "exp": now() + 60}));
    assert_eq!(
        close_reason_for(addr, &format!("/ws?token={bad_aud}")).1,
        "authentication failed: invalid audience"
    );
}

#[test]
fn a_secret_signed_token_is_refused_by_a_public_key_server() {
    // HS/RS confusion: an RS256 server must not accept an HS256 token signed with its public key.
    let pem = include_bytes!("data/rsa_public.pem");
    let mut jwt = JwtConfig::hs256("unused");
    jwt.key = wsedge::JwtKey::PublicKeyPem(pem.to_vec());
    jwt.algorithm = jsonwebtoken::Algorithm::RS256;
    let server = start(wsedge::Config {
        auth: AuthMode::Jwt(jwt),
        ..config()
    });
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "mallory"}),
        &jsonwebtoken::EncodingKey::from_secret(pem),
    )
    .unwrap();
    let (code, reason) = close_reason_for(server.local_addr(), &format!("/ws?token={forged}"));
    assert_eq!(
        (code, reason.as_str()),
        (1008, "authentication failed: algorithm not allowed")
    );
    // A real RS256 token from the matching private key is accepted.
    let private = jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!("data/rsa_private.pem")).unwrap();
    let good = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"sub": "rsa-user", "exp": now() + 60}),
        &private,
    )
    .unwrap();
    let (_ws, hello) = connect(server.local_addr(), &good);
    assert_eq!(hello["data"]["user_id"], "rsa-user");
}
