//! Restarts that refuse no one: a new process takes over the running one's listening sockets
//! over a Unix socket (`--handover-socket PATH`), as nginx and sozu do, and the old one drains.
//!
//! Owns: the handover conversation and the thread that waits for a successor. Does not touch:
//! the reactors (the old process drains with `ServerHandle::shutdown`, exactly as on SIGTERM;
//! the new one serves the inherited sockets like its own).
//!
//! The sockets are passed, not reopened: they are the same kernel objects, so connections
//! already waiting in their accept queues are accepted by the successor, and no moment exists
//! when the port is closed. The conversation: the successor connects and writes
//! `wsedge-handover 1\n`; the predecessor answers `main=N admin=M\n` with the N + M listening
//! sockets attached (SCM_RIGHTS); the successor registers them and writes `ready\n`; the
//! predecessor then stops accepting and closes its connections in batches (1001) over
//! `--drain-window`, and exits. The successor listens on the path for the next one.
//!
//! Only the same user may take part: the socket is made 0600 in a directory that only this
//! user can write, each side checks the other's uid (SO_PEERCRED) before saying anything,
//! every read is bounded, and a successor checks that what it received are TCP listeners on
//! the addresses it was told to serve.

use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

use crate::handle::ServerHandle;

const HELLO: &[u8] = b"wsedge-handover 1\n";
/// More listening sockets than any predecessor has (one per reactor, main and admin).
const MAX_SOCKETS: usize = 512;
/// How long either side waits for the other.
const WAIT: Duration = Duration::from_secs(10);
/// How long a connected peer has to say who it is: a successor writes its hello at once, and
/// peers are served one at a time (only one may get the sockets), so a silent one must not
/// hold up the next for long.
const HELLO_WAIT: Duration = Duration::from_secs(1);

/// The other end of `conn` runs as this process's user, or the conversation stops here.
fn same_user(conn: &UnixStream, who: &str) -> io::Result<()> {
    let peer = rustix::net::sockopt::socket_peercred(conn)?;
    let me = rustix::process::geteuid();
    if peer.uid != me {
        return Err(bad(&format!(
            "{who} runs as uid {}, not this server's uid {}: refused",
            peer.uid.as_raw(),
            me.as_raw()
        )));
    }
    Ok(())
}

/// The socket's directory must be one only this user can write (else another user could put
/// their own socket at the path first).
fn private_directory(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let st = rustix::fs::stat(dir)?;
    let me = rustix::process::geteuid().as_raw();
    if st.st_uid != me || st.st_mode & 0o022 != 0 {
        return Err(bad(&format!(
            "{} must be a directory owned by this user and writable by no one else (uid {}, mode {:o})",
            dir.display(),
            st.st_uid,
            st.st_mode & 0o7777
        )));
    }
    Ok(())
}

/// A received descriptor is a listening TCP socket on `expected` (its port too, unless that is
/// 0: the port was the predecessor's choice).
fn listener_on(l: &TcpListener, expected: std::net::SocketAddr) -> io::Result<()> {
    let listening = rustix::net::sockopt::socket_acceptconn(l)?;
    let kind = rustix::net::sockopt::socket_type(l)?;
    let addr = l.local_addr()?;
    let port_ok = expected.port() == 0 || expected.port() == addr.port();
    if !listening || kind != rustix::net::SocketType::STREAM || addr.ip() != expected.ip() || !port_ok {
        return Err(bad(&format!(
            "the previous process passed {addr} (listening: {listening}), not a TCP listener on {expected}: refused"
        )));
    }
    Ok(())
}

/// Listening sockets taken over from a predecessor, and the line to tell it we are ready.
pub(crate) struct Inherited {
    pub main: Vec<TcpListener>,
    pub admin: Vec<TcpListener>,
    predecessor: UnixStream,
}

impl Inherited {
    /// The sockets are registered: the predecessor may stop accepting.
    pub fn ready(mut self) {
        if let Err(e) = self.predecessor.write_all(b"ready\n") {
            log::warn!("handover: could not tell the previous process to drain: {e}");
        }
    }
}

