//! Ports: one trait per outside concern. Adapters (in-memory, AWS, HTTP, SMTP) implement
//! them; handlers and the router depend only on these. No AWS SDK or Lambda type appears
//! in a signature here.

use crate::domain::reason::wire_reason;
use std::time::Duration;

use crate::domain::receipt::ReceiptKey;
use crate::domain::{
    Channel, CheckJob, CommunicationSettings, ControlCenterId, DeliveryJob, DeliveryRecord,
    DeliveryStatus, DeviceId, EmailAddress, EmailSettings, FailReason, Message, Notification,
    NotificationId, OrgId, PhoneNumber, Provider, RecipientRef, SenderId, Slot, SmsSettings, User,
    UserId,
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

/// Every setting of one organization, as one read gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllSettings {
    /// Per control center, in id order.
    pub sms: Vec<SmsSettings>,
    pub email: Option<EmailSettings>,
    pub communication: Option<CommunicationSettings>,
}

impl AllSettings {
    /// The SMS settings a control center sends with: its own, else `main`'s.
    pub fn effective_sms(&self, cc: &ControlCenterId) -> Option<&SmsSettings> {
        self.sms
            .iter()
            .find(|s| &s.control_center_id == cc)
            .or_else(|| self.sms.iter().find(|s| s.control_center_id.is_main()))
    }
}

/// Settings, per organization (SMS per control center, email, communication).
#[async_trait]
pub trait SettingsStore: Send + Sync {
    /// Everything at once: the router and `GET /v1/settings` need all of it, and an
    /// adapter can read it in one call (DynamoDB: one Query on the organization's
    /// partition). By default, three reads.
    async fn all(&self, org: &OrgId) -> StoreResult<AllSettings> {
        Ok(AllSettings {
            sms: self.list_sms(org).await?,
            email: self.get_email(org).await?,
            communication: self.get_communication(org).await?,
        })
    }
    async fn get_sms(&self, org: &OrgId, cc: &ControlCenterId) -> StoreResult<Option<SmsSettings>>;
    /// The SMS settings a control center sends with: its own, else `main`'s.
    async fn effective_sms(
        &self,
        org: &OrgId,
        cc: &ControlCenterId,
    ) -> StoreResult<Option<SmsSettings>> {
        match self.get_sms(org, cc).await? {
            Some(own) => Ok(Some(own)),
            None if !cc.is_main() => self.get_sms(org, &ControlCenterId::main()).await,
            None => Ok(None),
        }
    }
    async fn list_sms(&self, org: &OrgId) -> StoreResult<Vec<SmsSettings>>;
    /// Unconditional (seeding and tests); the API saves with [`Self::put_sms_if`].
    async fn put_sms(&self, org: &OrgId, settings: &SmsSettings) -> StoreResult<()>;
    /// Saves only over what `expect` says is stored; `false` (nothing written) when
    /// another save or delete came first.
    async fn put_sms_if(
        &self,
        org: &OrgId,
        settings: &SmsSettings,
        expect: Expect<'_>,
    ) -> StoreResult<bool>;
    /// Deletes the settings saved at secrets revision `at`; `false` when there are none,
    /// or they were saved again since.
    async fn delete_sms(
        &self,
        org: &OrgId,
        cc: &ControlCenterId,
        at: Option<&str>,
    ) -> StoreResult<bool>;
    async fn get_email(&self, org: &OrgId) -> StoreResult<Option<EmailSettings>>;
    /// Unconditional (seeding and tests); the API saves with [`Self::put_email_if`].
    async fn put_email(&self, org: &OrgId, settings: &EmailSettings) -> StoreResult<()>;
    /// As [`Self::put_sms_if`].
    async fn put_email_if(
        &self,
        org: &OrgId,
        settings: &EmailSettings,
        expect: Expect<'_>,
    ) -> StoreResult<bool>;
    /// As [`Self::delete_sms`].
    async fn delete_email(&self, org: &OrgId, at: Option<&str>) -> StoreResult<bool>;
    /// `None` before the first save (callers then use the defaults).
    async fn get_communication(&self, org: &OrgId) -> StoreResult<Option<CommunicationSettings>>;
    async fn put_communication(
        &self,
        org: &OrgId,
        settings: &CommunicationSettings,
    ) -> StoreResult<()>;
}

/// What a conditional settings write expects to find stored: nothing, or settings saved
/// at this secrets revision (`At(None)`: saved without one). Saves and deletes apply
/// only over what they read, so a username never ends up beside another save's password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect<'a> {
    Absent,
    At(Option<&'a str>),
}

