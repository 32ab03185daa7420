//! The HTTP API without a transport: method, path, claims and body in; status and JSON
//! body out. The Lambda function converts API Gateway requests into [`ApiRequest`]; the
//! local runner converts axum requests after checking the JWT itself.

use super::Services;
use super::auth::Claims;
use super::error::ApiError;
use super::{directory, notifications, settings, test_send};
use serde_json::Value;

/// Bodies over 64 KiB answer 413. Transports may stop reading after `MAX_BODY + 1` bytes.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: String,
    /// The path, percent-encoded as received (`/v1/users/u-17`).
    pub path: String,
    /// `None` when the request carried no valid token.
    pub claims: Option<Claims>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Option<Value>,
}

impl ApiResponse {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
        }
    }

    fn no_content() -> Self {
        Self {
            status: 204,
            body: None,
        }
    }

    pub fn error(e: &ApiError) -> Self {
        Self::json(e.status(), e.body())
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

fn require(ok: bool) -> Result<(), ApiError> {
    if ok { Ok(()) } else { Err(ApiError::Forbidden) }
}

async fn route(svc: &Services, req: ApiRequest) -> Result<ApiResponse, ApiError> {
    let segs = segments(&req.path);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let Some((&"v1", rest)) = segs.split_first() else {
        return Err(ApiError::NotFound);
    };
    let claims = req.claims.as_ref().ok_or(ApiError::Unauthorized)?;
    let org = &claims.org_id;
    let m = req.method.to_ascii_uppercase();
    let ok = |v: Value| Ok(ApiResponse::json(200, v));
    match (m.as_str(), rest) {
        ("GET", ["settings"]) => {
            require(claims.is_staff())?;
            ok(settings::all(svc, org).await?)
        }
        ("GET", ["settings", "sms"]) => {
            require(claims.is_staff())?;
            ok(settings::list_sms(svc, org).await?)
        }
        ("GET", ["settings", "sms", cc]) => {
            require(claims.is_staff())?;
            ok(settings::get_sms(svc, org, cc).await?)
        }
        ("PUT", ["settings", "sms", cc]) => {
            require(claims.is_admin())?;
            let body = body_json(&req.body)?;
            ok(settings::put_sms(svc, org, cc, &body).await?)
        }
        ("DELETE", ["settings", "sms", cc]) => {
            require(claims.is_admin())?;
            settings::delete_sms(svc, org, cc).await?;
            Ok(ApiResponse::no_content())
        }
        ("POST", ["settings", "sms", cc, "test"]) => {
            require(claims.is_admin())?;
            let body = body_json(&req.body)?;
            ok(test_send::sms(svc, org, cc, &body).await?)
        }
        ("POST", ["settings", "email", "test"]) => {
            require(claims.is_admin())?;
            let body = body_json(&req.body)?;
            ok(test_send::email(svc, org, &body).await?)
        }
        ("GET", ["settings", "email"]) => {
            require(claims.is_staff())?;
            ok(settings::get_email(svc, org).await?)
        }
        ("PUT", ["settings", "email"]) => {
            require(claims.is_admin())?;
            let body = body_json(&req.body)?;
            ok(settings::put_email(svc, org, &body).await?)
        }
        ("DELETE", ["settings", "email"]) => {
            require(claims.is_admin())?;
            settings::delete_email(svc, org).await?;
            Ok(ApiResponse::no_content())
        }
        ("GET", ["settings", "communication"]) => {
            require(claims.is_staff())?;
            ok(serde_json::json!(settings::communication(svc, org).await?))
        }
        ("PUT", ["settings", "communication"]) => {
            require(claims.is_admin())?;
            let body = body_json(&req.body)?;
            ok(settings::put_communication(svc, org, &body).await?)
        }
        ("GET", ["users"]) => {
            require(claims.is_staff())?;
            ok(directory::list_users(svc, org).await?)
        }
        ("GET", ["users", id]) => ok(directory::get_user(svc, claims, id).await?),
        ("PUT", ["users", id]) => {
            require(claims.is_admin())?;
            let body = body_json(&req.body)?;
            ok(directory::put_user(svc, org, id, &body).await?)
        }
        ("DELETE", ["users", id]) => {
            require(claims.is_admin())?;
            directory::delete_user(svc, org, id).await?;
            Ok(ApiResponse::no_content())
        }
        ("POST", ["users", id, "devices"]) => {
            let body = if claims.is_admin() || claims.sub == *id {
                body_json(&req.body)?
            } else {
                return Err(ApiError::Forbidden);
            };
            let v = directory::add_device(svc, claims, id, &body).await?;
            Ok(ApiResponse::json(201, v))
        }
        ("DELETE", ["users", id, "devices", device]) => {
            directory::delete_device(svc, claims, id, device).await?;
            Ok(ApiResponse::no_content())
        }
        ("GET", ["notifications", id]) => {
            require(claims.is_staff())?;
            ok(notifications::get(svc, org, id).await?)
        }
        ("POST", ["notifications", id, "ack"]) => {
            notifications::ack(svc, claims, id).await?;
            Ok(ApiResponse::no_content())
        }
        ("POST", ["messages", "sms"]) => {
            require(claims.has(super::auth::Role::Dispatcher))?;
            let body = body_json(&req.body)?;
            let v = notifications::manual_sms(svc, org, &body).await?;
            Ok(ApiResponse::json(202, v))
        }
        (_, path) if known(path) => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::NotFound),
    }
}

/// Paths that exist under some other method (answered 405, not 404).
fn known(path: &[&str]) -> bool {
    matches!(
        path,
        ["settings"]
            | ["settings", "sms"]
            | ["settings", "sms", _]
            | ["settings", "sms", _, "test"]
            | ["settings", "email", "test"]
            | ["settings", "email"]
            | ["settings", "communication"]
            | ["users"]
            | ["users", _]
            | ["users", _, "devices"]
            | ["users", _, "devices", _]
            | ["notifications", _]
            | ["notifications", _, "ack"]
            | ["messages", "sms"]
    )
}
