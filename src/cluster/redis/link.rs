//! One of the engine's Redis connections with its reconnect state: the backoff, when the
//! current attempt started, and what went wrong last.
//!
//! Owns: the decision of when to try again and what to log, and the setup commands (AUTH,
//! SELECT) a new connection sends first. Does not touch: the socket (`resp`), or the commands
//! sent after setup and what their replies answer (the engine half does).

use std::time::{Duration, Instant};

use super::super::resp::Conn;
use crate::callback::SourceId;
use crate::config::RedisUrl;

pub(super) struct Link {
    pub conn: Conn,
    /// Failed attempts since the last success (sets the backoff).
    pub attempts: u32,
    /// A reconnect timer is set (only then does its firing connect).
    pub retrying: bool,
    /// It has been up before (a new connection counts as a reconnect).
    pub was_up: bool,
    /// When the current connection was started.
    pub since: Option<Instant>,
    /// Where it was made (with sentinels, the master of the time).
    pub addr: Option<std::net::SocketAddr>,
    /// When the current backoff ends (a timer firing earlier belongs to an older one).
    retry_at: Option<Instant>,
    /// The last failure logged: a retry that fails the same way is logged at debug level,
    /// so a Redis that stays away (or a wrong password) does not flood the log.
    problem: Option<String>,
}

impl Link {
    pub fn new(source: SourceId) -> Self {
        Link {
            conn: Conn::new(source),
            attempts: 0,
            retrying: false,
            was_up: false,
            since: None,
            addr: None,
            retry_at: None,
            problem: None,
        }
    }

    /// Logs a failure of connection `what` of `reactor`: a warning when the reason changed.
    pub fn failed(&mut self, reactor: usize, what: &str, why: String) {
        if self.problem.as_deref() == Some(why.as_str()) {
            log::debug!("reactor {reactor} ({what}): {why}");
        } else {
            log::warn!("reactor {reactor} ({what}): {why}; retrying with backoff");
            self.problem = Some(why);
        }
    }

    /// The connection works (Redis answered on it): the next failure is news again.
    pub fn works(&mut self, reactor: usize, what: &str) {
        self.attempts = 0;
        if self.problem.take().is_some() {
            log::info!("reactor {reactor} ({what}): redis answers again");
        }
    }

    /// Starts a backoff: returns its delay (for the reconnect timer).
    pub fn retry_later(&mut self) -> Duration {
        let delay = self.next_delay();
        self.retrying = true;
        self.retry_at = Some(Instant::now() + delay);
        delay
    }

    /// How long the current backoff still runs (`None`: no retry is pending). A reconnect
    /// timer that finds time left sets itself again for it: a link waiting to retry always
    /// has a timer that will retry it.
    pub fn retry_left(&self) -> Option<Duration> {
        if !self.retrying {
            return None;
        }
        Some(
            self.retry_at
                .map_or(Duration::ZERO, |t| t.saturating_duration_since(Instant::now())),
        )
    }

    /// The current backoff is over: time to connect again.
    pub fn retry_due(&self) -> bool {
        self.retry_left().is_some_and(|left| left.is_zero())
    }

    /// The delay before the next attempt (and counts this one).
    pub fn next_delay(&mut self) -> Duration {
        let cap = 100u64.saturating_mul(1 << self.attempts.min(6)).min(5000);
        self.attempts = self.attempts.saturating_add(1);
        // Full jitter over the upper half: nodes restarted together do not reconnect together.
        let jitter = (uuid::Uuid::new_v4().as_u128() as u64) % (cap / 2 + 1);
        Duration::from_millis(cap / 2 + jitter)
    }
}

/// AUTH and SELECT for a new connection, as the URL says (`db`: its database, as text).
pub(super) fn setup_commands<'a>(url: &'a RedisUrl, db: &'a str) -> Vec<Vec<&'a [u8]>> {
    let mut setup: Vec<Vec<&[u8]>> = Vec::new();
    if let Some(p) = &url.password {
        match &url.username {
            Some(u) => setup.push(vec![b"AUTH", u.as_bytes(), p.as_bytes()]),
            None => setup.push(vec![b"AUTH", p.as_bytes()]),
        }
    }
    if url.db != 0 {
        setup.push(vec![b"SELECT", db.as_bytes()]);
    }
    setup
}

/// An error reply that means Redis refuses this node's credentials (or wants some).
pub(super) fn is_auth_error(e: &str) -> bool {
    e.starts_with("WRONGPASS")
        || e.starts_with("NOAUTH")
        || e.starts_with("NOPERM")
        || e.contains("invalid password")
        || e.contains("invalid username-password")
        || e.starts_with("ERR AUTH")
        || e.starts_with("ERR Client sent AUTH")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_errors_are_told_apart() {
        assert!(is_auth_error(
            "WRONGPASS invalid username-password pair or user is disabled."
        ));
        assert!(is_auth_error("NOAUTH Authentication required."));
        assert!(is_auth_error(
            "ERR AUTH <password> called without any password configured for the default user."
        ));
        assert!(!is_auth_error("ERR unknown command 'FOO'"));
        assert!(!is_auth_error("NOSCRIPT No matching script."));
    }

    #[test]
    fn backoff_grows_to_five_seconds_with_jitter() {
        let mut l = Link::new(1);
        let first = l.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..10 {
            let d = l.next_delay();
            assert!(d <= Duration::from_secs(5));
        }
        assert!(l.next_delay() >= Duration::from_millis(2500));
    }

    #[test]
    fn a_pending_retry_is_never_forgotten() {
        let mut l = Link::new(1);
        assert_eq!(l.retry_left(), None);
        let delay = l.retry_later();
        let left = l.retry_left().expect("a retry is pending");
        assert!(left <= delay && !left.is_zero());
        assert!(!l.retry_due());
        l.retry_at = Some(Instant::now());
        assert!(l.retry_due());
    }
}
