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
        &[$(($name, include_str!(concat!("../../../events/api/", $name)))),*]
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
    "list-sms-settings.json",
    "list-users.json",
    "post-device.json",
    "put-communication-settings.json",
    "put-email-settings.json",
    "put-sms-settings.json",
    "put-user.json",
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

/// Free text over several lines.
fn text(max: usize, description: &str) -> Value {
    json!({
        "type": "string", "minLength": 1, "maxLength": max,
        "pattern": format!("[^{BLANK}]"),
        "description": description,
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

fn schemas() -> Value {
    let phone = json!({
        "type": "string",
        "description": "E.164: + and the country code, 8 to 15 digits in all.",
        // Numbering plans a schema can state exactly; the server takes every E.164 number
        // (spaces, dots, dashes and brackets ignored).
        "pattern": r"^\+(1[2-9][0-9]{2}[2-9][0-9]{6}|44[1-9][0-9]{9}|351[29][0-9]{8}|49[1-9][0-9]{9,10})$",
        "example": "+14155550100",
    });
    let email = json!({
        "type": "string", "format": "email", "maxLength": 254,
        "pattern": r"^(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$",
        "description": "A plain address, local@domain: ASCII, no quotes, comments or spaces (an internationalized domain as xn--).",
        "example": "ana@example.org",
    });
    let secret = json!({
        "type": "string", "minLength": 1, "maxLength": 4096, "pattern": "^[^\r\n]*$",
        "writeOnly": true,
        "description": "Kept in the secret store; never answered.",
    });
    let methods =
        json!({"type": "string", "enum": ["app_only", "app_then_sms_email", "app_sms_email"]});
    let window = json!({"type": "integer", "minimum": 0, "maximum": MAX_APP_FALLBACK_SECONDS,
        "description": "Under app_then_sms_email: seconds SMS and email wait, once push is sent, for the app's receipt (0: push accepted is enough)."});
    let licenses: Vec<&str> = License::ALL.iter().map(|l| l.as_str()).collect();
    let sms_shared = |provider: &str| json!({"const": provider});
    json!({
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "enum": [
                        "unauthorized", "forbidden", "not_found", "method_not_allowed",
                        "payload_too_large", "invalid_json", "validation_failed",
                        "manual_sms_disabled", "provider_failed", "unavailable", "internal"]},
                    "message": {"type": "string"},
                    "fields": {"type": "object", "additionalProperties": {"type": "string"},
                               "description": "validation_failed: every bad field by its path."},
                },
            }},
        },
        "PhoneNumber": phone,
        "EmailAddress": email,
        "SenderNumber": {
            "description": "An E.164 number, or an alphanumeric sender id of 1 to 11 letters and digits.",
            "anyOf": [r("PhoneNumber"), {"type": "string", "pattern": "^[A-Za-z0-9]{1,11}$"}],
            "example": "+15551234567",
        },
        "Secret": secret,
        "GatewayPassword": {
            "allOf": [r("Secret")], "minLength": MIN_GATEWAY_PASSWORD,
            "pattern": format!("[^{BLANK}]"),
            "description": "At least 8 characters, not all blank: it is also the key the gateway's delivery callbacks are signed with.",
        },
        "SmsSettingsInput": {
            "oneOf": [
                object(&["provider"], json!({
                    "provider": sms_shared("sns"),
                    "sender_number": nullable(r("SenderNumber")),
                    "url": {"type": "null"}, "format": {"type": "null"},
                    "username": {"type": "null"}, "password": {"type": "null"},
                    "http_header": {"type": "null"}, "failover": {"type": "null"}, "max_per_second": {"type": "null"},
                    "failover_sender_number": {"type": "null"},
                })),
                failover_sender_rule(object(&["provider", "url", "sender_number"], json!({
                    "provider": sms_shared("http"),
                    "url": {"type": "string", "format": "uri", "maxLength": 2048,
                            "pattern": format!("^https?://({HOST}|{IPV4})(:[1-9][0-9]{{0,3}})?(/[A-Za-z0-9._~-]*)*$"),
                            "description": "https; plain http only where private endpoints are allowed."},
                    "format": nullable(json!({"type": "string", "enum": ["json", "form", "twilio"]})),
                    "username": nullable(line(MAX_NAME, "Sent as HTTP Basic auth.")),
                    "password": nullable(r("GatewayPassword")),
                    "http_header": nullable(json!({
                        "type": "string", "maxLength": 4096, "writeOnly": false,
                        "pattern": format!(r"^(?!({}):)[!#$%&'*+.^_`|~0-9A-Za-z-]+: *[^{BLANK}{hidden}]([^{hidden}]*[^{BLANK}{hidden}])?$", reserved_headers(), hidden = crate::domain::text::hidden_class()),
                        "description": "One `Name: value` header sent with every request, as sent: the name right before the colon, spaces after it, then a value with no blank at its end and no control, bidirectional, zero-width or invisible characters, noncharacters or tag characters. `Name: ****` keeps the stored value. Not Host, Content-Length, Transfer-Encoding, Connection, Content-Type or Authorization."})),
                    "sender_number": r("SenderNumber"),
                    "max_per_second": nullable(json!({"type": "integer", "minimum": 1, "maximum": MAX_PER_SECOND,
                        "description": "Flare never sends the gateway more requests than this in any second; urgent notifications get them first."})),
                    "failover": nullable(json!({"const": "sns",
                        "description": "When the gateway fails (permanently, on the last attempt, or while its circuit is open), SMS go through Amazon SNS."})),
                    "failover_sender_number": nullable(json!({"allOf": [r("SenderNumber")],
                        "description": "Only with failover sns: who SMS sent through SNS instead of the gateway are from (an origination number or sender id the AWS account owns). Without it, an alphanumeric sender_number is kept and a phone number is not (SNS sends only from numbers the account owns): the account's default."})),
                }))),
            ],
        },
        "SmsSettings": {
            "type": "object",
            "required": ["control_center_id", "provider", "password_set"],
            "properties": {
                "control_center_id": {"type": "string"},
                "provider": {"type": "string", "enum": ["sns", "http"]},
                "password_set": {"type": "boolean"},
                "sender_number": {"type": "string"},
                "url": {"type": "string"},
                "format": {"type": "string", "enum": ["json", "form", "twilio"]},
                "username": {"type": "string"},
                "http_header": {"type": "string", "description": "`Name: ****`: the value is never answered."},
                "failover": {"const": "sns"},
                "failover_sender_number": {"type": "string"},
                "max_per_second": {"type": "integer"},
                "health": r("ProviderHealth"),
            },
        },
        "ProviderHealth": {
            "type": "object",
            "description": "A custom provider's health, shown when failover is on: `open` means it is not tried until its circuit's time is up.",
            "required": ["state", "consecutive_failures", "last_error", "last_success_at"],
            "properties": {
                "state": {"type": "string", "enum": ["ok", "failing", "open"]},
                "consecutive_failures": {"type": "integer", "minimum": 0},
                "last_error": {"type": ["string", "null"]},
                "last_success_at": {"type": ["string", "null"], "format": "date-time"},
            },
        },
        "EmailSettingsInput": {
            "oneOf": [
                object(&["provider"], json!({
                    "provider": {"const": "ses"},
                    "sender_email": nullable(r("EmailAddress")),
                    "smtp": {"type": "null"}, "failover": {"type": "null"},
                })),
                object(&["provider", "smtp"], json!({
                    "provider": {"const": "smtp"},
                    "sender_email": nullable(r("EmailAddress")),
                    "failover": nullable(json!({"const": "ses",
                        "description": "When the SMTP server fails, email goes through Amazon SES."})),
                    "smtp": smtp_object(object(&["server_url", "port"], json!({
                        "server_url": {"type": "string", "maxLength": 253,
                            "pattern": format!("^([Ss][Mm][Tt][Pp][Ss]?://)?({HOST}|{IPV4})$"),
                            "description": "A host name, smtp://host or smtps://host; the port is apart."},
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                        "use_tls": nullable(json!({"type": "boolean", "description": "Default true: STARTTLS (or TLS on 465) is required."})),
                        "username": nullable(line(MAX_NAME, "SMTP AUTH user.")),
                        "password": nullable(r("Secret")),
                    }))),
                })),
            ],
        },
        "EmailSettings": {
            "type": "object",
            "required": ["provider"],
            "properties": {
                "provider": {"type": "string", "enum": ["ses", "smtp"]},
                "sender_email": {"type": ["string", "null"]},
                "failover": {"const": "ses"},
                "health": r("ProviderHealth"),
                "smtp": {
                    "type": "object",
                    "required": ["server_url", "port", "use_tls", "password_set"],
                    "properties": {
                        "server_url": {"type": "string"},
                        "port": {"type": "integer"},
                        "username": {"type": ["string", "null"]},
                        "use_tls": {"type": "boolean"},
                        "password_set": {"type": "boolean"},
                    },
                },
            },
        },
        "CommunicationSettingsInput": object(&[], json!({
            "dispatch": nullable(methods.clone()),
            "incident_contacts": nullable(methods.clone()),
            "messages": nullable(methods.clone()),
            "distress": nullable(json!({"type": "boolean"})),
            "dispatch_virtual_users": nullable(json!({"type": "boolean"})),
            "manual_sms": nullable(json!({"type": "boolean"})),
            "app_fallback_seconds": nullable(window.clone()),
            "dispatch_escalation": {"anyOf": [r("Escalation"), {"type": "null"}],
                "description": "null turns escalation off; left out, it keeps its value."},
        })),
        "Escalation": object(&["after_seconds", "cycles"], json!({
            "after_seconds": {"type": "integer", "minimum": 1, "maximum": Escalation::MAX_AFTER_SECONDS,
                "description": "Seconds after the previous cycle started."},
            "cycles": {"type": "integer", "minimum": 1, "maximum": Escalation::MAX_CYCLES,
                "description": "How many more times, at most."},
        })),
        "CommunicationSettings": {
            "type": "object",
            "required": ["dispatch", "incident_contacts", "messages", "distress", "dispatch_virtual_users", "manual_sms", "app_fallback_seconds", "dispatch_escalation"],
            "properties": {
                "dispatch": methods.clone(), "incident_contacts": methods.clone(),
                "messages": methods,
                "distress": {"type": "boolean"}, "dispatch_virtual_users": {"type": "boolean"},
                "manual_sms": {"type": "boolean"},
                "app_fallback_seconds": window,
                "dispatch_escalation": {"anyOf": [r("Escalation"), {"type": "null"}]},
            },
        },
        "AllSettings": {
            "type": "object",
            "required": ["sms", "email", "communication"],
            "properties": {
                "sms": {"type": "array", "items": r("SmsSettings")},
                "email": {"anyOf": [r("EmailSettings"), {"type": "null"}]},
                "communication": r("CommunicationSettings"),
            },
        },
        "Contact": {
            "oneOf": [
                object(&["kind", "value"], json!({
                    "kind": {"const": "mobile"}, "value": r("PhoneNumber"),
                    "primary": nullable(json!({"type": "boolean"})),
                })),
                object(&["kind", "value"], json!({
                    "kind": {"const": "email"}, "value": r("EmailAddress"),
                    "primary": nullable(json!({"type": "boolean"})),
                })),
            ],
        },
        "ExternalContact": {
            "allOf": [
                object(&["name"], json!({
                    "name": line(MAX_NAME, "Who they are."),
                    "mobile": nullable(r("PhoneNumber")),
                    "email": nullable(r("EmailAddress")),
                })),
                {"anyOf": [
                    {"required": ["mobile"], "properties": {"mobile": {"type": "string"}}},
                    {"required": ["email"], "properties": {"email": {"type": "string"}}},
                ], "description": "A mobile or an email, or both."},
            ],
        },
        "UserInput": object(&["name", "license"], json!({
            "name": line(MAX_NAME, "The user's name."),
            "license": {"type": "string", "enum": licenses},
            "virtual": nullable(json!({"type": "boolean"})),
            "control_center_id": nullable(id(128, "The user's control center.", "north")),
            "contacts": nullable(json!({
                "type": "array", "items": r("Contact"),
                "description": "At most one primary contact of each kind: SMS and email go only to the primary ones.",
                "allOf": [
                    {"contains": {"required": ["kind", "primary"], "properties": {"kind": {"const": "mobile"}, "primary": {"const": true}}}, "minContains": 0, "maxContains": 1},
                    {"contains": {"required": ["kind", "primary"], "properties": {"kind": {"const": "email"}, "primary": {"const": true}}}, "minContains": 0, "maxContains": 1},
                ],
            })),
            "emergency_contacts": nullable(json!({"type": "array", "items": r("ExternalContact")})),
        })),
        "User": {
            "type": "object",
            "required": ["user_id", "name", "license", "virtual", "contacts", "emergency_contacts", "devices"],
            "properties": {
                "user_id": {"type": "string"},
                "name": {"type": "string"},
                "license": {"type": "string", "enum": License::ALL.iter().map(|l| l.as_str()).collect::<Vec<_>>()},
                "virtual": {"type": "boolean"},
                "control_center_id": {"type": ["string", "null"]},
                "contacts": {"type": "array", "items": {
                    "type": "object", "required": ["kind", "value", "primary"],
                    "properties": {"kind": {"type": "string", "enum": ["mobile", "email"]},
                                   "value": {"type": "string"}, "primary": {"type": "boolean"}}}},
                "emergency_contacts": {"type": "array", "items": {
                    "type": "object", "required": ["name"],
                    "properties": {"name": {"type": "string"}, "mobile": {"type": "string"}, "email": {"type": "string"}}}},
                "devices": {"type": "array", "items": {
                    "type": "object", "required": ["device_id", "platform"],
                    "properties": {"device_id": {"type": "string"}, "platform": {"type": "string"}}}},
            },
        },
        "DeviceInput": object(&["platform", "token"], json!({
            "platform": {"type": "string", "enum": ["fcm", "apns", "apns_sandbox"]},
            "token": {"type": "string", "minLength": 1, "maxLength": 4096,
                      "pattern": format!(r"^[^{BLANK}{CONTROL}]+$"),
                      "description": "The device's push token."},
        })),
        "DeviceCreated": {
            "type": "object", "required": ["device_id"],
            "properties": {"device_id": {"type": "string"}},
        },
        "TestSmsInput": object(&["to"], json!({"to": r("PhoneNumber")})),
        "TestEmailInput": object(&["to"], json!({"to": r("EmailAddress")})),
        "TestResult": {
            "type": "object", "required": ["status", "provider"],
            "properties": {
                "status": {"const": "sent"},
                "provider": {"type": "string", "enum": ["sns", "http", "ses", "smtp"]},
                "provider_message_id": {"type": ["string", "null"]},
            },
        },
        "ManualSmsInput": object(&["user_id", "text"], json!({
            "user_id": id(128, "The user: SMS goes to their primary mobile.", "u-17"),
            "text": text(MAX_SMS_TEXT, "The message."),
            "control_center_id": nullable(id(128, "Whose SMS settings to use (default: the user's).", "north")),
        })),
        "ReceiptInput": object(&[], json!({
            "device_id": id(128, "The device the notification reached.", "3f2b8c1e-0d4a-4c55-9a34-2f1d3e6b7a90"),
        })),
        "Accepted": {
            "type": "object", "required": ["notification_id"],
            "properties": {"notification_id": {"type": "string"}},
        },
        "NotificationList": {
            "type": "object",
            "required": ["notifications", "next_cursor"],
            "properties": {
                "notifications": {"type": "array", "items": {
                    "type": "object",
                    "required": ["notification_id", "category", "created_at", "counts"],
                    "properties": {
                        "notification_id": {"type": "string"},
                        "category": {"type": "string"},
                        "incident_id": {"type": ["string", "null"]},
                        "created_at": {"type": "string", "format": "date-time"},
                        "counts": {
                            "type": "object",
                            "required": ["pending", "sent", "failed", "skipped", "delivered", "undelivered"],
                            "properties": {
                                "pending": {"type": "integer", "minimum": 0},
                                "sent": {"type": "integer", "minimum": 0},
                                "failed": {"type": "integer", "minimum": 0},
                                "skipped": {"type": "integer", "minimum": 0},
                                "delivered": {"type": "integer", "minimum": 0},
                                "undelivered": {"type": "integer", "minimum": 0},
                            },
                        },
                    },
                }},
                "next_cursor": {
                    "type": ["string", "null"],
                    "description": "Pass as `cursor` for the next page; null on the last page.",
                },
            },
        },
        "Notification": {
            "type": "object",
            "required": ["notification_id", "category", "created_at", "recipients"],
            "properties": {
                "notification_id": {"type": "string"},
                "category": {"type": "string"},
                "lane": {"type": "string", "enum": ["urgent", "normal"],
                    "description": "Dispatch, distress and manual SMS (and their fallbacks and escalations) go first."},
                "incident_id": {"type": ["string", "null"]},
                "control_center_id": {"type": ["string", "null"]},
                "created_at": {"type": "string", "format": "date-time"},
                "message": {"type": ["object", "null"]},
                "next_cursor": {
                    "type": ["string", "null"],
                    "description": "More recipients follow: pass as `cursor`. Null on the last page.",
                },
                "recipients": {"type": "array", "items": {
                    "type": "object", "required": ["deliveries"],
                    "properties": {
                        "user_id": {"type": "string"},
                        "contact": {"type": "string"},
                        "acknowledged_at": {"type": "string", "format": "date-time"},
                        "delivered_at": {"type": "string", "format": "date-time", "description": "When the recipient's app confirmed the push."},
                        "deliveries": {"type": "array", "items": {
                            "type": "object", "required": ["channel", "status", "attempts", "fallback", "cycle"],
                            "properties": {
                                "channel": {"type": "string", "enum": ["push", "sms", "email"]},
                                "status": {"type": "string", "enum": ["pending", "sent", "failed", "skipped", "delivered", "undelivered"]},
                                "attempts": {"type": "integer", "minimum": 0},
                                "fallback": {"type": "boolean"},
                                "cycle": {"type": "integer", "minimum": 0, "description": "0 for the notification itself; 1, 2, ... for dispatch escalation cycles."},
                                "reason": {"type": "string", "description": format!(
                                    "Why it was skipped or failed; see docs/reasons.md (for example {}).",
                                    SkipReason::ALL.iter().take(3).map(|s| s.as_str()).collect::<Vec<_>>().join(", "))},
                                "provider": {"type": "string"},
                                "provider_message_id": {"type": "string"},
                                "delivered_at": {"type": "string", "format": "date-time"},
                                "failover_from": {"type": "string", "description": "Sent by the failover provider, standing in for this one."},
                                "detail": {"type": "string", "description": "What the provider's receipt said (an undelivered delivery's bounce or carrier response)."},
                                "complaint": {"type": "boolean", "description": "The recipient reported the email as spam."},
                                "fallback_reason": {"type": "string", "enum": FallbackReason::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>()},
                            },
                        }},
                    },
                }},
            },
        },
    })
}

