//! Every settings and directory route through the real adapters (DynamoDB, Secrets
//! Manager, SNS) against moto's server.

mod common;

use common::*;
use flare_api::Config;
use flare_aws::{self as aws, SdkConfig};
use flare_shared::app::Services;
use flare_shared::domain::{OrgId, UserId};
use flare_tests::{moto, unique};
use serde_json::{Value, json};

struct TestApi {
    svc: Services,
    sdk: SdkConfig,
    config: Config,
    org: String,
}

/// A fresh API on moto: its own tables, queues, platform applications, secret prefix
/// and organization.
async fn spawn_api() -> TestApi {
    let stack = flare_tests::stack::AwsStack::create(moto()).await.unwrap();
    let config = config(&stack);
    TestApi {
        svc: config.services(&stack.sdk).unwrap(),
        sdk: stack.sdk,
        config,
        org: unique("org"),
    }
}

impl TestApi {
    fn admin(&self, ev: Value) -> Value {
        as_caller(ev, "u-admin", &self.org, "[admin dispatcher]")
    }

    async fn call(&self, ev: Value) -> (u16, Value) {
        call(&self.svc, &ev).await
    }

    /// The secret a save left under `rest` (`sms/main/password`): at most one revision.
    async fn secret(&self, rest: &str) -> Option<String> {
        let name = format!("{}/{}/{rest}", self.config.secret_prefix, self.org);
        let mut all = flare_tests::stack::secrets_under(&self.sdk, &name).await;
        assert!(all.len() <= 1, "one revision of {name} at most: {all:?}");
        all.pop()
    }

    /// Every attribute of every item in both tables, as text.
    async fn scan_all(&self) -> String {
        let db = aws::dynamodb(&self.sdk);
        let mut all = String::new();
        for t in [&self.config.settings_table, &self.config.directory_table] {
            let out = db.scan().table_name(t).send().await.unwrap();
            all.push_str(&format!("{:?}", out.items()));
        }
        all
    }
}

#[tokio::test]
async fn sms_secrets_live_in_secrets_manager_and_never_in_dynamodb() {
    let api = spawn_api().await;
    let (s, body) = api.call(api.admin(event("put-sms-settings"))).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        api.secret("sms/main/password").await.as_deref(),
        Some("s3cret-pw")
    );
    assert_eq!(
        api.secret("sms/main/header-value").await.as_deref(),
        Some("abc123")
    );
    let items = api.scan_all().await;
    assert!(
        items.contains("X-Api-Key"),
        "the header name is configuration: {items}"
    );
    assert!(
        !items.contains("s3cret-pw") && !items.contains("abc123"),
        "{items}"
    );

    let (s, body) = api.call(api.admin(event("get-sms-settings"))).await;
    assert_eq!(s, 200);
    assert_eq!(body["http_header"], "X-Api-Key: ****");
    assert_eq!(body["password_set"], true);

    // A PUT without password, with the masked header, keeps both stored secrets for the
    // same gateway; moved to another host it must send them again (v1.2).
    let keep = |url: &str| {
        with(
            event("put-sms-settings"),
            "PUT",
            "/v1/settings/sms/main",
            Some(json!({"provider": "http", "url": url, "format": "twilio",
                        "username": "acct-17", "sender_number": "ACMEFIRE", "http_header": "X-Api-Key: ****"})),
        )
    };
    let (s, body) = api
        .call(api.admin(keep("https://sms2.example.com/send")))
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(body["error"]["fields"]["password"].is_string(), "{body}");
    let (s, body) = api.call(api.admin(keep(SAMPLE_GATEWAY))).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["password_set"], true);
    assert_eq!(
        api.secret("sms/main/password").await.as_deref(),
        Some("s3cret-pw")
    );
    assert_eq!(
        api.secret("sms/main/header-value").await.as_deref(),
        Some("abc123")
    );

    let (s, _) = api.call(api.admin(event("delete-sms-settings"))).await;
    assert_eq!(s, 204);
    assert_eq!(api.secret("sms/main/password").await, None);
    assert_eq!(api.secret("sms/main/header-value").await, None);
    assert_eq!(api.call(api.admin(event("get-sms-settings"))).await.0, 404);
}

