//! The WebSocket upgrade request parser (RFC 6455 section 4.2.1), sans-io.
//!
//! Owns: validating the request head and finding the token (path, query, `Authorization`,
//! `Sec-WebSocket-Protocol`). Does not touch: sockets, JWT verification, or responses.

/// Headers beyond this count get 431.
const MAX_HEADERS: usize = 64;

/// A request that may become a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// `Sec-WebSocket-Accept` value for the response.
    pub accept: String,
    /// The token found, if any (path, then query, then `Authorization`, then subprotocol).
    pub token: Option<String>,
    /// The client offered the `bearer` subprotocol; the response must select it.
    pub offers_bearer: bool,
    /// The `Origin` header (browsers always send one).
    pub origin: Option<String>,
    /// `recover_offset` and `recover_epoch` from the query: recover the user's channel from
    /// there before any live message.
    pub recover: Option<(u64, String)>,
    /// A `permessage-deflate` offer the server can accept (see `ws::deflate`).
    pub offers_deflate: bool,
}

/// A request that is not an upgrade, for the plain HTTP handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// `Authorization: Bearer` token, if any.
    pub bearer: Option<String>,
    /// Declared body length (`Content-Length`), 0 if absent.
    pub content_length: usize,
    /// Bytes of the request head.
    pub head_len: usize,
    /// The client lets the connection stay open after the response (HTTP/1.1 without
    /// `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a `100 Continue` before sending its body.
    pub expect_continue: bool,
    /// `Idempotency-Key`, as sent (checked by the routes that take one).
    pub idempotency_key: Option<String>,
    /// It came in on `--admin-listen` (set by the connection, not the parser).
    pub admin_port: bool,
}

/// Refusal: the HTTP status to answer with, a short message, and an extra header if needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub message: &'static str,
    pub header: Option<(&'static str, &'static str)>,
}

const fn reject(status: u16, message: &'static str) -> Reject {
    Reject {
        status,
        message,
        header: None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Need more bytes.
    Partial,
    /// A valid upgrade; `usize` is the length of the request head (bytes after it are frames).
    Upgrade(UpgradeRequest, usize),
    /// A well-formed request that is not an upgrade.
    Plain(PlainRequest),
    Reject(Reject),
}

/// Parses the request head in `buf`. `ws_path` of `None` accepts any path.
/// The request target and the headers named in `names` (lower-case) of a complete request
/// head, for the auth proxy (repeated headers joined with `, `; `cookie` with `; `).
pub fn chosen_headers(head: &[u8], names: &[String]) -> (String, Vec<(String, String)>) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    if req.parse(head).is_err() {
        return (String::new(), Vec::new());
    }
    let target = req.path.unwrap_or("/").to_string();
    let mut out: Vec<(String, String)> = Vec::new();
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if !names.contains(&name) {
            continue;
        }
        let value = String::from_utf8_lossy(h.value).into_owned();
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push_str(if name == "cookie" { "; " } else { ", " });
                v.push_str(&value);
            }
            None => out.push((name, value)),
        }
    }
    (target, out)
}