impl Expect<'_> {
    /// Whether `stored` (its secrets revision, if any) is what was expected.
    pub fn matches(&self, stored: Option<Option<&str>>) -> bool {
        match (self, stored) {
            (Expect::Absent, None) => true,
            (Expect::At(want), Some(have)) => *want == have,
            _ => false,
        }
    }
}

/// The people Flare notifies.
#[async_trait]
pub trait Directory: Send + Sync {
    async fn get_user(&self, org: &OrgId, id: &UserId) -> StoreResult<Option<User>>;
    /// Many users at once; missing ones are left out. Order is not kept.
    async fn get_users(&self, org: &OrgId, ids: &[UserId]) -> StoreResult<Vec<User>>;
    /// Every user of the organization, in id order.
    async fn list_users(&self, org: &OrgId) -> StoreResult<Vec<User>>;
    async fn put_user(&self, org: &OrgId, user: &User) -> StoreResult<()>;
    async fn delete_user(&self, org: &OrgId, id: &UserId) -> StoreResult<bool>;
    /// Changes a stored user as one step: `change` edits the user as stored, and the edit
    /// is written only if nobody wrote the user in between; otherwise it runs again on the
    /// fresh copy. So two device registrations at once both land (a read, change and
    /// blind write lost one of them). `None` when there is no such user.
    async fn update_user(
        &self,
        org: &OrgId,
        id: &UserId,
        change: &(dyn for<'u> Fn(&'u mut User) + Send + Sync),
    ) -> StoreResult<Option<User>>;
    /// Stores a user that does not exist yet; `false` (nothing written) when it does.
    async fn create_user(&self, org: &OrgId, user: &User) -> StoreResult<bool>;
}

/// Which secret: each lives under a name scoped to its organization, and ends with the
/// revision of the settings save that wrote it (`flare/acme/sms/north/password/<rev>`).
/// A save writes its secrets under a fresh revision and the settings item names it, so
/// settings and secrets change together; a secret is never rewritten in place.
/// Settings saved before revisions (`None`) have their secrets under the plain name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretKey {
    SmsPassword(OrgId, ControlCenterId, Option<String>),
    SmsHeaderValue(OrgId, ControlCenterId, Option<String>),
    SmtpPassword(OrgId, Option<String>),
}

impl SecretKey {
    /// The secret's name under a prefix (`flare/acme/sms/north/password/<rev>`): the
    /// prefix lets IAM confine Flare to its own secrets.
    pub fn name(&self, prefix: &str) -> String {
        let prefix = prefix.trim_end_matches('/');
        let (mut name, rev) = match self {
            SecretKey::SmsPassword(o, c, r) => (format!("{prefix}/{o}/sms/{c}/password"), r),
            SecretKey::SmsHeaderValue(o, c, r) => (format!("{prefix}/{o}/sms/{c}/header-value"), r),
            SecretKey::SmtpPassword(o, r) => (format!("{prefix}/{o}/smtp/password"), r),
        };
        if let Some(rev) = rev {
            name.push('/');
            name.push_str(rev);
        }
        name
    }

    /// Whether the name ends with a settings revision (written once, never changed).
    pub fn is_versioned(&self) -> bool {
        match self {
            SecretKey::SmsPassword(_, _, r)
            | SecretKey::SmsHeaderValue(_, _, r)
            | SecretKey::SmtpPassword(_, r) => r.is_some(),
        }
    }
}

#[async_trait]
pub trait SecretStore: Send + Sync {
    async fn get(&self, key: &SecretKey) -> StoreResult<Option<SecretString>>;
    async fn put(&self, key: &SecretKey, value: &SecretString) -> StoreResult<()>;
    /// Deleting a missing secret is not an error.
    async fn delete(&self, key: &SecretKey) -> StoreResult<()>;
}

/// The outcome of creating a notification: a replayed event finds it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    AlreadyExists,
}

/// The outcome of claiming a delivery before sending it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours to send; `attempts` counts this attempt.
    Claimed { attempts: u32 },
    /// Already sent, failed or skipped: do not send again.
    AlreadyDone(DeliveryStatus),
    /// Another attempt holds the claim (its lease has not run out): try again later.
    InFlight,
    /// No such record.
    Missing,
}

