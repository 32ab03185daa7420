//! DynamoDB adapters for settings and the directory.
//!
//! Item layout (both tables keyed `pk` (S) + `sk` (S); they may be one table, since
//! their sort keys never collide):
//!
//! | table     | pk          | sk              | item                                   |
//! |-----------|-------------|-----------------|----------------------------------------|
//! | settings  | `ORG#{org}` | `SMS#{cc}`      | one control center's SMS settings      |
//! | settings  | `ORG#{org}` | `EMAIL`         | the organization's email settings      |
//! | settings  | `ORG#{org}` | `COMMUNICATION` | the communication settings             |
//! | directory | `ORG#{org}` | `USER#{id}`     | a user, with contacts and devices      |
//!
//! Access patterns: one item by key (GetItem); an organization's SMS settings or users
//! (Query on `pk` with `begins_with(sk, ...)`); every setting of an organization (one
//! Query, `sk` between `COMMUNICATION` and `SMS$`); the recipients of an event (BatchGetItem,
//! 100 keys a call). Every item is scoped by `pk`, so no read can cross organizations.
//! Items are mapped with `serde_dynamo`; secrets are never fields of these types.

use crate::audit::DynamoAuditLog;
use crate::batch::{Round, batch_concurrency, until_processed};
use crate::store_error;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, KeysAndAttributes, Put, TransactWriteItem};
use flare_shared::domain::{
    CommunicationSettings, ControlCenterId, EmailSettings, OrgId, SmsSettings, User, UserId,
};
use flare_shared::ports::{
    AllSettings, Directory, Expect, SettingsStore, StoreError, StoreResult, Stored, audit_before,
    audit_draft,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;

type Item = HashMap<String, AttributeValue>;

pub const PK: &str = "pk";
pub const SK: &str = "sk";
/// BatchGetItem's limit per call.
pub const BATCH_GET_MAX: usize = 100;

pub fn org_pk(org: &OrgId) -> String {
    format!("ORG#{org}")
}

fn key(pk: String, sk: String) -> Item {
    HashMap::from([
        (PK.into(), AttributeValue::S(pk)),
        (SK.into(), AttributeValue::S(sk)),
    ])
}

fn to_item<T: Serialize>(pk: String, sk: String, value: &T) -> StoreResult<Item> {
    let mut item: Item = serde_dynamo::to_item(value)
        .map_err(|e| StoreError::Failed(anyhow::Error::new(e).context("encoding item")))?;
    item.extend(key(pk, sk));
    Ok(item)
}

fn from_item<T: DeserializeOwned>(mut item: Item) -> StoreResult<T> {
    item.remove(PK);
    item.remove(SK);
    serde_dynamo::from_item(item)
        .map_err(|e| StoreError::Failed(anyhow::Error::new(e).context("decoding item")))
}

/// Reads, writes and queries on one table.
#[derive(Clone, Debug)]
pub(crate) struct Table {
    pub(crate) client: Client,
    pub(crate) name: String,
    /// The audit trail, where API writes are audited (the API function): an audited
    /// change is written in one transaction with its entry.
    pub(crate) audit: Option<DynamoAuditLog>,
}

fn built(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Failed(anyhow::Error::new(e).context("building a transaction's item"))
}

impl Table {
    pub(crate) fn new(client: Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
            audit: None,
        }
    }

    /// Inside an audited API write, with the trail kept: writes the change `change`
    /// builds and its entry in one transaction, and answers whether the change's
    /// condition held. `None`: not audited here, the caller writes the change alone.
    async fn audited(
        &self,
        org: &OrgId,
        after: Stored<'_>,
        change: impl FnOnce(&str) -> StoreResult<TransactWriteItem>,
    ) -> StoreResult<Option<bool>> {
        let (Some(audit), Some(draft)) = (&self.audit, audit_draft()) else {
            return Ok(None);
        };
        let item = change(&self.name)?;
        let record = draft.record(after);
        Ok(Some(match audit.commit(org, record, item).await? {
            Some(entry) => {
                draft.written(entry);
                true
            }
            None => false,
        }))
    }

    async fn get<T: DeserializeOwned>(&self, pk: String, sk: String) -> StoreResult<Option<T>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.name)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(e, "GetItem"))?;
        out.item.map(from_item).transpose()
    }

    async fn put<T: Serialize>(&self, pk: String, sk: String, value: &T) -> StoreResult<()> {
        self.client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(to_item(pk, sk, value)?))
            .send()
            .await
            .map_err(|e| store_error(e, "PutItem"))?;
        Ok(())
    }

    /// Puts only over the item `expect` names, its secrets revision at `rev` (a
    /// document path, `#r` or `#s.#r`); `false` when the condition failed.
    async fn put_if<T: Serialize>(
        &self,
        (org, sk): (&OrgId, String),
        (value, after): (&T, Stored<'_>),
        rev: Rev,
        expect: Expect<'_>,
    ) -> StoreResult<bool> {
        let item = to_item(org_pk(org), sk, value)?;
        let audited = self.audited(org, after, |name| {
            let put = Put::builder().table_name(name).set_item(Some(item.clone()));
            let put = rev.expect(expect, put).build().map_err(built)?;
            Ok(TransactWriteItem::builder().put(put).build())
        });
        if let Some(done) = audited.await? {
            return Ok(done);
        }
        let req = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item));
        match rev.expect(expect, req).send().await {
            Ok(_) => Ok(true),
            Err(e) if crate::error_code(&e) == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(store_error(e, "PutItem")),
        }
    }

    /// Deletes the item saved at secrets revision `at`; `false` when there is none.
    async fn delete_if(
        &self,
        (org, sk): (&OrgId, String),
        (rev, gone): (Rev, Stored<'_>),
        at: Option<&str>,
    ) -> StoreResult<bool> {
        let pk = org_pk(org);
        let audited = self.audited(org, gone, |name| {
            let del = Delete::builder()
                .table_name(name)
                .set_key(Some(key(pk.clone(), sk.clone())));
            let del = rev.condition(at, del).build().map_err(built)?;
            Ok(TransactWriteItem::builder().delete(del).build())
        });
        if let Some(done) = audited.await? {
            return Ok(done);
        }
        let req = self
            .client
            .delete_item()
            .table_name(&self.name)
            .set_key(Some(key(pk, sk)));
        match rev.condition(at, req).send().await {
            Ok(_) => Ok(true),
            Err(e) if crate::error_code(&e) == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(store_error(e, "DeleteItem")),
        }
    }

    /// Deletes; answers whether the item existed.
    async fn delete(&self, pk: String, sk: String) -> StoreResult<bool> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.name)
            .set_key(Some(key(pk, sk)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| store_error(e, "DeleteItem"))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    /// Every item of `pk` whose sort key starts with `prefix`, following pages.
    async fn query_prefix<T: DeserializeOwned>(
        &self,
        pk: String,
        prefix: &str,
    ) -> StoreResult<Vec<T>> {
        self.query(pk, "begins_with(#sk, :a)", &[prefix])
            .await?
            .into_iter()
            .map(from_item)
            .collect()
    }

    /// Every item of `pk` whose sort key is between `from` and `to` (inclusive), raw,
    /// following pages.
    async fn query_between(&self, pk: String, from: &str, to: &str) -> StoreResult<Vec<Item>> {
        self.query(pk, "#sk BETWEEN :a AND :b", &[from, to]).await
    }

    /// Every item of `pk` whose sort key meets `sk_condition` (over `#sk` and the values
    /// `:a`, `:b`, ... in order), raw, following pages.
    async fn query(
        &self,
        pk: String,
        sk_condition: &str,
        values: &[&str],
    ) -> StoreResult<Vec<Item>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.name)
                .key_condition_expression(format!("#pk = :pk AND {sk_condition}"))
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":pk", AttributeValue::S(pk.clone()));
            for (name, v) in [":a", ":b"].iter().zip(values) {
                q = q.expression_attribute_values(*name, AttributeValue::S((*v).into()));
            }
            let page = q
                .set_exclusive_start_key(start.take())
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| store_error(e, "Query"))?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
    }

    /// BatchGetItem, 100 keys a call (several calls in flight), retrying unprocessed
    /// keys with backoff.
    pub(crate) async fn batch_get<T: DeserializeOwned + Send>(
        &self,
        keys: Vec<Item>,
    ) -> StoreResult<Vec<T>> {
        use futures::{StreamExt, TryStreamExt};
        let chunks: Vec<Vec<Item>> = keys.chunks(BATCH_GET_MAX).map(<[Item]>::to_vec).collect();
        let pages: Vec<Vec<T>> = futures::stream::iter(chunks)
            .map(|chunk| self.get_chunk(chunk))
            .buffer_unordered(batch_concurrency())
            .try_collect()
            .await?;
        Ok(pages.into_iter().flatten().collect())
    }

    async fn get_chunk<T: DeserializeOwned>(&self, chunk: Vec<Item>) -> StoreResult<Vec<T>> {
        let request = KeysAndAttributes::builder()
            .set_keys(Some(chunk))
            .consistent_read(true)
            .build()
            .map_err(|e| StoreError::Failed(e.into()))?;
        let rounds = until_processed("BatchGetItem", request, |request| async move {
            let resp = self
                .client
                .batch_get_item()
                .request_items(&self.name, request)
                .send()
                .await
                .map_err(|e| store_error(e, "BatchGetItem"))?;
            let items = resp
                .responses
                .and_then(|mut r| r.remove(&self.name))
                .unwrap_or_default();
            let rest = resp
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.name))
                .filter(|rest| !rest.keys().is_empty())
                .map(|rest| {
                    let n = rest.keys().len();
                    (rest, n)
                });
            Ok::<_, StoreError>(Round {
                output: items,
                rest,
            })
        })
        .await?;
        rounds.into_iter().flatten().map(from_item).collect()
    }
}

