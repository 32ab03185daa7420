//! The pipeline's guarantees when a step fails half-way, on the in-memory adapters:
//! nothing is left `pending` without a job, and a retry completes what the failure
//! interrupted without sending anything twice.

mod common;

use async_trait::async_trait;
use common::{OkPush, responder, sns_for_main};
use flare_memory::{
    MemoryDeliveryLog, MemoryDirectory, MemoryMetrics, MemoryQueue, MemorySettings,
};
use flare_shared::app::api::{self, ApiRequest};
use flare_shared::app::auth::{Claims, Role};
use flare_shared::app::deliver::{DeliverError, Delivered, Deliverer, lease_for};
use flare_shared::app::notify::{Notifier, RouteError};
use flare_shared::ports::{
    DeliveryLog, DeliveryMetric, Directory, JobQueue, Outcome, PushMessage, PushSender, QueueError,
    Receipt, SendError, SettingsStore, SmsMessage, SmsSender,
};
use flare_shared::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const LEASE: Duration = lease_for(Duration::from_secs(20));

/// A queue whose first `fail` calls fail for good (not `Unavailable`).
#[derive(Default)]
struct FlakyQueue {
    fail: AtomicUsize,
    inner: MemoryQueue,
}

#[async_trait]
impl JobQueue for FlakyQueue {
    async fn enqueue(&self, jobs: &[DeliveryJob]) -> Result<(), QueueError> {
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(QueueError::Failed(anyhow::anyhow!(
                "injected enqueue failure"
            )));
        }
        self.inner.enqueue(jobs).await
    }

    async fn schedule(&self, check: &CheckJob, delay: Duration) -> Result<(), QueueError> {
        self.inner.schedule(check, delay).await
    }
}

/// Push that every device refuses for good.
struct DeadPush;

#[async_trait]
impl PushSender for DeadPush {
    async fn send(&self, _: &PushMessage) -> Result<Receipt, SendError> {
        Err(SendError::permanent(FailReason::EndpointDisabled))
    }
}

#[derive(Default)]
struct CountingSms {
    sent: AtomicUsize,
}

#[async_trait]
impl SmsSender for CountingSms {
    async fn send(&self, _: &SmsMessage) -> Result<Receipt, SendError> {
        self.sent.fetch_add(1, Ordering::SeqCst);
        Ok(Receipt {
            provider: Provider::Sns,
            provider_message_id: None,
        })
    }
}

struct World {
    settings: Arc<MemorySettings>,
    directory: Arc<MemoryDirectory>,
    log: Arc<MemoryDeliveryLog>,
    metrics: Arc<MemoryMetrics>,
    org: OrgId,
}

async fn world() -> World {
    let w = World {
        settings: Arc::new(MemorySettings::default()),
        directory: Arc::new(MemoryDirectory::default()),
        log: Arc::new(MemoryDeliveryLog::default()),
        metrics: Arc::new(MemoryMetrics::default()),
        org: OrgId::parse("acme").unwrap(),
    };
    w.settings.put_sms(&w.org, &sns_for_main()).await.unwrap();
    let comm = CommunicationSettings {
        manual_sms: true,
        ..Default::default()
    };
    w.settings.put_communication(&w.org, &comm).await.unwrap();
    w.directory
        .put_user(&w.org, &responder("u-17"))
        .await
        .unwrap();
    w
}

impl World {
    fn notifier(&self, queue: Arc<dyn JobQueue>) -> Notifier {
        Notifier {
            settings: self.settings.clone(),
            directory: self.directory.clone(),
            log: self.log.clone(),
            queue,
            metrics: self.metrics.clone(),
            page_size: flare_shared::app::notify::ROUTE_PAGE,
        }
    }

    fn deliverer(&self, queue: Arc<dyn JobQueue>) -> Deliverer {
        Deliverer {
            log: self.log.clone(),
            queue: Some(queue),
            directory: self.directory.clone(),
            settings: self.settings.clone(),
            push: Some(Arc::new(DeadPush)),
            sms: Default::default(),
            email: Default::default(),
            default_sender: None,
            metrics: self.metrics.clone(),
            failover: None,
            pacer: None,
            sns_per_second: None,
            max_pace_wait: None,
            links: None,
        }
    }

