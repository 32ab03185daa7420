use super::*;
use crate::app::fixtures::{notification, record};
use crate::domain::*;
use DeliveryStatus::{Delivered, Failed, Pending, Sent, Skipped};

#[test]
fn retries_wait_longer_each_time_up_to_thirty_times_the_base() {
    let base = Duration::from_secs(10);
    let waits: Vec<u64> = (1..=7).map(|a| retry_delay(base, a).as_secs()).collect();
    assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300]);
    assert_eq!(
        retry_delay(base, 0),
        base,
        "a first attempt never waits less"
    );
}

#[test]
fn unfinished_work_is_each_pending_record_and_the_push_behind_unresolved_held_ones() {
    let n = notification();
    let logged = crate::ports::Logged {
        notification: n.clone(),
        records: vec![
            // u-1: push pending, SMS and email held behind it: only the push job.
            record("u-1", Channel::Push, Pending, false),
            record("u-1", Channel::Sms, Pending, true),
            record("u-1", Channel::Email, Pending, true),
            // u-2: push sent, its held SMS and email never resolved: the push job
            // once, which resolves both.
            record("u-2", Channel::Sms, Pending, true),
            record("u-2", Channel::Push, Sent, false),
            record("u-2", Channel::Email, Pending, true),
            // u-3: an SMS of its own, pending; its email sent.
            record("u-3", Channel::Sms, Pending, false),
            record("u-3", Channel::Email, Sent, false),
        ],
        acks: vec![],
        responses: vec![],
    };
    let jobs: Vec<(String, Channel, u32)> = unfinished_jobs(&logged)
        .into_iter()
        .map(|(j, a)| (j.recipient.key(), j.channel, a))
        .collect();
    assert_eq!(
        jobs,
        [
            ("user:u-1".to_string(), Channel::Push, 2),
            ("user:u-3".to_string(), Channel::Sms, 2),
            ("user:u-2".to_string(), Channel::Push, 2),
        ]
    );
}

fn logged(records: Vec<DeliveryRecord>) -> crate::ports::Logged {
    crate::ports::Logged {
        notification: notification(),
        records,
        acks: vec![],
        responses: vec![],
    }
}

fn key(who: &str) -> String {
    RecipientRef::User(UserId::parse(who).unwrap()).key()
}

#[test]
fn the_window_plan_sends_skips_or_waits_for_each_held_record_by_its_own_push() {
    let now = chrono::Utc::now();
    let window = chrono::TimeDelta::seconds(60);
    let at = |secs| now + chrono::TimeDelta::seconds(secs);
    let with_window = |mut r: DeliveryRecord, until| {
        r.fallback_at = Some(until);
        r
    };
    let mut escalated_push = record("u-6", Channel::Push, Delivered, false);
    escalated_push.cycle = 1;
    let mut no_destination = record("u-7", Channel::Sms, Pending, true);
    no_destination.destination = None;
    let logged = logged(vec![
        // u-1: the app confirmed the push: skipped.
        record("u-1", Channel::Push, Delivered, false),
        record("u-1", Channel::Sms, Pending, true),
        // u-2: push sent, its window over with no receipt: fallback.
        record("u-2", Channel::Push, Sent, false),
        with_window(record("u-2", Channel::Email, Pending, true), at(-1)),
        // u-3: push sent, its window not over: wait for it.
        record("u-3", Channel::Push, Sent, false),
        with_window(record("u-3", Channel::Sms, Pending, true), at(30)),
        // u-4: push in flight: look again a window later.
        record("u-4", Channel::Push, Pending, false),
        record("u-4", Channel::Email, Pending, true),
        // u-5: no push at all: push was not possible.
        record("u-5", Channel::Sms, Pending, true),
        // u-6: only an escalation cycle's push, which holds nothing back.
        escalated_push,
        record("u-6", Channel::Email, Pending, true),
        // u-7: cannot be sent (no destination): left alone.
        no_destination,
        record("u-7", Channel::Push, Failed, false),
        // u-8: released (not held): not the window's business.
        record("u-8", Channel::Push, Failed, false),
        record("u-8", Channel::Sms, Pending, false),
    ]);
    let plan = check::window_plan(&logged, window, now);
    let fall_back: Vec<_> = plan
        .fall_back
        .iter()
        .map(|(j, why)| (j.recipient.key(), j.channel, j.fallback, *why))
        .collect();
    assert_eq!(
        fall_back,
        [
            (
                key("u-2"),
                Channel::Email,
                true,
                FallbackReason::NoAppReceipt
            ),
            (
                key("u-5"),
                Channel::Sms,
                true,
                FallbackReason::PushNotPossible
            ),
            (
                key("u-6"),
                Channel::Email,
                true,
                FallbackReason::PushNotPossible
            ),
        ]
    );
    let skip: Vec<_> = plan
        .skip
        .iter()
        .map(|(r, why)| (r.recipient.key(), r.channel, *why))
        .collect();
    assert_eq!(
        skip,
        [(key("u-1"), Channel::Sms, SkipReason::PushDelivered)]
    );
    assert_eq!(plan.next, Some(at(30)), "the earliest of u-3's and u-4's");
}

