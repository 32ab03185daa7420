//! The audit trail in DynamoDB, in a table of its own (the functions' roles may only
//! read it and put items in it; nothing updates or deletes an entry):
//!
//! | pk          | sk              | item                                          |
//! |-------------|-----------------|-----------------------------------------------|
//! | `ORG#{org}` | `A#{seq:012}`   | one entry, and `expires_at` (TTL) a retention on |
//! | `ORG#{org}` | `HEAD`          | the chain's end: `seq`, `hash`                |
//!
//! An append writes the entry and the new head in one TransactWriteItems: the entry only
//! where none is, the head only over the `seq` it follows. It follows the head this
//! instance last wrote or read (one consistent GetItem the first time): another append
//! in between (here or in another instance) cancels the transaction, and it reads the
//! head again and retries, so the chain never forks.
//!
//! An audited API write's change goes in the same transaction, first ([`DynamoAuditLog::commit`]):
//! the change and its entry are written together or not at all.

use crate::dynamodb::{PK, SK, org_pk};
use crate::store_error;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use flare_shared::domain::OrgId;
use flare_shared::domain::audit::{AuditEntry, AuditRecord};
use flare_shared::ports::{AuditHead, AuditLog, AuditQuery, StoreError, StoreResult, audit_page};
use std::collections::HashMap;

type Item = HashMap<String, AttributeValue>;

const HEAD: &str = "HEAD";

/// How a transaction with an entry went.
enum Written {
    Done,
    /// Another append moved the head first (or the guess of it was stale).
    HeadMoved,
    /// The audited change's own condition failed.
    ChangeRefused,
}
/// How often an append is tried when other appends keep getting there first.
const APPEND_TRIES: u32 = 50;

#[derive(Clone, Debug)]
pub struct DynamoAuditLog {
    client: Client,
    table: String,
    /// How long an entry is kept (its TTL).
    retention: chrono::TimeDelta,
    /// Each organization's head as this instance last saw it: a guess the transaction's
    /// condition checks, which saves a read for each write after the first.
    heads: std::sync::Arc<std::sync::Mutex<HashMap<String, AuditHead>>>,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn entry_sk(seq: u64) -> String {
    format!("A#{seq:012}")
}

fn failed(e: impl Into<anyhow::Error>, what: &'static str) -> StoreError {
    StoreError::Failed(e.into().context(what))
}

impl DynamoAuditLog {
    pub fn new(client: Client, table: impl Into<String>, retention_days: u32) -> Self {
        Self {
            client,
            table: table.into(),
            retention: chrono::TimeDelta::days(i64::from(retention_days)),
            heads: Default::default(),
        }
    }

    fn cached(&self, org: &OrgId) -> Option<AuditHead> {
        let heads = self.heads.lock().unwrap_or_else(|e| e.into_inner());
        heads.get(org.as_str()).cloned()
    }

    fn remember(&self, org: &OrgId, head: Option<AuditHead>) {
        let mut heads = self.heads.lock().unwrap_or_else(|e| e.into_inner());
        match head {
            Some(h) => heads.insert(org.to_string(), h),
            None => heads.remove(org.as_str()),
        };
    }

