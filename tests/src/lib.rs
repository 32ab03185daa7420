//! Flare's integration test harness.
//!
//! Starts the real servers the tests talk to, each once per test binary, on free ports:
//! moto (DynamoDB, SNS, SES v2, Secrets Manager, SQS), an aiosmtpd sink with AUTH,
//! STARTTLS and implicit TLS, and an HTTP SMS gateway. Each is a child process running
//! `scripts/harness/serve.py` from the virtualenv that `scripts/setup-test-servers`
//! makes. They stop by process id when the test binary exits (and, as a backstop, by
//! themselves when their standard input closes).
//!
//! A missing virtualenv or a server that does not start fails the test with the
//! command that fixes it; nothing is ever skipped.

use anyhow::{Context, anyhow, bail};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, Once, OnceLock};
use std::time::Duration;

pub use flare_aws::AwsOptions;

pub mod audit;
pub mod conformance;
pub mod emf;
pub mod fanout;
pub mod faults;
pub mod queues;
pub mod runtime;
pub mod stack;

/// The command that makes the virtualenv the harness needs.
pub const FIX: &str = "scripts/setup-test-servers   (or run everything with: scripts/test)";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The virtualenv's python: `FLARE_TEST_PYTHON`, else `<workspace>/.venv/bin/python`.
pub fn python() -> PathBuf {
    std::env::var_os("FLARE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"))
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free local port")
}

static PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static ATEXIT: Once = Once::new();

/// Stops `pid` (SIGTERM) when the test binary exits, however it exits.
pub(crate) fn track_pid(pid: u32) {
    ATEXIT.call_once(|| {
        // SAFETY: registers a plain extern "C" fn; it runs once at process exit.
        unsafe {
            libc::atexit(stop_servers);
        }
    });
    PIDS.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
}

