//! What `template.yaml` must wire together, read with cfn-lint's decoder
//! (`scripts/harness/template_json.py`): values that live in two places come from one
//! parameter, and the timeouts the code assumes are the template's.

use flare_tests::{FIX, python, workspace_root};
use serde_json::{Value, json};
use std::collections::HashMap;
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
fn a_custom_gateways_sms_receipts_need_no_token_and_only_they_and_the_description_skip_it() {
    let t = template();
    let events = &t["Resources"]["ApiFunction"]["Properties"]["Events"];
    let receipts = &events["SmsReceipts"];
    assert_eq!(receipts["Type"], "HttpApi");
    assert_eq!(
        receipts["Properties"],
        json!({
            "ApiId": {"Ref": "HttpApi"},
            "Path": "/v1/receipts/sms/{org_id}/{control_center_id}",
            "Method": "POST",
            "Auth": {"Authorizer": "NONE"}
        })
    );
    assert_eq!(
        events["SmsInbound"]["Properties"],
        json!({
            "ApiId": {"Ref": "HttpApi"},
            "Path": "/v1/inbound/sms/{org_id}/{control_center_id}",
            "Method": "POST",
            "Auth": {"Authorizer": "NONE"}
        })
    );
    assert_eq!(events["V1"]["Properties"]["Path"], "/v1/{proxy+}");
    assert!(events["V1"]["Properties"]["Auth"].is_null());
    let mut open: Vec<&str> = events
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, e)| !e["Properties"]["Auth"].is_null())
        .map(|(n, _)| n.as_str())
        .collect();
    open.sort();
    assert_eq!(
        open,
        [
            "Console",
            "ConsoleFiles",
            "OpenApi",
            "ResponseLinkAnswer",
            "ResponseLinkPage",
            "SmsInbound",
            "SmsReceipts"
        ],
        "routes without the JWT"
    );
    for (event, path, method) in [
        ("Console", "/console", "GET"),
        ("ConsoleFiles", "/console/{proxy+}", "GET"),
        // v1.2: response links (the code is the credential).
        ("ResponseLinkPage", "/r/{code}", "GET"),
        ("ResponseLinkAnswer", "/r/{code}", "POST"),
    ] {
        let p = &events[event]["Properties"];
        assert_eq!(
            (p["Path"].as_str(), p["Method"].as_str()),
            (Some(path), Some(method))
        );
    }
    // The API is the only function behind the HTTP API.
    for (name, f) in resources_of(t, "AWS::Serverless::Function") {
        if name == "ApiFunction" {
            continue;
        }
        let http = f["Properties"]["Events"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, e)| e["Type"] == "HttpApi")
            .count();
        assert_eq!(http, 0, "{name} has an HTTP API route");
    }
}

