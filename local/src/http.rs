//! The runner's HTTP layer: the routes the Lambda function serves (through
//! [`api::handle`]), the console's files, the local-only routes (`/local/events`,
//! `/local/provider-events`, `/local/outbox`) and the contract's JSON errors.

use crate::{LocalApp, server};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use flare_shared::app::api::{self, ApiRequest, ApiResponse, MAX_BODY};
use flare_shared::domain::IncidentEvent;
use std::sync::Arc;

/// The largest event `/local/events` takes: EventBridge's limit on an event (256 KB).
pub const MAX_EVENT: usize = 256 * 1024;

/// The runner's HTTP routes: the EventBridge and outbox stand-ins, and everything
/// else to the shared API.
pub fn router(app: Arc<LocalApp>) -> axum::Router {
    axum::Router::new()
        .route("/local/events", axum::routing::post(post_event))
        .route("/local/outbox", axum::routing::get(get_outbox))
        .route(
            "/local/provider-events",
            axum::routing::post(post_provider_event),
        )
        // The admin console: the page at `/` and `/console/`, its files beside it.
        .route("/", axum::routing::get(console_file))
        .route("/console", axum::routing::get(console_root))
        .route("/console/", axum::routing::get(console_file))
        .route("/console/{file}", axum::routing::get(console_file))
        .route("/app.js", axum::routing::get(console_file))
        .route("/core.js", axum::routing::get(console_file))
        .route("/notifications.js", axum::routing::get(console_file))
        .route("/audit.js", axum::routing::get(console_file))
        .route("/console.css", axum::routing::get(console_file))
        // A known path with another method: the contract's body (axum adds `Allow`).
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(any)
        .with_state(app)
}

async fn method_not_allowed() -> Response {
    let body = serde_json::json!({"error": {"code": "method_not_allowed",
        "message": "Method not allowed here; the Allow header lists the ones this path takes."}});
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

/// A console file, by the last segment of the path (`/`, `/console/` and
/// `/console/index.html` are the page).
async fn console_file(uri: axum::http::Uri) -> Response {
    let name = uri.path().rsplit('/').next().unwrap_or_default();
    match flare_console::asset(name) {
        Some(a) => {
            let mut r = Response::new(axum::body::Body::from(a.body));
            let h = r.headers_mut();
            h.insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static(a.content_type),
            );
            for (k, v) in flare_console::HEADERS {
                h.insert(k, axum::http::HeaderValue::from_static(v));
            }
            r
        }
        None => {
            let body = serde_json::json!({"error": {"code": "not_found",
                "message": "No such console file."}});
            (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
        }
    }
}

/// `/console` without its slash: the page's relative links need it.
async fn console_root() -> Response {
    axum::response::Redirect::permanent("/console/").into_response()
}

/// `POST /local/events`: an EventBridge event, routed now; deliveries continue in the
/// background. 202 with the notification id; 400 for an event Flare cannot take.
async fn post_event(State(app): State<Arc<LocalApp>>, req: Request) -> Response {
    // What EventBridge takes (an event of 10,000 listed recipients is about 100 KB),
    // not the API's 64 KiB; larger is 413 with the contract's body, saying so.
    let body = match axum::body::to_bytes(req.into_body(), MAX_EVENT).await {
        Ok(b) => b,
        Err(e) if server::timed_out(&e) => return body_timed_out(),
        Err(_) => {
            let body = serde_json::json!({"error": {"code": "payload_too_large",
                "message": "the event is larger than 256 KB, the most EventBridge takes", "fields": {}}});
            return (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(body)).into_response();
        }
    };
    let event = match IncidentEvent::from_json(&body) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "local event refused");
            let (code, fields) = match &e {
                flare_shared::domain::EventError::InvalidDetail(f) => {
                    ("validation_failed", serde_json::json!(f.fields))
                }
                flare_shared::domain::EventError::UnknownDetailType(_) => {
                    ("unknown_detail_type", serde_json::json!({}))
                }
                flare_shared::domain::EventError::Malformed(_) => {
                    ("invalid_json", serde_json::json!({}))
                }
            };
            let body = serde_json::json!({"error": {"code": code, "message": e.to_string(), "fields": fields}});
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    let id = event.notification_id.clone();
    // As in AWS, a routing failure does not change what EventBridge was told.
    let routed = crate::pipeline::in_lane(event.category.lane(), app.notifier.route(&event)).await;
    let replay = match routed {
        Ok(routed) => routed.replay,
        Err(flare_shared::app::notify::RouteError::UnknownOrganization(org)) => {
            let e = serde_json::json!({"error": {
                "code": "unknown_organization",
                "message": format!("Flare knows nothing about the organization \"{org}\": save its settings or users first"),
                "fields": {"detail.org_id": "unknown organization"}}});
            return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(e)).into_response();
        }
        Err(e) => {
            tracing::error!(notification_id = %id, error = ?e, "local event not routed");
            false
        }
    };
    let mut body = serde_json::json!({"notification_id": id});
    if replay {
        body["replay"] = serde_json::json!(true);
    }
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

