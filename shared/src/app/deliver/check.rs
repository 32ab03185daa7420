//! Scheduled checks: the app fallback window's end and dispatch escalation cycles.

use super::*;

impl Deliverer {
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

    pub(super) async fn run_check(
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
    pub(super) async fn escalate(
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
        let providers = crate::app::notify::Providers::of(&all, &n.control_center_id);
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
        self.end_records(n, &held, || Finish::SkipHeld {
            reason: crate::domain::SkipReason::Escalated.as_str().to_string(),
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
        self.end_records(n, &late, || Finish::Cancel {
            reason: crate::domain::SkipReason::Acknowledged.as_str().to_string(),
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

    /// Ends each of `records` of `n` the same way (`outcome`), counted in the metrics.
    async fn end_records(
        &self,
        n: &crate::domain::Notification,
        records: &[&DeliveryRecord],
        outcome: impl Fn() -> Finish + Sync,
    ) -> Result<(), DeliverError> {
        self.each(records, |r| {
            ended::finish(
                self.log.as_ref(),
                self.metrics.as_ref(),
                &n.org_id,
                &n.notification_id,
                &r.recipient,
                r.slot(),
                r.provider,
                outcome(),
            )
        })
        .await
        .map(drop)
    }
}
