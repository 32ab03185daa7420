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

/// The fallback window's checks are delayed messages on the push queue: the router
/// sends the first, the push function the next ones.
#[test]
fn the_router_and_the_push_function_may_send_to_the_push_queue() {
    let t = template();
    let push_queue =
        json!({"SQSSendMessagePolicy": {"QueueName": {"Fn::GetAtt": ["PushQueue", "QueueName"]}}});
    for function in ["RouterFunction", "PushFunction"] {
        let policies = t["Resources"][function]["Properties"]["Policies"]
            .as_array()
            .unwrap_or_else(|| panic!("{function} has policies"));
        assert!(policies.contains(&push_queue), "{function}: {policies:?}");
    }
}

fn resources_of<'a>(t: &'a Value, kind: &str) -> Vec<(&'a String, &'a Value)> {
    t["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .collect()
}

#[test]
fn every_alarm_notifies_the_alarm_topic() {
    let t = template();
    let topic =
        json!([{"Fn::If": ["CreateAlarmTopic", {"Ref": "AlarmTopic"}, {"Ref": "AlarmTopicArn"}]}]);
    let alarms = resources_of(t, "AWS::CloudWatch::Alarm");
    assert!(alarms.len() >= 10, "{}", alarms.len());
    for (name, alarm) in alarms {
        assert_eq!(alarm["Properties"]["AlarmActions"], topic, "{name}");
        assert_eq!(alarm["Properties"]["OKActions"], topic, "{name}");
    }
    assert_eq!(
        t["Resources"]["AlarmTopic"]["Condition"],
        "CreateAlarmTopic"
    );
    assert_eq!(t["Parameters"]["AlarmTopicArn"]["Default"], "");
    let sub = &t["Resources"]["AlarmEmailSubscription"];
    assert_eq!(sub["Condition"], "SubscribeAlarmEmail");
    assert_eq!(sub["Properties"]["Endpoint"], json!({"Ref": "AlarmEmail"}));
}

#[test]
fn every_function_logs_to_its_own_group_kept_for_the_retention_parameter() {
    let t = template();
    assert_eq!(
        t["Parameters"]["LogRetentionDays"]["Default"].as_u64(),
        Some(30)
    );
    let functions = resources_of(t, "AWS::Serverless::Function");
    assert_eq!(functions.len(), 5);
    for (name, f) in functions {
        let props = &f["Properties"];
        let group = props["LoggingConfig"]["LogGroup"]["Ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} logs to a group the stack does not own"));
        let g = &t["Resources"][group];
        assert_eq!(g["Type"], "AWS::Logs::LogGroup", "{name}");
        assert_eq!(
            g["Properties"]["RetentionInDays"],
            json!({"Ref": "LogRetentionDays"}),
            "{group}"
        );
        // Lambda writes to /aws/lambda/<function name>: the group must be that one.
        let function_name = props["FunctionName"]["Fn::Sub"].as_str().unwrap();
        assert_eq!(
            g["Properties"]["LogGroupName"]["Fn::Sub"].as_str(),
            Some(format!("/aws/lambda/{function_name}").as_str()),
            "{name}"
        );
    }
}

/// The dashboard's body with `${...}` replaced, so it parses as the JSON CloudWatch reads.
fn dashboard() -> Value {
    let body = template()["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
        .as_str()
        .expect("DashboardBody is one !Sub string");
    let mut out = String::new();
    let mut rest = body;
    while let Some(i) = rest.find("${") {
        let end = rest[i..].find('}').unwrap() + i;
        out.push_str(&rest[..i]);
        out.push_str(&format!("<{}>", &rest[i + 2..end]));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("the dashboard is not JSON: {e}"))
}

#[test]
fn the_dashboard_graphs_the_metrics_the_functions_emit() {
    use flare_runtime::emf;
    use flare_shared::domain::{Category, Channel};
    let t = template();
    let ns =
        t["Globals"]["Function"]["Environment"]["Variables"][emf::NAMESPACE_VARIABLE]["Fn::Sub"]
            .as_str()
            .unwrap()
            .replace("${AWS::StackName}", "<AWS::StackName>");
    let mut seen: Vec<(String, String, String)> = Vec::new(); // metric, dimension, value
    let mut queues = Vec::new();
    for w in dashboard()["widgets"].as_array().unwrap() {
        for m in w["properties"]["metrics"].as_array().unwrap() {
            let parts: Vec<&str> = m
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            match parts.as_slice() {
                [n, metric, dim, value] if *n == ns => {
                    seen.push((metric.to_string(), dim.to_string(), value.to_string()))
                }
                [
                    "AWS/SQS",
                    "ApproximateNumberOfMessagesVisible",
                    "QueueName",
                    q,
                ] => queues.push(q.to_string()),
                other => panic!("a metric Flare does not emit: {other:?}"),
            }
        }
    }
    let has = |metric: &str, dim: &str, value: &str| {
        seen.iter()
            .any(|(m, d, v)| m == metric && d == dim && v == value)
    };
    for (metric, _, _) in &seen {
        assert!(
            emf::DELIVERY_METRICS.contains(&metric.as_str())
                || [emf::RECIPIENTS, emf::ACKNOWLEDGED].contains(&metric.as_str()),
            "{metric} is not a metric the functions emit"
        );
    }
    for c in Channel::ALL {
        for metric in ["Sent", "Failed", "Skipped", "DeliveryLatencyMs"] {
            assert!(has(metric, "Channel", c.as_str()), "{metric} of {c:?}");
        }
    }
    for c in [Channel::Sms, Channel::Email] {
        assert!(has("Fallback", "Channel", c.as_str()), "fallbacks of {c:?}");
    }
    assert!(has("Delivered", "Channel", "push"), "push receipts");
    for c in Category::ALL {
        for metric in [emf::RECIPIENTS, emf::ACKNOWLEDGED] {
            assert!(has(metric, "Category", c.as_str()), "{metric} of {c:?}");
        }
    }
    for q in [
        "PushDeadLetterQueue",
        "SmsDeadLetterQueue",
        "EmailDeadLetterQueue",
    ] {
        assert!(
            queues.contains(&format!("<{q}.QueueName>")),
            "{q}: {queues:?}"
        );
    }
    // The failure alarms read the same metrics.
    for (alarm, channel) in [
        ("PushFailureAlarm", "push"),
        ("SmsFailureAlarm", "sms"),
        ("EmailFailureAlarm", "email"),
    ] {
        let p = &t["Resources"][alarm]["Properties"];
        assert_eq!(p["MetricName"], "Failed", "{alarm}");
        assert_eq!(
            p["Namespace"]["Fn::Sub"]
                .as_str()
                .map(|s| s.replace("${AWS::StackName}", "<AWS::StackName>")),
            Some(ns.clone()),
            "{alarm}"
        );
        assert_eq!(
            p["Dimensions"],
            json!([{"Name": "Channel", "Value": channel}]),
            "{alarm}"
        );
    }
}
