//! In-memory adapters for every port: the unit tests' doubles, and the local runner's
//! stand-ins for SNS, SES and SQS.

use crate::domain::{
    Channel, CommunicationSettings, ControlCenterId, DeliveryJob, DeliveryRecord, DeliveryStatus,
    EmailSettings, Notification, NotificationId, OrgId, Platform, Provider, RecipientRef,
    SmsSettings, User, UserId,
};
use crate::ports::*;
use async_trait::async_trait;
use secrecy::SecretString;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic in another test thread must not poison every later call.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
pub struct MemorySettings {
    sms: Mutex<BTreeMap<(OrgId, ControlCenterId), SmsSettings>>,
    email: Mutex<HashMap<OrgId, EmailSettings>>,
    communication: Mutex<HashMap<OrgId, CommunicationSettings>>,
}

#[async_trait]
impl SettingsStore for MemorySettings {
    async fn get_sms(&self, org: &OrgId, cc: &ControlCenterId) -> StoreResult<Option<SmsSettings>> {
        Ok(lock(&self.sms).get(&(org.clone(), cc.clone())).cloned())
    }
    async fn list_sms(&self, org: &OrgId) -> StoreResult<Vec<SmsSettings>> {
        Ok(lock(&self.sms)
            .iter()
            .filter(|((o, _), _)| o == org)
            .map(|(_, s)| s.clone())
            .collect())
    }
    async fn put_sms(&self, org: &OrgId, s: &SmsSettings) -> StoreResult<()> {
        lock(&self.sms).insert((org.clone(), s.control_center_id.clone()), s.clone());
        Ok(())
    }
    async fn delete_sms(&self, org: &OrgId, cc: &ControlCenterId) -> StoreResult<bool> {
        Ok(lock(&self.sms).remove(&(org.clone(), cc.clone())).is_some())
    }
    async fn get_email(&self, org: &OrgId) -> StoreResult<Option<EmailSettings>> {
        Ok(lock(&self.email).get(org).cloned())
    }
    async fn put_email(&self, org: &OrgId, s: &EmailSettings) -> StoreResult<()> {
        lock(&self.email).insert(org.clone(), s.clone());
        Ok(())
    }
    async fn delete_email(&self, org: &OrgId) -> StoreResult<bool> {
        Ok(lock(&self.email).remove(org).is_some())
    }
    async fn get_communication(&self, org: &OrgId) -> StoreResult<Option<CommunicationSettings>> {
        Ok(lock(&self.communication).get(org).copied())
    }
    async fn put_communication(&self, org: &OrgId, s: &CommunicationSettings) -> StoreResult<()> {
        lock(&self.communication).insert(org.clone(), *s);
        Ok(())
    }
}

#[derive(Default)]
pub struct MemoryDirectory {
    users: Mutex<HashMap<(OrgId, UserId), User>>,
}

#[async_trait]
impl Directory for MemoryDirectory {
    async fn get_user(&self, org: &OrgId, id: &UserId) -> StoreResult<Option<User>> {
        Ok(lock(&self.users).get(&(org.clone(), id.clone())).cloned())
    }
    async fn get_users(&self, org: &OrgId, ids: &[UserId]) -> StoreResult<Vec<User>> {
        let users = lock(&self.users);
        Ok(ids
            .iter()
            .filter_map(|id| users.get(&(org.clone(), id.clone())).cloned())
            .collect())
    }
    async fn put_user(&self, org: &OrgId, user: &User) -> StoreResult<()> {
        lock(&self.users).insert((org.clone(), user.user_id.clone()), user.clone());
        Ok(())
    }
    async fn delete_user(&self, org: &OrgId, id: &UserId) -> StoreResult<bool> {
        Ok(lock(&self.users)
            .remove(&(org.clone(), id.clone()))
            .is_some())
    }
}

#[derive(Default)]
pub struct MemorySecrets {
    secrets: Mutex<HashMap<SecretKey, SecretString>>,
}

#[async_trait]
impl SecretStore for MemorySecrets {
    async fn get(&self, key: &SecretKey) -> StoreResult<Option<SecretString>> {
        Ok(lock(&self.secrets).get(key).cloned())
    }
    async fn put(&self, key: &SecretKey, value: &SecretString) -> StoreResult<()> {
        lock(&self.secrets).insert(key.clone(), value.clone());
        Ok(())
    }
    async fn delete(&self, key: &SecretKey) -> StoreResult<()> {
        lock(&self.secrets).remove(key);
        Ok(())
    }
}

type RecordKey = (String, Channel);

#[derive(Default)]
struct LogEntry {
    notification: Option<Notification>,
    records: BTreeMap<RecordKey, DeliveryRecord>,
    acks: HashSet<UserId>,
}

