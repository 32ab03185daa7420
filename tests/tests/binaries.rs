//! Every sample event in `events/` through the deployed binaries (arm64 release, as
//! `sam build` packages them, under qemu on other machines), each run under a Lambda
//! Runtime API emulator as Lambda runs it, with the environment `template.yaml` gives it
//! pointing at moto. Each response is checked, and so is its effect: items and secrets
//! written, jobs queued, SMS and email sent.

use flare_aws as aws;
use flare_shared::domain::{Channel, Lane};
use flare_tests::runtime::{self, LambdaProcess};
use flare_tests::stack::{AwsStack, DEFAULT_SENDER};
use flare_tests::{Moto, emf, workspace_root};
use serde_json::{Value, json};
use std::collections::HashMap;

const DISPATCH_ID: &str = "9f1c2d3e-0000-4000-8000-000000000001";

struct Deployment {
    stack: AwsStack,
    /// Each binary with exactly its variables, started on its first use
    /// ([`Deployment::f`]): a test starts only the functions it calls, two to five of
    /// the six (about 20 starts fewer over the file, 4.5 of qemu's 30.7 CPU s).
    functions: HashMap<&'static str, Function>,
}

struct Function {
    binary: runtime::Binary,
    env: Vec<(String, String)>,
    process: tokio::sync::OnceCell<LambdaProcess>,
}

/// This test binary's moto server: IAM enforced, as in AWS. The tests sign as an
/// administrator; each function binary signs with its own role's credentials, the role
/// `template.yaml` gives it (after the SAM transform), so a call its role does not allow
/// is refused here as it would be in AWS, and fails the test that made it
/// ([`LambdaProcess::call`] names the function and the action).
fn moto() -> &'static Moto {
    static MOTO: std::sync::OnceLock<Moto> = std::sync::OnceLock::new();
    MOTO.get_or_init(|| Moto::start_with_iam().unwrap_or_else(|e| panic!("{e:#}")))
}

/// The function each binary runs as (its lane's own for the delivery binaries: the
/// urgent lanes' roles are held to theirs by the template tests).
const ROLES: [(&str, &str); 6] = [
    ("flare-api", "ApiFunction"),
    ("flare-router", "RouterFunction"),
    ("flare-push", "PushFunction"),
    ("flare-sms", "SmsFunction"),
    ("flare-email", "EmailFunction"),
    ("flare-receipts", "ReceiptsFunction"),
];

/// A stack on moto and the six function binaries, each started with exactly its
/// function's variables in the env file `scripts/local-aws` writes for `sam local
/// invoke --env-vars` ([`AwsStack::function_env`]: `template.yaml`'s, resolved against
/// the stack, with `FLARE_AWS_ENDPOINT_URL` at moto; a variable a binary needs and the
/// template lacks fails here, and so does one the template gives and the file lacks),
/// plus what Lambda itself provides (region, its role's credentials).
async fn deploy() -> Deployment {
    deploy_without(&[]).await
}

/// The same, with `drop` taken out of the roles (`"SmsFunction:sqs:SendMessage"`);
/// `FLARE_TEST_IAM_DROP` (comma-separated, same form) takes more out of every test's,
/// to show which tests an action is needed by.
async fn deploy_without(drop: &[&str]) -> Deployment {
    let stack = AwsStack::create(moto()).await.unwrap();
    let ses = aws::sesv2(&stack.sdk);
    let _ = ses
        .create_email_identity()
        .email_identity("flare.example")
        .send()
        .await;
    let deployed = runtime::deployed_binaries().unwrap_or_else(|e| panic!("{e:#}"));
    let template = runtime::template_env().unwrap_or_else(|e| panic!("{e:#}"));
    let mut built: Vec<&str> = template.keys().map(String::as_str).collect();
    built.sort();
    let mut expected = runtime::FUNCTIONS.to_vec();
    expected.sort();
    assert_eq!(
        built, expected,
        "template.yaml builds exactly the function binaries"
    );
    let extra = std::env::var("FLARE_TEST_IAM_DROP").unwrap_or_default();
    let mut drop: Vec<&str> = drop.to_vec();
    drop.extend(extra.split(',').filter(|d| !d.is_empty()));
    let ids: Vec<&str> = ROLES.iter().map(|(_, id)| *id).collect();
    let roles = stack
        .roles(moto(), &ids, &drop)
        .unwrap_or_else(|e| panic!("{e:#}"));
    // Each binary gets exactly its function's variables from the env file
    // scripts/local-aws writes for `sam local invoke --env-vars` (resolved from the
    // template against this stack, FLARE_AWS_ENDPOINT_URL at moto), plus what Lambda
    // gives (region, its role's credentials).
    let env_file = stack
        .function_env(&moto().url)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let functions = runtime::FUNCTIONS
        .iter()
        .map(|&name| {
            let id = ROLES
                .iter()
                .find(|(b, _)| *b == name)
                .map(|(_, id)| *id)
                .unwrap_or_else(|| panic!("{name} runs as no function of the template"));
            let names = template
                .get(name)
                .unwrap_or_else(|| panic!("template.yaml has no function built as {name}"));
            let file = env_file
                .get(id)
                .unwrap_or_else(|| panic!("the env file has no {id}"));
            for n in names {
                assert!(
                    file.contains_key(n),
                    "template.yaml gives {id} ({name}) {n}; the env file lacks it"
                );
            }
            let mut env: Vec<(String, String)> =
                file.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            env.push(("AWS_REGION".into(), "us-east-1".into()));
            env.extend(roles[id].env());
            let f = Function {
                binary: deployed.binary(name),
                env,
                process: tokio::sync::OnceCell::new(),
            };
            (name, f)
        })
        .collect();
    Deployment { stack, functions }
}