/// BatchWriteItem's limit per call.
pub const BATCH_WRITE_MAX: usize = 25;

/// Puts items with BatchWriteItem, 25 a call (several calls in flight), retrying
/// unprocessed items with backoff.
///
/// Values are encoded a chunk at a time, as each call is made: a fan-out of 30,000
/// records never holds 30,000 encoded items at once.
pub async fn batch_write<T: Sync>(
    client: &Client,
    table: &str,
    values: &[T],
    encode: impl Fn(&T) -> StoreResult<Item> + Sync,
) -> StoreResult<()> {
    use futures::{StreamExt, TryStreamExt};
    let encode = &encode;
    futures::stream::iter((0..values.len()).step_by(BATCH_WRITE_MAX))
        .map(|start| async move {
            let end = (start + BATCH_WRITE_MAX).min(values.len());
            let items = values[start..end]
                .iter()
                .map(encode)
                .collect::<StoreResult<Vec<_>>>()?;
            write_chunk(client, table, items).await
        })
        .buffer_unordered(batch_concurrency())
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn write_chunk(client: &Client, table: &str, chunk: Vec<Item>) -> StoreResult<()> {
    use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
    let writes = chunk
        .into_iter()
        .map(|item| {
            let put = PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(|e| StoreError::Failed(e.into()))?;
            Ok(WriteRequest::builder().put_request(put).build())
        })
        .collect::<StoreResult<Vec<_>>>()?;
    until_processed("BatchWriteItem", writes, |writes| async move {
        let out = client
            .batch_write_item()
            .request_items(table, writes)
            .send()
            .await
            .map_err(|e| store_error(e, "BatchWriteItem"))?;
        let rest = out
            .unprocessed_items
            .and_then(|mut left| left.remove(table))
            .filter(|rest| !rest.is_empty())
            .map(|rest| {
                let n = rest.len();
                (rest, n)
            });
        Ok::<_, StoreError>(Round { output: (), rest })
    })
    .await?;
    Ok(())
}

/// A user item's revision: a fresh random token on every write, which a conditional
/// update checks so that it never overwrites a write it did not see.
const REV: &str = "rev";
/// How many times an update of a user retries after losing a race.
const MAX_UPDATE_ATTEMPTS: u32 = 20;
const SMS_PREFIX: &str = "SMS#";
const EMAIL_SK: &str = "EMAIL";
const COMMUNICATION_SK: &str = "COMMUNICATION";
const USER_PREFIX: &str = "USER#";

/// Where a settings item keeps its secrets revision (`SmsSettings::secrets_at`).
#[derive(Clone, Copy)]
enum Rev {
    Sms,
    Email,
}

/// A put or delete request that takes a condition.
trait Conditional: Sized {
    fn condition_expression(self, e: impl Into<String>) -> Self;
    fn expression_attribute_names(self, k: impl Into<String>, v: impl Into<String>) -> Self;
    fn expression_attribute_values(self, k: impl Into<String>, v: AttributeValue) -> Self;
}

macro_rules! conditional {
    ($t:ty) => {
        impl Conditional for $t {
            fn condition_expression(self, e: impl Into<String>) -> Self {
                self.condition_expression(e)
            }
            fn expression_attribute_names(
                self,
                k: impl Into<String>,
                v: impl Into<String>,
            ) -> Self {
                self.expression_attribute_names(k, v)
            }
            fn expression_attribute_values(self, k: impl Into<String>, v: AttributeValue) -> Self {
                self.expression_attribute_values(k, v)
            }
        }
    };
}
conditional!(aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder);
conditional!(aws_sdk_dynamodb::operation::delete_item::builders::DeleteItemFluentBuilder);
conditional!(aws_sdk_dynamodb::types::builders::PutBuilder);
conditional!(aws_sdk_dynamodb::types::builders::DeleteBuilder);

impl Rev {
    /// What `expect` says is stored: nothing, or an item saved at a revision.
    fn expect<R: Conditional>(self, expect: Expect<'_>, req: R) -> R {
        match expect {
            Expect::Absent => req
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PK),
            Expect::At(at) => self.condition(at, req),
        }
    }

    /// The item exists and was saved at `at` (`None`: without a revision).
    fn condition<R: Conditional>(self, at: Option<&str>, req: R) -> R {
        let path = match self {
            Rev::Sms => "#r",
            Rev::Email => "#s.#r",
        };
        let mut req = req
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#r", "secrets_at");
        if let Rev::Email = self {
            req = req.expression_attribute_names("#s", "smtp");
        }
        match at {
            Some(at) => req
                .condition_expression(format!("attribute_exists(#pk) AND {path} = :r"))
                .expression_attribute_values(":r", AttributeValue::S(at.to_string())),
            None => req.condition_expression(format!(
                "attribute_exists(#pk) AND attribute_not_exists({path})"
            )),
        }
    }
}