extern "C" fn stop_servers() {
    let pids = PIDS.lock().map(|p| p.clone()).unwrap_or_default();
    for pid in pids {
        // SAFETY: kill(2) on a pid we started; at worst it is already gone (ESRCH).
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
}

/// A running test server. Dropping it (or the test binary exiting) stops it by pid.
pub struct ServerProcess {
    child: Child,
    // Held open: the server exits by itself once this closes.
    _stdin: ChildStdin,
    /// What the server printed after `READY`.
    pub info: serde_json::Value,
}

impl ServerProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `serve.py KIND ARGS...` and waits for its READY line.
    pub fn start(kind: &str, args: &[String]) -> anyhow::Result<Self> {
        let py = python();
        if !py.exists() {
            bail!(
                "the test servers are not installed: {} does not exist.\n  Fix: {FIX}",
                py.display()
            );
        }
        let script = workspace_root().join("scripts/harness/serve.py");
        // stderr goes to a file, never to an undrained pipe: a server that logs every
        // request would otherwise block once the pipe's 64 KiB are full.
        let log_path = std::env::temp_dir().join(format!(
            "flare-{kind}-{}-{}.log",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut child = Command::new(&py)
            .arg(&script)
            .arg(kind)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {} {kind}.\n  Fix: {FIX}", py.display()))?;
        track_pid(child.id());
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let Some(json) = line.strip_prefix("READY ") else {
            let _ = child.kill();
            let _ = child.wait();
            let err = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("test server `{kind}` did not start (printed {line:?}).\n{err}\n  Fix: {FIX}");
        };
        let info = serde_json::from_str(json.trim())
            .with_context(|| format!("READY line of {kind}: {json}"))?;
        Ok(Self {
            child,
            _stdin: stdin,
            info,
        })
    }

    fn str(&self, key: &str) -> String {
        self.info[key]
            .as_str()
            .unwrap_or_else(|| panic!("READY info has no {key}: {}", self.info))
            .to_string()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let pid = self.child.id();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(mut pids) = PIDS.lock() {
            pids.retain(|p| *p != pid);
        }
    }
}

fn shared<T>(cell: &'static OnceLock<T>, start: impl FnOnce() -> anyhow::Result<T>) -> &'static T {
    cell.get_or_init(|| start().unwrap_or_else(|e| panic!("{e:#}")))
}

// ------------------------------------------------------------------------------- moto

/// moto's server: DynamoDB, SNS, SES v2, Secrets Manager and SQS on one endpoint.
/// moto state is global to the server, so tests isolate by unique names.
pub struct Moto {
    pub process: ServerProcess,
    pub url: String,
    /// The access key and secret the tests sign with: moto's throwaway ones, or, on a
    /// server enforcing IAM ([`Moto::start_with_iam`]), an administrator's.
    pub credentials: (String, String),
}

static MOTO: OnceLock<Moto> = OnceLock::new();

/// The test binary's moto server, started on first use.
pub fn moto() -> &'static Moto {
    shared(&MOTO, Moto::start)
}

impl Moto {
    pub fn start() -> anyhow::Result<Self> {
        Self::plain(ServerProcess::start(
            "moto",
            &["--port".into(), free_port().to_string()],
        )?)
    }

    /// A server of its own on `port`, listening on `host` (`0.0.0.0`: reachable from
    /// containers on this machine, as `scripts/local-aws` needs it).
    pub fn start_on(host: &str, port: u16) -> anyhow::Result<Self> {
        let args = [
            "--port".into(),
            port.to_string(),
            "--host".into(),
            host.into(),
        ];
        Self::plain(ServerProcess::start("moto", &args)?)
    }

    /// A started server that takes any credentials.
    fn plain(process: ServerProcess) -> anyhow::Result<Self> {
        let url = process.str("url");
        Ok(Self {
            process,
            url,
            credentials: ("testing".into(), "testing".into()),
        })
    }

    /// A server of its own that checks every request against IAM, as AWS does: the
    /// tests sign as an administrator, a function binary with its own role's
    /// credentials ([`crate::stack::AwsStack::roles`]).
    pub fn start_with_iam() -> anyhow::Result<Self> {
        let port = free_port().to_string();
        let process = ServerProcess::start("moto", &["--port".into(), port, "--iam".into()])?;
        let url = process.str("url");
        let credentials = (
            process.str("access_key_id"),
            process.str("secret_access_key"),
        );
        Ok(Self {
            process,
            url,
            credentials,
        })
    }

    /// A server of its own on HTTPS (`https://localhost:<port>`), its certificate signed
    /// by a CA of its own ([`Moto::ca_pem`]): for the SDK's TLS client.
    pub fn start_tls(dir: &TempDir) -> anyhow::Result<Self> {
        let args = [
            "--port".into(),
            free_port().to_string(),
            "--tls".into(),
            "--dir".into(),
            dir.0.display().to_string(),
        ];
        Self::plain(ServerProcess::start("moto", &args)?)
    }

    /// The CA (PEM) that signed a [`Moto::start_tls`] server's certificate.
    pub fn ca_pem(&self) -> anyhow::Result<Vec<u8>> {
        let path = self.process.str("ca");
        std::fs::read(&path).with_context(|| format!("reading {path}"))
    }

    /// Options for [`flare_aws::sdk_config`] pointing every client at moto.
    pub fn aws_options(&self) -> AwsOptions {
        let mut opts = AwsOptions::local(&self.url);
        opts.static_credentials = Some(self.credentials.clone());
        opts
    }

    pub async fn sdk_config(&self) -> flare_aws::SdkConfig {
        flare_aws::sdk_config(self.aws_options()).await
    }

    /// A configuration with DynamoDB on `dynamodb` and every other service on this
    /// server. moto serves one request at a time on one core; a test heavy on both
    /// DynamoDB and SQS runs twice as fast on two servers.
    pub async fn split_sdk_config(&self, dynamodb: &Moto) -> flare_aws::SdkConfig {
        let mut opts = self.aws_options();
        opts.endpoint_url = None;
        flare_aws::sdk_config(opts)
            .await
            .into_builder()
            .service_config(SplitEndpoints {
                dynamodb: dynamodb.url.clone(),
                rest: self.url.clone(),
            })
            .build()
    }

    /// moto's view of one model of one service (`"sns"`, `"SMS"`): `GET
    /// /moto-api/data.json`, which the test server's moto (scripts/harness/serve.py)
    /// narrows to `?service=&model=` (the whole walk reads every queue's messages too).
    /// moto builds it by walking its state, which other tests may be changing at that
    /// moment ("changed size during iteration"): a failed read is tried again.
    pub async fn model(&self, service: &str, model: &str) -> anyhow::Result<serde_json::Value> {
        let url = format!(
            "{}/moto-api/data.json?service={service}&model={model}",
            self.url
        );
        Ok(self.data_at(url).await?[service][model].clone())
    }

    async fn data_at(&self, url: String) -> anyhow::Result<serde_json::Value> {
        let mut last = None;
        for attempt in 0..5u64 {
            let result = async {
                let resp = http()
                    .get(&url)
                    .send()
                    .await
                    .with_context(|| format!("GET {url}"))?;
                resp.error_for_status()?
                    .json::<serde_json::Value>()
                    .await
                    .context("moto data.json is not JSON")
            }
            .await;
            match result {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
        }
        Err(last.unwrap_or_else(|| anyhow!("no attempt made")))
    }

    /// Every SMS moto's SNS accepted: `{"phone_number", "message", "message_id"}`.
    pub async fn sent_sms(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        Ok(list(&self.model("sns", "SMS").await?))
    }

    /// Every email moto's SES accepted: `{"source", "destinations", "subject", "body"}`.
    pub async fn sent_email(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        Ok(list(&self.model("ses", "Message").await?))
    }

    /// The messages published to one SNS platform endpoint, by message id.
    pub async fn endpoint_messages(&self, endpoint_arn: &str) -> anyhow::Result<serde_json::Value> {
        list(&self.model("sns", "PlatformEndpoint").await?)
            .into_iter()
            .find(|e| e["arn"] == endpoint_arn)
            .map(|e| e["messages"].clone())
            .ok_or_else(|| anyhow!("moto has no endpoint {endpoint_arn}"))
    }
}

/// Each service's endpoint, as `AWS_ENDPOINT_URL_<SERVICE>` would give it (a client
/// consults it when the shared configuration sets no endpoint in code).
#[derive(Debug)]
struct SplitEndpoints {
    dynamodb: String,
    rest: String,
}

impl aws_types::service_config::LoadServiceConfig for SplitEndpoints {
    fn load_config(&self, key: aws_types::service_config::ServiceConfigKey<'_>) -> Option<String> {
        if key.profile() != "endpoint_url" {
            return None;
        }
        Some(if key.service_id() == "DynamoDB" {
            self.dynamodb.clone()
        } else {
            self.rest.clone()
        })
    }
}

fn list(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v.as_array().cloned().unwrap_or_default()
}

// ------------------------------------------------------------------------------- smtp

/// aiosmtpd with AUTH (after STARTTLS) on `port` and implicit TLS on `tls_port`, its
/// certificate signed by a CA generated at start (`ca_pem`).
pub struct SmtpSink {
    pub process: ServerProcess,
    pub host: String,
    pub port: u16,
    pub tls_port: u16,
    pub ca_pem: PathBuf,
    pub mail_dir: PathBuf,
    pub user: String,
    pub password: String,
    _dir: TempDir,
}

static SMTP: OnceLock<SmtpSink> = OnceLock::new();

pub fn smtp() -> &'static SmtpSink {
    shared(&SMTP, SmtpSink::start)
}

impl SmtpSink {
    pub const USER: &'static str = "flare";
    pub const PASSWORD: &'static str = "flare-test-password";

    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    /// A server of its own that refuses `fail_rate` of the messages with a temporary
    /// error (451) and stops answering for `hang` on `hang_rate` of them (then 421);
    /// neither is kept. [`Self::fault_counts`] says how many of each there were.
    pub fn start_faulty(fail_rate: f64, hang_rate: f64, hang: Duration) -> anyhow::Result<Self> {
        Self::start_with(&[
            "--fail-rate".into(),
            fail_rate.to_string(),
            "--hang-rate".into(),
            hang_rate.to_string(),
            "--hang".into(),
            hang.as_secs_f64().to_string(),
        ])
    }

    /// `(refused, hung)` so far.
    pub fn fault_counts(&self) -> (u64, u64) {
        let path = self.mail_dir.join("..").join("counts.json");
        let v: serde_json::Value = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        (
            v["refused"].as_u64().unwrap_or(0),
            v["hung"].as_u64().unwrap_or(0),
        )
    }

    fn start_with(extra: &[String]) -> anyhow::Result<Self> {
        let dir = TempDir::new("smtp")?;
        let (port, tls_port) = (free_port(), free_port());
        let mut args: Vec<String> = extra.to_vec();
        args.extend([
            "--port".into(),
            port.to_string(),
            "--tls-port".into(),
            tls_port.to_string(),
            "--dir".into(),
            dir.0.display().to_string(),
            "--user".into(),
            Self::USER.into(),
            "--password".into(),
            Self::PASSWORD.into(),
        ]);
        let process = ServerProcess::start("smtp", &args)?;
        Ok(Self {
            host: process.str("host"),
            ca_pem: process.str("ca").into(),
            mail_dir: process.str("mail_dir").into(),
            port,
            tls_port,
            user: Self::USER.into(),
            password: Self::PASSWORD.into(),
            process,
            _dir: dir,
        })
    }

    /// Every message received so far, oldest first: `{"mail_from", "rcpt_tos", "data",
    /// "auth_user", "tls", "peer"}` (`peer`: the client's address and port, which
    /// connection carried it).
    pub fn messages(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut names: Vec<_> = std::fs::read_dir(&self.mail_dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| Ok(serde_json::from_slice(&std::fs::read(p)?)?))
            .collect()
    }
}

// ---------------------------------------------------------------------------- gateway

/// A real HTTP SMS gateway: records requests, answers scripted responses per path.
pub struct Gateway {
    pub process: ServerProcess,
    pub url: String,
}

static GATEWAY: OnceLock<Gateway> = OnceLock::new();

pub fn gateway() -> &'static Gateway {
    shared(&GATEWAY, Gateway::start)
}

impl Gateway {
    pub fn start() -> anyhow::Result<Self> {
        let process = ServerProcess::start("gateway", &["--port".into(), free_port().to_string()])?;
        let url = process.str("url");
        Ok(Self { process, url })
    }

    /// Queues answers for `path`: `{"status": 500}`, `{"status": 200, "body": {...}}`,
    /// `{"hang": 5}`, `{"status": 302, "location": "..."}`. Unscripted requests get 200.
    pub async fn script(&self, path: &str, responses: serde_json::Value) -> anyhow::Result<()> {
        http()
            .post(format!("{}/_script", self.url))
            .json(&serde_json::json!({"path": path, "responses": responses}))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Every request received (but `/_script` and `/_requests`): `{"method", "path",
    /// "headers", "body"}`, header names lower-cased.
    pub async fn requests(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        Ok(http()
            .get(format!("{}/_requests", self.url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Unscripted requests to `path` answer 500 or 503 at `error_rate` and hang for
    /// `hang` (then 504) at `hang_rate`; each request's record carries its `status`
    /// (`"hang"` for a hung one).
    pub async fn faults(
        &self,
        path: &str,
        error_rate: f64,
        hang_rate: f64,
        hang: Duration,
    ) -> anyhow::Result<()> {
        http()
            .post(format!("{}/_chaos", self.url))
            .json(&serde_json::json!({"path": path, "error_rate": error_rate,
                "hang_rate": hang_rate, "hang": hang.as_secs_f64()}))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    pub async fn requests_to(&self, path: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        Ok(self
            .requests()
            .await?
            .into_iter()
            .filter(|r| r["path"] == path)
            .collect())
    }
}

/// An HTTP client for tests. reqwest is built with TLS but no crypto provider of its
/// own (Flare's gateway sender hands it one), so a plain client needs the process
/// default installed first.
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A stalled server fails the test instead of hanging it.
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// A user's deliveries in a notification view (`GET /v1/notifications/{id}`) as
/// (cycle, channel, status), in the view's order.
pub fn deliveries_by_cycle(n: &serde_json::Value, user: &str) -> Vec<(u64, String, String)> {
    let who = n["recipients"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["user_id"] == user))
        .unwrap_or_else(|| panic!("{user} is not a recipient of {n}"));
    who["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["cycle"].as_u64().unwrap(),
                d["channel"].as_str().unwrap().to_string(),
                d["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A name no other test uses (moto state is shared by every test of a binary).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let p = std::env::temp_dir().join(unique(&format!("flare-{prefix}")));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CloudWatch Logs subscription payload (`{"awslogs": {"data": base64 of gzip}}`), as
/// Lambda receives it, of SNS SMS delivery status lines: `(message id, "SUCCESS" or
/// "FAILURE", provider response)` each.
pub fn sns_status_payload(lines: &[(&str, &str, &str)]) -> serde_json::Value {
    let events: Vec<serde_json::Value> = lines
        .iter()
        .enumerate()
        .map(|(i, (id, status, response))| {
            let line = serde_json::json!({
                "notification": {"messageId": id, "timestamp": "2026-11-27 10:00:01.100"},
                "delivery": {"destination": "+14155550118", "providerResponse": response,
                             "smsType": "Transactional", "dwellTimeMs": 412},
                "status": status});
            serde_json::json!({"id": i.to_string(), "timestamp": 1796205601100u64 + i as u64,
                               "message": line.to_string()})
        })
        .collect();
    let data = serde_json::json!({"messageType": "DATA_MESSAGE", "owner": "123456789012",
        "logGroup": "sns/us-east-1/123456789012/DirectPublishToPhoneNumber",
        "logStream": "stream", "subscriptionFilters": ["flare-receipts"], "logEvents": events});
    awslogs_payload(data.to_string().as_bytes())
}

/// A CloudWatch Logs subscription payload whose `data` inflates to `inflated`.
pub fn awslogs_payload(inflated: &[u8]) -> serde_json::Value {
    use base64::Engine;
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(inflated).expect("writing to memory");
    let bytes = gz.finish().expect("writing to memory");
    serde_json::json!({"awslogs": {"data": base64::engine::general_purpose::STANDARD.encode(bytes)}})
}