/// Asks a process serving `path` for its listening sockets, which must be listeners on `main`
/// and `admin` (the addresses this server is configured for). `Ok(None)`: nobody serves it (a
/// first start).
pub(crate) fn take_over(
    path: &Path,
    main_addr: std::net::SocketAddr,
    admin_addr: Option<std::net::SocketAddr>,
) -> io::Result<Option<Inherited>> {
    private_directory(path)?;
    let mut s = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => return Ok(None),
        Err(e) => return Err(e),
    };
    same_user(&s, "the process serving the handover socket")?;
    s.set_read_timeout(Some(WAIT))?;
    s.set_write_timeout(Some(WAIT))?;
    s.write_all(HELLO)?;
    let mut line = [0u8; 64];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        &s,
        &mut [IoSliceMut::new(&mut line)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    let text = std::str::from_utf8(&line[..got.bytes]).map_err(|_| bad("answer is not text"))?;
    let (main, admin) = counts(text).ok_or_else(|| bad("answer is not main=N admin=M"))?;
    if fds.len() != main + admin || main == 0 {
        return Err(bad("the socket count does not match the answer"));
    }
    let mut listeners: Vec<TcpListener> = fds.into_iter().map(TcpListener::from).collect();
    for (i, l) in listeners.iter().enumerate() {
        match (i < main, admin_addr) {
            (true, _) => listener_on(l, main_addr)?,
            (false, Some(a)) => listener_on(l, a)?,
            (false, None) => return Err(bad("the previous process passed admin listeners; this one has none")),
        }
        l.set_nonblocking(true)?;
    }
    let admin = listeners.split_off(main);
    Ok(Some(Inherited {
        main: listeners,
        admin,
        predecessor: s,
    }))
}

fn counts(text: &str) -> Option<(usize, usize)> {
    let text = text.trim_end();
    let (m, a) = text.split_once(' ')?;
    Some((
        m.strip_prefix("main=")?.parse().ok()?,
        a.strip_prefix("admin=")?.parse().ok()?,
    ))
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("handover: {what}"))
}

/// Serves `path` for a successor on a thread of its own: hands it `main` and `admin` (this
/// process's listening sockets), and once it is ready, drains this server.
pub(crate) fn serve(
    path: PathBuf,
    main: Vec<TcpListener>,
    admin: Vec<TcpListener>,
    handle: ServerHandle,
) -> io::Result<()> {
    private_directory(&path)?;
    // A path left by a process that is gone (or the predecessor we just took over from).
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    // Whatever the umask: only this user may connect (each side also checks the other's uid).
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("wsedge-handover".into())
        .spawn(move || {
            if serve_until_taken(&listener, &main, &admin) {
                log::info!("handover: a new process took over the listening sockets; draining");
                handle.shutdown();
            }
        })?;
    Ok(())
}

/// Serves peers one at a time until one takes the sockets (true) or the listener fails.
fn serve_until_taken(listener: &UnixListener, main: &[TcpListener], admin: &[TcpListener]) -> bool {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        match hand_over(conn, main, admin) {
            Ok(()) => return true,
            Err(e) => log::warn!("handover: {e}; still serving"),
        }
    }
    false
}

