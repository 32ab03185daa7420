//! The outbox journal behind the SNS and SES stand-ins.

use super::*;

#[async_trait]
impl OutboxJournal for Sqlite {
    async fn append(&self, entry: &OutboxEntry) -> anyhow::Result<u64> {
        let body = to_json(entry)?;
        let seq = self
            .db
            .write_one(move |c| {
                c.prepare_cached("INSERT INTO outbox (body) VALUES (?1)")?
                    .execute(params![body])?;
                Ok(c.last_insert_rowid())
            })
            .await?;
        Ok(u64::try_from(seq)?)
    }

    async fn entries(&self) -> anyhow::Result<Vec<OutboxEntry>> {
        Ok(self
            .db
            .read(|c| rows(c, "SELECT body FROM outbox ORDER BY seq", []))?)
    }
}