/// The delivery log in memory, with the same claim semantics as the DynamoDB one.
#[derive(Default)]
pub struct MemoryDeliveryLog {
    entries: Mutex<HashMap<(OrgId, NotificationId), LogEntry>>,
}

impl MemoryDeliveryLog {
    pub fn acks(&self, org: &OrgId, id: &NotificationId) -> Vec<UserId> {
        lock(&self.entries)
            .get(&(org.clone(), id.clone()))
            .map(|e| e.acks.iter().cloned().collect())
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
    ) -> StoreResult<Option<(Notification, Vec<DeliveryRecord>)>> {
        let entries = lock(&self.entries);
        Ok(entries.get(&(org.clone(), id.clone())).and_then(|e| {
            e.notification
                .clone()
                .map(|n| (n, e.records.values().cloned().collect()))
        }))
    }

    async fn put_records(&self, org: &OrgId, records: &[DeliveryRecord]) -> StoreResult<()> {
        let mut entries = lock(&self.entries);
        for r in records {
            let e = entries
                .entry((org.clone(), r.notification_id.clone()))
                .or_default();
            e.records
                .entry((r.recipient.key(), r.channel))
                .or_insert_with(|| r.clone());
        }
        Ok(())
    }

    async fn claim(
        &self,
        org: &OrgId,
        id: &NotificationId,
        recipient: &RecipientRef,
        channel: Channel,
    ) -> StoreResult<Claim> {
        let mut entries = lock(&self.entries);
        let Some(r) = entries
            .get_mut(&(org.clone(), id.clone()))
            .and_then(|e| e.records.get_mut(&(recipient.key(), channel)))
        else {
            return Ok(Claim::Missing);
        };
        if r.status != DeliveryStatus::Pending {
            return Ok(Claim::AlreadyDone(r.status));
        }
        r.attempts += 1;
        r.awaiting_push = false;
        Ok(Claim::Claimed {
            attempts: r.attempts,
        })
    }

    async fn finish(
        &self,
        org: &OrgId,
        id: &NotificationId,
        recipient: &RecipientRef,
        channel: Channel,
        outcome: Finish,
    ) -> StoreResult<()> {
        let mut entries = lock(&self.entries);
        let r = entries
            .get_mut(&(org.clone(), id.clone()))
            .and_then(|e| e.records.get_mut(&(recipient.key(), channel)))
            .ok_or_else(|| {
                StoreError::Conflict(format!(
                    "no record {}/{}",
                    recipient.key(),
                    channel.as_str()
                ))
            })?;
        match outcome {
            Finish::Sent {
                provider,
                provider_message_id,
            } => {
                r.status = DeliveryStatus::Sent;
                r.provider = Some(provider);
                r.provider_message_id = provider_message_id;
                r.reason = None;
            }
            Finish::Failed { reason } => {
                r.status = DeliveryStatus::Failed;
                r.reason = Some(reason);
            }
            Finish::Skipped { reason } => {
                r.status = DeliveryStatus::Skipped;
                r.reason = Some(reason);
            }
            Finish::Retry { reason } => r.reason = Some(reason),
            Finish::Release => r.awaiting_push = false,
        }
        Ok(())
    }