#[test]
fn each_delivery_function_settles_its_own_dead_letter_queue() {
    let t = template();
    for (function, channel) in [
        ("PushFunction", flare_shared::domain::Channel::Push),
        ("SmsFunction", flare_shared::domain::Channel::Sms),
        ("EmailFunction", flare_shared::domain::Channel::Email),
        ("PushUrgentFunction", flare_shared::domain::Channel::Push),
        ("SmsUrgentFunction", flare_shared::domain::Channel::Sms),
        ("EmailUrgentFunction", flare_shared::domain::Channel::Email),
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

/// Each channel has two lanes, each its own queue with its own dead-letter queue and
/// function; the urgent one's concurrency can be reserved (UrgentReservedConcurrency, off
/// by default: see `no_function_reserves_concurrency_at_the_parameter_defaults`), and
/// every function that enqueues may send to both lanes' queues and knows their URLs.
#[test]
fn each_channel_has_an_urgent_lane_whose_concurrency_can_be_reserved() {
    use flare_shared::domain::{Channel, Lane};
    let t = template();
    let r = &t["Resources"];
    let globals = &t["Globals"]["Function"]["Environment"]["Variables"];
    for (c, name) in [
        (Channel::Push, "Push"),
        (Channel::Sms, "Sms"),
        (Channel::Email, "Email"),
    ] {
        for (lane, infix) in [(Lane::Normal, ""), (Lane::Urgent, "Urgent")] {
            let queue = format!("{name}{infix}Queue");
            let dlq = format!("{name}{infix}DeadLetterQueue");
            let function = format!("{name}{infix}Function");
            assert_eq!(r[&queue]["Type"], "AWS::SQS::Queue", "{queue}");
            assert_eq!(
                r[&queue]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"],
                json!({"Fn::GetAtt": [dlq, "Arn"]}),
                "{queue}"
            );
            let jobs = &r[&function]["Properties"]["Events"]["Jobs"]["Properties"];
            assert_eq!(
                jobs["Queue"],
                json!({"Fn::GetAtt": [queue, "Arn"]}),
                "{function}"
            );
            assert_eq!(
                globals[flare_aws::wiring::queue_env(c, lane)],
                json!({"Ref": queue}),
                "{function}"
            );
            // Both lanes' functions may delay a retry on either queue.
            let statements = &r[&function]["Properties"]["Policies"];
            assert!(
                statements
                    .to_string()
                    .contains(&format!("{{\"Fn::GetAtt\":[\"{queue}\",\"Arn\"]}}")),
                "{function}: {statements}"
            );
            let reserved = &r[&function]["Properties"]["ReservedConcurrentExecutions"];
            let limit = &jobs["ScalingConfig"]["MaximumConcurrency"];
            match lane {
                Lane::Urgent => {
                    assert_eq!(
                        *reserved,
                        json!({"Fn::If": ["ReserveUrgent", {"Ref": "UrgentReservedConcurrency"}, {"Ref": "AWS::NoValue"}]}),
                        "{function}"
                    );
                    assert_eq!(*limit, json!({"Ref": "UrgentConcurrency"}), "{function}");
                    // Its dead-letter queue's source is bounded too (a reserve, once set,
                    // leaves room for both: the parameter's description says so).
                    let dead = &r[&function]["Properties"]["Events"]["DeadLetters"]["Properties"];
                    assert_eq!(dead["ScalingConfig"]["MaximumConcurrency"], 2, "{function}");
                }
                Lane::Normal => {
                    assert!(reserved.is_null(), "{function}");
                    assert_eq!(*limit, json!({"Ref": format!("{name}MaxConcurrency")}));
                }
            }
        }
    }
    // The router (and the push functions, for fallbacks and timers) send to every
    // lane; the API sends a dispatcher's manual SMS to the urgent one.
    for function in ["RouterFunction", "PushFunction", "PushUrgentFunction"] {
        let policies = &r[function]["Properties"]["Policies"];
        for queue in ["Push", "Sms", "Email"]
            .iter()
            .flat_map(|c| [format!("{c}Queue"), format!("{c}UrgentQueue")])
        {
            let send = json!({"SQSSendMessagePolicy": {"QueueName": {"Fn::GetAtt": [queue, "QueueName"]}}});
            assert!(
                policies.as_array().unwrap().contains(&send),
                "{function} cannot send to {queue}"
            );
        }
    }
    let api = &r["ApiFunction"]["Properties"]["Policies"];
    assert!(api.as_array().unwrap().contains(
        &json!({"SQSSendMessagePolicy": {"QueueName": {"Fn::GetAtt": ["SmsUrgentQueue", "QueueName"]}}})
    ));
    assert_eq!(
        r["SmsFunction"]["Properties"]["Environment"]["Variables"]["FLARE_SNS_SMS_PER_SECOND"],
        json!({"Ref": "SnsSmsPerSecond"})
    );
    assert_eq!(
        r["SmsUrgentFunction"]["Properties"]["Environment"]["Variables"]["FLARE_SNS_SMS_PER_SECOND"],
        json!({"Ref": "SnsSmsPerSecond"})
    );
    for c in ["Push", "Sms", "Email"] {
        let alarm = &r[format!("{c}UrgentBacklogAlarm")]["Properties"];
        assert_eq!(alarm["MetricName"], "ApproximateAgeOfOldestMessage", "{c}");
        let alarm = &r[format!("{c}UrgentDeadLetterAlarm")]["Properties"];
        assert_eq!(
            alarm["Dimensions"][0]["Value"],
            json!({"Fn::GetAtt": [format!("{c}UrgentDeadLetterQueue"), "QueueName"]})
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
    let mut functions = resources_of(t, "AWS::Serverless::Function");
    assert_eq!(functions.len(), 9);
    // The custom resource's inline function too.
    functions.extend(resources_of(t, "AWS::Lambda::Function"));
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

/// The dashboard's body with `${...}` replaced, so it parses as the JSON CloudWatch reads:
/// `<X>` inside a string, `"<X>"` where it stands for a value of its own (a number
/// parameter, such as an annotation's `"value": ${SmsSpendAlarmUSD}`).
fn dashboard() -> Value {
    let body = template()["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
        .as_str()
        .expect("DashboardBody is one !Sub string");
    let mut out = String::new();
    let mut rest = body;
    while let Some(i) = rest.find("${") {
        let end = rest[i..].find('}').unwrap() + i;
        out.push_str(&rest[..i]);
        // Inside a string when an odd number of quotes came before (the body escapes none).
        let in_string = out.matches('"').count() % 2 == 1;
        let name = &rest[i + 2..end];
        out.push_str(&if in_string {
            format!("<{name}>")
        } else {
            format!("\"<{name}>\"")
        });
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
                // The account's SNS SMS spend (SNS's own metric, no dimensions).
                ["AWS/SNS", "SMSMonthToDateSpentUSD"] => {}
                // v1.2: the HTTP API's refusals. A bad token never reaches the function
                // (the JWT authorizer answers 401): API Gateway's 4xx counts it, and the
                // audit trail has no organization to record it under.
                ["AWS/ApiGateway", "4xx" | "5xx", "ApiId", "<HttpApi>"] => {}
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
                || [emf::RECIPIENTS, emf::ACKNOWLEDGED, emf::SMS_SEGMENTS]
                    .contains(&metric.as_str()),
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

#[test]
fn sms_spend_is_alarmed_before_the_accounts_limit_and_segments_are_graphed() {
    use flare_runtime::emf::SMS_SEGMENTS;
    let t = template();
    // 80% of a new account's 1 USD monthly SMS spend limit; 0 at the least.
    let p = &t["Parameters"]["SmsSpendAlarmUSD"];
    assert_eq!(p["Type"], "Number");
    assert_eq!(p["Default"].as_f64(), Some(0.8), "{p}");
    assert_eq!(p["MinValue"].as_f64(), Some(0.0), "{p}");
    assert!(
        p["Description"]
            .as_str()
            .is_some_and(|d| d.contains("80%") && d.contains("spend limit")),
        "{p}"
    );
    // SNS's own month-to-date spend, account-wide: no dimensions.
    let (name, alarm) = resources_of(t, "AWS::CloudWatch::Alarm")
        .into_iter()
        .find(|(_, a)| a["Properties"]["MetricName"] == "SMSMonthToDateSpentUSD")
        .expect("an alarm on SMSMonthToDateSpentUSD");
    let a = &alarm["Properties"];
    assert_eq!(a["Namespace"], "AWS/SNS", "{name}");
    assert!(a["Dimensions"].is_null(), "{name}: {a}");
    assert_eq!(a["Statistic"], "Maximum", "{name}");
    assert_eq!(a["Period"].as_u64(), Some(300), "{name}");
    assert_eq!(
        a["ComparisonOperator"], "GreaterThanOrEqualToThreshold",
        "{name}"
    );
    assert_eq!(a["Threshold"], json!({"Ref": "SmsSpendAlarmUSD"}), "{name}");
    assert_eq!(a["TreatMissingData"], "notBreaching", "{name}");
    // The dashboard graphs the segments per provider and the spend.
    let body = t["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
        .as_str()
        .unwrap();
    assert!(body.contains(SMS_SEGMENTS) && body.contains("SMSMonthToDateSpentUSD"));
    let mut segments = Vec::new();
    let mut spend = false;
    for line in dashboard_lines() {
        let parts: Vec<&str> = line.iter().map(String::as_str).collect();
        match parts.as_slice() {
            [_, metric, "Provider", provider] if *metric == SMS_SEGMENTS => {
                segments.push(provider.to_string())
            }
            ["AWS/SNS", "SMSMonthToDateSpentUSD"] => spend = true,
            _ => {}
        }
    }
    segments.sort();
    assert_eq!(segments, ["http", "sns"]);
    assert!(spend, "no graph of SMSMonthToDateSpentUSD");
}

/// Every metric line of every dashboard widget: its strings, in order.
fn dashboard_lines() -> Vec<Vec<String>> {
    let widgets = dashboard()["widgets"].as_array().unwrap().clone();
    widgets
        .iter()
        .flat_map(|w| w["properties"]["metrics"].as_array().unwrap().clone())
        .map(|m| {
            let strings = m.as_array().unwrap().iter().filter_map(Value::as_str);
            strings.map(String::from).collect()
        })
        .collect()
}

#[test]
fn every_function_is_built_by_make_from_the_one_cargo_invocation() {
    let t = template();
    let root = workspace_root();
    let read = |path: &str| {
        std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let makefile = read("Makefile");
    let cargo_lambdas = read("scripts/cargo-lambdas");
    let build_lambdas = read("scripts/build-lambdas");
    // `build-<LogicalId>: BIN = <binary>`
    let binaries: HashMap<&str, &str> = makefile
        .lines()
        .filter_map(|l| l.strip_prefix("build-")?.split_once(": BIN = "))
        .collect();
    let words = |line: Option<&str>| -> Vec<String> {
        line.unwrap_or_default()
            .split_whitespace()
            .map(|w| w.trim_end_matches([':', ';']).to_string())
            .collect()
    };
    let rule = words(
        makefile
            .lines()
            .find(|l| l.starts_with("build-") && l.ends_with(':')),
    );
    let phony = words(makefile.lines().find(|l| l.starts_with(".PHONY:")));
    let tokens: Vec<&str> = cargo_lambdas.split_whitespace().collect();
    let packages: Vec<&str> = tokens
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1])
        .collect();
    let checked = words(build_lambdas.lines().find(|l| l.starts_with("for fn in ")));

    let functions = resources_of(t, "AWS::Serverless::Function");
    assert_eq!(
        functions.len(),
        binaries.len(),
        "one Makefile binary per function"
    );
    for (name, f) in functions {
        assert_eq!(f["Metadata"]["BuildMethod"], "makefile", "{name}");
        assert_eq!(f["Properties"]["CodeUri"], ".", "{name}");
        let binary = binaries
            .get(name.as_str())
            .unwrap_or_else(|| panic!("the Makefile has no 'build-{name}: BIN = ...' line"));
        let target = format!("build-{name}");
        assert!(rule.contains(&target), "{target} is not a rule: {rule:?}");
        assert!(phony.contains(&target), "{target} is not .PHONY: {phony:?}");
        assert!(
            packages.contains(binary),
            "scripts/cargo-lambdas does not build {binary}: {packages:?}"
        );
        assert!(
            checked.contains(name),
            "scripts/build-lambdas does not check {name}: {checked:?}"
        );
    }
    assert_eq!(binaries.get("ReceiptsFunction"), Some(&"flare-receipts"));
}

/// The SES event types the configuration set publishes, and the detail-type of each on
/// EventBridge.
const SES_RECEIPT_EVENTS: [(&str, &str); 5] = [
    ("delivery", "Email Delivered"),
    ("bounce", "Email Bounced"),
    ("complaint", "Email Complaint Received"),
    ("reject", "Email Rejected"),
    ("renderingFailure", "Email Rendering Failed"),
];

fn sorted_strings(v: &Value) -> Vec<&str> {
    let mut out: Vec<&str> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_else(|| panic!("not a string: {s}")))
        .collect();
    out.sort();
    out
}

#[test]
fn the_configuration_set_publishes_the_receipt_events_to_the_default_bus() {
    let t = template();
    assert_eq!(
        t["Resources"]["SesConfigurationSet"]["Type"],
        "AWS::SES::ConfigurationSet"
    );
    let d = &t["Resources"]["SesEventDestination"];
    assert_eq!(d["Type"], "AWS::SES::ConfigurationSetEventDestination");
    assert_eq!(
        d["Properties"]["ConfigurationSetName"],
        json!({"Ref": "SesConfigurationSet"})
    );
    let dest = &d["Properties"]["EventDestination"];
    assert_eq!(dest["Enabled"], true);
    let mut want: Vec<&str> = SES_RECEIPT_EVENTS.iter().map(|(kind, _)| *kind).collect();
    want.sort();
    assert_eq!(sorted_strings(&dest["MatchingEventTypes"]), want);
    // SES publishes to the default bus only.
    assert_eq!(
        dest["EventBridgeDestination"]["EventBusArn"],
        json!({"Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/default"})
    );
    for other in [
        "CloudWatchDestination",
        "KinesisFirehoseDestination",
        "SnsDestination",
    ] {
        assert!(dest[other].is_null(), "{other}");
    }
}

#[test]
fn the_email_function_sends_with_the_configuration_set() {
    let t = template();
    let props = &t["Resources"]["EmailFunction"]["Properties"];
    assert_eq!(
        props["Environment"]["Variables"]["FLARE_SES_CONFIGURATION_SET"],
        json!({"Ref": "SesConfigurationSet"})
    );
    assert!(
        t["Globals"]["Function"]["Environment"]["Variables"]["FLARE_SES_CONFIGURATION_SET"]
            .is_null(),
        "the email function's own variable"
    );
    // SES authorizes a send against the configuration set it names, too.
    let send = props["Policies"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["Statement"].as_array())
        .flatten()
        .find(|s| s["Action"] == json!(["ses:SendEmail"]))
        .expect("the email function may send with SES");
    let resources = send["Resource"].as_array().expect("a list of resources");
    assert!(
        resources.contains(&json!({"Fn::Sub": "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:configuration-set/${SesConfigurationSet}"})),
        "{resources:?}"
    );
}

/// v1.2: End User Messaging's two-way SMS reach the receipts function through a topic
/// of the stack's own, which only End User Messaging of this account may publish to; the
/// SMS and email functions know the public address response links are under.
#[test]
fn sms_replies_reach_the_receipts_function_and_links_know_the_public_address() {
    let t = template();
    let r = &t["Resources"];
    assert_eq!(
        r["ReceiptsFunction"]["Properties"]["Events"]["SmsInbound"],
        json!({"Type": "SNS", "Properties": {"Topic": {"Ref": "SmsInboundTopic"}}})
    );
    assert_eq!(r["SmsInboundTopic"]["Type"], "AWS::SNS::Topic");
    // Encrypted with a key of its own that End User Messaging (of this account) may use.
    assert_eq!(
        r["SmsInboundTopic"]["Properties"]["KmsMasterKeyId"],
        json!({"Fn::GetAtt": ["SmsInboundTopicKey", "Arn"]})
    );
    let key = &r["SmsInboundTopicKey"]["Properties"]["KeyPolicy"]["Statement"];
    assert!(
        key.as_array().unwrap().iter().any(|s| s["Principal"]
            == json!({"Service": "sms-voice.amazonaws.com"})
            && s["Action"] == json!(["kms:Decrypt", "kms:GenerateDataKey*"])),
        "{key}"
    );
    let statement = &r["SmsInboundTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"];
    assert_eq!(
        statement,
        &json!([{
            "Effect": "Allow",
            "Principal": {"Service": "sms-voice.amazonaws.com"},
            "Action": "sns:Publish",
            "Resource": {"Ref": "SmsInboundTopic"},
            "Condition": {
                "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
                "ArnLike": {"aws:SourceArn": {"Fn::Sub": "arn:${AWS::Partition}:sms-voice:${AWS::Region}:${AWS::AccountId}:*"}},
            },
        }])
    );
    assert_eq!(
        t["Outputs"]["SmsInboundTopicArn"]["Value"],
        json!({"Ref": "SmsInboundTopic"})
    );
    // The key that seals link codes, where the SMS and email functions may read it.
    assert_eq!(
        r["LinkKeySecret"]["Properties"]["Name"],
        json!({"Fn::Sub": "${SecretPrefix}/response-link-key"})
    );
    for f in [
        "SmsFunction",
        "SmsUrgentFunction",
        "EmailFunction",
        "EmailUrgentFunction",
    ] {
        let url = &r[f]["Properties"]["Environment"]["Variables"]["FLARE_PUBLIC_URL"];
        assert_eq!(url["Fn::If"][0], "HasPublicUrl", "{f}: {url}");
        assert_eq!(url["Fn::If"][1], json!({"Ref": "PublicUrl"}), "{f}");
    }
}

#[test]
fn the_receipts_function_hears_the_ses_events_of_the_stacks_configuration_set() {
    let t = template();
    let f = &t["Resources"]["ReceiptsFunction"];
    assert_eq!(f["Type"], "AWS::Serverless::Function");
    let rule = &f["Properties"]["Events"]["SesEvents"];
    assert_eq!(rule["Type"], "EventBridgeRule");
    let p = &rule["Properties"];
    assert!(
        p["EventBusName"].is_null(),
        "the default bus, where SES publishes"
    );
    assert_eq!(p["Pattern"]["source"], json!(["aws.ses"]));
    let mut want: Vec<&str> = SES_RECEIPT_EVENTS.iter().map(|(_, kind)| *kind).collect();
    want.sort();
    assert_eq!(sorted_strings(&p["Pattern"]["detail-type"]), want);
    assert_eq!(
        p["Pattern"]["detail"]["mail"]["tags"]["ses:configuration-set"],
        json!([{"Ref": "SesConfigurationSet"}]),
        "only this stack's emails"
    );
    // What EventBridge cannot hand over waits in an alarmed queue.
    let dlq = json!({"Fn::GetAtt": ["ReceiptsDeadLetterQueue", "Arn"]});
    assert_eq!(p["DeadLetterConfig"]["Arn"], dlq);
    assert!(p["RetryPolicy"]["MaximumRetryAttempts"].as_u64().is_some());
    // ... and so does an event the function itself failed on (an async invocation).
    assert_eq!(
        f["Properties"]["DeadLetterQueue"],
        json!({"Type": "SQS", "TargetArn": dlq})
    );
    let policy = &t["Resources"]["ReceiptsDeadLetterQueuePolicy"]["Properties"];
    assert_eq!(
        policy["Queues"],
        json!([{"Ref": "ReceiptsDeadLetterQueue"}])
    );
    let statement = &policy["PolicyDocument"]["Statement"][0];
    assert_eq!(
        (
            &statement["Principal"]["Service"],
            &statement["Action"],
            &statement["Resource"]
        ),
        (
            &json!("events.amazonaws.com"),
            &json!("sqs:SendMessage"),
            &dlq
        )
    );
    let depth = json!({"Fn::GetAtt": ["ReceiptsDeadLetterQueue", "QueueName"]});
    assert!(
        resources_of(t, "AWS::CloudWatch::Alarm")
            .iter()
            .any(|(_, a)| a["Properties"]["Dimensions"][0]["Value"] == depth),
        "no alarm on the receipts dead-letter queue"
    );
    // It finds delivery records by the log table's receipts index and updates them.
    let policies = f["Properties"]["Policies"].as_array().unwrap();
    assert!(
        policies.contains(&json!({"DynamoDBCrudPolicy": {"TableName": {"Ref": "LogTable"}}})),
        "{policies:?}"
    );
}

#[test]
fn the_log_table_finds_a_delivery_by_its_receipt_key() {
    let t = template();
    let table = &t["Resources"]["LogTable"]["Properties"];
    assert!(
        table["AttributeDefinitions"]
            .as_array()
            .unwrap()
            .contains(&json!({"AttributeName": "receipt_key", "AttributeType": "S"}))
    );
    let index = table["GlobalSecondaryIndexes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["IndexName"] == flare_aws::log::RECEIPTS_INDEX)
        .expect("the index receipts are matched by");
    assert_eq!(
        index["KeySchema"],
        json!([{"AttributeName": "receipt_key", "KeyType": "HASH"}])
    );
    assert_eq!(index["Projection"], json!({"ProjectionType": "KEYS_ONLY"}));
    assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
    assert!(index["ProvisionedThroughput"].is_null());
}

/// SNS writes each SMS's delivery status to two log groups once the account's
/// `DeliveryStatusIAMRole` is set; the stack creates them, subscribes the receipts
/// function and sets the role, all under one condition.
#[test]
fn the_receipts_function_reads_sns_sms_delivery_status_logs_unless_turned_off() {
    let t = template();
    let on = "SmsDeliveryStatusLoggingOn";
    let param = &t["Parameters"]["SmsDeliveryStatusLogging"];
    assert_eq!(param["Default"], "true");
    assert_eq!(param["AllowedValues"], json!(["true", "false"]));
    assert_eq!(
        t["Conditions"][on],
        json!({"Fn::Equals": [{"Ref": "SmsDeliveryStatusLogging"}, "true"]})
    );
    let conditional = |name: &str| {
        let r = &t["Resources"][name];
        assert!(!r.is_null(), "no resource {name}");
        assert_eq!(r["Condition"], on, "{name}");
        r
    };
    let mut subscriptions = Vec::new();
    // The account's two groups are made where missing and reused where they exist (a
    // second stack in the account and region deploys with the defaults): by a custom
    // resource, not as the stack's own AWS::Logs::LogGroup (which would fail on a second
    // stack), kept for the retention parameter.
    assert!(
        resources_of(t, "AWS::Logs::LogGroup").iter().all(|(_, g)| {
            !g["Properties"]["LogGroupName"]
                .to_string()
                .contains("DirectPublishToPhoneNumber")
        }),
        "the SMS delivery status log groups are not the stack's own"
    );
    let made = conditional("SmsDeliveryLogGroups");
    assert_eq!(made["Type"], "Custom::SmsDeliveryLogGroups");
    assert_eq!(
        made["Properties"]["RetentionInDays"],
        json!({"Ref": "LogRetentionDays"})
    );
    for name in [
        "sns/${AWS::Region}/${AWS::AccountId}/DirectPublishToPhoneNumber",
        "sns/${AWS::Region}/${AWS::AccountId}/DirectPublishToPhoneNumber/Failure",
    ] {
        let group = json!({"Fn::Sub": name});
        assert!(
            items(&made["Properties"]["LogGroups"]).contains(&&group),
            "{name} is made where missing"
        );
        let subs: Vec<(&String, &Value)> = resources_of(t, "AWS::Logs::SubscriptionFilter")
            .into_iter()
            .filter(|(_, s)| s["Properties"]["LogGroupName"] == group)
            .collect();
        assert_eq!(subs.len(), 1, "{name}: one subscription");
        let (sub_name, sub) = subs[0];
        conditional(sub_name);
        assert!(
            items(&sub["DependsOn"]).contains(&&json!("SmsDeliveryLogGroups")),
            "{sub_name} waits for its group"
        );
        assert_eq!(
            sub["Properties"]["DestinationArn"],
            json!({"Fn::GetAtt": ["ReceiptsFunction", "Arn"]}),
            "{sub_name}"
        );
        assert_eq!(
            sub["Properties"]["FilterPattern"], "",
            "{sub_name}: every line"
        );
        // CloudWatch Logs may invoke the function for this group, before the filter is made.
        let permission = items(&sub["DependsOn"])
            .into_iter()
            .filter_map(Value::as_str)
            .find(|d| *d != "SmsDeliveryLogGroups")
            .unwrap_or_else(|| panic!("{sub_name} depends on its permission"));
        let perm = conditional(permission);
        assert_eq!(perm["Type"], "AWS::Lambda::Permission");
        assert_eq!(
            (
                &perm["Properties"]["Action"],
                &perm["Properties"]["FunctionName"],
                &perm["Properties"]["Principal"],
                &perm["Properties"]["SourceArn"]
            ),
            (
                &json!("lambda:InvokeFunction"),
                &json!({"Ref": "ReceiptsFunction"}),
                &json!("logs.amazonaws.com"),
                &json!({"Fn::Sub": format!(
                    "arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:{name}:*"
                )})
            ),
            "{permission}"
        );
        subscriptions.push(sub_name.as_str());
    }

    // The custom resource sets the account's SMS attributes after the subscriptions
    // exist (and unsets them before they go).
    let status = conditional("SmsDeliveryStatus");
    assert_eq!(status["Type"], "Custom::SmsDeliveryStatus");
    let depends = sorted_strings(&status["DependsOn"]);
    subscriptions.sort();
    assert_eq!(depends, subscriptions);
    assert_eq!(
        status["Properties"]["RoleArn"],
        json!({"Fn::GetAtt": ["SmsDeliveryStatusRole", "Arn"]})
    );
    let setter_name = status["Properties"]["ServiceToken"]["Fn::GetAtt"][0]
        .as_str()
        .expect("ServiceToken is a function's Arn");
    let setter = conditional(setter_name);
    assert_eq!(setter["Type"], "AWS::Lambda::Function");
    assert_eq!(setter["Properties"]["Runtime"], "python3.12");
    let code = setter["Properties"]["Code"]["ZipFile"]
        .as_str()
        .expect("inline code");
    for needle in [
        "set_sms_attributes",
        r#""DeliveryStatusIAMRole": role"#,
        r#""DeliveryStatusSuccessSamplingRate": "100""#,
        r#"{"DeliveryStatusIAMRole": ""}"#,
        r#"event["ResponseURL"]"#,
        // The log groups: made where missing, an existing one reused.
        "logs.create_log_group(logGroupName=name)",
        "except logs.exceptions.ResourceAlreadyExistsException:",
    ] {
        assert!(code.contains(needle), "the setter's code lacks {needle}");
    }

    // SNS assumes this role to write the logs.
    let role = conditional("SmsDeliveryStatusRole");
    let trust = &role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0];
    assert_eq!(trust["Principal"]["Service"], "sns.amazonaws.com");
    assert_eq!(trust["Action"], "sts:AssumeRole");
    let logs = &role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0];
    assert_eq!(
        sorted_strings(&logs["Action"]),
        [
            "logs:CreateLogGroup",
            "logs:CreateLogStream",
            "logs:PutLogEvents",
            "logs:PutMetricFilter",
            "logs:PutRetentionPolicy"
        ]
    );

    // The setter may set the attributes and hand SNS that role.
    let setter_role = setter["Properties"]["Role"]["Fn::GetAtt"][0]
        .as_str()
        .expect("the setter's role is the stack's");
    let statements: Vec<&Value> = conditional(setter_role)["Properties"]["Policies"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["PolicyDocument"]["Statement"].as_array())
        .flatten()
        .collect();
    let allows = |action: &str, resource: &Value| {
        statements.iter().any(|s| {
            s["Effect"] == "Allow"
                && (s["Action"] == action
                    || s["Action"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == action)))
                && s["Resource"] == *resource
        })
    };
    assert!(
        allows("sns:SetSMSAttributes", &json!("*")),
        "{statements:?}"
    );
    assert!(
        allows(
            "iam:PassRole",
            &json!({"Fn::GetAtt": ["SmsDeliveryStatusRole", "Arn"]})
        ),
        "{statements:?}"
    );
}

// ---------------------------------------------------------------- right on AWS, not only on moto
// What moto does not check: the parameters' defaults deploy in any account, alarms can
// reach their topic, and IAM names the resources the code touches.

/// A scalar as the string CloudFormation compares in a condition (`7` and `"7"` alike).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Every parameter's default, then `overrides`, as strings.
fn parameter_values(t: &Value, overrides: &[(&str, &str)]) -> HashMap<String, String> {
    let mut values: HashMap<String, String> = t["Parameters"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(name, p)| Some((name.clone(), scalar(&p["Default"])?)))
        .collect();
    for (name, value) in overrides {
        values.insert(name.to_string(), value.to_string());
    }
    values
}

/// A condition's operand: a parameter's value, or a literal.
fn operand(params: &HashMap<String, String>, v: &Value) -> String {
    match v["Ref"].as_str() {
        Some(name) => params
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("a condition reads {name}, which has no value")),
        None => scalar(v).unwrap_or_else(|| panic!("a condition compares {v}")),
    }
}

/// Evaluates a condition (`Fn::Equals`, `Fn::Not`, `Fn::And`, `Fn::Or`, `Condition`) for
/// the parameter values `params`.
fn holds(t: &Value, params: &HashMap<String, String>, condition: &Value) -> bool {
    let (op, args) = condition
        .as_object()
        .and_then(|c| c.iter().next())
        .unwrap_or_else(|| panic!("not a condition: {condition}"));
    let list = || {
        args.as_array()
            .unwrap_or_else(|| panic!("{op} takes a list: {args}"))
    };
    match op.as_str() {
        "Condition" => condition_holds(t, params, args.as_str().unwrap()),
        "Fn::Equals" => operand(params, &list()[0]) == operand(params, &list()[1]),
        "Fn::Not" => !holds(t, params, &list()[0]),
        "Fn::And" => list().iter().all(|c| holds(t, params, c)),
        "Fn::Or" => list().iter().any(|c| holds(t, params, c)),
        other => panic!("a condition function this test does not evaluate: {other}"),
    }
}

/// Whether the template's condition `name` holds for the parameter values `params`.
fn condition_holds(t: &Value, params: &HashMap<String, String>, name: &str) -> bool {
    let c = &t["Conditions"][name];
    assert!(!c.is_null(), "no condition {name}");
    holds(t, params, c)
}

/// A property's value for the parameter values `params`: each `Fn::If` decided, each
/// parameter's `Ref` its value (a string); `None` for `AWS::NoValue`, which also drops out
/// of a list. Other functions are left as they are.
fn evaluated(t: &Value, params: &HashMap<String, String>, v: &Value) -> Option<Value> {
    if let Some([cond, yes, no]) = v.get("Fn::If").and_then(Value::as_array).map(Vec::as_slice) {
        let chosen = if condition_holds(t, params, cond.as_str().unwrap()) {
            yes
        } else {
            no
        };
        return evaluated(t, params, chosen);
    }
    match v["Ref"].as_str() {
        Some("AWS::NoValue") => None,
        Some(name) if params.contains_key(name) => Some(Value::String(params[name].clone())),
        _ => match v {
            Value::Array(items) => Some(Value::Array(
                items
                    .iter()
                    .filter_map(|i| evaluated(t, params, i))
                    .collect(),
            )),
            other => Some(other.clone()),
        },
    }
}

/// The functions that reserve concurrency for the parameter values `params`, and how much
/// each (the functions the stack creates then: their own conditions hold).
fn reserved_concurrency(t: &Value, params: &HashMap<String, String>) -> Vec<(String, u64)> {
    let mut functions = resources_of(t, "AWS::Serverless::Function");
    functions.extend(resources_of(t, "AWS::Lambda::Function"));
    let mut out: Vec<(String, u64)> = functions
        .into_iter()
        .filter(|(_, f)| {
            f["Condition"]
                .as_str()
                .is_none_or(|c| condition_holds(t, params, c))
        })
        .filter_map(|(name, f)| {
            let mut value = &f["Properties"]["ReservedConcurrentExecutions"];
            if value.is_null() && f["Type"] == "AWS::Serverless::Function" {
                value = &t["Globals"]["Function"]["ReservedConcurrentExecutions"];
            }
            if value.is_null() {
                return None;
            }
            let n = match evaluated(t, params, value)? {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            }
            .unwrap_or_else(|| panic!("{name}: reserved concurrency {value} is not a number"));
            if n == 0 {
                return None;
            }
            Some((name.clone(), n))
        })
        .collect();
    out.sort();
    out
}

/// Lambda keeps 100 of an account's concurrency unreserved ("You can reserve up to the
/// Unreserved account concurrency value minus 100", Lambda developer guide, Configuring
/// reserved concurrency), and a new account's limit may be 10: at the parameters'
/// defaults the stack reserves nothing, or it cannot deploy there.
#[test]
fn no_function_reserves_concurrency_at_the_parameter_defaults() {
    const NEW_ACCOUNT_LIMIT: u64 = 10;
    const KEPT_UNRESERVED: u64 = 100;
    let t = template();
    let defaults = parameter_values(t, &[]);
    assert!(
        !condition_holds(t, &defaults, "ReserveUrgent"),
        "ReserveUrgent holds at the defaults"
    );
    let reserved = reserved_concurrency(t, &defaults);
    let total: u64 = reserved.iter().map(|(_, n)| n).sum();
    let fits = total == 0 || total + KEPT_UNRESERVED <= NEW_ACCOUNT_LIMIT;
    assert!(
        fits,
        "at the defaults the stack reserves {total} ({reserved:?}): an account with a \
         concurrency limit of {NEW_ACCOUNT_LIMIT} cannot deploy it"
    );
    // Turned on, each urgent lane's function reserves what the parameter says.
    let on = parameter_values(t, &[("UrgentReservedConcurrency", "7")]);
    assert!(condition_holds(t, &on, "ReserveUrgent"));
    assert_eq!(
        reserved_concurrency(t, &on),
        [
            ("EmailUrgentFunction".to_string(), 7),
            ("PushUrgentFunction".to_string(), 7),
            ("SmsUrgentFunction".to_string(), 7),
        ]
    );
    // Its description says when and how to turn it on.
    let p = &t["Parameters"]["UrgentReservedConcurrency"];
    assert_eq!(p["MinValue"], 0);
    let about = p["Description"].as_str().unwrap();
    for needle in ["100", "UrgentConcurrency + 2"] {
        assert!(
            about.contains(needle),
            "the description lacks {needle}: {about}"
        );
    }
}

/// The stack's topics an alarm action names: `!Ref Topic`, and each branch of an `!If`; a
/// parameter (a topic the stack does not own) names none.
fn alarm_topics<'a>(t: &Value, action: &'a Value) -> Vec<&'a str> {
    if let Some([_, yes, no]) = action
        .get("Fn::If")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        let mut out = alarm_topics(t, yes);
        out.extend(alarm_topics(t, no));
        return out;
    }
    match action["Ref"].as_str() {
        Some(name) if t["Resources"].get(name).is_some() => {
            assert_eq!(t["Resources"][name]["Type"], "AWS::SNS::Topic", "{name}");
            vec![name]
        }
        Some(name) => {
            assert!(
                t["Parameters"].get(name).is_some(),
                "an alarm action names {name}"
            );
            Vec::new()
        }
        None => panic!("an alarm action this test cannot follow: {action}"),
    }
}

/// CloudWatch alarms cannot publish to a topic encrypted with an AWS managed key
/// (alias/aws/sns: its key policy does not let CloudWatch use the key, and no one can
/// change it; "How do I configure a CloudWatch alarm with an encrypted Amazon SNS
/// topic?", AWS re:Post Knowledge Center). The topic the stack creates has a key of its
/// own, which CloudWatch may use for this account's alarms.
#[test]
fn no_alarm_notifies_a_topic_encrypted_with_an_aws_managed_key() {
    let t = template();
    let r = &t["Resources"];
    let mut topics: Vec<&str> = Vec::new();
    for (_, alarm) in resources_of(t, "AWS::CloudWatch::Alarm") {
        for actions in ["AlarmActions", "OKActions", "InsufficientDataActions"] {
            for action in alarm["Properties"][actions]
                .as_array()
                .into_iter()
                .flatten()
            {
                topics.extend(alarm_topics(t, action));
            }
        }
    }
    topics.sort();
    topics.dedup();
    assert_eq!(topics, ["AlarmTopic"]);
    for topic in topics {
        let key_id = &r[topic]["Properties"]["KmsMasterKeyId"];
        if let Some(id) = key_id.as_str() {
            assert!(
                !(id.starts_with("alias/aws/") || id.contains(":alias/aws/")),
                "{topic} is encrypted with the AWS managed key {id}: alarms cannot publish to it"
            );
        }
        let key = key_id["Fn::GetAtt"][0]
            .as_str()
            .or_else(|| key_id["Ref"].as_str())
            .unwrap_or_else(|| panic!("{topic}'s key {key_id} is not the stack's own"));
        let k = &r[key];
        assert_eq!(k["Type"], "AWS::KMS::Key", "{topic}'s key {key}");
        assert_eq!(
            k["Condition"], r[topic]["Condition"],
            "{key} is made with {topic}"
        );
        assert_eq!(k["Properties"]["EnableKeyRotation"], true, "{key} rotates");
        let statements = k["Properties"]["KeyPolicy"]["Statement"]
            .as_array()
            .unwrap_or_else(|| panic!("{key} has a key policy"));
        // The account administers it (a key policy without that locks everyone out).
        assert!(
            statements.iter().any(|s| s["Effect"] == "Allow"
                && s["Principal"]["AWS"]
                    == json!({"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"})
                && s["Action"] == "kms:*"),
            "{key}: {statements:?}"
        );
        let cloudwatch = statements
            .iter()
            .find(|s| s["Principal"]["Service"] == "cloudwatch.amazonaws.com")
            .unwrap_or_else(|| panic!("{key} does not let CloudWatch use it"));
        assert_eq!(cloudwatch["Effect"], "Allow");
        assert_eq!(
            sorted_strings(&cloudwatch["Action"]),
            ["kms:Decrypt", "kms:GenerateDataKey*"]
        );
    }
}

/// A list property's items (one item alone is a list of one).
fn items(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        Value::Null => Vec::new(),
        one => vec![one],
    }
}

