//! The `wsedge` binary: --help documents every flag with its env var and default, `token` mints
//! a usable token, dev mode prints a working connect URL, WS_* env vars are read, and SIGTERM
//! closes connections with 1001 and exits.
mod common;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_wsedge");

#[test]
fn help_lists_flags_env_vars_and_defaults() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--listen",
        "WS_LISTEN",
        "127.0.0.1:8080",
        "--workers",
        "--max-connections",
        "[default: 1000]",
        "--max-connections-per-user",
        "--per-user-limit-policy",
        "evict-oldest",
        "--rate-limit-messages",
        "--rate-limit-window",
        "--heartbeat-interval",
        "--connection-timeout",
        "--handshake-timeout",
        "--max-message-size",
        "--jwt-secret",
        "WS_JWT_SECRET",
        "--jwt-public-key",
        "--jwt-issuer",
        "--jwt-audience",
        "--log-level",
        "--max-connections-per-ip",
        "--max-control-frames",
        "--jwt-require-exp",
        "--backend-url",
        "WS_BACKEND_URL",
        "--backend-stream",
        "--forward",
        "--backend-events",
        "--backend-timeout",
        "--backend-deadline",
        "--backend-queue",
        "--backend-batch",
        "--auth-proxy",
        "--auth-proxy-headers",
        "--auth-proxy-cache",
        "--auth-proxy-check",
        "--admin-prefix",
        "--token-expiry",
        "--json-heartbeat",
        "token",
        "echo",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[test]
fn out_of_range_settings_are_refused_at_startup_with_a_clear_error() {
    for args in [
        &["--max-connections-per-user", "4294967296"][..],
        &["--max-connections-per-user", "4294967295"],
        &["--max-message-size", "18446744073709551615"],
        &["--max-message-size", "1099511627776"],
        &["--drain-window", "1e19"],
        &["--shutdown-timeout", "1e19"],
        &["--max-control-frames", "1000"],
        &["--forward", "chat"],
        &["--backend-events", "connect"],
        &["--backend-url", "https://127.0.0.1:9/x"],
        &["--backend-url", "http://127.0.0.1:9/x", "--forward", "ping"],
        &["--backend-url", "http://127.0.0.1:9/x", "--backend-events", "boot"],
        &["--backend-url", "http://127.0.0.1:9/x", "--backend-queue", "0"],
        &["--backend-url", "http://127.0.0.1:9/x", "--backend-stream", "k"],
        &["--backend-stream", "k", "--forward", "chat"],
        &["--auth-proxy", "ftp://127.0.0.1/auth"],
        &["--auth-proxy-check", "join"],
        &["--admin-prefix", "api/"],
        &[
            "--auth-proxy",
            "http://127.0.0.1:9/auth",
            "--auth-proxy-check",
            "publish",
        ],
    ] {
        let out = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--jwt-secret", "s"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("invalid configuration"), "{args:?}: {err}");
    }
}

#[test]
fn token_subcommand_mints_a_token_the_server_accepts() {
    let out = Command::new(BIN)
        .args([
            "token",
            "--sub",
            "cli-user",
            "--role",
            "admin",
            "--ttl",
            "60",
            "--jwt-secret",
            SECRET,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tok = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let server = start(config());
    let (_ws, hello) = connect(server.local_addr(), &tok);
    assert_eq!(hello["data"]["user_id"], "cli-user");
}

/// The child and its stdout (kept open, as a supervisor would).
struct Killer(Child, Option<BufReader<std::process::ChildStdout>>);
impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        drop(self.1.take());
    }
}

/// Starts the binary on a free port and returns it with the lines it printed up to `until`.
fn spawn(args: &[&str], envs: &[(&str, &str)], until: &str) -> (Killer, Vec<String>) {
    let mut cmd = Command::new(BIN);
    // Dev mode keeps its secret under XDG_STATE_HOME: a directory of this test run's own.
    let state = std::env::temp_dir().join(format!("wsedge-cli-state-{}", std::process::id()));
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env("XDG_STATE_HOME", &state)
        .env_remove("WS_JWT_SECRET");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    let mut reader = BufReader::new(stdout);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "binary exited early: {lines:?}"
        );
        lines.push(line.trim().to_string());
        if line.contains(until) {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    (Killer(child, Some(reader)), lines)
}