fn sample(path: &str) -> Value {
    let path = workspace_root().join("events").join(path);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A sample API event with another method, path or body (same caller).
fn with(mut ev: Value, method: &str, path: &str, body: Option<Value>) -> Value {
    ev["rawPath"] = json!(path);
    ev["routeKey"] = json!(format!("{method} {path}"));
    ev["requestContext"]["http"]["method"] = json!(method);
    ev["requestContext"]["http"]["path"] = json!(path);
    match body {
        Some(b) => ev["body"] = json!(b.to_string()),
        None => {
            ev.as_object_mut().map(|o| o.remove("body"));
        }
    }
    ev
}

/// A failing test shows what each function logged.
impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (name, f) in self.started() {
                eprintln!("---- {name} logged:\n{}", f.log());
            }
        }
    }
}

impl Deployment {
    /// The function `name`, started (exec to its first Runtime API poll) on first use.
    async fn f(&self, name: &str) -> &LambdaProcess {
        let f = &self.functions[name];
        f.process
            .get_or_init(|| async {
                let p = LambdaProcess::start(&f.binary, &f.env)
                    .await
                    .unwrap_or_else(|e| panic!("{e:#}"));
                let startup = p.ready().await.unwrap_or_else(|e| panic!("{e:#}"));
                eprintln!("{name}: exec to first Runtime API poll {startup:?}");
                p
            })
            .await
    }

    /// The function `name`, which this test has already called.
    fn called(&self, name: &str) -> &LambdaProcess {
        self.functions[name]
            .process
            .get()
            .unwrap_or_else(|| panic!("{name} was never called in this test"))
    }

    /// The functions this test started, by name.
    fn started(&self) -> impl Iterator<Item = (&&'static str, &LambdaProcess)> {
        self.functions
            .iter()
            .filter_map(|(name, f)| f.process.get().map(|p| (name, p)))
    }

    /// An API Gateway v2 event through `flare-api`: status and JSON body.
    async fn api(&self, ev: &Value) -> (u16, Value) {
        let resp = self.f("flare-api").await.call(ev).await;
        let status = resp["statusCode"]
            .as_u64()
            .unwrap_or_else(|| panic!("not an API Gateway v2 response: {resp}"));
        let body = match resp["body"].as_str() {
            Some(b) if !b.is_empty() => {
                serde_json::from_str(b).unwrap_or_else(|e| panic!("body is not JSON ({e}): {b}"))
            }
            _ => Value::Null,
        };
        (status as u16, body)
    }

    async fn sample_api(&self, name: &str) -> (u16, Value) {
        self.api(&sample(&format!("api/{name}.json"))).await
    }

    async fn notification(&self, id: &str) -> Value {
        let ev = with(
            sample("api/list-users.json"),
            "GET",
            &format!("/v1/notifications/{id}"),
            None,
        );
        let (s, body) = self.api(&ev).await;
        assert_eq!(s, 200, "{body}");
        body
    }

    async fn route(&self, ev: &Value) -> Value {
        self.f("flare-router").await.call(ev).await
    }

    /// Both lanes' jobs of a channel.
    async fn depth(&self, c: Channel) -> u64 {
        let mut n = 0;
        for l in Lane::ALL {
            n += self.stack.depth(&self.stack.queues[&(c, l)]).await.unwrap();
        }
        n
    }

    /// What Lambda's SQS event source mapping does, with the real binaries.
    async fn drain(&self) {
        flare_tests::queues::drain(&self.stack.sdk, &self.stack.queues, |c, event| async move {
            let resp = self
                .f(&format!("flare-{}", c.as_str()))
                .await
                .call(&event)
                .await;
            resp["batchItemFailures"]
                .as_array()
                .unwrap_or_else(|| panic!("not an SQS batch response: {resp}"))
                .iter()
                .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_string))
                .collect()
        })
        .await
        .unwrap();
    }

    /// Every item of a table, as text (for "no secret in any item").
    async fn scan(&self, table: &str) -> String {
        let out = aws::dynamodb(&self.stack.sdk)
            .scan()
            .table_name(table)
            .send()
            .await
            .unwrap();
        format!("{:?}", out.items())
    }

    /// The organization the incident samples are for: the sample's communication settings
    /// (dispatch app_then_sms_email, messages app_only, distress on), Ana (u-17) with her
    /// phone registered and then switched off, SMS through SNS.
    async fn incident_org(&self) {
        assert_eq!(self.sample_api("put-communication-settings").await.0, 200);
        assert_eq!(self.sample_api("put-user").await.0, 200);
        // A token of its own: moto's SNS refuses a token another story registered.
        let token = format!("fcm-{}", uuid::Uuid::new_v4().simple());
        let device = with(
            sample("api/post-device.json"),
            "POST",
            "/v1/users/u-17/devices",
            Some(json!({"platform": "fcm", "token": token})),
        );
        assert_eq!(self.api(&device).await.0, 201);
        let endpoint = self
            .stack
            .fcm_endpoint(&token)
            .await
            .expect("the device is an SNS platform endpoint");
        let sns = aws::sns(&self.stack.sdk);
        sns.set_endpoint_attributes()
            .endpoint_arn(&endpoint)
            .attributes("Enabled", "false")
            .send()
            .await
            .unwrap();
        let sns_sms = with(
            sample("api/put-sms-settings.json"),
            "PUT",
            "/v1/settings/sms/main",
            Some(json!({"provider": "sns", "sender_number": "ACMEFIRE"})),
        );
        assert_eq!(self.api(&sns_sms).await.0, 200);
    }

    /// No secret in any function's output, and every line is JSON (CloudWatch).
    fn assert_logs_clean(&self) {
        for (name, f) in self.started() {
            let refused = f.iam_refusals();
            assert!(
                refused.is_empty(),
                "{name}: IAM refused calls its role in template.yaml does not allow:\n{}",
                refused.join("\n")
            );
        }
        let logs = self.logs();
        assert!(!logs.contains("s3cret-pw") && !logs.contains("abc123"));
        for line in logs.lines() {
            assert!(
                serde_json::from_str::<Value>(line).is_ok(),
                "not a JSON log line: {line}"
            );
        }
    }

    fn logs(&self) -> String {
        self.started().map(|(_, f)| f.log()).collect()
    }
}