/// The parameter named `name` of a path.
fn parameter(name: &str) -> Value {
    let (schema, what) = match name {
        "control_center_id" => (
            id(128, "", "main"),
            "A control center; `main` is the organization's main one.",
        ),
        "user_id" => (id(128, "", "u-17"), "A user of the directory."),
        "org_id" => (
            id(128, "", "acme"),
            "The organization whose gateway sends the callback.",
        ),
        "device_id" => (
            id(128, "", "3f2b8c1e-0d4a-4c55-9a34-2f1d3e6b7a90"),
            "A device, as `POST .../devices` answered.",
        ),
        _ => (
            foreign_id(128, "", "inc-1001-dispatch"),
            "A notification: the incident event's id.",
        ),
    };
    let mut schema = schema;
    schema.as_object_mut().map(|o| o.remove("description"));
    json!({"name": name, "in": "path", "required": true, "description": what, "schema": schema})
}

/// The request body's schema, for routes that take one.
fn request_schema(op: Op) -> Option<&'static str> {
    Some(match op {
        Op::PutSms => "SmsSettingsInput",
        Op::TestSms => "TestSmsInput",
        Op::TestEmail => "TestEmailInput",
        Op::PutEmail => "EmailSettingsInput",
        Op::PutCommunication => "CommunicationSettingsInput",
        Op::PutUser => "UserInput",
        Op::AddDevice => "DeviceInput",
        Op::ManualSms => "ManualSmsInput",
        Op::ReceiptNotification => "ReceiptInput",
        _ => return None,
    })
}

