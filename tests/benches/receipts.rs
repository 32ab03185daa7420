//! What a provider receipt costs, on moto: N sent emails and N sent SMS (each recorded
//! with its receipt key, as the email and SMS functions record them), then N SES events
//! (one invocation each, as EventBridge invokes the receipts function) and N SNS SMS
//! status lines (CloudWatch Logs batches of 100) through the receipts function's handler
//! (`flare_runtime::provider_events::apply`). Counted: every DynamoDB call the handler
//! makes (the goal is 2 a receipt: the index lookup and the conditional write). Timed:
//! receipts a second, one handler at a time and 16 at once, in three rounds each. moto
//! answers one call at a time on this machine: the rates say what Flare's side costs
//! against moto, not what DynamoDB would answer.
//!
//!     cargo bench -p flare-tests --bench receipts [-- 600]

use flare_aws::log::DynamoDeliveryLog;
use flare_shared::app::receipts::Receipts;
use flare_shared::domain::receipt::ReceiptKey;
use flare_shared::domain::*;
use flare_shared::ports::{DeliveryLog, Finish};
use flare_tests::fanout::{CallCounter, counted_clients};
use flare_tests::stack::AwsStack;
use futures::StreamExt;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `n` sent deliveries of `channel` by `provider` in one notification; their message ids.
async fn seed(
    log: &DynamoDeliveryLog,
    org: &OrgId,
    channel: Channel,
    provider: Provider,
    n: usize,
) -> Vec<String> {
    let note = flare_tests::conformance::notification(org);
    log.create_notification(&note).await.unwrap();
    let records: Vec<DeliveryRecord> = (0..n)
        .map(|i| flare_tests::conformance::record(&note, &format!("u-{i:06}"), channel, false))
        .collect();
    log.put_first_records(&note, &records).await.unwrap();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    futures::stream::iter(records.into_iter().enumerate())
        .map(|(i, r)| {
            let note = &note;
            let tag = &tag;
            async move {
                let mid = format!("{tag}-{i}");
                log.claim(
                    org,
                    &note.notification_id,
                    &r.recipient,
                    r.slot(),
                    Duration::from_secs(60),
                )
                .await
                .unwrap();
                log.finish(
                    org,
                    &note.notification_id,
                    &r.recipient,
                    r.slot(),
                    Finish::Sent {
                        attempt: 1,
                        provider,
                        provider_message_id: Some(mid.clone()),
                        receipt_key: Some(ReceiptKey::global(provider, &mid)),
                        failover_from: None,
                        sms: None,
                    },
                )
                .await
                .unwrap();
                mid
            }
        })
        .buffered(16)
        .collect()
        .await
}

fn ses_delivery(mid: &str) -> serde_json::Value {
    json!({"version": "0", "id": mid, "detail-type": "Email Delivered", "source": "aws.ses",
           "time": "2026-11-27T10:00:03Z", "detail": {"eventType": "Delivery",
           "mail": {"messageId": mid}, "delivery": {"timestamp": "2026-11-27T10:00:02.456Z"}}})
}

/// Runs `events` through the handler, `parallel` at a time; receipts a second and the
/// receipts applied.
async fn through(
    receipts: &Receipts,
    events: Vec<serde_json::Value>,
    parallel: usize,
) -> (f64, usize) {
    let start = Instant::now();
    let applied: usize = futures::stream::iter(events)
        .map(|e| async move {
            flare_runtime::provider_events::apply(receipts, None, e)
                .await
                .unwrap()
                .applied
        })
        .buffer_unordered(parallel)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .sum();
    let n = applied.max(1);
    (n as f64 / start.elapsed().as_secs_f64(), applied)
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(600);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stack = AwsStack::create(flare_tests::moto()).await.unwrap();
        let plain = DynamoDeliveryLog::new(flare_aws::dynamodb(&stack.sdk), &stack.tables.log);
        let org = OrgId::parse("bench").unwrap();
        let counter = CallCounter::default();
        let (db, _) = counted_clients(&stack.sdk, None, &counter);
        let receipts = Receipts::new(Arc::new(DynamoDeliveryLog::new(db, &stack.tables.log)));
        println!("{n} receipts per round, three rounds each, on moto:");
        let mut calls = Vec::new();
        for parallel in [1, 16] {
            let mut rates = Vec::new();
            for _ in 0..3 {
                let mids = seed(&plain, &org, Channel::Email, Provider::Ses, n).await;
                let before = counter.total();
                let (rate, applied) = through(&receipts, mids.iter().map(|m| ses_delivery(m)).collect(), parallel).await;
                assert_eq!(applied, n, "every receipt found its email");
                calls.push((counter.total() - before) as f64 / n as f64);
                rates.push(rate);
            }
            println!("  SES events, {parallel:>2} at a time: {:.0} / {:.0} / {:.0} receipts a second", rates[0], rates[1], rates[2]);
            let mut rates = Vec::new();
            for _ in 0..3 {
                let mids = seed(&plain, &org, Channel::Sms, Provider::Sns, n).await;
                let batches: Vec<serde_json::Value> = mids
                    .chunks(100)
                    .map(|c| {
                        let lines: Vec<(&str, &str, &str)> = c.iter().map(|m| (m.as_str(), "SUCCESS", "accepted")).collect();
                        flare_tests::sns_status_payload(&lines)
                    })
                    .collect();
                let before = counter.total();
                let (rate, applied) = through(&receipts, batches, parallel).await;
                assert_eq!(applied, n, "every status line found its SMS");
                calls.push((counter.total() - before) as f64 / n as f64);
                rates.push(rate);
            }
            println!("  SNS status lines (batches of 100), {parallel:>2} batches at a time: {:.0} / {:.0} / {:.0} receipts a second", rates[0], rates[1], rates[2]);
        }
        let (lo, hi) = calls.iter().fold((f64::MAX, 0f64), |(lo, hi), c| (lo.min(*c), hi.max(*c)));
        println!("  DynamoDB calls per receipt: {lo:.2} to {hi:.2} over every round ({:?})", counter.counts());
    });
}
