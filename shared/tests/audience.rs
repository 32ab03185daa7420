//! Audiences and routing in pages, on the in-memory adapters: who an audience reaches,
//! that a replay reaches the same people whatever the directory says since, and that a
//! page routed twice writes and queues nothing twice.

mod common;

use common::*;
use flare_shared::app::notify::Notifier;
use flare_shared::ports::{DeliveryLog, Directory};
use flare_shared::*;
use std::collections::BTreeSet;

/// The sample all-call (`events/incidents/incident-dispatched-audience.json`: control
/// centers north and south, and u-17 listed), for `listed` instead of u-17.
fn all_call(listed: &[&str]) -> IncidentEvent {
    let mut e = MemoryWorld::incident("incident-dispatched-audience", listed);
    assert_eq!(
        serde_json::to_value(&e.audience).unwrap(),
        serde_json::json!({"control_centers": ["north", "south"]}),
        "the sample event's audience"
    );
    e.targets = Targets::Users(listed.iter().map(|u| UserId::parse(u).unwrap()).collect());
    e
}

/// A world of responders in north (n-1, n-2), south (s-1), east (e-1) and without a
/// control center (m-1, so in main).
async fn world() -> MemoryWorld {
    let w = MemoryWorld::new(settings(Method::AppSmsEmail), &[]).await;
    for (id, cc) in [
        ("n-1", Some("north")),
        ("n-2", Some("north")),
        ("s-1", Some("south")),
        ("e-1", Some("east")),
        ("m-1", None),
    ] {
        put(&w, id, cc).await;
    }
    w
}

async fn put(w: &MemoryWorld, id: &str, cc: Option<&str>) {
    let mut u = responder(id);
    u.control_center_id = cc.map(|c| ControlCenterId::parse(c).unwrap());
    w.directory.put_user(&w.org, &u).await.unwrap();
}

fn paged(w: &MemoryWorld, page_size: usize) -> Notifier {
    Notifier {
        page_size,
        ..w.notifier()
    }
}

/// Runs every route-page check queued so far (as the push function would), and
/// answers how many it ran.
async fn run_pages(w: &MemoryWorld) -> usize {
    let deliverer = w.deliverer(None);
    let mut ran = 0;
    loop {
        let pages: Vec<CheckJob> = w
            .queue
            .take_checks()
            .into_iter()
            .map(|(c, _)| c)
            .filter(|c| c.check == CheckKind::RoutePage)
            .collect();
        if pages.is_empty() {
            return ran;
        }
        for check in &pages {
            deliverer.check(check, chrono::Utc::now()).await.unwrap();
            ran += 1;
        }
    }
}

/// Each recipient's channels as recorded (a (recipient, channel) twice would show).
async fn recorded(w: &MemoryWorld, id: &NotificationId) -> Vec<(String, Channel)> {
    let logged = w.log.get_notification(&w.org, id).await.unwrap().unwrap();
    let mut out: Vec<_> = logged
        .records
        .iter()
        .map(|r| (r.recipient.user_id().unwrap().to_string(), r.channel))
        .collect();
    out.sort_by_key(|(u, c)| (u.clone(), c.as_str()));
    out
}

