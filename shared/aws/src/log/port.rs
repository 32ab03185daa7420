//! The delivery log's port: notifications, records, claims, finishes, pages, receipts, acks.

use super::*;

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
        self.at_recipient(&base, recipient, Vec::is_empty, query)
            .await
    }

    /// One GetItem: the notification item alone.
    async fn notification(
        &self,
        org: &OrgId,
        id: &NotificationId,
    ) -> StoreResult<Option<Notification>> {
        let base = notification_pk(org, id);
        let Some(item) = self.get_record(notification_key(&base)).await? else {
            return Ok(None);
        };
        let shards = item_shards(&item);
        if shards > 1 {
            self.remember_shards(&base, shards);
        }
        decode(item).map(Some)
    }

    async fn prepare_layout(&self, n: &Notification, records: usize) -> StoreResult<()> {
        let base = notification_pk(&n.org_id, &n.notification_id);
        self.set_layout(&base, records).await.map(|_| ())
    }

    /// One item per page in the notification's plan partition (`<pk>#PLAN`), apart
    /// from its records so that reading them never reads the plan.
    async fn put_route_pages(&self, n: &Notification, pages: &[RoutePage]) -> StoreResult<()> {
        let expires = expires_at(n.created_at);
        let pk = plan_pk(&notification_pk(&n.org_id, &n.notification_id));
        batch_write(&self.client, &self.table, pages, |p| {
            encode(pk.clone(), page_sk(p.page), p, expires)
        })
        .await
    }

    /// One conditional UpdateItem on the notification item.
    async fn claim_chain(
        &self,
        org: &OrgId,
        id: &NotificationId,
        chain: &str,
    ) -> StoreResult<bool> {
        match self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(notification_key(&notification_pk(org, id))))
            .update_expression("SET chain = :c")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(chain) OR chain = :c)",
            )
            .expression_attribute_values(":c", s(chain))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if error_code(&e) == Some(CONDITION_FAILED) => Ok(false),
            Err(e) => Err(store_error(e, "UpdateItem escalation chain")),
        }
    }

    async fn route_page(
        &self,
        org: &OrgId,
        id: &NotificationId,
        page: u32,
    ) -> StoreResult<Option<RoutePage>> {
        let key = HashMap::from([
            ("pk".to_string(), s(plan_pk(&notification_pk(org, id)))),
            ("sk".to_string(), s(page_sk(page))),
        ]);
        self.get_record(key).await?.map(decode).transpose()
    }

    async fn page_routed(&self, org: &OrgId, id: &NotificationId, page: u32) -> StoreResult<()> {
        let key = HashMap::from([
            ("pk".to_string(), s(plan_pk(&notification_pk(org, id)))),
            ("sk".to_string(), s(page_sk(page))),
        ]);
        match self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression("SET routed = :t")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // The page expired with its notification: nothing left to mark.
            Err(e) if error_code(&e) == Some(CONDITION_FAILED) => Ok(()),
            Err(e) => Err(store_error(e, "UpdateItem route page")),
        }
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
        let mut ack_items = Vec::new();
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
                    ack_items.push(decode::<AckItem>(item)?);
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
        let (acks, responses) = split_acks(ack_items);
        Ok(notification.map(|notification| Logged {
            notification,
            records,
            acks,
            responses,
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
        let shards = self.set_layout(&base, records.len()).await?;
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
        self.at_recipient(
            &base,
            recipient,
            |claim| matches!(claim, Claim::Missing),
            |pk| self.claim_at(Self::key(pk, recipient, slot), lease),
        )
        .await
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
        let update = FinishUpdate::of(outcome);
        // Not there: (the layout not known here yet) in a shard. A record that is there
        // and did not move (done already) is the answer, with no read of the layout.
        let at = self
            .at_recipient(
                &base,
                recipient,
                |at| *at == FinishAt::Missing,
                |pk| self.finish_at(Self::key(pk, recipient, slot), &update),
            )
            .await?;
        Ok(at == FinishAt::Moved)
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
        let (records, next) = self.page_records(&pk, shards, after, recipients).await?;
        let (acks, responses) = self.acks_of(&pk, &records).await?;
        Ok(Some((
            Logged {
                notification,
                records,
                acks,
                responses,
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
        let moved = self.finish_at(key_item, &FinishUpdate::of(outcome)).await? == FinishAt::Moved;
        Ok(ReceiptMatch::Found { target, moved })
    }

    /// One GetItem of the notification, then its records' states only.
    async fn sms_segments(&self, org: &OrgId, id: &NotificationId) -> StoreResult<u64> {
        self.segments_of(org, id).await
    }

    async fn list_notifications(
        &self,
        org: &OrgId,
        after: Option<&ListPosition>,
        limit: usize,
    ) -> StoreResult<Vec<NotificationSummary>> {
        self.summaries(org, after, limit).await
    }

    /// One GetItem of the ack's item.
    async fn acked(&self, org: &OrgId, id: &NotificationId, user: &UserId) -> StoreResult<bool> {
        let key = HashMap::from([
            ("pk".to_string(), s(notification_pk(org, id))),
            ("sk".to_string(), s(format!("ACK#{user}"))),
        ]);
        Ok(self.get_record(key).await?.is_some())
    }

    async fn acked_among(
        &self,
        org: &OrgId,
        id: &NotificationId,
        users: &[UserId],
    ) -> StoreResult<Vec<UserId>> {
        let acks = self
            .acks_by_user(&notification_pk(org, id), users.iter().collect())
            .await?;
        Ok(acks.into_iter().map(|(u, _)| u).collect())
    }

    /// One PutItem, kept only when newer than what is there (`at_ms`); it expires a day
    /// after the SMS (replies are matched within 24 hours).
    async fn remember_sms(
        &self,
        org: Option<&OrgId>,
        number: &flare_shared::domain::PhoneNumber,
        sent: &SmsSent,
    ) -> StoreResult<()> {
        let expires = (sent.at + chrono::Duration::hours(25)).timestamp();
        let mut item = encode(sms_sent_pk(org, number), "LAST".into(), sent, expires)?;
        let at_ms = AttributeValue::N(sent.at.timestamp_millis().to_string());
        item.insert("at_ms".into(), at_ms.clone());
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR at_ms < :at")
            .expression_attribute_values(":at", at_ms)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // A newer SMS to the number is remembered already.
            Err(e) if error_code(&e) == Some(CONDITION_FAILED) => Ok(()),
            Err(e) => Err(store_error(e, "PutItem SMS sent")),
        }
    }

    /// One GetItem.
    async fn last_sms(
        &self,
        org: Option<&OrgId>,
        number: &flare_shared::domain::PhoneNumber,
    ) -> StoreResult<Option<SmsSent>> {
        let key = HashMap::from([
            ("pk".to_string(), s(sms_sent_pk(org, number))),
            ("sk".to_string(), s("LAST")),
        ]);
        self.get_record(key).await?.map(decode).transpose()
    }

    /// One PutItem under `LINK#<digest>`, gone by TTL a day after it expires.
    async fn put_link(&self, link: &flare_shared::domain::ResponseLink) -> StoreResult<()> {
        let expires = (link.expires_at + chrono::Duration::days(1)).timestamp();
        let item = encode(
            format!("LINK#{}", link.digest),
            "LINK".into(),
            link,
            expires,
        )?;
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| store_error(e, "PutItem response link"))?;
        Ok(())
    }

    /// One UpdateItem.
    async fn answer(
        &self,
        org: &OrgId,
        id: &NotificationId,
        user: &UserId,
        response: &flare_shared::domain::Response,
    ) -> StoreResult<flare_shared::ports::Answered> {
        self.answer_in_one(org, id, user, response).await
    }

    /// One conditional PutItem, and the link's PutItem when it was the first (a GetItem
    /// instead when the pair has a code already).
    async fn link_for(
        &self,
        link: &flare_shared::domain::ResponseLink,
        candidate: &flare_shared::domain::SealedCode,
    ) -> StoreResult<Option<flare_shared::domain::SealedCode>> {
        self.link_for_pair(link, candidate).await
    }

    /// One GetItem.
    async fn link(&self, digest: &str) -> StoreResult<Option<flare_shared::domain::ResponseLink>> {
        let key = HashMap::from([
            ("pk".to_string(), s(format!("LINK#{digest}"))),
            ("sk".to_string(), s("LINK")),
        ]);
        self.get_record(key).await?.map(decode).transpose()
    }

    /// One conditional PutItem (kept a week: providers retry for hours, not days).
    async fn first_inbound(&self, org: &OrgId, message_id: &str) -> StoreResult<bool> {
        let expires = (chrono::Utc::now() + chrono::Duration::days(7)).timestamp();
        let item = encode(
            format!("ORG#{org}#INBOUND#{message_id}"),
            "INBOUND".into(),
            &serde_json::json!({}),
            expires,
        )?;
        self.put_if_absent(item, "PutItem inbound message").await
    }

    /// One UpdateItem on the ack's item (which the caller wrote first): the latest
    /// answer replaces the one before.
    async fn respond(
        &self,
        org: &OrgId,
        id: &NotificationId,
        user: &UserId,
        response: &flare_shared::domain::Response,
    ) -> StoreResult<Option<flare_shared::domain::Response>> {
        let value = serde_dynamo::to_attribute_value(response)
            .map_err(|e| StoreError::Failed(anyhow::Error::new(e).context("encoding an answer")))?;
        let key = HashMap::from([
            ("pk".to_string(), s(notification_pk(org, id))),
            ("sk".to_string(), s(format!("ACK#{user}"))),
        ]);
        match self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression("SET #response = :r")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#response", "response")
            .expression_attribute_values(":r", value)
            .return_values(ReturnValue::UpdatedOld)
            .send()
            .await
        {
            Ok(out) => Ok(acks::previous_answer(out.attributes)),
            // No ack (the notification expired in between): nothing to answer.
            Err(e) if error_code(&e) == Some(CONDITION_FAILED) => Ok(None),
            Err(e) => Err(store_error(e, "UpdateItem answer")),
        }
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
                response: None,
            },
            expires,
        )?;
        // The first ack's time is kept.
        self.put_if_absent(item, "PutItem ack").await
    }
}
