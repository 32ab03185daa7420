//! Helpers: API Gateway requests from the sample events in `events/api`, answered by
//! the real handler.
#![allow(dead_code)]

use flare_shared::app::Services;
use serde_json::{Value, json};

/// A sample event from `events/api/NAME.json`.
pub fn event(name: &str) -> Value {
    let path = flare_tests::workspace_root().join(format!("events/api/{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The same event with another method, path, body or caller.
pub fn with(mut ev: Value, method: &str, path: &str, body: Option<Value>) -> Value {
    ev["rawPath"] = json!(path);
    ev["requestContext"]["http"]["method"] = json!(method);
    ev["requestContext"]["http"]["path"] = json!(path);
    match body {
        Some(b) => ev["body"] = json!(b.to_string()),
        None => {
            ev.as_object_mut().unwrap().remove("body");
        }
    }
    ev
}

pub fn as_caller(mut ev: Value, sub: &str, org: &str, roles: &str) -> Value {
    ev["requestContext"]["authorizer"]["jwt"]["claims"] =
        json!({"sub": sub, "org_id": org, "roles": roles});
    ev
}

pub fn raw_body(mut ev: Value, body: &str) -> Value {
    ev["body"] = json!(body);
    ev
}

/// Runs the event through the Lambda handler: status and JSON body (Null when empty).
pub async fn call(svc: &Services, ev: &Value) -> (u16, Value) {
    let req = lambda_http::request::from_str(&ev.to_string()).expect("an API Gateway v2 event");
    let resp = flare_api::handle(svc, req).await.expect("handler answers");
    let status = resp.status().as_u16();
    let body = match resp.body() {
        lambda_http::Body::Text(t) => serde_json::from_str(t).expect("JSON body"),
        lambda_http::Body::Empty => Value::Null,
        lambda_http::Body::Binary(b) => serde_json::from_slice(b).expect("JSON body"),
        _ => Value::Null,
    };
    (status, body)
}

/// The API function's configuration over a test stack on moto (its own tables, queues,
/// platform applications and secret prefix), as the template would give it.
pub fn config(stack: &flare_tests::stack::AwsStack) -> flare_api::Config {
    flare_api::Config {
        settings_table: stack.tables.settings.clone(),
        audit_table: stack.audit_table.clone(),
        audit_retention_days: 400,
        directory_table: stack.tables.directory.clone(),
        log_table: stack.tables.log.clone(),
        queues: stack.queues.clone(),
        secret_prefix: stack.secret_prefix.clone(),
        platform_apps: stack.platform_apps.clone(),
        policy: flare_shared::domain::EndpointPolicy::default(),
        default_sender: None,
        metrics_namespace: None,
    }
}
