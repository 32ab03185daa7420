//! The fault-injection scenario on moto, shared by the test (`tests/faults.rs`, 500
//! recipients) and the benchmark (`benches/faults.rs`, 2,000).
//!
//! A dispatch under `app_then_sms_email` to N responders: a quarter with a working
//! device (push goes, SMS and email are skipped), a quarter whose device SNS has
//! disabled (push fails, SMS and email go as fallback), half with no device (SMS and
//! email at once). SMS goes through a real HTTP gateway, email through a real SMTP
//! server, and both misbehave: 5% server errors (5xx from the gateway; SMTP's
//! equivalent, a 4xx temporary refusal, since SMTP's 5xx is a permanent rejection) and
//! 1% hangs past the invocation's deadline. Between them the pipeline runs as Lambda
//! would: several concurrent pollers per queue, each batch handled with a deadline,
//! failed messages left to the queue's visibility timeout (longer than a claim's
//! lease, as in the template), retries delayed by the function. On top of that, 2% of
//! the jobs are delivered twice by the "queue", and on about 2% of the recipients of
//! each channel the attempt crashes between the provider's answer and the `sent` write
//! (the fault-injection feature's hook), so that job is redelivered and sent again.
//! The queues' dead-letter queues are polled too, by the same functions.

use crate::deployment::Deployment;
use aws_lambda_events::event::sqs::SqsEvent;
use flare_aws as aws;
use flare_shared::domain::{Channel, DeliveryJob, DeliveryStatus, Lane};
use flare_shared::ports::DeliveryLog;
use flare_shared::{NotificationId, OrgId};
use flare_tests::faults::{crash_slots, index_of};
use flare_tests::stack::AwsStack;
use flare_tests::{Gateway, SmtpSink, moto, unique};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The invocation deadline each batch gets (the template's function timeout is 20 s;
/// scaled down so a hang or a crash costs seconds, not minutes). Not tighter: on a
/// loaded machine moto answers slowly, and a send cut off by the deadline after its
/// provider took it is sent again on redelivery, as after a crash (5 s did that to one
/// push in a CI run beside the emulator's tests).
pub const DEADLINE: Duration = Duration::from_secs(8);
/// How long the faulty servers hang: past what the deadline leaves an attempt.
pub const HANG: Duration = Duration::from_secs(8);
/// The queues' visibility timeout: longer than a claim's lease (`lease_for`: the
/// attempt's time plus 5 s, so at most 12 s here), as 120 s is longer than 25 s in the
/// template.
pub const VISIBILITY: u32 = 14;
/// Concurrent "Lambda instances" polling each channel's queue.
pub const POLLERS: usize = 2;
pub const ERROR_RATE: f64 = 0.05;
pub const HANG_RATE: f64 = 0.01;
/// One job in this many is delivered twice.
pub const DUPLICATE_ONE_IN: u64 = 50;

/// What happened, for the test's assertions and the benchmark's figures.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub recipients: usize,
    pub elapsed_s: f64,
    /// status (and reason, for failed and skipped) -> count, per channel.
    pub outcomes: BTreeMap<String, BTreeMap<String, u64>>,
    pub pending: u64,
    pub failed_without_reason: u64,
    pub injected: Injected,
    /// Per channel: how many (recipient, channel) the provider accepted once, twice, ...
    pub accepted_per_delivery: BTreeMap<String, BTreeMap<u64, u64>>,
    /// Per channel: (recipient, channel) accepted more than once with no crash
    /// injected after its send and no attempt cut off by the deadline: must be none.
    pub repeated_without_crash: BTreeMap<String, u64>,
    /// Per channel: (recipient, channel) accepted more than once after an attempt of
    /// theirs was cut off by the invocation's deadline (on a loaded machine, after the
    /// provider took it and before the `sent` write: a crash by another name, which
    /// docs/delivery.md allows). Reported, not asserted.
    pub repeated_after_cut_off: BTreeMap<String, u64>,
    /// Per channel: (recipient, channel) chosen to crash after their send that the
    /// provider did not see again (must be none: the record said pending, so the job
    /// was sent again).
    pub crashed_not_resent: BTreeMap<String, u64>,
    /// Per channel: (recipient, channel) whose attempts carried more than one
    /// idempotency key (gateway) or Message-ID (SMTP): must be 0.
    pub keys_not_stable: BTreeMap<String, u64>,
    /// Calls the providers received, failed ones included.
    pub provider_calls: BTreeMap<String, u64>,
    /// Batches handed to functions, and messages in them.
    pub batches: u64,
    pub messages: u64,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Injected {
    pub gateway_5xx: u64,
    pub gateway_hangs: u64,
    pub smtp_refusals: u64,
    pub smtp_hangs: u64,
    pub duplicate_jobs: u64,
    /// Crashes between the provider's answer and the `sent` write, per channel.
    pub crashes: BTreeMap<String, u64>,
}

struct World {
    deployment: Deployment,
    org: OrgId,
    gateway: Gateway,
    gateway_path: String,
    smtp: SmtpSink,
    /// Endpoint ARN -> recipient index.
    endpoints: HashMap<String, usize>,
    /// The jobs (body hashes) already delivered twice.
    duplicated: Mutex<HashSet<u64>>,
    /// (channel, recipient index) of jobs a function returned unfinished from a batch
    /// that ran to its deadline: possibly cut off after their provider took them.
    cut_off: Mutex<HashSet<(Channel, usize)>>,
}

pub async fn run(recipients: usize) -> anyhow::Result<Report> {
    anyhow::ensure!(
        recipients.is_multiple_of(100),
        "a multiple of 100 recipients"
    );
    let deployment = Deployment::start(VISIBILITY).await?;
    let gateway = Gateway::start()?;
    let gateway_path = format!("/{}", unique("send"));
    gateway
        .faults(&gateway_path, ERROR_RATE, HANG_RATE, HANG)
        .await?;
    let smtp = SmtpSink::start_faulty(ERROR_RATE, HANG_RATE, HANG)?;
    let org = OrgId::parse(&unique("faults"))?;
    flare_tests::faults::configure_providers(
        &deployment.services,
        &org,
        &format!("{}{}", gateway.url, gateway_path),
        smtp.port,
    )
    .await?;
    let endpoints = seed_users(&deployment.stack, &org, recipients).await?;
    let world = Arc::new(World {
        deployment,
        org,
        gateway,
        gateway_path,
        smtp,
        endpoints,
        duplicated: Mutex::default(),
        cut_off: Mutex::default(),
    });

    // Injected crashes are panics; their messages would bury the output.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = format!("{info}");
        if !text.contains(flare_shared::faults::MARKER) {
            default_hook(info)
        }
    }));
    // The crash point: once per chosen (recipient, channel) of this organization.
    let crashed: Arc<Mutex<HashSet<(Channel, usize)>>> = Arc::default();
    {
        let crashed = crashed.clone();
        let org = world.org.clone();
        flare_shared::faults::set_crash_after_send(Some(Arc::new(move |job: &DeliveryJob| {
            let Some(i) = index_of(job) else { return false };
            job.org_id == org
                && crash_slots(job.channel).contains(&(i % 100))
                && crashed.lock().unwrap().insert((job.channel, i))
        })));
    }

    let started = Instant::now();
    let event = json!({
        "version": "0", "id": unique("evt"), "detail-type": "Incident Dispatched",
        "source": "flare.incidents", "time": "2026-11-27T16:00:00Z",
        "detail": {"org_id": world.org, "control_center_id": "main", "incident_id": "inc-faults",
                   "recipient_ids": (0..recipients).map(user_id).collect::<Vec<_>>(),
                   "message": {"title": "Structure fire", "body": "All units respond."}}
    });
    let routed = world.deployment.route(&event).await?;
    let notification_id = NotificationId::parse(event["id"].as_str().unwrap_or_default())?;
    println!("routed: {routed:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new((AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)));
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
    let log = flare_aws::log::DynamoDeliveryLog::new(
        aws::dynamodb(&world.deployment.stack.sdk),
        &world.deployment.stack.tables.log,
    );
    // Until every queue (dead-letter queues too) is empty and nothing is pending. The
    // notification is read only once the queues are empty: a Query of thousands of
    // records takes moto seconds, and moto serves one request at a time.
    let limit = Duration::from_secs(
        std::env::var("FLARE_FAULTS_LIMIT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(120 + recipients as u64 / 5),
    );
    let mut last_report = Instant::now();
    let logged = loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let queued = world.deployment.queued().await?;
        let mut pending = None;
        if queued == 0 {
            let logged = log
                .get_notification(&world.org, &notification_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("the notification was not recorded"))?;
            let n = logged
                .records
                .iter()
                .filter(|r| r.status == DeliveryStatus::Pending)
                .count();
            if n == 0 {
                break logged;
            }
            pending = Some(n);
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "{:>5.1}s: {queued} queued, {} batches, pending {pending:?}",
                started.elapsed().as_secs_f64(),
                counters.1.load(Ordering::SeqCst),
            );
        }
        if started.elapsed() > limit {
            stop.store(true, Ordering::SeqCst);
            dump(&world, &log, &notification_id).await;
            anyhow::bail!(
                "after {:?}: {queued} messages queued, pending {pending:?}",
                started.elapsed()
            );
        }
    };
    let elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    for p in pollers {
        p.await??;
    }
    flare_shared::faults::set_crash_after_send(None);

    let mut report = Report {
        recipients,
        elapsed_s: elapsed.as_secs_f64(),
        batches: counters.1.load(Ordering::SeqCst),
        messages: counters.2.load(Ordering::SeqCst),
        ..Default::default()
    };
    report.injected.duplicate_jobs = counters.0.load(Ordering::SeqCst);
    let crashed = crashed.lock().unwrap().clone();
    for (channel, _) in &crashed {
        *report
            .injected
            .crashes
            .entry(channel.as_str().into())
            .or_default() += 1;
    }
    for r in &logged.records {
        let key = match (&r.status, &r.reason) {
            (DeliveryStatus::Sent, _) => "sent".to_string(),
            (s, Some(reason)) => format!("{}: {reason}", status_name(*s)),
            (s, None) => status_name(*s).to_string(),
        };
        *report
            .outcomes
            .entry(r.channel.as_str().into())
            .or_default()
            .entry(key)
            .or_default() += 1;
        if r.status == DeliveryStatus::Pending {
            report.pending += 1;
        }
        if r.status == DeliveryStatus::Failed && r.reason.as_deref().unwrap_or("").is_empty() {
            report.failed_without_reason += 1;
        }
    }

    // What the providers saw, per (recipient, channel).
    let mut accepted: HashMap<(Channel, usize), u64> = HashMap::new();
    let mut keys: HashMap<(Channel, usize), HashSet<String>> = HashMap::new();
    let requests = world.gateway.requests_to(&world.gateway_path).await?;
    report
        .provider_calls
        .insert("sms".into(), requests.len() as u64);
    for r in &requests {
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap_or("{}"))?;
        let i = phone_index(body["to"].as_str().unwrap_or_default())?;
        keys.entry((Channel::Sms, i)).or_default().insert(
            r["headers"]["idempotency-key"]
                .as_str()
                .unwrap_or("")
                .into(),
        );
        match &r["status"] {
            Value::Number(n) if n.as_u64() == Some(200) => {
                *accepted.entry((Channel::Sms, i)).or_default() += 1
            }
            Value::String(s) if s == "hang" => report.injected.gateway_hangs += 1,
            _ => report.injected.gateway_5xx += 1,
        }
    }
    let mail = world.smtp.messages()?;
    let (refused, hung) = world.smtp.fault_counts();
    report.injected.smtp_refusals = refused;
    report.injected.smtp_hangs = hung;
    report
        .provider_calls
        .insert("email".into(), mail.len() as u64 + refused + hung);
    for m in &mail {
        let i = email_index(m["rcpt_tos"][0].as_str().unwrap_or_default())?;
        *accepted.entry((Channel::Email, i)).or_default() += 1;
        let data = m["data"].as_str().unwrap_or_default();
        let id = data
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: "))
            .unwrap_or("")
            .to_string();
        keys.entry((Channel::Email, i)).or_default().insert(id);
    }
    let endpoints_seen = moto().model("sns", "PlatformEndpoint").await?;
    let mut pushes = 0;
    for e in endpoints_seen.as_array().into_iter().flatten() {
        let Some(&i) = e["arn"].as_str().and_then(|a| world.endpoints.get(a)) else {
            continue;
        };
        let n = e["messages"].as_object().map_or(0, |m| m.len()) as u64;
        pushes += n;
        if n > 0 {
            *accepted.entry((Channel::Push, i)).or_default() += n;
        }
    }
    report.provider_calls.insert("push".into(), pushes);
    for ((channel, i), n) in &accepted {
        *report
            .accepted_per_delivery
            .entry(channel.as_str().into())
            .or_default()
            .entry(*n)
            .or_default() += 1;
        let cut_off = world.cut_off.lock().unwrap().contains(&(*channel, *i));
        if *n > 1 && cut_off && !crashed.contains(&(*channel, *i)) {
            *report
                .repeated_after_cut_off
                .entry(channel.as_str().into())
                .or_default() += 1;
        } else if *n > 1 && !crashed.contains(&(*channel, *i)) {
            *report
                .repeated_without_crash
                .entry(channel.as_str().into())
                .or_default() += 1;
        }
    }
    for key @ (channel, _) in &crashed {
        if accepted.get(key).copied().unwrap_or(0) < 2 {
            *report
                .crashed_not_resent
                .entry(channel.as_str().into())
                .or_default() += 1;
        }
    }
    for ((channel, _), k) in &keys {
        let entry = report
            .keys_not_stable
            .entry(channel.as_str().into())
            .or_default();
        if k.len() != 1 || k.contains("") {
            *entry += 1;
        }
    }
    Ok(report)
}

