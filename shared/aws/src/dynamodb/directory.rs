//! The directory adapter: users, batch reads of recipients, conditional updates.

use super::*;

/// An opted-out number's item, beside the organization's users.
const OPT_OUT_PREFIX: &str = "OPTOUT#";

#[derive(serde::Serialize, serde::Deserialize)]
struct OptOut {
    at: chrono::DateTime<chrono::Utc>,
}

/// A user's write only over the revision `rev` it was read at (`None`: stored without one).
fn over_rev<R: Conditional>(req: R, rev: Option<&AttributeValue>) -> R {
    let req = req.expression_attribute_names("#rev", REV);
    match rev {
        Some(rev) => req
            .condition_expression("#rev = :rev")
            .expression_attribute_values(":rev", rev.clone()),
        None => req.condition_expression("attribute_exists(pk) AND attribute_not_exists(#rev)"),
    }
}

/// The directory in DynamoDB.
#[derive(Clone, Debug)]
pub struct DynamoDirectory {
    table: Table,
}

impl DynamoDirectory {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            table: Table::new(client, table),
        }
    }

    /// Audited API writes go in one transaction with their entry in `audit`.
    pub fn with_audit(mut self, audit: DynamoAuditLog) -> Self {
        self.table.audit = Some(audit);
        self
    }
}

impl DynamoDirectory {
    /// Bulk import (BatchWriteItem, 25 a call): seeding and migrations.
    pub async fn put_users(&self, org: &OrgId, users: &[User]) -> StoreResult<()> {
        batch_write(&self.table.client, &self.table.name, users, |u| {
            to_item(org_pk(org), format!("{USER_PREFIX}{}", u.user_id), u)
        })
        .await
    }
}

