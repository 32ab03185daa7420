//! Notifications, the deliveries they are made of, and the jobs that carry them.

use super::contact::ExternalContact;
use super::email::EmailAddress;
use super::event::Category;
use super::ids::{ControlCenterId, IncidentId, NotificationId, OrgId, UserId};
use super::phone::PhoneNumber;
pub use super::reason::SkipReason;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Push,
    Sms,
    Email,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Push, Channel::Sms, Channel::Email];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Push => "push",
            Channel::Sms => "sms",
            Channel::Email => "email",
        }
    }
}

/// Who carries a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Amazon SNS (push through platform endpoints, and SMS).
    Sns,
    /// Amazon SES v2.
    Ses,
    /// A custom HTTP SMS gateway.
    Http,
    /// A custom SMTP server.
    Smtp,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Sns => "sns",
            Provider::Ses => "ses",
            Provider::Http => "http",
            Provider::Smtp => "smtp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Queued or in flight.
    Pending,
    /// Accepted by the provider (never "delivered" without a receipt).
    Sent,
    /// Given up, with a reason.
    Failed,
    /// Never attempted, with a reason.
    Skipped,
    /// Sent, and a receipt says it reached the recipient (push: the app's receipt or
    /// acknowledgement), with `delivered_at`.
    Delivered,
    /// Sent, and the provider's receipt says it never arrived (a bounce, a carrier
    /// failure), with `reason` and the provider's `detail`.
    Undelivered,
}

/// Text made safe to put inside HTML elements and attribute values.
/// Text as it may reach a provider: line ends as LF (CRLF and a bare CR each become one
/// LF), and no C0 or C1 control characters but LF and tab (a NUL or bare CR went into
/// 7bit email parts as they were, and SMS gateways differ on what they do with them).
pub fn plain_text(s: &str) -> String {
    s.replace("\r\n", "\n")
        .replace('\r', "\n")
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .collect()
}

pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Whom a delivery is for: a user, or a contact who is not a user. A contact is keyed by
/// its position in the event (or in the SOS creator's list), which is the same when the
/// event is replayed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientRef {
    User(UserId),
    Contact {
        index: u32,
        #[serde(flatten)]
        contact: ExternalContact,
    },
}

impl RecipientRef {
    /// A stable key for storage and queue messages (`user:u-17`, `contact:2`).
    pub fn key(&self) -> String {
        match self {
            RecipientRef::User(id) => format!("user:{id}"),
            RecipientRef::Contact { index, .. } => format!("contact:{index}"),
        }
    }

    pub fn user_id(&self) -> Option<&UserId> {
        match self {
            RecipientRef::User(id) => Some(id),
            RecipientRef::Contact { .. } => None,
        }
    }
}

/// Where a planned delivery goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "to", rename_all = "snake_case")]
pub enum Destination {
    /// Every registered device of the user (looked up when the push is sent).
    Devices(UserId),
    Phone(PhoneNumber),
    Email(EmailAddress),
}

/// What is said: `{"title", "body"}` as in the incident event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Message {
    pub title: String,
    pub body: String,
}

impl Message {
    /// The text of an SMS: `title: body`, or the body alone when there is no title.
    pub fn sms_text(&self) -> String {
        let text = if self.title.is_empty() {
            self.body.clone()
        } else {
            format!("{}: {}", self.title, self.body)
        };
        plain_text(&text)
    }

    /// An email's text part: [`plain_text`] with CRLF line ends, the only ones SMTP and
    /// MIME allow.
    pub fn email_text(&self) -> String {
        plain_text(&self.body).replace('\n', "\r\n")
    }

    /// An email's HTML part: the text, cleaned and escaped, with line breaks kept.
    pub fn html(&self) -> String {
        let esc = |s: &str| html_escape(&plain_text(s));
        format!(
            "<!doctype html><html><body><h2>{}</h2><p>{}</p></body></html>",
            esc(&self.title),
            esc(&self.body).replace('\n', "<br>\r\n")
        )
    }
}

/// Which of a recipient's records: a channel in a cycle (0: the notification itself;
/// 1, 2, ...: the cycles of dispatch escalation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    pub channel: Channel,
    pub cycle: u32,
}

impl From<Channel> for Slot {
    fn from(channel: Channel) -> Self {
        Self { channel, cycle: 0 }
    }
}