    /// The sample dispatch routed, and u-17's push job off the router's queue.
    async fn dispatched(&self) -> (IncidentEvent, DeliveryJob) {
        let queue = Arc::new(MemoryQueue::default());
        let event = dispatch();
        self.notifier(queue.clone()).route(&event).await.unwrap();
        let job = queue.pop(Channel::Push).expect("u-17's push job");
        (event, job)
    }

    async fn records(&self, id: &NotificationId) -> Vec<DeliveryRecord> {
        self.log
            .get_notification(&self.org, id)
            .await
            .unwrap()
            .unwrap()
            .records
    }
}

fn dispatch() -> IncidentEvent {
    let raw = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../events/incidents/incident-dispatched.json"
    ))
    .unwrap();
    IncidentEvent::from_json(&raw).unwrap()
}

#[tokio::test]
async fn a_failed_fallback_enqueue_leaves_sms_and_email_held_and_the_retry_enqueues_them() {
    let w = world().await;
    let (event, push_job) = w.dispatched().await;
    assert_eq!(
        push_job.recipient,
        RecipientRef::User(UserId::parse("u-17").unwrap())
    );

    let fallback_queue = Arc::new(FlakyQueue::default());
    fallback_queue.fail.store(1, Ordering::SeqCst);
    let deliverer = w.deliverer(fallback_queue.clone());
    let err = deliverer
        .deliver(&push_job, false, LEASE)
        .await
        .unwrap_err();
    assert!(matches!(err, DeliverError::Queue(_)), "{err:?}");
    let held: Vec<_> = w
        .records(&event.notification_id)
        .await
        .into_iter()
        .filter(|r| r.recipient == push_job.recipient && r.channel != Channel::Push)
        .collect();
    assert_eq!(held.len(), 2);
    assert!(
        held.iter()
            .all(|r| r.awaiting_push && r.status == DeliveryStatus::Pending),
        "still held, so the retry finds them: {held:?}"
    );

    // The queue redelivers the push job: push is done, its fallback is enqueued now.
    let again = deliverer.deliver(&push_job, false, LEASE).await.unwrap();
    assert_eq!(again, Delivered::AlreadyDone(DeliveryStatus::Failed));
    assert_eq!(fallback_queue.inner.len(Channel::Sms), 1);
    assert_eq!(fallback_queue.inner.len(Channel::Email), 1);
    assert!(
        w.records(&event.notification_id)
            .await
            .iter()
            .filter(|r| r.recipient == push_job.recipient)
            .all(|r| !r.awaiting_push),
        "released once enqueued"
    );
    // A third delivery of the same push job enqueues nothing more.
    deliverer.deliver(&push_job, false, LEASE).await.unwrap();
    assert_eq!(fallback_queue.inner.len(Channel::Sms), 1);
}

#[tokio::test]
async fn a_queue_failure_after_the_records_were_written_is_retried_and_routing_again_completes_it()
{
    let w = world().await;
    let queue = Arc::new(FlakyQueue::default());
    queue.fail.store(1, Ordering::SeqCst);
    let notifier = w.notifier(queue.clone());
    let event = dispatch();
    let err = notifier.route(&event).await.unwrap_err();
    assert!(matches!(err, RouteError::Incomplete(_)), "{err:?}");
    assert!(
        err.is_retryable(),
        "a dropped event would leave its records pending with no job"
    );
    assert!(!w.records(&event.notification_id).await.is_empty());
    assert_eq!(queue.inner.len(Channel::Push), 0);

    let routed = notifier.route(&event).await.unwrap();
    assert!(routed.replay);
    assert_eq!((routed.records_written, routed.jobs_enqueued), (0, 1));
    assert_eq!(queue.inner.len(Channel::Push), 1);
}

