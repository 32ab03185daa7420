//! `flare-local serve` killed mid-dispatch (SIGKILL, no shutdown) and started again over
//! the same data directory: the notification, its deliveries, the outbox and the event's
//! idempotency are still there, and the work that was pending carries on.

mod common;

use common::{ServedBinary, serve_binary};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const USERS: usize = 10;
/// Gateway requests answered at once; the rest hang past the kill.
const ANSWERED: usize = 4;

async fn call(
    s: &ServedBinary,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = flare_tests::http()
        .request(method.parse().unwrap(), format!("{}{path}", s.base))
        .bearer_auth(&s.token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Each delivery's status by (user, channel).
async fn statuses(s: &ServedBinary, id: &str) -> BTreeMap<(String, String), String> {
    let (status, n) = call(s, "GET", &format!("/v1/notifications/{id}"), None).await;
    assert_eq!(status, 200, "{n}");
    let mut out = BTreeMap::new();
    for r in n["recipients"].as_array().unwrap() {
        for d in r["deliveries"].as_array().unwrap() {
            out.insert(
                (
                    r["user_id"].as_str().unwrap_or_default().to_string(),
                    d["channel"].as_str().unwrap().to_string(),
                ),
                d["status"].as_str().unwrap().to_string(),
            );
        }
    }
    out
}

fn count(st: &BTreeMap<(String, String), String>, channel: &str, status: &str) -> usize {
    st.iter()
        .filter(|((_, c), s)| c == channel && s.as_str() == status)
        .count()
}

async fn until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn phones(requests: &[Value]) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for r in requests {
        // twilio format: To=%2B1415...
        let body = r["body"].as_str().unwrap();
        let to = url::form_urlencoded::parse(body.as_bytes())
            .find(|(k, _)| k == "To")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        *by.entry(to).or_insert(0) += 1;
    }
    by
}

#[tokio::test]
async fn a_runner_killed_mid_dispatch_keeps_its_data_and_finishes_the_work() {
    let dir = flare_tests::TempDir::new("flare-restart").unwrap();
    let gw = flare_tests::gateway();
    let path = format!("/{}", flare_tests::unique("restart"));
    let first = serve_binary(dir.path(), "u-admin").await;
    assert_eq!(
        call(
            &first,
            "PUT",
            "/v1/settings/sms/main",
            Some(
                json!({"provider": "http", "url": format!("{}{path}", gw.url), "format": "twilio",
                   "username": "acct-1", "password": "s3cret-pw", "sender_number": "ACMEFIRE"})
            )
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            &first,
            "PUT",
            "/v1/settings/communication",
            Some(json!({"dispatch": "app_sms_email"}))
        )
        .await
        .0,
        200
    );
    let ids: Vec<String> = (1..=USERS).map(|i| format!("u-{i:02}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let body = json!({"name": format!("Responder {i}"), "license": "basic_responder", "virtual": false,
            "contacts": [{"kind": "mobile", "value": format!("+1415555{:04}", 100 + i), "primary": true},
                         {"kind": "email", "value": format!("{id}@example.org"), "primary": true}]});
        let path = format!("/v1/users/{id}");
        assert_eq!(call(&first, "PUT", &path, Some(body)).await.0, 200);
    }
    // The first answers come at once; the others hang well past the kill (and under the
    // sender's 10 s timeout, so no attempt times out before it).
    let mut script = vec![json!({"status": 200}); ANSWERED];
    script.extend(vec![json!({"hang": 6, "status": 200}); USERS - ANSWERED]);
    gw.script(&path, json!(script)).await.unwrap();

    let event = json!({
        "id": flare_tests::unique("ev"), "detail-type": "Incident Dispatched",
        "source": "flare.incidents", "time": "2026-11-27T10:00:00Z",
        "detail": {"org_id": "acme", "control_center_id": "main", "incident_id": "inc-1",
                   "recipient_ids": ids, "message": {"title": "Fire", "body": "Engine 7."}}});
    let (s, b) = call(&first, "POST", "/local/events", Some(event.clone())).await;
    assert_eq!(s, 202, "{b}");
    assert!(b.get("replay").is_none(), "a first event is no replay: {b}");
    let id = b["notification_id"].as_str().unwrap().to_string();

    // Mid-dispatch: every email sent, four SMS sent, six in the gateway's hands.
    until("the gateway to hold every SMS request", || async {
        gw.requests_to(&path).await.unwrap().len() == USERS
    })
    .await;
    until("emails and the answered SMS to be recorded", || async {
        let st = statuses(&first, &id).await;
        count(&st, "email", "sent") == USERS && count(&st, "sms", "sent") == ANSWERED
    })
    .await;
    let before = statuses(&first, &id).await;
    assert_eq!(count(&before, "sms", "pending"), USERS - ANSWERED);
    let (_, outbox_before) = call(&first, "GET", "/local/outbox", None).await;
    drop(first); // SIGKILL: no shutdown, no flush

    let second = serve_binary(dir.path(), "u-admin").await;
    until("the resumed work to settle", || async {
        let st = statuses(&second, &id).await;
        !st.is_empty() && st.values().all(|s| s != "pending")
    })
    .await;
    let after = statuses(&second, &id).await;
    assert_eq!(after.len(), before.len(), "every delivery kept");
    assert_eq!(count(&after, "sms", "sent"), USERS, "{after:?}");
    assert_eq!(count(&after, "email", "sent"), USERS, "{after:?}");

    // The outbox (the SES stand-in's emails) survived, and nothing was sent again.
    let (_, outbox_after) = call(&second, "GET", "/local/outbox", None).await;
    assert_eq!(outbox_after, outbox_before);
    let emails = outbox_after
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["notification_id"] == id.as_str())
        .count();
    assert_eq!(emails, USERS);

    // At the gateway: the four answered before the kill once; the six that were in
    // flight twice (their answer never reached the runner: the crash window).
    let by_phone = phones(&gw.requests_to(&path).await.unwrap());
    assert_eq!(by_phone.len(), USERS);
    assert_eq!(
        by_phone.values().filter(|n| **n == 1).count(),
        ANSWERED,
        "{by_phone:?}"
    );
    assert_eq!(
        by_phone.values().filter(|n| **n == 2).count(),
        USERS - ANSWERED,
        "{by_phone:?}"
    );

    // The event's id is still known: a replay answers so and sends nothing.
    let (s, b) = call(&second, "POST", "/local/events", Some(event)).await;
    assert_eq!((s.as_u16(), &b["replay"]), (202, &json!(true)), "{b}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        gw.requests_to(&path).await.unwrap().len(),
        USERS + USERS - ANSWERED
    );
    assert_eq!(
        call(&second, "GET", "/local/outbox", None).await.1,
        outbox_after
    );
}