impl Slot {
    /// Its part of a record's key: the channel, and `#<cycle>` after it from cycle 1 on
    /// (so every record written before cycles existed keeps its key).
    pub fn key(&self) -> String {
        match self.cycle {
            0 => self.channel.as_str().to_string(),
            c => format!("{}#{c}", self.channel.as_str()),
        }
    }
    /// A key [`Self::key`] made.
    pub fn parse_key(s: &str) -> Option<Self> {
        let (channel, cycle) = match s.split_once('#') {
            Some((c, n)) => (c, n.parse().ok()?),
            None => (s, 0),
        };
        let channel = Channel::ALL.into_iter().find(|c| c.as_str() == channel)?;
        Some(Self { channel, cycle })
    }
}

/// One notification: one incident event, or one manual SMS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub notification_id: NotificationId,
    pub org_id: OrgId,
    pub category: Category,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<IncidentId>,
    pub control_center_id: ControlCenterId,
    pub message: Message,
    pub created_at: DateTime<Utc>,
    /// The fallback window its held SMS and email wait for the app's receipt, in
    /// seconds, when there is one (the settings' `app_fallback_seconds` at routing time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_fallback_seconds: Option<u32>,
    /// Dispatch escalation, when the settings had it on at routing time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<EscalationPlan>,
    /// v1.2: the groups of users the event named (as given), beside its ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<crate::Audience>,
    /// How many route pages its recipients were split into ([`RoutePage`]); 0 when it
    /// was routed in one piece (a short list of ids, no audience).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pages: u32,
}

/// One page of a notification routed in pages: the users it routes, fixed when the
/// event was first routed (a replay, or a directory changed since, routes the same
/// people), and whether its records are written and its jobs queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutePage {
    /// From 1.
    pub page: u32,
    pub user_ids: Vec<UserId>,
    #[serde(default)]
    pub routed: bool,
}

/// A notification's escalation: cycle `c` (1, 2, ...) is due `c * after_seconds` after
/// `started_at` (when it was routed), so every cycle starts `after_seconds` after the
/// previous one, also after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationPlan {
    pub after_seconds: u32,
    pub cycles: u32,
    pub started_at: DateTime<Utc>,
}

impl EscalationPlan {
    /// When cycle `cycle` is due.
    pub fn due(&self, cycle: u32) -> DateTime<Utc> {
        self.started_at
            + chrono::TimeDelta::seconds(i64::from(self.after_seconds) * i64::from(cycle))
    }
}

/// The record of one (recipient, channel) of a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub notification_id: NotificationId,
    pub recipient: RecipientRef,
    pub channel: Channel,
    pub status: DeliveryStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub attempts: u32,
    pub fallback: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    /// Where it goes, kept so a fallback can be enqueued without reading the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    /// Held behind push (`app_then_sms_email`): not enqueued until push has an outcome.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub awaiting_push: bool,
    /// Until when an attempt holds this record (set by a claim, cleared when it ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_until: Option<DateTime<Utc>>,
    /// When a receipt said it reached the recipient (`delivered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
    /// Why it went as the fallback of push (set when it is sent as one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<super::reason::FallbackReason>,
    /// Held behind a push that was sent: when the fallback window ends, if no receipt
    /// has come by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_at: Option<DateTime<Utc>>,
    /// 0 for the notification itself; 1, 2, ... for dispatch escalation cycles.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cycle: u32,
    /// Sent through the failover provider: the primary it stood in for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_from: Option<Provider>,
    /// What the provider's receipt said (an `undelivered` record's bounce diagnostic or
    /// carrier response).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The recipient reported the email as spam (the status stays what it was).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub complaint: bool,
    /// v1.2: an SMS's encoding and segments, as sent. Stored as `sms_encoding` and
    /// `sms_segments`: `segments` is a word DynamoDB reserves.
    #[serde(
        default,
        rename = "sms_encoding",
        skip_serializing_if = "Option::is_none"
    )]
    pub encoding: Option<crate::segments::SmsEncoding>,
    #[serde(
        default,
        rename = "sms_segments",
        skip_serializing_if = "Option::is_none"
    )]
    pub segments: Option<u32>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl DeliveryRecord {
    pub fn slot(&self) -> Slot {
        Slot {
            channel: self.channel,
            cycle: self.cycle,
        }
    }

    /// Held behind push (`app_then_sms_email`): an SMS or email still pending that waits
    /// for the app push's outcome (sent as fallback, or skipped, once push has one).
    /// The one place this rule is written: routing, the push's run, the window check,
    /// escalation and a restarted runner all ask it here.
    pub fn held_behind_push(&self) -> bool {
        self.awaiting_push && self.status == DeliveryStatus::Pending
    }
}

