//! An organization's settings: outgoing SMS per control center, outgoing email, and
//! communication settings. Secrets (passwords, header values) are never fields here:
//! these structs are what the settings table stores, so they only record *whether* a
//! secret is set.

use super::email::EmailAddress;
use super::endpoint::{GatewayUrl, SmtpServer};
use super::header::{HeaderName, HttpHeader};
use super::ids::ControlCenterId;
use super::phone::SenderId;
use super::validation::ValidationError;
use serde::{Deserialize, Serialize};

/// How an HTTP gateway wants the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayFormat {
    /// JSON body `{"to","from","text"}`.
    Json,
    /// The same three fields, form-encoded.
    Form,
    /// Twilio-style form fields `To`, `From`, `Body`.
    Twilio,
}

impl GatewayFormat {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        match s {
            "json" => Ok(Self::Json),
            "form" => Ok(Self::Form),
            "twilio" => Ok(Self::Twilio),
            _ => Err(ValidationError::new("must be json, form or twilio")),
        }
    }
}

/// A custom HTTP SMS gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpGateway {
    pub url: GatewayUrl,
    pub format: GatewayFormat,
    /// HTTP Basic auth user; its password is in the secret store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The custom header's name; its value is in the secret store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_name: Option<HeaderName>,
    /// `failover: "sns"`: when the gateway fails, SMS go through Amazon SNS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failover_sns: bool,
    /// At most this many requests in any second (1 to 1,000), urgent ones first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_second: Option<u32>,
    /// Who SMS failed over to SNS are from (an origination number or sender id the
    /// AWS account owns); `None`: see [`SmsSettings::failover_sender`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_sender_number: Option<SenderId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum SmsProvider {
    /// Amazon SNS.
    Sns,
    /// A custom HTTP gateway.
    Http(HttpGateway),
}

/// Outgoing SMS of one control center.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsSettings {
    pub control_center_id: ControlCenterId,
    #[serde(flatten)]
    pub provider: SmsProvider,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_number: Option<SenderId>,
    /// Whether a password is in the secret store (GET answers this, never the password).
    #[serde(default)]
    pub password_set: bool,
    /// The revision of the save that wrote these settings, fresh on every save: their
    /// secrets are stored under it (`SecretKey`), so settings and secrets change together
    /// and a changed password takes effect at the next send (no cached secret or pooled
    /// connection of the old one is used again). A save or delete applies only over the
    /// revision it read. `None`: saved before revisions; the secrets are under their plain
    /// names (the field was `secrets_rev` then, and is read as absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_at: Option<String>,
    /// v1.2: look-alike characters replaced so they do not make a text UCS-2
    /// ([`crate::segments::smart`]).
    #[serde(default = "yes")]
    pub smart_encoding: bool,
    /// v1.2: the most segments an SMS takes; a longer text is cut
    /// ([`crate::segments::fit`]).
    #[serde(default = "default_max_segments")]
    pub max_segments: u8,
}

fn yes() -> bool {
    true
}

fn default_max_segments() -> u8 {
    crate::segments::DEFAULT_MAX_SEGMENTS
}

impl SmsSettings {
    /// How its SMS are fitted.
    pub fn policy(&self) -> crate::segments::SmsPolicy {
        crate::segments::SmsPolicy {
            smart_encoding: self.smart_encoding,
            max_segments: self.max_segments,
        }
    }

    pub fn provider_name(&self) -> super::Provider {
        match self.provider {
            SmsProvider::Sns => super::Provider::Sns,
            SmsProvider::Http(_) => super::Provider::Http,
        }
    }

