//! The API's routes, written once: [`super::api`] dispatches by this table, answers 405
//! with `Allow` from it, and [`super::openapi`] describes it, so the served routes and the
//! published document cannot drift apart.

use super::auth::{Claims, Role};

/// One operation of the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    OpenApi,
    GetSettings,
    ListSms,
    GetSms,
    PutSms,
    DeleteSms,
    TestSms,
    TestEmail,
    GetEmail,
    PutEmail,
    DeleteEmail,
    GetCommunication,
    PutCommunication,
    ListUsers,
    GetUser,
    PutUser,
    DeleteUser,
    AddDevice,
    DeleteDevice,
    ListNotifications,
    GetNotification,
    AckNotification,
    RespondNotification,
    ReceiptNotification,
    ManualSms,
    GatewayReceipt,
    InboundSms,
    LinkPage,
    LinkAnswer,
    ListAudit,
    VerifyAudit,
}

/// Who may call a route (checked before the body is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed.
    Public,
    /// Any valid token; the operation decides from the data (a notification's recipient).
    Authenticated,
    /// Admin or dispatcher.
    Staff,
    Admin,
    Dispatcher,
    /// The user named by `{user_id}`, or an admin.
    SelfOrAdmin,
    /// The user named by `{user_id}`, or staff.
    SelfOrStaff,
}

impl Access {
    /// Whether `claims` may call a route; `path_user` is the `{user_id}` of the path.
    pub fn allows(self, claims: &Claims, path_user: Option<&str>) -> bool {
        match self {
            Access::Public | Access::Authenticated => true,
            Access::Staff => claims.is_staff(),
            Access::Admin => claims.is_admin(),
            Access::Dispatcher => claims.has(Role::Dispatcher),
            Access::SelfOrAdmin => claims.is_admin() || path_user == Some(claims.sub.as_str()),
            Access::SelfOrStaff => claims.is_staff() || path_user == Some(claims.sub.as_str()),
        }
    }

    /// A 403's message: what the caller lacks.
    pub fn needs(self) -> &'static str {
        match self {
            Access::Public | Access::Authenticated => "this is not open to you",
            Access::Staff => "this needs the admin or dispatcher role",
            Access::Admin => "this needs the admin role",
            Access::Dispatcher => "this needs the dispatcher role",
            Access::SelfOrAdmin => "this needs the admin role, or to be that user",
            Access::SelfOrStaff => "this needs the admin or dispatcher role, or to be that user",
        }
    }

    /// For the document: who may call it, in words.
    pub fn describe(self) -> &'static str {
        match self {
            Access::Public => "No token needed.",
            Access::Authenticated => "Any caller of the organization (rules in the text).",
            Access::Staff => "Roles: `admin` or `dispatcher`.",
            Access::Admin => "Role: `admin`.",
            Access::Dispatcher => "Role: `dispatcher`.",
            Access::SelfOrAdmin => "Role: `admin`, or the user themself.",
            Access::SelfOrStaff => "Roles: `admin` or `dispatcher`, or the user themself.",
        }
    }
}

/// A route: method, path template (`{name}` is one path segment), operation, access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub op: Op,
    pub access: Access,
    /// The OpenAPI `operationId`.
    pub id: &'static str,
    pub summary: &'static str,
    pub tag: &'static str,
}

const fn r(
    method: &'static str,
    path: &'static str,
    op: Op,
    access: Access,
    id: &'static str,
    tag: &'static str,
    summary: &'static str,
) -> Route {
    Route {
        method,
        path,
        op,
        access,
        id,
        summary,
        tag,
    }
}

use Access::*;