/// Notifications and the record of every (recipient, channel) of them.
#[async_trait]
pub trait DeliveryLog: Send + Sync {
    /// Creates the notification unless it exists (idempotency on the event id).
    async fn create_notification(&self, n: &Notification) -> StoreResult<Created>;
    async fn get_notification(
        &self,
        org: &OrgId,
        id: &NotificationId,
    ) -> StoreResult<Option<Logged>>;
    /// One recipient's records of a notification (a push job's follow-up needs no more):
    /// reading the whole notification per job would cost the square of its size.
    async fn recipient_records(
        &self,
        org: &OrgId,
        id: &NotificationId,
        recipient: &RecipientRef,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        Ok(self
            .get_notification(org, id)
            .await?
            .map(|l| l.records)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| &r.recipient == recipient)
            .collect())
    }
    /// Writes records of `n` that do not exist yet; existing ones are left as they are,
    /// so a replayed event never resets a record that already moved on. (`n` is the
    /// notification they belong to: storage that expires items counts from its
    /// `created_at`.)
    async fn put_records(&self, n: &Notification, records: &[DeliveryRecord]) -> StoreResult<()>;
    /// Writes the first records of a notification this caller has just created
    /// ([`Created::New`]): none can exist yet, so an adapter may write them without the
    /// per-record check (DynamoDB: `BatchWriteItem`). By default, [`Self::put_records`].
    async fn put_first_records(
        &self,
        n: &Notification,
        records: &[DeliveryRecord],
    ) -> StoreResult<()> {
        self.put_records(n, records).await
    }
    /// Claims a pending record for one attempt (attempts + 1) until `lease` runs out.
    /// A record that is no longer pending, or is claimed by a live attempt, is not
    /// claimed: a redelivered or duplicated job never sends twice.
    async fn claim(
        &self,
        org: &OrgId,
        id: &NotificationId,
        recipient: &RecipientRef,
        slot: Slot,
        lease: std::time::Duration,
    ) -> StoreResult<Claim>;
    /// Moves a record on (see [`Finish`]); answers whether it moved. Only pending
    /// records move, so a late or repeated call changes nothing.
    async fn finish(
        &self,
        org: &OrgId,
        id: &NotificationId,
        recipient: &RecipientRef,
        slot: Slot,
        outcome: Finish,
    ) -> StoreResult<bool>;
    /// Records that the recipient acknowledged the notification; whether this was their
    /// first acknowledgement (false for a repeat, or no such notification).
    async fn ack(&self, org: &OrgId, id: &NotificationId, user: &UserId) -> StoreResult<bool>;
    /// A notification with the records of at most `recipients` recipients, those after
    /// the recipient key `after` in key order, and the key to continue after when more
    /// follow. By default from [`Self::get_notification`]; an adapter that can read only
    /// the page (DynamoDB) does.
    async fn notification_page(
        &self,
        org: &OrgId,
        id: &NotificationId,
        after: Option<&str>,
        recipients: usize,
    ) -> StoreResult<Option<(Logged, Option<String>)>> {
        Ok(self
            .get_notification(org, id)
            .await?
            .map(|l| page_of(l, after, recipients)))
    }
    /// Applies a provider's receipt to the delivery `key` names (`outcome` is
    /// [`Finish::Delivered`], [`Finish::Undelivered`] or [`Finish::Complaint`]): one
    /// lookup and one conditional write. [`ReceiptMatch::Unknown`] when no delivery
    /// was sent under that key (or it has expired), or more than one was (a gateway that
    /// reuses its message ids): a receipt never moves a delivery it may not be about.
    async fn receipt(&self, key: &ReceiptKey, outcome: Finish) -> StoreResult<ReceiptMatch>;
    /// The organization's notifications newest first ([`ListPosition`] order), at most
    /// `limit`, starting after `after`, each with its deliveries counted by state.
    async fn list_notifications(
        &self,
        org: &OrgId,
        after: Option<&ListPosition>,
        limit: usize,
    ) -> StoreResult<Vec<NotificationSummary>>;
}

/// What a provider's receipt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptMatch {
    /// No delivery was sent under the key.
    Unknown,
    /// The delivery it names; `moved` is false for a repeat, or a receipt that may not
    /// move it (the delivery already has a final receipt, or is failed or skipped).
    Found { target: ReceiptTarget, moved: bool },
}

/// The delivery a receipt key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptTarget {
    pub org_id: OrgId,
    pub notification_id: NotificationId,
    /// The recipient's key ([`RecipientRef::key`]).
    pub recipient: String,
    pub channel: Channel,
}

/// How many deliveries of a notification are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatusCounts {
    pub pending: u64,
    pub sent: u64,
    pub failed: u64,
    pub skipped: u64,
    pub delivered: u64,
    pub undelivered: u64,
}

impl StatusCounts {
    pub fn add(&mut self, status: DeliveryStatus) {
        self.add_many(status, 1);
    }

