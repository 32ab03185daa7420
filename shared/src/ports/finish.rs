//! How a delivery ends ([`Finish`]) and the rules every log applies to a record's state
//! when it does ([`RecordState`]): written once, so the adapters cannot disagree.

use super::*;

/// How a delivery ended. `attempt` is the claim's attempt number: a failure or retry
/// moves the record only while that attempt is still the latest, so a stale attempt
/// (its lease ran out and a newer one claimed) can neither drop the newer one's claim
/// nor fail it. A send is recorded whoever made it: it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Sent {
        attempt: u32,
        provider: Provider,
        provider_message_id: Option<String>,
        /// Where the provider's receipts find this delivery (see [`ReceiptKey`]).
        receipt_key: Option<ReceiptKey>,
        /// Sent by the failover provider, standing in for this one.
        failover_from: Option<Provider>,
        /// An SMS's encoding and segments, as sent.
        sms: Option<crate::domain::SmsCount>,
    },
    Failed {
        attempt: u32,
        reason: String,
    },
    /// A transient failure: stays pending, the claim is dropped so a retry can claim it.
    Retry {
        attempt: u32,
        reason: String,
    },
    /// The attempt found the recipient had acknowledged: the record ends skipped for
    /// `reason` instead of being sent (only while `attempt` is the latest).
    Skip {
        attempt: u32,
        reason: String,
    },
    /// The attempt never reached the provider (its pace had no moment for it in time):
    /// stays pending, the claim is dropped and not counted (`attempts` back to
    /// `attempt - 1`).
    Postpone {
        attempt: u32,
        reason: String,
    },
    /// A delivery held behind push will go as its fallback, for this reason: recorded
    /// while it is still held, before its job exists, so the job can never finish first
    /// (only while held; it stays held).
    WillFallBack {
        fallback_reason: crate::domain::reason::FallbackReason,
    },
    /// A delivery held behind push is released to be sent as fallback (only while held).
    Release,
    /// A delivery held behind a sent push waits for the app's receipt until `until`
    /// (only while held, and only the first time: the window never moves).
    Wait {
        until: chrono::DateTime<chrono::Utc>,
    },
    /// The job is dead-lettered: a record still pending ends failed, whatever attempt
    /// it is on and whether or not it is held, unless a live attempt holds its claim.
    Abandon {
        reason: String,
    },
    /// A delivery held behind push ends skipped, push having been sent (only while held).
    SkipHeld {
        reason: String,
    },
    /// A pending record no attempt holds ends skipped with `reason` (an escalation
    /// cycle's delivery after the recipient acknowledged); one a live attempt holds is
    /// left to it.
    Cancel {
        reason: String,
    },
    /// A receipt: a `sent` record becomes `delivered` (only from `sent`, so the first
    /// receipt's time is kept and a failed or skipped record never moves).
    Delivered {
        at: chrono::DateTime<chrono::Utc>,
    },
    /// A provider's receipt says a `sent` record never arrived (only from `sent`: the
    /// first final receipt wins).
    Undelivered {
        reason: String,
        detail: Option<String>,
    },
    /// The recipient complained about a sent email: `complaint` is set, the status stays
    /// (only on a `sent` or `delivered` record, and only once).
    Complaint,
}

/// The part of a record that claims and finishes change: adapters that store records
/// whole (memory, SQLite) apply the rules below to it, and SQLite keeps it apart from
/// the rest so a claim never decodes (and re-validates) a destination. DynamoDB says
/// the same rules with condition expressions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordState {
    pub status: DeliveryStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<crate::domain::Provider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub awaiting_push: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_until: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<crate::domain::reason::FallbackReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_from: Option<crate::domain::Provider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub complaint: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<crate::domain::SmsEncoding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<u32>,
    /// Where receipts find the record (kept beside the state, so an adapter can index it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_key: Option<String>,
}

impl RecordState {
    pub fn of(r: &DeliveryRecord) -> Self {
        Self {
            status: r.status,
            reason: r.reason.clone(),
            attempts: r.attempts,
            provider: r.provider,
            provider_message_id: r.provider_message_id.clone(),
            awaiting_push: r.awaiting_push,
            claimed_until: r.claimed_until,
            delivered_at: r.delivered_at,
            fallback_reason: r.fallback_reason,
            fallback_at: r.fallback_at,
            failover_from: r.failover_from,
            detail: r.detail.clone(),
            complaint: r.complaint,
            encoding: r.encoding,
            segments: r.segments,
            receipt_key: None,
        }
    }

    /// Puts this state on `r`.
    pub fn apply(self, r: &mut DeliveryRecord) {
        r.status = self.status;
        r.reason = self.reason;
        r.attempts = self.attempts;
        r.provider = self.provider;
        r.provider_message_id = self.provider_message_id;
        r.awaiting_push = self.awaiting_push;
        r.claimed_until = self.claimed_until;
        r.delivered_at = self.delivered_at;
        r.fallback_reason = self.fallback_reason;
        r.fallback_at = self.fallback_at;
        r.failover_from = self.failover_from;
        r.detail = self.detail;
        r.complaint = self.complaint;
        r.encoding = self.encoding;
        r.segments = self.segments;
    }

