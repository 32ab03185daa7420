//! The HTTP API without a transport: method, path, claims and body in; status and JSON
//! body out. The Lambda function converts API Gateway requests into [`ApiRequest`]; the
//! local runner converts axum requests after checking the JWT itself.

use super::Services;
use super::auth::{AuthFailure, Claims};
use super::error::ApiError;
use super::routes::{Access, Op, Resolved, resolve};
use super::{directory, notifications, settings, test_send};
use serde_json::Value;

/// Bodies over 64 KiB answer 413. Transports may stop reading after `MAX_BODY + 1` bytes.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: String,
    /// The path, percent-encoded as received (`/v1/users/u-17`).
    pub path: String,
    /// The verified token's claims, or why there are none.
    pub claims: Result<Claims, AuthFailure>,
    pub body: Vec<u8>,
    /// The query string, as received (`limit=50&cursor=...`), if any.
    pub query: Option<String>,
    /// The `Idempotency-Key` header, as sent (`POST /v1/messages/sms` honours it).
    pub idempotency_key: Option<String>,
    /// The headers a gateway's signed callback needs (`content-type` and the signature
    /// headers), names in lower case; other routes ignore them.
    pub headers: Vec<(String, String)>,
    /// The full URL as the caller requested it (`https://host/v1/...?...`): Twilio signs
    /// it. `None` where the transport cannot say.
    pub url: Option<String>,
}

/// [`ApiRequest::url`]: the URL a caller requested, as a gateway signs it (Twilio signs
/// the full URL with its query). Both transports build it here, so the local runner and
/// the API function verify the same string.
pub fn request_url(scheme: &str, host: &[u8], path: &str, query: Option<&str>) -> String {
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("{scheme}://{}{path}{query}", String::from_utf8_lossy(host))
}

/// The request headers [`ApiRequest::headers`] keeps.
pub const KEPT_HEADERS: &[&str] = &["content-type", "x-flare-signature", "x-twilio-signature"];

#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Option<Value>,
    /// Headers besides `Content-Type` (`Allow` on a 405).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiResponse {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }

    fn no_content() -> Self {
        Self {
            status: 204,
            body: None,
            headers: Vec::new(),
        }
    }

    pub fn error(e: &ApiError) -> Self {
        let mut r = Self::json(e.status(), e.body());
        if let ApiError::MethodNotAllowed(allow) = e {
            r.headers.push(("allow", allow.join(", ")));
        }
        r
    }
}

/// Answers one request. Errors become the contract's error bodies; server-side
/// failures are logged with their cause chain (never a body, never a secret).
pub async fn handle(svc: &Services, req: ApiRequest) -> ApiResponse {
    let method = req.method.clone();
    let path = req.path.clone();
    match route(svc, req).await {
        Ok(resp) => resp,
        Err(e) => {
            if e.status() >= 500 {
                tracing::error!(%method, %path, code = e.code(), error = ?anyhow_chain(&e), "request failed");
            } else {
                tracing::info!(%method, %path, status = e.status(), code = e.code(), "request refused");
            }
            ApiResponse::error(&e)
        }
    }
}

fn anyhow_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

fn segments(path: &str) -> Vec<String> {
    path.split('?')
        .next()
        .unwrap_or_default()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

fn body_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::PayloadTooLarge);
    }
    serde_json::from_slice(body).map_err(ApiError::InvalidJson)
}

