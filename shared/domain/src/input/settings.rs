//! The settings bodies: SMS, email (with their secrets) and communication.

use super::*;

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

/// Every field of an SMS settings body.
const SMS_FIELDS: &[&str] = &[
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
    "smart_encoding",
    "max_segments",
];

/// The fields only provider `http` takes.
const GATEWAY_ONLY_FIELDS: &[&str] = &[
    "url",
    "format",
    "username",
    "http_header",
    "password",
    "failover",
    "failover_sender_number",
    "max_per_second",
];

impl SmsSettingsUpdate {
    pub fn parse(
        body: &Value,
        control_center_id: ControlCenterId,
        policy: EndpointPolicy,
    ) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        reject_unknown(body, "", &mut errors, SMS_FIELDS);
        let parsed = object(body, "", &mut errors, |r| {
            let fields = SmsFields::read(r);
            let gateway = read_gateway_for(r, fields.provider, &fields.sender, policy);
            fields.update(r, gateway, control_center_id)
        });
        match parsed {
            Some(u) if errors.is_empty() => Ok(u),
            _ => Err(errors),
        }
    }
}

/// The fields of an SMS body read whatever its provider, so each bad one is named;
/// each `None` when it was bad (its error recorded).
struct SmsFields {
    provider: Option<&'static str>,
    sender: Option<Option<SenderId>>,
    password: Option<Option<SecretString>>,
    failover: Option<Option<bool>>,
    failover_sender: Option<Option<SenderId>>,
    max_per_second: Option<Option<u32>>,
    smart_encoding: Option<Option<bool>>,
    max_segments: Option<u8>,
}

impl SmsFields {
    fn read(r: &mut Reader) -> Self {
        Self {
            provider: r.required_with("provider", |s| match s {
                "sns" => Ok("sns"),
                "http" => Ok("http"),
                _ => Err("must be sns or http"),
            }),
            sender: r.optional_with("sender_number", SenderId::parse),
            password: r.optional_with("password", gateway_password),
            failover: r.optional_with("failover", |s| match s {
                "sns" => Ok(true),
                _ => Err(ValidationError::new("must be sns (or left out)")),
            }),
            failover_sender: r.optional_with("failover_sender_number", SenderId::parse),
            max_per_second: r.optional_int_in("max_per_second", 1, MAX_PER_SECOND),
            smart_encoding: r.optional_bool("smart_encoding"),
            max_segments: r
                .optional_int_in("max_segments", 1, crate::segments::MAX_SEGMENTS_LIMIT)
                .map(|n| n.unwrap_or(crate::segments::DEFAULT_MAX_SEGMENTS)),
        }
    }

    /// The update, when every field (and the gateway's, for provider `http`) read well.
    fn update(
        self,
        r: &mut Reader,
        gateway: Option<GatewayFields>,
        control_center_id: ControlCenterId,
    ) -> Option<SmsSettingsUpdate> {
        let provider = self.provider?;
        let sender = self.sender?;
        let password = self.password?;
        let failover_sns = self.failover?.unwrap_or(false);
        let failover_sender_number = self.failover_sender?;
        if failover_sender_number.is_some() && !failover_sns && provider == "http" {
            r.error("failover_sender_number", "applies only with failover sns");
        }
        let max_per_second = self.max_per_second?;
        let smart_encoding = self.smart_encoding?.unwrap_or(true);
        let max_segments = self.max_segments?;
        let (provider, header_value) = match (provider, gateway) {
            ("http", Some(gw)) => {
                gw.provider(failover_sns, max_per_second, failover_sender_number)?
            }
            _ => (SmsProvider::Sns, SecretChange::Clear),
        };
        if !r.errors.is_empty() {
            return None;
        }
        let password = sms_password_change(&provider, password);
        Some(SmsSettingsUpdate {
            settings: SmsSettings {
                control_center_id,
                provider,
                sender_number: sender,
                password_set: false,
                secrets_at: None,
                smart_encoding,
                max_segments,
            },
            password,
            header_value,
        })
    }
}

/// A gateway's own fields, each `None` when it was bad.
struct GatewayFields {
    url: Option<GatewayUrl>,
    format: Option<GatewayFormat>,
    username: Option<Option<String>>,
    /// The header's name, and what the body does to its stored value.
    header: Option<Option<(crate::header::HeaderName, SecretChange)>>,
}