async fn sms_to(number: &str, text: &str) -> usize {
    moto()
        .sent_sms()
        .await
        .unwrap()
        .iter()
        .filter(|m| {
            m["phone_number"] == number && m["message"].as_str().is_some_and(|s| s.contains(text))
        })
        .count()
}

async fn email_to(address: &str, text: &str) -> Vec<Value> {
    moto()
        .sent_email()
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m["destinations"].to_string().contains(address) && m.to_string().contains(text))
        .collect()
}

fn delivery<'a>(n: &'a Value, user: &str, channel: &str) -> &'a Value {
    n["recipients"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["user_id"] == user))
        .and_then(|r| r["deliveries"].as_array())
        .and_then(|ds| ds.iter().find(|d| d["channel"] == channel))
        .unwrap_or_else(|| panic!("no {channel} delivery for {user} in {n}"))
}

fn no_pending(n: &Value) {
    for r in n["recipients"].as_array().unwrap() {
        for d in r["deliveries"].as_array().unwrap() {
            assert_ne!(d["status"], "pending", "{r}");
        }
    }
}

#[tokio::test]
async fn settings_samples_keep_their_secrets_in_secrets_manager_only() {
    let d = deploy().await;
    // ---- events/api: settings, with their secrets in Secrets Manager only.
    let (s, body) = d.sample_api("put-sms-settings").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        (body["http_header"].as_str(), body["password_set"].as_bool()),
        (Some("X-Api-Key: ****"), Some(true))
    );
    assert_eq!(
        d.stack.secrets_under("acme/sms/main/password").await,
        ["s3cret-pw"]
    );
    assert_eq!(
        d.stack.secrets_under("acme/sms/main/header-value").await,
        ["abc123"]
    );
    let (s, body) = d.sample_api("get-sms-settings").await;
    assert_eq!(
        (s, body["sender_number"].as_str()),
        (200, Some("+15551234567"))
    );
    let (s, body) = d.sample_api("list-sms-settings").await;
    assert_eq!((s, body.as_array().map(Vec::len)), (200, Some(1)));
    let (s, body) = d.sample_api("put-email-settings").await;
    assert_eq!(
        (s, body["smtp"]["password_set"].as_bool()),
        (200, Some(true))
    );
    assert_eq!(
        d.stack.secrets_under("acme/smtp/password").await,
        ["s3cret-pw"]
    );
    let (s, body) = d.sample_api("get-email-settings").await;
    assert_eq!((s, body["provider"].as_str()), (200, Some("smtp")));
    let (s, body) = d.sample_api("get-communication-settings").await;
    assert_eq!(
        (s, body["dispatch"].as_str()),
        (200, Some("app_then_sms_email")),
        "the defaults before any PUT"
    );
    let (s, body) = d.sample_api("put-communication-settings").await;
    assert_eq!((s, body["messages"].as_str()), (200, Some("app_only")));
    let (s, body) = d.sample_api("get-settings").await;
    assert_eq!(s, 200, "a dispatcher reads settings: {body}");
    assert_eq!(
        (
            body["sms"][0]["control_center_id"].as_str(),
            body["email"]["sender_email"].as_str(),
            body["communication"]["distress"].as_bool()
        ),
        (Some("main"), Some("alerts@acme.example"), Some(true))
    );
    let settings_items = d.scan(&d.stack.tables.settings).await;
    assert!(
        settings_items.contains("SMS#main") && settings_items.contains("COMMUNICATION"),
        "{settings_items}"
    );
    assert!(
        !settings_items.contains("s3cret-pw") && !settings_items.contains("abc123"),
        "no secret in a settings item"
    );
    let (s, _) = d.sample_api("delete-sms-settings").await;
    assert_eq!(s, 204);
    assert!(
        d.stack
            .secrets_under("acme/sms/main/password")
            .await
            .is_empty()
    );
    assert!(
        d.stack
            .secrets_under("acme/sms/main/header-value")
            .await
            .is_empty()
    );
    let (s, body) = d.sample_api("get-sms-settings").await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (s, _) = d.sample_api("delete-email-settings").await;
    assert_eq!(s, 204);
    assert!(d.stack.secrets_under("acme/smtp/password").await.is_empty());

    // ---- v1.2: each write is in the audit trail (appended by the API's role as the
    // template grants it: put and read only), chained, and no secret in its table.
    let (s, body) = d.sample_api("list-audit").await;
    assert_eq!(s, 200, "{body}");
    let targets: Vec<&str> = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["target"].as_str())
        .collect();
    assert_eq!(
        targets,
        [
            "/v1/settings/email",
            "/v1/settings/sms/main",
            "/v1/settings/communication",
            "/v1/settings/email",
            "/v1/settings/sms/main",
        ],
        "{body}"
    );
    let (s, body) = d.sample_api("verify-audit").await;
    assert_eq!((s, body), (200, json!({"entries": 5, "intact": true})));
    let audit_items = d.scan(&d.stack.audit_table).await;
    assert!(
        audit_items.contains("password"),
        "the secrets are named: {audit_items}"
    );
    assert!(
        !audit_items.contains("s3cret-pw") && !audit_items.contains("abc123"),
        "no secret in an audit item"
    );

    d.assert_logs_clean();
}

