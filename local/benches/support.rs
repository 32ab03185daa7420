//! What the local runner's benchmarks share.

use flare_local::{LocalApp, LocalConfig};
use flare_shared::domain::*;
use flare_tests::fanout::responder;

/// A dispatch (event id `id`) of organization `bench` to `recipients`.
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
                secrets_rev: None,
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
