//! The fault-injection benchmark in the local runner: a dispatch under
//! `app_then_sms_email` to N responders (10,000 by default) through a real HTTP SMS
//! gateway and a real SMTP server that fail 5% of the time (5xx; a 4xx temporary
//! refusal for SMTP, whose 5xx is permanent) and hang past Flare's timeouts 1% of the
//! time, 2% of the jobs handed over twice by the queue, and a crash between the
//! provider's answer and the `sent` write on 2% of each channel's recipients. A crashed
//! job's task is gone, as it would be if the process died; once everything else is
//! settled the runner is stopped and opened again on the same database (as a restart
//! of `serve` does), which resumes what was left.
//!
//!     cargo bench -p flare-local --bench faults [-- 10000]
//!
//! Prints a JSON report: outcomes per channel, faults injected, how many times each
//! provider accepted each (recipient, channel), the elapsed time of both runs.
//!
//! A quarter of the responders have a working device (push sent, SMS and email
//! skipped), a quarter one whose push fails (SMS and email as fallback), half none.

use flare_local::{LocalApp, LocalConfig};
use flare_shared::domain::*;
use flare_shared::ports::SendError;
use flare_tests::fanout::responder;
use flare_tests::faults::{crash_slots, index_of};
use flare_tests::{Gateway, SmtpSink};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Past the gateway's 10 s and the SMTP session's 20 s timeouts.
const HANG: Duration = Duration::from_secs(22);

/// Jobs handed over twice: index mod 100 in this set (2%), away from the crash slots.
const DUPLICATE_SLOTS: [usize; 2] = [3, 41];

fn endpoint(i: usize) -> String {
    format!("local:fcm:bench-{i}")
}

