//! What the local runner's benchmarks share.

use flare_local::{LocalApp, LocalConfig};
use flare_shared::domain::*;
use flare_tests::fanout::responder;

/// A dispatch (event id `id`) of organization `bench` to `recipients`.
#[allow(dead_code)] // Not every benchmark that includes this file lists its recipients.
pub fn dispatch(id: &str, recipients: &[String]) -> IncidentEvent {
    IncidentEvent::from_value(serde_json::json!({
        "id": id, "detail-type": "Incident Dispatched",
        "source": "flare.incidents", "time": "2026-11-27T10:00:00Z",
        "detail": {"org_id": "bench", "control_center_id": "main", "incident_id": "inc-1",
                   "recipient_ids": recipients, "message": {"title": "Fire", "body": "Engine 7."}}
    }))
    .unwrap()
}

/// A runner over a new temporary folder (answered, to remove after), its organization
/// `bench` with SMS through SNS, `comm`, and `n` responders `u-000000`, ... (a device, a
/// primary mobile and email each).
pub async fn open(comm: CommunicationSettings, n: usize) -> (LocalApp, LocalConfig) {
    let dir = std::env::temp_dir().join(format!("flare-bench-{}", uuid::Uuid::new_v4()));
    let cfg = LocalConfig::from_env(dir).unwrap();
    let app = LocalApp::open(&cfg).await.unwrap();
    let org = OrgId::parse("bench").unwrap();
    let s = &app.services;
    s.settings
        .put_sms(
            &org,
            &SmsSettings {
                control_center_id: ControlCenterId::main(),
                provider: SmsProvider::Sns,
                sender_number: None,
                password_set: false,
                secrets_at: None,
                smart_encoding: true,
                max_segments: 3,
            },
        )
        .await
        .unwrap();
    s.settings.put_communication(&org, &comm).await.unwrap();
    for i in 0..n {
        s.directory
            .put_user(&org, &responder(i, format!("endpoint/{i}")))
            .await
            .unwrap();
    }
    (app, cfg)
}

/// Points organization `bench`'s main control center at the HTTP gateway `url` (json),
/// with `failover` to SNS and a pace of `max_per_second`.
#[allow(dead_code)] // Not every benchmark that includes this file uses a gateway.
pub async fn use_gateway(app: &LocalApp, url: &str, failover: bool, max_per_second: Option<u32>) {
    let gateway = HttpGateway {
        url: GatewayUrl::parse(
            url,
            EndpointPolicy {
                allow_private: true,
            },
        )
        .unwrap(),
        format: GatewayFormat::Json,
        username: None,
        header_name: None,
        failover_sns: failover,
        max_per_second,
        failover_sender_number: None,
    };
    let settings = SmsSettings {
        control_center_id: ControlCenterId::main(),
        provider: SmsProvider::Http(gateway),
        sender_number: Some(SenderId::parse("FLARE").unwrap()),
        password_set: false,
        secrets_at: None,
        smart_encoding: true,
        max_segments: 3,
    };
    let org = OrgId::parse("bench").unwrap();
    app.services
        .settings
        .put_sms(&org, &settings)
        .await
        .unwrap();
}

/// The sizes given on the command line (`-- 1000 3000`), or `default`.
#[allow(dead_code)] // Not every benchmark that includes this file takes sizes.
pub fn sizes(default: &[usize]) -> Vec<usize> {
    let given: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if given.is_empty() {
        default.to_vec()
    } else {
        given
    }
}

/// The process's resident set now (`VmRSS:`) or at its peak (`VmHWM:`), where Linux
/// reports it.
#[allow(dead_code)] // Not every benchmark that includes this file reports memory.
pub fn rss_kib(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
