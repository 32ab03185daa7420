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

mod json;
mod people;
mod reader;
mod settings;
#[cfg(test)]
mod tests;

pub use json::lone_surrogate_path;
pub use people::*;
pub use reader::*;
pub use settings::*;

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
            let text = r.required_with("text", sms_text);
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
