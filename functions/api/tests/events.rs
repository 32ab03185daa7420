//! The sample events in `events/api` run through the handler (in-memory adapters), so
//! the files cannot drift from the code.

mod common;

use common::*;
use flare_shared::app::Services;
use flare_shared::domain::EndpointPolicy;
use serde_json::json;

fn services() -> Services {
    flare_memory::services(EndpointPolicy::default())
}

#[tokio::test]
async fn settings_events_answer_as_the_contract_says() {
    let svc = services();
    let (s, body) = call(&svc, &event("put-sms-settings")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["http_header"], "X-Api-Key: ****");
    assert_eq!(body["password_set"], true);
    assert!(body.get("password").is_none());

    let (s, body) = call(&svc, &event("get-sms-settings")).await;
    assert_eq!(
        (s, body["sender_number"].as_str()),
        (200, Some("+15551234567"))
    );
    let (s, body) = call(&svc, &event("list-sms-settings")).await;
    assert_eq!((s, body.as_array().unwrap().len()), (200, 1));

    let (s, body) = call(&svc, &event("put-email-settings")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["smtp"]["password_set"], true);
    let (s, body) = call(&svc, &event("get-email-settings")).await;
    assert_eq!((s, body["provider"].as_str()), (200, Some("smtp")));

    let (s, body) = call(&svc, &event("get-communication-settings")).await;
    assert_eq!(
        (s, body["dispatch"].as_str()),
        (200, Some("app_then_sms_email"))
    );
    let (s, body) = call(&svc, &event("put-communication-settings")).await;
    assert_eq!((s, body["messages"].as_str()), (200, Some("app_only")));

    let (s, body) = call(&svc, &event("get-settings")).await;
    assert_eq!(s, 200, "a dispatcher reads settings");
    assert_eq!(body["sms"][0]["control_center_id"], "main");
    assert_eq!(body["email"]["sender_email"], "alerts@acme.example");
    assert_eq!(body["communication"]["distress"], true);
    assert!(!body.to_string().contains("s3cret-pw") && !body.to_string().contains("abc123"));

    let (s, _) = call(&svc, &event("delete-sms-settings")).await;
    assert_eq!(s, 204);
    let (s, body) = call(&svc, &event("get-sms-settings")).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (s, _) = call(&svc, &event("delete-email-settings")).await;
    assert_eq!(s, 204);
    let (s, body) = call(&svc, &event("get-settings")).await;
    assert_eq!((s, body["email"].clone()), (200, serde_json::Value::Null));
}

