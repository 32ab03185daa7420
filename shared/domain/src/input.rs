//! Parsing the JSON bodies callers send into validated domain values, naming every bad
//! field (by path, such as `smtp.port` or `contacts[1].value`), not only the first.

use super::contact::{Contact, ContactKind, Contacts, ExternalContact};
use super::delivery::Message;
use super::email::EmailAddress;
use super::endpoint::{EndpointPolicy, GatewayUrl, SmtpServer};
use super::header::{HttpHeader, MASK};
use super::ids::{ControlCenterId, UserId};
use super::license::License;
use super::phone::{PhoneNumber, SenderId};
use super::settings::{
    CommunicationSettings, EmailProvider, EmailSettings, Escalation, GatewayFormat, HttpGateway,
    MAX_APP_FALLBACK_SECONDS, MAX_PER_SECOND, Method, SmsProvider, SmsSettings, SmtpSettings,
};
use super::text::visible_line;
use super::user::Platform;
use super::validation::{FieldErrors, ValidationError};
use secrecy::SecretString;
use serde_json::{Map, Value};
use std::fmt::Display;

/// Longest title (it becomes an email subject and a push title).
pub const MAX_TITLE: usize = 200;
/// Longest message body.
pub const MAX_BODY: usize = 4000;
/// Longest manual SMS (ten concatenated segments).
pub const MAX_SMS_TEXT: usize = 1600;
/// Longest free-text name.
pub const MAX_NAME: usize = 200;

/// Reads fields of one JSON object, recording each problem under its path.
pub struct Reader<'a, 'e> {
    obj: &'a Map<String, Value>,
    prefix: String,
    errors: &'e mut FieldErrors,
}

impl<'a, 'e> Reader<'a, 'e> {
    pub fn new(obj: &'a Map<String, Value>, prefix: &str, errors: &'e mut FieldErrors) -> Self {
        Self {
            obj,
            prefix: prefix.to_string(),
            errors,
        }
    }

    pub fn path(&self, key: &str) -> String {
        join(&self.prefix, key)
    }

    fn present(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.present(key).is_some()
    }

    pub fn error(&mut self, key: &str, reason: impl Display) {
        let p = self.path(key);
        self.errors.add(p, reason);
    }