    pub fn add_many(&mut self, status: DeliveryStatus, n: u64) {
        match status {
            DeliveryStatus::Pending => self.pending += n,
            DeliveryStatus::Sent => self.sent += n,
            DeliveryStatus::Failed => self.failed += n,
            DeliveryStatus::Skipped => self.skipped += n,
            DeliveryStatus::Delivered => self.delivered += n,
            DeliveryStatus::Undelivered => self.undelivered += n,
        }
    }
}

/// A notification as the organization's list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationSummary {
    pub notification: Notification,
    pub counts: StatusCounts,
}

/// A place in an organization's notifications, newest first: by creation time (to the
/// millisecond), then by id. A page starts after one (the list's cursor).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListPosition {
    pub created_ms: i64,
    pub notification_id: NotificationId,
}

impl ListPosition {
    pub fn of(n: &Notification) -> Self {
        Self {
            created_ms: n.created_at.timestamp_millis(),
            notification_id: n.notification_id.clone(),
        }
    }

    /// The cursor clients see: `<milliseconds>_<notification id>`.
    pub fn cursor(&self) -> String {
        format!("{}_{}", self.created_ms, self.notification_id)
    }

    pub fn parse_cursor(s: &str) -> Option<Self> {
        let (ms, id) = s.split_once('_')?;
        if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Self {
            created_ms: ms.parse().ok()?,
            notification_id: NotificationId::parse_existing(id).ok()?,
        })
    }
}

/// The records of `recipients` recipients after `after` (by recipient key), and the
/// key to continue after when more follow.
pub fn page_of(mut l: Logged, after: Option<&str>, recipients: usize) -> (Logged, Option<String>) {
    let mut records: Vec<(String, DeliveryRecord)> = l
        .records
        .drain(..)
        .map(|r| (r.recipient.key(), r))
        .filter(|(k, _)| after.is_none_or(|a| k.as_str() > a))
        .collect();
    records.sort_by(|a, b| a.0.cmp(&b.0));
    let mut seen = 0;
    let mut last: Option<String> = None;
    let mut next = None;
    for (k, r) in records {
        if last.as_deref() != Some(k.as_str()) {
            if seen == recipients {
                next = last.clone();
                break;
            }
            seen += 1;
            last = Some(k);
        }
        l.records.push(r);
    }
    (l, next)
}

/// A notification as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub notification: Notification,
    pub records: Vec<DeliveryRecord>,
    /// Recipients who acknowledged it, and when.
    pub acks: Vec<(UserId, chrono::DateTime<chrono::Utc>)>,
}

/// How a delivery ended. `attempt` is the claim's attempt number: a failure or retry
/// moves the record only while that attempt is still the latest, so a stale attempt
/// (its lease ran out and a newer one claimed) can neither drop the newer one's claim
/// nor fail it. A send is recorded whoever made it: it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Sent {
        attempt: u32,
        provider: Provider,
        provider_message_id: Option<String>,
        /// Where the provider's receipts find this delivery (see [`ReceiptKey`]).
        receipt_key: Option<ReceiptKey>,
        /// Sent by the failover provider, standing in for this one.
        failover_from: Option<Provider>,
    },
    Failed {
        attempt: u32,
        reason: String,
    },
    /// A transient failure: stays pending, the claim is dropped so a retry can claim it.
    Retry {
        attempt: u32,
        reason: String,
    },
    /// The attempt never reached the provider (its pace had no moment for it in time):
    /// stays pending, the claim is dropped and not counted (`attempts` back to
    /// `attempt - 1`).
    Postpone {
        attempt: u32,
        reason: String,
    },
    /// A delivery held behind push will go as its fallback, for this reason: recorded
    /// while it is still held, before its job exists, so the job can never finish first
    /// (only while held; it stays held).
    WillFallBack {
        fallback_reason: crate::domain::reason::FallbackReason,
    },
    /// A delivery held behind push is released to be sent as fallback (only while held).
    Release,
    /// A delivery held behind a sent push waits for the app's receipt until `until`
    /// (only while held, and only the first time: the window never moves).
    Wait {
        until: chrono::DateTime<chrono::Utc>,
    },
    /// The job is dead-lettered: a record still pending ends failed, whatever attempt
    /// it is on and whether or not it is held, unless a live attempt holds its claim.
    Abandon {
        reason: String,
    },
    /// A delivery held behind push ends skipped, push having been sent (only while held).
    SkipHeld {
        reason: String,
    },
    /// A pending record no attempt holds ends skipped with `reason` (an escalation
    /// cycle's delivery after the recipient acknowledged); one a live attempt holds is
    /// left to it.
    Cancel {
        reason: String,
    },
    /// A receipt: a `sent` record becomes `delivered` (only from `sent`, so the first
    /// receipt's time is kept and a failed or skipped record never moves).
    Delivered {
        at: chrono::DateTime<chrono::Utc>,
    },
    /// A provider's receipt says a `sent` record never arrived (only from `sent`: the
    /// first final receipt wins).
    Undelivered {
        reason: String,
        detail: Option<String>,
    },
    /// The recipient complained about a sent email: `complaint` is set, the status stays
    /// (only on a `sent` or `delivered` record, and only once).
    Complaint,
}