fn manual_sms(key: Option<&str>, user: &str) -> ApiRequest {
    ApiRequest {
        method: "POST".into(),
        path: "/v1/messages/sms".into(),
        claims: Ok(Claims {
            sub: "u-dispatch".into(),
            org_id: OrgId::parse("acme").unwrap(),
            roles: vec![Role::Dispatcher],
        }),
        body: serde_json::json!({"user_id": user, "text": "Report to base"})
            .to_string()
            .into_bytes(),
        query: None,
        idempotency_key: key.map(str::to_string),
        headers: Vec::new(),
        url: None,
        meta: Default::default(),
    }
}

#[tokio::test]
async fn the_same_idempotency_key_answers_the_first_notification_and_sends_nothing_again() {
    let w = world().await;
    w.directory
        .put_user(&w.org, &responder("u-18"))
        .await
        .unwrap();
    let queue = Arc::new(MemoryQueue::default());
    let mut svc = flare_memory::services(EndpointPolicy::default());
    svc.settings = w.settings.clone();
    svc.directory = w.directory.clone();
    svc.log = w.log.clone();
    svc.queue = queue.clone();
    let send = |req| api::handle(&svc, req);

    let first = send(manual_sms(Some("dispatch-4711"), "u-17")).await;
    assert_eq!(first.status, 202);
    let id = first.body.unwrap()["notification_id"].clone();
    let second = send(manual_sms(Some("dispatch-4711"), "u-17")).await;
    assert_eq!(
        (second.status, &second.body.unwrap()["notification_id"]),
        (202, &id)
    );
    // The same key for another user's message: the first one stands.
    let other = send(manual_sms(Some("dispatch-4711"), "u-18")).await;
    assert_eq!(other.body.unwrap()["notification_id"], id);
    // The repeat enqueued the still-pending record again (so a first request that stopped
    // before its enqueue is completed); its claim makes it send nothing.
    let sms = Arc::new(CountingSms::default());
    let mut deliverer = w.deliverer(queue.clone());
    deliverer.sms.insert(Provider::Sns, sms.clone());
    let mut jobs = Vec::new();
    while let Some(job) = queue.pop(Channel::Sms) {
        jobs.push(job);
    }
    assert!(!jobs.is_empty());
    for job in &jobs {
        assert_eq!(Some(job.notification_id.as_str()), id.as_str());
        assert_eq!(
            job.recipient,
            RecipientRef::User(UserId::parse("u-17").unwrap())
        );
        deliverer.deliver(job, false, LEASE).await.unwrap();
    }
    assert_eq!(
        sms.sent.load(Ordering::SeqCst),
        1,
        "one SMS for three requests with one key"
    );

    // Another key, or none, is another message.
    let fresh = send(manual_sms(Some("dispatch-4712"), "u-17")).await;
    assert_ne!(fresh.body.unwrap()["notification_id"], id);
    send(manual_sms(None, "u-17")).await;
    send(manual_sms(None, "u-17")).await;
    assert_eq!(queue.len(Channel::Sms), 3);

    // A key that is not 1 to 255 visible ASCII characters is named, with the body's faults.
    let mut bad = manual_sms(Some("two words"), "u-17");
    bad.body = br#"{"user_id": "u-17"}"#.to_vec();
    let r = send(bad).await;
    assert_eq!(r.status, 400);
    let fields = &r.body.unwrap()["error"]["fields"];
    assert!(
        fields.get("Idempotency-Key").is_some() && fields.get("text").is_some(),
        "{fields}"
    );
}

