//! The SQS side of a delivery function: each message is one job; one bad job never
//! redelivers the others (`ReportBatchItemFailures`).

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use flare_runtime as config;
use flare_shared::app::deliver::{DeliverError, Deliverer, lease_for, retry_delay};
use flare_shared::domain::{CheckJob, DeliveryJob, QueuedWork};
use std::sync::Arc;

/// After this many receives a transient failure is final (the queue's redrive policy
/// sends the job to its dead-letter queue after the same number: both come from the
/// template's `MaxReceives` parameter, as `FLARE_MAX_RECEIVES` and `maxReceiveCount`).
pub const DEFAULT_MAX_RECEIVES: u32 = 5;
pub const MAX_RECEIVES_ENV: &str = "FLARE_MAX_RECEIVES";
/// The account's SNS SMS rate the SMS functions keep (`SnsSmsPerSecond` in the template).
pub const SNS_SMS_PER_SECOND_ENV: &str = "FLARE_SNS_SMS_PER_SECOND";

/// The delivery functions' `Timeout` in `template.yaml` (a test keeps them equal).
pub const FUNCTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// How many messages of a batch run at once (SQS hands over at most 10).
pub const BATCH_CONCURRENCY: usize = 10;

/// How long before the invocation's deadline unfinished jobs are cut off, so the
/// function can still answer which ones to redeliver.
pub const ANSWER_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a send waits for its provider's pace and 429 pauses before its job is
/// postponed: with a gateway's 10 s for the send itself, the invocation ends in time.
pub const MAX_PACE_WAIT: std::time::Duration = std::time::Duration::from_secs(8);

/// The first retry's delay; later ones double ([`retry_delay`]).
pub const RETRY_BASE: std::time::Duration = std::time::Duration::from_secs(10);

/// Delays a failed job's next delivery (SQS ChangeMessageVisibility in AWS).
#[async_trait::async_trait]
pub trait RetryDelay: Send + Sync {
    /// `source` is the queue the message came from (its `eventSourceARN`).
    async fn delay(&self, source: Option<&str>, receipt_handle: &str, seconds: i32);
}

#[derive(Clone)]
pub struct DeliveryFunction {
    pub deliverer: Deliverer,
    pub max_receives: u32,
    pub delay: Option<Arc<dyn RetryDelay>>,
    /// The ARNs of this channel's dead-letter queues (in AWS, the one of the function's
    /// lane), which are also event sources: their messages are jobs to give up on
    /// ([`Deliverer::abandon`]).
    pub dead_letter_queues: Vec<String>,
}

impl DeliveryFunction {
    pub fn new(deliverer: Deliverer) -> Self {
        Self {
            deliverer,
            max_receives: DEFAULT_MAX_RECEIVES,
            delay: None,
            dead_letter_queues: Vec::new(),
        }
    }

