use super::*;
use flare_memory::{MemoryDeliveryLog, MemoryDirectory, MemorySettings};
use flare_shared::domain::routing::JobTemplate;
use flare_shared::domain::{
    Category, Channel, ControlCenterId, DeliveryRecord, DeliveryStatus, Destination, Message,
    Notification, NotificationId, OrgId, PhoneNumber, Provider, RecipientRef, UserId,
};
use flare_shared::ports::{DeliveryLog, Receipt, SendError, SmsMessage, SmsSender};

fn function() -> DeliveryFunction {
    DeliveryFunction::new(Deliverer {
        log: Arc::new(MemoryDeliveryLog::default()),
        queue: None,
        directory: Arc::new(MemoryDirectory::default()),
        settings: Arc::new(MemorySettings::default()),
        push: None,
        sms: Default::default(),
        email: Default::default(),
        default_sender: None,
        metrics: Arc::new(flare_shared::ports::NoMetrics),
        failover: None,
        pacer: None,
        sns_per_second: None,
        max_pace_wait: None,
        links: None,
    })
}

fn message(id: Option<&str>, body: &str) -> SqsMessage {
    let mut m = SqsMessage::default();
    m.message_id = id.map(str::to_string);
    m.body = Some(body.to_string());
    m
}

/// SMS that hangs for one number and is sent for the others.
struct HangsFor(&'static str);

#[async_trait::async_trait]
impl SmsSender for HangsFor {
    async fn send(&self, sms: &SmsMessage) -> Result<Receipt, SendError> {
        if sms.to.as_str() == self.0 {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
        Ok(Receipt {
            provider: Provider::Sns,
            provider_message_id: Some(format!("m-{}", sms.to.as_str())),
        })
    }
}

/// SMS whose sender panics for one number (a bug in a provider) and sends the others.
struct PanicsFor(&'static str);

#[async_trait::async_trait]
impl SmsSender for PanicsFor {
    async fn send(&self, sms: &SmsMessage) -> Result<Receipt, SendError> {
        assert_ne!(sms.to.as_str(), self.0, "a provider bug");
        Ok(Receipt {
            provider: Provider::Sns,
            provider_message_id: Some(format!("m-{}", sms.to.as_str())),
        })
    }
}

/// A pace that never has a free moment (a backlog far longer than the wait allowed).
struct Full;

#[async_trait::async_trait]
impl flare_shared::ports::Pacer for Full {
    async fn acquire(&self, _: &str, _: u32, _: flare_shared::domain::Lane) {
        std::future::pending::<()>().await
    }
    async fn pause(&self, _: &str, _: std::time::Duration) {}
}

#[tokio::test]
async fn a_job_the_pace_has_no_moment_for_is_postponed_without_spending_a_receive() {
    let numbers = ["+14155550111", "+14155550112"];
    let (log, n, messages) = sms_jobs(&numbers).await;
    let queue = Arc::new(flare_memory::MemoryQueue::default());
    let mut f = function();
    f.deliverer.log = log.clone();
    f.deliverer.queue = Some(queue.clone());
    f.deliverer.pacer = Some(Arc::new(Full));
    f.deliverer.sns_per_second = Some(20);
    f.deliverer.max_pace_wait = Some(std::time::Duration::from_millis(50));
    f.deliverer
        .sms
        .insert(Provider::Sns, Arc::new(HangsFor("+10000000000")));
    let mut event = SqsEvent::default();
    // The last receive: a transient failure now would be final.
    event.records = messages
        .into_iter()
        .map(|mut m| {
            m.attributes
                .insert("ApproximateReceiveCount".into(), "5".into());
            m
        })
        .collect();
    let response = f.handle(event).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "postponed jobs are done with: {:?}",
        response.batch_item_failures
    );
    let mut again = Vec::new();
    while let Some(job) = queue.pop(Channel::Sms) {
        again.push(job);
    }
    assert_eq!(again.len(), 2, "each job queued again, as a new message");
    assert!(
        again.iter().all(|j| j.spent_receives == 4),
        "each carries the receives spent before this one: {again:?}"
    );
    let logged = log
        .get_notification(&n.org_id, &n.notification_id)
        .await
        .unwrap()
        .unwrap();
    for r in &logged.records {
        assert_eq!(r.status, DeliveryStatus::Pending, "{r:?}");
    }
    // With the pace free again, the postponed jobs go (their claims were dropped).
    f.deliverer.pacer = Some(Arc::new(flare_memory::MemoryPacer::default()));
    f.deliverer.max_pace_wait = Some(std::time::Duration::from_secs(1));
    for job in &again {
        let sent = f
            .deliverer
            .deliver(job, false, std::time::Duration::from_secs(30))
            .await
            .unwrap();
        assert!(
            matches!(sent, flare_shared::app::deliver::Delivered::Sent { .. }),
            "{sent:?}"
        );
    }
}

/// SMS that always fails for a moment (a gateway's 503).
struct Unavailable;

#[async_trait::async_trait]
impl SmsSender for Unavailable {
    async fn send(&self, _: &SmsMessage) -> Result<Receipt, SendError> {
        Err(SendError::transient(
            flare_shared::domain::FailReason::GatewayStatus,
        ))
    }
}

/// A postponed job's new message counts on from the receives its earlier ones
/// spent: on its first receive after four spent, a failure is final, not retried.
#[tokio::test]
async fn a_postponed_job_keeps_the_receives_its_earlier_messages_spent() {
    let (log, n, messages) = sms_jobs(&["+14155550121"]).await;
    let mut f = function();
    f.deliverer.log = log.clone();
    f.deliverer.sms.insert(Provider::Sns, Arc::new(Unavailable));
    let mut event = SqsEvent::default();
    event.records = messages
        .into_iter()
        .map(|mut m| {
            let mut job: DeliveryJob = serde_json::from_str(m.body.as_deref().unwrap()).unwrap();
            job.spent_receives = DEFAULT_MAX_RECEIVES - 1;
            m.body = Some(serde_json::to_string(&job).unwrap());
            m.attributes
                .insert("ApproximateReceiveCount".into(), "1".into());
            m
        })
        .collect();
    let response = f.handle(event).await;
    assert!(response.batch_item_failures.is_empty(), "final: done with");
    let logged = log
        .get_notification(&n.org_id, &n.notification_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(logged.records[0].status, DeliveryStatus::Failed);
    assert!(
        logged.records[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("gave_up")),
        "{:?}",
        logged.records[0]
    );
}

#[tokio::test]
async fn a_job_that_panics_is_returned_alone_and_the_rest_of_its_batch_is_delivered() {
    let numbers = ["+14155550101", "+14155550102", "+14155550103"];
    let (log, n, messages) = sms_jobs(&numbers).await;
    let mut f = function();
    f.deliverer.log = log.clone();
    f.deliverer
        .sms
        .insert(Provider::Sns, Arc::new(PanicsFor(numbers[1])));
    let mut event = SqsEvent::default();
    event.records = messages;
    let response = f.handle(event).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["m-1"], "only the job that panicked is returned");
    let logged = log
        .get_notification(&n.org_id, &n.notification_id)
        .await
        .unwrap()
        .unwrap();
    let statuses: Vec<_> = logged.records.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == DeliveryStatus::Sent)
            .count(),
        2,
        "{statuses:?}"
    );
}

