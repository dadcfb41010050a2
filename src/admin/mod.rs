//! The embedded admin HTTP handler: health, readiness, Prometheus metrics and the `/ws/*` admin
//! API (stats, connection info, disconnects, messages to users/events/rooms/everyone, room
//! membership, the seed's event helpers).
//!
//! Owns: routing, admin authorization (JWT with `role: "admin"`), request bodies and JSON
//! responses. Does not touch: reactors directly. It runs on its own small thread pool and uses
//! `ServerHandle`, so a slow admin client or a query that waits for every reactor never blocks a
//! reactor; reactors hand it sockets whose request is not a WebSocket upgrade.

mod prometheus;
mod routes;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use crate::http::upgrade::{self, Parsed};
use crate::http::write_response;
use crate::server::ServerHandle;

/// A connection for the admin pool: the socket and the bytes already read from it.
pub(crate) struct AdminJob {
    pub stream: TcpStream,
    pub bytes: Vec<u8>,
}

/// Threads serving admin requests.
const ADMIN_THREADS: usize = 2;
/// Per-request socket timeouts on admin connections.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A response about to be written.
pub(crate) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: value.to_string().into_bytes(),
        }
    }

    /// `{"status": "success", "data": data}` (the seed's admin response shape).
    pub fn success(data: serde_json::Value) -> Self {
        Self::json(200, &serde_json::json!({ "status": "success", "data": data }))
    }

    /// `{"status": "error", "code": status, "detail": detail}`.
    pub fn error(status: u16, detail: &str) -> Self {
        Self::json(
            status,
            &serde_json::json!({ "status": "error", "code": status, "detail": detail }),
        )
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// Starts the admin worker threads; they stop when the server has stopped.
pub(crate) fn spawn_pool(handle: ServerHandle, rx: mpsc::Receiver<AdminJob>) -> std::io::Result<()> {
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..ADMIN_THREADS {
        let (rx, handle) = (rx.clone(), handle.clone());
        std::thread::Builder::new()
            .name(format!("wsedge-admin-{i}"))
            .spawn(move || {
                loop {
                    let job = {
                        let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
                        rx.recv_timeout(Duration::from_secs(1))
                    };
                    match job {
                        Ok(job) => serve(&handle, job),
                        Err(mpsc::RecvTimeoutError::Timeout) if !handle.is_stopped() => {}
                        Err(_) => return,
                    }
                }
            })?;
    }
    Ok(())
}

/// Serves `--admin-listen`: accepts and queues connections for the pool until the server stops.
pub(crate) fn spawn_listener(
    listener: TcpListener,
    tx: mpsc::SyncSender<AdminJob>,
    handle: ServerHandle,
) -> std::io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    // Blocking accept: an idle admin listener costs no wakeups. The last reactor to stop
    // connects once to wake it (see `Runtime::admin_addr`).
    std::thread::Builder::new()
        .name("wsedge-admin-listen".into())
        .spawn(move || {
            for stream in listener.incoming() {
                if handle.is_stopped() {
                    return;
                }
                match stream {
                    Ok(stream) => {
                        if tx
                            .send(AdminJob {
                                stream,
                                bytes: Vec::new(),
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        log::warn!("admin accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(addr)
}

/// What the bytes of a request read so far call for.
pub(crate) enum Decision {
    NeedMore,
    Respond(Response),
}

/// Parses the request in `bytes` and, once it is complete, routes it.
pub(crate) fn decide(handle: &ServerHandle, bytes: &[u8]) -> Decision {
    let cfg = handle.config();
    match upgrade::parse(bytes, cfg.max_request_bytes, cfg.ws_path.as_deref()) {
        Parsed::Partial => Decision::NeedMore,
        Parsed::Reject(r) => Decision::Respond(Response::error(r.status, r.message)),
        Parsed::Upgrade(..) => Decision::Respond(Response::error(
            400,
            "WebSocket upgrades are served on the main listener",
        )),
        Parsed::Plain(req) => {
            if req.content_length > cfg.admin_max_body {
                return Decision::Respond(Response::error(413, "request body too large"));
            }
            let want = req.head_len + req.content_length;
            if bytes.len() < want {
                // Authorization first: nobody without an admin token makes us wait for a body.
                return match routes::refuse_early(handle, &req) {
                    Some(r) => Decision::Respond(r),
                    None => Decision::NeedMore,
                };
            }
            Decision::Respond(routes::route(handle, &req, &bytes[req.head_len..want]))
        }
    }
}

/// The full HTTP response to `/health`, `/ready` or `/metrics`, which need no reactor to
/// answer, so the reactor that read the request writes it (health checks never queue behind
/// slow admin clients); `None` for every other request.
pub(crate) fn immediate_response(handle: &ServerHandle, req: &upgrade::PlainRequest) -> Option<Vec<u8>> {
    if !routes::is_immediate(req) {
        return None;
    }
    let r = routes::route(handle, req, &[]);
    let mut out = Vec::with_capacity(r.body.len() + 256);
    let headers: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    write_response(&mut out, r.status, &headers, r.content_type, &r.body);
    Some(out)
}

/// For fuzz targets: the status and body the admin API gives a complete request, or `None` if
/// the bytes are not a complete request yet.
#[cfg(feature = "testing")]
pub fn respond_for_testing(handle: &ServerHandle, bytes: &[u8]) -> Option<(u16, Vec<u8>)> {
    match decide(handle, bytes) {
        Decision::NeedMore => None,
        Decision::Respond(r) => Some((r.status, r.body)),
    }
}

/// One line per admin request at info level (target `wsedge::access`): peer, method, path
/// without its query (which may hold a token), status, body bytes, milliseconds.
fn access_log(stream: &TcpStream, request: &[u8], response: &Response, started: std::time::Instant) {
    if !log::log_enabled!(target: "wsedge::access", log::Level::Info) {
        return;
    }
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(&line[..line.len().min(256)]);
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or("-");
    let path = parts.next().unwrap_or("-").split('?').next().unwrap_or("-");
    log::info!(
        target: "wsedge::access",
        "admin {method} {path} -> {} {}B {}ms peer={}",
        response.status,
        response.body.len(),
        started.elapsed().as_millis(),
        stream.peer_addr().map_or_else(|_| "-".to_string(), |a| a.to_string())
    );
}

/// Reads the rest of the request, routes it, writes the response, closes.
fn serve(handle: &ServerHandle, job: AdminJob) {
    let AdminJob { mut stream, mut bytes } = job;
    let started = std::time::Instant::now();
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    // One deadline for the whole request: trickling bytes does not extend it.
    let deadline = started + IO_TIMEOUT;
    let response = loop {
        match decide(handle, &bytes) {
            Decision::Respond(r) => break r,
            Decision::NeedMore => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                    break Response::error(408, "request not received in time");
                }
                let mut chunk = [0u8; 8192];
                match stream.read(&mut chunk) {
                    Ok(n) if n > 0 => bytes.extend_from_slice(&chunk[..n]),
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                        break Response::error(408, "request not received in time");
                    }
                    _ => return,
                }
            }
        }
    };
    access_log(&stream, &bytes, &response, started);
    let mut out = Vec::with_capacity(response.body.len() + 256);
    let headers: Vec<(&str, &str)> = response.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    write_response(
        &mut out,
        response.status,
        &headers,
        response.content_type,
        &response.body,
    );
    if stream.write_all(&out).is_ok() {
        // FIN, then wait briefly for the client's, so unread request bytes cannot turn our
        // close into a reset that destroys the response.
        // Bounded in time and bytes, so a client that keeps sending cannot hold the thread.
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let until = std::time::Instant::now() + Duration::from_millis(200);
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            if !matches!(stream.read(&mut sink), Ok(n) if n > 0) {
                break;
            }
        }
    }
}
