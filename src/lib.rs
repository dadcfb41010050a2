//! wsedge: a WebSocket edge server and embeddable reactor library.
//!
//! One reactor thread per core (`mio`), each with its own `SO_REUSEPORT` listener, slab of
//! connections, timer wheel and user table; a user's connections live on one home reactor so
//! per-user limits and rate limits need no locks. Frames are decoded with tungstenite's frame
//! layer into one per-reactor buffer; idle connections hold no buffers.
//!
//! ```no_run
//! use wsedge::{Config, JwtConfig, AuthMode, Server, app::ProtocolApp};
//! let config = Config { auth: AuthMode::Jwt(JwtConfig::hs256("secret")), ..Config::default() };
//! let server = Server::start(config, ProtocolApp::default()).expect("start");
//! println!("listening on {}", server.local_addr());
//! server.wait().expect("no reactor died");
//! ```
//!
//! Public modules: `config` (settings), `server` (threads, handle, reactors on your threads),
//! `handler` (the shared embedding contract), `embed` (per-reactor handlers, backpressure, own
//! sources and timers, asks that answer later), `protocol` (the JSON envelopes), `auth` (JWT),
//! `limits` (rate limit, admission), `metrics` (counters), `app` (built-in apps), `cluster`
//! (the engine that joins nodes: the contract, channel names, the Redis engine). Internal
//! ones, not part of the API: `reactor` (poll loop and connection state machine), `conn`
//! (per-connection state, outbound queue), `http` (request parser, responses), `ws` (frames),
//! `timer` (wheel), `admin` (the admin HTTP API as plans), `ask` (what reactors are asked),
//! `outgoing` (server messages encoded once). The types the API needs from them (`Target`,
//! `Census`, `ConnectionInfo`, `Violation`, `RoomRefusal`, `RefreshError`) are re-exported
//! here.

mod admin;
pub mod app;
pub(crate) mod ask;
pub mod auth;
pub(crate) mod bridge;
pub(crate) mod callback;
pub mod client;
pub mod cluster;
pub mod config;
pub(crate) mod conn;
pub mod embed;
pub(crate) mod handle;
pub mod handler;
pub(crate) mod history;
pub(crate) mod http;
pub(crate) mod limits;
pub mod metrics;
pub(crate) mod outgoing;
pub(crate) mod protocol;
pub(crate) mod reactor;
pub(crate) mod rooms;
pub(crate) mod runtime;
pub mod server;
pub(crate) mod timer;
pub(crate) mod topology;
pub(crate) mod transport;
pub(crate) mod ws;

pub use ask::{Census, ConnectionInfo, Target};
pub use config::{AuthMode, Config, ConfigError, JwtConfig, JwtKey, LimitPolicy};
pub use embed::{
    HandlerFactory, ReactorCtx, ReactorHandler, Reply, SendStatus, SourceId, Ticket, TimerId, each_reactor, per_reactor,
};
pub use handler::{Closed, Ctx, Handler, RefreshError, Refusal, RoomRefusal};
pub use history::{Position, RecoverItem, RecoveryOutcome};
pub use metrics::Snapshot;
/// The `mio` this crate runs on: register your own sources with [`ReactorCtx::register`].
pub use mio;
pub use protocol::{ErrorCode, Timestamp};
pub use server::{
    Delivery, HandleError, Prepared, ReactorDriver, ReactorRunner, RunningServer, Server, ServerError, ServerHandle,
};
pub use transport::tls::TlsError;
/// The `uuid` crate this one uses: connection and message ids are [`uuid::Uuid`]s.
pub use uuid;
pub use ws::Violation;
/// A masked client frame (for clients and load generators; servers never mask).
pub use ws::frame::encode_client_frame;

/// Internals exposed to wsedge's own fuzz targets and tests (feature `testing`; not a stable
/// API): the hand-driven reactor, the admin router, room-name globs.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing {
    pub use crate::bridge::fuzz_response as backend_response;
    pub use crate::cluster::wire::inspect_for_testing as inspect_cluster_payload;
    pub use crate::handle::respond_for_testing as admin_response;
    /// Channel names of a cluster with this prefix and node.
    pub fn cluster_channels(prefix: &str, node: &str) -> crate::cluster::Channels {
        crate::cluster::Channels::new(prefix, node)
    }
    pub use crate::conn::{OutQueue, Pool};
    pub use crate::http::upgrade::{Parsed, parse as parse_upgrade};
    pub use crate::protocol::{IdGen, data_as, parse_client_message, write_envelope};
    pub use crate::reactor::core::with_position;
    pub use crate::reactor::harness::Harness;
    pub use crate::rooms::{glob_match, valid_room_name};
    pub use crate::timer::TimerWheel;
    pub use crate::transport::sim::{Rng, SimClient};
    pub use crate::transport::tls::fuzzing as tls;
    pub use crate::ws::{Decoder, encode_frame};
}

/// The README's examples, compiled as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
#[doc = include_str!("docs/protocol.md")]
#[cfg(doctest)]
pub struct ProtocolDoctests;
#[doc = include_str!("docs/backend.md")]
#[cfg(doctest)]
pub struct BackendDoctests;
#[doc = include_str!("docs/history.md")]
#[cfg(doctest)]
pub struct HistoryDoctests;
#[doc = include_str!("docs/clients.md")]
#[cfg(doctest)]
pub struct ClientsDoctests;
#[doc = include_str!("docs/admin-api.md")]
#[cfg(doctest)]
pub struct AdminApiDoctests;
#[doc = include_str!("docs/configuration.md")]
#[cfg(doctest)]
pub struct ConfigurationDoctests;
#[doc = include_str!("docs/tls-and-compression.md")]
#[cfg(doctest)]
pub struct TlsAndCompressionDoctests;
#[doc = include_str!("docs/cluster.md")]
#[cfg(doctest)]
pub struct ClusterDoctests;
#[doc = include_str!("docs/embedding.md")]
#[cfg(doctest)]
pub struct EmbeddingDoctests;
#[doc = include_str!("docs/architecture.md")]
#[cfg(doctest)]
pub struct ArchitectureDoctests;
#[doc = include_str!("docs/benchmarks.md")]
#[cfg(doctest)]
pub struct BenchmarksDoctests;
