//! Dispatch escalation on the in-memory adapters, with the clock in the test's hands:
//! each cycle's check runs at whatever time the test says it is.

mod common;

use chrono::{DateTime, TimeDelta, Utc};
use common::MemoryWorld;
use flare_shared::app::deliver::{Checked, Deliverer, unfinished_checks};
use flare_shared::app::notify::Notifier;
use flare_shared::ports::DeliveryLog;
use flare_shared::*;
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;

const AFTER: u32 = 10;
const CYCLES: u32 = 3;

struct Escalating {
    world: MemoryWorld,
    notifier: Notifier,
    event: IncidentEvent,
    org: OrgId,
    id: NotificationId,
    log: Arc<flare_memory::MemoryDeliveryLog>,
    queue: Arc<flare_memory::MemoryQueue>,
    deliverer: Deliverer,
    /// The checks the router scheduled, with their delays.
    scheduled: Vec<(CheckJob, Duration)>,
    /// When the notification was routed (its escalation's start).
    started_at: DateTime<Utc>,
}

/// A notification of `category` to u-17 and u-18 (device, mobile and email each) under
/// `app_only` (escalation uses every channel whatever the method) with escalation on;
/// the router's jobs taken off the queue.
async fn routed(category: &str) -> Escalating {
    routed_with(category, Method::AppOnly, 0).await
}

async fn routed_with(category: &str, method: Method, window: u32) -> Escalating {
    let comm = CommunicationSettings {
        dispatch: method,
        messages: method,
        app_fallback_seconds: window,
        dispatch_escalation: Some(Escalation {
            after_seconds: AFTER,
            cycles: CYCLES,
        }),
        ..Default::default()
    };
    let users = ["u-17", "u-18"];
    let world = MemoryWorld::new(comm, &users).await;
    let event = MemoryWorld::incident(category, &users);
    let notifier = world.notifier();
    let before = Utc::now();
    notifier.route(&event).await.unwrap();
    let scheduled = world.queue.take_checks();
    while world.queue.pop(Channel::Push).is_some() {}
    let logged = world
        .log
        .get_notification(&world.org, &event.notification_id)
        .await
        .unwrap()
        .unwrap();
    let started_at = match logged.notification.escalation {
        Some(plan) => {
            assert!(plan.started_at >= before);
            plan.started_at
        }
        None => before,
    };
    Escalating {
        notifier,
        event: event.clone(),
        org: world.org.clone(),
        id: event.notification_id,
        log: world.log.clone(),
        queue: world.queue.clone(),
        deliverer: world.deliverer(None),
        scheduled,
        started_at,
        world,
    }
}

impl Escalating {
    /// The notification with every record, as stored now.
    async fn logged(&self) -> flare_shared::ports::Logged {
        self.log
            .get_notification(&self.org, &self.id)
            .await
            .unwrap()
            .unwrap()
    }

    /// Every job enqueued since the last call, taken off the queue.
    fn pop_all(&self) -> Vec<DeliveryJob> {
        Channel::ALL
            .iter()
            .flat_map(|c| std::iter::from_fn(|| self.queue.pop(*c)))
            .collect()
    }

    fn check(&self, cycle: u32) -> CheckJob {
        CheckJob {
            check: CheckKind::Escalation,
            org_id: self.org.clone(),
            notification_id: self.id.clone(),
            cycle,
            page: 0,
            chain: None,
            lane: Lane::Urgent,
        }
    }

    fn due(&self, cycle: u32) -> DateTime<Utc> {
        self.started_at + TimeDelta::seconds(i64::from(AFTER * cycle))
    }

    async fn run(&self, cycle: u32, at: DateTime<Utc>) -> Checked {
        self.deliverer.check(&self.check(cycle), at).await.unwrap()
    }

    /// The jobs enqueued since the last call: (user, channel, cycle).
    fn take_jobs(&self) -> Vec<(String, Channel, u32)> {
        let mut jobs: Vec<_> = self
            .pop_all()
            .into_iter()
            .map(|j| (j.recipient.key(), j.channel, j.cycle))
            .collect();
        jobs.sort_by_key(|(u, c, n)| (u.clone(), c.as_str(), *n));
        jobs
    }

    async fn ack(&self, user: &str) {
        assert_eq!(self.world.recipient_post(user, &self.id, "ack").await, 204);
    }

