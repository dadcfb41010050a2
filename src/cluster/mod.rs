//! The engine: what joins this node's reactors to the other nodes of a cluster.
//!
//! A facade over: the broker seam every engine plugs into (`broker`: [`Engine`],
//! [`ReactorEngine`], [`EngineHost`], [`EngineOp`]), the channel names every node agrees on
//! (`channels`), the bytes a message travels as (`wire`), and the Redis engine (`redis`, with
//! its connection `resp` and its scripts `history`). Does not touch: connections, or what a
//! delivered message means (the reactor core turns what an engine receives into deliveries
//! and answers).
//!
//! Without an engine (no `--redis`) a node runs alone: the in-memory engine is the reactors'
//! own fan-out, with no extra step, exactly as fast and dense as a node that never heard of
//! clusters.

pub(crate) mod broker;
pub(crate) mod channels;
pub(crate) mod history;
pub(crate) mod redis;
mod resp;
pub(crate) mod wire;

pub use self::broker::{
    ALL, Admission, Appended, Engine, EngineError, EngineHost, EngineOp, HistoryAnswer, Range, ReactorEngine,
};
#[doc(hidden)]
pub use self::channels::Channels;
pub use self::redis::RedisEngine;