/// The success status and its schema (`None`: no body).
fn success(op: Op) -> (&'static str, Option<Value>, &'static str) {
    match op {
        Op::OpenApi => ("200", Some(json!({"type": "object"})), "This document."),
        Op::GetSettings => ("200", Some(r("AllSettings")), "Every setting."),
        Op::ListSms => (
            "200",
            Some(json!({"type": "array", "items": r("SmsSettings")})),
            "One entry per control center with settings of its own.",
        ),
        Op::GetSms | Op::PutSms => (
            "200",
            Some(r("SmsSettings")),
            "The stored settings; secrets masked.",
        ),
        Op::TestSms | Op::TestEmail => (
            "200",
            Some(r("TestResult")),
            "The provider took the message.",
        ),
        Op::GetEmail | Op::PutEmail => (
            "200",
            Some(r("EmailSettings")),
            "The stored settings; the password never answered.",
        ),
        Op::GetCommunication | Op::PutCommunication => (
            "200",
            Some(r("CommunicationSettings")),
            "The settings now in force.",
        ),
        Op::ListUsers => (
            "200",
            Some(json!({"type": "array", "items": r("User")})),
            "Every user.",
        ),
        Op::GetUser | Op::PutUser => (
            "200",
            Some(r("User")),
            "The user; devices without their tokens.",
        ),
        Op::AddDevice => (
            "201",
            Some(r("DeviceCreated")),
            "Registered (the same token again answers the same id).",
        ),
        Op::ListNotifications => (
            "200",
            Some(r("NotificationList")),
            "A page of notifications, newest first.",
        ),
        Op::GetNotification => (
            "200",
            Some(r("Notification")),
            "The notification and every delivery.",
        ),
        Op::ManualSms => (
            "202",
            Some(r("Accepted")),
            "Queued; follow it with GET /v1/notifications/{id}.",
        ),
        Op::DeleteSms
        | Op::DeleteEmail
        | Op::DeleteUser
        | Op::DeleteDevice
        | Op::AckNotification
        | Op::ReceiptNotification => ("204", None, "Done."),
        Op::GatewayReceipt => (
            "204",
            None,
            "Applied, a repeat, or a status that is not final (nothing changes).",
        ),
    }
}

