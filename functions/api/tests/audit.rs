//! v1.2 audit trail on moto, wired as the API function wires it: an audited change and
//! its entry go in one DynamoDB transaction (the change's table and the audit table), so
//! racing saves leave one entry each, from the state their condition held on, and a
//! fault in the entry's part of the transaction leaves neither.

mod common;

use common::*;
use flare_aws as aws;
use flare_shared::app::Services;
use flare_tests::stack::AwsStack;
use flare_tests::{moto, unique};
use serde_json::{Value, json};

struct Audited {
    svc: Services,
    stack: AwsStack,
    org: String,
}

async fn spawn_api() -> Audited {
    let stack = AwsStack::create(moto()).await.unwrap();
    let config = config(&stack);
    Audited {
        svc: config.services(&stack.sdk).unwrap(),
        stack,
        org: unique("org"),
    }
}

impl Audited {
    async fn send(&self, who: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let ev = with(event("get-settings"), method, path, body);
        call(&self.svc, &as_caller(ev, who, &self.org, "[admin]")).await
    }

    /// The trail, newest first (up to 100 entries).
    async fn trail(&self) -> Vec<Value> {
        let (s, b) = self.send("u-admin", "GET", "/v1/audit", None).await;
        assert_eq!(s, 200, "{b}");
        b["entries"].as_array().unwrap().clone()
    }

    async fn verify(&self) -> Value {
        let (s, b) = self.send("u-admin", "GET", "/v1/audit/verify", None).await;
        assert_eq!(s, 200, "{b}");
        b
    }

    /// Test-only access to the audit table: an item where the next entry goes.
    async fn put_audit_item(&self, sk: &str, put: bool) {
        let db = aws::dynamodb(&self.stack.sdk);
        let pk = aws::dynamodb::org_pk(&flare_shared::domain::OrgId::parse(&self.org).unwrap());
        let key = |k: &str, v: &str| {
            (
                k.to_string(),
                aws_sdk_dynamodb::types::AttributeValue::S(v.into()),
            )
        };
        if put {
            let item = [key("pk", &pk), key("sk", sk), key("body", "not an entry")];
            db.put_item()
                .table_name(&self.stack.audit_table)
                .set_item(Some(item.into_iter().collect()))
                .send()
                .await
                .unwrap();
        } else {
            db.delete_item()
                .table_name(&self.stack.audit_table)
                .set_key(Some([key("pk", &pk), key("sk", sk)].into_iter().collect()))
                .send()
                .await
                .unwrap();
        }
    }
}

fn sms(number: &str) -> Option<Value> {
    Some(json!({"provider": "sns", "sender_number": number}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_racing_saves_leave_twenty_entries_each_from_the_save_before_it() {
    let api = spawn_api().await;
    let saves = (0..20).map(|i| {
        let api = &api;
        async move {
            let who = if i % 2 == 0 { "u-admin" } else { "u-other" };
            let path = format!("/v1/settings/sms/cc-{}", i % 4);
            api.send(who, "PUT", &path, sms(&format!("+1555123{i:04}")))
                .await
        }
    });
    for (s, b) in futures::future::join_all(saves).await {
        assert_eq!(s, 200, "{b}");
    }
    assert_eq!(api.verify().await, json!({"entries": 20, "intact": true}));
    let all = api.trail().await;
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=20).rev().collect::<Vec<_>>());
    // In chain order, each save's `from` is what the save before it on the same control
    // center left: the entry was written with the change, over the state it read.
    let mut last: std::collections::HashMap<String, Value> = Default::default();
    for e in all.iter().rev() {
        let change = &e["changes"]["sender_number"];
        let target = e["target"].as_str().unwrap().to_string();
        assert_eq!(
            change["from"],
            last.get(&target).cloned().unwrap_or(Value::Null),
            "{e}"
        );
        last.insert(target, change["to"].clone());
    }
    assert_eq!(
        all.iter()
            .filter(|e| e["actor"]["sub"] == "u-other")
            .count(),
        10
    );
}

#[tokio::test]
async fn a_write_whose_entry_fails_leaves_neither_change_nor_entry() {
    let api = spawn_api().await;
    let path = "/v1/settings/sms/main";
    assert_eq!(
        api.send("u-admin", "PUT", path, sms("+15551230001"))
            .await
            .0,
        200
    );
    // A fault after the change: the next entry's place is taken, so the entry's put in
    // the change's transaction fails, whatever head it follows.
    api.put_audit_item("A#000000000002", true).await;
    let (s, b) = api.send("u-admin", "PUT", path, sms("+15551230002")).await;
    assert!(s >= 500, "{s} {b}");
    let user = Some(json!({"name": "Ann", "license": "basic_responder"}));
    let (s, b) = api.send("u-admin", "PUT", "/v1/users/u-ann", user).await;
    assert!(s >= 500, "{s} {b}");
    api.put_audit_item("A#000000000002", false).await;
    let (_, stored) = api.send("u-admin", "GET", path, None).await;
    assert_eq!(stored["sender_number"], "+15551230001");
    assert_eq!(
        api.send("u-admin", "GET", "/v1/users/u-ann", None).await.0,
        404
    );
    assert_eq!(api.trail().await.len(), 1);
    // Cleared: the next save and its entry, from the state the failed ones left alone.
    assert_eq!(
        api.send("u-admin", "PUT", path, sms("+15551230003"))
            .await
            .0,
        200
    );
    let all = api.trail().await;
    assert_eq!(all.len(), 2);
    assert_eq!(
        all[0]["changes"]["sender_number"],
        json!({"from": "+15551230001", "to": "+15551230003"})
    );
    assert_eq!(api.verify().await, json!({"entries": 2, "intact": true}));
}
