//! v1.2 audit trail through the local runner: every authenticated write attempt is one
//! entry, with its changes and never a secret; refused writes too; the chain verifies.

mod common;

use common::*;
use serde_json::{Value, json};

const PASSWORD: &str = "gateway-pw-7f3a9c";
const HEADER_VALUE: &str = "hdr-9b8e1d44";

/// The trail, newest first (up to 100 entries).
async fn trail(app: &TestApp, admin: &str, query: &str) -> Vec<Value> {
    let (s, b) = app.get(&format!("/v1/audit?limit=100{query}"), admin).await;
    assert_eq!(s, 200, "{b}");
    b["entries"].as_array().unwrap().clone()
}

/// The newest entry, checking that exactly `n` more entries were written since `before`.
async fn newest(app: &TestApp, admin: &str, before: usize, n: usize) -> Value {
    let all = trail(app, admin, "").await;
    assert_eq!(all.len(), before + n, "{all:#?}");
    all[0].clone()
}

#[tokio::test]
async fn every_write_is_one_entry_with_its_changes_and_no_secret() {
    let app = spawn_app(None).await;
    let admin = token("acme", &["admin", "dispatcher"], "u-admin");
    let gw = "https://sms.example.org/send";
    let put = |body: Value| {
        let (app, admin) = (&app, admin.clone());
        async move { app.json("PUT", "/v1/settings/sms/main", &admin, body).await }
    };
    let gateway = json!({"provider": "http", "url": gw, "format": "json", "username": "acct",
        "password": PASSWORD, "sender_number": "+15551230000",
        "http_header": format!("X-Api-Key: {HEADER_VALUE}")});
    assert_eq!(put(gateway.clone()).await.0, 200);
    let e = newest(&app, &admin, 0, 1).await;
    assert_eq!(e["action"], "PUT /v1/settings/sms/{control_center_id}");
    assert_eq!(e["target"], "/v1/settings/sms/main");
    assert_eq!(e["outcome"], json!({"status": 200, "code": null}));
    assert_eq!(
        e["actor"],
        json!({"sub": "u-admin", "roles": ["admin", "dispatcher"]})
    );
    assert_eq!(e["changes"]["url"], json!({"from": null, "to": gw}));
    assert_eq!(e["changes"]["password"], "set");
    assert_eq!(e["changes"]["http_header_value"], "set");
    assert_eq!(e["source_ip"], "127.0.0.1");
    assert!(e["request_id"].is_string() && e["hash"].as_str().unwrap().len() == 64);
    // A new password and sender: changed, and the number from/to.
    let mut changed = gateway.clone();
    changed["password"] = json!(format!("{PASSWORD}-2"));
    changed["sender_number"] = json!("+15551239999");
    changed["http_header"] = json!("X-Api-Key: ****");
    assert_eq!(put(changed).await.0, 200);
    let e = newest(&app, &admin, 1, 1).await;
    assert_eq!(e["changes"]["password"], "changed");
    assert_eq!(
        e["changes"]["sender_number"],
        json!({"from": "+15551230000", "to": "+15551239999"})
    );
    assert!(e["changes"].get("http_header_value").is_none(), "{e}");
    // To SNS: the gateway's secrets are removed.
    assert_eq!(put(json!({"provider": "sns"})).await.0, 200);
    let e = newest(&app, &admin, 2, 1).await;
    assert_eq!(
        (
            e["changes"]["password"].clone(),
            e["changes"]["http_header_value"].clone()
        ),
        (json!("removed"), json!("removed"))
    );
    // Email, communication, users and devices, a test send, a delete.
    let smtp = json!({"provider": "smtp", "sender_email": "alerts@acme.example", "smtp": {
        "server_url": "smtp.acme.example", "port": 587, "username": "mailer", "password": PASSWORD, "use_tls": true}});
    let writes: Vec<(&str, String, Value)> = vec![
        ("PUT", "/v1/settings/email".into(), smtp),
        (
            "PUT",
            "/v1/settings/communication".into(),
            json!({"dispatch": "app_sms_email"}),
        ),
        (
            "PUT",
            "/v1/users/u-17".into(),
            json!({"name": "Ana", "license": "basic_responder",
            "contacts": [{"kind": "mobile", "value": "+14155550117", "primary": true}]}),
        ),
        (
            "POST",
            "/v1/users/u-17/devices".into(),
            json!({"platform": "fcm", "token": "tok-17"}),
        ),
        (
            "POST",
            "/v1/settings/sms/main/test".into(),
            json!({"to": "+14155550100"}),
        ),
        ("DELETE", "/v1/settings/sms/main".into(), Value::Null),
        ("DELETE", "/v1/users/u-17".into(), Value::Null),
    ];
    for (i, (method, path, body)) in writes.into_iter().enumerate() {
        let (s, b) = app.json(method, &path, &admin, body).await;
        assert!(s.is_success(), "{method} {path}: {s} {b}");
        let e = newest(&app, &admin, 3 + i, 1).await;
        assert_eq!(e["target"], path.as_str());
        assert_eq!(e["outcome"]["status"], s.as_u16());
    }
    let all = trail(&app, &admin, "").await;
    let by_target = |t: &str| all.iter().find(|e| e["target"] == t).unwrap().clone();
    assert_eq!(
        by_target("/v1/settings/email")["changes"]["password"],
        "set"
    );
    assert_eq!(
        by_target("/v1/users/u-17/devices")["changes"]["devices"]["from"],
        json!([])
    );
    // No secret anywhere in the trail.
    let text = serde_json::to_string(&all).unwrap();
    for secret in [PASSWORD, HEADER_VALUE, "tok-17"] {
        assert!(!text.contains(secret), "{secret} in the trail");
    }
    let (s, v) = app.get("/v1/audit/verify", &admin).await;
    assert_eq!(
        (s.as_u16(), v),
        (200, json!({"entries": 10, "intact": true}))
    );
    app.stop().await;
}

