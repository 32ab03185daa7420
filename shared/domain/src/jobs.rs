//! The notification-wide fields every delivery job of a notification carries, and the
//! jobs made from them.

use super::delivery::{Channel, DeliveryJob, Destination, Notification, Provider, RecipientRef};
use super::event::Category;
use super::ids::NotificationId;

/// The notification-wide fields every job of it carries.
#[derive(Debug, Clone)]
pub struct JobTemplate {
    pub notification_id: NotificationId,
    pub org_id: super::ids::OrgId,
    pub control_center_id: super::ids::ControlCenterId,
    pub category: Category,
    pub message: super::delivery::Message,
    /// The event's time (the notification's `created_at`).
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The notification's fallback window, for its push jobs.
    pub app_fallback_seconds: Option<u32>,
    /// The incident (a reply's confirmation names it).
    pub incident_id: Option<super::ids::IncidentId>,
}

impl From<&Notification> for JobTemplate {
    fn from(n: &Notification) -> Self {
        Self {
            notification_id: n.notification_id.clone(),
            org_id: n.org_id.clone(),
            control_center_id: n.control_center_id.clone(),
            category: n.category,
            message: n.message.clone(),
            created_at: Some(n.created_at),
            app_fallback_seconds: n.app_fallback_seconds,
            incident_id: n.incident_id.clone(),
        }
    }
}

/// The template a job was made from: follow-up jobs (fallback) carry the same fields.
impl From<&DeliveryJob> for JobTemplate {
    fn from(j: &DeliveryJob) -> Self {
        Self {
            notification_id: j.notification_id.clone(),
            org_id: j.org_id.clone(),
            control_center_id: j.control_center_id.clone(),
            category: j.category,
            message: j.message.clone(),
            created_at: j.created_at,
            app_fallback_seconds: j.app_fallback_seconds,
            incident_id: j.incident_id.clone(),
        }
    }
}

impl JobTemplate {
    pub fn job(
        &self,
        recipient: &RecipientRef,
        channel: Channel,
        provider: Provider,
        destination: &Destination,
        fallback: bool,
    ) -> DeliveryJob {
        DeliveryJob {
            notification_id: self.notification_id.clone(),
            org_id: self.org_id.clone(),
            control_center_id: self.control_center_id.clone(),
            category: self.category,
            recipient: recipient.clone(),
            channel,
            provider,
            destination: destination.clone(),
            fallback,
            message: self.message.clone(),
            created_at: self.created_at,
            app_fallback_seconds: self
                .app_fallback_seconds
                .filter(|_| channel == Channel::Push),
            cycle: 0,
            spent_receives: 0,
            incident_id: self.incident_id.clone(),
        }
    }
}
