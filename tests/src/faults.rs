//! What the fault-injection test and the two `faults` benchmarks share: who crashes,
//! which jobs go twice, and the organization's provider settings.

use flare_shared::app::Services;
use flare_shared::app::api::{self, ApiRequest};
use flare_shared::app::auth::{Claims, Role};
use flare_shared::domain::{Channel, DeliveryJob, OrgId};
use serde_json::json;

/// Which recipients' attempts crash after the send, by channel: index mod 100 in this
/// set (2% of the recipients, chosen among those the channel really sends to: push to
/// a working device, index mod 4 = 0; SMS and email to the others, at once or as a
/// fallback after a failed push).
pub fn crash_slots(channel: Channel) -> [usize; 2] {
    match channel {
        Channel::Push => [20, 60],
        Channel::Sms => [7, 57],
        Channel::Email => [33, 86],
    }
}

/// The recipient's index, from its user id `u-<digits>` ([`crate::fanout::responder`]).
pub fn index_of(job: &DeliveryJob) -> Option<usize> {
    job.recipient.key().rsplit('-').next()?.parse().ok()
}

/// SMS through the HTTP gateway at `gateway_url`, email through the SMTP server on
/// `smtp_port` (plain), `app_then_sms_email` for dispatches: saved through the API, as
/// an administrator would.
pub async fn configure_providers(
    services: &Services,
    org: &OrgId,
    gateway_url: &str,
    smtp_port: u16,
) -> anyhow::Result<()> {
    for (path, body) in [
        (
            "/v1/settings/sms/main",
            json!({"provider": "http", "url": gateway_url, "format": "json",
                   "username": "acct", "password": "s3cret-pw", "sender_number": "ACMEFIRE"}),
        ),
        (
            "/v1/settings/email",
            json!({"provider": "smtp", "sender_email": "alerts@acme.example",
                   "smtp": {"server_url": "127.0.0.1", "port": smtp_port, "use_tls": false}}),
        ),
        (
            "/v1/settings/communication",
            // No fallback window: the faults are the providers' (push accepted is enough).
            json!({"dispatch": "app_then_sms_email", "app_fallback_seconds": 0}),
        ),
    ] {
        admin_put(services, org, path, body).await?;
    }
    Ok(())
}

/// A PUT through the API as an administrator of `org`, which must succeed.
pub async fn admin_put(
    services: &Services,
    org: &OrgId,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<()> {
    let r = api::handle(
        services,
        ApiRequest {
            method: "PUT".into(),
            path: path.into(),
            query: None,
            claims: Ok(Claims {
                sub: "u-admin".into(),
                org_id: org.clone(),
                roles: vec![Role::Admin],
            }),
            body: body.to_string().into_bytes(),
            idempotency_key: None,
            headers: Vec::new(),
            url: None,
            meta: Default::default(),
        },
    )
    .await;
    anyhow::ensure!(r.status < 300, "PUT {path}: {} {:?}", r.status, r.body);
    Ok(())
}