#[tokio::test]
async fn directory_events_answer_as_the_contract_says() {
    let svc = services();
    let (s, body) = call(&svc, &event("put-user")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["license"], "basic_responder");
    let (s, body) = call(&svc, &event("get-user-self")).await;
    assert_eq!(
        (s, body["name"].as_str()),
        (200, Some("Ana Silva")),
        "a user reads themself"
    );
    let (s, body) = call(&svc, &event("post-device")).await;
    assert_eq!(s, 201, "{body}");
    let device = body["device_id"].as_str().unwrap().to_string();
    let (s, body) = call(&svc, &event("list-users")).await;
    assert_eq!(s, 200);
    assert_eq!(body[0]["devices"][0]["device_id"], device.as_str());
    assert!(
        body[0]["devices"][0].get("token").is_none(),
        "tokens are not shown"
    );
    let (s, _) = call(&svc, &event("delete-user")).await;
    assert_eq!(s, 204);
    let (s, _) = call(&svc, &event("get-user-self")).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn a_responder_may_not_write_settings_or_read_others() {
    let svc = services();
    let put = as_caller(event("put-sms-settings"), "u-17", "acme", "[responder]");
    let (s, body) = call(&svc, &put).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert_eq!(body["error"]["message"], "This needs the admin role");
    call(&svc, &event("put-user")).await;
    let other = as_caller(event("get-user-self"), "u-99", "acme", "[responder]");
    assert_eq!(call(&svc, &other).await.0, 403);
}

#[tokio::test]
async fn requests_without_claims_are_refused_401() {
    let svc = services();
    let mut ev = event("get-settings");
    ev["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
    let (s, body) = call(&svc, &ev).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    // Claims the identity provider left out are named.
    let mut no_org = as_caller(event("get-settings"), "u-17", "", "[admin]");
    no_org["requestContext"]["authorizer"]["jwt"]["claims"]
        .as_object_mut()
        .unwrap()
        .remove("org_id");
    let (s, body) = call(&svc, &no_org).await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(
        body["error"]["message"], "The token has no `org_id` claim",
        "{body}"
    );
}

#[tokio::test]
async fn bad_bodies_answer_400_or_413() {
    let svc = services();
    let (s, body) = call(&svc, &raw_body(event("put-user"), "{\"name\": ")).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );
    let big = json!({"name": "x".repeat(70 * 1024)}).to_string();
    let (s, body) = call(&svc, &raw_body(event("put-user"), &big)).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    let (s, body) = call(
        &svc,
        &with(
            event("put-user"),
            "PUT",
            "/v1/users/u-17",
            Some(json!({"license": "chief"})),
        ),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        body["error"]["fields"]["name"].is_string()
            && body["error"]["fields"]["license"].is_string()
    );
}

#[tokio::test]
async fn unknown_routes_answer_404_and_wrong_methods_405() {
    let svc = services();
    let (s, body) = call(
        &svc,
        &with(event("get-settings"), "GET", "/v1/nothing-here", None),
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (s, _) = call(
        &svc,
        &with(event("get-settings"), "POST", "/v1/settings", None),
    )
    .await;
    assert_eq!(s, 405);
}

#[tokio::test]
async fn literal_private_hosts_are_refused_on_save_in_aws_mode() {
    let svc = services();
    let put = with(
        event("put-sms-settings"),
        "PUT",
        "/v1/settings/sms/main",
        Some(
            json!({"provider": "http", "url": "https://169.254.169.254/latest", "sender_number": "ACME"}),
        ),
    );
    let (s, body) = call(&svc, &put).await;
    assert_eq!(s, 400);
    assert!(body["error"]["fields"]["url"].is_string(), "{body}");
    let put = with(
        event("put-email-settings"),
        "PUT",
        "/v1/settings/email",
        Some(
            json!({"provider": "smtp", "smtp": {"server_url": "10.0.0.1", "port": 587, "use_tls": true}}),
        ),
    );
    let (s, body) = call(&svc, &put).await;
    assert_eq!(s, 400);
    assert!(
        body["error"]["fields"]["smtp.server_url"].is_string(),
        "{body}"
    );
}

#[tokio::test]
async fn the_openapi_document_is_served_without_claims() {
    let svc = services();
    let (s, body) = call(&svc, &event("get-openapi")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["openapi"], "3.1.0");
    assert!(body["paths"]["/v1/settings/sms/{control_center_id}"]["put"].is_object());
}

/// The console's files, as API Gateway hands the function `GET /console/...` (a route
/// without the JWT authorizer): the page, its module and style sheet with a same-origin
/// content security policy, the bare path redirected to the slash, anything else 404.
#[tokio::test]
async fn the_console_is_served_without_a_token() {
    // Not under events/api: that folder holds the /v1 routes' samples only.
    let path = flare_tests::workspace_root().join("events/console/get-console.json");
    let ev: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(ev["requestContext"]["authorizer"].is_null());
    let serve = |ev: &serde_json::Value| {
        let req = lambda_http::request::from_str(&ev.to_string()).expect("an API Gateway v2 event");
        async move { flare_api::handle(&services(), req).await.expect("answers") }
    };
    let page = serve(&ev).await;
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let html = match page.body() {
        lambda_http::Body::Binary(b) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(html.contains(">Outgoing SMS<"));
    for (path, status, kind) in [
        ("/console/app.js", 200, Some("text/javascript")),
        ("/console/console.css", 200, Some("text/css")),
        ("/console/index.html", 200, Some("text/html")),
        ("/console/../Cargo.toml", 404, None),
        ("/console/secrets", 404, None),
    ] {
        let r = serve(&with(ev.clone(), "GET", path, None)).await;
        assert_eq!(r.status(), status, "{path}");
        if let Some(kind) = kind {
            assert!(
                r.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with(kind),
                "{path}"
            );
        }
    }
    let bare = serve(&with(ev.clone(), "GET", "/console", None)).await;
    assert_eq!(bare.status(), 308);
    assert_eq!(bare.headers()["location"], "/console/");
}

/// A secret store that counts its reads.
#[derive(Default)]
struct CountedSecrets {
    inner: flare_memory::MemorySecrets,
    reads: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl flare_shared::ports::SecretStore for CountedSecrets {
    async fn get(
        &self,
        key: &flare_shared::ports::SecretKey,
    ) -> flare_shared::ports::StoreResult<Option<secrecy::SecretString>> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.get(key).await
    }
    async fn put(
        &self,
        key: &flare_shared::ports::SecretKey,
        value: &secrecy::SecretString,
    ) -> flare_shared::ports::StoreResult<()> {
        self.inner.put(key, value).await
    }
    async fn delete(
        &self,
        key: &flare_shared::ports::SecretKey,
    ) -> flare_shared::ports::StoreResult<()> {
        self.inner.delete(key).await
    }
}

/// The public callback route verifies through the senders' cache (as the API function
/// wires it): a flood of junk reads the store once, not once a request.
#[tokio::test]
async fn a_flood_of_unsigned_gateway_callbacks_reads_the_password_once() {
    use flare_shared::secrets_cache::{CachedSecrets, MAX_TTL};
    use std::sync::Arc;
    let store = Arc::new(CountedSecrets::default());
    let mut svc = services();
    svc.secrets = store.clone();
    svc.secret_reads = Arc::new(CachedSecrets::new(store.clone(), MAX_TTL));
    let mut put = event("put-sms-settings");
    put["rawPath"] = json!("/v1/settings/sms/north");
    put["requestContext"]["http"]["path"] = json!("/v1/settings/sms/north");
    put["pathParameters"]["control_center_id"] = json!("north");
    let mut body: serde_json::Value = serde_json::from_str(put["body"].as_str().unwrap()).unwrap();
    body["format"] = json!("twilio");
    put["body"] = json!(body.to_string());
    let (s, b) = call(&svc, &put).await;
    assert_eq!(s, 200, "{b}");
    let before = store.reads.load(std::sync::atomic::Ordering::SeqCst);
    for i in 0..50 {
        let path = flare_tests::workspace_root().join("events/receipts/twilio-callback.json");
        let mut junk: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        junk["headers"]["x-twilio-signature"] = json!(format!("junk{i}"));
        let (s, b) = call(&svc, &junk).await;
        assert_eq!(s, 401, "{b}");
    }
    assert_eq!(
        store.reads.load(std::sync::atomic::Ordering::SeqCst) - before,
        1,
        "one read of the stored password for 50 callbacks"
    );
}

/// v1.2: a write through the handler is one audit entry with API Gateway's source IP,
/// user agent and request id; the sample audit events read it and check the chain,
/// which names an entry edited in the store.
#[tokio::test]
async fn writes_are_audited_with_the_request_context_and_an_edit_breaks_the_chain() {
    let audit = std::sync::Arc::new(flare_memory::MemoryAuditLog::default());
    let mut svc = services();
    svc.audit = audit.clone();
    let put = event("put-sms-settings");
    let (s, _) = call(&svc, &put).await;
    assert_eq!(s, 200);
    let (s, _) = call(&svc, &event("put-communication-settings")).await;
    assert_eq!(s, 200);
    let (s, body) = call(&svc, &event("list-audit")).await;
    assert_eq!(s, 200, "{body}");
    let entries = body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{body}");
    let e = &entries[1];
    let ctx = &put["requestContext"];
    assert_eq!(
        (&e["source_ip"], &e["user_agent"], &e["request_id"]),
        (
            &ctx["http"]["sourceIp"],
            &ctx["http"]["userAgent"],
            &ctx["requestId"]
        )
    );
    assert_eq!(e["changes"]["password"], "set");
    let secret = serde_json::from_str::<serde_json::Value>(put["body"].as_str().unwrap()).unwrap();
    assert!(
        !body
            .to_string()
            .contains(secret["password"].as_str().unwrap())
    );
    let (s, v) = call(&svc, &event("verify-audit")).await;
    assert_eq!((s, v), (200, json!({"entries": 2, "intact": true})));
    audit.tamper(
        &flare_shared::domain::OrgId::parse("acme").unwrap(),
        |entries| {
            entries[0].record.actor.sub = "someone-else".into();
        },
    );
    let (s, v) = call(&svc, &event("verify-audit")).await;
    assert_eq!(
        (s, v),
        (
            200,
            json!({"entries": 2, "intact": false, "first_broken": "a-000000000001"})
        )
    );
    // Only an admin reads the trail.
    let as_dispatcher = as_caller(event("verify-audit"), "u-d", "acme", "[dispatcher]");
    assert_eq!(call(&svc, &as_dispatcher).await.0, 403);
}
