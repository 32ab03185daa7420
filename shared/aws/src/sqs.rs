//! The job queues: two SQS queues per channel, urgent and normal, sent to with
//! SendMessageBatch (10 a call), retrying the entries SQS failed on its side.

use crate::batch::{Round, batch_concurrency, until_processed};
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use flare_shared::domain::{Channel, CheckJob, DeliveryJob, Lane};
use flare_shared::ports::{JobQueue, MAX_CHECK_DELAY, QueueError};

/// SendMessageBatch's limit per call.
pub const BATCH_SEND_MAX: usize = 10;

pub use crate::wiring::QueueUrls;

#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: Client,
    urls: QueueUrls,
}

impl SqsQueue {
    pub fn new(client: Client, urls: QueueUrls) -> Self {
        Self { client, urls }
    }
}

impl SqsQueue {
    fn entries(chunk: &[&DeliveryJob]) -> Result<Vec<SendMessageBatchRequestEntry>, QueueError> {
        chunk
            .iter()
            .enumerate()
            .map(|(i, j)| {
                let body = serde_json::to_string(j).map_err(|e| QueueError::Failed(e.into()))?;
                SendMessageBatchRequestEntry::builder()
                    .id(format!("j{i}"))
                    .message_body(body)
                    .build()
                    .map_err(|e| QueueError::Failed(e.into()))
            })
            .collect()
    }

    /// One SendMessageBatch of up to 10 jobs, retrying the entries SQS failed on its side.
    async fn send_entries(
        &self,
        url: &str,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> Result<(), QueueError> {
        until_processed("SendMessageBatch", entries, |mut entries| async move {
            let out = self
                .client
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries.clone()))
                .send()
                .await
                .map_err(|e| queue_error(e, "SendMessageBatch"))?;
            let failed = out.failed();
            if let Some(f) = failed.iter().find(|f| f.sender_fault()) {
                return Err(QueueError::Failed(anyhow::anyhow!(
                    "SendMessageBatch refused an entry: {} {}",
                    f.code(),
                    f.message().unwrap_or_default()
                )));
            }
            let rest = (!failed.is_empty()).then(|| {
                let retry: std::collections::HashSet<&str> =
                    failed.iter().map(|f| f.id()).collect();
                entries.retain(|e| retry.contains(e.id()));
                let n = entries.len();
                (entries, n)
            });
            Ok(Round { output: (), rest })
        })
        .await?;
        Ok(())
    }
}

#[async_trait]
impl JobQueue for SqsQueue {
    /// Jobs are serialized a batch at a time, as each call is made.
    async fn enqueue(&self, jobs: &[DeliveryJob]) -> Result<(), QueueError> {
        use futures::{StreamExt, TryStreamExt};
        let mut groups: Vec<(&str, Vec<&DeliveryJob>)> = Vec::new();
        // Urgent lanes first: their jobs are sent before a bulk send's.
        for lane in Lane::ALL {
            for c in Channel::ALL {
                let these: Vec<&DeliveryJob> = jobs
                    .iter()
                    .filter(|j| j.channel == c && j.lane() == lane)
                    .collect();
                if these.is_empty() {
                    continue;
                }
                let url = self.urls.get(&(c, lane)).ok_or_else(|| {
                    QueueError::Failed(anyhow::anyhow!(
                        "no queue configured for {} ({} lane)",
                        c.as_str(),
                        lane.as_str()
                    ))
                })?;
                groups.push((url.as_str(), these));
            }
        }
        let groups = &groups;
        let mut calls: Vec<(usize, usize)> = Vec::new();
        for (g, (_, js)) in groups.iter().enumerate() {
            calls.extend(
                (0..js.len())
                    .step_by(BATCH_SEND_MAX)
                    .map(|start| (g, start)),
            );
        }
        futures::stream::iter(calls)
            .map(|(g, start)| async move {
                let (url, js) = &groups[g];
                let end = (start + BATCH_SEND_MAX).min(js.len());
                let entries = Self::entries(&js[start..end])?;
                self.send_entries(url, entries).await
            })
            .buffer_unordered(batch_concurrency())
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// A new message for `job` on its lane's queue, `DelaySeconds` (rounded up) later.
    async fn postpone(
        &self,
        job: &DeliveryJob,
        delay: std::time::Duration,
    ) -> Result<(), QueueError> {
        let url = self.urls.get(&(job.channel, job.lane())).ok_or_else(|| {
            QueueError::Failed(anyhow::anyhow!(
                "no queue configured for {} ({} lane)",
                job.channel.as_str(),
                job.lane().as_str()
            ))
        })?;
        let body = serde_json::to_string(job).map_err(|e| QueueError::Failed(e.into()))?;
        self.client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .delay_seconds(delay_seconds(delay))
            .send()
            .await
            .map_err(|e| queue_error(e, "SendMessage (postponed job)"))?;
        Ok(())
    }

    /// A delayed message on its lane's push queue (`DelaySeconds`, whole seconds rounded
    /// up so a check never fires before its time).
    async fn schedule(
        &self,
        check: &CheckJob,
        delay: std::time::Duration,
    ) -> Result<(), QueueError> {
        let url = self.urls.get(&(Channel::Push, check.lane)).ok_or_else(|| {
            QueueError::Failed(anyhow::anyhow!(
                "no queue configured for push ({} lane, checks)",
                check.lane.as_str()
            ))
        })?;
        let body = serde_json::to_string(check).map_err(|e| QueueError::Failed(e.into()))?;
        let delay = delay_seconds(delay);
        self.client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .delay_seconds(delay)
            .send()
            .await
            .map_err(|e| queue_error(e, "SendMessage (delayed check)"))?;
        Ok(())
    }
}

/// An SQS call's error, kept whole: `Unavailable` when retrying may help.
fn queue_error<E>(
    e: crate::SdkError<E, aws_smithy_runtime_api::http::Response>,
    call: &'static str,
) -> QueueError
where
    E: crate::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let transient = crate::is_transient(&e);
    let err = anyhow::Error::new(e).context(call);
    if transient {
        QueueError::Unavailable(err)
    } else {
        QueueError::Failed(err)
    }
}

/// SQS's `DelaySeconds` for a wait: whole seconds, rounded up, at most 900.
pub fn delay_seconds(delay: std::time::Duration) -> i32 {
    let d = delay.min(MAX_CHECK_DELAY);
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs as i32
}

#[cfg(test)]
mod delay_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_delay_rounds_up_to_whole_seconds_and_stops_at_900() {
        assert_eq!(delay_seconds(Duration::ZERO), 0);
        assert_eq!(delay_seconds(Duration::from_millis(1)), 1);
        assert_eq!(delay_seconds(Duration::from_millis(60_000)), 60);
        assert_eq!(delay_seconds(Duration::from_millis(60_001)), 61);
        assert_eq!(delay_seconds(Duration::from_secs(3600)), 900);
    }
}
