//! The whole pipeline on moto: incident events through the router, SQS, and the three
//! delivery functions, read back from moto's record of what SNS and SES sent.

use aws_lambda_events::event::sqs::SqsEvent;
use flare_aws as aws;
use flare_lambda::{DeliveryConfig, DeliveryFunction};
use flare_shared::app::Services;
use flare_shared::app::api::{self, ApiRequest};
use flare_shared::app::auth::{Claims, Role};
use flare_shared::app::notify::Notifier;
use flare_shared::domain::{Channel, EmailAddress, EndpointPolicy, Lane, OrgId};
use flare_tests::stack::AwsStack;
use flare_tests::{moto, unique, workspace_root};
use serde_json::{Value, json};
use std::collections::HashMap;

struct Pipeline {
    stack: AwsStack,
    services: Services,
    notifier: Notifier,
    functions: HashMap<Channel, DeliveryFunction>,
    org: String,
}

async fn pipeline() -> Pipeline {
    pipeline_on(moto()).await
}

/// The same on a moto server of the test's own (a timing test, away from the load the
/// other tests put on the shared one).
async fn pipeline_on(moto: &flare_tests::Moto) -> Pipeline {
    let stack = AwsStack::create(moto).await.unwrap();
    let sdk = &stack.sdk;
    let ses = aws::sesv2(sdk);
    for domain in ["flare.example", "acme.example"] {
        // Already verified by another test is fine.
        let _ = ses
            .create_email_identity()
            .email_identity(domain)
            .send()
            .await;
    }
    let api = flare_api::Config {
        settings_table: stack.tables.settings.clone(),
        audit_table: stack.audit_table.clone(),
        audit_retention_days: 400,
        directory_table: stack.tables.directory.clone(),
        log_table: stack.tables.log.clone(),
        queues: stack.queues.clone(),
        secret_prefix: stack.secret_prefix.clone(),
        platform_apps: stack.platform_apps.clone(),
        // As the functions run in tests: FLARE_ALLOW_PRIVATE_ENDPOINTS=true (the custom
        // providers' test servers are on loopback).
        policy: EndpointPolicy {
            allow_private: true,
        },
        default_sender: None,
        metrics_namespace: None,
    };
    let router = flare_router::Config {
        tables: stack.tables.clone(),
        queues: stack.queues.clone(),
        metrics_namespace: None,
    };
    let functions = delivery_functions(&stack);
    Pipeline {
        services: api.services(sdk).unwrap(),
        notifier: router.notifier(sdk),
        functions,
        org: unique("org"),
        stack,
    }
}

/// The three delivery functions on `stack`, as one warm instance of each: a function
/// built again is another instance (its own caches and pacer).
fn delivery_functions(stack: &AwsStack) -> HashMap<Channel, DeliveryFunction> {
    delivery_functions_waiting(stack, flare_lambda::MAX_PACE_WAIT)
}

/// The same, postponing a job whose provider's pace has no moment for it within
/// `max_pace_wait`.
fn delivery_functions_waiting(
    stack: &AwsStack,
    max_pace_wait: std::time::Duration,
) -> HashMap<Channel, DeliveryFunction> {
    let cfg = |channel| DeliveryConfig {
        channel,
        tables: stack.tables.clone(),
        queues: stack.queues.clone(),
        secret_prefix: stack.secret_prefix.clone(),
        max_receives: flare_tests::stack::MAX_RECEIVES,
        dead_letter_queues: Lane::ALL
            .iter()
            .map(|l| stack.dlq_arns[&(channel, *l)].clone())
            .collect(),
        metrics_namespace: None,
        // The contract's 5 failures in 5 minutes, open for 2 s so a test sees it close.
        circuit: flare_shared::domain::health::CircuitPolicy {
            open_for: std::time::Duration::from_secs(2),
            ..Default::default()
        },
        sns_per_second: None,
        max_pace_wait,
        public_url: Some(flare_tests::stack::PUBLIC_URL.into()),
    };
    let (p, s, e) = (cfg(Channel::Push), cfg(Channel::Sms), cfg(Channel::Email));
    let sdk = &stack.sdk;
    let sender = EmailAddress::parse("flare@flare.example").unwrap();
    let mut functions = HashMap::new();
    functions.insert(
        Channel::Push,
        p.function(sdk, flare_push::deliverer(&p, sdk)),
    );
    functions.insert(
        Channel::Sms,
        s.function(
            sdk,
            flare_sms::deliverer(
                &s,
                sdk,
                EndpointPolicy {
                    allow_private: true,
                },
            )
            .unwrap(),
        ),
    );
    functions.insert(
        Channel::Email,
        e.function(
            sdk,
            flare_email::deliverer(
                &e,
                sdk,
                sender,
                EndpointPolicy {
                    allow_private: true,
                },
            ),
        ),
    );
    functions
}