    async fn cycles_of(&self, user: &str) -> Vec<u32> {
        let who = RecipientRef::User(UserId::parse(user).unwrap());
        let mut cycles: Vec<u32> = self
            .log
            .recipient_records(&self.org, &self.id, &who)
            .await
            .unwrap()
            .iter()
            .map(|r| r.cycle)
            .collect();
        cycles.sort();
        cycles.dedup();
        cycles
    }
}

fn every_channel(cycle: u32, users: &[&str]) -> Vec<(String, Channel, u32)> {
    let mut want = Vec::new();
    for u in users {
        for c in Channel::ALL {
            want.push((format!("user:{u}"), c, cycle));
        }
    }
    want.sort_by_key(|(u, c, n)| (u.clone(), c.as_str(), *n));
    want
}

#[tokio::test]
async fn the_router_sets_one_timer_for_the_first_cycle_after_seconds_after_routing() {
    let e = routed("incident-dispatched").await;
    assert_eq!(e.scheduled.len(), 1, "{:?}", e.scheduled);
    let (check, delay) = &e.scheduled[0];
    assert!(check.chain.is_some(), "a chain of its own: {check:?}");
    assert_eq!(
        CheckJob {
            chain: None,
            ..check.clone()
        },
        e.check(1)
    );
    assert!(
        *delay <= Duration::from_secs(AFTER.into())
            && *delay > Duration::from_secs((AFTER - 1).into()),
        "{delay:?}"
    );
}

#[tokio::test]
async fn only_dispatches_are_escalated() {
    let e = routed("incident-message-posted").await;
    assert!(e.scheduled.is_empty(), "{:?}", e.scheduled);
    let logged = e.logged().await;
    assert_eq!(logged.notification.escalation, None);
}

#[tokio::test]
async fn a_cycle_checked_before_it_is_due_only_sets_its_timer_again() {
    let e = routed("incident-dispatched").await;
    let checked = e.run(1, e.due(1) - TimeDelta::milliseconds(1)).await;
    assert_eq!(
        checked,
        Checked {
            next: Some(e.due(1)),
            ..Checked::default()
        }
    );
    assert!(e.take_jobs().is_empty());
}

#[tokio::test]
async fn each_cycle_notifies_everyone_who_has_not_acknowledged_on_every_channel() {
    let e = routed("incident-dispatched").await;
    let checked = e.run(1, e.due(1)).await;
    assert_eq!(checked.escalated, 2);
    assert_eq!(checked.follow_up, Some((e.check(2), e.due(2))));
    // Under app_only the first notification was push only; the cycle is everything.
    assert_eq!(e.take_jobs(), every_channel(1, &["u-17", "u-18"]));
    assert_eq!(e.cycles_of("u-17").await, [0, 1]);
}

#[tokio::test]
async fn an_ack_stops_every_later_cycle() {
    let e = routed("incident-dispatched").await;
    e.ack("u-17").await;
    e.run(1, e.due(1)).await;
    assert_eq!(e.take_jobs(), every_channel(1, &["u-18"]));
    assert_eq!(
        e.cycles_of("u-17").await,
        [0],
        "a cycle not started is not listed"
    );
    e.ack("u-18").await;
    let checked = e.run(2, e.due(2)).await;
    assert_eq!(
        checked,
        Checked::default(),
        "no one left: no cycle, no timer"
    );
    assert!(e.take_jobs().is_empty());
    assert_eq!(e.cycles_of("u-18").await, [0, 1]);
}

#[tokio::test]
async fn the_last_cycle_sets_no_timer_and_a_cycle_past_the_last_does_nothing() {
    let e = routed("incident-dispatched").await;
    let checked = e.run(CYCLES, e.due(CYCLES)).await;
    assert_eq!(checked.follow_up, None);
    e.take_jobs();
    assert_eq!(
        e.run(CYCLES + 1, e.due(CYCLES + 1)).await,
        Checked::default()
    );
    assert!(e.take_jobs().is_empty());
}

