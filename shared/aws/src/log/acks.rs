//! Acknowledgements and answers (`ACK#{user}` in a notification's base partition), and
//! the counts the organization's list shows: deliveries by state, recipients by answer.

use super::*;

/// `ACK#{user}`: the first acknowledgement's time, and the latest answer (an answer is
/// written on the ack it comes with).
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct AckItem {
    pub(super) user_id: UserId,
    pub(super) at: chrono::DateTime<chrono::Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) response: Option<flare_shared::domain::Response>,
}

/// A notification's acks and answers, as [`Logged`] holds them.
pub(super) type AcksAndAnswers = (
    Vec<(UserId, chrono::DateTime<chrono::Utc>)>,
    Vec<(UserId, flare_shared::domain::Response)>,
);

pub(super) fn split_acks(items: Vec<AckItem>) -> AcksAndAnswers {
    let answers = items
        .iter()
        .filter_map(|a| Some((a.user_id.clone(), a.response?)))
        .collect();
    (
        items.into_iter().map(|a| (a.user_id, a.at)).collect(),
        answers,
    )
}

impl DynamoDeliveryLog {
    /// The segments of a notification's SMS: one GetItem of it, then its records' states.
    pub(super) async fn segments_of(&self, org: &OrgId, id: &NotificationId) -> StoreResult<u64> {
        let pk = notification_pk(org, id);
        let Some(item) = self.get_record(notification_key(&pk)).await? else {
            return Ok(0);
        };
        let shards = item_shards(&item);
        let notification: Notification = decode(item)?;
        Ok(self.count(&notification, shards).await?.sms_segments)
    }

    /// The organization's notifications newest first, each counted (the index, then each
    /// one's record states and answers).
    pub(super) async fn summaries(
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

    /// A notification's deliveries counted by state (its records' `status` only, in each
    /// of its `shards` record partitions) and its recipients by latest answer (their
    /// acks' `response`, in the base partition): one Query when it is not sharded.
    pub(super) async fn count(&self, n: &Notification, shards: u32) -> StoreResult<StatusCounts> {
        #[derive(serde::Deserialize)]
        struct Counted {
            sk: String,
            status: Option<flare_shared::domain::DeliveryStatus>,
            response: Option<flare_shared::domain::Response>,
            sms_segments: Option<u32>,
        }
        let base = notification_pk(&n.org_id, &n.notification_id);
        let mut counts = StatusCounts::default();
        let mut add = |item: Item| -> StoreResult<bool> {
            let c: Counted = serde_dynamo::from_item(item).map_err(|e| {
                StoreError::Failed(anyhow::Error::new(e).context("decoding a counted item"))
            })?;
            match (c.sk.starts_with("R#"), c.status, c.response) {
                (true, Some(status), _) => {
                    counts.add(status);
                    counts.add_segments(c.sms_segments);
                }
                (false, _, Some(r)) if c.sk.starts_with("ACK#") => counts.add_answer(r.answer),
                _ => {}
            }
            Ok(true)
        };
        let read = |query: QueryFluentBuilder| {
            query
                .projection_expression("sk, #status, #response, sms_segments")
                .expression_attribute_names("#status", "status")
                .expression_attribute_names("#response", "response")
        };
        if shards <= 1 {
            // Records and acks share the base partition (with the notification item).
            let whole = || {
                read(
                    self.client
                        .query()
                        .key_condition_expression("pk = :pk")
                        .expression_attribute_values(":pk", s(base.clone()))
                        .consistent_read(true),
                )
            };
            self.each_item("Query record states and answers", whole, &mut add)
                .await?;
            return Ok(counts);
        }
        self.each_item(
            "Query answers",
            || read(self.partition(&base, "ACK#")),
            &mut add,
        )
        .await?;
        for pk in record_pks(&base, shards) {
            self.each_item(
                "Query record states",
                || read(self.partition(&pk, "R#")),
                &mut add,
            )
            .await?;
        }
        Ok(counts)
    }

    /// The acks and answers of the recipients of `records` (BatchGetItem on their ack
    /// items): a page's, not the whole notification's.
    pub(super) async fn acks_of(
        &self,
        pk: &str,
        records: &[DeliveryRecord],
    ) -> StoreResult<AcksAndAnswers> {
        let mut users: Vec<&UserId> = records
            .iter()
            .filter_map(|r| r.recipient.user_id())
            .collect();
        users.dedup();
        Ok(split_acks(self.ack_items(pk, users).await?))
    }

    /// The acks of `users` (BatchGetItem on their ack items).
    pub(super) async fn acks_by_user(
        &self,
        pk: &str,
        users: Vec<&UserId>,
    ) -> StoreResult<Vec<(UserId, chrono::DateTime<chrono::Utc>)>> {
        Ok(split_acks(self.ack_items(pk, users).await?).0)
    }

    async fn ack_items(&self, pk: &str, users: Vec<&UserId>) -> StoreResult<Vec<AckItem>> {
        let keys = users
            .into_iter()
            .map(|u| {
                HashMap::from([
                    ("pk".to_string(), s(pk)),
                    ("sk".to_string(), s(format!("ACK#{u}"))),
                ])
            })
            .collect();
        let table = crate::dynamodb::Table::new(self.client.clone(), &self.table);
        table.batch_get(keys).await
    }
}

impl DynamoDeliveryLog {
    /// [`DeliveryLog::answer`] in one UpdateItem on `ACK#{user}`: made with the first
    /// ack's time when missing, the answer replaced. It expires a retention after now,
    /// not read from the notification (an answer comes within a day of its SMS or link,
    /// so it outlives its notification by a day at most).
    pub(super) async fn answer_in_one(
        &self,
        org: &OrgId,
        id: &NotificationId,
        user: &UserId,
        response: &flare_shared::domain::Response,
    ) -> StoreResult<flare_shared::ports::Answered> {
        let key = HashMap::from([
            ("pk".to_string(), s(notification_pk(org, id))),
            ("sk".to_string(), s(format!("ACK#{user}"))),
        ]);
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(
                "SET user_id = if_not_exists(user_id, :u), #at = if_not_exists(#at, :at), expires_at = if_not_exists(expires_at, :exp), #response = :r",
            )
            .expression_attribute_names("#at", "at")
            .expression_attribute_names("#response", "response")
            .expression_attribute_values(":u", s(user.to_string()))
            .expression_attribute_values(":at", attr(&response.at)?)
            .expression_attribute_values(":exp", n(expires_at(response.at)))
            .expression_attribute_values(":r", attr(response)?)
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| store_error(e, "UpdateItem answer"))?;
        let first_ack = out
            .attributes
            .as_ref()
            .is_none_or(|a| !a.contains_key("at"));
        Ok(flare_shared::ports::Answered {
            first_ack,
            previous: previous_answer(out.attributes),
        })
    }
}

