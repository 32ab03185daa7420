//! One attempt at a job (claimed), and what follows a push: the SMS and email held
//! behind it resolved, sent as fallback or skipped.

use super::*;

impl Deliverer {
    pub(super) async fn attempt(
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
        match result {
            Ok(accepted) => self.record_sent(job, attempts, accepted).await,
            Err(e) => match after_failure(&e, final_attempt) {
                AfterFailure::Postpone => self.postpone(job, attempts, &e).await,
                AfterFailure::Retry => self.retry_later(job, attempts, &e).await,
                AfterFailure::Fail => self.record_failed(job, attempts, &e).await,
            },
        }
    }

    /// The provider took the message: the record ends `sent` (counted once, by the
    /// attempt that moved it); the notification's own push then resolves what it held.
    async fn record_sent(
        &self,
        job: &DeliveryJob,
        attempts: u32,
        accepted: Accepted,
    ) -> Result<Delivered, DeliverError> {
        let Accepted {
            receipt,
            failover_from,
            receipt_key,
            sms,
        } = accepted;
        if crate::faults::crash_after_send(job) {
            // As if the process died here: nothing after this runs.
            panic!(
                "{}: injected crash between the provider's answer and the sent write",
                crate::faults::MARKER
            );
        }
        // Before the record says sent: a reply to an SMS the log shows as sent always
        // finds the notification it answers.
        self.remember_reply_target(job, receipt.provider).await;
        let moved = self
            .finish_job(
                job,
                Finish::Sent {
                    attempt: attempts,
                    provider: receipt.provider,
                    provider_message_id: receipt.provider_message_id.clone(),
                    receipt_key,
                    failover_from,
                    sms,
                },
            )
            .await?;
        tracing::info!(
            provider = receipt.provider.as_str(),
            failover_from = failover_from.map(Provider::as_str),
            fallback = job.fallback,
            "delivery sent"
        );
        if moved {
            self.count(job, Some(receipt.provider), Outcome::Sent, sms);
        }
        if holds_others_back(job.channel, job.cycle) {
            self.resolve_held(job, PushOutcome::Sent).await?;
        }
        Ok(Delivered::Sent {
            provider_message_id: receipt.provider_message_id,
        })
    }

    /// A dispatch SMS to a user: a reply from the number answers this notification (the
    /// newest such SMS wins), in its organization, and when SNS sent it in any (End User
    /// Messaging's replies name no organization). A failure to remember it is logged, not
    /// retried: the SMS is sent, and a retry would find it so and not come back here.
    async fn remember_reply_target(&self, job: &DeliveryJob, sent_by: Provider) {
        let (
            crate::domain::Category::Dispatch,
            Channel::Sms,
            RecipientRef::User(user),
            Destination::Phone(to),
        ) = (job.category, job.channel, &job.recipient, &job.destination)
        else {
            return;
        };
        let sent = crate::ports::SmsSent {
            notification_id: job.notification_id.clone(),
            user_id: user.clone(),
            at: chrono::Utc::now(),
            org_id: Some(job.org_id.clone()),
            control_center_id: Some(job.control_center_id.clone()),
            incident_id: job.incident_id.as_ref().map(ToString::to_string),
        };
        let anywhere = (sent_by == Provider::Sns).then_some(None);
        for scope in [Some(&job.org_id)].into_iter().chain(anywhere) {
            if let Err(e) = self.log.remember_sms(scope, to, &sent).await {
                tracing::warn!(error = ?e, "could not remember the SMS for its replies");
            }
        }
    }

    /// No moment at the provider in time: the claim is dropped without spending the
    /// attempt, and the job goes again after what the provider asked for.
    async fn postpone(
        &self,
        job: &DeliveryJob,
        attempts: u32,
        e: &SendError,
    ) -> Result<Delivered, DeliverError> {
        let outcome = Finish::Postpone {
            attempt: attempts,
            reason: e.reason(),
        };
        self.finish_job(job, outcome).await?;
        let after = postpone_delay(e.retry_after());
        tracing::info!(
            reason = %e.reason(),
            after_ms = after.as_millis() as u64,
            "no moment free at the provider in time: postponed"
        );
        Err(DeliverError::Postpone { after })
    }

    /// A transient failure with attempts left: the record stays pending and the queue
    /// tries the job again.
    async fn retry_later(
        &self,
        job: &DeliveryJob,
        attempts: u32,
        e: &SendError,
    ) -> Result<Delivered, DeliverError> {
        let outcome = Finish::Retry {
            attempt: attempts,
            reason: e.reason(),
        };
        self.finish_job(job, outcome).await?;
        tracing::warn!(reason = %e.reason(), "delivery failed, will retry");
        Err(DeliverError::Retry { reason: e.reason() })
    }

    /// The record ends failed (counted once); the notification's own push then sends
    /// what it held as fallback.
    async fn record_failed(
        &self,
        job: &DeliveryJob,
        attempts: u32,
        e: &SendError,
    ) -> Result<Delivered, DeliverError> {
        let reason = failed_reason(e);
        let outcome = Finish::Failed {
            attempt: attempts,
            reason: reason.clone(),
        };
        let moved = self.finish_job(job, outcome).await?;
        tracing::warn!(reason = %reason, error = ?e, "delivery failed");
        if moved {
            self.count(job, Some(job.provider), Outcome::Failed, None);
        }
        if holds_others_back(job.channel, job.cycle) {
            self.resolve_held(job, PushOutcome::FailedOnEveryDevice)
                .await?;
        }
        Ok(Delivered::Failed { reason })
    }

