//! The same email (subject, text and HTML parts) to the same aiosmtpd through Flare's
//! SmtpEmailSender, bare lettre and Apprise (its per-send throttle off), each message
//! timed alone with the same connection policy inside the clock, in rounds whose order
//! rotates (so no sender always follows the slow one or finds the server warm):
//! - open connection: the connection is open before the clock (Flare's pool, warmed by
//!   one untimed message; lettre's, opened first). Apprise cannot keep one: each
//!   notify() connects, greets, sends and quits, so it has no open-connection row.
//! - a connection each: connect, EHLO, send and QUIT inside the clock, for all three
//!   (Flare: a send, then `close_idle`, which says QUIT).
//!
//! Targets: Flare at least 80% of bare lettre's rate on an open connection; at least 10x
//! Apprise as each sends (Flare on its open connection, Apprise with one per message).
//! A p99 is printed from 100 messages a row on; with fewer, the maximum, named so.
//!
//!     scripts/bench smtp      (or cargo bench -p flare-tests --bench smtp -- [N]:
//!                              N messages per sender and row, 1,000)

use flare_memory::{MemorySecrets, MemorySettings};
use flare_providers::smtp::SmtpEmailSender;
use flare_shared::domain::*;
use flare_shared::ports::{EmailMessage, EmailSender, SettingsStore};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SUBJECT: &str = "Engine 7 dispatched";
const TEXT: &str = "Engine 7 to 12 Main St: structure fire, two floors.\nRespond to station 3.";
const HTML: &str =
    "<p>Engine 7 to 12 Main St: structure fire, two floors.</p><p>Respond to station 3.</p>";
const FROM: &str = "alerts@acme.example";
const TO: &str = "ana@example.org";
const ROUNDS: usize = 10;

#[derive(Clone, Copy, PartialEq)]
enum Run {
    FlareOpen,
    LettreOpen,
    FlareEach,
    LettreEach,
    AppriseEach,
}

const RUNS: [Run; 5] = [
    Run::FlareOpen,
    Run::LettreOpen,
    Run::FlareEach,
    Run::LettreEach,
    Run::AppriseEach,
];

impl Run {
    fn row(self) -> &'static str {
        match self {
            Run::FlareOpen | Run::LettreOpen => "open connection",
            _ => "a connection each",
        }
    }
}

/// What each run took per message, and the bytes the server received for them.
#[derive(Default)]
struct Samples {
    times: Vec<Duration>,
    bytes: usize,
}

impl Samples {
    fn rate(&self) -> f64 {
        self.times.len() as f64 / self.times.iter().sum::<Duration>().as_secs_f64()
    }

    /// `median`, and `p99` from 100 samples on, else `max` (the tail of too few samples).
    fn line(&self) -> String {
        let mut t: Vec<f64> = self.times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        t.sort_by(f64::total_cmp);
        let at = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
        let tail = if t.len() >= 100 {
            format!("p99 {:6.2} ms", at(0.99))
        } else {
            format!("max {:6.2} ms", t[t.len() - 1])
        };
        format!(
            "median {:6.2} ms  {tail}  {:7.0} emails/s  {:5} bytes each",
            at(0.5),
            self.rate(),
            self.bytes / t.len()
        )
    }
}

