//! The router function: an EventBridge incident event in, a recorded notification and
//! queued deliveries out.

use flare_aws::dynamodb::{DynamoDirectory, DynamoSettings};
use flare_aws::log::DynamoDeliveryLog;
use flare_aws::sqs::{QueueUrls, SqsQueue};
use flare_aws::wiring::{Tables, queue_urls};
use flare_aws::{self as aws, SdkConfig};
use flare_runtime::ConfigError;
use flare_shared::app::notify::Notifier;
use flare_shared::domain::{Channel, IncidentEvent};
use lambda_runtime::LambdaEvent;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Config {
    pub tables: Tables,
    pub queues: QueueUrls,
    /// `FLARE_METRICS_NAMESPACE` (default `Flare`); None counts nothing (tests).
    pub metrics_namespace: Option<String>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            tables: Tables::from_env()?,
            queues: queue_urls(&Channel::ALL)?,
            metrics_namespace: flare_runtime::emf::namespace_from_env().into(),
        })
    }

    pub fn notifier(&self, sdk: &SdkConfig) -> Notifier {
        let db = aws::dynamodb(sdk);
        Notifier {
            settings: Arc::new(DynamoSettings::new(db.clone(), &self.tables.settings)),
            directory: Arc::new(DynamoDirectory::new(db.clone(), &self.tables.directory)),
            log: Arc::new(DynamoDeliveryLog::new(db, &self.tables.log)),
            queue: Arc::new(SqsQueue::new(aws::sqs(sdk), self.queues.clone())),
            metrics: flare_runtime::emf::metrics(self.metrics_namespace.as_deref()),
            page_size: flare_shared::app::notify::ROUTE_PAGE,
        }
    }
}

/// What became of an event.
#[derive(Debug)]
pub enum Outcome {
    Routed(flare_shared::app::notify::Routed),
    /// Malformed, or for an unknown organization: logged, not retried.
    Dropped(String),
}

impl Outcome {
    /// The function's response: what `sam local invoke` or `cargo lambda invoke` shows.
    /// EventBridge ignores it.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Outcome::Routed(r) => serde_json::json!({
                "outcome": "routed",
                "notification_id": r.notification_id.as_str(),
                "replay": r.replay,
                "recipients": r.recipients,
                "records_written": r.records_written,
                "jobs_enqueued": r.jobs_enqueued,
            }),
            Outcome::Dropped(reason) => serde_json::json!({
                "outcome": "dropped",
                "reason": reason,
            }),
        }
    }
}

/// Routes one event. A transient AWS failure, or any failure after the notification was
/// created, is an error: Lambda retries the asynchronous invocation (twice), then sends
/// the event to the router's failure queue (`RouterFailureQueue`, alarmed). EventBridge's
/// own retry policy only covers handing the event to Lambda. A malformed event or an
/// unknown organization is logged and dropped.
pub async fn handle(
    notifier: &Notifier,
    event: LambdaEvent<serde_json::Value>,
) -> Result<Outcome, lambda_runtime::Error> {
    let event_id = event.payload.get("id").cloned();
    let ev = match IncidentEvent::from_value(event.payload) {
        Ok(ev) => ev,
        Err(e) => {
            tracing::error!(event_id = ?event_id, error = %e, "malformed incident event dropped (not retried)");
            return Ok(Outcome::Dropped(e.to_string()));
        }
    };
    match notifier.route(&ev).await {
        Ok(r) => Ok(Outcome::Routed(r)),
        Err(e) if e.is_retryable() => {
            tracing::warn!(notification_id = %ev.notification_id, error = ?e, "routing failed; Lambda will retry the event");
            Err(e.into())
        }
        Err(e) => {
            tracing::error!(notification_id = %ev.notification_id, org_id = %ev.org_id, error = ?e, "incident event dropped (not retried)");
            Ok(Outcome::Dropped(e.to_string()))
        }
    }
}