/// The error answers a route can give.
fn errors(route: &Route) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    let validates = request_schema(route.op).is_some()
        || route.params().next().is_some()
        || route.op == Op::ListNotifications;
    if validates {
        out.push((
            "400",
            "Invalid: `invalid_json`, or `validation_failed` with every bad field.",
        ));
    }
    if route.access != Access::Public {
        out.push(("401", "No token, or a bad one."));
        out.push(("403", "The caller's role may not do this."));
    }
    if route.op == Op::GatewayReceipt {
        out.push((
            "401",
            "The signature is missing or does not verify (or the control center has no gateway).",
        ));
        out.push(("404", "No delivery was sent with this message id."));
        out.push(("413", "The body is larger than 64 KiB."));
        return out;
    }
    let finds = !matches!(
        route.op,
        Op::OpenApi
            | Op::GetSettings
            | Op::ListSms
            | Op::ListUsers
            | Op::ListNotifications
            | Op::GetCommunication
            | Op::PutCommunication
            | Op::DeleteEmail
            | Op::PutEmail
            | Op::TestEmail
            | Op::PutSms
            | Op::PutUser
    );
    if finds {
        out.push(("404", "Not found in the caller's organization."));
    }
    if request_schema(route.op).is_some() {
        out.push(("413", "The body is larger than 64 KiB."));
    }
    if matches!(route.op, Op::TestSms | Op::TestEmail) {
        out.push((
            "502",
            "The provider refused the message: `provider_failed`, with the reason.",
        ));
    }
    if route.access != Access::Public {
        out.push(("500", "An internal error (logged with its cause)."));
        out.push(("503", "A dependency is unavailable for now: retry."));
    }
    out
}

