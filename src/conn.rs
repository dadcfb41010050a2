//! Per-connection state and the outbound queue.
//!
//! Owns: the compact `Conn` record kept in each reactor's slab, the on-demand input state, and
//! the outbound queue with its priority rule for control frames. Does not touch: the poll loop,
//! users, or protocol decisions. An idle open connection is just the `Conn` record: input and
//! output exist only while bytes are incomplete or pending.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use crate::transport::Stream;
use tungstenite::Bytes;

use tungstenite::protocol::frame::coding::OpCode;

use crate::ws::{Decoder, encode_frame};

/// No user (anonymous connection) / end of a user's connection list.
pub const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the HTTP upgrade request.
    Handshake,
    /// WebSocket open.
    Open,
    /// Close frame sent (or queued); waiting for the peer's close or the close timeout.
    Closing,
    /// HTTP response queued; the socket closes once it is written (input is discarded).
    Discarding,
    /// Plain HTTP (admin API, health, metrics), kept alive between requests; its state is
    /// beside the slab (`reactor::core::http`).
    Http,
}

pub mod flags {
    pub const ADMIN: u8 = 1;
    /// The client offered the `bearer` subprotocol.
    pub const BEARER: u8 = 1 << 1;
    /// Already in the reactor's dirty list.
    pub const DIRTY: u8 = 1 << 2;
    /// Holds a place in the global connection count.
    pub const COUNTED: u8 = 1 << 3;
    /// The peer's close frame arrived: drop once our output is written.
    pub const CLOSE_RECEIVED: u8 = 1 << 4;
    /// Our write side is shut down.
    pub const FIN_SENT: u8 = 1 << 5;
    /// The handler stored typed data for this connection (in the reactor's side table).
    pub const HAS_DATA: u8 = 1 << 6;
    /// Accepted on the admin listener: plain HTTP only, never an upgrade.
    pub const ADMIN_PORT: u8 = 1 << 7;
}

/// One connection. Kept small: this record is most of what an idle connection costs.
pub struct Conn {
    pub sock: Stream,
    pub generation: u32,
    pub phase: Phase,
    pub flags: u8,
    /// Close code sent or received (0: none yet), for `on_close`.
    pub close_code: u16,
    /// Index in the reactor's user table, or [`NONE`].
    pub user: u32,
    /// Next (newer) connection of the same user, or [`NONE`].
    pub next_of_user: u32,
    /// Tick of the last bytes received (or of accept).
    pub last_seen: u32,
    /// Tick of the last server ping (Open) or of entering Closing/Discarding.
    pub mark: u32,
    /// Unix seconds when the WebSocket opened.
    pub opened_at: u32,
    /// Data messages received.
    pub messages: u32,
    /// Bucket of the peer address in the per-IP admission table.
    pub ip_bucket: u16,
    /// Control frames received in the current one-second window, and that window (seconds
    /// since the reactor started, low 8 bits).
    pub control_count: u8,
    pub control_second: u8,
    pub output: Option<Box<OutQueue>>,
}

