//! The seed systems' event helpers as calls on a `ServerHandle` ([`EventHelpers`]).
//!
//! Owns: the trait and its implementation. Does not touch: encoding (`outgoing` builds the
//! envelopes) or delivery (the handle's asks).

use crate::ask::{Delivery, HandleError};
use crate::handle::ServerHandle;

/// The seed systems' event helpers (`upload.progress`, `system.notification`, ...) as calls on
/// a [`ServerHandle`]: `use wsedge::app::EventHelpers;`. Each sends one envelope and waits for
/// the recipient count, like [`ServerHandle::send_envelope`]; the admin API offers the same as
/// `POST /ws/helpers/{name}`.
pub trait EventHelpers {
    /// `upload.progress` `{upload_id, progress, timestamp}` to the user.
    fn upload_progress(&self, user_id: &str, upload_id: &str, progress: u64) -> Result<Delivery, HandleError>;

    /// `upload.completed` `{upload_id, result, timestamp}` to the user.
    fn upload_completed(
        &self,
        user_id: &str,
        upload_id: &str,
        result: serde_json::Value,
    ) -> Result<Delivery, HandleError>;

    /// `upload.error` `{upload_id, error, timestamp}` to the user.
    fn upload_error(&self, user_id: &str, upload_id: &str, error: &str) -> Result<Delivery, HandleError>;

    /// `system.notification` `{message, level, timestamp}` to the given users, or to everyone.
    fn system_notification(
        &self,
        message: &str,
        level: &str,
        target_users: Option<&[String]>,
    ) -> Result<Delivery, HandleError>;

    /// `review.updated` `{review_id, changes, timestamp}` to the given users, or to the
    /// subscribers of `review.updated`.
    fn review_updated(
        &self,
        review_id: &str,
        changes: serde_json::Value,
        target_users: Option<&[String]>,
    ) -> Result<Delivery, HandleError>;

    /// `file.processing` (status "processing") or `file.ready` (any other status)
    /// `{file_id, status, progress?, timestamp}` to the user.
    fn file_status(
        &self,
        user_id: &str,
        file_id: &str,
        status: &str,
        progress: Option<u64>,
    ) -> Result<Delivery, HandleError>;
}

impl EventHelpers for ServerHandle {
    fn upload_progress(&self, user_id: &str, upload_id: &str, progress: u64) -> Result<Delivery, HandleError> {
        self.send(crate::outgoing::Outgoing::upload_progress(user_id, upload_id, progress))
    }

    fn upload_completed(
        &self,
        user_id: &str,
        upload_id: &str,
        result: serde_json::Value,
    ) -> Result<Delivery, HandleError> {
        self.send(crate::outgoing::Outgoing::upload_completed(user_id, upload_id, result))
    }

    fn upload_error(&self, user_id: &str, upload_id: &str, error: &str) -> Result<Delivery, HandleError> {
        self.send(crate::outgoing::Outgoing::upload_error(user_id, upload_id, error))
    }

    fn system_notification(
        &self,
        message: &str,
        level: &str,
        target_users: Option<&[String]>,
    ) -> Result<Delivery, HandleError> {
        self.send(crate::outgoing::Outgoing::system_notification(
            message,
            level,
            target_users,
        ))
    }

    fn review_updated(
        &self,
        review_id: &str,
        changes: serde_json::Value,
        target_users: Option<&[String]>,
    ) -> Result<Delivery, HandleError> {
        let bit = self.config().event_bit("review.updated");
        self.send(crate::outgoing::Outgoing::review_updated(
            review_id,
            changes,
            target_users,
            bit,
        ))
    }

    fn file_status(
        &self,
        user_id: &str,
        file_id: &str,
        status: &str,
        progress: Option<u64>,
    ) -> Result<Delivery, HandleError> {
        self.send(crate::outgoing::Outgoing::file_status(
            user_id, file_id, status, progress,
        ))
    }
}
