//! The document's components: every request and response body as a JSON Schema, with
//! the limits the server enforces.

use super::*;

pub(super) fn schemas() -> Value {
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
    let help = line(
        crate::domain::settings::MAX_SMS_HELP_TEXT,
        "What an SMS reply HELP gets back.",
    );
    let licenses: Vec<&str> = License::ALL.iter().map(|l| l.as_str()).collect();
    let sms_shared = |provider: &str| json!({"const": provider});
    let smart = nullable(json!({"type": "boolean",
        "description": "Replace characters that have a GSM-7 look-alike (curly quotes, dashes, ellipsis, Unicode spaces, bullets) so one of them cannot make a text UCS-2. Default true."}));
    let max_segments = nullable(
        json!({"type": "integer", "minimum": 1, "maximum": crate::domain::segments::MAX_SEGMENTS_LIMIT,
        "description": "The most segments an SMS takes: a longer text is cut at a word and ends with `...` (a dispatch's reply instructions and link are kept whole). Default 3."}),
    );
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
                    "smart_encoding": smart.clone(), "max_segments": max_segments.clone(),
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
                    "smart_encoding": smart, "max_segments": max_segments,
                }))),
            ],
        },
        "SmsSettings": {
            "type": "object",
            "required": ["control_center_id", "provider", "password_set", "smart_encoding", "max_segments"],
            "properties": {
                "control_center_id": {"type": "string"},
                "provider": {"type": "string", "enum": ["sns", "http"]},
                "password_set": {"type": "boolean"},
                "smart_encoding": {"type": "boolean"},
                "max_segments": {"type": "integer", "minimum": 1, "maximum": crate::domain::segments::MAX_SEGMENTS_LIMIT},
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
            "sms_help_text": {"anyOf": [help.clone(), {"type": "null"}],
                "description": "What an SMS reply HELP gets back; null: the default (the organization, what the messages are, how to stop them); left out, it keeps its value."},
        })),
        "Escalation": object(&["after_seconds", "cycles"], json!({
            "after_seconds": {"type": "integer", "minimum": 1, "maximum": Escalation::MAX_AFTER_SECONDS,
                "description": "Seconds after the previous cycle started."},
            "cycles": {"type": "integer", "minimum": 1, "maximum": Escalation::MAX_CYCLES,
                "description": "How many more times, at most."},
        })),
        "CommunicationSettings": {
            "type": "object",
            "required": ["dispatch", "incident_contacts", "messages", "distress", "dispatch_virtual_users", "manual_sms", "app_fallback_seconds", "dispatch_escalation", "sms_help_text"],
            "properties": {
                "dispatch": methods.clone(), "incident_contacts": methods.clone(),
                "messages": methods,
                "distress": {"type": "boolean"}, "dispatch_virtual_users": {"type": "boolean"},
                "manual_sms": {"type": "boolean"},
                "app_fallback_seconds": window,
                "dispatch_escalation": {"anyOf": [r("Escalation"), {"type": "null"}]},
                "sms_help_text": {"anyOf": [help, {"type": "null"}]},
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
        "TestSmsInput": object(&["to"], json!({
            "to": r("PhoneNumber"),
            "text": nullable(sms_text(MAX_SMS_TEXT, "A sample message to send instead of the test sentence.")),
        })),
        "TestEmailInput": object(&["to"], json!({"to": r("EmailAddress")})),
        "TestResult": {
            "type": "object", "required": ["status", "provider"],
            "properties": {
                "status": {"const": "sent"},
                "provider": {"type": "string", "enum": ["sns", "http", "ses", "smtp"]},
                "provider_message_id": {"type": ["string", "null"]},
                "encoding": {"type": "string", "enum": ["gsm7", "ucs2"], "description": "SMS: the encoding the text was sent in."},
                "segments": {"type": "integer", "minimum": 1, "description": "SMS: the segments it is billed as."},
                "text": {"type": "string", "description": "SMS: the text sent (look-alikes replaced, cut to max_segments)."},
                "cut": {"type": "boolean", "description": "SMS: the text was cut to max_segments."},
            },
        },
        "ManualSmsInput": object(&["user_id", "text"], json!({
            "user_id": id(128, "The user: SMS goes to their primary mobile.", "u-17"),
            "text": sms_text(MAX_SMS_TEXT, "The message."),
            "control_center_id": nullable(id(128, "Whose SMS settings to use (default: the user's).", "north")),
        })),
        "ResponseInput": object(&["response"], json!({
            "response": {"type": "string", "enum": ["responding", "unavailable"],
                "description": "The recipient's answer; a later one replaces it."},
        })),
        "ReceiptInput": object(&[], json!({
            // null is taken as left out, as the server does.
            "device_id": nullable(id(128, "The device the notification reached.", "3f2b8c1e-0d4a-4c55-9a34-2f1d3e6b7a90")),
        })),
        "Accepted": {
            "type": "object", "required": ["notification_id"],
            "properties": {"notification_id": {"type": "string"}},
        },
        "Audience": {
            "type": "object",
            "description": "The groups of users the event named, as given (v1.2): every user of the listed control centers (a user without one belongs to `main`), or of the organization.",
            "properties": {
                "all": {"type": "boolean"},
                "control_centers": {"type": "array", "items": {"type": "string"}},
            },
        },
        "NotificationList": {
            "type": "object",
            "required": ["notifications", "next_cursor"],
            "properties": {
                "notifications": {"type": "array", "items": {
                    "type": "object",
                    "required": ["notification_id", "category", "created_at", "counts", "sms_segments"],
                    "properties": {
                        "notification_id": {"type": "string"},
                        "category": {"type": "string"},
                        "incident_id": {"type": ["string", "null"]},
                        "created_at": {"type": "string", "format": "date-time"},
                        "audience": {"$ref": "#/components/schemas/Audience"},
                        "sms_segments": {"type": "integer", "minimum": 0, "description": "The segments of its SMS, as sent (what SMS is billed by)."},
                        "counts": {
                            "type": "object",
                            "required": ["pending", "sent", "failed", "skipped", "delivered", "undelivered", "responding", "unavailable"],
                            "properties": {
                                "pending": {"type": "integer", "minimum": 0},
                                "sent": {"type": "integer", "minimum": 0},
                                "failed": {"type": "integer", "minimum": 0},
                                "skipped": {"type": "integer", "minimum": 0},
                                "delivered": {"type": "integer", "minimum": 0},
                                "undelivered": {"type": "integer", "minimum": 0},
                                "responding": {"type": "integer", "minimum": 0, "description": "Recipients whose latest answer is responding."},
                                "unavailable": {"type": "integer", "minimum": 0, "description": "Recipients whose latest answer is unavailable."},
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
        "AuditEntry": {
            "type": "object",
            "required": ["audit_id", "seq", "at", "actor", "action", "target", "outcome", "changes", "source_ip", "user_agent", "request_id", "hash"],
            "properties": {
                "audit_id": {"type": "string"},
                "seq": {"type": "integer", "minimum": 1, "description": "Its place in the organization's chain."},
                "at": {"type": "string", "format": "date-time"},
                "actor": {"type": "object", "required": ["sub", "roles"], "properties": {
                    "sub": {"type": "string"}, "roles": {"type": "array", "items": {"type": "string"}}}},
                "action": {"type": "string", "example": "PUT /v1/settings/sms/{control_center_id}"},
                "target": {"type": "string", "example": "/v1/settings/sms/main"},
                "outcome": {"type": "object", "required": ["status", "code"], "properties": {
                    "status": {"type": "integer"}, "code": {"type": ["string", "null"]}}},
                "changes": {"type": "object", "description": "Each changed field as `{\"from\", \"to\"}`; a secret (`password`, `http_header_value`) only as `set`, `changed` or `removed`.",
                    "additionalProperties": {"anyOf": [
                        {"type": "object", "required": ["from", "to"]},
                        {"type": "string", "enum": ["set", "changed", "removed"]}]}},
                "source_ip": {"type": ["string", "null"]},
                "user_agent": {"type": ["string", "null"]},
                "request_id": {"type": ["string", "null"]},
                "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                    "description": "SHA-256 (hex) of the previous entry's hash (empty for the first) followed by this entry's canonical JSON without `hash` (keys sorted, no white space)."},
            },
        },
        "AuditList": {
            "type": "object", "required": ["entries", "next_cursor"],
            "properties": {
                "entries": {"type": "array", "items": r("AuditEntry")},
                "next_cursor": {"type": ["string", "null"], "description": "Pass as `cursor` for the next page; null on the last page."},
            },
        },
        "AuditVerify": {
            "type": "object", "required": ["entries", "intact"],
            "properties": {
                "entries": {"type": "integer", "minimum": 0},
                "intact": {"type": "boolean"},
                "first_broken": {"type": "string", "description": "The first entry that does not follow from the one before it (deleted or edited there)."},
            },
        },
        "Notification": {
            "type": "object",
            "required": ["notification_id", "category", "created_at", "recipients", "sms_segments"],
            "properties": {
                "notification_id": {"type": "string"},
                "category": {"type": "string"},
                "lane": {"type": "string", "enum": ["urgent", "normal"],
                    "description": "Dispatch, distress and manual SMS (and their fallbacks and escalations) go first."},
                "incident_id": {"type": ["string", "null"]},
                "control_center_id": {"type": ["string", "null"]},
                "created_at": {"type": "string", "format": "date-time"},
                "message": {"type": ["object", "null"]},
                "audience": {"$ref": "#/components/schemas/Audience"},
                "sms_segments": {"type": "integer", "minimum": 0, "description": "The segments of all its SMS, as sent (every page's)."},
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
                        "response": {"type": "string", "enum": ["responding", "unavailable"], "description": "The recipient's latest answer."},
                        "responded_at": {"type": "string", "format": "date-time"},
                        "responded_via": {"type": "string", "enum": ["app", "link", "sms"]},
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
                                "encoding": {"type": "string", "enum": ["gsm7", "ucs2"], "description": "A sent SMS's encoding."},
                                "segments": {"type": "integer", "minimum": 1, "description": "A sent SMS's segments, as carriers bill them."},
                                "fallback_reason": {"type": "string", "enum": FallbackReason::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>()},
                            },
                        }},
                    },
                }},
            },
        },
    })
}
