//! Escalation at size on moto, shared by the test (`tests/faults.rs`, 300 recipients in
//! pages of 100) and the benchmark (`benches/faults.rs --escalation`, 3,000 in pages of
//! 250: a page of the router's 1,000 is 3,000 conditional puts, about 24 s of moto's
//! one-request-at-a-time, where DynamoDB takes them side by side in well under one).
//!
//! An all-call (`audience: all`) under `app_then_sms_email` with a long fallback window
//! and escalation, to N silent responders: a quarter have a working device (push sent,
//! their SMS held behind it until a cycle ends it `escalated`), the others none (SMS at
//! once). Nobody acknowledges, so every cycle reaches everyone. SMS goes through a real
//! HTTP gateway. Pollers run the functions as Lambda would, each batch with a deadline,
//! and the first run of every escalation page is cut off part-way (a deadline scaled
//! down to leave it 150 ms), so each cycle's pages are completed by their retries.

use crate::deployment::Deployment;
use aws_lambda_events::event::sqs::SqsEvent;
use flare_aws as aws;
use flare_shared::domain::{
    Channel, CheckJob, CheckKind, Contact, Contacts, DeliveryStatus, Lane, PhoneNumber,
};
use flare_shared::ports::DeliveryLog;
use flare_shared::{NotificationId, OrgId};
use flare_tests::{Gateway, moto, unique};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Each batch's deadline: the template's function timeout, not scaled down as in the
/// fault-injection scenario. moto serves one request at a time, and a page of 100 users
/// (about 300 conditional puts and 125 jobs) takes it several seconds while the jobs
/// already queued are being sent: an 8 s deadline cut route pages off again and again.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// What the first run of an escalation page is left: less than a page's work.
pub const CUT: Duration = Duration::from_millis(150);
/// Longer than a claim's lease under [`DEADLINE`] (its time plus 5 s), as in the template.
pub const VISIBILITY: u32 = 30;
pub const POLLERS: usize = 2;

#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub recipients: usize,
    /// Users per route page (the router's `page_size`).
    pub page: usize,
    pub after_seconds: u32,
    pub cycles: u32,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub recipients: usize,
    pub pages: u32,
    pub cycles: u32,
    pub elapsed_s: f64,
    /// "cycle N channel" -> status (and reason) -> records.
    pub outcomes: BTreeMap<String, BTreeMap<String, u64>>,
    pub pending: u64,
    /// Responders whose phone got another number of SMS than their cycles hold (cycle 0
    /// for those without a device, and each later cycle): index, got, wanted. Must be
    /// empty: each (recipient, SMS, cycle) sent once.
    pub sms_wrong: Vec<(usize, u64, u64)>,
    /// The same for the pushes to the working devices.
    pub push_wrong: Vec<(usize, u64, u64)>,
    /// Gateway requests that carried an idempotency key already seen (a delivery sent
    /// twice, under the same key): must be 0.
    pub repeated_keys: u64,
    pub gateway_requests: u64,
    /// Escalation pages whose first run was cut off unfinished, and page runs in all.
    pub pages_cut_short: u64,
    pub page_runs: u64,
    pub batches: u64,
}

