//! What Lambda's SQS event source mappings do, for tests: receive a batch from each
//! channel's queues (the urgent lane's first), hand it to that channel's delivery
//! function as an SQS event, and delete the messages the function did not report as
//! failed.

use anyhow::bail;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use flare_aws::sqs::QueueUrls;
use flare_aws::{self as aws, SdkConfig};
use flare_shared::domain::{Channel, Lane};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::future::Future;

/// The ARN of the queue at `url` (moto's URLs end in account id and name).
pub fn queue_arn(url: &str) -> String {
    let mut parts = url.rsplit('/');
    let name = parts.next().unwrap_or_default();
    let account = parts.next().unwrap_or_default();
    format!("arn:aws:sqs:us-east-1:{account}:{name}")
}

/// The SQS event Lambda would hand a function for `messages`.
pub fn sqs_event(messages: &[Message]) -> Value {
    sqs_event_from(messages, None)
}

/// The same, saying which queue (`eventSourceARN`) the messages came from.
pub fn sqs_event_from(messages: &[Message], queue_url: Option<&str>) -> Value {
    let source = queue_url.map(queue_arn);
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attrs: HashMap<String, String> = m
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            json!({"messageId": m.message_id(), "receiptHandle": m.receipt_handle(),
                   "body": m.body(), "attributes": attrs, "messageAttributes": {},
                   "md5OfBody": m.md5_of_body(), "eventSource": "aws:sqs",
                   "eventSourceARN": source, "awsRegion": "us-east-1"})
        })
        .collect();
    json!({ "Records": records })
}

/// Until every queue is empty: each batch to `invoke(channel, event)`, which answers the
/// message ids to redeliver (the `batchItemFailures`).
pub async fn drain<F, Fut>(sdk: &SdkConfig, queues: &QueueUrls, mut invoke: F) -> anyhow::Result<()>
where
    F: FnMut(Channel, Value) -> Fut,
    Fut: Future<Output = Vec<String>>,
{
    let sqs = aws::sqs(sdk);
    for _round in 0..40 {
        let mut any = false;
        for (lane, channel) in Lane::ALL
            .into_iter()
            .flat_map(|l| Channel::ALL.map(|c| (l, c)))
        {
            let url = &queues[&(channel, lane)];
            let out = sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await?;
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                continue;
            }
            any = true;
            let failed = invoke(channel, sqs_event_from(&messages, Some(url))).await;
            for m in &messages {
                if !failed.iter().any(|f| Some(f.as_str()) == m.message_id()) {
                    sqs.delete_message()
                        .queue_url(url)
                        .receipt_handle(m.receipt_handle().unwrap_or_default())
                        .send()
                        .await?;
                }
            }
        }
        if !any {
            return Ok(());
        }
    }
    bail!("the queues did not drain in 40 rounds")
}

/// Deletes, with one DeleteMessageBatch as the event source mapping does, the `messages`
/// of the queue at `url` the function did not name in `failed`.
pub async fn delete_done(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    messages: &[Message],
    failed: &[String],
) -> anyhow::Result<()> {
    let done: Vec<_> = messages
        .iter()
        .filter(|m| !failed.iter().any(|f| Some(f.as_str()) == m.message_id()))
        .enumerate()
        .map(|(i, m)| {
            aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .build()
        })
        .collect::<Result<_, _>>()?;
    if !done.is_empty() {
        sqs.delete_message_batch()
            .queue_url(url)
            .set_entries(Some(done))
            .send()
            .await?;
    }
    Ok(())
}
