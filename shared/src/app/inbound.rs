//! SMS replies (v1.2): a custom gateway's inbound messages and AWS End User Messaging's,
//! matched by the sender's number to the newest dispatch SMS Flare sent it in the last
//! 24 hours, and answered.

use super::error::ApiError;
use super::receipts::{Callback, verify_gateway};
use super::{Records, Services};
use crate::domain::inbound::{
    InboundSms, Reply, WHAT_TO_REPLY, confirmation, parse_gateway_inbound,
};
use crate::domain::{
    AnsweredVia, ControlCenterId, FieldErrors, NotificationId, OrgId, Provider, SenderId,
    SmsProvider, SmsSettings,
};
use crate::ports::{DeliveryLog, Directory, Metrics, SettingsStore, SmsMessage, SmsSender};
use std::collections::HashMap;
use std::sync::Arc;

/// The confirmation of a STOP (the last SMS the number gets until START).
const OPTED_OUT: &str =
    "Flare: you will get no more SMS from this service. Reply START to opt back in.";
/// The confirmation of a START.
const OPTED_IN: &str = "Flare: you will get this service's SMS again. Reply STOP to opt out.";

/// What reading an inbound SMS needs: where answers and opt-outs are recorded, the
/// settings (the HELP text), and senders for what goes back. The API and the local
/// runner take it from their [`Services`]; the receipts function builds it itself.
#[derive(Clone)]
pub struct Replies {
    pub settings: Arc<dyn SettingsStore>,
    pub directory: Arc<dyn Directory>,
    pub log: Arc<dyn DeliveryLog>,
    pub metrics: Arc<dyn Metrics>,
    pub sms_senders: HashMap<Provider, Arc<dyn SmsSender>>,
}

impl Replies {
    fn records(&self) -> Records<'_> {
        Records {
            log: self.log.as_ref(),
            metrics: self.metrics.as_ref(),
        }
    }
}

impl Services {
    pub fn replies(&self) -> Replies {
        Replies {
            settings: self.settings.clone(),
            directory: self.directory.clone(),
            log: self.log.clone(),
            metrics: self.metrics.clone(),
            sms_senders: self.sms_senders.clone(),
        }
    }
}

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
    /// STOP (or a synonym): the number is opted out of the organization's SMS.
    OptedOut,
    /// START or UNSTOP: opted back in.
    OptedIn,
    /// HELP: what the messages are and how to stop them went back.
    Help,
    /// Anything else: what can be replied went back (at most once a minute).
    Other,
}

/// `POST /v1/inbound/sms/{org_id}/{control_center_id}`: no token; signed as the
/// gateway's receipts are (a bad or missing signature is a 401 and changes nothing).
pub async fn gateway_sms(
    svc: &Services,
    org: &str,
    cc: &str,
    callback: Callback<'_>,
) -> Result<Replied, ApiError> {
    let (org, format, settings) = verify_gateway(svc, org, cc, &callback).await?;
    let content_type = (callback.header)("content-type");
    let sms =
        parse_gateway_inbound(format, content_type.as_deref(), callback.body).map_err(|e| {
            let mut f = FieldErrors::new();
            f.add("body", e.to_string());
            ApiError::Validation(f)
        })?;
    received(&svc.replies(), Some(&org), &sms, &settings).await
}

/// An inbound SMS from AWS End User Messaging's two-way SNS topic: it names no
/// organization, so the newest dispatch SMS SNS sent the number in any organization is
/// what it answers (and where its STOP counts); what goes back goes through SNS from the
/// number the reply went to. A sender no SNS dispatch went to changes nothing (End User
/// Messaging keeps its own opt-out list for its numbers).
pub async fn end_user_messaging(rp: &Replies, sms: &InboundSms) -> Result<Replied, ApiError> {
    let Some(sent) = rp.log.last_sms(None, &sms.from).await? else {
        tracing::info!(
            "End User Messaging reply from a number no SNS dispatch SMS went to: nothing changes"
        );
        return Ok(Replied::Unmatched);
    };
    let Some(org) = sent.org_id.clone() else {
        return Ok(Replied::Unmatched);
    };
    let through = SmsSettings {
        control_center_id: sent
            .control_center_id
            .clone()
            .unwrap_or_else(ControlCenterId::main),
        provider: SmsProvider::Sns,
        sender_number: SenderId::parse(&sms.to).ok(),
        password_set: false,
        secrets_at: None,
        smart_encoding: true,
        max_segments: 3,
    };
    received_matched(rp, &org, sms, &through, Some(sent)).await
}

/// An inbound SMS to `org` through a gateway (`through`: the SMS settings it came
/// through, which send what goes back): seen once, then read.
pub async fn received(
    rp: &Replies,
    org: Option<&OrgId>,
    sms: &InboundSms,
    through: &SmsSettings,
) -> Result<Replied, ApiError> {
    let Some(org) = org else {
        return end_user_messaging(rp, sms).await;
    };
    received_matched(rp, org, sms, through, None).await
}