#[tokio::test]
async fn directory_samples_register_devices_as_sns_endpoints() {
    let d = deploy().await;
    // ---- events/api: the directory, devices as SNS platform endpoints.
    let (s, body) = d.sample_api("put-user").await;
    assert_eq!(
        (s, body["license"].as_str()),
        (200, Some("basic_responder"))
    );
    let (s, body) = d.sample_api("get-user-self").await;
    assert_eq!((s, body["name"].as_str()), (200, Some("Ana Silva")));
    let (s, body) = d.sample_api("post-device").await;
    assert_eq!(s, 201, "{body}");
    let (s, body) = d.sample_api("list-users").await;
    assert_eq!(s, 200);
    assert!(
        body[0]["devices"][0].get("token").is_none(),
        "tokens are not shown"
    );
    let (s, _) = d.sample_api("delete-user").await;
    assert_eq!(s, 204);
    assert_eq!(d.sample_api("get-user-self").await.0, 404);
    assert!(
        !d.scan(&d.stack.tables.directory)
            .await
            .contains("USER#u-17")
    );

    d.assert_logs_clean();
}

/// The incident-dispatched sample, replayed, then the sample SQS batches: the push fails on
/// the disabled endpoint, and SMS and email go once each as fallback.
#[tokio::test]
async fn a_dispatch_whose_push_fails_falls_back_to_sms_and_email_once() {
    let d = deploy().await;
    d.incident_org().await;

    // ---- events/incidents/incident-dispatched: u-17 by push first, SMS and email held;
    // u-18 and u-19 are not in the directory.
    let dispatched = sample("incidents/incident-dispatched.json");
    let out = d.route(&dispatched).await;
    assert_eq!(
        out,
        json!({"outcome": "routed", "notification_id": DISPATCH_ID, "replay": false,
               "recipients": 3, "records_written": 9, "jobs_enqueued": 1})
    );
    assert_eq!(
        (
            d.depth(Channel::Push).await,
            d.depth(Channel::Sms).await,
            d.depth(Channel::Email).await
        ),
        (1, 0, 0),
        "one push job; SMS and email wait for the push"
    );
    let out = d.route(&dispatched).await;
    assert_eq!(
        (out["replay"].as_bool(), out["records_written"].as_u64()),
        (Some(true), Some(0)),
        "the same event again is a replay: {out}"
    );

    // ---- events/sqs/push-batch: the push fails on the disabled endpoint, SMS and
    // email are released as fallback.
    let resp = d
        .f("flare-push")
        .await
        .call(&sample("sqs/push-batch.json"))
        .await;
    assert_eq!(resp, json!({"batchItemFailures": []}));
    assert_eq!(
        (d.depth(Channel::Sms).await, d.depth(Channel::Email).await),
        (1, 1),
        "fallback SMS and email queued"
    );
    let failure_logged = d.called("flare-push").log().lines().any(|l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| {
            v["message"] == "delivery failed"
                && v["notification_id"] == DISPATCH_ID
                && v["channel"] == "push"
        })
    });
    assert!(
        failure_logged,
        "the JSON line the template's failure alarm counts:\n{}",
        d.called("flare-push").log()
    );

    // ---- events/sqs/sms-batch and email-batch: the fallback jobs, as SQS hands them.
    let resp = d
        .f("flare-sms")
        .await
        .call(&sample("sqs/sms-batch.json"))
        .await;
    assert_eq!(resp, json!({"batchItemFailures": []}));
    assert_eq!(sms_to("+14155550100", "Engine 7 to 12 Main St").await, 1);
    let resp = d
        .f("flare-email")
        .await
        .call(&sample("sqs/email-batch.json"))
        .await;
    assert_eq!(resp, json!({"batchItemFailures": []}));
    let emails = email_to("ana@example.org", "Engine 7 to 12 Main St").await;
    assert_eq!(emails.len(), 1, "{emails:?}");
    assert_eq!(emails[0]["source"], DEFAULT_SENDER, "the default account");

    // The queued copies of those jobs (and the replay's push job) are duplicates now.
    d.drain().await;
    assert_eq!(sms_to("+14155550100", "Engine 7 to 12 Main St").await, 1);
    assert_eq!(
        email_to("ana@example.org", "Engine 7 to 12 Main St")
            .await
            .len(),
        1
    );
    let n = d.notification(DISPATCH_ID).await;
    no_pending(&n);
    let push = delivery(&n, "u-17", "push");
    assert_eq!(
        (push["status"].as_str(), push["reason"].as_str()),
        (Some("failed"), Some("endpoint_disabled"))
    );
    for ch in ["sms", "email"] {
        let x = delivery(&n, "u-17", ch);
        assert_eq!(
            (
                x["status"].as_str(),
                x["fallback"].as_bool(),
                x["fallback_reason"].as_str()
            ),
            (Some("sent"), Some(true), Some("push_failed")),
            "{x}"
        );
    }
    assert_eq!(delivery(&n, "u-18", "sms")["reason"], "unknown_user");

    // ---- The metrics: every EMF line is one CloudWatch accepts, and they count what
    // the notification view shows.
    let metrics = |f: &str| -> Vec<Value> {
        d.called(f)
            .log()
            .lines()
            .filter(|l| emf::is_emf(l))
            .map(|l| emf::check(l).unwrap_or_else(|e| panic!("{f}: {e}: {l}")))
            .collect()
    };
    let router = metrics("flare-router");
    let recipients: Vec<&Value> = router
        .iter()
        .filter(|m| m.get("Recipients").is_some())
        .collect();
    assert_eq!(recipients.len(), 1, "the replay is not counted: {router:?}");
    assert_eq!(
        (
            recipients[0]["Recipients"].as_f64(),
            recipients[0]["Category"].as_str()
        ),
        (Some(3.0), Some("dispatch"))
    );
    let skipped_records = n["recipients"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["deliveries"].as_array().into_iter().flatten())
        .filter(|x| x["status"] == "skipped")
        .count();
    let skipped = router.iter().filter(|m| m.get("Skipped").is_some()).count();
    assert!(skipped > 0);
    assert_eq!(
        skipped, skipped_records,
        "one Skipped per skipped record: {router:?}"
    );
    let push = metrics("flare-push");
    assert_eq!(push.len(), 1, "{push:?}");
    assert_eq!(
        (
            push[0]["Failed"].as_f64(),
            push[0]["Channel"].as_str(),
            push[0]["Provider"].as_str()
        ),
        (Some(1.0), Some("push"), Some("sns"))
    );
    // The SMS's segments are a line of their own beside its `Sent`, once too (v1.2).
    let (segments, sms): (Vec<Value>, Vec<Value>) = metrics("flare-sms")
        .into_iter()
        .partition(|m| m.get("SmsSegments").is_some());
    assert_eq!(
        sms.len(),
        1,
        "the duplicate job sent nothing and counted nothing: {sms:?}"
    );
    assert_eq!(segments.len(), 1, "{segments:?}");
    assert_eq!(
        (
            segments[0]["SmsSegments"].as_f64(),
            segments[0]["Provider"].as_str(),
            segments[0]["ControlCenter"].as_str()
        ),
        (Some(1.0), Some("sns"), Some("north"))
    );
    assert_eq!(
        (
            sms[0]["Sent"].as_f64(),
            sms[0]["Fallback"].as_f64(),
            sms[0]["Channel"].as_str()
        ),
        (Some(1.0), Some(1.0), Some("sms"))
    );
    // The sample job carries its event's time (a day before now, or more).
    let latency = sms[0]["DeliveryLatencyMs"].as_f64().unwrap_or_default();
    assert!(latency > 3_600_000.0, "{:?}", sms[0]);
    let email = metrics("flare-email");
    assert_eq!(email.len(), 1, "{email:?}");
    assert_eq!(
        (email[0]["Sent"].as_f64(), email[0]["Provider"].as_str()),
        (Some(1.0), Some("ses"))
    );

    // ---- Each delivery line names the job's fields once, at the JSON line's top level.
    for f in ["flare-push", "flare-sms", "flare-email"] {
        let log = d.called(f).log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"message\":\"delivery "))
            .collect();
        assert!(!lines.is_empty(), "{f}: no delivery line:\n{log}");
        for line in lines {
            for field in ["notification_id", "channel", "recipient", "attempts"] {
                assert_eq!(
                    line.matches(&format!("\"{field}\":")).count(),
                    1,
                    "{f}: {field} once: {line}"
                );
            }
        }
    }

    d.assert_logs_clean();
}

