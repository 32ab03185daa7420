//! Reading an organization's settings on DynamoDB (moto): everything in one Query, even
//! when the directory shares the table.

use flare_aws::dynamodb::{DynamoDirectory, DynamoSettings};
use flare_shared::domain::*;
use flare_shared::ports::{Directory, SettingsStore};
use flare_tests::fanout::{counted_dynamodb, responder};
use flare_tests::stack::AwsStack;
use flare_tests::{moto, unique};

#[tokio::test]
async fn every_setting_is_one_query_and_users_sharing_the_table_are_not_read() {
    let stack = AwsStack::create(moto()).await.unwrap();
    let (db, counter) = counted_dynamodb(&stack);
    // One table for both, as the template allows.
    let settings = DynamoSettings::new(db.clone(), &stack.tables.settings);
    let directory = DynamoDirectory::new(db, &stack.tables.settings);
    let org = OrgId::parse(&unique("org")).unwrap();
    let sms = |cc: &str| SmsSettings {
        control_center_id: ControlCenterId::parse(cc).unwrap(),
        provider: SmsProvider::Sns,
        sender_number: Some(SenderId::parse("ACMEFIRE").unwrap()),
        password_set: false,
        secrets_at: None,
        smart_encoding: true,
        max_segments: 3,
    };
    for cc in ["north", "main", "zulu"] {
        settings.put_sms(&org, &sms(cc)).await.unwrap();
    }
    let comm = CommunicationSettings {
        distress: true,
        ..Default::default()
    };
    settings.put_communication(&org, &comm).await.unwrap();
    directory
        .put_user(&org, &responder(1, "endpoint/1".into()))
        .await
        .unwrap();
    let before = counter.total();

    let all = settings.all(&org).await.unwrap();
    assert_eq!(counter.total() - before, 1, "{:?}", counter.counts());
    assert_eq!(counter.counts().get("Query"), Some(&1));
    let ccs: Vec<&str> = all
        .sms
        .iter()
        .map(|s| s.control_center_id.as_str())
        .collect();
    assert_eq!(ccs, ["main", "north", "zulu"]);
    assert_eq!(all.communication, Some(comm));
    assert_eq!(all.email, None);
    assert_eq!(
        all.effective_sms(&ControlCenterId::parse("south").unwrap())
            .map(|s| s.control_center_id.as_str()),
        Some("main"),
        "a control center without its own settings sends with main's"
    );
    // An SMS job's "own, else main's": one call too.
    let before = counter.total();
    let effective = settings
        .effective_sms(&org, &ControlCenterId::parse("south").unwrap())
        .await
        .unwrap();
    assert_eq!(
        effective.map(|s| s.control_center_id),
        Some(ControlCenterId::main())
    );
    assert_eq!(counter.total() - before, 1, "{:?}", counter.counts());
    // The same as the three reads it replaces.
    assert_eq!(all.sms, settings.list_sms(&org).await.unwrap());
}

/// An SMS job through the organization's own gateway reads the settings once: the
/// delivery function's read is handed to the gateway sender (it read them again).
#[tokio::test]
async fn a_gateway_sms_job_reads_the_settings_once() {
    use flare_memory::{MemoryDeliveryLog, MemoryDirectory, MemorySecrets};
    use flare_providers::http_sms::HttpSmsSender;
    use flare_shared::app::deliver::{Delivered, Deliverer};
    use flare_shared::ports::DeliveryLog;
    use flare_tests::conformance;
    use std::sync::Arc;

    let stack = AwsStack::create(moto()).await.unwrap();
    let (db, counter) = counted_dynamodb(&stack);
    let settings = Arc::new(DynamoSettings::new(db, &stack.tables.settings));
    let org = OrgId::parse(&unique("org")).unwrap();
    let path = format!("/{}", unique("gw"));
    let local = EndpointPolicy {
        allow_private: true,
    };
    settings
        .put_sms(
            &org,
            &SmsSettings {
                control_center_id: ControlCenterId::main(),
                provider: SmsProvider::Http(HttpGateway {
                    url: GatewayUrl::parse(&format!("{}{path}", flare_tests::gateway().url), local)
                        .unwrap(),
                    format: GatewayFormat::Json,
                    username: None,
                    header_name: None,
                    failover_sns: false,
                    max_per_second: None,
                    failover_sender_number: None,
                }),
                sender_number: Some(SenderId::parse("ACMEFIRE").unwrap()),
                password_set: false,
                secrets_at: None,
                smart_encoding: true,
                max_segments: 3,
            },
        )
        .await
        .unwrap();
    let gateway =
        HttpSmsSender::new(settings.clone(), Arc::new(MemorySecrets::default()), local).unwrap();
    let log = Arc::new(MemoryDeliveryLog::default());
    let deliverer = Deliverer {
        log: log.clone(),
        queue: None,
        directory: Arc::new(MemoryDirectory::default()),
        settings,
        push: None,
        sms: [(
            Provider::Http,
            Arc::new(gateway) as Arc<dyn flare_shared::ports::SmsSender>,
        )]
        .into(),
        email: Default::default(),
        default_sender: None,
        metrics: Arc::new(flare_shared::ports::NoMetrics),
        failover: None,
        pacer: None,
        sns_per_second: None,
        max_pace_wait: None,
        links: None,
    };
    let n = Notification {
        control_center_id: ControlCenterId::parse("north").unwrap(),
        ..conformance::notification(&org)
    };
    let record = DeliveryRecord {
        provider: Some(Provider::Http),
        ..conformance::record(&n, "u-1", Channel::Sms, false)
    };
    log.create_notification(&n).await.unwrap();
    log.put_records(&n, std::slice::from_ref(&record))
        .await
        .unwrap();
    let job = flare_shared::domain::routing::JobTemplate::from(&n).job(
        &record.recipient,
        Channel::Sms,
        Provider::Http,
        record.destination.as_ref().unwrap(),
        false,
    );
    let before = counter.total();
    let out = deliverer
        .deliver(&job, false, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert!(matches!(out, Delivered::Sent { .. }), "{out:?}");
    // North has no settings of its own: main's, found by one Query, went to the gateway.
    assert_eq!(counter.total() - before, 1, "{:?}", counter.counts());
    let sent = flare_tests::gateway().requests_to(&path).await.unwrap();
    assert_eq!(sent.len(), 1);
    assert!(sent[0]["body"].as_str().unwrap().contains("ACMEFIRE"));
}
