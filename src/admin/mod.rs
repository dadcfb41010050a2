//! The embedded admin HTTP API: health, readiness, Prometheus metrics and the `/ws/*` admin
//! routes (stats, connection info, disconnects, messages to users/events/rooms/everyone, batches
//! of them, room membership, the event helpers).
//!
//! Owns: routing, admin authorization (JWT with `role: "admin"`), request bodies and JSON
//! responses. Does not touch: sockets or waiting. It is sans-io: a request becomes a [`Plan`],
//! either a response now or asks for reactors and a function that turns their answers into the
//! response. The reactor that read the request carries the plan out as state in its event
//! loop (`reactor::http`), so no thread is ever held by an admin client.
//!
//! Plans read the node through [`AdminHost`], a narrow trait defined here (`plan`) and implemented by
//! the reactors' shared runtime, and place their asks with [`crate::topology`]: the admin API
//! never imports the server or the reactor.

mod batch;
mod message;
mod plan;
mod prometheus;
mod routes;

use std::time::Instant;

use crate::http::upgrade::PlainRequest;
pub(crate) use plan::{AdminHost, Answers, Finish, Plan, Response};

/// A refusal the head alone decides, before any of the body is read: a body over
/// `admin_max_body` (413), or an admin route without a valid admin token (401/403).
pub(crate) fn check_head(h: &dyn AdminHost, req: &PlainRequest) -> Option<Response> {
    if req.content_length > h.config().admin_max_body {
        return Some(Response::error(413, "request body too large"));
    }
    routes::refuse_early(h, req)
}

/// The plan for a complete request (head and body).
pub(crate) fn plan(h: &dyn AdminHost, req: &PlainRequest, body: &[u8]) -> Plan {
    routes::route(h, req, body)
}

/// One line per admin request at info level (target `wsedge::access`): peer, method, path
/// without its query (which may hold a token), status, body bytes, milliseconds from the
/// request's first byte to its response being queued.
pub(crate) fn access_log(
    peer: Option<std::net::SocketAddr>,
    method: &str,
    path: &str,
    response: &Response,
    started: Instant,
) {
    if !log::log_enabled!(target: "wsedge::access", log::Level::Info) {
        return;
    }
    log::info!(
        target: "wsedge::access",
        "admin {method} {path} -> {} {}B {}ms peer={}",
        response.status,
        response.body.len(),
        started.elapsed().as_millis(),
        peer.map_or_else(|| "-".to_string(), |a| a.to_string())
    );
}
