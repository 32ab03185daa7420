//! A Lambda Runtime API emulator, for running the real release binaries as Lambda runs
//! them: `sam local invoke` needs Docker, this needs nothing.
//!
//! Each [`LambdaProcess`] is one function binary with its own emulator on a free port
//! (`AWS_LAMBDA_RUNTIME_API`). [`LambdaProcess::invoke`] hands the binary one event
//! through `GET /2018-06-01/runtime/invocation/next` and waits for its
//! `.../response` or `.../error`, as Lambda does. The time from exec to the binary's
//! first poll (its cold start up to the first event) is recorded.

use crate::{PIDS, track_pid, workspace_root};
use anyhow::{Context, anyhow, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// The function binaries, as `template.yaml` names them.
pub const FUNCTIONS: [&str; 6] = [
    "flare-api",
    "flare-router",
    "flare-push",
    "flare-sms",
    "flare-email",
    "flare-receipts",
];

/// How long one invocation may take (the template's router timeout).
const INVOKE_TIMEOUT: Duration = Duration::from_secs(120);

static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
static DEPLOYED: OnceLock<Result<Deployed, String>> = OnceLock::new();

/// A function binary and how to run it: directly, or under an emulator.
#[derive(Debug, Clone)]
pub struct Binary {
    /// The function's name (`flare-sms`), for logs and the Lambda variables.
    pub name: String,
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
}

impl Binary {
    /// A binary this machine runs directly; named after its file.
    pub fn native(path: &Path) -> Self {
        Self {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            program: path.to_path_buf(),
            args: Vec::new(),
        }
    }
}

/// The function binaries exactly as `sam build` packages them: arm64
/// `target/lambda/<name>/bootstrap`, run under `qemu-aarch64` (with Debian's arm64
/// glibc as its sysroot) on any other machine.
#[derive(Debug, Clone)]
pub struct Deployed {
    dir: PathBuf,
    qemu: Option<(PathBuf, PathBuf)>,
}

/// Where Debian's libc6-arm64-cross puts the arm64 loader and libraries.
const ARM64_SYSROOT: &str = "/usr/aarch64-linux-gnu";
const QEMU_FIX: &str = "apt-get install qemu-user libc6-arm64-cross libgcc-s1-arm64-cross (scripts/setup-arm64-emulation does this)";

impl Deployed {
    /// The function's packaged executable.
    pub fn bootstrap(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("bootstrap")
    }

    pub fn binary(&self, name: &str) -> Binary {
        let bootstrap = self.dir.join(name).join("bootstrap");
        match &self.qemu {
            None => Binary {
                name: name.to_string(),
                program: bootstrap,
                args: Vec::new(),
            },
            Some((qemu, sysroot)) => Binary {
                name: name.to_string(),
                program: qemu.clone(),
                args: vec!["-L".into(), sysroot.into(), bootstrap.into()],
            },
        }
    }
}

/// The deployed (arm64) function binaries, built from the current sources.
///
/// Runs `scripts/cargo-lambdas` once per test binary (one cargo invocation for all five,
/// a no-op when fresh, so a test never runs a stale binary); `scripts/test` builds them
/// before `cargo test`. Fails, naming the fix, when qemu or the arm64 libraries are
/// missing on a non-arm64 machine.
pub fn deployed_binaries() -> anyhow::Result<Deployed> {
    once(&DEPLOYED, build_deployed)
}

/// Builds once per test binary; later calls answer the first outcome.
fn once<T: Clone>(
    cell: &'static OnceLock<Result<T, String>>,
    build: fn() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    cell.get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn build_deployed() -> anyhow::Result<Deployed> {
    let script = workspace_root().join("scripts/cargo-lambdas");
    let out = Command::new(&script)
        .arg("--quiet")
        .current_dir(workspace_root())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "building the arm64 function binaries failed:\n{}\n  Fix: scripts/cargo-lambdas",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = target_dir().join("lambda");
    for f in FUNCTIONS {
        let bin = dir.join(f).join("bootstrap");
        if !bin.exists() {
            bail!("{} missing after scripts/cargo-lambdas", bin.display());
        }
    }
    let qemu = if std::env::consts::ARCH == "aarch64" {
        None
    } else {
        let qemu = ["qemu-aarch64", "qemu-aarch64-static"]
            .into_iter()
            .find_map(which)
            .ok_or_else(|| anyhow!("qemu-aarch64 is not installed.\n  Fix: {QEMU_FIX}"))?;
        let sysroot = PathBuf::from(ARM64_SYSROOT);
        if !sysroot.join("lib/ld-linux-aarch64.so.1").exists() {
            bail!("the arm64 C library is missing ({ARM64_SYSROOT}).\n  Fix: {QEMU_FIX}");
        }
        Some((qemu, sysroot))
    };
    Ok(Deployed { dir, qemu })
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

/// Cargo's target dir, wherever CARGO_TARGET_DIR puts it.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| {
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// `target/release`, with every function binary built for this machine from the current
/// sources (the start-up benchmark times them natively, not under qemu).
///
/// Runs `cargo build --release --locked` for the function packages once per process (a
/// no-op when they are fresh, so a benchmark never runs a stale binary).
pub fn release_binaries() -> anyhow::Result<PathBuf> {
    once(&BUILT, build_release)
}

fn build_release() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--release", "--locked", "--quiet"]);
    // This process's package variables (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, ...) would
    // make cargo rebuild ring and the crates over it (ring's build script reruns when
    // they change): scripts/cargo-lambdas drops them too.
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_EXE_",
        ]
        .iter()
        .any(|p| n.starts_with(p))
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*n)
        {
            cmd.env_remove(&name);
        }
    }
    for f in FUNCTIONS {
        cmd.args(["-p", f]);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {cargo:?} build --release"))?;
    if !out.status.success() {
        bail!(
            "building the release function binaries failed:\n{}\n  Fix: cargo build --release --locked {}",
            String::from_utf8_lossy(&out.stderr),
            FUNCTIONS.map(|f| format!("-p {f}")).join(" ")
        );
    }
    let dir = target_dir().join("release");
    for f in FUNCTIONS {
        let bin = dir.join(f);
        if !bin.exists() {
            bail!("{} missing after cargo build --release", bin.display());
        }
    }
    Ok(dir)
}