/// Every IAM policy statement in the template, with the resource it is in: the functions'
/// own statements (SAM's policy templates, such as SQSSendMessagePolicy, name their
/// resources themselves), roles' and policies' documents, and queue and topic policies.
/// Key policies are left out: in one, `Resource: "*"` is the key itself.
fn policy_statements(t: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for (name, r) in t["Resources"].as_object().unwrap() {
        let p = &r["Properties"];
        let documents: Vec<&Value> = match r["Type"].as_str().unwrap_or_default() {
            "AWS::Serverless::Function" => items(&p["Policies"])
                .into_iter()
                .filter(|d| !d["Statement"].is_null())
                .collect(),
            "AWS::IAM::Role" | "AWS::IAM::User" | "AWS::IAM::Group" => items(&p["Policies"])
                .into_iter()
                .map(|d| &d["PolicyDocument"])
                .collect(),
            "AWS::IAM::Policy"
            | "AWS::IAM::ManagedPolicy"
            | "AWS::SQS::QueuePolicy"
            | "AWS::SNS::TopicPolicy" => vec![&p["PolicyDocument"]],
            _ => Vec::new(),
        };
        for d in documents {
            for s in items(&d["Statement"]) {
                out.push((name.clone(), s));
            }
        }
    }
    out
}

/// A statement's actions.
fn actions_of(s: &Value) -> Vec<&str> {
    items(&s["Action"])
        .into_iter()
        .map(|a| {
            a.as_str()
                .unwrap_or_else(|| panic!("an action that is not a string: {a}"))
        })
        .collect()
}

