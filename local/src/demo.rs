//! `flare-local demo`: one organization seeded with a mix of settings and people, one
//! of each incident event and a manual SMS, and per notification a table of recipient,
//! channel, status and reason, so every routing rule shows on one screen.

use crate::{LocalApp, LocalConfig};
use flare_shared::app::api::{self, ApiRequest};
use flare_shared::app::auth::{Claims, Role};
use flare_shared::domain::{FailReason, NotificationId, OrgId};
use flare_shared::ports::SendError;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::time::Duration;

const ORG: &str = "demo-fire-rescue";

async fn call(app: &LocalApp, method: &str, path: &str, roles: &[Role], body: Value) -> Value {
    let req = ApiRequest {
        method: method.into(),
        path: path.into(),
        claims: Ok(Claims {
            sub: "demo-admin".into(),
            org_id: OrgId::parse(ORG).expect("valid org"),
            roles: roles.to_vec(),
        }),
        body: body.to_string().into_bytes(),
        query: None,
        idempotency_key: None,
    };
    let r = api::handle(&app.services, req).await;
    assert!(r.status < 300, "{method} {path}: {} {:?}", r.status, r.body);
    r.body.unwrap_or(Value::Null)
}

fn event(id: &str, detail_type: &str, detail: Value) -> Value {
    json!({"version": "0", "id": id, "detail-type": detail_type, "source": "flare.demo",
           "time": "2026-11-26T21:00:00Z", "detail": detail})
}