/// A manual SMS notification with one pending SMS record per number, in a fresh
/// log; and each record's job, as an SQS message `m-<i>`.
async fn sms_jobs(numbers: &[&str]) -> (Arc<MemoryDeliveryLog>, Notification, Vec<SqsMessage>) {
    let log = Arc::new(MemoryDeliveryLog::default());
    let n = Notification {
        notification_id: NotificationId::generate(),
        org_id: OrgId::parse("acme").unwrap(),
        category: Category::ManualSms,
        incident_id: None,
        control_center_id: ControlCenterId::main(),
        message: Message {
            title: String::new(),
            body: "Report to base".into(),
        },
        created_at: chrono::Utc::now(),
        app_fallback_seconds: None,
        escalation: None,
        audience: None,
        pages: 0,
    };
    log.create_notification(&n).await.unwrap();
    let mut records = Vec::new();
    let mut messages = Vec::new();
    for (i, number) in numbers.iter().enumerate() {
        let user = RecipientRef::User(UserId::parse(&format!("u-{i}")).unwrap());
        let to = Destination::Phone(PhoneNumber::parse(number).unwrap());
        records.push(DeliveryRecord {
            notification_id: n.notification_id.clone(),
            recipient: user.clone(),
            channel: Channel::Sms,
            status: DeliveryStatus::Pending,
            reason: None,
            attempts: 0,
            fallback: false,
            provider: Some(Provider::Sns),
            provider_message_id: None,
            destination: Some(to.clone()),
            awaiting_push: false,
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
        });
        let job = JobTemplate::from(&n).job(&user, Channel::Sms, Provider::Sns, &to, false);
        messages.push(message(
            Some(&format!("m-{i}")),
            &serde_json::to_string(&job).unwrap(),
        ));
    }
    log.put_records(&n, &records).await.unwrap();
    (log, n, messages)
}

