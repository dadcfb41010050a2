//! What the reactor's connections speak beside plain WebSocket: TLS sessions and
//! permessage-deflate, kept in side tables so a connection that uses neither pays nothing.
//!
//! Owns: the TLS sessions by slot, the buffers TLS connections borrow, the deflate slots and
//! the reactor's one compressor and decompressor. Does not touch: the TLS or deflate codecs
//! themselves (`transport::tls`, `ws::deflate`) or the frames they carry.

use std::collections::HashMap;

use crate::reactor::slots::SlotSet;
use crate::transport::tls::{TlsSession, TlsShared};
use crate::ws::deflate::{Deflater, Inflater};

#[derive(Default)]
pub(crate) struct Codecs {
    /// TLS sessions of the connections of TLS listeners (plain connections have none).
    pub(crate) tls_sessions: HashMap<usize, TlsSession>,
    /// Buffers this reactor's TLS connections borrow while they read and write.
    pub(crate) tls_shared: TlsShared,
    /// Slots of connections that negotiated permessage-deflate (a bit each: nothing in `Conn`).
    pub(crate) deflate_slots: SlotSet,
    /// The reactor's compressor and decompressor (made on first use; reset per message).
    pub(crate) deflater: Option<Box<Deflater>>,
    pub(crate) inflater: Option<Box<Inflater>>,
}

impl Codecs {
    /// True if the connection at `idx` speaks TLS.
    pub(crate) fn is_tls(&self, idx: usize) -> bool {
        !self.tls_sessions.is_empty() && self.tls_sessions.contains_key(&idx)
    }

    /// True if the connection at `idx` negotiated permessage-deflate.
    pub(crate) fn deflates(&self, idx: usize) -> bool {
        !self.deflate_slots.is_empty() && self.deflate_slots.contains(idx)
    }
}