#[test]
fn a_window_check_moves_at_most_its_batch_and_runs_again_at_once_for_the_rest() {
    let now = chrono::Utc::now();
    let later = now + chrono::TimeDelta::seconds(60);
    let records: Vec<DeliveryRecord> = ["u-1", "u-2", "u-3"]
        .into_iter()
        .map(|who| record(who, Channel::Sms, Pending, true))
        .collect();
    let logged = logged(records.clone());
    let plan = |skips: usize| {
        let mut p = check::window_plan(&logged, chrono::TimeDelta::seconds(60), now);
        p.skip = records[..skips]
            .iter()
            .map(|r| (r, SkipReason::PushDelivered))
            .collect();
        p.next = Some(later);
        p
    };
    // Three fallbacks and two skips, two at most: the fallbacks first.
    let mut p = plan(2);
    p.bound(2, now);
    assert_eq!((p.fall_back.len(), p.skip.len(), p.next), (2, 0, Some(now)));
    let mut p = plan(1);
    p.bound(3, now);
    assert_eq!((p.fall_back.len(), p.skip.len(), p.next), (3, 0, Some(now)));
    // Within the batch (exactly): nothing changes.
    let mut p = plan(1);
    p.bound(4, now);
    assert_eq!(
        (p.fall_back.len(), p.skip.len(), p.next),
        (3, 1, Some(later))
    );
}

#[test]
fn an_escalation_cycle_runs_only_within_its_plan_once_it_is_due() {
    use check::{CycleGate, cycle_gate};
    let started_at = chrono::Utc::now();
    let plan = EscalationPlan {
        after_seconds: 300,
        cycles: 2,
        started_at,
    };
    let due = |cycle| plan.due(cycle);
    assert_eq!(cycle_gate(None, 1, started_at), CycleGate::Over);
    assert_eq!(cycle_gate(Some(plan), 0, due(1)), CycleGate::Over);
    assert_eq!(cycle_gate(Some(plan), 3, due(3)), CycleGate::Over);
    assert_eq!(
        cycle_gate(Some(plan), 1, started_at),
        CycleGate::NotYet(due(1))
    );
    assert_eq!(cycle_gate(Some(plan), 1, due(1)), CycleGate::Run(plan));
    assert_eq!(cycle_gate(Some(plan), 2, due(3)), CycleGate::Run(plan));
}

#[test]
fn an_escalation_cycle_is_followed_by_the_next_until_its_last() {
    let n = notification();
    let plan = EscalationPlan {
        after_seconds: 300,
        cycles: 2,
        started_at: chrono::Utc::now(),
    };
    let check = CheckJob {
        check: CheckKind::Escalation,
        org_id: n.org_id.clone(),
        notification_id: n.notification_id.clone(),
        cycle: 1,
        page: 0,
        chain: None,
        lane: Lane::Normal,
    };
    let (next, at) = check::follow_up(&check, &n, &plan).unwrap();
    assert_eq!((next.cycle, at), (2, plan.due(2)));
    assert_eq!(next.lane, n.category.lane(), "the notification's own lane");
    let last = CheckJob { cycle: 2, ..check };
    assert_eq!(check::follow_up(&last, &n, &plan), None);
}

#[test]
fn an_escalation_cycle_supersedes_only_held_records_of_its_recipients_of_cycle_zero() {
    let mut n = notification();
    n.app_fallback_seconds = Some(60);
    let mut later_cycle = record("u-1", Channel::Email, Pending, true);
    later_cycle.cycle = 1;
    let logged = logged(vec![
        record("u-1", Channel::Push, Sent, false),
        record("u-1", Channel::Sms, Pending, true),
        later_cycle,
        record("u-1", Channel::Email, Skipped, true),
        record("u-2", Channel::Sms, Pending, true),
    ]);
    let template = JobTemplate::from(&n);
    let u1 = RecipientRef::User(UserId::parse("u-1").unwrap());
    let dest = Destination::Devices(UserId::parse("u-1").unwrap());
    let jobs = [template.job(&u1, Channel::Push, Provider::Sns, &dest, false)];
    let superseded: Vec<_> = check::superseded_held(&logged, &jobs)
        .into_iter()
        .map(|r| (r.recipient.key(), r.channel, r.cycle))
        .collect();
    assert_eq!(superseded, [(key("u-1"), Channel::Sms, 0)]);
}