/// The part of a record that claims and finishes change: adapters that store records
/// whole (memory, SQLite) apply the rules below to it, and SQLite keeps it apart from
/// the rest so a claim never decodes (and re-validates) a destination. DynamoDB says
/// the same rules with condition expressions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordState {
    pub status: DeliveryStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<crate::domain::Provider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub awaiting_push: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_until: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<crate::domain::reason::FallbackReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_from: Option<crate::domain::Provider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub complaint: bool,
    /// Where receipts find the record (kept beside the state, so an adapter can index it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_key: Option<String>,
}

impl RecordState {
    pub fn of(r: &DeliveryRecord) -> Self {
        Self {
            status: r.status,
            reason: r.reason.clone(),
            attempts: r.attempts,
            provider: r.provider,
            provider_message_id: r.provider_message_id.clone(),
            awaiting_push: r.awaiting_push,
            claimed_until: r.claimed_until,
            delivered_at: r.delivered_at,
            fallback_reason: r.fallback_reason,
            fallback_at: r.fallback_at,
            failover_from: r.failover_from,
            detail: r.detail.clone(),
            complaint: r.complaint,
            receipt_key: None,
        }
    }

    /// Puts this state on `r`.
    pub fn apply(self, r: &mut DeliveryRecord) {
        r.status = self.status;
        r.reason = self.reason;
        r.attempts = self.attempts;
        r.provider = self.provider;
        r.provider_message_id = self.provider_message_id;
        r.awaiting_push = self.awaiting_push;
        r.claimed_until = self.claimed_until;
        r.delivered_at = self.delivered_at;
        r.fallback_reason = self.fallback_reason;
        r.fallback_at = self.fallback_at;
        r.failover_from = self.failover_from;
        r.detail = self.detail;
        r.complaint = self.complaint;
    }

    /// What a claim does (see [`DeliveryLog::claim`]).
    pub fn claim(
        &mut self,
        now: chrono::DateTime<chrono::Utc>,
        lease: std::time::Duration,
    ) -> Claim {
        if self.status != DeliveryStatus::Pending {
            return Claim::AlreadyDone(self.status);
        }
        if self.claimed_until.is_some_and(|until| until > now) {
            return Claim::InFlight;
        }
        self.attempts += 1;
        self.awaiting_push = false;
        self.claimed_until = Some(now + lease);
        Claim::Claimed {
            attempts: self.attempts,
        }
    }