/// `POST /local/provider-events`: what AWS would hand the receipts function (an SES
/// event as EventBridge delivers it, or a CloudWatch Logs subscription payload of SNS
/// SMS status lines), applied through the same code. 200 with what it did; 400 for an
/// event Flare cannot read.
async fn post_provider_event(State(app): State<Arc<LocalApp>>, req: Request) -> Response {
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) if server::timed_out(&e) => return body_timed_out(),
        Err(_) => {
            let e = flare_shared::app::error::ApiError::PayloadTooLarge;
            return to_response(ApiResponse::error(&e));
        }
    };
    let event: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            let e = flare_shared::app::error::ApiError::InvalidJson(e);
            return to_response(ApiResponse::error(&e));
        }
    };
    let receipts = flare_shared::app::receipts::Receipts {
        opt_outs: Some(app.services.directory.clone()),
        ..flare_shared::app::receipts::Receipts::new(app.services.log.clone())
    };
    let replies = app.services.replies();
    match flare_runtime::provider_events::apply(&receipts, Some(&replies), event).await {
        Ok(sum) => axum::Json(serde_json::json!(sum)).into_response(),
        Err(flare_runtime::provider_events::ProviderEventError::Malformed(m)) => {
            let body = serde_json::json!({"error": {"code": "validation_failed", "message": m, "fields": {"body": "not a provider event Flare reads"}}});
            (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
        }
        Err(flare_runtime::provider_events::ProviderEventError::TooLarge(m)) => {
            tracing::warn!(reason = %m, "provider event refused: too large");
            let body = serde_json::json!({"error": {"code": "payload_too_large", "message": format!("the provider event is {m}")}});
            (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(body)).into_response()
        }
        Err(flare_runtime::provider_events::ProviderEventError::Store(e)) => {
            to_response(ApiResponse::error(&e.into()))
        }
        Err(flare_runtime::provider_events::ProviderEventError::Reply(e)) => {
            to_response(ApiResponse::error(&e))
        }
    }
}

/// `GET /local/outbox`: every message handed to the SNS and SES stand-ins.
async fn get_outbox(State(app): State<Arc<LocalApp>>) -> Response {
    match app.outbox.entries().await {
        Ok(entries) => axum::Json(entries).into_response(),
        Err(e) => {
            tracing::error!(error = ?e, "outbox not read");
            let e = flare_shared::app::error::ApiError::Internal(e);
            to_response(ApiResponse::error(&e))
        }
    }
}

async fn any(State(app): State<Arc<LocalApp>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let claims = app.claims(&parts.headers);
    // Read at most one byte past the limit: enough to answer 413 as the Lambda would.
    let body = match axum::body::to_bytes(body, MAX_BODY + 1).await {
        Ok(b) => b.to_vec(),
        Err(e) if server::timed_out(&e) => return body_timed_out(),
        Err(_) => vec![0; MAX_BODY + 1],
    };
    let request = ApiRequest {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        claims,
        body,
        query: parts.uri.query().map(str::to_string),
        idempotency_key: parts
            .headers
            .get("idempotency-key")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        headers: api::KEPT_HEADERS
            .iter()
            .filter_map(|name| {
                let v = parts.headers.get(*name)?;
                Some((
                    name.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                ))
            })
            .collect(),
        // The URL a gateway called, as Twilio signs it: plain HTTP, unless a proxy in
        // front (a tunnel for a real gateway's callbacks) says it took https.
        url: parts.headers.get(header::HOST).map(|h| {
            let scheme = match parts.headers.get("x-forwarded-proto").map(|p| p.as_bytes()) {
                Some(b"https") => "https",
                _ => "http",
            };
            api::request_url(scheme, h.as_bytes(), parts.uri.path(), parts.uri.query())
        }),
        meta: api::RequestMeta {
            source_ip: parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip().to_string()),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            request_id: Some(uuid::Uuid::new_v4().to_string()),
        },
    };
    to_response(api::handle(&app.services, request).await)
}

fn to_response(r: ApiResponse) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = match (r.html, r.body) {
        (Some(page), _) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            page,
        )
            .into_response(),
        (None, Some(v)) => (status, axum::Json(v)).into_response(),
        (None, None) => (status, Body::empty()).into_response(),
    };
    for (name, value) in r.headers {
        if let Ok(value) = header::HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, value);
        }
    }
    resp
}

/// 408: the body did not arrive within [`server::BODY_READ_TIMEOUT`].
fn body_timed_out() -> Response {
    let body = serde_json::json!({"error": {"code": "request_timeout", "message": format!(
        "The request's body did not arrive within {} s.", server::BODY_READ_TIMEOUT.as_secs()
    )}});
    let mut resp = (StatusCode::REQUEST_TIMEOUT, axum::Json(body)).into_response();
    resp.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    resp
}

/// Serves until `shutdown` completes, under the default [`server::Limits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<LocalApp>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, app, server::Limits::default(), shutdown).await
}

/// [`serve`] under other limits (tests use small ones).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Arc<LocalApp>,
    limits: server::Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, router(app), limits, shutdown).await
}
