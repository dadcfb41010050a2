//! The backend bridge's configuration: where the backend is, which client message types are
//! forwarded, which lifecycle events are sent, and the bounds on waiting.
//!
//! Owns: [`BackendConfig`], [`Forwarding`], [`LifecycleEvents`] and parsing a backend URL.
//! Does not touch: the bridge itself (`bridge`) or flags (the binary maps those here).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::error::ConfigError;

/// Where forwarded items go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendTarget {
    /// `--backend-url`: POSTed in batches.
    Http {
        /// Where the URL's host resolved (once, at startup).
        addr: SocketAddr,
        /// `Host` header: the URL's host and port as written.
        host: String,
        /// The URL's path (and query); `/` when it has none.
        path: String,
    },
    /// `--backend-stream`: one `XADD` per item to this Redis stream (over `--redis`), trimmed
    /// to about `maxlen` entries.
    Stream { key: String, maxlen: usize },
}

/// The backend as configured (`--backend-url` or `--backend-stream`, and their companions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub target: BackendTarget,
    /// One HTTP request's time to answer, connect included. Default 5 s.
    pub timeout: Duration,
    /// How long an item may wait for the backend, retries included, before its sender is
    /// told it failed. Default 10 s.
    pub deadline: Duration,
    /// Items per reactor waiting or in flight; past it new ones fail at once. Default 10,000.
    pub queue: usize,
    /// Items per request (a batch also stops at 1 MiB). Default 500.
    pub batch: usize,
}

impl BackendConfig {
    /// `http://host[:port][/path]` (no TLS: put the backend on a private network or a local
    /// proxy), resolved now; the defaults for the rest.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::BackendUrl(format!("{why}: {url:?}"));
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("must start with http:// (https is not supported)"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("needs a host (and no user info)"));
        }
        if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(bad("the path has spaces or control characters"));
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| bad(&format!("cannot resolve the host ({e})")))?
            .next()
            .ok_or_else(|| bad("the host resolves to no address"))?;
        Ok(BackendConfig::with_target(BackendTarget::Http {
            addr,
            host: authority.to_string(),
            path: path.to_string(),
        }))
    }

    /// Items `XADD`ed to Redis stream `key` (1-256 bytes), trimmed to about 100,000 entries.
    pub fn stream(key: &str) -> Result<Self, ConfigError> {
        if key.is_empty() || key.len() > 256 || key.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(ConfigError::BackendUrl(format!(
                "a stream key is 1-256 bytes without spaces or control characters: {key:?}"
            )));
        }
        Ok(BackendConfig::with_target(BackendTarget::Stream {
            key: key.to_string(),
            maxlen: 100_000,
        }))
    }

    fn with_target(target: BackendTarget) -> Self {
        BackendConfig {
            target,
            timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(10),
            queue: 10_000,
            batch: 500,
        }
    }

    /// True for `--backend-stream`.
    pub fn is_stream(&self) -> bool {
        matches!(self.target, BackendTarget::Stream { .. })
    }
}

/// Authentication by the backend (`--auth-proxy`): the upgrade request's chosen headers go
/// to the backend (batched like forwarded items), which answers with the user and claims or
/// a refusal; the handshake waits, bounded by the handshake timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthProxyConfig {
    /// Where to ask (an HTTP target; its timeout and deadline are the handshake timeout).
    pub backend: BackendConfig,
    /// Request headers passed on, lower-case (default `cookie`, `authorization`).
    pub headers: Vec<String>,
    /// How long an accepted answer is reused for the same headers and path (0: never).
    pub cache: Duration,
    /// Ask the proxy before a client joins a room (`may_join`) or subscribes to an event
    /// (`may_subscribe`) too.
    pub check_joins: bool,
    pub check_subscribes: bool,
}

impl AuthProxyConfig {
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        Ok(AuthProxyConfig {
            backend: BackendConfig::from_url(url)?,
            headers: vec!["cookie".into(), "authorization".into()],
            cache: Duration::ZERO,
            check_joins: false,
            check_subscribes: false,
        })
    }
}

/// Client message types that go to the backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarding {
    pub types: Vec<String>,
}

