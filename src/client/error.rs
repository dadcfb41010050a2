//! What went wrong for a client, by what the caller can do about it.
//!
//! Owns: [`ClientError`]. Does not touch: anything else.

/// What went wrong, by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL: {0}")]
    Url(String),
    /// No connection: DNS, TCP, TLS, or a broken upgrade response.
    #[error("connection failed: {0}")]
    ConnectionFailed(String),
    /// The server answered the upgrade with an HTTP error (401, 403, 429, 503, ...).
    #[error("server refused the upgrade: HTTP {status} {body}")]
    Rejected { status: u16, body: String },
    /// The server closed with 1008 `authentication failed: <reason>`.
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    /// A message over the limit: ours (received or about to be sent) or the server's (1009).
    #[error("message too large: {0}")]
    MessageTooLarge(String),
    /// The connection is closed, with the close frame's code and reason (1006: no close frame).
    #[error("connection closed: {code} {reason}")]
    Closed { code: u16, reason: String },
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl ClientError {
    /// The close code behind this error, if the connection was closed.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            ClientError::Closed { code, .. } => Some(*code),
            ClientError::AuthenticationFailed(_) => Some(1008),
            _ => None,
        }
    }

    pub(super) fn from_close(code: u16, reason: String) -> Self {
        if code == 1008
            && let Some(r) = reason.strip_prefix("authentication failed: ")
        {
            return ClientError::AuthenticationFailed(r.to_string());
        }
        if code == 1009 {
            return ClientError::MessageTooLarge(format!("the server closed with 1009 {reason}"));
        }
        ClientError::Closed { code, reason }
    }
}
