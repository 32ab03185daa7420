//! The audit trail of the API's writes: one entry per authenticated write attempt,
//! allowed or refused, with what it changed (each field `from`/`to`, a secret only as
//! `set`, `changed` or `removed`), and the routes that read and check the trail.

use super::Services;
use super::api::{ApiRequest, ApiResponse};
use super::auth::Claims;
use super::error::ApiError;
use super::routes::{Op, Route};
use crate::domain::OrgId;
use crate::domain::audit::{
    Actor, AuditEntry, AuditOutcome, AuditRecord, SecretChange, changes, verify,
};
use crate::ports::{AuditDraft, AuditQuery, Stored, drafting};
use serde_json::{Value, json};
use std::sync::Arc;

/// Whether the trail records `op`: everything that changes settings, users or devices,
/// or sends a message.
pub fn audited(op: Op) -> bool {
    matches!(
        op,
        Op::PutSms
            | Op::DeleteSms
            | Op::TestSms
            | Op::TestEmail
            | Op::PutEmail
            | Op::DeleteEmail
            | Op::PutCommunication
            | Op::PutUser
            | Op::DeleteUser
            | Op::AddDevice
            | Op::DeleteDevice
            | Op::ManualSms
    )
}

/// A subject's state as the trail compares it: its view with no secret in it, and
/// whether its password and header value are stored.
#[derive(Clone, Default)]
struct Snapshot {
    view: Option<Value>,
    password: bool,
    header: bool,
}

/// An SMS settings view as the trail compares it: whether a password and a header value
/// are stored, and the rest.
fn sms_snapshot(mut v: Value) -> Snapshot {
    let (password, header) = (
        v["password_set"] == json!(true),
        v.get("http_header").is_some(),
    );
    drop_keys(&mut v, &["password_set", "health"]);
    Snapshot {
        view: Some(v),
        password,
        header,
    }
}

/// An email settings view as the trail compares it: whether an SMTP password is stored,
/// and the rest.
fn email_snapshot(mut v: Value) -> Snapshot {
    let password = v["smtp"]["password_set"] == json!(true);
    if let Some(smtp) = v.get_mut("smtp") {
        drop_keys(smtp, &["password_set"]);
    }
    Snapshot {
        view: Some(v),
        password,
        header: false,
    }
}

fn plain_snapshot(v: Value) -> Snapshot {
    Snapshot {
        view: Some(v),
        ..Snapshot::default()
    }
}

/// A subject as the trail compares it.
fn snapshot_of(stored: Stored<'_>) -> Snapshot {
    match stored {
        Stored::Sms(Some(s)) => sms_snapshot(s.view()),
        Stored::Email(Some(e)) => email_snapshot(e.view()),
        Stored::Communication(Some(c)) => plain_snapshot(json!(c)),
        Stored::User(Some(u)) => plain_snapshot(super::directory::view(u)),
        _ => Snapshot::default(),
    }
}

fn drop_keys(v: &mut Value, keys: &[&str]) {
    if let Some(m) = v.as_object_mut() {
        for k in keys {
            m.remove(*k);
        }
    }
}

/// The state after a write, from its answer where the answer is the stored view (the
/// settings and user PUTs: it saves reading it again), or nothing stored (a DELETE).
fn answered(op: Op, r: &ApiResponse) -> Option<Snapshot> {
    match op {
        Op::DeleteSms | Op::DeleteEmail | Op::DeleteUser => Some(Snapshot::default()),
        Op::PutSms => r.body.clone().map(sms_snapshot),
        Op::PutEmail => r.body.clone().map(email_snapshot),
        Op::PutCommunication | Op::PutUser => r.body.clone().map(plain_snapshot),
        _ => None,
    }
}