    pub fn optional_str(&mut self, key: &str) -> Option<Option<&'a str>> {
        match self.present(key) {
            None => Some(None),
            Some(Value::String(s)) => Some(Some(s.as_str())),
            Some(_) => {
                self.error(key, "must be a string");
                None
            }
        }
    }

    pub fn required_str(&mut self, key: &str) -> Option<&'a str> {
        match self.optional_str(key) {
            Some(Some(s)) => Some(s),
            Some(None) => {
                self.error(key, "is required");
                None
            }
            None => None,
        }
    }

    pub fn required_with<T, E: Display>(
        &mut self,
        key: &str,
        f: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        let s = self.required_str(key)?;
        let p = self.path(key);
        self.errors.check(p, f(s))
    }

    /// `Some(None)` when absent or null; `None` when present and bad.
    pub fn optional_with<T, E: Display>(
        &mut self,
        key: &str,
        f: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<Option<T>> {
        match self.optional_str(key)? {
            None => Some(None),
            Some(s) => {
                let p = self.path(key);
                self.errors.check(p, f(s)).map(Some)
            }
        }
    }

    pub fn optional_bool(&mut self, key: &str) -> Option<Option<bool>> {
        match self.present(key) {
            None => Some(None),
            Some(Value::Bool(b)) => Some(Some(*b)),
            Some(_) => {
                self.error(key, "must be true or false");
                None
            }
        }
    }

    /// `Some(None)` when absent or null; `None` when present and not a whole number.
    pub fn optional_int(&mut self, key: &str) -> Option<Option<i64>> {
        match self.present(key) {
            None => Some(None),
            Some(_) => self.required_int(key).map(Some),
        }
    }

    pub fn required_int(&mut self, key: &str) -> Option<i64> {
        match self.present(key) {
            None => {
                self.error(key, "is required");
                None
            }
            // JSON has one number type: 587.0 is the whole number 587.
            Some(v) => match v.as_i64().or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                    .map(|f| f as i64)
            }) {
                Some(n) => Some(n),
                None => {
                    self.error(key, "must be a whole number");
                    None
                }
            },
        }
    }

    /// A nested value, parsed by `f` with the field's path as prefix.
    pub fn optional_value<T>(
        &mut self,
        key: &str,
        f: impl FnOnce(&Value, &str, &mut FieldErrors) -> Option<T>,
    ) -> Option<Option<T>> {
        match self.present(key) {
            None => Some(None),
            Some(v) => {
                let p = self.path(key);
                f(v, &p, self.errors).map(Some)
            }
        }
    }

    pub fn required_value<T>(
        &mut self,
        key: &str,
        f: impl FnOnce(&Value, &str, &mut FieldErrors) -> Option<T>,
    ) -> Option<T> {
        match self.optional_value(key, f) {
            Some(Some(v)) => Some(v),
            Some(None) => {
                self.error(key, "is required");
                None
            }
            None => None,
        }
    }

    /// A list whose items are parsed by `f` at paths `key[i]`; `None` if any item is bad.
    pub fn optional_list<T>(
        &mut self,
        key: &str,
        f: impl Fn(&Value, &str, &mut FieldErrors) -> Option<T>,
    ) -> Option<Option<Vec<T>>> {
        let items = match self.present(key) {
            None => return Some(None),
            Some(Value::Array(items)) => items,
            Some(_) => {
                self.error(key, "must be a list");
                return None;
            }
        };
        let base = self.path(key);
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match f(item, &format!("{base}[{i}]"), self.errors) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(Some(out))
    }

    pub fn required_list<T>(
        &mut self,
        key: &str,
        f: impl Fn(&Value, &str, &mut FieldErrors) -> Option<T>,
    ) -> Option<Vec<T>> {
        match self.optional_list(key, f) {
            Some(Some(v)) => Some(v),
            Some(None) => {
                self.error(key, "is required");
                None
            }
            None => None,
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// An item parser for lists of strings.
pub fn string_item<T, E: Display>(
    f: impl Fn(&str) -> Result<T, E>,
) -> impl Fn(&Value, &str, &mut FieldErrors) -> Option<T> {
    move |v, path, errors| match v.as_str() {
        Some(s) => errors.check(path, f(s)),
        None => {
            errors.add(path, "must be a string");
            None
        }
    }
}

/// Runs `f` on a JSON object (an error at `path` if it is not one).
pub fn object<T>(
    v: &Value,
    path: &str,
    errors: &mut FieldErrors,
    f: impl FnOnce(&mut Reader) -> Option<T>,
) -> Option<T> {
    match v.as_object() {
        Some(obj) => {
            let mut r = Reader::new(obj, path, errors);
            f(&mut r)
        }
        None => {
            errors.add(
                if path.is_empty() { "body" } else { path },
                "must be an object",
            );
            None
        }
    }
}

/// Names each field of the object `v` that is not in `known` ("unknown field"): a
/// misspelt optional field must not be silently ignored. Request bodies only; events
/// stay lenient, so an upstream addition never stops a notification.
pub fn reject_unknown(v: &Value, path: &str, errors: &mut FieldErrors, known: &[&str]) {
    if let Some(obj) = v.as_object() {
        for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
            errors.add(join(path, key), "unknown field");
        }
    }
}

/// Free text: trimmed, non-empty, bounded, and without control characters where it may
/// end up in a header line.
pub fn text(s: &str, max: usize, single_line: bool) -> Result<String, ValidationError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(ValidationError::new("must not be empty"));
    }
    // The limit applies to what was sent, so it is the same limit the OpenAPI schema states.
    if s.chars().count() > max {
        return Err(ValidationError::new(format!(
            "must be at most {max} characters"
        )));
    }
    if single_line && t.chars().any(|c| c.is_control()) {
        return Err(ValidationError::new(
            "must be one line without control characters",
        ));
    }
    Ok(t.to_string())
}

/// `{"title", "body"}` of an incident event or a test send.
pub fn parse_message(v: &Value, path: &str, errors: &mut FieldErrors) -> Option<Message> {
    object(v, path, errors, |r| {
        let title = r.required_with("title", |s| text(s, MAX_TITLE, true));
        let body = r.required_with("body", |s| text(s, MAX_BODY, false));
        Some(Message {
            title: title?,
            body: body?,
        })
    })
}

/// `{"name", "mobile", "email"}`: a contact who is not a user; needs a mobile or an email.
pub fn parse_external_contact(
    v: &Value,
    path: &str,
    errors: &mut FieldErrors,
) -> Option<ExternalContact> {
    object(v, path, errors, |r| {
        let name = r.required_with("name", |s| visible_line(s, MAX_NAME));
        let mobile = r.optional_with("mobile", PhoneNumber::parse);
        let email = r.optional_with("email", EmailAddress::parse);
        if matches!(mobile, Some(None)) && matches!(email, Some(None)) {
            r.error("mobile", "a contact needs a mobile or an email");
            return None;
        }
        Some(ExternalContact {
            name: name?,
            mobile: mobile?,
            email: email?,
        })
    })
}

fn parse_contact(v: &Value, path: &str, errors: &mut FieldErrors) -> Option<Contact> {
    reject_unknown(v, path, errors, &["kind", "value", "primary"]);
    object(v, path, errors, |r| {
        let kind = r.required_with("kind", ContactKind::parse);
        let primary = r.optional_bool("primary").map(|p| p.unwrap_or(false));
        let value = match kind {
            Some(ContactKind::Mobile) => {
                r.required_with("value", PhoneNumber::parse)
                    .map(|n| Contact::Mobile {
                        value: n,
                        primary: false,
                    })
            }
            Some(ContactKind::Email) => {
                r.required_with("value", EmailAddress::parse)
                    .map(|a| Contact::Email {
                        value: a,
                        primary: false,
                    })
            }
            None => {
                r.required_str("value");
                None
            }
        };
        let primary = primary?;
        Some(match value? {
            Contact::Mobile { value, .. } => Contact::Mobile { value, primary },
            Contact::Email { value, .. } => Contact::Email { value, primary },
        })
    })
}

