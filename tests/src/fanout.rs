//! Fan-out measurement: route one dispatch to N users on moto and count every AWS call
//! the router makes, against the floor ceil(users/100) + ceil(records/25) + ceil(jobs/10).

use crate::stack::AwsStack;
use crate::unique;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use flare_aws::dynamodb::{DynamoDirectory, DynamoSettings};
use flare_aws::log::DynamoDeliveryLog;
use flare_aws::sqs::SqsQueue;
use flare_shared::app::notify::{Notifier, Routed};
use flare_shared::domain::*;
use flare_shared::ports::SettingsStore;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Counts every HTTP attempt, by operation.
#[derive(Debug, Default, Clone)]
pub struct CallCounter(Arc<Mutex<BTreeMap<String, u64>>>);

impl CallCounter {
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap().clone()
    }

    pub fn total(&self) -> u64 {
        self.counts().values().sum()
    }

    /// The calls made since `before` (a [`Self::counts`]), by operation, those made.
    pub fn since(&self, before: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
        self.counts()
            .into_iter()
            .map(|(op, c)| {
                let n = c - before.get(&op).copied().unwrap_or(0);
                (op, n)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// A DynamoDB client on `stack`'s moto whose every call is counted.
pub fn counted_dynamodb(stack: &AwsStack) -> (aws_sdk_dynamodb::Client, CallCounter) {
    let counter = CallCounter::default();
    let db = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&stack.sdk)
            .interceptor(counter.clone())
            .build(),
    );
    (db, counter)
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_transmit(
        &self,
        _ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = cfg
            .load::<Metadata>()
            .map(|m| m.name().to_string())
            .unwrap_or_else(|| "unknown".into());
        *self.0.lock().unwrap().entry(op).or_default() += 1;
        Ok(())
    }
}

/// Counts the DynamoDB items every call read: a Query's `ScannedCount`, a GetItem's
/// item, a BatchGetItem's items (what read capacity is paid for, item by item).
#[derive(Debug, Default, Clone)]
pub struct ItemsRead(Arc<Mutex<u64>>);

impl ItemsRead {
    pub fn total(&self) -> u64 {
        *self.0.lock().unwrap()
    }
}

impl Intercept for ItemsRead {
    fn name(&self) -> &'static str {
        "ItemsRead"
    }

    fn read_after_deserialization(
        &self,
        ctx: &aws_smithy_runtime_api::client::interceptors::context::AfterDeserializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Ok(out) = ctx.output_or_error() else {
            return Ok(());
        };
        let n = if let Some(q) =
            out.downcast_ref::<aws_sdk_dynamodb::operation::query::QueryOutput>()
        {
            q.scanned_count().max(0) as u64
        } else if let Some(g) =
            out.downcast_ref::<aws_sdk_dynamodb::operation::get_item::GetItemOutput>()
        {
            u64::from(g.item().is_some())
        } else if let Some(b) =
            out.downcast_ref::<aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemOutput>()
        {
            b.responses()
                .map_or(0, |r| r.values().map(|items| items.len() as u64).sum())
        } else {
            0
        };
        *self.0.lock().unwrap() += n;
        Ok(())
    }
}

/// An organization with `n` users (each reachable on every channel) and a dispatch
/// event for all of them, under `app_sms_email`.
pub async fn seed(stack: &AwsStack, n: usize) -> anyhow::Result<serde_json::Value> {
    let comm = CommunicationSettings {
        dispatch: Method::AppSmsEmail,
        ..Default::default()
    };
    seed_with(stack, n, &comm).await
}

/// [`seed`] under other communication settings.
pub async fn seed_with(
    stack: &AwsStack,
    n: usize,
    comm: &CommunicationSettings,
) -> anyhow::Result<serde_json::Value> {
    let org = OrgId::parse(&unique("fanout"))?;
    let db = flare_aws::dynamodb(&stack.sdk);
    let settings = DynamoSettings::new(db.clone(), &stack.tables.settings);
    settings.put_communication(&org, comm).await?;
    settings
        .put_sms(
            &org,
            &SmsSettings {
                control_center_id: ControlCenterId::main(),
                provider: SmsProvider::Sns,
                sender_number: Some(SenderId::parse("ACMEFIRE")?),
                password_set: false,
                secrets_at: None,
                smart_encoding: true,
                max_segments: 3,
            },
        )
        .await?;
    let users: Vec<User> = (0..n)
        .map(|i| {
            responder(
                i,
                format!("arn:aws:sns:us-east-1:123456789012:endpoint/GCM/flare/{i}"),
            )
        })
        .collect();
    DynamoDirectory::new(db, &stack.tables.directory)
        .put_users(&org, &users)
        .await?;
    Ok(serde_json::json!({
        "version": "0", "id": unique("fanout-evt"), "detail-type": "Incident Dispatched",
        "source": "flare.incidents", "time": "2026-11-26T21:00:00Z",
        "detail": {"org_id": org, "control_center_id": "main", "incident_id": "inc-fanout",
                   "recipient_ids": users.iter().map(|u| u.user_id.to_string()).collect::<Vec<_>>(),
                   "message": {"title": "Mass dispatch", "body": "All units respond."}}
    }))
}