    /// The stored view the API answers: no password, the header value masked.
    pub fn view(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "control_center_id": self.control_center_id,
            "provider": match self.provider { SmsProvider::Sns => "sns", SmsProvider::Http(_) => "http" },
            "password_set": self.password_set,
            "smart_encoding": self.smart_encoding,
            "max_segments": self.max_segments,
        });
        if let Some(s) = &self.sender_number {
            v["sender_number"] = serde_json::json!(s);
        }
        if let SmsProvider::Http(g) = &self.provider {
            v["url"] = serde_json::json!(g.url);
            v["format"] = serde_json::json!(g.format);
            if let Some(u) = &g.username {
                v["username"] = serde_json::json!(u);
            }
            if let Some(h) = &g.header_name {
                v["http_header"] = serde_json::json!(HttpHeader::masked(h));
            }
            if g.failover_sns {
                v["failover"] = serde_json::json!("sns");
            }
            if let Some(n) = g.max_per_second {
                v["max_per_second"] = serde_json::json!(n);
            }
            if let Some(f) = &g.failover_sender_number {
                v["failover_sender_number"] = serde_json::json!(f);
            }
        }
        v
    }

    /// Who an SMS that failed over to SNS is from: `failover_sender_number` when set;
    /// else an alphanumeric `sender_number` (SNS sends it as the sender id); never the
    /// gateway's own number, which SNS refuses as an origination number the account
    /// does not own: then `None`, the account's default.
    pub fn failover_sender(&self) -> Option<SenderId> {
        match &self.provider {
            SmsProvider::Http(HttpGateway {
                failover_sender_number: Some(f),
                ..
            }) => Some(f.clone()),
            _ => match &self.sender_number {
                Some(id @ SenderId::Alphanumeric(_)) => Some(id.clone()),
                _ => None,
            },
        }
    }

    /// The provider SMS go through when this one fails, if any.
    pub fn failover(&self) -> Option<super::Provider> {
        match &self.provider {
            SmsProvider::Http(g) if g.failover_sns => Some(super::Provider::Sns),
            _ => None,
        }
    }
}

/// Whether `new` sends a gateway's stored secrets anywhere `old` did not: another origin
/// (scheme, host or port) or another Basic-auth user. A stored password or header value
/// goes only to the endpoint it was saved for, so such a change must send them again.
pub fn gateway_secrets_moved(old: &SmsSettings, new: &SmsSettings) -> bool {
    match (&old.provider, &new.provider) {
        (SmsProvider::Http(a), SmsProvider::Http(b)) => {
            a.url.url().origin() != b.url.url().origin() || a.username != b.username
        }
        _ => false,
    }
}

/// The same for an SMTP server's stored password: another host, port, TLS setting or user.
pub fn smtp_secret_moved(old: &EmailSettings, new: &EmailSettings) -> bool {
    match (&old.provider, &new.provider) {
        (EmailProvider::Smtp { smtp: a }, EmailProvider::Smtp { smtp: b }) => {
            (&a.server.host, a.server.port, a.server.use_tls, &a.username)
                != (&b.server.host, b.server.port, b.server.use_tls, &b.username)
        }
        _ => false,
    }
}

/// The SMS settings that apply to a control center: its own, else `main`'s.
pub fn effective_sms<'a>(
    own: Option<&'a SmsSettings>,
    main: Option<&'a SmsSettings>,
) -> Option<&'a SmsSettings> {
    own.or(main)
}

/// Who carries an organization's email: its own provider, else the default account
/// (through SES in AWS).
pub fn effective_email_provider(settings: Option<&EmailSettings>) -> super::Provider {
    settings.map_or(super::Provider::Ses, EmailSettings::provider_name)
}

/// The address email goes from: the organization's sender, else the default account;
/// `None` when there is neither.
pub fn effective_sender<'a>(
    settings: Option<&'a EmailSettings>,
    default_sender: Option<&'a EmailAddress>,
) -> Option<&'a EmailAddress> {
    settings
        .and_then(|s| s.sender_email.as_ref())
        .or(default_sender)
}

/// A custom SMTP server; its password is in the secret store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpSettings {
    #[serde(flatten)]
    pub server: SmtpServer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default)]
    pub password_set: bool,
    /// As [`SmsSettings::secrets_at`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_at: Option<String>,
    /// `failover: "ses"`: when the server fails, email goes through Amazon SES.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failover_ses: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum EmailProvider {
    /// Amazon SES v2.
    Ses,
    Smtp {
        smtp: SmtpSettings,
    },
}

/// Outgoing email of an organization. Without a sender address, email goes from the
/// default account (`FLARE_DEFAULT_SENDER`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailSettings {
    #[serde(flatten)]
    pub provider: EmailProvider,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_email: Option<EmailAddress>,
}

impl EmailSettings {
    /// The SMTP server's [`SmsSettings::secrets_at`]; SES has no secrets.
    pub fn secrets_at(&self) -> Option<&str> {
        match &self.provider {
            EmailProvider::Smtp { smtp } => smtp.secrets_at.as_deref(),
            EmailProvider::Ses => None,
        }
    }

    pub fn provider_name(&self) -> super::Provider {
        match self.provider {
            EmailProvider::Ses => super::Provider::Ses,
            EmailProvider::Smtp { .. } => super::Provider::Smtp,
        }
    }

