//! What the app fallback window costs in AWS calls, counted on moto: one dispatch to N
//! responders under `app_then_sms_email` (each with a device, a primary mobile and
//! email), every push accepted and every phone silent, with a window of 0 (v1: push
//! accepted is enough) and of 1 s (the window ends without a receipt, SMS and email go
//! as fallback). Counted: every DynamoDB and SQS call the router, the push function's
//! jobs and the window's checks make (what Lambda's event source mapping does, receiving
//! and deleting messages, is not Flare's and is not counted). The SMS and email jobs the
//! window enqueues are counted as enqueued, not delivered: sending them is the point.
//!
//!     cargo bench -p flare-tests --bench window_calls [-- 100]

use flare_aws::dynamodb::{DynamoDirectory, DynamoSettings};
use flare_aws::log::DynamoDeliveryLog;
use flare_aws::sqs::SqsQueue;
use flare_shared::app::deliver::{Deliverer, lease_for};
use flare_shared::app::notify::Notifier;
use flare_shared::domain::*;
use flare_shared::ports::{DeliveryLog, NoMetrics, PushMessage, PushSender, Receipt, SendError};
use flare_tests::fanout::{CallCounter, counted_clients, seed_with};
use flare_tests::stack::AwsStack;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Every device takes the push (no SNS call: the stand-in answers).
struct OkPush;

#[async_trait::async_trait]
impl PushSender for OkPush {
    async fn send(&self, _: &PushMessage) -> Result<Receipt, SendError> {
        Ok(Receipt {
            provider: Provider::Sns,
            provider_message_id: Some("m".into()),
        })
    }
}

struct Counted {
    routing: BTreeMap<String, u64>,
    delivery: BTreeMap<String, u64>,
    checks_run: u64,
}

async fn run(stack: &AwsStack, n: usize, window: u32) -> Counted {
    let comm = CommunicationSettings {
        dispatch: Method::AppThenSmsEmail,
        app_fallback_seconds: window,
        ..Default::default()
    };
    let event = seed_with(stack, n, &comm).await.unwrap();
    let event = IncidentEvent::from_value(event).unwrap();
    let sdk = &stack.sdk;
    let tables = &stack.tables;
    let routing = CallCounter::default();
    let (db, sqs) = counted_clients(sdk, None, &routing);
    let notifier = Notifier {
        settings: Arc::new(DynamoSettings::new(db.clone(), &tables.settings)),
        directory: Arc::new(DynamoDirectory::new(db.clone(), &tables.directory)),
        log: Arc::new(DynamoDeliveryLog::new(db, &tables.log)),
        queue: Arc::new(SqsQueue::new(sqs, stack.queues.clone())),
        metrics: Arc::new(NoMetrics),
        page_size: flare_shared::app::notify::ROUTE_PAGE,
    };
    notifier.route(&event).await.unwrap();

    let delivery = CallCounter::default();
    let (db, sqs) = counted_clients(sdk, None, &delivery);
    let deliverer = Deliverer {
        log: Arc::new(DynamoDeliveryLog::new(db.clone(), &tables.log)),
        queue: Some(Arc::new(SqsQueue::new(sqs, stack.queues.clone()))),
        directory: Arc::new(DynamoDirectory::new(db.clone(), &tables.directory)),
        settings: Arc::new(DynamoSettings::new(db, &tables.settings)),
        push: Some(Arc::new(OkPush)),
        sms: Default::default(),
        email: Default::default(),
        default_sender: None,
        metrics: Arc::new(NoMetrics),
        failover: None,
        pacer: None,
        sns_per_second: None,
        max_pace_wait: None,
        links: None,
    };
    // The push function's side: receive (not counted), handle, delete (not counted),
    // until nothing is held any more.
    let plain = flare_aws::sqs(sdk);
    // A dispatch's timers wait in the urgent lane.
    let push_queue = &stack.queues[&(Channel::Push, Lane::Urgent)];
    let uncounted_log = DynamoDeliveryLog::new(flare_aws::dynamodb(sdk), &tables.log);
    let mut checks_run = 0;
    for _ in 0..400 {
        let out = plain
            .receive_message()
            .queue_url(push_queue)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        let messages = out.messages.unwrap_or_default();
        for m in &messages {
            match QueuedWork::parse(m.body().unwrap()).unwrap() {
                QueuedWork::Job(job) => {
                    deliverer
                        .deliver(&job, false, lease_for(Duration::from_secs(20)))
                        .await
                        .unwrap();
                }
                QueuedWork::Check(check) => {
                    checks_run += 1;
                    deliverer
                        .check_and_reschedule(&check, chrono::Utc::now())
                        .await
                        .unwrap();
                }
            }
            plain
                .delete_message()
                .queue_url(push_queue)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        if messages.is_empty() {
            let logged = uncounted_log
                .get_notification(&event.org_id, &event.notification_id)
                .await
                .unwrap()
                .unwrap();
            if logged.records.iter().all(|r| {
                r.status != DeliveryStatus::Pending
                    || r.channel != Channel::Push && !r.awaiting_push
            }) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Counted {
        routing: routing.counts(),
        delivery: delivery.counts(),
        checks_run,
    }
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stack = AwsStack::create(flare_tests::moto()).await.unwrap();
        println!("{n} responders, every push accepted, every phone silent; AWS calls counted on moto:");
        let mut totals = Vec::new();
        for window in [0, 1] {
            let c = run(&stack, n, window).await;
            let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
            println!(
                "  window {window} s: routing {} calls {:?}; push jobs and checks {} calls {:?}; {} check runs",
                total(&c.routing),
                c.routing,
                total(&c.delivery),
                c.delivery,
                c.checks_run
            );
            totals.push((total(&c.routing) + total(&c.delivery), c));
        }
        let extra = totals[1].0 as f64 - totals[0].0 as f64;
        println!(
            "  the window adds {extra} calls for {n} recipients: {:.2} per recipient",
            extra / n as f64
        );
    });
}