impl DynamoDeliveryLog {
    /// [`DeliveryLog::link_for`]: `ORG#{org}#LINKFOR#{notification}#{user}` holds the
    /// pair's sealed code, written once (conditionally), gone by TTL with its link.
    pub(super) async fn link_for_pair(
        &self,
        link: &flare_shared::domain::ResponseLink,
        candidate: &flare_shared::domain::SealedCode,
    ) -> StoreResult<Option<flare_shared::domain::SealedCode>> {
        let pk = format!(
            "ORG#{}#LINKFOR#{}#{}",
            link.org_id, link.notification_id, link.user_id
        );
        let expires = (link.expires_at + chrono::Duration::days(1)).timestamp();
        let item = encode(pk.clone(), "LINKFOR".into(), candidate, expires)?;
        if self.put_if_absent(item, "PutItem link code").await? {
            self.put_link(link).await?;
            return Ok(None);
        }
        let key = HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s("LINKFOR"))]);
        self.get_record(key).await?.map(decode).transpose()
    }
}

/// The `response` of an ack item's old attributes (an UpdateItem's answer), if any.
pub(super) fn previous_answer(old: Option<Item>) -> Option<flare_shared::domain::Response> {
    let value = old?.remove("response")?;
    serde_dynamo::from_attribute_value(value).ok()
}

/// One attribute value, encoded as the item's other fields are.
fn attr<T: serde::Serialize>(v: &T) -> StoreResult<AttributeValue> {
    serde_dynamo::to_attribute_value(v)
        .map_err(|e| StoreError::Failed(anyhow::Error::new(e).context("encoding an attribute")))
}