#[tokio::test]
async fn a_dead_lettered_push_job_fails_its_record_and_its_fallback_goes_out() {
    let w = world().await;
    let (event, push_job) = w.dispatched().await;
    let (org, id, who) = (&w.org, &event.notification_id, &push_job.recipient);
    // Every attempt crashed after its claim (the lease ran out each time), so no attempt
    // finished the record, and the job used up its receives.
    w.log
        .claim(org, id, who, Channel::Push.into(), Duration::ZERO)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let fallback = Arc::new(FlakyQueue::default());
    let deliverer = w.deliverer(fallback.clone());
    let settled = deliverer.abandon(&push_job).await.unwrap();
    assert_eq!(
        settled,
        Delivered::Failed {
            reason: "gave_up: dead_letter".into()
        }
    );
    let records = w.records(id).await;
    let push = records.iter().find(|r| r.channel == Channel::Push).unwrap();
    assert_eq!(push.status, DeliveryStatus::Failed);
    assert_eq!(
        fallback.inner.len(Channel::Sms),
        1,
        "the held SMS goes out as fallback"
    );
    assert_eq!(fallback.inner.len(Channel::Email), 1);
    assert!(records.iter().all(|r| !r.awaiting_push));
    // Settling it again changes nothing and enqueues nothing more.
    let again = deliverer.abandon(&push_job).await.unwrap();
    assert_eq!(again, Delivered::AlreadyDone(DeliveryStatus::Failed));
    assert_eq!(fallback.inner.len(Channel::Sms), 1);
}

#[tokio::test]
async fn a_dead_lettered_job_waits_while_a_live_attempt_holds_its_record() {
    let w = world().await;
    let (event, push_job) = w.dispatched().await;
    w.log
        .claim(
            &w.org,
            &event.notification_id,
            &push_job.recipient,
            Channel::Push.into(),
            LEASE,
        )
        .await
        .unwrap();
    let deliverer = w.deliverer(Arc::new(MemoryQueue::default()));
    let err = deliverer.abandon(&push_job).await.unwrap_err();
    assert!(matches!(err, DeliverError::Retry { .. }), "{err:?}");
    let records = w.records(&event.notification_id).await;
    let mine: Vec<_> = records
        .iter()
        .filter(|r| r.recipient == push_job.recipient)
        .collect();
    assert_eq!(mine.len(), 3);
    assert!(
        mine.iter().all(|r| r.status == DeliveryStatus::Pending),
        "{mine:?}"
    );
}

#[tokio::test]
async fn each_final_outcome_is_counted_once_however_often_its_job_runs() {
    let w = world().await;
    let queue = Arc::new(MemoryQueue::default());
    let event = dispatch();
    let notifier = w.notifier(queue.clone());
    notifier.route(&event).await.unwrap();
    notifier.route(&event).await.unwrap(); // a replay counts nothing new
    let skipped_at_routing = w
        .records(&event.notification_id)
        .await
        .iter()
        .filter(|r| r.status == DeliveryStatus::Skipped)
        .count();
    assert!(
        skipped_at_routing > 0,
        "u-18 and u-19 are not in the directory"
    );
    assert_eq!(
        *w.metrics.notifications.lock().unwrap(),
        vec![(Category::Dispatch, 3)]
    );

    let push_job = queue.pop(Channel::Push).unwrap();
    let mut deliverer = w.deliverer(queue.clone());
    let sms = Arc::new(CountingSms::default());
    deliverer.sms.insert(Provider::Sns, sms.clone());
    for _ in 0..2 {
        deliverer.deliver(&push_job, false, LEASE).await.unwrap();
    }
    let sms_job = queue.pop(Channel::Sms).expect("the fallback SMS");
    for _ in 0..2 {
        deliverer.deliver(&sms_job, false, LEASE).await.unwrap();
    }
    assert_eq!(sms.sent.load(Ordering::SeqCst), 1);

    let counted = w.metrics.deliveries.lock().unwrap().clone();
    let of = |outcome| counted.iter().filter(|m| m.outcome == outcome).count();
    assert_eq!(of(Outcome::Skipped), skipped_at_routing, "{counted:?}");
    assert_eq!(of(Outcome::Failed), 1, "the push, once: {counted:?}");
    assert_eq!(of(Outcome::Sent), 1, "the SMS, once: {counted:?}");
    let sent = counted.iter().find(|m| m.outcome == Outcome::Sent).unwrap();
    let since_event = (chrono::Utc::now() - event.time.unwrap()).to_std().unwrap();
    assert!(
        matches!(sent, DeliveryMetric { channel: Channel::Sms, provider: Some(Provider::Sns), fallback: true, latency: Some(l), .. } if *l <= since_event),
        "{sent:?}"
    );
}

