//! What the admin API produces and reads: a [`Response`], a [`Plan`] (a response now, or asks
//! for reactors and the function that turns their answers into the response), and
//! [`AdminHost`], the narrow view of the node that plans read.
//!
//! Owns: these types. Does not touch: routing (`routes`) or carrying plans out (the reactor).

use crate::ask::{Answer, Ask};
use crate::auth::Verifier;
use crate::config::Config;
use crate::metrics::{ClusterMetrics, RateSample, Snapshot};
use crate::topology::Topology;

/// What the admin API reads of the node it serves.
pub(crate) trait AdminHost {
    fn config(&self) -> &Config;
    fn topology(&self) -> &Topology;
    /// The JWT verifier (`None`: anonymous mode, where admin routes are refused).
    fn verifier(&self) -> Option<&Verifier>;
    /// Counters summed over reactors.
    fn stats(&self) -> Snapshot;
    fn is_draining(&self) -> bool;
    /// Reactors that stopped because of a panic.
    fn dead_reactors(&self) -> usize;
    /// The cluster's counters, on a cluster node.
    fn cluster_metrics(&self) -> Option<&ClusterMetrics>;
    /// Message totals once a second over the last five minutes, oldest first.
    fn rate_history(&self) -> Vec<RateSample>;
    /// When this node started (Unix seconds).
    fn started_at(&self) -> u64;
}

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

    /// `{"status": "success", "data": data}` (the admin API's response shape).
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

    /// Appends the response as HTTP/1.1 bytes: without its body for a `HEAD` request (the
    /// length still says what a `GET` would get), and with `Connection: close` unless the
    /// connection stays open for another request.
    pub fn write(&self, out: &mut Vec<u8>, head_only: bool, keep_alive: bool) {
        let headers: Vec<(&str, &str)> = self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        crate::http::write_response_to(
            out,
            self.status,
            &headers,
            self.content_type,
            &self.body,
            crate::http::Framing { head_only, keep_alive },
        );
    }
}

/// Answers to a plan's asks: for each ask, the `(reactor, answer)` pairs that came back.
pub(crate) type Answers = Vec<Vec<(usize, Answer)>>;

/// Turns the answers into the response (reading the node again, as it is when they are in).
pub(crate) type Finish = Box<dyn FnOnce(Answers, &dyn AdminHost) -> Response + Send>;

/// What a complete request calls for.
pub(crate) enum Plan {
    Now(Response),
    /// Ask each listed reactor; once every answer is in (or lost), `finish` makes the response.
    Later {
        asks: Vec<(Ask, Vec<usize>)>,
        finish: Finish,
    },
}

impl Plan {
    pub fn later(asks: Vec<(Ask, Vec<usize>)>, finish: impl FnOnce(Answers) -> Response + Send + 'static) -> Self {
        Plan::Later {
            asks,
            finish: Box::new(move |answers, _| finish(answers)),
        }
    }

    /// [`later`](Self::later), for a response that reads the node once the answers are in.
    pub fn later_reading(
        asks: Vec<(Ask, Vec<usize>)>,
        finish: impl FnOnce(Answers, &dyn AdminHost) -> Response + Send + 'static,
    ) -> Self {
        Plan::Later {
            asks,
            finish: Box::new(finish),
        }
    }
}
