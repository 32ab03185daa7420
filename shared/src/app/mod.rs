//! The application layer: the operations behind Flare's HTTP API, and a transport-free
//! request dispatcher ([`api::handle`]) that the Lambda function and the local runner
//! both call, so the two serve exactly the same routes, rules and errors.

pub mod api;
pub mod audit;
pub mod auth;
pub mod deliver;
pub mod directory;
pub mod ended;
pub mod error;
pub mod failover;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod inbound;
pub mod links;
pub mod notifications;
pub mod notify;
pub mod openapi;
pub mod receipts;
pub mod routes;
pub mod settings;
pub mod test_send;

use crate::domain::{EmailAddress, EndpointPolicy, Provider};
use crate::ports::{
    DeliveryLog, DeviceRegistry, Directory, EmailSender, JobQueue, SecretStore, SettingsStore,
    SmsSender,
};
use std::collections::HashMap;
use std::sync::Arc;

/// The ports the API needs, built once (in `main`, or by the local runner).
#[derive(Clone)]
pub struct Services {
    pub settings: Arc<dyn SettingsStore>,
    pub directory: Arc<dyn Directory>,
    pub secrets: Arc<dyn SecretStore>,
    /// Where secrets are read to send or to verify a gateway's callback: the senders'
    /// cache in AWS, so a flood of junk callbacks reads Secrets Manager once per settings
    /// revision, not once a request.
    pub secret_reads: Arc<dyn SecretStore>,
    pub devices: Arc<dyn DeviceRegistry>,
    pub log: Arc<dyn DeliveryLog>,
    pub queue: Arc<dyn JobQueue>,
    pub policy: EndpointPolicy,
    /// Senders for test sends, by provider.
    pub sms_senders: HashMap<Provider, Arc<dyn SmsSender>>,
    pub email_senders: HashMap<Provider, Arc<dyn EmailSender>>,
    /// The default account (`FLARE_DEFAULT_SENDER`).
    pub default_sender: Option<EmailAddress>,
    pub metrics: Arc<dyn crate::ports::Metrics>,
    /// Custom providers' health (the settings views show it); `None`: always healthy.
    pub health: Option<Arc<dyn crate::ports::HealthStore>>,
    /// A gateway callback whose delivery is not found looks once more after this long
    /// (AWS: the log's receipt index is eventually consistent); `None`: answers at once.
    pub receipt_retry: Option<std::time::Duration>,
    /// The audit trail every authenticated write attempt is recorded in.
    pub audit: Arc<dyn crate::ports::AuditLog>,
}

/// What recording an acknowledgement or an answer touches: the log, and the metrics it
/// counts in (the receipts function has these and no more).
#[derive(Clone, Copy)]
pub struct Records<'a> {
    pub log: &'a dyn DeliveryLog,
    pub metrics: &'a dyn crate::ports::Metrics,
}

impl Services {
    pub fn records(&self) -> Records<'_> {
        Records {
            log: self.log.as_ref(),
            metrics: self.metrics.as_ref(),
        }
    }
}
