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
