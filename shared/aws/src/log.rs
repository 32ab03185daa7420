//! The delivery log in DynamoDB.
//!
//! | pk                        | sk                       | item                          |
//! |---------------------------|--------------------------|-------------------------------|
//! | `ORG#{org}#N#{id}`        | `NOTIFICATION`           | the notification              |
//! | `ORG#{org}#N#{id}`        | `R#{recipient}#{channel}`| one delivery record           |
//! | `ORG#{org}#N#{id}#S{k}`   | `R#{recipient}#{channel}`| the same, in a sharded one    |
//! | `ORG#{org}#N#{id}`        | `ACK#{user}`             | an acknowledgement            |
//!
//! A sent record whose provider sends receipts also carries `receipt_key`
//! ([`ReceiptKey`]: `sns#{id}`, `ses#{id}`, `http#{org}#{cc}#{id}`): the sparse,
//! keys-only index [`RECEIPTS_INDEX`] on it finds the record a receipt is about with one
//! Query, and the record's TTL is the lookup's (it is the same item).
//!
//! The notification item also carries `org_index` (`ORG#{org}`) and `created_index`
//! (creation time in milliseconds, 16 digits, `#`, the id): the sparse index
//! [`NEWEST_INDEX`] on them lists an organization's notifications newest first.
//!
//! A notification of more than [`SHARD_RECORDS`] records (a dispatch to some 330
//! recipients or more) spreads its records over `shards` partitions
//! (`ORG#{org}#N#{id}#S{k}`, `k` a stable hash of the recipient, so one recipient's
//! records share a partition): a cold dispatch to 10,000 people would otherwise write
//! 30,000 items, and then every claim and finish, to one partition key, whose limit is
//! 1,000 write units a second. The notification item says how many (`shards`, absent for
//! one); only the first write of a notification chooses it. Reads of the whole
//! notification fan out over the shards. A claim, finish or recipient read goes to the
//! base partition unless this instance already knows the notification is sharded; when
//! it finds nothing there it reads the notification's `shards` once and remembers it,
//! so a notification that is not sharded (nearly all of them) costs nothing extra.
//!
//! Otherwise one partition per notification: reading it is one Query, and the
//! organization in the key keeps every read scoped. Records are created with BatchWriteItem (25 a call);
//! a claim is a conditional UpdateItem (`status = pending` and no live lease), so two
//! attempts never both send. Every item carries `expires_at` for DynamoDB's TTL.

use super::dynamodb::batch_write;
use super::{error_code, store_error};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use flare_shared::domain::receipt::ReceiptKey;
use flare_shared::domain::{
    DeliveryRecord, Notification, NotificationId, OrgId, RecipientRef, Slot, UserId,
};
use flare_shared::ports::{
    Claim, Created, DeliveryLog, Finish, ListPosition, Logged, NotificationSummary, ReceiptMatch,
    ReceiptTarget, StatusCounts, StoreError, StoreResult,
};
use std::collections::HashMap;

type Item = HashMap<String, AttributeValue>;

/// How long log items are kept (DynamoDB TTL).
pub const RETENTION_DAYS: i64 = 90;

const NOTIFICATION_SK: &str = "NOTIFICATION";
/// The global secondary index listing an organization's notifications, newest first.
pub const NEWEST_INDEX: &str = "newest";
/// The index receipts find their record by (see the module's documentation).
pub const RECEIPTS_INDEX: &str = "receipts";
const RECEIPT_KEY: &str = "receipt_key";
const ORG_INDEX: &str = "org_index";
const CREATED_INDEX: &str = "created_index";

/// The index's sort key of a place in the list: later sorts higher, then the id.
fn created_index(p: &ListPosition) -> String {
    format!("{:016}#{}", p.created_ms.max(0), p.notification_id)
}
const CONDITION_FAILED: &str = "ConditionalCheckFailedException";

/// Records per partition: a notification with more spreads them over several.
pub const SHARD_RECORDS: usize = 1_000;
/// At most this many record partitions per notification.
pub const MAX_SHARDS: usize = 100;
const SHARDS: &str = "shards";
/// Notifications whose shard count an instance remembers (then it starts over).
const SHARD_CACHE: usize = 10_000;