/// Apprise in a Python process of its own (scripts/harness/apprise_send.py), started
/// once, so its start-up and imports stay outside the clock; it times each message.
struct Apprise {
    version: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Apprise {
    fn start(host: &str, port: u16) -> Self {
        let script = flare_tests::workspace_root().join("scripts/harness/apprise_send.py");
        let mut child = Command::new(flare_tests::python())
            .arg(script)
            .args([host, &port.to_string(), FROM, TO, SUBJECT, TEXT, HTML])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 from .venv (scripts/setup-test-servers)");
        let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
        let mut stdout = BufReader::new(stdout);
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let version = first
            .strip_prefix("apprise ")
            .unwrap_or_else(|| panic!("Apprise did not start (install it with scripts/bench-smtp or scripts/bench smtp): {first:?}"))
            .trim()
            .to_string();
        Self {
            version,
            child,
            stdin,
            stdout,
        }
    }

    fn send(&mut self, k: usize) -> Vec<Duration> {
        writeln!(self.stdin, "{k}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let seconds: Vec<f64> = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("Apprise answered {line:?}: {e}"));
        seconds.into_iter().map(Duration::from_secs_f64).collect()
    }
}

impl Drop for Apprise {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The five senders, their connections made before any clock starts.
struct Senders {
    org: OrgId,
    host: String,
    port: u16,
    flare_open: SmtpEmailSender,
    flare_each: SmtpEmailSender,
    lettre: AsyncSmtpConnection,
    apprise: Apprise,
    sent: usize,
}

impl Senders {
    async fn start(host: &str, port: u16) -> Self {
        let org = OrgId::parse("bench").unwrap();
        let mut s = Self {
            flare_open: flare(&org, host, port).await,
            flare_each: flare(&org, host, port).await,
            lettre: lettre_connect(host, port).await,
            apprise: Apprise::start(host, port),
            org,
            host: host.into(),
            port,
            sent: 0,
        };
        // The open connection's first message connects: untimed.
        let m = s.flare_message();
        s.flare_open.send(&m).await.unwrap();
        s
    }

    fn flare_message(&mut self) -> EmailMessage {
        self.sent += 1;
        EmailMessage {
            notification_id: NotificationId::parse("bench").unwrap(),
            delivery_id: Some(format!("bench-{}", self.sent)),
            org_id: self.org.clone(),
            to: EmailAddress::parse(TO).unwrap(),
            from: EmailAddress::parse(FROM).unwrap(),
            subject: SUBJECT.into(),
            text: TEXT.into(),
            html: Some(HTML.into()),
            settings: None,
        }
    }

    /// `k` messages through `run`, each timed alone.
    async fn batch(&mut self, run: Run, k: usize) -> Vec<Duration> {
        if run == Run::AppriseEach {
            return self.apprise.send(k);
        }
        let mut times = Vec::with_capacity(k);
        for _ in 0..k {
            let m = self.flare_message();
            let start = Instant::now();
            match run {
                Run::FlareOpen => {
                    self.flare_open.send(&m).await.unwrap();
                }
                Run::FlareEach => {
                    self.flare_each.send(&m).await.unwrap();
                    self.flare_each.close_idle().await;
                }
                Run::LettreOpen => lettre_send(&mut self.lettre).await,
                _ => {
                    let mut conn = lettre_connect(&self.host, self.port).await;
                    lettre_send(&mut conn).await;
                    conn.quit().await.unwrap();
                }
            }
            times.push(start.elapsed());
        }
        times
    }
}

async fn flare(org: &OrgId, host: &str, port: u16) -> SmtpEmailSender {
    let policy = EndpointPolicy {
        allow_private: true,
    };
    let settings = Arc::new(MemorySettings::default());
    let smtp = SmtpSettings {
        server: SmtpServer::parse(host, port as i64, false, policy).unwrap(),
        username: None,
        password_set: false,
        secrets_at: None,
        failover_ses: false,
    };
    let email = EmailSettings {
        provider: EmailProvider::Smtp { smtp },
        sender_email: None,
    };
    settings.put_email(org, &email).await.unwrap();
    SmtpEmailSender::new(settings, Arc::new(MemorySecrets::default()), policy)
}

/// A connection as Flare makes one: TCP_NODELAY, then the greeting and EHLO.
async fn lettre_connect(host: &str, port: u16) -> AsyncSmtpConnection {
    let tcp = tokio::net::TcpStream::connect((host, port)).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &ClientId::Domain("bench".into()))
        .await
        .unwrap()
}

/// The message built (inside the clock, as Flare and Apprise build theirs) and sent.
async fn lettre_send(conn: &mut AsyncSmtpConnection) {
    let email = lettre::Message::builder()
        .from(FROM.parse().unwrap())
        .to(TO.parse().unwrap())
        .subject(SUBJECT)
        .multipart(lettre::message::MultiPart::alternative_plain_html(
            TEXT.to_string(),
            HTML.to_string(),
        ))
        .unwrap();
    conn.send(email.envelope(), &email.formatted())
        .await
        .unwrap();
}

/// The bytes of the messages the server received since `seen`, checking there are `k`.
fn received(sink: &flare_tests::SmtpSink, seen: &mut usize, k: usize) -> usize {
    let all = sink.messages().unwrap();
    assert_eq!(all.len(), *seen + k, "the server received every message");
    let bytes = all[*seen..]
        .iter()
        .map(|m| m["data"].as_str().unwrap().len())
        .sum();
    *seen = all.len();
    bytes
}

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
    let mut samples: Vec<Samples> = RUNS.iter().map(|_| Samples::default()).collect();
    let version = rt.block_on(async {
        let mut s = Senders::start("127.0.0.1", sink.port).await;
        let mut seen = sink.messages().unwrap().len();
        for round in 0..ROUNDS {
            let k = n / ROUNDS + usize::from(round < n % ROUNDS);
            for i in 0..RUNS.len() {
                let at = (i + round) % RUNS.len();
                let times = s.batch(RUNS[at], k).await;
                samples[at].times.extend(times);
                samples[at].bytes += received(sink, &mut seen, k);
            }
        }
        s.apprise.version.clone()
    });
    report(n, &version, &samples);
}

fn report(n: usize, apprise: &str, samples: &[Samples]) {
    println!(
        "smtp: {n} messages per sender and row to one aiosmtpd (plain SMTP, loopback), the same message (subject, text and HTML), {ROUNDS} rounds in rotating order"
    );
    let name = |run: Run| match run {
        Run::FlareOpen | Run::FlareEach => "Flare SmtpEmailSender".to_string(),
        Run::LettreOpen | Run::LettreEach => "bare lettre".to_string(),
        Run::AppriseEach => format!("Apprise {apprise} (throttle off)"),
    };
    for (run, s) in RUNS.iter().zip(samples) {
        println!("{:<18} {:<32} {}", run.row(), name(*run), s.line());
        if *run == Run::LettreOpen {
            println!(
                "{:<18} {:<32} cannot keep a connection: each notify() connects, greets, sends and quits",
                run.row(),
                name(Run::AppriseEach)
            );
        }
    }
    let rate = |run: Run| samples[RUNS.iter().position(|r| *r == run).unwrap()].rate();
    println!(
        "Flare / bare lettre, open connection: {:.2}x the rate (target >= 0.80)",
        rate(Run::FlareOpen) / rate(Run::LettreOpen)
    );
    println!(
        "Flare / bare lettre, a connection each: {:.2}x the rate",
        rate(Run::FlareEach) / rate(Run::LettreEach)
    );
    println!(
        "Flare / Apprise, a connection each (like for like): {:.1}x the rate",
        rate(Run::FlareEach) / rate(Run::AppriseEach)
    );
    println!(
        "Flare on its open connection / Apprise, which cannot keep one (each as it sends): {:.1}x the rate (target >= 10x)",
        rate(Run::FlareOpen) / rate(Run::AppriseEach)
    );
}
