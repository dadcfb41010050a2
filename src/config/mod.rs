//! Server configuration: every knob with its default and trade-off, and `validate()`.
//!
//! Owns: the `Config` value and its checks. Does not touch: flags or environment variables (the
//! binary maps those onto `Config`), sockets, or key material parsing (see `auth`).

use std::net::SocketAddr;
use std::time::Duration;

mod backend;
mod error;
mod jwt_key;
mod redis_url;
pub use backend::{AuthProxyConfig, BUILT_IN_TYPES, BackendConfig, BackendTarget, Forwarding, LifecycleEvents};
pub use error::{ConfigError, MAX_EVENT_TYPES};
pub use redis_url::{RedisUrl, Sentinels};

/// The built-in subscribable event types.
pub const DEFAULT_EVENTS: [&str; 12] = [
    "upload.progress",
    "upload.completed",
    "upload.error",
    "upload.cancelled",
    "review.updated",
    "review.created",
    "review.deleted",
    "system.notification",
    "system.maintenance",
    "user.status_changed",
    "file.processing",
    "file.ready",
];

/// What happens when a user opens one connection more than `max_connections_per_user`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitPolicy {
    /// The user's oldest connection is closed with 1008 "connection limit exceeded".
    EvictOldest,
    /// The new connection gets `CONNECTION_LIMIT_EXCEEDED` and is closed with 1008.
    Reject,
}

/// How JWTs are verified.
#[derive(Clone)]
pub enum JwtKey {
    /// Shared secret for HS256/HS384/HS512.
    Secret(Vec<u8>),
    /// PEM public key for RS*/PS*/ES*/EdDSA.
    PublicKeyPem(Vec<u8>),
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKey::Secret(_) => f.write_str("Secret(<redacted>)"),
            JwtKey::PublicKeyPem(_) => f.write_str("PublicKeyPem(..)"),
        }
    }
}

/// JWT verification settings.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub key: JwtKey,
    /// The only algorithm accepted (a token naming another one is refused: no `none`, no HS/RS
    /// confusion).
    pub algorithm: jsonwebtoken::Algorithm,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds. Default 0: an expired token is expired.
    pub leeway_secs: u64,
    /// Refuse tokens without `exp` (default true): a token that never expires cannot be taken
    /// back. Connections are closed when their user's token expires either way.
    pub require_exp: bool,
}

impl JwtConfig {
    /// HS256 with the given secret, no issuer or audience check.
    pub fn hs256(secret: impl Into<Vec<u8>>) -> Self {
        JwtConfig {
            key: JwtKey::Secret(secret.into()),
            algorithm: jsonwebtoken::Algorithm::HS256,
            issuer: None,
            audience: None,
            leeway_secs: 0,
            require_exp: true,
        }
    }
}

/// Who may connect.
#[derive(Debug, Clone)]
pub enum AuthMode {
    /// Every WebSocket needs a valid JWT.
    Jwt(JwtConfig),
    /// Anyone may connect (the echo server for conformance suites and peer benchmarks).
    Anonymous,
}