/// What a function answered: its response, or the error it reported.
#[derive(Debug)]
pub enum Answer {
    Response(Value),
    /// `POST .../error`: the function's error (Lambda would retry or fail the event).
    Error(Value),
}

impl Answer {
    /// The response; panics with the reported error otherwise.
    pub fn response(self) -> Value {
        match self {
            Answer::Response(v) => v,
            Answer::Error(e) => panic!("the function reported an error: {e}"),
        }
    }
}

struct Invocation {
    id: String,
    event: Bytes,
}

#[derive(Default)]
struct Shared {
    first_poll: Option<Instant>,
    init_error: Option<Value>,
    waiting: HashMap<String, oneshot::Sender<Answer>>,
}

#[derive(Clone)]
struct Emulator {
    function_arn: String,
    next: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>>,
    shared: Arc<Mutex<Shared>>,
}

/// One function binary running against its own Runtime API emulator.
pub struct LambdaProcess {
    pub name: String,
    child: Mutex<Child>,
    spawned: Instant,
    log_path: PathBuf,
    queue: mpsc::UnboundedSender<Invocation>,
    shared: Arc<Mutex<Shared>>,
    server: tokio::task::JoinHandle<()>,
}

impl LambdaProcess {
    /// Starts `binary` with the Lambda environment and `env`; returns once it is running
    /// (not necessarily polling yet: see [`LambdaProcess::ready`]).
    pub async fn start(binary: &Binary, env: &[(String, String)]) -> anyhow::Result<Self> {
        let name = binary.name.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (queue, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let emulator = Emulator {
            function_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{name}"),
            next: Arc::new(tokio::sync::Mutex::new(rx)),
            shared: shared.clone(),
        };
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(emulator);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });

        // The function's output goes to a file: a pipe nobody drains would block it.
        let log_path = std::env::temp_dir().join(format!(
            "flare-{name}-{}-{}.log",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(&binary.program);
        cmd.args(&binary.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", &name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "emulator")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let spawned = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.program.display()))?;
        track_pid(child.id());
        Ok(Self {
            name,
            child: Mutex::new(child),
            spawned,
            log_path,
            queue,
            shared,
            server,
        })
    }

    /// Waits for the first poll of the Runtime API; answers the time from exec to it.
    pub async fn ready(&self) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(t) = self.startup() {
                return Ok(t);
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!("{} never polled for an event.\n{}", self.name, self.log());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Exec to first `GET .../invocation/next`, once it happened.
    pub fn startup(&self) -> Option<Duration> {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.first_poll.map(|t| t.duration_since(self.spawned))
    }

    /// Hands the function one event and waits for its answer.
    pub async fn invoke(&self, event: &Value) -> anyhow::Result<Answer> {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, mut rx) = oneshot::channel();
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
            .insert(id.clone(), tx);
        self.queue
            .send(Invocation {
                id,
                event: Bytes::from(event.to_string()),
            })
            .map_err(|_| anyhow!("the emulator of {} is gone", self.name))?;
        let deadline = Instant::now() + INVOKE_TIMEOUT;
        loop {
            match tokio::time::timeout(Duration::from_millis(50), &mut rx).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(_)) => bail!("{} dropped the invocation.\n{}", self.name, self.log()),
                Err(_) => {
                    self.check_alive()?;
                    if Instant::now() > deadline {
                        bail!(
                            "{} did not answer within {INVOKE_TIMEOUT:?}.\n{}",
                            self.name,
                            self.log()
                        );
                    }
                }
            }
        }
    }

    /// The response to `event`; fails on a reported error, and on any call of the
    /// function IAM refused (on a moto enforcing it), naming the function and the action.
    pub async fn call(&self, event: &Value) -> Value {
        let answer = self.invoke(event).await.unwrap_or_else(|e| panic!("{e:#}"));
        let refused = self.iam_refusals();
        assert!(
            refused.is_empty(),
            "{}: IAM refused calls its role in template.yaml does not allow:\n{}",
            self.name,
            refused.join("\n")
        );
        answer.response()
    }

