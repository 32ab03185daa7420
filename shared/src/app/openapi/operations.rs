//! The document's paths: one operation per route of the route table, its parameters,
//! answers, errors, examples and links.

use super::*;

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
        "code" => (
            json!({"type": "string", "pattern": "^[A-Za-z0-9]{10,64}$", "example": "k3J9xQ2mTz7VbN4w"}),
            "A response link's code, as the dispatch SMS or email carried it.",
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
        Op::RespondNotification => "ResponseInput",
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
        Op::ListAudit => (
            "200",
            Some(r("AuditList")),
            "A page of the audit trail, newest first.",
        ),
        Op::VerifyAudit => (
            "200",
            Some(r("AuditVerify")),
            "Whether every entry follows from the one before it, up to the chain's head.",
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
        Op::RespondNotification => (
            "204",
            None,
            "Recorded (an ack too); a later answer replaces it.",
        ),
        Op::GatewayReceipt => (
            "204",
            None,
            "Applied, a repeat, or a status that is not final (nothing changes).",
        ),
        Op::LinkPage => (
            "200",
            None,
            "The dispatch and two buttons, Responding and Unavailable (HTML; nothing changes).",
        ),
        Op::LinkAnswer => (
            "200",
            None,
            "Recorded with `responded_via: link` (an ack too); the page says what (HTML).",
        ),
        Op::InboundSms => (
            "204",
            None,
            "Read: an answer recorded, or a repeat, a sender Flare does not know, or a reply that changes nothing.",
        ),
    }
}

/// The error answers a route can give.
fn errors(route: &Route) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if matches!(route.op, Op::LinkPage | Op::LinkAnswer) {
        if route.op == Op::LinkAnswer {
            out.push((
                "400",
                "No `response`, or another value: the page again (HTML).",
            ));
        }
        out.push(("404", "The link is unknown or expired (HTML)."));
        return out;
    }
    let validates = request_schema(route.op).is_some()
        || route.params().next().is_some()
        || matches!(route.op, Op::ListNotifications | Op::ListAudit);
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
    if matches!(route.op, Op::GatewayReceipt | Op::InboundSms) {
        out.push((
            "401",
            "The signature is missing or does not verify (or the control center has no gateway).",
        ));
        if route.op == Op::GatewayReceipt {
            out.push(("404", "No delivery was sent with this message id."));
        }
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
            | Op::ListAudit
            | Op::VerifyAudit
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

/// One route's operation: its summary, parameters, body and answers.
fn operation(route: &Route, examples: &Map<String, Value>) -> Value {
    let mut op = json!({
        "operationId": route.id,
        "summary": route.summary,
        "description": route.access.describe(),
        "tags": [route.tag],
    });
    let params: Vec<Value> = route
        .params()
        .map(parameter)
        .chain(extra_parameters(route.op))
        .collect();
    if !params.is_empty() {
        op["parameters"] = json!(params);
    }
    if route.access == Access::Public {
        op["security"] = json!([]);
    }
    if route.op == Op::GatewayReceipt {
        op["description"] = json!(
            "No token: `json` and `form` gateways sign with `X-Flare-Signature: sha256=<hex HMAC-SHA256 of the raw body>`, `twilio` ones with `X-Twilio-Signature` (as Twilio signs status callbacks), keyed with the control center's stored gateway password."
        );
        op["requestBody"] = gateway_receipt_body();
    }
    if route.op == Op::InboundSms {
        op["description"] = json!(
            "No token: signed exactly as the gateway's receipts are. A reply `1`, `Y`, `YES` (responding) or `2`, `N`, `NO` (unavailable) answers the newest dispatch SMS Flare sent the sender's number in the last 24 hours; a repeated message id changes nothing."
        );
        op["requestBody"] = gateway_inbound_body();
    }
    if route.op == Op::LinkAnswer {
        op["requestBody"] = json!({"required": true, "content": {
            "application/x-www-form-urlencoded": {"schema": {
                "type": "object", "required": ["response"],
                "properties": {"response": {"type": "string", "enum": ["responding", "unavailable"]}},
            }},
        }});
    }
    if let Some(body) = request_body(route, examples) {
        op["requestBody"] = body;
    }
    op["responses"] = responses(route);
    op
}

/// The parameters a route takes besides its path's: a page's query, a manual SMS's
/// idempotency key.
fn extra_parameters(op: Op) -> Vec<Value> {
    match op {
        Op::ListNotifications => vec![
            json!({
                "name": "limit", "in": "query", "required": false,
                "description": "How many notifications at most (default 50).",
                "schema": {"type": "integer", "minimum": 1, "maximum": crate::app::notifications::LIST_MAX, "default": crate::app::notifications::LIST_DEFAULT},
            }),
            json!({
                "name": "cursor", "in": "query", "required": false,
                "description": "The `next_cursor` of the previous page, as it was.",
                "schema": {"type": "string", "pattern": r"^[0-9]{1,15}_(?!\.\.?$)[A-Za-z0-9._@:-]{1,128}$", "example": "1796173200000_9f1c2d3e-0000-4000-8000-000000000001"},
            }),
        ],
        Op::ListAudit => audit_parameters(),
        Op::GetNotification => vec![json!({
            "name": "cursor", "in": "query", "required": false,
            "description": "The `next_cursor` of the previous page, as it was (a page holds at most 500 recipients).",
            "schema": {"type": "string", "pattern": "^(user|contact):[A-Za-z0-9._@:-]{1,128}$", "example": "user:u-17"},
        })],
        Op::ManualSms => vec![json!({
            "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "The same key from the same organization within 24 hours answers the first request's notification_id and sends nothing again.",
            "schema": {"type": "string", "pattern": "^[!-~]{1,255}$", "example": "dispatch-4711-sms-1"},
        })],
        _ => Vec::new(),
    }
}

/// `GET /v1/audit`'s query: the page and the filters.
fn audit_parameters() -> Vec<Value> {
    let q = |name: &str, description: &str, schema: Value| json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema});
    vec![
        q(
            "limit",
            "How many entries at most (default 50).",
            json!({"type": "integer", "minimum": 1, "maximum": crate::app::audit::AUDIT_MAX, "default": crate::app::audit::AUDIT_DEFAULT}),
        ),
        q(
            "cursor",
            "The `next_cursor` of the previous page, as it was.",
            json!({"type": "string", "pattern": "^a-[0-9]{1,19}$", "example": "a-000000000017"}),
        ),
        q(
            "since",
            "Entries at or after this time (RFC 3339).",
            json!({"type": "string", "format": "date-time"}),
        ),
        q(
            "until",
            "Entries at or before this time (RFC 3339).",
            json!({"type": "string", "format": "date-time"}),
        ),
        q("actor", "Entries by this `sub`.", json!({"type": "string"})),
        q(
            "target",
            "Entries about this path, or under it when it ends with `/`.",
            json!({"type": "string", "example": "/v1/settings/"}),
        ),
    ]
}

