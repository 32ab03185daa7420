//! Claiming a record and recording how it ended: one conditional update each.

use super::*;

impl DynamoDeliveryLog {
    /// The claim's conditional update on one record's key.
    pub(super) async fn claim_at(
        &self,
        key: Item,
        lease: std::time::Duration,
    ) -> StoreResult<Claim> {
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

    /// A finish's conditional update on one record's key: whether it moved the record,
    /// and when not, whether the record is there at all (the refusal carries the item,
    /// `ReturnValuesOnConditionCheckFailure`), so a finish that moves nothing pays no
    /// read to find out whether to look in a shard.
    pub(super) async fn finish_at(
        &self,
        key: Item,
        update: &FinishUpdate,
    ) -> StoreResult<FinishAt> {
        use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
        use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(update.expression.clone())
            .condition_expression(update.condition.clone())
            .expression_attribute_names("#status", "status")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (k, v) in &update.values {
            req = req.expression_attribute_values(*k, v.clone());
        }
        match req.send().await {
            Ok(_) => Ok(FinishAt::Moved),
            Err(e) if error_code(&e) == Some(CONDITION_FAILED) => {
                let found = matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(x)) if x.item().is_some_and(|i| !i.is_empty())
                );
                Ok(if found {
                    FinishAt::NotMoved
                } else {
                    FinishAt::Missing
                })
            }
            Err(e) => Err(store_error(e, "UpdateItem finish")),
        }
    }
}

/// What a finish's conditional update found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FinishAt {
    Moved,
    /// The record is there and did not move (done already, or not its turn).
    NotMoved,
    /// No record under that key (in another partition, or none at all).
    Missing,
}

impl DynamoDeliveryLog {}

/// A finish as a conditional update: its expression, its condition and their values.
pub(super) struct FinishUpdate {
    expression: String,
    condition: String,
    values: Vec<(&'static str, AttributeValue)>,
}

impl FinishUpdate {
    pub(super) fn of(outcome: Finish) -> Self {
        match outcome {
            Finish::Sent {
                provider,
                provider_message_id,
                receipt_key,
                failover_from,
                sms,
                ..
            } => Self::sent(provider, provider_message_id, receipt_key, failover_from, sms),
            Finish::Failed { attempt, reason } => Self::of_attempt(attempt)
                .value(":failed", s("failed"))
                .value(":reason", s(reason))
                .set("SET #status = :failed, reason = :reason REMOVE lease_ms, claimed_until"),
            Finish::Skip { attempt, reason } => Self::of_attempt(attempt)
                .value(":skipped", s("skipped"))
                .value(":reason", s(reason))
                .set("SET #status = :skipped, reason = :reason REMOVE lease_ms, claimed_until"),
            Finish::Retry { attempt, reason } => Self::of_attempt(attempt)
                .value(":reason", s(reason))
                .set("SET reason = :reason REMOVE lease_ms, claimed_until"),
            Finish::Postpone { attempt, reason } => Self::of_attempt(attempt)
                .value(":reason", s(reason))
                .value(":one", n(1))
                .set("SET reason = :reason, attempts = attempts - :one REMOVE lease_ms, claimed_until"),
            Finish::Abandon { reason } => Self::unclaimed()
                .value(":failed", s("failed"))
                .value(":reason", s(reason))
                .set("SET #status = :failed, reason = :reason REMOVE awaiting_push, lease_ms, claimed_until"),
            Finish::Cancel { reason } => Self::unclaimed()
                .value(":skipped", s("skipped"))
                .value(":reason", s(reason))
                .set("SET #status = :skipped, reason = :reason REMOVE awaiting_push, lease_ms, claimed_until"),
            Finish::WillFallBack { fallback_reason } => Self::held()
                .value(":why", s(fallback_reason.as_str()))
                .set("SET fallback_reason = :why"),
            Finish::Wait { until } => Self::held()
                .and("attribute_not_exists(fallback_at)")
                .value(":until", s(until.to_rfc3339()))
                .set("SET fallback_at = :until"),
            Finish::Release => Self::held().set("REMOVE awaiting_push"),
            Finish::SkipHeld { reason } => Self::held()
                .value(":skipped", s("skipped"))
                .value(":reason", s(reason))
                .set("SET #status = :skipped, reason = :reason REMOVE awaiting_push"),
            Finish::Delivered { at } => Self::from_sent()
                .value(":delivered", s("delivered"))
                .value(":at", s(at.to_rfc3339()))
                .set("SET #status = :delivered, delivered_at = :at"),
            Finish::Undelivered { reason, detail } => Self::undelivered(reason, detail),
            Finish::Complaint => Self::complaint(),
        }
    }

    /// Only a pending record moves: every finish but a receipt's.
    fn from_pending() -> Self {
        Self {
            expression: String::new(),
            condition: "#status = :pending".to_string(),
            values: vec![(":pending", s("pending"))],
        }
    }