#[tokio::test]
async fn sms_settings_per_control_center_are_listed_and_switching_to_sns_drops_secrets() {
    let api = spawn_api().await;
    api.call(api.admin(event("put-sms-settings"))).await;
    let north = with(
        event("put-sms-settings"),
        "PUT",
        "/v1/settings/sms/north",
        Some(json!({"provider": "sns", "sender_number": "+15551234567"})),
    );
    assert_eq!(api.call(api.admin(north)).await.0, 200);
    let (s, list) = api.call(api.admin(event("list-sms-settings"))).await;
    assert_eq!(s, 200);
    let ids: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["control_center_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["main", "north"]);
    let to_sns = with(
        event("put-sms-settings"),
        "PUT",
        "/v1/settings/sms/main",
        Some(json!({"provider": "sns"})),
    );
    let (s, body) = api.call(api.admin(to_sns)).await;
    assert_eq!((s, body["password_set"].as_bool()), (200, Some(false)));
    assert_eq!(api.secret("sms/main/password").await, None);
    assert_eq!(api.secret("sms/main/header-value").await, None);
}

#[tokio::test]
async fn email_settings_keep_their_password_in_secrets_manager() {
    let api = spawn_api().await;
    let (s, body) = api.call(api.admin(event("put-email-settings"))).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        api.secret("smtp/password").await.as_deref(),
        Some("s3cret-pw")
    );
    assert!(!api.scan_all().await.contains("s3cret-pw"));
    let (s, body) = api.call(api.admin(event("get-email-settings"))).await;
    assert_eq!(
        (s, body["smtp"]["server_url"].as_str()),
        (200, Some("smtp.acme.example"))
    );
    assert_eq!(body["smtp"]["password_set"], true);
    let ses = with(
        event("put-email-settings"),
        "PUT",
        "/v1/settings/email",
        Some(json!({"provider": "ses"})),
    );
    let (s, body) = api.call(api.admin(ses)).await;
    assert_eq!((s, body["sender_email"].clone()), (200, Value::Null));
    assert_eq!(
        api.secret("smtp/password").await,
        None,
        "SES needs no SMTP password"
    );
    assert_eq!(
        api.call(api.admin(event("delete-email-settings"))).await.0,
        204
    );
    assert_eq!(
        api.call(api.admin(event("get-email-settings"))).await.0,
        404
    );
}

#[tokio::test]
async fn communication_settings_default_then_persist() {
    let api = spawn_api().await;
    let (s, body) = api
        .call(api.admin(event("get-communication-settings")))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        body,
        json!({"dispatch": "app_then_sms_email", "incident_contacts": "app_then_sms_email",
        "messages": "app_then_sms_email", "distress": false, "dispatch_virtual_users": false, "manual_sms": false,
        "app_fallback_seconds": 60, "dispatch_escalation": null, "sms_help_text": null})
    );
    assert_eq!(
        api.call(api.admin(event("put-communication-settings")))
            .await
            .0,
        200
    );
    let (_, body) = api.call(api.admin(event("get-settings"))).await;
    assert_eq!(body["communication"]["incident_contacts"], "app_sms_email");
    assert_eq!(body["communication"]["distress"], true);
}

/// The endpoints of the test's platform applications, as `{"arn", "token"}` (asked of
/// SNS itself: moto's data.json keeps deleted endpoints).
async fn endpoints(api: &TestApi) -> Vec<Value> {
    let sns = aws::sns(&api.sdk);
    let apps = &api.config.platform_apps;
    let mut out = Vec::new();
    for app in [&apps.fcm, &apps.apns, &apps.apns_sandbox]
        .into_iter()
        .flatten()
    {
        let page = sns
            .list_endpoints_by_platform_application()
            .platform_application_arn(app)
            .send()
            .await
            .unwrap();
        for e in page.endpoints() {
            let token = e.attributes().and_then(|a| a.get("Token")).cloned();
            out.push(json!({"arn": e.endpoint_arn(), "token": token}));
        }
    }
    out
}