async fn route(svc: &Services, req: ApiRequest) -> Result<ApiResponse, ApiError> {
    // Every route, those that take no body included.
    if req.body.len() > MAX_BODY {
        return Err(ApiError::PayloadTooLarge);
    }
    let segs = segments(&req.path);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    if segs.first() != Some(&"v1") {
        return Err(ApiError::not_found(
            "no such route (GET /v1/openapi.json lists them)",
        ));
    }
    let resolved = resolve(&req.method, &segs);
    if let Resolved::Found(r, params) = &resolved
        && r.access == Access::Public
    {
        if r.op == Op::GatewayReceipt {
            if req.body.len() > MAX_BODY {
                return Err(ApiError::PayloadTooLarge);
            }
            let header = |name: &str| {
                req.headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            };
            let url = req.url.clone().unwrap_or_else(|| req.path.clone());
            let callback = super::receipts::Callback {
                url: &url,
                header: &header,
                body: &req.body,
            };
            super::receipts::gateway_callback(svc, &params[0], &params[1], callback).await?;
            return Ok(ApiResponse::no_content());
        }
        return Ok(ApiResponse::json(200, super::openapi::document().clone()));
    }
    // Every other /v1 path needs a token first, as behind API Gateway's authorizer: an
    // anonymous caller learns nothing about which paths exist.
    let claims = req
        .claims
        .as_ref()
        .map_err(|f| ApiError::Unauthorized(f.clone()))?;
    let (route, params) = match resolved {
        Resolved::Found(r, p) => (r, p),
        Resolved::WrongMethod(allow) => return Err(ApiError::MethodNotAllowed(allow)),
        Resolved::NotFound => {
            return Err(ApiError::not_found(
                "no such route (GET /v1/openapi.json lists them)",
            ));
        }
    };
    let user_param = route
        .params()
        .position(|p| p == "user_id")
        .map(|i| params[i].as_str());
    if !route.access.allows(claims, user_param) {
        return Err(ApiError::Forbidden(route.access.needs()));
    }
    let org = &claims.org_id;
    let p = |i: usize| params[i].as_str();
    let body = || body_json(&req.body);
    let ok = |v: Value| Ok(ApiResponse::json(200, v));
    match route.op {
        Op::OpenApi | Op::GatewayReceipt => unreachable!("public, answered above"),
        Op::GetSettings => ok(settings::all(svc, org).await?),
        Op::ListSms => ok(settings::list_sms(svc, org).await?),
        Op::GetSms => ok(settings::get_sms(svc, org, p(0)).await?),
        Op::PutSms => ok(settings::put_sms(svc, org, p(0), &body()?).await?),
        Op::DeleteSms => {
            settings::delete_sms(svc, org, p(0)).await?;
            Ok(ApiResponse::no_content())
        }
        Op::TestSms => ok(test_send::sms(svc, org, p(0), &body()?).await?),
        Op::TestEmail => ok(test_send::email(svc, org, &body()?).await?),
        Op::GetEmail => ok(settings::get_email(svc, org).await?),
        Op::PutEmail => ok(settings::put_email(svc, org, &body()?).await?),
        Op::DeleteEmail => {
            settings::delete_email(svc, org).await?;
            Ok(ApiResponse::no_content())
        }
        Op::GetCommunication => ok(serde_json::json!(settings::communication(svc, org).await?)),
        Op::PutCommunication => ok(settings::put_communication(svc, org, &body()?).await?),
        Op::ListUsers => ok(directory::list_users(svc, org).await?),
        Op::GetUser => ok(directory::get_user(svc, org, p(0)).await?),
        Op::PutUser => ok(directory::put_user(svc, org, p(0), &body()?).await?),
        Op::DeleteUser => {
            directory::delete_user(svc, org, p(0)).await?;
            Ok(ApiResponse::no_content())
        }
        Op::AddDevice => {
            let v = directory::add_device(svc, org, p(0), &body()?).await?;
            Ok(ApiResponse::json(201, v))
        }
        Op::DeleteDevice => {
            directory::delete_device(svc, org, p(0), p(1)).await?;
            Ok(ApiResponse::no_content())
        }
        Op::ListNotifications => ok(notifications::list(svc, org, req.query.as_deref()).await?),
        Op::GetNotification => ok(notifications::get(svc, org, p(0), req.query.as_deref()).await?),
        Op::AckNotification => {
            // No body, or an empty object: anything else is a mistake worth saying.
            if !req.body.iter().all(u8::is_ascii_whitespace) && body()? != serde_json::json!({}) {
                let mut f = crate::domain::FieldErrors::new();
                f.add("body", "takes no body (or {})");
                return Err(ApiError::Validation(f));
            }
            notifications::ack(svc, claims, p(0)).await?;
            Ok(ApiResponse::no_content())
        }
        Op::ReceiptNotification => {
            // The body is optional; one that is sent is an object (`null` is not "no
            // body": schemathesis found it answered 204).
            let b = if req.body.is_empty() {
                Value::Null
            } else {
                match body()? {
                    Value::Null => {
                        let mut f = crate::domain::FieldErrors::new();
                        f.add("body", "must be an object, or left out");
                        return Err(ApiError::Validation(f));
                    }
                    v => v,
                }
            };
            notifications::receipt(svc, claims, p(0), &b).await?;
            Ok(ApiResponse::no_content())
        }
        Op::ManualSms => {
            let key = req.idempotency_key.as_deref();
            let v = notifications::manual_sms(svc, org, &body()?, key).await?;
            Ok(ApiResponse::json(202, v))
        }
    }
}
