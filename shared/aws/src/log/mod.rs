//! The delivery log in DynamoDB.
//!
//! | pk                        | sk                       | item                          |
//! |---------------------------|--------------------------|-------------------------------|
//! | `ORG#{org}#N#{id}`        | `NOTIFICATION`           | the notification              |
//! | `ORG#{org}#N#{id}`        | `R#{recipient}#{channel}`| one delivery record           |
//! | `ORG#{org}#N#{id}#S{k}`   | `R#{recipient}#{channel}`| the same, in a sharded one    |
//! | `ORG#{org}#N#{id}`        | `ACK#{user}`             | an acknowledgement (and answer)|
//! | `ORG#{org}#SMSTO#{phone}` | `LAST`                   | the newest dispatch SMS to it |
//! | `ORG#{org}#INBOUND#{id}`  | `INBOUND`                | an inbound SMS seen           |
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

use crate::dynamodb::batch_write;
use crate::{error_code, store_error};
use acks::{AckItem, split_acks};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use flare_shared::domain::receipt::ReceiptKey;
use flare_shared::domain::{
    DeliveryRecord, Notification, NotificationId, OrgId, RecipientRef, RoutePage, Slot, UserId,
};
use flare_shared::ports::{
    Claim, Created, DeliveryLog, Finish, ListPosition, Logged, NotificationSummary, ReceiptMatch,
    ReceiptTarget, SmsSent, StatusCounts, StoreError, StoreResult,
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

/// Where the newest dispatch SMS sent to `number` is remembered: in `org`, or (`None`)
/// through SNS in any organization.
fn sms_sent_pk(org: Option<&OrgId>, number: &flare_shared::domain::PhoneNumber) -> String {
    match org {
        Some(org) => format!("ORG#{org}#SMSTO#{}", number.as_str()),
        None => format!("SMSTO#{}", number.as_str()),
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

/// A sharded view's cursor: `S<shard>~<recipient key>` (or `S<shard>~`, a shard's
/// start). Anything else (a recipient key alone) starts at the first shard after it.
fn parse_shard_cursor(after: Option<&str>) -> (u32, Option<String>) {
    let Some(a) = after else {
        return (0, None);
    };
    match a
        .strip_prefix('S')
        .and_then(|rest| rest.split_once('~'))
        .and_then(|(n, key)| Some((n.parse::<u32>().ok()?, key)))
    {
        Some((shard, "")) => (shard, None),
        Some((shard, key)) => (shard, Some(key.to_string())),
        None => (0, Some(a.to_string())),
    }
}

/// The partition of a notification's route pages.
fn plan_pk(base: &str) -> String {
    format!("{base}#PLAN")
}

fn page_sk(page: u32) -> String {
    format!("PAGE#{page:05}")
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

    /// Picks the record layout of a notification of `records` records and, when it is
    /// sharded, says so on the notification item before any record is written, so
    /// whoever finds a record can find the others. Answers the shard count.
    async fn set_layout(&self, base: &str, records: usize) -> StoreResult<u32> {
        let shards = shard_count(records, self.records_per_shard);
        if shards > 1 {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(notification_key(base)))
                .update_expression("SET #shards = :shards")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_names("#shards", SHARDS)
                .expression_attribute_values(":shards", AttributeValue::N(shards.to_string()))
                .send()
                .await
                .map_err(|e| store_error(e, "UpdateItem notification shards"))?;
            self.remember_shards(base, shards);
        }
        Ok(shards)
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

    /// Runs `at` on the partition of a recipient's records: where this instance would
    /// look without any read (its shard when the notification is known to be sharded,
    /// else the base partition), then, when `missed` says that found nothing and the
    /// layout was not known, once more in the recipient's shard if the notification
    /// turns out to be sharded. Claims, finishes and recipient reads all find a record
    /// this one way.
    async fn at_recipient<T, F>(
        &self,
        base: &str,
        recipient: &RecipientRef,
        missed: impl Fn(&T) -> bool,
        at: impl Fn(String) -> F,
    ) -> StoreResult<T>
    where
        F: std::future::Future<Output = StoreResult<T>>,
    {
        let known = self.known_shards(base);
        let pk = known.map_or_else(|| base.to_string(), |k| record_pk(base, recipient, k));
        let found = at(pk).await?;
        if !missed(&found) || known.is_some() {
            return Ok(found);
        }
        let k = self.shards(base).await?;
        if k > 1 {
            return at(record_pk(base, recipient, k)).await;
        }
        Ok(found)
    }

    /// A page of a notification's view: its record partitions in order (one, or its
    /// shards), each in recipient order, from the cursor `after` until `recipients`
    /// recipients are read, with `Limit` on each Query: one page reads about one page of
    /// records, whatever the notification's size. A sharded notification's cursor names
    /// the shard (`S<shard>~<recipient key>`, `S<shard>~` for a shard's start); one in a
    /// single partition is the recipient key alone. Answers the records and the cursor
    /// of the next page, if one follows.
    async fn page_records(
        &self,
        base: &str,
        shards: u32,
        after: Option<&str>,
        recipients: usize,
    ) -> StoreResult<(Vec<DeliveryRecord>, Option<String>)> {
        let partitions = record_pks(base, shards);
        let (mut shard, mut from_key) = if shards > 1 {
            parse_shard_cursor(after)
        } else {
            (0, after.map(str::to_string))
        };
        let mut page: Vec<DeliveryRecord> = Vec::new();
        let mut keys = 0usize;
        while let Some(pk) = partitions.get(shard as usize) {
            let from = from_key
                .take()
                .map_or_else(|| "R#".to_string(), |a| format!("R#{a}#~"));
            // About three records a recipient (one a channel), and one recipient more
            // to know whether the page is full.
            let limit =
                i32::try_from(((recipients - keys + 1) * 3).clamp(3, 1_000)).unwrap_or(1_000);
            let mut last: Option<String> = None;
            let mut full = false;
            self.each_item(
                "Query notification page",
                || {
                    self.client
                        .query()
                        .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                        .expression_attribute_values(":pk", s(pk.clone()))
                        .expression_attribute_values(":from", s(from.clone()))
                        .expression_attribute_values(":to", s("R$"))
                        .limit(limit)
                        .consistent_read(true)
                },
                |item| {
                    let r: DeliveryRecord = decode(item)?;
                    let k = r.recipient.key();
                    if last.as_ref() != Some(&k) {
                        if keys == recipients {
                            full = true;
                            return Ok(false);
                        }
                        keys += 1;
                        last = Some(k);
                    }
                    page.push(r);
                    Ok(true)
                },
            )
            .await?;
            if full {
                let key = last.unwrap_or_default();
                let next = if shards > 1 {
                    format!("S{shard:02}~{key}")
                } else {
                    key
                };
                return Ok((page, Some(next)));
            }
            shard += 1;
        }
        Ok((page, None))
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

mod acks;
mod finish;
use finish::{FinishAt, FinishUpdate};
mod port;