/// The body of `PUT /v1/users/{id}`. Devices are not part of it (they have their own
/// routes) and are kept by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInput {
    pub name: String,
    pub license: License,
    pub is_virtual: bool,
    pub control_center_id: Option<ControlCenterId>,
    pub contacts: Contacts,
    pub emergency_contacts: Vec<ExternalContact>,
}

impl UserInput {
    pub fn parse(body: &Value) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        reject_unknown(
            body,
            "",
            &mut errors,
            &[
                "name",
                "license",
                "virtual",
                "control_center_id",
                "contacts",
                "emergency_contacts",
            ],
        );
        let parsed = object(body, "", &mut errors, |r| {
            let name = r.required_with("name", |s| visible_line(s, MAX_NAME));
            let license = r.required_with("license", License::parse);
            let is_virtual = r.optional_bool("virtual");
            let cc = r.optional_with("control_center_id", ControlCenterId::parse);
            let contacts = r.optional_list("contacts", parse_contact);
            let emergency = r.optional_list("emergency_contacts", |v, path, errors| {
                reject_unknown(v, path, errors, &["name", "mobile", "email"]);
                parse_external_contact(v, path, errors)
            });
            let contacts = match contacts? {
                Some(list) => match Contacts::new(list) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        r.errors.merge("", e);
                        None
                    }
                },
                None => Some(Contacts::default()),
            };
            Some(UserInput {
                name: name?,
                license: license?,
                is_virtual: is_virtual?.unwrap_or(false),
                control_center_id: cc?,
                contacts: contacts?,
                emergency_contacts: emergency?.unwrap_or_default(),
            })
        });
        match parsed {
            Some(u) if errors.is_empty() => Ok(u),
            _ => Err(errors),
        }
    }
}

/// The body of `POST /v1/users/{id}/devices`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInput {
    pub platform: Platform,
    pub token: String,
}

impl DeviceInput {
    pub fn parse(body: &Value) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        reject_unknown(body, "", &mut errors, &["platform", "token"]);
        let parsed = object(body, "", &mut errors, |r| {
            let platform = r.required_with("platform", Platform::parse);
            let token = r.required_with("token", |t| {
                if t.is_empty()
                    || t.chars().count() > 4096
                    || t.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    Err(ValidationError::new(
                        "must be the device's push token: 1 to 4096 characters, no spaces",
                    ))
                } else {
                    Ok(t.to_string())
                }
            });
            Some(DeviceInput {
                platform: platform?,
                token: token?,
            })
        });
        match parsed {
            Some(d) if errors.is_empty() => Ok(d),
            _ => Err(errors),
        }
    }
}

/// What a settings PUT does to a stored secret.
#[derive(Debug, Clone, Default)]
pub enum SecretChange {
    /// The body did not carry it: keep what is stored.
    #[default]
    Keep,
    Set(SecretString),
    /// The setting that needed it is gone: delete it.
    Clear,
}

/// A parsed `PUT /v1/settings/sms/{control_center_id}`.
#[derive(Debug, Clone)]
pub struct SmsSettingsUpdate {
    /// `password_set` is left false: the caller knows what is stored.
    pub settings: SmsSettings,
    pub password: SecretChange,
    pub header_value: SecretChange,
}

