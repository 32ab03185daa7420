//! Helpers: the runner in-process on a free port, tokens, captured logs.
#![allow(dead_code)]

use flare_local::{LocalApp, LocalConfig};
use flare_shared::domain::EndpointPolicy;
use reqwest::StatusCode;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

pub const SECRET: &str = "test-jwt-secret";

/// Every log line of this test binary, to prove no secret is ever logged.
pub static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn logs() -> String {
    let buf = LOGS.get_or_init(init_logs);
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

fn init_logs() -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let w = LogWriter(buf.clone());
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || w.clone())
        .try_init();
    buf
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub dir: PathBuf,
    pub app: Arc<LocalApp>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Starts the runner in-process on a free port, over `dir` (a new one when `None`).
pub async fn spawn_app(dir: Option<&Path>) -> TestApp {
    spawn_app_with(dir, flare_local::server::Limits::default()).await
}

/// [`spawn_app`] with the server's timeouts and connection cap set.
pub async fn spawn_app_with(dir: Option<&Path>, limits: flare_local::server::Limits) -> TestApp {
    LOGS.get_or_init(init_logs);
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("flare-local-test-{}", uuid())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let cfg = LocalConfig {
        data_dir: dir.clone(),
        jwt_secret: SECRET.into(),
        policy: EndpointPolicy {
            allow_private: true,
        },
        default_sender: flare_shared::domain::EmailAddress::parse("flare@flare.example").unwrap(),
        retry_base: std::time::Duration::from_millis(20),
        smtp_extra_ca: Some(flare_tests::smtp().ca_pem.clone()),
        // The contract's 5 failures, but a circuit open for 2 s so a test sees it close.
        circuit: flare_shared::domain::health::CircuitPolicy {
            open_for: std::time::Duration::from_secs(2),
            ..Default::default()
        },
        public_url: Some(base.clone()),
    };
    let app = Arc::new(LocalApp::open(&cfg).await.unwrap());
    let handle = app.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        flare_local::serve_with(listener, app, limits, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    TestApp {
        base,
        client: flare_tests::http(),
        dir,
        app: handle,
        stop: Some(tx),
        task: Some(task),
    }
}

pub fn uuid() -> String {
    flare_tests::unique("t")
}

pub fn token(org: &str, roles: &[&str], sub: &str) -> String {
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    flare_local::token(SECRET, org, &roles, sub, chrono::Duration::hours(1)).unwrap()
}

impl TestApp {
    pub async fn stop(mut self) -> PathBuf {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap();
        self.dir.clone()
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        (status, body)
    }

    pub async fn json(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        self.send(method, path, Some(token), Some(&body.to_string()))
            .await
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.send("GET", path, Some(token), None).await
    }
}

/// `flare-local serve`, the binary, on a free port over `dir`, with a token its `token`
/// command printed (admin and dispatcher of `acme`, as `sub`). Stopped when dropped;
/// its log is `dir/serve.log`.
pub struct ServedBinary {
    pub base: String,
    pub token: String,
    child: std::process::Child,
}

impl ServedBinary {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServedBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn serve_binary(dir: &Path, sub: &str) -> ServedBinary {
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_flare-local");
    std::fs::create_dir_all(dir).unwrap();
    let printed = Command::new(bin)
        .args([
            "token",
            "--org",
            "acme",
            "--roles",
            "admin,dispatcher",
            "--sub",
            sub,
        ])
        .env("FLARE_LOCAL_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(printed.status.success(), "flare-local token failed");
    let token = String::from_utf8(printed.stdout)
        .unwrap()
        .trim()
        .to_string();
    let port = flare_tests::free_port();
    // Appended: a restarted runner's log follows the first one's.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("serve.log"))
        .unwrap();
    let child = Command::new(bin)
        .args([
            "serve",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .env("FLARE_LOCAL_JWT_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let served = ServedBinary {
        base: format!("http://127.0.0.1:{port}"),
        token,
        child,
    };
    let client = flare_tests::http();
    for _ in 0..100 {
        if client
            .get(format!("{}/v1/openapi.json", served.base))
            .send()
            .await
            .is_ok()
        {
            return served;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "flare-local serve did not start: see {}",
        dir.join("serve.log").display()
    );
}