#[derive(Clone, Debug)]
pub struct DynamoDeliveryLog {
    client: Client,
    table: String,
    records_per_shard: usize,
    /// Base partition key -> shard count, for the notifications known to be sharded
    /// (a count never changes once the records are written).
    sharded: std::sync::Arc<std::sync::Mutex<HashMap<String, u32>>>,
}

/// How many partitions `records` records of a new notification go to.
fn shard_count(records: usize, per_shard: usize) -> u32 {
    records.div_ceil(per_shard.max(1)).clamp(1, MAX_SHARDS) as u32
}

/// A stable hash of the recipient (FNV-1a): the same shard on every instance, build and
/// version, unlike the standard library's hasher.
fn shard_of(recipient: &RecipientRef, shards: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in recipient.key().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % shards.max(1)
}

/// The partition of a recipient's records in a notification of `shards` partitions.
fn record_pk(base: &str, recipient: &RecipientRef, shards: u32) -> String {
    if shards <= 1 {
        base.to_string()
    } else {
        format!("{base}#S{:02}", shard_of(recipient, shards))
    }
}

/// An item's sort key (empty when it has none).
fn item_sk(item: &Item) -> String {
    item.get("sk")
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default()
}

/// A notification item's `shards` (1 when absent).
fn item_shards(item: &Item) -> u32 {
    item.get(SHARDS)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1)
}

/// Every record partition of a notification of `shards` partitions.
fn record_pks(base: &str, shards: u32) -> Vec<String> {
    if shards <= 1 {
        vec![base.to_string()]
    } else {
        (0..shards).map(|k| format!("{base}#S{k:02}")).collect()
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub fn notification_pk(org: &OrgId, id: &NotificationId) -> String {
    format!("ORG#{org}#N#{id}")
}

/// The key of a notification's own item in its partition `base`.
fn notification_key(base: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), s(base)),
        ("sk".to_string(), s(NOTIFICATION_SK)),
    ])
}

fn record_sk(recipient: &RecipientRef, slot: Slot) -> String {
    format!("R#{}#{}", recipient.key(), slot.key())
}

/// The delivery a record's key names: `ORG#{org}#N#{id}[#S{k}]` and
/// `R#{recipient}#{channel}[#{cycle}]`.
fn receipt_target(pk: &str, sk: &str) -> Option<ReceiptTarget> {
    let rest = pk.strip_prefix("ORG#")?;
    let (org, rest) = rest.split_once("#N#")?;
    let id = rest.split_once("#S").map_or(rest, |(id, _)| id);
    let rest = sk.strip_prefix("R#")?;
    // The recipient key (`user:u-1`, `contact:2`) has no `#`; the slot follows it.
    let (recipient, slot) = rest.split_once('#')?;
    Some(ReceiptTarget {
        org_id: OrgId::parse(org).ok()?,
        notification_id: NotificationId::parse_existing(id).ok()?,
        recipient: recipient.to_string(),
        channel: Slot::parse_key(slot)?.channel,
    })
}

/// When a notification's items expire (DynamoDB TTL): [`RETENTION_DAYS`] after the
/// notification was created, for all of its items alike, whenever each was written; at
/// least a day from now, so an event with an old `time` is not deleted on arrival.
fn expires_at(created_at: chrono::DateTime<chrono::Utc>) -> i64 {
    let by_creation = created_at + chrono::Duration::days(RETENTION_DAYS);
    by_creation
        .max(chrono::Utc::now() + chrono::Duration::days(1))
        .timestamp()
}

fn encode<T: serde::Serialize>(pk: String, sk: String, v: &T, expires: i64) -> StoreResult<Item> {
    let mut item: Item = serde_dynamo::to_item(v)
        .map_err(|e| StoreError::Failed(anyhow::Error::new(e).context("encoding log item")))?;
    item.insert("pk".into(), s(pk));
    item.insert("sk".into(), s(sk));
    item.insert("expires_at".into(), n(expires));
    Ok(item)
}

