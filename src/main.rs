//! The `wsedge` binary: flags and `WS_*` environment variables to `Config`, then run.
//!
//! `wsedge` / `wsedge serve`: the protocol server. `wsedge token`: mint a JWT.
//! `wsedge echo`: anonymous echo/broadcast server for conformance suites and benchmarks.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use wsedge::app::{EchoApp, ProtocolApp};
use wsedge::auth::{mint_hs256, mint_hs256_with};

mod cli_client;
mod cli_log;
use wsedge::config::{AuthProxyConfig, BackendConfig, DEFAULT_EVENTS, Forwarding, LifecycleEvents, random_secret};
use wsedge::{AuthMode, Config, JwtConfig, JwtKey, LimitPolicy, Server};

#[derive(Parser)]
#[command(
    name = "wsedge",
    version,
    about = "WebSocket edge server: JWT auth, limits, heartbeats, subscriptions, fan-out"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the protocol server (the default).
    Serve(Box<ServeArgs>),
    /// Mint an HS256 token with the configured secret.
    Token(TokenArgs),
    /// Run the anonymous echo server (any path; text starting with `broadcast` goes to all).
    Echo(EchoArgs),
    /// Connect to a WebSocket server: print each message, send each stdin line.
    Client(cli_client::ClientArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Policy {
    EvictOldest,
    Reject,
}

fn secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(v).map_err(|e| format!("{e}"))
}

/// The backend bridge: client messages, rpcs and lifecycle events to an HTTP backend.
#[derive(Args, Clone)]
struct BackendArgs {
    /// The backend's URL (http://host[:port]/path): batches of forwarded messages, rpcs and
    /// lifecycle events are POSTed there.
    #[arg(long, env = "WS_BACKEND_URL")]
    backend_url: Option<String>,
    /// Instead of --backend-url: a Redis stream (over --redis) that every forwarded message,
    /// rpc and lifecycle event is XADDed to, for consumers in a consumer group.
    #[arg(long, env = "WS_BACKEND_STREAM")]
    backend_stream: Option<String>,
    /// Entries the backend stream keeps, about (XADD MAXLEN ~).
    #[arg(long, env = "WS_BACKEND_STREAM_MAXLEN", default_value_t = 100_000)]
    backend_stream_maxlen: usize,
    /// Client message types forwarded to the backend, comma-separated (`rpc` for calls that
    /// get a result), e.g. `chat,upload.cancel,rpc`.
    #[arg(long, env = "WS_FORWARD", default_value = "")]
    forward: String,
    /// Lifecycle events sent to the backend, comma-separated: connect, disconnect, join,
    /// leave, subscribe, unsubscribe, or all.
    #[arg(long, env = "WS_BACKEND_EVENTS", default_value = "")]
    backend_events: String,
    /// Seconds one backend request may take (connect included) before it is retried.
    #[arg(long, env = "WS_BACKEND_TIMEOUT", default_value = "5", value_parser = secs)]
    backend_timeout: Duration,
    /// Seconds an item may wait for the backend, retries included, before its sender gets
    /// an error.
    #[arg(long, env = "WS_BACKEND_DEADLINE", default_value = "10", value_parser = secs)]
    backend_deadline: Duration,
    /// Items per reactor waiting for the backend or in flight; past it new ones fail at once.
    #[arg(long, env = "WS_BACKEND_QUEUE", default_value_t = 10_000)]
    backend_queue: usize,
    /// Items per request.
    #[arg(long, env = "WS_BACKEND_BATCH", default_value_t = 500)]
    backend_batch: usize,
    /// Authentication by the backend: upgrades are let in (with the user and claims it
    /// answers) or refused (with its status) by this URL instead of by a JWT.
    #[arg(long, env = "WS_AUTH_PROXY")]
    auth_proxy: Option<String>,
    /// Request headers the auth proxy sees, comma-separated.
    #[arg(long, env = "WS_AUTH_PROXY_HEADERS", default_value = "cookie,authorization")]
    auth_proxy_headers: String,
    /// Seconds an accepting answer is reused for the same headers and path (0: never).
    #[arg(long, env = "WS_AUTH_PROXY_CACHE", default_value = "0", value_parser = secs)]
    auth_proxy_cache: Duration,
    /// Also ask the auth proxy before joins and/or subscribes: join, subscribe (comma-separated).
    #[arg(long, env = "WS_AUTH_PROXY_CHECK", default_value = "")]
    auth_proxy_check: String,
}

