//! In-memory adapters for every port: the unit tests' doubles, and the local runner's
//! stand-ins for SNS, SES and SQS.

use anyhow::Context;
use async_trait::async_trait;
use flare_shared::domain::receipt::ReceiptKey;
use flare_shared::domain::{
    Channel, CommunicationSettings, ControlCenterId, DeliveryJob, DeliveryRecord, EmailSettings,
    Notification, NotificationId, OrgId, Platform, Provider, RecipientRef, RoutePage, SmsSettings,
    User, UserId,
};
use flare_shared::ports::*;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic in another test thread must not poison every later call.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State behind a mutex, optionally saved to a JSON file after every change (the local
/// runner's `--data-dir`), written to a temporary file and renamed so a crash never
/// leaves half a file.
struct Persisted<T> {
    state: Mutex<T>,
    path: Option<PathBuf>,
}

impl<T: Default> Default for Persisted<T> {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            path: None,
        }
    }
}

impl<T: Default + Serialize + DeserializeOwned> Persisted<T> {
    fn open(path: PathBuf) -> anyhow::Result<Self> {
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => T::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Self {
            state: Mutex::new(state),
            path: Some(path),
        })
    }

    fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&lock(&self.state))
    }

    fn write<R>(&self, f: impl FnOnce(&mut T) -> R) -> StoreResult<R> {
        let mut state = lock(&self.state);
        let out = f(&mut state);
        if let Some(path) = &self.path {
            save(path, &*state).map_err(StoreError::Failed)?;
        }
        Ok(out)
    }
}

fn save<T: Serialize>(path: &Path, state: &T) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(state)?;
    {
        let mut f = std::fs::OpenOptions::new();
        f.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut f, 0o600);
        let mut file = f
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::io::Write::write_all(&mut file, &bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// `org/rest`: ids never contain `/`, so the key is unambiguous and sorts by org.
fn key(org: &OrgId, rest: &str) -> String {
    format!("{org}/{rest}")
}

mod audit;
mod log;
mod outbox;
mod pace;
mod stores;

pub use audit::*;
pub use log::*;
pub use outbox::*;
pub use pace::*;
pub use stores::*;

/// The API's services with every port in memory (tests). The wiring lives here, beside
/// the adapters, not in the application layer, which picks no adapter.
pub fn services(policy: flare_shared::domain::EndpointPolicy) -> flare_shared::app::Services {
    let secrets: Arc<MemorySecrets> = Arc::new(MemorySecrets::default());
    flare_shared::app::Services {
        settings: Arc::new(MemorySettings::default()),
        directory: Arc::new(MemoryDirectory::default()),
        secret_reads: secrets.clone(),
        secrets,
        devices: Arc::new(MemoryDevices::default()),
        log: Arc::new(MemoryDeliveryLog::default()),
        queue: Arc::new(MemoryQueue::default()),
        policy,
        sms_senders: HashMap::new(),
        email_senders: HashMap::new(),
        default_sender: None,
        metrics: Arc::new(MemoryMetrics::default()),
        health: Some(Arc::new(MemoryHealth::default())),
        receipt_retry: None,
        audit: Arc::new(MemoryAuditLog::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flare_shared::domain::FailReason;

    // The delivery log's promises are checked by the conformance suite
    // (`flare_tests::conformance`), against this adapter and DynamoDB alike.

    #[tokio::test]
    async fn persisted_stores_survive_a_reopen_and_keep_secrets_apart() {
        let dir = std::env::temp_dir().join(format!("flare-mem-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let org = OrgId::parse("acme").unwrap();
        {
            let s = MemorySettings::open(dir.join("settings.json")).unwrap();
            let c = CommunicationSettings {
                distress: true,
                ..Default::default()
            };
            s.put_communication(&org, &c).await.unwrap();
            let secrets = MemorySecrets::open(dir.join("secrets.json")).unwrap();
            secrets
                .put(
                    &SecretKey::SmtpPassword(org.clone(), None),
                    &SecretString::from("s3cret"),
                )
                .await
                .unwrap();
        }
        let s = MemorySettings::open(dir.join("settings.json")).unwrap();
        assert!(s.get_communication(&org).await.unwrap().unwrap().distress);
        let settings_file = std::fs::read_to_string(dir.join("settings.json")).unwrap();
        assert!(!settings_file.contains("s3cret"));
        let secrets = MemorySecrets::open(dir.join("secrets.json")).unwrap();
        let got = secrets
            .get(&SecretKey::SmtpPassword(org, None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.expose_secret(), "s3cret");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn the_outbox_records_sends_and_answers_scripted_failures_first() {
        let outbox = MemoryOutbox::default();
        let sms = SmsMessage {
            notification_id: NotificationId::parse("n-1").unwrap(),
            delivery_id: None,
            org_id: OrgId::parse("acme").unwrap(),
            control_center_id: ControlCenterId::main(),
            to: flare_shared::PhoneNumber::parse("+14155550100").unwrap(),
            from: None,
            text: "hello".into(),
            settings: None,
        };
        outbox.fail_next(
            "+14155550100",
            SendError::transient(FailReason::SnsUnavailable),
        );
        assert!(
            SmsSender::send(&outbox, &sms)
                .await
                .unwrap_err()
                .is_transient()
        );
        let receipt = SmsSender::send(&outbox, &sms).await.unwrap();
        assert_eq!(receipt.provider, Provider::Sns);
        let entries = outbox.entries().await.unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].body, "hello");
    }
}