/// A gateway's callback body: JSON or a form, with the fields the formats send.
fn gateway_receipt_body() -> Value {
    let fields = json!({"type": "object", "properties": {
        "message_id": {"type": "string"},
        "status": {"type": "string", "enum": ["delivered", "undelivered"]},
        "error": {"type": "string"},
        "MessageSid": {"type": "string"},
        "MessageStatus": {"type": "string"},
        "ErrorCode": {"type": "string"},
    }});
    json!({"required": true, "content": {
        "application/json": {"schema": fields},
        "application/x-www-form-urlencoded": {"schema": fields},
    }})
}

fn gateway_inbound_body() -> Value {
    let fields = json!({"type": "object", "properties": {
        "from": {"type": "string"},
        "to": {"type": "string"},
        "text": {"type": "string"},
        "message_id": {"type": "string"},
        "From": {"type": "string"},
        "To": {"type": "string"},
        "Body": {"type": "string"},
        "MessageSid": {"type": "string"},
    }});
    json!({"required": true, "content": {
        "application/json": {"schema": fields},
        "application/x-www-form-urlencoded": {"schema": fields},
    }})
}

/// The JSON body of a route that takes one, with the sample event's as its example.
fn request_body(route: &Route, examples: &Map<String, Value>) -> Option<Value> {
    let schema = request_schema(route.op)?;
    let mut media = json!({"schema": r(schema)});
    if let Some(example) = examples.get(&format!("{} {}", route.method, route.path)) {
        media["example"] = example.clone();
    }
    // A receipt may come without a body.
    let required = route.op != Op::ReceiptNotification;
    Some(json!({"required": required, "content": {"application/json": media}}))
}

/// A route's answers: its success (with the links it feeds), then its errors.
fn responses(route: &Route) -> Value {
    let mut responses = Map::new();
    let (status, schema, what) = success(route.op);
    if matches!(route.op, Op::LinkPage | Op::LinkAnswer) {
        let html = json!({"text/html": {"schema": {"type": "string"}}});
        responses.insert(status.into(), json!({"description": what, "content": html}));
        for (status, what) in errors(route) {
            responses.insert(status.into(), json!({"description": what, "content": html}));
        }
        return Value::Object(responses);
    }
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
    Value::Object(responses)
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

pub(super) fn build() -> Value {
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
            {"name": "responses", "description": "Response links: answering a dispatch from its SMS or email, without the app or a token (HTML pages)."},
            {"name": "audit", "description": "The audit trail: every authenticated write attempt, allowed or refused, hash-chained (v1.2)."},
            {"name": "meta", "description": "This description."},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": schemas(),
        },
    })
}
