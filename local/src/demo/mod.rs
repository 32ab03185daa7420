//! `flare-local demo`: one organization seeded with a mix of settings and people, one
//! of each incident event and a manual SMS, and per notification a table of recipient,
//! channel, status and reason, so every routing rule shows on one screen.

use crate::{LocalApp, LocalConfig};
use anyhow::Context as _;
use flare_shared::app::api::{self, ApiRequest};
use flare_shared::app::auth::{Claims, Role};
use flare_shared::domain::{Channel, FailReason, NotificationId, OrgId};
use flare_shared::ports::SendError;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::time::Duration;

mod report;
use report::report;

const ORG: &str = "demo-fire-rescue";

/// The demo's app fallback window (the default is 60 s).
const FALLBACK_WINDOW_SECONDS: u32 = 2;
/// The demo's escalation interval: past the window, so each story stays apart.
const ESCALATION_SECONDS: u32 = 3;

async fn call(app: &LocalApp, method: &str, path: &str, roles: &[Role], body: Value) -> Value {
    call_as(app, "demo-admin", method, path, roles, body).await
}

async fn call_as(
    app: &LocalApp,
    sub: &str,
    method: &str,
    path: &str,
    roles: &[Role],
    body: Value,
) -> Value {
    let req = ApiRequest {
        method: method.into(),
        path: path.into(),
        claims: Ok(Claims {
            sub: sub.into(),
            org_id: OrgId::parse(ORG).expect("valid org"),
            roles: roles.to_vec(),
        }),
        body: body.to_string().into_bytes(),
        query: None,
        idempotency_key: None,
        headers: Vec::new(),
        url: None,
        meta: Default::default(),
    };
    let r = api::handle(&app.services, req).await;
    assert!(r.status < 300, "{method} {path}: {} {:?}", r.status, r.body);
    r.body.unwrap_or(Value::Null)
}

fn event(id: &str, detail_type: &str, detail: Value) -> Value {
    json!({"version": "0", "id": id, "detail-type": detail_type, "source": "flare.demo",
           "time": "2026-11-26T21:00:00Z", "detail": detail})
}

/// One person in the demo's directory, and what their settings show.
struct Person {
    id: &'static str,
    name: &'static str,
    license: &'static str,
    is_virtual: bool,
    /// Has a phone registered for push.
    device: bool,
    /// Their mobile number is primary (SMS goes to it).
    mobile: bool,
    /// Their email address is primary.
    email: bool,
}

const fn person(id: &'static str, name: &'static str, license: &'static str) -> Person {
    Person {
        id,
        name,
        license,
        is_virtual: false,
        device: true,
        mobile: true,
        email: true,
    }
}

const PEOPLE: [Person; 8] = [
    person("ana", "Ana (responder, app)", "basic_responder"),
    Person {
        device: false,
        ..person("bo", "Bo (reporter, no app licence)", "passive_reporter")
    },
    Person {
        is_virtual: true,
        device: false,
        ..person("cy", "Cy (virtual unit)", "advanced_responder")
    },
    person("di", "Di (responder, phone off)", "basic_responder"),
    person("gus", "Gus (responder, phone silent)", "basic_responder"),
    person("hal", "Hal (responder, asleep)", "basic_responder"),
    Person {
        device: false,
        mobile: false,
        email: false,
        ..person("ed", "Ed (operator, nothing primary)", "dispatch_operator")
    },
    Person {
        device: false,
        email: false,
        ..person("fi", "Fi (responder, no device)", "mobile_supervisor")
    },
];

const ADMIN: [Role; 2] = [Role::Admin, Role::Dispatcher];

/// Bo's mobile ([`seed_people`]: `+1415555` and 100 plus Bo's place in [`PEOPLE`]).
const BO_MOBILE: &str = "+14155550101";

/// Runs the demo in a fresh temporary data directory; answers the printed report.
pub async fn run() -> anyhow::Result<String> {
    let dir = std::env::temp_dir().join(format!("flare-demo-{}", uuid_like()));
    let mut cfg = LocalConfig::from_env(dir.clone())?;
    cfg.retry_base = Duration::from_millis(20);
    // The address `flare-local serve` listens on by default: the links the demo prints.
    cfg.public_url
        .get_or_insert_with(|| "http://127.0.0.1:8080".into());
    let app = LocalApp::open(&cfg).await?;

    seed_settings(&app).await;
    seed_people(&app).await;
    let mut routed = route_incidents(&app).await?;
    routed.push(escalation(&app).await?);
    routed.push(failover_and_receipts(&app).await?);
    answers(&app, &routed).await?;
    routed.push(manual_sms(&app).await?);
    let out = report(&app, routed).await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(out)
}

