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
    /// Where the request came from, as the audit trail records it.
    pub meta: RequestMeta,
}

/// What the transport knows of a request's origin (API Gateway's request context, or
/// the local runner's connection).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMeta {
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
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
    /// An HTML page instead of JSON (a response link's), served as `text/html`.
    pub html: Option<String>,
}

impl ApiResponse {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            headers: Vec::new(),
            html: None,
        }
    }

    fn no_content() -> Self {
        Self {
            status: 204,
            body: None,
            headers: Vec::new(),
            html: None,
        }
    }

    /// A response link's page, with the headers such a page needs.
    pub fn page(page: super::links::Page) -> Self {
        Self {
            status: page.status,
            body: None,
            headers: super::links::PAGE_HEADERS
                .iter()
                .map(|(k, v)| (*k, v.to_string()))
                .collect(),
            html: Some(page.html),
        }
    }

    /// The `Content-Type` it is served with.
    pub fn content_type(&self) -> &'static str {
        if self.html.is_some() {
            "text/html; charset=utf-8"
        } else {
            "application/json"
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
    serde_json::from_slice(body).map_err(|e| {
        match crate::domain::input::lone_surrogate_path(body) {
            Some(field) => {
                let mut errors = crate::domain::FieldErrors::new();
                errors.add(
                    field,
                    "must not contain a lone surrogate (a \\uD800 to \\uDFFF escape without its pair)",
                );
                errors.into()
            }
            None => ApiError::InvalidJson(e),
        }
    })
}

/// The 404 of a path no route has.
const NO_ROUTE: &str = "no such route (GET /v1/openapi.json lists them)";

async fn route(svc: &Services, req: ApiRequest) -> Result<ApiResponse, ApiError> {
    // Every route, those that take no body included.
    if req.body.len() > MAX_BODY {
        return Err(ApiError::PayloadTooLarge);
    }
    let segs = segments(&req.path);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let resolved = resolve(&req.method, &segs);
    if let Resolved::Found(r, params) = &resolved
        && r.access == Access::Public
    {
        return public_route(svc, &req, r.op, params).await;
    }
    match (segs.first(), resolved) {
        (Some(&"v1"), resolved) => v1_route(svc, req, resolved).await,
        // Under /r/ only links: anything else is the page of a link that is not valid.
        (Some(&"r"), Resolved::WrongMethod(allow)) => Err(ApiError::MethodNotAllowed(allow)),
        (Some(&"r"), _) => Ok(ApiResponse::page(super::links::gone())),
        _ => Err(ApiError::not_found(NO_ROUTE)),
    }
}

/// A `/v1` route that is not public: token, then access, then its operation.
async fn v1_route(
    svc: &Services,
    req: ApiRequest,
    resolved: Resolved,
) -> Result<ApiResponse, ApiError> {
    // Every other /v1 path needs a token first, as behind API Gateway's authorizer: an
    // anonymous caller learns nothing about which paths exist.
    let claims = req
        .claims
        .as_ref()
        .map_err(|f| ApiError::Unauthorized(f.clone()))?;
    let (route, params) = match resolved {
        Resolved::Found(r, p) => (r, p),
        Resolved::WrongMethod(allow) => return Err(ApiError::MethodNotAllowed(allow)),
        Resolved::NotFound => return Err(ApiError::not_found(NO_ROUTE)),
    };
    let user_param = route
        .params()
        .position(|p| p == "user_id")
        .map(|i| params[i].as_str());
    let allowed = route.access.allows(claims, user_param);
    let call = Call {
        svc,
        req: &req,
        claims,
        params: &params,
    };
    let run = async {
        if !allowed {
            return Err(ApiError::Forbidden(route.access.needs()));
        }
        dispatch(route.op, &call).await
    };
    if super::audit::audited(route.op) {
        return super::audit::record_write(svc, &req, claims, route, &params, run).await;
    }
    run.await
}

