//! The delivery log: notifications and the record of every (recipient, channel).

use super::*;

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
    /// The notification alone, without its records (DynamoDB: one GetItem). By
    /// default from [`Self::get_notification`].
    async fn notification(
        &self,
        org: &OrgId,
        id: &NotificationId,
    ) -> StoreResult<Option<Notification>> {
        Ok(self
            .get_notification(org, id)
            .await?
            .map(|l| l.notification))
    }
    /// Readies storage for a notification of `records` records written later by
    /// [`Self::put_records`] (routing in pages): DynamoDB picks its partition layout
    /// now, as [`Self::put_first_records`] does for records written at once.
    async fn prepare_layout(&self, n: &Notification, records: usize) -> StoreResult<()> {
        let _ = (n, records);
        Ok(())
    }
    /// Writes the route pages of a notification about to be created (overwriting any
    /// a routing that stopped before creating it left: no page is routed before then).
    async fn put_route_pages(&self, n: &Notification, pages: &[RoutePage]) -> StoreResult<()> {
        let _ = (n, pages);
        Err(no_route_pages())
    }
    /// Route page `page` of a notification, if it has one.
    async fn route_page(
        &self,
        org: &OrgId,
        id: &NotificationId,
        page: u32,
    ) -> StoreResult<Option<RoutePage>> {
        let _ = (org, id, page);
        Err(no_route_pages())
    }
    /// Marks route page `page` routed (its records written and jobs queued).
    async fn page_routed(&self, org: &OrgId, id: &NotificationId, page: u32) -> StoreResult<()> {
        let _ = (org, id, page);
        Err(no_route_pages())
    }
    /// Keeps `chain` as the notification's escalation chain unless another is kept
    /// already; whether `chain` is the one kept (a timer of another chain, set by a
    /// replayed event, then does nothing). By default every chain is kept (no gate).
    async fn claim_chain(
        &self,
        org: &OrgId,
        id: &NotificationId,
        chain: &str,
    ) -> StoreResult<bool> {
        let _ = (org, id, chain);
        Ok(true)
    }
    /// Whether `user` has acknowledged the notification (DynamoDB: one GetItem). By
    /// default from [`Self::get_notification`].
    async fn acked(&self, org: &OrgId, id: &NotificationId, user: &UserId) -> StoreResult<bool> {
        Ok(self
            .get_notification(org, id)
            .await?
            .is_some_and(|l| l.acks.iter().any(|(u, _)| u == user)))
    }
    /// Which of `users` have acknowledged the notification (DynamoDB: BatchGetItem on
    /// their ack items). By default one [`Self::acked`] each.
    async fn acked_among(
        &self,
        org: &OrgId,
        id: &NotificationId,
        users: &[UserId],
    ) -> StoreResult<Vec<UserId>> {
        let mut out = Vec::new();
        for u in users {
            if self.acked(org, id, u).await? {
                out.push(u.clone());
            }
        }
        Ok(out)
    }
    /// Records that the recipient acknowledged the notification; whether this was their
    /// first acknowledgement (false for a repeat, or no such notification).
    async fn ack(&self, org: &OrgId, id: &NotificationId, user: &UserId) -> StoreResult<bool>;
    /// Remembers that a dispatch SMS of `sent`'s notification went to `number` (a user's),
    /// so a reply from it finds that notification: the newest one is kept, 24 hours.
    /// `org`: in that organization (a gateway's replies name it); `None`: in any (AWS End
    /// User Messaging's replies name no organization, so SMS sent through SNS are
    /// remembered so too).
    async fn remember_sms(
        &self,
        org: Option<&OrgId>,
        number: &crate::domain::PhoneNumber,
        sent: &SmsSent,
    ) -> StoreResult<()>;
    /// The newest dispatch SMS remembered for `number` (of any age: the caller says what
    /// is too old).
    async fn last_sms(
        &self,
        org: Option<&OrgId>,
        number: &crate::domain::PhoneNumber,
    ) -> StoreResult<Option<SmsSent>>;
    /// Stores a response link under its code's digest (kept until it expires).
    async fn put_link(&self, link: &crate::domain::ResponseLink) -> StoreResult<()>;
    /// The code of `link`'s (notification, recipient): `candidate` (its code sealed) is
    /// stored with `link` unless that pair has one already, which is answered instead
    /// (`None`: the candidate was stored). One code per pair: the SMS and the email of a
    /// dispatch, and its escalation cycles, carry the same link.
    async fn link_for(
        &self,
        link: &crate::domain::ResponseLink,
        candidate: &crate::domain::SealedCode,
    ) -> StoreResult<Option<crate::domain::SealedCode>>;
    /// The link stored under `digest`, of any age (the caller says what is too old):
    /// one read, whatever the code.
    async fn link(&self, digest: &str) -> StoreResult<Option<crate::domain::ResponseLink>>;
    /// Notes an inbound message's provider id; false when it was noted already (a
    /// provider's retry of the same message: nothing twice).
    async fn first_inbound(&self, org: &OrgId, message_id: &str) -> StoreResult<bool>;
    /// Records `user`'s answer, replacing an earlier one (the caller acknowledges for
    /// them first: an answer is an ack); answers the one it replaced.
    async fn respond(
        &self,
        org: &OrgId,
        id: &NotificationId,
        user: &UserId,
        response: &crate::domain::Response,
    ) -> StoreResult<Option<crate::domain::Response>>;
    /// Records `user`'s answer with its acknowledgement (the first ack's time is kept,
    /// the answer replaces an earlier one): whether this was their first
    /// acknowledgement, and the answer it replaced. By default [`Self::ack`] then
    /// [`Self::respond`]; DynamoDB writes both in one UpdateItem.
    async fn answer(
        &self,
        org: &OrgId,
        id: &NotificationId,
        user: &UserId,
        response: &crate::domain::Response,
    ) -> StoreResult<Answered> {
        let first_ack = self.ack(org, id, user).await?;
        let previous = self.respond(org, id, user, response).await?;
        Ok(Answered {
            first_ack,
            previous,
        })
    }
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
    /// The segments of every SMS of a notification, as sent (a paged view's total). By
    /// default from [`Self::get_notification`]; DynamoDB reads only the records' states.
    async fn sms_segments(&self, org: &OrgId, id: &NotificationId) -> StoreResult<u64> {
        let mut counts = StatusCounts::default();
        for r in self
            .get_notification(org, id)
            .await?
            .map(|l| l.records)
            .unwrap_or_default()
        {
            counts.add_segments(r.segments);
        }
        Ok(counts.sms_segments)
    }
    /// The organization's notifications newest first ([`ListPosition`] order), at most
    /// `limit`, starting after `after`, each with its deliveries counted by state.
    async fn list_notifications(
        &self,
        org: &OrgId,
        after: Option<&ListPosition>,
        limit: usize,
    ) -> StoreResult<Vec<NotificationSummary>>;
}