#[tokio::test]
async fn the_other_incident_samples_route_by_their_category() {
    let d = deploy().await;
    d.incident_org().await;

    // ---- events/incidents: the other three.
    let posted = sample("incidents/incident-message-posted.json");
    assert_eq!(d.route(&posted).await["outcome"], "routed");
    let contacts = sample("incidents/incident-contacts-notified.json");
    assert_eq!(d.route(&contacts).await["outcome"], "routed");
    let sos = sample("incidents/sos-raised.json");
    assert_eq!(d.route(&sos).await["outcome"], "routed");
    d.drain().await;

    // A message under app_only: push only, no fallback.
    let n = d
        .notification(posted["id"].as_str().unwrap_or_default())
        .await;
    no_pending(&n);
    assert_eq!(delivery(&n, "u-17", "push")["status"], "failed");
    assert_eq!(delivery(&n, "u-17", "sms")["reason"], "not_in_method");
    assert_eq!(sms_to("+14155550100", "Second alarm requested").await, 0);
    // Incident contacts under app_sms_email: the user and the non-user contact.
    assert_eq!(sms_to("+14155550100", "east exit").await, 1);
    assert_eq!(sms_to("+14155550177", "east exit").await, 1);
    assert_eq!(
        email_to("manager@building.example", "east exit")
            .await
            .len(),
        1
    );
    // SOS with distress on: the creator's emergency contact.
    assert_eq!(sms_to("+351912345678", "pressed SOS").await, 1);
    assert_eq!(email_to("rui@example.org", "pressed SOS").await.len(), 1);

    d.assert_logs_clean();
}

#[tokio::test]
async fn a_malformed_event_is_dropped_not_failed() {
    let d = deploy().await;
    d.incident_org().await;
    // EventBridge would retry a failure, and a malformed event never gets better.
    let mut bad = sample("incidents/incident-dispatched.json");
    bad["detail"]["recipient_ids"] = json!("u-17");
    let out = d.route(&bad).await;
    assert_eq!(out["outcome"], "dropped", "{out}");
    assert_eq!(
        (d.depth(Channel::Push).await, d.depth(Channel::Sms).await),
        (0, 0),
        "nothing queued"
    );
    d.assert_logs_clean();
}