impl SmsSettingsUpdate {
    pub fn parse(
        body: &Value,
        control_center_id: ControlCenterId,
        policy: EndpointPolicy,
    ) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        reject_unknown(
            body,
            "",
            &mut errors,
            &[
                "provider",
                "url",
                "format",
                "username",
                "password",
                "sender_number",
                "http_header",
                "failover",
                "failover_sender_number",
                "max_per_second",
            ],
        );
        let parsed = object(body, "", &mut errors, |r| {
            let provider = r.required_with("provider", |s| match s {
                "sns" => Ok("sns"),
                "http" => Ok("http"),
                _ => Err("must be sns or http"),
            });
            let sender = r.optional_with("sender_number", SenderId::parse);
            let password = r.optional_with("password", gateway_password);
            let failover = r.optional_with("failover", |s| match s {
                "sns" => Ok(true),
                _ => Err(ValidationError::new("must be sns (or left out)")),
            });
            let failover_sender = r.optional_with("failover_sender_number", SenderId::parse);
            let pace = match r.optional_int("max_per_second") {
                None => None,
                Some(None) => Some(None),
                Some(Some(n)) => match u32::try_from(n) {
                    Ok(n) if (1..=MAX_PER_SECOND).contains(&n) => Some(Some(n)),
                    _ => {
                        r.error(
                            "max_per_second",
                            format!("must be a whole number from 1 to {MAX_PER_SECOND}"),
                        );
                        None
                    }
                },
            };
            let http = match provider {
                Some("http") => {
                    let url = r.required_with("url", |s| GatewayUrl::parse(s, policy));
                    let format = r
                        .optional_with("format", GatewayFormat::parse)
                        .map(|f| f.unwrap_or(GatewayFormat::Json));
                    let username = r.optional_with("username", |s| visible_line(s, MAX_NAME));
                    let header = r.optional_str("http_header");
                    let header = match header {
                        Some(Some(line)) => match masked_header(line) {
                            Some(name) => Some(Some((name, SecretChange::Keep))),
                            None => r
                                .optional_with("http_header", HttpHeader::parse)
                                .map(|h| h.map(|h| (h.name, SecretChange::Set(h.value)))),
                        },
                        Some(None) => Some(None),
                        None => None,
                    };
                    if matches!(sender, Some(None)) {
                        r.error("sender_number", "is required for an http gateway");
                    }
                    Some((url, format, username, header))
                }
                Some(_) => {
                    for key in [
                        "url",
                        "format",
                        "username",
                        "http_header",
                        "password",
                        "failover",
                        "failover_sender_number",
                        "max_per_second",
                    ] {
                        if r.has(key) {
                            r.error(key, "applies only to provider http");
                        }
                    }
                    None
                }
                // The provider is bad: still name every other bad field, read as the
                // gateway's would be.
                None => {
                    r.optional_with("url", |s| GatewayUrl::parse(s, policy));
                    r.optional_with("format", GatewayFormat::parse);
                    r.optional_with("username", |s| visible_line(s, MAX_NAME));
                    if let Some(Some(line)) = r.optional_str("http_header")
                        && masked_header(line).is_none()
                    {
                        r.optional_with("http_header", HttpHeader::parse);
                    }
                    None
                }
            };
            let provider = provider?;
            let sender = sender?;
            let password = password?;
            let failover_sns = failover?.unwrap_or(false);
            let failover_sender_number = failover_sender?;
            if failover_sender_number.is_some() && !failover_sns && provider == "http" {
                r.error("failover_sender_number", "applies only with failover sns");
            }
            let max_per_second = pace?;
            let (provider, header_value) = match (provider, http) {
                ("http", Some((url, format, username, header))) => {
                    let header = header?;
                    let header_value = match &header {
                        Some((_, change)) => change.clone(),
                        None => SecretChange::Clear,
                    };
                    (
                        SmsProvider::Http(HttpGateway {
                            url: url?,
                            format: format?,
                            username: username?,
                            header_name: header.map(|(n, _)| n),
                            failover_sns,
                            max_per_second,
                            failover_sender_number,
                        }),
                        header_value,
                    )
                }
                _ => (SmsProvider::Sns, SecretChange::Clear),
            };
            if !r.errors.is_empty() {
                return None;
            }
            // SNS has no password: switching to it deletes a gateway's stored one.
            let password = match (&provider, password) {
                (SmsProvider::Http(_), Some(p)) => SecretChange::Set(p),
                (SmsProvider::Http(_), None) => SecretChange::Keep,
                (SmsProvider::Sns, _) => SecretChange::Clear,
            };
            Some(SmsSettingsUpdate {
                settings: SmsSettings {
                    control_center_id,
                    provider,
                    sender_number: sender,
                    password_set: false,
                    secrets_at: None,
                },
                password,
                header_value,
            })
        });
        match parsed {
            Some(u) if errors.is_empty() => Ok(u),
            _ => Err(errors),
        }
    }
}

/// `X-Api-Key: ****` sent back as it was read: keep the stored value.
fn masked_header(line: &str) -> Option<super::header::HeaderName> {
    let (name, value) = line.split_once(':')?;
    (value.trim() == MASK)
        .then(|| super::header::HeaderName::parse(name.trim()).ok())
        .flatten()
        // A reserved name is refused by the full parse, masked or not.
        .filter(|n| !n.is_reserved())
}

/// The shortest gateway password: it is also the key callbacks are signed with.
pub const MIN_GATEWAY_PASSWORD: usize = 8;

fn gateway_password(s: &str) -> Result<SecretString, ValidationError> {
    let secret = secret_text(s)?;
    if s.trim().is_empty() {
        return Err(ValidationError::new("must not be blank"));
    }
    if s.chars().count() < MIN_GATEWAY_PASSWORD {
        return Err(ValidationError::new(format!(
            "must be at least {MIN_GATEWAY_PASSWORD} characters: it signs the gateway's delivery callbacks"
        )));
    }
    Ok(secret)
}