fn decode<T: serde::de::DeserializeOwned>(mut item: Item) -> StoreResult<T> {
    for k in [
        "pk",
        "sk",
        "expires_at",
        "lease_ms",
        RECEIPT_KEY,
        ORG_INDEX,
        CREATED_INDEX,
        SHARDS,
    ] {
        item.remove(k);
    }
    serde_dynamo::from_item(item)
        .map_err(|e| StoreError::Failed(anyhow::Error::new(e).context("decoding log item")))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct AckItem {
    user_id: UserId,
    at: chrono::DateTime<chrono::Utc>,
}

impl DynamoDeliveryLog {
    /// Runs the Query `query` builds page after page (consistent reads), handing each
    /// item to `each` until it answers `false` or the pages end.
    async fn each_item(
        &self,
        what: &'static str,
        query: impl Fn() -> QueryFluentBuilder,
        mut each: impl FnMut(Item) -> StoreResult<bool>,
    ) -> StoreResult<()> {
        let mut start: Option<Item> = None;
        loop {
            let page = query()
                .table_name(&self.table)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| store_error(e, what))?;
            for item in page.items.unwrap_or_default() {
                if !each(item)? {
                    return Ok(());
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(()),
            }
        }
    }

    /// A Query of one notification's partition whose sort key starts with `prefix`.
    fn partition(&self, pk: &str, prefix: &str) -> QueryFluentBuilder {
        self.client
            .query()
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":prefix", s(prefix))
            .consistent_read(true)
    }

    /// A notification's deliveries counted by state: its records' `status` only, in each
    /// of its `shards` record partitions.
    async fn count(&self, n: &Notification, shards: u32) -> StoreResult<StatusCounts> {
        #[derive(serde::Deserialize)]
        struct State {
            status: flare_shared::domain::DeliveryStatus,
        }
        let base = notification_pk(&n.org_id, &n.notification_id);
        let mut counts = StatusCounts::default();
        for pk in record_pks(&base, shards) {
            self.each_item(
                "Query record states",
                || {
                    self.partition(&pk, "R#")
                        .projection_expression("#status")
                        .expression_attribute_names("#status", "status")
                },
                |item| {
                    counts.add(decode::<State>(item)?.status);
                    Ok(true)
                },
            )
            .await?;
        }
        Ok(counts)
    }

    /// A notification's record shards: what this instance remembers, else the
    /// notification item's `shards` (remembered when there), else 1.
    async fn shards(&self, base: &str) -> StoreResult<u32> {
        if let Some(k) = self.known_shards(base) {
            return Ok(k);
        }
        let item = self.get_record(notification_key(base)).await?;
        let k = item.as_ref().map_or(1, item_shards);
        if k > 1 {
            self.remember_shards(base, k);
        }
        Ok(k)
    }

    fn known_shards(&self, base: &str) -> Option<u32> {
        self.sharded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(base)
            .copied()
    }

    fn remember_shards(&self, base: &str, k: u32) {
        let mut known = self.sharded.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= SHARD_CACHE {
            known.clear();
        }
        known.insert(base.to_string(), k);
    }

    /// Where this instance would look for a recipient's records without any read: its
    /// shard when the notification is known to be sharded, else the base partition.
    fn likely_pk(&self, base: &str, recipient: &RecipientRef) -> (String, bool) {
        match self.known_shards(base) {
            Some(k) => (record_pk(base, recipient, k), true),
            None => (base.to_string(), false),
        }
    }

    /// After nothing was found at the base partition: the recipient's shard, when the
    /// notification turns out to be sharded.
    async fn shard_pk_after_miss(
        &self,
        base: &str,
        recipient: &RecipientRef,
    ) -> StoreResult<Option<String>> {
        let k = self.shards(base).await?;
        Ok((k > 1).then(|| record_pk(base, recipient, k)))
    }

    /// A notification's acknowledgements.
    async fn acks(&self, pk: &str) -> StoreResult<Vec<(UserId, chrono::DateTime<chrono::Utc>)>> {
        let mut acks = Vec::new();
        self.each_item(
            "Query acks",
            || self.partition(pk, "ACK#"),
            |item| {
                let a: AckItem = decode(item)?;
                acks.push((a.user_id, a.at));
                Ok(true)
            },
        )
        .await?;
        Ok(acks)
    }

    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            records_per_shard: SHARD_RECORDS,
            sharded: Default::default(),
        }
    }

    /// The same log with another shard size (tests shard tiny notifications with it).
    pub fn with_shard_records(mut self, records_per_shard: usize) -> Self {
        self.records_per_shard = records_per_shard.max(1);
        self
    }

    fn key(pk: String, recipient: &RecipientRef, slot: Slot) -> Item {
        HashMap::from([
            ("pk".to_string(), s(pk)),
            ("sk".to_string(), s(record_sk(recipient, slot))),
        ])
    }

    /// Puts an item unless one with its key exists; answers whether it was written.
    async fn put_if_absent(&self, item: Item, what: &'static str) -> StoreResult<bool> {
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if error_code(&e) == Some(CONDITION_FAILED) => Ok(false),
            Err(e) => Err(store_error(e, what)),
        }
    }

    async fn get_record(&self, key: Item) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(e, "GetItem"))?;
        Ok(out.item)
    }
}