impl Conn {
    pub fn new(sock: Stream, generation: u32, now: u32, ip_bucket: u16) -> Self {
        Conn {
            sock,
            generation,
            phase: Phase::Handshake,
            flags: 0,
            close_code: 0,
            user: NONE,
            next_of_user: NONE,
            last_seen: now,
            mark: now,
            opened_at: 0,
            messages: 0,
            ip_bucket,
            control_count: 0,
            control_second: 0,
            output: None,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    pub fn queued_bytes(&self) -> usize {
        self.output.as_ref().map_or(0, |o| o.bytes)
    }
}

/// Hashes a slab index for the reactor's side tables (`Core::inputs`): one multiply by an odd
/// constant (a bijection, so no two indices collide), whose high bits (the table's control
/// bytes) also vary with every bit of the index.
#[derive(Default)]
pub struct SlotHasher(u64);

impl std::hash::Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A side table by slab index.
pub type BySlot<T> = std::collections::HashMap<usize, T, std::hash::BuildHasherDefault<SlotHasher>>;

/// Incomplete input: a partial HTTP request or frame, and fragment state.
#[derive(Default)]
pub struct Input {
    pub pending: Vec<u8>,
    pub decoder: Decoder,
}

/// Slices per vectored write when few chunks are queued, and when many are (at most
/// `IOV_MAX`, 1024 on Linux).
const FEW_SLICES: usize = 8;
const MANY_SLICES: usize = 512;

/// A queued chunk: bytes of our own (coalesced frames) or a shared, pre-encoded frame.
pub enum Segment {
    Owned(Vec<u8>),
    Shared(Bytes),
    /// Bytes that go before any backlog, in the order queued: the HTTP 101 response, then
    /// control frames (pong, ping) that jumped the backlog. Never discarded with the backlog.
    Urgent(Vec<u8>),
}

impl Segment {
    fn bytes(&self) -> &[u8] {
        match self {
            Segment::Owned(v) | Segment::Urgent(v) => v,
            Segment::Shared(b) => b,
        }
    }

    fn into_vec(self) -> Option<Vec<u8>> {
        match self {
            Segment::Owned(v) | Segment::Urgent(v) => Some(v),
            Segment::Shared(_) => None,
        }
    }
}

/// Bytes waiting for the socket. Frames never split across segments, so a segment boundary is a
/// frame boundary.
#[derive(Default)]
pub struct OutQueue {
    segs: VecDeque<Segment>,
    /// Bytes of the front segment already written.
    front_written: usize,
    /// Bytes not yet written.
    pub bytes: usize,
}

/// Reused queues and buffers, per reactor: pushing to an idle connection takes one from here
/// instead of allocating, and a drained queue goes back.
#[derive(Default)]
pub struct Pool {
    // Connections own `Box<OutQueue>`; recycling moves the box itself, never the queue.
    #[allow(clippy::vec_box)]
    queues: Vec<Box<OutQueue>>,
    /// Queues handed out and not yet returned, and the most at once since the last trim: the
    /// pool keeps as many queues as a recent burst needed (a broadcast to every connection
    /// allocates nothing once the pool has grown), then gives the excess back.
    outstanding: usize,
    peak: usize,
    vecs: Vec<Vec<u8>>,
    /// Capacity held by `vecs`, capped at `POOL_BYTES`.
    vec_bytes: usize,
}

const POOL_QUEUES: usize = 4096;
const POOL_BYTES: usize = 2 << 20;
const POOL_VEC_MAX_CAPACITY: usize = 64 * 1024;
/// What the pool keeps once the reactor has been idle for a trim period.
const IDLE_QUEUES: usize = 256;
const IDLE_BYTES: usize = 256 << 10;

impl Pool {
    pub fn queue(&mut self) -> Box<OutQueue> {
        self.outstanding += 1;
        self.peak = self.peak.max(self.outstanding);
        self.queues.pop().unwrap_or_default()
    }

    /// Frees pooled queues beyond `POOL_QUEUES` and the peak use since the last trim (called
    /// about once a second), so memory taken by one burst returns soon after it.
    ///
    /// A reactor that used no queue at all for a whole period is idle: the pool then keeps
    /// only `IDLE_QUEUES` queues and `IDLE_BYTES` of buffers, so an idle server does not hold a
    /// past burst's 2 MiB (the next burst allocates them again, a few microseconds).
    pub fn trim(&mut self) {
        let idle = self.peak == 0 && self.outstanding == 0;
        let keep = if idle { IDLE_QUEUES } else { POOL_QUEUES.max(self.peak) };
        if self.queues.len() > keep {
            self.queues.truncate(keep);
            self.queues.shrink_to(keep);
        }
        if idle {
            while self.vec_bytes > IDLE_BYTES {
                let Some(v) = self.vecs.pop() else { break };
                self.vec_bytes -= v.capacity();
            }
            self.vecs.shrink_to_fit();
        }
        self.peak = self.outstanding;
    }

    pub fn vec(&mut self) -> Vec<u8> {
        let v = self.vecs.pop().unwrap_or_default();
        self.vec_bytes -= v.capacity();
        v
    }

    /// Keeps `v` for reuse if the pool has room; frees it otherwise.
    fn put_vec(&mut self, mut v: Vec<u8>) {
        if v.capacity() <= POOL_VEC_MAX_CAPACITY && self.vec_bytes + v.capacity() <= POOL_BYTES {
            v.clear();
            self.vec_bytes += v.capacity();
            self.vecs.push(v);
        }
    }

    /// Takes back a drained (or abandoned) queue and its buffers.
    pub fn recycle(&mut self, mut q: Box<OutQueue>) {
        for seg in q.segs.drain(..) {
            if let Some(v) = seg.into_vec() {
                self.put_vec(v);
            }
        }
        q.front_written = 0;
        q.bytes = 0;
        self.outstanding = self.outstanding.saturating_sub(1);
        if self.queues.len() < POOL_QUEUES.max(self.peak) && q.segs.capacity() <= 64 {
            self.queues.push(q);
        }
    }
}

impl OutQueue {
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Appends our own bytes, coalescing with a trailing owned segment.
    pub fn push_owned(&mut self, data: &[u8], pool: &mut Pool) {
        if let Some(Segment::Owned(v)) = self.segs.back_mut() {
            v.extend_from_slice(data);
        } else {
            let mut v = pool.vec();
            v.extend_from_slice(data);
            self.segs.push_back(Segment::Owned(v));
        }
        self.bytes += data.len();
    }

    /// Encodes a server frame straight into the trailing owned segment. Returns its length.
    pub fn push_frame(&mut self, opcode: OpCode, payload: &[u8], pool: &mut Pool) -> usize {
        if !matches!(self.segs.back(), Some(Segment::Owned(_))) {
            self.segs.push_back(Segment::Owned(pool.vec()));
        }
        let Some(Segment::Owned(v)) = self.segs.back_mut() else {
            return 0;
        };
        let before = v.len();
        encode_frame(v, opcode, payload);
        let added = v.len() - before;
        self.bytes += added;
        added
    }

    /// Appends a shared frame (a refcount, no copy).
    pub fn push_shared(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.segs.push_back(Segment::Shared(frame));
    }

    /// Inserts a control frame at the next frame boundary, ahead of any backlog but behind
    /// earlier control frames (pongs leave in the order their pings came).
    pub fn push_urgent(&mut self, frame: &[u8], pool: &mut Pool) {
        let mut at = usize::from(self.front_written > 0).min(self.segs.len());
        while matches!(self.segs.get(at), Some(Segment::Urgent(_))) {
            at += 1;
        }
        self.bytes += frame.len();
        if let Some(Segment::Urgent(v)) = at.checked_sub(1).and_then(|i| self.segs.get_mut(i)) {
            v.extend_from_slice(frame);
            return;
        }
        let mut v = pool.vec();
        v.extend_from_slice(frame);
        self.segs.insert(at, Segment::Urgent(v));
    }

    /// Drops the data backlog not yet started, keeping a partially written front segment (so
    /// the stream stays at a frame boundary) and the urgent run behind it (the 101 response
    /// and control frames). Returns the bytes dropped.
    pub fn discard_backlog(&mut self, pool: &mut Pool) -> usize {
        let mut keep = usize::from(self.front_written > 0).min(self.segs.len());
        while matches!(self.segs.get(keep), Some(Segment::Urgent(_))) {
            keep += 1;
        }
        let mut dropped = 0;
        for seg in self.segs.drain(keep..) {
            dropped += seg.bytes().len();
            if let Some(v) = seg.into_vec() {
                pool.put_vec(v);
            }
        }
        self.bytes -= dropped;
        dropped
    }

    /// Writes as much as the socket takes with one vectored write per call, looping until
    /// `WouldBlock` or empty. Returns bytes written; `Err` only for real socket errors.
    pub fn write_to(&mut self, sock: &mut impl Write, pool: &mut Pool) -> io::Result<usize> {
        let mut total = 0;
        while self.bytes > 0 {
            // A burst of publishes leaves hundreds of small frames queued: one call takes up to
            // `MANY_SLICES` of them (a syscall per 64 frames cost 4x the writes at 200). The
            // common case, a frame or two, does not pay for building the large array.
            let written = if self.segs.len() <= FEW_SLICES {
                self.write_vectored::<FEW_SLICES>(sock)
            } else {
                self.write_vectored::<MANY_SLICES>(sock)
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    total += written;
                    self.advance(written, pool);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    fn write_vectored<const N: usize>(&self, sock: &mut impl Write) -> io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); N];
        let mut n = 0;
        for (i, seg) in self.segs.iter().take(N).enumerate() {
            let b = seg.bytes();
            slices[n] = IoSlice::new(if i == 0 { &b[self.front_written..] } else { b });
            n += 1;
        }
        sock.write_vectored(&slices[..n])
    }

    fn advance(&mut self, mut written: usize, pool: &mut Pool) {
        self.bytes -= written;
        while written > 0 {
            let Some(front) = self.segs.front() else { break };
            let left = front.bytes().len() - self.front_written;
            if written < left {
                self.front_written += written;
                return;
            }
            written -= left;
            self.front_written = 0;
            if let Some(v) = self.segs.pop_front().and_then(Segment::into_vec) {
                pool.put_vec(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `limit` bytes per call, then `WouldBlock` after `budget`.
    struct Trickle {
        out: Vec<u8>,
        limit: usize,
        budget: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.limit).min(self.budget);
            self.out.extend_from_slice(&buf[..n]);
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn order_and_partial_writes() {
        let mut pool = Pool::default();
        let mut q = OutQueue::default();
        q.push_owned(b"ab", &mut pool);
        q.push_owned(b"cd", &mut pool);
        q.push_shared(Bytes::from_static(b"EF"));
        q.push_owned(b"gh", &mut pool);
        let mut w = Trickle {
            out: vec![],
            limit: 3,
            budget: 5,
        };
        assert_eq!(q.write_to(&mut w, &mut pool).unwrap(), 5);
        assert_eq!(q.bytes, 3);
        w.budget = 100;
        q.write_to(&mut w, &mut pool).unwrap();
        assert_eq!(w.out, b"abcdEFgh");
        assert!(q.is_empty());
    }

    #[test]
    fn urgent_goes_to_next_frame_boundary() {
        let mut pool = Pool::default();
        let mut q = OutQueue::default();
        q.push_shared(Bytes::from_static(b"1111"));
        q.push_shared(Bytes::from_static(b"2222"));
        let mut w = Trickle {
            out: vec![],
            limit: 2,
            budget: 2,
        };
        q.write_to(&mut w, &mut pool).unwrap();
        q.push_urgent(b"P", &mut pool);
        w.budget = 100;
        q.write_to(&mut w, &mut pool).unwrap();
        assert_eq!(w.out, b"1111P2222");

        let mut q = OutQueue::default();
        q.push_shared(Bytes::from_static(b"1111"));
        q.push_urgent(b"P", &mut pool);
        let mut w = Trickle {
            out: vec![],
            limit: 100,
            budget: 100,
        };
        q.write_to(&mut w, &mut pool).unwrap();
        assert_eq!(w.out, b"P1111");
    }

    #[test]
    fn discard_backlog_keeps_partial_front() {
        let mut pool = Pool::default();
        let mut q = OutQueue::default();
        q.push_shared(Bytes::from_static(b"1111"));
        q.push_shared(Bytes::from_static(b"2222"));
        let mut w = Trickle {
            out: vec![],
            limit: 100,
            budget: 1,
        };
        q.write_to(&mut w, &mut pool).unwrap();
        assert_eq!(q.discard_backlog(&mut pool), 4);
        q.push_urgent(b"C", &mut pool);
        w.budget = 100;
        q.write_to(&mut w, &mut pool).unwrap();
        assert_eq!(w.out, b"1111C");
    }

    #[test]
    fn the_pool_keeps_what_a_burst_needed_then_trims() {
        let mut pool = Pool::default();
        let n = POOL_QUEUES + 1000;
        let taken: Vec<_> = (0..n).map(|_| pool.queue()).collect();
        for q in taken {
            pool.recycle(q);
        }
        assert_eq!(
            pool.queues.len(),
            n,
            "a second burst of the same size allocates nothing"
        );
        pool.trim();
        assert_eq!(pool.queues.len(), n, "still within the last period's peak");
        let busy = pool.queue();
        pool.trim();
        assert_eq!(pool.queues.len(), POOL_QUEUES, "a quieter period gives the excess back");
        pool.recycle(busy);
        pool.trim();
        assert_eq!(
            pool.queues.len(),
            POOL_QUEUES,
            "the period a queue was out in is not idle"
        );
        let full: Vec<_> = (0..64)
            .map(|_| {
                let mut q = pool.queue();
                q.push_owned(&[7; 16 << 10], &mut pool);
                q
            })
            .collect();
        for q in full {
            pool.recycle(q);
        }
        assert!(pool.vec_bytes > IDLE_BYTES);
        pool.trim();
        pool.trim();
        assert_eq!(pool.queues.len(), IDLE_QUEUES, "a whole idle period: the idle floor");
        assert!(pool.vec_bytes <= IDLE_BYTES, "and its buffers too");
    }

    #[test]
    fn urgent_bytes_survive_a_discard_and_keep_their_order() {
        let mut pool = Pool::default();
        let mut q = OutQueue::default();
        q.push_urgent(b"101 ", &mut pool);
        q.push_owned(b"hello ", &mut pool);
        q.push_urgent(b"pong ", &mut pool);
        q.push_shared(Bytes::from_static(b"backlog"));
        assert_eq!(q.discard_backlog(&mut pool), 13);
        q.push_owned(b"close", &mut pool);
        let mut w = Trickle {
            out: vec![],
            limit: 100,
            budget: 100,
        };
        q.write_to(&mut w, &mut pool).unwrap();
        assert_eq!(w.out, b"101 pong close");
    }
}

#[cfg(test)]
mod size_tests {
    /// The idle-connection budget starts here: the slab entry.
    #[test]
    fn conn_record_stays_small() {
        let size = std::mem::size_of::<slab::Slab<super::Conn>>();
        let entry = std::mem::size_of::<super::Conn>();
        // mio's IoSource carries an 8-byte selector id only with debug assertions (which also
        // moves the socket to 8-byte alignment); the `testing` feature's simulated stream makes
        // `Stream` 16 bytes instead of the socket's 4.
        let budget = match (cfg!(debug_assertions), cfg!(feature = "testing")) {
            (false, false) => 48,
            (false, true) => 64,
            (true, _) => 72,
        };
        assert!(entry <= budget, "Conn grew to {entry} bytes (slab {size})");
    }
}