/// Everything the server needs to run. `Default` is the documented default limits on `127.0.0.1:8080`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address every reactor binds (with `SO_REUSEPORT`). Port 0 picks one port for all.
    pub listen: SocketAddr,
    /// Reactor threads. Default: available cores.
    pub workers: usize,
    /// Open WebSockets in total; over it the upgrade gets HTTP 503. Default 1000.
    pub max_connections: usize,
    /// Open WebSockets per user (`sub`). Default 3.
    pub max_connections_per_user: usize,
    /// TCP connections per client address (IPv6: per /64), counted from accept to close in
    /// every phase; over it the new socket gets HTTP 429 and is closed. 0 disables. Default 256.
    pub max_connections_per_ip: u32,
    /// Ping and pong frames a connection may send per second; over it the connection is closed
    /// with 1008. 0 disables; at most 255. Default 50.
    pub max_control_frames_per_second: u32,
    /// Default evict-oldest.
    pub per_user_limit_policy: LimitPolicy,
    /// Messages per user per window; 0 disables. Default 100.
    pub rate_limit_messages: u32,
    /// Sliding window length. Default 60 s.
    pub rate_limit_window: Duration,
    /// A connection silent this long gets a WebSocket ping. Default 30 s.
    pub heartbeat_interval: Duration,
    /// A connection silent this long is closed (1000 "connection timeout"). Default 60 s.
    pub connection_timeout: Duration,
    /// TCP connections still in their HTTP upgrade, server-wide; past it the oldest is dropped.
    /// Default 10,000.
    pub max_pending_handshakes: usize,
    /// A client must finish its HTTP upgrade within this (slowloris guard). Default 10 s.
    pub handshake_timeout: Duration,
    /// After sending a close frame, how long to wait for the peer's before dropping. Default 5 s.
    pub close_timeout: Duration,
    /// On shutdown, how long to wait for close handshakes before exiting. Default 10 s.
    pub shutdown_timeout: Duration,
    /// Largest message (after reassembly); bigger gets close 1009. Default 64 KiB.
    pub max_message_size: usize,
    /// Largest HTTP request head; bigger gets 431. Default 8 KiB.
    pub max_request_bytes: usize,
    /// Largest outbound backlog per connection; a consumer slower than that is closed
    /// (1008 "slow consumer"). Default 1 MiB.
    pub max_outbound_bytes: usize,
    /// Rooms a user may join by itself (server/admin additions are not limited). Default 100.
    pub max_rooms_per_user: usize,
    /// Event types clients may subscribe to. Default: the 12 built-in types.
    pub subscribable_events: Vec<String>,
    /// WebSocket path: `/ws`, `/ws/{token}`. `None` accepts any path (echo server).
    pub ws_path: Option<String>,
    /// Close a connection with 1008 `token expired` when its token's `exp` passes (true, the
    /// default), or check `exp` only at connect and `token.refresh` (false: `--token-expiry
    /// connect`, what the seed systems' clients expect: a stolen token then keeps an open
    /// connection alive until it closes).
    pub close_at_token_expiry: bool,
    /// With each heartbeat's WebSocket ping, also send `{"type": "ping", "data": {}}` as a text
    /// message (`--json-heartbeat on`), for clients that only see messages. Default off.
    pub json_heartbeat: bool,
    /// A path prefix the admin API and the health, ready and metrics routes also answer under
    /// (`/api/v1` serves `/api/v1/ws/stats` as `/ws/stats`). None: none.
    pub admin_prefix: Option<String>,
    /// Browser origins allowed to open WebSockets (exact `scheme://host[:port]`); empty allows
    /// all. Requests without `Origin` (non-browser clients) are not affected. Default: empty.
    pub allowed_origins: Vec<String>,
    /// A separate address for the admin HTTP API (it is always served on `listen` too).
    pub admin_listen: Option<SocketAddr>,
    /// Share `listen` (and `admin_listen`) with other processes bound with this option too
    /// (the kernel splits new connections between them: several nodes on one port, or a
    /// successor taking over during a drain). Without it, a port another process holds is
    /// refused with "address in use". Default false.
    pub reuse_port: bool,
    /// This node's name in presence answers and, in a cluster, on the wire: 1-64 characters
    /// from `[A-Za-z0-9._-]`. Default: generated (12 hex digits) at each start.
    pub node_id: String,
    /// `--redis`: join the cluster of nodes sharing this Redis. `None` (default): the node runs
    /// alone on the in-memory engine.
    pub redis: Option<RedisUrl>,
    /// Prefix of every Redis key and channel, so several clusters can share one Redis.
    /// Default `wsedge`.
    pub redis_prefix: String,
    /// A node that stops refreshing its liveness key (killed, or cut off from Redis) stops
    /// counting toward cluster-wide per-user limits after this long. Default 10 s.
    pub node_ttl: Duration,
    /// A Redis command (or subscription probe) with no reply this long after it was sent
    /// means Redis is stalled: the connection is dropped and made again, and publishes in
    /// flight answer "outcome unknown". Default 2 s (0.1 to 60 s).
    pub redis_timeout: Duration,
    /// `--redis-ca`: PEM file of the certificate authorities a `rediss://` Redis (and its
    /// sentinels) must be signed by. `None`: the system's store.
    pub redis_ca: Option<std::path::PathBuf>,
    /// `--public-metrics`: serve `/metrics` without a token on the main listener too. Default
    /// off: it is served openly only on `--admin-listen`, and elsewhere to an admin token.
    pub public_metrics: bool,
    /// In a cluster, how long Redis remembers a publish's idempotency key (`Idempotency-Key`):
    /// a retry with the same key within it is not delivered again. Default 300 s (1 s to 1 day).
    pub idempotency_window: Duration,
    /// Messages kept per channel (`event:<type>`, `room:<name>`, `user:<id>`) for recovery and
    /// offline users; 0 disables history. Default 100.
    pub history_size: usize,
    /// Age past which kept messages are dropped; zero disables history. Default 300 s. On a
    /// cluster (Redis), how long a channel's history lives after its last message.
    pub history_ttl: Duration,
    /// Bytes of kept messages per node, at most (split evenly over reactors). Default 64 MiB.
    /// The in-memory engine's bound; on a cluster, bound Redis with its `maxmemory`.
    pub history_max_bytes: usize,
    /// A recovery missing more messages than this answers `recovered: false`. Default 300.
    pub recovery_max: usize,
    /// Accept permessage-deflate when a client offers it (always without context takeover:
    /// nothing per connection). Default off.
    pub compression: bool,
    /// Messages smaller than this go uncompressed. Default 512 bytes.
    pub compression_min_size: usize,
    /// A Unix socket where a successor takes over the listening sockets (and this server
    /// then drains), and where this server first asks a running predecessor for them.
    pub handover_socket: Option<std::path::PathBuf>,
    /// PEM certificate chain and private key: the main listeners speak TLS (wss://, https://).
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// Largest admin request body; bigger gets 413. Default 64 KiB.
    pub admin_max_body: usize,
    /// On shutdown, connections are closed in batches spread over this window, so clients do
    /// not all reconnect at once. Default 5 s; zero closes everything at once.
    pub drain_window: Duration,
    /// The backend bridge (`--backend-url`): forwarded messages, rpcs and lifecycle events
    /// go there. None: nothing is forwarded.
    pub backend: Option<BackendConfig>,
    /// Client message types forwarded to the backend (`--forward`).
    pub forward: Forwarding,
    /// Lifecycle events sent to the backend (`--backend-events`).
    pub backend_events: LifecycleEvents,
    /// Authentication by the backend (`--auth-proxy`): replaces JWT verification of upgrades
    /// (the admin API keeps its admin tokens).
    pub auth_proxy: Option<AuthProxyConfig>,
    pub auth: AuthMode,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_connections: 1000,
            max_connections_per_user: 3,
            max_connections_per_ip: 256,
            max_control_frames_per_second: 50,
            per_user_limit_policy: LimitPolicy::EvictOldest,
            rate_limit_messages: 100,
            rate_limit_window: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(30),
            connection_timeout: Duration::from_secs(60),
            max_pending_handshakes: 10_000,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
            max_message_size: 64 * 1024,
            max_request_bytes: 8 * 1024,
            max_outbound_bytes: 1024 * 1024,
            max_rooms_per_user: 100,
            subscribable_events: DEFAULT_EVENTS.iter().map(|s| s.to_string()).collect(),
            ws_path: Some("/ws".to_string()),
            admin_prefix: None,
            close_at_token_expiry: true,
            json_heartbeat: false,
            allowed_origins: Vec::new(),
            admin_listen: None,
            reuse_port: false,
            node_id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            history_max_bytes: 64 << 20,
            compression: false,
            compression_min_size: 512,
            handover_socket: None,
            tls_cert: None,
            tls_key: None,
            recovery_max: 300,
            redis: None,
            redis_prefix: "wsedge".to_string(),
            node_ttl: Duration::from_secs(10),
            redis_timeout: Duration::from_secs(2),
            redis_ca: None,
            public_metrics: false,
            idempotency_window: Duration::from_secs(300),
            admin_max_body: 64 * 1024,
            drain_window: Duration::from_secs(5),
            backend: None,
            forward: Forwarding::default(),
            backend_events: LifecycleEvents::default(),
            auth_proxy: None,
            // Secure by default: a random secret nobody knows, so nothing authenticates until
            // a key is configured.
            auth: AuthMode::Jwt(JwtConfig::hs256(random_secret())),
        }
    }
}