impl BackendArgs {
    fn auth_proxy(&self) -> Result<Option<AuthProxyConfig>, String> {
        let Some(url) = &self.auth_proxy else {
            if !self.auth_proxy_check.trim().is_empty() {
                return Err("--auth-proxy-check needs --auth-proxy".into());
            }
            return Ok(None);
        };
        let mut a = AuthProxyConfig::from_url(url).map_err(|e| e.to_string())?;
        a.headers = (self.auth_proxy_headers.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        a.cache = self.auth_proxy_cache;
        for c in self
            .auth_proxy_check
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            match c {
                "join" => a.check_joins = true,
                "subscribe" => a.check_subscribes = true,
                other => return Err(format!("--auth-proxy-check takes join and subscribe, not {other:?}")),
            }
        }
        Ok(Some(a))
    }

    fn config(&self) -> Result<(Option<BackendConfig>, Forwarding, LifecycleEvents), String> {
        let target = match (&self.backend_url, &self.backend_stream) {
            (Some(_), Some(_)) => return Err("give --backend-url or --backend-stream, not both".into()),
            (Some(url), None) => Some(BackendConfig::from_url(url)),
            (None, Some(key)) => Some(BackendConfig::stream(key).map(|mut b| {
                if let wsedge::config::BackendTarget::Stream { maxlen, .. } = &mut b.target {
                    *maxlen = self.backend_stream_maxlen;
                }
                b
            })),
            (None, None) => None,
        };
        let backend = match target {
            Some(b) => {
                let mut b = b.map_err(|e| e.to_string())?;
                b.timeout = self.backend_timeout;
                b.deadline = self.backend_deadline;
                b.queue = self.backend_queue;
                b.batch = self.backend_batch;
                Some(b)
            }
            None => None,
        };
        let forward = Forwarding::parse(&self.forward).map_err(|e| e.to_string())?;
        let events = LifecycleEvents::parse(&self.backend_events).map_err(|e| e.to_string())?;
        Ok((backend, forward, events))
    }
}

/// permessage-deflate (RFC 7692), always without context takeover: nothing per connection.
#[derive(Args, Clone)]
struct CompressionArgs {
    /// Compress for clients that offer permessage-deflate: off or on.
    #[arg(long, env = "WS_COMPRESSION", default_value = "off", value_parser = on_off, action = clap::ArgAction::Set)]
    compression: bool,
    /// Messages smaller than this many bytes go uncompressed.
    #[arg(long, env = "WS_COMPRESSION_MIN_SIZE", default_value_t = 512)]
    compression_min_size: usize,
}

/// TLS on the main listener.
#[derive(Args, Clone)]
struct TlsArgs {
    /// PEM certificate chain: the listener speaks TLS (wss://, https://); with --tls-key.
    /// Reloaded on SIGHUP (new connections get the new one).
    #[arg(long, env = "WS_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "WS_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("expected on or off, got {other:?}")),
    }
}