#[tokio::test]
async fn devices_are_sns_platform_endpoints() {
    let api = spawn_api().await;
    assert_eq!(api.call(api.admin(event("put-user"))).await.0, 200);
    let token = unique("fcm-token");
    let post = with(
        event("post-device"),
        "POST",
        "/v1/users/u-17/devices",
        Some(json!({"platform": "fcm", "token": token})),
    );
    let post = as_caller(post, "u-17", &api.org, "[responder]");
    let (s, body) = api.call(post.clone()).await;
    assert_eq!(s, 201, "{body}");
    let device = body["device_id"].as_str().unwrap().to_string();
    let ours = |eps: Vec<Value>| {
        eps.into_iter()
            .filter(|e| e["token"] == token.as_str())
            .count()
    };
    assert_eq!(
        ours(endpoints(&api).await),
        1,
        "an SNS endpoint for the token"
    );
    // Registering the same token again answers the same device, with no second endpoint.
    let (_, again) = api.call(post).await;
    assert_eq!(again["device_id"], device.as_str());
    assert_eq!(ours(endpoints(&api).await), 1);

    let del = with(
        event("delete-user"),
        "DELETE",
        &format!("/v1/users/u-17/devices/{device}"),
        None,
    );
    assert_eq!(api.call(api.admin(del.clone())).await.0, 204);
    assert_eq!(
        ours(endpoints(&api).await),
        0,
        "the endpoint is deleted with the device"
    );
    assert_eq!(api.call(api.admin(del)).await.0, 404);

    let bad = with(
        event("post-device"),
        "POST",
        "/v1/users/u-17/devices",
        Some(json!({"platform": "webpush", "token": ""})),
    );
    let (s, body) = api.call(api.admin(bad)).await;
    assert_eq!(s, 400);
    assert!(
        body["error"]["fields"]["platform"].is_string()
            && body["error"]["fields"]["token"].is_string()
    );
}

#[tokio::test]
async fn users_are_stored_listed_and_deleted_with_their_endpoints() {
    let api = spawn_api().await;
    let (s, body) = api.call(api.admin(event("put-user"))).await;
    assert_eq!(s, 200, "{body}");
    let token = unique("apns-token");
    let post = with(
        event("post-device"),
        "POST",
        "/v1/users/u-17/devices",
        Some(json!({"platform": "apns", "token": token})),
    );
    assert_eq!(api.call(api.admin(post)).await.0, 201);
    let (s, body) = api
        .call(as_caller(
            event("get-user-self"),
            "u-17",
            &api.org,
            "[responder]",
        ))
        .await;
    assert_eq!(s, 200);
    assert_eq!(body["contacts"][1]["value"], "ana@example.org");
    assert_eq!(body["devices"][0]["platform"], "apns");
    let (_, list) = api.call(api.admin(event("list-users"))).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(api.call(api.admin(event("delete-user"))).await.0, 204);
    assert!(
        endpoints(&api)
            .await
            .iter()
            .all(|e| e["token"] != token.as_str())
    );
    assert_eq!(api.call(api.admin(event("get-user-self"))).await.0, 404);
    assert_eq!(api.call(api.admin(event("delete-user"))).await.0, 404);
}

