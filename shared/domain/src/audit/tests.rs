use super::*;
use serde_json::json;

fn record(n: u32) -> AuditRecord {
    AuditRecord {
        at: DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + chrono::TimeDelta::seconds(i64::from(n)),
        actor: Actor {
            sub: "u-admin".into(),
            roles: vec!["admin".into()],
        },
        action: "PUT /v1/settings/sms/{control_center_id}".into(),
        target: "/v1/settings/sms/main".into(),
        outcome: AuditOutcome {
            status: 200,
            code: None,
        },
        changes: changes(
            Some(&json!({"sender_number": format!("+1555000{n:04}")})),
            Some(&json!({"sender_number": format!("+1555100{n:04}")})),
            &[("password", SecretChange::Changed)],
        ),
        source_ip: Some("203.0.113.7".into()),
        user_agent: Some("curl/8".into()),
        request_id: Some(format!("req-{n}")),
    }
}

fn chain(n: u32) -> Vec<AuditEntry> {
    let mut out: Vec<AuditEntry> = Vec::new();
    for i in 1..=n {
        let prev = out.last().map(|e| (e.seq, e.hash.as_str()));
        let e = AuditEntry::chain(record(i), prev);
        out.push(e);
    }
    out
}

fn head(entries: &[AuditEntry]) -> Option<(u64, &str)> {
    entries.last().map(|e| (e.seq, e.hash.as_str()))
}

#[test]
fn the_hash_is_sha256_of_the_previous_hash_and_the_canonical_json_without_hash() {
    let c = chain(2);
    let mut v = serde_json::to_value(&c[1]).unwrap();
    v.as_object_mut().unwrap().remove("hash");
    let text = format!("{}{}", c[0].hash, canonical_json(&v));
    let want: String = Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(c[1].hash, want);
    assert_eq!(c[1].hash.len(), 64);
    // The first entry follows the empty string.
    assert_eq!(c[0].hash, c[0].expected_hash(""));
    assert_eq!((c[0].audit_id.as_str(), c[1].seq), ("a-000000000001", 2));
    // The entry answers the contract's fields at its top level.
    for field in [
        "audit_id",
        "at",
        "actor",
        "action",
        "target",
        "outcome",
        "changes",
        "source_ip",
        "user_agent",
        "request_id",
        "hash",
    ] {
        assert!(v.get(field).is_some() || field == "hash", "{field}: {v}");
    }
}

#[test]
fn canonical_json_sorts_keys_at_every_level_whatever_the_order_built() {
    let a: Value =
        serde_json::from_str(r#"{"b": 1, "a": {"d": [2, {"z": 1, "y": "é"}], "c": null}}"#)
            .unwrap();
    assert_eq!(
        canonical_json(&a),
        r#"{"a":{"c":null,"d":[2,{"y":"é","z":1}]},"b":1}"#
    );
}

#[test]
fn an_intact_chain_verifies_and_a_deleted_or_edited_entry_is_named() {
    let c = chain(5);
    assert_eq!(
        verify(&c, head(&c)),
        Verified {
            entries: 5,
            first_broken: None
        }
    );
    // Edited in place: that entry.
    let mut edited = c.clone();
    edited[2].record.changes = Map::new();
    assert_eq!(
        verify(&edited, head(&c)).first_broken.as_deref(),
        Some("a-000000000003")
    );
    // Edited with its hash recomputed: the next one no longer follows.
    edited[2].hash = edited[2].expected_hash(&c[1].hash);
    assert_eq!(
        verify(&edited, head(&c)).first_broken.as_deref(),
        Some("a-000000000004")
    );
    // Deleted: the gap.
    let mut deleted = c.clone();
    deleted.remove(1);
    assert_eq!(
        verify(&deleted, head(&c)).first_broken.as_deref(),
        Some("a-000000000002")
    );
    // The newest deleted: the head says it was there.
    let mut newest = c.clone();
    newest.pop();
    assert_eq!(
        verify(&newest, head(&c)).first_broken.as_deref(),
        Some("a-000000000005")
    );
    assert_eq!(verify(&[], None).first_broken, None);
}

#[test]
fn changes_name_each_field_from_and_to_and_a_secret_only_by_a_word() {
    let before = json!({"provider": "http", "url": "https://a.example/send", "password_set": true, "format": "json"});
    let after = json!({"provider": "http", "url": "https://b.example/send", "password_set": true, "username": "acct"});
    let c = changes(
        Some(&before),
        Some(&after),
        &[("password", SecretChange::Changed)],
    );
    assert_eq!(
        Value::Object(c),
        json!({
            "url": {"from": "https://a.example/send", "to": "https://b.example/send"},
            "format": {"from": "json", "to": null},
            "username": {"from": null, "to": "acct"},
            "password": "changed",
        })
    );
    let created = changes(None, Some(&json!({"name": "Ana"})), &[]);
    assert_eq!(
        Value::Object(created),
        json!({"name": {"from": null, "to": "Ana"}})
    );
    assert!(changes(Some(&before), Some(&before), &[]).is_empty());
}