#[derive(Args, Clone)]
struct Common {
    /// Reactor threads (0 = one per available core).
    #[arg(long, env = "WS_WORKERS", default_value_t = 0)]
    workers: usize,
    /// Log level: error, warn, info, debug, trace (default: RUST_LOG, else info). Debug adds
    /// a line per connection opened and closed.
    #[arg(long, env = "WS_LOG_LEVEL")]
    log_level: Option<String>,
    /// Log line format on stderr: text, or json (one object per line: ts, level, target, msg).
    #[arg(long, env = "WS_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// JSON lines on stderr, for log pipelines.
#[derive(Args, Clone)]
struct ServeArgs {
    /// Address to listen on (every reactor binds it with SO_REUSEPORT).
    #[arg(long, env = "WS_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    common: Common,
    /// Restarts that refuse no one: a new process started with the same path takes over
    /// this one's listening sockets, and this one drains (as on SIGTERM).
    #[arg(long, env = "WS_HANDOVER_SOCKET")]
    handover_socket: Option<std::path::PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    compression: CompressionArgs,
    #[command(flatten)]
    backend: BackendArgs,
    /// Open WebSockets in total; over it upgrades get HTTP 503.
    #[arg(long, env = "WS_MAX_CONNECTIONS", default_value_t = 1000)]
    max_connections: usize,
    /// Open WebSockets per user (JWT `sub`).
    #[arg(long, env = "WS_MAX_CONNECTIONS_PER_USER", default_value_t = 3)]
    max_connections_per_user: usize,
    /// TCP connections per client address (IPv6: per /64) in any phase; over it: HTTP 429
    /// (0 disables).
    #[arg(long, env = "WS_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    max_connections_per_ip: u32,
    /// Ping/pong frames a connection may send per second; over it: close 1008 (0 disables,
    /// at most 255).
    #[arg(long, env = "WS_MAX_CONTROL_FRAMES", default_value_t = 50)]
    max_control_frames: u32,
    /// What happens to the connection over the per-user limit.
    #[arg(long, env = "WS_PER_USER_LIMIT_POLICY", value_enum, default_value = "evict-oldest")]
    per_user_limit_policy: Policy,
    /// Messages per user per window (0 disables rate limiting).
    #[arg(long, env = "WS_RATE_LIMIT_MESSAGES", default_value_t = 100)]
    rate_limit_messages: u32,
    /// Rate limit window, seconds.
    #[arg(long, env = "WS_RATE_LIMIT_WINDOW", default_value = "60", value_parser = secs)]
    rate_limit_window: Duration,
    /// Silence before the server pings, seconds.
    #[arg(long, env = "WS_HEARTBEAT_INTERVAL", default_value = "30", value_parser = secs)]
    heartbeat_interval: Duration,
    /// Silence before the server closes the connection, seconds.
    #[arg(long, env = "WS_CONNECTION_TIMEOUT", default_value = "60", value_parser = secs)]
    connection_timeout: Duration,
    /// Connections still in their HTTP upgrade; past it the oldest is dropped (flood guard).
    #[arg(long, env = "WS_MAX_PENDING_HANDSHAKES", default_value_t = 10_000)]
    max_pending_handshakes: usize,
    /// Time allowed to complete the HTTP upgrade, seconds (slowloris guard).
    #[arg(long, env = "WS_HANDSHAKE_TIMEOUT", default_value = "10", value_parser = secs)]
    handshake_timeout: Duration,
    /// Wait for the peer's close frame this long after sending ours, seconds.
    #[arg(long, env = "WS_CLOSE_TIMEOUT", default_value = "5", value_parser = secs)]
    close_timeout: Duration,
    /// On SIGINT/SIGTERM, wait this long for close handshakes, seconds.
    #[arg(long, env = "WS_SHUTDOWN_TIMEOUT", default_value = "10", value_parser = secs)]
    shutdown_timeout: Duration,
    /// Largest message after reassembly, bytes (bigger: close 1009).
    #[arg(long, env = "WS_MAX_MESSAGE_SIZE", default_value_t = 65536)]
    max_message_size: usize,
    /// Largest HTTP request head, bytes (bigger: 431).
    #[arg(long, env = "WS_MAX_REQUEST_BYTES", default_value_t = 8192)]
    max_request_bytes: usize,
    /// Largest outbound backlog per connection, bytes (bigger: close 1008 "slow consumer"); at
    /// least 4096 (less could not even hold the greeting).
    #[arg(long, env = "WS_MAX_OUTBOUND_BYTES", default_value_t = 1 << 20)]
    max_outbound_bytes: usize,
    /// Rooms a user may join by itself.
    #[arg(long, env = "WS_MAX_ROOMS_PER_USER", default_value_t = 100)]
    max_rooms_per_user: usize,
    /// Subscribable event types, comma-separated (default: the 12 built-in types).
    #[arg(long, env = "WS_EVENTS", value_delimiter = ',')]
    events: Vec<String>,
    /// Browser origins allowed to connect, comma-separated (empty: any; no Origin: allowed).
    #[arg(long, env = "WS_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// Also serve the admin HTTP API on this address (it is always on --listen too).
    #[arg(long, env = "WS_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// This node's name (presence answers, stats): 1-64 of [A-Za-z0-9._-] (default: generated).
    #[arg(long, env = "WS_NODE_ID")]
    node_id: Option<String>,
    /// Join a cluster over this Redis: redis://[[user]:password@]host:port[/db], rediss://...
    /// for TLS, or redis+sentinel://[[user]:password@]host:port,host:port/MASTER_NAME[/db] to
    /// follow the master through Redis Sentinel (rediss+sentinel:// for TLS). Without it the
    /// node runs alone.
    #[arg(long, env = "WS_REDIS_URL")]
    redis: Option<wsedge::config::RedisUrl>,
    /// Prefix of every Redis key and channel (several clusters can share one Redis).
    #[arg(long, env = "WS_REDIS_PREFIX", default_value = "wsedge")]
    redis_prefix: String,
    /// Seconds after which a node that stopped refreshing its liveness in Redis (killed, cut
    /// off) no longer counts toward cluster-wide per-user limits.
    #[arg(long, env = "WS_NODE_TTL", default_value = "10", value_parser = secs)]
    node_ttl: Duration,
    /// Seconds without a reply from Redis (to a command or the subscription probe) after which
    /// Redis counts as stalled: the node reports down, drops the connection and makes it again
    /// (fractions allowed: 0.5).
    #[arg(long, env = "WS_REDIS_TIMEOUT", default_value = "2", value_parser = secs)]
    redis_timeout: Duration,
    /// Serve /metrics without a token on the main listener too (by default it is open only on
    /// --admin-listen, and elsewhere needs an admin token: it tells users, connections and
    /// failure reasons).
    #[arg(long, env = "WS_PUBLIC_METRICS")]
    public_metrics: bool,
    /// PEM file of the certificate authorities a rediss:// Redis must be signed by (default:
    /// the system's store).
    #[arg(long, env = "WS_REDIS_CA")]
    redis_ca: Option<std::path::PathBuf>,
    /// Seconds Redis remembers a publish's Idempotency-Key: a retry with the same key within
    /// this window is answered `duplicate: true` and not delivered again (cluster only).
    #[arg(long, env = "WS_IDEMPOTENCY_WINDOW", default_value = "300", value_parser = secs)]
    idempotency_window: Duration,
    /// Share the listening ports with other processes started with --reuse-port (several
    /// nodes on one port, or a successor during a drain); without it a busy port is an error.
    #[arg(long, env = "WS_REUSE_PORT")]
    reuse_port: bool,
    /// Messages kept per channel for recovery and offline users (0 disables history).
    #[arg(long, env = "WS_HISTORY_SIZE", default_value_t = 100)]
    history_size: usize,
    /// Seconds a kept message lives (0 disables history); with --redis, how long a channel's
    /// history lives after its last message.
    #[arg(long, env = "WS_HISTORY_TTL", default_value = "300", value_parser = secs)]
    history_ttl: Duration,
    /// Bytes of kept messages per node, at most (in memory; with --redis, bound Redis instead).
    #[arg(long, env = "WS_HISTORY_MAX_BYTES", default_value_t = 64 << 20)]
    history_max_bytes: usize,
    /// A recovery missing more messages than this answers recovered: false.
    #[arg(long, env = "WS_RECOVERY_MAX", default_value_t = 300)]
    recovery_max: usize,
    /// Largest admin request body, bytes (bigger: 413).
    #[arg(long, env = "WS_ADMIN_MAX_BODY", default_value_t = 65536)]
    admin_max_body: usize,
    /// On SIGTERM, close connections in batches spread over this many seconds.
    #[arg(long, env = "WS_DRAIN_WINDOW", default_value = "5", value_parser = secs)]
    drain_window: Duration,
    /// WebSocket path (`PATH` and `PATH/{token}`).
    #[arg(long, env = "WS_PATH", default_value = "/ws")]
    ws_path: String,
    /// When a token's `exp` is enforced: close (the connection closes with 1008 when it passes)
    /// or connect (checked at connect and token.refresh only).
    #[arg(long, env = "WS_TOKEN_EXPIRY", default_value = "close", value_parser = ["close", "connect"])]
    token_expiry: String,
    /// With each heartbeat ping, also send {"type": "ping"} as a text message (for clients that
    /// answer {"type": "pong"}): off or on.
    #[arg(long, env = "WS_JSON_HEARTBEAT", default_value = "off", value_parser = on_off, action = clap::ArgAction::Set)]
    json_heartbeat: bool,
    /// A path prefix the admin API (and /health, /ready, /metrics) also answers under, e.g.
    /// /api/v1 for /api/v1/ws/stats.
    #[arg(long, env = "WS_ADMIN_PREFIX")]
    admin_prefix: Option<String>,
    /// HS256 secret. Without it (and without --jwt-public-key) the server runs in dev mode: a
    /// random secret for this run, and an admin token and a ready-to-use connect URL printed on
    /// stdout.
    #[arg(long, env = "WS_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Allow dev mode (no --jwt-secret or --jwt-public-key) on an address other than loopback:
    /// without it such a start is refused, since dev mode prints an admin token.
    #[arg(long, env = "WS_DEV")]
    dev: bool,
    /// PEM public key file for RS*/PS*/ES*/EdDSA tokens.
    #[arg(long, env = "WS_JWT_PUBLIC_KEY")]
    jwt_public_key: Option<std::path::PathBuf>,
    /// The one accepted algorithm (default HS256 with a secret, RS256 with a public key).
    #[arg(long, env = "WS_JWT_ALGORITHM")]
    jwt_algorithm: Option<String>,
    /// Required `iss` claim.
    #[arg(long, env = "WS_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "WS_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// Clock skew tolerated on exp/nbf, seconds.
    #[arg(long, env = "WS_JWT_LEEWAY", default_value_t = 0)]
    jwt_leeway: u64,
    /// Refuse tokens without an `exp` claim (`--jwt-require-exp false` accepts them; such a
    /// token is valid until the key changes).
    #[arg(long, env = "WS_JWT_REQUIRE_EXP", default_value_t = true, action = clap::ArgAction::Set)]
    jwt_require_exp: bool,
}

#[derive(Args)]
struct TokenArgs {
    /// User id (`sub`).
    #[arg(long)]
    sub: String,
    /// Role claim, e.g. `admin`.
    #[arg(long)]
    role: Option<String>,
    /// Rooms the user may join: names or `*` globs, comma-separated or repeated (`rooms` claim).
    #[arg(long, value_delimiter = ',')]
    rooms: Vec<String>,
    /// `email` claim (kept in connection info).
    #[arg(long)]
    email: Option<String>,
    /// `name` claim (kept in connection info).
    #[arg(long)]
    name: Option<String>,
    /// `iss` claim (checked when the server has --jwt-issuer).
    #[arg(long)]
    iss: Option<String>,
    /// `aud` claim (checked when the server has --jwt-audience).
    #[arg(long)]
    aud: Option<String>,
    /// Any other claim, `key=value` (repeatable); a value that is JSON (number, true, [..],
    /// {..}) is kept as JSON, anything else as a string.
    #[arg(long = "claim", value_name = "KEY=VALUE")]
    claims: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// HS256 secret (the server's).
    #[arg(long, env = "WS_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
}

#[derive(Args)]
struct EchoArgs {
    /// Address to listen on (every reactor binds it with SO_REUSEPORT).
    #[arg(long, env = "WS_LISTEN", default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    compression: CompressionArgs,
    /// Largest message, bytes (conformance suites send 16 MiB).
    #[arg(long, env = "WS_MAX_MESSAGE_SIZE", default_value_t = 16 << 20)]
    max_message_size: usize,
    /// Open WebSockets in total.
    #[arg(long, env = "WS_MAX_CONNECTIONS", default_value_t = 1 << 24)]
    max_connections: usize,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Token(t)) => token(t),
        Some(Command::Echo(e)) => echo(e),
        Some(Command::Client(c)) => cli_client::run(c),
        Some(Command::Serve(s)) => serve(*s),
        None => serve(cli.serve),
    };
    log::logger().flush();
    if let Err(e) = result {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "wsedge: {e}");
        std::process::exit(2);
    }
}

