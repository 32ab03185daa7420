//! Provider receipts: what SES, SNS and custom SMS gateways report after they accepted a
//! message, read into one shape ([`ProviderReceipt`]) and matched to the delivery by
//! the provider's message id ([`ReceiptKey`]). Pure: parsing and signature checks only.

use super::delivery::Provider;
use super::ids::{ControlCenterId, OrgId};
use super::settings::GatewayFormat;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::Value;

/// Finds a delivery from a receipt: the provider, the provider's message id and, for an
/// organization's own gateway (whose ids are only unique to it), the organization and
/// control center whose settings sent it. So a gateway callback signed for one
/// organization can only ever name that organization's deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReceiptKey(String);

impl ReceiptKey {
    /// The key of a message `provider` accepted with id `message_id`; `None` for
    /// providers that send no receipts (SMTP).
    pub fn new(
        provider: Provider,
        org: &OrgId,
        cc: &ControlCenterId,
        message_id: &str,
    ) -> Option<Self> {
        match provider {
            Provider::Sns | Provider::Ses => Some(Self::global(provider, message_id)),
            Provider::Http => Some(Self(format!("http#{org}#{cc}#{}", bounded(message_id)))),
            Provider::Smtp => None,
        }
    }

    /// SNS and SES message ids are unique across AWS.
    pub fn global(provider: Provider, message_id: &str) -> Self {
        Self(format!("{}#{}", provider.as_str(), bounded(message_id)))
    }