fn operation(route: &Route, examples: &Map<String, Value>) -> Value {
    let mut op = json!({
        "operationId": route.id,
        "summary": route.summary,
        "description": route.access.describe(),
        "tags": [route.tag],
    });
    let mut params: Vec<Value> = route.params().map(parameter).collect();
    if route.op == Op::ListNotifications {
        params.push(json!({
            "name": "limit", "in": "query", "required": false,
            "description": "How many notifications at most (default 50).",
            "schema": {"type": "integer", "minimum": 1, "maximum": super::notifications::LIST_MAX, "default": super::notifications::LIST_DEFAULT},
        }));
        params.push(json!({
            "name": "cursor", "in": "query", "required": false,
            "description": "The `next_cursor` of the previous page, as it was.",
            "schema": {"type": "string", "pattern": r"^[0-9]{1,15}_(?!\.\.?$)[A-Za-z0-9._@:-]{1,128}$", "example": "1796173200000_9f1c2d3e-0000-4000-8000-000000000001"},
        }));
    }
    if route.op == Op::GetNotification {
        params.push(json!({
            "name": "cursor", "in": "query", "required": false,
            "description": "The `next_cursor` of the previous page, as it was (a page holds at most 500 recipients).",
            "schema": {"type": "string", "pattern": "^(user|contact):[A-Za-z0-9._@:-]{1,128}$", "example": "user:u-17"},
        }));
    }
    if route.op == Op::ManualSms {
        params.push(json!({
            "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "The same key from the same organization within 24 hours answers the first request's notification_id and sends nothing again.",
            "schema": {"type": "string", "pattern": "^[!-~]{1,255}$", "example": "dispatch-4711-sms-1"},
        }));
    }
    if !params.is_empty() {
        op["parameters"] = json!(params);
    }
    if route.access == Access::Public {
        op["security"] = json!([]);
    }
    if route.op == Op::GatewayReceipt {
        let fields = json!({"type": "object", "properties": {
            "message_id": {"type": "string"},
            "status": {"type": "string", "enum": ["delivered", "undelivered"]},
            "error": {"type": "string"},
            "MessageSid": {"type": "string"},
            "MessageStatus": {"type": "string"},
            "ErrorCode": {"type": "string"},
        }});
        op["description"] = json!(
            "No token: `json` and `form` gateways sign with `X-Flare-Signature: sha256=<hex HMAC-SHA256 of the raw body>`, `twilio` ones with `X-Twilio-Signature` (as Twilio signs status callbacks), keyed with the control center's stored gateway password."
        );
        op["requestBody"] = json!({"required": true, "content": {
            "application/json": {"schema": fields},
            "application/x-www-form-urlencoded": {"schema": fields},
        }});
    }
    if let Some(schema) = request_schema(route.op) {
        let mut media = json!({"schema": r(schema)});
        if let Some(example) = examples.get(&format!("{} {}", route.method, route.path)) {
            media["example"] = example.clone();
        }
        // A receipt may come without a body.
        let required = route.op != Op::ReceiptNotification;
        op["requestBody"] = json!({"required": required, "content": {"application/json": media}});
    }
    let mut responses = Map::new();
    let (status, schema, what) = success(route.op);
    responses.insert(
        status.into(),
        match schema {
            Some(s) => json!({"description": what, "content": {"application/json": {"schema": s}}}),
            None => json!({"description": what}),
        },
    );
    for (status, what) in errors(route) {
        responses.insert(
            status.into(),
            json!({"description": what, "content": {"application/json": {"schema": r("Error")}}}),
        );
    }
    if let Some(l) = links(route.op) {
        responses[status]["links"] = l;
    }
    op["responses"] = Value::Object(responses);
    op
}