    pub fn view(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "provider": match self.provider { EmailProvider::Ses => "ses", EmailProvider::Smtp { .. } => "smtp" },
            "sender_email": self.sender_email,
        });
        if let EmailProvider::Smtp { smtp } = &self.provider {
            v["smtp"] = serde_json::json!({
                "server_url": smtp.server.server_url,
                "port": smtp.server.port,
                "username": smtp.username,
                "use_tls": smtp.server.use_tls,
                "password_set": smtp.password_set,
            });
            if smtp.failover_ses {
                v["failover"] = serde_json::json!("ses");
            }
        }
        v
    }

    /// The provider email goes through when this one fails, if any.
    pub fn failover(&self) -> Option<super::Provider> {
        match &self.provider {
            EmailProvider::Smtp { smtp } if smtp.failover_ses => Some(super::Provider::Ses),
            _ => None,
        }
    }
}

/// A communication method of the Communication Settings tab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Via the Mobile App Only.
    AppOnly,
    /// SMS/Email if Mobile App Fails.
    AppThenSmsEmail,
    /// Mobile App, SMS and Email.
    AppSmsEmail,
}

impl Method {
    pub const ALL: [Method; 3] = [
        Method::AppOnly,
        Method::AppThenSmsEmail,
        Method::AppSmsEmail,
    ];

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        match s {
            "app_only" => Ok(Self::AppOnly),
            "app_then_sms_email" => Ok(Self::AppThenSmsEmail),
            "app_sms_email" => Ok(Self::AppSmsEmail),
            _ => Err(ValidationError::new(
                "must be app_only, app_then_sms_email or app_sms_email",
            )),
        }
    }
}

/// The Communication Settings tab. Before the first save every method is
/// `app_then_sms_email` and every checkbox is off.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CommunicationSettings {
    pub dispatch: Method,
    pub incident_contacts: Method,
    pub messages: Method,
    /// Distress: SMS/email to an SOS creator's emergency contacts.
    pub distress: bool,
    /// Dispatching Virtual Users: SMS/email dispatch to virtual users.
    pub dispatch_virtual_users: bool,
    /// Manual SMS by a dispatcher.
    pub manual_sms: bool,
    /// Under `app_then_sms_email`: how long SMS and email wait, once push is sent, for
    /// the app's receipt before they go as fallback. 0: push accepted is enough (v1).
    /// Settings saved before the field existed get the default.
    #[serde(default = "default_app_fallback_seconds")]
    pub app_fallback_seconds: u32,
    /// Dispatch escalation: off (`None`, the default) or how often and how many times a
    /// dispatch recipient who has not acknowledged is notified again.
    #[serde(default)]
    pub dispatch_escalation: Option<Escalation>,
    /// v1.2: what an SMS `HELP` gets back; `None`: [`default_sms_help_text`].
    #[serde(default)]
    pub sms_help_text: Option<String>,
}

/// The longest `sms_help_text`: two GSM-7 segments.
pub const MAX_SMS_HELP_TEXT: usize = 306;

/// What HELP answers when the organization has not said: its name, what the messages
/// are, and how to stop them.
pub fn default_sms_help_text(org: &super::ids::OrgId) -> String {
    format!(
        "Flare alerts for {org}: emergency dispatch messages. Reply 1 responding, 2 unavailable. Reply STOP to opt out."
    )
}

impl CommunicationSettings {
    /// What HELP answers in `org`.
    pub fn help_text(&self, org: &super::ids::OrgId) -> String {
        self.sms_help_text
            .clone()
            .unwrap_or_else(|| default_sms_help_text(org))
    }
}

/// `dispatch_escalation`: a recipient who has not acknowledged `after_seconds` after the
/// previous cycle started is notified again on every channel, up to `cycles` more times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Escalation {
    pub after_seconds: u32,
    pub cycles: u32,
}

impl Escalation {
    pub const MAX_AFTER_SECONDS: u32 = 3600;
    pub const MAX_CYCLES: u32 = 5;
}

/// [`CommunicationSettings::app_fallback_seconds`] before an organization sets it.
pub const DEFAULT_APP_FALLBACK_SECONDS: u32 = 60;
/// The longest fallback window: one SQS message delay.
pub const MAX_APP_FALLBACK_SECONDS: u32 = 900;

/// The most requests a second an HTTP gateway's `max_per_second` may allow.
pub const MAX_PER_SECOND: u32 = 1000;

fn default_app_fallback_seconds() -> u32 {
    DEFAULT_APP_FALLBACK_SECONDS
}

