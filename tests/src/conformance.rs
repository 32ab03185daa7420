//! What every [`DeliveryLog`] adapter promises, as one suite: `tests/tests/delivery_log.rs`
//! runs it against the in-memory adapter and against DynamoDB on moto, so the two cannot
//! drift apart again (they did: the in-memory adapter never overwrote a record, DynamoDB's
//! blind batch puts did).

use chrono::Utc;
use flare_shared::domain::{
    Answer, AnsweredVia, Category, Channel, ControlCenterId, DeliveryRecord, DeliveryStatus,
    Destination, Message, Notification, NotificationId, OrgId, PhoneNumber, Provider, RecipientRef,
    Slot, UserId,
};
use flare_shared::ports::{Claim, Created, DeliveryLog, Finish};
use std::time::Duration;

fn user(id: &str) -> RecipientRef {
    RecipientRef::User(UserId::parse(id).unwrap())
}

/// A dispatch notification of `org`, created now.
pub fn notification(org: &OrgId) -> Notification {
    Notification {
        notification_id: NotificationId::generate(),
        org_id: org.clone(),
        category: Category::Dispatch,
        incident_id: None,
        control_center_id: ControlCenterId::main(),
        message: Message {
            title: "Structure fire".into(),
            body: "Engine 7 to 12 Main St.".into(),
        },
        created_at: Utc::now(),
        app_fallback_seconds: None,
        escalation: None,
        audience: None,
        pages: 0,
    }
}

/// A pending record of `n` for user `who` (held behind push when `held`).
pub fn record(n: &Notification, who: &str, channel: Channel, held: bool) -> DeliveryRecord {
    DeliveryRecord {
        notification_id: n.notification_id.clone(),
        recipient: user(who),
        channel,
        status: DeliveryStatus::Pending,
        reason: None,
        attempts: 0,
        fallback: held,
        provider: Some(Provider::Sns),
        provider_message_id: None,
        destination: Some(Destination::Phone(
            PhoneNumber::parse("+14155550100").unwrap(),
        )),
        awaiting_push: held,
        claimed_until: None,
        delivered_at: None,
        fallback_reason: None,
        fallback_at: None,
        cycle: 0,
        failover_from: None,
        detail: None,
        complaint: false,
        encoding: None,
        segments: None,
    }
}

const LIVE: Duration = Duration::from_secs(60);