#[tokio::test]
async fn refused_and_bad_writes_are_recorded_and_a_bad_token_is_not() {
    let app = spawn_app(None).await;
    let admin = token("acme", &["admin"], "u-admin");
    let dispatcher = token("acme", &["dispatcher"], "u-disp");
    let (s, _) = app
        .json(
            "PUT",
            "/v1/settings/sms/main",
            &dispatcher,
            json!({"provider": "sns"}),
        )
        .await;
    assert_eq!(s, 403);
    let e = newest(&app, &admin, 0, 1).await;
    assert_eq!(e["outcome"], json!({"status": 403, "code": "forbidden"}));
    assert_eq!(e["actor"]["sub"], "u-disp");
    assert_eq!(e["changes"], json!({}));
    let (s, _) = app.get("/v1/settings/sms/main", &admin).await;
    assert_eq!(s, 404, "the refused write changed nothing");
    // 64 KiB of garbage: one entry, 400, and nothing of the body.
    let garbage: String = "zq7!".repeat(16 * 1024 - 1);
    let (s, _) = app
        .send("PUT", "/v1/settings/sms/main", Some(&admin), Some(&garbage))
        .await;
    assert_eq!(s, 400);
    let e = newest(&app, &admin, 1, 1).await;
    assert_eq!(e["outcome"]["status"], 400);
    assert!(!e.to_string().contains("zq7!"), "{e}");
    // A 404: the user is not there.
    let (s, _) = app
        .json("DELETE", "/v1/users/nobody", &admin, Value::Null)
        .await;
    assert_eq!(s, 404);
    assert_eq!(
        newest(&app, &admin, 2, 1).await["outcome"]["code"],
        "not_found"
    );
    // A bad token: no organization to record it under, no entry.
    let (s, _) = app
        .json(
            "PUT",
            "/v1/settings/sms/main",
            "not-a-token",
            json!({"provider": "sns"}),
        )
        .await;
    assert_eq!(s, 401);
    newest(&app, &admin, 3, 0).await;
    // Only an admin reads the trail.
    let (s, _) = app.get("/v1/audit", &dispatcher).await;
    assert_eq!(s, 403);
    let (s, _) = app.get("/v1/audit/verify", &dispatcher).await;
    assert_eq!(s, 403);
    app.stop().await;
}

