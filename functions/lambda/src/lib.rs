//! The SQS side of a delivery function: each message is one job; one bad job never
//! redelivers the others (`ReportBatchItemFailures`).

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use flare_runtime as config;
use flare_shared::app::deliver::{DeliverError, Deliverer, retry_delay};
use flare_shared::domain::DeliveryJob;
use std::sync::Arc;

/// After this many receives a transient failure is final (the queue's redrive policy
/// sends the job to its dead-letter queue after the same number).
pub const DEFAULT_MAX_RECEIVES: u32 = 5;

/// The first retry's delay; later ones double ([`retry_delay`]).
pub const RETRY_BASE: std::time::Duration = std::time::Duration::from_secs(10);

/// Delays a failed job's next delivery (SQS ChangeMessageVisibility in AWS).
#[async_trait::async_trait]
pub trait RetryDelay: Send + Sync {
    async fn delay(&self, receipt_handle: &str, seconds: i32);
}

#[derive(Clone)]
pub struct DeliveryFunction {
    pub deliverer: Deliverer,
    pub max_receives: u32,
    pub delay: Option<Arc<dyn RetryDelay>>,
}

impl DeliveryFunction {
    pub fn new(deliverer: Deliverer) -> Self {
        let max_receives = config::optional("FLARE_MAX_RECEIVES", "5")
            .parse()
            .unwrap_or(DEFAULT_MAX_RECEIVES);
        Self {
            deliverer,
            max_receives,
            delay: None,
        }
    }

    /// Handles one SQS batch; answers the messages to redeliver.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut failures = Vec::new();
        for message in event.records {
            if !self.handle_one(&message).await
                && let Some(id) = message.message_id.clone()
            {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                failures.push(failure);
            }
        }
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = failures;
        response
    }

    /// True when the message is done with (delivered, failed for good, or a duplicate).
    async fn handle_one(&self, message: &SqsMessage) -> bool {
        let receives: u32 = message
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let job: DeliveryJob = match message.body.as_deref().map(serde_json::from_str) {
            Some(Ok(job)) => job,
            Some(Err(e)) => {
                // A poison message: let the redrive policy move it to the dead-letter queue.
                tracing::error!(message_id = ?message.message_id, receives, error = %e, "job is not valid JSON for a delivery job");
                return false;
            }
            None => {
                tracing::error!(message_id = ?message.message_id, "job without a body");
                return false;
            }
        };
        let final_attempt = receives >= self.max_receives;
        match self.deliverer.deliver(&job, final_attempt).await {
            Ok(_) => true,
            Err(DeliverError::Retry { reason }) => {
                if let (Some(delay), Some(handle)) = (&self.delay, &message.receipt_handle) {
                    // 10 s, 20 s, 40 s, ... capped at 5 minutes.
                    let wait = retry_delay(RETRY_BASE, receives);
                    delay.delay(handle, wait.as_secs() as i32).await;
                }
                tracing::warn!(notification_id = %job.notification_id, channel = job.channel.as_str(), recipient = %job.recipient.key(), receives, reason = %reason, "job returned to the queue");
                false
            }
            Err(e) => {
                tracing::error!(notification_id = %job.notification_id, channel = job.channel.as_str(), recipient = %job.recipient.key(), receives, error = ?e, "job failed; it will be retried");
                false
            }
        }
    }
}

/// What every delivery function reads from its environment.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub channel: flare_shared::domain::Channel,
    pub tables: flare_aws::wiring::Tables,
    pub queues: std::collections::HashMap<flare_shared::domain::Channel, String>,
    /// Where provider secrets are (`FLARE_SECRET_PREFIX`, default `flare`).
    pub secret_prefix: String,
}

impl DeliveryConfig {
    /// The tables, this channel's own queue (for retry backoff) and, for push, the SMS
    /// and email queues its fallbacks go to.
    pub fn from_env(channel: flare_shared::domain::Channel) -> Result<Self, config::ConfigError> {
        use flare_shared::domain::Channel;
        let channels: &[Channel] = match channel {
            Channel::Push => &Channel::ALL,
            other => &[other][..],
        };
        let channels = channels.to_vec();
        Ok(Self {
            channel,
            tables: flare_aws::wiring::Tables::from_env()?,
            queues: flare_aws::wiring::queue_urls(&channels)?,
            secret_prefix: config::optional("FLARE_SECRET_PREFIX", "flare"),
        })
    }

    /// A deliverer over the DynamoDB tables, with no senders yet.
    pub fn deliverer(&self, sdk: &flare_aws::SdkConfig) -> Deliverer {
        use flare_aws::dynamodb::{DynamoDirectory, DynamoSettings};
        use flare_aws::log::DynamoDeliveryLog;
        use flare_aws::sqs::SqsQueue;
        let db = flare_aws::dynamodb(sdk);
        Deliverer {
            log: Arc::new(DynamoDeliveryLog::new(db.clone(), &self.tables.log)),
            queue: Some(Arc::new(SqsQueue::new(
                flare_aws::sqs(sdk),
                self.queues.clone(),
            ))),
            directory: Arc::new(DynamoDirectory::new(db.clone(), &self.tables.directory)),
            settings: Arc::new(DynamoSettings::new(db, &self.tables.settings)),
            push: None,
            sms: Default::default(),
            email: Default::default(),
            default_sender: None,
        }
    }

    /// The function around a deliverer, delaying retries on its own queue.
    pub fn function(&self, sdk: &flare_aws::SdkConfig, deliverer: Deliverer) -> DeliveryFunction {
        let mut f = DeliveryFunction::new(deliverer);
        if let Some(url) = self.queues.get(&self.channel) {
            f.delay = Some(Arc::new(SqsDelay {
                client: flare_aws::sqs(sdk),
                queue_url: url.clone(),
            }));
        }
        f
    }
}

/// Backoff through the message's visibility timeout.
pub struct SqsDelay {
    pub client: flare_aws::SqsClient,
    pub queue_url: String,
}

#[async_trait::async_trait]
impl RetryDelay for SqsDelay {
    async fn delay(&self, receipt_handle: &str, seconds: i32) {
        if let Err(e) = self
            .client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds)
            .send()
            .await
        {
            // The queue's own visibility timeout still applies: log, don't fail the job.
            tracing::warn!(error = ?e, "could not delay the retry");
        }
    }
}

/// Runs a delivery function on the Lambda runtime.
pub async fn run(function: DeliveryFunction) -> Result<(), lambda_runtime::Error> {
    let f = &function;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<SqsEvent>| async move {
            Ok::<_, lambda_runtime::Error>(f.handle(event.payload).await)
        },
    ))
    .await
}