#[test]
fn dev_mode_prints_a_connect_url_that_works_and_env_vars_apply() {
    let (_child, lines) = spawn(
        &[],
        &[("WS_LISTEN", "127.0.0.1:0"), ("WS_MAX_CONNECTIONS", "5")],
        "connect:",
    );
    assert!(lines.iter().any(|l| l.contains("DEV MODE")), "{lines:?}");
    let url = lines.iter().find_map(|l| l.strip_prefix("connect:")).unwrap().trim();
    let rest = url.strip_prefix("ws://").unwrap();
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let token = path.strip_prefix("/ws?token=").unwrap();
    let (mut ws, hello) = connect(addr.parse().unwrap(), token);
    assert_eq!(hello["data"]["user_id"], "user-1");
    // The dev token may join any room.
    send_json(
        &mut ws,
        serde_json::json!({"type": "join", "data": {"rooms": ["any-room"]}}),
    );
    assert_eq!(recv_json(&mut ws)["data"]["rooms"], serde_json::json!(["any-room"]));
    let _ = ws.close(None);
}

#[test]
fn token_flags_set_every_claim_the_server_reads() {
    let out = Command::new(BIN)
        .args([
            "token",
            "--sub",
            "ann",
            "--rooms",
            "lobby,team-*",
            "--rooms",
            "den",
            "--email",
            "a@b.c",
        ])
        .args([
            "--name", "Ann", "--iss", "issuer", "--aud", "edge", "--claim", "plan=pro", "--claim", "seats=3",
        ])
        .args(["--claim", "beta=true", "--jwt-secret", SECRET])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tok = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let claims: serde_json::Value = jsonwebtoken::dangerous::insecure_decode_claims(&tok).unwrap();
    assert_eq!(claims["rooms"], serde_json::json!(["lobby", "team-*", "den"]));
    assert_eq!(
        (claims["email"].as_str(), claims["name"].as_str()),
        (Some("a@b.c"), Some("Ann"))
    );
    assert_eq!(
        (claims["iss"].as_str(), claims["aud"].as_str()),
        (Some("issuer"), Some("edge"))
    );
    assert_eq!(
        (claims["plan"].clone(), claims["seats"].clone(), claims["beta"].clone()),
        ("pro".into(), 3.into(), true.into())
    );
    // The server lets the user into the rooms the token names, and no other.
    let server = start(config());
    let (mut ws, _) = connect(server.local_addr(), &tok);
    send_json(
        &mut ws,
        serde_json::json!({"type": "join", "data": {"rooms": ["team-red", "elsewhere"]}}),
    );
    let joined = recv_json(&mut ws);
    assert_eq!(joined["data"]["rooms"], serde_json::json!(["team-red"]));
    assert_eq!(joined["data"]["refused"][0]["room"], "elsewhere");
    for bad in ["novalue", "sub=x", "exp=1"] {
        let out = Command::new(BIN)
            .args(["token", "--sub", "a", "--claim", bad, "--jwt-secret", SECRET])
            .output()
            .unwrap();
        assert!(!out.status.success(), "--claim {bad}");
    }
}

#[test]
fn client_command_sends_stdin_lines_and_prints_what_arrives() {
    let server = start(config());
    let url = format!("ws://{}/ws", server.local_addr());
    let mut child = Command::new(BIN)
        .args(["client", &url, "--token", &token("cli"), "--json", "--linger", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"{\"type\":\"ping\",\"data\":{\"pingId\":\"from-cli\"}}\n").unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("\"pingId\": \"from-cli\"") {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "exited early: {seen}");
        seen.push_str(&line);
    }
    assert!(
        seen.contains("\"type\": \"connection.established\""),
        "pretty JSON: {seen}"
    );
    drop(stdin);
    assert!(child.wait().unwrap().success());

    let out = Command::new(BIN)
        .args(["client", &url, "--token", "not-a-token"])
        .stdin(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("authentication failed"));
}