async fn seed(app: &LocalApp, n: usize, gateway: &Gateway, path: &str, smtp: &SmtpSink) {
    let org = OrgId::parse("bench").unwrap();
    flare_tests::faults::configure_providers(
        &app.services,
        &org,
        &format!("{}{path}", gateway.url),
        smtp.port,
    )
    .await
    .unwrap();
    for i in 0..n {
        let mut u = responder(i, endpoint(i));
        if i % 4 >= 2 {
            u.devices.clear();
        }
        if i % 4 == 1 {
            app.outbox.fail_next(
                &endpoint(i),
                SendError::permanent(FailReason::EndpointDisabled),
            );
        }
        app.services.directory.put_user(&org, &u).await.unwrap();
    }
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    assert!(n.is_multiple_of(100), "a multiple of 100 responders");
    let dir = std::env::temp_dir().join(format!("flare-faults-{}", uuid::Uuid::new_v4()));
    let cfg = LocalConfig::from_env(dir.clone()).unwrap();
    let org = OrgId::parse("bench").unwrap();
    let gateway = Gateway::start().unwrap();
    let path = "/send";
    let smtp = SmtpSink::start_faulty(0.05, 0.01, HANG).unwrap();

    // Injected crashes are panics; their messages would bury the output.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !format!("{info}").contains(flare_shared::faults::MARKER) {
            default_hook(info)
        }
    }));
    let crashed: Arc<Mutex<HashSet<(Channel, usize)>>> = Arc::default();
    {
        let crashed = crashed.clone();
        flare_shared::faults::set_crash_after_send(Some(Arc::new(move |job: &DeliveryJob| {
            let Some(i) = index_of(job) else { return false };
            crash_slots(job.channel).contains(&(i % 100))
                && crashed.lock().unwrap().insert((job.channel, i))
        })));
    }
    let duplicated: Arc<Mutex<HashSet<(Channel, usize)>>> = Arc::default();
    {
        let duplicated = duplicated.clone();
        flare_shared::faults::set_duplicate_job(Some(Arc::new(move |job: &DeliveryJob| {
            let Some(i) = index_of(job) else { return false };
            DUPLICATE_SLOTS.contains(&(i % 100))
                && duplicated.lock().unwrap().insert((job.channel, i))
        })));
    }

    let event_id = format!("faults-{}", uuid::Uuid::new_v4().simple());
    let notification_id = NotificationId::parse(&event_id).unwrap();
    // The first run: everything but the crashed jobs settles.
    let first = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    let first_run = first.block_on(async {
        let app = LocalApp::open(&cfg).await.unwrap();
        gateway.faults(path, 0.05, 0.01, HANG).await.unwrap();
        seed(&app, n, &gateway, path, &smtp).await;
        let seeded = started.elapsed();
        let ids: Vec<String> = (0..n).map(|i| format!("u-{i:06}")).collect();
        let event = IncidentEvent::from_value(json!({
            "id": event_id, "detail-type": "Incident Dispatched",
            "source": "flare.incidents", "time": "2026-11-27T10:00:00Z",
            "detail": {"org_id": "bench", "control_center_id": "main", "incident_id": "inc-1",
                       "recipient_ids": ids, "message": {"title": "Fire", "body": "Engine 7."}}
        }))
        .unwrap();
        let start = Instant::now();
        app.notifier.route(&event).await.unwrap();
        // Settled but for the crashed jobs: each crashed record stays pending, and so
        // do the SMS and email held behind a crashed push.
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let left = app.db.pending_count(&org, &notification_id).unwrap();
            let c = crashed.lock().unwrap();
            let expected = c.len() + 2 * c.iter().filter(|(ch, _)| *ch == Channel::Push).count();
            if left as usize == expected && start.elapsed() > Duration::from_secs(1) {
                break;
            }
        }
        (seeded, start.elapsed())
    });
    // The "process" dies: its tasks (the crashed jobs' among them) go with it.
    first.shutdown_timeout(Duration::from_secs(1));

    let second = tokio::runtime::Runtime::new().unwrap();
    let (second_run, report) = second.block_on(async {
        let start = Instant::now();
        let app = LocalApp::open(&cfg).await.unwrap();
        while app.db.pending_count(&org, &notification_id).unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let second_run = start.elapsed();
        let logged = app
            .services
            .log
            .get_notification(&org, &notification_id)
            .await
            .unwrap()
            .unwrap();
        let mut outcomes: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
        let mut failed_without_reason = 0;
        for r in &logged.records {
            let status = serde_json::to_value(r.status).unwrap();
            let key = match (&r.reason, r.status) {
                (_, DeliveryStatus::Sent) => "sent".to_string(),
                (Some(reason), _) => format!("{}: {reason}", status.as_str().unwrap()),
                (None, _) => status.as_str().unwrap().to_string(),
            };
            *outcomes
                .entry(r.channel.as_str())
                .or_default()
                .entry(key)
                .or_default() += 1;
            if r.status == DeliveryStatus::Failed && r.reason.is_none() {
                failed_without_reason += 1;
            }
        }
        // What each provider accepted, per (recipient, channel).
        let mut accepted: HashMap<(Channel, usize), u64> = HashMap::new();
        let mut keys: HashMap<(Channel, usize), HashSet<String>> = HashMap::new();
        let (mut gw_5xx, mut gw_hangs) = (0, 0);
        let requests = gateway.requests_to(path).await.unwrap();
        for r in &requests {
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            let i: usize = body["to"].as_str().unwrap()[5..].parse().unwrap();
            keys.entry((Channel::Sms, i))
                .or_default()
                .insert(r["headers"]["idempotency-key"].as_str().unwrap_or("").into());
            match &r["status"] {
                Value::Number(s) if s.as_u64() == Some(200) => {
                    *accepted.entry((Channel::Sms, i)).or_default() += 1
                }
                Value::String(_) => gw_hangs += 1,
                _ => gw_5xx += 1,
            }
        }
        let mail = smtp.messages().unwrap();
        for m in &mail {
            let to = m["rcpt_tos"][0].as_str().unwrap();
            let i: usize = to[1..to.find('@').unwrap()].parse().unwrap();
            *accepted.entry((Channel::Email, i)).or_default() += 1;
            let id = m["data"]
                .as_str()
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("Message-ID: "))
                .unwrap_or("")
                .to_string();
            keys.entry((Channel::Email, i)).or_default().insert(id);
        }
        for e in app.outbox.entries().await.unwrap() {
            if e.channel == Channel::Push && e.notification_id == notification_id {
                let i: usize = e.to.rsplit('-').next().unwrap().parse().unwrap();
                *accepted.entry((Channel::Push, i)).or_default() += 1;
            }
        }
        let crashed = crashed.lock().unwrap().clone();
        let mut per: BTreeMap<&str, BTreeMap<u64, u64>> = BTreeMap::new();
        let mut repeated_without_crash = 0;
        for ((c, i), k) in &accepted {
            *per.entry(c.as_str()).or_default().entry(*k).or_default() += 1;
            if *k > 1 && !crashed.contains(&(*c, *i)) {
                repeated_without_crash += 1;
            }
        }
        let keys_not_stable = keys
            .values()
            .filter(|k| k.len() != 1 || k.contains(""))
            .count();
        let mut crashes: BTreeMap<&str, u64> = BTreeMap::new();
        for (c, _) in &crashed {
            *crashes.entry(c.as_str()).or_default() += 1;
        }
        let (smtp_refusals, smtp_hangs) = smtp.fault_counts();
        let report = json!({
            "recipients": n,
            "records": logged.records.len(),
            "outcomes": outcomes,
            "pending": logged.records.iter().filter(|r| r.status == DeliveryStatus::Pending).count(),
            "failed_without_reason": failed_without_reason,
            "injected": {
                "gateway_5xx": gw_5xx, "gateway_hangs": gw_hangs,
                "smtp_refusals": smtp_refusals, "smtp_hangs": smtp_hangs,
                "duplicate_jobs": duplicated.lock().unwrap().len(),
                "crashes": crashes,
            },
            "accepted_per_delivery": per,
            "repeated_without_crash": repeated_without_crash,
            "keys_not_stable": keys_not_stable,
            "provider_calls": {"sms": requests.len(), "email": mail.len() as u64 + smtp_refusals + smtp_hangs},
        });
        (second_run, report)
    });
    let mut report = report;
    report["seconds"] = json!({
        "seeding": first_run.0.as_secs_f64(),
        "first_run_until_only_crashed_jobs_left": first_run.1.as_secs_f64(),
        "restart_until_nothing_pending": second_run.as_secs_f64(),
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}