/// A data directory from before the database (`settings.json`, `users.json`,
/// `secrets.json`) is imported on first start: settings, users and passwords carry
/// over, the old files are renamed (the secrets file, cleartext, removed).
#[tokio::test]
async fn data_kept_as_json_files_before_the_database_is_imported() {
    let dir = flare_tests::TempDir::new("flare-legacy").unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("settings.json"),
        json!({"sms": {"acme/main": {"control_center_id": "main", "provider": "sns", "sender_number": "ACMEFIRE", "password_set": false}},
               "email": {}, "communication": {"acme": {"dispatch": "app_sms_email", "incident_contacts": "app_only",
                   "messages": "app_only", "distress": true, "dispatch_virtual_users": false, "manual_sms": true}}})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        data.join("users.json"),
        json!({"acme/u-17": {"user_id": "u-17", "name": "Ana Silva", "license": "basic_responder", "virtual": false,
            "contacts": [{"kind": "mobile", "value": "+14155550100", "primary": true}]}})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        data.join("secrets.json"),
        json!({"flare/acme/smtp/password": "old-s3cret"}).to_string(),
    )
    .unwrap();
    let served = serve_binary(dir.path(), "u-admin").await;
    let (s, sms) = call(&served, "GET", "/v1/settings/sms/main", None).await;
    assert_eq!(
        (s.as_u16(), &sms["sender_number"]),
        (200, &json!("ACMEFIRE")),
        "{sms}"
    );
    let (_, comm) = call(&served, "GET", "/v1/settings/communication", None).await;
    assert_eq!(comm["dispatch"], "app_sms_email", "{comm}");
    let (s, user) = call(&served, "GET", "/v1/users/u-17", None).await;
    assert_eq!(
        (s.as_u16(), &user["name"]),
        (200, &json!("Ana Silva")),
        "{user}"
    );
    drop(served);
    assert!(!data.join("settings.json").exists() && data.join("settings.json.imported").exists());
    assert!(data.join("users.json.imported").exists());
    assert!(
        !data.join("secrets.json").exists(),
        "the cleartext file is gone"
    );
    let db = rusqlite::Connection::open(data.join(flare_local::DATABASE)).unwrap();
    let pw: String = db
        .query_row(
            "SELECT value FROM secrets WHERE name = 'flare/acme/smtp/password'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(pw, "old-s3cret");
}

