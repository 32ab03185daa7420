//! The receipts function: an SES event (from the configuration set's EventBridge
//! destination) or a CloudWatch Logs subscription batch of SNS SMS delivery status lines
//! in; the deliveries they name moved to `delivered` or `undelivered`.

use flare_aws::SdkConfig;
use flare_aws::log::DynamoDeliveryLog;
use flare_aws::wiring::LOG_TABLE;
use flare_runtime::ConfigError;
use flare_runtime::provider_events::{self, ProviderEventError};
use flare_shared::app::receipts::{ReceiptSummary, Receipts};
use lambda_runtime::LambdaEvent;
use std::sync::Arc;
use std::time::Duration;

/// How long a receipt that found no delivery waits before looking once more: the log's
/// receipt index is eventually consistent (usually well under a second behind).
pub const RETRY_UNKNOWN_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Config {
    pub log_table: String,
    /// Where the deliveries receipts move to `delivered` are counted (EMF).
    pub metrics_namespace: Option<String>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            log_table: flare_runtime::required(LOG_TABLE)?,
            metrics_namespace: flare_runtime::emf::namespace_from_env().into(),
        })
    }

    pub fn receipts(&self, sdk: &SdkConfig) -> Receipts {
        let log = DynamoDeliveryLog::new(flare_aws::dynamodb(sdk), &self.log_table);
        Receipts {
            log: Arc::new(log),
            retry_unknown_after: Some(RETRY_UNKNOWN_AFTER),
            metrics: flare_runtime::emf::metrics(self.metrics_namespace.as_deref()),
        }
    }
}

/// Handles one invocation. A storage failure is an error (Lambda retries the event); an
/// event Flare cannot read is logged and dropped, since retrying it cannot help.
pub async fn handle(
    receipts: &Receipts,
    event: LambdaEvent<serde_json::Value>,
) -> Result<serde_json::Value, lambda_runtime::Error> {
    match provider_events::apply(receipts, event.payload).await {
        Ok(sum) => Ok(summary(sum)),
        Err(ProviderEventError::Malformed(e) | ProviderEventError::TooLarge(e)) => {
            tracing::error!(error = %e, "unreadable provider event: dropped");
            Ok(serde_json::json!({"dropped": e.to_string()}))
        }
        Err(e) => {
            tracing::error!(error = ?e, "receipts not applied: the event will be retried");
            Err(Box::new(e))
        }
    }
}

fn summary(s: ReceiptSummary) -> serde_json::Value {
    serde_json::json!(s)
}
