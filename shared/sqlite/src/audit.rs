//! The audit trail: entries in `audit`, which triggers keep append-only, and each
//! organization's head in `audit_head`, moved in the transaction that appends.

use super::*;
use flare_shared::domain::audit::{AuditEntry, AuditRecord};

#[async_trait]
impl AuditLog for Sqlite {
    async fn append(&self, org: &OrgId, record: AuditRecord) -> StoreResult<AuditEntry> {
        let org = org.to_string();
        // The writer runs one transaction at a time: the head read here is the head.
        self.db
            .write(move |c| {
                let head: Option<(i64, String)> = c
                    .prepare_cached("SELECT seq, hash FROM audit_head WHERE org = ?1")?
                    .query_row(params![org], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let previous = head.as_ref().map(|(s, h)| (s.unsigned_abs(), h.as_str()));
                let entry = AuditEntry::chain(record, previous);
                let seq = i64::try_from(entry.seq)?;
                c.prepare_cached("INSERT INTO audit (org, seq, body) VALUES (?1, ?2, ?3)")?
                    .execute(params![org, seq, to_json(&entry)?])?;
                c.prepare_cached(
                    "INSERT OR REPLACE INTO audit_head (org, seq, hash) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![org, seq, entry.hash])?;
                Ok(entry)
            })
            .await
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