#[tokio::test]
async fn twenty_writes_at_once_leave_a_chain_of_twenty_and_pages_filter() {
    let app = spawn_app(None).await;
    let admin = token("acme", &["admin"], "u-admin");
    let other = token("acme", &["admin"], "u-other");
    let writes = (0..20).map(|i| {
        let (app, who) = (
            &app,
            if i % 2 == 0 {
                admin.clone()
            } else {
                other.clone()
            },
        );
        async move {
            let body = json!({"provider": "sns", "sender_number": format!("+1555123{i:04}")});
            app.json("PUT", &format!("/v1/settings/sms/cc-{}", i % 4), &who, body)
                .await
                .0
        }
    });
    for s in futures::future::join_all(writes).await {
        assert_eq!(s, 200);
    }
    let (s, v) = app.get("/v1/audit/verify", &admin).await;
    assert_eq!(
        (s.as_u16(), v),
        (200, json!({"entries": 20, "intact": true}))
    );
    let all = trail(&app, &admin, "").await;
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=20).rev().collect::<Vec<_>>(),
        "newest first, no gap"
    );
    // Each entry's change is its own write's, from what the write before it on the same
    // control center left (the stored state the write's condition held on).
    let mut last: std::collections::HashMap<String, Value> = Default::default();
    for e in all.iter().rev() {
        let change = &e["changes"]["sender_number"];
        assert!(change["to"].is_string(), "{e}");
        let target = e["target"].as_str().unwrap().to_string();
        let from = last.get(&target).cloned().unwrap_or(Value::Null);
        assert_eq!(change["from"], from, "{e}");
        last.insert(target, change["to"].clone());
    }
    assert_eq!(trail(&app, &admin, "&actor=u-other").await.len(), 10);
    assert_eq!(
        trail(&app, &admin, "&target=/v1/settings/sms/cc-1")
            .await
            .len(),
        5
    );
    assert_eq!(trail(&app, &admin, "&target=/v1/settings/").await.len(), 20);
    let future = "2999-01-01T00:00:00Z";
    assert_eq!(
        trail(&app, &admin, &format!("&since={future}")).await.len(),
        0
    );
    assert_eq!(
        trail(&app, &admin, &format!("&until={future}")).await.len(),
        20
    );
    // Pages of 8: 8, 8, 4, by cursor.
    let (mut cursor, mut pages) = (String::new(), Vec::new());
    loop {
        let (s, b) = app.get(&format!("/v1/audit?limit=8{cursor}"), &admin).await;
        assert_eq!(s, 200, "{b}");
        pages.push(b["entries"].as_array().unwrap().len());
        match b["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(pages, [8, 8, 4]);
    for bad in [
        "limit=0",
        "limit=101",
        "cursor=x",
        "since=yesterday",
        "colour=red",
    ] {
        let (s, _) = app.get(&format!("/v1/audit?{bad}"), &admin).await;
        assert_eq!(s, 400, "{bad}");
    }
    app.stop().await;
}

/// A change and its entry are written together or not at all: a storage fault after the
/// change (the entry's insert refused, by a trigger put in the runner's database, test-only
/// access) leaves neither the change nor an entry; once it clears, writes are recorded
/// again and the chain verifies.
#[tokio::test]
async fn a_write_whose_entry_fails_leaves_neither_change_nor_entry() {
    let app = spawn_app(None).await;
    let admin = token("acme", &["admin"], "u-admin");
    let sms = |n: &str| json!({"provider": "sns", "sender_number": n});
    let path = "/v1/settings/sms/main";
    assert_eq!(
        app.json("PUT", path, &admin, sms("+15551230001")).await.0,
        200
    );
    assert_eq!(trail(&app, &admin, "").await.len(), 1);
    let db = rusqlite::Connection::open(app.dir.join(flare_local::DATABASE)).unwrap();
    db.execute_batch(
        "CREATE TRIGGER fault BEFORE INSERT ON audit
         BEGIN SELECT RAISE(ABORT, 'injected storage fault'); END;",
    )
    .unwrap();
    let (s, b) = app.json("PUT", path, &admin, sms("+15551230002")).await;
    assert!(s.is_server_error(), "{s} {b}");
    let user = json!({"name": "Ann", "license": "basic_responder"});
    let (s, b) = app
        .json("PUT", "/v1/users/u-ann", &admin, user.clone())
        .await;
    assert!(s.is_server_error(), "{s} {b}");
    let (s, b) = app.json("DELETE", path, &admin, Value::Null).await;
    assert!(s.is_server_error(), "{s} {b}");
    db.execute_batch("DROP TRIGGER fault").unwrap();
    // Nothing changed: the settings as before, no user, no entry.
    let (_, stored) = app.get(path, &admin).await;
    assert_eq!(stored["sender_number"], "+15551230001");
    assert_eq!(app.get("/v1/users/u-ann", &admin).await.0, 404);
    assert_eq!(trail(&app, &admin, "").await.len(), 1);
    // The next write is recorded, from the state the failed ones left alone.
    assert_eq!(
        app.json("PUT", path, &admin, sms("+15551230003")).await.0,
        200
    );
    let e = newest(&app, &admin, 1, 1).await;
    assert_eq!(
        e["changes"]["sender_number"],
        json!({"from": "+15551230001", "to": "+15551230003"})
    );
    let (s, v) = app.get("/v1/audit/verify", &admin).await;
    assert_eq!(
        (s.as_u16(), v),
        (200, json!({"entries": 2, "intact": true}))
    );
    app.stop().await;
}
