//! In-memory adapters for every port: the unit tests' doubles, and the local runner's
//! stand-ins for SNS, SES and SQS.

use crate::domain::receipt::ReceiptKey;
use crate::domain::{
    Channel, CommunicationSettings, ControlCenterId, DeliveryJob, DeliveryRecord, EmailSettings,
    Notification, NotificationId, OrgId, Platform, Provider, RecipientRef, SmsSettings, User,
    UserId,
};
use crate::ports::*;
use anyhow::Context;
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

#[derive(Default, Serialize, Deserialize)]
struct SettingsState {
    sms: BTreeMap<String, SmsSettings>,
    email: BTreeMap<String, EmailSettings>,
    communication: BTreeMap<String, CommunicationSettings>,
}

#[derive(Default)]
pub struct MemorySettings {
    inner: Persisted<SettingsState>,
}

impl MemorySettings {
    /// Settings kept in `path` across restarts.
    pub fn open(path: PathBuf) -> anyhow::Result<Self> {
        Ok(Self {
            inner: Persisted::open(path)?,
        })
    }
}

#[async_trait]
impl SettingsStore for MemorySettings {
    async fn get_sms(&self, org: &OrgId, cc: &ControlCenterId) -> StoreResult<Option<SmsSettings>> {
        Ok(self
            .inner
            .read(|s| s.sms.get(&key(org, cc.as_str())).cloned()))
    }
    async fn list_sms(&self, org: &OrgId) -> StoreResult<Vec<SmsSettings>> {
        let prefix = key(org, "");
        Ok(self.inner.read(|s| {
            s.sms
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(_, v)| v.clone())
                .collect()
        }))
    }
    async fn put_sms(&self, org: &OrgId, v: &SmsSettings) -> StoreResult<()> {
        self.inner.write(|s| {
            s.sms
                .insert(key(org, v.control_center_id.as_str()), v.clone());
        })
    }
    async fn put_sms_if(
        &self,
        org: &OrgId,
        v: &SmsSettings,
        expect: Expect<'_>,
    ) -> StoreResult<bool> {
        let k = key(org, v.control_center_id.as_str());
        self.inner.write(|s| {
            let stored = s.sms.get(&k).map(|o| o.secrets_at.as_deref());
            let ok = expect.matches(stored);
            if ok {
                s.sms.insert(k, v.clone());
            }
            ok
        })
    }
    async fn delete_sms(
        &self,
        org: &OrgId,
        cc: &ControlCenterId,
        at: Option<&str>,
    ) -> StoreResult<bool> {
        let k = key(org, cc.as_str());
        self.inner.write(|s| {
            let stored = s.sms.get(&k).map(|o| o.secrets_at.as_deref());
            Expect::At(at).matches(stored) && s.sms.remove(&k).is_some()
        })
    }
    async fn get_email(&self, org: &OrgId) -> StoreResult<Option<EmailSettings>> {
        Ok(self.inner.read(|s| s.email.get(org.as_str()).cloned()))
    }
    async fn put_email(&self, org: &OrgId, v: &EmailSettings) -> StoreResult<()> {
        self.inner.write(|s| {
            s.email.insert(org.to_string(), v.clone());
        })
    }
    async fn put_email_if(
        &self,
        org: &OrgId,
        v: &EmailSettings,
        expect: Expect<'_>,
    ) -> StoreResult<bool> {
        self.inner.write(|s| {
            let stored = s.email.get(org.as_str()).map(EmailSettings::secrets_at);
            let ok = expect.matches(stored);
            if ok {
                s.email.insert(org.to_string(), v.clone());
            }
            ok
        })
    }
    async fn delete_email(&self, org: &OrgId, at: Option<&str>) -> StoreResult<bool> {
        self.inner.write(|s| {
            let stored = s.email.get(org.as_str()).map(EmailSettings::secrets_at);
            Expect::At(at).matches(stored) && s.email.remove(org.as_str()).is_some()
        })
    }
    async fn get_communication(&self, org: &OrgId) -> StoreResult<Option<CommunicationSettings>> {
        Ok(self
            .inner
            .read(|s| s.communication.get(org.as_str()).copied()))
    }
    async fn put_communication(&self, org: &OrgId, v: &CommunicationSettings) -> StoreResult<()> {
        self.inner.write(|s| {
            s.communication.insert(org.to_string(), *v);
        })
    }
}