/// A lease that has run out by the time anyone looks (DynamoDB compares milliseconds).
async fn expired_claim(log: &dyn DeliveryLog, n: &Notification, who: &str, c: Channel) -> Claim {
    let claim = log
        .claim(
            &n.org_id,
            &n.notification_id,
            &user(who),
            c.into(),
            Duration::ZERO,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    claim
}

async fn status(log: &dyn DeliveryLog, n: &Notification, who: &str, c: Channel) -> DeliveryRecord {
    let logged = log
        .get_notification(&n.org_id, &n.notification_id)
        .await
        .unwrap()
        .expect("the notification");
    logged
        .records
        .into_iter()
        .find(|r| r.recipient == user(who) && r.channel == c && r.cycle == 0)
        .expect("the record")
}

/// Runs every promise against `log`, in an organization of its own.
pub async fn delivery_log(log: &dyn DeliveryLog, org: &OrgId) {
    let n = notification(org);
    let (id, sms, push, email) = (
        &n.notification_id,
        Channel::Sms,
        Channel::Push,
        Channel::Email,
    );
    let finish = |who: &'static str, c: Channel, outcome: Finish| async move {
        log.finish(org, id, &user(who), c.into(), outcome)
            .await
            .unwrap()
    };
    let claim = |who: &'static str, c: Channel| async move {
        log.claim(org, id, &user(who), c.into(), LIVE)
            .await
            .unwrap()
    };

    // Creating is idempotent on the id.
    assert_eq!(log.create_notification(&n).await.unwrap(), Created::New);
    assert_eq!(
        log.create_notification(&n).await.unwrap(),
        Created::AlreadyExists
    );
    let first = [
        record(&n, "u-1", sms, false),
        record(&n, "u-1", push, false),
        record(&n, "u-2", sms, true),
        record(&n, "u-2", email, true),
    ];
    log.put_first_records(&n, &first).await.unwrap();
    let logged = log.get_notification(org, id).await.unwrap().unwrap();
    assert_eq!(logged.notification, n);
    assert_eq!(logged.records.len(), 4);

    // Claims: one attempt at a time, counted; nothing to claim is Missing.
    assert_eq!(claim("u-1", sms).await, Claim::Claimed { attempts: 1 });
    assert_eq!(
        claim("u-1", sms).await,
        Claim::InFlight,
        "a live claim is not taken twice"
    );
    assert_eq!(claim("u-9", sms).await, Claim::Missing);
    let sent = Finish::Sent {
        attempt: 1,
        provider: Provider::Sns,
        provider_message_id: Some("m-1".into()),
        receipt_key: None,
        failover_from: None,
        sms: None,
    };
    assert!(finish("u-1", sms, sent.clone()).await);
    assert!(
        !finish("u-1", sms, sent).await,
        "a repeated finish changes nothing"
    );
    assert_eq!(
        claim("u-1", sms).await,
        Claim::AlreadyDone(DeliveryStatus::Sent)
    );
    let r = status(log, &n, "u-1", sms).await;
    assert_eq!(
        (r.status, r.attempts, r.provider_message_id.as_deref()),
        (DeliveryStatus::Sent, 1, Some("m-1"))
    );

    // A replay writes what is missing and never resets what moved on.
    let mut replayed = first.to_vec();
    replayed.push(record(&n, "u-3", sms, false));
    log.put_records(&n, &replayed).await.unwrap();
    let r = status(log, &n, "u-1", sms).await;
    assert_eq!(
        (r.status, r.attempts),
        (DeliveryStatus::Sent, 1),
        "replay kept the sent record"
    );
    assert_eq!(
        claim("u-1", sms).await,
        Claim::AlreadyDone(DeliveryStatus::Sent)
    );
    assert_eq!(
        status(log, &n, "u-3", sms).await.status,
        DeliveryStatus::Pending
    );
    assert_eq!(
        log.get_notification(org, id)
            .await
            .unwrap()
            .unwrap()
            .records
            .len(),
        5
    );

    // Fencing: once a newer attempt claimed, the stale one can neither drop that claim
    // nor fail the record; a send it made is still recorded (it happened).
    assert_eq!(
        expired_claim(log, &n, "u-1", push).await,
        Claim::Claimed { attempts: 1 }
    );
    assert_eq!(
        claim("u-1", push).await,
        Claim::Claimed { attempts: 2 },
        "an expired lease"
    );
    let stale_retry = Finish::Retry {
        attempt: 1,
        reason: "provider_timeout".into(),
    };
    assert!(!finish("u-1", push, stale_retry).await);
    assert_eq!(
        claim("u-1", push).await,
        Claim::InFlight,
        "attempt 2 still holds it"
    );
    let stale_fail = Finish::Failed {
        attempt: 1,
        reason: "gave_up: provider_timeout".into(),
    };
    assert!(!finish("u-1", push, stale_fail).await);
    assert_eq!(
        status(log, &n, "u-1", push).await.status,
        DeliveryStatus::Pending
    );
    let retry = Finish::Retry {
        attempt: 2,
        reason: "provider_timeout".into(),
    };
    assert!(
        finish("u-1", push, retry).await,
        "the latest attempt's retry"
    );
    let r = status(log, &n, "u-1", push).await;
    assert_eq!(
        (r.status, r.reason.as_deref()),
        (DeliveryStatus::Pending, Some("provider_timeout"))
    );
    assert_eq!(
        claim("u-1", push).await,
        Claim::Claimed { attempts: 3 },
        "free after a retry"
    );
    // A postponed attempt (the provider's pace had no moment for it) is not counted:
    // only the latest attempt's, and the next claim is attempt 3 again.
    let stale_postpone = Finish::Postpone {
        attempt: 2,
        reason: "paced".into(),
    };
    assert!(!finish("u-1", push, stale_postpone).await);
    let postpone = Finish::Postpone {
        attempt: 3,
        reason: "paced".into(),
    };
    assert!(
        finish("u-1", push, postpone).await,
        "the latest attempt's postponement"
    );
    let r = status(log, &n, "u-1", push).await;
    assert_eq!(
        (r.status, r.reason.as_deref(), r.attempts),
        (DeliveryStatus::Pending, Some("paced"), 2)
    );
    assert_eq!(
        claim("u-1", push).await,
        Claim::Claimed { attempts: 3 },
        "free after a postponement, its claim not counted"
    );
    let stale_sent = Finish::Sent {
        attempt: 2,
        provider: Provider::Sns,
        provider_message_id: None,
        receipt_key: None,
        failover_from: None,
        sms: None,
    };
    assert!(finish("u-1", push, stale_sent).await);
    assert_eq!(
        status(log, &n, "u-1", push).await.status,
        DeliveryStatus::Sent
    );

    // Held deliveries move only while held.
    let release = || Finish::Release;
    let will_fall_back = || Finish::WillFallBack {
        fallback_reason: flare_shared::domain::reason::FallbackReason::PushFailed,
    };
    // A held record's window is written once: a repeated push run does not move it.
    let end =
        chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis() + 60_000).unwrap();
    let wait = |until| Finish::Wait { until };
    assert!(!finish("u-1", sms, wait(end)).await, "not held");
    assert!(finish("u-2", sms, wait(end)).await);
    assert!(
        !finish("u-2", sms, wait(end + chrono::Duration::seconds(5))).await,
        "the window never moves"
    );
    let waiting = status(log, &n, "u-2", sms).await;
    assert_eq!(
        (waiting.status, waiting.awaiting_push, waiting.fallback_at),
        (DeliveryStatus::Pending, true, Some(end)),
        "still held and pending, with its window's end"
    );
    assert!(!finish("u-1", sms, will_fall_back()).await, "not held");
    assert!(finish("u-2", sms, will_fall_back()).await);
    let marked = status(log, &n, "u-2", sms).await;
    assert_eq!(
        (marked.awaiting_push, marked.fallback_reason),
        (
            true,
            Some(flare_shared::domain::reason::FallbackReason::PushFailed)
        ),
        "still held, its reason recorded"
    );
    assert!(!finish("u-1", sms, release()).await, "not held");
    assert!(finish("u-2", sms, release()).await);
    assert!(!finish("u-2", sms, release()).await, "released once");
    let released = status(log, &n, "u-2", sms).await;
    assert_eq!(
        (released.awaiting_push, released.fallback_reason),
        (
            false,
            Some(flare_shared::domain::reason::FallbackReason::PushFailed)
        )
    );
    let skip = || Finish::SkipHeld {
        reason: "push_sent".into(),
    };
    assert!(
        !finish("u-2", sms, skip()).await,
        "released, so not skipped"
    );
    assert!(finish("u-2", email, skip()).await);
    let r = status(log, &n, "u-2", email).await;
    assert_eq!(
        (r.status, r.reason.as_deref()),
        (DeliveryStatus::Skipped, Some("push_sent"))
    );
    assert_eq!(
        claim("u-2", email).await,
        Claim::AlreadyDone(DeliveryStatus::Skipped)
    );
    // A held record claimed by its fallback job is no longer held: a late release is a
    // no-op (the fallback was enqueued before the release).
    let n2 = notification(org);
    log.create_notification(&n2).await.unwrap();
    log.put_first_records(&n2, &[record(&n2, "u-2", sms, true)])
        .await
        .unwrap();
    let claimed = log
        .claim(org, &n2.notification_id, &user("u-2"), sms.into(), LIVE)
        .await
        .unwrap();
    assert_eq!(claimed, Claim::Claimed { attempts: 1 });
    assert!(
        !log.finish(
            org,
            &n2.notification_id,
            &user("u-2"),
            sms.into(),
            release()
        )
        .await
        .unwrap()
    );

    // One recipient's records, and no one else's (`u-2` is a prefix of `u-22`).
    log.put_records(&n2, &[record(&n2, "u-22", sms, false)])
        .await
        .unwrap();
    let mine = log.recipient_records(org, id, &user("u-1")).await.unwrap();
    let mut channels: Vec<Channel> = mine.iter().map(|r| r.channel).collect();
    channels.sort_by_key(|c| c.as_str());
    assert_eq!(channels, [push, sms]);
    assert!(mine.iter().all(|r| r.recipient == user("u-1")));
    let two = log
        .recipient_records(org, &n2.notification_id, &user("u-2"))
        .await
        .unwrap();
    assert_eq!(two.len(), 1);
    assert!(
        log.recipient_records(org, id, &user("u-9"))
            .await
            .unwrap()
            .is_empty()
    );

    // Failure is final.
    assert_eq!(claim("u-3", sms).await, Claim::Claimed { attempts: 1 });
    assert!(
        finish(
            "u-3",
            sms,
            Finish::Failed {
                attempt: 1,
                reason: "invalid_number".into()
            }
        )
        .await
    );
    assert_eq!(
        claim("u-3", sms).await,
        Claim::AlreadyDone(DeliveryStatus::Failed)
    );

    // Receipts: only a sent record becomes delivered, once, keeping the first time.
    let first = chrono::DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
        .unwrap()
        .to_utc();
    let delivered = |at| Finish::Delivered { at };
    assert!(finish("u-1", push, delivered(first)).await);
    assert!(
        !finish("u-1", push, delivered(first + chrono::Duration::seconds(5))).await,
        "a second receipt changes nothing"
    );
    let r = status(log, &n, "u-1", push).await;
    assert_eq!(
        (r.status, r.delivered_at),
        (DeliveryStatus::Delivered, Some(first))
    );
    assert_eq!(
        claim("u-1", push).await,
        Claim::AlreadyDone(DeliveryStatus::Delivered)
    );
    assert!(
        !finish("u-3", sms, delivered(first)).await,
        "failed stays failed"
    );
    assert!(
        !finish("u-9", push, delivered(first)).await,
        "no such record"
    );

    // Abandoning a dead-lettered job: a pending record ends failed, held or not and on
    // whatever attempt, but never under a live attempt's claim; a done one stays done.
    let n3 = notification(org);
    log.create_notification(&n3).await.unwrap();
    log.put_first_records(
        &n3,
        &[
            record(&n3, "u-4", sms, true),
            record(&n3, "u-5", sms, false),
            record(&n3, "u-6", sms, false),
        ],
    )
    .await
    .unwrap();
    let abandon = || Finish::Abandon {
        reason: "gave_up: dead_letter".into(),
    };
    let id3 = &n3.notification_id;
    let on3 = |who: &'static str, outcome: Finish| async move {
        log.finish(org, id3, &user(who), sms.into(), outcome)
            .await
            .unwrap()
    };
    assert!(on3("u-4", abandon()).await, "a held record");
    let r = status(log, &n3, "u-4", sms).await;
    assert_eq!(
        (r.status, r.reason.as_deref(), r.awaiting_push),
        (DeliveryStatus::Failed, Some("gave_up: dead_letter"), false)
    );
    let live = log
        .claim(org, &n3.notification_id, &user("u-5"), sms.into(), LIVE)
        .await
        .unwrap();
    assert_eq!(live, Claim::Claimed { attempts: 1 });
    assert!(!on3("u-5", abandon()).await, "a live claim");
    assert_eq!(
        status(log, &n3, "u-5", sms).await.status,
        DeliveryStatus::Pending
    );
    assert_eq!(
        expired_claim(log, &n3, "u-6", sms).await,
        Claim::Claimed { attempts: 1 }
    );
    assert!(
        on3("u-6", abandon()).await,
        "an expired claim (the attempt crashed)"
    );
    assert!(!on3("u-6", abandon()).await, "once");
    assert!(!on3("u-9", abandon()).await, "no such record");

    // Escalation cycles: a record per (recipient, channel, cycle), each moved on its own;
    // a cancel skips a pending one no live attempt holds, once.
    let n4 = notification(org);
    log.create_notification(&n4).await.unwrap();
    let cycle1 = |who| DeliveryRecord {
        cycle: 1,
        ..record(&n4, who, sms, false)
    };
    log.put_first_records(
        &n4,
        &[record(&n4, "u-7", sms, false), cycle1("u-7"), cycle1("u-8")],
    )
    .await
    .unwrap();
    let id4 = &n4.notification_id;
    let slot1 = flare_shared::domain::Slot {
        channel: sms,
        cycle: 1,
    };
    let cancel = || Finish::Cancel {
        reason: "acknowledged".into(),
    };
    let claimed = log
        .claim(org, id4, &user("u-8"), slot1, LIVE)
        .await
        .unwrap();
    assert_eq!(claimed, Claim::Claimed { attempts: 1 });
    assert!(
        !log.finish(org, id4, &user("u-8"), slot1, cancel())
            .await
            .unwrap(),
        "a live claim"
    );
    assert!(
        log.finish(org, id4, &user("u-7"), slot1, cancel())
            .await
            .unwrap()
    );
    assert!(
        !log.finish(org, id4, &user("u-7"), slot1, cancel())
            .await
            .unwrap(),
        "once"
    );
    let mut u7 = log.recipient_records(org, id4, &user("u-7")).await.unwrap();
    u7.sort_by_key(|r| r.cycle);
    let states: Vec<_> = u7
        .iter()
        .map(|r| (r.cycle, r.status, r.reason.as_deref()))
        .collect();
    assert_eq!(
        states,
        [
            (0, DeliveryStatus::Pending, None),
            (1, DeliveryStatus::Skipped, Some("acknowledged"))
        ],
        "cycle 0 untouched"
    );
    // A replay's put of the same records leaves each one as it is.
    log.put_records(&n4, &[cycle1("u-7")]).await.unwrap();
    let again = log.recipient_records(org, id4, &user("u-7")).await.unwrap();
    assert_eq!(again.len(), 2);
    assert!(
        again
            .iter()
            .any(|r| r.cycle == 1 && r.status == DeliveryStatus::Skipped)
    );

    // Acks: the first one counts, and its time is kept.
    assert!(
        log.ack(org, id, &UserId::parse("u-1").unwrap())
            .await
            .unwrap()
    );
    assert!(
        !log.ack(org, id, &UserId::parse("u-1").unwrap())
            .await
            .unwrap(),
        "a repeated ack"
    );
    let logged = log.get_notification(org, id).await.unwrap().unwrap();
    assert_eq!(logged.acks.len(), 1);
    assert_eq!(logged.acks[0].0.as_str(), "u-1");

    // Another organization sees nothing.
    let other = OrgId::parse(&format!("{}-other", org.as_str())).unwrap();
    assert!(log.get_notification(&other, id).await.unwrap().is_none());
    assert_eq!(
        log.claim(&other, id, &user("u-3"), sms.into(), LIVE)
            .await
            .unwrap(),
        Claim::Missing
    );

    list_notifications(
        log,
        &OrgId::parse(&format!("{}-list", org.as_str())).unwrap(),
    )
    .await;
    notification_pages(
        log,
        &OrgId::parse(&format!("{}-page", org.as_str())).unwrap(),
    )
    .await;
    route_pages(
        log,
        &OrgId::parse(&format!("{}-plan", org.as_str())).unwrap(),
    )
    .await;
}

