//! What AWS hands the receipts function, told apart and decoded: an SES event as
//! EventBridge delivers it (`"source": "aws.ses"`), or a CloudWatch Logs subscription
//! payload (`{"awslogs": {"data": <base64 of gzip>}}`) of SNS SMS delivery status lines.
//! The local runner's `POST /local/provider-events` takes the same.

use aws_lambda_events::event::cloudwatch_logs::LogsEvent;
use flare_shared::app::receipts::{ReceiptError, ReceiptSummary, Receipts};
use serde_json::Value;

#[derive(Debug)]
pub enum ProviderEvent {
    Ses(Value),
    /// The log lines of one subscription batch.
    SnsSmsStatus(Vec<String>),
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderEventError {
    #[error("not a provider event Flare reads: {0}")]
    Malformed(String),
    #[error("storage failed")]
    Store(#[source] flare_shared::ports::StoreError),
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
    if event.get("awslogs").is_some() {
        // Its decoder borrows from the text, so it reads from a string, not a Value.
        let text = event.to_string();
        let logs: LogsEvent = serde_json::from_str(&text).map_err(|e| {
            ProviderEventError::Malformed(format!(
                "a CloudWatch Logs payload that does not decode: {e}"
            ))
        })?;
        let lines = logs
            .aws_logs
            .data
            .log_events
            .into_iter()
            .map(|l| l.message)
            .collect();
        return Ok(ProviderEvent::SnsSmsStatus(lines));
    }
    if event.get("source").and_then(Value::as_str) == Some("aws.ses") {
        return Ok(ProviderEvent::Ses(event));
    }
    Err(ProviderEventError::Malformed(
        "neither an SES event (source aws.ses) nor a CloudWatch Logs payload (awslogs)".into(),
    ))
}

/// Decodes `event` and applies its receipts.
pub async fn apply(
    receipts: &Receipts,
    event: Value,
) -> Result<ReceiptSummary, ProviderEventError> {
    match decode(event)? {
        ProviderEvent::Ses(e) => Ok(receipts.ses_event(&e).await?),
        ProviderEvent::SnsSmsStatus(lines) => Ok(receipts
            .sns_sms_lines(lines.iter().map(String::as_str))
            .await?),
    }
}