/// The user whose devices a device route changed, as stored now.
async fn device_owner(svc: &Services, org: &OrgId, op: Op, params: &[String]) -> Option<Snapshot> {
    if !matches!(op, Op::AddDevice | Op::DeleteDevice) {
        return None;
    }
    let id = crate::domain::UserId::parse(params.first()?).ok()?;
    match svc.directory.get_user(org, &id).await {
        Ok(user) => Some(snapshot_of(Stored::User(user.as_ref()))),
        Err(e) => {
            tracing::warn!(error = ?e, "the audit trail could not read a device's user");
            None
        }
    }
}

/// What a write did to a secret: stored before and after, and whether the body sent
/// a new value.
fn secret(before: bool, after: bool, sent: bool) -> Option<SecretChange> {
    match (before, after) {
        (false, true) => Some(SecretChange::Set),
        (true, false) => Some(SecretChange::Removed),
        (true, true) if sent => Some(SecretChange::Changed),
        _ => None,
    }
}

/// The secrets a write touched, by the words the trail uses.
fn secret_changes(
    body: Option<&Value>,
    before: &Snapshot,
    after: &Snapshot,
) -> Vec<(&'static str, SecretChange)> {
    let body = body.unwrap_or(&Value::Null);
    let password_sent =
        body.get("password").is_some_and(Value::is_string) || body["smtp"]["password"].is_string();
    let header_sent = body
        .get("http_header")
        .and_then(Value::as_str)
        .is_some_and(|h| !h.trim_end().ends_with(crate::domain::header::MASK));
    let mut out = Vec::new();
    if let Some(c) = secret(before.password, after.password, password_sent) {
        out.push(("password", c));
    }
    if let Some(c) = secret(before.header, after.header, header_sent) {
        out.push(("http_header_value", c));
    }
    out
}

/// The status a write answers when it succeeds.
fn success_status(op: Op) -> u16 {
    match op {
        Op::AddDevice => 201,
        Op::ManualSms => 202,
        Op::DeleteSms | Op::DeleteEmail | Op::DeleteUser | Op::DeleteDevice => 204,
        _ => 200,
    }
}

/// The entry of one audited write, but for its outcome and changes; the state before
/// the write as the write said it, and the entry once a store wrote it.
struct Draft {
    op: Op,
    base: AuditRecord,
    body: Option<Value>,
    before: std::sync::Mutex<Snapshot>,
    entry: std::sync::Mutex<Option<AuditEntry>>,
}

fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Draft {
    /// The record of the write's outcome: its changes from the state before to `after`
    /// when it succeeded, none when it was refused.
    fn finish(&self, outcome: AuditOutcome, after: Option<&Snapshot>) -> AuditRecord {
        let mut record = self.base.clone();
        record.at = chrono::Utc::now();
        record.outcome = outcome;
        if let Some(after) = after {
            let before = locked(&self.before).clone();
            let secrets = secret_changes(self.body.as_ref(), &before, after);
            record.changes = changes(before.view.as_ref(), after.view.as_ref(), &secrets);
        }
        record
    }
}

impl AuditDraft for Draft {
    fn before(&self, stored: Stored<'_>) {
        *locked(&self.before) = snapshot_of(stored);
    }
    fn record(&self, after: Stored<'_>) -> AuditRecord {
        let outcome = AuditOutcome {
            status: success_status(self.op),
            code: None,
        };
        self.finish(outcome, Some(&snapshot_of(after)))
    }
    fn written(&self, entry: AuditEntry) {
        *locked(&self.entry) = Some(entry);
    }
    fn is_written(&self) -> bool {
        locked(&self.entry).is_some()
    }
}

