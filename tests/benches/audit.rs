//! What the audit trail costs a write: settings PUTs through the API handler, which
//! records each in the trail, against the same PUT's own work (`settings::put_sms`, no
//! trail at all), the two alternating so both see the same machine, on moto (the
//! DynamoDB stores, with the DynamoDB calls of each counted) and on the local runner's
//! SQLite stores.
//!
//!     cargo bench -p flare-tests --bench audit [-- 200]
//!
//! Each PUT changes the sender number, so each is a real change with an entry of its own.
//! The clock covers the handler (reading, writing, the trail), not HTTP or JSON on the
//! wire; moto's latency is a local server's, not DynamoDB's.

use flare_shared::app::Services;
use flare_shared::app::api::{self, ApiRequest};
use flare_shared::app::auth::{Claims, Role};
use flare_shared::domain::OrgId;
use flare_tests::fanout::CallCounter;
use flare_tests::stack::AwsStack;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn body(i: usize) -> serde_json::Value {
    serde_json::json!({"provider": "sns", "sender_number": format!("+1555{:07}", i)})
}

fn put(org: &OrgId, i: usize) -> ApiRequest {
    ApiRequest {
        method: "PUT".into(),
        path: "/v1/settings/sms/main".into(),
        claims: Ok(Claims {
            sub: "u-admin".into(),
            org_id: org.clone(),
            roles: vec![Role::Admin],
        }),
        body: body(i).to_string().into_bytes(),
        query: None,
        idempotency_key: None,
        headers: Vec::new(),
        url: None,
        meta: Default::default(),
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p99(v: &mut [Duration]) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

/// One PUT: through the API (`audited`: with its entry), or its own work alone.
async fn one(svc: &Services, org: &OrgId, i: usize, audited: bool) -> Duration {
    let started = Instant::now();
    if audited {
        let r = api::handle(svc, put(org, i)).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    } else {
        flare_shared::app::settings::put_sms(svc, org, "main", &body(i))
            .await
            .unwrap();
    }
    started.elapsed()
}

/// `n` PUTs each way, alternating: the median and p99 of each, and the ratio.
async fn compare(name: &str, svc: &Services, org: &OrgId, n: usize) {
    let (mut on, mut off) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n * 2 {
        if i % 2 == 0 {
            on.push(one(svc, org, i, true).await);
        } else {
            off.push(one(svc, org, i, false).await);
        }
    }
    let (m_on, m_off) = (median(&mut on), median(&mut off));
    println!(
        "{name:<8} settings PUT median {:>8.2} ms with its entry, {:>8.2} ms alone: {:.2}x (p99 {:.2} / {:.2} ms; {n} each)",
        m_on.as_secs_f64() * 1e3,
        m_off.as_secs_f64() * 1e3,
        m_on.as_secs_f64() / m_off.as_secs_f64(),
        p99(&mut on).as_secs_f64() * 1e3,
        p99(&mut off).as_secs_f64() * 1e3,
    );
}

async fn on_moto(n: usize) {
    let stack = AwsStack::create(flare_tests::moto()).await.unwrap();
    let counter = CallCounter::default();
    let db = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&stack.sdk)
            .interceptor(counter.clone())
            .build(),
    );
    let mut svc = flare_memory::services(Default::default());
    // As the API function wires them: the change and its entry in one transaction.
    let audit = flare_aws::audit::DynamoAuditLog::new(db.clone(), &stack.audit_table, 400);
    svc.settings = Arc::new(
        flare_aws::dynamodb::DynamoSettings::new(db, &stack.tables.settings)
            .with_audit(audit.clone()),
    );
    svc.audit = Arc::new(audit);
    let org = OrgId::parse(&flare_tests::unique("audit")).unwrap();
    // The DynamoDB calls of one PUT each way, after a first that creates the settings.
    one(&svc, &org, 0, true).await;
    for (label, audited) in [("with its entry", true), ("alone", false)] {
        let before = counter.counts();
        one(&svc, &org, 1, audited).await;
        println!(
            "moto     DynamoDB calls of one settings PUT {label}: {:?}",
            counter.since(&before)
        );
    }
    compare("moto", &svc, &org, n).await;
}

async fn on_sqlite(n: usize) {
    let dir = flare_tests::TempDir::new("flare-bench-audit").unwrap();
    let db = flare_sqlite::Sqlite::open(&dir.path().join("flare.db")).unwrap();
    let mut svc = flare_memory::services(Default::default());
    svc.settings = Arc::new(db.clone());
    svc.secrets = Arc::new(db.clone());
    svc.audit = Arc::new(db);
    let org = OrgId::parse("bench").unwrap();
    compare("sqlite", &svc, &org, n).await;
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        on_sqlite(n * 5).await;
        on_moto(n).await;
    });
}
