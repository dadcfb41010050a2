//! Token extraction: a request carrying fuzzed tokens in the path, the query, `Authorization`
//! and the `bearer` subprotocol. Never panics; with clean tokens, the one found is the first
//! present in that order.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wsedge::testing::{Parsed, parse_upgrade as parse};

fn clean(t: &[u8]) -> bool {
    t.iter().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

fuzz_target!(|data: &[u8]| {
    let parts: Vec<&[u8]> = data.splitn(4, |&b| b == 0).collect();
    let get = |i: usize| parts.get(i).copied().unwrap_or(b"");
    let (path_t, query_t, auth_t, proto_t) = (get(0), get(1), get(2), get(3));
    let mut req = b"GET /ws".to_vec();
    if !path_t.is_empty() {
        req.push(b'/');
        req.extend_from_slice(path_t);
    }
    if !query_t.is_empty() {
        req.extend_from_slice(b"?token=");
        req.extend_from_slice(query_t);
    }
    req.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
    req.extend_from_slice(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n");
    if !auth_t.is_empty() {
        req.extend_from_slice(b"Authorization: Bearer ");
        req.extend_from_slice(auth_t);
        req.extend_from_slice(b"\r\n");
    }
    if !proto_t.is_empty() {
        req.extend_from_slice(b"Sec-WebSocket-Protocol: bearer, ");
        req.extend_from_slice(proto_t);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    let parsed = parse(&req, 1 << 16, Some("/ws"));
    if [path_t, query_t, auth_t, proto_t].iter().all(|t| clean(t)) {
        let expected = [path_t, query_t, auth_t, proto_t]
            .into_iter()
            .find(|t| !t.is_empty())
            .map(|t| String::from_utf8(t.to_vec()).unwrap());
        match parsed {
            Parsed::Upgrade(u, _) => assert_eq!(u.token, expected),
            other => panic!("a clean request was not an upgrade: {other:?}"),
        }
    }
});
