//! The app fallback window, on the in-memory adapters with the clock in the test's hands:
//! a check runs at whatever time the test says it is. Each rule is one test; the
//! properties at the end try many orders of receipts and checks.

mod common;

use chrono::{DateTime, TimeDelta, Utc};
use common::{MemoryWorld, OkPush};
use flare_shared::app::deliver::{Checked, Deliverer, lease_for, unfinished_checks};
use flare_shared::domain::reason::FallbackReason;
use flare_shared::ports::DeliveryLog;
use flare_shared::*;
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;

const WINDOW: u32 = 60;
const LEASE: Duration = lease_for(Duration::from_secs(20));

/// A dispatch to `users` under `app_then_sms_email` with a `window`-second window,
/// routed; u-17's push job not run yet.
struct Window {
    world: MemoryWorld,
    org: OrgId,
    id: NotificationId,
    log: Arc<flare_memory::MemoryDeliveryLog>,
    queue: Arc<flare_memory::MemoryQueue>,
    deliverer: Deliverer,
    push_job: DeliveryJob,
    /// The checks the router scheduled, with their delays.
    scheduled: Vec<(CheckJob, Duration)>,
}

async fn routed(window: u32, users: &[&str]) -> Window {
    let comm = CommunicationSettings {
        app_fallback_seconds: window,
        ..Default::default()
    };
    let world = MemoryWorld::new(comm, users).await;
    let event = MemoryWorld::incident("incident-dispatched", users);
    world.notifier().route(&event).await.unwrap();
    let push_job = world.queue.pop(Channel::Push).expect("a push job");
    let scheduled = world.queue.take_checks();
    Window {
        org: world.org.clone(),
        id: event.notification_id,
        log: world.log.clone(),
        queue: world.queue.clone(),
        deliverer: world.deliverer(Some(Arc::new(OkPush))),
        push_job,
        scheduled,
        world,
    }
}

fn u17() -> RecipientRef {
    RecipientRef::User(UserId::parse("u-17").unwrap())
}

impl Window {
    /// The notification with every record, as stored now.
    async fn logged(&self) -> flare_shared::ports::Logged {
        self.log
            .get_notification(&self.org, &self.id)
            .await
            .unwrap()
            .unwrap()
    }

    /// Runs u-17's push job (sent); answers when the window ends.
    async fn push_sent(&self) -> DateTime<Utc> {
        self.deliverer
            .deliver(&self.push_job, false, LEASE)
            .await
            .unwrap();
        let held = self.held().await;
        assert_eq!(held.len(), 2, "SMS and email held: {held:?}");
        let end = held[0].fallback_at.expect("the window's end is recorded");
        assert!(held.iter().all(|r| r.awaiting_push
            && r.status == DeliveryStatus::Pending
            && r.fallback_at == Some(end)));
        end
    }

    fn check(&self) -> CheckJob {
        CheckJob {
            check: CheckKind::AppFallback,
            org_id: self.org.clone(),
            notification_id: self.id.clone(),
            cycle: 0,
            page: 0,
            chain: None,
            lane: Lane::Urgent,
        }
    }

    async fn check_at(&self, now: DateTime<Utc>) -> Checked {
        self.deliverer.check(&self.check(), now).await.unwrap()
    }

    async fn receipt(&self, sub: &str) -> u16 {
        self.world.recipient_post(sub, &self.id, "receipt").await
    }

    /// u-17's SMS and email records.
    async fn held(&self) -> Vec<DeliveryRecord> {
        self.records(Channel::Sms)
            .await
            .into_iter()
            .chain(self.records(Channel::Email).await)
            .collect()
    }

    async fn records(&self, channel: Channel) -> Vec<DeliveryRecord> {
        self.log
            .recipient_records(&self.org, &self.id, &u17())
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.channel == channel)
            .collect()
    }

    /// The fallback jobs enqueued so far (SMS and email), taken off the queue.
    fn take_fallbacks(&self) -> Vec<DeliveryJob> {
        let mut jobs = Vec::new();
        for c in [Channel::Sms, Channel::Email] {
            while let Some(j) = self.queue.pop(c) {
                jobs.push(j);
            }
        }
        jobs
    }
}

#[tokio::test]
async fn the_router_schedules_one_check_per_notification_after_the_window() {
    let w = routed(WINDOW, &["u-17", "u-18", "u-19"]).await;
    assert_eq!(
        w.scheduled,
        [(w.check(), Duration::from_secs(WINDOW.into()))],
        "one timer for three recipients"
    );
    assert_eq!(w.push_job.app_fallback_seconds, Some(WINDOW));
}

#[tokio::test]
async fn a_window_of_0_holds_nothing_and_schedules_nothing() {
    let w = routed(0, &["u-17"]).await;
    assert!(w.scheduled.is_empty());
    w.deliverer
        .deliver(&w.push_job, false, LEASE)
        .await
        .unwrap();
    for r in w.held().await {
        assert_eq!(
            (r.status, r.reason.as_deref()),
            (DeliveryStatus::Skipped, Some("push_sent")),
            "v1: push accepted is enough"
        );
    }
}

