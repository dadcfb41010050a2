//! WebSocket frames (RFC 6455): the client-frame decoder and server-frame encoders.
//!
//! Owns: frame validity rules, unmasking, fragment reassembly, UTF-8 validation, close payloads.
//! Does not touch: sockets, buffers of the reactor, or what messages mean.

pub mod deflate;
pub mod frame;

pub use frame::{Decoder, Event, PING_FRAME, Violation, encode_close, encode_frame};