#[tokio::test]
async fn a_function_missing_a_variable_stops_at_start_naming_it() {
    let deployed = runtime::deployed_binaries().unwrap_or_else(|e| panic!("{e:#}"));
    let f = LambdaProcess::start(&deployed.binary("flare-sms"), &[])
        .await
        .unwrap();
    let err = f
        .ready()
        .await
        .expect_err("flare-sms needs its tables and queues");
    let text = format!("{err:#}");
    assert!(text.contains("FLARE_SETTINGS_TABLE"), "{text}");
    // Nothing was invoked: the Runtime API saw no poll.
    assert!(f.startup().is_none());
    let invoked = f.invoke(&json!({})).await;
    assert!(
        invoked.is_err(),
        "an exited function answers nothing: {invoked:?}"
    );
}

/// The fault-injection points (`flare_shared::faults`) are compiled out of what is
/// deployed: only the tests' dev-dependency turns the feature on, and without it the
/// crash point's code (and its marker text) is not in the binary.
#[test]
fn the_deployed_binaries_contain_no_fault_injection() {
    let deployed = runtime::deployed_binaries().unwrap_or_else(|e| panic!("{e:#}"));
    let marker = flare_shared::faults::MARKER.as_bytes();
    for name in runtime::FUNCTIONS {
        let path = deployed.bootstrap(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            bytes.len() > 1_000_000,
            "{} is a real binary",
            path.display()
        );
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker),
            "{} contains the fault-injection code",
            path.display()
        );
    }
}

