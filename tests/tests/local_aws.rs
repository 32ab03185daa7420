//! `scripts/local-aws` (the `flare-local-aws` binary it starts): the stand-in for `sam
//! local`. Its env file covers every function of `template.yaml` with every variable
//! the template gives it, each resource it names exists on the stand-in, every function
//! binary (arm64, as `sam build` packages it) starts with exactly its function's
//! variables from the file, the router and the API answer their sample events there, and
//! a SIGTERM by process id (what `--stop` sends) stops it and moto with it.
//!
//! Every sample event through every binary with the env file's variables is
//! `binaries.rs` (its stack is made by the same code, with IAM enforced).

use flare_aws as aws;
use flare_tests::runtime::{self, LambdaProcess, TemplateFunction};
use flare_tests::stack::{ENDPOINT_VARIABLE, FunctionEnv};
use flare_tests::{free_port, workspace_root};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The stand-in, running: killed by the test's end whatever happens.
struct StandIn {
    child: Child,
    port: u16,
    env: FunctionEnv,
    printed: Vec<String>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts it as a user would for containers on this machine, but with the host as the
/// "container" host (the binaries run here, under qemu, not in Docker).
fn start(dir: &std::path::Path) -> StandIn {
    let port = free_port();
    let env_file = dir.join("env.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_flare-local-aws"))
        .args(["--port", &port.to_string(), "--host", "127.0.0.1"])
        .args(["--container-host", "127.0.0.1", "--env-file"])
        .arg(&env_file)
        .stdout(Stdio::piped())
        .spawn()
        .expect("flare-local-aws");
    let mut printed = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line == "ready" => break,
            Some(Ok(line)) => printed.push(line),
            other => panic!("flare-local-aws stopped before ready: {other:?}\n{printed:?}"),
        }
    }
    let env = serde_json::from_slice(&std::fs::read(&env_file).unwrap()).unwrap();
    StandIn {
        child,
        port,
        env,
        printed,
    }
}

/// Every function of template.yaml, each with every variable the template gives it
/// (independently read: `template_env.py --by-id`), none empty, all at the stand-in.
fn check_covers_the_template(s: &StandIn, template: &BTreeMap<String, TemplateFunction>) {
    let ids: Vec<&String> = s.env.keys().collect();
    assert_eq!(
        ids,
        template.keys().collect::<Vec<_>>(),
        "the env file has every function"
    );
    for (id, f) in template {
        let file = &s.env[id];
        for n in &f.variables {
            let value = file
                .get(n)
                .unwrap_or_else(|| panic!("template.yaml gives {id} {n}; the env file lacks it"));
            assert!(!value.is_empty(), "{id} {n} is empty in the env file");
        }
        assert_eq!(
            file[ENDPOINT_VARIABLE],
            format!("http://127.0.0.1:{}", s.port)
        );
    }
}

/// Each table, queue and dead-letter queue the file names exists on the stand-in, and
/// so do the link key and the SES identity and configuration set (`env`: every
/// function's variables, keyed `NAME (FunctionId)`).
async fn check_resources_exist(sdk: &aws::SdkConfig, env: &BTreeMap<String, String>) {
    let (db, sqs) = (aws::dynamodb(sdk), aws::sqs(sdk));
    let mut seen = 0;
    let named = |var: &str| {
        env.iter()
            .find(|(k, _)| k.starts_with(&format!("{var} (")))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no function has {var}"))
    };
    for (key, value) in env {
        let name = key.split(' ').next().unwrap();
        if name.ends_with("_TABLE") {
            db.describe_table().table_name(value).send().await.unwrap();
        } else if name.ends_with("_QUEUE_URL") {
            sqs.get_queue_attributes()
                .queue_url(value)
                .send()
                .await
                .unwrap();
        } else if name.ends_with("_DLQ_ARN") {
            let queue = value.rsplit(':').next().unwrap();
            sqs.get_queue_url().queue_name(queue).send().await.unwrap();
        } else {
            continue;
        }
        seen += 1;
    }
    assert!(seen >= 9, "tables and queues named: {seen}");
    let prefix = named("FLARE_SECRET_PREFIX");
    let link_key = flare_shared::ports::SecretKey::LinkKey.name(&prefix);
    assert!(
        flare_tests::stack::read_secret(sdk, &link_key)
            .await
            .is_some(),
        "{link_key}"
    );
    let ses = aws::sesv2(sdk);
    let sender = named("FLARE_DEFAULT_SENDER");
    let domain = sender.rsplit('@').next().unwrap();
    ses.get_email_identity()
        .email_identity(domain)
        .send()
        .await
        .unwrap();
    // Listed, not read: moto's GetConfigurationSet answers `"SendingEnabled": {}`,
    // which the SDK refuses.
    let sets = ses.list_configuration_sets().send().await.unwrap();
    let set = named("FLARE_SES_CONFIGURATION_SET");
    assert!(
        sets.configuration_sets().contains(&set),
        "{set} in {sets:?}"
    );
}