/// A notification routed in pages: its pages as written (a second write before the
/// notification exists replaces them), each marked routed on its own, and the
/// notification read alone; no page of another notification.
async fn route_pages(log: &dyn DeliveryLog, org: &OrgId) {
    use flare_shared::domain::RoutePage;
    let n = Notification {
        pages: 2,
        ..notification(org)
    };
    let id = &n.notification_id;
    let page = |page: u32, ids: &[&str]| RoutePage {
        page,
        user_ids: ids.iter().map(|u| UserId::parse(u).unwrap()).collect(),
        routed: false,
    };
    log.put_route_pages(&n, &[page(1, &["u-old"])])
        .await
        .unwrap();
    let pages = [page(1, &["u-1", "u-2"]), page(2, &["u-3"])];
    log.put_route_pages(&n, &pages).await.unwrap();
    assert_eq!(log.notification(org, id).await.unwrap(), None);
    log.create_notification(&n).await.unwrap();
    assert_eq!(log.notification(org, id).await.unwrap().as_ref(), Some(&n));
    log.prepare_layout(&n, 9).await.unwrap();
    assert_eq!(
        log.route_page(org, id, 1).await.unwrap().as_ref(),
        Some(&pages[0])
    );
    log.page_routed(org, id, 2).await.unwrap();
    let second = log.route_page(org, id, 2).await.unwrap().unwrap();
    assert!(
        second.routed && second.user_ids == pages[1].user_ids,
        "{second:?}"
    );
    assert!(!log.route_page(org, id, 1).await.unwrap().unwrap().routed);
    assert_eq!(log.route_page(org, id, 3).await.unwrap(), None);
    let other = NotificationId::parse("n-other").unwrap();
    assert_eq!(log.route_page(org, &other, 1).await.unwrap(), None);
    // The first escalation chain is kept; another is refused; the kept one again is not.
    assert!(log.claim_chain(org, id, "chain-a").await.unwrap());
    assert!(!log.claim_chain(org, id, "chain-b").await.unwrap());
    assert!(log.claim_chain(org, id, "chain-a").await.unwrap());
    assert_eq!(log.notification(org, id).await.unwrap().as_ref(), Some(&n));
    // The plan is not part of the notification's records.
    let logged = log.get_notification(org, id).await.unwrap().unwrap();
    assert!(logged.records.is_empty(), "{:?}", logged.records);
}