/// Main's SMS through SNS, and the communication settings every story starts from.
async fn seed_settings(app: &LocalApp) {
    call(
        app,
        "PUT",
        "/v1/settings/sms/main",
        &ADMIN,
        json!({"provider": "sns", "sender_number": "FLAREDEMO"}),
    )
    .await;
    call(app, "PUT", "/v1/settings/communication", &ADMIN, json!({
        "dispatch": "app_then_sms_email", "incident_contacts": "app_sms_email", "messages": "app_only",
        "distress": true, "dispatch_virtual_users": true, "manual_sms": true,
        // A short window, so the demo shows a silent phone's fallback without a wait.
        "app_fallback_seconds": FALLBACK_WINDOW_SECONDS})).await;
}

/// [`PEOPLE`] with their contacts and phones; Di's phone refuses its pushes.
async fn seed_people(app: &LocalApp) {
    for (i, p) in PEOPLE.iter().enumerate() {
        let id = p.id;
        let mut contacts = vec![
            json!({"kind": "mobile", "value": format!("+1415555{:04}", 100 + i), "primary": p.mobile}),
            json!({"kind": "email", "value": format!("{id}@demo.example"), "primary": p.email}),
        ];
        if id == "ed" {
            contacts.truncate(1);
        }
        call(app, "PUT", &format!("/v1/users/{id}"), &ADMIN, json!({"name": p.name, "license": p.license,
            "virtual": p.is_virtual, "control_center_id": "north", "contacts": contacts,
            "emergency_contacts": [{"name": "Rui (Ana's brother)", "mobile": "+351912345678", "email": "rui@family.example"}]})).await;
        if p.device {
            call(
                app,
                "POST",
                &format!("/v1/users/{id}/devices"),
                &ADMIN,
                json!({"platform": "fcm", "token": format!("{id}-phone")}),
            )
            .await;
        }
    }
    // Di's phone is off: the push provider refuses it, and SMS and email follow.
    for _ in 0..2 {
        app.outbox.fail_next(
            "local:fcm:di-phone",
            SendError::permanent(FailReason::EndpointDisabled),
        );
    }
}

fn incident(control_center: &str, msg: (&str, &str), recipients: Value) -> Value {
    json!({"org_id": ORG, "control_center_id": control_center, "incident_id": "inc-1",
        "message": {"title": msg.0, "body": msg.1}, "recipient_ids": recipients})
}

async fn route(app: &LocalApp, event: Value) -> anyhow::Result<NotificationId> {
    let ev = flare_shared::domain::IncidentEvent::from_value(event)?;
    app.notifier.route(&ev).await?;
    Ok(ev.notification_id)
}

/// One of each incident event; Ana's app then confirms the dispatch's push, so her SMS
/// and email, held for the window, are not sent.
async fn route_incidents(app: &LocalApp) -> anyhow::Result<Vec<(String, NotificationId)>> {
    let everyone = json!(["ana", "bo", "cy", "di", "gus", "ed", "fi"]);
    let mut contacts = incident(
        "north",
        ("Evacuation", "Leave by the east exit"),
        json!(["ana", "bo"]),
    );
    contacts["contacts"] = json!([{"name": "Building manager", "mobile": "+14155550177"}]);
    let events = [
        (
            "Incident Dispatched (dispatch: app_then_sms_email with a 2 s app fallback window, \
             virtual users on; Ana's app confirms receipt, Gus's phone stays silent)",
            event(
                "demo-dispatch",
                "Incident Dispatched",
                incident(
                    "north",
                    ("Structure fire", "12 Main St, smoke showing"),
                    everyone.clone(),
                ),
            ),
        ),
        (
            "Incident Message Posted (messages: app_only)",
            event(
                "demo-message",
                "Incident Message Posted",
                incident("north", ("Update", "Second alarm"), everyone),
            ),
        ),
        (
            "Incident Contacts Notified (incident contacts: app_sms_email)",
            event("demo-contacts", "Incident Contacts Notified", contacts),
        ),
        (
            "SOS Raised by Ana (distress on)",
            event(
                "demo-sos",
                "SOS Raised",
                json!({"org_id": ORG, "control_center_id": "north", "incident_id": "inc-2", "creator_id": "ana"}),
            ),
        ),
    ];
    let mut routed = Vec::new();
    for (title, ev) in events {
        routed.push((title.to_string(), route(app, ev).await?));
    }
    let dispatch = &routed[0].1;
    push_sent(app, dispatch, "ana").await?;
    call_as(
        app,
        "ana",
        "POST",
        &format!("/v1/notifications/{dispatch}/receipt"),
        &[Role::Responder],
        json!({}),
    )
    .await;
    Ok(routed)
}

