//! The `DeliveryLog` conformance suite (`flare_tests::conformance`) against each adapter.

use flare_aws::log::DynamoDeliveryLog;
use flare_memory::MemoryDeliveryLog;
use flare_shared::domain::OrgId;
use flare_tests::stack::AwsStack;
use flare_tests::{conformance, moto, unique};

#[tokio::test]
async fn the_in_memory_log_keeps_every_promise() {
    let log = MemoryDeliveryLog::default();
    conformance::delivery_log(&log, &OrgId::parse("acme").unwrap()).await;
    conformance::receipts(&log, &OrgId::parse("acme").unwrap()).await;
    conformance::replies(&log, &OrgId::parse("acme").unwrap()).await;
    let health = flare_memory::MemoryHealth::default();
    conformance::health_store(&health, &OrgId::parse("acme").unwrap()).await;
}

#[tokio::test]
async fn the_sqlite_log_keeps_every_promise() {
    let dir = flare_tests::TempDir::new("flare-sqlite-log").unwrap();
    let log = flare_sqlite::Sqlite::open(&dir.path().join("flare.db")).unwrap();
    conformance::delivery_log(&log, &OrgId::parse("acme").unwrap()).await;
    conformance::receipts(&log, &OrgId::parse("acme").unwrap()).await;
    conformance::replies(&log, &OrgId::parse("acme").unwrap()).await;
}

