//! Carrying out one delivery job: claim its record, call the channel's sender, record
//! the outcome; after push, resolve the SMS and email held behind it.

use super::ended;
use super::failover::Accepted;
use crate::domain::health::HealthScope;
use crate::domain::reason::{FallbackReason, wire_reason};
use crate::domain::routing::{
    Action, HeldDelivery, JobTemplate, PushOutcome, RecipientPlan, WindowStep, after_push,
    window_step,
};
use crate::domain::settings::effective_sender;
use crate::domain::{
    Channel, CheckJob, CheckKind, DeliveryJob, DeliveryRecord, DeliveryStatus, Destination,
    EmailAddress, FailReason, FailureKind, Provider, RecipientRef, SkipReason,
};
use crate::domain::{EmailSettings, SmsCount, SmsSettings};
use crate::ports::{
    Claim, DeliveryLog, DeliveryMetric, Directory, EmailMessage, EmailSender, Finish, JobQueue,
    Metrics, Outcome, PushMessage, PushSender, QueueError, SendError, SettingsStore, SmsMessage,
    SmsSender, StoreError,
};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{Instrument, Span};

/// How long a claim outlives the attempt's own deadline. The lease is derived from the
/// deadline (the Lambda invocation's), so a crashed attempt's record can be claimed again
/// seconds after the deadline, long before the queue's visibility timeout (120 s, with
/// a 20 s function timeout) redelivers its job: the redelivery finds the record free.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// The lease of an attempt that must be over within `remaining`.
pub const fn lease_for(remaining: Duration) -> Duration {
    remaining.saturating_add(LEASE_MARGIN)
}

#[derive(Clone)]
pub struct Deliverer {
    pub log: Arc<dyn DeliveryLog>,
    /// Where fallback deliveries are enqueued (push), and where a postponed job goes
    /// again (every delivery function).
    pub queue: Option<Arc<dyn JobQueue>>,
    pub directory: Arc<dyn Directory>,
    pub settings: Arc<dyn SettingsStore>,
    pub push: Option<Arc<dyn PushSender>>,
    pub sms: HashMap<Provider, Arc<dyn SmsSender>>,
    pub email: HashMap<Provider, Arc<dyn EmailSender>>,
    /// The default account email goes from (`FLARE_DEFAULT_SENDER`).
    pub default_sender: Option<EmailAddress>,
    pub metrics: Arc<dyn Metrics>,
    /// Custom providers' health and failover (SMS and email functions); `None`: a
    /// provider's failures are not tracked and nothing fails over.
    pub failover: Option<super::failover::Failover>,
    /// Paces gateways that set `max_per_second`, and SNS SMS at `sns_per_second`;
    /// `None`: nothing is paced.
    pub pacer: Option<Arc<dyn crate::ports::Pacer>>,
    /// The account's SNS SMS rate (messages a second); `None`: SNS is not paced.
    pub sns_per_second: Option<u32>,
    /// How long a send may wait for its provider's pace before the job is postponed
    /// ([`DeliverError::Postpone`]); `None`: as long as it takes (the local runner,
    /// whose jobs have no deadline). A Lambda invocation must end in time.
    pub max_pace_wait: Option<Duration>,
    /// Response links: dispatch SMS and email to a user carry one. `None`: no links
    /// (reply instructions only).
    pub links: Option<Links>,
}

/// Where response links point (`FLARE_PUBLIC_URL`), and where the key that seals their
/// codes in the log is ([`crate::ports::SecretKey::LinkKey`]).
#[derive(Clone)]
pub struct Links {
    pub public_url: String,
    pub secrets: Arc<dyn crate::ports::SecretStore>,
}

/// The span every line about one job is logged in: it names the job's fields, so the
/// lines inside name only their own.
fn job_span(job: &DeliveryJob) -> Span {
    tracing::info_span!(
        "deliver",
        notification_id = %job.notification_id,
        channel = job.channel.as_str(),
        lane = job.lane().as_str(),
        recipient = %job.recipient.key(),
        attempts = tracing::field::Empty,
    )
}

/// How long a postponed job waits in its queue before it is taken again.
pub const POSTPONE_DELAY: Duration = Duration::from_secs(1);

/// How long a postponed job waits: what the provider asked for (a 429's `Retry-After`),
/// at least [`POSTPONE_DELAY`] and at most SQS's longest delay.
pub fn postpone_delay(retry_after: Option<Duration>) -> Duration {
    retry_after
        .unwrap_or(POSTPONE_DELAY)
        .clamp(POSTPONE_DELAY, crate::ports::MAX_CHECK_DELAY)
}