/// Creates a table with this layout (tests and the local tooling; in AWS the SAM
/// template creates them).
pub async fn create_table(client: &Client, name: &str) -> anyhow::Result<()> {
    create_table_with_index(client, name, None, None).await
}

/// A global secondary index: its name, partition key and sort key (strings,
/// projecting every attribute).
pub type Index<'a> = (&'a str, &'a str, &'a str);

/// Creates a `pk`/`sk` table (tests and tools; the template creates the deployed ones),
/// with `index` when given, and `keys_only` (a keys-only index on one string attribute:
/// its name and partition key) when given.
pub async fn create_table_with_index(
    client: &Client,
    name: &str,
    index: Option<Index<'_>>,
    keys_only: Option<(&str, &str)>,
) -> anyhow::Result<()> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
        Projection, ProjectionType, ScalarAttributeType,
    };
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    let key = |n: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
    };
    let mut create = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr(PK)?)
        .attribute_definitions(attr(SK)?)
        .key_schema(key(PK, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?);
    if let Some((index, hash, range)) = index {
        create = create
            .attribute_definitions(attr(hash)?)
            .attribute_definitions(attr(range)?)
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index)
                    .key_schema(key(hash, KeyType::Hash)?)
                    .key_schema(key(range, KeyType::Range)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build()?,
            );
    }
    if let Some((index, hash)) = keys_only {
        create = create
            .attribute_definitions(attr(hash)?)
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index)
                    .key_schema(key(hash, KeyType::Hash)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::KeysOnly)
                            .build(),
                    )
                    .build()?,
            );
    }
    create.send().await?;
    Ok(())
}

mod directory;
mod settings;

pub use directory::DynamoDirectory;
pub use settings::DynamoSettings;