/// The fallback window's timer lives in the runner's memory; its end is stored on the
/// held records. Killed while a window is open and started again, the runner sends the
/// fallback when the stored window ends: not at once, not never.
#[tokio::test]
async fn a_runner_killed_while_a_fallback_window_is_open_sends_the_fallback_when_it_ends() {
    const WINDOW: u64 = 2;
    let dir = flare_tests::TempDir::new("flare-restart-window").unwrap();
    let first = serve_binary(dir.path(), "u-admin").await;
    for (path, body) in [
        (
            "/v1/settings/sms/main",
            json!({"provider": "sns", "sender_number": "ACMEFIRE"}),
        ),
        (
            "/v1/settings/communication",
            json!({"dispatch": "app_then_sms_email", "app_fallback_seconds": WINDOW}),
        ),
        (
            "/v1/users/u-17",
            json!({"name": "Ana", "license": "basic_responder", "virtual": false,
                   "contacts": [{"kind": "mobile", "value": "+14155550117", "primary": true},
                                {"kind": "email", "value": "ana@example.org", "primary": true}]}),
        ),
    ] {
        let (s, b) = call(&first, "PUT", path, Some(body)).await;
        assert_eq!(s, 200, "{path}: {b}");
    }
    let (s, _) = call(
        &first,
        "POST",
        "/v1/users/u-17/devices",
        Some(json!({"platform": "fcm", "token": "tok-17"})),
    )
    .await;
    assert_eq!(s, 201);
    let event = json!({
        "id": flare_tests::unique("ev"), "detail-type": "Incident Dispatched",
        "source": "flare.incidents", "time": "2026-11-27T10:00:00Z",
        "detail": {"org_id": "acme", "control_center_id": "main", "incident_id": "inc-1",
                   "recipient_ids": ["u-17"], "message": {"title": "Fire", "body": "Engine 7."}}});
    // The window starts when push is sent, after this.
    let posted_at = std::time::Instant::now();
    let (s, b) = call(&first, "POST", "/local/events", Some(event)).await;
    assert_eq!(s, 202, "{b}");
    let id = b["notification_id"].as_str().unwrap().to_string();
    until("u-17's push to be sent", || async {
        statuses(&first, &id)
            .await
            .get(&("u-17".into(), "push".into()))
            .is_some_and(|s| s == "sent")
    })
    .await;
    let sent_at = std::time::Instant::now();
    let held = statuses(&first, &id).await;
    assert_eq!(count(&held, "sms", "pending"), 1, "{held:?}");
    drop(first); // SIGKILL while the window is open

    let second = serve_binary(dir.path(), "u-admin").await;
    let st = statuses(&second, &id).await;
    if sent_at.elapsed() < Duration::from_millis(WINDOW * 1000 - 300) {
        assert_eq!(count(&st, "sms", "pending"), 1, "still waiting: {st:?}");
    }
    until("the fallback to go when the window ends", || async {
        let st = statuses(&second, &id).await;
        count(&st, "sms", "sent") == 1 && count(&st, "email", "sent") == 1
    })
    .await;
    assert!(posted_at.elapsed() >= Duration::from_secs(WINDOW));
    let (_, n) = call(&second, "GET", &format!("/v1/notifications/{id}"), None).await;
    let deliveries = n["recipients"][0]["deliveries"].as_array().unwrap();
    for d in deliveries.iter().filter(|d| d["channel"] != "push") {
        assert_eq!(d["fallback_reason"], "no_app_receipt", "{d}");
    }
    let (_, outbox) = call(&second, "GET", "/local/outbox", None).await;
    let mine: Vec<&Value> = outbox
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["notification_id"] == id.as_str())
        .collect();
    assert_eq!(
        mine.iter().filter(|e| e["channel"] == "sms").count(),
        1,
        "sent once: {mine:?}"
    );
}

/// One runner per data directory: a second `serve` on it refuses to start, naming the
/// directory and the process that holds it (it would release the first one's claims and
/// send their messages again).
#[tokio::test]
async fn a_second_runner_on_the_same_data_directory_refuses_to_start() {
    let dir = flare_tests::TempDir::new("flare-lock").unwrap();
    let first = serve_binary(dir.path(), "u-admin").await;
    let data = dir.path().join("data");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flare-local"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("FLARE_LOCAL_JWT_SECRET", "x")
        .output()
        .unwrap();
    assert!(!out.status.success(), "a second runner started");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&data.display().to_string()) && said.contains(&first.pid().to_string()),
        "the refusal names the directory and the process: {said}"
    );
    // The first one still answers.
    let resp = flare_tests::http()
        .get(format!("{}/v1/openapi.json", first.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