/// Runs a write (`run`: the operation, or its refusal) and records it: with the change
/// in one transaction where the store keeps the trail beside it, else (a refusal, a
/// send, a write that found nothing to change) after it.
pub(super) async fn record_write<F>(
    svc: &Services,
    req: &ApiRequest,
    claims: &Claims,
    route: &Route,
    params: &[String],
    run: F,
) -> Result<ApiResponse, ApiError>
where
    F: std::future::Future<Output = Result<ApiResponse, ApiError>>,
{
    let org = &claims.org_id;
    let draft = Arc::new(Draft {
        op: route.op,
        base: AuditRecord {
            at: chrono::Utc::now(),
            actor: Actor {
                sub: claims.sub.clone(),
                roles: claims.role_names(),
            },
            action: format!("{} {}", route.method, route.path),
            target: req.path.clone(),
            changes: serde_json::Map::new(),
            outcome: AuditOutcome {
                status: 0,
                code: None,
            },
            source_ip: req.meta.source_ip.clone(),
            user_agent: req.meta.user_agent.clone(),
            request_id: req.meta.request_id.clone(),
        },
        body: serde_json::from_slice::<Value>(&req.body).ok(),
        before: Default::default(),
        entry: Default::default(),
    });
    let result = drafting(draft.clone(), run).await;
    if draft.is_written() {
        return result;
    }
    let record = match &result {
        Ok(r) => {
            let outcome = AuditOutcome {
                status: r.status,
                code: None,
            };
            // Nothing changed (a send, a device already registered), or a store that
            // does not keep the trail (in memory) wrote the change alone.
            let after = match answered(route.op, r) {
                Some(after) => after,
                None => device_owner(svc, org, route.op, params)
                    .await
                    .unwrap_or_else(|| locked(&draft.before).clone()),
            };
            draft.finish(outcome, Some(&after))
        }
        Err(e) => draft.finish(
            AuditOutcome {
                status: e.status(),
                code: Some(e.code().to_string()),
            },
            None,
        ),
    };
    if let Err(e) = svc.audit.append(org, record).await {
        tracing::error!(error = ?e, action = route.path, "a write was not recorded in the audit trail");
    }
    result
}

/// How many entries a page of `GET /v1/audit` holds at most, and by default.
pub const AUDIT_MAX: usize = 100;
pub const AUDIT_DEFAULT: usize = 50;

/// `GET /v1/audit?limit&cursor&since&until&actor&target`: newest first.
pub async fn list(svc: &Services, org: &OrgId, query: Option<&str>) -> Result<Value, ApiError> {
    let mut q = AuditQuery {
        limit: AUDIT_DEFAULT,
        ..Default::default()
    };
    let mut errors = crate::domain::FieldErrors::new();
    let time = |v: &str| chrono::DateTime::parse_from_rfc3339(v).map(|t| t.to_utc());
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=AUDIT_MAX).contains(&n) => q.limit = n,
                _ => errors.add(
                    "limit",
                    format!("must be a whole number from 1 to {AUDIT_MAX}"),
                ),
            },
            "cursor" => match value.strip_prefix("a-").and_then(|s| s.parse::<u64>().ok()) {
                Some(seq) => q.before = Some(seq),
                None => errors.add("cursor", "is not a cursor this list answered"),
            },
            "since" => match time(&value) {
                Ok(t) => q.since = Some(t),
                Err(_) => errors.add("since", "must be an RFC 3339 time"),
            },
            "until" => match time(&value) {
                Ok(t) => q.until = Some(t),
                Err(_) => errors.add("until", "must be an RFC 3339 time"),
            },
            "actor" => q.actor = Some(value.into_owned()),
            "target" => q.target = Some(value.into_owned()),
            other => errors.add(other, "unknown query parameter"),
        }
    }
    if !errors.is_empty() {
        return Err(errors.into());
    }
    let (entries, next) = svc.audit.page(org, &q).await?;
    Ok(json!({
        "entries": entries,
        "next_cursor": next.map(crate::domain::audit::audit_id),
    }))
}

/// `GET /v1/audit/verify`: the chain checked from its first entry to its head.
pub async fn check(svc: &Services, org: &OrgId) -> Result<Value, ApiError> {
    let (entries, head) = svc.audit.chain(org).await?;
    let v = verify(&entries, head.as_ref().map(|(s, h)| (*s, h.as_str())));
    let mut out = json!({"entries": v.entries, "intact": v.first_broken.is_none()});
    if let Some(at) = v.first_broken {
        out["first_broken"] = json!(at);
    }
    Ok(out)
}
