//! What AWS hands the receipts function, told apart and decoded: an SES event as
//! EventBridge delivers it (`"source": "aws.ses"`), a CloudWatch Logs subscription
//! payload (`{"awslogs": {"data": <base64 of gzip>}}`) of SNS SMS delivery status lines,
//! or (v1.2) an SNS event of AWS End User Messaging's two-way SMS (`{"Records": [{"Sns":
//! {"Message": ...}}]}`). The local runner's `POST /local/provider-events` takes the same.

use aws_lambda_events::event::cloudwatch_logs::LogData;
use flare_shared::app::inbound::Replies;
use flare_shared::app::receipts::{ReceiptError, ReceiptSummary, Receipts};
use flare_shared::domain::inbound::InboundSms;
use serde_json::Value;

/// The most a CloudWatch Logs payload may inflate to: CloudWatch Logs sends at most 1 MB
/// of log events a batch, so more is not from it (a gzip bomb inflates 1,000-fold).
pub const MAX_INFLATED: usize = 1024 * 1024;

/// The most log lines one payload may hold (CloudWatch Logs batches hold 10,000 at most).
pub const MAX_LINES: usize = 10_000;

#[derive(Debug)]
pub enum ProviderEvent {
    Ses(Value),
    /// The log lines of one subscription batch.
    SnsSmsStatus(Vec<String>),
    /// End User Messaging's inbound SMS, one per SNS record.
    InboundSms(Vec<InboundSms>),
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderEventError {
    #[error("not a provider event Flare reads: {0}")]
    Malformed(String),
    /// Larger than any provider sends ([`MAX_INFLATED`], [`MAX_LINES`]).
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("storage failed")]
    Store(#[source] flare_shared::ports::StoreError),
    /// An inbound SMS was not read for a reason a retry may fix.
    #[error("an inbound SMS was not read")]
    Reply(#[source] flare_shared::app::error::ApiError),
}

impl From<ReceiptError> for ProviderEventError {
    fn from(e: ReceiptError) -> Self {
        match e {
            ReceiptError::Malformed(e) => ProviderEventError::Malformed(e.to_string()),
            ReceiptError::Store(e) => ProviderEventError::Store(e),
        }
    }
}

pub fn decode(event: Value) -> Result<ProviderEvent, ProviderEventError> {
    if let Some(logs) = event.get("awslogs") {
        let data = logs["data"].as_str().ok_or_else(|| {
            ProviderEventError::Malformed("a CloudWatch Logs payload without data".into())
        })?;
        let lines: Vec<String> = logs_data(data)?
            .log_events
            .into_iter()
            .map(|l| l.message)
            .collect();
        if lines.len() > MAX_LINES {
            return Err(ProviderEventError::TooLarge(format!(
                "{} log lines in one payload (at most {MAX_LINES})",
                lines.len()
            )));
        }
        return Ok(ProviderEvent::SnsSmsStatus(lines));
    }
    if event.get("source").and_then(Value::as_str) == Some("aws.ses") {
        return Ok(ProviderEvent::Ses(event));
    }
    if let Some(records) = event.get("Records").and_then(Value::as_array) {
        return inbound_sms(records);
    }
    Err(ProviderEventError::Malformed(
        "neither an SES event (source aws.ses), a CloudWatch Logs payload (awslogs) nor an SNS event (Records)".into(),
    ))
}

/// The End User Messaging messages of an SNS event's records (Lambda hands at most 10).
fn inbound_sms(records: &[Value]) -> Result<ProviderEvent, ProviderEventError> {
    if records.len() > 100 {
        return Err(ProviderEventError::TooLarge(format!(
            "{} SNS records in one event",
            records.len()
        )));
    }
    let messages = records
        .iter()
        .map(|r| {
            let message = r["Sns"]["Message"].as_str().ok_or_else(|| {
                ProviderEventError::Malformed("an SNS record without Sns.Message".into())
            })?;
            flare_shared::domain::inbound::parse_end_user_messaging(message)
                .map_err(|e| ProviderEventError::Malformed(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ProviderEvent::InboundSms(messages))
}

/// A CloudWatch Logs payload's `data` (base64 of gzip of JSON), inflated to at most
/// [`MAX_INFLATED`] bytes.
fn logs_data(data: &str) -> Result<LogData, ProviderEventError> {
    use base64::Engine;
    use std::io::Read;
    let malformed = |what: String| ProviderEventError::Malformed(what);
    let gzip = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| malformed(format!("CloudWatch Logs data that is not base64: {e}")))?;
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(&gzip[..])
        .take(MAX_INFLATED as u64 + 1)
        .read_to_end(&mut json)
        .map_err(|e| malformed(format!("CloudWatch Logs data that is not gzip: {e}")))?;
    if json.len() > MAX_INFLATED {
        return Err(ProviderEventError::TooLarge(format!(
            "CloudWatch Logs data inflating beyond {MAX_INFLATED} bytes"
        )));
    }
    serde_json::from_slice(&json).map_err(|e| {
        malformed(format!(
            "a CloudWatch Logs payload that does not decode: {e}"
        ))
    })
}

/// Decodes `event` and applies its receipts, or reads its inbound SMS (`replies`: what
/// that needs; `None` where inbound SMS are not expected, which refuses them).
pub async fn apply(
    receipts: &Receipts,
    replies: Option<&Replies>,
    event: Value,
) -> Result<ReceiptSummary, ProviderEventError> {
    match decode(event)? {
        ProviderEvent::Ses(e) => Ok(receipts.ses_event(&e).await?),
        ProviderEvent::SnsSmsStatus(lines) => Ok(receipts
            .sns_sms_lines(lines.iter().map(String::as_str))
            .await?),
        ProviderEvent::InboundSms(messages) => {
            let replies = replies.ok_or_else(|| {
                ProviderEventError::Malformed("inbound SMS are not read here".into())
            })?;
            for sms in &messages {
                flare_shared::app::inbound::end_user_messaging(replies, sms)
                    .await
                    .map_err(ProviderEventError::Reply)?;
            }
            Ok(ReceiptSummary {
                replies: messages.len(),
                ..Default::default()
            })
        }
    }
}
