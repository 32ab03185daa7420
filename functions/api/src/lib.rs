//! The API function: API Gateway (HTTP API, payload v2) requests in, the shared
//! transport-free API ([`flare_shared::app::api`]) in the middle, responses out.

use flare_aws::dynamodb::{DynamoDirectory, DynamoSettings};
use flare_aws::log::DynamoDeliveryLog;
use flare_aws::secrets::SecretsManagerStore;
use flare_aws::ses::SesEmailSender;
use flare_aws::sns_devices::{PlatformApps, SnsDevices};
use flare_aws::sns_sms::SnsSmsSender;
use flare_aws::sqs::{QueueUrls, SqsQueue};
use flare_aws::wiring::{LOG_TABLE, queue_env};
use flare_aws::{self as aws, SdkConfig};
use flare_providers::http_sms::HttpSmsSender;
use flare_providers::smtp::SmtpEmailSender;
use flare_runtime::{self as config, ConfigError};
use flare_shared::app::Services;
use flare_shared::app::api::{self, ApiRequest};
use flare_shared::app::auth::{AuthFailure, Claims};
use flare_shared::domain::EndpointPolicy;
use flare_shared::domain::{Channel, Lane, Provider};
use flare_shared::ports::{EmailSender, SmsSender};
use flare_shared::secrets_cache::{CachedSecrets, MAX_TTL};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use std::collections::HashMap;
use std::sync::Arc;

/// The function's environment, read once at start.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings_table: String,
    pub directory_table: String,
    pub log_table: String,
    /// The audit trail's table, and how many days its entries are kept.
    pub audit_table: String,
    pub audit_retention_days: u32,
    /// Manual SMS needs the SMS queue; the others are optional here.
    pub queues: QueueUrls,
    pub secret_prefix: String,
    pub platform_apps: PlatformApps,
    pub policy: EndpointPolicy,
    /// `FLARE_DEFAULT_SENDER`, for email test sends without a sender of the org's own.
    pub default_sender: Option<flare_shared::domain::EmailAddress>,
    /// `FLARE_METRICS_NAMESPACE` (default `Flare`); None counts nothing (tests).
    pub metrics_namespace: Option<String>,
}

impl Config {
    pub const SETTINGS_TABLE: &'static str = "FLARE_SETTINGS_TABLE";
    pub const DIRECTORY_TABLE: &'static str = "FLARE_DIRECTORY_TABLE";
    pub const SECRET_PREFIX: &'static str = "FLARE_SECRET_PREFIX";
    pub const AUDIT_TABLE: &'static str = "FLARE_AUDIT_TABLE";
    pub const AUDIT_RETENTION_DAYS: &'static str = "FLARE_AUDIT_RETENTION_DAYS";

    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            settings_table: config::required(Self::SETTINGS_TABLE)?,
            directory_table: config::required(Self::DIRECTORY_TABLE)?,
            log_table: config::required(LOG_TABLE)?,
            audit_table: config::required(Self::AUDIT_TABLE)?,
            audit_retention_days: config::number(Self::AUDIT_RETENTION_DAYS, 400)?,
            // A dispatcher's manual SMS is urgent: that queue is required; the others
            // are taken when given.
            queues: {
                let urgent_sms = (Channel::Sms, Lane::Urgent);
                let mut q = QueueUrls::from([(
                    urgent_sms,
                    config::required(queue_env(Channel::Sms, Lane::Urgent))?,
                )]);
                for (c, l) in Channel::ALL
                    .into_iter()
                    .flat_map(|c| Lane::ALL.map(|l| (c, l)))
                {
                    if let (false, Ok(url)) =
                        ((c, l) == urgent_sms, config::required(queue_env(c, l)))
                    {
                        q.insert((c, l), url);
                    }
                }
                q
            },
            secret_prefix: config::optional(Self::SECRET_PREFIX, "flare"),
            platform_apps: PlatformApps::from_env(),
            policy: flare_runtime::endpoint_policy(false)?,
            metrics_namespace: flare_runtime::emf::namespace_from_env().into(),
            default_sender: match config::required(flare_aws::wiring::DEFAULT_SENDER) {
                Ok(_) => Some(flare_aws::wiring::default_sender()?),
                Err(_) => None,
            },
        })
    }

    /// Builds the AWS adapters once, before the first request.
    pub fn services(&self, sdk: &SdkConfig) -> anyhow::Result<Services> {
        let db = aws::dynamodb(sdk);
        // Every audited change is written in one transaction with its entry.
        let audit = flare_aws::audit::DynamoAuditLog::new(
            db.clone(),
            &self.audit_table,
            self.audit_retention_days,
        );
        let settings: Arc<DynamoSettings> = Arc::new(
            DynamoSettings::new(db.clone(), &self.settings_table).with_audit(audit.clone()),
        );
        let secrets: Arc<SecretsManagerStore> = Arc::new(SecretsManagerStore::new(
            aws::secretsmanager(sdk),
            &self.secret_prefix,
        ));
        let cached = Arc::new(CachedSecrets::new(secrets.clone(), MAX_TTL));
        let gateway = HttpSmsSender::new(settings.clone(), cached.clone(), self.policy)?;
        let smtp = SmtpEmailSender::new(settings.clone(), cached.clone(), self.policy);
        Ok(Services {
            settings,
            directory: Arc::new(
                DynamoDirectory::new(db.clone(), &self.directory_table).with_audit(audit.clone()),
            ),
            log: Arc::new(DynamoDeliveryLog::new(db, &self.log_table)),
            queue: Arc::new(SqsQueue::new(aws::sqs(sdk), self.queues.clone())),
            secrets,
            secret_reads: cached,
            devices: Arc::new(SnsDevices::new(aws::sns(sdk), self.platform_apps.clone())),
            policy: self.policy,
            metrics: flare_runtime::emf::metrics(self.metrics_namespace.as_deref()),
            sms_senders: HashMap::from([
                (
                    Provider::Sns,
                    Arc::new(SnsSmsSender::new(aws::sns(sdk))) as Arc<dyn SmsSender>,
                ),
                (Provider::Http, Arc::new(gateway) as Arc<dyn SmsSender>),
            ]),
            email_senders: HashMap::from([
                (
                    Provider::Ses,
                    Arc::new(SesEmailSender::new(aws::sesv2(sdk))) as Arc<dyn EmailSender>,
                ),
                (Provider::Smtp, Arc::new(smtp) as Arc<dyn EmailSender>),
            ]),
            default_sender: self.default_sender.clone(),
            health: Some(Arc::new(flare_aws::health::DynamoHealth::new(
                aws::dynamodb(sdk),
                &self.log_table,
            ))),
            // A gateway's callback can outrun the receipts index by a moment.
            receipt_retry: Some(std::time::Duration::from_secs(1)),
            audit: Arc::new(audit),
        })
    }
}

