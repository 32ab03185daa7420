//! The receipts function: an SES event (from the configuration set's EventBridge
//! destination) or a CloudWatch Logs subscription batch of SNS SMS delivery status lines
//! in; the deliveries they name moved to `delivered` or `undelivered`. And (v1.2) AWS End
//! User Messaging's two-way SMS, from its SNS topic: replies read, answered through SNS.

use flare_aws::SdkConfig;
use flare_aws::log::DynamoDeliveryLog;
use flare_aws::wiring::Tables;
use flare_runtime::ConfigError;
use flare_runtime::provider_events::{self, ProviderEventError};
use flare_shared::app::inbound::Replies;
use flare_shared::app::receipts::{ReceiptSummary, Receipts};
use lambda_runtime::LambdaEvent;
use std::sync::Arc;
use std::time::Duration;

/// How long a receipt that found no delivery waits before looking once more: the log's
/// receipt index is eventually consistent (usually well under a second behind).
pub const RETRY_UNKNOWN_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Config {
    pub tables: Tables,
    /// Where the deliveries receipts move to `delivered` are counted (EMF).
    pub metrics_namespace: Option<String>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            tables: Tables::from_env()?,
            metrics_namespace: flare_runtime::emf::namespace_from_env().into(),
        })
    }

    /// The receipts, and the replies End User Messaging's inbound SMS need (their
    /// answers go back through SNS).
    pub fn handler(&self, sdk: &SdkConfig) -> (Receipts, Replies) {
        use flare_aws::dynamodb::{DynamoDirectory, DynamoSettings};
        let db = flare_aws::dynamodb(sdk);
        let log = Arc::new(DynamoDeliveryLog::new(db.clone(), &self.tables.log));
        let metrics = flare_runtime::emf::metrics(self.metrics_namespace.as_deref());
        let sns = flare_aws::sns_sms::SnsSmsSender::new(flare_aws::sns(sdk));
        let directory: Arc<dyn flare_shared::ports::Directory> =
            Arc::new(DynamoDirectory::new(db.clone(), &self.tables.directory));
        let replies = Replies {
            settings: Arc::new(DynamoSettings::new(db, &self.tables.settings)),
            directory: directory.clone(),
            log: log.clone(),
            metrics: metrics.clone(),
            sms_senders: [(
                flare_shared::domain::Provider::Sns,
                Arc::new(sns) as Arc<dyn flare_shared::ports::SmsSender>,
            )]
            .into(),
        };
        let receipts = Receipts {
            log,
            retry_unknown_after: Some(RETRY_UNKNOWN_AFTER),
            metrics,
            opt_outs: Some(directory),
        };
        (receipts, replies)
    }
}

/// Handles one invocation. A storage failure is an error (Lambda retries the event); an
/// event Flare cannot read is logged and dropped, since retrying it cannot help.
pub async fn handle(
    (receipts, replies): (&Receipts, &Replies),
    event: LambdaEvent<serde_json::Value>,
) -> Result<serde_json::Value, lambda_runtime::Error> {
    match provider_events::apply(receipts, Some(replies), event.payload).await {
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
