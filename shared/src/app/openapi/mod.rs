//! `GET /v1/openapi.json`: an OpenAPI 3.1 document built from the route table
//! ([`super::routes::ROUTES`]) that [`super::api`] dispatches by, so every served route is
//! described and nothing else is. Bodies and answers are JSON Schemas written beside the
//! parsers' limits (the constants of `domain::input`); schemathesis checks in the test
//! command that the server keeps to them. Request examples are the sample events of
//! `events/api/`.

use super::routes::{Access, Op, ROUTES, Route};
use crate::domain::input::{MAX_NAME, MAX_SMS_TEXT, MIN_GATEWAY_PASSWORD};
use crate::domain::reason::FallbackReason;
use crate::domain::settings::{MAX_APP_FALLBACK_SECONDS, MAX_PER_SECOND};
use crate::domain::{Escalation, License, SkipReason};
use serde_json::{Map, Value, json};
use std::sync::OnceLock;

/// The document, built once.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

macro_rules! sample_events {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../../../events/api/", $name)))),*]
    };
}

/// The sample API Gateway events, by file name: their bodies are the request examples.
pub const SAMPLE_EVENTS: &[(&str, &str)] = sample_events![
    "delete-email-settings.json",
    "delete-sms-settings.json",
    "delete-user.json",
    "get-communication-settings.json",
    "get-email-settings.json",
    "get-openapi.json",
    "get-settings.json",
    "get-sms-settings.json",
    "get-user-self.json",
    "list-audit.json",
    "list-sms-settings.json",
    "list-users.json",
    "post-device.json",
    "put-communication-settings.json",
    "put-email-settings.json",
    "put-sms-settings.json",
    "put-user.json",
    "verify-audit.json",
];

/// Rust's `char::is_whitespace`, spelled for a regex character class (what `text` trims).
const BLANK: &str = r"\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// A host name whose last label starts with a letter (an all-digit one reads as an IPv4
/// address), or a dotted IPv4 address.
const HOST: &str =
    r"([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
const IPV4: &str = r"((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
/// Rust's `char::is_control`: C0, DEL and C1.
const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn nullable(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

/// A name or username as sent: 1 to `max` characters, no blank at either end, nothing
/// `domain::text::hidden` refuses (control, bidirectional, zero-width and invisible,
/// noncharacters, tags).
fn line(max: usize, description: &str) -> Value {
    let hidden = crate::domain::text::hidden_class();
    json!({
        "type": "string", "minLength": 1, "maxLength": max,
        "pattern": format!("^[^{BLANK}{hidden}]([^{hidden}]*[^{BLANK}{hidden}])?$"),
        "description": format!("{description} Taken as sent: no blank at either end, no control, bidirectional, zero-width or invisible characters, noncharacters or tag characters."),
    })
}

/// An SMS text as sent: what `domain::input::sms_text` takes (not blank; no control
/// character but line ends and tab, no noncharacter, no U+FFFD).
fn sms_text(max: usize, description: &str) -> Value {
    let mut bad = String::from(
        r"\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\ufdd0-\ufdef\ufffd-\uffff",
    );
    for plane in 1..=16u32 {
        for low in [0xFFFE, 0xFFFF] {
            bad.extend(char::from_u32((plane << 16) | low));
        }
    }
    json!({
        "type": "string", "minLength": 1, "maxLength": max,
        "pattern": format!("^[^{bad}]*[^{BLANK}{bad}][^{bad}]*$"),
        "description": format!("{description} Sent as GSM-7 when it can be (look-alikes such as curly quotes replaced, unless smart_encoding is off), else UCS-2; cut at a word to the control center's max_segments."),
    })
}

/// A user, device or control center id.
fn id(max: usize, description: &str, example: &str) -> Value {
    json!({
        "type": "string",
        // Never `.` or `..` (they name a folder or its parent in a path).
        "pattern": format!(r"^(?!\.\.?$)[A-Za-z0-9._-]{{1,{max}}}$"),
        "description": description,
        "example": example,
    })
}

/// An id another system made (a notification's is its event's): `@` and `:` too.
fn foreign_id(max: usize, description: &str, example: &str) -> Value {
    let mut v = id(max, description, example);
    v["pattern"] = json!(format!(r"^(?!\.\.?$)[A-Za-z0-9._@:-]{{1,{max}}}$"));
    v
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": required,
        "properties": properties,
    })
}

/// A gateway's settings name a failover sender only with failover to SNS.
fn failover_sender_rule(mut http: Value) -> Value {
    http["if"] = json!({"required": ["failover_sender_number"],
        "properties": {"failover_sender_number": {"type": "string"}}});
    http["then"] = json!({"required": ["failover"],
        "properties": {"failover": {"const": "sns"}}});
    http
}

/// The reserved header names as a case-insensitive alternation (`[Hh][Oo][Ss][Tt]|...`).
fn reserved_headers() -> String {
    crate::domain::header::RESERVED
        .iter()
        .map(|name| {
            name.chars()
                .map(|c| {
                    if c.is_ascii_alphabetic() {
                        format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
                    } else {
                        c.to_string()
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// `smtps://` is always encrypted: `use_tls` may not be false with it.
fn smtp_object(mut schema: Value) -> Value {
    schema["if"] = json!({"required": ["server_url"], "properties": {"server_url": {"pattern": "^[Ss][Mm][Tt][Pp][Ss]://"}}});
    schema["then"] = json!({"properties": {"use_tls": {"not": {"const": false}}}});
    schema
}

mod operations;
mod schemas;
#[cfg(test)]
mod tests;

use operations::build;
use schemas::schemas;
