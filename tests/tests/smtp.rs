//! The SMTP sender against aiosmtpd: plain, STARTTLS with AUTH, implicit TLS, a wrong
//! password, a server that closes mid-session, the SSRF guard, and the connection pool.

use flare_memory::{MemorySecrets, MemorySettings};
use flare_providers::smtp::SmtpEmailSender;
use flare_shared::domain::*;
use flare_shared::ports::{EmailMessage, EmailSender, SecretKey, SecretStore, SettingsStore};
use flare_tests::{smtp, unique};
use secrecy::SecretString;
use std::sync::Arc;

const LOCAL: EndpointPolicy = EndpointPolicy {
    allow_private: true,
};
const AWS: EndpointPolicy = EndpointPolicy {
    allow_private: false,
};

async fn sender(
    server_url: &str,
    port: u16,
    use_tls: bool,
    user: Option<&str>,
    password: &str,
    policy: EndpointPolicy,
) -> (SmtpEmailSender, OrgId) {
    let org = OrgId::parse(&unique("org")).unwrap();
    let settings = Arc::new(MemorySettings::default());
    let secrets = Arc::new(MemorySecrets::default());
    settings
        .put_email(&org, &smtp_settings(server_url, port, use_tls, user))
        .await
        .unwrap();
    secrets
        .put(
            &SecretKey::SmtpPassword(org.clone(), None),
            &SecretString::from(password.to_string()),
        )
        .await
        .unwrap();
    let ca = std::fs::read(&smtp().ca_pem).unwrap();
    (
        SmtpEmailSender::new(settings, secrets, policy).with_extra_root(ca),
        org,
    )
}

/// An organization's SMTP settings for the sink (the server is checked as locally).
fn smtp_settings(server_url: &str, port: u16, use_tls: bool, user: Option<&str>) -> EmailSettings {
    EmailSettings {
        provider: EmailProvider::Smtp {
            smtp: SmtpSettings {
                server: SmtpServer::parse(server_url, port as i64, use_tls, LOCAL).unwrap(),
                username: user.map(str::to_string),
                password_set: true,
                secrets_at: None,
                failover_ses: false,
            },
        },
        sender_email: Some(EmailAddress::parse("alerts@acme.example").unwrap()),
    }
}

fn email(org: &OrgId, subject: &str) -> EmailMessage {
    EmailMessage {
        notification_id: NotificationId::parse("n-1").unwrap(),
        delivery_id: Some(format!("d-{}", subject.len())),
        org_id: org.clone(),
        to: EmailAddress::parse("ana@example.org").unwrap(),
        from: EmailAddress::parse("alerts@acme.example").unwrap(),
        subject: subject.into(),
        text: "Engine 7 to 12 Main St".into(),
        html: Some("<p>Engine 7 to 12 Main St</p>".into()),
        settings: None,
    }
}

fn received(subject: &str) -> Vec<serde_json::Value> {
    smtp()
        .messages()
        .unwrap()
        .into_iter()
        .filter(|m| m["data"].as_str().unwrap_or_default().contains(subject))
        .collect()
}

#[tokio::test]
async fn plain_smtp_where_private_endpoints_are_allowed() {
    let (s, org) = sender("127.0.0.1", smtp().port, false, None, "", LOCAL).await;
    let subject = unique("plain");
    let r = s.send(&email(&org, &subject)).await.unwrap();
    assert_eq!(r.provider, Provider::Smtp);
    let got = received(&subject);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["tls"], false);
    assert_eq!(got[0]["rcpt_tos"][0], "ana@example.org");
    let data = got[0]["data"].as_str().unwrap();
    assert!(
        data.contains("text/plain") && data.contains("text/html"),
        "both parts"
    );
}

#[tokio::test]
async fn starttls_with_auth() {
    let (s, org) = sender(
        "127.0.0.1",
        smtp().port,
        true,
        Some(smtp().user.as_str()),
        &smtp().password,
        LOCAL,
    )
    .await;
    let subject = unique("starttls");
    let message = email(&org, &subject);
    s.send(&message).await.unwrap();
    let got = received(&subject);
    // The delivery's id is the Message-ID (the same on every attempt of the delivery).
    let data = got[0]["data"].as_str().unwrap();
    let id = format!(
        "Message-ID: <{}@acme.example>",
        message.delivery_id.as_deref().unwrap()
    );
    assert!(data.contains(&id), "{data}");
    assert_eq!(
        (got[0]["tls"].as_bool(), got[0]["auth_user"].as_str()),
        (Some(true), Some("flare"))
    );
    // The connection is kept and reused for the next message.
    let again = unique("starttls-again");
    s.send(&email(&org, &again)).await.unwrap();
    assert_eq!(received(&again).len(), 1);
}

#[tokio::test]
async fn implicit_tls_with_auth() {
    let url = "smtps://127.0.0.1";
    let (s, org) = sender(
        url,
        smtp().tls_port,
        true,
        Some(smtp().user.as_str()),
        &smtp().password,
        LOCAL,
    )
    .await;
    let subject = unique("implicit");
    s.send(&email(&org, &subject)).await.unwrap();
    let got = received(&subject);
    assert_eq!(
        (got[0]["tls"].as_bool(), got[0]["auth_user"].as_str()),
        (Some(true), Some("flare"))
    );
}