#[tokio::test]
async fn the_dynamodb_log_keeps_every_promise_on_moto() {
    let stack = AwsStack::create(moto()).await.unwrap();
    let log = DynamoDeliveryLog::new(flare_aws::dynamodb(&stack.sdk), &stack.tables.log);
    let org = OrgId::parse(&unique("org")).unwrap();
    conformance::delivery_log(&log, &org).await;
    // The receipts index (keys only, on `receipt_key`) as the template declares it.
    conformance::receipts(&log, &org).await;
    conformance::replies(&log, &org).await;
    let health =
        flare_aws::health::DynamoHealth::new(flare_aws::dynamodb(&stack.sdk), &stack.tables.log);
    conformance::health_store(&health, &org).await;
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

/// The suite again with every notification's records spread over shards (one record's
/// worth per shard, so even the suite's small notifications are sharded).
#[tokio::test]
async fn the_dynamodb_log_keeps_every_promise_with_its_records_sharded_on_moto() {
    let stack = AwsStack::create(moto()).await.unwrap();
    let db = flare_aws::dynamodb(&stack.sdk);
    let log = DynamoDeliveryLog::new(db.clone(), &stack.tables.log).with_shard_records(1);
    let org = OrgId::parse(&unique("org")).unwrap();
    conformance::delivery_log(&log, &org).await;
    // A receipt finds its record in whichever shard holds it.
    conformance::receipts(&log, &org).await;
    conformance::replies(&log, &org).await;
    let items = db
        .scan()
        .table_name(&stack.tables.log)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    let pks: Vec<&str> = items
        .iter()
        .filter_map(|i| i.get("pk")?.as_s().ok().map(String::as_str))
        .filter(|pk| pk.starts_with(&format!("ORG#{org}#")))
        .collect();
    assert!(
        pks.iter().any(|pk| pk.contains("#S")),
        "records in shard partitions: {pks:?}"
    );
}

/// A big notification's records are spread over shards by its first write, and an
/// instance that has never seen it (a delivery function's fresh instance) still finds
/// each one: claims, finishes, a recipient's records, the whole notification, its pages
/// and its counts; a replay puts nothing in the wrong partition.
#[tokio::test]
async fn an_instance_that_never_saw_a_sharded_notification_finds_its_records_on_moto() {
    use flare_shared::domain::*;
    use flare_shared::ports::{Claim, DeliveryLog, Finish};
    let stack = AwsStack::create(moto()).await.unwrap();
    let db = flare_aws::dynamodb(&stack.sdk);
    let writer = DynamoDeliveryLog::new(db.clone(), &stack.tables.log).with_shard_records(4);
    let org = OrgId::parse(&unique("org")).unwrap();
    let n = conformance::notification(&org);
    let records: Vec<_> = (0..20)
        .map(|i| conformance::record(&n, &format!("u-{i}"), Channel::Sms, false))
        .collect();
    writer.create_notification(&n).await.unwrap();
    writer.put_first_records(&n, &records).await.unwrap();
    let id = &n.notification_id;
    let pks: std::collections::HashSet<String> = db
        .scan()
        .table_name(&stack.tables.log)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default()
        .iter()
        .filter_map(|i| i.get("pk")?.as_s().ok().cloned())
        .filter(|pk| pk.contains(&id.to_string()))
        .collect();
    // 20 records, 4 a shard: 5 shards, as many as the 20 recipients' hashes fill.
    assert!(
        pks.len() >= 3 && pks.iter().filter(|pk| pk.contains("#S")).count() == pks.len() - 1,
        "the notification's partition and its shards: {pks:?}"
    );

    // Another instance: knows nothing about the layout.
    let reader = DynamoDeliveryLog::new(db.clone(), &stack.tables.log);
    let u = |i: usize| RecipientRef::User(UserId::parse(&format!("u-{i}")).unwrap());
    let lease = std::time::Duration::from_secs(30);
    assert!(matches!(
        reader
            .claim(&org, id, &u(3), Channel::Sms.into(), lease)
            .await
            .unwrap(),
        Claim::Claimed { attempts: 1 }
    ));
    let fresh = DynamoDeliveryLog::new(db.clone(), &stack.tables.log);
    assert!(
        fresh
            .finish(
                &org,
                id,
                &u(3),
                Channel::Sms.into(),
                Finish::Sent {
                    attempt: 1,
                    provider: Provider::Sns,
                    provider_message_id: None,
                    receipt_key: None,
                    failover_from: None,
                    sms: None,
                }
            )
            .await
            .unwrap(),
        "a finish from a third instance finds the record"
    );
    let fresh = DynamoDeliveryLog::new(db.clone(), &stack.tables.log);
    let mine = fresh.recipient_records(&org, id, &u(7)).await.unwrap();
    assert_eq!(mine.len(), 1);
    let fresh = DynamoDeliveryLog::new(db.clone(), &stack.tables.log);
    let logged = fresh.get_notification(&org, id).await.unwrap().unwrap();
    assert_eq!(logged.records.len(), 20);
    assert_eq!(
        logged
            .records
            .iter()
            .filter(|r| r.status == DeliveryStatus::Sent)
            .count(),
        1
    );
    // Pages of 6 recipients over the shards: every recipient once, in key order within
    // each shard (a page reads its shards one after the other, not every shard's
    // first six).
    let fresh = DynamoDeliveryLog::new(db.clone(), &stack.tables.log);
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, next) = fresh
            .notification_page(&org, id, after.as_deref(), 6)
            .await
            .unwrap()
            .unwrap();
        seen.extend(page.records.iter().map(|r| r.recipient.key()));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 20, "every recipient once: {seen:?}");
    assert_eq!(seen.len(), 20);
    // A replay from yet another instance writes nothing new and nothing beside.
    let fresh = DynamoDeliveryLog::new(db.clone(), &stack.tables.log);
    fresh.put_records(&n, &records).await.unwrap();
    let logged = fresh.get_notification(&org, id).await.unwrap().unwrap();
    assert_eq!(logged.records.len(), 20);
    let listed = fresh.list_notifications(&org, None, 10).await.unwrap();
    assert_eq!(listed[0].counts.sent, 1, "{:?}", listed[0].counts);
    assert_eq!(listed[0].counts.pending, 19, "{:?}", listed[0].counts);
}