#[async_trait]
impl Directory for DynamoDirectory {
    async fn get_user(&self, org: &OrgId, id: &UserId) -> StoreResult<Option<User>> {
        self.table
            .get(org_pk(org), format!("{USER_PREFIX}{id}"))
            .await
    }
    async fn get_users(&self, org: &OrgId, ids: &[UserId]) -> StoreResult<Vec<User>> {
        // BatchGetItem refuses duplicate keys in one request.
        let mut seen = std::collections::HashSet::new();
        let keys = ids
            .iter()
            .filter(|id| seen.insert(*id))
            .map(|id| key(org_pk(org), format!("{USER_PREFIX}{id}")))
            .collect();
        self.table.batch_get(keys).await
    }
    async fn list_users(&self, org: &OrgId) -> StoreResult<Vec<User>> {
        self.table.query_prefix(org_pk(org), USER_PREFIX).await
    }
    /// Query with `Limit`, from the key after `after`: reads about one page, whatever the
    /// size of the organization.
    async fn list_users_after(
        &self,
        org: &OrgId,
        after: Option<&UserId>,
        limit: usize,
    ) -> StoreResult<Vec<User>> {
        let pk = org_pk(org);
        let mut start = after.map(|a| key(pk.clone(), format!("{USER_PREFIX}{a}")));
        let mut out = Vec::new();
        while out.len() < limit {
            let page = self
                .table
                .client
                .query()
                .table_name(&self.table.name)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
                .expression_attribute_values(":prefix", AttributeValue::S(USER_PREFIX.into()))
                .limit(i32::try_from(limit - out.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| store_error(e, "Query users"))?;
            for item in page.items.unwrap_or_default() {
                out.push(from_item(item)?);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }
    async fn put_user(&self, org: &OrgId, user: &User) -> StoreResult<()> {
        // A fresh revision, so an update that read the user before this write retries.
        let mut item = to_item(org_pk(org), format!("{USER_PREFIX}{}", user.user_id), user)?;
        item.insert(
            REV.into(),
            AttributeValue::S(uuid::Uuid::new_v4().to_string()),
        );
        self.table
            .client
            .put_item()
            .table_name(&self.table.name)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| store_error(e, "PutItem user"))?;
        Ok(())
    }
    async fn update_user(
        &self,
        org: &OrgId,
        id: &UserId,
        change: &(dyn for<'u> Fn(&'u mut User) + Send + Sync),
    ) -> StoreResult<Option<User>> {
        let (pk, sk) = (org_pk(org), format!("{USER_PREFIX}{id}"));
        for attempt in 0..MAX_UPDATE_ATTEMPTS {
            let Some(mut item) = self
                .table
                .client
                .get_item()
                .table_name(&self.table.name)
                .set_key(Some(key(pk.clone(), sk.clone())))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| store_error(e, "GetItem user"))?
                .item
            else {
                audit_before(Stored::User(None));
                return Ok(None);
            };
            let rev = item.remove(REV);
            let mut user: User = from_item(item)?;
            audit_before(Stored::User(Some(&user)));
            change(&mut user);
            let mut next = to_item(pk.clone(), sk.clone(), &user)?;
            next.insert(
                REV.into(),
                AttributeValue::S(uuid::Uuid::new_v4().to_string()),
            );
            let audited = self.table.audited(org, Stored::User(Some(&user)), |name| {
                let put = Put::builder().table_name(name).set_item(Some(next.clone()));
                let put = over_rev(put, rev.as_ref()).build().map_err(built)?;
                Ok(TransactWriteItem::builder().put(put).build())
            });
            let written = match audited.await? {
                Some(written) => written,
                None => {
                    let put = self.table.client.put_item();
                    let put = put.table_name(&self.table.name).set_item(Some(next));
                    match over_rev(put, rev.as_ref()).send().await {
                        Ok(_) => true,
                        Err(e)
                            if crate::error_code(&e) == Some("ConditionalCheckFailedException") =>
                        {
                            false
                        }
                        Err(e) => return Err(store_error(e, "PutItem user")),
                    }
                }
            };
            if written {
                return Ok(Some(user));
            }
            tokio::time::sleep(crate::batch::backoff(attempt)).await;
        }
        Err(StoreError::Unavailable(anyhow::anyhow!(
            "user {id} kept changing under {MAX_UPDATE_ATTEMPTS} updates in a row"
        )))
    }
    async fn create_user(&self, org: &OrgId, user: &User) -> StoreResult<bool> {
        let mut item = to_item(org_pk(org), format!("{USER_PREFIX}{}", user.user_id), user)?;
        item.insert(
            REV.into(),
            AttributeValue::S(uuid::Uuid::new_v4().to_string()),
        );
        let audited = self.table.audited(org, Stored::User(Some(user)), |name| {
            let put = Put::builder()
                .table_name(name)
                .set_item(Some(item.clone()))
                .condition_expression("attribute_not_exists(pk)");
            Ok(TransactWriteItem::builder()
                .put(put.build().map_err(built)?)
                .build())
        });
        if let Some(done) = audited.await? {
            return Ok(done);
        }
        match self
            .table
            .client
            .put_item()
            .table_name(&self.table.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if crate::error_code(&e) == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(store_error(e, "PutItem new user")),
        }
    }
    async fn delete_user(&self, org: &OrgId, id: &UserId) -> StoreResult<bool> {
        let sk = format!("{USER_PREFIX}{id}");
        let audited = self.table.audited(org, Stored::User(None), |name| {
            let del = Delete::builder()
                .table_name(name)
                .set_key(Some(key(org_pk(org), sk.clone())))
                .condition_expression("attribute_exists(pk)");
            Ok(TransactWriteItem::builder()
                .delete(del.build().map_err(built)?)
                .build())
        });
        if let Some(done) = audited.await? {
            return Ok(done);
        }
        self.table
            .delete(org_pk(org), format!("{USER_PREFIX}{id}"))
            .await
    }

    /// The opt-out is an item of its own beside the users (`OPTOUT#<number>`): PutItem
    /// (only where none is, so the first time is kept) or DeleteItem.
    async fn set_opt_out(
        &self,
        org: &OrgId,
        number: &flare_shared::domain::PhoneNumber,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> StoreResult<()> {
        let sk = format!("{OPT_OUT_PREFIX}{}", number.as_str());
        match since {
            Some(at) => {
                let put = self
                    .table
                    .client
                    .put_item()
                    .table_name(&self.table.name)
                    .set_item(Some(to_item(org_pk(org), sk, &OptOut { at })?))
                    .condition_expression("attribute_not_exists(#pk)")
                    .expression_attribute_names("#pk", PK)
                    .send()
                    .await;
                match put {
                    Ok(_) => Ok(()),
                    // Opted out already: the first time stands.
                    Err(e) if crate::error_code(&e) == Some("ConditionalCheckFailedException") => {
                        Ok(())
                    }
                    Err(e) => Err(store_error(e, "PutItem opt-out")),
                }
            }
            None => self.table.delete(org_pk(org), sk).await.map(|_| ()),
        }
    }

    /// One GetItem.
    async fn opted_out(
        &self,
        org: &OrgId,
        number: &flare_shared::domain::PhoneNumber,
    ) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
        let sk = format!("{OPT_OUT_PREFIX}{}", number.as_str());
        let found: Option<OptOut> = self.table.get(org_pk(org), sk).await?;
        Ok(found.map(|o| o.at))
    }
}