impl GatewayFields {
    /// A gateway's fields after its `url`: the format (JSON by default), user and header.
    fn read(r: &mut Reader, url: Option<GatewayUrl>) -> Self {
        Self {
            url,
            format: r
                .optional_with("format", GatewayFormat::parse)
                .map(|f| f.unwrap_or(GatewayFormat::Json)),
            username: r.optional_with("username", |s| visible_line(s, MAX_NAME)),
            header: read_http_header(r),
        }
    }

    /// The gateway, with what the body does to its header's stored value (cleared when
    /// it has no header); `None` when a field was bad.
    fn provider(
        self,
        failover_sns: bool,
        max_per_second: Option<u32>,
        failover_sender_number: Option<SenderId>,
    ) -> Option<(SmsProvider, SecretChange)> {
        let header = self.header?;
        let header_value = match &header {
            Some((_, change)) => change.clone(),
            None => SecretChange::Clear,
        };
        let gateway = HttpGateway {
            url: self.url?,
            format: self.format?,
            username: self.username?,
            header_name: header.map(|(n, _)| n),
            failover_sns,
            max_per_second,
            failover_sender_number,
        };
        Some((SmsProvider::Http(gateway), header_value))
    }
}

/// The gateway's fields as the provider calls for: read for `http` (which needs a
/// sender number), refused for any other, and for a bad provider still read as the
/// gateway's would be, so every other bad field is named.
fn read_gateway_for(
    r: &mut Reader,
    provider: Option<&str>,
    sender: &Option<Option<SenderId>>,
    policy: EndpointPolicy,
) -> Option<GatewayFields> {
    match provider {
        Some("http") => {
            let url = r.required_with("url", |s| GatewayUrl::parse(s, policy));
            let gateway = GatewayFields::read(r, url);
            if matches!(sender, Some(None)) {
                r.error("sender_number", "is required for an http gateway");
            }
            Some(gateway)
        }
        Some(_) => {
            for key in GATEWAY_ONLY_FIELDS {
                if r.has(key) {
                    r.error(key, "applies only to provider http");
                }
            }
            None
        }
        None => {
            r.optional_with("url", |s| GatewayUrl::parse(s, policy));
            GatewayFields::read(r, None);
            None
        }
    }
}

/// `http_header`: `Name: value` sets the header and its value; `Name: ****` (as it is
/// read back) keeps the stored value.
fn read_http_header(r: &mut Reader) -> Option<Option<(crate::header::HeaderName, SecretChange)>> {
    match r.optional_str("http_header") {
        Some(Some(line)) => match masked_header(line) {
            Some(name) => Some(Some((name, SecretChange::Keep))),
            None => r
                .optional_with("http_header", HttpHeader::parse)
                .map(|h| h.map(|h| (h.name, SecretChange::Set(h.value)))),
        },
        Some(None) => Some(None),
        None => None,
    }
}

/// What an SMS body does to the stored gateway password: set when it carries one, kept
/// when it does not; SNS has no password, so switching to it deletes a gateway's.
fn sms_password_change(provider: &SmsProvider, password: Option<SecretString>) -> SecretChange {
    match (provider, password) {
        (SmsProvider::Http(_), Some(p)) => SecretChange::Set(p),
        (SmsProvider::Http(_), None) => SecretChange::Keep,
        (SmsProvider::Sns, _) => SecretChange::Clear,
    }
}