pub fn parse(buf: &[u8], max_bytes: usize, ws_path: Option<&str>) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= max_bytes => n,
        Ok(_) if buf.len() < max_bytes => return Parsed::Partial,
        Ok(_) | Err(httparse::Error::TooManyHeaders) => return Parsed::Reject(reject(431, "request head too large")),
        Err(_) => return Parsed::Reject(reject(400, "malformed HTTP request")),
    };
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut h = HeaderView { headers: req.headers };

    let upgrade_requested = h.all("upgrade").any(|v| has_token(v, "websocket"));
    if !upgrade_requested {
        // The body's end must be certain: on a kept-alive connection a misread length would
        // make the rest of a body read as the next request.
        if h.count("transfer-encoding") > 0 {
            return Parsed::Reject(reject(411, "request bodies need Content-Length (no Transfer-Encoding)"));
        }
        let content_length = match h.count("content-length") {
            0 => 0,
            _ => match h.one("content-length").and_then(|v| v.trim().parse().ok()) {
                Some(n) => n,
                None => return Parsed::Reject(reject(400, "invalid or repeated Content-Length")),
            },
        };
        let connection = |token| h.all("connection").any(|v| has_token(v, token));
        let keep_alive = match req.version {
            Some(1) => !connection("close"),
            _ => connection("keep-alive"),
        };
        let expect_continue = h.all("expect").any(|v| v.trim().eq_ignore_ascii_case("100-continue"));
        if h.count("idempotency-key") > 1 {
            return Parsed::Reject(reject(400, "repeated Idempotency-Key"));
        }
        let idempotency_key = h.one("idempotency-key").map(|v| v.trim().to_string());
        return Parsed::Plain(PlainRequest {
            method: method.to_string(),
            path: path.to_string(),
            query: query.map(str::to_string),
            bearer: h.bearer(),
            content_length,
            head_len,
            keep_alive,
            expect_continue,
            idempotency_key,
            admin_port: false,
        });
    }
    let path_token = match ws_path {
        None => None,
        Some(base) => match path.strip_prefix(base) {
            Some("") | Some("/") => None,
            Some(rest) if rest.starts_with('/') && !rest[1..].contains('/') => Some(percent_decode(&rest[1..])),
            _ => return Parsed::Reject(reject(404, "no WebSocket endpoint at this path")),
        },
    };
    if method != "GET" {
        return Parsed::Reject(Reject {
            status: 405,
            message: "WebSocket upgrade needs GET",
            header: Some(("Allow", "GET")),
        });
    }
    if req.version != Some(1) {
        return Parsed::Reject(reject(400, "WebSocket upgrade needs HTTP/1.1"));
    }
    if !h.all("connection").any(|v| has_token(v, "upgrade")) {
        return Parsed::Reject(reject(400, "missing 'Connection: Upgrade'"));
    }
    if h.one("host").is_none() {
        return Parsed::Reject(reject(400, "missing or repeated Host header"));
    }
    if h.one("sec-websocket-version").map(str::trim) != Some("13") {
        return Parsed::Reject(Reject {
            status: 426,
            message: "unsupported WebSocket version",
            header: Some(("Sec-WebSocket-Version", "13")),
        });
    }
    let key = match h.one("sec-websocket-key").map(str::trim) {
        Some(k) if is_valid_key(k) => k,
        _ => return Parsed::Reject(reject(400, "missing or invalid Sec-WebSocket-Key")),
    };
    let mut offers_bearer = false;
    let mut subprotocol_token = None;
    for value in h.all("sec-websocket-protocol") {
        let mut items = value.split(',').map(str::trim);
        while let Some(item) = items.next() {
            if item.eq_ignore_ascii_case("bearer") {
                offers_bearer = true;
                if let Some(t) = items.next() {
                    subprotocol_token.get_or_insert_with(|| t.to_string());
                }
            }
        }
    }
    let query_token = query.and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(percent_decode)
    });
    let token = path_token
        .or(query_token)
        .or_else(|| h.bearer())
        .or(subprotocol_token)
        .filter(|t| !t.is_empty());
    // Exactly one readable Origin or none: a repeated or non-UTF-8 Origin must not read as
    // "no Origin" (which `--allowed-origins` lets through for non-browser clients).
    let origin = match h.count("origin") {
        0 => None,
        1 => match h.one("origin") {
            Some(o) => Some(o.trim().to_string()),
            None => return Parsed::Reject(reject(400, "invalid Origin header")),
        },
        _ => return Parsed::Reject(reject(400, "repeated Origin header")),
    };
    let param = |name: &str| {
        query.and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                .map(percent_decode)
        })
    };
    // Most upgrades ask for no recovery: one scan decides.
    let asks_recovery = query.is_some_and(|q| q.contains("recover_"));
    let asked = if asks_recovery {
        (param("recover_offset"), param("recover_epoch"))
    } else {
        (None, None)
    };
    let recover = match asked {
        (None, None) => None,
        (Some(o), Some(e)) if e.len() <= 64 => match o.parse::<u64>() {
            Ok(o) => Some((o, e)),
            Err(_) => return Parsed::Reject(reject(400, "recover_offset must be a number")),
        },
        // A first connect: everything kept, whatever the epoch (the client has none yet).
        (Some(o), None) if o == "0" => Some((0, String::new())),
        _ => {
            return Parsed::Reject(reject(
                400,
                "recover_offset and recover_epoch go together (epoch at most 64 bytes)",
            ));
        }
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    Parsed::Upgrade(
        UpgradeRequest {
            accept,
            token,
            offers_bearer,
            origin,
            recover,
            offers_deflate: crate::ws::deflate::acceptable_offer(h.all("sec-websocket-extensions")),
        },
        head_len,
    )
}