/// One delivery to carry out, as queued for a channel's delivery function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryJob {
    pub notification_id: NotificationId,
    pub org_id: OrgId,
    pub control_center_id: ControlCenterId,
    pub category: Category,
    pub recipient: RecipientRef,
    pub channel: Channel,
    pub provider: Provider,
    pub destination: Destination,
    pub fallback: bool,
    pub message: Message,
    /// The event's time, for the delivery latency metric (absent in jobs queued before
    /// it was added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// Push jobs only: the notification's fallback window (seconds), which starts when
    /// this push is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_fallback_seconds: Option<u32>,
    /// The escalation cycle it belongs to (0: the notification itself).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cycle: u32,
    /// Receives its earlier messages spent before it was postponed (a postponed job is
    /// a new message, whose receives count from 1 again): with them it keeps its
    /// attempts and backoff.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub spent_receives: u32,
    /// The notification's incident (absent in jobs queued before v1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<crate::ids::IncidentId>,
}

/// What a [`CheckJob`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// SMS and email held behind a sent push: has the fallback window ended without
    /// the app's receipt?
    AppFallback,
    /// Dispatch escalation: notify again, in cycle `cycle`, everyone who has not
    /// acknowledged.
    Escalation,
    /// Route page `page` of a notification routed in pages: not a timer, but work the
    /// router hands on so no invocation holds a whole large notification.
    RoutePage,
}

/// A timer of one notification, queued with a delay on the push queue beside the push
/// jobs: one per notification, not one per recipient. Running it twice, late, or after
/// a receipt sends nothing it should not (each record moves only while held).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckJob {
    pub check: CheckKind,
    pub org_id: OrgId,
    pub notification_id: NotificationId,
    /// The escalation cycle it starts (escalation checks only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cycle: u32,
    /// The route page it routes (route page checks only; from 1).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub page: u32,
    /// The escalation chain it belongs to (escalation checks): the first cycle's timer
    /// names it, and the notification keeps the first chain that runs, so the timer of
    /// a replayed event (a second chain) does nothing. `None` (a timer from before
    /// chains, or a restarted local runner's) runs ungated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// The notification's lane: its timer waits in that lane's push queue, so an
    /// urgent notification's fallback or escalation never waits behind bulk pushes.
    #[serde(default, skip_serializing_if = "is_normal")]
    pub lane: crate::Lane,
}

fn is_normal(lane: &crate::Lane) -> bool {
    *lane == crate::Lane::Normal
}

/// A message on a delivery queue: a job, or (push queue only) a timer's check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum QueuedWork {
    Check(CheckJob),
    Job(Box<DeliveryJob>),
}

impl QueuedWork {
    /// A queue message's body: a check has a `check` field no job has. Parsed as the one
    /// it is, so a bad job's error names its field (serde's untagged errors do not).
    pub fn parse(body: &str) -> Result<Self, serde_json::Error> {
        let v: serde_json::Value = serde_json::from_str(body)?;
        if v.get("check").is_some() {
            serde_json::from_value(v).map(QueuedWork::Check)
        } else {
            serde_json::from_value(v).map(|j| QueuedWork::Job(Box::new(j)))
        }
    }
}

impl DeliveryJob {
    /// Whether this job carries a way to answer it (reply instructions, a response
    /// link): a dispatch to a user.
    pub fn answerable(&self) -> bool {
        self.category == crate::event::Category::Dispatch
            && matches!(self.recipient, RecipientRef::User(_))
    }

    /// The SMS this job sends, fitted to `policy`: the message's text, and for a dispatch
    /// to a user the reply instructions after it ([`crate::inbound::REPLY_INSTRUCTIONS`]:
    /// the digits a reply answers with) and its response link, when it has one. The
    /// message may be cut; the instructions and link never are.
    pub fn sms(&self, link: Option<&str>, policy: crate::segments::SmsPolicy) -> crate::FittedSms {
        let text = self.message.sms_text();
        let tail = self.answerable().then(|| match link {
            Some(url) => format!("{} or {url}", crate::inbound::REPLY_INSTRUCTIONS),
            None => crate::inbound::REPLY_INSTRUCTIONS.to_string(),
        });
        crate::segments::fit(&text, tail.as_deref(), policy)
    }