fn people(records: &[(String, Channel)]) -> BTreeSet<String> {
    records.iter().map(|(u, _)| u.clone()).collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn two_control_centers_reach_exactly_their_users_and_the_listed_ones_once_each() {
    let w = world().await;
    // m-1 (main) listed, and n-1 listed although north reaches them anyway.
    let event = all_call(&["m-1", "n-1"]);
    let routed = paged(&w, 2).route(&event).await.unwrap();
    assert_eq!(routed.recipients, 4, "{routed:?}");
    assert_eq!(
        run_pages(&w).await,
        1,
        "two pages: the first routed at once"
    );
    let records = recorded(&w, &event.notification_id).await;
    assert_eq!(people(&records), set(&["m-1", "n-1", "n-2", "s-1"]));
    assert_eq!(
        records.len(),
        4 * 3,
        "one record a channel each: {records:?}"
    );
    assert_eq!(w.queue.len(Channel::Push), 4, "one push each");
    let n = w
        .log
        .notification(&w.org, &event.notification_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.audience, event.audience, "the audience as given is kept");
    assert_eq!(n.pages, 2);
}

#[tokio::test]
async fn all_reaches_everyone_of_the_organization() {
    let w = world().await;
    let mut event = all_call(&[]);
    event.audience = Some(Audience {
        all: true,
        control_centers: vec![],
    });
    w.notifier().route(&event).await.unwrap();
    run_pages(&w).await;
    let records = recorded(&w, &event.notification_id).await;
    assert_eq!(people(&records), set(&["e-1", "m-1", "n-1", "n-2", "s-1"]));
}

#[tokio::test]
async fn an_audience_of_nobody_is_a_notification_with_no_recipient() {
    let w = world().await;
    let mut event = all_call(&[]);
    event.audience = Some(Audience {
        all: false,
        control_centers: vec![ControlCenterId::parse("nowhere").unwrap()],
    });
    let routed = w.notifier().route(&event).await.unwrap();
    assert_eq!(routed.recipients, 0);
    assert!(recorded(&w, &event.notification_id).await.is_empty());
    assert!(w.queue.is_empty());
}

#[tokio::test]
async fn a_replay_after_the_directory_changed_reaches_the_same_people() {
    let w = world().await;
    let event = all_call(&[]);
    let notifier = paged(&w, 2);
    // The first routing: page 1 routed, page 2 queued but not run yet.
    notifier.route(&event).await.unwrap();
    w.queue.take_checks();
    // n-2 leaves, n-3 joins north, s-1 moves east.
    w.directory
        .delete_user(&w.org, &UserId::parse("n-2").unwrap())
        .await
        .unwrap();
    put(&w, "n-3", Some("north")).await;
    put(&w, "s-1", Some("east")).await;
    let replay = notifier.route(&event).await.unwrap();
    assert!(replay.replay);
    assert_eq!(replay.recipients, 3, "{replay:?}");
    assert_eq!(
        run_pages(&w).await,
        1,
        "the page not routed is queued again"
    );
    let records = recorded(&w, &event.notification_id).await;
    // n-2 is no longer in the directory: recorded as unknown, not dropped; n-3 is not
    // told; s-1 is, wherever they are now.
    assert_eq!(people(&records), set(&["n-1", "n-2", "s-1"]));
}

#[tokio::test]
async fn a_page_routed_twice_writes_and_queues_nothing_twice() {
    let w = world().await;
    let event = all_call(&[]);
    paged(&w, 1).route(&event).await.unwrap();
    let pages: Vec<CheckJob> = w.queue.take_checks().into_iter().map(|(c, _)| c).collect();
    assert_eq!(pages.len(), 2, "pages 2 and 3 queued: {pages:?}");
    let deliverer = w.deliverer(None);
    for check in &pages {
        deliverer.check(check, chrono::Utc::now()).await.unwrap();
    }
    let (records, pushes) = (
        recorded(&w, &event.notification_id).await,
        w.queue.len(Channel::Push),
    );
    assert_eq!((records.len(), pushes), (9, 3));
    // The same page jobs again (SQS delivers at least once), and the event again.
    for check in &pages {
        deliverer.check(check, chrono::Utc::now()).await.unwrap();
    }
    let replay = paged(&w, 1).route(&event).await.unwrap();
    assert!(replay.replay);
    assert_eq!((replay.records_written, replay.jobs_enqueued), (0, 0));
    assert!(w.queue.take_checks().is_empty(), "nothing queued again");
    assert_eq!(recorded(&w, &event.notification_id).await, records);
    assert_eq!(w.queue.len(Channel::Push), pushes, "no job queued twice");
}

#[tokio::test]
async fn a_long_list_of_ids_is_routed_in_pages_too() {
    let w = world().await;
    let ids = ["e-1", "m-1", "n-1", "n-2", "s-1", "x-9"];
    let event = MemoryWorld::incident("incident-dispatched", &ids);
    assert!(event.audience.is_none());
    let routed = paged(&w, 4).route(&event).await.unwrap();
    assert_eq!(routed.recipients, 6);
    assert_eq!(run_pages(&w).await, 1);
    let records = recorded(&w, &event.notification_id).await;
    assert_eq!(
        people(&records),
        ids.iter().map(|s| s.to_string()).collect()
    );
    let n = w
        .log
        .notification(&w.org, &event.notification_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((n.pages, n.audience), (2, None));
}

/// An all-call under `method` with escalation (2 cycles, `after_seconds` apart) to
/// `users` (id, control center), routed in pages of two with every route page run: the
/// world, the notification's id and the first cycle's timer (cycle 0's jobs taken off).
async fn escalating_all_call(
    method: Method,
    app_fallback_seconds: u32,
    after_seconds: u32,
    users: &[(&str, &str)],
) -> (MemoryWorld, NotificationId, CheckJob) {
    let (w, id, head, route_pages) =
        escalating_all_call_unrouted(method, app_fallback_seconds, after_seconds, users).await;
    let deliverer = w.deliverer(None);
    for check in &route_pages {
        deliverer.check(check, chrono::Utc::now()).await.unwrap();
    }
    for c in Channel::ALL {
        while w.queue.pop(c).is_some() {}
    }
    (w, id, head)
}

/// The same with the route pages after the first (which the router routes itself) not
/// run: their checks are answered last.
async fn escalating_all_call_unrouted(
    method: Method,
    app_fallback_seconds: u32,
    after_seconds: u32,
    users: &[(&str, &str)],
) -> (MemoryWorld, NotificationId, CheckJob, Vec<CheckJob>) {
    let comm = CommunicationSettings {
        app_fallback_seconds,
        dispatch_escalation: Some(Escalation {
            after_seconds,
            cycles: 2,
        }),
        ..settings(method)
    };
    let w = MemoryWorld::new(comm, &[]).await;
    for (id, cc) in users {
        put(&w, id, Some(cc)).await;
    }
    let event = all_call(&[]);
    paged(&w, 2).route(&event).await.unwrap();
    let mut escalation = None;
    let mut route_pages = Vec::new();
    for (check, _) in w.queue.take_checks() {
        match check.check {
            CheckKind::RoutePage => route_pages.push(check),
            CheckKind::Escalation => escalation = Some(check),
            CheckKind::AppFallback => {}
        }
    }
    for c in Channel::ALL {
        while w.queue.pop(c).is_some() {}
    }
    let head = escalation.expect("the first cycle's timer");
    (w, event.notification_id, head, route_pages)
}

/// The escalation checks queued so far (the others dropped).
fn escalation_checks(w: &MemoryWorld) -> Vec<CheckJob> {
    w.queue
        .take_checks()
        .into_iter()
        .map(|(c, _)| c)
        .filter(|c| c.check == CheckKind::Escalation)
        .collect()
}

/// A cycle's page whose route page is not routed yet (its retries took longer than the
/// cycle's interval) waits for it: run first, it would write the cycle's records while
/// cycle 0's held SMS and email did not exist yet, and those would be sent when the
/// fallback window ended, after the cycle's own.
#[tokio::test]
async fn a_cycle_page_waits_until_its_route_page_is_routed() {
    let users = [
        ("n-1", "north"),
        ("n-2", "north"),
        ("s-1", "south"),
        ("s-2", "south"),
    ];
    let (w, id, head, route_pages) =
        escalating_all_call_unrouted(Method::AppThenSmsEmail, 60, 10, &users).await;
    let id = &id;
    assert_eq!(route_pages.len(), 1, "page 2: {route_pages:?}");
    let deliverer = w.deliverer(None);
    let n = w.log.notification(&w.org, id).await.unwrap().unwrap();
    let due = n.escalation.unwrap().due(1);
    deliverer.check(&head, due).await.unwrap();
    let pages = escalation_checks(&w);
    assert_eq!(
        pages.iter().map(|c| (c.cycle, c.page)).collect::<Vec<_>>(),
        [(1, 1), (1, 2)]
    );
    assert_eq!(deliverer.check(&pages[0], due).await.unwrap().escalated, 2);
    let waiting = deliverer.check(&pages[1], due).await.unwrap();
    assert_eq!(waiting.escalated, 0, "page 2 is not routed yet");
    assert!(waiting.next.is_some_and(|at| at > due), "{waiting:?}");
    let cycle_one = |logged: &flare_shared::ports::Logged| -> BTreeSet<String> {
        logged
            .records
            .iter()
            .filter(|r| r.cycle == 1)
            .map(|r| r.recipient.key())
            .collect()
    };
    let logged = w.log.get_notification(&w.org, id).await.unwrap().unwrap();
    assert_eq!(cycle_one(&logged), set(&["user:n-1", "user:n-2"]));
    deliverer.check(&route_pages[0], due).await.unwrap();
    let later = waiting.next.unwrap();
    assert_eq!(
        deliverer.check(&pages[1], later).await.unwrap().escalated,
        2
    );
    let logged = w.log.get_notification(&w.org, id).await.unwrap().unwrap();
    assert_eq!(
        cycle_one(&logged),
        set(&["user:n-1", "user:n-2", "user:s-1", "user:s-2"])
    );
    for r in logged
        .records
        .iter()
        .filter(|r| r.cycle == 0 && r.channel != Channel::Push)
    {
        assert_eq!(
            (r.status, r.reason.as_deref()),
            (DeliveryStatus::Skipped, Some("escalated")),
            "cycle 0's held SMS and email end escalated on both pages: {r:?}"
        );
    }
}

#[tokio::test]
async fn escalation_of_a_notification_routed_in_pages_goes_a_page_at_a_time_and_never_twice() {
    // Cycle 0's SMS and email stay held behind push (no push job runs here).
    let users = [
        ("n-1", "north"),
        ("n-2", "north"),
        ("s-1", "south"),
        ("e-1", "east"),
    ];
    let (w, id, head) = escalating_all_call(Method::AppThenSmsEmail, 60, 10, &users).await;
    let id = &id;
    let deliverer = w.deliverer(None);
    assert_eq!((head.cycle, head.page), (1, 0));
    assert_eq!(w.recipient_post("n-2", id, "ack").await, 204);
    let n = w.log.notification(&w.org, id).await.unwrap().unwrap();
    let due = n.escalation.unwrap().due(1);
    // The cycle's timer queues one check per route page and sets the next cycle's.
    let started = deliverer.check(&head, due).await.unwrap();
    assert_eq!(started.escalated, 0);
    let (next, _) = started.follow_up.expect("cycle 2's timer");
    assert_eq!((next.cycle, next.page, &next.chain), (2, 0, &head.chain));
    // (Page 2's routing set the fallback window's timer too: not this test's.)
    let pages = escalation_checks(&w);
    assert_eq!(
        pages.iter().map(|c| (c.cycle, c.page)).collect::<Vec<_>>(),
        [(1, 1), (1, 2)]
    );
    let mut escalated = 0;
    for page in &pages {
        escalated += deliverer.check(page, due).await.unwrap().escalated;
    }
    assert_eq!(escalated, 2, "n-1 and s-1; n-2 acknowledged");
    let jobs = |w: &MemoryWorld| {
        let mut all = Vec::new();
        for c in Channel::ALL {
            while let Some(j) = w.queue.pop(c) {
                all.push((j.recipient.key(), j.channel, j.cycle));
            }
        }
        all.sort_by_key(|(u, c, n)| (u.clone(), c.as_str(), *n));
        all
    };
    let first = jobs(&w);
    assert_eq!(
        first.len(),
        6,
        "three channels each for n-1 and s-1: {first:?}"
    );
    assert!(first.iter().all(|(_, _, cycle)| *cycle == 1));
    let logged = w.log.get_notification(&w.org, id).await.unwrap().unwrap();
    for r in logged
        .records
        .iter()
        .filter(|r| r.cycle == 0 && r.channel != Channel::Push)
    {
        let who = r.recipient.user_id().unwrap().as_str();
        // An ack counts as the app's receipt: what it held ends `push_delivered`.
        let want = if who == "n-2" {
            "push_delivered"
        } else {
            "escalated"
        };
        assert_eq!(
            (r.status, r.reason.as_deref()),
            (DeliveryStatus::Skipped, Some(want)),
            "{r:?}"
        );
    }
    let records = logged.records.len();
    // The page checks again (SQS delivers at least once): nothing written twice, and
    // the jobs queued again are the same deliveries (a page that stopped before its
    // jobs were queued must queue them; claims make a second job send nothing).
    for page in &pages {
        deliverer.check(page, due).await.unwrap();
    }
    assert_eq!(jobs(&w), first);
    let again = w.log.get_notification(&w.org, id).await.unwrap().unwrap();
    assert_eq!(again.records.len(), records);
}

#[tokio::test]
async fn a_restarted_runner_runs_again_the_pages_of_a_cycle_it_stopped_in() {
    let users = [
        ("n-1", "north"),
        ("n-2", "north"),
        ("s-1", "south"),
        ("s-2", "south"),
    ];
    let (w, id, head) = escalating_all_call(Method::AppSmsEmail, 0, 60, &users).await;
    let id = &id;
    let deliverer = w.deliverer(None);
    let due = w
        .log
        .notification(&w.org, id)
        .await
        .unwrap()
        .unwrap()
        .escalation
        .unwrap()
        .due(1);
    deliverer.check(&head, due).await.unwrap();
    let pages = escalation_checks(&w);
    assert_eq!(pages.len(), 2, "{pages:?}");
    // The runner stops after the cycle's first page: the second's check is lost.
    deliverer.check(&pages[0], due).await.unwrap();
    let cycle_one = |logged: &flare_shared::ports::Logged| -> BTreeSet<String> {
        logged
            .records
            .iter()
            .filter(|r| r.cycle == 1)
            .map(|r| r.recipient.key())
            .collect()
    };
    let logged = w.log.get_notification(&w.org, id).await.unwrap().unwrap();
    assert_eq!(cycle_one(&logged).len(), 2, "one page of two users so far");
    let resumed: Vec<(u32, u32)> = flare_shared::app::deliver::unfinished_checks(&logged)
        .into_iter()
        .filter(|(c, _)| c.check == CheckKind::Escalation)
        .map(|(c, _)| (c.cycle, c.page))
        .collect();
    assert_eq!(resumed, [(1, 1), (1, 2), (2, 0)]);
    for c in Channel::ALL {
        while w.queue.pop(c).is_some() {}
    }
    for (check, at) in flare_shared::app::deliver::unfinished_checks(&logged) {
        if check.check == CheckKind::Escalation && check.cycle == 1 {
            deliverer.check(&check, at).await.unwrap();
        }
    }
    let after = w.log.get_notification(&w.org, id).await.unwrap().unwrap();
    assert_eq!(
        cycle_one(&after).len(),
        4,
        "every user has the cycle: {:?}",
        cycle_one(&after)
    );
    // The first page's records are as they were: written once, not again.
    let first_page = |l: &flare_shared::ports::Logged| -> Vec<String> {
        let before = cycle_one(&logged);
        l.records
            .iter()
            .filter(|r| r.cycle == 1 && before.contains(&r.recipient.key()))
            .map(|r| format!("{:?}", r))
            .collect()
    };
    assert_eq!(first_page(&after), first_page(&logged));
}
