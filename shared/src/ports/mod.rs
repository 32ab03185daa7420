//! Ports: one trait per outside concern. Adapters (in-memory, AWS, HTTP, SMTP) implement
//! them; handlers and the router depend only on these. No AWS SDK or Lambda type appears
//! in a signature here.

use crate::domain::reason::wire_reason;
use std::time::Duration;

use crate::domain::receipt::ReceiptKey;
use crate::domain::{
    Channel, CheckJob, CommunicationSettings, ControlCenterId, DeliveryJob, DeliveryRecord,
    DeliveryStatus, DeviceId, EmailAddress, EmailSettings, FailReason, Message, Notification,
    NotificationId, OrgId, PhoneNumber, Provider, RecipientRef, RoutePage, SenderId, Slot,
    SmsSettings, User, UserId,
};
use async_trait::async_trait;
use secrecy::SecretString;

/// A storage port failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Throttling or a service error that may pass: retry later.
    #[error("storage temporarily unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else (permissions, a malformed stored item): retrying won't help.
    #[error("storage failed")]
    Failed(#[source] anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

mod audit;
mod finish;
mod flow;
mod log;
mod metrics;
mod send;
mod stores;

pub use audit::*;
pub use finish::*;
pub use flow::*;
pub use log::*;
pub use metrics::*;
pub use send::*;
pub use stores::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_scoped_by_org_under_the_prefix() {
        let org = OrgId::parse("acme").unwrap();
        let cc = ControlCenterId::parse("north").unwrap();
        assert_eq!(
            SecretKey::SmsPassword(org.clone(), cc.clone(), None).name("flare/"),
            "flare/acme/sms/north/password"
        );
        assert_eq!(
            SecretKey::SmsHeaderValue(org.clone(), cc, Some("r7".into())).name("flare"),
            "flare/acme/sms/north/header-value/r7"
        );
        assert_eq!(
            SecretKey::SmtpPassword(org, None).name("flare"),
            "flare/acme/smtp/password"
        );
    }
}
