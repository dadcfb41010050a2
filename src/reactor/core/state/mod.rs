//! The core's records: the types its fields hold, each with its own methods. None of them
//! names `Core`, so the core's operations (the sibling modules' `impl Core` blocks) sit above
//! them and the core's struct holds them without importing any operation.

pub(crate) mod asks;
pub(crate) mod channels;
pub(crate) mod clock;
pub(crate) mod cluster;
pub(crate) mod codecs;
pub(crate) mod embedder;
pub(crate) mod fanout;
pub(crate) mod http;
pub(crate) mod hub;
pub(crate) mod pending;
pub(crate) mod rpc;
pub(crate) mod timers;
