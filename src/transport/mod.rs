//! The seam between the reactor and a connection's byte stream.
//!
//! Owns: [`Stream`], what a connection reads from and writes to: a TCP socket, or (feature
//! `testing`) a simulated one whose reads and writes a seeded test makes short, refused
//! (`WouldBlock`) or reset at will. Does not touch: buffers (the caller lends them), framing,
//! or readiness (the loop's poll, or the simulation's driver, decides when to read and write).
//!
//! Everything the core does to a connection's bytes goes through here, so a transport with
//! state of its own (TLS) lives in one place, and the core can be driven with no socket at all.

#[cfg(feature = "testing")]
pub mod sim;
pub mod tls;

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

/// A connection's byte stream. A plain socket is all a connection holds (no per-connection
/// buffers here: idle connections cost nothing more than the file descriptor).
pub(crate) enum Stream {
    Tcp(TcpStream),
    #[cfg(feature = "testing")]
    Sim(sim::SimEnd),
}

impl Stream {
    /// Starts watching the stream for readiness (a simulated one is driven by its test).
    pub fn register(&mut self, registry: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => registry.register(s, token, interest),
            #[cfg(feature = "testing")]
            Stream::Sim(_) => Ok(()),
        }
    }

    pub fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => registry.deregister(s),
            #[cfg(feature = "testing")]
            Stream::Sim(_) => Ok(()),
        }
    }

    /// Half-closes the stream (FIN after the last queued byte).
    pub fn shutdown_write(&mut self) {
        match self {
            Stream::Tcp(s) => {
                let _ = s.shutdown(Shutdown::Write);
            }
            #[cfg(feature = "testing")]
            Stream::Sim(s) => s.shutdown_write(),
        }
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().ok(),
            #[cfg(feature = "testing")]
            Stream::Sim(s) => Some(s.peer_addr()),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            #[cfg(feature = "testing")]
            Stream::Sim(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            #[cfg(feature = "testing")]
            Stream::Sim(s) => s.write_vectored(&[IoSlice::new(buf)]),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            #[cfg(feature = "testing")]
            Stream::Sim(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