/// Every route the API serves, in the order the document lists them.
#[rustfmt::skip]
pub const ROUTES: &[Route] = &[
    r("GET", "/v1/openapi.json", Op::OpenApi, Public, "getOpenApi", "meta",
      "This document"),
    r("GET", "/v1/settings", Op::GetSettings, Staff, "getSettings", "settings",
      "Every setting of the organization: SMS per control center, email, communication"),
    r("GET", "/v1/settings/sms", Op::ListSms, Staff, "listSmsSettings", "settings",
      "The outgoing SMS settings of every control center"),
    r("GET", "/v1/settings/sms/{control_center_id}", Op::GetSms, Staff, "getSmsSettings",
      "settings", "One control center's own outgoing SMS settings"),
    r("PUT", "/v1/settings/sms/{control_center_id}", Op::PutSms, Admin, "putSmsSettings",
      "settings", "Set a control center's outgoing SMS settings"),
    r("DELETE", "/v1/settings/sms/{control_center_id}", Op::DeleteSms, Admin,
      "deleteSmsSettings", "settings",
      "Delete a control center's SMS settings and their secrets (it falls back to main's)"),
    r("POST", "/v1/settings/sms/{control_center_id}/test", Op::TestSms, Admin, "testSms",
      "settings", "Send one real test SMS through the control center's effective settings"),
    r("POST", "/v1/settings/email/test", Op::TestEmail, Admin, "testEmail", "settings",
      "Send one real test email through the organization's provider"),
    r("GET", "/v1/settings/email", Op::GetEmail, Staff, "getEmailSettings", "settings",
      "The organization's outgoing email settings"),
    r("PUT", "/v1/settings/email", Op::PutEmail, Admin, "putEmailSettings", "settings",
      "Set the organization's outgoing email settings"),
    r("DELETE", "/v1/settings/email", Op::DeleteEmail, Admin, "deleteEmailSettings",
      "settings", "Back to the default email account (answers 204 either way)"),
    r("GET", "/v1/settings/communication", Op::GetCommunication, Staff,
      "getCommunicationSettings", "settings", "The communication settings"),
    r("PUT", "/v1/settings/communication", Op::PutCommunication, Admin,
      "putCommunicationSettings", "settings",
      "Change communication settings; fields left out keep their value"),
    r("GET", "/v1/users", Op::ListUsers, Staff, "listUsers", "directory",
      "Every user of the organization"),
    r("GET", "/v1/users/{user_id}", Op::GetUser, SelfOrStaff, "getUser", "directory",
      "One user (staff, or the user themself)"),
    r("PUT", "/v1/users/{user_id}", Op::PutUser, Admin, "putUser", "directory",
      "Create or replace a user (devices are kept)"),
    r("DELETE", "/v1/users/{user_id}", Op::DeleteUser, Admin, "deleteUser", "directory",
      "Delete a user and their devices"),
    r("POST", "/v1/users/{user_id}/devices", Op::AddDevice, SelfOrAdmin, "addDevice",
      "directory", "Register a mobile device for push"),
    r("DELETE", "/v1/users/{user_id}/devices/{device_id}", Op::DeleteDevice, SelfOrAdmin,
      "deleteDevice", "directory", "Remove a device (admin, or the user themself)"),
    r("GET", "/v1/notifications", Op::ListNotifications, Staff, "listNotifications",
      "notifications", "The organization's notifications, newest first, with counts by state"),
    r("GET", "/v1/notifications/{notification_id}", Op::GetNotification, Staff,
      "getNotification", "notifications", "A notification with every delivery"),
    r("POST", "/v1/notifications/{notification_id}/ack", Op::AckNotification, Authenticated,
      "ackNotification", "notifications",
      "Acknowledge a notification (a user it was for)"),
    r("POST", "/v1/notifications/{notification_id}/response", Op::RespondNotification,
      Authenticated, "respondToNotification", "notifications",
      "Answer a dispatch: responding or unavailable (a user it was for; an ack too)"),
    r("POST", "/v1/notifications/{notification_id}/receipt", Op::ReceiptNotification,
      Authenticated, "receiptNotification", "notifications",
      "The recipient's app says the notification reached the device"),
    r("POST", "/v1/messages/sms", Op::ManualSms, Dispatcher, "sendManualSms",
      "notifications", "Send a manual SMS to a user's primary mobile"),
    r("POST", "/v1/receipts/sms/{org_id}/{control_center_id}", Op::GatewayReceipt, Public,
      "gatewayReceipt", "receipts",
      "A custom SMS gateway's status callback, signed with the gateway's stored password"),
    r("POST", "/v1/inbound/sms/{org_id}/{control_center_id}", Op::InboundSms, Public,
      "inboundSms", "receipts",
      "An SMS reply through a custom gateway (its inbound webhook), signed as its receipts are"),
    r("GET", "/v1/audit", Op::ListAudit, Admin, "listAudit", "audit",
      "The audit trail of every write attempt, newest first"),
    r("GET", "/v1/audit/verify", Op::VerifyAudit, Admin, "verifyAudit", "audit",
      "Checks the audit trail's hash chain"),
    r("GET", "/r/{code}", Op::LinkPage, Public, "showResponseLink", "responses",
      "A response link's page: the dispatch and two buttons (changes nothing)"),
    r("POST", "/r/{code}", Op::LinkAnswer, Public, "answerResponseLink", "responses",
      "Answer a dispatch from its response link (form field `response`)"),
];

