//! The audit trail's store: each organization's chain of entries, appended one at a time
//! and never changed.

use super::StoreResult;
use crate::domain::audit::{AuditEntry, AuditRecord};
use crate::domain::{CommunicationSettings, EmailSettings, OrgId, SmsSettings, User};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// Which entries a page of the trail holds: newest first, at most `limit`, before the
/// place `before` (a cursor: the `seq` of the last entry of the previous page).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditQuery {
    pub limit: usize,
    pub before: Option<u64>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// The actor's `sub`.
    pub actor: Option<String>,
    /// The target path, or a prefix of it ending in `/` (`/v1/settings/`).
    pub target: Option<String>,
}

impl AuditQuery {
    /// Whether `e` passes the filters (not the place or the limit).
    pub fn matches(&self, e: &AuditEntry) -> bool {
        let r = &e.record;
        self.since.is_none_or(|t| r.at >= t)
            && self.until.is_none_or(|t| r.at <= t)
            && self.actor.as_ref().is_none_or(|a| &r.actor.sub == a)
            && self.target.as_ref().is_none_or(|t| {
                &r.target == t || (t.ends_with('/') && r.target.starts_with(t.as_str()))
            })
    }
}

/// What a store keeps of the chain's end: the last entry's place and hash.
pub type AuditHead = (u64, String);

#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends `record` at the end of the organization's chain. The entry and the
    /// chain's head are written together, and only over the head that was read: an
    /// append that finds another one got there first reads the head again and retries,
    /// so appends are serialized per organization and the chain never forks.
    async fn append(&self, org: &OrgId, record: AuditRecord) -> StoreResult<AuditEntry>;
    /// A page of the trail ([`AuditQuery`]), and where the next one starts when more
    /// entries may follow.
    async fn page(
        &self,
        org: &OrgId,
        q: &AuditQuery,
    ) -> StoreResult<(Vec<AuditEntry>, Option<u64>)>;
    /// The whole chain, oldest first, and its head as the store last moved it.
    async fn chain(&self, org: &OrgId) -> StoreResult<(Vec<AuditEntry>, Option<AuditHead>)>;
}

/// [`AuditLog::page`] over entries already read newest first: those that match, up to
/// the limit, and the cursor when the limit was reached.
pub fn audit_page(
    newest_first: impl IntoIterator<Item = AuditEntry>,
    q: &AuditQuery,
) -> (Vec<AuditEntry>, Option<u64>) {
    let mut out = Vec::new();
    for e in newest_first {
        if q.before.is_some_and(|b| e.seq >= b) || !q.matches(&e) {
            continue;
        }
        if out.len() == q.limit {
            let next = out.last().map(|l: &AuditEntry| l.seq);
            return (out, next);
        }
        out.push(e);
    }
    (out, None)
}

/// What an audited write changes, as stored before or after it (`None`: nothing stored).
#[derive(Debug, Clone, Copy)]
pub enum Stored<'a> {
    Sms(Option<&'a SmsSettings>),
    Email(Option<&'a EmailSettings>),
    Communication(Option<&'a CommunicationSettings>),
    User(Option<&'a User>),
}

/// An audited API write in progress: the entry that will record it, but for the state
/// after it. A store that keeps the trail beside the change (SQLite, DynamoDB) asks it
/// for the entry and writes both in one transaction, so there is no change without its
/// entry and no entry for a change that did not happen.
pub trait AuditDraft: Send + Sync {
    /// The state the write starts from, said by whoever read it last (the operation, or
    /// the store inside its conditional update).
    fn before(&self, stored: Stored<'_>);
    /// The entry's record for a write that leaves `after` stored.
    fn record(&self, after: Stored<'_>) -> AuditRecord;
    /// The store wrote the entry with the change.
    fn written(&self, entry: AuditEntry);
    fn is_written(&self) -> bool;
}

tokio::task_local! {
    static DRAFT: Arc<dyn AuditDraft>;
}

/// Runs `f` (an API write) with `draft` as its audit draft. A task-local rather than a
/// parameter of every store write: the stores' callers (the operations, seeding, the
/// router) need not know whether the write they make is audited.
pub async fn drafting<F: std::future::Future>(draft: Arc<dyn AuditDraft>, f: F) -> F::Output {
    DRAFT.scope(draft, f).await
}

/// The draft of the audited write running in this task, until its entry is written: a
/// write that changes more than one item records only the first.
pub fn audit_draft() -> Option<Arc<dyn AuditDraft>> {
    DRAFT.try_with(Arc::clone).ok().filter(|d| !d.is_written())
}

/// Tells the audited write running in this task, if any, what it starts from.
pub fn audit_before(stored: Stored<'_>) {
    let _ = DRAFT.try_with(|d| d.before(stored));
}