fn init_logging(common: &Common) -> Result<(), String> {
    let spec = common
        .log_level
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let level: log::LevelFilter = spec.parse().map_err(|_| format!("unknown log level {spec:?}"))?;
    let format = match common.log_format {
        LogFormat::Text => cli_log::Format::Text,
        LogFormat::Json => cli_log::Format::Json,
    };
    cli_log::init(level, format)
}

/// Dev mode's secret: kept in `$XDG_STATE_HOME/wsedge/dev-secret` (else
/// `$HOME/.local/state/wsedge/dev-secret`), made (0600) on the first dev start and read on the
/// next, so tokens printed once keep working after a restart. Returns the secret and the file,
/// or a random secret and `None` when no such file can be kept.
fn dev_secret_file() -> (String, Option<std::path::PathBuf>) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state")))
        .map(|d| d.join("wsedge"));
    let Some(dir) = dir else {
        return (random_secret(), None);
    };
    let path = dir.join("dev-secret");
    // Only a regular file of this user's, readable by nobody else, is trusted (not a link
    // someone put there); the first start makes it whole or not at all, and a start racing
    // another takes whichever secret landed first.
    let trusted = |p: &std::path::Path| -> Option<String> {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::symlink_metadata(p).ok()?;
        let mine = m.uid() == rustix::process::geteuid().as_raw();
        if !m.file_type().is_file() || !mine || m.mode() & 0o077 != 0 {
            return None;
        }
        let s = std::fs::read_to_string(p).ok()?.trim().to_string();
        (s.len() >= 16).then_some(s)
    };
    if let Some(s) = trusted(&path) {
        return (s, Some(path));
    }
    if std::fs::symlink_metadata(&path).is_ok() {
        // Something else is there: not ours to use or replace.
        return (random_secret(), None);
    }
    let s = random_secret();
    let tmp = dir.join(format!("dev-secret.{}", std::process::id()));
    let made = std::fs::create_dir_all(&dir).is_ok()
        && std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, s.as_bytes()))
            .is_ok();
    // A hard link does not replace: if another start got there first, its secret stands.
    let linked = made && std::fs::hard_link(&tmp, &path).is_ok();
    let _ = std::fs::remove_file(&tmp);
    match (linked, trusted(&path)) {
        (true, _) => (s, Some(path)),
        (false, Some(theirs)) => (theirs, Some(path)),
        (false, None) => (s, None),
    }
}

