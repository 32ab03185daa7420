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
    pub(super) async fn resolve_held(
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