    /// After push: held SMS and email end `push_sent`, or are enqueued as fallback and
    /// then released. Their `fallback_reason` is written while they are still held, so a
    /// fallback job that runs at once cannot finish first. Enqueued before released: a
    /// failed enqueue or a crash in between leaves them held, so the push job's retry
    /// (which finds push done) enqueues them again, and a duplicate job is harmless (its
    /// claim finds the record done or in flight). Each record moves only while held, so
    /// running this twice is harmless too.
    pub(super) async fn resolve_held(
        &self,
        job: &DeliveryJob,
        outcome: PushOutcome,
    ) -> Result<(), DeliverError> {
        let records = self
            .log
            .recipient_records(&job.org_id, &job.notification_id, &job.recipient)
            .await?;
        let held = held_deliveries(&records);
        if held.is_empty() {
            return Ok(());
        }
        if outcome == PushOutcome::Sent
            && let Some(window) = job.app_fallback_seconds
        {
            return self.start_window(job, &held, window).await;
        }
        let AfterPush { send: jobs, skip } = after_push_steps(job, &held, outcome);
        for (channel, provider, reason) in skip {
            ended::finish(
                self.log.as_ref(),
                self.metrics.as_ref(),
                &job.org_id,
                &job.notification_id,
                &job.recipient,
                channel.into(),
                provider,
                Finish::SkipHeld {
                    reason: reason.as_str().to_string(),
                },
            )
            .await?;
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

    /// A sent push with a fallback window: its held SMS and email wait for the app's
    /// receipt until the window ends (from now; a repeated run keeps the first one's
    /// end), when the window check decides.
    async fn start_window(
        &self,
        job: &DeliveryJob,
        held: &[HeldDelivery],
        window: u32,
    ) -> Result<(), DeliverError> {
        let until = chrono::Utc::now() + chrono::TimeDelta::seconds(window.into());
        for h in held {
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
        Ok(())
    }

    /// Sends held deliveries as fallback: each one's reason is written while it is still
    /// held, then all are enqueued at once, then released. See [`Self::resolve_held`]
    /// for why this order is safe to repeat.
    pub(super) async fn fall_back(
        &self,
        jobs: &[(DeliveryJob, FallbackReason)],
    ) -> Result<(), DeliverError> {
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
}

/// What an attempt does after its send failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterFailure {
    /// Queue the job again later; the attempt is not spent.
    Postpone,
    /// Leave the record pending for the queue's next try.
    Retry,
    /// End the record failed.
    Fail,
}

/// The failure rule. Before the final-attempt rule: waiting for the pace, or for a
/// provider that asked to slow down for longer than an attempt may wait, is no failure
/// and spends no attempt. A transient failure retries while attempts are left; a
/// permanent one, or the last attempt's, fails.
pub(super) fn after_failure(e: &SendError, final_attempt: bool) -> AfterFailure {
    if e.kind() == FailureKind::Throttled {
        AfterFailure::Postpone
    } else if e.retries() && !final_attempt {
        AfterFailure::Retry
    } else {
        AfterFailure::Fail
    }
}

/// The reason a failed record ends with: a transient failure's (the last attempt's) is
/// `gave_up`, with what the provider last said.
pub(super) fn failed_reason(e: &SendError) -> String {
    if e.is_transient() {
        wire_reason(FailReason::GaveUp, Some(&e.reason()))
    } else {
        e.reason()
    }
}

/// A recipient's records held behind push, as [`after_push`] takes them (one without a
/// provider or destination cannot be sent and is left alone).
pub(super) fn held_deliveries(records: &[DeliveryRecord]) -> Vec<HeldDelivery> {
    records
        .iter()
        .filter(|r| r.held_behind_push())
        .filter_map(|r| {
            Some(HeldDelivery {
                channel: r.channel,
                provider: r.provider?,
                destination: r.destination.clone()?,
            })
        })
        .collect()
}

/// What push's outcome does to a recipient's held deliveries.
#[derive(Debug, Default)]
pub(super) struct AfterPush {
    /// The fallback jobs to send.
    pub(super) send: Vec<DeliveryJob>,
    /// The channels that end skipped, with their provider (for the metrics) and why.
    pub(super) skip: Vec<(Channel, Option<Provider>, SkipReason)>,
}

/// What push's outcome does to `job`'s recipient's held deliveries ([`after_push`]).
pub(super) fn after_push_steps(
    job: &DeliveryJob,
    held: &[HeldDelivery],
    outcome: PushOutcome,
) -> AfterPush {
    let template = JobTemplate::from(job);
    let mut steps = AfterPush::default();
    for d in after_push(held, outcome) {
        match &d.action {
            Action::Send {
                provider,
                destination,
            } => steps.send.push(template.job(
                &job.recipient,
                d.channel,
                *provider,
                destination,
                true,
            )),
            Action::Skip(r) => {
                let provider = held.iter().find(|h| h.channel == d.channel);
                steps
                    .skip
                    .push((d.channel, provider.map(|h| h.provider), *r));
            }
            Action::AwaitPush { .. } => {}
        }
    }
    steps
}