/// A statement's resources, each branch of an `!If` included.
fn resource_values(v: &Value) -> Vec<&Value> {
    if let Some([_, yes, no]) = v.get("Fn::If").and_then(Value::as_array).map(Vec::as_slice) {
        let mut out = resource_values(yes);
        out.extend(resource_values(no));
        return out;
    }
    match v {
        Value::Array(a) => a.iter().flat_map(resource_values).collect(),
        one => vec![one],
    }
}

/// The actions IAM grants only on `"*"`, each with why (the Service Authorization
/// Reference, "Actions, resources, and condition keys for Amazon SNS": an action without
/// a resource type takes `"*"`).
const ACTIONS_WITHOUT_A_RESOURCE: [(&str, &str); 5] = [
    (
        "sns:Publish",
        "an SMS is published to a phone number, which has no ARN",
    ),
    (
        "sns:CreatePlatformEndpoint",
        "the action has no resource type (the Service Authorization Reference's SNS table)",
    ),
    (
        "sns:DeleteEndpoint",
        "the action has no resource type (the Service Authorization Reference's SNS table)",
    ),
    (
        "sns:SetSMSAttributes",
        "the account's SMS settings: the action has no resource type",
    ),
    (
        "sns:GetSMSAttributes",
        "the account's SMS settings: the action has no resource type",
    ),
];