/// 32 random bytes (from the OS, through `uuid`'s v4 generator), hex encoded.
pub fn random_secret() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    a + &b
}

/// Upper bounds that keep every derived quantity (ticks, deadlines, buffer sizes, counters)
/// far from overflow. Generous for any real deployment.
pub mod bounds {
    pub const MAX_CONNECTIONS: usize = 1 << 24;
    pub const MAX_CONNECTIONS_PER_USER: usize = 65_536;
    pub const MAX_MESSAGE_SIZE: usize = 1 << 30;
    pub const MAX_REQUEST_BYTES: usize = 1 << 20;
    pub const MAX_OUTBOUND_BYTES: usize = 1 << 32;
    /// The least `max_outbound_bytes` that lets the server work (the greeting and an error
    /// message fit, with room to spare).
    pub const MIN_OUTBOUND_BYTES: usize = 4096;
    pub const MAX_ADMIN_BODY: usize = 64 << 20;
    pub const MAX_ROOMS_PER_USER: usize = 100_000;
    pub const MAX_PENDING_HANDSHAKES: usize = 1 << 24;
    pub const MAX_CONTROL_FRAMES_PER_SECOND: u32 = 255;
    /// Every duration (timeouts, windows, intervals, leeway): one day.
    pub const MAX_DURATION_SECS: u64 = 86_400;
}