fn hand_over(mut conn: UnixStream, main: &[TcpListener], admin: &[TcpListener]) -> io::Result<()> {
    same_user(&conn, "a process asking for the listening sockets")?;
    conn.set_read_timeout(Some(HELLO_WAIT))?;
    conn.set_write_timeout(Some(WAIT))?;
    let mut hello = [0u8; HELLO.len()];
    conn.read_exact(&mut hello)
        .map_err(|e| bad(&format!("no hello within {HELLO_WAIT:?}: {e}")))?;
    if hello != HELLO {
        return Err(bad("not a wsedge successor"));
    }
    conn.set_read_timeout(Some(WAIT))?;
    let fds: Vec<_> = main.iter().chain(admin).map(AsFd::as_fd).collect();
    let text = format!("main={} admin={}\n", main.len(), admin.len());
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(bad("too many sockets to pass"));
    }
    rustix::net::sendmsg(
        &conn,
        &[IoSlice::new(text.as_bytes())],
        &mut control,
        SendFlags::empty(),
    )?;
    let mut line = String::new();
    BufReader::new((&conn).take(16)).read_line(&mut line)?;
    if line != "ready\n" {
        return Err(bad("the successor did not get ready"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_pass_to_a_successor_and_keep_their_queue() {
        let dir = std::env::temp_dir().join(format!("wsedge-handover-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("h.sock");
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(
            take_over(&path, any, None).unwrap().is_none(),
            "nobody to take over from"
        );
        let main = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = main.local_addr().unwrap();
        // A connection already waiting in the accept queue before the handover.
        let _early = std::net::TcpStream::connect(addr).unwrap();
        let listener = UnixListener::bind(&path).unwrap();
        let giver = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            hand_over(conn, &[main], &[])
        });
        let inherited = take_over(&path, addr, None).unwrap().expect("taken over");
        assert_eq!((inherited.main.len(), inherited.admin.len()), (1, 0));
        let l = &inherited.main[0];
        assert_eq!(l.local_addr().unwrap(), addr);
        l.set_nonblocking(false).unwrap();
        let (_, _) = l.accept().expect("the waiting connection is still there");
        inherited.ready();
        giver.join().unwrap().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_stranger_on_the_socket_gets_nothing() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let main = TcpListener::bind("127.0.0.1:0").unwrap();
        b.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let err = hand_over(a, &[main], &[]).unwrap_err();
        assert!(err.to_string().contains("not a wsedge successor"), "{err}");
        let mut got = Vec::new();
        let _ = b.read_to_end(&mut got);
        assert!(got.is_empty(), "no sockets, no answer");
        // A successor that never says it is ready does not make the server drain.
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(HELLO).unwrap();
        drop(b.try_clone().unwrap());
        let main = TcpListener::bind("127.0.0.1:0").unwrap();
        let giver = std::thread::spawn(move || hand_over(a, &[main], &[]));
        let mut line = [0u8; 64];
        let _ = b.read(&mut line).unwrap();
        drop(b);
        assert!(giver.join().unwrap().is_err());
    }

    #[test]
    fn a_silent_peer_does_not_hold_up_the_successor() {
        let dir = private_dir("silent");
        let path = dir.join("h.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let main = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = main.local_addr().unwrap();
        let giver = std::thread::spawn(move || serve_until_taken(&listener, &[main], &[]));
        // Connected first, says nothing, stays connected.
        let _silent = UnixStream::connect(&path).unwrap();
        let inherited = take_over(&path, addr, None)
            .unwrap()
            .expect("taken over despite the silent peer");
        inherited.ready();
        assert!(giver.join().unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A directory of this test's own, 0755.
    fn private_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wsedge-handover-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        dir
    }

    #[test]
    fn what_is_passed_must_be_a_listener_on_the_configured_address() {
        let dir = private_dir("addr");
        let path = dir.join("h.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let giver = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            hand_over(conn, &[other], &[])
        });
        let mine: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let err = take_over(&path, mine, None).err().expect("another port is refused");
        assert!(err.to_string().contains("not a TCP listener on 127.0.0.1:1"), "{err}");
        drop(giver);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let dir = private_dir("open");
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let err = take_over(&dir.join("h.sock"), any, None).err().expect("refused");
        assert!(err.to_string().contains("writable by no one else"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `nobody` (another uid) tries the socket, from Python: what it gets, as Python prints it.
    fn as_nobody(path: &Path) -> String {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test needs root, to run a client as another uid (nobody)"
        );
        let script = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect(sys.argv[1])\nexcept \
                      OSError as e:\n print('connect:', e.errno); sys.exit()\ntry:\n \
                      s.sendall(b'wsedge-handover 1\\n')\n d,anc,_,_=s.recvmsg(64,socket.CMSG_SPACE(4*64))\n \
                      print('bytes', len(d), 'fds', len(anc))\nexcept OSError as e:\n print('closed', e.errno)";
        let out = std::process::Command::new("runuser")
            .args(["-u", "nobody", "--", "python3", "-c", script])
            .arg(path)
            .output()
            .expect("runuser (util-linux) and python3 are installed");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn another_user_gets_no_socket() {
        let dir = private_dir("uid");
        let path = dir.join("h.sock");
        let main = TcpListener::bind("127.0.0.1:0").unwrap();
        let listener = UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        // 0600: nobody cannot even connect.
        assert_eq!(as_nobody(&path), "connect: 13");
        // Even if the file is opened to everyone, the peer's uid is checked before a byte is said.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let giver = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            hand_over(conn, &[main], &[])
        });
        let got = as_nobody(&path);
        assert!(
            got == "bytes 0 fds 0" || got.starts_with("closed"),
            "no answer, no sockets: {got}"
        );
        let err = giver.join().unwrap().unwrap_err();
        assert!(err.to_string().contains("not this server's uid"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