#[test]
fn a_cycles_records_and_jobs_carry_it_and_its_push_holds_nothing_back() {
    use crate::domain::routing::{Action, PlannedDelivery};
    let mut n = notification();
    n.app_fallback_seconds = Some(60);
    let u1 = UserId::parse("u-1").unwrap();
    let send = |channel| PlannedDelivery {
        channel,
        fallback: false,
        action: Action::Send {
            provider: Provider::Sns,
            destination: Destination::Devices(u1.clone()),
        },
    };
    let plans = [RecipientPlan {
        recipient: RecipientRef::User(u1.clone()),
        deliveries: [
            send(Channel::Push),
            send(Channel::Sms),
            PlannedDelivery {
                channel: Channel::Email,
                fallback: false,
                action: Action::Skip(SkipReason::NoPrimaryEmail),
            },
        ],
    }];
    let (records, jobs) = check::cycle_work(&n, &plans, 2);
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.cycle == 2));
    let jobs: Vec<_> = jobs
        .iter()
        .map(|j| (j.channel, j.cycle, j.app_fallback_seconds))
        .collect();
    assert_eq!(jobs, [(Channel::Push, 2, None), (Channel::Sms, 2, None)]);
}

#[test]
fn a_throttled_send_postpones_a_transient_one_retries_until_the_last_attempt() {
    use attempt::{AfterFailure, after_failure, failed_reason};
    let throttled = SendError::throttled(FailReason::GatewayStatus, Duration::from_secs(2));
    let transient = SendError::transient(FailReason::GatewayTimeout);
    let permanent = SendError::permanent(FailReason::InvalidNumber);
    assert_eq!(after_failure(&throttled, false), AfterFailure::Postpone);
    assert_eq!(
        after_failure(&throttled, true),
        AfterFailure::Postpone,
        "the pace spends no attempt, the last one included"
    );
    assert_eq!(
        after_failure(&SendError::paced(), true),
        AfterFailure::Postpone
    );
    assert_eq!(after_failure(&transient, false), AfterFailure::Retry);
    assert_eq!(after_failure(&transient, true), AfterFailure::Fail);
    assert_eq!(after_failure(&permanent, false), AfterFailure::Fail);
    assert_eq!(
        failed_reason(&transient),
        wire_reason(FailReason::GaveUp, Some(&transient.reason()))
    );
    assert_eq!(failed_reason(&permanent), permanent.reason());
}

#[test]
fn after_push_held_records_are_sent_as_fallback_or_skipped() {
    use attempt::{after_push_steps, held_deliveries};
    let mut released = record("u-1", Channel::Sms, Pending, false);
    released.channel = Channel::Email;
    let records = [
        record("u-1", Channel::Push, Failed, false),
        record("u-1", Channel::Sms, Pending, true),
        released,
    ];
    let held = held_deliveries(&records);
    assert_eq!(
        held.iter().map(|h| h.channel).collect::<Vec<_>>(),
        [Channel::Sms]
    );
    let n = notification();
    let u1 = RecipientRef::User(UserId::parse("u-1").unwrap());
    let dest = Destination::Devices(UserId::parse("u-1").unwrap());
    let push = JobTemplate::from(&n).job(&u1, Channel::Push, Provider::Sns, &dest, false);
    let steps = after_push_steps(&push, &held, PushOutcome::FailedOnEveryDevice);
    let jobs: Vec<_> = steps.send.iter().map(|j| (j.channel, j.fallback)).collect();
    assert_eq!((jobs, steps.skip), (vec![(Channel::Sms, true)], vec![]));
    let steps = after_push_steps(&push, &held, PushOutcome::Sent);
    assert!(steps.send.is_empty());
    assert_eq!(
        steps.skip,
        [(Channel::Sms, Some(Provider::Sns), SkipReason::PushSent)]
    );
}

#[test]
fn a_cycle_page_waits_for_its_route_page_but_not_forever() {
    use super::escalate_pages::{ROUTING_WAIT, routing_wait};
    let due = chrono::Utc::now();
    assert_eq!(routing_wait(true, due, due), None, "routed: runs");
    let again = routing_wait(false, due, due).expect("not routed: waits");
    assert!(again > due && again - due <= chrono::TimeDelta::seconds(5));
    let late = due + ROUTING_WAIT - chrono::TimeDelta::seconds(1);
    assert!(routing_wait(false, due, late).is_some());
    assert_eq!(
        routing_wait(false, due, due + ROUTING_WAIT),
        None,
        "a route page never routed is escalated anyway"
    );
}
