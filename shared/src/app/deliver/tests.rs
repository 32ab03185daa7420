use super::*;

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
    use crate::domain::*;
    let org = OrgId::parse("acme").unwrap();
    let n = Notification {
        notification_id: NotificationId::parse("n-1").unwrap(),
        org_id: org,
        category: Category::Dispatch,
        incident_id: None,
        control_center_id: ControlCenterId::main(),
        message: Message::default(),
        created_at: chrono::Utc::now(),
        app_fallback_seconds: None,
        escalation: None,
    };
    let record = |who: &str, channel, status, held| {
        let user = UserId::parse(who).unwrap();
        DeliveryRecord {
            notification_id: n.notification_id.clone(),
            recipient: RecipientRef::User(user.clone()),
            channel,
            status,
            reason: None,
            attempts: 2,
            fallback: false,
            provider: Some(Provider::Sns),
            provider_message_id: None,
            destination: Some(Destination::Devices(user)),
            awaiting_push: held,
            claimed_until: None,
            delivered_at: None,
            fallback_reason: None,
            fallback_at: None,
            cycle: 0,
            failover_from: None,
            detail: None,
            complaint: false,
        }
    };
    use DeliveryStatus::{Pending, Sent};
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