fn status_name(s: DeliveryStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn user_id(i: usize) -> String {
    format!("u-{i:06}")
}

fn phone_index(to: &str) -> anyhow::Result<usize> {
    // responder(i): +1415 and i in seven digits.
    Ok(to
        .strip_prefix("+1415")
        .ok_or_else(|| anyhow::anyhow!("unexpected number {to}"))?
        .parse()?)
}

fn email_index(to: &str) -> anyhow::Result<usize> {
    Ok(to
        .strip_prefix('r')
        .and_then(|s| s.strip_suffix("@acme.example"))
        .ok_or_else(|| anyhow::anyhow!("unexpected address {to}"))?
        .parse()?)
}

/// The users, and an FCM endpoint for each device (index mod 4: 0 working, 1 disabled,
/// 2 and 3 none). Answers endpoint ARN -> index.
async fn seed_users(
    stack: &AwsStack,
    org: &OrgId,
    n: usize,
) -> anyhow::Result<HashMap<String, usize>> {
    use futures::StreamExt;
    let sns = aws::sns(&stack.sdk);
    let app = stack
        .platform_apps
        .fcm
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no FCM platform application"))?;
    let with_device: Vec<usize> = (0..n).filter(|i| i % 4 < 2).collect();
    let created: Vec<anyhow::Result<(usize, String)>> = futures::stream::iter(with_device)
        .map(|i| {
            let (sns, app) = (sns.clone(), app.clone());
            async move {
                let arn = sns
                    .create_platform_endpoint()
                    .platform_application_arn(app)
                    .token(unique(&format!("tok-{i}")))
                    .send()
                    .await?
                    .endpoint_arn
                    .unwrap_or_default();
                if i % 4 == 1 {
                    sns.set_endpoint_attributes()
                        .endpoint_arn(&arn)
                        .attributes("Enabled", "false")
                        .send()
                        .await?;
                }
                Ok((i, arn))
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let endpoints: HashMap<usize, String> = created.into_iter().collect::<Result<_, _>>()?;
    let users: Vec<_> = (0..n)
        .map(|i| {
            let mut u =
                flare_tests::fanout::responder(i, endpoints.get(&i).cloned().unwrap_or_default());
            if !endpoints.contains_key(&i) {
                u.devices.clear();
            }
            u
        })
        .collect();
    flare_aws::dynamodb::DynamoDirectory::new(aws::dynamodb(&stack.sdk), &stack.tables.directory)
        .put_users(org, &users)
        .await?;
    Ok(endpoints.into_iter().map(|(i, arn)| (arn, i)).collect())
}

/// One "Lambda instance" on a queue: receive a batch, maybe hand a job over twice (the
/// first receive of one job in [`DUPLICATE_ONE_IN`]), invoke the function with the
/// deadline, delete what it did not return.
async fn poll(
    world: Arc<World>,
    channel: Channel,
    dead: bool,
    stop: Arc<AtomicBool>,
    counters: Arc<(AtomicU64, AtomicU64, AtomicU64)>,
) -> anyhow::Result<()> {
    use aws_sdk_sqs::types::MessageSystemAttributeName;
    use std::hash::{Hash, Hasher};
    let sqs = aws::sqs(&world.deployment.stack.sdk);
    let url = if dead {
        &world.deployment.stack.dlqs[&(channel, Lane::Urgent)]
    } else {
        &world.deployment.stack.queues[&(channel, Lane::Urgent)]
    };
    while !stop.load(Ordering::SeqCst) {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            // Empty polls cost moto (one request at a time) what the jobs need.
            tokio::time::sleep(Duration::from_millis(400)).await;
            continue;
        }
        if !dead {
            for m in &messages {
                let first = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .is_some_and(|c| c == "1");
                let mut h = std::collections::hash_map::DefaultHasher::new();
                m.body().hash(&mut h);
                let h = h.finish();
                // Each chosen job once: the copy has the same body.
                if first
                    && h.is_multiple_of(DUPLICATE_ONE_IN)
                    && world.duplicated.lock().unwrap().insert(h)
                {
                    sqs.send_message()
                        .queue_url(url)
                        .message_body(m.body().unwrap_or_default())
                        .send()
                        .await?;
                    counters.0.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        let mut event = flare_tests::queues::sqs_event(&messages);
        if dead {
            for r in event["Records"].as_array_mut().into_iter().flatten() {
                r["eventSourceARN"] =
                    json!(world.deployment.stack.dlq_arns[&(channel, Lane::Urgent)]);
            }
        }
        let event: SqsEvent = serde_json::from_value(event)?;
        counters.1.fetch_add(1, Ordering::SeqCst);
        counters
            .2
            .fetch_add(messages.len() as u64, Ordering::SeqCst);
        let invoked = Instant::now();
        let failed: Vec<String> = world.deployment.functions[&channel]
            .handle_until(event, SystemTime::now() + DEADLINE)
            .await
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        // The function cuts its jobs off ANSWER_MARGIN before the deadline.
        if invoked.elapsed() >= DEADLINE.saturating_sub(flare_lambda::ANSWER_MARGIN) {
            let mut cut_off = world.cut_off.lock().unwrap();
            for m in messages.iter() {
                if failed.iter().any(|f| Some(f.as_str()) == m.message_id())
                    && let Some(job) = m
                        .body()
                        .and_then(|b| serde_json::from_str::<DeliveryJob>(b).ok())
                    && let Some(i) = index_of(&job)
                {
                    cut_off.insert((job.channel, i));
                }
            }
        }
        flare_tests::queues::delete_done(&sqs, url, &messages, &failed).await?;
    }
    Ok(())
}

/// What is left, when the scenario does not finish: each queue's messages and the
/// records of their recipients.
async fn dump(world: &World, log: &flare_aws::log::DynamoDeliveryLog, id: &NotificationId) {
    use aws_sdk_sqs::types::MessageSystemAttributeName;
    let sqs = aws::sqs(&world.deployment.stack.sdk);
    let logged = log.get_notification(&world.org, id).await.ok().flatten();
    for (kind, queues) in [
        ("queue", &world.deployment.stack.queues),
        ("dlq", &world.deployment.stack.dlqs),
    ] {
        for (channel, url) in queues.iter() {
            let Ok(out) = sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .visibility_timeout(0)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
            else {
                continue;
            };
            for m in out.messages.unwrap_or_default() {
                let job: Option<DeliveryJob> = m.body().and_then(|b| serde_json::from_str(b).ok());
                let receives = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .cloned();
                let records: Vec<_> = match (&job, &logged) {
                    (Some(j), Some(l)) => l
                        .records
                        .iter()
                        .filter(|r| r.recipient == j.recipient)
                        .map(|r| {
                            format!(
                                "{:?}",
                                (
                                    r.channel,
                                    r.status,
                                    &r.reason,
                                    r.attempts,
                                    r.awaiting_push,
                                    r.claimed_until
                                )
                            )
                        })
                        .collect(),
                    _ => vec![],
                };
                eprintln!(
                    "{kind} {} {}: receives {receives:?} job {:?} records {records:?}",
                    channel.0.as_str(),
                    channel.1.as_str(),
                    job.as_ref()
                        .map(|j| (j.recipient.key(), j.channel, j.fallback)),
                );
            }
        }
    }
}