#[async_trait]
impl DeliveryLog for DynamoDeliveryLog {
    async fn create_notification(&self, n: &Notification) -> StoreResult<Created> {
        let mut item = encode(
            notification_pk(&n.org_id, &n.notification_id),
            NOTIFICATION_SK.into(),
            n,
            expires_at(n.created_at),
        )?;
        item.insert(ORG_INDEX.into(), s(format!("ORG#{}", n.org_id)));
        item.insert(CREATED_INDEX.into(), s(created_index(&ListPosition::of(n))));
        Ok(if self.put_if_absent(item, "PutItem notification").await? {
            Created::New
        } else {
            Created::AlreadyExists
        })
    }

    /// One Query on the recipient's sort-key prefix (`R#<recipient>#`, the `#` ending the
    /// key, so `user:u-1` never matches `user:u-12`).
    async fn recipient_records(
        &self,
        org: &OrgId,
        id: &NotificationId,
        recipient: &RecipientRef,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let base = notification_pk(org, id);
        let query = |pk: String| async move {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":prefix", s(format!("R#{}#", recipient.key())))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| store_error(e, "Query recipient records"))?;
            out.items
                .unwrap_or_default()
                .into_iter()
                .map(decode)
                .collect::<StoreResult<Vec<DeliveryRecord>>>()
        };
        let (pk, known) = self.likely_pk(&base, recipient);
        let records = query(pk).await?;
        if records.is_empty()
            && !known
            && let Some(pk) = self.shard_pk_after_miss(&base, recipient).await?
        {
            return query(pk).await;
        }
        Ok(records)
    }

    async fn get_notification(
        &self,
        org: &OrgId,
        id: &NotificationId,
    ) -> StoreResult<Option<Logged>> {
        let pk = notification_pk(org, id);
        let mut notification = None;
        let mut shards = 1;
        let mut records = Vec::new();
        let mut acks = Vec::new();
        self.each_item(
            "Query notification",
            || {
                self.client
                    .query()
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", s(pk.clone()))
                    .consistent_read(true)
            },
            |item| {
                let sk = item_sk(&item);
                if sk == NOTIFICATION_SK {
                    shards = item_shards(&item);
                    notification = Some(decode::<Notification>(item)?);
                } else if sk.starts_with("R#") {
                    records.push(decode::<DeliveryRecord>(item)?);
                } else if sk.starts_with("ACK#") {
                    let a: AckItem = decode(item)?;
                    acks.push((a.user_id, a.at));
                }
                Ok(true)
            },
        )
        .await?;
        if shards > 1 {
            self.remember_shards(&pk, shards);
            for shard in record_pks(&pk, shards) {
                self.each_item(
                    "Query notification shard",
                    || self.partition(&shard, "R#"),
                    |item| {
                        records.push(decode::<DeliveryRecord>(item)?);
                        Ok(true)
                    },
                )
                .await?;
            }
        }
        Ok(notification.map(|notification| Logged {
            notification,
            records,
            acks,
        }))
    }

    /// One conditional put per record (`attribute_not_exists`), a bounded number in
    /// flight: a delayed replay must never reset a record that moved on (a blind
    /// `BatchWriteItem` put would turn `sent` back into `pending` and send it again).
    async fn put_records(&self, n: &Notification, records: &[DeliveryRecord]) -> StoreResult<()> {
        use futures::StreamExt;
        let expires = expires_at(n.created_at);
        // A replay keeps the layout the first write chose (never chooses one itself).
        let base = notification_pk(&n.org_id, &n.notification_id);
        let shards = self.shards(&base).await?;
        let items = records
            .iter()
            .map(|r| {
                encode(
                    record_pk(&base, &r.recipient, shards),
                    record_sk(&r.recipient, r.slot()),
                    r,
                    expires,
                )
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let mut puts = futures::stream::iter(items)
            .map(|item| self.put_if_absent(item, "PutItem record"))
            .buffer_unordered(crate::batch::batch_concurrency());
        while let Some(put) = puts.next().await {
            put?;
        }
        Ok(())
    }

    /// The first write of a notification just created: `BatchWriteItem`, 25 at a time.
    async fn put_first_records(
        &self,
        n: &Notification,
        records: &[DeliveryRecord],
    ) -> StoreResult<()> {
        let expires = expires_at(n.created_at);
        let base = notification_pk(&n.org_id, &n.notification_id);
        let shards = shard_count(records.len(), self.records_per_shard);
        if shards > 1 {
            // Said on the notification before any record is written, so whoever finds a
            // record can find the others.
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(notification_key(&base)))
                .update_expression("SET #shards = :shards")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_names("#shards", SHARDS)
                .expression_attribute_values(":shards", AttributeValue::N(shards.to_string()))
                .send()
                .await
                .map_err(|e| store_error(e, "UpdateItem notification shards"))?;
            self.remember_shards(&base, shards);
        }
        batch_write(&self.client, &self.table, records, |r| {
            encode(
                record_pk(&base, &r.recipient, shards),
                record_sk(&r.recipient, r.slot()),
                r,
                expires,
            )
        })
        .await
    }

    async fn claim(
        &self,
        org: &OrgId,
        id: &NotificationId,
        recipient: &RecipientRef,
        slot: Slot,
        lease: std::time::Duration,
    ) -> StoreResult<Claim> {
        let base = notification_pk(org, id);
        let (pk, known) = self.likely_pk(&base, recipient);
        let claim = self.claim_at(Self::key(pk, recipient, slot), lease).await?;
        if matches!(claim, Claim::Missing)
            && !known
            && let Some(pk) = self.shard_pk_after_miss(&base, recipient).await?
        {
            return self.claim_at(Self::key(pk, recipient, slot), lease).await;
        }
        Ok(claim)
    }

    async fn finish(
        &self,
        org: &OrgId,
        id: &NotificationId,
        recipient: &RecipientRef,
        slot: Slot,
        outcome: Finish,
    ) -> StoreResult<bool> {
        let base = notification_pk(org, id);
        let (pk, known) = self.likely_pk(&base, recipient);
        let update = FinishUpdate::of(outcome);
        if self
            .finish_at(Self::key(pk, recipient, slot), &update)
            .await?
        {
            return Ok(true);
        }
        // Not moved: done already, or (the layout not known here yet) in a shard.
        if !known && let Some(pk) = self.shard_pk_after_miss(&base, recipient).await? {
            return self
                .finish_at(Self::key(pk, recipient, slot), &update)
                .await;
        }
        Ok(false)
    }

    /// The notification item, then its records from the one after `after` on (sort key
    /// between `R#{after}#~` and `R$`: `~` follows every channel, `$` follows `#`) until
    /// `recipients` recipients are read, then its acks: reads only the page.
    async fn notification_page(
        &self,
        org: &OrgId,
        id: &NotificationId,
        after: Option<&str>,
        recipients: usize,
    ) -> StoreResult<Option<(Logged, Option<String>)>> {
        let pk = notification_pk(org, id);
        let key = notification_key(&pk);
        let Some(item) = self.get_record(key).await? else {
            return Ok(None);
        };
        let shards = item_shards(&item);
        if shards > 1 {
            self.remember_shards(&pk, shards);
        }
        let notification: Notification = decode(item)?;
        let from = after.map_or_else(|| "R#".to_string(), |a| format!("R#{a}#~"));
        // From each partition, the records of at most `recipients + 1` recipients in key
        // order (each recipient is in one partition); merged, the first `recipients` of
        // them are the page, and one more means there is a next page.
        let mut records: Vec<(String, DeliveryRecord)> = Vec::new();
        for shard in record_pks(&pk, shards) {
            let mut keys = 0;
            let mut last: Option<String> = None;
            self.each_item(
                "Query notification page",
                || {
                    self.client
                        .query()
                        .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                        .expression_attribute_values(":pk", s(shard.clone()))
                        .expression_attribute_values(":from", s(from.clone()))
                        .expression_attribute_values(":to", s("R$"))
                        .consistent_read(true)
                },
                |item| {
                    let sk = item_sk(&item);
                    let r: DeliveryRecord = decode(item)?;
                    let k = r.recipient.key();
                    if last.as_ref() != Some(&k) {
                        if keys > recipients {
                            return Ok(false);
                        }
                        keys += 1;
                        last = Some(k);
                    }
                    records.push((sk, r));
                    Ok(true)
                },
            )
            .await?;
        }
        records.sort_by(|a, b| a.0.cmp(&b.0));
        let mut page: Vec<DeliveryRecord> = Vec::new();
        let mut keys: Vec<String> = Vec::new();
        let mut next = None;
        for (_, r) in records {
            let k = r.recipient.key();
            if keys.last() != Some(&k) {
                if keys.len() == recipients {
                    next = keys.last().cloned();
                    break;
                }
                keys.push(k);
            }
            page.push(r);
        }
        let records = page;
        let acks = self.acks(&pk).await?;
        Ok(Some((
            Logged {
                notification,
                records,
                acks,
            },
            next,
        )))
    }

    /// One Query on the index for the page (following its pages until `limit`
    /// notifications are found), then one Query per notification for its records'
    /// `status` only, a few at a time.
    async fn receipt(&self, key: &ReceiptKey, outcome: Finish) -> StoreResult<ReceiptMatch> {
        // One Query on the keys-only index, one conditional update: a receipt costs two
        // calls. The index is eventually consistent: a receipt that outruns its record's
        // `sent` write by less than the index's lag is not found (see the receipts
        // function, which looks again once).
        let found = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(RECEIPTS_INDEX)
            .key_condition_expression("#rk = :rk")
            .expression_attribute_names("#rk", RECEIPT_KEY)
            .expression_attribute_values(":rk", s(key.as_str()))
            .limit(2)
            .send()
            .await
            .map_err(|e| store_error(e, "Query receipts index"))?;
        let mut items = found.items.unwrap_or_default();
        // A key two deliveries share (a gateway that reuses its ids) names neither.
        if items.len() != 1 {
            return Ok(ReceiptMatch::Unknown);
        }
        let item = items.remove(0);
        let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let (Some(pk), Some(sk)) = (text("pk"), text("sk")) else {
            return Ok(ReceiptMatch::Unknown);
        };
        let target = receipt_target(&pk, &sk).ok_or_else(|| {
            StoreError::Failed(anyhow::anyhow!(
                "a receipt index entry with an unexpected key: {pk} {sk}"
            ))
        })?;
        let mut key_item = Item::new();
        key_item.insert("pk".into(), s(pk));
        key_item.insert("sk".into(), s(sk));
        let moved = self.finish_at(key_item, &FinishUpdate::of(outcome)).await?;
        Ok(ReceiptMatch::Found { target, moved })
    }

    async fn list_notifications(
        &self,
        org: &OrgId,
        after: Option<&ListPosition>,
        limit: usize,
    ) -> StoreResult<Vec<NotificationSummary>> {
        use futures::{StreamExt, TryStreamExt};
        // Each with its record partitions (the index projects the whole item).
        let mut notifications: Vec<(Notification, u32)> = Vec::new();
        if limit > 0 {
            let org_index = s(format!("ORG#{org}"));
            self.each_item(
                "Query notifications index",
                || {
                    let q = self
                        .client
                        .query()
                        .index_name(NEWEST_INDEX)
                        .expression_attribute_values(":org", org_index.clone())
                        .scan_index_forward(false)
                        .limit(limit as i32);
                    match after {
                        Some(a) => q
                            .key_condition_expression("org_index = :org AND created_index < :after")
                            .expression_attribute_values(":after", s(created_index(a))),
                        None => q.key_condition_expression("org_index = :org"),
                    }
                },
                |item| {
                    let shards = item_shards(&item);
                    notifications.push((decode(item)?, shards));
                    Ok(notifications.len() < limit)
                },
            )
            .await?;
        }
        notifications.truncate(limit);
        futures::stream::iter(notifications)
            .map(|(n, shards)| async move {
                let counts = self.count(&n, shards).await?;
                Ok::<_, StoreError>(NotificationSummary {
                    notification: n,
                    counts,
                })
            })
            .buffered(8)
            .try_collect()
            .await
    }

    async fn ack(&self, org: &OrgId, id: &NotificationId, user: &UserId) -> StoreResult<bool> {
        // The ack expires with its notification: read when that is.
        let expires = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(notification_key(&notification_pk(org, id))))
            .projection_expression("expires_at")
            .send()
            .await
            .map_err(|e| store_error(e, "GetItem notification expiry"))?
            .item
            .and_then(|i| i.get("expires_at")?.as_n().ok()?.parse().ok())
            .unwrap_or_else(|| expires_at(chrono::Utc::now()));
        let item = encode(
            notification_pk(org, id),
            format!("ACK#{user}"),
            &AckItem {
                user_id: user.clone(),
                at: chrono::Utc::now(),
            },
            expires,
        )?;
        // The first ack's time is kept.
        self.put_if_absent(item, "PutItem ack").await
    }
}