#[tokio::test]
async fn the_window_starts_when_push_is_sent() {
    let w = routed(WINDOW, &["u-17"]).await;
    let before = Utc::now();
    let end = w.push_sent().await;
    let after = Utc::now();
    let window = TimeDelta::seconds(WINDOW.into());
    assert!(before + window <= end && end <= after + window, "{end}");
    // A repeated push run (a duplicate job) does not move it.
    w.deliverer
        .deliver(&w.push_job, false, LEASE)
        .await
        .unwrap();
    assert!(w.held().await.iter().all(|r| r.fallback_at == Some(end)));
}

#[tokio::test]
async fn before_the_window_ends_a_check_sends_nothing_and_looks_again_at_its_end() {
    let w = routed(WINDOW, &["u-17"]).await;
    let end = w.push_sent().await;
    let checked = w.check_at(end - TimeDelta::milliseconds(1)).await;
    assert_eq!(
        checked,
        Checked {
            next: Some(end),
            ..Checked::default()
        }
    );
    assert!(w.take_fallbacks().is_empty());
}

#[tokio::test]
async fn no_receipt_by_the_window_end_sends_sms_and_email_as_fallback_no_app_receipt() {
    let w = routed(WINDOW, &["u-17"]).await;
    let end = w.push_sent().await;
    let checked = w.check_at(end).await;
    assert_eq!((checked.fallbacks, checked.next), (2, None));
    let jobs = w.take_fallbacks();
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().all(|j| j.fallback && j.recipient == u17()));
    for r in w.held().await {
        assert_eq!(
            (r.awaiting_push, r.fallback, r.fallback_reason),
            (false, true, Some(FallbackReason::NoAppReceipt)),
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn a_receipt_in_the_window_skips_sms_and_email_push_delivered() {
    let w = routed(WINDOW, &["u-17"]).await;
    let end = w.push_sent().await;
    assert_eq!(w.receipt("u-17").await, 204);
    for r in w.held().await {
        assert_eq!(
            (r.status, r.reason.as_deref()),
            (DeliveryStatus::Skipped, Some("push_delivered"))
        );
    }
    assert_eq!(
        w.records(Channel::Push).await[0].status,
        DeliveryStatus::Delivered
    );
    // The timer still fires: it finds nothing held.
    assert_eq!(w.check_at(end).await, Checked::default());
    assert!(w.take_fallbacks().is_empty());
}

#[tokio::test]
async fn a_receipt_after_the_window_marks_push_delivered_and_changes_nothing_else() {
    let w = routed(WINDOW, &["u-17"]).await;
    let end = w.push_sent().await;
    w.check_at(end).await;
    let before = w.held().await;
    assert_eq!(w.receipt("u-17").await, 204);
    assert_eq!(w.held().await, before, "the fallback stands");
    assert_eq!(
        w.records(Channel::Push).await[0].status,
        DeliveryStatus::Delivered
    );
}

#[tokio::test]
async fn a_receipt_from_someone_who_is_not_a_recipient_is_404_and_changes_nothing() {
    let w = routed(WINDOW, &["u-17"]).await;
    w.push_sent().await;
    let before = w.held().await;
    assert_eq!(w.receipt("u-99").await, 404);
    assert_eq!(w.held().await, before);
}

#[tokio::test]
async fn a_check_while_push_is_in_flight_looks_again_a_window_later() {
    let w = routed(WINDOW, &["u-17"]).await;
    let now = Utc::now();
    let checked = w.check_at(now).await;
    assert_eq!(checked.next, Some(now + TimeDelta::seconds(WINDOW.into())));
    assert_eq!(checked.fallbacks, 0);
    assert!(w.take_fallbacks().is_empty());
}

#[tokio::test]
async fn a_restarted_runner_finds_the_timer_of_held_records() {
    let w = routed(WINDOW, &["u-17"]).await;
    let end = w.push_sent().await;
    let logged = w.logged().await;
    assert_eq!(unfinished_checks(&logged), [(w.check(), end)]);
    w.check_at(end).await;
    let logged = w.logged().await;
    assert_eq!(unfinished_checks(&logged), [], "nothing waits any more");
}

#[tokio::test]
async fn a_check_asks_to_run_again_through_the_queue_with_the_time_left() {
    let w = routed(WINDOW, &["u-17"]).await;
    let end = w.push_sent().await;
    let now = end - TimeDelta::seconds(7);
    w.deliverer
        .check_and_reschedule(&w.check(), now)
        .await
        .unwrap();
    assert_eq!(w.queue.take_checks(), [(w.check(), Duration::from_secs(7))]);
}

/// One step of a run: a check at an offset (ms) from the window's end, or u-17's receipt.
#[derive(Debug, Clone)]
enum Step {
    Check(i64),
    Receipt,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            4 => (-(WINDOW as i64) * 1000..(WINDOW as i64) * 2000).prop_map(Step::Check),
            1 => Just(Step::Receipt),
        ],
        1..8,
    )
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Checks run at times in order (a receipt happens at the time of the step before
    /// it): when the receipt came before any check at or past the window's end, no SMS
    /// or email was ever enqueued.
    #[test]
    fn no_sms_or_email_is_ever_sent_to_a_recipient_whose_receipt_arrived_before_the_window_ended(
        mut steps in steps()
    ) {
        // Time moves forward: sort the checks, keeping each receipt where it falls.
        let mut last = i64::MIN;
        for s in &mut steps {
            if let Step::Check(at) = s {
                *at = (*at).max(last);
                last = *at;
            }
        }
        block_on(async {
            let w = routed(WINDOW, &["u-17"]).await;
            let end = w.push_sent().await;
            let mut window_over = false;
            let mut receipt_in_time = false;
            let mut sent = 0;
            for s in &steps {
                match s {
                    Step::Check(at) => {
                        window_over |= *at >= 0;
                        w.check_at(end + TimeDelta::milliseconds(*at)).await;
                        sent += w.take_fallbacks().len();
                    }
                    Step::Receipt => {
                        receipt_in_time |= !window_over;
                        prop_assert_eq!(w.receipt("u-17").await, 204);
                    }
                }
            }
            if receipt_in_time {
                prop_assert_eq!(sent, 0, "{:?}", steps);
            } else if window_over {
                prop_assert_eq!(sent, 2, "{:?}", steps);
            }
            Ok(())
        })?;
    }

    /// However often and however late the check runs after the window's end, SMS and
    /// email are enqueued exactly once each.
    #[test]
    fn every_check_job_is_idempotent(lates in prop::collection::vec(0i64..3_600_000, 1..6)) {
        block_on(async {
            let w = routed(WINDOW, &["u-17"]).await;
            let end = w.push_sent().await;
            let mut jobs = Vec::new();
            for late in &lates {
                w.check_at(end + TimeDelta::milliseconds(*late)).await;
                jobs.extend(w.take_fallbacks());
            }
            let mut channels: Vec<&str> = jobs.iter().map(|j| j.channel.as_str()).collect();
            channels.sort();
            prop_assert_eq!(channels, ["email", "sms"]);
            for r in w.held().await {
                prop_assert_eq!(r.fallback_reason, Some(FallbackReason::NoAppReceipt));
                prop_assert!(!r.awaiting_push);
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn a_check_over_a_huge_notification_moves_a_bounded_batch_and_carries_on_at_once() {
    use flare_shared::app::deliver::CHECK_BATCH;
    // Enough recipients that their held SMS and email exceed one batch.
    let names: Vec<String> = (0..CHECK_BATCH / 2 + 50)
        .map(|i| format!("u-{i:04}"))
        .collect();
    let users: Vec<&str> = names.iter().map(String::as_str).collect();
    let w = routed(WINDOW, &users).await;
    let mut pushes = vec![w.push_job.clone()];
    while let Some(j) = w.queue.pop(Channel::Push) {
        pushes.push(j);
    }
    for j in &pushes {
        w.deliverer.deliver(j, false, LEASE).await.unwrap();
    }
    let after = Utc::now() + TimeDelta::seconds(i64::from(WINDOW) + 1);
    let first = w.check_at(after).await;
    assert_eq!(first.fallbacks, CHECK_BATCH);
    assert_eq!(first.next, Some(after), "the rest at once");
    let second = w.check_at(after).await;
    assert_eq!(
        (second.fallbacks, second.next),
        (2 * users.len() - CHECK_BATCH, None)
    );
    let jobs = w.take_fallbacks();
    assert_eq!(jobs.len(), 2 * users.len(), "each held delivery once");
}

/// The deliveries each path ends are counted once, whichever path ends them.
fn counted(w: &Window, outcome: flare_shared::ports::Outcome) -> Vec<Channel> {
    let mut c: Vec<Channel> = w
        .world
        .metrics
        .deliveries
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.outcome == outcome)
        .map(|m| m.channel)
        .collect();
    c.sort_by_key(|c| c.as_str());
    c
}

#[tokio::test]
async fn a_receipt_counts_push_delivered_and_its_held_sms_and_email_skipped_once() {
    use flare_shared::ports::Outcome;
    let w = routed(WINDOW, &["u-17"]).await;
    w.push_sent().await;
    assert_eq!(w.receipt("u-17").await, 204);
    assert_eq!(w.receipt("u-17").await, 204, "a repeat counts nothing");
    assert_eq!(counted(&w, Outcome::Delivered), [Channel::Push]);
    assert_eq!(
        counted(&w, Outcome::Skipped),
        [Channel::Email, Channel::Sms]
    );
}
