//! Custom providers' health (the failover circuit) in the delivery log table, one small
//! item per organization and provider (`ORG#{org}#HEALTH`, `sms#{cc}` or `email`), so
//! every warm instance of every function sees the same circuit. Changes are a read and a
//! conditional write on the item's revision, retried when another instance wrote first.

use crate::{error_code, store_error};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use flare_shared::domain::OrgId;
use flare_shared::domain::health::{HealthScope, ProviderHealth};
use flare_shared::ports::{HealthStore, StoreError, StoreResult};
use std::collections::HashMap;

type Item = HashMap<String, AttributeValue>;

const REV: &str = "rev";
const MAX_UPDATE_ATTEMPTS: u32 = 10;

pub struct DynamoHealth {
    client: Client,
    table: String,
}

impl DynamoHealth {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn key(org: &OrgId, scope: &HealthScope) -> Item {
        HashMap::from([
            (
                "pk".to_string(),
                AttributeValue::S(format!("ORG#{org}#HEALTH")),
            ),
            ("sk".to_string(), AttributeValue::S(scope.key())),
        ])
    }

    async fn read(
        &self,
        org: &OrgId,
        scope: &HealthScope,
    ) -> StoreResult<(ProviderHealth, Option<AttributeValue>)> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(org, scope)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(e, "GetItem provider health"))?
            .item;
        let Some(mut item) = item else {
            return Ok((ProviderHealth::default(), None));
        };
        let rev = item.remove(REV);
        item.remove("pk");
        item.remove("sk");
        let health = serde_dynamo::from_item(item).map_err(|e| {
            StoreError::Failed(anyhow::Error::new(e).context("decoding provider health"))
        })?;
        Ok((health, rev))
    }
}

#[async_trait]
impl HealthStore for DynamoHealth {
    async fn get(&self, org: &OrgId, scope: &HealthScope) -> StoreResult<ProviderHealth> {
        Ok(self.read(org, scope).await?.0)
    }

    async fn update(
        &self,
        org: &OrgId,
        scope: &HealthScope,
        change: &(dyn for<'h> Fn(&'h mut ProviderHealth) -> bool + Send + Sync),
    ) -> StoreResult<ProviderHealth> {
        for attempt in 0..MAX_UPDATE_ATTEMPTS {
            let (mut health, rev) = self.read(org, scope).await?;
            if !change(&mut health) {
                return Ok(health);
            }
            let mut item: Item = serde_dynamo::to_item(&health).map_err(|e| {
                StoreError::Failed(anyhow::Error::new(e).context("encoding provider health"))
            })?;
            item.extend(Self::key(org, scope));
            item.insert(
                REV.into(),
                AttributeValue::S(uuid::Uuid::new_v4().to_string()),
            );
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item));
            let put = match rev {
                Some(rev) => put
                    .condition_expression("#rev = :rev")
                    .expression_attribute_names("#rev", REV)
                    .expression_attribute_values(":rev", rev),
                None => put.condition_expression("attribute_not_exists(pk)"),
            };
            match put.send().await {
                Ok(_) => return Ok(health),
                Err(e) if error_code(&e) == Some("ConditionalCheckFailedException") => {
                    tokio::time::sleep(crate::batch::backoff(attempt)).await;
                }
                Err(e) => return Err(store_error(e, "PutItem provider health")),
            }
        }
        Err(StoreError::Unavailable(anyhow::anyhow!(
            "provider health kept changing under {MAX_UPDATE_ATTEMPTS} updates in a row"
        )))
    }
}