/// Escalation, switched on for the next dispatch (a notification keeps the settings it
/// was routed with): Hal sleeps through the push and the fallback, is notified again on
/// every channel, and acknowledges; the later cycles never start.
async fn escalation(app: &LocalApp) -> anyhow::Result<(String, NotificationId)> {
    call(
        app,
        "PUT",
        "/v1/settings/communication",
        &ADMIN,
        json!({"dispatch_escalation": {"after_seconds": ESCALATION_SECONDS, "cycles": 3}}),
    )
    .await;
    let dispatch = incident(
        "north",
        ("Rescue", "Person trapped, 4 Elm St"),
        json!(["hal"]),
    );
    let escalated = route(
        app,
        event("demo-escalation", "Incident Dispatched", dispatch),
    )
    .await?;
    let started = std::time::Instant::now();
    cycle_sent(app, &escalated, "hal", 1).await?;
    call_as(
        app,
        "hal",
        "POST",
        &format!("/v1/notifications/{escalated}/ack"),
        &[Role::Responder],
        json!({}),
    )
    .await;
    // Past the second cycle's time: it did not start.
    let second =
        Duration::from_secs(u64::from(2 * ESCALATION_SECONDS)) + Duration::from_millis(300);
    tokio::time::sleep(second.saturating_sub(started.elapsed())).await;
    let title = format!(
        "Incident Dispatched to Hal (escalation every {ESCALATION_SECONDS} s, up to 3 cycles; \
         Hal acknowledges after cycle 1, so cycles 2 and 3 never start)"
    );
    Ok((title, escalated))
}

/// The South control center's own SMS gateway is down (nothing listens on the discard
/// port): its SMS fails over to SNS. Then the providers report back: SNS says Bo's SMS
/// reached the phone, SES that Bo's email bounced.
async fn failover_and_receipts(app: &LocalApp) -> anyhow::Result<(String, NotificationId)> {
    use flare_shared::domain::Channel;
    call(
        app,
        "PUT",
        "/v1/settings/sms/south",
        &ADMIN,
        json!({"provider": "http", "url": "http://127.0.0.1:9/send", "password": "demo-gateway-key",
               "sender_number": "FLARESOUTH", "failover": "sns"}),
    )
    .await;
    let dispatch = incident(
        "south",
        ("Gas leak", "3 Harbour Rd, evacuate"),
        json!(["bo"]),
    );
    let south = route(app, event("demo-failover", "Incident Dispatched", dispatch)).await?;
    let (_, logged) = settled(app, &south).await?;
    let message_id = |channel: Channel| {
        logged
            .records
            .iter()
            .find(|r| r.channel == channel)
            .and_then(|r| r.provider_message_id.clone())
            .unwrap_or_default()
    };
    let receipts = flare_shared::app::receipts::Receipts::new(app.services.log.clone());
    let sns_line = json!({"notification": {"messageId": message_id(Channel::Sms),
        "timestamp": "2026-11-26 21:00:04.100"}, "delivery": {"providerResponse":
        "Message has been accepted by phone carrier"}, "status": "SUCCESS"});
    receipts
        .sns_sms_lines([sns_line.to_string().as_str()])
        .await?;
    receipts
        .ses_event(&json!({"source": "aws.ses", "detail-type": "Email Bounced", "detail": {
            "eventType": "Bounce", "mail": {"messageId": message_id(Channel::Email)},
            "bounce": {"bounceType": "Permanent", "bouncedRecipients": [
                {"emailAddress": "bo@demo.example", "diagnosticCode": "smtp; 550 5.1.1 mailbox unavailable"}]}}}))
        .await?;
    let title = "Incident Dispatched from South (its own SMS gateway is down: the SMS fails over \
                 to SNS, which reports it delivered; SES reports Bo's email bounced)";
    Ok((title.into(), south))
}

/// v1.2: Ana answers the dispatch `responding` in the app; Fi, who has no device, opens
/// the response link in her dispatch SMS and answers `responding` there; Bo, who has no
/// app, replies `2` to the South dispatch's SMS through South's gateway (its inbound
/// webhook, signed with the gateway's password): `unavailable`, by SMS. (The
/// confirmation to Bo cannot go: South's gateway is down.)
async fn answers(app: &LocalApp, routed: &[(String, NotificationId)]) -> anyhow::Result<()> {
    use flare_shared::domain::GatewayFormat;
    use flare_shared::domain::receipt::{sign, signature_header};
    let dispatch = &routed[0].1;
    call_as(
        app,
        "ana",
        "POST",
        &format!("/v1/notifications/{dispatch}/response"),
        &[Role::Responder],
        json!({"response": "responding"}),
    )
    .await;
    by_link(app, dispatch, "fi").await?;
    let path = format!("/v1/inbound/sms/{ORG}/south");
    let url = format!("http://127.0.0.1:8080{path}");
    let body = json!({"from": BO_MOBILE, "to": "FLARESOUTH", "text": "2",
                      "message_id": "demo-reply-1"})
    .to_string();
    let signature = sign(
        GatewayFormat::Json,
        b"demo-gateway-key",
        &url,
        body.as_bytes(),
    );
    let req = ApiRequest {
        method: "POST".into(),
        path,
        claims: Err(flare_shared::app::auth::AuthFailure::NoToken),
        body: body.into_bytes(),
        query: None,
        idempotency_key: None,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            (signature_header(GatewayFormat::Json).into(), signature),
        ],
        url: Some(url),
        meta: Default::default(),
    };
    let r = api::handle(&app.services, req).await;
    anyhow::ensure!(r.status == 204, "Bo's SMS reply: {} {:?}", r.status, r.body);
    Ok(())
}

