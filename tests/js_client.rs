//! wsedge.js against a real server: the suite (tests/js/suite.mjs) under `node --test`, and
//! the same suite in headless Chromium importing the copy the server serves at
//! /client/wsedge.js (positions in localStorage), over plain and over TLS; and the served
//! files themselves. Needs
//! `node` (Node 20 gets `--experimental-websocket`; Debian package `nodejs`) and Debian's
//! `chromium` (the test stops at once naming a missing package; `.ci/run` installs them).
mod common;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn node_version() -> u32 {
    require("node", "nodejs");
    let out = Command::new("node")
        .arg("--version")
        .output()
        .expect("node is installed");
    let v = String::from_utf8_lossy(&out.stdout);
    v.trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// The server's address and tokens, as the suite reads them.
fn suite_env(addr: std::net::SocketAddr) -> serde_json::Value {
    suite_env_with(addr, false)
}

/// `tls`: the server speaks TLS (wss://, https://).
fn suite_env_with(addr: std::net::SocketAddr, tls: bool) -> serde_json::Value {
    let exp = now() + 3600;
    let short = |ttl: u64| sign(json!({"sub": "js-refresher", "exp": now() + ttl}));
    let s = if tls { "s" } else { "" };
    json!({
        "ws": format!("ws{s}://{addr}/ws"),
        "http": format!("http{s}://{addr}"),
        "user": "js-user",
        "token": sign(json!({"sub": "js-user", "exp": exp, "rooms": ["lobby"]})),
        "token_exp": exp,
        "short_tokens": [short(60), short(3600)],
        "admin": admin_token("js-admin"),
    })
}

#[test]
fn the_javascript_client_passes_its_suite_under_node() {
    let s = start(config());
    let env = suite_env(s.local_addr());
    let mut cmd = Command::new("node");
    if node_version() < 22 {
        cmd.arg("--experimental-websocket");
    }
    let mut child = cmd
        .args(["--test", "--test-reporter", "spec", "tests/js/client.test.mjs"])
        .env("WSEDGE_TEST", env.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    // A hung suite (an event that never comes) fails here instead of hanging the run.
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    assert!(report.contains("pass 8"), "{report}");
}

/// One HTTP request from `listener`: (method, path, body).
fn accept(listener: &TcpListener) -> (std::net::TcpStream, String, String, Vec<u8>) {
    let (sock, _) = listener.accept().unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(sock.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut length = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).unwrap();
    (sock, method, path, body)
}

fn respond(mut sock: std::net::TcpStream, content_type: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = sock.write_all(head.as_bytes());
    let _ = sock.write_all(body);
}

#[test]
fn the_same_suite_passes_in_headless_chromium_with_the_served_client() {
    let s = start(config());
    run_in_chromium(suite_env(s.local_addr()), "plain");
}

#[test]
fn the_same_suite_passes_in_headless_chromium_over_tls() {
    // Chromium's own TLS (BoringSSL) against wsedge's record layer: wss:// and https://.
    let dir = std::env::temp_dir().join(format!("wsedge-js-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let s = start(wsedge::Config {
        tls_cert: Some(dir.join("cert.pem")),
        tls_key: Some(dir.join("key.pem")),
        ..config()
    });
    run_in_chromium(suite_env_with(s.local_addr(), true), "tls");
    let _ = std::fs::remove_dir_all(&dir);
}

fn run_in_chromium(env: serde_json::Value, tag: &str) {
    let pages = TcpListener::bind("127.0.0.1:0").unwrap();
    let page_url = format!("http://{}/browser.html", pages.local_addr().unwrap());
    let profile = std::env::temp_dir().join(format!("wsedge-chromium-{}-{tag}", std::process::id()));
    let mut browser = headless_chromium(&profile)
        // The page (one port) calls the admin API (another): same machine, CORS not under test;
        // the TLS server's certificate is self-signed.
        .args(["--disable-web-security", "--ignore-certificate-errors"])
        .arg(&page_url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let result = loop {
        assert!(Instant::now() < deadline, "no result from chromium");
        let (sock, method, path, body) = accept(&pages);
        match (method.as_str(), path.as_str()) {
            ("GET", "/browser.html") => {
                let html = include_str!("js/browser.html").replace("@ENV@", &env.to_string());
                respond(sock, "text/html", html.as_bytes());
            }
            ("GET", "/suite.mjs") => respond(sock, "text/javascript", include_bytes!("js/suite.mjs")),
            ("POST", "/result") => {
                respond(sock, "text/plain", b"ok");
                break serde_json::from_slice::<serde_json::Value>(&body).unwrap();
            }
            _ => respond(sock, "text/plain", b""),
        }
    };
    let _ = browser.kill();
    let _ = browser.wait();
    let _ = std::fs::remove_dir_all(&profile);
    let results = result["results"].as_array().unwrap_or_else(|| panic!("{result}"));
    assert_eq!(results.len(), 6, "{result:#}");
    for r in results {
        assert_eq!(r["ok"], true, "{r:#}");
    }
}

#[test]
fn the_server_serves_the_client_and_its_types() {
    let s = start(config());
    let mut sock = raw(s.local_addr());
    std::io::Write::write_all(
        &mut sock,
        b"GET /client/wsedge.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let (status, head, body) = read_http(&mut sock);
    assert_eq!(status, 200);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert!(head.contains("access-control-allow-origin: *"), "{head}");
    assert_eq!(body, wsedge::client::WSEDGE_JS);
    let mut sock = raw(s.local_addr());
    std::io::Write::write_all(
        &mut sock,
        b"GET /client/wsedge.d.ts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let (status, _, body) = read_http(&mut sock);
    assert_eq!(status, 200);
    assert!(body.contains("export class WsedgeClient"));
    let mut sock = raw(s.local_addr());
    std::io::Write::write_all(
        &mut sock,
        b"GET /client/other.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(read_http(&mut sock).0, 404);
}

/// The Node example of src/docs/clients.md, as it stands: the module fetched from the server,
/// the example run beside it with a token, against this server.
#[test]
fn the_readme_node_example_runs_as_written() {
    let s = start(config());
    let addr = s.local_addr();
    let page = std::fs::read_to_string("src/docs/clients.md").unwrap();
    let block = page
        .split("<!-- node-example -->\n```js\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("src/docs/clients.md has the Node example");
    let dir = std::env::temp_dir().join(format!("wsedge-node-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("example.mjs"),
        block.replace("127.0.0.1:8080", &addr.to_string()),
    )
    .unwrap();
    // `curl -sO http://HOST/client/wsedge.js`, as src/docs/clients.md says.
    require("curl", "curl");
    let got = Command::new("curl")
        .current_dir(&dir)
        .args(["-sO", &format!("http://{addr}/client/wsedge.js")])
        .status()
        .unwrap();
    assert!(got.success());
    let mut cmd = Command::new("node");
    if node_version() < 22 {
        cmd.arg("--experimental-websocket");
    }
    let out = cmd
        .current_dir(&dir)
        .arg("example.mjs")
        .env("TOKEN", token("readme-user"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("connected as readme-user"), "{text}");
    assert!(text.contains("rtt "), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