    /// The provider that accepted the message (the key's first part).
    pub fn provider(&self) -> Option<Provider> {
        let name = self.0.split('#').next()?;
        [Provider::Sns, Provider::Ses, Provider::Http, Provider::Smtp]
            .into_iter()
            .find(|p| p.as_str() == name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A stored key, as read back.
    pub fn from_stored(s: impl Into<String>) -> Self {
        Self(s.into())
    }
}

/// Longest message id kept as it is in a key; a longer one (a gateway may answer
/// anything) is replaced by its SHA-256, the same on the send and the receipt side, so a
/// key always fits an index key (DynamoDB allows 2,048 bytes) and a write of a sent
/// delivery never fails on it.
const MAX_ID_IN_KEY: usize = 128;

fn bounded(id: &str) -> String {
    if id.len() <= MAX_ID_IN_KEY {
        return id.to_string();
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(id.as_bytes());
    format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

impl std::fmt::Display for ReceiptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a receipt says about a sent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptStatus {
    /// It reached the recipient (the phone, the mailbox).
    Delivered,
    /// It never will: `reason` (`bounced`, `rejected`, `carrier_failed`, or the
    /// provider's own word) and what the provider said.
    Undelivered {
        reason: String,
        detail: Option<String>,
    },
    /// The recipient marked the email as spam: the status stays, `complaint` is added.
    Complaint,
}

/// The reason a receipt saying the number opted out ends its delivery with.
pub const OPTED_OUT: &str = "opted_out";

/// Whether a provider's words say the number opted out (SNS's "Phone number is opted
/// out", a gateway's "unsubscribed recipient", ...).
fn says_opted_out(words: &str) -> bool {
    let w = words.to_ascii_lowercase();
    [
        "opted out",
        "opted-out",
        "opt-out",
        "opt out",
        "unsubscribed",
    ]
    .iter()
    .any(|p| w.contains(p))
}

/// Twilio's error code for a message to a number that replied STOP.
const TWILIO_UNSUBSCRIBED: &str = "21610";

/// `carrier_failed`, or `opted_out` when the provider's words say so.
fn failed_reason(words: Option<&str>) -> String {
    match words {
        Some(w) if w == TWILIO_UNSUBSCRIBED || says_opted_out(w) => OPTED_OUT.into(),
        _ => "carrier_failed".into(),
    }
}

/// One receipt, ready to match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderReceipt {
    pub key: ReceiptKey,
    pub status: ReceiptStatus,
    /// When the provider saw it happen.
    pub at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiptParseError {
    #[error("not a receipt Flare reads: {0}")]
    Malformed(&'static str),
}

use ReceiptParseError::Malformed;

/// Provider text kept on a record: one line, at most 300 characters.
fn detail(s: &str) -> Option<String> {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let t = one_line.trim();
    (!t.is_empty()).then(|| t.chars().take(300).collect())
}

fn time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let s = v?.as_str()?;
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        // SNS writes `2016-06-28 00:40:34.558` (UTC).
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        })
}

/// An SES event as EventBridge delivers it (`detail` is SES's event record).
/// `Ok(None)`: an event that changes nothing (a delivery delay, a transient bounce, a
/// send or open event).
pub fn parse_ses_event(event: &Value) -> Result<Option<ProviderReceipt>, ReceiptParseError> {
    // EventBridge wraps the record in `detail`; SNS and Firehose destinations do not.
    let d = event.get("detail").unwrap_or(event);
    let kind = d
        .get("eventType")
        .or_else(|| d.get("notificationType"))
        .and_then(Value::as_str)
        .ok_or(Malformed("an SES event has an eventType"))?;
    let mail = d.get("mail").ok_or(Malformed("an SES event has mail"))?;
    let message_id = mail
        .get("messageId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(Malformed("an SES event has mail.messageId"))?;
    let part = |name: &str| d.get(name).unwrap_or(&Value::Null);
    let at_of = |v: &Value| {
        time(v.get("timestamp"))
            .or_else(|| time(event.get("time")))
            .unwrap_or_else(Utc::now)
    };
    let (status, at) = match kind {
        "Delivery" => (ReceiptStatus::Delivered, at_of(part("delivery"))),
        "Bounce" => {
            let b = part("bounce");
            if b.get("bounceType").and_then(Value::as_str) != Some("Permanent") {
                return Ok(None);
            }
            let diagnostic = b
                .get("bouncedRecipients")
                .and_then(Value::as_array)
                .and_then(|r| r.iter().find_map(|r| r.get("diagnosticCode")?.as_str()))
                .or_else(|| b.get("bounceSubType").and_then(Value::as_str))
                .and_then(detail);
            (
                ReceiptStatus::Undelivered {
                    reason: "bounced".into(),
                    detail: diagnostic,
                },
                at_of(b),
            )
        }
        "Reject" => (
            ReceiptStatus::Undelivered {
                reason: "rejected".into(),
                detail: part("reject")
                    .get("reason")
                    .and_then(Value::as_str)
                    .and_then(detail),
            },
            at_of(&Value::Null),
        ),
        "Rendering Failure" | "RenderingFailure" => (
            ReceiptStatus::Undelivered {
                reason: "rendering_failed".into(),
                detail: part("failure")
                    .get("errorMessage")
                    .and_then(Value::as_str)
                    .and_then(detail),
            },
            at_of(&Value::Null),
        ),
        "Complaint" => (ReceiptStatus::Complaint, at_of(part("complaint"))),
        _ => return Ok(None),
    };
    Ok(Some(ProviderReceipt {
        key: ReceiptKey::global(Provider::Ses, message_id),
        status,
        at,
    }))
}

/// One line of SNS's SMS delivery status log (CloudWatch Logs), as SNS writes it:
/// `{"notification": {"messageId", "timestamp"}, "delivery": {"providerResponse", ...},
/// "status": "SUCCESS" | "FAILURE"}`.
pub fn parse_sns_sms_status(line: &str) -> Result<ProviderReceipt, ReceiptParseError> {
    let v: Value =
        serde_json::from_str(line).map_err(|_| Malformed("an SNS SMS status line is JSON"))?;
    let n = v
        .get("notification")
        .ok_or(Malformed("an SNS SMS status line has notification"))?;
    let message_id = n
        .get("messageId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(Malformed(
            "an SNS SMS status line has notification.messageId",
        ))?;
    let response = v
        .get("delivery")
        .and_then(|d| d.get("providerResponse"))
        .and_then(Value::as_str)
        .and_then(detail);
    let status = match v.get("status").and_then(Value::as_str) {
        Some("SUCCESS") => ReceiptStatus::Delivered,
        Some("FAILURE") => ReceiptStatus::Undelivered {
            reason: failed_reason(response.as_deref()),
            detail: response,
        },
        _ => return Err(Malformed("an SNS SMS status is SUCCESS or FAILURE")),
    };
    Ok(ProviderReceipt {
        key: ReceiptKey::global(Provider::Sns, message_id),
        status,
        at: time(n.get("timestamp")).unwrap_or_else(Utc::now),
    })
}

/// A custom gateway's status callback, read once its signature has been checked.
/// `Ok(None)`: a status that is not final (Twilio's `queued`, `sent`, ...).
pub fn parse_gateway_callback(
    format: GatewayFormat,
    org: &OrgId,
    cc: &ControlCenterId,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Option<ProviderReceipt>, ReceiptParseError> {
    let fields = callback_fields(format, content_type, body)?;
    let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
    let (id, status, error) = match format {
        GatewayFormat::Twilio => (
            get("MessageSid"),
            get("MessageStatus").or_else(|| get("SmsStatus")),
            get("ErrorCode"),
        ),
        GatewayFormat::Json | GatewayFormat::Form => {
            (get("message_id"), get("status"), get("error"))
        }
    };
    let id = id
        .filter(|s| !s.is_empty())
        .ok_or(Malformed("the callback names the message"))?;
    let status = match status.ok_or(Malformed("the callback has a status"))? {
        "delivered" => ReceiptStatus::Delivered,
        "undelivered" | "failed" => ReceiptStatus::Undelivered {
            reason: failed_reason(error),
            detail: error.and_then(detail),
        },
        // Twilio's final words short of delivery: a scheduled message called off, and one
        // of which only some segments arrived (not the whole text: not delivered).
        word @ ("canceled" | "partially_delivered") if format == GatewayFormat::Twilio => {
            ReceiptStatus::Undelivered {
                reason: word.into(),
                detail: error.and_then(detail),
            }
        }
        // Twilio reports every step; only the last one says anything Flare records.
        "queued" | "accepted" | "sending" | "sent" | "scheduled" | "read"
            if format == GatewayFormat::Twilio =>
        {
            return Ok(None);
        }
        _ => return Err(Malformed("the status is delivered or undelivered")),
    };
    Ok(Some(ProviderReceipt {
        key: ReceiptKey::new(Provider::Http, org, cc, id).expect("http has receipts"),
        status,
        at: Utc::now(),
    }))
}

/// A gateway callback's fields, name and value (numbers as their text): from JSON when
/// the body says it is (or a `json` gateway says nothing), else from a form.
pub(crate) fn callback_fields(
    format: GatewayFormat,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Vec<(String, String)>, ReceiptParseError> {
    if format != GatewayFormat::Twilio
        && content_type.is_some_and(|c| c.to_ascii_lowercase().contains("json"))
        || (format == GatewayFormat::Json && content_type.is_none())
    {
        let v: Value =
            serde_json::from_slice(body).map_err(|_| Malformed("the callback is JSON"))?;
        let obj = v
            .as_object()
            .ok_or(Malformed("the callback is an object"))?;
        // A gateway may number its messages: `42` is the id `"42"`, as on the send side.
        Ok(obj
            .iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k.clone(), s.clone())),
                Value::Number(n) => Some((k.clone(), n.to_string())),
                _ => None,
            })
            .collect())
    } else {
        Ok(url::form_urlencoded::parse(body).into_owned().collect())
    }
}