#[test]
fn the_emf_checker_passes_the_specifications_example_and_refuses_broken_documents() {
    let ok = r#"{"_aws":{"Timestamp":1574109732004,"CloudWatchMetrics":[{"Namespace":"lambda-function-metrics","Dimensions":[["functionVersion"]],"Metrics":[{"Name":"time","Unit":"Milliseconds","StorageResolution":60}]}]},"functionVersion":"$LATEST","time":100,"requestId":"989ffbf8"}"#;
    assert!(emf::check(ok).is_ok(), "{:?}", emf::check(ok));
    for (broken, why) in [
        (ok.replace("1574109732004", "\"now\""), "timestamp"),
        (ok.replace(r#""time":100"#, r#""time":"100""#), "value"),
        (
            ok.replace(r#""functionVersion":"$LATEST","#, ""),
            "dimension",
        ),
        (ok.replace("Milliseconds", "Millis"), "unit"),
        (
            ok.replace(r#""StorageResolution":60"#, r#""StorageResolution":5"#),
            "resolution",
        ),
        (ok.replace("lambda-function-metrics", ""), "namespace"),
    ] {
        assert!(emf::check(&broken).is_err(), "{why}: {broken}");
    }
}

/// events/receipts through the release binaries: the SES and SNS samples through
/// `flare-receipts` (one moves a sent email it matches to `delivered`, the others name
/// nothing Flare sent and are dropped), and the signed Twilio callback through
/// `flare-api`, which verifies it with the control center's stored gateway password.
#[tokio::test]
async fn receipt_samples_reach_their_deliveries() {
    use flare_aws::log::DynamoDeliveryLog;
    use flare_shared::domain::receipt::ReceiptKey;
    use flare_shared::domain::*;
    use flare_shared::ports::{DeliveryLog, Finish};
    let d = deploy().await;
    // A sent email whose SES message id is the sample's, as the email function records it.
    let log = DynamoDeliveryLog::new(aws::dynamodb(&d.stack.sdk), &d.stack.tables.log);
    let org = OrgId::parse("acme").unwrap();
    let n = flare_tests::conformance::notification(&org);
    let mut record = flare_tests::conformance::record(&n, "u-17", Channel::Email, false);
    record.destination = Some(Destination::Email(
        EmailAddress::parse("ana@example.org").unwrap(),
    ));
    record.provider = Some(Provider::Ses);
    log.create_notification(&n).await.unwrap();
    log.put_first_records(&n, &[record.clone()]).await.unwrap();
    let who = record.recipient.clone();
    let lease = std::time::Duration::from_secs(60);
    log.claim(&org, &n.notification_id, &who, record.slot(), lease)
        .await
        .unwrap();
    let ses_delivery = sample("receipts/ses-delivery.json");
    let mid = ses_delivery["detail"]["mail"]["messageId"]
        .as_str()
        .unwrap();
    assert!(
        log.finish(
            &org,
            &n.notification_id,
            &who,
            record.slot(),
            Finish::Sent {
                attempt: 1,
                provider: Provider::Ses,
                provider_message_id: Some(mid.to_string()),
                receipt_key: Some(ReceiptKey::global(Provider::Ses, mid)),
                failover_from: None,
                sms: None,
            }
        )
        .await
        .unwrap()
    );

    let receipts = d.f("flare-receipts").await;
    let out = receipts.call(&ses_delivery).await;
    assert_eq!(out["applied"], 1, "{out}");
    let stored = log
        .get_notification(&org, &n.notification_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.records[0].status, DeliveryStatus::Delivered);
    assert_eq!(
        receipts.call(&ses_delivery).await["unchanged"],
        1,
        "a repeat"
    );
    // The bounce and the SNS lines name messages this stack never sent.
    assert_eq!(
        receipts.call(&sample("receipts/ses-bounce.json")).await["unknown"],
        1
    );
    let out = receipts.call(&sample("receipts/sns-sms-status.json")).await;
    assert_eq!(
        out["unknown"], 2,
        "both lines decoded from the gzip payload: {out}"
    );

    // v1.2: End User Messaging's inbound SMS (its SNS topic): the sample's `2` from
    // +14155550119 answers the dispatch SMS SNS sent that number (remembered as the SMS
    // function does), and the confirmation goes back through SNS (the role's
    // sns:Publish); the same message again changes nothing.
    let from = PhoneNumber::parse("+14155550119").unwrap();
    let sent = flare_shared::ports::SmsSent {
        notification_id: n.notification_id.clone(),
        user_id: UserId::parse("u-17").unwrap(),
        at: chrono::Utc::now(),
        org_id: Some(org.clone()),
        control_center_id: Some(ControlCenterId::main()),
        incident_id: Some("inc-eum".into()),
    };
    log.remember_sms(None, &from, &sent).await.unwrap();
    let reply = sample("inbound/end-user-messaging-reply.json");
    assert_eq!(receipts.call(&reply).await["replies"], 1);
    let stored = log
        .get_notification(&org, &n.notification_id)
        .await
        .unwrap()
        .unwrap();
    let answer = stored
        .responses
        .iter()
        .find(|(u, _)| u.as_str() == "u-17")
        .map(|(_, r)| (r.answer, r.via));
    assert_eq!(answer, Some((Answer::Unavailable, AnsweredVia::Sms)));
    assert_eq!(
        sms_to("+14155550119", "recorded, you are unavailable (inc-eum)").await,
        1
    );
    assert_eq!(receipts.call(&reply).await["replies"], 1);
    assert_eq!(
        sms_to("+14155550119", "recorded, you are unavailable (inc-eum)").await,
        1,
        "a repeat"
    );

    // v1.2: a response link (stored as the SMS function stores it) through `flare-api`:
    // the GET is a page and changes nothing, the POST records the answer by link.
    let code = LinkCode::from_random(*uuid::Uuid::new_v4().as_bytes());
    log.put_link(&ResponseLink {
        digest: code.digest(),
        org_id: org.clone(),
        notification_id: n.notification_id.clone(),
        user_id: UserId::parse("u-17").unwrap(),
        title: "Structure fire".into(),
        text: "Engine 7 to 12 Main St.".into(),
        expires_at: chrono::Utc::now() + LINK_VALIDITY,
    })
    .await
    .unwrap();
    let page = |method: &str, path: &str, form: Option<&str>| {
        let mut ev = with(sample("api/list-users.json"), method, path, None);
        ev["routeKey"] = json!(format!("{method} /r/{{code}}"));
        if let Some(f) = form {
            ev["body"] = json!(f);
            ev["headers"]["content-type"] = json!("application/x-www-form-urlencoded");
        }
        ev
    };
    let answer_of = |logged: &flare_shared::ports::Logged| {
        logged
            .responses
            .iter()
            .find(|(u, _)| u.as_str() == "u-17")
            .map(|(_, r)| (r.answer, r.via))
    };
    let path = format!("/r/{}", code.as_str());
    let resp = d.f("flare-api").await.call(&page("GET", &path, None)).await;
    assert_eq!(resp["statusCode"], 200, "{resp}");
    assert_eq!(
        resp["headers"]["content-type"], "text/html; charset=utf-8",
        "{resp}"
    );
    assert!(
        resp["body"]
            .as_str()
            .unwrap()
            .contains("<h1>Structure fire</h1>"),
        "{resp}"
    );
    let answer_now = || async {
        let stored = log.get_notification(&org, &n.notification_id).await;
        answer_of(&stored.unwrap().unwrap())
    };
    assert_eq!(
        answer_now().await,
        Some((Answer::Unavailable, AnsweredVia::Sms)),
        "the GET changed nothing"
    );
    let resp = d
        .f("flare-api")
        .await
        .call(&page("POST", &path, Some("response=responding")))
        .await;
    assert_eq!(resp["statusCode"], 200, "{resp}");
    assert!(
        resp["body"]
            .as_str()
            .unwrap()
            .contains("Recorded: you are responding"),
        "{resp}"
    );
    assert_eq!(
        answer_now().await,
        Some((Answer::Responding, AnsweredVia::Link))
    );
    let unknown = page("GET", "/r/0000000000000000", None);
    assert_eq!(
        d.f("flare-api").await.call(&unknown).await["statusCode"],
        404
    );

    // The Twilio callback: north's gateway signs with its stored password `s3cret-pw`.
    let put = with(
        sample("api/put-sms-settings.json"),
        "PUT",
        "/v1/settings/sms/north",
        Some(
            json!({"provider": "http", "url": "https://sms.example.com/send", "format": "twilio",
                    "password": "s3cret-pw", "sender_number": "+15551234567"}),
        ),
    );
    assert_eq!(d.api(&put).await.0, 200);
    let callback = sample("receipts/twilio-callback.json");
    let (s, body) = d.api(&callback).await;
    assert_eq!(s, 404, "verified, and no delivery has this sid: {body}");
    let mut forged = callback.clone();
    forged["body"] = json!(
        callback["body"]
            .as_str()
            .unwrap()
            .replace("undelivered", "delivered")
    );
    let (s, body) = d.api(&forged).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );

    // v1.2: a Twilio inbound message (a reply `1`) to north's gateway, signed with the
    // same password: verified and read (no dispatch SMS went to its sender: nothing
    // changes), and the same body with another text is refused.
    let reply = sample("inbound/twilio-reply.json");
    let (s, body) = d.api(&reply).await;
    assert_eq!(
        s, 204,
        "verified, from a number no dispatch went to: {body}"
    );
    let (s, _) = d.api(&reply).await;
    assert_eq!(s, 204, "the gateway's retry");
    let mut forged = reply.clone();
    forged["body"] = json!(reply["body"].as_str().unwrap().replace("Body=1", "Body=2"));
    let (s, body) = d.api(&forged).await;
    assert_eq!(s, 401, "{body}");
}

/// The IAM check bites: a router whose role lacks `dynamodb:PutItem` on the log table
/// cannot record a notification, and the refusal names its role and the action.
#[tokio::test]
async fn a_role_without_an_action_its_function_needs_is_refused() {
    let d = deploy_without(&["RouterFunction:dynamodb:PutItem"]).await;
    d.incident_org().await;
    let answer = d
        .f("flare-router")
        .await
        .invoke(&sample("incidents/incident-dispatched.json"))
        .await
        .unwrap();
    let refused = d.called("flare-router").iam_refusals();
    assert!(
        refused
            .iter()
            .any(|r| r.contains("RouterFunction") && r.contains("dynamodb:PutItem")),
        "no refusal of dynamodb:PutItem to the router's role: {refused:?}\n{answer:?}\n{}",
        d.called("flare-router").log()
    );
    assert_eq!(d.depth(Channel::Sms).await, 0, "nothing queued");
}

/// A job SNS's shared pace has no moment for within the 8 s an invocation may wait is
/// postponed: queued again on its lane's queue (`sqs:SendMessage`, which the SMS
/// functions' roles must allow), not failed and not returned to spend a receive.
#[tokio::test]
async fn a_job_the_pace_cannot_take_in_time_is_postponed_to_its_queue() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let d = deploy().await;
    d.incident_org().await;
    d.route(&sample("incidents/incident-dispatched.json")).await;
    let resp = d
        .f("flare-push")
        .await
        .call(&sample("sqs/push-batch.json"))
        .await;
    assert_eq!(resp, json!({"batchItemFailures": []}));
    assert_eq!(d.depth(Channel::Sms).await, 1, "the fallback SMS queued");
    // Every instance's SNS schedule is booked a minute ahead.
    let minute_ahead = (chrono::Utc::now() + chrono::TimeDelta::seconds(60))
        .timestamp_micros()
        .to_string();
    aws::dynamodb(&d.stack.sdk)
        .put_item()
        .table_name(&d.stack.tables.log)
        .item("pk", AttributeValue::S("PACE#sns".into()))
        .item("sk", AttributeValue::S("pace".into()))
        .item("tat", AttributeValue::N(minute_ahead))
        .send()
        .await
        .unwrap();
    let resp = d
        .f("flare-sms")
        .await
        .call(&sample("sqs/sms-batch.json"))
        .await;
    assert_eq!(
        resp,
        json!({"batchItemFailures": []}),
        "done with, as postponed"
    );
    // Postponed a second (`DelaySeconds`): visible after it.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        d.depth(Channel::Sms).await,
        2,
        "the postponed job queued again beside the original"
    );
    let n = d.notification(DISPATCH_ID).await;
    let sms = delivery(&n, "u-17", "sms");
    assert_eq!(
        (sms["status"].as_str(), sms["reason"].as_str()),
        (Some("pending"), Some("paced")),
        "not sent: {n}"
    );
    d.assert_logs_clean();
}

/// A job whose record another attempt holds is returned for a retry with its backoff:
/// the function delays its message (`sqs:ChangeMessageVisibility` on the job's own queue,
/// which its role must allow) instead of letting it come back at once.
#[tokio::test]
async fn a_job_held_by_another_attempt_is_delayed_on_its_queue() {
    use flare_shared::domain::{NotificationId, OrgId, RecipientRef, Slot, UserId};
    use flare_shared::ports::DeliveryLog;
    let d = deploy().await;
    d.incident_org().await;
    d.route(&sample("incidents/incident-dispatched.json")).await;
    let resp = d
        .f("flare-push")
        .await
        .call(&sample("sqs/push-batch.json"))
        .await;
    assert_eq!(resp, json!({"batchItemFailures": []}));
    // Another attempt holds the SMS record for a minute.
    let log =
        flare_aws::log::DynamoDeliveryLog::new(aws::dynamodb(&d.stack.sdk), &d.stack.tables.log);
    log.claim(
        &OrgId::parse("acme").unwrap(),
        &NotificationId::parse(DISPATCH_ID).unwrap(),
        &RecipientRef::User(UserId::parse("u-17").unwrap()),
        Slot {
            channel: Channel::Sms,
            cycle: 0,
        },
        std::time::Duration::from_secs(60),
    )
    .await
    .unwrap();
    // The fallback job as Lambda's event source mapping hands it over: a real message,
    // its receipt handle and its queue's ARN.
    let url = d.stack.queues[&(Channel::Sms, Lane::Urgent)].clone();
    let received = aws::sqs(&d.stack.sdk)
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(received.len(), 1, "the fallback SMS job");
    let event = flare_tests::queues::sqs_event_from(&received, Some(&url));
    let resp = d.f("flare-sms").await.call(&event).await;
    assert_eq!(
        resp["batchItemFailures"][0]["itemIdentifier"].as_str(),
        received[0].message_id(),
        "returned for a retry: {resp}"
    );
    // Delayed (10 s, the first retry's backoff): not visible again at once.
    assert_eq!(d.stack.depth(&url).await.unwrap(), 0);
    assert_eq!(d.stack.in_queue(&url).await.unwrap(), 1);
    d.assert_logs_clean();
}