impl CommunicationSettings {
    /// The fallback window of a category's notifications: `None` unless its method
    /// holds SMS and email behind push and the window is on.
    pub fn fallback_window(&self, method: Method) -> Option<u32> {
        (method == Method::AppThenSmsEmail && self.app_fallback_seconds > 0)
            .then_some(self.app_fallback_seconds)
    }
}

impl Default for CommunicationSettings {
    fn default() -> Self {
        Self {
            dispatch: Method::AppThenSmsEmail,
            incident_contacts: Method::AppThenSmsEmail,
            messages: Method::AppThenSmsEmail,
            distress: false,
            dispatch_virtual_users: false,
            manual_sms: false,
            app_fallback_seconds: DEFAULT_APP_FALLBACK_SECONDS,
            dispatch_escalation: None,
            sms_help_text: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EndpointPolicy;

    #[test]
    fn communication_defaults_are_app_then_sms_email_and_boxes_off() {
        let d = CommunicationSettings::default();
        assert_eq!(
            serde_json::to_value(d).unwrap(),
            serde_json::json!({
                "dispatch": "app_then_sms_email",
                "incident_contacts": "app_then_sms_email",
                "messages": "app_then_sms_email",
                "distress": false,
                "dispatch_virtual_users": false,
                "manual_sms": false,
                "app_fallback_seconds": 60,
                "dispatch_escalation": null,
                "sms_help_text": null
            })
        );
    }

    #[test]
    fn a_control_center_without_sms_settings_uses_mains() {
        let main = SmsSettings {
            control_center_id: ControlCenterId::main(),
            provider: SmsProvider::Sns,
            sender_number: None,
            password_set: false,
            secrets_at: None,
            smart_encoding: true,
            max_segments: 3,
        };
        let north = SmsSettings {
            control_center_id: ControlCenterId::parse("north").unwrap(),
            ..main.clone()
        };
        assert_eq!(effective_sms(None, Some(&main)), Some(&main));
        assert_eq!(effective_sms(Some(&north), Some(&main)), Some(&north));
        assert_eq!(effective_sms(None, None), None);
    }

    #[test]
    fn email_without_settings_or_sender_uses_the_default_account() {
        let default = EmailAddress::parse("flare@platform.example").unwrap();
        assert_eq!(effective_email_provider(None), crate::Provider::Ses);
        assert_eq!(effective_sender(None, Some(&default)), Some(&default));
        let smtp_no_sender = EmailSettings {
            provider: EmailProvider::Smtp {
                smtp: SmtpSettings {
                    server: SmtpServer::parse(
                        "smtp.acme.example",
                        587,
                        true,
                        EndpointPolicy::default(),
                    )
                    .unwrap(),
                    username: None,
                    password_set: false,
                    secrets_at: None,
                    failover_ses: false,
                },
            },
            sender_email: None,
        };
        assert_eq!(
            effective_email_provider(Some(&smtp_no_sender)),
            crate::Provider::Smtp
        );
        assert_eq!(
            effective_sender(Some(&smtp_no_sender), Some(&default)),
            Some(&default)
        );
        assert_eq!(effective_sender(Some(&smtp_no_sender), None), None);
        let own = EmailSettings {
            provider: EmailProvider::Ses,
            sender_email: Some(EmailAddress::parse("alerts@acme.example").unwrap()),
        };
        assert_eq!(
            effective_sender(Some(&own), Some(&default)).map(|a| a.as_str()),
            Some("alerts@acme.example")
        );
    }

    #[test]
    fn sms_view_masks_the_header_and_has_no_password() {
        let s = SmsSettings {
            control_center_id: ControlCenterId::main(),
            provider: SmsProvider::Http(HttpGateway {
                url: GatewayUrl::parse("https://sms.example.com/send", EndpointPolicy::default())
                    .unwrap(),
                format: GatewayFormat::Json,
                username: Some("acct-17".into()),
                header_name: Some(HeaderName::parse("X-Api-Key").unwrap()),
                failover_sns: false,
                max_per_second: None,
                failover_sender_number: None,
            }),
            sender_number: Some(SenderId::parse("+15551234567").unwrap()),
            password_set: true,
            secrets_at: None,
            smart_encoding: true,
            max_segments: 3,
        };
        let v = s.view();
        assert_eq!(v["http_header"], "X-Api-Key: ****");
        assert_eq!(v["password_set"], true);
        assert_eq!(v["provider"], "http");
        assert!(v.get("password").is_none());
        // The stored form round-trips.
        let stored = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<SmsSettings>(&stored).unwrap(), s);
    }
}
