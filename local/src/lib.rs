//! The local runner: Flare's routes in one process, through the same API code the Lambda
//! function runs ([`flare_shared::app::api::handle`]), with storage under a data
//! directory that survives restarts. It checks HS256 JWTs itself, where API Gateway's
//! authorizer would in AWS.

use anyhow::Context;
use axum::http::{HeaderMap, header};
use flare_memory::{MemoryDevices, MemoryOutbox};
use flare_providers::http_sms::HttpSmsSender;
use flare_providers::smtp::SmtpEmailSender;
use flare_shared::app::Services;
use flare_shared::app::auth::{AuthFailure, Claims, ClaimsError};
use flare_shared::app::deliver::Deliverer;
use flare_shared::app::failover::Failover;
use flare_shared::app::notify::Notifier;
use flare_shared::domain::EndpointPolicy;
use flare_shared::domain::health::CircuitPolicy;
use flare_shared::domain::{EmailAddress, Provider};
use flare_shared::ports::{EmailSender, SmsSender};
use flare_sqlite::Sqlite;
use std::collections::HashMap;
use std::time::Duration;

pub mod demo;
mod http;
mod legacy;
pub mod pipeline;
pub mod server;
mod transport;

pub use http::{MAX_EVENT, router, serve, serve_with};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use std::path::PathBuf;
use std::sync::Arc;

pub const JWT_SECRET_ENV: &str = "FLARE_LOCAL_JWT_SECRET";
pub const DEFAULT_JWT_SECRET: &str = "flare-local-dev";
pub const DEFAULT_SENDER: &str = "flare@flare.localhost";

#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub data_dir: PathBuf,
    pub jwt_secret: String,
    pub policy: EndpointPolicy,
    /// The default account email goes from (`FLARE_DEFAULT_SENDER`).
    pub default_sender: EmailAddress,
    /// The first retry's delay; later ones double.
    pub retry_base: Duration,
    /// A private CA to trust for SMTP servers (`FLARE_SMTP_EXTRA_CA`, a PEM file).
    pub smtp_extra_ca: Option<PathBuf>,
    /// When a failing custom provider's circuit opens, and for how long
    /// (`FLARE_CIRCUIT_*`).
    pub circuit: CircuitPolicy,
    /// Where the runner is reached (`FLARE_PUBLIC_URL`; `serve` makes it its own
    /// address): the response links of dispatch SMS and email are under it. `None`: no
    /// links.
    pub public_url: Option<String>,
}

impl LocalConfig {
    /// The secret from `FLARE_LOCAL_JWT_SECRET` (default `flare-local-dev`); private
    /// endpoints allowed unless `FLARE_ALLOW_PRIVATE_ENDPOINTS` says otherwise.
    /// A value other than `true`/`false` for the latter is an error.
    pub fn from_env(data_dir: PathBuf) -> Result<Self, flare_runtime::ConfigError> {
        let sender = flare_runtime::optional("FLARE_DEFAULT_SENDER", DEFAULT_SENDER);
        Ok(Self {
            data_dir,
            jwt_secret: flare_runtime::optional(JWT_SECRET_ENV, DEFAULT_JWT_SECRET),
            policy: flare_runtime::endpoint_policy(true)?,
            default_sender: EmailAddress::parse(&sender)
                .unwrap_or_else(|_| EmailAddress::parse(DEFAULT_SENDER).expect("valid default")),
            retry_base: Duration::from_millis(200),
            smtp_extra_ca: std::env::var_os("FLARE_SMTP_EXTRA_CA").map(PathBuf::from),
            circuit: flare_runtime::circuit_policy()?,
            public_url: Some(flare_runtime::optional("FLARE_PUBLIC_URL", ""))
                .filter(|u| !u.is_empty())
                .map(|u| u.trim_end_matches('/').to_string()),
        })
    }
}

/// Makes the key response link codes are sealed with, the first time (AWS: the
/// template makes it in Secrets Manager).
async fn ensure_link_key(secrets: &dyn flare_shared::ports::SecretStore) -> anyhow::Result<()> {
    use flare_shared::ports::SecretKey;
    if secrets.get(&SecretKey::LinkKey).await?.is_none() {
        let key = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        secrets.put(&SecretKey::LinkKey, &key.into()).await?;
    }
    Ok(())
}

/// The database under the data directory.
pub const DATABASE: &str = "flare.db";

/// Puts back on the queue what was pending when the runner stopped: no attempt of a
/// previous run is alive, so their claims go first (a message whose send was answered
/// but not yet recorded goes again: the same window a crash leaves in AWS).
async fn resume(db: &Sqlite, queue: &pipeline::LocalQueue) -> anyhow::Result<()> {
    let released = db.release_claims().await?;
    let mut jobs = Vec::new();
    let mut checks = Vec::new();
    for logged in db.unfinished()? {
        jobs.extend(flare_shared::app::deliver::unfinished_jobs(&logged));
        checks.extend(flare_shared::app::deliver::unfinished_checks(&logged));
    }
    // The pages of an all-call the last run had not routed yet, due now.
    let now = chrono::Utc::now();
    checks.extend(db.unrouted_pages()?.into_iter().map(|c| (c, now)));
    if !jobs.is_empty() || !checks.is_empty() || released > 0 {
        tracing::info!(
            jobs = jobs.len(),
            checks = checks.len(),
            claims_released = released,
            "resuming the work pending at the last stop"
        );
    }
    queue.resume(jobs);
    queue.resume_checks(checks);
    Ok(())
}