#[derive(Default)]
pub struct MemoryDirectory {
    users: Persisted<BTreeMap<String, User>>,
}

impl MemoryDirectory {
    /// Users kept in `path` across restarts.
    pub fn open(path: PathBuf) -> anyhow::Result<Self> {
        Ok(Self {
            users: Persisted::open(path)?,
        })
    }
}

#[async_trait]
impl Directory for MemoryDirectory {
    async fn get_user(&self, org: &OrgId, id: &UserId) -> StoreResult<Option<User>> {
        Ok(self.users.read(|u| u.get(&key(org, id.as_str())).cloned()))
    }
    async fn get_users(&self, org: &OrgId, ids: &[UserId]) -> StoreResult<Vec<User>> {
        Ok(self.users.read(|u| {
            ids.iter()
                .filter_map(|id| u.get(&key(org, id.as_str())).cloned())
                .collect()
        }))
    }
    async fn list_users(&self, org: &OrgId) -> StoreResult<Vec<User>> {
        let prefix = key(org, "");
        Ok(self.users.read(|u| {
            u.range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(_, v)| v.clone())
                .collect()
        }))
    }
    async fn put_user(&self, org: &OrgId, user: &User) -> StoreResult<()> {
        self.users.write(|u| {
            u.insert(key(org, user.user_id.as_str()), user.clone());
        })
    }
    async fn delete_user(&self, org: &OrgId, id: &UserId) -> StoreResult<bool> {
        self.users
            .write(|u| u.remove(&key(org, id.as_str())).is_some())
    }
    async fn update_user(
        &self,
        org: &OrgId,
        id: &UserId,
        change: &(dyn for<'u> Fn(&'u mut User) + Send + Sync),
    ) -> StoreResult<Option<User>> {
        // Under the lock: nothing can write in between.
        self.users.write(|u| {
            u.get_mut(&key(org, id.as_str())).map(|user| {
                change(user);
                user.clone()
            })
        })
    }
    async fn create_user(&self, org: &OrgId, user: &User) -> StoreResult<bool> {
        self.users.write(|u| {
            let k = key(org, user.user_id.as_str());
            if u.contains_key(&k) {
                return false;
            }
            u.insert(k, user.clone());
            true
        })
    }
}

/// Secrets in memory, or in their own file (mode 0600) apart from the settings.
#[derive(Default)]
pub struct MemorySecrets {
    secrets: Persisted<BTreeMap<String, String>>,
}

impl MemorySecrets {
    pub fn open(path: PathBuf) -> anyhow::Result<Self> {
        Ok(Self {
            secrets: Persisted::open(path)?,
        })
    }