#[test]
fn no_iam_statement_allows_every_resource_but_for_actions_that_have_none() {
    let t = template();
    let statements = policy_statements(t);
    assert!(statements.len() >= 20, "{}", statements.len());
    let mut allowed: Vec<&str> = ACTIONS_WITHOUT_A_RESOURCE.iter().map(|(a, _)| *a).collect();
    allowed.sort();
    let mut used: Vec<&str> = Vec::new();
    for (at, s) in &statements {
        assert!(s["NotResource"].is_null(), "{at}: NotResource in {s}");
        assert!(s["NotAction"].is_null(), "{at}: NotAction in {s}");
        if s["Effect"] != "Allow" {
            continue;
        }
        let resources = resource_values(&s["Resource"]);
        if !resources.iter().any(|r| r.as_str() == Some("*")) {
            continue;
        }
        for a in actions_of(s) {
            assert!(
                allowed.contains(&a),
                "{at}: {a} is allowed on every resource (\"*\"): name its resources, or, if \
                 the action has no resource type, add it to ACTIONS_WITHOUT_A_RESOURCE"
            );
            used.push(a);
        }
    }
    used.sort();
    used.dedup();
    assert_eq!(
        used, allowed,
        "an action no statement needs on \"*\" any more"
    );
}

/// The one statement among `statements` of `resource` that allows `action`.
fn statement_allowing<'a>(
    statements: &[(String, &'a Value)],
    resource: &str,
    action: &str,
) -> &'a Value {
    let found: Vec<&Value> = statements
        .iter()
        .filter(|(at, s)| at == resource && actions_of(s).contains(&action))
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{resource}: statements allowing {action}: {found:?}"
    );
    found[0]
}