/// What a method and path resolve to.
#[derive(Debug, PartialEq)]
pub enum Resolved {
    /// The route and its path parameters, in template order.
    Found(&'static Route, Vec<String>),
    /// The path exists under other methods (405 with `Allow`).
    WrongMethod(Vec<&'static str>),
    NotFound,
}

impl Route {
    pub fn segments(&self) -> impl Iterator<Item = &'static str> {
        self.path.split('/').filter(|s| !s.is_empty())
    }

    /// The names of the path parameters, in order.
    pub fn params(&self) -> impl Iterator<Item = &'static str> {
        self.segments()
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
    }

    /// The path parameters when `segs` (decoded segments) match the template.
    fn capture(&self, segs: &[&str]) -> Option<Vec<String>> {
        let template: Vec<&str> = self.segments().collect();
        if template.len() != segs.len() {
            return None;
        }
        let mut params = Vec::new();
        for (t, s) in template.iter().zip(segs) {
            if t.starts_with('{') {
                params.push((*s).to_string());
            } else if t != s {
                return None;
            }
        }
        Some(params)
    }
}

/// Finds the route for a method and the path's decoded segments.
pub fn resolve(method: &str, segs: &[&str]) -> Resolved {
    let mut allow = Vec::new();
    for route in ROUTES {
        if let Some(params) = route.capture(segs) {
            if route.method.eq_ignore_ascii_case(method) {
                return Resolved::Found(route, params);
            }
            allow.push(route.method);
        }
    }
    if allow.is_empty() {
        Resolved::NotFound
    } else {
        Resolved::WrongMethod(allow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/api.md is the reference a client team reads: every route the API serves is
    /// in it (as `METHOD /path`), so the two cannot drift.
    #[test]
    fn docs_api_names_every_route() {
        let page = include_str!("../../../docs/api.md");
        let missing: Vec<String> = ROUTES
            .iter()
            .map(|r| format!("`{} {}", r.method, r.path))
            .filter(|r| !page.contains(r.as_str()))
            .collect();
        assert!(missing.is_empty(), "not in docs/api.md: {missing:?}");
    }

    #[test]
    fn routes_resolve_with_their_parameters_and_other_methods_are_listed() {
        let Resolved::Found(r, p) = resolve("POST", &["v1", "settings", "email", "test"]) else {
            panic!()
        };
        assert_eq!(r.op, Op::TestEmail);
        assert!(p.is_empty());
        let Resolved::Found(r, p) = resolve("put", &["v1", "users", "u-17"]) else {
            panic!()
        };
        assert_eq!((r.op, p), (Op::PutUser, vec!["u-17".to_string()]));
        assert_eq!(
            resolve("PATCH", &["v1", "settings", "email"]),
            Resolved::WrongMethod(vec!["GET", "PUT", "DELETE"])
        );
        assert_eq!(resolve("GET", &["v1", "nope"]), Resolved::NotFound);
    }

    #[test]
    fn operation_ids_and_routes_are_unique() {
        let mut ids = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(ids.insert(r.id), "{} twice", r.id);
            assert!(keys.insert((r.method, r.path)), "{} {}", r.method, r.path);
        }
    }
}