/// Everything the runner holds.
pub struct LocalApp {
    pub services: Services,
    pub notifier: Notifier,
    /// What the SNS and SES stand-ins were handed.
    pub outbox: Arc<MemoryOutbox>,
    /// The database behind every store.
    pub db: Sqlite,
    decoding: DecodingKey,
    /// Held while the app lives: one runner per data directory ([`lock_data_dir`]).
    _lock: std::fs::File,
}

/// The lock file in a data directory.
pub const LOCK_FILE: &str = "serve.lock";

/// Takes the data directory for this process alone: a second runner on it would take
/// over the first one's claims and send their messages again. The lock (an exclusive
/// `flock` on `serve.lock`) goes with the process, however it ends; the file names the
/// process holding it, for the refusal.
pub fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            anyhow::bail!(
                "the data directory {} is in use by another flare-local serve (process {}): \
                 one runner per data directory; stop it, or pass another --data-dir",
                dir.display(),
                holder.trim()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

/// The stores, all the one database: one handle each, shared by whoever uses it.
struct Stores {
    settings: Arc<Sqlite>,
    directory: Arc<Sqlite>,
    secrets: Arc<Sqlite>,
    log: Arc<Sqlite>,
    audit: Arc<Sqlite>,
}

impl Stores {
    fn of(db: &Sqlite) -> Self {
        Self {
            settings: Arc::new(db.clone()),
            directory: Arc::new(db.clone()),
            secrets: Arc::new(db.clone()),
            log: Arc::new(db.clone()),
            audit: Arc::new(db.clone()),
        }
    }
}

/// The senders by provider: the outbox stands in for SNS and SES; the custom gateway
/// and SMTP server are the real ones.
struct Senders {
    sms: HashMap<Provider, Arc<dyn SmsSender>>,
    email: HashMap<Provider, Arc<dyn EmailSender>>,
}

impl Senders {
    fn of(outbox: &Arc<MemoryOutbox>, gateway: HttpSmsSender, smtp: SmtpEmailSender) -> Self {
        Self {
            sms: [
                (Provider::Sns, outbox.clone() as Arc<dyn SmsSender>),
                (Provider::Http, Arc::new(gateway) as Arc<dyn SmsSender>),
            ]
            .into(),
            email: [
                (Provider::Ses, outbox.clone() as Arc<dyn EmailSender>),
                (Provider::Smtp, Arc::new(smtp) as Arc<dyn EmailSender>),
            ]
            .into(),
        }
    }
}

/// The custom providers' senders: the HTTP gateway, and SMTP trusting the private CA
/// the configuration names, if any.
fn custom_senders(
    cfg: &LocalConfig,
    stores: &Stores,
) -> anyhow::Result<(HttpSmsSender, SmtpEmailSender)> {
    let gateway = HttpSmsSender::new(stores.settings.clone(), stores.secrets.clone(), cfg.policy)?;
    let mut smtp =
        SmtpEmailSender::new(stores.settings.clone(), stores.secrets.clone(), cfg.policy);
    if let Some(path) = &cfg.smtp_extra_ca {
        smtp = smtp.with_extra_root(
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        );
    }
    Ok((gateway, smtp))
}

/// The workers' deliverer: every sender, the circuit's state and the gateways' pace in
/// memory (one process is every instance), and no metrics.
fn deliverer(
    cfg: &LocalConfig,
    stores: &Stores,
    outbox: &Arc<MemoryOutbox>,
    senders: &Senders,
    health: Arc<flare_memory::MemoryHealth>,
) -> Deliverer {
    Deliverer {
        log: stores.log.clone(),
        queue: None,
        directory: stores.directory.clone(),
        settings: stores.settings.clone(),
        push: Some(outbox.clone()),
        sms: senders.sms.clone(),
        email: senders.email.clone(),
        default_sender: Some(cfg.default_sender.clone()),
        // CloudWatch's metrics have no local counterpart: `/local/outbox` and the
        // notification view show the same facts.
        metrics: Arc::new(flare_shared::ports::NoMetrics),
        failover: Some(Failover {
            health,
            policy: cfg.circuit,
        }),
        // One process: the gateways' pace is kept in memory.
        pacer: Some(Arc::new(flare_memory::MemoryPacer::default())),
        sns_per_second: None,
        max_pace_wait: None,
        links: cfg
            .public_url
            .clone()
            .map(|public_url| flare_shared::app::deliver::Links {
                public_url,
                secrets: stores.secrets.clone(),
            }),
    }
}

/// What the API's routes use: the same stores, senders and circuit as the workers.
fn services(
    cfg: &LocalConfig,
    stores: &Stores,
    queue: &pipeline::LocalQueue,
    senders: Senders,
    health: Arc<flare_memory::MemoryHealth>,
) -> Services {
    Services {
        settings: stores.settings.clone(),
        directory: stores.directory.clone(),
        secret_reads: stores.secrets.clone(),
        secrets: stores.secrets.clone(),
        devices: Arc::new(MemoryDevices::default()),
        log: stores.log.clone(),
        queue: Arc::new(queue.clone()),
        policy: cfg.policy,
        sms_senders: senders.sms,
        email_senders: senders.email,
        default_sender: Some(cfg.default_sender.clone()),
        metrics: Arc::new(flare_shared::ports::NoMetrics),
        health: Some(health),
        receipt_retry: None,
        audit: stores.audit.clone(),
    }
}

impl LocalApp {
    /// Opens (or creates) the data directory and its database, `flare.db` (SQLite,
    /// readable by its owner only: it holds the provider passwords), and resumes the
    /// work that was pending when the runner last stopped.
    pub async fn open(cfg: &LocalConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
        let lock = lock_data_dir(&cfg.data_dir)?;
        let db = Sqlite::open(&cfg.data_dir.join(DATABASE))?;
        legacy::import(&cfg.data_dir, &db).await?;
        let stores = Stores::of(&db);
        ensure_link_key(stores.secrets.as_ref()).await?;
        let (gateway, smtp) = custom_senders(cfg, &stores)?;
        let outbox = Arc::new(MemoryOutbox::with_journal(Arc::new(db.clone())));
        let senders = Senders::of(&outbox, gateway, smtp);
        // One process is every instance: the circuit's state lives in memory (a
        // restart starts every provider healthy).
        let health = Arc::new(flare_memory::MemoryHealth::default());
        let deliverer = deliverer(cfg, &stores, &outbox, &senders, health.clone());
        // The workers' deliverer enqueues fallbacks on the same queue it drains.
        let queue = pipeline::LocalQueue::start_with(deliverer, cfg.retry_base);
        resume(&db, &queue).await?;
        let services = services(cfg, &stores, &queue, senders, health);
        let notifier = Notifier {
            settings: stores.settings,
            directory: stores.directory,
            log: stores.log,
            queue: Arc::new(queue),
            metrics: Arc::new(flare_shared::ports::NoMetrics),
            page_size: flare_shared::app::notify::ROUTE_PAGE,
        };
        Ok(Self {
            services,
            notifier,
            outbox,
            db,
            decoding: DecodingKey::from_secret(cfg.jwt_secret.as_bytes()),
            _lock: lock,
        })
    }

    /// The caller's claims when the bearer token verifies; otherwise which check failed.
    pub fn claims(&self, headers: &HeaderMap) -> Result<Claims, AuthFailure> {
        use jsonwebtoken::errors::ErrorKind;
        // Two Authorization headers: which one would a proxy in front have checked?
        if headers.get_all(header::AUTHORIZATION).iter().count() > 1 {
            tracing::info!("token refused: more than one Authorization header");
            return Err(AuthFailure::TwoHeaders);
        }
        let auth = headers
            .get(header::AUTHORIZATION)
            .ok_or(AuthFailure::NoToken)?
            .to_str()
            .map_err(|_| AuthFailure::NotBearer)?;
        let token = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
            .ok_or(AuthFailure::NotBearer)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims = ["exp".to_string()].into();
        // `nbf` is honoured when present, and clocks may differ by at most 30 s (the
        // library's default leeway is 60 s).
        validation.validate_nbf = true;
        validation.leeway = 30;
        let data =
            jsonwebtoken::decode::<serde_json::Value>(token.trim(), &self.decoding, &validation)
                .map_err(|e| {
                    tracing::info!(error = %e, "token refused");
                    match e.kind() {
                        ErrorKind::InvalidSignature => AuthFailure::BadSignature(
                            " with this runner's key: it checks tokens with the secret in FLARE_LOCAL_JWT_SECRET, and `flare-local token` prints one it accepts",
                        ),
                        ErrorKind::ExpiredSignature => AuthFailure::Expired,
                        ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
                        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                            AuthFailure::WrongAlgorithm
                        }
                        ErrorKind::MissingRequiredClaim(_) => {
                            AuthFailure::Claims(ClaimsError::Missing("exp"))
                        }
                        _ => AuthFailure::NotAJwt,
                    }
                })?;
        Claims::from_json(&data.claims).map_err(|e| {
            tracing::info!(error = %e, "token claims refused");
            AuthFailure::Claims(e)
        })
    }
}

/// A token `serve` accepts: HS256 with `sub`, `org_id`, `roles`, `iat` and `exp`.
pub fn token(
    secret: &str,
    org: &str,
    roles: &[String],
    sub: &str,
    ttl: chrono::Duration,
) -> anyhow::Result<String> {
    flare_shared::domain::OrgId::parse(org).context("--org")?;
    let now = chrono::Utc::now();
    let claims = serde_json::json!({
        "sub": sub,
        "org_id": org,
        "roles": roles,
        "iat": now.timestamp(),
        "exp": (now + ttl).timestamp(),
    });
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}