/// The API registers devices only in the platform applications it is given (an empty
/// parameter drops out); with none given its statement still names a resource. It
/// deletes endpoints and sends test emails on this account's resources only.
#[test]
fn the_api_sends_test_email_only_as_the_accounts_identities_and_configuration_set() {
    let t = template();
    let statements = policy_statements(t);
    let send = statement_allowing(&statements, "ApiFunction", "ses:SendEmail");
    assert_eq!(
        send["Resource"],
        json!([
            {"Fn::Sub": "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/*"},
            {"Fn::Sub": "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:configuration-set/${SesConfigurationSet}"}
        ])
    );
}

/// A job the provider cannot take yet (its pace is full, or it asked to slow down) is
/// postponed: SendMessage of the job, delayed, to the queue of its channel and lane
/// (`SqsQueue::postpone`; each function holds both lanes' URLs and takes the job's).
/// `DeliveryFunction` postpones whatever the channel, so every delivery function may.
#[test]
fn every_delivery_function_may_postpone_a_job_to_either_lane_of_its_channel() {
    let t = template();
    let statements = policy_statements(t);
    for (function, channel) in [
        ("PushFunction", "Push"),
        ("PushUrgentFunction", "Push"),
        ("SmsFunction", "Sms"),
        ("SmsUrgentFunction", "Sms"),
        ("EmailFunction", "Email"),
        ("EmailUrgentFunction", "Email"),
    ] {
        let policies = t["Resources"][function]["Properties"]["Policies"]
            .as_array()
            .unwrap_or_else(|| panic!("{function} has policies"));
        for queue in [format!("{channel}Queue"), format!("{channel}UrgentQueue")] {
            let by_template = policies.contains(
                &json!({"SQSSendMessagePolicy": {"QueueName": {"Fn::GetAtt": [queue, "QueueName"]}}}),
            );
            let arn = json!({"Fn::GetAtt": [queue, "Arn"]});
            let by_statement = statements.iter().any(|(at, s)| {
                at == function
                    && s["Effect"] == "Allow"
                    && actions_of(s)
                        .iter()
                        .any(|a| ["sqs:SendMessage", "sqs:SendMessage*"].contains(a))
                    && resource_values(&s["Resource"]).contains(&&arn)
            });
            assert!(
                by_template || by_statement,
                "{function} cannot postpone a job to {queue}"
            );
        }
    }
}

