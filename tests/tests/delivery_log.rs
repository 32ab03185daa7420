//! The `DeliveryLog` conformance suite (`flare_tests::conformance`) against each adapter.

use flare_aws::log::DynamoDeliveryLog;
use flare_shared::domain::OrgId;
use flare_shared::memory::MemoryDeliveryLog;
use flare_tests::stack::AwsStack;
use flare_tests::{conformance, moto, unique};

#[tokio::test]
async fn the_in_memory_log_keeps_every_promise() {
    let log = MemoryDeliveryLog::default();
    conformance::delivery_log(&log, &OrgId::parse("acme").unwrap()).await;
}

#[tokio::test]
async fn the_sqlite_log_keeps_every_promise() {
    let dir = flare_tests::TempDir::new("flare-sqlite-log").unwrap();
    let log = flare_sqlite::Sqlite::open(&dir.path().join("flare.db")).unwrap();
    conformance::delivery_log(&log, &OrgId::parse("acme").unwrap()).await;
}

#[tokio::test]
async fn the_dynamodb_log_keeps_every_promise_on_moto() {
    let stack = AwsStack::create(moto()).await.unwrap();
    let log = DynamoDeliveryLog::new(flare_aws::dynamodb(&stack.sdk), &stack.tables.log);
    conformance::delivery_log(&log, &OrgId::parse(&unique("org")).unwrap()).await;
}

/// Every item of a notification (the notification, its records written first or by a
/// replay, its acks) expires 90 days after the notification's `created_at`, not after
/// each item's own write.
#[tokio::test]
async fn a_notifications_items_all_expire_from_its_creation() {
    use flare_shared::domain::*;
    use flare_shared::ports::DeliveryLog;
    let stack = AwsStack::create(moto()).await.unwrap();
    let db = flare_aws::dynamodb(&stack.sdk);
    let log = DynamoDeliveryLog::new(db.clone(), &stack.tables.log);
    let org = OrgId::parse(&unique("org")).unwrap();
    let created_at = chrono::Utc::now() - chrono::Duration::days(10);
    let n = Notification {
        created_at,
        ..conformance::notification(&org)
    };
    let record = |who: &str| conformance::record(&n, who, Channel::Sms, false);
    log.create_notification(&n).await.unwrap();
    log.put_first_records(&n, &[record("u-1")]).await.unwrap();
    log.put_records(&n, &[record("u-2")]).await.unwrap();
    log.ack(&org, &n.notification_id, &UserId::parse("u-1").unwrap())
        .await
        .unwrap();
    let items = db
        .scan()
        .table_name(&stack.tables.log)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    let pk = flare_aws::log::notification_pk(&org, &n.notification_id);
    let expiries: Vec<i64> = items
        .iter()
        .filter(|i| i.get("pk").and_then(|v| v.as_s().ok()) == Some(&pk))
        .map(|i| i["expires_at"].as_n().unwrap().parse().unwrap())
        .collect();
    assert_eq!(expiries.len(), 4, "the notification, two records, one ack");
    let expected = (created_at + chrono::Duration::days(90)).timestamp();
    assert!(
        expiries.iter().all(|e| *e == expected),
        "{expiries:?} != {expected}"
    );
}