/// Hands an authorized request to its resource's routes.
async fn dispatch(op: Op, call: &Call<'_>) -> Result<ApiResponse, ApiError> {
    match op {
        Op::OpenApi | Op::GatewayReceipt | Op::InboundSms | Op::LinkPage | Op::LinkAnswer => {
            unreachable!("public, answered above")
        }
        Op::GetSettings
        | Op::ListSms
        | Op::GetSms
        | Op::PutSms
        | Op::DeleteSms
        | Op::TestSms
        | Op::TestEmail
        | Op::GetEmail
        | Op::PutEmail
        | Op::DeleteEmail
        | Op::GetCommunication
        | Op::PutCommunication => settings_route(op, call).await,
        Op::ListUsers
        | Op::GetUser
        | Op::PutUser
        | Op::DeleteUser
        | Op::AddDevice
        | Op::DeleteDevice => directory_route(op, call).await,
        Op::ListAudit => {
            ok(super::audit::list(call.svc, call.org(), call.req.query.as_deref()).await?)
        }
        Op::VerifyAudit => ok(super::audit::check(call.svc, call.org()).await?),
        Op::ListNotifications
        | Op::GetNotification
        | Op::AckNotification
        | Op::RespondNotification
        | Op::ReceiptNotification
        | Op::ManualSms => notification_route(op, call).await,
    }
}

/// The routes without a token: this API's document, and a gateway's signed callback
/// (its signature stands in for the token).
async fn public_route(
    svc: &Services,
    req: &ApiRequest,
    op: Op,
    params: &[String],
) -> Result<ApiResponse, ApiError> {
    match op {
        Op::OpenApi => return Ok(ApiResponse::json(200, super::openapi::document().clone())),
        Op::LinkPage => {
            return Ok(ApiResponse::page(
                super::links::show(svc, &params[0]).await?,
            ));
        }
        Op::LinkAnswer => {
            let page = super::links::answer(svc, &params[0], &req.body).await?;
            return Ok(ApiResponse::page(page));
        }
        _ => {}
    }
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
    if op == Op::InboundSms {
        super::inbound::gateway_sms(svc, &params[0], &params[1], callback).await?;
    } else {
        super::receipts::gateway_callback(svc, &params[0], &params[1], callback).await?;
    }
    Ok(ApiResponse::no_content())
}

/// A request past its token and access checks: what its operation needs.
struct Call<'a> {
    svc: &'a Services,
    req: &'a ApiRequest,
    claims: &'a Claims,
    /// The path parameters, in template order.
    params: &'a [String],
}

impl Call<'_> {
    fn org(&self) -> &crate::domain::OrgId {
        &self.claims.org_id
    }

    /// Path parameter `i`.
    fn p(&self, i: usize) -> &str {
        self.params[i].as_str()
    }

    /// The body, as JSON (read only by the operations that take one).
    fn body(&self) -> Result<Value, ApiError> {
        body_json(&self.req.body)
    }
}

fn ok(v: Value) -> Result<ApiResponse, ApiError> {
    Ok(ApiResponse::json(200, v))
}

/// `/v1/settings/...`: SMS per control center, email, communication, and test sends.
async fn settings_route(op: Op, c: &Call<'_>) -> Result<ApiResponse, ApiError> {
    let (svc, org) = (c.svc, c.org());
    match op {
        Op::GetSettings => ok(settings::all(svc, org).await?),
        Op::ListSms => ok(settings::list_sms(svc, org).await?),
        Op::GetSms => ok(settings::get_sms(svc, org, c.p(0)).await?),
        Op::PutSms => ok(settings::put_sms(svc, org, c.p(0), &c.body()?).await?),
        Op::DeleteSms => {
            settings::delete_sms(svc, org, c.p(0)).await?;
            Ok(ApiResponse::no_content())
        }
        Op::TestSms => ok(test_send::sms(svc, org, c.p(0), &c.body()?).await?),
        Op::TestEmail => ok(test_send::email(svc, org, &c.body()?).await?),
        Op::GetEmail => ok(settings::get_email(svc, org).await?),
        Op::PutEmail => ok(settings::put_email(svc, org, &c.body()?).await?),
        Op::DeleteEmail => {
            settings::delete_email(svc, org).await?;
            Ok(ApiResponse::no_content())
        }
        Op::GetCommunication => ok(serde_json::json!(settings::communication(svc, org).await?)),
        Op::PutCommunication => ok(settings::put_communication(svc, org, &c.body()?).await?),
        _ => unreachable!("not a settings route: {op:?}"),
    }
}