#[tokio::test]
async fn a_cycle_run_twice_writes_its_records_once_and_its_jobs_are_the_same_deliveries() {
    let e = routed("incident-dispatched").await;
    e.run(1, e.due(1)).await;
    let first = e.logged().await;
    let mut ids_first: Vec<String> = e.pop_all().iter().map(|j| j.delivery_id()).collect();
    e.run(1, e.due(1) + TimeDelta::seconds(3)).await;
    let again = e.logged().await;
    assert_eq!(first.records, again.records);
    let mut ids_again: Vec<String> = e.pop_all().iter().map(|j| j.delivery_id()).collect();
    ids_first.sort();
    ids_again.sort();
    assert_eq!(ids_first, ids_again, "a repeat job claims the same record");
}

#[tokio::test]
async fn a_restarted_runner_sets_the_next_cycles_timer_from_the_plan() {
    let e = routed("incident-dispatched").await;
    e.run(1, e.due(1)).await;
    let logged = e.logged().await;
    assert_eq!(unfinished_checks(&logged), [(e.check(2), e.due(2))]);
    e.ack("u-17").await;
    e.ack("u-18").await;
    let logged = e.logged().await;
    assert_eq!(unfinished_checks(&logged), [], "everyone acknowledged");
}

#[tokio::test]
async fn an_ack_cancels_what_a_started_cycle_has_not_sent_yet() {
    let e = routed("incident-dispatched").await;
    e.run(1, e.due(1)).await;
    let jobs = e.pop_all();
    e.ack("u-17").await;
    let who = RecipientRef::User(UserId::parse("u-17").unwrap());
    for r in e
        .log
        .recipient_records(&e.org, &e.id, &who)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.cycle == 1)
    {
        assert_eq!(
            (r.status, r.reason.as_deref()),
            (DeliveryStatus::Skipped, Some("acknowledged")),
            "{r:?}"
        );
    }
    // Its queued jobs find their records done: nothing is sent.
    for j in jobs.iter().filter(|j| j.recipient == who) {
        let done = e
            .deliverer
            .deliver(j, false, std::time::Duration::from_secs(30))
            .await
            .unwrap();
        assert!(
            matches!(done, flare_shared::app::deliver::Delivered::AlreadyDone(_)),
            "{done:?}"
        );
    }
}

/// An SMS gateway that answers 503 to every send, after letting the test act while the
/// send is in flight (the attempt holds its claim then).
struct FailsWhileAcked {
    sends: std::sync::atomic::AtomicUsize,
    in_flight: tokio::sync::Notify,
    go_on: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl flare_shared::ports::SmsSender for FailsWhileAcked {
    async fn send(
        &self,
        _: &flare_shared::ports::SmsMessage,
    ) -> Result<flare_shared::ports::Receipt, flare_shared::ports::SendError> {
        self.sends.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.in_flight.notify_one();
        self.go_on.notified().await;
        Err(flare_shared::ports::SendError::Transient {
            code: FailReason::ProviderUnavailable,
            detail: Some("503".into()),
            source: None,
            retry_after: None,
        })
    }
}

#[tokio::test]
async fn an_ack_during_a_failing_cycle_sms_attempt_means_its_retry_sends_nothing() {
    let e = routed("incident-dispatched").await;
    e.run(1, e.due(1)).await;
    let who = RecipientRef::User(UserId::parse("u-17").unwrap());
    let job = e
        .pop_all()
        .into_iter()
        .find(|j| j.recipient == who && j.channel == Channel::Sms)
        .expect("u-17's cycle-1 SMS job");
    let gateway = Arc::new(FailsWhileAcked {
        sends: Default::default(),
        in_flight: Default::default(),
        go_on: Default::default(),
    });
    let deliverer = Deliverer {
        sms: [(
            job.provider,
            gateway.clone() as Arc<dyn flare_shared::ports::SmsSender>,
        )]
        .into_iter()
        .collect(),
        ..e.world.deliverer(None)
    };
    let lease = Duration::from_secs(30);
    // The ack lands while the attempt holds its claim (the cancel leaves it to the
    // attempt), then the attempt fails with a 503.
    let (first, ()) = tokio::join!(deliverer.deliver(&job, false, lease), async {
        gateway.in_flight.notified().await;
        e.ack("u-17").await;
        gateway.go_on.notify_one();
    });
    assert!(
        matches!(
            first,
            Err(flare_shared::app::deliver::DeliverError::Retry { .. })
        ),
        "{first:?}"
    );
    // The retry finds the ack: the record ends skipped, nothing is sent again.
    let retry = deliverer.deliver(&job, false, lease).await.unwrap();
    assert_eq!(retry, flare_shared::app::deliver::Delivered::Acknowledged);
    assert_eq!(gateway.sends.load(std::sync::atomic::Ordering::SeqCst), 1);
    let sms = e
        .log
        .recipient_records(&e.org, &e.id, &who)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.cycle == 1 && r.channel == Channel::Sms)
        .unwrap();
    assert_eq!(
        (sms.status, sms.reason.as_deref()),
        (DeliveryStatus::Skipped, Some("acknowledged"))
    );
    // And a duplicate of the job, later, finds it done.
    let again = deliverer.deliver(&job, false, lease).await.unwrap();
    assert!(
        matches!(again, flare_shared::app::deliver::Delivered::AlreadyDone(_)),
        "{again:?}"
    );
}