    async fn head(&self, org: &OrgId) -> StoreResult<Option<AuditHead>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(org_pk(org)))
            .key(SK, s(HEAD))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(e, "GetItem audit head"))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let seq = item
            .get("seq")
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok());
        let hash = item.get("hash").and_then(|v| v.as_s().ok()).cloned();
        match (seq, hash) {
            (Some(seq), Some(hash)) => Ok(Some((seq, hash))),
            _ => Err(failed(
                anyhow::anyhow!("no seq or hash"),
                "reading the audit head",
            )),
        }
    }

    /// The entry as its JSON text (`body`: read back exactly as hashed, numbers and all),
    /// with its time, actor and target beside it for a reader of the table.
    fn entry_item(&self, org: &OrgId, e: &AuditEntry) -> StoreResult<Item> {
        let body = serde_json::to_string(e).map_err(|x| failed(x, "encoding an audit entry"))?;
        let expires = e.record.at + self.retention;
        Ok(HashMap::from([
            (PK.into(), s(org_pk(org))),
            (SK.into(), s(entry_sk(e.seq))),
            ("body".into(), s(body)),
            ("at".into(), s(e.record.at.to_rfc3339())),
            ("actor".into(), s(e.record.actor.sub.clone())),
            ("target".into(), s(e.record.target.clone())),
            ("expires_at".into(), n(expires.timestamp())),
        ]))
    }

    /// The entry and the head that follows it, in one transaction, after `change` (an
    /// audited write's) when there is one.
    async fn write(
        &self,
        org: &OrgId,
        e: &AuditEntry,
        previous: Option<u64>,
        change: Option<TransactWriteItem>,
    ) -> StoreResult<Written> {
        let entry = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.entry_item(org, e)?))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|x| failed(x, "an audit entry's put"))?;
        let head = Put::builder()
            .table_name(&self.table)
            .item(PK, s(org_pk(org)))
            .item(SK, s(HEAD))
            .item("seq", n(e.seq))
            .item("hash", s(e.hash.clone()));
        let head = match previous {
            None => head.condition_expression("attribute_not_exists(pk)"),
            Some(seq) => head
                .condition_expression("#seq = :seq")
                .expression_attribute_names("#seq", "seq")
                .expression_attribute_values(":seq", n(seq)),
        }
        .build()
        .map_err(|x| failed(x, "the audit head's put"))?;
        let changes = change.is_some();
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(change.into_iter().collect()))
            .transact_items(TransactWriteItem::builder().put(entry).build())
            .transact_items(TransactWriteItem::builder().put(head).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(Written::Done),
            Err(err) if crate::error_code(&err) == Some("TransactionCanceledException") => {
                // The reasons come in the items' order: the change (if any), the entry,
                // the head.
                let failed: Vec<bool> = match err.as_service_error() {
                    Some(TransactWriteItemsError::TransactionCanceledException(c)) => c
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code() == Some("ConditionalCheckFailed"))
                        .collect(),
                    _ => Vec::new(),
                };
                let at = |i: usize| failed.get(i + usize::from(changes)).copied();
                Ok(
                    match (changes && failed.first() == Some(&true), at(0), at(1)) {
                        (true, _, _) => Written::ChangeRefused,
                        // The head held but the entry's place is taken: retrying cannot help.
                        (false, Some(true), Some(false)) => {
                            let taken = format!(
                                "an item holds audit entry {}'s place, though the head is before it",
                                e.seq
                            );
                            return Err(StoreError::Failed(anyhow::Error::new(err).context(taken)));
                        }
                        _ => Written::HeadMoved,
                    },
                )
            }
            Err(e) => Err(store_error(e, "TransactWriteItems audit append")),
        }
    }

    /// Writes `change` (an audited write's item, with its condition) and the entry that
    /// records it in one transaction; `None` when the change's condition failed (then
    /// nothing is written). DynamoDB's transactions span tables: the change's table and
    /// this one.
    pub async fn commit(
        &self,
        org: &OrgId,
        record: AuditRecord,
        change: TransactWriteItem,
    ) -> StoreResult<Option<AuditEntry>> {
        self.append_with(org, record, Some(change)).await
    }

    async fn append_with(
        &self,
        org: &OrgId,
        record: AuditRecord,
        change: Option<TransactWriteItem>,
    ) -> StoreResult<Option<AuditEntry>> {
        let mut guess = self.cached(org);
        for attempt in 0..APPEND_TRIES {
            let guessed = guess.is_some();
            let head = match guess.take() {
                Some(h) => Some(h),
                None => self.head(org).await?,
            };
            let previous = head.as_ref().map(|(seq, hash)| (*seq, hash.as_str()));
            let entry = AuditEntry::chain(record.clone(), previous);
            let seq = head.map(|(seq, _)| seq);
            match self.write(org, &entry, seq, change.clone()).await? {
                Written::Done => {
                    self.remember(org, Some((entry.seq, entry.hash.clone())));
                    return Ok(Some(entry));
                }
                Written::ChangeRefused => return Ok(None),
                Written::HeadMoved => {}
            }
            // The head moved (or the guess was stale): read it again, at once after a guess.
            self.remember(org, None);
            if guessed {
                continue;
            }
            // Another append got there first: a short, growing, jittered pause.
            let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 10;
            let pause = 5 * u64::from(attempt.min(10)) + jitter;
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        }
        Err(StoreError::Unavailable(anyhow::anyhow!(
            "the audit chain kept moving: {APPEND_TRIES} appends lost the race"
        )))
    }

    /// Every entry of an organization before `before`, in order, one Query page at a
    /// time, until `keep` says enough.
    async fn entries(
        &self,
        org: &OrgId,
        newest_first: bool,
        before: Option<u64>,
        mut keep: impl FnMut(AuditEntry) -> bool,
    ) -> StoreResult<()> {
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :first AND :last")
                .expression_attribute_values(":pk", s(org_pk(org)))
                .expression_attribute_values(":first", s(entry_sk(0)))
                .expression_attribute_values(
                    ":last",
                    s(entry_sk(
                        before.map_or(999_999_999_999, |b| b.saturating_sub(1)),
                    )),
                )
                .scan_index_forward(!newest_first)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| store_error(e, "Query audit entries"))?;
            for item in out.items.unwrap_or_default() {
                let body = item.get("body").and_then(|v| v.as_s().ok());
                let e: AuditEntry = serde_json::from_str(body.map_or("", String::as_str))
                    .map_err(|x| failed(x, "decoding an audit entry"))?;
                if !keep(e) {
                    return Ok(());
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(()),
            }
        }
    }
}

#[async_trait]
impl AuditLog for DynamoAuditLog {
    async fn append(&self, org: &OrgId, record: AuditRecord) -> StoreResult<AuditEntry> {
        self.append_with(org, record, None)
            .await?
            .ok_or_else(|| StoreError::Failed(anyhow::anyhow!("an append with no change refused")))
    }

    async fn page(
        &self,
        org: &OrgId,
        q: &AuditQuery,
    ) -> StoreResult<(Vec<AuditEntry>, Option<u64>)> {
        let mut read = Vec::new();
        let mut matched = 0;
        self.entries(org, true, q.before, |e| {
            matched += usize::from(q.matches(&e));
            read.push(e);
            matched <= q.limit
        })
        .await?;
        Ok(audit_page(read, q))
    }

    async fn chain(&self, org: &OrgId) -> StoreResult<(Vec<AuditEntry>, Option<AuditHead>)> {
        let head = self.head(org).await?;
        let mut all = Vec::new();
        self.entries(org, false, None, |e| {
            all.push(e);
            true
        })
        .await?;
        Ok((all, head))
    }
}