#[tokio::test]
async fn one_hung_provider_call_neither_holds_up_the_batch_nor_outlives_the_deadline() {
    let numbers = ["+14155550101", "+14155550102", "+14155550103"];
    let (log, n, messages) = sms_jobs(&numbers).await;
    let org = n.org_id.clone();
    let mut f = function();
    f.deliverer.log = log.clone();
    f.deliverer
        .sms
        .insert(Provider::Sns, Arc::new(HangsFor(numbers[0])));
    let mut event = SqsEvent::default();
    event.records = messages;

    let deadline = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        f.handle_until(event, deadline),
    )
    .await
    .expect("the batch answered before the deadline instead of hanging");
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["m-0"], "only the hung job is returned");
    let logged = log
        .get_notification(&org, &n.notification_id)
        .await
        .unwrap()
        .unwrap();
    let sent = logged
        .records
        .iter()
        .filter(|r| r.status == DeliveryStatus::Sent)
        .count();
    assert_eq!(sent, 2, "{:?}", logged.records);
}

#[tokio::test]
async fn a_job_from_the_dead_letter_queue_ends_its_record_failed_and_leaves_the_queue() {
    let (log, n, mut messages) = sms_jobs(&["+14155550101"]).await;
    let org = n.org_id.clone();
    let dlq = "arn:aws:sqs:us-east-1:123456789012:flare-sms-dlq";
    let mut f = function();
    f.deliverer.log = log.clone();
    f.dead_letter_queues = vec![dlq.into()];
    let mut from_dlq = messages.remove(0);
    from_dlq.event_source_arn = Some(dlq.into());
    let mut poison = message(Some("d-2"), "not a job");
    poison.event_source_arn = Some(dlq.into());
    let mut event = SqsEvent::default();
    event.records = vec![from_dlq, poison];
    let response = f.handle(event).await;
    let left: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(
        left,
        ["d-2"],
        "settled jobs leave the queue; what is not a job stays"
    );
    let logged = log
        .get_notification(&org, &n.notification_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(logged.records[0].status, DeliveryStatus::Failed);
    assert_eq!(
        logged.records[0].reason.as_deref(),
        Some("gave_up: dead_letter")
    );
}

#[tokio::test]
async fn a_failed_message_without_an_id_fails_the_whole_batch_instead_of_vanishing() {
    let mut event = SqsEvent::default();
    event.records = vec![message(Some("m-1"), "not json"), message(None, "not json")];
    let response = function().handle(event).await;
    let ids: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    // An empty identifier is how Lambda is told to return every message of the batch.
    assert_eq!(ids, ["m-1", ""]);
}
