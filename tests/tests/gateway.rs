//! The HTTP SMS gateway sender against a real local HTTP server: each format's exact
//! request, retries, refusals, hangs, redirects, and the SSRF guard.

use flare_memory::{MemorySecrets, MemorySettings};
use flare_providers::http_sms::HttpSmsSender;
use flare_shared::domain::*;
use flare_shared::ports::{
    SecretKey, SecretStore, SendError, SettingsStore, SmsMessage, SmsSender,
};
use flare_tests::{gateway, unique};
use secrecy::SecretString;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const LOCAL: EndpointPolicy = EndpointPolicy {
    allow_private: true,
};
const AWS: EndpointPolicy = EndpointPolicy {
    allow_private: false,
};

struct Gw {
    sender: HttpSmsSender,
    org: OrgId,
    path: String,
}

/// A sender over in-memory settings pointing at `url`, with password and header set.
async fn setup(url: &str, format: GatewayFormat, policy: EndpointPolicy) -> Gw {
    let org = OrgId::parse(&unique("org")).unwrap();
    let settings = Arc::new(MemorySettings::default());
    let secrets = Arc::new(MemorySecrets::default());
    let cc = ControlCenterId::main();
    settings
        .put_sms(
            &org,
            &SmsSettings {
                control_center_id: cc.clone(),
                provider: SmsProvider::Http(HttpGateway {
                    // Saved where private endpoints were allowed; sent under `policy`.
                    url: GatewayUrl::parse(url, LOCAL).unwrap(),
                    format,
                    username: Some("acct-17".into()),
                    header_name: Some(HeaderName::parse("X-Api-Key").unwrap()),
                    failover_sns: false,
                    max_per_second: None,
                    failover_sender_number: None,
                }),
                sender_number: Some(SenderId::parse("+15551234567").unwrap()),
                password_set: true,
                secrets_at: None,
                smart_encoding: true,
                max_segments: 3,
            },
        )
        .await
        .unwrap();
    secrets
        .put(
            &SecretKey::SmsPassword(org.clone(), cc.clone(), None),
            &SecretString::from("s3cret"),
        )
        .await
        .unwrap();
    secrets
        .put(
            &SecretKey::SmsHeaderValue(org.clone(), cc, None),
            &SecretString::from("abc123"),
        )
        .await
        .unwrap();
    let sender = HttpSmsSender::with_timeouts(
        settings,
        secrets,
        policy,
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .unwrap();
    let path = url::Url::parse(url)
        .map(|u| u.path().to_string())
        .unwrap_or_default();
    Gw { sender, org, path }
}

fn sms(org: &OrgId) -> SmsMessage {
    SmsMessage {
        notification_id: NotificationId::parse("n-1").unwrap(),
        delivery_id: Some("0b8e2f43-0000-4000-8000-000000000001".into()),
        org_id: org.clone(),
        control_center_id: ControlCenterId::main(),
        to: PhoneNumber::parse("+14155550100").unwrap(),
        from: None,
        text: "Structure fire: 12 Main St".into(),
        settings: None,
    }
}

fn local_url() -> String {
    format!("{}/{}", gateway().url, unique("send"))
}

#[tokio::test]
async fn json_format_sends_the_exact_request() {
    let g = setup(&local_url(), GatewayFormat::Json, LOCAL).await;
    gateway()
        .script(
            &g.path,
            json!([{"status": 200, "body": {"message_id": "gw-77"}}]),
        )
        .await
        .unwrap();
    let r = g.sender.send(&sms(&g.org)).await.unwrap();
    assert_eq!(r.provider, Provider::Http);
    assert_eq!(r.provider_message_id.as_deref(), Some("gw-77"));
    let reqs = gateway().requests_to(&g.path).await.unwrap();
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert_eq!(req["method"], "POST");
    assert_eq!(req["headers"]["content-type"], "application/json");
    assert_eq!(
        req["headers"]["authorization"], "Basic YWNjdC0xNzpzM2NyZXQ=",
        "acct-17:s3cret"
    );
    assert_eq!(req["headers"]["x-api-key"], "abc123");
    let body: serde_json::Value = serde_json::from_str(req["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"to": "+14155550100", "from": "+15551234567", "text": "Structure fire: 12 Main St"})
    );
}

#[tokio::test]
async fn form_and_twilio_formats_are_form_encoded_with_their_field_names() {
    for (format, expected) in [
        (
            GatewayFormat::Form,
            "to=%2B14155550100&from=%2B15551234567&text=Structure+fire%3A+12+Main+St",
        ),
        (
            GatewayFormat::Twilio,
            "To=%2B14155550100&From=%2B15551234567&Body=Structure+fire%3A+12+Main+St",
        ),
    ] {
        let g = setup(&local_url(), format, LOCAL).await;
        let r = g.sender.send(&sms(&g.org)).await.unwrap();
        assert!(r.provider_message_id.unwrap().starts_with("gw-"));
        let req = &gateway().requests_to(&g.path).await.unwrap()[0];
        assert_eq!(
            req["headers"]["content-type"],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(req["body"], expected);
        assert_eq!(req["headers"]["x-api-key"], "abc123");
    }
}

#[tokio::test]
async fn a_5xx_or_429_is_transient_and_the_retry_is_sent() {
    let g = setup(&local_url(), GatewayFormat::Json, LOCAL).await;
    gateway()
        .script(&g.path, json!([{"status": 500}, {"status": 429}]))
        .await
        .unwrap();
    let first = g.sender.send(&sms(&g.org)).await.unwrap_err();
    assert!(first.is_transient(), "{first:?}");
    assert!(
        g.sender
            .send(&sms(&g.org))
            .await
            .unwrap_err()
            .is_transient()
    );
    assert!(g.sender.send(&sms(&g.org)).await.is_ok());
    // Every attempt of the delivery carries its id, so the gateway can drop a repeat.
    let keys: Vec<_> = gateway()
        .requests_to(&g.path)
        .await
        .unwrap()
        .iter()
        .map(|r| r["headers"]["idempotency-key"].clone())
        .collect();
    assert_eq!(keys, vec![json!(sms(&g.org).delivery_id.unwrap()); 3]);
    // A test send has no delivery: no key.
    let test = SmsMessage {
        delivery_id: None,
        ..sms(&g.org)
    };
    g.sender.send(&test).await.unwrap();
    let last = gateway().requests_to(&g.path).await.unwrap().pop().unwrap();
    assert!(last["headers"].get("idempotency-key").is_none(), "{last}");
}

#[tokio::test]
async fn a_4xx_fails_at_once_quoting_the_gateway_but_never_a_secret() {
    let g = setup(&local_url(), GatewayFormat::Json, LOCAL).await;
    gateway()
        .script(
            &g.path,
            json!([{"status": 400, "body": "invalid number for key abc123"}]),
        )
        .await
        .unwrap();
    match g.sender.send(&sms(&g.org)).await.unwrap_err() {
        e @ SendError::Permanent { .. } => {
            let reason = e.reason();
            assert!(
                reason.starts_with("gateway_rejected: 400 invalid number"),
                "{reason}"
            );
            assert!(
                !reason.contains("abc123") && !reason.contains("s3cret"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_hung_gateway_times_out_as_transient() {
    let g = setup(&local_url(), GatewayFormat::Json, LOCAL).await;
    gateway()
        .script(&g.path, json!([{"hang": 3}]))
        .await
        .unwrap();
    let e = g.sender.send(&sms(&g.org)).await.unwrap_err();
    assert!(e.is_transient() && e.reason() == "gateway_timeout", "{e:?}");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let g = setup(&local_url(), GatewayFormat::Json, LOCAL).await;
    let elsewhere = format!("/{}", unique("elsewhere"));
    gateway()
        .script(
            &g.path,
            json!([{"status": 302, "location": format!("{}{elsewhere}", gateway().url)}]),
        )
        .await
        .unwrap();
    let e = g.sender.send(&sms(&g.org)).await.unwrap_err();
    assert!(
        !e.is_transient() && e.reason().starts_with("gateway_redirected"),
        "{e:?}"
    );
    assert!(gateway().requests_to(&elsewhere).await.unwrap().is_empty());
}

#[tokio::test]
async fn private_and_metadata_targets_are_refused_in_aws_mode() {
    let port = flare_tests::free_port();
    for host in [
        "127.0.0.1".to_string(),
        "10.0.0.1".into(),
        "169.254.169.254".into(),
        "[::1]".into(),
        "[::ffff:127.0.0.1]".into(),
        "2130706433".into(),
        "0x7f.1".into(),
        "localhost".into(),
    ] {
        let g = setup(
            &format!("https://{host}:{port}/send"),
            GatewayFormat::Json,
            AWS,
        )
        .await;
        let e = g.sender.send(&sms(&g.org)).await.unwrap_err();
        assert_eq!(e.reason(), "endpoint_not_allowed", "{host}: {e:?}");
        assert!(!e.is_transient());
    }
    // Plain http is refused too where private endpoints are not allowed.
    let g = setup(
        &format!("http://sms.example.com:{port}/send"),
        GatewayFormat::Json,
        AWS,
    )
    .await;
    assert_eq!(
        g.sender.send(&sms(&g.org)).await.unwrap_err().reason(),
        "endpoint_not_allowed"
    );
}

/// A send whose settings were replaced by a save while it ran (their revision's secrets
/// already deleted) is tried again with the new settings: it is never sent without its
/// password or header.
#[tokio::test]
async fn settings_replaced_mid_send_are_retried_never_sent_without_their_secrets() {
    let url = local_url();
    let g = setup(&url, GatewayFormat::Json, LOCAL).await;
    let mut m = sms(&g.org);
    m.settings = Some(SmsSettings {
        control_center_id: ControlCenterId::main(),
        provider: SmsProvider::Http(HttpGateway {
            url: GatewayUrl::parse(&url, LOCAL).unwrap(),
            format: GatewayFormat::Json,
            username: Some("acct-17".into()),
            header_name: Some(HeaderName::parse("X-Api-Key").unwrap()),
            failover_sns: false,
            max_per_second: None,
            failover_sender_number: None,
        }),
        sender_number: Some(SenderId::parse("+15551234567").unwrap()),
        password_set: true,
        // A revision a newer save has replaced: its secrets are gone.
        secrets_at: Some("replaced".into()),
        smart_encoding: true,
        max_segments: 3,
    });
    let e = g.sender.send(&m).await.unwrap_err();
    assert_eq!(e.reason(), "settings_unavailable");
    assert!(e.is_transient(), "tried again: {e:?}");
    assert!(gateway().requests_to(&g.path).await.unwrap().is_empty());
    // The stored settings (plain-named secrets) still send.
    gateway()
        .script(&g.path, json!([{"status": 200, "body": {"id": "ok"}}]))
        .await
        .unwrap();
    g.sender.send(&sms(&g.org)).await.unwrap();
}