fn incident(name: &str) -> Value {
    let path = workspace_root().join(format!("events/incidents/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

impl Pipeline {
    async fn api(&self, method: &str, path: &str, roles: &[Role], body: Value) -> (u16, Value) {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (path, None),
        };
        let req = ApiRequest {
            method: method.into(),
            path: path.into(),
            query,
            claims: Ok(Claims {
                sub: "u-admin".into(),
                org_id: OrgId::parse(&self.org).unwrap(),
                roles: roles.to_vec(),
            }),
            body: if body.is_null() {
                vec![]
            } else {
                body.to_string().into_bytes()
            },
            idempotency_key: None,
            headers: Vec::new(),
            url: None,
            meta: Default::default(),
        };
        let r = api::handle(&self.services, req).await;
        (r.status, r.body.unwrap_or(Value::Null))
    }

    async fn admin(&self, method: &str, path: &str, body: Value) -> Value {
        let (s, b) = self
            .api(method, path, &[Role::Admin, Role::Dispatcher], body.clone())
            .await;
        assert!(s < 300, "{method} {path} {body}: {s} {b}");
        b
    }

    /// Email through the test SMTP sink (plain, no AUTH), for this organization; the sink.
    async fn email_through_the_smtp_sink(&self) -> &'static flare_tests::SmtpSink {
        let smtp = flare_tests::smtp();
        self.admin(
            "PUT",
            "/v1/settings/email",
            json!({"provider": "smtp", "sender_email": "alerts@acme.example",
                   "smtp": {"server_url": "127.0.0.1", "port": smtp.port, "use_tls": false}}),
        )
        .await;
        smtp
    }

    /// The sample event, for this test's organization and with a fresh id.
    fn event(&self, name: &str, text: &str) -> Value {
        let mut ev = incident(name);
        ev["id"] = json!(unique("evt"));
        ev["detail"]["org_id"] = json!(self.org);
        ev["detail"]["message"]["body"] = json!(text);
        ev
    }

    async fn route(&self, ev: &Value) -> flare_router::Outcome {
        let event =
            lambda_runtime::LambdaEvent::new(ev.clone(), lambda_runtime::Context::default());
        flare_router::handle(&self.notifier, event).await.unwrap()
    }

    /// What Lambda's event source mapping does: receive, invoke, delete what succeeded.
    async fn drain(&self) {
        flare_tests::queues::drain(&self.stack.sdk, &self.stack.queues, |channel, event| {
            let f = self.functions[&channel].clone();
            async move {
                let event: SqsEvent = serde_json::from_value(event).expect("an SQS event");
                f.handle(event)
                    .await
                    .batch_item_failures
                    .into_iter()
                    .map(|f| f.item_identifier)
                    .collect()
            }
        })
        .await
        .unwrap();
    }

    /// Under `comm`, u-17 (a device, `mobile` and an email) and a dispatch to them with a
    /// text of its own, routed and drained; answers its id and text.
    async fn dispatch_to_u17(&self, comm: Value, mobile: &str) -> (String, String) {
        standard_org(self, comm).await;
        self.user(
            "u-17",
            "basic_responder",
            Some(mobile),
            Some("u17@acme.example"),
            false,
        )
        .await;
        self.device("u-17").await;
        let text = unique("dispatch");
        let ev = self.event("incident-dispatched", &text);
        self.route(&ev).await;
        self.drain().await;
        (ev["id"].as_str().unwrap().to_string(), text)
    }

    /// Drains the queues, delayed messages included as they come due, until `done`
    /// holds for notification `id` (15 s at most).
    async fn until(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..60 {
            self.drain().await;
            let n = self.notification(id).await;
            if done(&n) {
                return n;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        panic!("{id} never got there: {}", self.notification(id).await);
    }

    /// Drains until no delivery of notification `id` is pending.
    async fn settled(&self, id: &str) -> Value {
        self.until(id, |n| {
            n["recipients"].as_array().unwrap().iter().all(|r| {
                r["deliveries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|d| d["status"] != "pending")
            })
        })
        .await
    }

    async fn notification(&self, id: &str) -> Value {
        self.admin("GET", &format!("/v1/notifications/{id}"), Value::Null)
            .await
    }

    async fn user(
        &self,
        id: &str,
        license: &str,
        mobile: Option<&str>,
        email: Option<&str>,
        is_virtual: bool,
    ) {
        let mut contacts = vec![];
        if let Some(m) = mobile {
            contacts.push(json!({"kind": "mobile", "value": m, "primary": true}));
        }
        if let Some(e) = email {
            contacts.push(json!({"kind": "email", "value": e, "primary": true}));
        }
        self.admin("PUT", &format!("/v1/users/{id}"), json!({"name": format!("User {id}"), "license": license, "virtual": is_virtual, "contacts": contacts})).await;
    }

    async fn device(&self, user: &str) -> String {
        let token = unique("token");
        self.admin(
            "POST",
            &format!("/v1/users/{user}/devices"),
            json!({"platform": "fcm", "token": token}),
        )
        .await;
        // The endpoint ARN, for moto's record of what was published to it.
        self.stack.fcm_endpoint(&token).await.unwrap()
    }

    async fn sms_with(&self, text: &str) -> Vec<Value> {
        moto()
            .sent_sms()
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m["message"].as_str().is_some_and(|s| s.contains(text)))
            .collect()
    }

    async fn email_with(&self, text: &str) -> Vec<Value> {
        moto()
            .sent_email()
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.to_string().contains(text))
            .collect()
    }
}

fn sqs_event(messages: &[aws_sdk_sqs::types::Message]) -> SqsEvent {
    serde_json::from_value(flare_tests::queues::sqs_event(messages)).unwrap()
}

fn deliveries(n: &Value, user: &str) -> HashMap<String, Value> {
    let r = n["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["user_id"] == user)
        .unwrap_or_else(|| panic!("{user} not in {n}"));
    r["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["channel"].as_str().unwrap().to_string(), d.clone()))
        .collect()
}

fn no_pending(n: &Value) {
    for r in n["recipients"].as_array().unwrap() {
        for d in r["deliveries"].as_array().unwrap() {
            assert_ne!(d["status"], "pending", "{r}");
        }
    }
}

/// SMS through SNS, and `comm`; the v1 scenarios run without a fallback window (push
/// accepted is enough) unless `comm` sets one.
async fn standard_org(p: &Pipeline, mut comm: Value) {
    if comm.get("app_fallback_seconds").is_none() {
        comm["app_fallback_seconds"] = json!(0);
    }
    p.admin(
        "PUT",
        "/v1/settings/sms/main",
        json!({"provider": "sns", "sender_number": "ACMEFIRE"}),
    )
    .await;
    p.admin("PUT", "/v1/settings/communication", comm).await;
}

#[tokio::test]
async fn a_dispatch_reaches_each_responder_on_the_right_channels() {
    let p = pipeline().await;
    standard_org(
        &p,
        json!({"dispatch": "app_then_sms_email", "dispatch_virtual_users": true}),
    )
    .await;
    p.user(
        "u-17",
        "basic_responder",
        Some("+14155550117"),
        Some("u17@acme.example"),
        false,
    )
    .await;
    let ep17 = p.device("u-17").await;
    p.user(
        "u-18",
        "passive_reporter",
        Some("+14155550118"),
        Some("u18@acme.example"),
        false,
    )
    .await;
    p.user(
        "u-19",
        "basic_responder",
        Some("+14155550119"),
        Some("u19@acme.example"),
        true,
    )
    .await;
    let text = unique("dispatch");
    let mut ev = p.event("incident-dispatched", &text);
    ev["detail"]["recipient_ids"] = json!(["u-17", "u-18", "u-19", "u-404"]);
    let id = ev["id"].as_str().unwrap().to_string();
    assert!(matches!(
        p.route(&ev).await,
        flare_router::Outcome::Routed(_)
    ));
    p.drain().await;

    let n = p.notification(&id).await;
    no_pending(&n);
    let u17 = deliveries(&n, "u-17");
    assert_eq!(u17["push"]["status"], "sent");
    assert_eq!(
        (u17["sms"]["status"].as_str(), u17["sms"]["reason"].as_str()),
        (Some("skipped"), Some("push_sent"))
    );
    let pushed = moto().endpoint_messages(&ep17).await.unwrap();
    assert!(
        pushed.to_string().contains(&text),
        "push reached u-17's device"
    );
    // What the app needs to confirm it, and a dispatch's urgency.
    for part in [
        format!("/v1/notifications/{id}/receipt"),
        "time-sensitive".to_string(),
        "fcmV1Message".to_string(),
    ] {
        assert!(pushed.to_string().contains(&part), "{part} in {pushed}");
    }
    let u18 = deliveries(&n, "u-18");
    assert_eq!(u18["push"]["reason"], "not_licensed_for_app");
    assert_eq!(
        (
            u18["sms"]["status"].as_str(),
            u18["sms"]["fallback"].as_bool()
        ),
        (Some("sent"), Some(true))
    );
    assert_eq!(u18["email"]["status"], "sent");
    let u19 = deliveries(&n, "u-19");
    assert_eq!(u19["push"]["reason"], "virtual_user");
    assert_eq!(
        (
            u19["sms"]["status"].as_str(),
            u19["sms"]["fallback"].as_bool()
        ),
        (Some("sent"), Some(false))
    );
    assert_eq!(deliveries(&n, "u-404")["sms"]["reason"], "unknown_user");

    let sms = p.sms_with(&text).await;
    let mut to: Vec<_> = sms
        .iter()
        .map(|m| m["phone_number"].as_str().unwrap())
        .collect();
    to.sort();
    assert_eq!(
        to,
        ["+14155550118", "+14155550119"],
        "u-17 got push, not SMS"
    );
    let emails = p.email_with(&text).await;
    assert_eq!(emails.len(), 2);
    assert!(
        emails.iter().all(|e| e["source"] == "flare@flare.example"),
        "the default account"
    );
}

/// v1.2 audiences on moto, routed two users a page: the router routes the first page
/// and queues the others on the push queue, the push function routes them; exactly the
/// audience's users (and the listed ones) are told, once each, and a replay after the
/// directory changed tells nobody new.
#[tokio::test]
async fn an_audience_is_routed_in_pages_through_the_push_function() {
    let mut p = pipeline().await;
    p.notifier.page_size = 2;
    standard_org(&p, json!({"dispatch": "app_sms_email"})).await;
    for (i, (id, cc)) in [
        ("u-17", None),
        ("n-1", Some("north")),
        ("n-2", Some("north")),
        ("s-1", Some("south")),
        ("e-1", Some("east")),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = json!({"name": format!("User {id}"), "license": "basic_responder", "virtual": false,
            "contacts": [{"kind": "mobile", "value": format!("+1415555030{i}"), "primary": true}]});
        if let Some(cc) = cc {
            body["control_center_id"] = json!(cc);
        }
        p.admin("PUT", &format!("/v1/users/{id}"), body).await;
    }
    let text = unique("all-call");
    let ev = p.event("incident-dispatched-audience", &text);
    let id = ev["id"].as_str().unwrap().to_string();
    assert!(matches!(
        p.route(&ev).await,
        flare_router::Outcome::Routed(_)
    ));
    p.until(&id, |n| n["recipients"].as_array().unwrap().len() == 4)
        .await;
    let n = p.settled(&id).await;
    let mut people: Vec<&str> = n["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["user_id"].as_str().unwrap())
        .collect();
    people.sort();
    assert_eq!(people, ["n-1", "n-2", "s-1", "u-17"]);
    assert_eq!(
        n["audience"],
        json!({"control_centers": ["north", "south"]})
    );
    // s-1 leaves, e-1 joins south: the replay routes the pages first fixed.
    p.api("DELETE", "/v1/users/s-1", &[Role::Admin], Value::Null)
        .await;
    p.admin(
        "PUT",
        "/v1/users/e-1",
        json!({"name": "User e-1", "license": "basic_responder", "virtual": false, "control_center_id": "south",
            "contacts": [{"kind": "mobile", "value": "+14155550304", "primary": true}]}),
    )
    .await;
    p.route(&ev).await;
    p.drain().await;
    let mut to: Vec<String> = p
        .sms_with(&text)
        .await
        .iter()
        .map(|m| m["phone_number"].as_str().unwrap().to_string())
        .collect();
    to.sort();
    assert_eq!(
        to,
        [
            "+14155550300",
            "+14155550301",
            "+14155550302",
            "+14155550303"
        ],
        "one SMS each, none to e-1"
    );
}

#[tokio::test]
async fn a_message_under_app_only_goes_by_push_only() {
    let p = pipeline().await;
    standard_org(&p, json!({"messages": "app_only"})).await;
    p.user(
        "u-17",
        "advanced_responder",
        Some("+14155550127"),
        Some("a@acme.example"),
        false,
    )
    .await;
    p.device("u-17").await;
    p.user(
        "u-18",
        "engaged_reporter",
        Some("+14155550128"),
        None,
        false,
    )
    .await;
    let text = unique("message");
    let ev = p.event("incident-message-posted", &text);
    p.route(&ev).await;
    p.drain().await;
    let n = p.notification(ev["id"].as_str().unwrap()).await;
    no_pending(&n);
    assert_eq!(deliveries(&n, "u-17")["push"]["status"], "sent");
    assert_eq!(deliveries(&n, "u-17")["sms"]["reason"], "not_in_method");
    assert_eq!(
        deliveries(&n, "u-18")["push"]["reason"],
        "not_licensed_for_app"
    );
    assert!(p.sms_with(&text).await.is_empty());
    assert!(p.email_with(&text).await.is_empty());
}

/// v1.2 SMS text, on moto: a dispatch whose message has curly quotes is published to SNS
/// as GSM-7 (look-alikes replaced), and DynamoDB keeps its encoding and segments, which
/// the view and the list total; `max_segments: 1` cuts a long one and keeps the reply
/// instructions whole.
#[tokio::test]
async fn sms_go_out_as_gsm7_with_their_segments_kept_and_cut_to_max_segments() {
    let p = pipeline().await;
    standard_org(&p, json!({"dispatch": "app_sms_email"})).await;
    p.user("u-17", "basic_responder", Some("+14155550147"), None, false)
        .await;
    let tag = unique("quotes");
    let mut ev = p.event(
        "incident-dispatched",
        &format!("{tag} “12 Main St” – the caller’s kitchen…"),
    );
    ev["detail"]["recipient_ids"] = json!(["u-17"]);
    p.route(&ev).await;
    p.drain().await;
    let sent = p.sms_with(&tag).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let text = sent[0]["message"].as_str().unwrap();
    assert!(
        text.contains(&format!(
            "{tag} \"12 Main St\" - the caller's kitchen...\nReply 1 responding, 2 unavailable"
        )),
        "{text}"
    );
    let counted = flare_shared::domain::segments::count(text);
    assert_eq!(counted.encoding, flare_shared::domain::SmsEncoding::Gsm7);
    let id = ev["id"].as_str().unwrap();
    let n = p.notification(id).await;
    let sms = &deliveries(&n, "u-17")["sms"];
    assert_eq!(
        (sms["encoding"].clone(), sms["segments"].clone()),
        (json!("gsm7"), json!(counted.segments)),
        "{sms}"
    );
    assert_eq!(n["sms_segments"], json!(counted.segments));
    let list = p
        .admin("GET", "/v1/notifications?limit=5", Value::Null)
        .await;
    let entry = list["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["notification_id"] == id)
        .unwrap();
    assert_eq!(entry["sms_segments"], json!(counted.segments), "{entry}");

    p.admin(
        "PUT",
        "/v1/settings/sms/main",
        json!({"provider": "sns", "sender_number": "ACMEFIRE", "max_segments": 1}),
    )
    .await;
    let tag = unique("long");
    let long = format!(
        "{tag} {}",
        "Engine 7 and Ladder 3 respond to the north gate. ".repeat(6)
    );
    let mut ev = p.event("incident-dispatched", &long);
    ev["detail"]["recipient_ids"] = json!(["u-17"]);
    p.route(&ev).await;
    p.drain().await;
    let sent = p.sms_with(&tag).await;
    let text = sent[0]["message"].as_str().unwrap();
    assert_eq!(
        flare_shared::domain::segments::count(text).segments,
        1,
        "{text}"
    );
    assert!(
        text.contains("...\nReply 1 responding, 2 unavailable"),
        "{text}"
    );
    let n = p.notification(ev["id"].as_str().unwrap()).await;
    assert_eq!(deliveries(&n, "u-17")["sms"]["segments"], json!(1));
}

#[tokio::test]
async fn incident_contacts_who_are_not_users_get_sms_and_email() {
    let p = pipeline().await;
    standard_org(&p, json!({"incident_contacts": "app_sms_email"})).await;
    p.admin(
        "PUT",
        "/v1/settings/email",
        json!({"provider": "ses", "sender_email": "alerts@acme.example"}),
    )
    .await;
    p.user(
        "u-17",
        "basic_responder",
        Some("+14155550137"),
        Some("u17@acme.example"),
        false,
    )
    .await;
    let text = unique("contacts");
    let ev = p.event("incident-contacts-notified", &text);
    p.route(&ev).await;
    p.drain().await;
    let n = p.notification(ev["id"].as_str().unwrap()).await;
    no_pending(&n);
    let contact = n["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r.get("contact").is_some())
        .unwrap();
    assert_eq!(contact["contact"]["name"], "Building manager");
    let sms = p.sms_with(&text).await;
    let mut to: Vec<_> = sms
        .iter()
        .map(|m| m["phone_number"].as_str().unwrap())
        .collect();
    to.sort();
    assert_eq!(to, ["+14155550137", "+14155550177"]);
    let emails = p.email_with(&text).await;
    assert_eq!(emails.len(), 2);
    assert!(
        emails.iter().all(|e| e["source"] == "alerts@acme.example"),
        "the org's sender"
    );
}

#[tokio::test]
async fn an_sos_reaches_the_creators_emergency_contacts_only_while_distress_is_on() {
    let p = pipeline().await;
    standard_org(&p, json!({"distress": true})).await;
    p.admin("PUT", "/v1/users/u-17", json!({"name": "Ana Silva", "license": "basic_responder",
        "emergency_contacts": [{"name": "Rui Silva", "mobile": "+351912345678", "email": "rui@family.example"},
                               {"name": "Eva", "email": "eva@family.example"}]})).await;
    let text = unique("sos");
    let ev = p.event("sos-raised", &text);
    p.route(&ev).await;
    p.drain().await;
    let n = p.notification(ev["id"].as_str().unwrap()).await;
    no_pending(&n);
    assert_eq!(n["category"], "distress");
    assert_eq!(p.sms_with(&text).await.len(), 1);
    assert_eq!(p.email_with(&text).await.len(), 2);

    p.admin(
        "PUT",
        "/v1/settings/communication",
        json!({"distress": false}),
    )
    .await;
    let text = unique("sos-off");
    let ev = p.event("sos-raised", &text);
    p.route(&ev).await;
    p.drain().await;
    let n = p.notification(ev["id"].as_str().unwrap()).await;
    let all: Vec<_> = n["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["deliveries"].as_array().unwrap().clone())
        .collect();
    assert!(
        all.iter().all(|d| d["reason"] == "distress_disabled"),
        "{n}"
    );
    assert!(p.sms_with(&text).await.is_empty() && p.email_with(&text).await.is_empty());
}

#[tokio::test]
async fn the_same_event_three_times_sends_once_per_recipient_and_channel() {
    let p = pipeline().await;
    standard_org(&p, json!({"dispatch": "app_sms_email"})).await;
    p.user(
        "u-17",
        "basic_responder",
        Some("+14155550147"),
        Some("u17@acme.example"),
        false,
    )
    .await;
    p.user(
        "u-18",
        "basic_responder",
        Some("+14155550148"),
        Some("u18@acme.example"),
        false,
    )
    .await;
    let text = unique("replay");
    let ev = p.event("incident-dispatched", &text);
    p.route(&ev).await;
    p.route(&ev).await;
    p.drain().await;
    match p.route(&ev).await {
        flare_router::Outcome::Routed(r) => assert!(r.replay && r.jobs_enqueued == 0, "{r:?}"),
        other => panic!("{other:?}"),
    }
    p.drain().await;
    assert_eq!(p.sms_with(&text).await.len(), 2, "one SMS per recipient");
    assert_eq!(
        p.email_with(&text).await.len(),
        2,
        "one email per recipient"
    );
    let n = p.notification(ev["id"].as_str().unwrap()).await;
    no_pending(&n);
    assert_eq!(deliveries(&n, "u-17")["sms"]["attempts"], 1);
}

#[tokio::test]
async fn a_job_delivered_twice_sends_once() {
    let p = pipeline().await;
    standard_org(&p, json!({"dispatch": "app_sms_email"})).await;
    p.user(
        "u-17",
        "passive_reporter",
        Some("+14155550157"),
        None,
        false,
    )
    .await;
    let text = unique("twice");
    let ev = p.event("incident-dispatched", &text);
    p.route(&ev).await;
    let sqs = aws::sqs(&p.stack.sdk);
    let out = sqs
        .receive_message()
        .queue_url(&p.stack.queues[&(Channel::Sms, Lane::Urgent)])
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let messages = out.messages.unwrap_or_default();
    assert_eq!(messages.len(), 1);
    let sms = &p.functions[&Channel::Sms];
    let first = sms.handle(sqs_event(&messages)).await;
    let second = sms.handle(sqs_event(&messages)).await;
    assert!(first.batch_item_failures.is_empty() && second.batch_item_failures.is_empty());
    assert_eq!(p.sms_with(&text).await.len(), 1);
}

#[tokio::test]
async fn a_poison_job_lands_in_the_dead_letter_queue_and_the_rest_of_its_batch_is_delivered() {
    let p = pipeline().await;
    standard_org(&p, json!({"dispatch": "app_sms_email"})).await;
    p.user(
        "u-17",
        "passive_reporter",
        Some("+14155550167"),
        None,
        false,
    )
    .await;
    let sqs = aws::sqs(&p.stack.sdk);
    let url = &p.stack.queues[&(Channel::Sms, Lane::Normal)];
    sqs.send_message()
        .queue_url(url)
        .message_body("{\"not\": \"a job\"")
        .send()
        .await
        .unwrap();
    let text = unique("poison");
    p.route(&p.event("incident-dispatched", &text)).await;
    p.drain().await;
    assert_eq!(
        p.sms_with(&text).await.len(),
        1,
        "the good job was delivered"
    );
    assert_eq!(
        p.stack
            .depth(&p.stack.dlqs[&(Channel::Sms, Lane::Normal)])
            .await
            .unwrap(),
        1,
        "the poison job is in the DLQ"
    );
    assert_eq!(p.stack.depth(url).await.unwrap(), 0);
}

#[tokio::test]
async fn a_disabled_endpoint_under_app_then_sms_email_falls_back_to_sms_and_email() {
    let p = pipeline().await;
    standard_org(&p, json!({"dispatch": "app_then_sms_email"})).await;
    p.user(
        "u-17",
        "basic_responder",
        Some("+14155550177"),
        Some("u17@acme.example"),
        false,
    )
    .await;
    let ep = p.device("u-17").await;
    aws::sns(&p.stack.sdk)
        .set_endpoint_attributes()
        .endpoint_arn(&ep)
        .attributes("Enabled", "false")
        .send()
        .await
        .unwrap();
    let text = unique("disabled");
    let ev = p.event("incident-dispatched", &text);
    p.route(&ev).await;
    p.drain().await;
    let n = p.notification(ev["id"].as_str().unwrap()).await;
    no_pending(&n);
    let d = deliveries(&n, "u-17");
    assert_eq!(
        (d["push"]["status"].as_str(), d["push"]["reason"].as_str()),
        (Some("failed"), Some("endpoint_disabled"))
    );
    assert_eq!(
        (d["sms"]["status"].as_str(), d["sms"]["fallback"].as_bool()),
        (Some("sent"), Some(true))
    );
    assert_eq!(
        (
            d["email"]["status"].as_str(),
            d["email"]["fallback"].as_bool()
        ),
        (Some("sent"), Some(true))
    );
    assert_eq!(p.sms_with(&text).await.len(), 1);
    assert_eq!(p.email_with(&text).await.len(), 1);
}

#[tokio::test]
async fn manual_sms_is_refused_while_off_and_sent_while_on() {
    let p = pipeline().await;
    standard_org(&p, json!({"manual_sms": false})).await;
    p.user("u-17", "basic_responder", Some("+14155550187"), None, false)
        .await;
    let text = unique("manual");
    let body = json!({"user_id": "u-17", "text": text});
    let (s, b) = p
        .api(
            "POST",
            "/v1/messages/sms",
            &[Role::Dispatcher],
            body.clone(),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (403, Some("manual_sms_disabled"))
    );
    p.admin(
        "PUT",
        "/v1/settings/communication",
        json!({"manual_sms": true}),
    )
    .await;
    let (s, b) = p
        .api("POST", "/v1/messages/sms", &[Role::Responder], body.clone())
        .await;
    assert_eq!(s, 403, "only a dispatcher: {b}");
    let (s, b) = p
        .api("POST", "/v1/messages/sms", &[Role::Dispatcher], body)
        .await;
    assert_eq!(s, 202, "{b}");
    p.drain().await;
    let sms = p.sms_with(&text).await;
    assert_eq!(sms.len(), 1);
    assert_eq!(
        sms[0]["message"],
        text.as_str(),
        "the dispatcher's text as is"
    );
    let n = p.notification(b["notification_id"].as_str().unwrap()).await;
    assert_eq!(n["category"], "manual_sms");
    assert_eq!(deliveries(&n, "u-17")["email"]["reason"], "not_in_method");
}

/// A POST by the responder `sub` of `org`, as a recipient's app sends it.
fn responder_post(org: &str, sub: &str, path: String, body: &str) -> ApiRequest {
    ApiRequest {
        method: "POST".into(),
        path,
        claims: Ok(Claims {
            sub: sub.into(),
            org_id: OrgId::parse(org).unwrap(),
            roles: vec![Role::Responder],
        }),
        body: body.as_bytes().to_vec(),
        query: None,
        idempotency_key: None,
        headers: Vec::new(),
        url: None,
        meta: Default::default(),
    }
}

/// One recipient of a notification view.
fn recipient<'a>(n: &'a Value, user: &str) -> &'a Value {
    n["recipients"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["user_id"] == user))
        .unwrap_or_else(|| panic!("{user} is not a recipient of {n}"))
}

#[tokio::test]
async fn a_recipient_acknowledges_and_others_may_not() {
    let p = pipeline().await;
    standard_org(&p, json!({})).await;
    p.user("u-17", "basic_responder", Some("+14155550197"), None, false)
        .await;
    let ev = p.event("incident-dispatched", &unique("ack"));
    p.route(&ev).await;
    let id = ev["id"].as_str().unwrap();
    let ack = |sub: &str| responder_post(&p.org, sub, format!("/v1/notifications/{id}/ack"), "");
    // Not a recipient: 404, as a missing notification (no existence leak).
    assert_eq!(api::handle(&p.services, ack("u-99")).await.status, 404);
    assert_eq!(api::handle(&p.services, ack("u-17")).await.status, 204);
    let n = p.notification(id).await;
    assert!(recipient(&n, "u-17")["acknowledged_at"].is_string());
}

#[tokio::test]
async fn a_receipt_marks_the_sent_push_delivered_once_and_only_for_its_recipient() {
    let p = pipeline().await;
    standard_org(&p, json!({"dispatch": "app_then_sms_email"})).await;
    p.user("u-17", "basic_responder", Some("+14155550196"), None, false)
        .await;
    p.device("u-17").await;
    let ev = p.event("incident-dispatched", &unique("receipt"));
    p.route(&ev).await;
    p.drain().await;
    let id = ev["id"].as_str().unwrap();
    assert_eq!(
        deliveries(&p.notification(id).await, "u-17")["push"]["status"],
        "sent"
    );
    let receipt = |sub: &str, org: &str, body: &str| {
        responder_post(org, sub, format!("/v1/notifications/{id}/receipt"), body)
    };
    let other_org = unique("other");
    for (who, org) in [("u-99", p.org.as_str()), ("u-17", other_org.as_str())] {
        let r = api::handle(&p.services, receipt(who, org, "")).await;
        assert_eq!(r.status, 404, "{who} of {org}");
    }
    assert_eq!(
        deliveries(&p.notification(id).await, "u-17")["push"]["status"],
        "sent",
        "nothing changed"
    );
    let r = api::handle(
        &p.services,
        receipt("u-17", &p.org, r#"{"device_id": "d-1"}"#),
    )
    .await;
    assert_eq!(r.status, 204);
    let n = p.notification(id).await;
    let push = deliveries(&n, "u-17")["push"].clone();
    assert_eq!(push["status"], "delivered", "{push}");
    let at = push["delivered_at"].as_str().unwrap().to_string();
    assert_eq!(
        recipient(&n, "u-17")["delivered_at"].as_str(),
        Some(at.as_str())
    );
    // Again (an app retrying): 204, and the first time is kept.
    assert_eq!(
        api::handle(&p.services, receipt("u-17", &p.org, ""))
            .await
            .status,
        204
    );
    let again = p.notification(id).await;
    assert_eq!(
        deliveries(&again, "u-17")["push"]["delivered_at"].as_str(),
        Some(at.as_str())
    );
}

#[tokio::test]
async fn malformed_events_and_unknown_organizations_are_dropped_not_retried() {
    let p = pipeline().await;
    let mut bad = incident("incident-dispatched");
    bad["detail"].as_object_mut().unwrap().remove("org_id");
    assert!(matches!(
        p.route(&bad).await,
        flare_router::Outcome::Dropped(_)
    ));
    let mut other = p.event("incident-dispatched", "x");
    other["detail"]["org_id"] = json!(unique("nobody"));
    assert!(matches!(
        p.route(&other).await,
        flare_router::Outcome::Dropped(_)
    ));
}

#[tokio::test]
async fn the_sample_sqs_batches_are_delivery_jobs() {
    for ch in ["push", "sms", "email"] {
        let path = workspace_root().join(format!("events/sqs/{ch}-batch.json"));
        let ev: SqsEvent = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for r in ev.records {
            let job: flare_shared::domain::DeliveryJob =
                serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
            assert_eq!(job.channel.as_str(), ch);
        }
    }
}

#[tokio::test]
async fn a_fan_out_makes_the_batching_floor_and_its_fixed_calls_only() {
    use flare_tests::fanout::{fixed_calls, route_counted, seed};
    let stack = AwsStack::create(moto()).await.unwrap();
    // 350 users, 1,050 records: more than one shard of records.
    let event = seed(&stack, 350).await.unwrap();
    let f = route_counted(&stack.sdk, None, &stack.tables, &stack.queues, &event)
        .await
        .unwrap();
    assert_eq!((f.users, f.records, f.jobs), (350, 1050, 1050));
    // 4 BatchGetItem + 42 BatchWriteItem + 105 SendMessageBatch.
    assert_eq!(f.floor, 4 + 42 + 105);
    // The fixed calls: every setting in one Query (it was a GetItem each for
    // communication, the control center's SMS, main's SMS and email), the notification's
    // PutItem, and the UpdateItem that marks its records sharded.
    assert_eq!(fixed_calls(f.records), 3);
    for (op, n) in [("Query", 1), ("PutItem", 1), ("UpdateItem", 1)] {
        assert_eq!(f.calls.get(op), Some(&n), "{op}: {:?}", f.calls);
    }
    assert_eq!(f.calls.get("GetItem"), None, "{:?}", f.calls);
    // Exactly the floor and the fixed calls, no more.
    assert_eq!(
        f.total,
        f.floor + fixed_calls(f.records),
        "{} calls against a floor of {}: {:?}",
        f.total,
        f.floor,
        f.calls
    );
}

#[tokio::test]
async fn custom_providers_deliver_through_the_aws_pipeline() {
    let p = pipeline().await;
    let gw = flare_tests::gateway();
    let path = format!("/{}", unique("gw"));
    p.admin(
        "PUT",
        "/v1/settings/sms/main",
        json!({"provider": "http", "url": format!("{}{path}", gw.url), "format": "json",
               "username": "acct-17", "password": "s3cret-pw", "sender_number": "ACMEFIRE",
               "http_header": "X-Api-Key: abc123"}),
    )
    .await;
    let smtp = p.email_through_the_smtp_sink().await;
    p.admin(
        "PUT",
        "/v1/settings/communication",
        json!({"dispatch": "app_sms_email"}),
    )
    .await;
    let to = format!("{}@acme.example", unique("r"));
    p.user(
        "u-17",
        "passive_reporter",
        Some("+14155550199"),
        Some(&to),
        false,
    )
    .await;
    let ev = p.event("incident-dispatched", &unique("custom"));
    p.route(&ev).await;
    p.drain().await;
    let n = p.notification(ev["id"].as_str().unwrap()).await;
    no_pending(&n);
    let d = deliveries(&n, "u-17");
    assert_eq!(
        (d["sms"]["status"].as_str(), d["sms"]["provider"].as_str()),
        (Some("sent"), Some("http")),
        "{n}"
    );
    assert_eq!(
        (
            d["email"]["status"].as_str(),
            d["email"]["provider"].as_str()
        ),
        (Some("sent"), Some("smtp")),
        "{n}"
    );
    let reqs = gw.requests_to(&path).await.unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0]["headers"]["x-api-key"], "abc123",
        "the header value came from Secrets Manager"
    );
    assert_eq!(
        reqs[0]["headers"]["authorization"],
        "Basic YWNjdC0xNzpzM2NyZXQtcHc="
    );
    let mail: Vec<_> = smtp
        .messages()
        .unwrap()
        .into_iter()
        .filter(|m| m["rcpt_tos"][0] == to.as_str())
        .collect();
    assert_eq!(mail.len(), 1);
}

/// `GET /v1/notifications` on DynamoDB: the log's `newest` index pages the
/// organization's notifications newest first; counts come from the records.
#[tokio::test]
async fn the_notification_list_pages_newest_first_on_dynamodb() {
    let p = pipeline().await;
    standard_org(&p, json!({"dispatch": "app_sms_email"})).await;
    p.user("u-17", "basic_responder", Some("+14155550197"), None, false)
        .await;
    let mut ids = Vec::new();
    for minute in 1..=3 {
        let mut ev = p.event("incident-dispatched", &unique("list"));
        ev["time"] = json!(format!("2026-11-27T10:0{minute}:00Z"));
        p.route(&ev).await;
        ids.push(ev["id"].as_str().unwrap().to_string());
    }
    p.drain().await;
    let first = p
        .admin("GET", "/v1/notifications?limit=2", Value::Null)
        .await;
    let listed: Vec<&str> = first["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["notification_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [ids[2].as_str(), ids[1].as_str()], "{first}");
    // u-17: push skipped (no device), SMS sent, email skipped (no address); u-18 and
    // u-19 are not in the directory (3 skipped each).
    assert_eq!(
        first["notifications"][0]["counts"],
        json!({"pending": 0, "sent": 1, "failed": 0, "skipped": 8, "delivered": 0, "undelivered": 0,
               "responding": 0, "unavailable": 0}),
        "{first}"
    );
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = p
        .admin(
            "GET",
            &format!("/v1/notifications?limit=2&cursor={cursor}"),
            Value::Null,
        )
        .await;
    assert_eq!(
        second["notifications"][0]["notification_id"],
        ids[0].as_str()
    );
    assert!(second["next_cursor"].is_null(), "{second}");
}

/// The app fallback window on moto: the router's check is a delayed SQS message (moto
/// honours `DelaySeconds`), handled by the push function like Lambda would.
mod window {
    use super::*;

    const WINDOW: u64 = 1;

    /// u-17 (device, mobile, email) under `app_then_sms_email` with a 1 s window; a
    /// dispatch routed and drained: push sent, SMS and email held. Answers the
    /// notification id and the dispatch's text.
    async fn dispatched(p: &Pipeline, mobile: &str) -> (String, String) {
        let (id, text) = p
            .dispatch_to_u17(
                json!({"dispatch": "app_then_sms_email", "app_fallback_seconds": WINDOW}),
                mobile,
            )
            .await;
        let got = deliveries(&p.notification(&id).await, "u-17");
        assert_eq!(got["push"]["status"], "sent");
        for channel in ["sms", "email"] {
            assert_eq!(got[channel]["status"], "pending", "held: {}", got[channel]);
        }
        (id, text)
    }

    impl Pipeline {
        /// Drains the queues until nothing of `id` is pending (delayed checks included).
        async fn settle(&self, id: &str) -> Value {
            self.until(id, |n| {
                !n["recipients"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|r| r["deliveries"].as_array().unwrap())
                    .any(|d| d["status"] == "pending")
            })
            .await
        }

        fn receipt(&self, sub: &str, org: &str, id: &str) -> ApiRequest {
            responder_post(org, sub, format!("/v1/notifications/{id}/receipt"), "")
        }
    }

    #[tokio::test]
    async fn without_a_receipt_sms_and_email_go_as_fallback_when_the_window_ends() {
        let p = pipeline().await;
        let (id, text) = dispatched(&p, "+14155550181").await;
        let n = p.settle(&id).await;
        let got = deliveries(&n, "u-17");
        for channel in ["sms", "email"] {
            let d = &got[channel];
            assert_eq!(
                (&d["status"], &d["fallback"], &d["fallback_reason"]),
                (&json!("sent"), &json!(true), &json!("no_app_receipt")),
                "{d}"
            );
        }
        assert_eq!(p.sms_with(&text).await.len(), 1);
        assert_eq!(p.email_with(&text).await.len(), 1);
    }

    #[tokio::test]
    async fn a_receipt_in_the_window_means_no_sms_or_email_and_strangers_get_404() {
        let p = pipeline().await;
        let (id, text) = dispatched(&p, "+14155550182").await;
        let other_org = unique("other");
        for (who, org) in [("u-99", p.org.as_str()), ("u-17", other_org.as_str())] {
            let r = api::handle(&p.services, p.receipt(who, org, &id)).await;
            assert_eq!(r.status, 404, "{who} of {org}");
        }
        let r = api::handle(&p.services, p.receipt("u-17", &p.org, &id)).await;
        assert_eq!(r.status, 204);
        let n = p.settle(&id).await;
        let got = deliveries(&n, "u-17");
        assert_eq!(got["push"]["status"], "delivered");
        for channel in ["sms", "email"] {
            assert_eq!(
                (&got[channel]["status"], &got[channel]["reason"]),
                (&json!("skipped"), &json!("push_delivered"))
            );
        }
        // Past the window's end, with its check run: still nothing sent.
        tokio::time::sleep(std::time::Duration::from_millis(WINDOW * 1000 + 500)).await;
        p.drain().await;
        assert_eq!(deliveries(&p.notification(&id).await, "u-17"), got);
        assert!(p.sms_with(&text).await.is_empty());
        assert!(p.email_with(&text).await.is_empty());
    }

    #[tokio::test]
    async fn a_receipt_after_the_window_marks_push_delivered_and_the_fallback_stands() {
        let p = pipeline().await;
        let (id, text) = dispatched(&p, "+14155550183").await;
        let before = deliveries(&p.settle(&id).await, "u-17");
        assert_eq!(before["sms"]["fallback_reason"], "no_app_receipt");
        let r = api::handle(&p.services, p.receipt("u-17", &p.org, &id)).await;
        assert_eq!(r.status, 204);
        let after = deliveries(&p.notification(&id).await, "u-17");
        assert_eq!(after["push"]["status"], "delivered");
        assert_eq!(
            (&after["sms"], &after["email"]),
            (&before["sms"], &before["email"])
        );
        assert_eq!(p.sms_with(&text).await.len(), 1);
    }

    #[tokio::test]
    async fn a_check_delivered_three_times_sends_once() {
        let p = pipeline().await;
        let (id, text) = dispatched(&p, "+14155550184").await;
        // Two more copies of the router's check, due when it is.
        let check = json!({"check": "app_fallback", "org_id": p.org, "notification_id": id});
        let sqs = aws::sqs(&p.stack.sdk);
        for _ in 0..2 {
            sqs.send_message()
                .queue_url(&p.stack.queues[&(Channel::Push, Lane::Normal)])
                .message_body(check.to_string())
                .delay_seconds(WINDOW as i32)
                .send()
                .await
                .unwrap();
        }
        let n = p.settle(&id).await;
        // Late copies (and a late drain) find nothing held.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        p.drain().await;
        assert_eq!(
            deliveries(&n, "u-17")["sms"]["fallback_reason"],
            "no_app_receipt"
        );
        assert_eq!(p.sms_with(&text).await.len(), 1, "one SMS");
        assert_eq!(p.email_with(&text).await.len(), 1, "one email");
    }
}

/// Dispatch escalation on moto: each cycle's timer is a delayed SQS message on the push
/// queue, handled by the push function.
mod escalation {
    use super::*;

    /// u-17 (device, mobile, email) under `app_only` with escalation every 1 s, twice;
    /// a dispatch routed and drained. Answers the notification id and its text.
    async fn dispatched(p: &Pipeline, mobile: &str) -> (String, String) {
        p.dispatch_to_u17(
            json!({"dispatch": "app_only",
                   "dispatch_escalation": {"after_seconds": 1, "cycles": 2}}),
            mobile,
        )
        .await
    }

    /// u-17's deliveries as (cycle, channel, status), in the view's order.
    fn by_cycle(n: &Value) -> Vec<(u64, String, String)> {
        flare_tests::deliveries_by_cycle(n, "u-17")
    }

    #[tokio::test]
    async fn without_an_ack_every_cycle_reaches_every_channel() {
        let p = pipeline().await;
        let (id, text) = dispatched(&p, "+14155550191").await;
        let n = p
            .until(&id, |n| {
                let d = by_cycle(n);
                d.len() == 9 && d.iter().all(|(_, _, s)| s != "pending")
            })
            .await;
        let mut want = vec![
            (0, "push".to_string(), "sent".to_string()),
            (0, "sms".into(), "skipped".into()),
            (0, "email".into(), "skipped".into()),
        ];
        for cycle in 1..=2 {
            for c in ["push", "sms", "email"] {
                want.push((cycle, c.into(), "sent".into()));
            }
        }
        assert_eq!(by_cycle(&n), want);
        assert_eq!(p.sms_with(&text).await.len(), 2, "one SMS per cycle");
        assert_eq!(p.email_with(&text).await.len(), 2, "one email per cycle");
    }

    /// A notification routed in pages (12 silent users, 4 a page, SMS and email only),
    /// escalated every 2 s, twice, a page at a time by the push function: every
    /// (recipient, channel, cycle) is sent exactly once, and the one who acknowledged
    /// before the cycles gets none of them.
    #[tokio::test]
    async fn a_notification_routed_in_pages_is_escalated_a_page_at_a_time() {
        let mut p = pipeline().await;
        p.notifier.page_size = 4;
        standard_org(
            &p,
            json!({"dispatch": "app_sms_email",
                   "dispatch_escalation": {"after_seconds": 2, "cycles": 2}}),
        )
        .await;
        for i in 0..12 {
            p.admin(
                "PUT",
                &format!("/v1/users/x-{i:02}"),
                json!({"name": format!("X {i}"), "license": "basic_responder", "virtual": false,
                       "control_center_id": "north",
                       "contacts": [{"kind": "mobile", "value": format!("+141555504{i:02}"), "primary": true},
                                    {"kind": "email", "value": format!("x{i}@acme.example"), "primary": true}]}),
            )
            .await;
        }
        let text = unique("escalated all-call");
        let mut ev = p.event("incident-dispatched-audience", &text);
        ev["detail"]["audience"] = json!({"control_centers": ["north"]});
        // Listed, so on the first page, which the router routes itself: x-05 can
        // acknowledge at once, long before the first cycle, however slow the machine.
        ev["detail"]["recipient_ids"] = json!(["x-05"]);
        let id = ev["id"].as_str().unwrap().to_string();
        p.route(&ev).await;
        let ack = responder_post(&p.org, "x-05", format!("/v1/notifications/{id}/ack"), "");
        assert_eq!(api::handle(&p.services, ack).await.status, 204);
        p.until(&id, |n| n["recipients"].as_array().unwrap().len() == 12)
            .await;
        let n = p
            .until(&id, |n| {
                let all: Vec<(u64, String, String)> = (0..12)
                    .filter(|i| *i != 5)
                    .flat_map(|i| flare_tests::deliveries_by_cycle(n, &format!("x-{i:02}")))
                    .collect();
                all.len() == 11 * 9 && all.iter().all(|(_, _, s)| s != "pending")
            })
            .await;
        assert!(
            flare_tests::deliveries_by_cycle(&n, "x-05")
                .iter()
                .all(|(cycle, _, _)| *cycle == 0),
            "x-05 acknowledged before the cycles"
        );
        let mut per_phone: HashMap<String, usize> = HashMap::new();
        for m in p.sms_with(&text).await {
            *per_phone
                .entry(m["phone_number"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        for i in (0..12).filter(|i| *i != 5) {
            let phone = format!("+141555504{i:02}");
            assert_eq!(
                per_phone.get(&phone),
                Some(&3),
                "{phone}: cycle 0 and each cycle once"
            );
        }
        // x-05's own SMS and email went, or the ack cancelled them first: once at most.
        assert!(
            per_phone.get("+14155550405").is_none_or(|c| *c == 1),
            "{per_phone:?}"
        );
        let emails = p.email_with(&text).await.len();
        assert!(emails == 11 * 3 || emails == 11 * 3 + 1, "{emails} emails");
    }

    /// v1.2 on DynamoDB: u-17 answers `unavailable` (after `responding`) before the
    /// first cycle: no cycle starts for them, the view shows the latest answer and the
    /// list counts it.
    #[tokio::test]
    async fn an_answer_stops_the_cycles_and_the_view_and_the_list_show_it() {
        let p = pipeline().await;
        let (id, text) = dispatched(&p, "+14155550194").await;
        for body in [
            r#"{"response": "responding"}"#,
            r#"{"response": "unavailable"}"#,
        ] {
            let path = format!("/v1/notifications/{id}/response");
            let answer = responder_post(&p.org, "u-17", path, body);
            assert_eq!(api::handle(&p.services, answer).await.status, 204);
        }
        // Past both cycles' times, with their timers run.
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        p.drain().await;
        let n = p.notification(&id).await;
        assert!(
            by_cycle(&n).iter().all(|(cycle, _, _)| *cycle == 0),
            "no cycle started: {n}"
        );
        let u17 = recipient(&n, "u-17");
        assert_eq!(u17["response"], "unavailable", "{u17}");
        assert_eq!(u17["responded_via"], "app");
        assert!(u17["responded_at"].is_string() && u17["acknowledged_at"].is_string());
        assert!(p.sms_with(&text).await.is_empty());
        let list = p
            .admin("GET", "/v1/notifications?limit=50", Value::Null)
            .await;
        let listed = list["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["notification_id"] == id.as_str())
            .unwrap()
            .clone();
        assert_eq!(
            (
                &listed["counts"]["responding"],
                &listed["counts"]["unavailable"]
            ),
            (&json!(0), &json!(1)),
            "{listed}"
        );
    }

    #[tokio::test]
    async fn an_ack_before_the_first_cycle_stops_them_all() {
        let p = pipeline().await;
        let (id, text) = dispatched(&p, "+14155550192").await;
        let ack = responder_post(&p.org, "u-17", format!("/v1/notifications/{id}/ack"), "");
        assert_eq!(api::handle(&p.services, ack).await.status, 204);
        // Past both cycles' times, with their timers run.
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        p.drain().await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        p.drain().await;
        let n = p.notification(&id).await;
        assert!(
            by_cycle(&n).iter().all(|(cycle, _, _)| *cycle == 0),
            "no cycle started: {n}"
        );
        assert!(recipient(&n, "u-17")["acknowledged_at"].is_string());
        assert!(p.sms_with(&text).await.is_empty());
    }

    /// u-17 (SMS only, through a gateway) under escalation after 1 s, once: the cycle's
    /// SMS reaches the gateway, which holds it 2 s and then answers 503, and u-17
    /// acknowledges while it hangs. The attempt cannot be cancelled (it holds the claim),
    /// but its retry must not send: the SMS ends `skipped` `acknowledged` and the gateway
    /// saw two requests, cycle 0's and the failed one.
    #[tokio::test]
    async fn an_ack_racing_a_failing_cycle_sms_sends_nothing_after_the_ack() {
        let p = pipeline().await;
        standard_org(
            &p,
            json!({"dispatch": "app_sms_email",
                   "dispatch_escalation": {"after_seconds": 1, "cycles": 1}}),
        )
        .await;
        let gw = flare_tests::gateway();
        let path = format!("/{}", unique("race"));
        p.admin(
            "PUT",
            "/v1/settings/sms/main",
            json!({"provider": "http", "url": format!("{}{path}", gw.url), "format": "json",
                   "password": "s3cret-pw", "sender_number": "ACMEFIRE"}),
        )
        .await;
        gw.script(&path, json!([{"status": 200}, {"hang": 2, "status": 503}]))
            .await
            .unwrap();
        p.user("u-17", "basic_responder", Some("+14155550193"), None, false)
            .await;
        let ev = p.event("incident-dispatched", &unique("race"));
        let id = ev["id"].as_str().unwrap().to_string();
        p.route(&ev).await;
        let ack = async {
            while gw.requests_to(&path).await.unwrap().len() < 2 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            let ack = responder_post(&p.org, "u-17", format!("/v1/notifications/{id}/ack"), "");
            assert_eq!(api::handle(&p.services, ack).await.status, 204);
        };
        // The failed attempt's retry comes 10 s later (the function's first backoff).
        let settle = async {
            let started = std::time::Instant::now();
            loop {
                p.drain().await;
                let n = p.notification(&id).await;
                let done = recipient(&n, "u-17")["acknowledged_at"].is_string()
                    && by_cycle(&n)
                        .iter()
                        .any(|(c, ch, s)| *c == 1 && ch == "sms" && s != "pending");
                if done {
                    return n;
                }
                assert!(started.elapsed().as_secs() < 40, "never settled: {n}");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        };
        let ((), n) = tokio::join!(ack, settle);
        let sms = deliveries_of_cycle(&n, 1, "sms");
        assert_eq!(
            (sms["status"].as_str(), sms["reason"].as_str()),
            (Some("skipped"), Some("acknowledged")),
            "{n}"
        );
        // Nothing reaches the gateway after the ack, later drains included.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        p.drain().await;
        assert_eq!(gw.requests_to(&path).await.unwrap().len(), 2);
    }

    /// u-17's delivery on `channel` in `cycle`.
    fn deliveries_of_cycle(n: &Value, cycle: u64, channel: &str) -> Value {
        recipient(n, "u-17")["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["cycle"] == cycle && d["channel"] == channel)
            .cloned()
            .unwrap_or_else(|| panic!("no cycle {cycle} {channel}: {n}"))
    }
}

/// Provider receipts and failover on moto: the receipts function's handler over the
/// DynamoDB log (its receipts index), and the SMS function failing over to SNS with its
/// circuit kept in DynamoDB.
mod receipts {
    use super::*;

    fn sample(name: &str) -> Value {
        let path = workspace_root().join(format!("events/receipts/{name}.json"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    async fn receive(p: &Pipeline, event: Value) -> Value {
        let config = flare_receipts::Config {
            tables: p.stack.tables.clone(),
            metrics_namespace: None,
        };
        let (receipts, replies) = config.handler(&p.stack.sdk);
        let event = lambda_runtime::LambdaEvent::new(event, lambda_runtime::Context::default());
        flare_receipts::handle((&receipts, &replies), event)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn ses_events_and_sns_status_logs_move_sent_deliveries() {
        let p = pipeline().await;
        standard_org(&p, json!({"dispatch": "app_sms_email"})).await;
        p.user(
            "u-18",
            "passive_reporter",
            Some("+14155550118"),
            Some("u18@acme.example"),
            false,
        )
        .await;
        p.user(
            "u-19",
            "passive_reporter",
            Some("+14155550119"),
            Some("u19@acme.example"),
            false,
        )
        .await;
        let ev = p.event("incident-dispatched", &unique("receipts"));
        p.route(&ev).await;
        let id = ev["id"].as_str().unwrap();
        let n = p.settled(id).await;
        let mid = |user: &str, channel: &str| {
            deliveries(&n, user)[channel]["provider_message_id"]
                .as_str()
                .unwrap_or_else(|| panic!("{user} {channel}: no message id in {n}"))
                .to_string()
        };
        // Shaped as EventBridge delivers them, for the messages moto's SES accepted.
        let mut delivery = sample("ses-delivery");
        delivery["detail"]["mail"]["messageId"] = json!(mid("u-18", "email"));
        assert_eq!(receive(&p, delivery).await["applied"], 1);
        let mut bounce = sample("ses-bounce");
        bounce["detail"]["mail"]["messageId"] = json!(mid("u-19", "email"));
        assert_eq!(receive(&p, bounce.clone()).await["applied"], 1);
        assert_eq!(receive(&p, bounce).await["unchanged"], 1, "a repeat");
        let logs = flare_tests::sns_status_payload(&[
            (
                &mid("u-18", "sms"),
                "SUCCESS",
                "Message has been accepted by phone carrier",
            ),
            (
                &mid("u-19", "sms"),
                "FAILURE",
                "Unknown error attempting to reach phone",
            ),
        ]);
        assert_eq!(receive(&p, logs).await["applied"], 2);
        let n = p.notification(id).await;
        let (d18, d19) = (deliveries(&n, "u-18"), deliveries(&n, "u-19"));
        assert_eq!(
            (
                d18["email"]["status"].as_str(),
                d18["sms"]["status"].as_str()
            ),
            (Some("delivered"), Some("delivered")),
            "{n}"
        );
        assert_eq!(
            (
                d19["email"]["status"].as_str(),
                d19["email"]["reason"].as_str(),
                d19["email"]["detail"].as_str()
            ),
            (
                Some("undelivered"),
                Some("bounced"),
                Some("smtp; 550 5.1.1 user unknown")
            )
        );
        assert_eq!(
            (
                d19["sms"]["status"].as_str(),
                d19["sms"]["reason"].as_str(),
                d19["sms"]["detail"].as_str()
            ),
            (
                Some("undelivered"),
                Some("carrier_failed"),
                Some("Unknown error attempting to reach phone")
            )
        );
        // A payload that is not a provider event is dropped, not retried forever.
        let out = receive(&p, json!({"source": "aws.sns"})).await;
        assert!(out["dropped"].is_string(), "{out}");
    }

    /// v1.2 on moto, through the receipts function: AWS End User Messaging's two-way
    /// SMS (the sample SNS event) answers the dispatch SMS SNS sent the number
    /// (`unavailable` via `sms`), a confirmation goes back through SNS from the number
    /// the reply went to, the same message again changes nothing, and STOP opts the
    /// number out in the dispatch's organization.
    #[tokio::test]
    async fn an_end_user_messaging_reply_answers_the_sns_dispatch() {
        let p = pipeline().await;
        standard_org(&p, json!({"dispatch": "app_sms_email"})).await;
        p.user(
            "u-19",
            "passive_reporter",
            Some("+14155550119"),
            None,
            false,
        )
        .await;
        let ev = p.event("incident-dispatched", &unique("eum"));
        p.route(&ev).await;
        let id = ev["id"].as_str().unwrap();
        let n = p.settled(id).await;
        assert_eq!(deliveries(&n, "u-19")["sms"]["provider"], "sns", "{n}");
        let path = workspace_root().join("events/inbound/end-user-messaging-reply.json");
        let reply: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(receive(&p, reply.clone()).await["replies"], 1);
        let answer = |n: &Value| {
            let r = n["recipients"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["user_id"] == "u-19")
                .unwrap()
                .clone();
            (
                r["response"].clone(),
                r["responded_via"].clone(),
                r["acknowledged_at"].is_string(),
            )
        };
        assert_eq!(
            answer(&p.notification(id).await),
            (json!("unavailable"), json!("sms"), true)
        );
        let confirmations = || async {
            flare_tests::moto()
                .sent_sms()
                .await
                .unwrap()
                .into_iter()
                .filter(|m| {
                    m["phone_number"] == "+14155550119"
                        && m["message"]
                            .as_str()
                            .is_some_and(|t| t.contains("recorded, you are unavailable"))
                })
                .count()
        };
        assert_eq!(confirmations().await, 1);
        // The topic's retry of the same message: nothing twice.
        assert_eq!(receive(&p, reply.clone()).await["replies"], 1);
        assert_eq!(confirmations().await, 1);
        // STOP (a new message): the number is opted out in the dispatch's organization.
        let mut stop = reply;
        let mut message: Value =
            serde_json::from_str(stop["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap();
        message["messageBody"] = json!("STOP");
        message["inboundMessageId"] = json!(unique("eum-stop"));
        stop["Records"][0]["Sns"]["Message"] = json!(message.to_string());
        assert_eq!(receive(&p, stop).await["replies"], 1);
        let user = p.admin("GET", "/v1/users/u-19", Value::Null).await;
        assert!(user["contacts"][0]["opted_out_at"].is_string(), "{user}");
    }

    /// The gateway of `p`'s main control center at a path of its own, failing over to
    /// SNS; `users` with a mobile each.
    async fn failover_gateway(p: &Pipeline, users: &[String], base: usize) -> String {
        standard_org(p, json!({"dispatch": "app_sms_email"})).await;
        let gw = flare_tests::gateway();
        let path = format!("/{}", unique("gw"));
        p.admin(
            "PUT",
            "/v1/settings/sms/main",
            json!({"provider": "http", "format": "json",
            "url": format!("{}{path}", gw.url), "password": "s3cret-pw", "sender_number": "ACMEFIRE",
            "failover": "sns"}),
        )
        .await;
        for (i, u) in users.iter().enumerate() {
            p.user(
                u,
                "passive_reporter",
                Some(&format!("+1415{:07}", base + i)),
                None,
                false,
            )
            .await;
        }
        path
    }

    fn dispatch_to(p: &Pipeline, users: &[String], text: &str) -> Value {
        let mut e = p.event("incident-dispatched", text);
        e["detail"]["recipient_ids"] = json!(users);
        e
    }

    #[tokio::test]
    async fn a_failing_gateway_fails_over_to_sns_and_its_circuit_opens_for_every_instance() {
        let p = pipeline().await;
        let users: Vec<String> = (0..5).map(|i| format!("u-4{i}")).collect();
        let path = failover_gateway(&p, &users, 5_550_140).await;
        let gw = flare_tests::gateway();
        let unavailable = json!({"status": 503});
        gw.script(&path, json!(vec![unavailable; 5])).await.unwrap();
        let text = unique("outage");
        let ev = dispatch_to(&p, &users, &text);
        p.route(&ev).await;
        // The first attempts: five 503s in a row open the circuit; the fifth SMS goes
        // through SNS at once, the four before it are retried after their backoff.
        p.drain().await;
        let v = p.admin("GET", "/v1/settings/sms/main", Value::Null).await;
        assert_eq!(
            (
                v["health"]["state"].as_str(),
                v["health"]["consecutive_failures"].as_u64()
            ),
            (Some("open"), Some(5)),
            "{v}"
        );
        assert!(
            v["health"]["last_error"]
                .as_str()
                .unwrap()
                .starts_with("gateway_status: 503"),
            "{v}"
        );
        // While open (in DynamoDB, where every instance reads it) the gateway is not tried.
        let before = gw.requests_to(&path).await.unwrap().len();
        let ev2 = dispatch_to(&p, &users[..1], &unique("open"));
        p.route(&ev2).await;
        let n = p
            .until(ev2["id"].as_str().unwrap(), |n| {
                deliveries(n, "u-40")["sms"]["status"] == "sent"
            })
            .await;
        assert_eq!(
            deliveries(&n, "u-40")["sms"]["failover_from"],
            "http",
            "{n}"
        );
        assert_eq!(gw.requests_to(&path).await.unwrap().len(), before);
        // After the open time the gateway is tried again; its success closes the circuit.
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        let ev3 = dispatch_to(&p, &users[1..2], &unique("closed"));
        p.route(&ev3).await;
        let n = p
            .until(ev3["id"].as_str().unwrap(), |n| {
                deliveries(n, "u-41")["sms"]["status"] == "sent"
            })
            .await;
        assert_eq!(deliveries(&n, "u-41")["sms"]["provider"], "http", "{n}");
        let v = p.admin("GET", "/v1/settings/sms/main", Value::Null).await;
        assert_eq!(v["health"]["state"], "ok", "{v}");
        // The outage's retries all went, each once.
        let n = p.settled(ev["id"].as_str().unwrap()).await;
        for u in &users {
            assert_eq!(deliveries(&n, u)["sms"]["status"], "sent", "{n}");
        }
        let by_sns = p.sms_with(&text).await.len();
        let by_gateway = gw
            .requests_to(&path)
            .await
            .unwrap()
            .iter()
            .filter(|r| r["status"] == 200 && r["body"].as_str().unwrap().contains(&text))
            .count();
        assert_eq!(by_sns + by_gateway, 5, "each once");
    }

    #[tokio::test]
    async fn a_gateway_refusing_numbers_does_not_open_its_circuit_on_aws() {
        let p = pipeline().await;
        let users: Vec<String> = (0..7).map(|i| format!("u-5{i}")).collect();
        let path = failover_gateway(&p, &users, 5_550_150).await;
        let gw = flare_tests::gateway();
        let refused = json!({"status": 400, "body": "unknown number"});
        gw.script(&path, json!(vec![refused; 7])).await.unwrap();
        // One at a time: seven refusals in a row.
        for u in &users {
            let ev = dispatch_to(&p, std::slice::from_ref(u), &unique("refused"));
            p.route(&ev).await;
            let n = p.settled(ev["id"].as_str().unwrap()).await;
            let d = deliveries(&n, u);
            assert_eq!(
                (
                    d["sms"]["provider"].as_str(),
                    d["sms"]["failover_from"].as_str()
                ),
                (Some("sns"), Some("http")),
                "a refused message may still fail over: {n}"
            );
        }
        let v = p.admin("GET", "/v1/settings/sms/main", Value::Null).await;
        assert_eq!(
            (
                v["health"]["state"].as_str(),
                v["health"]["consecutive_failures"].as_u64()
            ),
            (Some("ok"), Some(0)),
            "{v}"
        );
        let ev = dispatch_to(&p, &users[..1], &unique("next"));
        p.route(&ev).await;
        let n = p.settled(ev["id"].as_str().unwrap()).await;
        let d = deliveries(&n, "u-50");
        assert_eq!(
            (d["sms"]["provider"].as_str(), d["sms"].get("failover_from")),
            (Some("http"), None),
            "{n}"
        );
        assert_eq!(gw.requests_to(&path).await.unwrap().len(), 8);
    }

    /// `app_sms_email` dispatches, SMS through the harness's gateway in `format`
    /// (password `s3cret-pw`): the path it is called on.
    async fn gateway_org(p: &Pipeline, format: &str) -> String {
        standard_org(p, json!({"dispatch": "app_sms_email"})).await;
        let path = format!("/{}", unique("gw"));
        let url = format!("{}{path}", flare_tests::gateway().url);
        p.admin(
            "PUT",
            "/v1/settings/sms/main",
            json!({"provider": "http", "format": format, "url": url,
                   "password": "s3cret-pw", "sender_number": "ACMEFIRE"}),
        )
        .await;
        path
    }

    /// `user` (SMS only, at `mobile`) and a dispatch to them, routed and settled: its id.
    async fn sms_dispatched(p: &Pipeline, user: &str, mobile: &str) -> String {
        p.user(user, "passive_reporter", Some(mobile), None, false)
            .await;
        let mut ev = p.event("incident-dispatched", &unique("sms"));
        ev["detail"]["recipient_ids"] = json!([user]);
        p.route(&ev).await;
        let id = ev["id"].as_str().unwrap().to_string();
        p.settled(&id).await;
        id
    }

    #[tokio::test]
    async fn a_signed_gateway_callback_finds_its_sms_in_dynamodb() {
        use flare_shared::domain::GatewayFormat;
        use flare_shared::domain::receipt::sign;
        let p = pipeline().await;
        let (gw, path) = (flare_tests::gateway(), gateway_org(&p, "json").await);
        let sid = unique("sid");
        gw.script(&path, json!([{"status": 200, "body": {"message_id": sid}}]))
            .await
            .unwrap();
        let id = &sms_dispatched(&p, "u-50", "+14155550150").await;
        let callback = |body: String, key: &str| {
            let url = format!("https://api.flare.example/v1/receipts/sms/{}/main", p.org);
            let sig = sign(GatewayFormat::Json, key.as_bytes(), &url, body.as_bytes());
            ApiRequest {
                method: "POST".into(),
                path: format!("/v1/receipts/sms/{}/main", p.org),
                query: None,
                claims: Err(flare_shared::app::auth::AuthFailure::NoToken),
                body: body.into_bytes(),
                idempotency_key: None,
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("x-flare-signature".into(), sig),
                ],
                url: Some(url),
                meta: Default::default(),
            }
        };
        let body =
            json!({"message_id": sid, "status": "undelivered", "error": "absent subscriber"})
                .to_string();
        let r = api::handle(&p.services, callback(body.clone(), "wrong")).await;
        assert_eq!(r.status, 401);
        let r = api::handle(&p.services, callback(body.clone(), "s3cret-pw")).await;
        assert_eq!(r.status, 204, "{:?}", r.body);
        let r = api::handle(&p.services, callback(body, "s3cret-pw")).await;
        assert_eq!(r.status, 204, "a replay");
        let n = p.notification(id).await;
        let d = deliveries(&n, "u-50");
        assert_eq!(
            (d["sms"]["status"].as_str(), d["sms"]["detail"].as_str()),
            (Some("undelivered"), Some("absent subscriber")),
            "{n}"
        );
    }

    /// v1.2 on DynamoDB: a dispatch SMS through a `twilio` gateway, then the responder's
    /// replies through the gateway's inbound webhook: a bad signature changes nothing,
    /// `1` records `responding` via `sms`, the same message again changes nothing, a
    /// later `2` replaces it, and a stranger's `1` changes nothing.
    #[tokio::test]
    async fn an_sms_reply_through_the_gateway_answers_the_dispatch_on_dynamodb() {
        use flare_shared::domain::GatewayFormat;
        use flare_shared::domain::receipt::sign;
        let p = pipeline().await;
        let (gw, path) = (flare_tests::gateway(), gateway_org(&p, "twilio").await);
        let id = &sms_dispatched(&p, "u-51", "+14155550151").await;
        let reply = |from: &str, text: &str, sid: &str, key: &str| {
            let url = format!("https://api.flare.example/v1/inbound/sms/{}/main", p.org);
            let body = format!(
                "From={}&To=ACMEFIRE&Body={text}&MessageSid={sid}",
                from.replace('+', "%2B")
            );
            let sig = sign(GatewayFormat::Twilio, key.as_bytes(), &url, body.as_bytes());
            ApiRequest {
                method: "POST".into(),
                path: format!("/v1/inbound/sms/{}/main", p.org),
                query: None,
                claims: Err(flare_shared::app::auth::AuthFailure::NoToken),
                body: body.into_bytes(),
                idempotency_key: None,
                headers: vec![
                    (
                        "content-type".into(),
                        "application/x-www-form-urlencoded".into(),
                    ),
                    ("x-twilio-signature".into(), sig),
                ],
                url: Some(url),
                meta: Default::default(),
            }
        };
        let answer = |n: &Value| recipient(n, "u-51")["response"].clone();
        let status = |r: flare_shared::app::api::ApiResponse| r.status;
        let u51 = "+14155550151";
        assert_eq!(
            status(api::handle(&p.services, reply(u51, "1", "SM-1", "wrong")).await),
            401
        );
        assert_eq!(answer(&p.notification(id).await), Value::Null);
        assert_eq!(
            status(api::handle(&p.services, reply(u51, "1", "SM-1", "s3cret-pw")).await),
            204
        );
        let n = p.notification(id).await;
        assert_eq!(answer(&n), "responding", "{n}");
        assert_eq!(recipient(&n, "u-51")["responded_via"], "sms");
        // The dispatch SMS told them how to reply, and the answer was confirmed.
        let bodies: Vec<String> = gw
            .requests_to(&path)
            .await
            .unwrap()
            .iter()
            .map(|r| {
                url::form_urlencoded::parse(r["body"].as_str().unwrap().as_bytes())
                    .find(|(k, _)| k == "Body")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(bodies.len(), 2, "{bodies:?}");
        assert!(
            bodies[0].contains("Reply 1 responding, 2 unavailable"),
            "{bodies:?}"
        );
        assert!(
            bodies[1].contains("recorded, you are responding"),
            "{bodies:?}"
        );
        // The provider's retry of the same message (whatever it says now): nothing twice.
        assert_eq!(
            status(api::handle(&p.services, reply(u51, "2", "SM-1", "s3cret-pw")).await),
            204
        );
        assert_eq!(answer(&p.notification(id).await), "responding");
        assert_eq!(
            status(api::handle(&p.services, reply(u51, " no ", "SM-2", "s3cret-pw")).await),
            204
        );
        assert_eq!(answer(&p.notification(id).await), "unavailable");
        // A number no dispatch SMS went to.
        let stranger = reply("+14155550999", "1", "SM-3", "s3cret-pw");
        assert_eq!(status(api::handle(&p.services, stranger).await), 204);
        assert_eq!(answer(&p.notification(id).await), "unavailable");
    }
}

/// Lanes and pacing on AWS: each channel's lanes are their own queues, polled by their
/// own functions' instances as Lambda's event source mappings would; a paced gateway's
/// schedule is shared by every instance through the log table.
mod lanes {
    use super::*;
    use flare_aws::pacer::DynamoPacer;
    use flare_shared::ports::Pacer;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    /// Lambda's event source mappings, running: `instances[lane]` warm instances per
    /// channel lane, each a function of its own, polling its lane's queue until stopped.
    struct Lambdas {
        stop: Arc<AtomicBool>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    }

    impl Lambdas {
        fn start(stack: &AwsStack, urgent: usize, normal: usize) -> Self {
            Self::start_waiting(stack, urgent, normal, flare_lambda::MAX_PACE_WAIT)
        }

        fn start_waiting(
            stack: &AwsStack,
            urgent: usize,
            normal: usize,
            max_pace_wait: Duration,
        ) -> Self {
            let stop = Arc::new(AtomicBool::new(false));
            let mut tasks = Vec::new();
            for (lane, count) in [(Lane::Urgent, urgent), (Lane::Normal, normal)] {
                for _ in 0..count {
                    let functions = delivery_functions_waiting(stack, max_pace_wait);
                    for c in Channel::ALL {
                        let f = functions[&c].clone();
                        let url = stack.queues[&(c, lane)].clone();
                        let sqs = aws::sqs(&stack.sdk);
                        let stop = stop.clone();
                        tasks.push(tokio::spawn(async move {
                            while !stop.load(Ordering::SeqCst) {
                                let out = sqs
                                    .receive_message()
                                    .queue_url(&url)
                                    .max_number_of_messages(10)
                                    .message_system_attribute_names(
                                        aws_sdk_sqs::types::MessageSystemAttributeName::All,
                                    )
                                    .send()
                                    .await
                                    .unwrap();
                                let messages = out.messages.unwrap_or_default();
                                if messages.is_empty() {
                                    // moto answers one request at a time: idle pollers
                                    // must leave it to the work.
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                    continue;
                                }
                                let event: SqsEvent = serde_json::from_value(
                                    flare_tests::queues::sqs_event_from(&messages, Some(&url)),
                                )
                                .unwrap();
                                let failed: Vec<String> = f
                                    .handle(event)
                                    .await
                                    .batch_item_failures
                                    .into_iter()
                                    .map(|f| f.item_identifier)
                                    .collect();
                                for m in &messages {
                                    if !failed.iter().any(|f| Some(f.as_str()) == m.message_id()) {
                                        // These queues hide nothing (visibility 0): a job
                                        // still being handled is handed to another instance
                                        // too (its claim keeps it from going twice), and that
                                        // receive voids this handle. Lambda's event source
                                        // mapping lives with that; so does this one.
                                        let deleted = sqs
                                            .delete_message()
                                            .queue_url(&url)
                                            .receipt_handle(m.receipt_handle().unwrap_or_default())
                                            .send()
                                            .await;
                                        if let Err(e) = deleted {
                                            eprintln!(
                                                "delete of a job received again meanwhile: {e}"
                                            );
                                        }
                                    }
                                }
                            }
                        }));
                    }
                }
            }
            Self { stop, tasks }
        }

        async fn stop(self) {
            self.stop.store(true, Ordering::SeqCst);
            for t in self.tasks {
                t.await.unwrap();
            }
        }
    }

    /// Polls notification `id` until nothing is pending (60 s at most).
    async fn settled(p: &Pipeline, id: &str) -> Value {
        settled_seeing(p, id, &mut |_| {}).await
    }

    /// The same, showing `look` each view on the way.
    async fn settled_seeing(p: &Pipeline, id: &str, look: &mut dyn FnMut(&Value)) -> Value {
        for _ in 0..240 {
            let n = p.notification(id).await;
            look(&n);
            let pending = n["recipients"].as_array().unwrap().iter().any(|r| {
                r["deliveries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d["status"] == "pending")
            });
            if !pending {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("{id} still pending: {}", p.notification(id).await);
    }

    /// The most requests `reqs` (gateway records) hold in any one second.
    fn busiest_second(reqs: &[Value]) -> usize {
        let mut at: Vec<f64> = reqs.iter().map(|r| r["at"].as_f64().unwrap()).collect();
        at.sort_by(f64::total_cmp);
        (0..at.len())
            .map(|i| at[i..].iter().take_while(|t| **t < at[i] + 1.0).count())
            .max()
            .unwrap_or(0)
    }

    /// A pipeline on a moto server of its own (the pollers' load, and a timing test,
    /// stay away from the other tests' server), under `comm`, whose main control center
    /// sends through the test gateway at `path`, limited to `rate` a second.
    async fn paced_gateway_org(
        comm: Value,
        tag: &str,
        rate: u32,
    ) -> (flare_tests::Moto, Pipeline, String) {
        gateway_org_with(comm, tag, json!({"max_per_second": rate})).await
    }

    /// The same with more gateway settings (`extra` adds or replaces fields).
    async fn gateway_org_with(
        comm: Value,
        tag: &str,
        extra: Value,
    ) -> (flare_tests::Moto, Pipeline, String) {
        let own = flare_tests::Moto::start().unwrap();
        let (p, path) = gateway_org_on(&own, comm, tag, extra).await;
        (own, p, path)
    }

    /// The same on `moto`.
    async fn gateway_org_on(
        moto: &flare_tests::Moto,
        comm: Value,
        tag: &str,
        extra: Value,
    ) -> (Pipeline, String) {
        let p = pipeline_on(moto).await;
        standard_org(&p, comm).await;
        let gw = flare_tests::gateway();
        let path = format!("/{}", unique(tag));
        let mut body = json!({"provider": "http", "url": format!("{}{path}", gw.url),
            "format": "json", "password": "s3cret-pw", "sender_number": "ACMEFIRE"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        p.admin("PUT", "/v1/settings/sms/main", body).await;
        (p, path)
    }

    async fn sms_only_users(p: &Pipeline, prefix: &str, count: usize, base: usize) -> Vec<String> {
        let mut users = Vec::new();
        for i in 0..count {
            let u = format!("u-{prefix}{i:03}");
            let phone = format!("+1415{:07}", base + i);
            p.user(&u, "passive_reporter", Some(&phone), None, false)
                .await;
            users.push(u);
        }
        users
    }

    /// A backlog longer than a send may wait for (a slow gateway, two bulk instances of
    /// ten jobs each): the jobs the pace has no moment for in time are postponed, queued
    /// again as new messages, and every SMS still ends `sent` on the gateway's pace.
    #[tokio::test]
    async fn jobs_a_slow_gateways_pace_cannot_take_in_time_are_postponed_and_all_sent() {
        let rate = 5;
        let comm = json!({"messages": "app_sms_email"});
        let (_own, p, path) = paced_gateway_org(comm, "slowpace", rate).await;
        let gw = flare_tests::gateway();
        let users = sms_only_users(&p, "s", 25, 5_580_000).await;
        let mut message = p.event("incident-message-posted", &unique("slowpace"));
        message["detail"]["recipient_ids"] = json!(users);
        // 20 jobs in flight at 5 a second: most would wait longer than the 1 s allowed.
        let lambdas = Lambdas::start_waiting(&p.stack, 1, 2, Duration::from_secs(1));
        p.route(&message).await;
        // A postponed SMS shows `pending` with reason `paced` until it is sent.
        let mut paced = std::collections::HashSet::new();
        let n = settled_seeing(&p, message["id"].as_str().unwrap(), &mut |n| {
            for u in &users {
                let d = &deliveries(n, u)["sms"];
                if d["status"] == "pending" && d["reason"] == "paced" {
                    paced.insert(u.clone());
                }
            }
        })
        .await;
        lambdas.stop().await;
        assert!(!paced.is_empty(), "nothing was seen postponed: {n}");
        for u in &users {
            let d = &deliveries(&n, u)["sms"];
            assert_eq!(
                (d["status"].as_str(), d["attempts"].as_u64()),
                (Some("sent"), Some(1)),
                "sent, the postponements not counted as attempts: {u}: {n}"
            );
        }
        let reqs = gw.requests_to(&path).await.unwrap();
        assert_eq!(reqs.len(), 25, "each SMS once");
        let busiest = busiest_second(&reqs);
        assert!(busiest <= rate as usize + 1, "{busiest} in one second");
    }

    /// A gateway answering 429 with `Retry-After: 1` for a while: the SMS functions
    /// wait instead of spending attempts, and nothing ends failed.
    #[tokio::test]
    async fn a_gateway_that_answers_429_slows_every_instance_down_and_nothing_fails() {
        let comm = json!({"messages": "app_sms_email"});
        let (_own, p, path) = paced_gateway_org(comm, "slow", 50).await;
        let gw = flare_tests::gateway();
        let slow_down = json!({"status": 429, "headers": {"Retry-After": "1"}});
        gw.script(&path, json!([slow_down, slow_down, slow_down, slow_down]))
            .await
            .unwrap();
        let users = sms_only_users(&p, "t", 12, 5_570_000).await;
        let mut message = p.event("incident-message-posted", &unique("slow"));
        message["detail"]["recipient_ids"] = json!(users);
        let lambdas = Lambdas::start(&p.stack, 1, 2);
        p.route(&message).await;
        let n = settled(&p, message["id"].as_str().unwrap()).await;
        lambdas.stop().await;
        for u in &users {
            let d = deliveries(&n, u);
            assert_eq!(
                (d["sms"]["status"].as_str(), d["sms"]["attempts"].as_u64()),
                (Some("sent"), Some(1)),
                "a 429 spends no attempt: {n}"
            );
        }
        let reqs = gw.requests_to(&path).await.unwrap();
        assert_eq!(reqs.iter().filter(|r| r["status"] == 429).count(), 4);
        assert_eq!(reqs.iter().filter(|r| r["status"] != 429).count(), 12);
    }

    /// Our own pace is no failure of the gateway: a bulk send postponed again and again
    /// by a gateway's `max_per_second` never fails over and leaves it healthy.
    #[tokio::test]
    async fn a_paced_bulk_send_with_failover_stays_on_its_gateway_on_aws() {
        let comm = json!({"messages": "app_sms_email"});
        let extra = json!({"failover": "sns", "max_per_second": 5});
        let (_own, p, path) = gateway_org_with(comm, "pacedfo", extra).await;
        let gw = flare_tests::gateway();
        // 30 SMS at 5 a second, six seconds of sending (60 took 35 s of the lanes'
        // 41 s run alone, and showed nothing more).
        let users = sms_only_users(&p, "q", 30, 5_590_000).await;
        let mut message = p.event("incident-message-posted", &unique("pacedfo"));
        message["detail"]["recipient_ids"] = json!(users);
        // 20 jobs in flight at 5 a second, 1 s allowed to wait: most are postponed.
        let lambdas = Lambdas::start_waiting(&p.stack, 1, 2, Duration::from_secs(1));
        p.route(&message).await;
        let n = settled(&p, message["id"].as_str().unwrap()).await;
        lambdas.stop().await;
        for u in &users {
            let d = &deliveries(&n, u)["sms"];
            assert_eq!(
                (
                    d["status"].as_str(),
                    d["provider"].as_str(),
                    d.get("failover_from")
                ),
                (Some("sent"), Some("http"), None),
                "{u}: {n}"
            );
        }
        assert_eq!(gw.requests_to(&path).await.unwrap().len(), 30);
        let v = p.admin("GET", "/v1/settings/sms/main", Value::Null).await;
        assert_eq!(
            (
                v["health"]["state"].as_str(),
                v["health"]["consecutive_failures"].as_u64()
            ),
            (Some("ok"), Some(0)),
            "{v}"
        );
    }

    /// A 429 asking for longer than an invocation may wait postpones the job on its
    /// queue for that long: no attempt spent, no failover, sent when the gateway said.
    #[tokio::test]
    async fn a_long_retry_after_postpones_the_job_and_spends_no_attempt_on_aws() {
        let comm = json!({"dispatch": "app_sms_email"});
        let (_own, p, path) = gateway_org_with(comm, "longwait", json!({"failover": "sns"})).await;
        let gw = flare_tests::gateway();
        gw.script(
            &path,
            json!([{"status": 429, "headers": {"Retry-After": "12"}}]),
        )
        .await
        .unwrap();
        let users = sms_only_users(&p, "w", 1, 5_591_000).await;
        let mut dispatch = p.event("incident-dispatched", &unique("longwait"));
        dispatch["detail"]["recipient_ids"] = json!(users);
        let lambdas = Lambdas::start(&p.stack, 1, 1);
        p.route(&dispatch).await;
        let n = settled(&p, dispatch["id"].as_str().unwrap()).await;
        lambdas.stop().await;
        let d = &deliveries(&n, &users[0])["sms"];
        assert_eq!(
            (
                d["status"].as_str(),
                d["provider"].as_str(),
                d["attempts"].as_u64()
            ),
            (Some("sent"), Some("http"), Some(1)),
            "{n}"
        );
        let reqs = gw.requests_to(&path).await.unwrap();
        assert_eq!(reqs.len(), 2, "{reqs:?}");
        let gap = reqs[1]["at"].as_f64().unwrap() - reqs[0]["at"].as_f64().unwrap();
        assert!(gap >= 11.9, "sent again {gap:.3} s after the 429");
    }

    /// The tests whose sends must go out within a set time, or ahead of others:
    /// scripts/test runs them alone (`lanes::timing::`), as a loaded machine would make
    /// them late. The ones above count outcomes (and a gateway's busiest second, which
    /// load only lowers), so they run with the rest of this file.
    mod timing {
        use super::*;

        /// Three instances pacing one provider at 20 a second through the table: no second
        /// holds more than 20 starts, and an urgent send asked for in the middle of the bulk
        /// one, by a fourth instance (in AWS the urgent lane is a function of its own), overtakes
        /// the bulk sends waiting (how long it waits is the benchmark's, not a test's: moto on
        /// this shared machine sets it).
        #[tokio::test]
        async fn instances_share_one_pace_and_urgent_sends_book_ahead_of_the_horizon() {
            let own = flare_tests::Moto::start().unwrap();
            let stack = AwsStack::create(&own).await.unwrap();
            let pacers: Vec<Arc<DynamoPacer>> = (0..4)
                .map(|_| {
                    Arc::new(DynamoPacer::new(
                        aws::dynamodb(&stack.sdk),
                        &stack.tables.log,
                    ))
                })
                .collect();
            let provider = unique("http#org#main");
            let rate = 20;
            let started = Instant::now();
            let mut bulk = Vec::new();
            for i in 0..90 {
                let pacer = pacers[i % 3].clone();
                let provider = provider.clone();
                bulk.push(tokio::spawn(async move {
                    pacer.acquire(&provider, rate, Lane::Normal).await;
                    started.elapsed().as_secs_f64()
                }));
            }
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let asked = Instant::now();
            pacers[3].acquire(&provider, rate, Lane::Urgent).await;
            let urgent_wait = asked.elapsed();
            let urgent_at = started.elapsed().as_secs_f64();
            let mut at = Vec::new();
            for b in bulk {
                at.push(b.await.unwrap());
            }
            // Asked for when about 20 of the 90 had started: it overtakes the 70 waiting but
            // the normal lane's horizon of them (about 6) and those moto's round trips let
            // go meanwhile (one request at a time, on a machine the other tests load: a CI
            // run saw 1.2 s, 23 sends, when the urgent send queued behind bulk ones in one
            // instance); without lanes it would go after all of them.
            let asked_at = urgent_at - urgent_wait.as_secs_f64();
            let waiting_when_asked = at.iter().filter(|t| **t > asked_at).count();
            let bulk_after = at.iter().filter(|t| **t > urgent_at).count();
            assert!(
                2 * bulk_after >= waiting_when_asked,
                "{bulk_after} of the {waiting_when_asked} bulk sends waiting went after the urgent one (it waited {urgent_wait:?})"
            );
            at.push(urgent_at);
            at.sort_by(f64::total_cmp);
            let busiest = (0..at.len())
                .map(|i| at[i..].iter().take_while(|t| **t < at[i] + 1.0).count())
                .max()
                .unwrap();
            // The slots are 5% longer than the rate's; a wake-up this loaded machine makes
            // late may still crowd one more into a second (the gateway tests tolerate it too).
            assert!(
                busiest <= rate as usize + 1,
                "{busiest} starts in one second"
            );
            // 91 starts at 20 a second (slots 5% longer): about 4.7 seconds.
            let span = at.last().unwrap() - at.first().unwrap();
            assert!(span >= 4.4, "91 starts in {span:.2} s");
            eprintln!("the urgent send waited {urgent_wait:?}");
        }

        /// At 3 a second or less one slot is longer than the normal lane's horizon: a normal
        /// send still books a busy schedule, right after the slot booked before it, instead
        /// of waiting for the schedule to run empty.
        #[tokio::test]
        async fn a_slow_pace_lets_the_normal_lane_book_a_busy_schedule() {
            let stack = AwsStack::create(moto()).await.unwrap();
            let a = DynamoPacer::new(aws::dynamodb(&stack.sdk), &stack.tables.log);
            let b = DynamoPacer::new(aws::dynamodb(&stack.sdk), &stack.tables.log);
            let provider = unique("http#org#main");
            let tat = || async {
                let item = aws::dynamodb(&stack.sdk)
                    .get_item()
                    .table_name(&stack.tables.log)
                    .key(
                        "pk",
                        aws_sdk_dynamodb::types::AttributeValue::S(format!("PACE#{provider}")),
                    )
                    .key(
                        "sk",
                        aws_sdk_dynamodb::types::AttributeValue::S("pace".into()),
                    )
                    .consistent_read(true)
                    .send()
                    .await
                    .unwrap()
                    .item
                    .unwrap();
                item["tat"].as_n().unwrap().parse::<u64>().unwrap()
            };
            let interval = flare_shared::ports::pace_interval(3).as_micros() as u64;
            // The schedule was empty: a's slot starts now.
            a.acquire(&provider, 3, Lane::Normal).await;
            let first = tat().await;
            // Busy with a's slot: b's starts where a's ends.
            b.acquire(&provider, 3, Lane::Normal).await;
            // Booked right after a's slot (or, were a request retried on a loaded moto, a
            // whole slot more): a whole number of slots on. Booked after the schedule ran
            // empty, it would start wherever b looked again, not on a slot boundary.
            let on = tat().await - first;
            assert!(
                on >= interval && on % interval == 0,
                "b booked {on} µs on: not the slot after a's"
            );
        }

        /// A 429's pause holds every instance: a send booked after it starts after it.
        #[tokio::test]
        async fn a_pause_holds_every_instance() {
            let stack = AwsStack::create(moto()).await.unwrap();
            let a = DynamoPacer::new(aws::dynamodb(&stack.sdk), &stack.tables.log);
            let b = DynamoPacer::new(aws::dynamodb(&stack.sdk), &stack.tables.log);
            let provider = unique("http#org#main");
            a.acquire(&provider, 50, Lane::Normal).await;
            b.acquire(&provider, 50, Lane::Normal).await;
            let paused = Instant::now();
            a.pause(&provider, Duration::from_millis(800)).await;
            b.acquire(&provider, 50, Lane::Urgent).await;
            assert!(
                paused.elapsed() >= Duration::from_millis(780),
                "another instance sent {:?} into an 800 ms pause",
                paused.elapsed()
            );
        }

        /// The issue's scenario on AWS: a bulk message through a gateway limited to R a
        /// second, then a dispatch; two bulk instances and one urgent instance.
        #[tokio::test]
        async fn a_dispatch_never_waits_behind_a_paced_bulk_message_on_aws() {
            let rate = 10;
            let comm = json!({"dispatch": "app_sms_email", "messages": "app_sms_email"});
            let (_own, p, path) = paced_gateway_org(comm, "paced", rate).await;
            let gw = flare_tests::gateway();
            let bulk = sms_only_users(&p, "b", 40, 5_550_000).await;
            p.user(
                "u-d1",
                "passive_reporter",
                Some("+14155569999"),
                None,
                false,
            )
            .await;
            let mut message = p.event("incident-message-posted", &unique("bulk"));
            message["detail"]["recipient_ids"] = json!(bulk);
            let lambdas = Lambdas::start(&p.stack, 1, 2);
            p.route(&message).await;
            // The bulk message is being paced out (40 at 10 a second: four seconds).
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let mut dispatch = p.event("incident-dispatched", &unique("dispatch"));
            dispatch["detail"]["recipient_ids"] = json!(["u-d1"]);
            let posted = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
            p.route(&dispatch).await;
            let n = settled(&p, dispatch["id"].as_str().unwrap()).await;
            assert_eq!(deliveries(&n, "u-d1")["sms"]["status"], "sent", "{n}");
            let n = settled(&p, message["id"].as_str().unwrap()).await;
            lambdas.stop().await;
            for u in &bulk {
                assert_eq!(deliveries(&n, u)["sms"]["status"], "sent", "{u}: {n}");
            }
            let reqs = gw.requests_to(&path).await.unwrap();
            assert_eq!(reqs.len(), 41);
            let at_dispatch = reqs
                .iter()
                .find(|r| r["body"].as_str().unwrap().contains("+14155569999"))
                .map(|r| r["at"].as_f64().unwrap())
                .unwrap();
            let waited = at_dispatch - posted;
            assert!(
                waited < 1.0,
                "the dispatch SMS reached the gateway {waited:.3} s after the event"
            );
            let bulk_after = reqs
                .iter()
                .filter(|r| r["at"].as_f64().unwrap() > at_dispatch)
                .count();
            assert!(
                bulk_after > 0,
                "the bulk message was over before the dispatch"
            );
            // One more than the rate tolerated: the gateway is a Python process noting each
            // arrival on a loaded machine (unpaced, the two instances send 20 at once).
            let busiest = busiest_second(&reqs);
            assert!(busiest <= rate as usize + 1, "{busiest} in one second");
        }

        /// Email has lanes too: a dispatch's email goes to the SMTP server while a bulk
        /// message's are still going out.
        #[tokio::test]
        async fn urgent_email_goes_before_a_bulk_message_on_aws() {
            // Its own moto: the pollers' load stays off the other tests' server.
            let own = flare_tests::Moto::start().unwrap();
            let p = pipeline_on(&own).await;
            standard_org(
                &p,
                json!({"dispatch": "app_sms_email", "messages": "app_sms_email"}),
            )
            .await;
            let smtp = p.email_through_the_smtp_sink().await;
            let tag = unique("lanes");
            let mut bulk = Vec::new();
            for i in 0..60 {
                let u = format!("u-m{i:03}");
                p.user(
                    &u,
                    "passive_reporter",
                    None,
                    Some(&format!("{u}-{tag}@acme.example")),
                    false,
                )
                .await;
                bulk.push(u);
            }
            let urgent_to = format!("urgent-{tag}@acme.example");
            p.user("u-d2", "passive_reporter", None, Some(&urgent_to), false)
                .await;
            let mut message = p.event("incident-message-posted", &unique("bulk"));
            message["detail"]["recipient_ids"] = json!(bulk);
            let mut dispatch = p.event("incident-dispatched", &unique("dispatch"));
            dispatch["detail"]["recipient_ids"] = json!(["u-d2"]);
            // Both queued before any instance runs: the bulk jobs are ahead of the dispatch.
            p.route(&message).await;
            p.route(&dispatch).await;
            let lambdas = Lambdas::start(&p.stack, 1, 1);
            settled(&p, dispatch["id"].as_str().unwrap()).await;
            let n = settled(&p, message["id"].as_str().unwrap()).await;
            lambdas.stop().await;
            for u in &bulk {
                assert_eq!(deliveries(&n, u)["email"]["status"], "sent", "{u}: {n}");
            }
            let got: Vec<String> = smtp
                .messages()
                .unwrap()
                .into_iter()
                .filter_map(|m| m["rcpt_tos"][0].as_str().map(str::to_string))
                .filter(|to| to.contains(&tag))
                .collect();
            assert_eq!(got.len(), 61);
            let place = got.iter().position(|to| *to == urgent_to).unwrap();
            assert!(
                place < 30,
                "the dispatch's email was number {} of 61 at the server",
                place + 1
            );
        }
    }
}