/// Where one answer feeds another route (schemathesis' stateful phase follows these).
fn links(op: Op) -> Option<Value> {
    let cc = json!({"control_center_id": "$request.path.control_center_id"});
    let user = json!({"user_id": "$request.path.user_id"});
    Some(match op {
        Op::PutSms => json!({
            "GetSmsSettings": {"operationId": "getSmsSettings", "parameters": cc},
            "TestSms": {"operationId": "testSms", "parameters": cc},
            "DeleteSmsSettings": {"operationId": "deleteSmsSettings", "parameters": cc},
        }),
        Op::PutUser => json!({
            "GetUser": {"operationId": "getUser", "parameters": user},
            "AddDevice": {"operationId": "addDevice", "parameters": user},
            "SendManualSms": {"operationId": "sendManualSms", "requestBody": {"user_id": "$request.path.user_id", "text": "Report to base"}},
            "DeleteUser": {"operationId": "deleteUser", "parameters": user},
        }),
        Op::AddDevice => json!({
            "DeleteDevice": {"operationId": "deleteDevice", "parameters": {
                "user_id": "$request.path.user_id", "device_id": "$response.body#/device_id"}},
        }),
        Op::ManualSms => json!({
            "GetNotification": {"operationId": "getNotification", "parameters": {
                "notification_id": "$response.body#/notification_id"}},
            "AckNotification": {"operationId": "ackNotification", "parameters": {
                "notification_id": "$response.body#/notification_id"}},
        }),
        Op::GetNotification => json!({
            "AckNotification": {"operationId": "ackNotification", "parameters": {
                "notification_id": "$request.path.notification_id"}},
        }),
        _ => return None,
    })
}