impl DynamoDeliveryLog {
    /// The claim's conditional update on one record's key.
    async fn claim_at(&self, key: Item, lease: std::time::Duration) -> StoreResult<Claim> {
        let now = chrono::Utc::now();
        let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key.clone()))
            .update_expression(
                "SET attempts = if_not_exists(attempts, :zero) + :one, lease_ms = :until, claimed_until = :until_s REMOVE awaiting_push",
            )
            .condition_expression(
                "attribute_exists(pk) AND #status = :pending AND (attribute_not_exists(lease_ms) OR lease_ms < :now)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":until", n(until.timestamp_millis()))
            .expression_attribute_values(":until_s", s(until.to_rfc3339()))
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .expression_attribute_values(":pending", s("pending"))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        match result {
            Ok(out) => {
                let attempts = out
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get("attempts"))
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                Ok(Claim::Claimed { attempts })
            }
            Err(e) if error_code(&e) == Some(CONDITION_FAILED) => {
                // Why not: gone, done, or held by a live attempt.
                let Some(item) = self.get_record(key).await? else {
                    return Ok(Claim::Missing);
                };
                let record: DeliveryRecord = decode(item)?;
                if record.status != flare_shared::domain::DeliveryStatus::Pending {
                    Ok(Claim::AlreadyDone(record.status))
                } else {
                    Ok(Claim::InFlight)
                }
            }
            Err(e) => Err(store_error(e, "UpdateItem claim")),
        }
    }

    /// A finish's conditional update on one record's key; whether it moved the record.
    async fn finish_at(&self, key: Item, update: &FinishUpdate) -> StoreResult<bool> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(update.expression.clone())
            .condition_expression(update.condition.clone())
            .expression_attribute_names("#status", "status");
        for (k, v) in &update.values {
            req = req.expression_attribute_values(*k, v.clone());
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if error_code(&e) == Some(CONDITION_FAILED) => Ok(false),
            Err(e) => Err(store_error(e, "UpdateItem finish")),
        }
    }
}