/// Every queue is encrypted at rest (SSE-SQS). checkov's CKV_AWS_27 knows only a KMS key
/// for it, so .checkov.yaml skips that check and this one stands in.
#[test]
fn every_queue_is_encrypted() {
    let t = template();
    let queues = resources_of(t, "AWS::SQS::Queue");
    assert!(queues.len() >= 15, "{}", queues.len());
    for (name, q) in queues {
        let p = &q["Properties"];
        assert!(
            p["SqsManagedSseEnabled"] == true || !p["KmsMasterKeyId"].is_null(),
            "{name} is not encrypted"
        );
    }
}

/// An urgent lane's function runs its normal lane's binary: its role, after the SAM
/// transform, is the same (the emulator tests run the normal lanes' binaries under their
/// roles with IAM enforced, so this holds the urgent lanes to what they proved).
#[test]
fn each_urgent_lanes_role_is_its_normal_lanes() {
    let root = workspace_root();
    let lanes = [
        ("PushFunction", "PushUrgentFunction"),
        ("SmsFunction", "SmsUrgentFunction"),
        ("EmailFunction", "EmailUrgentFunction"),
    ];
    let mut cmd = Command::new(python());
    cmd.arg(root.join("scripts/harness/template_roles.py"))
        .arg(root.join("template.yaml"));
    for (normal, urgent) in lanes {
        cmd.args(["--function", normal, "--function", urgent]);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running template_roles.py: {e}\n  Fix: {FIX}"));
    assert!(
        out.status.success(),
        "template_roles.py failed: {}\n  Fix: {FIX}",
        String::from_utf8_lossy(&out.stderr)
    );
    let roles: Value = serde_json::from_slice(&out.stdout).unwrap();
    let documents = |id: &str| -> Vec<String> {
        let mut d: Vec<String> = roles[id]["Policies"]
            .as_object()
            .unwrap_or_else(|| panic!("{id} has no policies: {roles}"))
            .values()
            .map(Value::to_string)
            .collect();
        d.sort();
        d
    };
    for (normal, urgent) in lanes {
        assert_eq!(documents(normal), documents(urgent), "{urgent} vs {normal}");
    }
}

/// Writes a resource's names relative to a lane: `SmsUrgentQueue` in the urgent lane's
/// block and `SmsQueue` in the normal lane's both read `Sms@own@Queue` (the other lane's
/// `Sms@other@Queue`), `-sms-urgent` and `-sms` read `-sms@own@`. Arrays are sorted, so
/// the same statements listed in another order compare equal.
fn lane_relative(v: &Value, urgent: bool) -> Value {
    let text = v.to_string();
    let names = regex_lite::Regex::new(r"\b(Push|Sms|Email)(Urgent)?([A-Z])").unwrap();
    let text = names.replace_all(&text, |c: &regex_lite::Captures| {
        let own = c.get(2).is_some() == urgent;
        format!("{}@{}@{}", &c[1], if own { "own" } else { "other" }, &c[3])
    });
    let lower = regex_lite::Regex::new(r"-(push|sms|email)(-urgent)?\b").unwrap();
    let text = lower.replace_all(&text, |c: &regex_lite::Captures| {
        let own = c.get(2).is_some() == urgent;
        format!("-{}@{}@", &c[1], if own { "own" } else { "other" })
    });
    sorted(serde_json::from_str(&text).unwrap())
}

fn sorted(v: Value) -> Value {
    match v {
        Value::Array(a) => {
            let mut a: Vec<Value> = a.into_iter().map(sorted).collect();
            a.sort_by_key(|x| x.to_string());
            Value::Array(a)
        }
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, sorted(v))).collect()),
        other => other,
    }
}

