//! SMS replies (v1.2): a custom gateway's inbound messages, matched by the sender's
//! number to the newest dispatch SMS Flare sent it in the last 24 hours, and answered.

use super::Services;
use super::error::ApiError;
use super::receipts::{Callback, verify_gateway};
use crate::domain::inbound::{InboundSms, Reply, parse_gateway_inbound};
use crate::domain::{AnsweredVia, FieldErrors, OrgId};

/// How long after a dispatch SMS a reply still answers it.
pub const REPLY_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// What an inbound SMS did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replied {
    /// The sender's answer to the notification was recorded.
    Answered,
    /// The same message again (the provider's retry): nothing done twice.
    Repeat,
    /// No dispatch SMS went to the number in the last 24 hours (or it is not a user's):
    /// nothing changes.
    Unmatched,
    /// Not an answer (an opt-out, help, or anything else): not acted on yet.
    NotAnAnswer(Reply),
}

/// `POST /v1/inbound/sms/{org_id}/{control_center_id}`: no token; signed as the
/// gateway's receipts are (a bad or missing signature is a 401 and changes nothing).
pub async fn gateway_sms(
    svc: &Services,
    org: &str,
    cc: &str,
    callback: Callback<'_>,
) -> Result<Replied, ApiError> {
    let (org, format, _) = verify_gateway(svc, org, cc, &callback).await?;
    let content_type = (callback.header)("content-type");
    let sms =
        parse_gateway_inbound(format, content_type.as_deref(), callback.body).map_err(|e| {
            let mut f = FieldErrors::new();
            f.add("body", e.to_string());
            ApiError::Validation(f)
        })?;
    received(svc, &org, &sms).await
}

/// An inbound SMS to `org`, however it came: seen once, then read.
pub async fn received(svc: &Services, org: &OrgId, sms: &InboundSms) -> Result<Replied, ApiError> {
    if !svc.log.first_inbound(org, &sms.message_id).await? {
        tracing::info!(org_id = %org, message_id = %sms.message_id, "inbound SMS seen before: nothing done");
        return Ok(Replied::Repeat);
    }
    let reply = Reply::parse(&sms.text);
    let Reply::Answer(answer) = reply else {
        tracing::info!(org_id = %org, reply = ?reply, "inbound SMS is not an answer");
        return Ok(Replied::NotAnAnswer(reply));
    };
    let Some(sent) = svc.log.last_sms(org, &sms.from).await? else {
        tracing::info!(org_id = %org, "reply from a number no dispatch SMS went to: nothing changes");
        return Ok(Replied::Unmatched);
    };
    if chrono::Utc::now() - sent.at > REPLY_WINDOW {
        tracing::info!(org_id = %org, notification_id = %sent.notification_id, "reply past 24 hours: nothing changes");
        return Ok(Replied::Unmatched);
    }
    match super::notifications::answer_as(
        svc,
        org,
        &sent.notification_id,
        &sent.user_id,
        answer,
        AnsweredVia::Sms,
    )
    .await
    {
        Ok(()) => Ok(Replied::Answered),
        // The notification expired, or its records are gone: nothing to answer.
        Err(ApiError::NotFound(_)) => Ok(Replied::Unmatched),
        Err(e) => Err(e),
    }
}
