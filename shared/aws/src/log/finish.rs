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

    /// A finish's conditional update on one record's key; whether it moved the record.
    pub(super) async fn finish_at(&self, key: Item, update: &FinishUpdate) -> StoreResult<bool> {
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
pub(super) struct FinishUpdate {
    expression: String,
    condition: String,
    values: Vec<(&'static str, AttributeValue)>,
}

impl FinishUpdate {
    pub(super) fn of(outcome: Finish) -> Self {
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
