//! The local runner over real HTTP: every route, validation, masking, tenancy, roles,
//! tokens, body limits and persistence across a restart.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn sms_body() -> Value {
    json!({"provider": "http", "url": "https://sms.example.com/send", "format": "json",
        "username": "acct-17", "password": "s3cret-pw", "sender_number": "+15551234567",
        "http_header": "X-Api-Key: abc123"})
}

fn email_body() -> Value {
    json!({"provider": "smtp", "sender_email": "alerts@acme.example",
        "smtp": {"server_url": "smtp.acme.example", "port": 587, "username": "alerts",
                 "password": "s3cret-pw", "use_tls": true}})
}

fn user_body() -> Value {
    json!({"name": "Ana Silva", "license": "basic_responder", "virtual": false,
        "control_center_id": "north",
        "contacts": [{"kind": "mobile", "value": "+14155550100", "primary": true},
                     {"kind": "email", "value": "ana@example.org", "primary": true}],
        "emergency_contacts": [{"name": "Rui Silva", "mobile": "+351912345678"}]})
}

#[tokio::test]
async fn every_route_answers_over_http() {
    let app = spawn_app(None).await;
    let admin = token("acme", &["admin", "dispatcher"], "u-admin");
    let ana = token("acme", &["responder"], "u-17");

    assert_eq!(
        app.json("PUT", "/v1/settings/sms/main", &admin, sms_body())
            .await
            .0,
        200
    );
    assert_eq!(app.get("/v1/settings/sms/main", &admin).await.0, 200);
    assert_eq!(
        app.get("/v1/settings/sms/north", &admin).await.0,
        404,
        "no settings of its own"
    );
    let (s, list) = app.get("/v1/settings/sms", &admin).await;
    assert_eq!((s, list.as_array().unwrap().len()), (StatusCode::OK, 1));
    assert_eq!(
        app.json("PUT", "/v1/settings/email", &admin, email_body())
            .await
            .0,
        200
    );
    assert_eq!(app.get("/v1/settings/email", &admin).await.0, 200);
    let (s, c) = app.get("/v1/settings/communication", &admin).await;
    assert_eq!(
        (s, c["manual_sms"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    let (s, c) = app
        .json(
            "PUT",
            "/v1/settings/communication",
            &admin,
            json!({"manual_sms": true, "messages": "app_only"}),
        )
        .await;
    assert_eq!(
        (s, c["manual_sms"].as_bool(), c["dispatch"].as_str()),
        (StatusCode::OK, Some(true), Some("app_then_sms_email"))
    );
    let (s, all) = app.get("/v1/settings", &admin).await;
    assert_eq!(s, 200);
    assert_eq!(all["sms"][0]["control_center_id"], "main");
    assert_eq!(all["email"]["provider"], "smtp");
    assert_eq!(all["communication"]["messages"], "app_only");

    assert_eq!(
        app.json("PUT", "/v1/users/u-17", &admin, user_body())
            .await
            .0,
        200
    );
    let (s, u) = app.get("/v1/users/u-17", &ana).await;
    assert_eq!((s, u["name"].as_str()), (StatusCode::OK, Some("Ana Silva")));
    let (s, d) = app
        .json(
            "POST",
            "/v1/users/u-17/devices",
            &ana,
            json!({"platform": "apns", "token": "apns-1"}),
        )
        .await;
    assert_eq!(s, 201);
    let device = d["device_id"].as_str().unwrap().to_string();
    let (s, users) = app.get("/v1/users", &admin).await;
    assert_eq!(
        (s, users[0]["devices"][0]["device_id"].as_str()),
        (StatusCode::OK, Some(device.as_str()))
    );
    assert_eq!(
        app.send(
            "DELETE",
            &format!("/v1/users/u-17/devices/{device}"),
            Some(&ana),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        app.send("DELETE", "/v1/users/u-17", Some(&admin), None)
            .await
            .0,
        204
    );
    assert_eq!(app.get("/v1/users/u-17", &admin).await.0, 404);
    assert_eq!(
        app.send("DELETE", "/v1/settings/sms/main", Some(&admin), None)
            .await
            .0,
        204
    );
    assert_eq!(
        app.send("DELETE", "/v1/settings/email", Some(&admin), None)
            .await
            .0,
        204
    );
    let (_, all) = app.get("/v1/settings", &admin).await;
    assert_eq!(
        (all["sms"].clone(), all["email"].clone()),
        (json!([]), Value::Null)
    );
    let (s, body) = app.get("/v1/unknown", &admin).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    app.stop().await;
}

/// (method, path, body, the field that must be named)
fn validation_cases() -> Vec<(&'static str, &'static str, Value, &'static str)> {
    let sms = |k: &str, v: Value| {
        let mut b = sms_body();
        b[k] = v;
        b
    };
    let cases_sms = vec![
        (sms("provider", json!("pigeon")), "provider"),
        (sms("url", json!("ftp://sms.example.com")), "url"),
        (sms("url", json!(42)), "url"),
        (sms("format", json!("xml")), "format"),
        (sms("username", json!("a\r\nb")), "username"),
        (sms("password", json!("")), "password"),
        (
            sms("sender_number", json!("+1 (555) CALL-NOW")),
            "sender_number",
        ),
        (sms("sender_number", json!("TWELVECHARSX")), "sender_number"),
        (sms("http_header", json!("X-Api-Key abc")), "http_header"),
        (
            sms("http_header", json!("X-Api-Key: a\r\nX-Evil: 1")),
            "http_header",
        ),
    ];
    let email = |f: &dyn Fn(&mut Value)| {
        let mut b = email_body();
        f(&mut b);
        b
    };
    let cases_email = vec![
        (email(&|b| b["provider"] = json!("pigeon")), "provider"),
        (
            email(&|b| b["sender_email"] = json!("not-an-address")),
            "sender_email",
        ),
        (
            email(&|b| {
                b.as_object_mut().unwrap().remove("smtp");
            }),
            "smtp",
        ),
        (
            email(&|b| b["smtp"]["server_url"] = json!("http://smtp.acme.example")),
            "smtp.server_url",
        ),
        (email(&|b| b["smtp"]["port"] = json!(0)), "smtp.port"),
        (email(&|b| b["smtp"]["port"] = json!("587")), "smtp.port"),
        (
            email(&|b| b["smtp"]["use_tls"] = json!("yes")),
            "smtp.use_tls",
        ),
        (
            email(&|b| b["smtp"]["username"] = json!(7)),
            "smtp.username",
        ),
        (
            email(&|b| b["smtp"]["password"] = json!("")),
            "smtp.password",
        ),
    ];
    let user = |f: &dyn Fn(&mut Value)| {
        let mut b = user_body();
        f(&mut b);
        b
    };
    let cases_user = vec![
        (user(&|b| b["name"] = json!("")), "name"),
        (user(&|b| b["license"] = json!("captain")), "license"),
        (user(&|b| b["virtual"] = json!("no")), "virtual"),
        (
            user(&|b| b["control_center_id"] = json!("north/east")),
            "control_center_id",
        ),
        (user(&|b| b["contacts"] = json!("none")), "contacts"),
        (
            user(&|b| b["contacts"][0]["kind"] = json!("pager")),
            "contacts[0].kind",
        ),
        (
            user(&|b| b["contacts"][0]["value"] = json!("555-0100")),
            "contacts[0].value",
        ),
        (
            user(&|b| b["contacts"][1]["value"] = json!("ana@")),
            "contacts[1].value",
        ),
        (
            user(&|b| b["contacts"][0]["primary"] = json!("yes")),
            "contacts[0].primary",
        ),
        (
            user(&|b| {
                b["contacts"][1] =
                    json!({"kind": "mobile", "value": "+14155550101", "primary": true})
            }),
            "contacts[1].primary",
        ),
        (
            user(&|b| b["emergency_contacts"][0]["name"] = json!("")),
            "emergency_contacts[0].name",
        ),
        (
            user(&|b| b["emergency_contacts"][0]["mobile"] = json!("912345678")),
            "emergency_contacts[0].mobile",
        ),
        (
            user(&|b| b["emergency_contacts"][0]["email"] = json!("rui")),
            "emergency_contacts[0].email",
        ),
    ];
    let comm = vec![
        (json!({"dispatch": "sms_only"}), "dispatch"),
        (json!({"incident_contacts": 1}), "incident_contacts"),
        (json!({"messages": null, "distress": "on"}), "distress"),
        (
            json!({"dispatch_virtual_users": 1}),
            "dispatch_virtual_users",
        ),
        (json!({"manual_sms": "false"}), "manual_sms"),
        (json!({"messages": "everything"}), "messages"),
    ];
    let device = vec![
        (json!({"platform": "windows", "token": "t"}), "platform"),
        (json!({"platform": "fcm", "token": "has spaces"}), "token"),
    ];
    let mut out = Vec::new();
    out.extend(
        cases_sms
            .into_iter()
            .map(|(b, f)| ("PUT", "/v1/settings/sms/main", b, f)),
    );
    out.extend(
        cases_email
            .into_iter()
            .map(|(b, f)| ("PUT", "/v1/settings/email", b, f)),
    );
    out.extend(
        cases_user
            .into_iter()
            .map(|(b, f)| ("PUT", "/v1/users/u-17", b, f)),
    );
    out.extend(
        comm.into_iter()
            .map(|(b, f)| ("PUT", "/v1/settings/communication", b, f)),
    );
    out.extend(
        device
            .into_iter()
            .map(|(b, f)| ("POST", "/v1/users/u-17/devices", b, f)),
    );
    out
}

#[tokio::test]
async fn every_field_is_validated_and_named() {
    let app = spawn_app(None).await;
    let admin = token("acme", &["admin"], "u-admin");
    assert_eq!(
        app.json("PUT", "/v1/users/u-17", &admin, user_body())
            .await
            .0,
        200
    );
    for (method, path, body, field) in validation_cases() {
        let (s, resp) = app.json(method, path, &admin, body.clone()).await;
        assert_eq!(s, 400, "{method} {path} {body}: {resp}");
        assert_eq!(resp["error"]["code"], "validation_failed");
        assert!(
            resp["error"]["fields"][field].is_string(),
            "{field} not named for {body}: {resp}"
        );
    }
    // A receipt's body is optional, but `null` is not an object.
    let (s, resp) = app
        .send(
            "POST",
            "/v1/notifications/n-1/receipt",
            Some(&admin),
            Some("null"),
        )
        .await;
    assert_eq!(
        (s.as_u16(), resp["error"]["fields"]["body"].is_string()),
        (400, true),
        "{resp}"
    );
    // Several bad fields are all named at once.
    let (_, resp) = app
        .json(
            "PUT",
            "/v1/users/u-2",
            &admin,
            json!({"name": "", "license": "x", "contacts": [{"kind": "mobile", "value": "1"}]}),
        )
        .await;
    let fields = resp["error"]["fields"].as_object().unwrap();
    assert!(fields.len() >= 3, "{resp}");
    app.stop().await;
}

#[tokio::test]
async fn secrets_appear_in_no_response_file_or_log_line() {
    let app = spawn_app(None).await;
    let admin = token("acme", &["admin", "dispatcher"], "u-admin");
    let (pw, hv, smtp_pw) = ("pw-SECRET-17", "hv-SECRET-18", "smtp-SECRET-19");
    let mut sms = sms_body();
    sms["password"] = json!(pw);
    sms["http_header"] = json!(format!("X-Api-Key: {hv}"));
    let mut email = email_body();
    email["smtp"]["password"] = json!(smtp_pw);
    let mut seen = Vec::new();
    seen.push(
        app.json("PUT", "/v1/settings/sms/main", &admin, sms.clone())
            .await
            .1,
    );
    seen.push(
        app.json("PUT", "/v1/settings/email", &admin, email.clone())
            .await
            .1,
    );
    // Rejected bodies carrying secrets must not echo them either.
    let mut bad = sms.clone();
    bad["url"] = json!("nope");
    bad["http_header"] = json!(format!("X-Api-Key: {hv}\r\nX: y"));
    seen.push(
        app.json("PUT", "/v1/settings/sms/north", &admin, bad)
            .await
            .1,
    );
    let mut bad_email = email.clone();
    bad_email["smtp"]["port"] = json!(-1);
    seen.push(
        app.json("PUT", "/v1/settings/email", &admin, bad_email)
            .await
            .1,
    );
    seen.push(
        app.send(
            "PUT",
            "/v1/settings/sms/main",
            Some(&admin),
            Some(&format!("{{\"password\": \"{pw}\"")),
        )
        .await
        .1,
    );
    for path in [
        "/v1/settings",
        "/v1/settings/sms",
        "/v1/settings/sms/main",
        "/v1/settings/email",
    ] {
        seen.push(app.get(path, &admin).await.1);
    }
    let responses = serde_json::to_string(&seen).unwrap();
    assert!(responses.contains("X-Api-Key: ****") && responses.contains("password_set"));
    let dir = app.stop().await;
    // The database: settings apart from secrets, and the file (with its WAL) readable by
    // its owner only.
    let db_path = dir.join(flare_local::DATABASE);
    let db = rusqlite::Connection::open(&db_path).unwrap();
    let all = |sql: &str| -> String {
        let mut stmt = db.prepare(sql).unwrap();
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows.join("\n")
    };
    let settings_file = all("SELECT body FROM settings UNION ALL SELECT body FROM users");
    assert!(
        settings_file.contains("X-Api-Key"),
        "settings are in the database"
    );
    #[cfg(unix)]
    for file in [db_path.clone(), db_path.with_extension("db-wal")] {
        if !file.exists() {
            continue; // the WAL is gone once the last connection closed
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", file.display());
    }
    let logs = logs();
    assert!(logs.contains("sms settings saved"), "logging is on: {logs}");
    for secret in [pw, hv, smtp_pw] {
        assert!(!responses.contains(secret), "{secret} in a response");
        assert!(
            !settings_file.contains(secret),
            "{secret} in the settings table"
        );
        assert!(!logs.contains(secret), "{secret} in a log line");
    }
    let secrets_table = all("SELECT value FROM secrets");
    assert!(secrets_table.contains(pw), "secrets are kept, apart");
}

#[tokio::test]
async fn another_organization_sees_404_and_empty_lists() {
    let app = spawn_app(None).await;
    let acme = token("acme", &["admin", "dispatcher"], "u-admin");
    let other = token("globex", &["admin", "dispatcher"], "u-admin");
    app.json("PUT", "/v1/users/u-17", &acme, user_body()).await;
    app.json("PUT", "/v1/settings/sms/main", &acme, sms_body())
        .await;
    app.json("PUT", "/v1/settings/email", &acme, email_body())
        .await;
    assert_eq!(app.get("/v1/users/u-17", &other).await.0, 404);
    assert_eq!(app.get("/v1/settings/sms/main", &other).await.0, 404);
    assert_eq!(app.get("/v1/settings/email", &other).await.0, 404);
    assert_eq!(
        app.send("DELETE", "/v1/users/u-17", Some(&other), None)
            .await
            .0,
        404
    );
    assert_eq!(
        app.json(
            "POST",
            "/v1/users/u-17/devices",
            &other,
            json!({"platform": "fcm", "token": "t"})
        )
        .await
        .0,
        404
    );
    assert_eq!(app.get("/v1/users", &other).await.1, json!([]));
    let (_, all) = app.get("/v1/settings", &other).await;
    assert_eq!(
        (all["sms"].clone(), all["email"].clone()),
        (json!([]), Value::Null)
    );
    assert_eq!(
        app.get("/v1/users/u-17", &acme).await.0,
        200,
        "still there for its own org"
    );
    app.stop().await;
}

#[tokio::test]
async fn responders_may_not_write_and_may_read_only_themselves() {
    let app = spawn_app(None).await;
    let admin = token("acme", &["admin"], "u-admin");
    let responder = token("acme", &["responder"], "u-17");
    app.json("PUT", "/v1/users/u-17", &admin, user_body()).await;
    app.json("PUT", "/v1/users/u-18", &admin, user_body()).await;
    let writes: [(&str, &str, Value); 8] = [
        ("PUT", "/v1/settings/sms/main", sms_body()),
        ("DELETE", "/v1/settings/sms/main", Value::Null),
        ("PUT", "/v1/settings/email", email_body()),
        ("DELETE", "/v1/settings/email", Value::Null),
        (
            "PUT",
            "/v1/settings/communication",
            json!({"distress": true}),
        ),
        ("PUT", "/v1/users/u-17", user_body()),
        ("DELETE", "/v1/users/u-17", Value::Null),
        (
            "POST",
            "/v1/users/u-18/devices",
            json!({"platform": "fcm", "token": "t"}),
        ),
    ];
    for (m, p, b) in writes {
        let (s, body) = app.json(m, p, &responder, b).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{m} {p}"
        );
        // A 403 names the role the route needs.
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("needs the admin role"),
            "{m} {p}: {message}"
        );
    }
    for p in [
        "/v1/settings",
        "/v1/settings/sms",
        "/v1/settings/communication",
        "/v1/users",
        "/v1/users/u-18",
    ] {
        assert_eq!(app.get(p, &responder).await.0, 403, "{p}");
    }
    assert_eq!(
        app.get("/v1/users/u-17", &responder).await.0,
        200,
        "a user reads themself"
    );
    let dispatcher = token("acme", &["dispatcher"], "u-d");
    assert_eq!(app.get("/v1/settings", &dispatcher).await.0, 200);
    assert_eq!(
        app.json("PUT", "/v1/settings/communication", &dispatcher, json!({}))
            .await
            .0,
        403
    );
    app.stop().await;
}

#[tokio::test]
async fn missing_or_bad_tokens_answer_401() {
    let app = spawn_app(None).await;
    let wrong_secret = {
        let roles = vec!["admin".to_string()];
        flare_local::token(
            "another-secret",
            "acme",
            &roles,
            "u",
            chrono::Duration::hours(1),
        )
        .unwrap()
    };
    let expired = {
        let roles = vec!["admin".to_string()];
        flare_local::token(SECRET, "acme", &roles, "u", chrono::Duration::hours(-2)).unwrap()
    };
    // Signed right, but not valid now: nbf two minutes ahead, or expired 45 s ago (past
    // the 30 s leeway; the library's default of 60 s would have let it through).
    let signed = |claims: serde_json::Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let now = chrono::Utc::now().timestamp();
    let claims = |nbf: i64, exp: i64| json!({"sub": "u", "org_id": "acme", "roles": ["admin"], "iat": now, "nbf": nbf, "exp": exp});
    let not_yet = signed(claims(now + 120, now + 3600));
    let just_expired = signed(claims(now - 3600, now - 45));
    let fine = signed(claims(now - 10, now + 3600));
    assert_eq!(
        app.send("GET", "/v1/settings", Some(&fine), None).await.0,
        200
    );
    // alg "none" with the right claims must not pass.
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1Iiwib3JnX2lkIjoiYWNtZSIsInJvbGVzIjpbImFkbWluIl0sImV4cCI6NDEwMjQ0NDgwMH0.";
    let no_org = signed(json!({"sub": "u", "roles": ["admin"], "exp": now + 3600}));
    // Each 401 says which check failed.
    for (t, says) in [
        (None, "no token"),
        (Some("garbage"), "not a JWT"),
        (Some(wrong_secret.as_str()), "signature does not verify"),
        (Some(expired.as_str()), "expired"),
        (Some(none), "not a JWT"),
        (Some(not_yet.as_str()), "not valid yet"),
        (Some(just_expired.as_str()), "expired"),
        (Some(no_org.as_str()), "no `org_id` claim"),
    ] {
        let (s, body) = app.send("GET", "/v1/settings", t, None).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized")),
            "{t:?}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.to_lowercase().contains(&says.to_lowercase()),
            "{t:?}: {message}"
        );
        if let Some(t) = t {
            assert!(!message.contains(t), "the message never quotes the token");
        }
    }
    let (_, body) = app
        .send("GET", "/v1/settings", Some(&wrong_secret), None)
        .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("FLARE_LOCAL_JWT_SECRET"),
        "{body}"
    );
    let r = app
        .client
        .get(format!("{}/v1/settings", app.base))
        .header("authorization", "Basic dTpw")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is not a bearer token"),
        "{body}"
    );
    // Two Authorization headers, even both valid: which one did a proxy check?
    let r = app
        .client
        .get(format!("{}/v1/settings", app.base))
        .header("authorization", format!("Bearer {fine}"))
        .header("authorization", format!("Bearer {fine}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ore than one Authorization header"),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn malformed_json_is_400_and_an_oversized_body_413() {
    let app = spawn_app(None).await;
    let admin = token("acme", &["admin"], "u-admin");
    let (s, body) = app
        .send(
            "PUT",
            "/v1/users/u-1",
            Some(&admin),
            Some("{\"name\": \"Ana\","),
        )
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );
    let big = json!({"name": "x".repeat(65 * 1024), "license": "basic_responder"}).to_string();
    let (s, body) = app
        .send("PUT", "/v1/users/u-1", Some(&admin), Some(&big))
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    let contact = json!({"name": "Rui Silva", "mobile": "+351912345678"});
    let just_under = json!({"name": "Ana", "license": "basic_responder",
        "emergency_contacts": vec![contact; 1380]})
    .to_string();
    assert!((60 * 1024..64 * 1024).contains(&just_under.len()));
    assert_eq!(
        app.send("PUT", "/v1/users/u-1", Some(&admin), Some(&just_under))
            .await
            .0,
        200
    );
    // A field the route does not know is named, not ignored (a typo would otherwise
    // leave a setting silently unset).
    let typo = json!({"name": "Ana", "license": "basic_responder", "contcts": [],
        "emergency_contacts": [{"name": "Rui", "mobile": "+351912345678", "mobil": "x"}]})
    .to_string();
    let (s, body) = app
        .send("PUT", "/v1/users/u-1", Some(&admin), Some(&typo))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"]["fields"],
        json!({"contcts": "unknown field", "emergency_contacts[0].mobil": "unknown field"})
    );
    let (s, body) = app
        .send(
            "PUT",
            "/v1/settings/sms/main",
            Some(&admin),
            Some(r#"{"provider": "sns", "sender_numbr": "ACME"}"#),
        )
        .await;
    assert_eq!(
        (s, &body["error"]["fields"]),
        (
            StatusCode::BAD_REQUEST,
            &json!({"sender_numbr": "unknown field"})
        )
    );
    app.stop().await;
}

#[tokio::test]
async fn concurrent_device_registrations_and_a_user_put_lose_nothing() {
    let app = spawn_app(None).await;
    let admin = token("acme", &["admin"], "u-admin");
    let me = token("acme", &["responder"], "u-17");
    assert_eq!(
        app.json("PUT", "/v1/users/u-17", &admin, user_body())
            .await
            .0,
        200
    );
    const N: usize = 60;
    let registrations = futures::future::join_all((0..N).map(|i| {
        let body = json!({"platform": "fcm", "token": format!("token-{i}")});
        app.json("POST", "/v1/users/u-17/devices", &me, body)
    }));
    let put = app.json("PUT", "/v1/users/u-17", &admin, user_body());
    let (answers, (put_status, _)) = tokio::join!(registrations, put);
    assert_eq!(put_status, 200);
    assert!(answers.iter().all(|(s, _)| *s == StatusCode::CREATED));
    let (_, user) = app.get("/v1/users/u-17", &admin).await;
    assert_eq!(
        user["devices"].as_array().unwrap().len(),
        N,
        "every registration kept"
    );
    app.stop().await;
}

#[tokio::test]
async fn settings_and_users_survive_a_restart() {
    let app = spawn_app(None).await;
    let admin = token("acme", &["admin", "dispatcher"], "u-admin");
    app.json("PUT", "/v1/settings/sms/main", &admin, sms_body())
        .await;
    app.json(
        "PUT",
        "/v1/settings/communication",
        &admin,
        json!({"distress": true}),
    )
    .await;
    app.json("PUT", "/v1/users/u-17", &admin, user_body()).await;
    let dir = app.stop().await;

    let app = spawn_app(Some(&dir)).await;
    let (s, sms) = app.get("/v1/settings/sms/main", &admin).await;
    assert_eq!(
        (s, sms["password_set"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    assert_eq!(
        app.get("/v1/settings/communication", &admin).await.1["distress"],
        true
    );
    assert_eq!(
        app.get("/v1/users/u-17", &admin).await.1["name"],
        "Ana Silva"
    );
    // The password survived too: a PUT without it keeps it.
    let mut keep = sms_body();
    keep.as_object_mut().unwrap().remove("password");
    assert_eq!(
        app.json("PUT", "/v1/settings/sms/main", &admin, keep)
            .await
            .1["password_set"],
        true
    );
    let dir = app.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn the_binary_serves_with_a_token_it_printed() {
    let dir = std::env::temp_dir().join(uuid());
    let served = serve_binary(&dir, "u-1").await;
    let status = flare_tests::http()
        .get(format!("{}/v1/settings", served.base))
        .bearer_auth(&served.token)
        .send()
        .await
        .map(|r| r.status())
        .ok();
    drop(served);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status, Some(StatusCode::OK));
}

/// Contract v1.1: user, device and control center ids are letters, digits, `-`, `_` and
/// `.`. A user saved before that (an email address as id) can still be read and deleted.
#[tokio::test]
async fn path_ids_are_letters_digits_and_dashes_but_older_ones_still_read() {
    let app = spawn_app(None).await;
    let admin = token("acme", &["admin"], "u-admin");
    for id in ["ana@example.org", "u:17"] {
        let (s, b) = app
            .json("PUT", &format!("/v1/users/{id}"), &admin, user_body())
            .await;
        assert_eq!(s, 400, "{b}");
        assert!(b["error"]["fields"]["user_id"].is_string(), "{b}");
    }
    let (s, b) = app
        .json(
            "PUT",
            &format!("/v1/settings/sms/{}", "n".repeat(128)),
            &admin,
            sms_body(),
        )
        .await;
    assert_eq!(s, 200, "a 128-character control center: {b}");

    let org = flare_shared::domain::OrgId::parse("acme").unwrap();
    let mut old = flare_tests::fanout::responder(1, "endpoint/1".into());
    old.user_id = flare_shared::domain::UserId::parse_existing("ana@example.org").unwrap();
    app.app
        .services
        .directory
        .put_user(&org, &old)
        .await
        .unwrap();
    let (s, b) = app.get("/v1/users/ana@example.org", &admin).await;
    assert_eq!(
        (s.as_u16(), &b["user_id"]),
        (200, &json!("ana@example.org")),
        "{b}"
    );
    // An event (another system's ids) still reaches them.
    let mut ev: Value = serde_json::from_str(
        &std::fs::read_to_string(
            flare_tests::workspace_root().join("events/incidents/incident-dispatched.json"),
        )
        .unwrap(),
    )
    .unwrap();
    ev["id"] = json!(flare_tests::unique("old-id"));
    ev["detail"]["recipient_ids"] = json!(["ana@example.org"]);
    let (s, b) = app
        .send("POST", "/local/events", None, Some(&ev.to_string()))
        .await;
    assert_eq!(s, 202, "{b}");
    let (_, n) = app
        .get(
            &format!("/v1/notifications/{}", ev["id"].as_str().unwrap()),
            &token("acme", &["dispatcher"], "u-d"),
        )
        .await;
    assert_eq!(n["recipients"][0]["user_id"], "ana@example.org", "{n}");
    let (s, _) = app
        .send("DELETE", "/v1/users/ana@example.org", Some(&admin), None)
        .await;
    assert_eq!(s, 204);
}

/// What hyper refuses before any route runs (a control byte in the path, a URI over
/// 64 KiB) still answers with the contract's error body (v1.1).
#[tokio::test]
async fn transport_level_errors_have_the_contract_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app(None).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let long = format!("/v1/users/{}", "a".repeat(70_000));
    for (path, status, code) in [
        (b"/v1/us\x01ers".to_vec(), "400", "bad_request"),
        (b"/v1/users/a b\"c".to_vec(), "400", "bad_request"),
        (long.into_bytes(), "414", "uri_too_long"),
    ] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut req = b"GET ".to_vec();
        req.extend(&path);
        req.extend(b" HTTP/1.1\r\nHost: flare\r\n\r\n");
        s.write_all(&req).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let out = String::from_utf8(out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json")
        );
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].is_string());
    }
}