fn secret_text(s: &str) -> Result<SecretString, ValidationError> {
    if s.is_empty() {
        return Err(ValidationError::new("must not be empty"));
    }
    if s.chars().count() > 4096 || s.contains(['\r', '\n']) {
        return Err(ValidationError::new(
            "must be at most 4096 characters on one line",
        ));
    }
    Ok(SecretString::from(s.to_string()))
}

/// A parsed `PUT /v1/settings/email`.
#[derive(Debug, Clone)]
pub struct EmailSettingsUpdate {
    pub settings: EmailSettings,
    pub password: SecretChange,
}

impl EmailSettingsUpdate {
    pub fn parse(body: &Value, policy: EndpointPolicy) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        reject_unknown(
            body,
            "",
            &mut errors,
            &["provider", "sender_email", "smtp", "failover"],
        );
        let parsed = object(body, "", &mut errors, |r| {
            let provider = r.required_with("provider", |s| match s {
                "ses" => Ok("ses"),
                "smtp" => Ok("smtp"),
                _ => Err("must be ses or smtp"),
            });
            let sender = r.optional_with("sender_email", EmailAddress::parse);
            let failover = r.optional_with("failover", |s| match s {
                "ses" => Ok(true),
                _ => Err(ValidationError::new("must be ses (or left out)")),
            });
            let smtp_object = |v: &Value, path: &str, errors: &mut FieldErrors| {
                reject_unknown(
                    v,
                    path,
                    errors,
                    &["server_url", "port", "use_tls", "username", "password"],
                );
                object(v, path, errors, |s| {
                    let url = s.required_str("server_url");
                    let port = s.required_int("port");
                    let use_tls = s.optional_bool("use_tls");
                    let username = s.optional_with("username", |u| visible_line(u, MAX_NAME));
                    let password = s.optional_with("password", secret_text);
                    let (url, port, use_tls) = (url?, port?, use_tls?.unwrap_or(true));
                    let server = match SmtpServer::parse(url, port, use_tls, policy) {
                        Ok(server) => Some(server),
                        Err(e) => {
                            s.errors.merge(path, e);
                            None
                        }
                    };
                    Some((server?, username?, password?))
                })
            };
            let smtp = match provider {
                Some("smtp") => r.required_value("smtp", smtp_object).map(Some),
                Some(_) => {
                    if r.has("smtp") {
                        r.error("smtp", "applies only to provider smtp");
                    }
                    if r.has("failover") {
                        r.error("failover", "applies only to provider smtp");
                    }
                    Some(None)
                }
                // The provider is bad: still name every bad field of `smtp`.
                None => {
                    r.optional_value("smtp", smtp_object);
                    None
                }
            };
            let (provider, sender, smtp) = (provider?, sender?, smtp?);
            let failover_ses = failover?.unwrap_or(false);
            let (provider, password) = match (provider, smtp) {
                ("smtp", Some((server, username, password))) => (
                    EmailProvider::Smtp {
                        smtp: SmtpSettings {
                            server,
                            username,
                            password_set: false,
                            secrets_at: None,
                            failover_ses,
                        },
                    },
                    password.map(SecretChange::Set).unwrap_or_default(),
                ),
                _ => (EmailProvider::Ses, SecretChange::Clear),
            };
            Some(EmailSettingsUpdate {
                settings: EmailSettings {
                    provider,
                    sender_email: sender,
                },
                password,
            })
        });
        match parsed {
            Some(u) if errors.is_empty() => Ok(u),
            _ => Err(errors),
        }
    }
}

/// `PUT /v1/settings/communication`: fields left out keep their current value, so a
/// partial update cannot silently switch Distress off.
pub fn parse_communication(
    body: &Value,
    current: CommunicationSettings,
) -> Result<CommunicationSettings, FieldErrors> {
    let mut errors = FieldErrors::new();
    reject_unknown(
        body,
        "",
        &mut errors,
        &[
            "dispatch",
            "incident_contacts",
            "messages",
            "distress",
            "dispatch_virtual_users",
            "manual_sms",
            "app_fallback_seconds",
            "dispatch_escalation",
        ],
    );
    // `null` turns escalation off; left out, it keeps its value.
    let escalation = match body.get("dispatch_escalation") {
        None => Some(current.dispatch_escalation),
        Some(Value::Null) => Some(None),
        Some(v) => parse_escalation(v, &mut errors).map(Some),
    };
    let parsed = object(body, "", &mut errors, |r| {
        let dispatch = r.optional_with("dispatch", Method::parse);
        let incident_contacts = r.optional_with("incident_contacts", Method::parse);
        let messages = r.optional_with("messages", Method::parse);
        let distress = r.optional_bool("distress");
        let virtual_users = r.optional_bool("dispatch_virtual_users");
        let manual_sms = r.optional_bool("manual_sms");
        let window = match r.optional_int("app_fallback_seconds")? {
            None => None,
            Some(n) => match u32::try_from(n) {
                Ok(n) if n <= MAX_APP_FALLBACK_SECONDS => Some(n),
                _ => {
                    r.error(
                        "app_fallback_seconds",
                        format!("must be a whole number from 0 to {MAX_APP_FALLBACK_SECONDS}"),
                    );
                    return None;
                }
            },
        };
        Some(CommunicationSettings {
            dispatch: dispatch?.unwrap_or(current.dispatch),
            incident_contacts: incident_contacts?.unwrap_or(current.incident_contacts),
            messages: messages?.unwrap_or(current.messages),
            distress: distress?.unwrap_or(current.distress),
            dispatch_virtual_users: virtual_users?.unwrap_or(current.dispatch_virtual_users),
            manual_sms: manual_sms?.unwrap_or(current.manual_sms),
            app_fallback_seconds: window.unwrap_or(current.app_fallback_seconds),
            dispatch_escalation: escalation?,
        })
    });
    match parsed {
        Some(c) if errors.is_empty() => Ok(c),
        _ => Err(errors),
    }
}

