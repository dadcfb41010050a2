//! The admin HTTP parser and router on a running server: arbitrary request bytes, or the same
//! with a valid admin token spliced in after the request line so the `/ws/*` routes run.
#![no_main]
mod common;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wsedge::app::ProtocolApp;
use wsedge::{AuthMode, Config, JwtConfig, RunningServer, Server};

fn server() -> &'static (RunningServer, String) {
    static S: OnceLock<(RunningServer, String)> = OnceLock::new();
    S.get_or_init(|| {
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            workers: 1,
            auth: AuthMode::Jwt(JwtConfig::hs256(common::SECRET)),
            ..Config::default()
        };
        let s = Server::start(config, ProtocolApp::default()).expect("server");
        (s, common::token("root", true))
    })
}

fuzz_target!(|data: &[u8]| {
    let (s, token) = server();
    let Some((&mode, rest)) = data.split_first() else { return };
    let bytes = match (mode & 1, rest.windows(2).position(|w| w == b"\r\n")) {
        (1, Some(i)) => {
            let mut v = rest[..i + 2].to_vec();
            v.extend_from_slice(format!("Authorization: Bearer {token}\r\n").as_bytes());
            v.extend_from_slice(&rest[i + 2..]);
            v
        }
        _ => rest.to_vec(),
    };
    if let Some((status, body)) = wsedge::testing::admin_response(&s.handle(), &bytes) {
        assert!((200..600).contains(&status));
        assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok() || status == 200);
    }
});
