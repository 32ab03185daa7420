//! Test sends: one real message through the effective provider, so an administrator
//! knows the settings work before an emergency. The answer is the provider's verdict.

use super::Services;
use super::error::ApiError;
use super::settings::parse_cc;
use crate::domain::input::{object, reject_unknown};
use crate::domain::settings::{effective_email_provider, effective_sender};
use crate::domain::{EmailAddress, FailReason, NotificationId, OrgId, PhoneNumber};
use crate::ports::{EmailMessage, Receipt, SendError, SmsMessage};
use serde_json::{Value, json};

/// What an SMS test sends when the body names no `text`.
const SMS_TEST_TEXT: &str = "Flare test message: the SMS settings of control center {cc} work.";

fn verdict(result: Result<Receipt, SendError>) -> Result<Value, ApiError> {
    match result {
        Ok(r) => Ok(
            json!({"status": "sent", "provider": r.provider, "provider_message_id": r.provider_message_id}),
        ),
        Err(e) => {
            tracing::warn!(
                reason = %e.reason(),
                transient = e.is_transient(),
                "test send failed"
            );
            Err(ApiError::ProviderFailed(e.reason()))
        }
    }
}

fn test_id() -> NotificationId {
    NotificationId::parse(&format!("test-{}", uuid::Uuid::new_v4())).expect("valid id")
}

fn parse_to<T>(
    body: &Value,
    parse: impl FnOnce(&str) -> Result<T, crate::domain::ValidationError>,
) -> Result<T, ApiError> {
    let mut errors = crate::domain::FieldErrors::new();
    reject_unknown(body, "", &mut errors, &["to"]);
    let to = object(body, "", &mut errors, |r| r.required_with("to", parse));
    match to {
        Some(to) if errors.is_empty() => Ok(to),
        _ => Err(errors.into()),
    }
}

/// An SMS test's body: `to`, and the sample `text` to send (optional).
fn parse_sms_test(body: &Value) -> Result<(PhoneNumber, Option<String>), ApiError> {
    let mut errors = crate::domain::FieldErrors::new();
    reject_unknown(body, "", &mut errors, &["to", "text"]);
    let parsed = object(body, "", &mut errors, |r| {
        let to = r.required_with("to", PhoneNumber::parse);
        let text = r.optional_with("text", crate::domain::input::sms_text);
        Some((to?, text?))
    });
    match parsed {
        Some(p) if errors.is_empty() => Ok(p),
        _ => Err(errors.into()),
    }
}

/// `POST /v1/settings/sms/{cc}/test`: through the control center's effective settings,
/// the sample text (or a test sentence) fitted as a dispatch's would be; the answer says
/// what was sent and what it costs.
pub async fn sms(svc: &Services, org: &OrgId, cc: &str, body: &Value) -> Result<Value, ApiError> {
    let cc = parse_cc(cc)?;
    let (to, text) = parse_sms_test(body)?;
    let settings = svc.settings.effective_sms(org, &cc).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "no SMS settings for control center \"{cc}\" nor for \"main\""
        ))
    })?;
    let provider = settings.provider_name();
    let sender = svc
        .sms_senders
        .get(&provider)
        .ok_or_else(|| ApiError::ProviderFailed(FailReason::ProviderUnavailable.to_string()))?;
    let message = SmsMessage {
        notification_id: test_id(),
        delivery_id: None,
        org_id: org.clone(),
        control_center_id: settings.control_center_id.clone(),
        to,
        from: settings.sender_number.clone(),
        text: String::new(),
        settings: Some(settings.clone()),
    };
    let text =
        text.unwrap_or_else(|| SMS_TEST_TEXT.replace("{cc}", settings.control_center_id.as_str()));
    let fitted = crate::domain::segments::fit(
        &crate::domain::delivery::plain_text(&text),
        None,
        settings.policy(),
    );
    let message = SmsMessage {
        text: fitted.text.clone(),
        ..message
    };
    let mut v = verdict(sender.send(&message).await)?;
    v["encoding"] = json!(fitted.count.encoding);
    v["segments"] = json!(fitted.count.segments);
    v["text"] = json!(fitted.text);
    v["cut"] = json!(fitted.cut);
    Ok(v)
}

/// `POST /v1/settings/email/test`: through the organization's provider, else the default.
pub async fn email(svc: &Services, org: &OrgId, body: &Value) -> Result<Value, ApiError> {
    let to: EmailAddress = parse_to(body, EmailAddress::parse)?;
    let settings = svc.settings.get_email(org).await?;
    let provider = effective_email_provider(settings.as_ref());
    let sender = svc
        .email_senders
        .get(&provider)
        .ok_or_else(|| ApiError::ProviderFailed(FailReason::ProviderUnavailable.to_string()))?;
    let from = effective_sender(settings.as_ref(), svc.default_sender.as_ref())
        .cloned()
        .ok_or_else(|| ApiError::ProviderFailed(FailReason::NoSenderAddress.to_string()))?;
    let message = EmailMessage {
        notification_id: test_id(),
        delivery_id: None,
        org_id: org.clone(),
        to,
        from,
        subject: "Flare test message".into(),
        text: "The outgoing email settings of your organization work.".into(),
        html: None,
        settings: settings.clone(),
    };
    verdict(sender.send(&message).await)
}
