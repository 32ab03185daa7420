//! The local runner end to end: one dispatch to N responders (each with a device, a
//! primary mobile and email, under `app_then_sms_email`, so every push job resolves the
//! SMS and email held behind it), timed from routing the event until no record is
//! `pending`. Five runs per size, each a new notification, all in one runner (as `serve` is); the
//! median, min and max.
//!
//!     cargo bench -p flare-local --bench dispatch [-- 1000 3000]
//!
//! In process (no HTTP), with the SNS and SES stand-ins: what it measures is Flare's own
//! work per notification (routing, the log, the queue and the workers), not a provider.
//! Every write is committed to the runner's SQLite database (in the temporary folder)
//! before it is answered, as in `serve`; the check for "nothing pending" counts pending
//! records from the database's index (reading every record each time would measure the
//! reads). After each size, the process's resident memory, now and at its peak.
//!
//!     cargo bench -p flare-local --bench dispatch -- --replies [1000]
//!
//! v1.2: SMS replies instead. One dispatch to N responders under `app_sms_email` (every
//! one gets an SMS through the SNS stand-in), then each responder replies `1`, one after
//! another: each reply timed from the inbound message read (as a gateway's route hands
//! it over, its signature already checked) until the answer is recorded and the
//! confirmation handed to the SNS stand-in (written to the runner's database). Median,
//! p99 and maximum over the N replies.

#[path = "support.rs"]
mod support;

use flare_local::LocalApp;
use flare_shared::domain::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One runner (one database) for every size, as `serve` would be: `max` responders.
async fn open(max: usize) -> (Arc<LocalApp>, std::path::PathBuf) {
    // No fallback window: push accepted resolves the held SMS and email at once (the
    // window has its own benchmark, `--bench window`).
    let comm = CommunicationSettings {
        app_fallback_seconds: 0,
        ..Default::default()
    };
    let (app, cfg) = support::open(comm, max).await;
    (Arc::new(app), cfg.data_dir)
}

async fn run(app: &LocalApp, n: usize, set: usize) -> Vec<Duration> {
    let org = OrgId::parse("bench").unwrap();
    let s = &app.services;
    let ids: Vec<String> = (0..n).map(|i| format!("u-{i:06}")).collect();
    let mut times = Vec::new();
    for run in 0..5 {
        let event = support::dispatch(&format!("bench-{set}-{n}-{run}"), &ids);
        let start = Instant::now();
        app.notifier.route(&event).await.unwrap();
        // The database's count of pending records (an index holds only those): reading
        // the whole notification each time would measure the reads, not the dispatch.
        while app.db.pending_count(&org, &event.notification_id).unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times.push(start.elapsed());
        let logged = s
            .log
            .get_notification(&org, &event.notification_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(logged.records.len(), 3 * n);
        assert!(
            logged
                .records
                .iter()
                .all(|r| r.status != DeliveryStatus::Pending)
        );
    }
    times
}

/// `--replies`: N responders each answer the one dispatch by SMS reply, in turn.
async fn replies(n: usize) {
    let comm = CommunicationSettings {
        dispatch: Method::AppSmsEmail,
        ..Default::default()
    };
    let (app, cfg) = support::open(comm, n).await;
    let org = OrgId::parse("bench").unwrap();
    let ids: Vec<String> = (0..n).map(|i| format!("u-{i:06}")).collect();
    let event = support::dispatch("bench-replies", &ids);
    app.notifier.route(&event).await.unwrap();
    while app.db.pending_count(&org, &event.notification_id).unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let through = app
        .services
        .settings
        .effective_sms(&org, &ControlCenterId::main())
        .await
        .unwrap()
        .unwrap();
    let replies = app.services.replies();
    let sent_before = app.outbox.entries().await.unwrap().len();
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let sms = flare_shared::domain::inbound::InboundSms {
            from: PhoneNumber::parse(&format!("+1415{i:07}")).unwrap(),
            to: "+12065550142".into(),
            text: "1".into(),
            message_id: format!("bench-reply-{i}"),
        };
        let start = Instant::now();
        let done = flare_shared::app::inbound::received(&replies, Some(&org), &sms, &through)
            .await
            .unwrap();
        times.push(start.elapsed());
        assert_eq!(done, flare_shared::app::inbound::Replied::Answered);
    }
    // Every answer recorded, every confirmation handed over.
    let logged = app
        .services
        .log
        .get_notification(&org, &event.notification_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(logged.responses.len(), n);
    assert_eq!(app.outbox.entries().await.unwrap().len(), sent_before + n);
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{n} SMS replies `1` to one dispatch, one after another: {:.2} ms median, {:.2} ms p99, {:.2} ms max (matched, answered, confirmation handed to the SNS stand-in)",
        ms(times[n / 2]),
        ms(times[(n * 99 / 100).min(n - 1)]),
        ms(times[n - 1])
    );
    let _ = std::fs::remove_dir_all(&cfg.data_dir);
}

fn main() {
    if std::env::args().any(|a| a == "--replies") {
        let n = support::sizes(&[1000])[0];
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(replies(n));
        return;
    }
    let sizes = support::sizes(&[1000, 3000]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (app, dir) = rt.block_on(open(sizes.iter().copied().max().unwrap_or(0)));
    let mut medians = Vec::new();
    for (set, n) in sizes.into_iter().enumerate() {
        let mut t = rt.block_on(run(&app, n, set));
        t.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "dispatch to {n:>6} responders: nothing pending after {:8.1} ms median ({:.1} to {:.1} ms over {} runs)",
            ms(t[t.len() / 2]),
            ms(t[0]),
            ms(t[t.len() - 1]),
            t.len()
        );
        medians.push((n, t[t.len() / 2]));
        if let (Some(now), Some(peak)) = (support::rss_kib("VmRSS:"), support::rss_kib("VmHWM:")) {
            println!(
                "  resident memory: {:.1} MiB now, {:.1} MiB at the peak so far",
                now as f64 / 1024.0,
                peak as f64 / 1024.0
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if let [(n1, t1), (n2, t2), ..] = medians[..] {
        println!(
            "{n2} / {n1} responders: {:.2} times as long (median against median)",
            t2.as_secs_f64() / t1.as_secs_f64()
        );
    }
}