    /// Handles one SQS batch as if the invocation had the function's whole timeout
    /// ([`FUNCTION_TIMEOUT`]) left.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        self.handle_until(event, std::time::SystemTime::now() + FUNCTION_TIMEOUT)
            .await
    }

    /// Handles one SQS batch that must be done by `deadline` (the invocation's); answers
    /// the messages to redeliver. A failed message without an id cannot be named, so the
    /// whole batch is answered failed (an empty identifier) rather than the message
    /// silently deleted with the others.
    pub async fn handle_until(
        &self,
        event: SqsEvent,
        deadline: std::time::SystemTime,
    ) -> SqsBatchResponse {
        use futures::{FutureExt, StreamExt};
        // The messages of a batch run side by side (one hung server must not hold up the
        // others, other organizations' jobs included), each cut off shortly before the
        // deadline, so the answer names what is unfinished instead of Lambda timing the
        // whole batch out.
        let outcomes: Vec<(SqsMessage, bool)> = futures::stream::iter(event.records)
            .map(|message| async move {
                let left = deadline
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
                    .saturating_sub(ANSWER_MARGIN);
                // A panic (a bug, or an injected crash) ends this job's attempt alone:
                // it is returned to the queue and the rest of the batch carries on.
                let attempt = std::panic::AssertUnwindSafe(
                    self.handle_one(&message, lease_for(left)),
                )
                .catch_unwind();
                let done = match tokio::time::timeout(left, attempt).await {
                    Ok(Ok(done)) => done,
                    Ok(Err(_)) => {
                        tracing::error!(message_id = ?message.message_id, "job panicked: returned to the queue");
                        false
                    }
                    Err(_) => {
                        tracing::warn!(message_id = ?message.message_id, "job not finished before the invocation's deadline: returned to the queue");
                        false
                    }
                };
                (message, done)
            })
            .buffer_unordered(BATCH_CONCURRENCY)
            .collect()
            .await;
        let mut failures = Vec::new();
        for (message, done) in outcomes {
            if !done {
                let mut failure = BatchItemFailure::default();
                match message.message_id.clone() {
                    Some(id) => failure.item_identifier = id,
                    None => {
                        tracing::error!("a failed message has no id: the whole batch is returned");
                    }
                }
                failures.push(failure);
            }
        }
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = failures;
        response
    }

    /// True when the message is done with (delivered, failed for good, or a duplicate).
    async fn handle_one(&self, message: &SqsMessage, lease: std::time::Duration) -> bool {
        if message
            .event_source_arn
            .as_ref()
            .is_some_and(|arn| self.dead_letter_queues.contains(arn))
        {
            return self.give_up(message).await;
        }
        let receives: u32 = message
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let job: DeliveryJob = match message.body.as_deref().map(QueuedWork::parse) {
            Some(Ok(QueuedWork::Job(job))) => *job,
            Some(Ok(QueuedWork::Check(check))) => return self.check(&check, message, true).await,
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
        // A postponed job's new message counts on from where its earlier ones left off.
        let receives = receives.saturating_add(job.spent_receives);
        let final_attempt = receives >= self.max_receives;
        match self.deliverer.deliver(&job, final_attempt, lease).await {
            Ok(_) => true,
            Err(DeliverError::Postpone { after }) => {
                // A new message at the end of its lane: this one's receives are not
                // spent waiting for a pace that a long backlog holds.
                let Some(queue) = &self.deliverer.queue else {
                    return false;
                };
                // This receive spent no attempt; the ones before it did.
                let mut job = job;
                job.spent_receives = receives.saturating_sub(1);
                match queue.postpone(&job, after).await {
                    Ok(()) => {
                        tracing::info!(notification_id = %job.notification_id, channel = job.channel.as_str(), recipient = %job.recipient.key(), receives, "job postponed: the provider's pace is full");
                        true
                    }
                    Err(e) => {
                        tracing::warn!(notification_id = %job.notification_id, channel = job.channel.as_str(), recipient = %job.recipient.key(), error = ?e, "job not postponed: returned to the queue");
                        false
                    }
                }
            }
            Err(DeliverError::Retry { reason }) => {
                if let (Some(delay), Some(handle)) = (&self.delay, &message.receipt_handle) {
                    // 10 s, 20 s, 40 s, ... capped at 5 minutes.
                    let wait = retry_delay(RETRY_BASE, receives);
                    let source = message.event_source_arn.as_deref();
                    delay.delay(source, handle, wait.as_secs() as i32).await;
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

impl DeliveryFunction {
    /// A timer's check (push queue): run it and schedule the next one it asks for. A
    /// failed check is returned to the queue like a failed job, and one that keeps
    /// failing reaches the dead-letter queue, whose alarm an operator sees.
    async fn check(&self, check: &CheckJob, message: &SqsMessage, backoff: bool) -> bool {
        match self
            .deliverer
            .check_and_reschedule(check, chrono::Utc::now())
            .await
        {
            Ok(_) => true,
            Err(e) => {
                // Backoff on the push queue only (a dead-letter message's handle is not
                // one of that queue's).
                if let (true, Some(delay), Some(handle)) =
                    (backoff, &self.delay, &message.receipt_handle)
                {
                    let source = message.event_source_arn.as_deref();
                    delay
                        .delay(source, handle, RETRY_BASE.as_secs() as i32)
                        .await;
                }
                tracing::error!(notification_id = %check.notification_id, error = ?e, "check failed; it will run again");
                false
            }
        }
    }

    /// A job from the dead-letter queue: end what it left pending. A message that is not
    /// a job stays there (an operator has to see it); so does a job whose record a live
    /// attempt still holds, until that attempt is over.
    async fn give_up(&self, message: &SqsMessage) -> bool {
        let work = message.body.as_deref().map(QueuedWork::parse);
        // A dead-lettered check is run once more: what it waits for must not stay
        // pending because its timer failed.
        if let Some(Ok(QueuedWork::Check(check))) = &work {
            return self.check(check, message, false).await;
        }
        let Some(Ok(QueuedWork::Job(job))) = work else {
            tracing::error!(message_id = ?message.message_id, "dead-lettered message is not a delivery job: left in the dead-letter queue");
            return false;
        };
        match self.deliverer.abandon(&job).await {
            Ok(outcome) => {
                tracing::info!(notification_id = %job.notification_id, channel = job.channel.as_str(), recipient = %job.recipient.key(), outcome = ?outcome, "dead-lettered job settled");
                true
            }
            Err(e) => {
                tracing::warn!(notification_id = %job.notification_id, channel = job.channel.as_str(), recipient = %job.recipient.key(), error = ?e, "dead-lettered job not settled yet");
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
    pub queues: flare_aws::sqs::QueueUrls,
    /// Where provider secrets are (`FLARE_SECRET_PREFIX`, default `flare`).
    pub secret_prefix: String,
    /// `FLARE_MAX_RECEIVES` (default 5): a whole number from 1 to 1000.
    pub max_receives: u32,
    /// `FLARE_<CHANNEL>_DLQ_ARN`: the dead-letter queue of this function's lane, an
    /// event source too (tests, where one function takes both lanes, give both).
    pub dead_letter_queues: Vec<String>,
    /// `FLARE_METRICS_NAMESPACE` (default `Flare`); None counts nothing (tests).
    pub metrics_namespace: Option<String>,
    /// When a failing custom provider's circuit opens (`FLARE_CIRCUIT_*`).
    pub circuit: flare_shared::domain::health::CircuitPolicy,
    /// `FLARE_SNS_SMS_PER_SECOND`: the account's SNS SMS rate, which the SMS functions
    /// keep together (unset or 0: not paced).
    pub sns_per_second: Option<u32>,
    /// How long a send waits for its provider's pace before its job is postponed
    /// ([`MAX_PACE_WAIT`]; tests shorten it).
    pub max_pace_wait: std::time::Duration,
    /// `FLARE_PUBLIC_URL`: the API's address, which the response links of dispatch SMS
    /// and email are under (unset: no links, the reply instructions only).
    pub public_url: Option<String>,
}

/// `FLARE_PUBLIC_URL`, when set: an absolute http(s) URL (its trailing slash dropped).
fn public_url() -> Result<Option<String>, config::ConfigError> {
    let raw = config::optional(flare_aws::wiring::PUBLIC_URL, "");
    if raw.is_empty() {
        return Ok(None);
    }
    match url::Url::parse(&raw) {
        Ok(u) if matches!(u.scheme(), "https" | "http") && u.has_host() => {
            Ok(Some(raw.trim_end_matches('/').to_string()))
        }
        _ => Err(config::ConfigError::Invalid {
            name: flare_aws::wiring::PUBLIC_URL,
            reason: "must be an absolute http(s) URL".into(),
        }),
    }
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
            metrics_namespace: config::emf::namespace_from_env().into(),
            dead_letter_queues: vec![config::required(flare_aws::wiring::dead_letter_env(
                channel,
            ))?],
            circuit: config::circuit_policy()?,
            max_pace_wait: MAX_PACE_WAIT,
            public_url: public_url()?,
            sns_per_second: {
                let raw = config::optional(SNS_SMS_PER_SECOND_ENV, "0");
                match raw.parse::<u32>() {
                    Ok(0) => None,
                    Ok(n) if n <= 10_000 => Some(n),
                    _ => {
                        return Err(config::ConfigError::Invalid {
                            name: SNS_SMS_PER_SECOND_ENV,
                            reason: "must be a whole number from 0 to 10000".into(),
                        });
                    }
                }
            },
            max_receives: {
                let raw = config::optional(MAX_RECEIVES_ENV, &DEFAULT_MAX_RECEIVES.to_string());
                match raw.parse::<u32>() {
                    Ok(n) if (1..=1000).contains(&n) => n,
                    _ => {
                        return Err(config::ConfigError::Invalid {
                            name: MAX_RECEIVES_ENV,
                            reason: "must be a whole number from 1 to 1000".into(),
                        });
                    }
                }
            },
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
            settings: Arc::new(DynamoSettings::new(db.clone(), &self.tables.settings)),
            push: None,
            sms: Default::default(),
            email: Default::default(),
            default_sender: None,
            metrics: config::emf::metrics(self.metrics_namespace.as_deref()),
            // SMS and email track their custom providers' health (and fail over) in
            // the log table, where every instance sees it; push has no second provider.
            failover: (self.channel != flare_shared::domain::Channel::Push).then(|| {
                flare_shared::app::failover::Failover {
                    health: Arc::new(flare_aws::health::DynamoHealth::new(
                        db.clone(),
                        &self.tables.log,
                    )),
                    policy: self.circuit,
                }
            }),
            pacer: None,
            sns_per_second: None,
            max_pace_wait: Some(self.max_pace_wait),
            // The SMS and email functions set them, with their secret store.
            links: None,
        }
    }

    /// Response links under `FLARE_PUBLIC_URL`, their codes sealed with the key read
    /// through `secrets` (the SMS and email functions' secrets cache); `None` when unset.
    pub fn links(
        &self,
        secrets: Arc<dyn flare_shared::ports::SecretStore>,
    ) -> Option<flare_shared::app::deliver::Links> {
        let public_url = self.public_url.clone()?;
        Some(flare_shared::app::deliver::Links {
            public_url,
            secrets,
        })
    }

    /// The function around a deliverer, delaying retries on its own queue.
    pub fn function(&self, sdk: &flare_aws::SdkConfig, deliverer: Deliverer) -> DeliveryFunction {
        let mut f = DeliveryFunction::new(deliverer);
        f.max_receives = self.max_receives;
        f.dead_letter_queues = self.dead_letter_queues.clone();
        let own: Vec<String> = flare_shared::domain::Lane::ALL
            .iter()
            .filter_map(|l| self.queues.get(&(self.channel, *l)).cloned())
            .collect();
        if !own.is_empty() {
            f.delay = Some(Arc::new(SqsDelay {
                client: flare_aws::sqs(sdk),
                queue_urls: own,
            }));
        }
        f
    }
}

/// Backoff through the message's visibility timeout, on the queue it came from.
pub struct SqsDelay {
    pub client: flare_aws::SqsClient,
    /// The channel's queues (both lanes); the first is taken for a message that does
    /// not say where it came from.
    pub queue_urls: Vec<String>,
}

impl SqsDelay {
    /// The URL of the queue an ARN names: a queue's URL and ARN both end in its name.
    fn url_of(&self, source: Option<&str>) -> Option<&str> {
        let name = source.and_then(|arn| arn.rsplit(':').next());
        name.and_then(|n| {
            self.queue_urls
                .iter()
                .find(|u| u.rsplit('/').next() == Some(n))
        })
        .or(self.queue_urls.first())
        .map(String::as_str)
    }
}

#[async_trait::async_trait]
impl RetryDelay for SqsDelay {
    async fn delay(&self, source: Option<&str>, receipt_handle: &str, seconds: i32) {
        let Some(url) = self.url_of(source) else {
            return;
        };
        if let Err(e) = self
            .client
            .change_message_visibility()
            .queue_url(url)
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
            let deadline = event.context.deadline();
            Ok::<_, lambda_runtime::Error>(f.handle_until(event.payload, deadline).await)
        },
    ))
    .await
}

#[cfg(test)]
mod tests;
