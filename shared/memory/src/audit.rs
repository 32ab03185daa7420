//! The audit trail in memory: each organization's chain behind one lock, so appends are
//! serialized as the other stores serialize them with a conditional write.

use async_trait::async_trait;
use flare_shared::domain::OrgId;
use flare_shared::domain::audit::{AuditEntry, AuditRecord};
use flare_shared::ports::{AuditHead, AuditLog, AuditQuery, StoreResult, audit_page};
use std::collections::HashMap;
use std::sync::Mutex;

/// An organization's entries, and its head kept apart (as the other stores keep it in
/// an item of its own), so deleting the newest entry shows too.
type Chain = (Vec<AuditEntry>, Option<AuditHead>);

#[derive(Default)]
pub struct MemoryAuditLog {
    chains: Mutex<HashMap<String, Chain>>,
}

impl MemoryAuditLog {
    fn with<R>(&self, org: &OrgId, f: impl FnOnce(&mut Chain) -> R) -> R {
        let mut chains = super::lock(&self.chains);
        f(chains.entry(org.to_string()).or_default())
    }

    /// Test-only access to the stored entries, as someone with the table's keys could
    /// edit them: the chain must show it.
    pub fn tamper(&self, org: &OrgId, f: impl FnOnce(&mut Vec<AuditEntry>)) {
        self.with(org, |c| f(&mut c.0))
    }
}

#[async_trait]
impl AuditLog for MemoryAuditLog {
    async fn append(&self, org: &OrgId, record: AuditRecord) -> StoreResult<AuditEntry> {
        Ok(self.with(org, |(entries, head)| {
            let previous = head.as_ref().map(|(seq, hash)| (*seq, hash.as_str()));
            let entry = AuditEntry::chain(record, previous);
            *head = Some((entry.seq, entry.hash.clone()));
            entries.push(entry.clone());
            entry
        }))
    }

    async fn page(
        &self,
        org: &OrgId,
        q: &AuditQuery,
    ) -> StoreResult<(Vec<AuditEntry>, Option<u64>)> {
        let entries = self.with(org, |c| c.0.clone());
        Ok(audit_page(entries.into_iter().rev(), q))
    }

    async fn chain(&self, org: &OrgId) -> StoreResult<(Vec<AuditEntry>, Option<AuditHead>)> {
        Ok(self.with(org, |c| c.clone()))
    }
}
