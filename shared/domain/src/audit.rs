//! The audit trail's rules: one entry per authenticated write attempt, what it says of a
//! change (each field `from`/`to`, a secret only as `set`, `changed` or `removed`), and
//! the hash chain that makes a deleted or edited entry show.
//!
//! An organization's entries form one chain in the order they were appended (`seq` 1,
//! 2, ...): an entry's `hash` is the SHA-256, hex, of the previous entry's `hash` (the
//! empty string for the first) followed by the entry's canonical JSON without `hash`
//! ([`canonical_json`]: keys sorted by code point at every level, no white space).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Who made the request: the token's subject and roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub sub: String,
    pub roles: Vec<String>,
}

/// What the API answered: the status and, for an error, its code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditOutcome {
    pub status: u16,
    pub code: Option<String>,
}

/// One write attempt, before it is chained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: DateTime<Utc>,
    pub actor: Actor,
    /// The route: `PUT /v1/settings/sms/{control_center_id}`.
    pub action: String,
    /// The path it wrote: `/v1/settings/sms/main`.
    pub target: String,
    pub outcome: AuditOutcome,
    /// Each changed field: `{"from": .., "to": ..}`, or for a secret `"set"`,
    /// `"changed"` or `"removed"`. Empty when nothing changed.
    pub changes: Map<String, Value>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

/// An entry of the trail: a record, its place in the chain, and its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub audit_id: String,
    /// Its place in the organization's chain, from 1.
    pub seq: u64,
    #[serde(flatten)]
    pub record: AuditRecord,
    pub hash: String,
}

/// The id of the entry at `seq`: ordered as the chain is.
pub fn audit_id(seq: u64) -> String {
    format!("a-{seq:012}")
}

impl AuditEntry {
    /// The entry `record` makes after the entry whose hash is `previous` (`None`: the
    /// first, at `seq` 1).
    pub fn chain(record: AuditRecord, previous: Option<(u64, &str)>) -> Self {
        let (seq, prev_hash) = previous.map_or((1, ""), |(s, h)| (s + 1, h));
        let mut entry = Self {
            audit_id: audit_id(seq),
            seq,
            record,
            hash: String::new(),
        };
        entry.hash = entry.expected_hash(prev_hash);
        entry
    }

    /// The hash this entry must carry after one whose hash is `previous`.
    pub fn expected_hash(&self, previous: &str) -> String {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.remove("hash");
        }
        let mut h = Sha256::new();
        h.update(previous.as_bytes());
        h.update(canonical_json(&v).as_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// JSON with every object's keys sorted by code point, no white space: the same text
/// for the same value whatever order it was built in.
pub fn canonical_json(v: &Value) -> String {
    // serde_json's map keeps keys sorted unless its `preserve_order` feature is on; the
    // text is written out here so that a feature elsewhere cannot change a hash.
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// What a chain check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
    /// The first entry whose hash or place does not follow from the one before it (a
    /// deleted or edited entry breaks the chain there); `None` when it is intact.
    pub first_broken: Option<String>,
}

/// Checks a chain, oldest first; `head` is the last entry the store says it appended
/// (its `seq` and `hash`), so that deleting the newest entries shows too.
pub fn verify(entries: &[AuditEntry], head: Option<(u64, &str)>) -> Verified {
    let mut previous: Option<&AuditEntry> = None;
    for e in entries {
        let (want_seq, prev_hash) = previous.map_or((1, ""), |p| (p.seq + 1, p.hash.as_str()));
        if e.seq != want_seq
            || e.audit_id != audit_id(e.seq)
            || e.hash != e.expected_hash(prev_hash)
        {
            return broken(entries.len(), audit_id(want_seq.min(e.seq)));
        }
        previous = Some(e);
    }
    let last = previous.map(|p| (p.seq, p.hash.as_str()));
    match head {
        Some((seq, hash)) if last != Some((seq, hash)) => {
            broken(entries.len(), audit_id(last.map_or(1, |(s, _)| s + 1)))
        }
        _ => Verified {
            entries: entries.len() as u64,
            first_broken: None,
        },
    }
}

fn broken(n: usize, at: String) -> Verified {
    Verified {
        entries: n as u64,
        first_broken: Some(at),
    }
}

/// What a write did to a secret, as the trail says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretChange {
    Set,
    Changed,
    Removed,
}

impl SecretChange {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretChange::Set => "set",
            SecretChange::Changed => "changed",
            SecretChange::Removed => "removed",
        }
    }
}

/// The changes between two views of a resource (`None`: it did not exist), field by
/// field at the top level (`{"from", "to"}`, absent as `null`), with `secrets` said as
/// words only. A view must never hold a secret: a settings view holds `password_set`
/// and a masked header, and those are left to `secrets` to say.
pub fn changes(
    before: Option<&Value>,
    after: Option<&Value>,
    secrets: &[(&str, SecretChange)],
) -> Map<String, Value> {
    let empty = Map::new();
    let obj = |v: Option<&Value>| v.and_then(Value::as_object).unwrap_or(&empty).clone();
    let (b, a) = (obj(before), obj(after));
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Map::new();
    for k in keys {
        let (from, to) = (b.get(k), a.get(k));
        if from != to {
            out.insert(
                k.clone(),
                serde_json::json!({"from": from.cloned().unwrap_or(Value::Null), "to": to.cloned().unwrap_or(Value::Null)}),
            );
        }
    }
    for (name, change) in secrets {
        out.insert((*name).to_string(), Value::String(change.as_str().into()));
    }
    out
}

#[cfg(test)]
mod tests;