impl Config {
    /// Checks the configuration; the server refuses to start on an error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.workers == 0 || self.workers > 255 {
            return Err(ConfigError::Workers(self.workers));
        }
        let id_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if self.node_id.is_empty() || self.node_id.len() > 64 || !self.node_id.chars().all(id_ok) {
            return Err(ConfigError::NodeId(self.node_id.clone()));
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.len() > 64 || !self.redis_prefix.chars().all(id_ok) {
            return Err(ConfigError::RedisPrefix(self.redis_prefix.clone()));
        }
        for (name, value, max) in [
            ("history_size", self.history_size, 100_000),
            ("history_max_bytes", self.history_max_bytes, 64 << 30),
            ("recovery_max", self.recovery_max, 100_000),
        ] {
            if value > max {
                return Err(ConfigError::OutOfRange {
                    name,
                    min: 0,
                    max: max as u64,
                    value: value as u64,
                });
            }
        }
        if self.history_ttl.as_secs() > bounds::MAX_DURATION_SECS {
            return Err(ConfigError::TooLong {
                name: "history_ttl",
                max_secs: bounds::MAX_DURATION_SECS,
                value: self.history_ttl,
            });
        }
        if self.node_ttl < Duration::from_secs(1) || self.node_ttl.as_secs() > bounds::MAX_DURATION_SECS {
            return Err(ConfigError::OutOfRange {
                name: "node_ttl (seconds)",
                min: 1,
                max: bounds::MAX_DURATION_SECS,
                value: self.node_ttl.as_secs(),
            });
        }
        if self.redis_timeout < Duration::from_millis(100) || self.redis_timeout > Duration::from_secs(60) {
            return Err(ConfigError::OutOfRange {
                name: "redis_timeout (milliseconds)",
                min: 100,
                max: 60_000,
                value: self.redis_timeout.as_millis() as u64,
            });
        }
        if self.idempotency_window < Duration::from_secs(1) || self.idempotency_window.as_secs() > 86_400 {
            return Err(ConfigError::OutOfRange {
                name: "idempotency_window (seconds)",
                min: 1,
                max: 86_400,
                value: self.idempotency_window.as_secs(),
            });
        }
        for (name, value) in [
            ("max_connections", self.max_connections),
            ("max_connections_per_user", self.max_connections_per_user),
            ("max_message_size", self.max_message_size),
            ("max_outbound_bytes", self.max_outbound_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        use bounds::*;
        for (name, value, min, max) in [
            ("max_connections", self.max_connections, 1, MAX_CONNECTIONS),
            (
                "max_connections_per_user",
                self.max_connections_per_user,
                1,
                MAX_CONNECTIONS_PER_USER,
            ),
            ("max_message_size", self.max_message_size, 1, MAX_MESSAGE_SIZE),
            ("max_request_bytes", self.max_request_bytes, 256, MAX_REQUEST_BYTES),
            // Below this the greeting alone would close every connection as a slow consumer.
            (
                "max_outbound_bytes",
                self.max_outbound_bytes,
                MIN_OUTBOUND_BYTES,
                MAX_OUTBOUND_BYTES,
            ),
            ("admin_max_body", self.admin_max_body, 0, MAX_ADMIN_BODY),
            ("max_rooms_per_user", self.max_rooms_per_user, 0, MAX_ROOMS_PER_USER),
            (
                "max_pending_handshakes",
                self.max_pending_handshakes,
                1,
                MAX_PENDING_HANDSHAKES,
            ),
            (
                "max_control_frames_per_second",
                self.max_control_frames_per_second as usize,
                0,
                MAX_CONTROL_FRAMES_PER_SECOND as usize,
            ),
        ] {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::OutOfRange {
                    name,
                    min: min as u64,
                    max: max as u64,
                    value: value as u64,
                });
            }
        }
        let leeway = match &self.auth {
            AuthMode::Jwt(j) => Duration::from_secs(j.leeway_secs.min(u64::MAX / 2)),
            AuthMode::Anonymous => Duration::ZERO,
        };
        // (name, value, may it be zero)
        for (name, value, zero_ok) in [
            ("rate_limit_window", self.rate_limit_window, false),
            ("heartbeat_interval", self.heartbeat_interval, false),
            ("connection_timeout", self.connection_timeout, false),
            ("handshake_timeout", self.handshake_timeout, false),
            ("close_timeout", self.close_timeout, false),
            ("shutdown_timeout", self.shutdown_timeout, true),
            ("drain_window", self.drain_window, true),
            ("jwt leeway", leeway, true),
        ] {
            if value.is_zero() && !zero_ok {
                return Err(ConfigError::Zero(name));
            }
            if value > Duration::from_secs(MAX_DURATION_SECS) {
                return Err(ConfigError::TooLong {
                    name,
                    max_secs: MAX_DURATION_SECS,
                    value,
                });
            }
        }
        if self.connection_timeout <= self.heartbeat_interval {
            return Err(ConfigError::TimeoutNotAfterHeartbeat {
                heartbeat: self.heartbeat_interval,
                timeout: self.connection_timeout,
            });
        }
        if self.subscribable_events.len() > MAX_EVENT_TYPES {
            return Err(ConfigError::TooManyEvents(self.subscribable_events.len()));
        }
        for (i, e) in self.subscribable_events.iter().enumerate() {
            if e.is_empty() || self.subscribable_events[..i].contains(e) {
                return Err(ConfigError::BadEvent(e.clone()));
            }
        }
        if let Some(p) = &self.ws_path
            && !p.starts_with('/')
        {
            return Err(ConfigError::WsPath(p.clone()));
        }
        if let Some(p) = &self.admin_prefix {
            let ok = p.len() >= 2
                && p.len() <= 128
                && p.starts_with('/')
                && !p.ends_with('/')
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-~".contains(&b));
            if !ok {
                return Err(ConfigError::AdminPrefix(p.clone()));
            }
        }
        if let AuthMode::Jwt(jwt) = &self.auth {
            jwt.decoding_key().map(drop)?;
        }
        self.validate_backend()
    }

    fn validate_backend(&self) -> Result<(), ConfigError> {
        let Some(b) = &self.backend else {
            if !self.forward.types.is_empty() || self.backend_events.any() {
                return Err(ConfigError::Forward(
                    "--forward and --backend-events need --backend-url or --backend-stream".into(),
                ));
            }
            return Ok(());
        };
        if let BackendTarget::Stream { maxlen, .. } = &b.target {
            if self.redis.is_none() {
                return Err(ConfigError::Forward("--backend-stream needs --redis".into()));
            }
            if *maxlen == 0 {
                return Err(ConfigError::Zero("backend_stream_maxlen"));
            }
        }
        for (name, value, min, max) in [
            ("backend_queue", b.queue as u64, 1, 1_000_000),
            ("backend_batch", b.batch as u64, 1, 10_000),
            ("backend_timeout (ms)", b.timeout.as_millis() as u64, 1, 60_000),
            ("backend_deadline (ms)", b.deadline.as_millis() as u64, 1, 600_000),
        ] {
            if value < min || value > max {
                return Err(ConfigError::OutOfRange { name, min, max, value });
            }
        }
        Ok(())
    }

    /// How long the auth proxy has to answer (a handshake, a join or subscribe check): three
    /// quarters of the handshake timeout, so that a proxy that cannot answer in time gets the
    /// client a 503 before the handshake timeout's 408.
    pub fn auth_proxy_wait(&self) -> Duration {
        self.handshake_timeout * 3 / 4
    }

    /// True if channels keep history (both a size and a TTL).
    pub fn history_enabled(&self) -> bool {
        self.history_size > 0 && !self.history_ttl.is_zero()
    }

    /// Index of an event type in `subscribable_events` (its bit in a connection's set).
    pub fn event_bit(&self, event: &str) -> Option<u32> {
        self.subscribable_events
            .iter()
            .position(|e| e == event)
            .map(|i| i as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_matches_the_seed() {
        let c = Config::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.max_connections_per_user, 3);
        assert_eq!(c.max_connections, 1000);
        assert_eq!(c.max_message_size, 65536);
        assert_eq!(c.subscribable_events.len(), 12);
    }

    #[test]
    fn bad_values_are_errors_not_panics() {
        let c = Config {
            workers: 0,
            ..Config::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::Workers(0)));
        for bad in ["", "has space", "slash/", &"x".repeat(65)] {
            let c = Config {
                node_id: bad.to_string(),
                ..Config::default()
            };
            assert_eq!(c.validate(), Err(ConfigError::NodeId(bad.to_string())));
        }
        let c = Config {
            connection_timeout: Duration::from_secs(1),
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::TimeoutNotAfterHeartbeat { .. })
        ));
        let c = Config {
            subscribable_events: vec!["a".into(), "a".into()],
            ..Config::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::BadEvent("a".into())));
        let mut jwt = JwtConfig::hs256("x");
        jwt.key = JwtKey::PublicKeyPem(b"not a pem".to_vec());
        jwt.algorithm = jsonwebtoken::Algorithm::RS256;
        let c = Config {
            auth: AuthMode::Jwt(jwt),
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::Key(_))));
    }

    /// Values that once passed validation and then broke at runtime (truncation to zero,
    /// overflow panics, aborts on allocation, deadlines past the end of time).
    #[test]
    fn every_field_is_bounded() {
        // 1e19 seconds: past any deadline arithmetic.
        const HUGE: Duration = Duration::from_secs(10_000_000_000_000_000_000);
        let cases: Vec<fn(&mut Config)> = vec![
            |c| c.max_connections_per_user = 4_294_967_296,
            |c| c.max_connections_per_user = 4_294_967_295,
            |c| c.max_connections_per_user = usize::MAX,
            |c| c.max_message_size = usize::MAX,
            |c| c.max_message_size = 1 << 40,
            |c| c.max_outbound_bytes = usize::MAX,
            |c| c.max_connections = usize::MAX,
            |c| c.max_request_bytes = usize::MAX,
            |c| c.admin_max_body = usize::MAX,
            |c| c.max_pending_handshakes = 0,
            |c| c.max_control_frames_per_second = 256,
            |c| c.drain_window = HUGE,
            |c| c.shutdown_timeout = HUGE,
            |c| {
                c.heartbeat_interval = HUGE;
                c.connection_timeout = HUGE + Duration::from_secs(1);
            },
            |c| c.rate_limit_window = HUGE,
            |c| c.handshake_timeout = HUGE,
            |c| c.close_timeout = HUGE,
            |c| {
                c.auth = AuthMode::Jwt(JwtConfig {
                    leeway_secs: u64::MAX,
                    ..JwtConfig::hs256("x")
                })
            },
        ];
        let cases: Vec<Config> = cases
            .into_iter()
            .map(|set| {
                let mut c = Config::default();
                set(&mut c);
                c
            })
            .collect();
        for (i, c) in cases.iter().enumerate() {
            let e = c.validate().expect_err(&format!("case {i} must be refused"));
            assert!(
                matches!(e, ConfigError::OutOfRange { .. } | ConfigError::TooLong { .. }),
                "case {i}: {e}"
            );
        }
        let at_the_bounds = Config {
            max_connections_per_user: bounds::MAX_CONNECTIONS_PER_USER,
            max_message_size: bounds::MAX_MESSAGE_SIZE,
            drain_window: Duration::from_secs(bounds::MAX_DURATION_SECS),
            max_control_frames_per_second: 255,
            ..Config::default()
        };
        assert_eq!(at_the_bounds.validate(), Ok(()));
    }
}
