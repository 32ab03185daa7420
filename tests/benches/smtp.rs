//! 1,000 emails to the same aiosmtpd, side by side: Flare's SMTP sender, Apprise (its
//! per-send throttle off), and a bare lettre loop on one connection with TCP_NODELAY as
//! the ceiling. Targets: at least 10x Apprise and at least 80% of the ceiling.
//!
//!     scripts/bench-smtp [-- N]     (installs Apprise, then runs this; N emails, 1,000)

use flare_memory::{MemorySecrets, MemorySettings};
use flare_providers::smtp::SmtpEmailSender;
use flare_shared::domain::*;
use flare_shared::ports::{EmailMessage, EmailSender, SettingsStore};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let sink = flare_tests::smtp();
    let (host, port) = ("127.0.0.1", sink.port);

    let flare = rt.block_on(async {
        let org = OrgId::parse("bench").unwrap();
        let settings = Arc::new(MemorySettings::default());
        settings
            .put_email(
                &org,
                &EmailSettings {
                    provider: EmailProvider::Smtp {
                        smtp: SmtpSettings {
                            server: SmtpServer::parse(
                                host,
                                port as i64,
                                false,
                                EndpointPolicy {
                                    allow_private: true,
                                },
                            )
                            .unwrap(),
                            username: None,
                            password_set: false,
                            secrets_at: None,
                            failover_ses: false,
                        },
                    },
                    sender_email: None,
                },
            )
            .await
            .unwrap();
        let sender = SmtpEmailSender::new(
            settings,
            Arc::new(MemorySecrets::default()),
            EndpointPolicy {
                allow_private: true,
            },
        );
        let start = Instant::now();
        for i in 0..n {
            let m = EmailMessage {
                notification_id: NotificationId::parse("bench").unwrap(),
                delivery_id: Some(format!("bench-{i}")),
                org_id: org.clone(),
                to: EmailAddress::parse("ana@example.org").unwrap(),
                from: EmailAddress::parse("alerts@acme.example").unwrap(),
                subject: format!("Flare {i}"),
                text: "Engine 7 to 12 Main St".into(),
                html: Some("<p>Engine 7 to 12 Main St</p>".into()),
                settings: None,
            };
            sender.send(&m).await.unwrap();
        }
        start.elapsed()
    });

    let ceiling = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect((host, port)).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut conn = AsyncSmtpConnection::connect_with_transport(
            Box::new(tcp),
            &ClientId::Domain("bench".into()),
        )
        .await
        .unwrap();
        let start = Instant::now();
        for i in 0..n {
            let email = lettre::Message::builder()
                .from("alerts@acme.example".parse().unwrap())
                .to("ana@example.org".parse().unwrap())
                .subject(format!("Lettre {i}"))
                .multipart(lettre::message::MultiPart::alternative_plain_html(
                    "Engine 7 to 12 Main St".to_string(),
                    "<p>Engine 7 to 12 Main St</p>".to_string(),
                ))
                .unwrap();
            conn.send(email.envelope(), &email.formatted())
                .await
                .unwrap();
        }
        start.elapsed()
    });

    let py = flare_tests::python();
    let script = flare_tests::workspace_root().join("scripts/harness/apprise_send.py");
    let out = std::process::Command::new(&py)
        .arg(&script)
        .args([
            host,
            &port.to_string(),
            &n.to_string(),
            "alerts@acme.example",
            "ana@example.org",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "Apprise failed (install it with scripts/bench-smtp): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer = String::from_utf8_lossy(&out.stdout);
    let (seconds, version) = answer.trim().split_once(' ').unwrap();
    let apprise = Duration::from_secs_f64(seconds.parse().unwrap());
    let apprise_label = format!("Apprise {version} (throttle off)");

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("| sender | {n} emails | emails/s |");
    println!("|---|---|---|");
    for (name, d) in [
        ("Flare SmtpEmailSender", flare),
        (
            "bare lettre, one connection, TCP_NODELAY (ceiling)",
            ceiling,
        ),
        (apprise_label.as_str(), apprise),
    ] {
        println!("| {name} | {:.2} s | {:.0} |", d.as_secs_f64(), rate(d));
    }
    println!();
    println!(
        "Flare vs Apprise: {:.1}x (target >= 10x)",
        rate(flare) / rate(apprise)
    );
    println!(
        "Flare vs ceiling: {:.0}% (target >= 80%)",
        100.0 * rate(flare) / rate(ceiling)
    );
}