    /// Only a sent record moves: a receipt's first final word.
    fn from_sent() -> Self {
        Self {
            expression: String::new(),
            condition: "#status = :sent".to_string(),
            values: vec![(":sent", s("sent"))],
        }
    }

    /// Only while `attempt` is still the latest: a stale attempt can neither drop a
    /// newer one's claim nor fail it.
    fn of_attempt(attempt: u32) -> Self {
        Self::from_pending()
            .value(":attempt", n(attempt.into()))
            .and("attempts = :attempt")
    }

    /// Only while no live attempt holds the claim.
    fn unclaimed() -> Self {
        Self::from_pending()
            .value(":now", n(chrono::Utc::now().timestamp_millis()))
            .and("(attribute_not_exists(lease_ms) OR lease_ms < :now)")
    }

    /// Only while the record is held behind push.
    fn held() -> Self {
        Self::from_pending()
            .value(":true", AttributeValue::Bool(true))
            .and("awaiting_push = :true")
    }

    /// A send is recorded whoever made it, with what receipts will need.
    fn sent(
        provider: flare_shared::domain::Provider,
        provider_message_id: Option<String>,
        receipt_key: Option<ReceiptKey>,
        failover_from: Option<flare_shared::domain::Provider>,
        sms: Option<flare_shared::domain::SmsCount>,
    ) -> Self {
        let mut u = Self::from_pending()
            .value(":sent", s("sent"))
            .value(":provider", s(provider.as_str()));
        let mut set = "SET #status = :sent, provider = :provider".to_string();
        if let Some(mid) = provider_message_id {
            u = u.value(":mid", s(mid));
            set.push_str(", provider_message_id = :mid");
        }
        if let Some(k) = receipt_key {
            u = u.value(":rk", s(k.as_str()));
            set.push_str(", receipt_key = :rk");
        }
        if let Some(from) = failover_from {
            u = u.value(":from", s(from.as_str()));
            set.push_str(", failover_from = :from");
        }
        if let Some(c) = sms {
            u = u
                .value(":enc", s(c.encoding.as_str()))
                .value(":segs", n(i64::from(c.segments)));
            set.push_str(", sms_encoding = :enc, sms_segments = :segs");
        }
        u.set(set + " REMOVE lease_ms, claimed_until, reason")
    }

    /// A receipt saying a sent record never arrived, with the provider's detail if any.
    fn undelivered(reason: String, detail: Option<String>) -> Self {
        let u = Self::from_sent()
            .value(":undelivered", s("undelivered"))
            .value(":reason", s(reason));
        match detail {
            Some(d) => u
                .value(":detail", s(d))
                .set("SET #status = :undelivered, reason = :reason, detail = :detail"),
            None => u.set("SET #status = :undelivered, reason = :reason"),
        }
    }

    /// A complaint marks a sent or delivered record once; its status stays.
    fn complaint() -> Self {
        Self {
            expression: "SET complaint = :true".to_string(),
            condition:
                "(#status = :sent OR #status = :delivered) AND attribute_not_exists(complaint)"
                    .to_string(),
            values: vec![
                (":sent", s("sent")),
                (":delivered", s("delivered")),
                (":true", AttributeValue::Bool(true)),
            ],
        }
    }

    fn and(mut self, condition: &str) -> Self {
        self.condition.push_str(" AND ");
        self.condition.push_str(condition);
        self
    }

    fn value(mut self, name: &'static str, v: AttributeValue) -> Self {
        self.values.push((name, v));
        self
    }

    fn set(mut self, expression: impl Into<String>) -> Self {
        self.expression = expression.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_conditions_compose_the_record_state_they_need() {
        let u = FinishUpdate::of(Finish::Failed {
            attempt: 2,
            reason: "r".into(),
        });
        assert_eq!(u.condition, "#status = :pending AND attempts = :attempt");
        let names: Vec<_> = u.values.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, [":pending", ":attempt", ":failed", ":reason"]);
        let u = FinishUpdate::of(Finish::Wait {
            until: chrono::Utc::now(),
        });
        assert_eq!(
            u.condition,
            "#status = :pending AND awaiting_push = :true AND attribute_not_exists(fallback_at)"
        );
        assert_eq!(u.expression, "SET fallback_at = :until");
        let u = FinishUpdate::of(Finish::Undelivered {
            reason: "bounce".into(),
            detail: None,
        });
        assert_eq!(u.condition, "#status = :sent");
        assert_eq!(u.expression, "SET #status = :undelivered, reason = :reason");
        let u = FinishUpdate::of(Finish::Cancel { reason: "r".into() });
        assert_eq!(
            u.condition,
            "#status = :pending AND (attribute_not_exists(lease_ms) OR lease_ms < :now)"
        );
    }
}