/// The bodies of the sample events, by route key.
fn examples() -> Map<String, Value> {
    let mut out = Map::new();
    for (name, raw) in SAMPLE_EVENTS {
        let event: Value =
            serde_json::from_str(raw).unwrap_or_else(|e| panic!("events/api/{name}: {e}"));
        if let (Some(key), Some(body)) = (event["routeKey"].as_str(), event["body"].as_str()) {
            let body: Value = serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("events/api/{name} body: {e}"));
            out.insert(key.to_string(), body);
        }
    }
    out
}

fn build() -> Value {
    let examples = examples();
    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths.entry(route.path).or_insert_with(|| json!({}));
        item[route.method.to_ascii_lowercase()] = operation(route, &examples);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Flare",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Who is told, on which channel, through which provider: the settings, directory and notifications API of Flare. Every route but this document needs a bearer JWT with `sub`, `org_id` and `roles`; everything is scoped to the caller's organization. Errors are `{\"error\": {\"code\", \"message\"}}`.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": [
            {"name": "settings", "description": "Outgoing SMS per control center, outgoing email, communication settings."},
            {"name": "directory", "description": "Users, their contacts and their devices."},
            {"name": "notifications", "description": "What was sent to whom, acknowledgements, manual SMS."},
            {"name": "meta", "description": "This description."},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": schemas(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described_and_nothing_else() {
        let doc = document();
        let mut described = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let route = ROUTES
                    .iter()
                    .find(|r| r.path == path && r.method.eq_ignore_ascii_case(method))
                    .unwrap_or_else(|| panic!("{method} {path} is not served"));
                assert_eq!(op["operationId"], route.id);
                let params: Vec<&str> = route.params().collect();
                let declared: Vec<&str> = op["parameters"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter(|p| p["in"] == "path")
                            .map(|p| p["name"].as_str().unwrap())
                            .collect()
                    })
                    .unwrap_or_default();
                assert_eq!(params, declared, "{method} {path}");
                described += 1;
            }
        }
        assert_eq!(described, ROUTES.len());
    }

    #[test]
    fn every_reference_resolves_and_every_link_names_an_operation() {
        let doc = document();
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &piece[..piece.find('"').unwrap()];
            assert!(doc["components"]["schemas"].get(name).is_some(), "{name}");
        }
        for route in ROUTES {
            for (_, op) in doc["paths"][route.path].as_object().unwrap() {
                for (_, resp) in op["responses"].as_object().unwrap() {
                    for (_, link) in resp["links"].as_object().into_iter().flatten() {
                        let id = link["operationId"].as_str().unwrap();
                        assert!(ROUTES.iter().any(|r| r.id == id), "link to {id}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_sample_event_is_a_served_route_and_its_body_the_example() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../events/api");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let listed: Vec<&str> = SAMPLE_EVENTS.iter().map(|(n, _)| *n).collect();
        assert_eq!(on_disk, listed, "SAMPLE_EVENTS lists events/api");
        let doc = document();
        for (name, raw) in SAMPLE_EVENTS {
            let event: Value = serde_json::from_str(raw).unwrap();
            let key = event["routeKey"].as_str().unwrap();
            let (method, path) = key.split_once(' ').unwrap();
            let route = ROUTES
                .iter()
                .find(|r| r.method == method && r.path == path)
                .unwrap_or_else(|| panic!("{name}: {key} is not a route"));
            if let Some(body) = event["body"].as_str() {
                let op = &doc["paths"][route.path][method.to_ascii_lowercase()];
                let example = &op["requestBody"]["content"]["application/json"]["example"];
                assert_eq!(
                    *example,
                    serde_json::from_str::<Value>(body).unwrap(),
                    "{name}"
                );
            }
        }
    }
}