/// `who` opens the response link of their SMS of notification `id` (the page, which
/// changes nothing) and presses `Responding` (the form's POST).
async fn by_link(app: &LocalApp, id: &NotificationId, who: &str) -> anyhow::Result<()> {
    let place = PEOPLE
        .iter()
        .position(|p| p.id == who)
        .context("not a demo person")?;
    let mobile = format!("+1415555{:04}", 100 + place);
    let sms = app
        .outbox
        .entries()
        .await?
        .into_iter()
        .find(|e| &e.notification_id == id && e.channel == Channel::Sms && e.to == mobile)
        .with_context(|| format!("no SMS of {id} to {who}"))?;
    // `.../r/<code>`: the path, as the phone's browser asks for it.
    let at = sms
        .body
        .find("/r/")
        .context("no response link in the SMS")?;
    let path: String = sms.body[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '/')
        .collect();
    for (method, body) in [("GET", ""), ("POST", "response=responding")] {
        let req = ApiRequest {
            method: method.into(),
            path: path.clone(),
            claims: Err(flare_shared::app::auth::AuthFailure::NoToken),
            body: body.as_bytes().to_vec(),
            query: None,
            idempotency_key: None,
            headers: vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            url: None,
            meta: Default::default(),
        };
        let r = api::handle(&app.services, req).await;
        anyhow::ensure!(r.status == 200, "{who}'s link {method}: {}", r.status);
    }
    Ok(())
}

async fn manual_sms(app: &LocalApp) -> anyhow::Result<(String, NotificationId)> {
    let sms = call(
        app,
        "POST",
        "/v1/messages/sms",
        &[Role::Dispatcher],
        json!({"user_id": "bo", "text": "Call the station"}),
    )
    .await;
    let id = NotificationId::parse(sms["notification_id"].as_str().unwrap_or_default())?;
    Ok(("Manual SMS to Bo".into(), id))
}

/// Waits until `user`'s deliveries of escalation cycle `cycle` are all done.
async fn cycle_sent(
    app: &LocalApp,
    id: &NotificationId,
    user: &str,
    cycle: u32,
) -> anyhow::Result<()> {
    use flare_shared::domain::{DeliveryStatus, RecipientRef, UserId};
    let org = OrgId::parse(ORG)?;
    let who = RecipientRef::User(UserId::parse(user)?);
    for _ in 0..1000 {
        let records = app.services.log.recipient_records(&org, id, &who).await?;
        let of_cycle: Vec<_> = records.iter().filter(|r| r.cycle == cycle).collect();
        if !of_cycle.is_empty() && of_cycle.iter().all(|r| r.status != DeliveryStatus::Pending) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("{user}'s escalation cycle {cycle} of {id} was not sent")
}

/// Waits until `user`'s push of notification `id` has been sent.
async fn push_sent(app: &LocalApp, id: &NotificationId, user: &str) -> anyhow::Result<()> {
    use flare_shared::domain::{Channel, DeliveryStatus, RecipientRef, UserId};
    let org = OrgId::parse(ORG)?;
    let who = RecipientRef::User(UserId::parse(user)?);
    for _ in 0..500 {
        let records = app.services.log.recipient_records(&org, id, &who).await?;
        if records
            .iter()
            .any(|r| r.channel == Channel::Push && r.status == DeliveryStatus::Sent)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("{user}'s push of {id} was not sent")
}

async fn settled(
    app: &LocalApp,
    id: &NotificationId,
) -> anyhow::Result<(Value, flare_shared::ports::Logged)> {
    let org = OrgId::parse(ORG)?;
    for _ in 0..500 {
        if let Some(l) = app.services.log.get_notification(&org, id).await?
            && l.records
                .iter()
                .all(|r| r.status != flare_shared::domain::DeliveryStatus::Pending)
        {
            return Ok((flare_shared::app::notifications::view(&l), l));
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