    /// What [`DeliveryLog::finish`] does; whether the record moved.
    pub fn finish(&mut self, outcome: Finish, now: chrono::DateTime<chrono::Utc>) -> bool {
        let r = self;
        match outcome {
            // Only a receipt moves a record on from `sent`, and only the first one.
            Finish::Delivered { at } => {
                if r.status != DeliveryStatus::Sent {
                    return false;
                }
                r.status = DeliveryStatus::Delivered;
                r.delivered_at = Some(at);
                return true;
            }
            Finish::Undelivered { reason, detail } => {
                if r.status != DeliveryStatus::Sent {
                    return false;
                }
                r.status = DeliveryStatus::Undelivered;
                r.reason = Some(reason);
                r.detail = detail;
                return true;
            }
            Finish::Complaint => {
                let sent = matches!(r.status, DeliveryStatus::Sent | DeliveryStatus::Delivered);
                if !sent || r.complaint {
                    return false;
                }
                r.complaint = true;
                return true;
            }
            _ => {}
        }
        if r.status != DeliveryStatus::Pending {
            return false;
        }
        match outcome {
            Finish::Delivered { .. } | Finish::Undelivered { .. } | Finish::Complaint => {
                return false;
            }
            Finish::Failed { attempt, .. }
            | Finish::Retry { attempt, .. }
            | Finish::Postpone { attempt, .. }
                if attempt != r.attempts =>
            {
                return false;
            }
            Finish::Sent {
                provider,
                provider_message_id,
                receipt_key,
                failover_from,
                ..
            } => {
                r.status = DeliveryStatus::Sent;
                r.provider = Some(provider);
                r.provider_message_id = provider_message_id;
                r.receipt_key = receipt_key.map(|k| k.as_str().to_string());
                r.failover_from = failover_from;
                r.reason = None;
                r.claimed_until = None;
            }
            Finish::Failed { reason, .. } => {
                r.status = DeliveryStatus::Failed;
                r.reason = Some(reason);
                r.claimed_until = None;
            }
            Finish::Retry { reason, .. } => {
                r.reason = Some(reason);
                r.claimed_until = None;
            }
            Finish::Postpone { reason, .. } => {
                r.reason = Some(reason);
                r.claimed_until = None;
                r.attempts = r.attempts.saturating_sub(1);
            }
            Finish::Abandon { .. } if r.claimed_until.is_some_and(|u| u > now) => return false,
            Finish::Abandon { reason } => {
                r.status = DeliveryStatus::Failed;
                r.reason = Some(reason);
                r.awaiting_push = false;
                r.claimed_until = None;
            }
            Finish::Cancel { .. } if r.claimed_until.is_some_and(|u| u > now) => return false,
            Finish::Cancel { reason } => {
                r.status = DeliveryStatus::Skipped;
                r.reason = Some(reason);
                r.awaiting_push = false;
                r.claimed_until = None;
            }
            Finish::WillFallBack { .. }
            | Finish::Release
            | Finish::SkipHeld { .. }
            | Finish::Wait { .. }
                if !r.awaiting_push =>
            {
                return false;
            }
            // The window is set once: a repeated push run does not move it.
            Finish::Wait { .. } if r.fallback_at.is_some() => return false,
            Finish::Wait { until } => r.fallback_at = Some(until),
            Finish::WillFallBack { fallback_reason } => {
                r.fallback_reason = Some(fallback_reason);
            }
            Finish::Release => r.awaiting_push = false,
            Finish::SkipHeld { reason } => {
                r.awaiting_push = false;
                r.status = DeliveryStatus::Skipped;
                r.reason = Some(reason);
            }
        }
        true
    }
}

/// Custom providers' health, where every instance sees it (the circuit's state).
#[async_trait]
pub trait HealthStore: Send + Sync {
    /// The provider's health; the default (healthy) when nothing is stored.
    async fn get(
        &self,
        org: &OrgId,
        scope: &crate::domain::health::HealthScope,
    ) -> StoreResult<crate::domain::health::ProviderHealth>;
    /// Changes it as one step: `change` edits the stored health and answers whether to
    /// write it; the write happens only if nobody wrote in between (else `change` runs
    /// again on the fresh copy). Answers the health as it is now.
    async fn update(
        &self,
        org: &OrgId,
        scope: &crate::domain::health::HealthScope,
        change: &(
             dyn for<'h> Fn(&'h mut crate::domain::health::ProviderHealth) -> bool + Send + Sync
         ),
    ) -> StoreResult<crate::domain::health::ProviderHealth>;
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue temporarily unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("enqueue failed")]
    Failed(#[source] anyhow::Error),
}

/// The queues between the router and the delivery functions, one per channel.
#[async_trait]
pub trait JobQueue: Send + Sync {
    async fn enqueue(&self, jobs: &[DeliveryJob]) -> Result<(), QueueError>;

    /// Runs `check` after `delay` (at most [`MAX_CHECK_DELAY`]; a longer wait is made of
    /// several checks, each finding it is not yet time and scheduling the next).
    async fn schedule(&self, check: &CheckJob, delay: Duration) -> Result<(), QueueError>;

    /// Queues `job` again, at the end of its lane, after `delay` (a postponed job: a new
    /// message, so its receives start again). By default at once.
    async fn postpone(&self, job: &DeliveryJob, delay: Duration) -> Result<(), QueueError> {
        let _ = delay;
        self.enqueue(std::slice::from_ref(job)).await
    }
}

/// The longest a check is delayed in one go: SQS's largest `DelaySeconds`.
pub const MAX_CHECK_DELAY: Duration = Duration::from_secs(900);

/// Paces sends to a provider that may take only so many requests a second (an HTTP
/// gateway's `max_per_second`): across every concurrent delivery, urgent ones first.
#[async_trait]
pub trait Pacer: Send + Sync {
    /// Waits until one more request to `provider` keeps it at `per_second` or under
    /// in any second; urgent callers are let through before normal ones that wait.
    async fn acquire(&self, provider: &str, per_second: u32, lane: crate::domain::Lane);
    /// The provider asked for a pause (a 429's `Retry-After`): nobody sends to it
    /// before `for_` has passed.
    async fn pause(&self, provider: &str, for_: Duration);
}