/// The directory read a page at a time, and its opt-outs, on each adapter.
#[tokio::test]
async fn every_directory_reads_a_page_at_a_time() {
    let org = OrgId::parse(&unique("org")).unwrap();
    conformance::directory_pages(&flare_memory::MemoryDirectory::default(), &org).await;
    conformance::opt_outs(&flare_memory::MemoryDirectory::default(), &org).await;
    let dir = flare_tests::TempDir::new("flare-sqlite-dir").unwrap();
    let db = flare_sqlite::Sqlite::open(&dir.path().join("flare.db")).unwrap();
    conformance::directory_pages(&db, &org).await;
    conformance::opt_outs(&db, &org).await;
    let stack = AwsStack::create(moto()).await.unwrap();
    let directory = flare_aws::dynamodb::DynamoDirectory::new(
        flare_aws::dynamodb(&stack.sdk),
        &stack.tables.directory,
    );
    conformance::directory_pages(&directory, &org).await;
    conformance::opt_outs(&directory, &org).await;
}

/// A finish that moves nothing (a repeat, a late timer) costs its one conditional
/// update: the refusal carries the record, so no read of the layout follows it.
#[tokio::test]
async fn a_finish_that_moves_nothing_costs_one_call_on_moto() {
    use flare_shared::domain::Channel;
    use flare_shared::ports::{DeliveryLog, Finish};
    let stack = AwsStack::create(moto()).await.unwrap();
    let (db, counter) = flare_tests::fanout::counted_dynamodb(&stack);
    let org = OrgId::parse(&unique("org")).unwrap();
    let n = conformance::notification(&org);
    let record = conformance::record(&n, "u-1", Channel::Sms, false);
    let writer = DynamoDeliveryLog::new(db.clone(), &stack.tables.log);
    writer.create_notification(&n).await.unwrap();
    writer
        .put_first_records(&n, std::slice::from_ref(&record))
        .await
        .unwrap();
    let done = Finish::Cancel {
        reason: "acknowledged".into(),
    };
    let who = record.recipient.clone();
    assert!(
        writer
            .finish(&org, &n.notification_id, &who, record.slot(), done.clone())
            .await
            .unwrap()
    );
    // Another instance (it knows no layout), the same finish again: not moved.
    let other = DynamoDeliveryLog::new(db, &stack.tables.log);
    let before = counter.counts();
    assert!(
        !other
            .finish(&org, &n.notification_id, &who, record.slot(), done)
            .await
            .unwrap()
    );
    assert_eq!(counter.since(&before), [("UpdateItem".to_string(), 1)]);
}

/// One page of a notification's view reads about one page of records, however many
/// partitions its records are spread over: 120 recipients in 24 shards, a page of 10
/// reads the 10 recipients' records (and one more record, to know a page follows), not
/// every shard's first 11.
#[tokio::test]
async fn a_view_page_reads_one_page_of_records_whatever_the_shard_count_on_moto() {
    use flare_shared::domain::{Channel, UserId};
    use flare_shared::ports::DeliveryLog;
    let stack = AwsStack::create(moto()).await.unwrap();
    let items = flare_tests::fanout::ItemsRead::default();
    let db = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&stack.sdk)
            .interceptor(items.clone())
            .build(),
    );
    let log = DynamoDeliveryLog::new(db, &stack.tables.log).with_shard_records(10);
    let org = OrgId::parse(&unique("org")).unwrap();
    let n = conformance::notification(&org);
    let id = &n.notification_id;
    let records: Vec<_> = (0..120)
        .flat_map(|i| {
            let who = format!("u-{i:03}");
            [
                conformance::record(&n, &who, Channel::Push, false),
                conformance::record(&n, &who, Channel::Sms, false),
            ]
        })
        .collect();
    log.create_notification(&n).await.unwrap();
    log.put_first_records(&n, &records).await.unwrap();
    log.ack(&org, id, &UserId::parse("u-007").unwrap())
        .await
        .unwrap();
    let mut after: Option<String> = None;
    let mut seen = std::collections::BTreeSet::new();
    let mut reads = Vec::new();
    loop {
        let before = items.total();
        let (page, next) = log
            .notification_page(&org, id, after.as_deref(), 10)
            .await
            .unwrap()
            .unwrap();
        reads.push(items.total() - before);
        let mut keys: Vec<String> = page.records.iter().map(|r| r.recipient.key()).collect();
        keys.dedup();
        assert!(keys.len() <= 10, "{keys:?}");
        for k in keys {
            assert!(seen.insert(k.clone()), "{k} on two pages");
        }
        if page
            .records
            .iter()
            .any(|r| r.recipient.key() == "user:u-007")
        {
            assert_eq!(page.acks.len(), 1, "the page's ack: {:?}", page.acks);
        }
        match next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 120);
    // The notification item, up to 10 recipients' 20 records and the next one's first
    // (a page may span two shards: one record more each), and at most 10 acks.
    let most = reads.iter().max().copied().unwrap();
    assert!(most <= 1 + 22 + 10, "items read per page: {reads:?}");
}