struct HeaderView<'h, 'b> {
    headers: &'h [httparse::Header<'b>],
}

impl<'b> HeaderView<'_, 'b> {
    /// Every value of header `name` that is valid UTF-8.
    fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'b str> + 's {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
    }

    /// How many times header `name` appears, whatever its value.
    fn count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .count()
    }

    /// The value of a header that must appear exactly once.
    fn one(&mut self, name: &str) -> Option<&'b str> {
        let mut it = self.all(name);
        let first = it.next()?;
        it.next().is_none().then_some(first)
    }

    fn bearer(&mut self) -> Option<String> {
        let v = self.one("authorization")?.trim();
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
    }
}

/// `value` is a comma-separated list containing `token` (case-insensitive).
fn has_token(value: &str, token: &str) -> bool {
    value.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A key is 16 bytes in base64: 22 alphabet characters and `==`.
fn is_valid_key(k: &str) -> bool {
    let b = k.as_bytes();
    b.len() == 24
        && &b[22..] == b"=="
        && b[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

/// Decodes `%XX` escapes (and `+` as space is not applied: tokens never contain spaces).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (hex(b.get(i + 1)), hex(b.get(i + 2)))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: Option<&u8>) -> Option<u8> {
    let c = *c?;
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn req(lines: &[&str]) -> Vec<u8> {
        let mut s = lines.join("\r\n");
        s.push_str("\r\n\r\n");
        s.into_bytes()
    }

    fn good(target: &str, extra: &[&str]) -> Vec<u8> {
        let get = format!("GET {target} HTTP/1.1");
        let key = format!("Sec-WebSocket-Key: {KEY}");
        let mut lines = vec![
            get.as_str(),
            "Host: x",
            "Upgrade: websocket",
            "Connection: keep-alive, Upgrade",
            "Sec-WebSocket-Version: 13",
            key.as_str(),
        ];
        lines.extend_from_slice(extra);
        req(&lines)
    }

    fn status(p: Parsed) -> u16 {
        match p {
            Parsed::Reject(r) => r.status,
            other => panic!("expected reject, got {other:?}"),
        }
    }

    #[test]
    fn rfc_example_accept_key() {
        let Parsed::Upgrade(u, n) = parse(&good("/ws", &[]), 8192, Some("/ws")) else {
            panic!()
        };
        assert_eq!(u.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(u.token, None);
        assert_eq!(n, good("/ws", &[]).len());
    }

    #[test]
    fn token_sources_in_order() {
        let p = |t: &str, extra: &[&str]| match parse(&good(t, extra), 8192, Some("/ws")) {
            Parsed::Upgrade(u, _) => u,
            other => panic!("{other:?}"),
        };
        assert_eq!(p("/ws/abc.def", &[]).token.as_deref(), Some("abc.def"));
        assert_eq!(p("/ws?x=1&token=a%2Eb", &[]).token.as_deref(), Some("a.b"));
        assert_eq!(p("/ws", &["Authorization: Bearer tok"]).token.as_deref(), Some("tok"));
        let u = p("/ws", &["Sec-WebSocket-Protocol: bearer, sub.tok"]);
        assert_eq!(u.token.as_deref(), Some("sub.tok"));
        assert!(u.offers_bearer);
        assert_eq!(
            p("/ws/path", &["Authorization: Bearer hdr"]).token.as_deref(),
            Some("path")
        );
    }

    #[test]
    fn bad_requests_get_their_status() {
        assert_eq!(status(parse(&good("/other", &[]), 8192, Some("/ws"))), 404);
        assert_eq!(status(parse(&good("/ws/a/b", &[]), 8192, Some("/ws"))), 404);
        let post = String::from_utf8(good("/ws", &[])).unwrap().replacen("GET", "POST", 1);
        assert_eq!(status(parse(post.as_bytes(), 8192, Some("/ws"))), 405);
        let v8 = String::from_utf8(good("/ws", &[]))
            .unwrap()
            .replace("Version: 13", "Version: 8");
        let r = parse(v8.as_bytes(), 8192, Some("/ws"));
        assert_eq!(
            r,
            Parsed::Reject(Reject {
                status: 426,
                message: "unsupported WebSocket version",
                header: Some(("Sec-WebSocket-Version", "13"))
            })
        );
        let nokey = String::from_utf8(good("/ws", &[])).unwrap().replace(KEY, "short");
        assert_eq!(status(parse(nokey.as_bytes(), 8192, Some("/ws"))), 400);
        let noconn = String::from_utf8(good("/ws", &[]))
            .unwrap()
            .replace("keep-alive, Upgrade", "keep-alive");
        assert_eq!(status(parse(noconn.as_bytes(), 8192, Some("/ws"))), 400);
        assert_eq!(status(parse(b"GARBAGE\x01\r\n\r\n", 8192, Some("/ws"))), 400);
        let http10 = String::from_utf8(good("/ws", &[]))
            .unwrap()
            .replace("HTTP/1.1", "HTTP/1.0");
        assert_eq!(status(parse(http10.as_bytes(), 8192, Some("/ws"))), 400);
    }

    #[test]
    fn origin_must_be_single_and_readable() {
        let origin = |extra: &[&str]| match parse(&good("/ws", extra), 8192, Some("/ws")) {
            Parsed::Upgrade(u, _) => Ok(u.origin),
            Parsed::Reject(r) => Err(r.status),
            other => panic!("{other:?}"),
        };
        assert_eq!(origin(&[]), Ok(None));
        assert_eq!(origin(&["Origin: https://a"]), Ok(Some("https://a".into())));
        assert_eq!(origin(&["Origin: https://a", "Origin: https://b"]), Err(400));
        assert_eq!(origin(&["Origin: https://a", "origin: https://a"]), Err(400));
        let mut raw = good("/ws", &[]);
        raw.truncate(raw.len() - 2);
        raw.extend_from_slice(b"Origin: https://\xff\r\n\r\n");
        assert!(matches!(
            parse(&raw, 8192, Some("/ws")),
            Parsed::Reject(Reject { status: 400, .. })
        ));
    }

    #[test]
    fn partial_then_too_large() {
        let full = good("/ws", &[]);
        assert_eq!(parse(&full[..full.len() - 3], 8192, Some("/ws")), Parsed::Partial);
        let big = vec![b'a'; 300];
        let mut r = b"GET /ws HTTP/1.1\r\nX: ".to_vec();
        r.extend_from_slice(&big);
        assert_eq!(status(parse(&r, 256, Some("/ws"))), 431);
        let many: Vec<String> = (0..100).map(|i| format!("X{i}: y")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(status(parse(&good("/ws", &refs), 1 << 20, Some("/ws"))), 431);
    }

    #[test]
    fn plain_requests_pass_through() {
        let r = req(&["GET /health?x HTTP/1.1", "Host: x", "Authorization: Bearer t"]);
        let Parsed::Plain(p) = parse(&r, 8192, Some("/ws")) else {
            panic!()
        };
        assert_eq!(
            (p.method.as_str(), p.path.as_str(), p.bearer.as_deref()),
            ("GET", "/health", Some("t"))
        );
    }

    #[test]
    fn any_path_when_unconfigured() {
        assert!(matches!(
            parse(&good("/anything/at/all", &[]), 8192, None),
            Parsed::Upgrade(..)
        ));
    }
}