/// A 404 names what was not found.
#[tokio::test]
async fn a_404_names_what_was_not_found() {
    let app = spawn_app(None).await;
    let admin = token("acme", &["admin"], "u-admin");
    let (s, _) = app
        .json("PUT", "/v1/settings/sms/main", &admin, sms_body())
        .await;
    assert_eq!(s, 200);
    for (path, says) in [
        (
            "/v1/settings/sms/north",
            "No SMS settings for control center \"north\"; it sends with \"main\"'s",
        ),
        ("/v1/users/u-404", "No user \"u-404\""),
        ("/v1/notifications/n-404", "No notification \"n-404\""),
        (
            "/v1/settings/email",
            "No email settings: email goes from the default sender",
        ),
        (
            "/v1/nothing",
            "No such route (GET /v1/openapi.json lists them)",
        ),
    ] {
        let (s, body) = app.get(path, &admin).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{path}"
        );
        assert_eq!(body["error"]["message"], says, "{path}");
    }
    let (s, body) = app
        .send("DELETE", "/v1/users/u-404/devices/d-1", Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["message"], "No user \"u-404\"");
    app.stop().await;
}

/// `/local/provider-events` takes no token, so what it inflates is bounded: a gzip bomb
/// (16 MB of spaces in 16 KB) and a payload of more lines than CloudWatch Logs batches
/// are 413, before anything is read into memory past 1 MiB.
#[tokio::test]
async fn provider_events_refuse_what_inflates_beyond_what_aws_sends() {
    let app = spawn_app(None).await;
    let bomb = flare_tests::awslogs_payload(&vec![b' '; 16 * 1024 * 1024]).to_string();
    assert!(
        bomb.len() < 64 * 1024,
        "within the body limit: {}",
        bomb.len()
    );
    let (s, b) = app
        .send("POST", "/local/provider-events", None, Some(&bomb))
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")),
        "{b}"
    );
    let events: Vec<Value> = (0..10_001)
        .map(|i| json!({"id": i.to_string(), "timestamp": 0, "message": "x"}))
        .collect();
    let many = json!({"messageType": "DATA_MESSAGE", "owner": "1", "logGroup": "g",
        "logStream": "s", "subscriptionFilters": [], "logEvents": events});
    let many = flare_tests::awslogs_payload(many.to_string().as_bytes()).to_string();
    let (s, b) = app
        .send("POST", "/local/provider-events", None, Some(&many))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    // Within the bounds, junk lines are skipped and counted, not an error.
    let events: Vec<Value> = (0..100)
        .map(|i| json!({"id": i.to_string(), "timestamp": 0, "message": "junk"}))
        .collect();
    let junk = json!({"messageType": "DATA_MESSAGE", "owner": "1", "logGroup": "g",
        "logStream": "s", "subscriptionFilters": [], "logEvents": events});
    let junk = flare_tests::awslogs_payload(junk.to_string().as_bytes()).to_string();
    // Counted by the warning's own text: the other tests in this binary log meanwhile
    // (at TRACE), so a count of every line only bounds it loosely under load.
    let warnings = || {
        logs()
            .lines()
            .filter(|l| l.contains("unreadable SNS SMS status lines"))
            .count()
    };
    let before = warnings();
    let (s, b) = app
        .send("POST", "/local/provider-events", None, Some(&junk))
        .await;
    assert_eq!(
        (s, b["ignored"].as_u64()),
        (StatusCode::OK, Some(100)),
        "{b}"
    );
    // One warning for the request, not one a line.
    let written = warnings() - before;
    assert_eq!(written, 1, "{written} warnings for 100 junk lines");
    app.stop().await;
}