/// `dispatch_escalation`: `{"after_seconds": 1..3600, "cycles": 1..5}`.
fn parse_escalation(v: &Value, errors: &mut FieldErrors) -> Option<Escalation> {
    const PATH: &str = "dispatch_escalation";
    reject_unknown(v, PATH, errors, &["after_seconds", "cycles"]);
    object(v, PATH, errors, |r| {
        let mut whole = |key: &str, max: u32| match r.required_int(key) {
            Some(n) if (1..=i64::from(max)).contains(&n) => Some(n as u32),
            Some(_) => {
                r.error(key, format!("must be a whole number from 1 to {max}"));
                None
            }
            None => None,
        };
        let after_seconds = whole("after_seconds", Escalation::MAX_AFTER_SECONDS);
        let cycles = whole("cycles", Escalation::MAX_CYCLES);
        Some(Escalation {
            after_seconds: after_seconds?,
            cycles: cycles?,
        })
    })
}

/// The body of `POST /v1/messages/sms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualSmsInput {
    pub user_id: UserId,
    pub text: String,
    pub control_center_id: Option<ControlCenterId>,
}

impl ManualSmsInput {
    pub fn parse(body: &Value) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        reject_unknown(
            body,
            "",
            &mut errors,
            &["user_id", "text", "control_center_id"],
        );
        let parsed = object(body, "", &mut errors, |r| {
            let user_id = r.required_with("user_id", UserId::parse_existing);
            let text = r.required_with("text", |s| text(s, MAX_SMS_TEXT, false));
            let cc = r.optional_with("control_center_id", ControlCenterId::parse);
            Some(ManualSmsInput {
                user_id: user_id?,
                text: text?,
                control_center_id: cc?,
            })
        });
        match parsed {
            Some(m) if errors.is_empty() => Ok(m),
            _ => Err(errors),
        }
    }
}

/// `POST /v1/notifications/{id}/receipt`: the body is optional; it may name the device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiptInput {
    pub device_id: Option<crate::DeviceId>,
}

