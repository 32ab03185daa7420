//! What `template.yaml` must wire together, read with cfn-lint's decoder
//! (`scripts/harness/template_json.py`): values that live in two places come from one
//! parameter, and the timeouts the code assumes are the template's.

use flare_tests::{FIX, python, workspace_root};
use serde_json::{Value, json};
use std::process::Command;

/// Decoded once per test binary (cfn-lint takes a few seconds to start).
fn template() -> &'static Value {
    static T: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    T.get_or_init(decode)
}

fn decode() -> Value {
    let root = workspace_root();
    let out = Command::new(python())
        .arg(root.join("scripts/harness/template_json.py"))
        .arg(root.join("template.yaml"))
        .output()
        .unwrap_or_else(|e| panic!("running the template decoder: {e}\n  Fix: {FIX}"));
    assert!(
        out.status.success(),
        "reading template.yaml failed: {}\n  Fix: {FIX}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn max_receives_is_one_parameter_for_the_functions_and_every_redrive_policy() {
    let t = template();
    let by_param = json!({"Ref": "MaxReceives"});
    assert_eq!(
        t["Globals"]["Function"]["Environment"]["Variables"][flare_lambda::MAX_RECEIVES_ENV],
        by_param
    );
    assert_eq!(
        t["Parameters"]["MaxReceives"]["Default"].as_u64(),
        Some(flare_lambda::DEFAULT_MAX_RECEIVES.into())
    );
    for queue in ["PushQueue", "SmsQueue", "EmailQueue"] {
        assert_eq!(
            t["Resources"][queue]["Properties"]["RedrivePolicy"]["maxReceiveCount"], by_param,
            "{queue}"
        );
    }
}

#[test]
fn a_crashed_attempts_lease_ends_before_its_job_is_redelivered() {
    let t = template();
    let timeout = t["Globals"]["Function"]["Timeout"].as_u64().unwrap();
    assert_eq!(timeout, flare_lambda::FUNCTION_TIMEOUT.as_secs());
    let lease = flare_shared::app::deliver::lease_for(flare_lambda::FUNCTION_TIMEOUT);
    for queue in ["PushQueue", "SmsQueue", "EmailQueue"] {
        let visibility = t["Resources"][queue]["Properties"]["VisibilityTimeout"]
            .as_u64()
            .unwrap();
        assert!(
            lease.as_secs() < visibility,
            "{queue}: lease {lease:?} must end before the visibility timeout {visibility} s"
        );
    }
    for f in ["PushFunction", "SmsFunction", "EmailFunction"] {
        let own = &t["Resources"][f]["Properties"]["Timeout"];
        assert!(
            own.is_null(),
            "{f} overrides the delivery functions' timeout"
        );
    }
}

#[test]
fn the_router_sends_events_it_failed_on_to_an_alarmed_queue() {
    let t = template();
    let config = &t["Resources"]["RouterFunction"]["Properties"]["EventInvokeConfig"];
    assert_eq!(
        config["DestinationConfig"]["OnFailure"],
        json!({"Type": "SQS", "Destination": {"Fn::GetAtt": ["RouterFailureQueue", "Arn"]}})
    );
    let alarm = &t["Resources"]["RouterFailureAlarm"]["Properties"];
    assert_eq!(
        alarm["Dimensions"][0]["Value"],
        json!({"Fn::GetAtt": ["RouterFailureQueue", "QueueName"]})
    );
}

#[test]
fn the_api_description_needs_no_token_and_everything_else_does() {
    let t = template();
    let events = &t["Resources"]["ApiFunction"]["Properties"]["Events"];
    assert_eq!(events["OpenApi"]["Properties"]["Path"], "/v1/openapi.json");
    assert_eq!(
        events["OpenApi"]["Properties"]["Auth"]["Authorizer"],
        "NONE"
    );
    assert!(events["V1"]["Properties"]["Auth"].is_null());
    assert_eq!(
        t["Resources"]["HttpApi"]["Properties"]["Auth"]["DefaultAuthorizer"],
        "FlareJwt"
    );
}

#[test]
fn each_delivery_function_settles_its_own_dead_letter_queue() {
    let t = template();
    for (function, channel) in [
        ("PushFunction", flare_shared::domain::Channel::Push),
        ("SmsFunction", flare_shared::domain::Channel::Sms),
        ("EmailFunction", flare_shared::domain::Channel::Email),
    ] {
        let props = &t["Resources"][function]["Properties"];
        let dlq = format!(
            "{}DeadLetterQueue",
            &function[..function.len() - "Function".len()]
        );
        let arn = json!({"Fn::GetAtt": [dlq, "Arn"]});
        let env = flare_aws::wiring::dead_letter_env(channel);
        assert_eq!(
            props["Environment"]["Variables"][env], arn,
            "{function} {env}"
        );
        let source = &props["Events"]["DeadLetters"]["Properties"];
        assert_eq!(source["Queue"], arn, "{function}");
        assert_eq!(
            source["FunctionResponseTypes"],
            json!(["ReportBatchItemFailures"])
        );
    }
}