/// A stored password or header value goes only to the endpoint it was saved for: moving
/// the gateway (scheme, host or port) or its username, or the SMTP server, its port, TLS
/// or username, without sending the secret again is a 400 naming it; sent again, it saves.
#[tokio::test]
async fn a_stored_secret_is_not_sent_to_a_new_endpoint_without_being_entered_again() {
    let app = spawn_app(None).await;
    let admin = token("acme", &["admin", "dispatcher"], "u-admin");
    let gateway = json!({"provider": "http", "url": "https://sms.example.com/send", "format": "json",
        "username": "acct", "password": "s3cret-pw", "sender_number": "ACME",
        "http_header": "X-Api-Key: abc123"});
    let (s, b) = app
        .json("PUT", "/v1/settings/sms/main", &admin, gateway.clone())
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let kept = |changes: Value| {
        let mut body = gateway.clone();
        body.as_object_mut().unwrap().remove("password");
        body["http_header"] = json!("X-Api-Key: ****");
        for (k, v) in changes.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    // The same endpoint keeps both.
    let (s, b) = app
        .json(
            "PUT",
            "/v1/settings/sms/main",
            &admin,
            kept(json!({"format": "form"})),
        )
        .await;
    assert_eq!(
        (s, b["password_set"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{b}"
    );
    for moved in [
        json!({"url": "https://evil.example.net/send"}),
        json!({"url": "http://sms.example.com/send"}),
        json!({"url": "https://sms.example.com:8443/send"}),
        json!({"username": "other"}),
    ] {
        let (s, b) = app
            .json("PUT", "/v1/settings/sms/main", &admin, kept(moved.clone()))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{moved}: {b}");
        assert!(b["error"]["fields"]["password"].is_string(), "{moved}: {b}");
        assert!(
            b["error"]["fields"]["http_header"].is_string(),
            "{moved}: {b}"
        );
        assert!(!b.to_string().contains("s3cret-pw") && !b.to_string().contains("abc123"));
    }
    // Entered again, the move saves.
    let mut again = kept(json!({"url": "https://sms2.example.com/send"}));
    again["password"] = json!("n3w-secret");
    again["http_header"] = json!("X-Api-Key: def456");
    let (s, b) = app
        .json("PUT", "/v1/settings/sms/main", &admin, again)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // SMTP: the server, the port, TLS or the user.
    let smtp = json!({"provider": "smtp", "sender_email": "alerts@acme.example",
        "smtp": {"server_url": "smtp.acme.example", "port": 587, "username": "alerts",
                 "password": "smtp-pw-1", "use_tls": true}});
    let (s, b) = app
        .json("PUT", "/v1/settings/email", &admin, smtp.clone())
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    for (field, value) in [
        ("server_url", json!("smtp.evil.example")),
        ("port", json!(2525)),
        ("use_tls", json!(false)),
        ("username", json!("someone")),
    ] {
        let mut body = smtp.clone();
        body["smtp"].as_object_mut().unwrap().remove("password");
        body["smtp"][field] = value;
        let (s, b) = app.json("PUT", "/v1/settings/email", &admin, body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{field}: {b}");
        assert!(
            b["error"]["fields"]["smtp.password"].is_string(),
            "{field}: {b}"
        );
    }
    let mut same = smtp.clone();
    same["smtp"].as_object_mut().unwrap().remove("password");
    let (s, b) = app.json("PUT", "/v1/settings/email", &admin, same).await;
    assert_eq!(
        (s, b["smtp"]["password_set"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{b}"
    );
    app.stop().await;
}

/// Settings saved whole (issue 27): 20 saves racing deletes and saves that keep the
/// stored secrets, 50 times over. After each round the username, password and header
/// value stored belong to one save, `password_set` is true exactly when a password is
/// stored, and no secret is left over beside the ones the settings name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_saves_and_deletes_leave_one_saves_settings_and_secrets() {
    let app = spawn_app(None).await;
    let admin = token("acme", &["admin"], "u-admin");
    let db = rusqlite::Connection::open(app.dir.join(flare_local::DATABASE)).unwrap();
    let secrets_under = |prefix: &str| -> Vec<(String, String)> {
        let mut stmt = db
            .prepare("SELECT name, value FROM secrets WHERE name LIKE ?1 ORDER BY name")
            .unwrap();
        stmt.query_map([format!("{prefix}%")], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let sms = |i: usize, round: usize| {
        json!({"provider": "http", "url": "https://sms.example.com/send", "format": "json",
            "sender_number": "+15551234567", "username": format!("user{i}"), "password": format!("password{i}-{round}"),
            "http_header": format!("X-Api-Key: key{i}-{round}")})
    };
    let email = |i: usize, round: usize| {
        json!({"provider": "smtp", "sender_email": "alerts@acme.example",
            "smtp": {"server_url": "smtp.acme.example", "port": 587,
                     "username": format!("user{i}"), "password": format!("pass{i}-{round}"),
                     "use_tls": true}})
    };
    let (mut saved, mut deleted, mut kept) = (0, 0, 0);
    for round in 0..50 {
        let mut calls = Vec::new();
        for i in 0..20 {
            calls.push(("PUT", "/v1/settings/sms/main", Some(sms(i, round))));
        }
        // user0's settings to start from, so the keeps below (user0's) have something to
        // keep until another save lands.
        let (s, b) = app
            .json("PUT", "/v1/settings/sms/main", &admin, sms(0, round))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        // A keep on its own: the secrets copied to the new revision.
        let mut keep = sms(0, round);
        keep.as_object_mut().unwrap().remove("password");
        keep["http_header"] = json!("X-Api-Key: ****");
        let (s, b) = app.json("PUT", "/v1/settings/sms/main", &admin, keep).await;
        assert_eq!(
            (s, b["password_set"].as_bool()),
            (StatusCode::OK, Some(true)),
            "{b}"
        );
        kept += 1;
        for _ in 0..3 {
            // Keeps whatever is stored, if the stored username is still user0.
            let mut keep = sms(0, round);
            keep.as_object_mut().unwrap().remove("password");
            keep["http_header"] = json!("X-Api-Key: ****");
            keep["format"] = json!("form");
            calls.push(("PUT", "/v1/settings/sms/main", Some(keep)));
        }
        for _ in 0..5 {
            calls.push(("DELETE", "/v1/settings/sms/main", None));
        }
        for i in 0..8 {
            calls.push(("PUT", "/v1/settings/email", Some(email(i, round))));
        }
        for _ in 0..3 {
            calls.push(("DELETE", "/v1/settings/email", None));
        }
        // Every order: the calls start together, shuffled by round.
        let n = calls.len();
        calls.rotate_left(round % n);
        let bodies: Vec<Option<String>> = calls
            .iter()
            .map(|(_, _, b)| b.as_ref().map(Value::to_string))
            .collect();
        let answers = futures::future::join_all(
            calls
                .iter()
                .zip(&bodies)
                .map(|((m, p, _), b)| app.send(m, p, Some(&admin), b.as_deref())),
        )
        .await;
        for ((method, path, body), (s, b)) in calls.iter().zip(&answers) {
            let keeping = body
                .as_ref()
                .is_some_and(|b| b.get("password").is_none() && b.get("smtp").is_none());
            let fine = match (*method, s.as_u16()) {
                ("PUT", 200) => {
                    saved += 1;
                    kept += usize::from(keeping);
                    true
                }
                // A keep with nothing (or someone else's) to keep.
                ("PUT", 400) => keeping,
                ("DELETE", 204) => {
                    deleted += 1;
                    true
                }
                ("DELETE", 404) => *path == "/v1/settings/sms/main",
                _ => false,
            };
            assert!(
                fine,
                "round {round}: {method} {path} {body:?} answered {s}: {b}"
            );
        }
        // SMS: one save's username, password and header, and no other secret.
        let stored = app
            .app
            .services
            .settings
            .get_sms(
                &flare_shared::domain::OrgId::parse("acme").unwrap(),
                &flare_shared::domain::ControlCenterId::main(),
            )
            .await
            .unwrap();
        let left = secrets_under("flare/acme/sms/main/");
        match stored {
            None => assert!(left.is_empty(), "round {round}: {left:?}"),
            Some(s) => {
                let at = s.secrets_at.clone().expect("saved at a revision");
                let user = match &s.provider {
                    flare_shared::domain::SmsProvider::Http(g) => g.username.clone().unwrap(),
                    other => panic!("{other:?}"),
                };
                let i = user.trim_start_matches("user");
                assert!(s.password_set, "round {round}");
                assert_eq!(
                    left.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
                    [
                        format!("flare/acme/sms/main/header-value/{at}"),
                        format!("flare/acme/sms/main/password/{at}"),
                    ],
                    "round {round}: only the secrets the settings name"
                );
                let (header, password) = (&left[0].1, &left[1].1);
                let from_round = password.rsplit('-').next().unwrap();
                assert_eq!(
                    (password.clone(), header.clone()),
                    (
                        format!("password{i}-{from_round}"),
                        format!("key{i}-{from_round}")
                    ),
                    "round {round}: {user}'s password and header"
                );
            }
        }
        // Email: the same.
        let stored = app
            .app
            .services
            .settings
            .get_email(&flare_shared::domain::OrgId::parse("acme").unwrap())
            .await
            .unwrap();
        let left = secrets_under("flare/acme/smtp/");
        match stored {
            None => assert!(left.is_empty(), "round {round}: {left:?}"),
            Some(e) => {
                let flare_shared::domain::EmailProvider::Smtp { smtp } = &e.provider else {
                    panic!("{e:?}")
                };
                let at = smtp.secrets_at.clone().unwrap();
                assert!(smtp.password_set);
                assert_eq!(left.len(), 1, "round {round}: {left:?}");
                assert_eq!(left[0].0, format!("flare/acme/smtp/password/{at}"));
                let i = smtp.username.as_deref().unwrap().trim_start_matches("user");
                assert!(left[0].1.starts_with(&format!("pass{i}-")), "round {round}");
            }
        }
    }
    // The mix really raced: saves, deletes and keeps all landed.
    assert!(
        saved > 1000 && deleted > 50 && kept > 0,
        "{saved} {deleted} {kept}"
    );
    app.stop().await;
}

/// Raises this process's open-file limit to what the tests below need (up to the hard
/// limit), as a server facing a network would be configured.
fn enough_file_descriptors(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only the struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A connection that sent part of a request head and then nothing more.
async fn half_open(addr: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /v1/settings/sms/main HTTP/1.1\r\nHost: flare\r\nX-Slow: ")
        .await
        .unwrap();
    s
}

/// Whether the server closed `s` (EOF or reset) within `within`.
async fn closed_within(mut s: tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    matches!(
        tokio::time::timeout(within, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await,
        Ok(())
    )
}

/// A runner that can face a network (issue 27): 2,000 half-sent requests against a cap
/// of 500 connections. The oldest give way to new ones at the cap, a normal request is
/// answered meanwhile, and the server closes every one of them by the header-read
/// timeout (10 s, the default).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_sent_requests_are_closed_and_never_starve_a_real_one() {
    enough_file_descriptors(8192);
    let limits = flare_local::server::Limits {
        max_connections: 500,
        ..Default::default()
    };
    assert_eq!(limits.header_read, std::time::Duration::from_secs(10));
    let app = spawn_app_with(None, limits).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for _ in 0..2000 {
        slow.push(half_open(&addr).await);
    }
    // A real request, on a fresh connection, while they hang.
    let admin = token("acme", &["admin"], "u-admin");
    let fresh = flare_tests::http();
    let r = fresh
        .get(format!("{}/v1/settings", app.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "answered despite 2,000 half-sent requests"
    );
    // Every half-sent request is closed: the oldest gave way at the cap, the rest by the
    // header-read timeout. (The bound is twice the timeout: this machine is shared.)
    let closed = futures::future::join_all(
        slow.into_iter()
            .map(|s| closed_within(s, 2 * limits.header_read)),
    )
    .await;
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(open, 0, "{open} of 2,000 half-sent requests still open");
    // And the server still answers.
    let (s, _) = app.get("/v1/settings", &admin).await;
    assert_eq!(s, StatusCode::OK);
    app.stop().await;
}

/// A body that stops arriving is a 408 `request_timeout` once the body timeout runs out;
/// with every connection busy, a new one is a 503 saying so.
#[tokio::test]
async fn a_stalled_body_is_408_and_a_full_house_is_503() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limits = flare_local::server::Limits {
        body_read: std::time::Duration::from_secs(1),
        max_connections: 4,
        ..Default::default()
    };
    let app = spawn_app_with(None, limits).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let admin = token("acme", &["admin"], "u-admin");
    let mut busy = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "PUT /v1/settings/communication HTTP/1.1\r\nHost: flare\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"distress\""
        );
        s.write_all(head.as_bytes()).await.unwrap();
        busy.push(s);
    }
    // Let the server take the four heads: they are busy now, not waiting for one.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let r = flare_tests::http()
        .get(format!("{}/v1/settings", app.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "unavailable", "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 4"),
        "{b}"
    );
    for mut s in busy {
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        assert!(out.contains("\"request_timeout\""), "{out}");
    }
    // Freed: answered again.
    assert_eq!(app.get("/v1/settings", &admin).await.0, StatusCode::OK);
    app.stop().await;
}

/// The smaller findings of issue 27's probe, each answered as the contract says.
#[tokio::test]
async fn framework_answers_acks_ids_and_queries_are_the_contracts() {
    let app = spawn_app(None).await;
    let admin = token("acme", &["admin", "dispatcher"], "u-admin");
    let raw = |method: &'static str, path: &'static str| {
        let req = app
            .client
            .request(method.parse().unwrap(), format!("{}{path}", app.base));
        async move {
            let r = req.send().await.unwrap();
            let allow = r
                .headers()
                .get("allow")
                .map(|v| v.to_str().unwrap().to_string());
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            (
                status,
                body["error"]["code"].as_str().map(str::to_string),
                allow,
            )
        }
    };
    // A known path with another method: 405 with Allow, on /local and /console too.
    for (method, path, allowed) in [
        ("DELETE", "/local/events", "POST"),
        ("GET", "/local/provider-events", "POST"),
        ("POST", "/local/outbox", "GET"),
        ("PUT", "/console/", "GET"),
        ("DELETE", "/console/app.js", "GET"),
    ] {
        let (s, code, allow) = raw(method, path).await;
        assert_eq!(
            (s, code.as_deref()),
            (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")),
            "{method} {path}"
        );
        assert!(
            allow.unwrap_or_default().contains(allowed),
            "{method} {path}"
        );
    }
    // An unknown path: 404 not_found.
    let (s, b) = app.get("/v1/nothing", &admin).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    for path in ["/console/lib.rs", "/local/nothing", "/nothing"] {
        let (s, code, _) = raw("GET", path).await;
        assert_eq!(
            (s, code.as_deref()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{path}"
        );
    }
    // /ack: no body (or {}); junk is 400, more than 64 KiB is 413.
    let ack = |body: Option<String>| {
        let admin = admin.clone();
        let app = &app;
        async move {
            app.send(
                "POST",
                "/v1/notifications/n-missing/ack",
                Some(&admin),
                body.as_deref(),
            )
            .await
        }
    };
    assert_eq!(ack(None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(ack(Some("{}".into())).await.0, StatusCode::NOT_FOUND);
    let (s, b) = ack(Some("junk".into())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = ack(Some(r#"{"x": 1}"#.into())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["error"]["fields"]["body"].is_string(), "{b}");
    let (s, b) = ack(Some(format!("\"{}\"", "a".repeat(70 * 1024)))).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    // A 404 does not echo what was sent as an id.
    for path in [
        "/v1/notifications/%3Cscript%3Ex/receipt",
        "/v1/notifications/%3Cscript%3Ex/ack",
    ] {
        let (s, b) = app.send("POST", path, Some(&admin), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {b}");
        assert!(!b.to_string().contains("script"), "{path}: {b}");
    }
    let (s, b) = app
        .send("GET", "/v1/users/%3Cscript%3E", Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(!b.to_string().contains("script"), "{b}");
    // 422 names the organization as sent, not as a Rust value.
    let mut event: Value = serde_json::from_str(
        &std::fs::read_to_string(
            flare_tests::workspace_root().join("events/incidents/incident-dispatched.json"),
        )
        .unwrap(),
    )
    .unwrap();
    event["id"] = json!(uuid());
    event["detail"]["org_id"] = json!("nobody-knows");
    let (s, b) = app
        .send("POST", "/local/events", None, Some(&event.to_string()))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let message = b["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"nobody-knows\"") && !message.contains("OrgId"),
        "{message}"
    );
    // A query parameter given twice is named, not silently resolved.
    let (s, b) = app.get("/v1/notifications?limit=5&limit=50", &admin).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["error"]["fields"]["limit"].is_string(), "{b}");
    app.stop().await;
}

/// A gateway callback that cannot be verified is the same 401, with the same one
/// warning, whether the control center has a gateway (a bad signature), sends through
/// SNS, or has no settings: the answer tells a stranger nothing, and each path does the
/// same work (a secret read and a signature check).
#[tokio::test]
async fn unverifiable_gateway_callbacks_are_one_401_whatever_is_behind_them() {
    let app = spawn_app(None).await;
    let admin = token("acme", &["admin"], "u-admin");
    let (s, b) = app
        .json("PUT", "/v1/settings/sms/main", &admin, sms_body())
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = app
        .json(
            "PUT",
            "/v1/settings/sms/north",
            &admin,
            json!({"provider": "sns", "sender_number": "ACMEFIRE"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut answers = Vec::new();
    for path in [
        "/v1/receipts/sms/acme/main",
        "/v1/receipts/sms/acme/north",
        "/v1/receipts/sms/nobody/main",
    ] {
        let before = logs().matches("gateway callback not verified").count();
        let r = app
            .client
            .post(format!("{}{path}", app.base))
            .header("content-type", "application/json")
            .header("x-flare-signature", "sha256=00")
            .body(r#"{"id": "m-1", "status": "delivered"}"#)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let headers: Vec<String> = r
            .headers()
            .keys()
            .filter(|k| *k != "date")
            .map(|k| k.to_string())
            .collect();
        let body = r.text().await.unwrap();
        answers.push((status, headers, body));
        let after = logs().matches("gateway callback not verified").count();
        assert_eq!(after - before, 1, "{path}: one warning");
    }
    assert_eq!(answers[0].0, StatusCode::UNAUTHORIZED);
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "the same answer: {answers:?}"
    );
    app.stop().await;
}

/// `/local/events` takes what EventBridge takes (256 KB), not the API's 64 KiB: a
/// dispatch listing 7,000 recipients (about 90 KB) is routed to every one of them; a
/// larger event than EventBridge would take is 413, saying so.
#[tokio::test]
async fn local_events_take_what_eventbridge_takes() {
    let app = spawn_app(None).await;
    let admin = token("acme", &["admin"], "u-admin");
    let (s, b) = app
        .send(
            "PUT",
            "/v1/users/u-0-responder",
            Some(&admin),
            Some(r#"{"name": "Ana", "license": "basic_responder"}"#),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let mut ev: Value = serde_json::from_str(
        &std::fs::read_to_string(
            flare_tests::workspace_root().join("events/incidents/incident-dispatched.json"),
        )
        .unwrap(),
    )
    .unwrap();
    ev["detail"]["org_id"] = json!("acme");
    let ids: Vec<String> = (0..7_000).map(|i| format!("u-{i}-responder")).collect();
    ev["id"] = json!(flare_tests::unique("big"));
    ev["detail"]["recipient_ids"] = json!(ids);
    let body = ev.to_string();
    assert!(body.len() > 64 * 1024 && body.len() < flare_local::MAX_EVENT);
    let (s, b) = app.send("POST", "/local/events", None, Some(&body)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    // Every listed recipient is on the notification (read 500 at a time) once its
    // seven route pages are routed (the first before the 202, the others as tasks).
    let dispatcher = token("acme", &["dispatcher"], "u-d");
    let count = || async {
        let mut recipients = 0;
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/notifications/{}", ev["id"].as_str().unwrap());
            if let Some(c) = &cursor {
                path.push_str(&format!("?cursor={c}"));
            }
            let (s, n) = app.get(&path, &dispatcher).await;
            assert_eq!(s, 200, "{n}");
            recipients += n["recipients"].as_array().unwrap().len();
            match n["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return recipients,
            }
        }
    };
    let mut recipients = count().await;
    for _ in 0..200 {
        if recipients == 7_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        recipients = count().await;
    }
    assert_eq!(recipients, 7_000);

    let ids: Vec<String> = (0..20_000).map(|i| format!("u-{i}-responder")).collect();
    ev["id"] = json!(flare_tests::unique("too-big"));
    ev["detail"]["recipient_ids"] = json!(ids);
    let body = ev.to_string();
    assert!(body.len() > flare_local::MAX_EVENT);
    let (s, b) = app.send("POST", "/local/events", None, Some(&body)).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")),
        "{b}"
    );
    assert!(
        b["error"]["message"].as_str().unwrap().contains("256 KB"),
        "{b}"
    );
    app.stop().await;
}