    /// The email's text and HTML parts: the message's, and for a dispatch to a user with
    /// a response link, the link after them.
    pub fn email_parts(&self, link: Option<&str>) -> (String, String) {
        let (text, html) = (self.message.email_text(), self.message.html());
        match link.filter(|_| self.answerable()) {
            Some(url) => {
                let url = html_escape(url);
                (
                    format!("{text}\r\n\r\nResponding or unavailable? Answer here: {url}\r\n"),
                    html.replace(
                        "</body>",
                        &format!(
                            "<p><a href=\"{url}\">Answer: responding or unavailable</a></p></body>"
                        ),
                    ),
                )
            }
            None => (text, html),
        }
    }

    /// The lane it travels in (its category's: fallbacks and escalations keep it).
    pub fn lane(&self) -> super::event::Lane {
        self.category.lane()
    }

    pub fn slot(&self) -> Slot {
        Slot {
            channel: self.channel,
            cycle: self.cycle,
        }
    }

    /// This delivery's id: a name-based UUID of the organization, the notification,
    /// the recipient and the channel, so every attempt and every duplicate of the job has
    /// the same one.
    pub fn delivery_id(&self) -> String {
        const NAMESPACE: uuid::Uuid = uuid::uuid!("0b8e2f43-5d7a-4c1e-9f3b-7a6d2e1c4b58");
        // Length-prefixed parts: no two different tuples make the same name.
        let parts = [
            self.org_id.as_str().to_string(),
            self.notification_id.as_str().to_string(),
            self.recipient.key(),
            self.slot().key(),
        ];
        let name: String = parts.iter().map(|p| format!("{}:{p};", p.len())).collect();
        uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_id_is_the_same_for_every_attempt_and_differs_per_recipient_and_channel() {
        // The sample SQS batch's first job (events/sqs/sms-batch.json).
        let batch: serde_json::Value =
            serde_json::from_str(include_str!("../../../events/sqs/sms-batch.json")).unwrap();
        let job: DeliveryJob =
            serde_json::from_str(batch["Records"][0]["body"].as_str().unwrap()).unwrap();
        assert_eq!(job.delivery_id(), job.clone().delivery_id());
        let other_channel = DeliveryJob {
            channel: Channel::Email,
            ..job.clone()
        };
        let other_org = DeliveryJob {
            org_id: crate::OrgId::parse("globex").unwrap(),
            ..job.clone()
        };
        assert_ne!(job.delivery_id(), other_channel.delivery_id());
        assert_ne!(job.delivery_id(), other_org.delivery_id());
        assert!(uuid::Uuid::parse_str(&job.delivery_id()).is_ok());
    }

    #[test]
    fn a_record_is_held_behind_push_only_while_pending_and_awaiting_push() {
        let user = UserId::parse("u-1").unwrap();
        let record = |status, awaiting_push| DeliveryRecord {
            notification_id: NotificationId::parse("n-1").unwrap(),
            recipient: RecipientRef::User(user.clone()),
            channel: Channel::Sms,
            status,
            reason: None,
            attempts: 0,
            fallback: false,
            provider: None,
            provider_message_id: None,
            destination: None,
            awaiting_push,
            claimed_until: None,
            delivered_at: None,
            fallback_reason: None,
            fallback_at: None,
            cycle: 0,
            failover_from: None,
            detail: None,
            complaint: false,
            encoding: None,
            segments: None,
        };
        assert!(record(DeliveryStatus::Pending, true).held_behind_push());
        // Released (its fallback job runs) or never held: not held.
        assert!(!record(DeliveryStatus::Pending, false).held_behind_push());
        // Ended while the flag was still set (a stale hold): not held either.
        for status in [
            DeliveryStatus::Sent,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
            DeliveryStatus::Skipped,
            DeliveryStatus::Undelivered,
        ] {
            assert!(!record(status, true).held_behind_push(), "{status:?}");
        }
    }

    #[test]
    fn texts_reach_providers_without_controls_and_email_with_crlf_only() {
        let m = Message {
            title: "Fire\u{0}".into(),
            body: "Engine 7\r\nto 12 Main\rSt.\u{7}\u{85}\u{1b}[31m\tnow\nok".into(),
        };
        assert_eq!(m.sms_text(), "Fire: Engine 7\nto 12 Main\nSt.[31m\tnow\nok");
        let email = m.email_text();
        assert_eq!(email, "Engine 7\r\nto 12 Main\r\nSt.[31m\tnow\r\nok");
        assert!(
            !email.replace("\r\n", "").contains(['\r', '\n']),
            "CRLF only"
        );
        assert!(!m.html().contains('\u{0}'));
    }
}