/// Removes `path` from `v` and answers what was there.
fn take(v: &mut Value, path: &[&str]) -> Value {
    let (last, parents) = path.split_last().unwrap();
    let mut at = v;
    for p in parents {
        at = &mut at[*p];
    }
    at.as_object_mut()
        .and_then(|o| o.remove(*last))
        .unwrap_or(Value::Null)
}

/// The template writes each channel's two lanes out in full (a `Fn::ForEach` would cost
/// the SAM transform in the IAM harness and checkov more than it saves: see
/// docs/architecture.md). This holds them to one shape: for push, SMS and email, the
/// urgent lane's function, queues, dead-letter queue, log group and dead-letter alarm
/// are the normal lane's with the lane's names, differing only where named here.
#[test]
fn each_channels_two_lanes_are_the_same_blocks_but_for_the_named_differences() {
    let r = &template()["Resources"];
    for channel in ["Push", "Sms", "Email"] {
        let pair = |suffix: &str| {
            let normal = r[format!("{channel}{suffix}")].clone();
            let urgent = r[format!("{channel}Urgent{suffix}")].clone();
            assert!(
                normal.is_object() && urgent.is_object(),
                "{channel}{suffix} and {channel}Urgent{suffix}"
            );
            (normal, urgent)
        };
        // The functions: the urgent one may reserve concurrency, scales by the urgent
        // parameter, and drains its dead letters two at a time.
        let (mut normal, mut urgent) = pair("Function");
        assert_eq!(
            take(&mut urgent, &["Properties", "ReservedConcurrentExecutions"]),
            json!({"Fn::If": ["ReserveUrgent", {"Ref": "UrgentReservedConcurrency"}, {"Ref": "AWS::NoValue"}]}),
            "{channel}"
        );
        let jobs_scaling = [
            "Properties",
            "Events",
            "Jobs",
            "Properties",
            "ScalingConfig",
        ];
        assert_eq!(
            take(&mut normal, &jobs_scaling),
            json!({"MaximumConcurrency": {"Ref": format!("{channel}MaxConcurrency")}})
        );
        assert_eq!(
            take(&mut urgent, &jobs_scaling),
            json!({"MaximumConcurrency": {"Ref": "UrgentConcurrency"}})
        );
        let dead_scaling = [
            "Properties",
            "Events",
            "DeadLetters",
            "Properties",
            "ScalingConfig",
        ];
        assert_eq!(take(&mut normal, &dead_scaling), Value::Null);
        assert_eq!(
            take(&mut urgent, &dead_scaling),
            json!({"MaximumConcurrency": 2})
        );
        assert_eq!(
            lane_relative(&normal, false),
            lane_relative(&urgent, true),
            "{channel}'s lanes' functions differ beyond the named differences"
        );
        for suffix in ["Queue", "DeadLetterQueue", "LogGroup", "DeadLetterAlarm"] {
            let (mut normal, mut urgent) = pair(suffix);
            // Alarm texts say which lane.
            take(&mut normal, &["Properties", "AlarmDescription"]);
            take(&mut urgent, &["Properties", "AlarmDescription"]);
            assert_eq!(
                lane_relative(&normal, false),
                lane_relative(&urgent, true),
                "{channel}{suffix}: the lanes differ"
            );
        }
        // Per lane only: the channel's failure alarm counts both lanes' sends (one
        // metric); the backlog alarm watches the urgent queue, whose wait matters.
        assert!(r[format!("{channel}FailureAlarm")].is_object());
        assert!(r[format!("{channel}UrgentFailureAlarm")].is_null());
        assert!(r[format!("{channel}UrgentBacklogAlarm")].is_object());
        assert!(r[format!("{channel}BacklogAlarm")].is_null());
    }
}

/// v1.2 audit trail: its own table, kept `AuditRetentionDays` (at least 365) by TTL;
/// only the API function touches it, and only to read and put (the entry and the head,
/// in one transaction): no role may update or delete an audit item.
#[test]
fn the_audit_trail_is_appended_and_read_never_changed_and_kept_a_year() {
    let t = template();
    let days = &t["Parameters"]["AuditRetentionDays"];
    assert_eq!(
        (days["MinValue"].as_i64(), days["Default"].as_i64()),
        (Some(365), Some(400))
    );
    let table = &t["Resources"]["AuditTable"]["Properties"];
    assert_eq!(
        table["TimeToLiveSpecification"],
        json!({"AttributeName": "expires_at", "Enabled": true})
    );
    let env = &t["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(env["FLARE_AUDIT_TABLE"], json!({"Ref": "AuditTable"}));
    assert_eq!(
        env["FLARE_AUDIT_RETENTION_DAYS"],
        json!({"Ref": "AuditRetentionDays"})
    );
    let audit_arn = json!({"Fn::GetAtt": ["AuditTable", "Arn"]});
    for (name, f) in resources_of(t, "AWS::Serverless::Function") {
        let policies = f["Properties"]["Policies"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let text = serde_json::to_string(&policies).unwrap();
        // No SAM policy template names the table (DynamoDBCrudPolicy would allow deletes).
        assert!(
            !text.contains("\"TableName\":{\"Ref\":\"AuditTable\"}"),
            "{name}: {text}"
        );
        let actions: Vec<String> = policies
            .iter()
            .flat_map(|p| p["Statement"].as_array().cloned().unwrap_or_default())
            .filter(|s| s["Resource"] == audit_arn)
            .flat_map(|s| s["Action"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a.as_str().map(String::from))
            .collect();
        if name == "ApiFunction" {
            let mut sorted = actions.clone();
            sorted.sort();
            assert_eq!(
                sorted,
                ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"]
            );
        } else {
            assert!(
                actions.is_empty(),
                "{name} may not touch the audit trail: {actions:?}"
            );
        }
        for a in &actions {
            assert!(
                ![
                    "dynamodb:UpdateItem",
                    "dynamodb:DeleteItem",
                    "dynamodb:BatchWriteItem",
                    "dynamodb:*"
                ]
                .contains(&a.as_str()),
                "{name}: {a}"
            );
        }
    }
}

/// The stand-in's endpoint variable is declared for every function (SAM's `--env-vars`
/// sets only declared variables) and empty as deployed, where an empty value means
/// AWS's own endpoints; no function sets one of its own.
#[test]
fn the_local_endpoint_variable_is_declared_empty_for_every_function() {
    let t = template();
    let name = flare_aws::ENDPOINT_VARIABLE;
    assert_eq!(
        t["Globals"]["Function"]["Environment"]["Variables"][name],
        json!(""),
        "{name} in Globals"
    );
    let functions = t["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function");
    for (id, r) in functions {
        assert!(
            r["Properties"]["Environment"]["Variables"][name].is_null(),
            "{id} sets {name}: the stand-in's address belongs in the env file only"
        );
    }
}