/// Runs the demo in a fresh temporary data directory; answers the printed report.
pub async fn run() -> anyhow::Result<String> {
    let dir = std::env::temp_dir().join(format!("flare-demo-{}", uuid_like()));
    let mut cfg = LocalConfig::from_env(dir.clone())?;
    cfg.retry_base = Duration::from_millis(20);
    let app = LocalApp::open(&cfg).await?;
    let admin = [Role::Admin, Role::Dispatcher];

    call(
        &app,
        "PUT",
        "/v1/settings/sms/main",
        &admin,
        json!({"provider": "sns", "sender_number": "FLAREDEMO"}),
    )
    .await;
    call(&app, "PUT", "/v1/settings/communication", &admin, json!({
        "dispatch": "app_then_sms_email", "incident_contacts": "app_sms_email", "messages": "app_only",
        "distress": true, "dispatch_virtual_users": true, "manual_sms": true})).await;
    let people = [
        (
            "ana",
            "Ana (responder, app)",
            "basic_responder",
            false,
            true,
            true,
            true,
        ),
        (
            "bo",
            "Bo (reporter, no app licence)",
            "passive_reporter",
            false,
            false,
            true,
            true,
        ),
        (
            "cy",
            "Cy (virtual unit)",
            "advanced_responder",
            true,
            false,
            true,
            true,
        ),
        (
            "di",
            "Di (responder, phone off)",
            "basic_responder",
            false,
            true,
            true,
            true,
        ),
        (
            "ed",
            "Ed (operator, nothing primary)",
            "dispatch_operator",
            false,
            false,
            false,
            false,
        ),
        (
            "fi",
            "Fi (responder, no device)",
            "mobile_supervisor",
            false,
            false,
            true,
            false,
        ),
    ];
    for (i, (id, name, license, is_virtual, device, mobile, email)) in people.iter().enumerate() {
        let mut contacts = vec![
            json!({"kind": "mobile", "value": format!("+1415555{:04}", 100 + i), "primary": *mobile}),
            json!({"kind": "email", "value": format!("{id}@demo.example"), "primary": *email}),
        ];
        if *id == "ed" {
            contacts.truncate(1);
        }
        call(&app, "PUT", &format!("/v1/users/{id}"), &admin, json!({"name": name, "license": license,
            "virtual": is_virtual, "control_center_id": "north", "contacts": contacts,
            "emergency_contacts": [{"name": "Rui (Ana's brother)", "mobile": "+351912345678", "email": "rui@family.example"}]})).await;
        if *device {
            call(
                &app,
                "POST",
                &format!("/v1/users/{id}/devices"),
                &admin,
                json!({"platform": "fcm", "token": format!("{id}-phone")}),
            )
            .await;
        }
    }
    // Di's phone is off: the push provider refuses it, and SMS and email follow.
    app.outbox.fail_next(
        "local:fcm:di-phone",
        SendError::permanent(FailReason::EndpointDisabled),
    );
    app.outbox.fail_next(
        "local:fcm:di-phone",
        SendError::permanent(FailReason::EndpointDisabled),
    );

    let everyone = json!(["ana", "bo", "cy", "di", "ed", "fi"]);
    let base = |msg: (&str, &str)| {
        json!({"org_id": ORG, "control_center_id": "north", "incident_id": "inc-1",
        "message": {"title": msg.0, "body": msg.1}})
    };
    let mut ids = Vec::new();
    let mut d = base(("Structure fire", "12 Main St, smoke showing"));
    d["recipient_ids"] = everyone.clone();
    ids.push((
        "Incident Dispatched (dispatch: app_then_sms_email, virtual users on)",
        event("demo-dispatch", "Incident Dispatched", d),
    ));
    let mut d = base(("Update", "Second alarm"));
    d["recipient_ids"] = everyone.clone();
    ids.push((
        "Incident Message Posted (messages: app_only)",
        event("demo-message", "Incident Message Posted", d),
    ));
    let mut d = base(("Evacuation", "Leave by the east exit"));
    d["recipient_ids"] = json!(["ana", "bo"]);
    d["contacts"] = json!([{"name": "Building manager", "mobile": "+14155550177"}]);
    ids.push((
        "Incident Contacts Notified (incident contacts: app_sms_email)",
        event("demo-contacts", "Incident Contacts Notified", d),
    ));
    ids.push(("SOS Raised by Ana (distress on)", event("demo-sos", "SOS Raised",
        json!({"org_id": ORG, "control_center_id": "north", "incident_id": "inc-2", "creator_id": "ana"}))));

    let mut routed = Vec::new();
    for (title, ev) in ids {
        let ev = flare_shared::domain::IncidentEvent::from_value(ev)?;
        app.notifier.route(&ev).await?;
        routed.push((title.to_string(), ev.notification_id));
    }
    let sms = call(
        &app,
        "POST",
        "/v1/messages/sms",
        &[Role::Dispatcher],
        json!({"user_id": "bo", "text": "Call the station"}),
    )
    .await;
    routed.push((
        "Manual SMS to Bo".into(),
        NotificationId::parse(sms["notification_id"].as_str().unwrap_or_default())?,
    ));

    let mut out = String::new();
    for (title, id) in routed {
        let n = settled(&app, &id).await?;
        writeln!(out, "\n== {title}")?;
        writeln!(
            out,
            "{:<34} {:<6} {:<8} {:<9} reason / provider",
            "recipient", "chan", "status", "fallback"
        )?;
        for r in n["recipients"].as_array().into_iter().flatten() {
            let who = match r["user_id"].as_str() {
                Some(u) => people
                    .iter()
                    .find(|p| p.0 == u)
                    .map_or(u.to_string(), |p| p.1.to_string()),
                None => format!(
                    "{} (not a user)",
                    r["contact"]["name"].as_str().unwrap_or("?")
                ),
            };
            for d in r["deliveries"].as_array().into_iter().flatten() {
                let why = d["reason"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("via {}", d["provider"].as_str().unwrap_or("-")));
                writeln!(
                    out,
                    "{:<34} {:<6} {:<8} {:<9} {}",
                    who,
                    d["channel"].as_str().unwrap_or(""),
                    d["status"].as_str().unwrap_or(""),
                    if d["fallback"] == true { "yes" } else { "" },
                    why
                )?;
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(out)
}

async fn settled(app: &LocalApp, id: &NotificationId) -> anyhow::Result<Value> {
    let org = OrgId::parse(ORG)?;
    for _ in 0..500 {
        if let Some(l) = app.services.log.get_notification(&org, id).await?
            && l.records
                .iter()
                .all(|r| r.status != flare_shared::domain::DeliveryStatus::Pending)
        {
            return Ok(flare_shared::app::notifications::view(&l));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("notification {id} did not settle")
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    )
}