    /// How many secrets are stored (tests check deletes).
    pub fn len(&self) -> usize {
        self.secrets.read(BTreeMap::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const LOCAL_PREFIX: &str = "flare";

#[async_trait]
impl SecretStore for MemorySecrets {
    async fn get(&self, k: &SecretKey) -> StoreResult<Option<SecretString>> {
        Ok(self.secrets.read(|s| {
            s.get(&k.name(LOCAL_PREFIX))
                .map(|v| SecretString::from(v.clone()))
        }))
    }
    async fn put(&self, k: &SecretKey, value: &SecretString) -> StoreResult<()> {
        self.secrets.write(|s| {
            s.insert(k.name(LOCAL_PREFIX), value.expose_secret().to_string());
        })
    }
    async fn delete(&self, k: &SecretKey) -> StoreResult<()> {
        self.secrets.write(|s| {
            s.remove(&k.name(LOCAL_PREFIX));
        })
    }
}

type RecordKey = (String, crate::domain::Slot);

#[derive(Default)]
struct LogEntry {
    notification: Option<Notification>,
    records: BTreeMap<RecordKey, DeliveryRecord>,
    acks: BTreeMap<UserId, chrono::DateTime<chrono::Utc>>,
}

/// The delivery log in memory, with the same claim semantics as the DynamoDB one.
#[derive(Default)]
pub struct MemoryDeliveryLog {
    entries: Mutex<HashMap<(OrgId, NotificationId), LogEntry>>,
    /// Receipt key → the record it names.
    #[allow(clippy::type_complexity)]
    receipts: Mutex<HashMap<String, Vec<(OrgId, NotificationId, String, crate::domain::Slot)>>>,
}

impl MemoryDeliveryLog {
    pub fn acks(&self, org: &OrgId, id: &NotificationId) -> Vec<UserId> {
        lock(&self.entries)
            .get(&(org.clone(), id.clone()))
            .map(|e| e.acks.keys().cloned().collect())
            .unwrap_or_default()
    }
}

#[async_trait]
impl DeliveryLog for MemoryDeliveryLog {
    async fn create_notification(&self, n: &Notification) -> StoreResult<Created> {
        let mut entries = lock(&self.entries);
        let e = entries
            .entry((n.org_id.clone(), n.notification_id.clone()))
            .or_default();
        if e.notification.is_some() {
            return Ok(Created::AlreadyExists);
        }
        e.notification = Some(n.clone());
        Ok(Created::New)
    }

    async fn get_notification(
        &self,
        org: &OrgId,
        id: &NotificationId,
    ) -> StoreResult<Option<Logged>> {
        let entries = lock(&self.entries);
        Ok(entries.get(&(org.clone(), id.clone())).and_then(|e| {
            e.notification.clone().map(|n| Logged {
                notification: n,
                records: e.records.values().cloned().collect(),
                acks: e.acks.iter().map(|(u, t)| (u.clone(), *t)).collect(),
            })
        }))
    }

    async fn recipient_records(
        &self,
        org: &OrgId,
        id: &NotificationId,
        recipient: &RecipientRef,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let entries = lock(&self.entries);
        let key = recipient.key();
        Ok(entries
            .get(&(org.clone(), id.clone()))
            .map(|e| {
                // The recipient's records are one run of the key order.
                let first = crate::domain::Slot::from(Channel::Push);
                e.records
                    .range((key.clone(), first)..)
                    .take_while(|((k, _), _)| *k == key)
                    .map(|(_, r)| r.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn put_records(&self, n: &Notification, records: &[DeliveryRecord]) -> StoreResult<()> {
        let org = &n.org_id;
        let mut entries = lock(&self.entries);
        for r in records {
            let e = entries
                .entry((org.clone(), r.notification_id.clone()))
                .or_default();
            e.records
                .entry((r.recipient.key(), r.slot()))
                .or_insert_with(|| r.clone());
        }
        Ok(())
    }

    async fn claim(
        &self,
        org: &OrgId,
        id: &NotificationId,
        recipient: &RecipientRef,
        slot: crate::domain::Slot,
        lease: std::time::Duration,
    ) -> StoreResult<Claim> {
        let mut entries = lock(&self.entries);
        let Some(r) = entries
            .get_mut(&(org.clone(), id.clone()))
            .and_then(|e| e.records.get_mut(&(recipient.key(), slot)))
        else {
            return Ok(Claim::Missing);
        };
        let mut state = RecordState::of(r);
        let claim = state.claim(chrono::Utc::now(), lease);
        state.apply(r);
        Ok(claim)
    }

    async fn finish(
        &self,
        org: &OrgId,
        id: &NotificationId,
        recipient: &RecipientRef,
        slot: crate::domain::Slot,
        outcome: Finish,
    ) -> StoreResult<bool> {
        let mut entries = lock(&self.entries);
        let Some(r) = entries
            .get_mut(&(org.clone(), id.clone()))
            .and_then(|e| e.records.get_mut(&(recipient.key(), slot)))
        else {
            return Ok(false);
        };
        let mut state = RecordState::of(r);
        let moved = state.finish(outcome, chrono::Utc::now());
        if moved && let Some(k) = state.receipt_key.take() {
            lock(&self.receipts).entry(k).or_default().push((
                org.clone(),
                id.clone(),
                recipient.key(),
                slot,
            ));
        }
        state.apply(r);
        Ok(moved)
    }

    async fn receipt(&self, key: &ReceiptKey, outcome: Finish) -> StoreResult<ReceiptMatch> {
        // A key two deliveries share (a gateway that reuses its ids) names neither.
        let Some((org, id, recipient, slot)) = lock(&self.receipts)
            .get(key.as_str())
            .filter(|all| all.len() == 1)
            .and_then(|all| all.first().cloned())
        else {
            return Ok(ReceiptMatch::Unknown);
        };
        let mut entries = lock(&self.entries);
        let Some(r) = entries
            .get_mut(&(org.clone(), id.clone()))
            .and_then(|e| e.records.get_mut(&(recipient.clone(), slot)))
        else {
            return Ok(ReceiptMatch::Unknown);
        };
        let mut state = RecordState::of(r);
        let moved = state.finish(outcome, chrono::Utc::now());
        state.apply(r);
        Ok(ReceiptMatch::Found {
            target: ReceiptTarget {
                org_id: org,
                notification_id: id,
                recipient,
                channel: slot.channel,
            },
            moved,
        })
    }

    async fn list_notifications(
        &self,
        org: &OrgId,
        after: Option<&ListPosition>,
        limit: usize,
    ) -> StoreResult<Vec<NotificationSummary>> {
        let entries = lock(&self.entries);
        let mut out: Vec<(ListPosition, NotificationSummary)> = entries
            .iter()
            .filter(|((o, _), _)| o == org)
            .filter_map(|(_, e)| {
                let n = e.notification.clone()?;
                let mut counts = StatusCounts::default();
                for r in e.records.values() {
                    counts.add(r.status);
                }
                Some((
                    ListPosition::of(&n),
                    NotificationSummary {
                        notification: n,
                        counts,
                    },
                ))
            })
            .filter(|(p, _)| after.is_none_or(|a| p < a))
            .collect();
        out.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(out.into_iter().take(limit).map(|(_, s)| s).collect())
    }

    async fn ack(&self, org: &OrgId, id: &NotificationId, user: &UserId) -> StoreResult<bool> {
        let mut entries = lock(&self.entries);
        match entries.get_mut(&(org.clone(), id.clone())) {
            Some(e) if e.notification.is_some() => match e.acks.entry(user.clone()) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(chrono::Utc::now());
                    Ok(true)
                }
                std::collections::btree_map::Entry::Occupied(_) => Ok(false),
            },
            _ => Ok(false),
        }
    }
}

/// Jobs in memory, one FIFO per channel.
#[derive(Default)]
pub struct MemoryQueue {
    queues: Mutex<HashMap<Channel, VecDeque<DeliveryJob>>>,
    checks: Mutex<Vec<(crate::domain::CheckJob, std::time::Duration)>>,
}

impl MemoryQueue {
    pub fn pop(&self, channel: Channel) -> Option<DeliveryJob> {
        lock(&self.queues).get_mut(&channel)?.pop_front()
    }

    pub fn len(&self, channel: Channel) -> usize {
        lock(&self.queues).get(&channel).map_or(0, VecDeque::len)
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.queues).values().all(VecDeque::is_empty)
    }

    /// The checks scheduled since the last call, with their delays (the caller runs
    /// them, at whatever time it pretends it is).
    pub fn take_checks(&self) -> Vec<(crate::domain::CheckJob, std::time::Duration)> {
        std::mem::take(&mut *lock(&self.checks))
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn enqueue(&self, jobs: &[DeliveryJob]) -> Result<(), QueueError> {
        let mut q = lock(&self.queues);
        for j in jobs {
            q.entry(j.channel).or_default().push_back(j.clone());
        }
        Ok(())
    }

    async fn schedule(
        &self,
        check: &crate::domain::CheckJob,
        delay: std::time::Duration,
    ) -> Result<(), QueueError> {
        lock(&self.checks).push((check.clone(), delay));
        Ok(())
    }
}

/// What a stand-in provider was handed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutboxEntry {
    pub notification_id: NotificationId,
    pub channel: Channel,
    pub provider: Provider,
    pub to: String,
    pub from: Option<String>,
    pub subject: Option<String>,
    pub body: String,
    /// The id the stand-in answered (what a provider's receipt names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
}

/// Where the stand-in providers keep what they were handed: in memory by default, in
/// the local runner's database so the outbox survives a restart.
#[async_trait]
pub trait OutboxJournal: Send + Sync {
    /// Appends `entry`; answers its sequence number (1, 2, ...), which makes the
    /// provider message id.
    async fn append(&self, entry: &OutboxEntry) -> anyhow::Result<u64>;
    async fn entries(&self) -> anyhow::Result<Vec<OutboxEntry>>;
}

#[derive(Default)]
struct MemoryJournal(Mutex<Vec<OutboxEntry>>);

#[async_trait]
impl OutboxJournal for MemoryJournal {
    async fn append(&self, entry: &OutboxEntry) -> anyhow::Result<u64> {
        let mut sent = lock(&self.0);
        sent.push(entry.clone());
        Ok(sent.len() as u64)
    }
    async fn entries(&self) -> anyhow::Result<Vec<OutboxEntry>> {
        Ok(lock(&self.0).clone())
    }
}

/// A stand-in provider for every channel: records what it was handed and answers
/// scripted failures first (per destination), then success.
pub struct MemoryOutbox {
    provider_for: fn(Channel) -> Provider,
    journal: std::sync::Arc<dyn OutboxJournal>,
    failures: Mutex<HashMap<String, VecDeque<SendError>>>,
}

impl Default for MemoryOutbox {
    fn default() -> Self {
        Self::with_journal(std::sync::Arc::new(MemoryJournal::default()))
    }
}

impl MemoryOutbox {
    pub fn with_journal(journal: std::sync::Arc<dyn OutboxJournal>) -> Self {
        Self {
            provider_for: |c| match c {
                Channel::Push | Channel::Sms => Provider::Sns,
                Channel::Email => Provider::Ses,
            },
            journal,
            failures: Mutex::default(),
        }
    }

    pub async fn entries(&self) -> anyhow::Result<Vec<OutboxEntry>> {
        self.journal.entries().await
    }

    /// The next send to `to` (a phone, an address or an endpoint) fails with `err`.
    pub fn fail_next(&self, to: &str, err: SendError) {
        lock(&self.failures)
            .entry(to.to_string())
            .or_default()
            .push_back(err);
    }

    async fn record(&self, mut entry: OutboxEntry) -> Result<Receipt, SendError> {
        let scripted = lock(&self.failures)
            .get_mut(&entry.to)
            .and_then(VecDeque::pop_front);
        if let Some(err) = scripted {
            return Err(err);
        }
        let provider = entry.provider;
        // Unique, as SNS's and SES's are: a receipt names exactly one message.
        let id = format!("{}-{}", provider.as_str(), uuid::Uuid::new_v4().simple());
        entry.provider_message_id = Some(id.clone());
        // A stand-in that cannot record the send did not make it: the job retries.
        self.journal.append(&entry).await.map_err(|e| {
            SendError::transient(crate::domain::FailReason::ProviderUnavailable).with_source(e)
        })?;
        Ok(Receipt {
            provider,
            provider_message_id: Some(id),
        })
    }
}

#[async_trait]
impl PushSender for MemoryOutbox {
    async fn send(&self, p: &PushMessage) -> Result<Receipt, SendError> {
        self.record(OutboxEntry {
            notification_id: p.notification_id.clone(),
            channel: Channel::Push,
            provider: (self.provider_for)(Channel::Push),
            to: p.endpoint.clone(),
            from: None,
            subject: Some(p.message.title.clone()),
            body: p.message.body.clone(),
            provider_message_id: None,
        })
        .await
    }
}

#[async_trait]
impl SmsSender for MemoryOutbox {
    async fn send(&self, m: &SmsMessage) -> Result<Receipt, SendError> {
        self.record(OutboxEntry {
            notification_id: m.notification_id.clone(),
            channel: Channel::Sms,
            provider: (self.provider_for)(Channel::Sms),
            to: m.to.to_string(),
            from: m.from.as_ref().map(|f| f.to_string()),
            subject: None,
            body: m.text.clone(),
            provider_message_id: None,
        })
        .await
    }
}

#[async_trait]
impl EmailSender for MemoryOutbox {
    async fn send(&self, m: &EmailMessage) -> Result<Receipt, SendError> {
        self.record(OutboxEntry {
            notification_id: m.notification_id.clone(),
            channel: Channel::Email,
            provider: (self.provider_for)(Channel::Email),
            to: m.to.to_string(),
            from: Some(m.from.to_string()),
            subject: Some(m.subject.clone()),
            body: m.text.clone(),
            provider_message_id: None,
        })
        .await
    }
}

/// Devices in memory: the endpoint is `local:<platform>:<token>`.
#[derive(Default)]
pub struct MemoryDevices {
    registered: Mutex<HashSet<String>>,
}

impl MemoryDevices {
    pub fn is_registered(&self, endpoint: &str) -> bool {
        lock(&self.registered).contains(endpoint)
    }
}

#[async_trait]
impl DeviceRegistry for MemoryDevices {
    async fn register(
        &self,
        platform: Platform,
        token: &str,
        _user: &UserId,
    ) -> Result<String, DeviceError> {
        let endpoint = format!("local:{}:{token}", platform.as_str());
        lock(&self.registered).insert(endpoint.clone());
        Ok(endpoint)
    }
    async fn unregister(&self, endpoint: &str) -> Result<(), DeviceError> {
        lock(&self.registered).remove(endpoint);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FailReason;

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
            to: crate::PhoneNumber::parse("+14155550100").unwrap(),
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

/// What the pipeline counted (tests).
#[derive(Debug, Default)]
pub struct MemoryMetrics {
    pub deliveries: Mutex<Vec<crate::ports::DeliveryMetric>>,
    /// Per new notification: its category and recipients.
    pub notifications: Mutex<Vec<(crate::domain::Category, usize)>>,
    pub acknowledgements: Mutex<Vec<crate::domain::Category>>,
}

impl crate::ports::Metrics for MemoryMetrics {
    fn delivery(&self, metric: &crate::ports::DeliveryMetric) {
        lock(&self.deliveries).push(metric.clone());
    }
    fn notification(&self, category: crate::domain::Category, recipients: usize) {
        lock(&self.notifications).push((category, recipients));
    }
    fn acknowledged(&self, category: crate::domain::Category) {
        lock(&self.acknowledgements).push(category);
    }
}

/// Providers' health in memory (the local runner: one process is every instance).
#[derive(Default)]
pub struct MemoryHealth {
    items: Mutex<HashMap<(OrgId, String), crate::domain::health::ProviderHealth>>,
}

#[async_trait]
impl HealthStore for MemoryHealth {
    async fn get(
        &self,
        org: &OrgId,
        scope: &crate::domain::health::HealthScope,
    ) -> StoreResult<crate::domain::health::ProviderHealth> {
        Ok(lock(&self.items)
            .get(&(org.clone(), scope.key()))
            .cloned()
            .unwrap_or_default())
    }

    async fn update(
        &self,
        org: &OrgId,
        scope: &crate::domain::health::HealthScope,
        change: &(
             dyn for<'h> Fn(&'h mut crate::domain::health::ProviderHealth) -> bool + Send + Sync
         ),
    ) -> StoreResult<crate::domain::health::ProviderHealth> {
        let mut items = lock(&self.items);
        let h = items.entry((org.clone(), scope.key())).or_default();
        change(h);
        Ok(h.clone())
    }
}

/// Pacing in one process (the local runner, where one process is every instance): per
/// provider, requests start on a schedule of evenly spaced slots, `1.05 / per_second`
/// apart, so none comes in a burst and an urgent request never waits long: it takes the
/// next free slot before any normal request that waits. A request a little late for
/// its slot (up to [`PACE_SLACK`]) keeps the schedule, so timer lateness does not eat
/// the rate; one later than that starts it afresh. Then any `per_second` requests in a
/// row span at least `1.05 - 0.01` s: no second holds more than `per_second`, with
/// 40 ms left for the trips to the provider to differ. A 429's pause holds everyone.
#[derive(Default)]
pub struct MemoryPacer {
    providers: Mutex<HashMap<String, PaceState>>,
}

#[derive(Default)]
struct PaceState {
    next_at: Option<tokio::time::Instant>,
    paused_until: Option<tokio::time::Instant>,
    urgent_waiting: usize,
}

/// How long a normal request waits before looking again while urgent ones wait.
const YIELD: std::time::Duration = std::time::Duration::from_millis(2);

/// The spacing between requests at `per_second`.
pub fn pace_interval(per_second: u32) -> std::time::Duration {
    std::time::Duration::from_secs_f64(1.05 / f64::from(per_second.max(1)))
}

/// How late a request may start for its slot and still keep the schedule.
pub const PACE_SLACK: std::time::Duration = std::time::Duration::from_millis(10);

#[async_trait]
impl Pacer for MemoryPacer {
    async fn acquire(&self, provider: &str, per_second: u32, lane: crate::domain::Lane) {
        let urgent = lane == crate::domain::Lane::Urgent;
        // Counted while it waits, and uncounted however the wait ends (a caller cut off
        // at its deadline drops this future): a stale count would hold normal traffic.
        struct Waiting<'a>(Option<(&'a MemoryPacer, &'a str)>);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                if let Some((pacer, provider)) = self.0
                    && let Some(p) = lock(&pacer.providers).get_mut(provider)
                {
                    p.urgent_waiting = p.urgent_waiting.saturating_sub(1);
                }
            }
        }
        if urgent {
            lock(&self.providers)
                .entry(provider.to_string())
                .or_default()
                .urgent_waiting += 1;
        }
        let _waiting = Waiting(urgent.then_some((self, provider)));
        let interval = pace_interval(per_second);
        loop {
            let wait = {
                let mut all = lock(&self.providers);
                let p = all.entry(provider.to_string()).or_default();
                let now = tokio::time::Instant::now();
                let paused = p.paused_until.filter(|u| *u > now);
                match (paused, p.next_at) {
                    (Some(until), _) => Some(until - now),
                    (None, Some(slot)) if slot > now => Some(slot - now),
                    _ if !urgent && p.urgent_waiting > 0 => Some(YIELD),
                    (None, slot) => {
                        let on_time = slot.filter(|s| now - *s <= PACE_SLACK);
                        p.next_at = Some(on_time.unwrap_or(now) + interval);
                        None
                    }
                }
            };
            match wait {
                None => return,
                Some(d) => tokio::time::sleep(d).await,
            }
        }
    }

    async fn pause(&self, provider: &str, for_: std::time::Duration) {
        let until = tokio::time::Instant::now() + for_;
        let mut all = lock(&self.providers);
        let p = all.entry(provider.to_string()).or_default();
        if p.paused_until.is_none_or(|u| u < until) {
            p.paused_until = Some(until);
        }
    }
}
