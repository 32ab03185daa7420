//! The job queue, the SNS and SES stand-ins (the outbox) and the device registry.

use super::*;

/// Jobs in memory, one FIFO per channel.
#[derive(Default)]
pub struct MemoryQueue {
    queues: Mutex<HashMap<Channel, VecDeque<DeliveryJob>>>,
    checks: Mutex<Vec<(flare_shared::domain::CheckJob, std::time::Duration)>>,
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
    pub fn take_checks(&self) -> Vec<(flare_shared::domain::CheckJob, std::time::Duration)> {
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
        check: &flare_shared::domain::CheckJob,
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
            SendError::transient(flare_shared::domain::FailReason::ProviderUnavailable)
                .with_source(e)
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