#[test]
fn sigterm_closes_connections_with_1001_and_exits() {
    let (mut child, lines) = spawn(
        &["serve", "--listen", "127.0.0.1:0", "--shutdown-timeout", "3"],
        &[],
        "connect:",
    );
    let url = lines.iter().find_map(|l| l.strip_prefix("connect:")).unwrap().trim();
    let rest = url.strip_prefix("ws://").unwrap();
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let (mut ws, _) = connect(addr.parse().unwrap(), path.strip_prefix("/ws?token=").unwrap());
    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert_eq!(expect_close(&mut ws).0, 1001);
    drop(ws);
    let start = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn echo_subcommand_echoes() {
    let (_child, lines) = spawn(&["echo", "--listen", "127.0.0.1:0"], &[], "listening");
    let addr = lines
        .last()
        .unwrap()
        .split("ws://")
        .nth(1)
        .unwrap()
        .trim_end_matches('/');
    let mut ws = try_connect(addr.parse().unwrap(), "/whatever", &[]).unwrap();
    ws.send(tungstenite::Message::text("ping me")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("ping me"));
}

#[test]
fn a_closed_stdout_does_not_kill_the_server() {
    // Whoever started the server closed its stdout before the dev-mode banner was printed.
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--log-level", "info"])
        .env_remove("WS_JWT_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "exited before listening");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<std::net::SocketAddr>()
                .unwrap();
        }
    };
    let mut child = Killer(child, None);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "server died writing to a closed stdout"
    );
    let mut s = raw(addr);
    std::io::Write::write_all(&mut s, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_http(&mut s).0, 200);
}

/// `--log-format json --log-level debug`: one JSON object per line, a line per connection
/// opened and closed (id, user, peer, code, duration), and an access line per admin request
/// that never shows the query (tokens travel there).
#[test]
fn json_logs_record_connections_and_admin_requests() {
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--jwt-secret",
            SECRET,
            "--log-level",
            "debug",
            "--log-format",
            "json",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut next_json = || -> serde_json::Value {
        let line = lines.next().expect("a log line").unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    let addr: std::net::SocketAddr = loop {
        let v = next_json();
        assert!(
            v["ts"].is_string() && v["level"].is_string() && v["target"].is_string(),
            "{v}"
        );
        if let Some(rest) = v["msg"].as_str().and_then(|m| m.strip_prefix("listening on ")) {
            break rest.split(' ').next().unwrap().parse().unwrap();
        }
    };
    let (mut ws, hello) = connect(addr, &token("logged"));
    let id = hello["data"]["connection_id"].as_str().unwrap().to_string();
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "bye".into(),
    }))
    .unwrap();
    while ws.read().is_ok() {}
    let admin = admin_token("ops");
    let (status, _) = common::http::json(addr, "GET", &format!("/ws/stats?token={admin}"), None, None);
    assert_eq!(status, 200);
    let (mut opened, mut closed, mut access) = (None, None, None);
    while opened.is_none() || closed.is_none() || access.is_none() {
        let v = next_json();
        let msg = v["msg"].as_str().unwrap_or_default().to_string();
        if msg.starts_with("connection opened") && msg.contains(&id) {
            opened = Some(msg);
        } else if msg.starts_with("connection closed") && msg.contains(&id) {
            closed = Some(msg);
        } else if v["target"] == "wsedge::access" {
            access = Some(msg);
        }
    }
    let (opened, closed, access) = (opened.unwrap(), closed.unwrap(), access.unwrap());
    assert!(
        opened.contains("user=logged") && opened.contains("peer=127.0.0.1:"),
        "{opened}"
    );
    assert!(
        closed.contains("user=logged") && closed.contains("code=1000") && closed.contains("duration="),
        "{closed}"
    );
    assert!(access.starts_with("admin GET /ws/stats -> 200"), "{access}");
    assert!(!access.contains("token"), "the query is not logged: {access}");
    let _ = child.kill();
    let _ = child.wait();
}

/// Tests never install system packages: a missing one stops the test at once, naming it.
#[test]
#[should_panic(expected = "apt-get install no-such-package")]
fn a_missing_prerequisite_names_its_package() {
    common::require("wsedge-no-such-program", "no-such-package");
}