/// The outcome of one counted fan-out.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Fanout {
    pub users: usize,
    pub records: usize,
    pub jobs: usize,
    pub calls: BTreeMap<String, u64>,
    pub total: u64,
    pub floor: u64,
}

impl Fanout {
    /// The calls that scale with the fan-out (all but the fixed ones), over the floor.
    pub fn ratio(&self) -> f64 {
        self.total.saturating_sub(fixed_calls(self.records)) as f64 / self.floor as f64
    }
}

/// DynamoDB and SQS clients that count every call with `counter`, patient with moto.
pub fn counted_clients(
    sdk: &flare_aws::SdkConfig,
    sqs_endpoint: Option<&str>,
    counter: &CallCounter,
) -> (aws_sdk_dynamodb::Client, aws_sdk_sqs::Client) {
    // moto answers one call at a time: queued calls need more than AWS's latency budget.
    // An attempt moto never answers is retried (and counted: the interceptor sees attempts).
    let patient = aws_smithy_types::timeout::TimeoutConfig::builder()
        .operation_timeout(std::time::Duration::from_secs(300))
        .operation_attempt_timeout(std::time::Duration::from_secs(30))
        .build();
    let db = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(sdk)
            .interceptor(counter.clone())
            .timeout_config(patient.clone())
            .build(),
    );
    let mut sqs = aws_sdk_sqs::config::Builder::from(sdk)
        .interceptor(counter.clone())
        .timeout_config(patient);
    if let Some(url) = sqs_endpoint {
        sqs = sqs.endpoint_url(url);
    }
    (db, aws_sdk_sqs::Client::from_conf(sqs.build()))
}

/// Routes the event with counted DynamoDB and SQS clients (the router's own adapters).
pub async fn route_counted(
    sdk: &flare_aws::SdkConfig,
    sqs_endpoint: Option<&str>,
    tables: &flare_aws::wiring::Tables,
    queues: &flare_aws::sqs::QueueUrls,
    event: &serde_json::Value,
) -> anyhow::Result<Fanout> {
    let counter = CallCounter::default();
    let (db, sqs) = counted_clients(sdk, sqs_endpoint, &counter);
    let notifier = Notifier {
        settings: Arc::new(DynamoSettings::new(db.clone(), &tables.settings)),
        directory: Arc::new(DynamoDirectory::new(db.clone(), &tables.directory)),
        log: Arc::new(DynamoDeliveryLog::new(db, &tables.log)),
        queue: Arc::new(SqsQueue::new(sqs, queues.clone())),
        metrics: Arc::new(flare_shared::ports::NoMetrics),
        page_size: flare_shared::app::notify::ROUTE_PAGE,
    };
    let ev = IncidentEvent::from_value(event.clone())?;
    let users = match &ev.targets {
        Targets::Users(u) => u.len(),
        _ => 0,
    };
    let routed: Routed = notifier.route(&ev).await?;
    let div = |a: usize, b: usize| a.div_ceil(b) as u64;
    Ok(Fanout {
        users,
        records: routed.records_written,
        jobs: routed.jobs_enqueued,
        floor: div(users, 100) + div(routed.records_written, 25) + div(routed.jobs_enqueued, 10),
        total: counter.total(),
        calls: counter.counts(),
    })
}

/// The router's fixed calls: one Query for every setting of the organization, and
/// creating the notification (a conditional PutItem); and, when the notification's
/// records are sharded (more than [`flare_aws::log::SHARD_RECORDS`]), one UpdateItem
/// saying so on the notification before any record is written.
pub fn fixed_calls(records: usize) -> u64 {
    2 + u64::from(records > flare_aws::log::SHARD_RECORDS)
}

/// Responder `u-<i>` (six digits) reachable on every channel: a basic responder with a
/// device at `endpoint`, a primary mobile and a primary email.
pub fn responder(i: usize, endpoint: String) -> User {
    User {
        user_id: UserId::parse(&format!("u-{i:06}")).unwrap(),
        name: format!("Responder {i}"),
        license: License::BasicResponder,
        is_virtual: false,
        control_center_id: None,
        contacts: Contacts::new(vec![
            Contact::Mobile {
                value: PhoneNumber::parse(&format!("+1415{:07}", i)).unwrap(),
                primary: true,
            },
            Contact::Email {
                value: EmailAddress::parse(&format!("r{i}@acme.example")).unwrap(),
                primary: true,
            },
        ])
        .unwrap(),
        emergency_contacts: vec![],
        devices: vec![Device {
            device_id: DeviceId::parse(&format!("d-{i}")).unwrap(),
            platform: Platform::Fcm,
            token: format!("token-{i}"),
            endpoint: Some(endpoint),
        }],
    }
}