/// The directory a page at a time: every user once, in id order, pages of at most the
/// limit, nothing of another organization.
/// A number opts out (the first time is kept), another organization's does not, and it
/// opts back in.
pub async fn opt_outs(dir: &dyn flare_shared::ports::Directory, org: &OrgId) {
    let number = PhoneNumber::parse("+14155550177").unwrap();
    assert_eq!(dir.opted_out(org, &number).await.unwrap(), None);
    let first = Utc::now() - chrono::Duration::minutes(1);
    dir.set_opt_out(org, &number, Some(first)).await.unwrap();
    dir.set_opt_out(org, &number, Some(Utc::now()))
        .await
        .unwrap();
    let at = dir.opted_out(org, &number).await.unwrap().unwrap();
    assert_eq!(
        at.timestamp(),
        first.timestamp(),
        "the first STOP's time stands"
    );
    let other = OrgId::parse(&format!("{org}-other")).unwrap();
    assert_eq!(dir.opted_out(&other, &number).await.unwrap(), None);
    dir.set_opt_out(org, &number, None).await.unwrap();
    assert_eq!(dir.opted_out(org, &number).await.unwrap(), None);
    dir.set_opt_out(org, &number, None).await.unwrap();
}

pub async fn directory_pages(dir: &dyn flare_shared::ports::Directory, org: &OrgId) {
    use flare_shared::domain::{License, User};
    let other = OrgId::parse(&format!("{}-other", org.as_str())).unwrap();
    let ids: Vec<String> = (0..7)
        .map(|i| format!("u-{i}"))
        .chain(["u-10".into()])
        .collect();
    for id in &ids {
        let u: User = serde_json::from_value(serde_json::json!({
            "user_id": id, "name": id, "license": License::BasicResponder, "virtual": false,
        }))
        .unwrap();
        dir.put_user(org, &u).await.unwrap();
        dir.put_user(&other, &u).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after: Option<UserId> = None;
    loop {
        let page = dir.list_users_after(org, after.as_ref(), 3).await.unwrap();
        assert!(page.len() <= 3);
        after = page.last().map(|u| u.user_id.clone());
        seen.extend(page.iter().map(|u| u.user_id.to_string()));
        if page.len() < 3 {
            break;
        }
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "every user once, in id order");
    let none = dir
        .list_users_after(org, Some(&UserId::parse("u-9").unwrap()), 3)
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
}

/// A notification read a page of recipients at a time: every record once, in recipient
/// order, the acks with each page, and no next page after the last.
async fn notification_pages(log: &dyn DeliveryLog, org: &OrgId) {
    let n = notification(org);
    log.create_notification(&n).await.unwrap();
    // `u-1` is a prefix of `u-12`: a page boundary must not confuse them.
    let mut records = Vec::new();
    for who in ["u-1", "u-12", "u-2"] {
        for c in [Channel::Push, Channel::Sms] {
            records.push(record(&n, who, c, false));
        }
    }
    // The first write: a log that spreads records over partitions does so here.
    log.put_first_records(&n, &records).await.unwrap();
    log.ack(
        org,
        &n.notification_id,
        &flare_shared::domain::UserId::parse("u-12").unwrap(),
    )
    .await
    .unwrap();
    let mut after: Option<String> = None;
    let mut seen: Vec<(String, usize)> = Vec::new();
    for _ in 0..5 {
        let (page, next) = log
            .notification_page(org, &n.notification_id, after.as_deref(), 2)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(page.notification, n);
        // The acks of the page's recipients at least (a log may answer them all).
        if page
            .records
            .iter()
            .any(|r| r.recipient.key() == "user:u-12")
        {
            assert_eq!(page.acks.len(), 1, "{:?}", page.acks);
        }
        let mut keys: Vec<String> = page.records.iter().map(|r| r.recipient.key()).collect();
        keys.dedup();
        for k in keys {
            let count = page
                .records
                .iter()
                .filter(|r| r.recipient.key() == k)
                .count();
            seen.push((k, count));
        }
        match next {
            Some(k) => after = Some(k),
            None => break,
        }
    }
    // Every recipient once, with every record, in recipient order within each
    // partition (a log that spreads records over partitions pages them one by one).
    seen.sort();
    assert_eq!(
        seen,
        [
            ("user:u-1".to_string(), 2),
            ("user:u-12".to_string(), 2),
            ("user:u-2".to_string(), 2)
        ]
    );
    assert!(
        log.notification_page(org, &NotificationId::generate(), None, 2)
            .await
            .unwrap()
            .is_none()
    );
}

/// The organization's list: newest first (then by id), pages that neither skip nor
/// repeat, counts by state, nothing of another organization.
async fn list_notifications(log: &dyn DeliveryLog, org: &OrgId) {
    use flare_shared::ports::{ListPosition, StatusCounts};
    let base = Utc::now() - chrono::Duration::hours(1);
    let at = |secs: i64, id: &str| Notification {
        notification_id: NotificationId::parse(id).unwrap(),
        created_at: base + chrono::Duration::seconds(secs),
        ..notification(org)
    };
    // Two at the same millisecond: the id orders them.
    let all = [at(0, "n-a"), at(5, "n-b"), at(5, "n-c"), at(9, "n-d")];
    for n in &all {
        log.create_notification(n).await.unwrap();
    }
    let d = &all[3];
    log.put_records(
        d,
        &[
            record(d, "u-1", Channel::Push, false),
            record(d, "u-1", Channel::Sms, true),
            record(d, "u-2", Channel::Sms, false),
            record(d, "u-3", Channel::Push, false),
        ],
    )
    .await
    .unwrap();
    let claim = log
        .claim(
            org,
            &d.notification_id,
            &user("u-2"),
            Channel::Sms.into(),
            LIVE,
        )
        .await
        .unwrap();
    assert_eq!(claim, Claim::Claimed { attempts: 1 });
    log.finish(
        org,
        &d.notification_id,
        &user("u-2"),
        Channel::Sms.into(),
        Finish::Sent {
            attempt: 1,
            provider: flare_shared::domain::Provider::Sns,
            provider_message_id: None,
            receipt_key: None,
            failover_from: None,
            sms: Some(flare_shared::domain::SmsCount {
                encoding: flare_shared::domain::SmsEncoding::Ucs2,
                segments: 2,
            }),
        },
    )
    .await
    .unwrap();
    // u-3's push: sent, then a receipt.
    let u3 = user("u-3");
    log.claim(org, &d.notification_id, &u3, Channel::Push.into(), LIVE)
        .await
        .unwrap();
    for outcome in [
        Finish::Sent {
            attempt: 1,
            provider: flare_shared::domain::Provider::Sns,
            provider_message_id: None,
            receipt_key: None,
            failover_from: None,
            sms: None,
        },
        Finish::Delivered { at: Utc::now() },
    ] {
        assert!(
            log.finish(org, &d.notification_id, &u3, Channel::Push.into(), outcome)
                .await
                .unwrap()
        );
    }

    // Answers: u-1 responding, then unavailable (the latest stands); u-2 responding.
    // An answer is an ack: the first one says so, a later one does not (u-2 acked first).
    let first = answer(log, d, "u-1", Answer::Responding).await;
    assert_eq!((first.first_ack, first.previous), (true, None));
    let second = answer(log, d, "u-1", Answer::Unavailable).await;
    assert!(!second.first_ack);
    assert_eq!(second.previous.map(|p| p.answer), Some(Answer::Responding));
    let u2 = UserId::parse("u-2").unwrap();
    assert!(log.ack(org, &d.notification_id, &u2).await.unwrap());
    assert!(!answer(log, d, "u-2", Answer::Responding).await.first_ack);
    let acks = log
        .get_notification(org, &d.notification_id)
        .await
        .unwrap()
        .unwrap()
        .acks;
    assert_eq!(
        acks.len(),
        2,
        "one ack each, whatever they answered: {acks:?}"
    );

    let ids = |page: &[flare_shared::ports::NotificationSummary]| -> Vec<String> {
        page.iter()
            .map(|s| s.notification.notification_id.to_string())
            .collect()
    };
    let first = log.list_notifications(org, None, 3).await.unwrap();
    assert_eq!(ids(&first), ["n-d", "n-c", "n-b"]);
    assert_eq!(
        first[0].counts,
        StatusCounts {
            pending: 2,
            sent: 1,
            failed: 0,
            skipped: 0,
            delivered: 1,
            undelivered: 0,
            responding: 1,
            unavailable: 1,
            sms_segments: 2,
        }
    );
    assert_eq!(first[1].counts, StatusCounts::default());
    // The SMS keeps what it cost, and the whole notification's total is read alone.
    let d_logged = log
        .get_notification(org, &d.notification_id)
        .await
        .unwrap()
        .unwrap();
    let sms = d_logged
        .records
        .iter()
        .find(|r| r.channel == Channel::Sms && r.recipient.key() == "user:u-2")
        .unwrap();
    assert_eq!(
        (sms.encoding, sms.segments),
        (Some(flare_shared::domain::SmsEncoding::Ucs2), Some(2))
    );
    assert_eq!(log.sms_segments(org, &d.notification_id).await.unwrap(), 2);
    // The view's reads carry each recipient's latest answer, from where it came.
    let answers = |l: &flare_shared::ports::Logged| -> Vec<(String, Answer, AnsweredVia)> {
        let mut v: Vec<_> = l
            .responses
            .iter()
            .map(|(u, r)| (u.to_string(), r.answer, r.via))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let want = vec![
        ("u-1".to_string(), Answer::Unavailable, AnsweredVia::Link),
        ("u-2".to_string(), Answer::Responding, AnsweredVia::Link),
    ];
    let whole = log
        .get_notification(org, &d.notification_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answers(&whole), want);
    let (page, _) = log
        .notification_page(org, &d.notification_id, None, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answers(&page), want);
    let after = ListPosition::of(&first[2].notification);
    let second = log.list_notifications(org, Some(&after), 3).await.unwrap();
    assert_eq!(ids(&second), ["n-a"]);
    let last = ListPosition::of(&second[0].notification);
    assert!(
        log.list_notifications(org, Some(&last), 3)
            .await
            .unwrap()
            .is_empty()
    );
    // The cursor clients see names the same place.
    assert_eq!(ListPosition::parse_cursor(&after.cursor()), Some(after));
    let other = OrgId::parse(&format!("{}-none", org.as_str())).unwrap();
    assert!(
        log.list_notifications(&other, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Provider receipts: found by their key alone (one lookup, one conditional write),
/// applied once, never to a failed or unsent delivery; a complaint keeps the status.
pub async fn receipts(log: &dyn DeliveryLog, org: &OrgId) {
    use flare_shared::domain::receipt::ReceiptKey;
    use flare_shared::ports::{ReceiptMatch, ReceiptTarget};
    let n = notification(org);
    let id = &n.notification_id;
    log.create_notification(&n).await.unwrap();
    let records = [
        record(&n, "u-1", Channel::Sms, false),
        record(&n, "u-2", Channel::Email, false),
        record(&n, "u-3", Channel::Sms, false),
        record(&n, "u-4", Channel::Sms, false),
        record(&n, "u-5", Channel::Sms, false),
        // An escalation cycle's SMS (its key `sms#1`).
        DeliveryRecord {
            cycle: 1,
            ..record(&n, "u-6", Channel::Sms, false)
        },
    ];
    log.put_first_records(&n, &records).await.unwrap();
    let key = |k: &str| ReceiptKey::from_stored(format!("{k}-{id}"));
    let send = |who: &'static str, c: Channel, provider, k: Option<ReceiptKey>, from| async move {
        log.claim(org, id, &user(who), c.into(), LIVE)
            .await
            .unwrap();
        assert!(
            log.finish(
                org,
                id,
                &user(who),
                c.into(),
                Finish::Sent {
                    attempt: 1,
                    provider,
                    provider_message_id: Some(format!("m-{who}")),
                    receipt_key: k,
                    failover_from: from,
                    sms: None,
                }
            )
            .await
            .unwrap()
        );
    };
    send(
        "u-1",
        Channel::Sms,
        Provider::Sns,
        Some(key("sns#1")),
        Some(Provider::Http),
    )
    .await;
    send(
        "u-2",
        Channel::Email,
        Provider::Ses,
        Some(key("ses#2")),
        None,
    )
    .await;
    let cycle1 = Slot {
        channel: Channel::Sms,
        cycle: 1,
    };
    log.claim(org, id, &user("u-6"), cycle1, LIVE)
        .await
        .unwrap();
    let sent = Finish::Sent {
        attempt: 1,
        provider: Provider::Sns,
        provider_message_id: Some("m-u-6".into()),
        receipt_key: Some(key("sns#6")),
        failover_from: None,
        sms: None,
    };
    assert!(
        log.finish(org, id, &user("u-6"), cycle1, sent)
            .await
            .unwrap()
    );
    // u-4 and u-5: a gateway that answered the same id for both.
    for who in ["u-4", "u-5"] {
        send(
            who,
            Channel::Sms,
            Provider::Http,
            Some(key("http#same")),
            None,
        )
        .await;
    }
    // u-3's SMS failed: it was never sent, so no receipt can name it.
    log.claim(org, id, &user("u-3"), Channel::Sms.into(), LIVE)
        .await
        .unwrap();
    log.finish(
        org,
        id,
        &user("u-3"),
        Channel::Sms.into(),
        Finish::Failed {
            attempt: 1,
            reason: "invalid_number".into(),
        },
    )
    .await
    .unwrap();

    let target = |who: &str, channel| ReceiptTarget {
        org_id: org.clone(),
        notification_id: id.clone(),
        recipient: format!("user:{who}"),
        channel,
    };
    let at = Utc::now();
    let delivered = Finish::Delivered { at };
    assert_eq!(
        log.receipt(&key("sns#1"), delivered.clone()).await.unwrap(),
        ReceiptMatch::Found {
            target: target("u-1", Channel::Sms),
            moved: true
        }
    );
    assert_eq!(
        log.receipt(&key("sns#1"), delivered.clone()).await.unwrap(),
        ReceiptMatch::Found {
            target: target("u-1", Channel::Sms),
            moved: false
        },
        "a repeat changes nothing"
    );
    let bounced = Finish::Undelivered {
        reason: "bounced".into(),
        detail: Some("smtp; 550 5.1.1 user unknown".into()),
    };
    assert_eq!(
        log.receipt(&key("sns#1"), bounced.clone()).await.unwrap(),
        ReceiptMatch::Found {
            target: target("u-1", Channel::Sms),
            moved: false
        },
        "the first final receipt wins"
    );
    assert_eq!(
        log.receipt(&key("ses#2"), bounced).await.unwrap(),
        ReceiptMatch::Found {
            target: target("u-2", Channel::Email),
            moved: true
        }
    );
    // A complaint marks a sent or delivered email, once; an undelivered one stays.
    assert_eq!(
        log.receipt(&key("ses#2"), Finish::Complaint).await.unwrap(),
        ReceiptMatch::Found {
            target: target("u-2", Channel::Email),
            moved: false
        }
    );
    assert_eq!(
        log.receipt(&key("sns#1"), Finish::Complaint).await.unwrap(),
        ReceiptMatch::Found {
            target: target("u-1", Channel::Sms),
            moved: true
        }
    );
    assert_eq!(
        log.receipt(&key("sns#unknown"), delivered.clone())
            .await
            .unwrap(),
        ReceiptMatch::Unknown
    );
    assert_eq!(
        log.receipt(&key("sns#6"), delivered.clone()).await.unwrap(),
        ReceiptMatch::Found {
            target: target("u-6", Channel::Sms),
            moved: true
        },
        "an escalation cycle's delivery"
    );
    assert_eq!(
        log.receipt(&key("http#same"), delivered.clone())
            .await
            .unwrap(),
        ReceiptMatch::Unknown,
        "a key two deliveries share moves neither"
    );
    // Another organization's key space is its own.
    assert_eq!(
        log.receipt(
            &ReceiptKey::from_stored(format!("http#other#main#{id}")),
            delivered
        )
        .await
        .unwrap(),
        ReceiptMatch::Unknown
    );

    let logged = log.get_notification(org, id).await.unwrap().unwrap();
    let rec = |who: &str| {
        logged
            .records
            .iter()
            .find(|r| r.recipient == user(who))
            .unwrap()
            .clone()
    };
    let (u1, u2, u3) = (rec("u-1"), rec("u-2"), rec("u-3"));
    assert_eq!(
        (
            u1.status,
            u1.delivered_at.map(|t| t.timestamp()),
            u1.complaint,
            u1.failover_from
        ),
        (
            DeliveryStatus::Delivered,
            Some(at.timestamp()),
            true,
            Some(Provider::Http)
        )
    );
    assert_eq!(
        (
            u2.status,
            u2.reason.as_deref(),
            u2.detail.as_deref(),
            u2.complaint
        ),
        (
            DeliveryStatus::Undelivered,
            Some("bounced"),
            Some("smtp; 550 5.1.1 user unknown"),
            false
        )
    );
    assert_eq!(u3.status, DeliveryStatus::Failed);
    assert_eq!(
        (rec("u-4").status, rec("u-5").status),
        (DeliveryStatus::Sent, DeliveryStatus::Sent)
    );
    let page = log.list_notifications(org, None, 10).await.unwrap();
    let counts = page
        .iter()
        .find(|s| &s.notification.notification_id == id)
        .unwrap()
        .counts;
    assert_eq!(
        (counts.delivered, counts.undelivered, counts.failed),
        (2, 1, 1)
    );
}

/// What every [`HealthStore`](flare_shared::ports::HealthStore) promises: healthy by
/// default, changes applied as one step each (concurrent failures all count).
pub async fn health_store(store: &dyn flare_shared::ports::HealthStore, org: &OrgId) {
    use flare_shared::domain::health::{CircuitPolicy, HealthScope, HealthState};
    let scope = HealthScope::Sms(ControlCenterId::main());
    let now = Utc::now();
    assert_eq!(
        store.get(org, &scope).await.unwrap().state(now),
        HealthState::Ok
    );
    let policy = CircuitPolicy::default();
    let fail = |_| async {
        store
            .update(org, &scope, &|h| {
                h.failed(now, "gateway_status: 503", &policy);
                true
            })
            .await
            .unwrap()
    };
    tokio::join!(fail(0), fail(1), fail(2), fail(3), fail(4));
    let h = store.get(org, &scope).await.unwrap();
    assert_eq!(
        (h.consecutive_failures, h.state(now)),
        (5, HealthState::Open)
    );
    assert_eq!(h.last_error.as_deref(), Some("gateway_status: 503"));
    // Scoped: email and another organization are untouched.
    assert_eq!(
        store
            .get(org, &HealthScope::Email)
            .await
            .unwrap()
            .consecutive_failures,
        0
    );
    let later = now + chrono::TimeDelta::seconds(61);
    let h = store
        .update(org, &scope, &|h| h.succeeded(later, later))
        .await
        .unwrap();
    assert_eq!(
        (h.state(later), h.last_success_at.map(|t| t.timestamp())),
        (HealthState::Ok, Some(later.timestamp()))
    );
    assert_eq!(store.get(org, &scope).await.unwrap(), h);
}

/// The newest dispatch SMS to a number is what a reply from it answers; an inbound
/// message id is new once.
pub async fn replies(log: &dyn DeliveryLog, org: &OrgId) {
    use flare_shared::ports::SmsSent;
    let number = PhoneNumber::parse("+14155550177").unwrap();
    assert_eq!(log.last_sms(Some(org), &number).await.unwrap(), None);
    let at = Utc::now() - chrono::Duration::minutes(5);
    let sent = |id: &str, at| SmsSent {
        notification_id: NotificationId::parse(id).unwrap(),
        user_id: UserId::parse("u-1").unwrap(),
        at,
        org_id: Some(org.clone()),
        control_center_id: Some(ControlCenterId::main()),
        incident_id: Some("inc-1".into()),
    };
    log.remember_sms(Some(org), &number, &sent("n-old", at))
        .await
        .unwrap();
    let newer = sent("n-new", at + chrono::Duration::minutes(1));
    log.remember_sms(Some(org), &number, &newer).await.unwrap();
    // A late write of an older one (a slow instance) does not replace the newer.
    log.remember_sms(
        Some(org),
        &number,
        &sent("n-older", at - chrono::Duration::minutes(1)),
    )
    .await
    .unwrap();
    let last = log.last_sms(Some(org), &number).await.unwrap().unwrap();
    assert_eq!(last.notification_id.as_str(), "n-new");
    assert_eq!(last.at.timestamp_millis(), newer.at.timestamp_millis());
    assert_eq!(
        (last.org_id.as_ref(), last.incident_id.as_deref()),
        (Some(org), Some("inc-1"))
    );
    let other = OrgId::parse(&format!("{org}-other")).unwrap();
    assert_eq!(
        log.last_sms(Some(&other), &number).await.unwrap(),
        None,
        "per organization"
    );
    // In any organization (SNS): apart from each organization's.
    assert_eq!(log.last_sms(None, &number).await.unwrap(), None);
    log.remember_sms(None, &number, &newer).await.unwrap();
    let any = log.last_sms(None, &number).await.unwrap().unwrap();
    assert_eq!(any.org_id.as_ref(), Some(org));
    assert!(log.first_inbound(org, "SM-1").await.unwrap());
    assert!(!log.first_inbound(org, "SM-1").await.unwrap(), "a repeat");
    assert!(log.first_inbound(&other, "SM-1").await.unwrap());

    // Response links: stored under their digest, one read finds them.
    let code = flare_shared::domain::LinkCode::from_random(*uuid::Uuid::new_v4().as_bytes());
    assert_eq!(log.link(&code.digest()).await.unwrap(), None);
    let link = flare_shared::domain::ResponseLink {
        digest: code.digest(),
        org_id: org.clone(),
        notification_id: NotificationId::parse("n-new").unwrap(),
        user_id: UserId::parse("u-1").unwrap(),
        title: "Structure fire".into(),
        text: "12 Main St".into(),
        expires_at: Utc::now() + flare_shared::domain::LINK_VALIDITY,
    };
    log.put_link(&link).await.unwrap();
    let found = log.link(&code.digest()).await.unwrap().unwrap();
    assert_eq!(found.digest, link.digest);
    // One code per (notification, recipient): the first candidate is stored with its
    // link; a later one gets the first back, and its own link is not stored.
    let pair = flare_shared::domain::ResponseLink {
        notification_id: NotificationId::parse("n-pair").unwrap(),
        ..link.clone()
    };
    let (first, second) = (
        flare_shared::domain::LinkCode::from_random([1; 16]),
        flare_shared::domain::LinkCode::from_random([2; 16]),
    );
    let sealed = |c: &flare_shared::domain::LinkCode| flare_shared::domain::SealedCode {
        digest: c.digest(),
        sealed: format!("sealed-{}", c.as_str()),
    };
    let with = |c: &flare_shared::domain::LinkCode| flare_shared::domain::ResponseLink {
        digest: c.digest(),
        ..pair.clone()
    };
    let stored = log.link_for(&with(&first), &sealed(&first)).await.unwrap();
    assert_eq!(stored, None, "the first is stored");
    assert!(log.link(&first.digest()).await.unwrap().is_some());
    let again = log
        .link_for(&with(&second), &sealed(&second))
        .await
        .unwrap();
    assert_eq!(again, Some(sealed(&first)), "the pair's first code, again");
    assert_eq!(log.link(&second.digest()).await.unwrap(), None);
    assert_eq!(
        (found.notification_id, found.user_id, found.title),
        (
            link.notification_id.clone(),
            link.user_id.clone(),
            link.title.clone()
        )
    );
    assert_eq!(found.expires_at.timestamp(), link.expires_at.timestamp());
}

/// `who` answers `n` `answer` (by link), as the API does: whether it was their first ack,
/// and the answer it replaced.
async fn answer(
    log: &dyn DeliveryLog,
    n: &Notification,
    who: &str,
    answer: Answer,
) -> flare_shared::ports::Answered {
    let user = UserId::parse(who).unwrap();
    let r = flare_shared::domain::Response {
        answer,
        at: Utc::now(),
        via: AnsweredVia::Link,
    };
    log.answer(&n.org_id, &n.notification_id, &user, &r)
        .await
        .unwrap()
}