/// Where a request came from, as API Gateway saw it: the caller's address, its user
/// agent, and the request's id (the one in API Gateway's access log).
pub fn request_meta(req: &Request) -> api::RequestMeta {
    let RequestContext::ApiGatewayV2(ctx) = req.request_context() else {
        return api::RequestMeta::default();
    };
    api::RequestMeta {
        source_ip: ctx.http.source_ip.clone(),
        user_agent: ctx.http.user_agent.clone(),
        request_id: ctx.request_id.clone(),
    }
}

/// The JWT authorizer's claims from the request context. API Gateway has already
/// refused a missing, unsigned or expired token; what is left to fail here is a claim
/// Flare needs that the identity provider did not put in.
pub fn claims(req: &Request) -> Result<Claims, AuthFailure> {
    let RequestContext::ApiGatewayV2(ctx) = req.request_context() else {
        return Err(AuthFailure::NoToken);
    };
    let jwt = ctx
        .authorizer
        .as_ref()
        .and_then(|a| a.jwt.as_ref())
        .ok_or(AuthFailure::NoToken)?;
    Claims::from_strings(|k| jwt.claims.get(k).cloned()).map_err(|e| {
        tracing::warn!(error = %e, "unusable JWT claims");
        AuthFailure::from(e)
    })
}

/// The admin console's files under `/console/` (no token: the page signs in itself and
/// calls the `/v1` routes with the token); `None` for any other path.
pub fn console(path: &str) -> Option<Response<Body>> {
    let rest = path.strip_prefix("/console")?;
    if rest.is_empty() {
        // The page's relative links need the slash.
        return Response::builder()
            .status(308)
            .header("location", "/console/")
            .body(Body::Empty)
            .ok();
    }
    let mut builder = Response::builder();
    let body = match rest.strip_prefix('/').and_then(flare_console::asset) {
        Some(a) => {
            builder = builder.status(200).header("content-type", a.content_type);
            Body::Binary(a.body.to_vec())
        }
        None => {
            builder = builder
                .status(404)
                .header("content-type", "text/plain; charset=utf-8");
            Body::Text("not found".into())
        }
    };
    for (k, v) in flare_console::HEADERS {
        builder = builder.header(k, v);
    }
    builder.body(body).ok()
}

/// Converts, answers, converts back.
pub async fn handle(svc: &Services, req: Request) -> Result<Response<Body>, lambda_http::Error> {
    if req.method() == lambda_http::http::Method::GET
        && let Some(page) = console(req.raw_http_path())
    {
        return Ok(page);
    }
    let request = ApiRequest {
        method: req.method().as_str().to_string(),
        path: req.raw_http_path().to_string(),
        claims: claims(&req),
        body: req.body().as_ref().to_vec(),
        query: req.uri().query().map(str::to_string),
        idempotency_key: req
            .headers()
            .get("idempotency-key")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        headers: api::KEPT_HEADERS
            .iter()
            .filter_map(|name| {
                let v = req.headers().get(*name)?;
                Some((
                    name.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                ))
            })
            .collect(),
        // API Gateway is https only; the host is the one the caller used.
        url: req.headers().get("host").map(|h| {
            api::request_url(
                "https",
                h.as_bytes(),
                req.raw_http_path(),
                req.uri().query(),
            )
        }),
        meta: request_meta(&req),
    };
    let resp = api::handle(svc, request).await;
    let content_type = resp.content_type();
    let body = match (resp.html, resp.body) {
        (Some(page), _) => Body::Text(page),
        (None, Some(v)) => Body::Text(serde_json::to_string(&v)?),
        (None, None) => Body::Empty,
    };
    let mut builder = Response::builder()
        .status(resp.status)
        .header("content-type", content_type);
    for (name, value) in &resp.headers {
        builder = builder.header(*name, value);
    }
    Ok(builder.body(body)?)
}