    async fn ack(&self, org: &OrgId, id: &NotificationId, user: &UserId) -> StoreResult<bool> {
        let mut entries = lock(&self.entries);
        match entries.get_mut(&(org.clone(), id.clone())) {
            Some(e) if e.notification.is_some() => {
                e.acks.insert(user.clone());
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Jobs in memory, one FIFO per channel.
#[derive(Default)]
pub struct MemoryQueue {
    queues: Mutex<HashMap<Channel, VecDeque<DeliveryJob>>>,
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
}

/// What a stand-in provider was handed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutboxEntry {
    pub notification_id: NotificationId,
    pub channel: Channel,
    pub provider: Provider,
    pub to: String,
    pub from: Option<String>,
    pub subject: Option<String>,
    pub body: String,
}

/// A stand-in provider for every channel: records what it was handed and answers
/// scripted failures first (per destination), then success.
pub struct MemoryOutbox {
    provider_for: fn(Channel) -> Provider,
    sent: Mutex<Vec<OutboxEntry>>,
    failures: Mutex<HashMap<String, VecDeque<SendError>>>,
}

impl Default for MemoryOutbox {
    fn default() -> Self {
        Self {
            provider_for: |c| match c {
                Channel::Push | Channel::Sms => Provider::Sns,
                Channel::Email => Provider::Ses,
            },
            sent: Mutex::default(),
            failures: Mutex::default(),
        }
    }
}

impl MemoryOutbox {
    pub fn entries(&self) -> Vec<OutboxEntry> {
        lock(&self.sent).clone()
    }

    /// The next send to `to` (a phone, an address or an endpoint) fails with `err`.
    pub fn fail_next(&self, to: &str, err: SendError) {
        lock(&self.failures)
            .entry(to.to_string())
            .or_default()
            .push_back(err);
    }

    fn record(&self, entry: OutboxEntry) -> Result<Receipt, SendError> {
        if let Some(err) = lock(&self.failures)
            .get_mut(&entry.to)
            .and_then(VecDeque::pop_front)
        {
            return Err(err);
        }
        let mut sent = lock(&self.sent);
        let id = format!("{}-{}", entry.provider.as_str(), sent.len() + 1);
        let provider = entry.provider;
        sent.push(entry);
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
        })
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
        })
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
        })
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
    ) -> StoreResult<String> {
        let endpoint = format!("local:{}:{token}", platform.as_str());
        lock(&self.registered).insert(endpoint.clone());
        Ok(endpoint)
    }
    async fn unregister(&self, endpoint: &str) -> StoreResult<()> {
        lock(&self.registered).remove(endpoint);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Category, Message};

    fn notification() -> Notification {
        Notification {
            notification_id: NotificationId::parse("n-1").unwrap(),
            org_id: OrgId::parse("acme").unwrap(),
            category: Category::Dispatch,
            incident_id: None,
            control_center_id: ControlCenterId::main(),
            message: Message::default(),
            created_at: chrono::Utc::now(),
        }
    }

    fn record(status: DeliveryStatus) -> DeliveryRecord {
        DeliveryRecord {
            notification_id: NotificationId::parse("n-1").unwrap(),
            recipient: RecipientRef::User(UserId::parse("u-1").unwrap()),
            channel: Channel::Sms,
            status,
            reason: None,
            attempts: 0,
            fallback: false,
            provider: Some(Provider::Sns),
            provider_message_id: None,
            destination: None,
            awaiting_push: false,
        }
    }

    #[tokio::test]
    async fn a_notification_is_created_once() {
        let log = MemoryDeliveryLog::default();
        assert_eq!(
            log.create_notification(&notification()).await.unwrap(),
            Created::New
        );
        assert_eq!(
            log.create_notification(&notification()).await.unwrap(),
            Created::AlreadyExists
        );
    }

    #[tokio::test]
    async fn a_claimed_and_sent_record_is_never_claimed_again() {
        let log = MemoryDeliveryLog::default();
        let n = notification();
        let r = record(DeliveryStatus::Pending);
        log.create_notification(&n).await.unwrap();
        log.put_records(&n.org_id, std::slice::from_ref(&r))
            .await
            .unwrap();
        let claim = log
            .claim(&n.org_id, &n.notification_id, &r.recipient, r.channel)
            .await
            .unwrap();
        assert_eq!(claim, Claim::Claimed { attempts: 1 });
        log.finish(
            &n.org_id,
            &n.notification_id,
            &r.recipient,
            r.channel,
            Finish::Sent {
                provider: Provider::Sns,
                provider_message_id: Some("m-1".into()),
            },
        )
        .await
        .unwrap();
        let again = log
            .claim(&n.org_id, &n.notification_id, &r.recipient, r.channel)
            .await
            .unwrap();
        assert_eq!(again, Claim::AlreadyDone(DeliveryStatus::Sent));
        // A replay of the router's writes does not reset the record.
        log.put_records(&n.org_id, &[r]).await.unwrap();
        let (_, records) = log
            .get_notification(&n.org_id, &n.notification_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(records[0].status, DeliveryStatus::Sent);
        assert_eq!(records[0].attempts, 1);
    }

    #[tokio::test]
    async fn another_orgs_notification_is_not_found() {
        let log = MemoryDeliveryLog::default();
        let n = notification();
        log.create_notification(&n).await.unwrap();
        let other = OrgId::parse("other").unwrap();
        assert!(
            log.get_notification(&other, &n.notification_id)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn the_outbox_records_sends_and_answers_scripted_failures_first() {
        let outbox = MemoryOutbox::default();
        let sms = SmsMessage {
            notification_id: NotificationId::parse("n-1").unwrap(),
            org_id: OrgId::parse("acme").unwrap(),
            control_center_id: ControlCenterId::main(),
            to: crate::PhoneNumber::parse("+14155550100").unwrap(),
            from: None,
            text: "hello".into(),
        };
        outbox.fail_next("+14155550100", SendError::transient("throttled"));
        assert!(
            SmsSender::send(&outbox, &sms)
                .await
                .unwrap_err()
                .is_transient()
        );
        let receipt = SmsSender::send(&outbox, &sms).await.unwrap();
        assert_eq!(receipt.provider, Provider::Sns);
        assert_eq!(outbox.entries().len(), 1);
        assert_eq!(outbox.entries()[0].body, "hello");
    }
}