    /// Everything the function printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// What IAM refused the function so far: "... assumed-role/<role of the function>/...
    /// is not authorized to perform: <action> on resource: <arn>", one line each.
    pub fn iam_refusals(&self) -> Vec<String> {
        let log = self.log();
        let mut found: Vec<String> = log
            .match_indices("is not authorized to perform")
            .map(|(i, _)| {
                let start = log[..i].rfind("User: ").unwrap_or(i);
                let end = log[i..]
                    .find(['"', '\n', '\\'])
                    .map_or(log.len(), |e| i + e);
                log[start..end].to_string()
            })
            .collect();
        found.sort();
        found.dedup();
        found
    }

    /// Fails, with the log, when the process exited or reported an init error.
    fn check_alive(&self) -> anyhow::Result<()> {
        if let Some(e) = self
            .shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .init_error
            .clone()
        {
            bail!("{} failed to initialise: {e}\n{}", self.name, self.log());
        }
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(status) = child.try_wait()? {
            bail!("{} exited ({status}).\n{}", self.name, self.log());
        }
        Ok(())
    }
}

impl Drop for LambdaProcess {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let pid = child.id();
        let _ = child.kill();
        let _ = child.wait();
        if let Ok(mut pids) = PIDS.lock() {
            pids.retain(|p| *p != pid);
        }
        self.server.abort();
        let _ = std::fs::remove_file(&self.log_path);
    }
}

async fn next(State(em): State<Emulator>) -> Response {
    {
        let mut shared = em.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.first_poll.get_or_insert_with(Instant::now);
    }
    let Some(inv) = em.next.lock().await.recv().await else {
        return StatusCode::GONE.into_response();
    };
    let deadline = SystemTime::now() + INVOKE_TIMEOUT;
    let deadline_ms = deadline
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let mut headers = HeaderMap::new();
    let header = |v: &str| HeaderValue::from_str(v).expect("ASCII header");
    headers.insert("lambda-runtime-aws-request-id", header(&inv.id));
    headers.insert(
        "lambda-runtime-deadline-ms",
        header(&deadline_ms.to_string()),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        header(&em.function_arn),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        header("Root=1-00000000-000000000000000000000000;Sampled=0"),
    );
    headers.insert("content-type", header("application/json"));
    (StatusCode::OK, headers, inv.event).into_response()
}

fn answer(em: &Emulator, id: &str, a: Answer) -> StatusCode {
    let tx = em
        .shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .waiting
        .remove(id);
    match tx {
        Some(tx) => {
            let _ = tx.send(a);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

fn json_or_text(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

async fn response(
    State(em): State<Emulator>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    answer(&em, &id, Answer::Response(json_or_text(&body)))
}

async fn error(
    State(em): State<Emulator>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    answer(&em, &id, Answer::Error(json_or_text(&body)))
}

async fn init_error(State(em): State<Emulator>, body: Bytes) -> StatusCode {
    em.shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .init_error = Some(json_or_text(&body));
    StatusCode::ACCEPTED
}

/// The variable names `template.yaml` gives each function binary (Globals merged with
/// the function's own), read with cfn-lint's template decoder from the test virtualenv.
/// Read once per test binary: the decoder takes about 4 CPU seconds, and the emulator's
/// tests deploy ten times.
pub fn template_env() -> anyhow::Result<HashMap<String, Vec<String>>> {
    static ENV: OnceLock<Result<HashMap<String, Vec<String>>, String>> = OnceLock::new();
    once(&ENV, read_template_env)
}

fn read_template_env() -> anyhow::Result<HashMap<String, Vec<String>>> {
    template_env_py(&[])
}

/// `scripts/harness/template_env.py template.yaml ARGS`, its JSON answer.
fn template_env_py<T: serde::de::DeserializeOwned>(args: &[&str]) -> anyhow::Result<T> {
    let py = crate::python();
    if !py.exists() {
        bail!(
            "the test virtualenv is missing: {} does not exist.\n  Fix: {}",
            py.display(),
            crate::FIX
        );
    }
    let root = workspace_root();
    let out = Command::new(&py)
        .arg(root.join("scripts/harness/template_env.py"))
        .arg(root.join("template.yaml"))
        .args(args)
        .output()
        .with_context(|| format!("running {}", py.display()))?;
    if !out.status.success() {
        bail!(
            "reading template.yaml failed: {}\n  Fix: {}",
            String::from_utf8_lossy(&out.stderr),
            crate::FIX
        );
    }
    serde_json::from_slice(&out.stdout).context("template_env.py printed no JSON")
}

/// A function of `template.yaml`: the binary it runs and the variable names it gets.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct TemplateFunction {
    pub binary: String,
    pub variables: Vec<String>,
}

/// Every function of `template.yaml` by logical id (`template_env.py --by-id`).
pub fn template_functions() -> anyhow::Result<std::collections::BTreeMap<String, TemplateFunction>>
{
    template_env_py(&["--by-id"])
}
