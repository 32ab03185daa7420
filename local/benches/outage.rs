//! A custom SMS gateway's outage during a dispatch, in the local runner: the gateway (a
//! real HTTP server) answers every request 503 for OUTAGE seconds (default 60); a
//! dispatch to N responders (default 1,000; push, SMS and email each) starts with it.
//! Reported: how long the circuit took to open, how many SMS the gateway was tried for
//! and how many went through SNS (failover), whether anything stayed pending, and after
//! the outage, whether the next dispatch's SMS go through the gateway again.
//!
//!     cargo bench -p flare-local --bench outage [-- 1000 60]
//!
//! The runner's own queue, workers, retries (200 ms, doubling) and SQLite log; SNS and
//! SES are the runner's stand-ins, the gateway is the test harness's HTTP server. The
//! circuit is the contract's: 5 failures in a row within 5 minutes open it for 60 s.

#[path = "support.rs"]
mod support;

use flare_shared::domain::health::{HealthScope, HealthState};
use flare_shared::domain::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<u64>().ok());
    let n = args.next().unwrap_or(1000) as usize;
    let outage = Duration::from_secs(args.next().unwrap_or(60));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let comm = CommunicationSettings {
            dispatch: Method::AppSmsEmail,
            ..Default::default()
        };
        let (app, cfg) = support::open(comm, n).await;
        let org = OrgId::parse("bench").unwrap();
        let gw = flare_tests::gateway();
        let path = format!("/{}", uuid::Uuid::new_v4());
        support::use_gateway(&app, &format!("{}{path}", gw.url), true, None).await;
        gw.faults(&path, 1.0, 0.0, Duration::ZERO).await.unwrap();
        let health = app.services.health.clone().expect("the runner tracks health");
        let scope = HealthScope::Sms(ControlCenterId::main());
        let recipients: Vec<String> = (0..n).map(|i| format!("u-{i:06}")).collect();

        let start = Instant::now();
        let first = support::dispatch("outage-1", &recipients);
        app.notifier.route(&first).await.unwrap();
        let mut opened = None;
        let settled = loop {
            if opened.is_none() && health.get(&org, &scope).await.unwrap().state(chrono::Utc::now()) == HealthState::Open {
                opened = Some(start.elapsed());
            }
            let l = app.services.log.get_notification(&org, &first.notification_id).await.unwrap().unwrap();
            if l.records.iter().all(|r| r.status != DeliveryStatus::Pending) {
                break (start.elapsed(), l);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let (took, logged) = settled;
        let tried = gw.requests_to(&path).await.unwrap().len();
        let mut sms: BTreeMap<String, usize> = BTreeMap::new();
        for r in logged.records.iter().filter(|r| r.channel == Channel::Sms) {
            let key = format!(
                "{:?} via {}{}",
                r.status,
                r.provider.map_or("-", Provider::as_str),
                r.failover_from.map_or(String::new(), |f| format!(" (failover from {})", f.as_str()))
            );
            *sms.entry(key).or_default() += 1;
        }
        let pending = logged.records.iter().filter(|r| r.status == DeliveryStatus::Pending).count();
        println!("{n} responders, gateway down for {} s:", outage.as_secs());
        println!("  circuit open after {:?}; the gateway was tried {tried} times", opened.unwrap_or_default());
        println!("  the dispatch settled after {took:?}: SMS {sms:?}; {pending} pending");

        // `--no-recovery` (the test command's smoke run) stops here: the circuit stays
        // open its 60 s whatever the outage's length.
        if std::env::args().any(|a| a == "--no-recovery") {
            let _ = std::fs::remove_dir_all(&cfg.data_dir);
            return;
        }
        // The outage ends; the circuit lets the gateway be tried once its 60 s are up.
        tokio::time::sleep(outage.saturating_sub(start.elapsed())).await;
        gw.faults(&path, 0.0, 0.0, Duration::ZERO).await.unwrap();
        let reopen_wait = Instant::now();
        loop {
            let h = health.get(&org, &scope).await.unwrap();
            if !h.is_open(chrono::Utc::now()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let after: Vec<String> = recipients.iter().take(100).cloned().collect();
        let second = support::dispatch("outage-2", &after);
        app.notifier.route(&second).await.unwrap();
        let logged = loop {
            let l = app.services.log.get_notification(&org, &second.notification_id).await.unwrap().unwrap();
            if l.records.iter().all(|r| r.status != DeliveryStatus::Pending) {
                break l;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let via_gateway = logged
            .records
            .iter()
            .filter(|r| r.channel == Channel::Sms && r.provider == Some(Provider::Http))
            .count();
        println!(
            "  after the outage (circuit closed {:?} after the gateway came back): {via_gateway} of 100 SMS through the gateway; health {:?}",
            reopen_wait.elapsed(),
            health.get(&org, &scope).await.unwrap().state(chrono::Utc::now())
        );
        let _ = std::fs::remove_dir_all(&cfg.data_dir);
    });
}
