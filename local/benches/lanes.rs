//! Urgency first, in the local runner: a bulk message to N responders (default 10,000;
//! push, SMS and email each) through a gateway limited to R requests a second (default
//! 100), and a dispatch to one more responder every few seconds while it drains.
//! Reported: each dispatch SMS's latency from its event to the gateway's receipt of it
//! (p50, p99 from 100 dispatches on, max), the bulk SMS throughput as a share of R, and the busiest second the
//! gateway saw.
//!
//!     cargo bench -p flare-local --bench lanes [-- 10000 100]
//!
//! The runner's own queues (two lanes per channel), workers and SQLite log, and its
//! in-memory pacer; the gateway is the test harness's HTTP server (it answers at once);
//! push and email go to the runner's stand-ins.

#[path = "support.rs"]
mod support;

use flare_shared::domain::*;
use std::time::Duration;

const EVERY: Duration = Duration::from_secs(3);

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<u64>().ok());
    let n = args.next().unwrap_or(10_000) as usize;
    let rate = args.next().unwrap_or(100) as u32;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let comm = CommunicationSettings {
            dispatch: Method::AppSmsEmail,
            messages: Method::AppSmsEmail,
            ..Default::default()
        };
        let dispatches = (n / rate as usize) / EVERY.as_secs() as usize + 2;
        let (app, cfg) = support::open(comm, n + dispatches).await;
        let org = OrgId::parse("bench").unwrap();
        let gw = flare_tests::gateway();
        let path = format!("/{}", uuid::Uuid::new_v4());
        support::use_gateway(&app, &format!("{}{path}", gw.url), false, Some(rate)).await;
        let bulk: Vec<String> = (0..n).map(|i| format!("u-{i:06}")).collect();
        let message = IncidentEvent::from_value(serde_json::json!({
            "id": "bulk-1", "detail-type": "Incident Message Posted",
            "source": "flare.incidents", "time": "2026-11-27T10:00:00Z",
            "detail": {"org_id": "bench", "control_center_id": "main", "incident_id": "inc-1",
                       "recipient_ids": bulk, "message": {"title": "Update", "body": "Road closed."}}
        }))
        .unwrap();
        let epoch = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        };
        app.notifier.route(&message).await.unwrap();
        let mut posted = Vec::new();
        for k in 0.. {
            tokio::time::sleep(EVERY).await;
            let summary = app.services.log.list_notifications(&org, None, 1000).await.unwrap();
            let bulk_pending = summary
                .iter()
                .find(|s| s.notification.notification_id == message.notification_id)
                .map_or(0, |s| s.counts.pending);
            if bulk_pending == 0 || k >= dispatches - 1 {
                break;
            }
            let who = n + k;
            let ev = support::dispatch(&format!("dispatch-{k}"), &[format!("u-{who:06}")]);
            posted.push((format!("+1415{who:07}"), epoch()));
            app.notifier.route(&ev).await.unwrap();
        }
        // Let the bulk finish.
        loop {
            let summary = app.services.log.list_notifications(&org, None, 1000).await.unwrap();
            if summary.iter().all(|s| s.counts.pending == 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let reqs = gw.requests_to(&path).await.unwrap();
        let at_of = |phone: &str| {
            reqs.iter()
                .find(|r| r["body"].as_str().is_some_and(|b| b.contains(phone)))
                .and_then(|r| r["at"].as_f64())
        };
        let mut latency: Vec<f64> = posted
            .iter()
            .filter_map(|(phone, t)| at_of(phone).map(|a| (a - t) * 1000.0))
            .collect();
        latency.sort_by(f64::total_cmp);
        let pct = |p: f64| latency[((latency.len() as f64 - 1.0) * p).round() as usize];
        let mut at: Vec<f64> = reqs.iter().filter_map(|r| r["at"].as_f64()).collect();
        at.sort_by(f64::total_cmp);
        let busiest = (0..at.len())
            .map(|i| at[i..].iter().take_while(|t| **t < at[i] + 1.0).count())
            .max()
            .unwrap_or(0);
        let span = at.last().unwrap() - at.first().unwrap();
        let throughput = (at.len() - 1) as f64 / span;
        println!("{n} bulk SMS at {rate}/s, a dispatch every {} s:", EVERY.as_secs());
        // A p99 needs at least 100 samples; with fewer the tail is the maximum, named so.
        let tail = if latency.len() >= 100 {
            format!("p99 {:.0} ms, ", pct(0.99))
        } else {
            String::new()
        };
        println!(
            "  dispatch SMS latency (event to gateway), {} dispatches: p50 {:.0} ms, {tail}max {:.0} ms",
            latency.len(),
            pct(0.5),
            latency.last().unwrap()
        );
        println!(
            "  gateway: {} requests over {span:.1} s, {throughput:.1}/s = {:.1}% of {rate}; busiest second {busiest}",
            at.len(),
            100.0 * throughput / f64::from(rate)
        );
        let _ = std::fs::remove_dir_all(&cfg.data_dir);
    });
}