pub async fn run(size: Size) -> anyhow::Result<Report> {
    let Size {
        recipients: n,
        page,
        after_seconds,
        cycles,
    } = size;
    let mut deployment = Deployment::start(VISIBILITY).await?;
    deployment.notifier.page_size = page;
    let gateway = Gateway::start()?;
    let path = format!("/{}", unique("send"));
    let org = OrgId::parse(&unique("escalation"))?;
    for (route, body) in [
        (
            "/v1/settings/sms/main",
            json!({"provider": "http", "url": format!("{}{path}", gateway.url),
                   "format": "json", "password": "s3cret-pw", "sender_number": "ACMEFIRE"}),
        ),
        (
            "/v1/settings/communication",
            json!({"dispatch": "app_then_sms_email", "app_fallback_seconds": 900,
                   "dispatch_escalation": {"after_seconds": after_seconds, "cycles": cycles}}),
        ),
    ] {
        flare_tests::faults::admin_put(&deployment.services, &org, route, body).await?;
    }
    let endpoints = seed_users(&deployment, &org, n).await?;

    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(
        flare_tests::workspace_root().join("events/incidents/incident-dispatched-audience.json"),
    )?)?;
    event["id"] = json!(unique("evt"));
    let detail = &mut event["detail"];
    detail["org_id"] = json!(org);
    detail["control_center_id"] = json!("main");
    detail["audience"] = json!({"all": true});
    detail["recipient_ids"] = json!([]);
    let id = NotificationId::parse(event["id"].as_str().unwrap_or_default())?;

    let world = Arc::new(deployment);
    let stop = Arc::new(AtomicBool::new(false));
    let counters: Arc<Counters> = Arc::default();
    let started = Instant::now();
    world.route(&event).await?;
    let mut pollers = Vec::new();
    for channel in Channel::ALL {
        for dead in [false, true] {
            for _ in 0..if dead { 1 } else { POLLERS } {
                pollers.push(tokio::spawn(poll(
                    world.clone(),
                    channel,
                    dead,
                    stop.clone(),
                    counters.clone(),
                )));
            }
        }
    }
    // Until the last cycle is due, every queue is empty (its timers too) and nothing is
    // pending. The records are read only then: moto serves one request at a time.
    let last_due = Duration::from_secs(u64::from(after_seconds * cycles));
    let limit = Duration::from_secs(120 + n as u64 / 10) + last_due;
    let log = flare_aws::log::DynamoDeliveryLog::new(
        aws::dynamodb(&world.stack.sdk),
        &world.stack.tables.log,
    );
    let mut last_report = Instant::now();
    let logged = loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        // Visible or in flight (a fallback window's timer waits delayed for its 900 s:
        // what it held, the cycles have ended).
        let queued = world.queued().await?;
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "{:>5.1}s: {queued} queued, {} batches, {} page runs",
                started.elapsed().as_secs_f64(),
                counters.batches.load(Ordering::SeqCst),
                counters.page_runs.load(Ordering::SeqCst),
            );
        }
        if queued == 0 && started.elapsed() > last_due + Duration::from_secs(2) {
            let logged = log
                .get_notification(&org, &id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("the notification was not recorded"))?;
            if logged
                .records
                .iter()
                .all(|r| r.status != DeliveryStatus::Pending)
            {
                break logged;
            }
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "after {:?}: {queued} messages queued",
            started.elapsed()
        );
    };
    let elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    for p in pollers {
        p.await??;
    }

    let mut report = Report {
        recipients: n,
        pages: logged.notification.pages,
        cycles,
        elapsed_s: elapsed.as_secs_f64(),
        pages_cut_short: counters.cut_short.load(Ordering::SeqCst),
        page_runs: counters.page_runs.load(Ordering::SeqCst),
        batches: counters.batches.load(Ordering::SeqCst),
        ..Default::default()
    };
    for r in &logged.records {
        let status = serde_json::to_value(r.status)?;
        let key = match &r.reason {
            Some(reason) => format!("{} {reason}", status.as_str().unwrap_or_default()),
            None => status.as_str().unwrap_or_default().to_string(),
        };
        *report
            .outcomes
            .entry(format!("cycle {} {}", r.cycle, r.channel.as_str()))
            .or_default()
            .entry(key)
            .or_default() += 1;
        report.pending += u64::from(r.status == DeliveryStatus::Pending);
    }
    // What the gateway and SNS took, per responder.
    let requests = gateway.requests_to(&path).await?;
    report.gateway_requests = requests.len() as u64;
    let mut sms: HashMap<usize, u64> = HashMap::new();
    let mut keys: HashMap<String, u64> = HashMap::new();
    for r in &requests {
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap_or("{}"))?;
        let to = body["to"].as_str().unwrap_or_default();
        let i: usize = to
            .strip_prefix("+1415")
            .ok_or_else(|| anyhow::anyhow!("unexpected number {to}"))?
            .parse()?;
        *sms.entry(i).or_default() += 1;
        let key = r["headers"]["idempotency-key"].as_str().unwrap_or("");
        *keys.entry(key.to_string()).or_default() += 1;
    }
    report.repeated_keys = keys.values().map(|k| k - 1).sum();
    let cycles = u64::from(cycles);
    for i in 0..n {
        let want = if i % 4 == 0 { cycles } else { cycles + 1 };
        let got = sms.get(&i).copied().unwrap_or(0);
        if got != want {
            report.sms_wrong.push((i, got, want));
        }
    }
    let endpoints_seen = moto().model("sns", "PlatformEndpoint").await?;
    let mut pushes: HashMap<usize, u64> = HashMap::new();
    for e in endpoints_seen.as_array().into_iter().flatten() {
        if let Some(&i) = e["arn"].as_str().and_then(|a| endpoints.get(a)) {
            *pushes.entry(i).or_default() +=
                e["messages"].as_object().map_or(0, |m| m.len()) as u64;
        }
    }
    for i in (0..n).filter(|i| i % 4 == 0) {
        let got = pushes.get(&i).copied().unwrap_or(0);
        if got != cycles + 1 {
            report.push_wrong.push((i, got, cycles + 1));
        }
    }
    Ok(report)
}