/// `/v1/users/...`: users and their devices.
async fn directory_route(op: Op, c: &Call<'_>) -> Result<ApiResponse, ApiError> {
    let (svc, org) = (c.svc, c.org());
    match op {
        Op::ListUsers => ok(directory::list_users(svc, org).await?),
        Op::GetUser => ok(directory::get_user(svc, org, c.p(0)).await?),
        Op::PutUser => ok(directory::put_user(svc, org, c.p(0), &c.body()?).await?),
        Op::DeleteUser => {
            directory::delete_user(svc, org, c.p(0)).await?;
            Ok(ApiResponse::no_content())
        }
        Op::AddDevice => {
            let v = directory::add_device(svc, org, c.p(0), &c.body()?).await?;
            Ok(ApiResponse::json(201, v))
        }
        Op::DeleteDevice => {
            directory::delete_device(svc, org, c.p(0), c.p(1)).await?;
            Ok(ApiResponse::no_content())
        }
        _ => unreachable!("not a directory route: {op:?}"),
    }
}

/// `/v1/notifications/...` and `/v1/messages/sms`: what was sent, acknowledgements and
/// receipts, manual SMS.
async fn notification_route(op: Op, c: &Call<'_>) -> Result<ApiResponse, ApiError> {
    let (svc, org, query) = (c.svc, c.org(), c.req.query.as_deref());
    match op {
        Op::ListNotifications => ok(notifications::list(svc, org, query).await?),
        Op::GetNotification => ok(notifications::get(svc, org, c.p(0), query).await?),
        Op::AckNotification => {
            ack_body(&c.req.body)?;
            notifications::ack(svc, c.claims, c.p(0)).await?;
            Ok(ApiResponse::no_content())
        }
        Op::RespondNotification => {
            let via = crate::domain::AnsweredVia::App;
            notifications::respond(svc, c.claims, c.p(0), &c.body()?, via).await?;
            Ok(ApiResponse::no_content())
        }
        Op::ReceiptNotification => {
            let b = receipt_body(&c.req.body)?;
            notifications::receipt(svc, c.claims, c.p(0), &b).await?;
            Ok(ApiResponse::no_content())
        }
        Op::ManualSms => {
            let key = c.req.idempotency_key.as_deref();
            let v = notifications::manual_sms(svc, org, &c.body()?, key).await?;
            Ok(ApiResponse::json(202, v))
        }
        _ => unreachable!("not a notification route: {op:?}"),
    }
}

/// An ack takes no body, or an empty object: anything else is a mistake worth saying.
fn ack_body(body: &[u8]) -> Result<(), ApiError> {
    if !body.iter().all(u8::is_ascii_whitespace) && body_json(body)? != serde_json::json!({}) {
        let mut f = crate::domain::FieldErrors::new();
        f.add("body", "takes no body (or {})");
        return Err(ApiError::Validation(f));
    }
    Ok(())
}

/// A receipt's body is optional (`Null` when left out); one that is sent is an object
/// (`null` is not "no body": schemathesis found it answered 204).
fn receipt_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    match body_json(body)? {
        Value::Null => {
            let mut f = crate::domain::FieldErrors::new();
            f.add("body", "must be an object, or left out");
            Err(ApiError::Validation(f))
        }
        v => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_field(r: Result<impl std::fmt::Debug, ApiError>) -> Option<String> {
        match r {
            Err(ApiError::Validation(f)) => f.fields.into_keys().next(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn an_ack_takes_no_body_or_an_empty_object() {
        let empty: [&[u8]; 4] = [b"", b"  \n", b"{}", b" { } "];
        for body in empty {
            assert!(
                ack_body(body).is_ok(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            refused_field(ack_body(b"{\"a\": 1}")).as_deref(),
            Some("body")
        );
        assert_eq!(refused_field(ack_body(b"null")).as_deref(), Some("body"));
        assert!(matches!(ack_body(b"{"), Err(ApiError::InvalidJson(_))));
    }

    #[test]
    fn a_receipts_body_is_left_out_or_json_but_never_null() {
        assert_eq!(receipt_body(b"").unwrap(), Value::Null);
        assert_eq!(
            receipt_body(b"{\"at\": 1}").unwrap(),
            serde_json::json!({"at": 1})
        );
        assert_eq!(
            refused_field(receipt_body(b"null")).as_deref(),
            Some("body")
        );
        assert!(matches!(
            receipt_body(b"nope"),
            Err(ApiError::InvalidJson(_))
        ));
    }
}
