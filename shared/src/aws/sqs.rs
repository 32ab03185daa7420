//! The job queues: one SQS queue per channel, sent to with SendMessageBatch (10 a call),
//! retrying the entries SQS failed on its side.

use super::dynamodb::{backoff, batch_concurrency};
use crate::domain::{Channel, DeliveryJob};
use crate::ports::{JobQueue, QueueError};
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use std::collections::HashMap;

/// SendMessageBatch's limit per call.
pub const BATCH_SEND_MAX: usize = 10;

#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: Client,
    urls: HashMap<Channel, String>,
}

impl SqsQueue {
    pub fn new(client: Client, urls: HashMap<Channel, String>) -> Self {
        Self { client, urls }
    }
}

impl SqsQueue {
    /// One SendMessageBatch of up to 10 jobs, retrying the entries SQS failed on its side.
    async fn send_chunk(&self, url: String, chunk: Vec<DeliveryJob>) -> Result<(), QueueError> {
        let mut entries = Vec::with_capacity(chunk.len());
        for (i, j) in chunk.iter().enumerate() {
            let body = serde_json::to_string(j).map_err(|e| QueueError::Failed(e.into()))?;
            entries.push(
                SendMessageBatchRequestEntry::builder()
                    .id(format!("j{i}"))
                    .message_body(body)
                    .build()
                    .map_err(|e| QueueError::Failed(e.into()))?,
            );
        }
        let mut attempt = 0;
        loop {
            let out = self
                .client
                .send_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries.clone()))
                .send()
                .await
                .map_err(|e| {
                    let transient = super::is_transient(&e);
                    let err = anyhow::Error::new(e).context("SendMessageBatch");
                    if transient {
                        QueueError::Unavailable(err)
                    } else {
                        QueueError::Failed(err)
                    }
                })?;
            let failed = out.failed();
            if failed.is_empty() {
                return Ok(());
            }
            if let Some(f) = failed.iter().find(|f| f.sender_fault()) {
                return Err(QueueError::Failed(anyhow::anyhow!(
                    "SendMessageBatch refused an entry: {} {}",
                    f.code(),
                    f.message().unwrap_or_default()
                )));
            }
            attempt += 1;
            if attempt > 8 {
                return Err(QueueError::Unavailable(anyhow::anyhow!(
                    "SendMessageBatch failed {} entries after {attempt} attempts",
                    failed.len()
                )));
            }
            let retry: std::collections::HashSet<&str> = failed.iter().map(|f| f.id()).collect();
            entries.retain(|e| retry.contains(e.id()));
            tokio::time::sleep(backoff(attempt)).await;
        }
    }
}

#[async_trait]
impl JobQueue for SqsQueue {
    async fn enqueue(&self, jobs: &[DeliveryJob]) -> Result<(), QueueError> {
        use futures::{StreamExt, TryStreamExt};
        let mut by_channel: HashMap<Channel, Vec<&DeliveryJob>> = HashMap::new();
        for j in jobs {
            by_channel.entry(j.channel).or_default().push(j);
        }
        let mut batches = Vec::new();
        for (channel, jobs) in &by_channel {
            let url = self.urls.get(channel).ok_or_else(|| {
                QueueError::Failed(anyhow::anyhow!(
                    "no queue configured for {}",
                    channel.as_str()
                ))
            })?;
            batches.extend(jobs.chunks(BATCH_SEND_MAX).map(|c| {
                (
                    url.clone(),
                    c.iter().map(|j| (*j).clone()).collect::<Vec<_>>(),
                )
            }));
        }
        futures::stream::iter(batches)
            .map(|(url, chunk)| self.send_chunk(url, chunk))
            .buffer_unordered(batch_concurrency())
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}