/// Types the server answers itself, which cannot be forwarded (`upload.cancel` can: it is
/// then checked, counted and forwarded instead of handed to the application's hooks).
pub const BUILT_IN_TYPES: [&str; 9] = [
    "ping",
    "pong",
    "heartbeat",
    "subscribe",
    "unsubscribe",
    "token.refresh",
    "join",
    "leave",
    "recover",
];

impl Forwarding {
    /// A comma-separated list of types (1-64 bytes of `[A-Za-z0-9._:-]` each).
    pub fn parse(list: &str) -> Result<Self, ConfigError> {
        let mut types: Vec<String> = Vec::new();
        for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let ok = t.len() <= 64 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
            if !ok {
                return Err(ConfigError::Forward(format!(
                    "{t:?} is not a message type (1-64 of A-Za-z0-9._:-)"
                )));
            }
            if BUILT_IN_TYPES.contains(&t) {
                return Err(ConfigError::Forward(format!(
                    "{t:?} is answered by the server and cannot be forwarded"
                )));
            }
            if !types.iter().any(|x| x == t) {
                types.push(t.to_string());
            }
        }
        Ok(Forwarding { types })
    }

    pub fn forwards(&self, kind: &str) -> bool {
        !self.types.is_empty() && self.types.iter().any(|t| t == kind)
    }
}

/// The lifecycle events sent to the backend (each opt-in).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LifecycleEvents {
    pub connect: bool,
    pub disconnect: bool,
    pub join: bool,
    pub leave: bool,
    pub subscribe: bool,
    pub unsubscribe: bool,
}

impl LifecycleEvents {
    /// A comma-separated list of `connect`, `disconnect`, `join`, `leave`, `subscribe`,
    /// `unsubscribe`, or `all`.
    pub fn parse(list: &str) -> Result<Self, ConfigError> {
        let mut e = LifecycleEvents::default();
        for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match t {
                "connect" => e.connect = true,
                "disconnect" => e.disconnect = true,
                "join" => e.join = true,
                "leave" => e.leave = true,
                "subscribe" => e.subscribe = true,
                "unsubscribe" => e.unsubscribe = true,
                "all" => {
                    e = LifecycleEvents {
                        connect: true,
                        disconnect: true,
                        join: true,
                        leave: true,
                        subscribe: true,
                        unsubscribe: true,
                    }
                }
                other => return Err(ConfigError::Forward(format!("unknown lifecycle event {other:?}"))),
            }
        }
        Ok(e)
    }

    pub fn any(&self) -> bool {
        *self != LifecycleEvents::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_urls() {
        let b = BackendConfig::from_url("http://127.0.0.1:9000/ws-events?x=1").unwrap();
        let BackendTarget::Http { addr, host, path } = b.target else {
            panic!("http")
        };
        assert_eq!(
            (host.as_str(), path.as_str(), addr.port()),
            ("127.0.0.1:9000", "/ws-events?x=1", 9000)
        );
        let b = BackendConfig::from_url("http://localhost").unwrap();
        let BackendTarget::Http { addr, path, .. } = b.target else {
            panic!("http")
        };
        assert_eq!((addr.port(), path.as_str()), (80, "/"));
        assert!(BackendConfig::stream("app:inbox").unwrap().is_stream());
        assert!(BackendConfig::stream("").is_err() && BackendConfig::stream("a b").is_err());
        for bad in ["https://x", "ftp://x", "http://", "http://u@h/", "http://h/a b"] {
            assert!(BackendConfig::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_types() {
        let f = Forwarding::parse("chat, upload.cancel,chat,task.update").unwrap();
        assert_eq!(f.types, ["chat", "upload.cancel", "task.update"]);
        assert!(f.forwards("chat") && !f.forwards("ping"));
        assert!(Forwarding::parse("ping").is_err());
        assert!(Forwarding::parse("a b").is_err());
        let e = LifecycleEvents::parse("connect,leave").unwrap();
        assert!(e.connect && e.leave && !e.join);
        assert!(LifecycleEvents::parse("all").unwrap().unsubscribe);
        assert!(LifecycleEvents::parse("boot").is_err());
    }
}
