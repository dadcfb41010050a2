//! A simulated connection for deterministic tests of the reactor (feature `testing`): the
//! test holds one end (`SimClient`), the reactor the other (`SimEnd`). Every read and write
//! the reactor makes is decided by a seeded generator: short, refused with `WouldBlock`, or
//! (when the test says so) failed with a reset.
//!
//! Owns: the bytes in flight each way and the fault choices. Does not touch: the reactor
//! (the test's driver calls it).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// A small deterministic generator (xorshift64*).
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Default)]
struct Pipe {
    to_server: VecDeque<u8>,
    to_client: Vec<u8>,
    client_closed: bool,
    server_closed: bool,
    reset: bool,
}

struct Shared {
    pipe: Mutex<Pipe>,
    faults: Mutex<Rng>,
    peer: SocketAddr,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The reactor's end.
pub struct SimEnd(Arc<Shared>);

/// The test's end.
#[derive(Clone)]
pub struct SimClient(Arc<Shared>);

/// A connected pair whose reactor-side faults come from `seed`.
pub fn pair(seed: u64, peer: SocketAddr) -> (SimEnd, SimClient) {
    let shared = Arc::new(Shared {
        pipe: Mutex::new(Pipe::default()),
        faults: Mutex::new(Rng::new(seed)),
        peer,
    });
    (SimEnd(shared.clone()), SimClient(shared))
}

impl SimEnd {
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut rng = lock(&self.0.faults);
        let mut p = lock(&self.0.pipe);
        if p.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if p.to_server.is_empty() {
            return if p.client_closed {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        if rng.chance(10) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = (1 + rng.below(p.to_server.len() as u64) as usize).min(buf.len());
        for (slot, b) in buf.iter_mut().zip(p.to_server.drain(..n)) {
            *slot = b;
        }
        Ok(n)
    }

    pub fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut rng = lock(&self.0.faults);
        let mut p = lock(&self.0.pipe);
        if p.reset || p.client_closed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Ok(0);
        }
        if rng.chance(15) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut take = 1 + rng.below(total as u64) as usize;
        let n = take;
        for b in bufs {
            let k = take.min(b.len());
            p.to_client.extend_from_slice(&b[..k]);
            take -= k;
            if take == 0 {
                break;
            }
        }
        Ok(n)
    }

    pub fn shutdown_write(&mut self) {
        lock(&self.0.pipe).server_closed = true;
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.0.peer
    }
}

impl SimClient {
    /// Bytes for the reactor to read.
    pub fn send(&self, bytes: &[u8]) {
        lock(&self.0.pipe).to_server.extend(bytes);
    }

    /// Everything the reactor wrote since the last call.
    pub fn take_received(&self) -> Vec<u8> {
        std::mem::take(&mut lock(&self.0.pipe).to_client)
    }

    /// The client's FIN.
    pub fn close(&self) {
        lock(&self.0.pipe).client_closed = true;
    }

    /// Every later read or write of the reactor fails with a reset.
    pub fn reset(&self) {
        lock(&self.0.pipe).reset = true;
    }

    /// The reactor has bytes of this client's to read (or its EOF, or its reset).
    pub fn readable(&self) -> bool {
        let p = lock(&self.0.pipe);
        !p.to_server.is_empty() || p.client_closed || p.reset
    }

    /// The reactor half-closed its side.
    pub fn server_closed(&self) -> bool {
        lock(&self.0.pipe).server_closed
    }
}