/// How long one attempt waits at most for a provider that answers 429 before its job is
/// postponed for what the provider asked (half the delivery functions' 20 s timeout;
/// [`Deliverer::max_pace_wait`] lowers it in Lambda).
pub const THROTTLE_BUDGET: Duration = Duration::from_secs(10);

/// The shortest wait after a 429, whatever its `Retry-After` says.
pub const MIN_THROTTLE_WAIT: Duration = Duration::from_millis(250);

/// How many window writes a check runs at once.
const CHECK_CONCURRENCY: usize = 16;

/// How many held deliveries one window check moves at most (about 4 conditional writes
/// and a tenth of a `SendMessageBatch` each: a couple of seconds in DynamoDB at
/// [`CHECK_CONCURRENCY`]); more are left to the next run, scheduled at once.
pub const CHECK_BATCH: usize = 1000;

/// What a timer check did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// Held deliveries sent as fallback now.
    pub fallbacks: usize,
    /// Held deliveries skipped (the app confirmed the push).
    pub skipped: usize,
    /// When something is still waiting: when to run this check again.
    pub next: Option<chrono::DateTime<chrono::Utc>>,
    /// Recipients notified again by an escalation cycle.
    pub escalated: usize,
    /// The next escalation cycle's check and when it is due.
    pub follow_up: Option<(CheckJob, chrono::DateTime<chrono::Utc>)>,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    Sent {
        provider_message_id: Option<String>,
    },
    Failed {
        reason: String,
    },
    /// The record was already done: nothing was sent again.
    AlreadyDone(DeliveryStatus),
    /// No record for the job: nothing to do.
    NoRecord,
    /// The recipient had acknowledged: the record ended skipped, nothing was sent.
    Acknowledged,
    /// The SMS's number had opted out (v1.2): the record ended skipped `opted_out`.
    OptedOut,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// Try again later (a transient send failure, or another attempt holds the claim).
    #[error("retry later: {reason}")]
    Retry { reason: String },
    #[error("storage failed")]
    Store(#[from] StoreError),
    #[error("enqueuing the fallback failed")]
    Queue(#[from] QueueError),
    /// The provider's pace had no moment for the send in time: queue the job again
    /// (a new message) after `after`; no attempt is spent and the claim is dropped.
    #[error("postponed: the provider's pace is full")]
    Postpone { after: Duration },
}

impl From<crate::app::notify::RouteError> for DeliverError {
    fn from(e: crate::app::notify::RouteError) -> Self {
        use crate::app::notify::RouteError;
        match e {
            RouteError::Store(e) => DeliverError::Store(e),
            RouteError::Queue(e) => DeliverError::Queue(e),
            RouteError::Incomplete(inner) => DeliverError::from(*inner),
            // A page is routed only for a notification that exists.
            RouteError::UnknownOrganization(org) => DeliverError::Store(StoreError::Failed(
                anyhow::anyhow!("route page of unknown organization {org}"),
            )),
        }
    }
}

/// How long a transient failure waits before attempt `attempt + 1`: `base`, doubling with
/// each attempt, capped at 30 times `base`. The delivery functions (10 s, through the
/// queue's visibility) and the local runner use it alike.
pub fn retry_delay(base: Duration, attempt: u32) -> Duration {
    (base * 2u32.pow(attempt.clamp(1, 6) - 1)).min(base * 30)
}

/// Whether a record or job of `channel` in `cycle` is the push that SMS and email may be
/// held behind: only the notification's own push (cycle 0) holds anything back;
/// escalation cycles send on every channel at once.
fn holds_others_back(channel: Channel, cycle: u32) -> bool {
    channel == Channel::Push && cycle == 0
}

/// The jobs that carry on a notification's unfinished work (a restarted local runner
/// has lost its queue): each pending record not held behind push, and the push job of
/// a recipient whose push is done but whose held SMS and email were never resolved
/// (its run finds push done and resolves them). With each job, the attempts its record
/// has used. A record still held behind a pending push waits for that push's job.
pub fn unfinished_jobs(logged: &crate::ports::Logged) -> Vec<(DeliveryJob, u32)> {
    let template = JobTemplate::from(&logged.notification);
    let job = |r: &crate::domain::DeliveryRecord| {
        let mut job = template.job(
            &r.recipient,
            r.channel,
            r.provider?,
            r.destination.as_ref()?,
            r.fallback,
        );
        job.cycle = r.cycle;
        Some((job, r.attempts))
    };
    let pending = |r: &&crate::domain::DeliveryRecord| r.status == DeliveryStatus::Pending;
    let mut jobs: Vec<(DeliveryJob, u32)> = logged
        .records
        .iter()
        .filter(pending)
        .filter(|r| !r.held_behind_push())
        .filter_map(job)
        .collect();
    let mut seen = std::collections::HashSet::new();
    let pushes: Vec<&crate::domain::DeliveryRecord> = logged
        .records
        .iter()
        .filter(|r| r.held_behind_push())
        .filter_map(|held| {
            logged.records.iter().find(|p| {
                holds_others_back(p.channel, p.cycle)
                    && p.recipient == held.recipient
                    && p.status != DeliveryStatus::Pending
            })
        })
        .filter(|p| seen.insert(p.recipient.key()))
        .collect();
    jobs.extend(pushes.into_iter().filter_map(job));
    jobs
}

/// The timers a previous run left running (a restarted local runner has lost them):
/// the fallback window's ([`unfinished_window`]) and the next escalation cycle's, due
/// when its plan says (at once when that has passed), while anyone has not acknowledged.
pub fn unfinished_checks(
    logged: &crate::ports::Logged,
) -> Vec<(CheckJob, chrono::DateTime<chrono::Utc>)> {
    let mut checks: Vec<_> = unfinished_window(logged).into_iter().collect();
    let n = &logged.notification;
    let Some(plan) = n.escalation else {
        return checks;
    };
    if unacknowledged(logged).is_empty() {
        return checks;
    }
    // A cycle overdue by more than its interval (the runner was down that long) is not
    // started (or finished) late: a dispatch that old is no longer news worth waking
    // someone.
    let now = chrono::Utc::now();
    let fresh = |cycle: u32| {
        cycle >= 1
            && cycle <= plan.cycles
            && now <= plan.due(cycle) + chrono::TimeDelta::seconds(plan.after_seconds.into())
    };
    let check = |cycle: u32, page: u32| CheckJob {
        check: CheckKind::Escalation,
        org_id: n.org_id.clone(),
        notification_id: n.notification_id.clone(),
        cycle,
        page,
        chain: None,
        lane: n.category.lane(),
    };
    let last = logged.records.iter().map(|r| r.cycle).max().unwrap_or(0);
    // A notification routed in pages runs a cycle a page at a time: a stop in the middle
    // of one lost the pages not yet run. Each runs again (a page run twice writes and
    // sends nothing twice).
    if n.pages > 0 && fresh(last) {
        checks.extend((1..=n.pages).map(|page| (check(last, page), plan.due(last))));
    }
    if fresh(last + 1) {
        checks.push((check(last + 1, 0), plan.due(last + 1)));
    }
    checks
}

/// The users a notification was for (cycle 0) who have not acknowledged it.
fn unacknowledged(logged: &crate::ports::Logged) -> Vec<crate::domain::UserId> {
    let acked: std::collections::HashSet<&crate::domain::UserId> =
        logged.acks.iter().map(|(u, _)| u).collect();
    let mut seen = std::collections::HashSet::new();
    logged
        .records
        .iter()
        .filter(|r| r.cycle == 0)
        .filter_map(|r| match &r.recipient {
            crate::domain::RecipientRef::User(u) if !acked.contains(u) => Some(u.clone()),
            _ => None,
        })
        .filter(|u| seen.insert(u.clone()))
        .collect()
}

/// The timer a notification's held SMS and email wait on, when a previous run left it
/// running: due at the earliest stored window end, or now when a held record has none
/// yet (the check then finds out what it waits for).
pub fn unfinished_window(
    logged: &crate::ports::Logged,
) -> Option<(CheckJob, chrono::DateTime<chrono::Utc>)> {
    logged.notification.app_fallback_seconds?;
    let held: Vec<&DeliveryRecord> = logged
        .records
        .iter()
        .filter(|r| r.held_behind_push())
        .collect();
    if held.is_empty() {
        return None;
    }
    let now = chrono::Utc::now();
    let at = held
        .iter()
        .map(|r| r.fallback_at.unwrap_or(now))
        .min()
        .unwrap_or(now);
    let n = &logged.notification;
    Some((
        CheckJob {
            check: CheckKind::AppFallback,
            org_id: n.org_id.clone(),
            notification_id: n.notification_id.clone(),
            cycle: 0,
            page: 0,
            chain: None,
            lane: n.category.lane(),
        },
        at,
    ))
}

impl Deliverer {
    /// Delivers one job. `final_attempt` turns a transient failure into a permanent one,
    /// so no record is left pending when the queue gives up on the job; `lease` is how
    /// long the claim holds ([`lease_for`] the time the attempt has left).
    pub async fn deliver(
        &self,
        job: &DeliveryJob,
        final_attempt: bool,
        lease: Duration,
    ) -> Result<Delivered, DeliverError> {
        let span = job_span(job);
        self.claim_and_attempt(job, final_attempt, lease, span.clone())
            .instrument(span)
            .await
    }

    async fn claim_and_attempt(
        &self,
        job: &DeliveryJob,
        final_attempt: bool,
        lease: Duration,
        span: Span,
    ) -> Result<Delivered, DeliverError> {
        let claim = self
            .log
            .claim(
                &job.org_id,
                &job.notification_id,
                &job.recipient,
                job.slot(),
                lease,
            )
            .await?;
        match claim {
            Claim::Claimed { attempts } => {
                span.record("attempts", attempts);
                if self.acknowledged_before(job, attempts).await? {
                    return Ok(Delivered::Acknowledged);
                }
                if self.opted_out(job, attempts).await? {
                    return Ok(Delivered::OptedOut);
                }
                self.attempt(job, attempts, final_attempt).await
            }
            Claim::AlreadyDone(status) => {
                tracing::info!(status = ?status, "duplicate job: already done, nothing sent");
                self.after_done(job, status).await?;
                Ok(Delivered::AlreadyDone(status))
            }
            Claim::InFlight => Err(DeliverError::Retry {
                reason: "another attempt holds the claim".into(),
            }),
            Claim::Missing => {
                tracing::warn!("job without a delivery record: dropped");
                Ok(Delivered::NoRecord)
            }
        }
    }

    /// Whether this SMS's number opted out of the organization's SMS (a reply STOP):
    /// then the record ends `skipped` (`opted_out`) and nothing is sent. One read of the
    /// directory per SMS attempt.
    async fn opted_out(&self, job: &DeliveryJob, attempts: u32) -> Result<bool, DeliverError> {
        let (Channel::Sms, Destination::Phone(to)) = (job.channel, &job.destination) else {
            return Ok(false);
        };
        if self.directory.opted_out(&job.org_id, to).await?.is_none() {
            return Ok(false);
        }
        self.skip_claimed(job, attempts, crate::domain::SkipReason::OptedOut)
            .await?;
        tracing::info!("the number opted out of SMS: skipped, nothing sent");
        Ok(true)
    }

    /// Ends the record this attempt claimed `skipped` with `reason`, nothing sent.
    async fn skip_claimed(
        &self,
        job: &DeliveryJob,
        attempts: u32,
        reason: crate::domain::SkipReason,
    ) -> Result<(), DeliverError> {
        let outcome = Finish::Skip {
            attempt: attempts,
            reason: reason.as_str().to_string(),
        };
        if self.finish_job(job, outcome).await? {
            self.count(job, Some(job.provider), Outcome::Skipped, None);
        }
        Ok(())
    }

    /// Whether the recipient acknowledged before this claimed attempt could send: then
    /// the record ends `skipped` (`acknowledged`) instead. Asked of retries only: an ack
    /// ends every pending record no attempt holds, so only a record that was claimed
    /// when the ack came (the attempt then failed, and this is its retry) can still be
    /// pending after it. A first attempt pays no read.
    async fn acknowledged_before(
        &self,
        job: &DeliveryJob,
        attempts: u32,
    ) -> Result<bool, DeliverError> {
        let RecipientRef::User(user) = &job.recipient else {
            return Ok(false);
        };
        if attempts <= 1 {
            return Ok(false);
        }
        if !self
            .log
            .acked(&job.org_id, &job.notification_id, user)
            .await?
        {
            return Ok(false);
        }
        self.skip_claimed(job, attempts, crate::domain::SkipReason::Acknowledged)
            .await?;
        tracing::info!("recipient acknowledged before this attempt: skipped, nothing sent");
        Ok(true)
    }

    /// A push that ended before its follow-up was recorded: finish that now.
    async fn after_done(
        &self,
        job: &DeliveryJob,
        status: DeliveryStatus,
    ) -> Result<(), DeliverError> {
        if holds_others_back(job.channel, job.cycle) {
            let outcome = match status {
                DeliveryStatus::Sent | DeliveryStatus::Delivered => Some(PushOutcome::Sent),
                DeliveryStatus::Failed => Some(PushOutcome::FailedOnEveryDevice),
                _ => None,
            };
            if let Some(o) = outcome {
                self.resolve_held(job, o).await?;
            }
        }
        Ok(())
    }

    /// A job that reached its dead-letter queue: a record it left pending ends failed
    /// (`gave_up: dead_letter`) and, for push, the held SMS and email go out as fallback,
    /// so nothing stays `pending`. `Err(Retry)` while a live attempt still holds the
    /// record: the dead-letter queue hands the job over again later.
    pub async fn abandon(&self, job: &DeliveryJob) -> Result<Delivered, DeliverError> {
        self.abandon_job(job).instrument(job_span(job)).await
    }

    async fn abandon_job(&self, job: &DeliveryJob) -> Result<Delivered, DeliverError> {
        let reason = wire_reason(FailReason::GaveUp, Some(FailReason::DeadLetter.as_str()));
        let moved = self
            .log
            .finish(
                &job.org_id,
                &job.notification_id,
                &job.recipient,
                job.slot(),
                Finish::Abandon {
                    reason: reason.clone(),
                },
            )
            .await?;
        if moved {
            // The message the failure alarm's log filter counts.
            tracing::warn!(reason = %reason, "delivery failed");
            self.count(job, Some(job.provider), Outcome::Failed, None);
            self.after_done(job, DeliveryStatus::Failed).await?;
            return Ok(Delivered::Failed { reason });
        }
        let record = self
            .log
            .recipient_records(&job.org_id, &job.notification_id, &job.recipient)
            .await?
            .into_iter()
            .find(|r| r.slot() == job.slot());
        match record {
            None => Ok(Delivered::NoRecord),
            Some(r) if r.status == DeliveryStatus::Pending => Err(DeliverError::Retry {
                reason: "a live attempt holds the claim".into(),
            }),
            Some(r) => {
                self.after_done(job, r.status).await?;
                Ok(Delivered::AlreadyDone(r.status))
            }
        }
    }

    fn queue(&self) -> Result<&Arc<dyn JobQueue>, DeliverError> {
        self.queue.as_ref().ok_or_else(|| {
            DeliverError::Queue(QueueError::Failed(anyhow::anyhow!(
                "no queue for fallback deliveries"
            )))
        })
    }

    async fn finish_job(&self, j: &DeliveryJob, outcome: Finish) -> Result<bool, StoreError> {
        self.log
            .finish(
                &j.org_id,
                &j.notification_id,
                &j.recipient,
                j.slot(),
                outcome,
            )
            .await
    }

    /// Runs `f` on every item, a few at a time (a window check may cover thousands of
    /// recipients), keeping the items' order in the answers.
    async fn each<'a, T: Sync, R, F, Fut>(
        &self,
        items: &'a [T],
        f: F,
    ) -> Result<Vec<R>, DeliverError>
    where
        F: Fn(&'a T) -> Fut,
        Fut: std::future::Future<Output = Result<R, StoreError>> + 'a,
    {
        // The futures are made before they are streamed: a stream that maps with `f`
        // itself is not `Send` for every lifetime, which spawning needs.
        let futures: Vec<Fut> = items.iter().map(f).collect();
        futures::stream::iter(futures)
            .buffered(CHECK_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .map(|r| r.map_err(DeliverError::from))
            .collect()
    }

    /// Counts a job's final outcome (a sent SMS's with its segments).
    fn count(
        &self,
        job: &DeliveryJob,
        p: Option<Provider>,
        outcome: Outcome,
        sms: Option<SmsCount>,
    ) {
        let latency = match (outcome, job.created_at) {
            (Outcome::Sent, Some(at)) => (chrono::Utc::now() - at).to_std().ok(),
            _ => None,
        };
        self.metrics.delivery(&DeliveryMetric {
            channel: job.channel,
            provider: p,
            outcome,
            fallback: job.fallback,
            latency,
            sms: sms.map(|c| crate::ports::SmsUsage {
                control_center_id: job.control_center_id.clone(),
                segments: c.segments,
            }),
        });
    }
}

mod attempt;
mod check;
mod escalate_pages;
mod send;
#[cfg(test)]
mod tests;