#[tokio::test]
async fn a_receipt_is_counted_once_and_so_is_the_first_ack() {
    let w = world().await;
    let (event, push_job) = w.dispatched().await;
    let queue = Arc::new(MemoryQueue::default());
    let mut deliverer = w.deliverer(queue.clone());
    deliverer.push = Some(Arc::new(OkPush));
    deliverer.deliver(&push_job, false, LEASE).await.unwrap();

    let mut svc = flare_memory::services(EndpointPolicy::default());
    svc.log = w.log.clone();
    svc.metrics = w.metrics.clone();
    let call = |op: &str| ApiRequest {
        method: "POST".into(),
        path: format!("/v1/notifications/{}/{op}", event.notification_id),
        claims: Ok(Claims {
            sub: "u-17".into(),
            org_id: w.org.clone(),
            roles: vec![Role::Responder],
        }),
        body: vec![],
        query: None,
        idempotency_key: None,
        headers: Vec::new(),
        url: None,
        meta: Default::default(),
    };
    for op in ["receipt", "receipt", "ack", "ack"] {
        assert_eq!(api::handle(&svc, call(op)).await.status, 204, "{op}");
    }
    let delivered: Vec<DeliveryMetric> = w
        .metrics
        .deliveries
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.outcome == Outcome::Delivered)
        .cloned()
        .collect();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(
        (delivered[0].channel, delivered[0].provider),
        (Channel::Push, Some(Provider::Sns))
    );
    assert_eq!(
        *w.metrics.acknowledgements.lock().unwrap(),
        vec![Category::Dispatch]
    );
    let push = w
        .records(&event.notification_id)
        .await
        .into_iter()
        .find(|r| r.recipient == push_job.recipient && r.channel == Channel::Push)
        .unwrap();
    assert_eq!(push.status, DeliveryStatus::Delivered);
}

/// A queue whose worker is faster than the enqueuer: each job is claimed and sent
/// before `enqueue` returns.
struct InstantWorker {
    log: Arc<MemoryDeliveryLog>,
}

#[async_trait]
impl JobQueue for InstantWorker {
    async fn enqueue(&self, jobs: &[DeliveryJob]) -> Result<(), QueueError> {
        for j in jobs {
            let log = &self.log;
            let (org, id, who) = (&j.org_id, &j.notification_id, &j.recipient);
            log.claim(org, id, who, j.channel.into(), LEASE)
                .await
                .unwrap();
            let sent = flare_shared::ports::Finish::Sent {
                attempt: 1,
                provider: j.provider,
                provider_message_id: None,
                receipt_key: None,
                failover_from: None,
                sms: None,
            };
            assert!(
                log.finish(org, id, who, j.channel.into(), sent)
                    .await
                    .unwrap()
            );
        }
        Ok(())
    }

    async fn schedule(&self, _: &CheckJob, _: Duration) -> Result<(), QueueError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_fallback_sent_before_its_release_still_says_why() {
    let w = world().await;
    let (event, push_job) = w.dispatched().await;
    let worker = Arc::new(InstantWorker { log: w.log.clone() });
    let deliverer = w.deliverer(worker); // push fails on every device
    deliverer.deliver(&push_job, false, LEASE).await.unwrap();
    let fallbacks: Vec<_> = w
        .records(&event.notification_id)
        .await
        .into_iter()
        .filter(|r| r.recipient == push_job.recipient && r.channel != Channel::Push)
        .collect();
    assert_eq!(fallbacks.len(), 2);
    for r in fallbacks {
        assert_eq!(
            (r.status, r.fallback_reason),
            (
                DeliveryStatus::Sent,
                Some(flare_shared::domain::reason::FallbackReason::PushFailed)
            ),
            "{r:?}"
        );
    }
}
