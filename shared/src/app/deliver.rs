//! Carrying out one delivery job: claim its record, call the channel's sender, record
//! the outcome; after push, resolve the SMS and email held behind it.

use super::ended;
use super::failover::Accepted;
use crate::domain::health::HealthScope;
use crate::domain::reason::{FallbackReason, wire_reason};
use crate::domain::routing::{
    Action, HeldDelivery, JobTemplate, PushOutcome, WindowStep, after_push, window_step,
};
use crate::domain::settings::effective_sender;
use crate::domain::{
    Channel, CheckJob, CheckKind, DeliveryJob, DeliveryRecord, DeliveryStatus, Destination,
    EmailAddress, FailReason, FailureKind, Provider, RecipientRef,
};
use crate::domain::{EmailSettings, SmsSettings};
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

/// How long a transient failure waits before attempt `attempt + 1`: `base`, doubling with
/// each attempt, capped at 30 times `base`. The delivery functions (10 s, through the
/// queue's visibility) and the local runner use it alike.
pub fn retry_delay(base: Duration, attempt: u32) -> Duration {
    (base * 2u32.pow(attempt.clamp(1, 6) - 1)).min(base * 30)
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
        .filter(|r| !r.awaiting_push)
        .filter_map(job)
        .collect();
    let mut seen = std::collections::HashSet::new();
    let pushes: Vec<&crate::domain::DeliveryRecord> = logged
        .records
        .iter()
        .filter(pending)
        .filter(|r| r.awaiting_push)
        .filter_map(|held| {
            logged.records.iter().find(|p| {
                p.channel == Channel::Push
                    && p.cycle == 0
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
    if let Some(plan) = n.escalation {
        let next = logged.records.iter().map(|r| r.cycle).max().unwrap_or(0) + 1;
        // A cycle overdue by more than its interval (the runner was down that long) is
        // not started late: a dispatch that old is no longer news worth waking someone.
        let stale = chrono::Utc::now()
            > plan.due(next) + chrono::TimeDelta::seconds(plan.after_seconds.into());
        if next <= plan.cycles && !stale && !unacknowledged(logged).is_empty() {
            checks.push((
                CheckJob {
                    check: CheckKind::Escalation,
                    org_id: n.org_id.clone(),
                    notification_id: n.notification_id.clone(),
                    cycle: next,
                    lane: n.category.lane(),
                },
                plan.due(next),
            ));
        }
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
        .filter(|r| r.awaiting_push && r.status == DeliveryStatus::Pending)
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

    /// A push that ended before its follow-up was recorded: finish that now.
    async fn after_done(
        &self,
        job: &DeliveryJob,
        status: DeliveryStatus,
    ) -> Result<(), DeliverError> {
        // Only the notification's own push (cycle 0) holds SMS and email back.
        if job.channel == Channel::Push && job.cycle == 0 {
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
            self.count(job, Some(job.provider), Outcome::Failed);
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

    async fn attempt(
        &self,
        job: &DeliveryJob,
        attempts: u32,
        final_attempt: bool,
    ) -> Result<Delivered, DeliverError> {
        let result = match job.channel {
            Channel::Push => self.send_push(job).await.map(Accepted::direct),
            Channel::Sms => self.send_sms(job, final_attempt).await,
            Channel::Email => self.send_email(job, final_attempt).await,
        };
        let finish = |outcome| {
            self.log.finish(
                &job.org_id,
                &job.notification_id,
                &job.recipient,
                job.slot(),
                outcome,
            )
        };
        match result {
            Ok(Accepted {
                receipt,
                failover_from,
                receipt_key,
            }) => {
                if crate::faults::crash_after_send(job) {
                    // As if the process died here: nothing after this runs.
                    panic!(
                        "{}: injected crash between the provider's answer and the sent write",
                        crate::faults::MARKER
                    );
                }
                let moved = finish(Finish::Sent {
                    attempt: attempts,
                    provider: receipt.provider,
                    provider_message_id: receipt.provider_message_id.clone(),
                    receipt_key,
                    failover_from,
                })
                .await?;
                tracing::info!(
                    provider = receipt.provider.as_str(),
                    failover_from = failover_from.map(Provider::as_str),
                    fallback = job.fallback,
                    "delivery sent"
                );
                if moved {
                    self.count(job, Some(receipt.provider), Outcome::Sent);
                }
                if job.channel == Channel::Push && job.cycle == 0 {
                    self.resolve_held(job, PushOutcome::Sent).await?;
                }
                Ok(Delivered::Sent {
                    provider_message_id: receipt.provider_message_id,
                })
            }
            // Before the final-attempt rule: waiting for the pace, or for a provider
            // that asked to slow down for longer than an attempt may wait, is no
            // failure and spends no attempt.
            Err(e) if e.kind() == FailureKind::Throttled => {
                finish(Finish::Postpone {
                    attempt: attempts,
                    reason: e.reason(),
                })
                .await?;
                let after = postpone_delay(e.retry_after());
                tracing::info!(
                    reason = %e.reason(),
                    after_ms = after.as_millis() as u64,
                    "no moment free at the provider in time: postponed"
                );
                Err(DeliverError::Postpone { after })
            }
            Err(e) if e.retries() && !final_attempt => {
                finish(Finish::Retry {
                    attempt: attempts,
                    reason: e.reason(),
                })
                .await?;
                tracing::warn!(reason = %e.reason(), "delivery failed, will retry");
                Err(DeliverError::Retry { reason: e.reason() })
            }
            Err(e) => {
                let reason = if e.is_transient() {
                    wire_reason(FailReason::GaveUp, Some(&e.reason()))
                } else {
                    e.reason()
                };
                let moved = finish(Finish::Failed {
                    attempt: attempts,
                    reason: reason.clone(),
                })
                .await?;
                tracing::warn!(reason = %reason, error = ?e, "delivery failed");
                if moved {
                    self.count(job, Some(job.provider), Outcome::Failed);
                }
                if job.channel == Channel::Push && job.cycle == 0 {
                    self.resolve_held(job, PushOutcome::FailedOnEveryDevice)
                        .await?;
                }
                Ok(Delivered::Failed { reason })
            }
        }
    }

    /// After push: held SMS and email end `push_sent`, or are enqueued as fallback and
    /// then released. Their `fallback_reason` is written while they are still held, so a
    /// fallback job that runs at once cannot finish first. Enqueued before released: a
    /// failed enqueue or a crash in between leaves them held, so the push job's retry
    /// (which finds push done) enqueues them again, and a duplicate job is harmless (its
    /// claim finds the record done or in flight). Each record moves only while held, so
    /// running this twice is harmless too.
    async fn resolve_held(
        &self,
        job: &DeliveryJob,
        outcome: PushOutcome,
    ) -> Result<(), DeliverError> {
        let records = self
            .log
            .recipient_records(&job.org_id, &job.notification_id, &job.recipient)
            .await?;
        let held: Vec<HeldDelivery> = records
            .iter()
            .filter(|r| r.awaiting_push && r.status == DeliveryStatus::Pending)
            .filter_map(|r| {
                Some(HeldDelivery {
                    channel: r.channel,
                    provider: r.provider?,
                    destination: r.destination.clone()?,
                })
            })
            .collect();
        if held.is_empty() {
            return Ok(());
        }
        if outcome == PushOutcome::Sent
            && let Some(window) = job.app_fallback_seconds
        {
            // The window starts now; a repeated run keeps the first one's end.
            let until = chrono::Utc::now() + chrono::TimeDelta::seconds(window.into());
            for h in &held {
                self.log
                    .finish(
                        &job.org_id,
                        &job.notification_id,
                        &job.recipient,
                        h.channel.into(),
                        Finish::Wait { until },
                    )
                    .await?;
            }
            tracing::info!(
                window_seconds = window,
                fallback_at = %until,
                "push sent: SMS and email wait for the app's receipt"
            );
            return Ok(());
        }
        let template = JobTemplate::from(job);
        let mut jobs = Vec::new();
        for d in after_push(&held, outcome) {
            match &d.action {
                Action::Send {
                    provider,
                    destination,
                } => {
                    jobs.push(template.job(&job.recipient, d.channel, *provider, destination, true))
                }
                Action::Skip(r) => {
                    let provider = held.iter().find(|h| h.channel == d.channel);
                    ended::finish(
                        self.log.as_ref(),
                        self.metrics.as_ref(),
                        &job.org_id,
                        &job.notification_id,
                        &job.recipient,
                        d.channel.into(),
                        provider.map(|h| h.provider),
                        Finish::SkipHeld {
                            reason: r.as_str().to_string(),
                        },
                    )
                    .await?;
                }
                Action::AwaitPush { .. } => {}
            }
        }
        if jobs.is_empty() {
            return Ok(());
        }
        let jobs: Vec<_> = jobs
            .into_iter()
            .map(|j| (j, FallbackReason::PushFailed))
            .collect();
        self.fall_back(&jobs).await?;
        tracing::info!(
            fallbacks = jobs.len(),
            "push failed on every device: fallback enqueued"
        );
        Ok(())
    }

    fn queue(&self) -> Result<&Arc<dyn JobQueue>, DeliverError> {
        self.queue.as_ref().ok_or_else(|| {
            DeliverError::Queue(QueueError::Failed(anyhow::anyhow!(
                "no queue for fallback deliveries"
            )))
        })
    }

    /// Sends held deliveries as fallback: each one's reason is written while it is still
    /// held, then all are enqueued at once, then released. See [`Self::resolve_held`]
    /// for why this order is safe to repeat.
    async fn fall_back(&self, jobs: &[(DeliveryJob, FallbackReason)]) -> Result<(), DeliverError> {
        let queue = self.queue()?;
        let marked: Vec<bool> = self
            .each(jobs, |(j, why)| {
                self.finish_job(
                    j,
                    Finish::WillFallBack {
                        fallback_reason: *why,
                    },
                )
            })
            .await?;
        // A record no longer held (a receipt skipped it, or another run released it)
        // is not enqueued again.
        let go: Vec<DeliveryJob> = jobs
            .iter()
            .zip(marked)
            .filter(|(_, held)| *held)
            .map(|((j, _), _)| j.clone())
            .collect();
        if go.is_empty() {
            return Ok(());
        }
        queue.enqueue(&go).await?;
        // False when the fallback job already claimed it: that is fine.
        self.each(&go, |j| self.finish_job(j, Finish::Release))
            .await?;
        Ok(())
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

    /// Runs a notification's timer check at `now`: every recipient whose SMS and email
    /// are still held behind push gets the window rule ([`window_step`]). Answers when to
    /// check again, if anything is still waiting. Idempotent: each record moves only
    /// while held, so a check that runs twice, late, or after a receipt sends nothing
    /// twice and nothing a receipt stopped.
    pub async fn check(
        &self,
        check: &CheckJob,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Checked, DeliverError> {
        let span = tracing::info_span!(
            "check",
            notification_id = %check.notification_id,
            check = ?check.check,
        );
        self.run_check(check, now).instrument(span).await
    }

    async fn run_check(
        &self,
        check: &CheckJob,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Checked, DeliverError> {
        let Some(logged) = self
            .log
            .get_notification(&check.org_id, &check.notification_id)
            .await?
        else {
            tracing::warn!("check of an unknown notification: dropped");
            return Ok(Checked::default());
        };
        if check.check == CheckKind::Escalation {
            return self.escalate(check, &logged, now).await;
        }
        // Without a window the push job resolves what it holds back itself.
        let Some(window) = logged.notification.app_fallback_seconds.filter(|w| *w > 0) else {
            return Ok(Checked::default());
        };
        let window = chrono::TimeDelta::seconds(window.into());
        let template = JobTemplate::from(&logged.notification);
        let mut pushes: HashMap<String, &DeliveryRecord> = HashMap::new();
        // Only the notification's own push holds anything back (escalation cycles send
        // on every channel at once).
        for r in logged
            .records
            .iter()
            .filter(|r| r.channel == Channel::Push && r.cycle == 0)
        {
            pushes.insert(r.recipient.key(), r);
        }
        let mut fall_back = Vec::new();
        let mut skip = Vec::new();
        let mut next: Option<chrono::DateTime<chrono::Utc>> = None;
        for held in logged
            .records
            .iter()
            .filter(|r| r.awaiting_push && r.status == DeliveryStatus::Pending)
        {
            let push = pushes.get(&held.recipient.key());
            let step = match push {
                Some(p) => window_step(p.status, held.fallback_at, window, now),
                None => WindowStep::FallBack(FallbackReason::PushNotPossible),
            };
            match step {
                WindowStep::FallBack(why) => {
                    let (Some(provider), Some(destination)) =
                        (held.provider, held.destination.as_ref())
                    else {
                        continue;
                    };
                    let job =
                        template.job(&held.recipient, held.channel, provider, destination, true);
                    fall_back.push((job, why));
                }
                WindowStep::Skip(reason) => skip.push((held, reason)),
                WindowStep::WaitUntil(at) => next = Some(next.map_or(at, |n| n.min(at))),
            }
        }
        // Bounded work per run, so a run over a huge notification ends well inside the
        // function's timeout: what it moves is no longer held, so the next run (at once)
        // carries on where it stopped instead of starting over.
        if fall_back.len() + skip.len() > CHECK_BATCH {
            fall_back.truncate(CHECK_BATCH);
            skip.truncate(CHECK_BATCH - fall_back.len());
            next = Some(now);
        }
        let skipped: Vec<bool> = self
            .each(&skip, |(r, reason)| {
                ended::finish(
                    self.log.as_ref(),
                    self.metrics.as_ref(),
                    &check.org_id,
                    &check.notification_id,
                    &r.recipient,
                    r.slot(),
                    r.provider,
                    Finish::SkipHeld {
                        reason: reason.as_str().to_string(),
                    },
                )
            })
            .await?;
        self.fall_back(&fall_back).await?;
        let checked = Checked {
            fallbacks: fall_back.len(),
            skipped: skipped.into_iter().filter(|m| *m).count(),
            next,
            ..Checked::default()
        };
        tracing::info!(
            fallbacks = checked.fallbacks,
            skipped = checked.skipped,
            next_check = ?checked.next,
            "window check"
        );
        Ok(checked)
    }

    /// Escalation cycle `check.cycle`: everyone the notification was for who has not
    /// acknowledged is notified again on every channel they can be reached on (as
    /// `app_sms_email` would: the licence, primary-contact and provider rules still
    /// apply), in records of that cycle; then the next cycle's timer is set. Before the
    /// cycle is due (an early or repeated timer) nothing happens but a new timer.
    /// Idempotent: records are written only where none exist, and a repeated job finds
    /// its record claimed or sent.
    async fn escalate(
        &self,
        check: &CheckJob,
        logged: &crate::ports::Logged,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Checked, DeliverError> {
        use crate::domain::routing::{self, Recipient, RoutingContext};
        let n = &logged.notification;
        let Some(plan) = n.escalation else {
            return Ok(Checked::default());
        };
        let cycle = check.cycle;
        if cycle == 0 || cycle > plan.cycles {
            return Ok(Checked::default());
        }
        if now < plan.due(cycle) {
            return Ok(Checked {
                next: Some(plan.due(cycle)),
                ..Checked::default()
            });
        }
        let users = unacknowledged(logged);
        if users.is_empty() {
            tracing::info!(cycle, "escalation stopped: everyone acknowledged");
            return Ok(Checked::default());
        }
        let all = self.settings.all(&n.org_id).await?;
        let providers = super::notify::Providers::of(&all, &n.control_center_id);
        let mut settings = all.communication.unwrap_or_default();
        settings.dispatch = crate::domain::Method::AppSmsEmail;
        let ctx = RoutingContext {
            category: n.category,
            settings: &settings,
            sms_provider: providers.sms,
            email_provider: providers.email,
        };
        let found = self.directory.get_users(&n.org_id, &users).await?;
        let recipients: Vec<Recipient> = found.iter().map(Recipient::User).collect();
        let plans = routing::plan(&ctx, &recipients).recipients;
        let template = JobTemplate::from(n);
        let mut records = Vec::new();
        let mut jobs = Vec::new();
        for p in &plans {
            records.extend(p.records(&n.notification_id).into_iter().map(|mut r| {
                r.cycle = cycle;
                r
            }));
            jobs.extend(p.jobs(&template).into_iter().map(|mut j| {
                j.cycle = cycle;
                // An escalation's push waits for nothing and holds nothing back.
                j.app_fallback_seconds = None;
                j
            }));
        }
        // Held SMS and email of cycle 0 would repeat what this cycle sends: they end
        // `escalated` (only while still held).
        let held: Vec<&DeliveryRecord> = logged
            .records
            .iter()
            .filter(|r| r.cycle == 0 && r.awaiting_push && r.status == DeliveryStatus::Pending)
            .filter(|r| jobs.iter().any(|j| j.recipient == r.recipient))
            .collect();
        self.each(&held, |r| {
            ended::finish(
                self.log.as_ref(),
                self.metrics.as_ref(),
                &n.org_id,
                &n.notification_id,
                &r.recipient,
                r.slot(),
                r.provider,
                Finish::SkipHeld {
                    reason: crate::domain::SkipReason::Escalated.as_str().to_string(),
                },
            )
        })
        .await?;
        self.log.put_records(n, &records).await?;
        // An ack that landed while this cycle was being written: its records did not
        // exist when the ack looked, so they are cancelled here, and not enqueued.
        let acked_now: std::collections::HashSet<String> = self
            .log
            .get_notification(&n.org_id, &n.notification_id)
            .await?
            .map(|l| {
                l.acks
                    .into_iter()
                    .map(|(u, _)| RecipientRef::User(u).key())
                    .collect()
            })
            .unwrap_or_default();
        let late: Vec<&DeliveryRecord> = records
            .iter()
            .filter(|r| acked_now.contains(&r.recipient.key()))
            .collect();
        self.each(&late, |r| {
            ended::finish(
                self.log.as_ref(),
                self.metrics.as_ref(),
                &n.org_id,
                &n.notification_id,
                &r.recipient,
                r.slot(),
                r.provider,
                Finish::Cancel {
                    reason: crate::domain::SkipReason::Acknowledged.as_str().to_string(),
                },
            )
        })
        .await?;
        jobs.retain(|j| !acked_now.contains(&j.recipient.key()));
        if !jobs.is_empty() {
            self.queue()?.enqueue(&jobs).await?;
        }
        tracing::info!(
            cycle,
            recipients = plans.len(),
            jobs = jobs.len(),
            "escalation cycle started"
        );
        let follow_up = (cycle < plan.cycles).then(|| {
            (
                CheckJob {
                    cycle: cycle + 1,
                    // The notification's own (a timer queued before lanes has none).
                    lane: n.category.lane(),
                    ..check.clone()
                },
                plan.due(cycle + 1),
            )
        });
        Ok(Checked {
            escalated: plans.len(),
            follow_up,
            ..Checked::default()
        })
    }

    /// Runs a check and schedules what it asks for (SQS: delayed messages): itself
    /// again when it was early, the next escalation cycle when one follows.
    pub async fn check_and_reschedule(
        &self,
        check: &CheckJob,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Checked, DeliverError> {
        let checked = self.check(check, now).await?;
        let again = checked.next.map(|at| (check.clone(), at));
        for (next, at) in again.iter().chain(checked.follow_up.iter()) {
            let delay = (*at - now).to_std().unwrap_or_default();
            self.queue()?
                .schedule(next, delay.min(crate::ports::MAX_CHECK_DELAY))
                .await?;
        }
        Ok(checked)
    }

    /// Counts a job's final outcome.
    fn count(&self, job: &DeliveryJob, provider: Option<Provider>, outcome: Outcome) {
        let latency = match (outcome, job.created_at) {
            (Outcome::Sent, Some(at)) => (chrono::Utc::now() - at).to_std().ok(),
            _ => None,
        };
        self.metrics.delivery(&DeliveryMetric {
            channel: job.channel,
            provider,
            outcome,
            fallback: job.fallback,
            latency,
        });
    }

    async fn send_push(&self, job: &DeliveryJob) -> Result<crate::ports::Receipt, SendError> {
        let sender = self
            .push
            .as_ref()
            .ok_or_else(|| SendError::permanent(FailReason::ProviderUnavailable))?;
        let Destination::Devices(user_id) = &job.destination else {
            return Err(SendError::permanent(FailReason::BadDestination));
        };
        let user = self
            .directory
            .get_user(&job.org_id, user_id)
            .await
            .map_err(|e| SendError::transient(FailReason::DirectoryUnavailable).with_source(e))?;
        let devices: Vec<_> = user
            .map(|u| u.devices)
            .unwrap_or_default()
            .into_iter()
            .filter(|d| d.endpoint.is_some())
            .collect();
        if devices.is_empty() {
            return Err(SendError::permanent(FailReason::NoDevice));
        }
        // Sent when at least one device took it; else transient if any failure was.
        let mut ids = Vec::new();
        let mut last_err: Option<SendError> = None;
        let mut any_transient = false;
        for d in devices {
            let push = PushMessage {
                notification_id: job.notification_id.clone(),
                recipient: user_id.clone(),
                category: job.category,
                device_id: d.device_id.clone(),
                endpoint: d.endpoint.clone().unwrap_or_default(),
                platform: d.platform,
                message: job.message.clone(),
            };
            match sender.send(&push).await {
                Ok(r) => ids.extend(r.provider_message_id),
                Err(e) => {
                    tracing::warn!(device_id = %d.device_id, reason = %e.reason(), "push to a device failed");
                    any_transient |= e.is_transient();
                    last_err = Some(e);
                }
            }
        }
        if !ids.is_empty() || last_err.is_none() {
            return Ok(crate::ports::Receipt {
                provider: Provider::Sns,
                provider_message_id: (!ids.is_empty()).then(|| ids.join(",")),
            });
        }
        match last_err {
            Some(e) if any_transient => Err(e.into_transient()),
            Some(e) => Err(e),
            None => Err(SendError::permanent(FailReason::NoDevice)),
        }
    }

    async fn send_sms(
        &self,
        job: &DeliveryJob,
        final_attempt: bool,
    ) -> Result<Accepted, SendError> {
        let Destination::Phone(to) = &job.destination else {
            return Err(SendError::permanent(FailReason::BadDestination));
        };
        let sender = self
            .sms
            .get(&job.provider)
            .ok_or_else(|| SendError::permanent(FailReason::ProviderUnavailable))?;
        let settings = self
            .settings
            .effective_sms(&job.org_id, &job.control_center_id)
            .await
            .map_err(|e| SendError::transient(FailReason::SettingsUnavailable).with_source(e))?;
        let sms = SmsMessage {
            notification_id: job.notification_id.clone(),
            delivery_id: Some(job.delivery_id()),
            org_id: job.org_id.clone(),
            control_center_id: settings.as_ref().map_or_else(
                || job.control_center_id.clone(),
                |s| s.control_center_id.clone(),
            ),
            to: to.clone(),
            from: settings.as_ref().and_then(|s| s.sender_number.clone()),
            text: job.message.sms_text(),
            settings,
        };
        let secondary = sms
            .settings
            .as_ref()
            .and_then(SmsSettings::failover)
            .and_then(|p| Some((p, self.sms.get(&p)?)));
        let primary = self.paced(job, &sms, job.provider, sender.as_ref());
        let accepted = match (&self.failover, secondary) {
            (Some(f), Some((second, secondary))) if job.provider == Provider::Http => {
                let scope = HealthScope::Sms(sms.control_center_id.clone());
                // SNS sends as the account, never as the gateway's number.
                let over = SmsMessage {
                    from: sms.settings.as_ref().and_then(SmsSettings::failover_sender),
                    ..sms.clone()
                };
                f.send(
                    &job.org_id,
                    &scope,
                    job.provider,
                    final_attempt,
                    primary,
                    || self.paced(job, &over, second, secondary.as_ref()),
                )
                .await?
            }
            _ => Accepted::direct(primary.await?),
        };
        Ok(accepted.keyed(&job.org_id, &sms.control_center_id))
    }

    /// The pace an SMS through `provider` keeps: an HTTP gateway's `max_per_second`
    /// (one without is still held by a 429's pause), SNS's account rate when set.
    fn sms_pace(&self, sms: &SmsMessage, provider: Provider) -> Option<(String, u32)> {
        match (provider, sms.settings.as_ref().map(|s| &s.provider)) {
            (Provider::Http, Some(crate::domain::SmsProvider::Http(g))) => Some((
                format!("http#{}#{}", sms.org_id, sms.control_center_id),
                g.max_per_second.unwrap_or(crate::ports::UNPACED),
            )),
            (Provider::Sns, _) => self.sns_per_second.map(|r| ("sns".to_string(), r)),
            _ => None,
        }
    }

    /// Sends at the provider's pace (urgent lanes first), and waits out its "slow down"
    /// (a 429's `Retry-After`, for every sender to it) and tries again, instead of
    /// spending an attempt, for up to [`THROTTLE_BUDGET`].
    async fn paced(
        &self,
        job: &DeliveryJob,
        sms: &SmsMessage,
        provider: Provider,
        sender: &dyn SmsSender,
    ) -> Result<crate::ports::Receipt, SendError> {
        let (Some(pacer), Some((key, rate))) = (&self.pacer, self.sms_pace(sms, provider)) else {
            return sender.send(sms).await;
        };
        let mut waited = Duration::ZERO;
        loop {
            let slot = pacer.acquire(&key, rate, job.lane());
            match self.max_pace_wait {
                Some(limit) => {
                    let left = limit.saturating_sub(waited);
                    let started = tokio::time::Instant::now();
                    if left.is_zero() || tokio::time::timeout(left, slot).await.is_err() {
                        return Err(SendError::paced());
                    }
                    waited += started.elapsed();
                }
                None => slot.await,
            }
            match sender.send(sms).await {
                Err(e) if e.retry_after().is_some() => {
                    // `Retry-After: 0` (or a date gone by) is still a refusal: a short
                    // wait at least, so a provider that keeps refusing is not hammered.
                    let d = e.retry_after().unwrap_or_default().max(MIN_THROTTLE_WAIT);
                    // Every sender to it holds off, also when this one gives up.
                    pacer.pause(&key, d).await;
                    let budget = THROTTLE_BUDGET.min(self.max_pace_wait.unwrap_or(THROTTLE_BUDGET));
                    if waited + d > budget {
                        return Err(e);
                    }
                    tracing::info!(
                        provider = provider.as_str(),
                        wait_ms = d.as_millis() as u64,
                        "the provider asked to slow down: waiting"
                    );
                    tokio::time::sleep(d).await;
                    waited += d;
                }
                other => return other,
            }
        }
    }

    async fn send_email(
        &self,
        job: &DeliveryJob,
        final_attempt: bool,
    ) -> Result<Accepted, SendError> {
        let Destination::Email(to) = &job.destination else {
            return Err(SendError::permanent(FailReason::BadDestination));
        };
        let sender = self
            .email
            .get(&job.provider)
            .ok_or_else(|| SendError::permanent(FailReason::ProviderUnavailable))?;
        let settings =
            self.settings.get_email(&job.org_id).await.map_err(|e| {
                SendError::transient(FailReason::SettingsUnavailable).with_source(e)
            })?;
        let from = effective_sender(settings.as_ref(), self.default_sender.as_ref())
            .cloned()
            .ok_or_else(|| SendError::permanent(FailReason::NoSenderAddress))?;
        let email = EmailMessage {
            notification_id: job.notification_id.clone(),
            delivery_id: Some(job.delivery_id()),
            org_id: job.org_id.clone(),
            to: to.clone(),
            from,
            subject: job.message.title.clone(),
            text: job.message.email_text(),
            html: Some(job.message.html()),
            settings,
        };
        let secondary = email
            .settings
            .as_ref()
            .and_then(EmailSettings::failover)
            .and_then(|p| self.email.get(&p));
        let accepted = match (&self.failover, secondary) {
            (Some(f), Some(secondary)) if job.provider == Provider::Smtp => {
                // SES sends from the organization's address where it may; where it
                // refuses that sender, from the default account.
                let via_secondary = || async {
                    match secondary.send(&email).await {
                        Err(e) if !e.is_transient() => match &self.default_sender {
                            Some(d) if d != &email.from => {
                                tracing::info!(reason = %e.reason(), "the failover provider refused the sender: from the default account");
                                let mut m = email.clone();
                                m.from = d.clone();
                                secondary.send(&m).await
                            }
                            _ => Err(e),
                        },
                        r => r,
                    }
                };
                f.send(
                    &job.org_id,
                    &HealthScope::Email,
                    job.provider,
                    final_attempt,
                    sender.send(&email),
                    via_secondary,
                )
                .await?
            }
            _ => Accepted::direct(sender.send(&email).await?),
        };
        Ok(accepted.keyed(&job.org_id, &job.control_center_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_longer_each_time_up_to_thirty_times_the_base() {
        let base = Duration::from_secs(10);
        let waits: Vec<u64> = (1..=7).map(|a| retry_delay(base, a).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(
            retry_delay(base, 0),
            base,
            "a first attempt never waits less"
        );
    }

    #[test]
    fn unfinished_work_is_each_pending_record_and_the_push_behind_unresolved_held_ones() {
        use crate::domain::*;
        let org = OrgId::parse("acme").unwrap();
        let n = Notification {
            notification_id: NotificationId::parse("n-1").unwrap(),
            org_id: org,
            category: Category::Dispatch,
            incident_id: None,
            control_center_id: ControlCenterId::main(),
            message: Message::default(),
            created_at: chrono::Utc::now(),
            app_fallback_seconds: None,
            escalation: None,
        };
        let record = |who: &str, channel, status, held| {
            let user = UserId::parse(who).unwrap();
            DeliveryRecord {
                notification_id: n.notification_id.clone(),
                recipient: RecipientRef::User(user.clone()),
                channel,
                status,
                reason: None,
                attempts: 2,
                fallback: false,
                provider: Some(Provider::Sns),
                provider_message_id: None,
                destination: Some(Destination::Devices(user)),
                awaiting_push: held,
                claimed_until: None,
                delivered_at: None,
                fallback_reason: None,
                fallback_at: None,
                cycle: 0,
                failover_from: None,
                detail: None,
                complaint: false,
            }
        };
        use DeliveryStatus::{Pending, Sent};
        let logged = crate::ports::Logged {
            notification: n.clone(),
            records: vec![
                // u-1: push pending, SMS and email held behind it: only the push job.
                record("u-1", Channel::Push, Pending, false),
                record("u-1", Channel::Sms, Pending, true),
                record("u-1", Channel::Email, Pending, true),
                // u-2: push sent, its held SMS and email never resolved: the push job
                // once, which resolves both.
                record("u-2", Channel::Sms, Pending, true),
                record("u-2", Channel::Push, Sent, false),
                record("u-2", Channel::Email, Pending, true),
                // u-3: an SMS of its own, pending; its email sent.
                record("u-3", Channel::Sms, Pending, false),
                record("u-3", Channel::Email, Sent, false),
            ],
            acks: vec![],
        };
        let jobs: Vec<(String, Channel, u32)> = unfinished_jobs(&logged)
            .into_iter()
            .map(|(j, a)| (j.recipient.key(), j.channel, a))
            .collect();
        assert_eq!(
            jobs,
            [
                ("user:u-1".to_string(), Channel::Push, 2),
                ("user:u-3".to_string(), Channel::Sms, 2),
                ("user:u-2".to_string(), Channel::Push, 2),
            ]
        );
    }
}
