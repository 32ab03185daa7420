//! The app fallback window in the local runner's pipeline: one dispatch to N responders
//! (device, primary mobile and email each) under `app_then_sms_email` with a
//! 2-second window, every phone silent. For each fallback SMS and email: from the end of
//! its recipient's window (stored on its record when the push was sent) to the moment
//! it was handed to the provider. p50, p99 and max over the 2N messages, per run; and
//! how many checks (delayed messages, in AWS) each notification took.
//!
//!     cargo bench -p flare-local --bench window [-- 1000]
//!
//! The runner's own queue, workers, timers and SQLite log; the providers are stand-ins
//! that answer at once and note the time (so the figure is Flare's work after the window,
//! not a provider's). Three runs, each a new notification, in one runner.

use flare_local::pipeline::LocalQueue;
#[path = "support.rs"]
mod support;

use flare_shared::app::deliver::Deliverer;
use flare_shared::app::notify::Notifier;
use flare_shared::domain::*;
use flare_shared::ports::{
    EmailMessage, EmailSender, NoMetrics, PushMessage, PushSender, Receipt, SendError, SmsMessage,
    SmsSender,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WINDOW: u32 = 2;
const RUNS: usize = 3;

/// Takes every message at once; notes when each SMS and email arrived, by recipient.
#[derive(Default)]
struct Stopwatch {
    handed: Mutex<Vec<(String, chrono::DateTime<chrono::Utc>)>>,
}

impl Stopwatch {
    fn note(&self, to: String) -> Result<Receipt, SendError> {
        self.handed.lock().unwrap().push((to, chrono::Utc::now()));
        Ok(Receipt {
            provider: Provider::Sns,
            provider_message_id: None,
        })
    }
}

#[async_trait::async_trait]
impl PushSender for Stopwatch {
    async fn send(&self, _: &PushMessage) -> Result<Receipt, SendError> {
        Ok(Receipt {
            provider: Provider::Sns,
            provider_message_id: Some("m".into()),
        })
    }
}

#[async_trait::async_trait]
impl SmsSender for Stopwatch {
    async fn send(&self, sms: &SmsMessage) -> Result<Receipt, SendError> {
        self.note(sms.to.as_str().to_string())
    }
}

#[async_trait::async_trait]
impl EmailSender for Stopwatch {
    async fn send(&self, email: &EmailMessage) -> Result<Receipt, SendError> {
        self.note(email.to.as_str().to_string())
    }
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench(n));
}

async fn bench(n: usize) {
    let comm = CommunicationSettings {
        app_fallback_seconds: WINDOW,
        ..Default::default()
    };
    let (app, cfg) = support::open(comm, n).await;
    let org = OrgId::parse("bench").unwrap();
    let s = &app.services;
    let watch = Arc::new(Stopwatch::default());
    let deliverer = Deliverer {
        log: s.log.clone(),
        queue: None,
        directory: s.directory.clone(),
        settings: s.settings.clone(),
        push: Some(watch.clone()),
        sms: HashMap::from([(Provider::Sns, watch.clone() as Arc<dyn SmsSender>)]),
        email: HashMap::from([(Provider::Ses, watch.clone() as Arc<dyn EmailSender>)]),
        default_sender: Some(cfg.default_sender.clone()),
        metrics: Arc::new(NoMetrics),
        failover: None,
        pacer: None,
        sns_per_second: None,
        max_pace_wait: None,
        links: None,
    };
    let queue = LocalQueue::start_with(deliverer, Duration::from_millis(200));
    let notifier = Notifier {
        settings: s.settings.clone(),
        directory: s.directory.clone(),
        log: s.log.clone(),
        queue: Arc::new(queue.clone()),
        metrics: Arc::new(NoMetrics),
        page_size: flare_shared::app::notify::ROUTE_PAGE,
    };
    let ids: Vec<String> = (0..n).map(|i| format!("u-{i:06}")).collect();
    println!(
        "{n} responders, every phone silent, a {WINDOW} s window; per fallback message, from its window's end to the provider:"
    );
    for run in 0..RUNS {
        watch.handed.lock().unwrap().clear();
        let checks_before = queue.checks_scheduled();
        let event = support::dispatch(&format!("bench-window-{run}"), &ids);
        notifier.route(&event).await.unwrap();
        while app.db.pending_count(&org, &event.notification_id).unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let logged = s
            .log
            .get_notification(&org, &event.notification_id)
            .await
            .unwrap()
            .unwrap();
        // Each destination's window end (the SMS and email of one recipient share it).
        let mut end_of: HashMap<String, chrono::DateTime<chrono::Utc>> = HashMap::new();
        for r in &logged.records {
            if let (Some(at), Some(d)) = (r.fallback_at, &r.destination) {
                let to = match d {
                    Destination::Phone(p) => p.as_str().to_string(),
                    Destination::Email(e) => e.as_str().to_string(),
                    Destination::Devices(_) => continue,
                };
                end_of.insert(to, at);
            }
        }
        let handed = watch.handed.lock().unwrap().clone();
        assert_eq!(handed.len(), 2 * n, "every SMS and email went once");
        let mut ms: Vec<f64> = handed
            .iter()
            .map(|(to, at)| {
                let end = end_of[to];
                assert!(*at >= end, "{to} went before its window ended");
                (*at - end).num_microseconds().unwrap() as f64 / 1000.0
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        let pct = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
        let first = end_of.values().min().unwrap();
        let last = end_of.values().max().unwrap();
        println!(
            "  run {}: p50 {:6.1} ms, p99 {:6.1} ms, max {:6.1} ms over {} messages; windows ended over {} ms; {} checks",
            run + 1,
            pct(0.50),
            pct(0.99),
            ms[ms.len() - 1],
            ms.len(),
            (*last - *first).num_milliseconds(),
            queue.checks_scheduled() - checks_before,
        );
    }
    let _ = std::fs::remove_dir_all(&cfg.data_dir);
}