#[tokio::test]
async fn an_ack_ends_every_unsent_delivery_of_the_notification_itself_too() {
    // app_sms_email: u-17's cycle-0 SMS and email are queued (as if waiting in a
    // retry's backoff), not sent.
    let e = routed_with("incident-dispatched", Method::AppSmsEmail, 0).await;
    let who = RecipientRef::User(UserId::parse("u-17").unwrap());
    let pending = e
        .log
        .recipient_records(&e.org, &e.id, &who)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.status == DeliveryStatus::Pending)
        .count();
    assert_eq!(pending, 3, "push, SMS and email unsent");
    e.ack("u-17").await;
    for r in e.log.recipient_records(&e.org, &e.id, &who).await.unwrap() {
        assert_ne!(r.status, DeliveryStatus::Pending, "{r:?}");
        if r.status == DeliveryStatus::Skipped {
            assert_eq!(r.reason.as_deref(), Some("acknowledged"), "{r:?}");
        }
    }
}

#[tokio::test]
async fn a_replay_before_the_first_cycle_starts_no_second_chain() {
    let e = routed("incident-dispatched").await;
    let first = e
        .scheduled
        .iter()
        .find(|(c, _)| c.check == CheckKind::Escalation)
        .map(|(c, _)| c.clone())
        .unwrap();
    // The event again, before cycle 1: its timer is set again, as a chain of its own.
    e.notifier.route(&e.event).await.unwrap();
    let second = e
        .queue
        .take_checks()
        .into_iter()
        .find(|(c, _)| c.check == CheckKind::Escalation)
        .map(|(c, _)| c)
        .expect("the replay sets a timer (it cannot know whether the first routing did)");
    assert_ne!(first.chain, second.chain);
    let ran = e.deliverer.check(&first, e.due(1)).await.unwrap();
    assert_eq!(ran.escalated, 2);
    assert!(
        ran.follow_up
            .as_ref()
            .is_some_and(|(c, _)| c.chain == first.chain)
    );
    // The second chain's timer finds the first chain kept: nothing, and no next timer.
    let dropped = e.deliverer.check(&second, e.due(1)).await.unwrap();
    assert_eq!((dropped.escalated, dropped.follow_up), (0, None));
    // The first chain's own timer again (SQS redelivers) is still its chain.
    let again = e.deliverer.check(&first, e.due(1)).await.unwrap();
    assert!(again.follow_up.is_some());
}

#[tokio::test]
async fn a_cycle_ends_the_fallback_still_held_by_the_window_as_escalated() {
    // The window (60 s) outlasts the escalation interval (10 s): the cycle's SMS and
    // email stand in for the held ones, which are not sent as well.
    let e = routed_with("incident-dispatched", Method::AppThenSmsEmail, 60).await;
    e.run(1, e.due(1)).await;
    let who = RecipientRef::User(UserId::parse("u-17").unwrap());
    let records = e.log.recipient_records(&e.org, &e.id, &who).await.unwrap();
    for r in records
        .iter()
        .filter(|r| r.cycle == 0 && r.channel != Channel::Push)
    {
        assert_eq!(
            (r.status, r.reason.as_deref(), r.awaiting_push),
            (DeliveryStatus::Skipped, Some("escalated"), false),
            "{r:?}"
        );
    }
    assert_eq!(e.take_jobs(), every_channel(1, &["u-17", "u-18"]));
}

