//! Why a configuration cannot run.
//!
//! Owns: [`ConfigError`]. Does not touch: checking (`Config::validate`) or parsing.

use std::time::Duration;

use thiserror::Error;

/// Subscriptions are a bit set per connection, so at most this many event types.
pub const MAX_EVENT_TYPES: usize = 64;

/// A configuration that cannot run.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("workers must be between 1 and 255, got {0}")]
    Workers(usize),
    #[error("connection_timeout ({timeout:?}) must be longer than heartbeat_interval ({heartbeat:?})")]
    TimeoutNotAfterHeartbeat { heartbeat: Duration, timeout: Duration },
    #[error("at most {MAX_EVENT_TYPES} subscribable event types, got {0}")]
    TooManyEvents(usize),
    #[error("subscribable event types must be non-empty and unique: {0:?}")]
    BadEvent(String),
    #[error("ws_path must start with '/', got {0:?}")]
    WsPath(String),
    #[error(
        "admin_prefix must be a path like /api/v1 (2-128 characters of [A-Za-z0-9/._~-], starting with '/' and not ending with one), got {0:?}"
    )]
    AdminPrefix(String),
    #[error("node_id must be 1-64 characters from [A-Za-z0-9._-], got {0:?}")]
    NodeId(String),
    #[error("backend URL: {0}")]
    BackendUrl(String),
    #[error("forwarding: {0}")]
    Forward(String),
    #[error("redis URL: {0}")]
    RedisUrl(String),
    #[error("redis_prefix must be 1-64 characters from [A-Za-z0-9._-], got {0:?}")]
    RedisPrefix(String),
    #[error("JWT key: {0}")]
    Key(String),
    #[error("{name} must be between {min} and {max}, got {value}")]
    OutOfRange {
        name: &'static str,
        min: u64,
        max: u64,
        value: u64,
    },
    #[error("{name} must be at most {max_secs} seconds, got {value:?}")]
    TooLong {
        name: &'static str,
        max_secs: u64,
        value: Duration,
    },
}