#[tokio::test]
async fn another_organizations_objects_answer_404_and_never_appear_in_lists() {
    let api = spawn_api().await;
    api.call(api.admin(event("put-user"))).await;
    api.call(api.admin(event("put-sms-settings"))).await;
    let other = unique("org");
    let as_other = |ev| as_caller(ev, "u-admin", &other, "[admin dispatcher]");
    assert_eq!(api.call(as_other(event("get-user-self"))).await.0, 404);
    assert_eq!(api.call(as_other(event("get-sms-settings"))).await.0, 404);
    assert_eq!(api.call(as_other(event("delete-user"))).await.0, 404);
    let (_, users) = api.call(as_other(event("list-users"))).await;
    assert_eq!(users, json!([]));
    let (_, settings) = api.call(as_other(event("get-settings"))).await;
    assert_eq!(settings["sms"], json!([]));
    // Writing "the same" user in the other org does not touch the first org's.
    let put = as_other(event("put-user"));
    api.call(put).await;
    let (_, mine) = api.call(api.admin(event("list-users"))).await;
    assert_eq!(mine.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn recipients_are_read_with_batch_get_across_chunks_of_100() {
    let api = spawn_api().await;
    let org = OrgId::parse(&api.org).unwrap();
    let mut ids = Vec::new();
    for i in 0..150 {
        let id = format!("u-{i:03}");
        let put = with(
            event("put-user"),
            "PUT",
            &format!("/v1/users/{id}"),
            Some(json!({"name": format!("User {i}"), "license": "basic_responder"})),
        );
        assert_eq!(api.call(api.admin(put)).await.0, 200);
        ids.push(UserId::parse(&id).unwrap());
    }
    ids.push(UserId::parse("u-missing").unwrap());
    ids.push(UserId::parse("u-000").unwrap());
    let users = api.svc.directory.get_users(&org, &ids).await.unwrap();
    assert_eq!(
        users.len(),
        150,
        "missing ids left out, duplicates read once"
    );
}

#[tokio::test]
async fn an_sms_test_send_goes_through_sns_on_moto() {
    let api = spawn_api().await;
    let put = with(
        event("put-sms-settings"),
        "PUT",
        "/v1/settings/sms/main",
        Some(json!({"provider": "sns", "sender_number": "ACMEFIRE"})),
    );
    assert_eq!(api.call(api.admin(put)).await.0, 200);
    let to = format!("+1415555{:04}", rand_suffix());
    let test = with(
        event("put-sms-settings"),
        "POST",
        "/v1/settings/sms/main/test",
        Some(json!({"to": to})),
    );
    let (s, body) = api.call(api.admin(test)).await;
    assert_eq!((s, body["status"].as_str()), (200, Some("sent")), "{body}");
    let sent = moto().sent_sms().await.unwrap();
    let ours = sent
        .iter()
        .find(|m| m["phone_number"] == to.as_str())
        .expect("the test SMS");
    assert_eq!(ours["message_id"], body["provider_message_id"]);
}

fn rand_suffix() -> u32 {
    (uuid_like() % 10_000) as u32
}

fn uuid_like() -> u128 {
    unique("n")
        .bytes()
        .fold(0u128, |a, b| a.wrapping_mul(31).wrapping_add(b as u128))
}

#[tokio::test]
async fn concurrent_device_registrations_and_a_user_put_lose_nothing() {
    let api = spawn_api().await;
    assert_eq!(api.call(api.admin(event("put-user"))).await.0, 200);
    const N: usize = 40;
    let post = |i: usize| {
        let ev = with(
            event("post-device"),
            "POST",
            "/v1/users/u-17/devices",
            Some(json!({"platform": "fcm", "token": format!("{}-{i}", api.org)})),
        );
        as_caller(ev, "u-17", &api.org, "[responder]")
    };
    // N registrations and, in the middle of them, the user's own PUT (which keeps
    // devices): each read, changed and wrote the whole user, so some were lost.
    let registrations = futures::future::join_all((0..N).map(|i| api.call(post(i))));
    let put = api.call(api.admin(event("put-user")));
    let (answers, (put_status, _)) = tokio::join!(registrations, put);
    assert_eq!(put_status, 200);
    let mut ids: Vec<String> = answers
        .iter()
        .map(|(s, b)| {
            assert_eq!(*s, 201, "{b}");
            b["device_id"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), N, "one device per token");
    let (_, user) = api
        .call(as_caller(
            event("get-user-self"),
            "u-17",
            &api.org,
            "[responder]",
        ))
        .await;
    let mut stored: Vec<String> = user["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap().to_string())
        .collect();
    stored.sort();
    assert_eq!(stored, ids, "every device answered 201 is stored");
}

/// The gateway URL of `events/api/put-sms-settings.json`.
const SAMPLE_GATEWAY: &str = "https://sms.example.com/send";

/// Settings saved whole on DynamoDB and Secrets Manager (conditional writes on the
/// item's `secrets_at`): saves racing deletes and keeps leave one save's username,
/// password and header, and no secret of another revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_saves_and_deletes_leave_one_saves_settings_and_secrets() {
    let api = spawn_api().await;
    let sms = |i: usize, keep: bool| {
        let mut b = json!({"provider": "http", "url": "https://sms.example.com/send",
            "format": "json", "sender_number": "+15551234567",
            "username": format!("user{i}"), "password": format!("password{i}"),
            "http_header": format!("X-Api-Key: key{i}")});
        if keep {
            b.as_object_mut().unwrap().remove("password");
            b["http_header"] = json!("X-Api-Key: ****");
        }
        with(
            event("put-sms-settings"),
            "PUT",
            "/v1/settings/sms/main",
            Some(b),
        )
    };
    let email = |i: usize| {
        with(
            event("put-email-settings"),
            "PUT",
            "/v1/settings/email",
            Some(
                json!({"provider": "smtp", "sender_email": "alerts@acme.example",
                "smtp": {"server_url": "smtp.acme.example", "port": 587,
                         "username": format!("user{i}"), "password": format!("pass{i}"),
                         "use_tls": true}}),
            ),
        )
    };
    let mut landed = (0, 0);
    for round in 0..4 {
        let mut calls: Vec<Value> = (0..8).map(|i| sms(i, false)).collect();
        calls.extend((0..2).map(|i| sms(i, true)));
        calls.extend((0..2).map(|_| event("delete-sms-settings")));
        calls.extend((0..4).map(email));
        calls.push(event("delete-email-settings"));
        calls.rotate_left(round * 3);
        let answers =
            futures::future::join_all(calls.into_iter().map(|c| api.call(api.admin(c)))).await;
        for (s, b) in &answers {
            assert!([200, 204, 400, 404].contains(s), "round {round}: {s} {b}");
            if *s == 400 {
                // Only a keep with nothing (or another user's secret) to keep.
                assert!(
                    b["error"]["fields"]["http_header"].is_string()
                        || b["error"]["fields"]["password"].is_string(),
                    "{b}"
                );
            }
            landed.0 += usize::from(*s == 200);
            landed.1 += usize::from(*s == 204);
        }
        let (s, got) = api.call(api.admin(event("get-sms-settings"))).await;
        let (password, header) = (
            api.secret("sms/main/password").await,
            api.secret("sms/main/header-value").await,
        );
        match s {
            404 => assert_eq!((password, header), (None, None), "round {round}"),
            200 => {
                let i = got["username"].as_str().unwrap().trim_start_matches("user");
                assert_eq!(got["password_set"], true, "round {round}");
                assert_eq!(
                    (password.as_deref(), header.as_deref()),
                    (
                        Some(format!("password{i}").as_str()),
                        Some(format!("key{i}").as_str())
                    ),
                    "round {round}"
                );
            }
            other => panic!("{other}: {got}"),
        }
        let (s, got) = api.call(api.admin(event("get-email-settings"))).await;
        let password = api.secret("smtp/password").await;
        match s {
            404 => assert_eq!(password, None, "round {round}"),
            200 => {
                let i = got["smtp"]["username"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("user");
                assert_eq!(password, Some(format!("pass{i}")), "round {round}");
            }
            other => panic!("{other}: {got}"),
        }
    }
    assert!(landed.0 > 10 && landed.1 > 0, "{landed:?}");
}