    /// What a claim does (see [`DeliveryLog::claim`]).
    pub fn claim(
        &mut self,
        now: chrono::DateTime<chrono::Utc>,
        lease: std::time::Duration,
    ) -> Claim {
        if self.status != DeliveryStatus::Pending {
            return Claim::AlreadyDone(self.status);
        }
        if self.claimed_until.is_some_and(|until| until > now) {
            return Claim::InFlight;
        }
        self.attempts += 1;
        self.awaiting_push = false;
        self.claimed_until = Some(now + lease);
        Claim::Claimed {
            attempts: self.attempts,
        }
    }

    /// What [`DeliveryLog::finish`] does; whether the record moved. Only a receipt
    /// moves a record on from `sent`; everything else moves only a pending one.
    pub fn finish(&mut self, outcome: Finish, now: chrono::DateTime<chrono::Utc>) -> bool {
        match outcome {
            Finish::Delivered { .. } | Finish::Undelivered { .. } | Finish::Complaint => {
                self.take_receipt(outcome)
            }
            _ if self.status != DeliveryStatus::Pending => false,
            Finish::Sent { .. } => self.record_sent(outcome),
            Finish::Failed { .. }
            | Finish::Retry { .. }
            | Finish::Postpone { .. }
            | Finish::Skip { .. } => self.end_attempt(outcome),
            Finish::Abandon { .. } | Finish::Cancel { .. } => self.end_unclaimed(outcome, now),
            Finish::WillFallBack { .. }
            | Finish::Release
            | Finish::SkipHeld { .. }
            | Finish::Wait { .. } => self.move_held(outcome),
        }
    }

    /// A receipt: from `sent` only, so the first final receipt wins; a complaint marks a
    /// sent or delivered record once. Any other outcome is not a receipt: no move.
    fn take_receipt(&mut self, outcome: Finish) -> bool {
        let sent = self.status == DeliveryStatus::Sent;
        match outcome {
            Finish::Delivered { at } if sent => {
                self.status = DeliveryStatus::Delivered;
                self.delivered_at = Some(at);
            }
            Finish::Undelivered { reason, detail } if sent => {
                self.status = DeliveryStatus::Undelivered;
                self.reason = Some(reason);
                self.detail = detail;
            }
            Finish::Complaint
                if matches!(
                    self.status,
                    DeliveryStatus::Sent | DeliveryStatus::Delivered
                ) && !self.complaint =>
            {
                self.complaint = true;
            }
            _ => return false,
        }
        true
    }

    /// A send is recorded whoever made it: it happened (the record is pending).
    fn record_sent(&mut self, outcome: Finish) -> bool {
        let Finish::Sent {
            provider,
            provider_message_id,
            receipt_key,
            failover_from,
            sms,
            ..
        } = outcome
        else {
            return false;
        };
        self.encoding = sms.map(|c| c.encoding);
        self.segments = sms.map(|c| c.segments);
        self.status = DeliveryStatus::Sent;
        self.provider = Some(provider);
        self.provider_message_id = provider_message_id;
        self.receipt_key = receipt_key.map(|k| k.as_str().to_string());
        self.failover_from = failover_from;
        self.reason = None;
        self.claimed_until = None;
        true
    }

    /// An attempt's failure, retry or postponement (the record is pending): only while
    /// it is still the latest attempt, so a stale one can neither drop a newer one's
    /// claim nor fail it.
    fn end_attempt(&mut self, outcome: Finish) -> bool {
        match outcome {
            Finish::Failed { attempt, .. }
            | Finish::Retry { attempt, .. }
            | Finish::Postpone { attempt, .. }
            | Finish::Skip { attempt, .. }
                if attempt != self.attempts =>
            {
                return false;
            }
            Finish::Failed { reason, .. } => {
                self.status = DeliveryStatus::Failed;
                self.reason = Some(reason);
            }
            Finish::Retry { reason, .. } => self.reason = Some(reason),
            Finish::Skip { reason, .. } => {
                self.status = DeliveryStatus::Skipped;
                self.reason = Some(reason);
            }
            Finish::Postpone { reason, .. } => {
                self.reason = Some(reason);
                self.attempts = self.attempts.saturating_sub(1);
            }
            _ => return false,
        }
        self.claimed_until = None;
        true
    }

    /// A dead-lettered job (failed) or a cancelled delivery (skipped), held or not (the
    /// record is pending): left to a live attempt that holds the claim.
    fn end_unclaimed(&mut self, outcome: Finish, now: chrono::DateTime<chrono::Utc>) -> bool {
        if self.claimed_until.is_some_and(|u| u > now) {
            return false;
        }
        let (status, reason) = match outcome {
            Finish::Abandon { reason } => (DeliveryStatus::Failed, reason),
            Finish::Cancel { reason } => (DeliveryStatus::Skipped, reason),
            _ => return false,
        };
        self.status = status;
        self.reason = Some(reason);
        self.awaiting_push = false;
        self.claimed_until = None;
        true
    }

    /// A delivery held behind push (the record is pending): moves only while held.
    fn move_held(&mut self, outcome: Finish) -> bool {
        if !self.awaiting_push {
            return false;
        }
        match outcome {
            // The window is set once: a repeated push run does not move it.
            Finish::Wait { .. } if self.fallback_at.is_some() => return false,
            Finish::Wait { until } => self.fallback_at = Some(until),
            Finish::WillFallBack { fallback_reason } => {
                self.fallback_reason = Some(fallback_reason);
            }
            Finish::Release => self.awaiting_push = false,
            Finish::SkipHeld { reason } => {
                self.awaiting_push = false;
                self.status = DeliveryStatus::Skipped;
                self.reason = Some(reason);
            }
            _ => return false,
        }
        true
    }
}
