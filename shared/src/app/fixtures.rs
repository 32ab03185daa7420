//! Notifications and delivery records for the application layer's unit tests.

use crate::domain::*;

/// A dispatch notification `n-1` of `acme`, with no fallback window and no escalation.
pub(crate) fn notification() -> Notification {
    Notification {
        notification_id: NotificationId::parse("n-1").unwrap(),
        org_id: OrgId::parse("acme").unwrap(),
        category: Category::Dispatch,
        incident_id: None,
        control_center_id: ControlCenterId::main(),
        message: Message::default(),
        created_at: chrono::Utc::now(),
        app_fallback_seconds: None,
        escalation: None,
        audience: None,
        pages: 0,
    }
}

/// User `who`'s record of `n-1` on `channel` (cycle 0, two attempts used), held behind
/// push when `held`.
pub(crate) fn record(
    who: &str,
    channel: Channel,
    status: DeliveryStatus,
    held: bool,
) -> DeliveryRecord {
    let user = UserId::parse(who).unwrap();
    DeliveryRecord {
        notification_id: NotificationId::parse("n-1").unwrap(),
        recipient: RecipientRef::User(user.clone()),
        channel,
        status,
        reason: None,
        attempts: 2,
        fallback: false,
        provider: Some(Provider::Sns),
        provider_message_id: None,
        destination: Some(Destination::Devices(user)),
        awaiting_push: held,
        claimed_until: None,
        delivered_at: None,
        fallback_reason: None,
        fallback_at: None,
        cycle: 0,
        failover_from: None,
        detail: None,
        complaint: false,
        encoding: None,
        segments: None,
    }
}