/// The rate of a provider with no pace of its own (only a 429's pause holds it).
pub const UNPACED: u32 = u32::MAX;

/// A provider's answer to one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub provider: Provider,
    /// The provider's own id for the message, when it gives one.
    pub provider_message_id: Option<String>,
}

/// Why a send failed, classified so the caller knows whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Throttling, 5xx, timeouts: retry with backoff.
    #[error("transient failure: {}", wire_reason(*.code, .detail.as_deref()))]
    Transient {
        code: FailReason,
        detail: Option<String>,
        #[source]
        source: Option<anyhow::Error>,
        /// The provider asked to be left alone this long (a 429's `Retry-After`): the
        /// send waits and goes again instead of spending an attempt.
        retry_after: Option<Duration>,
    },
    /// Invalid number, disabled endpoint, rejected sender, bad credentials: give up.
    #[error("permanent failure: {}", wire_reason(*.code, .detail.as_deref()))]
    Permanent {
        code: FailReason,
        detail: Option<String>,
        #[source]
        source: Option<anyhow::Error>,
    },
}

impl SendError {
    pub fn transient(code: FailReason) -> Self {
        Self::Transient {
            code,
            detail: None,
            source: None,
            retry_after: None,
        }
    }

    /// The provider's pace gave no moment for this send within the wait allowed: it
    /// is postponed (queued again), not failed and not retried as an attempt.
    pub fn paced() -> Self {
        Self::transient(FailReason::Paced)
    }

    /// A provider's "slow down" (HTTP 429), with how long it asked for.
    pub fn throttled(code: FailReason, retry_after: Duration) -> Self {
        Self::Transient {
            code,
            detail: None,
            source: None,
            retry_after: Some(retry_after),
        }
    }

    /// How long the provider asked to be left alone, when it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SendError::Transient { retry_after, .. } => *retry_after,
            SendError::Permanent { .. } => None,
        }
    }

    pub fn permanent(code: FailReason) -> Self {
        Self::Permanent {
            code,
            detail: None,
            source: None,
        }
    }

    /// Transient or permanent, as `transient` says.
    pub fn new(transient: bool, code: FailReason) -> Self {
        if transient {
            Self::transient(code)
        } else {
            Self::permanent(code)
        }
    }

    /// Adds what the provider said (shown after the code in the record's reason).
    pub fn with_detail(mut self, d: impl Into<String>) -> Self {
        match &mut self {
            SendError::Transient { detail, .. } | SendError::Permanent { detail, .. } => {
                *detail = Some(d.into())
            }
        }
        self
    }

    /// Keeps the underlying error as the cause (logs, never the record).
    pub fn with_source(mut self, e: impl Into<anyhow::Error>) -> Self {
        match &mut self {
            SendError::Transient { source, .. } | SendError::Permanent { source, .. } => {
                *source = Some(e.into())
            }
        }
        self
    }

    /// The same failure, to be retried (another device's failure was transient).
    pub fn into_transient(self) -> Self {
        match self {
            SendError::Permanent {
                code,
                detail,
                source,
            } => SendError::Transient {
                code,
                detail,
                source,
                retry_after: None,
            },
            transient => transient,
        }
    }

    pub fn code(&self) -> FailReason {
        match self {
            SendError::Transient { code, .. } | SendError::Permanent { code, .. } => *code,
        }
    }

    /// The record's `reason`: the code, and the detail after a colon.
    pub fn reason(&self) -> String {
        match self {
            SendError::Transient { code, detail, .. }
            | SendError::Permanent { code, detail, .. } => wire_reason(*code, detail.as_deref()),
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, SendError::Transient { .. })
    }

    /// What the failure says of the provider (see [`FailureKind`]): a "slow down" with
    /// a `Retry-After` is throttling whatever its code.
    pub fn kind(&self) -> crate::domain::FailureKind {
        if self.retry_after().is_some() {
            return crate::domain::FailureKind::Throttled;
        }
        self.code().kind()
    }

    /// Whether a later attempt may succeed: transient, and not a "slow down" (that
    /// postpones the job instead of spending an attempt).
    pub fn retries(&self) -> bool {
        self.is_transient() && self.kind() != crate::domain::FailureKind::Throttled
    }
}

/// One push to one device.
#[derive(Debug, Clone)]
pub struct PushMessage {
    pub notification_id: NotificationId,
    /// Whom it is for: the app calls back (receipt, ack) as this user.
    pub recipient: UserId,
    /// Decides the urgency it is sent with.
    pub category: crate::domain::Category,
    pub device_id: DeviceId,
    /// The provider's handle for the device (an SNS endpoint ARN).
    pub endpoint: String,
    pub platform: crate::domain::Platform,
    pub message: Message,
}