/// Starts the binary with stderr piped; returns it and its address, read from the first line.
fn spawn_logging_to_a_pipe(extra: &[&str]) -> (Killer, std::process::ChildStderr, std::net::SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--jwt-secret", "s", "--log-level", "debug"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // One byte at a time up to the first newline: nothing after it is read from the pipe.
    let mut first = Vec::new();
    let mut b = [0u8; 1];
    while first.last() != Some(&b'\n') {
        assert_eq!(std::io::Read::read(&mut stderr, &mut b).unwrap(), 1, "exited early");
        first.push(b[0]);
    }
    let line = String::from_utf8_lossy(&first).to_string();
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("first line: {line}"));
    (Killer(child, None), stderr, addr)
}

fn health(addr: std::net::SocketAddr) -> u16 {
    let mut s = raw(addr);
    std::io::Write::write_all(&mut s, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    read_http(&mut s).0
}

fn exits_after_sigterm(child: &mut Killer) {
    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let start = Instant::now();
    loop {
        if child.0.try_wait().unwrap().is_some() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `wsedge ... 2>&1 | head -1`: once the reader is gone every log write fails; the server
/// keeps serving and still shuts down on SIGTERM.
#[test]
fn a_broken_stderr_pipe_neither_stops_the_server_nor_its_shutdown() {
    let (mut child, stderr, addr) = spawn_logging_to_a_pipe(&[]);
    drop(stderr);
    for _ in 0..5 {
        assert_eq!(health(addr), 200);
    }
    exits_after_sigterm(&mut child);
}

/// A log reader that never reads: the pipe fills, and no reactor waits for it.
#[test]
fn a_stderr_nobody_reads_never_blocks_the_reactors() {
    let (mut child, _stderr, addr) = spawn_logging_to_a_pipe(&["--workers", "1"]);
    // Each request logs an access line at debug: far more than a pipe holds (64 KiB).
    for _ in 0..2000 {
        assert_eq!(health(addr), 200);
    }
    exits_after_sigterm(&mut child);
}

/// The banner's line starting with `key:`, without it.
fn banner<'a>(lines: &'a [String], key: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {lines:?}"))
        .trim()
}

#[test]
fn dev_mode_on_a_public_address_needs_dev() {
    let out = Command::new(BIN)
        .args(["--listen", "0.0.0.0:0"])
        .env_remove("WS_JWT_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback") && err.contains("--dev"), "{err}");
    let (_child, lines) = spawn(&["--listen", "0.0.0.0:0", "--dev"], &[], "connect:");
    assert!(banner(&lines, "connect:").starts_with("ws://0.0.0.0:"), "{lines:?}");
}

#[test]
fn the_dev_secret_survives_a_restart_so_printed_tokens_keep_working() {
    let state = std::env::temp_dir().join(format!("wsedge-dev-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let env = [("XDG_STATE_HOME", state.to_str().unwrap())];
    let (first, lines) = spawn(&["--listen", "127.0.0.1:0"], &env, "connect:");
    let secret = banner(&lines, "secret:").split_whitespace().next().unwrap().to_string();
    assert!(banner(&lines, "secret:").contains("kept in"), "{lines:?}");
    let url = banner(&lines, "connect:").to_string();
    drop(first);
    let file = state.join("wsedge/dev-secret");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let (_second, lines) = spawn(&["--listen", "127.0.0.1:0"], &env, "connect:");
    assert!(banner(&lines, "secret:").starts_with(&secret), "{lines:?}");
    // The first run's token opens a connection on the second run.
    let token = url.split("?token=").nth(1).unwrap();
    let addr = banner(&lines, "connect:")
        .strip_prefix("ws://")
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let (_ws, hello) = connect(addr.parse().unwrap(), token);
    assert_eq!(hello["data"]["user_id"], "user-1");
    drop(_second);
    // A file others may read (or a link) is neither used nor replaced.
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (_third, lines) = spawn(&["--listen", "127.0.0.1:0"], &env, "connect:");
    let line = banner(&lines, "secret:");
    assert!(
        line.contains("random for this run") && !line.starts_with(&secret),
        "{line}"
    );
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn the_dev_banner_over_tls_prints_urls_that_work() {
    require("curl", "curl");
    let dir = std::env::temp_dir().join(format!("wsedge-dev-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (_child, lines) = spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
        "dashboard:",
    );
    assert!(banner(&lines, "connect:").starts_with("wss://127.0.0.1:"), "{lines:?}");
    assert!(
        banner(&lines, "dashboard:").starts_with("https://127.0.0.1:"),
        "{lines:?}"
    );
    assert!(banner(&lines, "dashboard:").contains("/dashboard#token="), "{lines:?}");
    // The printed curl line, run as printed (its -k accepts the self-signed certificate).
    let curl = banner(&lines, "admin:");
    let header = curl.split('\'').nth(1).unwrap();
    let url = curl.rsplit(' ').next().unwrap();
    assert!(curl.starts_with("curl -k ") && url.starts_with("https://"), "{curl}");
    let out = Command::new("curl")
        .args(["-s", "-k", "-o", "/dev/null", "-w", "%{http_code}", "-H", header, url])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What an operator reads when Redis is not there at start: one warning naming the address
/// (or the name that does not resolve), never "connection lost" for a link never made.
#[test]
fn redis_missing_at_start_is_logged_as_unreachable_and_the_server_runs() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (url, says) in [
        (
            format!("redis://127.0.0.1:{port}"),
            format!("cannot reach redis at 127.0.0.1:{port}"),
        ),
        (
            "redis://no-such-host.invalid:6379".to_string(),
            "cannot resolve redis host".to_string(),
        ),
    ] {
        let mut child = Command::new(BIN)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--jwt-secret",
                "s",
                "--redis",
                &url,
                "--log-level",
                "info",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let child = Killer(child, None);
        let mut seen = Vec::new();
        loop {
            let mut line = String::new();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "exited: {seen:?}");
            assert!(!line.contains("connection lost"), "{line}");
            if line.contains(&says) {
                break;
            }
            seen.push(line);
        }
        drop(child);
    }
}

/// `wsedge client --reconnect --token T` is a session: after the server restarts it subscribes
/// again (events typed before), and a message sent to the user while it was away comes once.
#[test]
fn client_reconnect_resubscribes_and_recovers() {
    let cfg = || wsedge::Config { workers: 1, ..config() };
    let server = start(cfg());
    let addr = server.local_addr();
    let url = format!("ws://{addr}/ws");
    let mut child = Command::new(BIN)
        .args(["client", &url, "--token", &token("cli-session"), "--reconnect"])
        .env("WS_RECONNECT_BACKOFF_BASE", "0.05")
        .env("WS_RECONNECT_BACKOFF_MAX", "0.2")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Lines through a channel: a wait that never ends fails after 30 s instead of hanging.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut child = Killer(child, None);
    let until = |what: &str| {
        let mut seen = String::new();
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("no {what} ({e}); saw {seen}"));
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(what) {
                return seen;
            }
        }
    };
    until("connection.established");
    std::io::Write::write_all(
        &mut stdin,
        b"{\"type\":\"subscribe\",\"data\":{\"events\":[\"review.updated\"]}}\n",
    )
    .unwrap();
    until("subscription.acknowledged");
    let admin = admin_token("root");
    let publish = |addr: std::net::SocketAddr, n: u64| {
        let (status, _) = common::http::json(
            addr,
            "POST",
            "/ws/events/review.updated",
            Some(&admin),
            Some(serde_json::json!({"data": {"n": n}})),
        );
        assert_eq!(status, 200);
    };
    publish(addr, 1);
    assert!(until("\"type\":\"review.updated\"").contains("\"n\":1"));
    // The server restarts on the same address: the client comes back and subscribes again.
    drop(server);
    let server = start(wsedge::Config { listen: addr, ..cfg() });
    until("connection.established");
    until("subscription.acknowledged");
    publish(addr, 2);
    assert!(until("\"type\":\"review.updated\"").contains("\"n\":2"));
    // Kicked off; a message to the user while it is away arrives once (live or recovered).
    let (status, _) = common::http::json(addr, "DELETE", "/ws/users/cli-session", Some(&admin), None);
    assert_eq!(status, 200);
    let (status, _) = common::http::json(
        addr,
        "POST",
        "/ws/users/cli-session/messages",
        Some(&admin),
        Some(serde_json::json!({"type": "note", "data": {"once": true}})),
    );
    assert_eq!(status, 200);
    until("\"once\":true");
    publish(addr, 3);
    let rest = until("\"type\":\"review.updated\"");
    assert!(rest.contains("\"n\":3") && !rest.contains("once"), "once only: {rest}");
    drop(stdin);
    let _ = child.0.wait();
    drop(server);
}
