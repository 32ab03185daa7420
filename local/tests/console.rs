//! The admin console in a real browser: `console/console_test.py` drives Debian's
//! Chromium over WebDriver (Selenium, pinned in scripts/requirements-test.txt) against
//! the runner started here, with the real HTTP gateway and SMTP sinks. The Python side
//! finds every element by its label text, as a person would; this side sets the stage
//! and fails with what the browser saw.

mod common;

use common::{spawn_app, token, uuid};
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};

/// Debian's paths for them (`apt-get install chromium chromium-driver`).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

#[tokio::test(flavor = "multi_thread")]
async fn the_console_works_in_a_real_browser() {
    for path in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(path).exists(),
            "{path} is missing: the console's browser tests need Chromium and chromedriver.\n  Fix: scripts/setup-browser (or: apt-get install chromium chromium-driver)"
        );
    }
    let python = flare_tests::python();
    assert!(
        python.exists(),
        "{} is missing.\n  Fix: scripts/setup-test-servers",
        python.display()
    );
    let app = spawn_app(None).await;
    let admin = token("acme", &["admin"], "u-admin");
    let dispatcher = token("acme", &["dispatcher"], "u-disp");
    // The responder's own token: they answer the dispatch, and the console shows it.
    let responder = token("acme", &["responder"], "u-console");
    // A responder with a phone and an address but no device: push is skipped, SMS goes
    // through the gateway and email through the SMTP server.
    let tag = uuid();
    let (s, b) = app
        .json(
            "PUT",
            "/v1/users/u-console",
            &admin,
            json!({"name": "Console Tester", "license": "basic_responder", "virtual": false,
                   "contacts": [{"kind": "mobile", "value": "+14155550177", "primary": true},
                                {"kind": "email", "value": format!("u-console-{tag}@acme.example"), "primary": true}]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let gw = flare_tests::gateway();
    let gateway_path = format!("/{}", uuid());
    let smtp = flare_tests::smtp();
    let mut event: Value = serde_json::from_str(
        &std::fs::read_to_string(
            flare_tests::workspace_root().join("events/incidents/incident-dispatched.json"),
        )
        .unwrap(),
    )
    .unwrap();
    event["id"] = json!(uuid());
    event["detail"]["control_center_id"] = json!("main");
    event["detail"]["recipient_ids"] = json!(["u-console"]);
    let cfg = json!({
        "base": app.base,
        "tag": tag,
        "admin": admin,
        "dispatcher": dispatcher,
        "responder": responder,
        "chromium": CHROMIUM,
        "chromedriver": CHROMEDRIVER,
        "gateway_url": format!("{}{gateway_path}", gw.url),
        "gateway_path": gateway_path,
        "gateway_script": format!("{}/_script", gw.url),
        "smtp_port": smtp.port,
        "smtp_user": smtp.user,
        "smtp_password": smtp.password,
        "closed_port": flare_tests::free_port(),
        "event": event,
        // FLARE_CONSOLE_SCREENSHOTS=docs saves a screenshot of each tab there.
        "screenshots": std::env::var("FLARE_CONSOLE_SCREENSHOTS").ok(),
    });
    let script = flare_tests::workspace_root().join("local/tests/console/console_test.py");
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(cfg.to_string().as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "{stdout}{stderr}browser checks took {:?}",
        started.elapsed()
    );
    assert!(
        out.status.success(),
        "the browser checks failed:\n{stdout}\n{stderr}"
    );
    // What the page did, seen from the servers: one test SMS reached the gateway...
    let reqs = gw.requests_to(&gateway_path).await.unwrap();
    assert!(
        reqs.iter().any(|r| r["body"]
            .as_str()
            .is_some_and(|b| b.contains("+14155550100"))),
        "{reqs:?}"
    );
    // ... the sample message went with its curly apostrophe as a plain one (smart
    // encoding), so it stayed GSM-7 ...
    assert!(
        reqs.iter().any(|r| r["body"]
            .as_str()
            .is_some_and(|b| b.contains("L'\u{e9}quipe arrive"))),
        "{reqs:?}"
    );
    assert!(
        !reqs
            .iter()
            .any(|r| r["body"].as_str().is_some_and(|b| b.contains('\u{2019}'))),
        "{reqs:?}"
    );
    // ... and the dispatcher's refused save changed nothing; the page left the length
    // settings at their defaults.
    let (_, v) = app.get("/v1/settings/sms/main", &admin).await;
    assert_eq!(v["sender_number"], "ACMEFIRE", "{v}");
    assert_eq!(v["smart_encoding"], true, "{v}");
    assert_eq!(v["max_segments"], 3, "{v}");
    assert!(stdout.matches("ok - ").count() >= 14, "{stdout}");
    app.stop().await;
}