impl PushMessage {
    /// Dispatch, distress and manual messages interrupt (high priority, time-sensitive);
    /// messages and incident contacts do not.
    pub fn is_urgent(&self) -> bool {
        use crate::domain::Category::*;
        matches!(self.category, Dispatch | Distress | ManualSms)
    }
}

#[async_trait]
pub trait PushSender: Send + Sync {
    async fn send(&self, push: &PushMessage) -> Result<Receipt, SendError>;
}

#[derive(Debug, Clone)]
pub struct SmsMessage {
    pub notification_id: NotificationId,
    /// The same for every attempt of one (recipient, channel) of a notification, and
    /// different for every other ([`DeliveryJob::delivery_id`]): providers that take an
    /// idempotency key get it, so one that was sent a repeat (a crash between its
    /// answer and the `sent` write) can drop it. `None` for a test send.
    pub delivery_id: Option<String>,
    pub org_id: OrgId,
    pub control_center_id: ControlCenterId,
    pub to: PhoneNumber,
    pub from: Option<SenderId>,
    pub text: String,
    /// The settings the caller read for this send (the control center's own, or
    /// `main`'s), so a sender that needs them does not read them again. `None`: the
    /// sender reads them itself.
    pub settings: Option<SmsSettings>,
}

#[async_trait]
pub trait SmsSender: Send + Sync {
    async fn send(&self, sms: &SmsMessage) -> Result<Receipt, SendError>;
}

#[derive(Debug, Clone)]
pub struct EmailMessage {
    pub notification_id: NotificationId,
    /// As [`SmsMessage::delivery_id`]: the email's `Message-ID` over SMTP.
    pub delivery_id: Option<String>,
    pub org_id: OrgId,
    pub to: EmailAddress,
    pub from: EmailAddress,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// As [`SmsMessage::settings`].
    pub settings: Option<EmailSettings>,
}

#[async_trait]
pub trait EmailSender: Send + Sync {
    async fn send(&self, email: &EmailMessage) -> Result<Receipt, SendError>;
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The push provider refused the token.
    #[error("the push provider refused the device token")]
    InvalidToken(#[source] anyhow::Error),
    /// No platform application is configured for this platform.
    #[error("push for platform {0} is not configured")]
    PlatformNotConfigured(&'static str),
    #[error("the push provider is temporarily unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("registering the device failed")]
    Failed(#[source] anyhow::Error),
}

/// Registers a device with the push provider (an SNS platform endpoint in AWS).
#[async_trait]
pub trait DeviceRegistry: Send + Sync {
    /// Returns the provider's handle for the device.
    async fn register(
        &self,
        platform: crate::domain::Platform,
        token: &str,
        user: &UserId,
    ) -> Result<String, DeviceError>;
    /// Unregistering a device that is already gone is not an error.
    async fn unregister(&self, endpoint: &str) -> Result<(), DeviceError>;
}

/// How a delivery ended, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    Failed,
    Skipped,
    /// A receipt said a sent delivery arrived.
    Delivered,
}

impl Outcome {
    /// The metric's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "Sent",
            Outcome::Failed => "Failed",
            Outcome::Skipped => "Skipped",
            Outcome::Delivered => "Delivered",
        }
    }
}

/// One (recipient, channel) that reached its final status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryMetric {
    pub channel: Channel,
    /// None for a delivery skipped before a provider was chosen.
    pub provider: Option<Provider>,
    pub outcome: Outcome,
    /// Sent or failed as the fallback of a push.
    pub fallback: bool,
    /// From the event's time to the provider's acceptance (sent deliveries only).
    pub latency: Option<std::time::Duration>,
}

/// Counts what the pipeline does (CloudWatch metrics in AWS). Recording cannot fail:
/// a metric lost is never worth a delivery lost.
pub trait Metrics: Send + Sync {
    fn delivery(&self, metric: &DeliveryMetric);
    /// A new notification and how many recipients it has (replays are not counted).
    fn notification(&self, category: crate::domain::Category, recipients: usize);
    /// A recipient acknowledged a notification.
    fn acknowledged(&self, category: crate::domain::Category);
}

/// Counts nothing (the local runner, and tests that do not look at metrics).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMetrics;

impl Metrics for NoMetrics {
    fn delivery(&self, _: &DeliveryMetric) {}
    fn notification(&self, _: crate::domain::Category, _: usize) {}
    fn acknowledged(&self, _: crate::domain::Category) {}
}

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