/// `X-Api-Key: ****` sent back as it was read: keep the stored value.
fn masked_header(line: &str) -> Option<crate::header::HeaderName> {
    let (name, value) = line.split_once(':')?;
    (value.trim() == MASK)
        .then(|| crate::header::HeaderName::parse(name.trim()).ok())
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

/// Every field of an email settings body.
const EMAIL_FIELDS: &[&str] = &["provider", "sender_email", "smtp", "failover"];

/// Every field of its `smtp` object.
const SMTP_FIELDS: &[&str] = &["server_url", "port", "use_tls", "username", "password"];

/// An `smtp` object's server, user and password.
type SmtpFields = (SmtpServer, Option<String>, Option<SecretString>);

impl EmailSettingsUpdate {
    pub fn parse(body: &Value, policy: EndpointPolicy) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        reject_unknown(body, "", &mut errors, EMAIL_FIELDS);
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
            let smtp = read_smtp_for(r, provider, policy);
            let (provider, sender, smtp) = (provider?, sender?, smtp?);
            let failover_ses = failover?.unwrap_or(false);
            let (provider, password) = email_provider(provider, smtp, failover_ses);
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

/// `smtp` as the provider calls for: required for `smtp`, refused (with `failover`)
/// for any other, and for a bad provider still read, so every bad field of it is named.
fn read_smtp_for(
    r: &mut Reader,
    provider: Option<&str>,
    policy: EndpointPolicy,
) -> Option<Option<SmtpFields>> {
    let smtp_object = |v: &Value, path: &str, errors: &mut FieldErrors| {
        parse_smtp_object(v, path, errors, policy)
    };
    match provider {
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
        None => {
            r.optional_value("smtp", smtp_object);
            None
        }
    }
}

/// The `smtp` object: `server_url`, `port` and `use_tls` (default true) make the
/// server; then the user and password.
fn parse_smtp_object(
    v: &Value,
    path: &str,
    errors: &mut FieldErrors,
    policy: EndpointPolicy,
) -> Option<SmtpFields> {
    reject_unknown(v, path, errors, SMTP_FIELDS);
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
}

/// The email provider, with what the body does to the stored SMTP password: set when
/// it carries one, kept when it does not; SES has none, so switching to it deletes it.
fn email_provider(
    provider: &str,
    smtp: Option<SmtpFields>,
    failover_ses: bool,
) -> (EmailProvider, SecretChange) {
    match (provider, smtp) {
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
    }
}

/// `PUT /v1/settings/communication`: fields left out keep their current value, so a
/// partial update cannot silently switch Distress off.
pub fn parse_communication(
    body: &Value,
    current: &CommunicationSettings,
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
            "sms_help_text",
        ],
    );
    // `null` turns escalation off; left out, it keeps its value.
    let escalation = match body.get("dispatch_escalation") {
        None => Some(current.dispatch_escalation),
        Some(Value::Null) => Some(None),
        Some(v) => parse_escalation(v, &mut errors).map(Some),
    };
    // `null` goes back to the default text; left out, it keeps its value.
    let help = match body.get("sms_help_text") {
        None => Some(current.sms_help_text.clone()),
        Some(Value::Null) => Some(None),
        Some(Value::String(s)) => errors
            .check(
                "sms_help_text",
                visible_line(s, crate::settings::MAX_SMS_HELP_TEXT),
            )
            .map(Some),
        Some(_) => {
            errors.add("sms_help_text", "must be a string or null");
            None
        }
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
            sms_help_text: help?,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_password_is_set_or_kept_and_sns_clears_it() {
        let gateway = SmsProvider::Http(HttpGateway {
            url: GatewayUrl::parse("https://sms.example.com/send", EndpointPolicy::default())
                .unwrap(),
            format: GatewayFormat::Json,
            username: None,
            header_name: None,
            failover_sns: false,
            max_per_second: None,
            failover_sender_number: None,
        });
        let secret = || Some(SecretString::from("s3cret-password".to_string()));
        assert!(matches!(
            sms_password_change(&gateway, secret()),
            SecretChange::Set(_)
        ));
        assert!(matches!(
            sms_password_change(&gateway, None),
            SecretChange::Keep
        ));
        assert!(matches!(
            sms_password_change(&SmsProvider::Sns, secret()),
            SecretChange::Clear
        ));
    }

    #[test]
    fn an_smtp_password_is_set_or_kept_and_ses_clears_it() {
        let server =
            || SmtpServer::parse("smtp.example.com", 587, true, EndpointPolicy::default()).unwrap();
        let secret = Some(SecretString::from("pw".to_string()));
        let (p, change) = email_provider("smtp", Some((server(), None, secret)), true);
        assert!(matches!(p, EmailProvider::Smtp { smtp } if smtp.failover_ses));
        assert!(matches!(change, SecretChange::Set(_)));
        let (_, change) = email_provider("smtp", Some((server(), None, None)), false);
        assert!(matches!(change, SecretChange::Keep));
        let (p, change) = email_provider("ses", None, false);
        assert!(matches!(p, EmailProvider::Ses) && matches!(change, SecretChange::Clear));
    }
}
