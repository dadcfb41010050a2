//! Server-originated messages, serialized and framed once, with where they go: envelopes, the
//! admin broadcast, and the event helpers (`upload.progress`, `system.notification`, ...).
//!
//! Owns: the shape of each message. Does not touch: delivery (callers turn an [`Outgoing`] into
//! asks for reactors, waiting for them on a thread or as loop state on a reactor).

use serde::Serialize;
use serde_json::{Map, Value, json};
use tungstenite::Bytes;
use tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::ask::Target;
use crate::protocol::{IdGen, Timestamp, write_envelope};
use crate::ws::encode_frame;

/// One message, encoded once for every recipient on every reactor.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub frame: Bytes,
    pub message_id: uuid::Uuid,
    /// Every target gets the same message (one id), for example each of a list of users.
    pub targets: Vec<Target>,
    /// Connections of this user are skipped (a chat message is not echoed to its sender).
    pub exclude_user: Option<Box<str>>,
    /// The publisher's idempotency key (cluster: a retry within the window is not delivered
    /// again; the message id is derived from it, so a retry carries the same id).
    pub dedupe: Option<Box<str>>,
}

impl Outgoing {
    /// `{"type": kind, "data": data, "timestamp", "id"}` to `target`.
    pub fn envelope<D: Serialize>(target: Target, kind: &str, data: D) -> Self {
        Self::envelope_keyed(None, target, kind, data)
    }

    /// As `envelope`; with an idempotency key, the message id is derived from the key.
    pub fn envelope_keyed<D: Serialize>(key: Option<&str>, target: Target, kind: &str, data: D) -> Self {
        let mut json = Vec::new();
        let message_id = write_envelope(&mut json, &mut ids_for(key), kind, data);
        Outgoing {
            frame: text_frame(&json),
            message_id,
            targets: vec![target],
            exclude_user: None,
            dedupe: key.map(Into::into),
        }
    }

    /// The envelope to each listed user (one message id), or to `otherwise` without a list.
    pub fn to_users_or(users: Option<&[String]>, otherwise: Target, kind: &str, data: Value) -> Self {
        let mut o = Self::envelope(otherwise, kind, data);
        if let Some(users) = users {
            o.targets = users.iter().map(|u| Target::User(u.as_str().into())).collect();
        }
        o
    }

    /// The admin broadcast: the given object plus `timestamp`, `id` and
    /// `source: "admin_broadcast"`, to everyone.
    pub fn admin_broadcast(message: Map<String, Value>) -> Self {
        Self::admin_broadcast_keyed(None, message)
    }

    /// As `admin_broadcast`, with an idempotency key (see `envelope_keyed`).
    pub fn admin_broadcast_keyed(key: Option<&str>, mut message: Map<String, Value>) -> Self {
        let message_id = ids_for(key).uuid();
        message.insert("timestamp".into(), now_text().into());
        message.insert("id".into(), message_id.to_string().into());
        message.insert("source".into(), "admin_broadcast".into());
        let json = Value::Object(message).to_string();
        Outgoing {
            frame: text_frame(json.as_bytes()),
            message_id,
            targets: vec![Target::All],
            exclude_user: None,
            dedupe: key.map(Into::into),
        }
    }

    pub fn excluding(mut self, user: Option<&str>) -> Self {
        self.exclude_user = user.map(Into::into);
        self
    }

    /// `upload.progress` `{upload_id, progress, timestamp}` to the user.
    pub fn upload_progress(user_id: &str, upload_id: &str, progress: u64) -> Self {
        Self::upload_progress_bytes(user_id, upload_id, progress, None, None)
    }

    /// `upload.progress` with `bytes_uploaded` and `total_bytes` (those given).
    pub fn upload_progress_bytes(
        user_id: &str,
        upload_id: &str,
        progress: u64,
        bytes_uploaded: Option<u64>,
        total_bytes: Option<u64>,
    ) -> Self {
        let mut data = json!({"upload_id": upload_id, "progress": progress, "timestamp": now_text()});
        if let Some(n) = bytes_uploaded {
            data["bytes_uploaded"] = n.into();
        }
        if let Some(n) = total_bytes {
            data["total_bytes"] = n.into();
        }
        Self::envelope(Target::User(user_id.into()), "upload.progress", data)
    }

    /// `upload.completed` `{upload_id, result, timestamp}` to the user.
    pub fn upload_completed(user_id: &str, upload_id: &str, result: Value) -> Self {
        let data = json!({"upload_id": upload_id, "result": result, "timestamp": now_text()});
        Self::envelope(Target::User(user_id.into()), "upload.completed", data)
    }

    /// `upload.error` `{upload_id, error, timestamp}` to the user.
    pub fn upload_error(user_id: &str, upload_id: &str, error: &str) -> Self {
        let data = json!({"upload_id": upload_id, "error": error, "timestamp": now_text()});
        Self::envelope(Target::User(user_id.into()), "upload.error", data)
    }

    /// `system.notification` `{message, level, timestamp}` to the given users, or everyone.
    pub fn system_notification(message: &str, level: &str, target_users: Option<&[String]>) -> Self {
        let data = json!({"message": message, "level": level, "timestamp": now_text()});
        Self::to_users_or(target_users, Target::All, "system.notification", data)
    }

    /// `review.updated` `{review_id, changes, timestamp}` to the given users, or to the
    /// subscribers of `review.updated` (event bit `subscribers`; `None`: nobody).
    pub fn review_updated(
        review_id: &str,
        changes: Value,
        target_users: Option<&[String]>,
        subscribers: Option<u32>,
    ) -> Self {
        let data = json!({"review_id": review_id, "changes": changes, "timestamp": now_text()});
        let mut o = Self::to_users_or(target_users, Target::All, "review.updated", data);
        if target_users.is_none() {
            o.targets = subscribers.map(Target::Subscribers).into_iter().collect();
        }
        o
    }

    /// `file.processing` (status "processing") or `file.ready` (any other status)
    /// `{file_id, status, progress?, timestamp}` to the user.
    pub fn file_status(user_id: &str, file_id: &str, status: &str, progress: Option<u64>) -> Self {
        let mut data = json!({"file_id": file_id, "status": status, "timestamp": now_text()});
        if let Some(p) = progress {
            data["progress"] = p.into();
        }
        let kind = if status == "processing" {
            "file.processing"
        } else {
            "file.ready"
        };
        Self::envelope(Target::User(user_id.into()), kind, data)
    }
}

/// Message ids: random, or derived from an idempotency key (the same key, the same id).
fn ids_for(key: Option<&str>) -> IdGen {
    match key {
        Some(k) => IdGen::from_key(k),
        None => IdGen::from_os(),
    }
}

fn text_frame(payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    encode_frame(&mut frame, OpCode::Data(Data::Text), payload);
    Bytes::from(frame)
}

fn now_text() -> String {
    Timestamp::now().to_string()
}