/// A finish as a conditional update: its expression, its condition and their values.
struct FinishUpdate {
    expression: String,
    condition: String,
    values: Vec<(&'static str, AttributeValue)>,
}

impl FinishUpdate {
    fn of(outcome: Finish) -> Self {
        let mut values: Vec<(&'static str, AttributeValue)> = vec![(":pending", s("pending"))];
        let mut condition = "#status = :pending".to_string();
        let expression = match outcome {
            Finish::Sent {
                provider,
                provider_message_id,
                receipt_key,
                failover_from,
                ..
            } => {
                values.push((":sent", s("sent")));
                values.push((":provider", s(provider.as_str())));
                let mut set = "SET #status = :sent, provider = :provider".to_string();
                if let Some(mid) = provider_message_id {
                    values.push((":mid", s(mid)));
                    set.push_str(", provider_message_id = :mid");
                }
                if let Some(k) = receipt_key {
                    values.push((":rk", s(k.as_str())));
                    set.push_str(", receipt_key = :rk");
                }
                if let Some(from) = failover_from {
                    values.push((":from", s(from.as_str())));
                    set.push_str(", failover_from = :from");
                }
                set + " REMOVE lease_ms, claimed_until, reason"
            }
            Finish::Failed { attempt, reason } => {
                values.push((":attempt", n(attempt.into())));
                condition.push_str(" AND attempts = :attempt");
                values.push((":failed", s("failed")));
                values.push((":reason", s(reason)));
                "SET #status = :failed, reason = :reason REMOVE lease_ms, claimed_until".to_string()
            }
            Finish::Retry { attempt, reason } => {
                values.push((":attempt", n(attempt.into())));
                condition.push_str(" AND attempts = :attempt");
                values.push((":reason", s(reason)));
                "SET reason = :reason REMOVE lease_ms, claimed_until".to_string()
            }
            Finish::Postpone { attempt, reason } => {
                values.push((":attempt", n(attempt.into())));
                condition.push_str(" AND attempts = :attempt");
                values.push((":reason", s(reason)));
                values.push((":one", n(1)));
                "SET reason = :reason, attempts = attempts - :one REMOVE lease_ms, claimed_until"
                    .to_string()
            }
            Finish::Abandon { reason } => {
                values.push((":now", n(chrono::Utc::now().timestamp_millis())));
                condition.push_str(" AND (attribute_not_exists(lease_ms) OR lease_ms < :now)");
                values.push((":failed", s("failed")));
                values.push((":reason", s(reason)));
                "SET #status = :failed, reason = :reason REMOVE awaiting_push, lease_ms, claimed_until".to_string()
            }
            Finish::Cancel { reason } => {
                values.push((":now", n(chrono::Utc::now().timestamp_millis())));
                condition.push_str(" AND (attribute_not_exists(lease_ms) OR lease_ms < :now)");
                values.push((":skipped", s("skipped")));
                values.push((":reason", s(reason)));
                "SET #status = :skipped, reason = :reason REMOVE awaiting_push, lease_ms, claimed_until".to_string()
            }
            Finish::WillFallBack { fallback_reason } => {
                values.push((":true", AttributeValue::Bool(true)));
                condition.push_str(" AND awaiting_push = :true");
                values.push((":why", s(fallback_reason.as_str())));
                "SET fallback_reason = :why".to_string()
            }
            Finish::Wait { until } => {
                values.push((":true", AttributeValue::Bool(true)));
                condition
                    .push_str(" AND awaiting_push = :true AND attribute_not_exists(fallback_at)");
                values.push((":until", s(until.to_rfc3339())));
                "SET fallback_at = :until".to_string()
            }
            Finish::Release => {
                values.push((":true", AttributeValue::Bool(true)));
                condition.push_str(" AND awaiting_push = :true");
                "REMOVE awaiting_push".to_string()
            }
            Finish::SkipHeld { reason } => {
                values.push((":true", AttributeValue::Bool(true)));
                values.push((":skipped", s("skipped")));
                values.push((":reason", s(reason)));
                condition.push_str(" AND awaiting_push = :true");
                "SET #status = :skipped, reason = :reason REMOVE awaiting_push".to_string()
            }
            Finish::Delivered { at } => {
                values = vec![(":sent", s("sent"))];
                condition = "#status = :sent".to_string();
                values.push((":delivered", s("delivered")));
                values.push((":at", s(at.to_rfc3339())));
                "SET #status = :delivered, delivered_at = :at".to_string()
            }
            Finish::Undelivered { reason, detail } => {
                values = vec![(":sent", s("sent"))];
                condition = "#status = :sent".to_string();
                values.push((":undelivered", s("undelivered")));
                values.push((":reason", s(reason)));
                match detail {
                    Some(d) => {
                        values.push((":detail", s(d)));
                        "SET #status = :undelivered, reason = :reason, detail = :detail".to_string()
                    }
                    None => "SET #status = :undelivered, reason = :reason".to_string(),
                }
            }
            Finish::Complaint => {
                values = vec![
                    (":sent", s("sent")),
                    (":delivered", s("delivered")),
                    (":true", AttributeValue::Bool(true)),
                ];
                condition =
                    "(#status = :sent OR #status = :delivered) AND attribute_not_exists(complaint)"
                        .to_string();
                "SET complaint = :true".to_string()
            }
        };
        Self {
            expression,
            condition,
            values,
        }
    }
}

/// Creates a log table as the template does: `pk`/`sk` and the [`NEWEST_INDEX`] index
/// (tests and tools; the template creates the deployed one).
pub async fn create_table(client: &Client, name: &str) -> anyhow::Result<()> {
    super::dynamodb::create_table_with_index(
        client,
        name,
        Some((NEWEST_INDEX, ORG_INDEX, CREATED_INDEX)),
        Some((RECEIPTS_INDEX, RECEIPT_KEY)),
    )
    .await
}
