//! An all-call (v1.2 `"audience": {"all": true}`) to every user of an organization of
//! N users, in two parts:
//!
//! 1. The local runner end to end (as `--bench dispatch`: each user with a device, a
//!    primary mobile and email, `app_then_sms_email`, no fallback window), timed from
//!    routing the event until every route page is routed and no record is pending; one
//!    run per size, each in a runner of its own. After each size, the process's peak
//!    resident memory so far (sizes run smallest first, so the peak after the largest is
//!    the largest's).
//! 2. The routing invocations, on the in-memory adapters (Flare's own work, no
//!    storage latency): the router's (resolve the audience a directory page at a time,
//!    write the plan, route the first page) and each route page's, the longest of them.
//!    Bounded means the same for 10,000 and 50,000 users.
//!
//!     cargo bench -p flare-local --bench allcall [-- 1000 10000 50000]

#[path = "support.rs"]
mod support;

use flare_shared::app::deliver::Deliverer;
use flare_shared::app::notify::{Notifier, ROUTE_PAGE};
use flare_shared::domain::*;
use flare_shared::ports::{Directory, SettingsStore};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn all_call(id: &str) -> IncidentEvent {
    IncidentEvent::from_value(serde_json::json!({
        "id": id, "detail-type": "Incident Dispatched",
        "source": "flare.incidents", "time": "2026-12-06T10:00:00Z",
        "detail": {"org_id": "bench", "control_center_id": "main", "incident_id": "inc-1",
                   "audience": {"all": true},
                   "message": {"title": "Mass-casualty incident", "body": "All off-duty responders to Station 3."}}
    }))
    .unwrap()
}

async fn seed(directory: &dyn Directory, n: usize) {
    let org = OrgId::parse("bench").unwrap();
    futures::stream::iter(0..n)
        .map(|i| {
            let org = &org;
            async move {
                let u = flare_tests::fanout::responder(i, format!("endpoint/{i}"));
                directory.put_user(org, &u).await.unwrap();
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<()>>()
        .await;
}

/// Part 1: the runner, from the event until nothing is pending.
async fn end_to_end(n: usize) -> Duration {
    let comm = CommunicationSettings {
        app_fallback_seconds: 0,
        ..Default::default()
    };
    let (app, cfg) = support::open(comm, 0).await;
    seed(app.services.directory.as_ref(), n).await;
    let org = OrgId::parse("bench").unwrap();
    let event = all_call(&format!("allcall-{n}"));
    let start = Instant::now();
    app.notifier.route(&event).await.unwrap();
    loop {
        let unrouted = app.db.unrouted_pages().unwrap().len();
        let pending = app.db.pending_count(&org, &event.notification_id).unwrap();
        if unrouted == 0 && pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    // Counted by the database, not read into memory (that would be the peak measured).
    let listed = app
        .services
        .log
        .list_notifications(&org, None, 1)
        .await
        .unwrap();
    let c = &listed[0].counts;
    let records = c.pending + c.sent + c.failed + c.skipped + c.delivered + c.undelivered;
    assert_eq!(records, 3 * n as u64, "every user on every channel: {c:?}");
    drop(app);
    let _ = std::fs::remove_dir_all(&cfg.data_dir);
    took
}

/// Part 2: the router's invocation and the longest route page's, on memory adapters.
async fn invocations(n: usize) -> (Duration, Duration, Duration, usize) {
    let org = OrgId::parse("bench").unwrap();
    let settings = Arc::new(flare_memory::MemorySettings::default());
    let directory = Arc::new(flare_memory::MemoryDirectory::default());
    let log = Arc::new(flare_memory::MemoryDeliveryLog::default());
    let queue = Arc::new(flare_memory::MemoryQueue::default());
    settings
        .put_sms(
            &org,
            &SmsSettings {
                control_center_id: ControlCenterId::main(),
                provider: SmsProvider::Sns,
                sender_number: None,
                password_set: false,
                secrets_at: None,
                smart_encoding: true,
                max_segments: 3,
            },
        )
        .await
        .unwrap();
    settings
        .put_communication(&org, &CommunicationSettings::default())
        .await
        .unwrap();
    seed(directory.as_ref(), n).await;
    let notifier = Notifier {
        settings: settings.clone(),
        directory: directory.clone(),
        log: log.clone(),
        queue: queue.clone(),
        metrics: Arc::new(flare_shared::ports::NoMetrics),
        page_size: ROUTE_PAGE,
    };
    let event = all_call(&format!("allcall-mem-{n}"));
    let start = Instant::now();
    notifier.route(&event).await.unwrap();
    let router = start.elapsed();
    let deliverer = Deliverer {
        log: log.clone(),
        queue: Some(queue.clone()),
        directory,
        settings,
        push: None,
        sms: Default::default(),
        email: Default::default(),
        default_sender: None,
        metrics: Arc::new(flare_shared::ports::NoMetrics),
        failover: None,
        pacer: None,
        sns_per_second: None,
        max_pace_wait: None,
        links: None,
    };
    let mut pages: Vec<Duration> = Vec::new();
    for (check, _) in queue.take_checks() {
        if check.check != CheckKind::RoutePage {
            continue;
        }
        let start = Instant::now();
        deliverer.check(&check, chrono::Utc::now()).await.unwrap();
        pages.push(start.elapsed());
        // Each invocation's jobs leave with it (SQS holds them, not the function).
        for c in Channel::ALL {
            while queue.pop(c).is_some() {}
        }
    }
    pages.sort();
    let longest = pages.last().copied().unwrap_or_default();
    let median = pages.get(pages.len() / 2).copied().unwrap_or_default();
    (router, longest, median, pages.len() + 1)
}

fn main() {
    let sizes = support::sizes(&[1_000, 10_000, 50_000]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut peaks = Vec::new();
    for &n in &sizes {
        let took = rt.block_on(end_to_end(n));
        let peak = support::rss_kib("VmHWM:").unwrap_or(0) as f64 / 1024.0;
        println!(
            "all-call to {n:>6} users (local runner): nothing pending after {:9.1} ms; peak resident memory so far {peak:.1} MiB",
            ms(took)
        );
        peaks.push((n, peak));
    }
    if let (Some((n1, p1)), Some((n2, p2))) = (
        peaks.iter().find(|(n, _)| *n == 10_000),
        peaks.iter().find(|(n, _)| *n == 50_000),
    ) {
        println!(
            "peak memory {n2} / {n1} users: {:.2} times ({p2:.1} / {p1:.1} MiB)",
            p2 / p1
        );
    }
    for &n in &sizes {
        let (router, longest, median, invocations) = rt.block_on(invocations(n));
        println!(
            "routing {n:>6} users (memory adapters): {invocations} invocations; the router's {:.1} ms, route pages' longest {:.1} ms (median {:.1} ms)",
            ms(router),
            ms(longest),
            ms(median)
        );
    }
}