/// v1.2: an SMS reply `1` (or `2`) costs four DynamoDB calls when nothing of the
/// responder's is pending, through a gateway (its organization known) or from End User
/// Messaging (found by the number in any organization): the inbound id (PutItem), the
/// number's newest dispatch SMS (GetItem), the answer with its ack (UpdateItem) and the
/// responder's records (Query); then the confirmation goes through SNS.
#[tokio::test]
async fn an_sms_reply_costs_four_dynamodb_calls_on_moto() {
    use flare_aws::dynamodb::{DynamoDirectory, DynamoSettings};
    use flare_shared::app::inbound::{Replied, Replies, end_user_messaging, received};
    use flare_shared::domain::inbound::InboundSms;
    use flare_shared::domain::*;
    use flare_shared::ports::{DeliveryLog, Finish, SmsSent};
    use std::sync::Arc;
    let stack = AwsStack::create(moto()).await.unwrap();
    let (db, counter) = flare_tests::fanout::counted_dynamodb(&stack);
    let org = OrgId::parse(&unique("org")).unwrap();
    let log = Arc::new(DynamoDeliveryLog::new(db.clone(), &stack.tables.log));
    let n = conformance::notification(&org);
    let number = PhoneNumber::parse("+14155550161").unwrap();
    let mut record = conformance::record(&n, "u-1", Channel::Sms, false);
    record.destination = Some(Destination::Phone(number.clone()));
    log.create_notification(&n).await.unwrap();
    log.put_first_records(&n, std::slice::from_ref(&record))
        .await
        .unwrap();
    let who = record.recipient.clone();
    let lease = std::time::Duration::from_secs(60);
    log.claim(&org, &n.notification_id, &who, record.slot(), lease)
        .await
        .unwrap();
    let sent = Finish::Sent {
        attempt: 1,
        provider: Provider::Sns,
        provider_message_id: Some("m-1".into()),
        receipt_key: None,
        failover_from: None,
        sms: None,
    };
    assert!(
        log.finish(&org, &n.notification_id, &who, record.slot(), sent)
            .await
            .unwrap()
    );
    let remembered = SmsSent {
        notification_id: n.notification_id.clone(),
        user_id: UserId::parse("u-1").unwrap(),
        at: chrono::Utc::now(),
        org_id: Some(org.clone()),
        control_center_id: Some(ControlCenterId::main()),
        incident_id: None,
    };
    for scope in [Some(&org), None] {
        log.remember_sms(scope, &number, &remembered).await.unwrap();
    }
    let replies = Replies {
        settings: Arc::new(DynamoSettings::new(db.clone(), &stack.tables.settings)),
        directory: Arc::new(DynamoDirectory::new(db, &stack.tables.directory)),
        log: log.clone(),
        metrics: Arc::new(flare_shared::ports::NoMetrics),
        sms_senders: [(
            Provider::Sns,
            Arc::new(flare_aws::sns_sms::SnsSmsSender::new(flare_aws::sns(
                &stack.sdk,
            ))) as Arc<dyn flare_shared::ports::SmsSender>,
        )]
        .into(),
    };
    let through = SmsSettings {
        control_center_id: ControlCenterId::main(),
        provider: SmsProvider::Sns,
        sender_number: None,
        password_set: false,
        secrets_at: None,
        smart_encoding: true,
        max_segments: 3,
    };
    let sms = |text: &str, id: &str| InboundSms {
        from: number.clone(),
        to: "+12065550142".into(),
        text: text.into(),
        message_id: id.into(),
    };
    let four = |calls: Vec<(String, u64)>| {
        assert_eq!(
            calls,
            [
                ("GetItem".to_string(), 1),
                ("PutItem".to_string(), 1),
                ("Query".to_string(), 1),
                ("UpdateItem".to_string(), 1)
            ]
        )
    };
    let before = counter.counts();
    let done = received(&replies, Some(&org), &sms("1", "g-1"), &through).await;
    assert_eq!(done.unwrap(), Replied::Answered);
    four(counter.since(&before));
    let before = counter.counts();
    let done = end_user_messaging(&replies, &sms("2", "e-1")).await;
    assert_eq!(done.unwrap(), Replied::Answered);
    four(counter.since(&before));
    let logged = log
        .get_notification(&org, &n.notification_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(logged.responses[0].1.answer, Answer::Unavailable);
    assert_eq!(logged.acks.len(), 1);
}

/// Where a store's chain breaks, as `GET /v1/audit/verify` would say.
async fn first_broken(log: &dyn flare_shared::ports::AuditLog, org: &OrgId) -> Option<String> {
    let (chain, head) = log.chain(org).await.unwrap();
    let head = head.as_ref().map(|(s, h)| (*s, h.as_str()));
    flare_shared::domain::audit::verify(&chain, head).first_broken
}

/// v1.2: the audit trail's stores keep one chain per organization, and an entry
/// edited in the store breaks it there.
#[tokio::test]
async fn every_audit_log_keeps_one_chain_and_an_edit_shows() {
    let org = OrgId::parse(&unique("org")).unwrap();
    let memory = flare_memory::MemoryAuditLog::default();
    flare_tests::audit::audit_log(&memory, &org).await;
    memory.tamper(&org, |entries| {
        entries[6].record.outcome.status = 403;
    });
    assert_eq!(
        first_broken(&memory, &org).await.as_deref(),
        Some("a-000000000007")
    );

    let dir = flare_tests::TempDir::new("flare-sqlite-audit").unwrap();
    let sqlite = flare_sqlite::Sqlite::open(&dir.path().join("flare.db")).unwrap();
    flare_tests::audit::audit_log(&sqlite, &org).await;
    // SQLite refuses to change or delete an entry at all.
    let db = rusqlite::Connection::open(dir.path().join("flare.db")).unwrap();
    for sql in ["UPDATE audit SET body = '{}'", "DELETE FROM audit"] {
        let e = db.execute(sql, []).unwrap_err().to_string();
        assert!(e.contains("never"), "{sql}: {e}");
    }

    let stack = AwsStack::create(moto()).await.unwrap();
    let db = flare_aws::dynamodb(&stack.sdk);
    let dynamo = flare_aws::audit::DynamoAuditLog::new(db.clone(), &stack.audit_table, 400);
    flare_tests::audit::audit_log(&dynamo, &org).await;
    // Someone with the table's keys rewrites entry 7's outcome.
    use aws_sdk_dynamodb::types::AttributeValue as A;
    let key = |sk: &str| {
        std::collections::HashMap::from([
            ("pk".to_string(), A::S(format!("ORG#{org}"))),
            ("sk".to_string(), A::S(sk.to_string())),
        ])
    };
    let item = db
        .get_item()
        .table_name(&stack.audit_table)
        .set_key(Some(key("A#000000000007")))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let body = item["body"]
        .as_s()
        .unwrap()
        .replace("\"status\":200", "\"status\":403");
    let mut edited = item.clone();
    edited.insert("body".into(), A::S(body));
    db.put_item()
        .table_name(&stack.audit_table)
        .set_item(Some(edited))
        .send()
        .await
        .unwrap();
    assert_eq!(
        first_broken(&dynamo, &org).await.as_deref(),
        Some("a-000000000007")
    );
    // And an entry deleted: the gap.
    db.delete_item()
        .table_name(&stack.audit_table)
        .set_key(Some(key("A#000000000003")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        first_broken(&dynamo, &org).await.as_deref(),
        Some("a-000000000003")
    );
}
