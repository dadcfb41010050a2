//! On open the server sends `connection.established` with the seed's fields; every token source
//! works; the `bearer` subprotocol is selected when offered.
mod common;
use common::*;

#[test]
fn established_message_has_the_seed_fields() {
    let server = start(config());
    let (_ws, hello) = connect(server.local_addr(), &token("alice"));
    let d = &hello["data"];
    assert!(uuid::Uuid::parse_str(d["connection_id"].as_str().unwrap()).is_ok());
    assert_eq!(d["user_id"], "alice");
    assert!(d["server_time"].as_str().unwrap().ends_with('Z'));
    let features: Vec<&str> = d["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    for f in ["heartbeat", "subscriptions", "rate_limiting", "message_validation"] {
        assert!(features.contains(&f), "{features:?}");
    }
    assert_eq!(d["limits"]["max_message_size"], 65536);
    assert_eq!(d["limits"]["rate_limit_messages"], 100);
    assert_eq!(d["limits"]["rate_limit_window"], 60.0);
    assert_eq!(d["limits"]["heartbeat_interval"], 30.0);
    assert!(uuid::Uuid::parse_str(hello["id"].as_str().unwrap()).is_ok());
    assert!(hello["timestamp"].as_str().is_some());
}

#[test]
fn every_token_source_is_accepted() {
    let server = start(config());
    let addr = server.local_addr();
    let t = token("bob");
    let bearer = format!("Bearer {t}");
    let proto = format!("bearer, {t}");
    let cases: [(String, Vec<(&str, &str)>); 4] = [
        (format!("/ws/{t}"), vec![]),
        (format!("/ws?token={t}"), vec![]),
        ("/ws".to_string(), vec![("Authorization", bearer.as_str())]),
        ("/ws".to_string(), vec![("Sec-WebSocket-Protocol", proto.as_str())]),
    ];
    for (path, headers) in cases {
        let mut ws = try_connect(addr, &path, &headers).unwrap_or_else(|e| panic!("{path} {headers:?}: {e}"));
        let hello = recv_json(&mut ws);
        assert_eq!(hello["type"], "connection.established");
        assert_eq!(hello["data"]["user_id"], "bob");
    }
}

#[test]
fn bearer_subprotocol_is_selected_in_the_response() {
    let server = start(config());
    let mut s = raw(server.local_addr());
    let req = upgrade_request("/ws").replace(
        "\r\n\r\n",
        &format!("\r\nSec-WebSocket-Protocol: bearer, {}\r\n\r\n", token("c")),
    );
    std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
    let (status, head, _) = read_http(&mut s);
    assert_eq!(status, 101);
    assert!(head.contains("Sec-WebSocket-Protocol: bearer\r\n"), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
}