fn sample(path: &str) -> Value {
    let text = std::fs::read_to_string(workspace_root().join("events").join(path)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Each function's binary with exactly its variables from the file, plus what `sam
/// local` gives every container: a region and (here, throwaway) credentials.
async fn start_functions(
    file: &FunctionEnv,
    template: &BTreeMap<String, TemplateFunction>,
) -> BTreeMap<String, LambdaProcess> {
    let deployed = runtime::deployed_binaries().unwrap_or_else(|e| panic!("{e:#}"));
    let starts = file.iter().map(|(id, vars)| {
        let binary = deployed.binary(&template[id].binary);
        let mut env: Vec<(String, String)> =
            vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (k, v) in [
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "flare-local"),
            ("AWS_SECRET_ACCESS_KEY", "flare-local"),
        ] {
            env.push((k.into(), v.into()));
        }
        async move {
            let f = LambdaProcess::start(&binary, &env)
                .await
                .unwrap_or_else(|e| panic!("{id}: {e:#}"));
            f.ready().await.unwrap_or_else(|e| panic!("{id}: {e:#}"));
            (id.clone(), f)
        }
    });
    let functions: BTreeMap<String, LambdaProcess> = futures::future::join_all(starts)
        .await
        .into_iter()
        .collect();
    assert_eq!(functions.len(), file.len(), "every function started");
    functions
}

/// What `scripts/local-aws --stop` does: SIGTERM by process id. It exits, and moto with it.
fn stop_by_pid(s: &mut StandIn) {
    let pid = s.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let closed = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", s.port)).is_ok() {
        assert!(Instant::now() < closed, "moto still serves after the stop");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn the_stand_in_serves_every_function_from_its_env_file_and_stops_by_pid() {
    let dir = flare_tests::TempDir::new("local-aws").unwrap();
    let mut s = start(dir.path());
    assert!(
        s.printed.iter().any(|l| l.contains("env file:")),
        "{:?}",
        s.printed
    );
    let template = runtime::template_functions().unwrap_or_else(|e| panic!("{e:#}"));
    check_covers_the_template(&s, &template);
    let endpoint = format!("http://127.0.0.1:{}", s.port);
    let sdk = aws::sdk_config(aws::AwsOptions::local(&endpoint)).await;
    // Every variable of every function (the same name has the same value in each but
    // the dead-letter queue's, which each lane's function names its own).
    let mut all = BTreeMap::new();
    for (id, vars) in &s.env {
        for (k, v) in vars {
            all.insert(format!("{k} ({id})"), v.clone());
        }
    }
    check_resources_exist(&sdk, &all).await;

    let functions = start_functions(&s.env, &template).await;
    let api = &functions["ApiFunction"];
    let put = api.call(&sample("api/put-sms-settings.json")).await;
    assert_eq!(put["statusCode"], 200, "{put}");
    let got = api.call(&sample("api/get-sms-settings.json")).await;
    assert_eq!(got["statusCode"], 200, "{got}");
    let body: Value = serde_json::from_str(got["body"].as_str().unwrap()).unwrap();
    let sent: Value = serde_json::from_str(
        sample("api/put-sms-settings.json")["body"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["provider"], sent["provider"], "{body}");
    let routed = functions["RouterFunction"]
        .call(&sample("incidents/incident-dispatched.json"))
        .await;
    assert_eq!(routed["outcome"], json!("routed"), "{routed}");
    assert_eq!(routed["recipients"], 3, "{routed}");
    drop(functions);

    stop_by_pid(&mut s);
}