/// Responder i: `u-<i>` with mobile +1415 and i in seven digits; every fourth (i mod 4
/// = 0) with a working FCM device, the others with none. Answers endpoint ARN -> i.
async fn seed_users(
    d: &Deployment,
    org: &OrgId,
    n: usize,
) -> anyhow::Result<HashMap<String, usize>> {
    let sns = aws::sns(&d.stack.sdk);
    let app = d
        .stack
        .platform_apps
        .fcm
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no FCM platform application"))?;
    let mut endpoints = HashMap::new();
    let mut users = Vec::with_capacity(n);
    for i in 0..n {
        let mut u = flare_tests::fanout::responder(i, String::new());
        u.contacts = Contacts::new(vec![Contact::Mobile {
            value: PhoneNumber::parse(&format!("+1415{i:07}"))?,
            primary: true,
        }])?;
        if i % 4 == 0 {
            let arn = sns
                .create_platform_endpoint()
                .platform_application_arn(&app)
                .token(unique(&format!("tok-{i}")))
                .send()
                .await?
                .endpoint_arn
                .unwrap_or_default();
            u.devices[0].endpoint = Some(arn.clone());
            endpoints.insert(arn, i);
        } else {
            u.devices.clear();
        }
        users.push(u);
    }
    flare_aws::dynamodb::DynamoDirectory::new(
        aws::dynamodb(&d.stack.sdk),
        &d.stack.tables.directory,
    )
    .put_users(org, &users)
    .await?;
    Ok(endpoints)
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    page_runs: AtomicU64,
    cut_short: AtomicU64,
}

/// An escalation page's check (a cycle's page, not its timer) received for the first
/// time.
fn first_page_run(m: &aws_sdk_sqs::types::Message) -> bool {
    use aws_sdk_sqs::types::MessageSystemAttributeName as A;
    let first = m
        .attributes()
        .and_then(|a| a.get(&A::ApproximateReceiveCount))
        .is_some_and(|c| c == "1");
    first && is_page(m)
}

fn is_page(m: &aws_sdk_sqs::types::Message) -> bool {
    m.body()
        .and_then(|b| serde_json::from_str::<CheckJob>(b).ok())
        .is_some_and(|c| c.check == CheckKind::Escalation && c.page > 0)
}

/// One "Lambda instance" on a channel's urgent queue (or its dead-letter queue): receive
/// a batch, invoke the function with the deadline, delete what it did not return. A
/// page's first run goes alone, with a deadline that cuts it off part-way.
async fn poll(
    world: Arc<Deployment>,
    channel: Channel,
    dead: bool,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    let sqs = aws::sqs(&world.stack.sdk);
    let key = (channel, Lane::Urgent);
    let url = if dead {
        &world.stack.dlqs[&key]
    } else {
        &world.stack.queues[&key]
    };
    while !stop.load(Ordering::SeqCst) {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            tokio::time::sleep(Duration::from_millis(400)).await;
            continue;
        }
        let (cut, whole): (Vec<_>, Vec<_>) = messages
            .into_iter()
            .partition(|m| !dead && first_page_run(m));
        let mut runs: Vec<(Vec<_>, Duration)> = cut
            .into_iter()
            .map(|m| (vec![m], flare_lambda::ANSWER_MARGIN + CUT))
            .collect();
        if !whole.is_empty() {
            runs.push((whole, DEADLINE));
        }
        for (batch, deadline) in runs {
            let short = deadline < DEADLINE;
            let pages = batch.iter().filter(|m| is_page(m)).count() as u64;
            let mut event = flare_tests::queues::sqs_event(&batch);
            if dead {
                for r in event["Records"].as_array_mut().into_iter().flatten() {
                    r["eventSourceARN"] = json!(world.stack.dlq_arns[&key]);
                }
            }
            let event: SqsEvent = serde_json::from_value(event)?;
            counters.batches.fetch_add(1, Ordering::SeqCst);
            counters.page_runs.fetch_add(pages, Ordering::SeqCst);
            let failed: Vec<String> = world.functions[&channel]
                .handle_until(event, SystemTime::now() + deadline)
                .await
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect();
            if short && !failed.is_empty() {
                counters.cut_short.fetch_add(1, Ordering::SeqCst);
                // Retried a second later rather than after the visibility timeout: that
                // the retry completes the page is the point, not when.
                for m in &batch {
                    sqs.change_message_visibility()
                        .queue_url(url)
                        .receipt_handle(m.receipt_handle().unwrap_or_default())
                        .visibility_timeout(1)
                        .send()
                        .await?;
                }
            }
            flare_tests::queues::delete_done(&sqs, url, &batch, &failed).await?;
        }
    }
    Ok(())
}
