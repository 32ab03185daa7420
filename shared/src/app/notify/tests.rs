use super::*;
use crate::app::fixtures::{notification, record};
use crate::domain::Channel::{Email, Push, Sms};
use DeliveryStatus::{Pending, Sent, Skipped};
use std::time::Duration;

fn key(who: &str) -> String {
    RecipientRef::User(UserId::parse(who).unwrap()).key()
}

#[test]
fn routing_enqueues_the_notifications_own_pending_records_but_not_those_held_behind_push() {
    let n = notification();
    let mut escalated = record("u-3", Sms, Pending, false);
    escalated.cycle = 1;
    let records = [
        record("u-1", Push, Pending, false),
        record("u-1", Sms, Pending, true),
        record("u-2", Email, Skipped, false),
        escalated,
        record("u-4", Sms, Sent, false),
        record("u-5", Email, Pending, false),
    ];
    let jobs: Vec<_> = ready_jobs(&n, &records)
        .iter()
        .map(|j| (j.recipient.key(), j.channel))
        .collect();
    assert_eq!(jobs, [(key("u-1"), Push), (key("u-5"), Email)]);
}

#[test]
fn the_window_timer_is_one_per_notification_and_only_while_something_is_held() {
    let mut n = notification();
    let held = [
        record("u-1", Push, Pending, false),
        record("u-1", Sms, Pending, true),
    ];
    assert!(window_timer(&n, &held).is_none(), "no window");
    n.app_fallback_seconds = Some(90);
    let (check, delay) = window_timer(&n, &held).unwrap();
    assert_eq!(
        (check.check, check.cycle, delay),
        (CheckKind::AppFallback, 0, Duration::from_secs(90))
    );
    assert_eq!(check.lane, n.category.lane());
    // The flag still set on a record that ended: not held.
    let ended = [
        record("u-1", Push, Pending, false),
        record("u-1", Sms, Sent, true),
    ];
    assert!(window_timer(&n, &ended).is_none(), "nothing held");
}

#[test]
fn the_first_escalation_timer_is_set_until_a_cycle_has_started() {
    let now = chrono::Utc::now();
    let mut n = notification();
    let records = [record("u-1", Push, Sent, false)];
    assert!(first_escalation(&n, &records, now).is_none(), "no plan");
    n.escalation = Some(EscalationPlan {
        after_seconds: 300,
        cycles: 2,
        started_at: now,
    });
    let (check, delay) = first_escalation(&n, &records, now).unwrap();
    assert_eq!(
        (check.check, check.cycle, delay),
        (CheckKind::Escalation, 1, Duration::from_secs(300))
    );
    let overdue = now + chrono::TimeDelta::seconds(600);
    let (_, delay) = first_escalation(&n, &records, overdue).unwrap();
    assert_eq!(delay, Duration::ZERO, "overdue: at once");
    let mut started = record("u-1", Push, Pending, false);
    started.cycle = 1;
    let replayed = [records[0].clone(), started];
    assert!(first_escalation(&n, &replayed, now).is_none());
}

#[test]
fn a_replay_writes_only_the_planned_records_not_stored_yet() {
    let stored = [record("u-1", Push, Sent, false)];
    let mut escalated = record("u-1", Push, Pending, false);
    escalated.cycle = 1;
    let planned = vec![
        record("u-1", Push, Pending, false),
        record("u-1", Sms, Pending, true),
        escalated,
        record("u-2", Push, Pending, false),
    ];
    let missing: Vec<_> = missing_records(planned, &stored)
        .iter()
        .map(|r| (r.recipient.key(), r.channel, r.cycle))
        .collect();
    assert_eq!(
        missing,
        [
            (key("u-1"), Sms, 0),
            (key("u-1"), Push, 1),
            (key("u-2"), Push, 0)
        ]
    );
}

#[test]
fn routing_counts_only_what_it_decided_itself() {
    assert_eq!(decided_outcome(Skipped), Some(Outcome::Skipped));
    assert_eq!(
        decided_outcome(DeliveryStatus::Failed),
        Some(Outcome::Failed)
    );
    assert_eq!(decided_outcome(Pending), None);
}

#[test]
fn an_sos_that_tells_no_one_says_why_on_its_creator() {
    let creator = UserId::parse("u-9").unwrap();
    let user = |contacts: serde_json::Value| -> User {
        serde_json::from_value(serde_json::json!({
            "user_id": "u-9", "name": "Ann", "license": "basic_responder",
            "virtual": false, "emergency_contacts": contacts,
        }))
        .unwrap()
    };
    assert_eq!(
        creator_plan(&creator, None),
        Some(routing::unknown_user(&creator))
    );
    let alone = user(serde_json::json!([]));
    assert_eq!(
        creator_plan(&creator, Some(&alone)),
        Some(routing::no_emergency_contacts(&creator))
    );
    let known = user(serde_json::json!([{"name": "Bob", "mobile": "+4915112345678"}]));
    assert!(creator_plan(&creator, Some(&known)).is_none());
}