#[tokio::test]
async fn a_wrong_password_fails_auth_failed_and_is_not_retried() {
    let (s, org) = sender(
        "127.0.0.1",
        smtp().port,
        true,
        Some("flare"),
        "wrong",
        LOCAL,
    )
    .await;
    let e = s.send(&email(&org, &unique("wrong"))).await.unwrap_err();
    assert_eq!(e.reason(), "auth_failed");
    assert!(!e.is_transient());
}

#[tokio::test]
async fn a_server_that_closes_mid_session_is_a_transient_failure() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut sock, _)) = listener.accept().await {
            let _ = sock.write_all(b"220 flaky.test ESMTP\r\n").await;
            let mut buf = [0u8; 512];
            let _ = sock.read(&mut buf).await;
            let _ = sock.write_all(b"250 flaky.test\r\n").await;
            let _ = sock.read(&mut buf).await;
            // MAIL FROM arrives: hang up.
            drop(sock);
        }
    });
    let (s, org) = sender("127.0.0.1", port, false, None, "", LOCAL).await;
    let e = s.send(&email(&org, &unique("flaky"))).await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
}

#[tokio::test]
async fn private_smtp_servers_are_refused_in_aws_mode() {
    let (s, org) = sender(
        "127.0.0.1",
        smtp().port,
        true,
        Some("flare"),
        &smtp().password,
        AWS,
    )
    .await;
    assert_eq!(
        s.send(&email(&org, "x")).await.unwrap_err().reason(),
        "endpoint_not_allowed"
    );
    let (s, org) = sender(
        "localhost",
        smtp().tls_port,
        true,
        Some("flare"),
        &smtp().password,
        AWS,
    )
    .await;
    assert_eq!(
        s.send(&email(&org, "x")).await.unwrap_err().reason(),
        "endpoint_not_allowed"
    );
    let (s, org) = sender("smtp.acme.example", 25, false, None, "", AWS).await;
    assert_eq!(
        s.send(&email(&org, "x")).await.unwrap_err().reason(),
        "endpoint_not_allowed",
        "no plaintext in AWS mode"
    );
}

/// As the API saves them: a changed password goes to the secret store under a new
/// revision, then the settings naming it.
async fn save_password(
    settings: &MemorySettings,
    store: &MemorySecrets,
    org: &OrgId,
    password: &str,
) {
    let rev = unique("rev");
    store
        .put(
            &SecretKey::SmtpPassword(org.clone(), Some(rev.clone())),
            &SecretString::from(password.to_string()),
        )
        .await
        .unwrap();
    let mut email = settings.get_email(org).await.unwrap().unwrap();
    if let EmailProvider::Smtp { smtp } = &mut email.provider {
        smtp.secrets_at = Some(rev);
    }
    settings.put_email(org, &email).await.unwrap();
}

#[tokio::test]
async fn a_changed_password_is_used_at_the_next_send_despite_the_cache_and_the_pool() {
    use flare_shared::secrets_cache::{CachedSecrets, MAX_TTL};
    let org = OrgId::parse(&unique("org")).unwrap();
    let settings = Arc::new(MemorySettings::default());
    let store = Arc::new(MemorySecrets::default());
    let sink = smtp_settings("127.0.0.1", smtp().port, true, Some(smtp().user.as_str()));
    settings.put_email(&org, &sink).await.unwrap();
    save_password(&settings, &store, &org, &smtp().password).await;
    // In AWS another function's instance saves the settings: this one's cache never hears
    // of it, only of the settings' new revision.
    let cached = Arc::new(CachedSecrets::new(store.clone(), MAX_TTL));
    let ca = std::fs::read(&smtp().ca_pem).unwrap();
    let s = SmtpEmailSender::new(settings.clone(), cached, LOCAL).with_extra_root(ca);
    s.send(&email(&org, &unique("first"))).await.unwrap();

    // A wrong password now: the pooled, authenticated connection and the cached secret
    // would both have let the next message through.
    save_password(&settings, &store, &org, "not-the-password").await;
    let e = s.send(&email(&org, &unique("stale"))).await.unwrap_err();
    assert_eq!(e.reason(), "auth_failed", "the new password was used");

    save_password(&settings, &store, &org, &smtp().password).await;
    let back = unique("back");
    s.send(&email(&org, &back)).await.unwrap();
    assert_eq!(received(&back).len(), 1);
}

/// Messages share a pooled connection until `close_idle` says QUIT on it; the next
/// message opens a fresh one.
#[tokio::test]
async fn messages_share_a_pooled_connection_until_close_idle() {
    let (s, org) = sender("127.0.0.1", smtp().port, false, None, "", LOCAL).await;
    let subjects: Vec<String> = (0..3).map(|i| unique(&format!("pool{i}"))).collect();
    s.send(&email(&org, &subjects[0])).await.unwrap();
    s.send(&email(&org, &subjects[1])).await.unwrap();
    s.close_idle().await;
    s.send(&email(&org, &subjects[2])).await.unwrap();
    let peers: Vec<String> = subjects
        .iter()
        .map(|subject| {
            let got = received(subject);
            assert_eq!(got.len(), 1, "{subject}");
            got[0]["peer"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        peers[0], peers[1],
        "the second message reused the connection"
    );
    assert_ne!(peers[1], peers[2], "after close_idle a fresh connection");
}