impl ReceiptInput {
    /// An empty body (`null`) is a receipt without a device.
    pub fn parse(body: &Value) -> Result<Self, FieldErrors> {
        if body.is_null() {
            return Ok(Self::default());
        }
        let mut errors = FieldErrors::new();
        reject_unknown(body, "", &mut errors, &["device_id"]);
        let parsed = object(body, "", &mut errors, |r| {
            let device_id = r.optional_with("device_id", crate::DeviceId::parse);
            Some(ReceiptInput {
                device_id: device_id?,
            })
        });
        match parsed {
            Some(m) if errors.is_empty() => Ok(m),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use serde_json::json;

    const AWS: EndpointPolicy = EndpointPolicy {
        allow_private: false,
    };

    #[test]
    fn the_contracts_sms_example_parses_with_its_secrets_apart() {
        let body = json!({
            "provider": "http", "url": "https://sms.example.com/send", "format": "json",
            "username": "acct-17", "password": "s3cret-pw", "sender_number": "+15551234567",
            "http_header": "X-Api-Key: abc123"
        });
        let u = SmsSettingsUpdate::parse(&body, ControlCenterId::main(), AWS).unwrap();
        let stored = serde_json::to_string(&u.settings).unwrap();
        assert!(
            !stored.contains("s3cret-pw") && !stored.contains("abc123"),
            "{stored}"
        );
        assert!(matches!(&u.password, SecretChange::Set(p) if p.expose_secret() == "s3cret-pw"));
        assert!(matches!(&u.header_value, SecretChange::Set(v) if v.expose_secret() == "abc123"));
        assert_eq!(u.settings.view()["http_header"], "X-Api-Key: ****");
    }

    #[test]
    fn sms_settings_without_password_keep_it_and_a_masked_header_keeps_its_value() {
        let body = json!({"provider": "http", "url": "https://sms.example.com/send",
            "sender_number": "ACME", "http_header": "X-Api-Key: ****"});
        let u = SmsSettingsUpdate::parse(&body, ControlCenterId::main(), AWS).unwrap();
        assert!(matches!(u.password, SecretChange::Keep));
        assert!(matches!(u.header_value, SecretChange::Keep));
        let sns =
            SmsSettingsUpdate::parse(&json!({"provider": "sns"}), ControlCenterId::main(), AWS)
                .unwrap();
        assert!(matches!(sns.header_value, SecretChange::Clear));
    }

    #[test]
    fn sms_validation_names_every_bad_field() {
        let body = json!({"provider": "http", "url": "http://10.0.0.1/x", "format": "xml",
            "sender_number": "TOO LONG SENDER", "http_header": "X-Evil: a\r\nb: c",
            "password": 5});
        let err = SmsSettingsUpdate::parse(&body, ControlCenterId::main(), AWS).unwrap_err();
        for f in ["url", "format", "sender_number", "http_header", "password"] {
            assert!(err.contains(f), "{f} missing: {err:?}");
        }
        let err = SmsSettingsUpdate::parse(
            &json!({"provider": "carrier-pigeon"}),
            ControlCenterId::main(),
            AWS,
        )
        .unwrap_err();
        assert!(err.contains("provider"));
    }

    #[test]
    fn the_contracts_email_example_parses() {
        let body = json!({"provider": "smtp", "sender_email": "alerts@acme.example",
            "smtp": {"server_url": "smtp.acme.example", "port": 587, "username": "alerts",
                     "password": "s3cret-pw", "use_tls": true}});
        let u = EmailSettingsUpdate::parse(&body, AWS).unwrap();
        assert!(
            !serde_json::to_string(&u.settings)
                .unwrap()
                .contains("s3cret-pw")
        );
        assert_eq!(u.settings.view()["smtp"]["port"], 587);
        assert_eq!(u.settings.view()["smtp"]["password_set"], false);
        let err = EmailSettingsUpdate::parse(
            &json!({"provider": "smtp", "sender_email": "nope",
                    "smtp": {"server_url": "ftp://x", "port": 0, "use_tls": false}}),
            AWS,
        )
        .unwrap_err();
        for f in [
            "sender_email",
            "smtp.server_url",
            "smtp.port",
            "smtp.use_tls",
        ] {
            assert!(err.contains(f), "{f} missing: {err:?}");
        }
        assert!(
            EmailSettingsUpdate::parse(&json!({"provider": "smtp"}), AWS)
                .unwrap_err()
                .contains("smtp")
        );
    }

    #[test]
    fn communication_updates_keep_fields_left_out() {
        let current = CommunicationSettings {
            distress: true,
            ..Default::default()
        };
        let c = parse_communication(&json!({"messages": "app_only"}), current).unwrap();
        assert!(c.distress);
        assert_eq!(c.messages, Method::AppOnly);
        let err = parse_communication(&json!({"dispatch": "fax", "distress": "yes"}), current)
            .unwrap_err();
        assert!(err.contains("dispatch") && err.contains("distress"));
    }

    #[test]
    fn dispatch_escalation_is_off_by_default_kept_when_left_out_and_null_turns_it_off() {
        let current = CommunicationSettings::default();
        assert_eq!(current.dispatch_escalation, None);
        let on = parse_communication(
            &json!({"dispatch_escalation": {"after_seconds": 120, "cycles": 3}}),
            current,
        )
        .unwrap();
        let want = Escalation {
            after_seconds: 120,
            cycles: 3,
        };
        assert_eq!(on.dispatch_escalation, Some(want));
        let kept = parse_communication(&json!({"distress": true}), on).unwrap();
        assert_eq!(kept.dispatch_escalation, Some(want));
        let off = parse_communication(&json!({"dispatch_escalation": null}), on).unwrap();
        assert_eq!(off.dispatch_escalation, None);
        for (bad, field) in [
            (
                json!({"after_seconds": 0, "cycles": 1}),
                "dispatch_escalation.after_seconds",
            ),
            (
                json!({"after_seconds": 3601, "cycles": 1}),
                "dispatch_escalation.after_seconds",
            ),
            (
                json!({"after_seconds": 60, "cycles": 6}),
                "dispatch_escalation.cycles",
            ),
            (json!({"after_seconds": 60}), "dispatch_escalation.cycles"),
            (
                json!({"after_seconds": 60, "cycles": 1, "every": 2}),
                "dispatch_escalation.every",
            ),
            (json!(true), "dispatch_escalation"),
        ] {
            let err = parse_communication(&json!({"dispatch_escalation": bad}), on).unwrap_err();
            assert!(err.contains(field), "{bad}: {err:?}");
        }
    }

    #[test]
    fn the_app_fallback_window_is_0_to_900_seconds_and_kept_when_left_out() {
        let current = CommunicationSettings::default();
        assert_eq!(current.app_fallback_seconds, 60);
        let c = parse_communication(&json!({"app_fallback_seconds": 5}), current).unwrap();
        assert_eq!(c.app_fallback_seconds, 5);
        let kept = parse_communication(&json!({"distress": true}), c).unwrap();
        assert_eq!(kept.app_fallback_seconds, 5);
        for ok in [0, 900] {
            let c = parse_communication(&json!({"app_fallback_seconds": ok}), current).unwrap();
            assert_eq!(c.app_fallback_seconds, ok);
        }
        for bad in [json!(-1), json!(901), json!(1.5), json!("60"), json!(true)] {
            let err =
                parse_communication(&json!({"app_fallback_seconds": bad}), current).unwrap_err();
            assert!(err.contains("app_fallback_seconds"), "{bad}: {err:?}");
        }
    }

    #[test]
    fn the_contracts_user_example_parses_and_errors_are_positional() {
        let body = json!({
            "name": "Ana Silva", "license": "basic_responder", "virtual": false,
            "control_center_id": "north",
            "contacts": [
                {"kind": "mobile", "value": "+14155550100", "primary": true},
                {"kind": "email", "value": "ana@example.org", "primary": true},
                {"kind": "email", "value": "ana.home@example.org", "primary": false}
            ],
            "emergency_contacts": [{"name": "Rui Silva", "mobile": "+351912345678", "email": "rui@example.org"}]
        });
        let u = UserInput::parse(&body).unwrap();
        assert_eq!(
            u.contacts.primary_email().unwrap().as_str(),
            "ana@example.org"
        );
        assert_eq!(u.emergency_contacts.len(), 1);

        let bad = json!({"license": "chief", "contacts": [
            {"kind": "mobile", "value": "12", "primary": true},
            {"kind": "pager", "value": "x"}],
            "emergency_contacts": [{"name": "Rui"}]});
        let err = UserInput::parse(&bad).unwrap_err();
        for f in [
            "name",
            "license",
            "contacts[0].value",
            "contacts[1].kind",
            "emergency_contacts[0].mobile",
        ] {
            assert!(err.contains(f), "{f} missing: {err:?}");
        }
        let two_primaries = json!({"name": "A", "license": "administrator", "contacts": [
            {"kind": "email", "value": "a@example.org", "primary": true},
            {"kind": "email", "value": "b@example.org", "primary": true}]});
        assert!(
            UserInput::parse(&two_primaries)
                .unwrap_err()
                .contains("contacts[1].primary")
        );
        assert!(UserInput::parse(&json!([1])).unwrap_err().contains("body"));
    }

    #[test]
    fn device_and_manual_sms_bodies_parse() {
        assert!(DeviceInput::parse(&json!({"platform": "fcm", "token": "abc"})).is_ok());
        let err = DeviceInput::parse(&json!({"platform": "blackberry", "token": ""})).unwrap_err();
        assert!(err.contains("platform") && err.contains("token"));
        let m = ManualSmsInput::parse(&json!({"user_id": "u-17", "text": "Call base"})).unwrap();
        assert!(m.control_center_id.is_none());
        let err = ManualSmsInput::parse(&json!({"text": ""})).unwrap_err();
        assert!(err.contains("user_id") && err.contains("text"));
    }

    #[test]
    fn a_gateway_header_may_not_replace_what_flare_sets() {
        for name in [
            "Host",
            "content-length",
            "Transfer-Encoding",
            "CONNECTION",
            "Content-Type",
            "Authorization",
        ] {
            for value in ["x", "****"] {
                let body = json!({"provider": "http", "url": "https://sms.example.com/send",
                    "sender_number": "ACME", "http_header": format!("{name}: {value}")});
                let err =
                    SmsSettingsUpdate::parse(&body, ControlCenterId::main(), AWS).unwrap_err();
                assert!(err.contains("http_header"), "{name}: {value} accepted");
            }
        }
        let ok = json!({"provider": "http", "url": "https://sms.example.com/send",
            "sender_number": "ACME", "http_header": "X-Content-Type-Key: x"});
        assert!(SmsSettingsUpdate::parse(&ok, ControlCenterId::main(), AWS).is_ok());
    }

    #[test]
    fn a_bad_provider_does_not_hide_the_other_bad_fields() {
        let body = json!({"provider": "carrier-pigeon", "sender_number": "TOO LONG SENDER",
            "url": "ftp://x", "http_header": "no colon"});
        let err = SmsSettingsUpdate::parse(&body, ControlCenterId::main(), AWS).unwrap_err();
        for f in ["provider", "sender_number", "url", "http_header"] {
            assert!(err.contains(f), "{f} missing: {err:?}");
        }
        let body = json!({"provider": "pigeon", "sender_email": "nope",
            "smtp": {"server_url": "smtp.acme.example", "port": 0}});
        let err = EmailSettingsUpdate::parse(&body, AWS).unwrap_err();
        for f in ["provider", "sender_email", "smtp.port"] {
            assert!(err.contains(f), "{f} missing: {err:?}");
        }
    }
}