/// The header a gateway of `format` signs its callbacks with.
pub fn signature_header(format: GatewayFormat) -> &'static str {
    match format {
        GatewayFormat::Twilio => "x-twilio-signature",
        GatewayFormat::Json | GatewayFormat::Form => "x-flare-signature",
    }
}

/// Whether a callback's signature is the one its gateway's `key` (the stored gateway
/// password) makes, compared in constant time. `twilio`: base64 of HMAC-SHA1 over the
/// full URL followed by each form field's name and value, sorted by name, as Twilio
/// signs. `json` and `form`: `sha256=` and the hex HMAC-SHA256 of the raw body.
pub fn verify_signature(
    format: GatewayFormat,
    key: &[u8],
    url: &str,
    body: &[u8],
    signature: &str,
) -> bool {
    match format {
        GatewayFormat::Twilio => {
            use base64::Engine;
            let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
                return false;
            };
            let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).expect("any key length");
            mac.update(twilio_payload(url, body).as_bytes());
            mac.verify_slice(&sig).is_ok()
        }
        GatewayFormat::Json | GatewayFormat::Form => {
            let Some(hex) = signature.trim().strip_prefix("sha256=") else {
                return false;
            };
            let Some(sig) = from_hex(hex) else {
                return false;
            };
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
            mac.update(body);
            mac.verify_slice(&sig).is_ok()
        }
    }
}

/// What a gateway signs: for tests and the demo, which play the gateway.
pub fn sign(format: GatewayFormat, key: &[u8], url: &str, body: &[u8]) -> String {
    match format {
        GatewayFormat::Twilio => {
            use base64::Engine;
            let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).expect("any key length");
            mac.update(twilio_payload(url, body).as_bytes());
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        }
        GatewayFormat::Json | GatewayFormat::Form => {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
            mac.update(body);
            let bytes = mac.finalize().into_bytes();
            format!(
                "sha256={}",
                bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        }
    }
}

fn twilio_payload(url: &str, body: &[u8]) -> String {
    let mut fields: Vec<(String, String)> =
        url::form_urlencoded::parse(body).into_owned().collect();
    fields.sort();
    let mut s = url.to_string();
    for (k, v) in fields {
        s.push_str(&k);
        s.push_str(&v);
    }
    s
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests;