#[tokio::test]
async fn a_replay_after_a_cycle_started_queues_only_the_first_notifications_work() {
    let e = routed("incident-dispatched").await;
    e.run(1, e.due(1)).await;
    e.take_jobs();
    let replay = e.notifier.route(&e.event).await.unwrap();
    assert!(replay.replay);
    assert!(
        e.take_jobs().iter().all(|(_, _, cycle)| *cycle == 0),
        "cycle 1's jobs have their own timer"
    );
    assert!(
        e.queue.take_checks().is_empty(),
        "the running escalation is not started a second time"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Each user acknowledges before some cycle (or never); every cycle's check runs
    /// when due, some twice: a user is never sent anything in a cycle after their ack.
    #[test]
    fn after_an_ack_no_later_cycle_sends_anything(
        ack_before in prop::collection::vec(prop::option::of(1u32..=CYCLES), 2),
        twice in prop::collection::vec(any::<bool>(), CYCLES as usize),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let e = routed("incident-dispatched").await;
            let users = ["u-17", "u-18"];
            let mut sent = Vec::new();
            for cycle in 1..=CYCLES {
                for (u, ack) in users.iter().zip(&ack_before) {
                    if *ack == Some(cycle) {
                        e.ack(u).await;
                    }
                }
                e.run(cycle, e.due(cycle)).await;
                if twice[cycle as usize - 1] {
                    e.run(cycle, e.due(cycle) + TimeDelta::seconds(1)).await;
                }
                sent.extend(e.take_jobs());
            }
            for (u, ack) in users.iter().zip(&ack_before) {
                let key = format!("user:{u}");
                let last = ack.map_or(CYCLES, |a| a - 1);
                for (who, _, cycle) in &sent {
                    if *who == key {
                        prop_assert!(*cycle <= last, "{} sent in cycle {} after its ack before {:?}", u, cycle, ack);
                    }
                }
                // Before the ack, every cycle reached them on every channel.
                for cycle in 1..=last {
                    for c in Channel::ALL {
                        prop_assert!(sent.contains(&(key.clone(), c, cycle)), "{} {:?} cycle {}", u, c, cycle);
                    }
                }
            }
            Ok(())
        })?;
    }
}

/// v1.2: an answer (`POST .../response`) is an ack: the cycles stop for the recipient,
/// what was held behind push ends `skipped` `acknowledged`, and the view and the list
/// show the latest answer. A wrong value is a 400, a stranger's answer a 404.
#[tokio::test]
async fn an_answer_is_an_ack_and_the_latest_one_stands() {
    let e = routed_with("incident-dispatched", Method::AppThenSmsEmail, 60).await;
    let answer = |who: &'static str, body: &'static str| {
        let (w, id) = (&e.world, &e.id);
        async move { w.recipient_post_body(who, id, "response", body).await }
    };
    assert_eq!(answer("u-17", r#"{"response": "maybe"}"#).await, 400);
    assert_eq!(answer("u-99", r#"{"response": "responding"}"#).await, 404);
    assert_eq!(answer("u-17", r#"{"response": "responding"}"#).await, 204);
    assert_eq!(answer("u-17", r#"{"response": "unavailable"}"#).await, 204);
    let who = RecipientRef::User(UserId::parse("u-17").unwrap());
    for r in e.log.recipient_records(&e.org, &e.id, &who).await.unwrap() {
        assert_eq!(
            (r.status, r.reason.as_deref()),
            (DeliveryStatus::Skipped, Some("acknowledged")),
            "{r:?}"
        );
    }
    e.run(1, e.due(1)).await;
    assert_eq!(e.take_jobs(), every_channel(1, &["u-18"]));
    let view = flare_shared::app::notifications::view(&e.logged().await);
    let u17 = view["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["user_id"] == "u-17")
        .unwrap()
        .clone();
    assert_eq!(u17["response"], "unavailable", "{u17}");
    assert_eq!(u17["responded_via"], "app");
    assert!(u17["responded_at"].is_string() && u17["acknowledged_at"].is_string());
    let listed = e.log.list_notifications(&e.org, None, 10).await.unwrap();
    assert_eq!(
        (listed[0].counts.responding, listed[0].counts.unavailable),
        (0, 1)
    );
}