/// What a log that keeps no route pages (a test's stand-in) answers when asked to.
fn no_route_pages() -> StoreError {
    StoreError::Failed(anyhow::anyhow!("this delivery log keeps no route pages"))
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

/// What [`DeliveryLog::answer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// This answer was the recipient's first acknowledgement.
    pub first_ack: bool,
    /// The answer it replaced, if any.
    pub previous: Option<crate::domain::Response>,
}

/// A dispatch SMS sent to a user's number: what a reply from that number answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SmsSent {
    pub notification_id: NotificationId,
    pub user_id: UserId,
    pub at: chrono::DateTime<chrono::Utc>,
    /// Its organization and control center (absent in what was remembered before v1.2's
    /// End User Messaging replies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<OrgId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_center_id: Option<crate::domain::ControlCenterId>,
    /// The incident, which the confirmation names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<String>,
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
    /// Recipients (not deliveries) whose latest answer is each.
    pub responding: u64,
    pub unavailable: u64,
    /// The segments of its SMS, as sent (the list shows it beside the counts).
    #[serde(skip)]
    pub sms_segments: u64,
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

    /// A record's SMS segments, when it was an SMS sent.
    pub fn add_segments(&mut self, segments: Option<u32>) {
        self.sms_segments += u64::from(segments.unwrap_or(0));
    }

    /// A recipient's latest answer.
    pub fn add_answer(&mut self, answer: crate::domain::Answer) {
        match answer {
            crate::domain::Answer::Responding => self.responding += 1,
            crate::domain::Answer::Unavailable => self.unavailable += 1,
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
    /// Recipients who answered it (each has acknowledged it too), and their latest
    /// answer.
    pub responses: Vec<(UserId, crate::domain::Response)>,
}