/// [`received`] once the organization is known (`sent`: the dispatch SMS it answers,
/// when already read).
async fn received_matched(
    rp: &Replies,
    org: &OrgId,
    sms: &InboundSms,
    through: &SmsSettings,
    sent: Option<crate::ports::SmsSent>,
) -> Result<Replied, ApiError> {
    let svc = rp;
    if !svc.log.first_inbound(org, &sms.message_id).await? {
        tracing::info!(org_id = %org, message_id = %sms.message_id, "inbound SMS seen before: nothing done");
        return Ok(Replied::Repeat);
    }
    let reply = Reply::parse(&sms.text);
    // Keywords work for any number: a carrier requires STOP to be honoured whoever sends it.
    if let Some(done) = keyword(svc, org, sms, through, reply).await? {
        return Ok(done);
    }
    let sent = match sent {
        Some(sent) => Some(sent),
        None => svc.log.last_sms(Some(org), &sms.from).await?,
    };
    let sent = match sent {
        Some(sent) if chrono::Utc::now() - sent.at <= REPLY_WINDOW => sent,
        _ => {
            tracing::info!(org_id = %org, "reply from a number no dispatch SMS went to in 24 hours: nothing changes");
            return Ok(Replied::Unmatched);
        }
    };
    let Reply::Answer(answer) = reply else {
        tracing::info!(org_id = %org, "inbound SMS is not an answer: what can be replied goes back");
        if once_a_minute(svc, org, sms).await? {
            send_back(svc, org, sms, through, WHAT_TO_REPLY.to_string()).await;
        }
        return Ok(Replied::Other);
    };
    // The SMS sent to them vouches that they were a recipient: nothing read to check.
    let previous = super::notifications::answer_as(
        svc.records(),
        org,
        &sent.notification_id,
        &sent.user_id,
        answer,
        AnsweredVia::Sms,
        true,
    )
    .await?;
    // The same answer again within a minute is not confirmed again: an autoresponder
    // that answers every SMS with `1` and Flare's confirmations cannot loop.
    let repeat = previous.is_some_and(|p| {
        p.answer == answer && chrono::Utc::now() - p.at < chrono::TimeDelta::minutes(1)
    });
    if repeat {
        tracing::info!(org_id = %org, "the same answer again within a minute: recorded, not confirmed again");
    } else {
        let text = confirmation(answer, sent.incident_id.as_deref());
        send_back(svc, org, sms, through, text).await;
    }
    Ok(Replied::Answered)
}

/// STOP, START and HELP (and their synonyms), from any number: done, or `None` for a
/// reply that is not a keyword.
async fn keyword(
    svc: &Replies,
    org: &OrgId,
    sms: &InboundSms,
    through: &SmsSettings,
    reply: Reply,
) -> Result<Option<Replied>, ApiError> {
    match reply {
        Reply::OptOut | Reply::OptIn => {
            let since = (reply == Reply::OptOut).then(chrono::Utc::now);
            svc.directory.set_opt_out(org, &sms.from, since).await?;
            tracing::info!(org_id = %org, opted_out = since.is_some(), "SMS opt-out changed by a reply");
            let text = if since.is_some() { OPTED_OUT } else { OPTED_IN };
            if once_a_minute(svc, org, sms).await? {
                send_back(svc, org, sms, through, text.to_string()).await;
            }
            Ok(Some(if since.is_some() {
                Replied::OptedOut
            } else {
                Replied::OptedIn
            }))
        }
        Reply::Help => {
            if once_a_minute(svc, org, sms).await? {
                let settings = svc.settings.get_communication(org).await?;
                let text = settings.unwrap_or_default().help_text(org);
                send_back(svc, org, sms, through, text).await;
            }
            Ok(Some(Replied::Help))
        }
        Reply::Answer(_) | Reply::Other => Ok(None),
    }
}

/// Whether `sms`'s sender has had no SMS back this minute (so two autoresponders
/// answering each other stop after one exchange a minute).
async fn once_a_minute(svc: &Replies, org: &OrgId, sms: &InboundSms) -> Result<bool, ApiError> {
    let minute = chrono::Utc::now().timestamp() / 60;
    let key = format!("sent-back#{}#{minute}", sms.from.as_str());
    Ok(svc.log.first_inbound(org, &key).await?)
}

/// An SMS back to the sender through `through`'s provider. A failure is logged: the
/// answer it confirms is recorded either way.
async fn send_back(
    svc: &Replies,
    org: &OrgId,
    sms: &InboundSms,
    through: &SmsSettings,
    text: String,
) {
    let Some(sender) = svc.sms_senders.get(&through.provider_name()) else {
        tracing::warn!(org_id = %org, "no sender for the reply's provider: nothing sent back");
        return;
    };
    let message = SmsMessage {
        notification_id: NotificationId::parse(&format!("reply-{}", uuid::Uuid::new_v4()))
            .expect("a valid id"),
        delivery_id: None,
        org_id: org.clone(),
        control_center_id: through.control_center_id.clone(),
        to: sms.from.clone(),
        from: through.sender_number.clone(),
        // Fitted as every SMS is: an organization's help text may hold curly quotes.
        text: crate::domain::segments::fit(&text, None, through.policy()).text,
        settings: Some(through.clone()),
    };
    if let Err(e) = sender.send(&message).await {
        tracing::warn!(org_id = %org, reason = %e.reason(), "the SMS back to a reply was not sent");
    }
}