fn workers(n: usize) -> usize {
    if n == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        n
    }
}

/// Prints a line to stdout, ignoring errors: a server must not die because whoever started it
/// closed its stdout (println! would panic on a broken pipe).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

fn token(t: TokenArgs) -> Result<(), String> {
    let mut extra = serde_json::Map::new();
    for kv in &t.claims {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--claim {kv:?}: expected KEY=VALUE"))?;
        if k.is_empty() || matches!(k, "sub" | "exp" | "iat") {
            return Err(format!("--claim {kv:?}: give sub with --sub and exp with --ttl"));
        }
        let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
        extra.insert(k.to_string(), value);
    }
    let named = [
        ("role", &t.role),
        ("email", &t.email),
        ("name", &t.name),
        ("iss", &t.iss),
        ("aud", &t.aud),
    ];
    for (k, v) in named {
        if let Some(v) = v {
            extra.insert(k.into(), v.clone().into());
        }
    }
    if !t.rooms.is_empty() {
        extra.insert("rooms".into(), t.rooms.clone().into());
    }
    let tok = mint_hs256_with(t.jwt_secret.as_bytes(), &t.sub, t.ttl, &extra).map_err(|e| e.to_string())?;
    say!("{tok}");
    Ok(())
}

fn serve(a: ServeArgs) -> Result<(), String> {
    init_logging(&a.common)?;
    let algorithm = match &a.jwt_algorithm {
        Some(name) => name
            .parse::<jsonwebtoken::Algorithm>()
            .map_err(|_| format!("unknown JWT algorithm {name:?}"))?,
        None if a.jwt_public_key.is_some() => jsonwebtoken::Algorithm::RS256,
        None => jsonwebtoken::Algorithm::HS256,
    };
    let mut dev_secret = None;
    let key = match (&a.jwt_secret, &a.jwt_public_key) {
        (Some(_), Some(_)) => return Err("give --jwt-secret or --jwt-public-key, not both".into()),
        (Some(s), None) => JwtKey::Secret(s.clone().into_bytes()),
        (None, Some(path)) => {
            JwtKey::PublicKeyPem(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        (None, None) => {
            let public = [Some(a.listen), a.admin_listen]
                .into_iter()
                .flatten()
                .find(|addr| !addr.ip().is_loopback());
            if let (Some(addr), false) = (public, a.dev) {
                return Err(format!(
                    "dev mode (no --jwt-secret or --jwt-public-key) listens on loopback addresses only, and {addr} is not one: give --jwt-secret (or --jwt-public-key), or --dev to run dev mode there anyway"
                ));
            }
            let (s, kept) = dev_secret_file();
            dev_secret = Some((s.clone(), kept));
            JwtKey::Secret(s.into_bytes())
        }
    };
    let events = if a.events.is_empty() {
        DEFAULT_EVENTS.iter().map(|s| s.to_string()).collect()
    } else {
        a.events.clone()
    };
    let (backend, forward, backend_events) = a.backend.config().map_err(|e| format!("invalid configuration: {e}"))?;
    let config = Config {
        backend,
        forward,
        backend_events,
        auth_proxy: a
            .backend
            .auth_proxy()
            .map_err(|e| format!("invalid configuration: {e}"))?,
        listen: a.listen,
        workers: workers(a.common.workers),
        max_connections: a.max_connections,
        max_connections_per_user: a.max_connections_per_user,
        max_connections_per_ip: a.max_connections_per_ip,
        max_control_frames_per_second: a.max_control_frames,
        per_user_limit_policy: match a.per_user_limit_policy {
            Policy::EvictOldest => LimitPolicy::EvictOldest,
            Policy::Reject => LimitPolicy::Reject,
        },
        rate_limit_messages: a.rate_limit_messages,
        rate_limit_window: a.rate_limit_window,
        heartbeat_interval: a.heartbeat_interval,
        connection_timeout: a.connection_timeout,
        max_pending_handshakes: a.max_pending_handshakes,
        handshake_timeout: a.handshake_timeout,
        close_timeout: a.close_timeout,
        shutdown_timeout: a.shutdown_timeout,
        max_message_size: a.max_message_size,
        max_request_bytes: a.max_request_bytes,
        max_outbound_bytes: a.max_outbound_bytes,
        max_rooms_per_user: a.max_rooms_per_user,
        subscribable_events: events,
        ws_path: Some(a.ws_path.clone()),
        admin_prefix: a.admin_prefix.clone(),
        close_at_token_expiry: a.token_expiry == "close",
        json_heartbeat: a.json_heartbeat,
        allowed_origins: a.allowed_origins.clone(),
        admin_listen: a.admin_listen,
        reuse_port: a.reuse_port,
        history_size: a.history_size,
        history_ttl: a.history_ttl,
        history_max_bytes: a.history_max_bytes,
        recovery_max: a.recovery_max,
        compression: a.compression.compression,
        compression_min_size: a.compression.compression_min_size,
        handover_socket: a.handover_socket.clone(),
        tls_cert: a.tls.tls_cert.clone(),
        tls_key: a.tls.tls_key.clone(),
        redis: a.redis.clone(),
        redis_prefix: a.redis_prefix.clone(),
        node_ttl: a.node_ttl,
        redis_timeout: a.redis_timeout,
        redis_ca: a.redis_ca.clone(),
        public_metrics: a.public_metrics,
        idempotency_window: a.idempotency_window,
        node_id: a.node_id.clone().unwrap_or_else(|| Config::default().node_id),
        admin_max_body: a.admin_max_body,
        drain_window: a.drain_window,
        auth: AuthMode::Jwt(JwtConfig {
            key,
            algorithm,
            issuer: a.jwt_issuer.clone(),
            audience: a.jwt_audience.clone(),
            leeway_secs: a.jwt_leeway,
            require_exp: a.jwt_require_exp,
        }),
    };
    let signals = termination_signals()?;
    let server = Server::start(config, ProtocolApp::default()).map_err(|e| e.to_string())?;
    if let Some((secret, kept)) = dev_secret {
        let admin = mint_hs256(secret.as_bytes(), "admin", Some("admin"), 24 * 3600).map_err(|e| e.to_string())?;
        // The user may join any room, so the README's examples work as they are.
        let mut rooms = serde_json::Map::new();
        rooms.insert("rooms".into(), serde_json::json!(["*"]));
        let user = mint_hs256_with(secret.as_bytes(), "user-1", 24 * 3600, &rooms).map_err(|e| e.to_string())?;
        let tls = a.tls.tls_cert.is_some();
        let (ws, http, insecure) = if tls {
            ("wss", "https", "-k ")
        } else {
            ("ws", "http", "")
        };
        let addr = server.local_addr();
        // The admin API also answers on --admin-listen (plain HTTP) when one is set.
        let (admin_http, admin_addr) = match a.admin_listen {
            Some(_) => ("http", server.admin_addr().unwrap_or(addr)),
            None => (http, addr),
        };
        let insecure = if admin_http == "https" { insecure } else { "" };
        say!("wsedge DEV MODE: no --jwt-secret or --jwt-public-key given.");
        match kept {
            Some(path) => say!(
                "  secret:      {secret}  (kept in {}: tokens stay valid across restarts)",
                path.display()
            ),
            None => say!("  secret:      {secret}  (random for this run: tokens end with it)"),
        }
        say!("  admin token: {admin}");
        say!("  user token:  {user}  (user-1, may join any room)");
        say!("  connect:     {ws}://{addr}{}?token={user}", a.ws_path);
        say!("  admin:       curl {insecure}-H 'Authorization: Bearer {admin}' {admin_http}://{admin_addr}/ws/stats");
        say!("  dashboard:   {admin_http}://{admin_addr}/dashboard#token={admin}");
    }
    run_until_signal(server, signals)
}

fn echo(a: EchoArgs) -> Result<(), String> {
    init_logging(&a.common)?;
    let config = Config {
        listen: a.listen,
        workers: workers(a.common.workers),
        max_connections: a.max_connections,
        max_message_size: a.max_message_size,
        // A 16 MiB echo must fit in the outbound queue.
        max_outbound_bytes: a.max_message_size.saturating_mul(4).max(1 << 20),
        max_connections_per_ip: 0,
        max_control_frames_per_second: 0,
        ws_path: None,
        auth: AuthMode::Anonymous,
        compression: a.compression.compression,
        compression_min_size: a.compression.compression_min_size,
        tls_cert: a.tls.tls_cert.clone(),
        tls_key: a.tls.tls_key.clone(),
        ..Config::default()
    };
    let signals = termination_signals()?;
    let server = Server::start(config, EchoApp).map_err(|e| e.to_string())?;
    let scheme = if a.tls.tls_cert.is_some() { "wss" } else { "ws" };
    say!("wsedge echo listening on {scheme}://{}/", server.local_addr());
    run_until_signal(server, signals)
}

/// SIGINT/SIGTERM handlers, installed before the server starts so no signal is missed.
fn termination_signals() -> Result<signal_hook::iterator::Signals, String> {
    signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| format!("signal setup: {e}"))
}

/// Runs until SIGINT/SIGTERM, then drains; a second signal exits at once.
fn run_until_signal(server: wsedge::RunningServer, mut signals: signal_hook::iterator::Signals) -> Result<(), String> {
    let handle = server.handle();
    std::thread::spawn(move || {
        let mut seen = 0;
        for sig in signals.forever() {
            if sig == signal_hook::consts::SIGHUP {
                match handle.reload_tls() {
                    Ok(true) => log::info!("SIGHUP: TLS certificate reloaded"),
                    Ok(false) => log::info!("SIGHUP: no TLS to reload"),
                    Err(e) => log::error!("SIGHUP: TLS certificate not reloaded (the old one stays): {e}"),
                }
                continue;
            }
            seen += 1;
            if seen > 1 {
                log::logger().flush();
                std::process::exit(130);
            }
            log::info!("signal {sig}: closing connections with 1001 and shutting down");
            handle.shutdown();
        }
    });
    server.wait().map_err(|e| e.to_string())
}
