//! The audit trail: entries in `audit`, which triggers keep append-only, and each
//! organization's head in `audit_head`, moved in the transaction that appends.

use super::*;
use flare_shared::domain::audit::{AuditEntry, AuditRecord};

/// Appends `record` to the organization's chain in the writer's transaction (the writer
/// runs one at a time: the head read here is the head).
fn append_in(c: &Connection, org: &str, record: AuditRecord) -> anyhow::Result<AuditEntry> {
    let head: Option<(i64, String)> = c
        .prepare_cached("SELECT seq, hash FROM audit_head WHERE org = ?1")?
        .query_row(params![org], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let previous = head.as_ref().map(|(s, h)| (s.unsigned_abs(), h.as_str()));
    let entry = AuditEntry::chain(record, previous);
    let seq = i64::try_from(entry.seq)?;
    c.prepare_cached("INSERT INTO audit (org, seq, body) VALUES (?1, ?2, ?3)")?
        .execute(params![org, seq, to_json(&entry)?])?;
    c.prepare_cached("INSERT OR REPLACE INTO audit_head (org, seq, hash) VALUES (?1, ?2, ?3)")?
        .execute(params![org, seq, entry.hash])?;
    Ok(entry)
}

impl Sqlite {
    /// Runs `change` on the writer (it answers whether it wrote). Inside an audited API
    /// write, the entry that records it is appended in the same transaction: if either
    /// fails, neither stays.
    pub(crate) async fn change_audited<F>(
        &self,
        org: &OrgId,
        after: Stored<'_>,
        change: F,
    ) -> StoreResult<bool>
    where
        F: FnOnce(&Connection) -> anyhow::Result<bool> + Send + 'static,
    {
        let draft = audit_draft();
        let record = draft.as_ref().map(|d| d.record(after));
        let (org, single) = (org.to_string(), record.is_none());
        let (done, entry) = self
            .db
            .write_as(
                move |c| {
                    if !change(c)? {
                        return Ok((false, None));
                    }
                    let entry = record.map(|r| append_in(c, &org, r)).transpose()?;
                    Ok((true, entry))
                },
                single,
            )
            .await?;
        if let (Some(d), Some(e)) = (draft, entry) {
            d.written(e);
        }
        Ok(done)
    }
}

#[async_trait]
impl AuditLog for Sqlite {
    async fn append(&self, org: &OrgId, record: AuditRecord) -> StoreResult<AuditEntry> {
        let org = org.to_string();
        self.db.write(move |c| append_in(c, &org, record)).await
    }

    async fn page(
        &self,
        org: &OrgId,
        q: &AuditQuery,
    ) -> StoreResult<(Vec<AuditEntry>, Option<u64>)> {
        let before = q.before.unwrap_or(u64::MAX).min(i64::MAX as u64) as i64;
        // Filters are applied as the entries are read, newest first, until a page is full.
        self.db.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT body FROM audit WHERE org = ?1 AND seq < ?2 ORDER BY seq DESC",
            )?;
            let mut rows = stmt.query(params![org.as_str(), before])?;
            let mut read = Vec::new();
            let mut matched = 0;
            while let Some(row) = rows.next()? {
                let e: AuditEntry = from_json(row.get_ref(0)?.as_str()?)?;
                matched += usize::from(q.matches(&e));
                read.push(e);
                if matched > q.limit {
                    break;
                }
            }
            Ok(audit_page(read, q))
        })
    }

    async fn chain(&self, org: &OrgId) -> StoreResult<(Vec<AuditEntry>, Option<AuditHead>)> {
        self.db.read(|c| {
            let entries = rows(
                c,
                "SELECT body FROM audit WHERE org = ?1 ORDER BY seq",
                params![org.as_str()],
            )?;
            let head = c
                .prepare_cached("SELECT seq, hash FROM audit_head WHERE org = ?1")?
                .query_row(params![org.as_str()], |r| {
                    Ok((r.get::<_, i64>(0)?.unsigned_abs(), r.get(1)?))
                })
                .optional()?;
            Ok((entries, head))
        })
    }
}
