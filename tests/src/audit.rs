//! What every `AuditLog` adapter promises: appends at once make one chain without a gap
//! or a fork, pages read it newest first with their filters, and it verifies.

use flare_shared::domain::OrgId;
use flare_shared::domain::audit::{Actor, AuditOutcome, AuditRecord, verify};
use flare_shared::ports::{AuditLog, AuditQuery};

/// A write attempt by `sub` on `target`.
pub fn record(sub: &str, target: &str) -> AuditRecord {
    AuditRecord {
        at: chrono::Utc::now(),
        actor: Actor {
            sub: sub.into(),
            roles: vec!["admin".into()],
        },
        action: "PUT /v1/settings/sms/{control_center_id}".into(),
        target: target.into(),
        outcome: AuditOutcome {
            status: 200,
            code: None,
        },
        changes: serde_json::json!({"max_segments": {"from": 3, "to": 1}, "password": "changed"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        source_ip: Some("203.0.113.7".into()),
        user_agent: None,
        request_id: Some(crate::unique("req")),
    }
}

/// 20 appends at once, then pages and the chain check; answers the chain as read.
pub async fn audit_log(log: &dyn AuditLog, org: &OrgId) {
    let appends = (0..20).map(|i| {
        let target = format!("/v1/settings/sms/cc-{}", i % 4);
        let sub = if i % 2 == 0 { "u-a" } else { "u-b" };
        async move { log.append(org, record(sub, &target)).await.unwrap() }
    });
    let mut seqs: Vec<u64> = futures::future::join_all(appends)
        .await
        .iter()
        .map(|e| e.seq)
        .collect();
    seqs.sort();
    assert_eq!(
        seqs,
        (1..=20).collect::<Vec<_>>(),
        "one chain, no gap, no fork"
    );
    let (chain, head) = log.chain(org).await.unwrap();
    assert_eq!(chain.len(), 20);
    let v = verify(&chain, head.as_ref().map(|(s, h)| (*s, h.as_str())));
    assert_eq!(v.first_broken, None, "{v:?}");
    // Numbers and nulls read back exactly as they were hashed.
    assert_eq!(chain[0].record.changes["max_segments"]["from"], 3);
    let q = |limit: usize| AuditQuery {
        limit,
        ..Default::default()
    };
    let (page, next) = log.page(org, &q(8)).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (13..=20).rev().collect::<Vec<_>>()
    );
    assert_eq!(next, Some(13));
    let (rest, next) = log
        .page(
            org,
            &AuditQuery {
                before: next,
                ..q(100)
            },
        )
        .await
        .unwrap();
    assert_eq!((rest.len(), next), (12, None));
    let (mine, _) = log
        .page(
            org,
            &AuditQuery {
                actor: Some("u-b".into()),
                ..q(100)
            },
        )
        .await
        .unwrap();
    assert_eq!(mine.len(), 10);
    let (one, _) = log
        .page(
            org,
            &AuditQuery {
                target: Some("/v1/settings/sms/cc-3".into()),
                ..q(100)
            },
        )
        .await
        .unwrap();
    assert_eq!(one.len(), 5);
    // Another organization's trail is its own.
    let other = OrgId::parse(&crate::unique("other")).unwrap();
    assert!(log.chain(&other).await.unwrap().0.is_empty());
}
