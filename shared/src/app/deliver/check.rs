//! Scheduled checks: the app fallback window's end and dispatch escalation cycles.

use super::*;
use crate::domain::UserId;
use std::collections::HashSet;

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
        if check.check == CheckKind::RoutePage {
            return self.route_page(check).await;
        }
        if check.check == CheckKind::Escalation {
            // A notification routed in pages is escalated a page at a time (never read
            // whole); one routed in one piece is a page's size at most.
            let Some(n) = self
                .log
                .notification(&check.org_id, &check.notification_id)
                .await?
            else {
                tracing::warn!("check of an unknown notification: dropped");
                return Ok(Checked::default());
            };
            if n.pages > 0 {
                return self.escalate_paged(check, &n, now).await;
            }
        }
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
        let mut plan = window_plan(&logged, window, now);
        plan.bound(CHECK_BATCH, now);
        self.carry_out_window(check, plan).await
    }

    /// Routes one page of a notification routed in pages (see
    /// [`crate::app::notify::Notifier::route_page`]), with this function's stores and
    /// queue: the pages after the first are the push function's work, as timers are.
    async fn route_page(&self, check: &CheckJob) -> Result<Checked, DeliverError> {
        let Some(queue) = self.queue.clone() else {
            return Err(DeliverError::Queue(QueueError::Failed(anyhow::anyhow!(
                "a route page needs a queue to put its jobs on"
            ))));
        };
        let Some(n) = self
            .log
            .notification(&check.org_id, &check.notification_id)
            .await?
        else {
            tracing::warn!("route page of an unknown notification: dropped");
            return Ok(Checked::default());
        };
        let notifier = crate::app::notify::Notifier {
            settings: self.settings.clone(),
            directory: self.directory.clone(),
            log: self.log.clone(),
            queue,
            metrics: self.metrics.clone(),
            page_size: crate::app::notify::ROUTE_PAGE,
        };
        notifier
            .route_page(&n, check.page)
            .await
            .map_err(DeliverError::from)?;
        Ok(Checked::default())
    }

    /// Does what a window check decided: skips first, then the fallbacks (see
    /// [`Self::fall_back`] for their order), and logs what moved.
    async fn carry_out_window(
        &self,
        check: &CheckJob,
        plan: WindowPlan<'_>,
    ) -> Result<Checked, DeliverError> {
        let skipped: Vec<bool> = self
            .each(&plan.skip, |(r, reason)| {
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
        self.fall_back(&plan.fall_back).await?;
        let checked = Checked {
            fallbacks: plan.fall_back.len(),
            skipped: skipped.into_iter().filter(|m| *m).count(),
            next: plan.next,
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
        let n = &logged.notification;
        let cycle = check.cycle;
        let plan = match self.start_cycle(check, n, now).await? {
            Ok(plan) => plan,
            Err(done) => return Ok(done),
        };
        let users = unacknowledged(logged);
        if users.is_empty() {
            tracing::info!(cycle, "escalation stopped: everyone acknowledged");
            return Ok(Checked::default());
        }
        let plans = self.escalation_plans(n, &users).await?;
        let (records, mut jobs) = cycle_work(n, &plans, cycle);
        let superseded = superseded_held(logged, &jobs);
        self.log.put_records(n, &records).await?;
        let acked_now: HashSet<UserId> = self
            .log
            .get_notification(&n.org_id, &n.notification_id)
            .await?
            .map(|l| l.acks.into_iter().map(|(u, _)| u).collect())
            .unwrap_or_default();
        self.cancel_late_acks(n, &records, &mut jobs, &acked_now)
            .await?;
        if !jobs.is_empty() {
            self.queue()?.enqueue(&jobs).await?;
        }
        // Held SMS and email of cycle 0 would repeat what this cycle sends: they end
        // `escalated` (only while still held), and only once this cycle's own records
        // and jobs exist, so a cycle that stops part-way never leaves anyone with
        // neither (its retry writes nothing twice and finishes this).
        self.end_records(n, &superseded, || Finish::SkipHeld {
            reason: crate::domain::SkipReason::Escalated.as_str().to_string(),
        })
        .await?;
        tracing::info!(
            cycle,
            recipients = plans.len(),
            jobs = jobs.len(),
            "escalation cycle started"
        );
        Ok(Checked {
            escalated: plans.len(),
            follow_up: follow_up(check, n, &plan),
            ..Checked::default()
        })
    }

    /// What an escalation cycle sends to `users`: what `app_sms_email` plans for them
    /// with the organization's settings now and the notification's control center's
    /// providers (the licence, primary-contact and provider rules still apply).
    pub(super) async fn escalation_plans(
        &self,
        n: &crate::domain::Notification,
        users: &[crate::domain::UserId],
    ) -> Result<Vec<RecipientPlan>, DeliverError> {
        use crate::domain::routing::{self, Recipient, RoutingContext};
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
        let found = self.directory.get_users(&n.org_id, users).await?;
        let recipients: Vec<Recipient> = found.iter().map(Recipient::User).collect();
        Ok(routing::plan(&ctx, &recipients).recipients)
    }

    /// Whether a cycle's check runs: the cycle is due, and its chain (a cycle timer's
    /// first) is the notification's. `Err` is what the check ends with instead.
    pub(super) async fn start_cycle(
        &self,
        check: &CheckJob,
        n: &crate::domain::Notification,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Result<crate::domain::EscalationPlan, Checked>, DeliverError> {
        let plan = match cycle_gate(n.escalation, check.cycle, now) {
            CycleGate::Over => return Ok(Err(Checked::default())),
            CycleGate::NotYet(due) => {
                return Ok(Err(Checked {
                    next: Some(due),
                    ..Checked::default()
                }));
            }
            CycleGate::Run(plan) => plan,
        };
        if let Some(chain) = &check.chain
            && !self
                .log
                .claim_chain(&n.org_id, &n.notification_id, chain)
                .await?
        {
            tracing::info!(
                cycle = check.cycle,
                "a second escalation chain (a replayed event's timer): ends here"
            );
            return Ok(Err(Checked::default()));
        }
        Ok(Ok(plan))
    }

    /// An ack that landed while a cycle was being written (`acked_now`: the users who
    /// have acknowledged by now): its records did not exist when the ack looked, so they
    /// are cancelled here, and their jobs taken out of `jobs` (not enqueued).
    pub(super) async fn cancel_late_acks(
        &self,
        n: &crate::domain::Notification,
        records: &[DeliveryRecord],
        jobs: &mut Vec<DeliveryJob>,
        acked_now: &HashSet<UserId>,
    ) -> Result<(), DeliverError> {
        let acked = |who: &RecipientRef| who.user_id().is_some_and(|u| acked_now.contains(u));
        let late: Vec<&DeliveryRecord> = records.iter().filter(|r| acked(&r.recipient)).collect();
        self.end_records(n, &late, || Finish::Cancel {
            reason: crate::domain::SkipReason::Acknowledged.as_str().to_string(),
        })
        .await?;
        jobs.retain(|j| !acked(&j.recipient));
        Ok(())
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
    pub(super) async fn end_records(
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

/// What one window check does with the held deliveries: those to send as fallback (and
/// why), those to skip (and why), and when to look again, if anything still waits.
#[derive(Debug, Default)]
pub(super) struct WindowPlan<'a> {
    pub(super) fall_back: Vec<(DeliveryJob, FallbackReason)>,
    pub(super) skip: Vec<(&'a DeliveryRecord, SkipReason)>,
    pub(super) next: Option<chrono::DateTime<chrono::Utc>>,
}

impl WindowPlan<'_> {
    /// Bounded work per run, so a run over a huge notification ends well inside the
    /// function's timeout: what it moves is no longer held, so the next run (at once)
    /// carries on where it stopped instead of starting over.
    pub(super) fn bound(&mut self, limit: usize, now: chrono::DateTime<chrono::Utc>) {
        if self.fall_back.len() + self.skip.len() > limit {
            self.fall_back.truncate(limit);
            self.skip.truncate(limit - self.fall_back.len());
            self.next = Some(now);
        }
    }
}

/// The window rule ([`window_step`]) for every record held behind push, against its
/// recipient's own push (none: push was not possible, so they go now). A held record
/// without a provider or destination cannot be sent and is left alone. Pure.
pub(super) fn window_plan(
    logged: &crate::ports::Logged,
    window: chrono::TimeDelta,
    now: chrono::DateTime<chrono::Utc>,
) -> WindowPlan<'_> {
    let template = JobTemplate::from(&logged.notification);
    let pushes = own_pushes(&logged.records);
    let mut plan = WindowPlan::default();
    for held in logged.records.iter().filter(|r| r.held_behind_push()) {
        let step = match pushes.get(&held.recipient.key()) {
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
                let job = template.job(&held.recipient, held.channel, provider, destination, true);
                plan.fall_back.push((job, why));
            }
            WindowStep::Skip(reason) => plan.skip.push((held, reason)),
            WindowStep::WaitUntil(at) => plan.next = Some(plan.next.map_or(at, |n| n.min(at))),
        }
    }
    plan
}

/// Each recipient's own push (cycle 0), by recipient key: only it holds anything back
/// (escalation cycles send on every channel at once).
fn own_pushes(records: &[DeliveryRecord]) -> HashMap<String, &DeliveryRecord> {
    records
        .iter()
        .filter(|r| holds_others_back(r.channel, r.cycle))
        .map(|r| (r.recipient.key(), r))
        .collect()
}

/// Whether an escalation cycle runs at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CycleGate {
    /// No escalation, or a cycle outside its plan: nothing to do.
    Over,
    /// Early (or a repeated timer): look again when the cycle is due.
    NotYet(chrono::DateTime<chrono::Utc>),
    /// Due: run it.
    Run(crate::domain::EscalationPlan),
}

/// Whether cycle `cycle` of `plan` runs at `now` (cycle 0 is the notification itself).
pub(super) fn cycle_gate(
    plan: Option<crate::domain::EscalationPlan>,
    cycle: u32,
    now: chrono::DateTime<chrono::Utc>,
) -> CycleGate {
    match plan {
        None => CycleGate::Over,
        Some(plan) if cycle == 0 || cycle > plan.cycles => CycleGate::Over,
        Some(plan) if now < plan.due(cycle) => CycleGate::NotYet(plan.due(cycle)),
        Some(plan) => CycleGate::Run(plan),
    }
}

/// A cycle's records and jobs: the plans' own, marked with the cycle. Its push waits
/// for nothing and holds nothing back (no fallback window).
pub(super) fn cycle_work(
    n: &crate::domain::Notification,
    plans: &[RecipientPlan],
    cycle: u32,
) -> (Vec<DeliveryRecord>, Vec<DeliveryJob>) {
    let template = JobTemplate::from(n);
    let mut records = Vec::new();
    let mut jobs = Vec::new();
    for p in plans {
        records.extend(p.records(&n.notification_id).into_iter().map(|mut r| {
            r.cycle = cycle;
            r
        }));
        jobs.extend(p.jobs(&template).into_iter().map(|mut j| {
            j.cycle = cycle;
            j.app_fallback_seconds = None;
            j
        }));
    }
    (records, jobs)
}

/// The notification's own (cycle 0) records still held behind push, of recipients a
/// cycle sends `jobs` to: the cycle repeats what they would send.
pub(super) fn superseded_held<'a>(
    logged: &'a crate::ports::Logged,
    jobs: &[DeliveryJob],
) -> Vec<&'a DeliveryRecord> {
    // A set, not a search per record: a cycle of 10,000 recipients made that quadratic.
    let escalated: std::collections::HashSet<&RecipientRef> =
        jobs.iter().map(|j| &j.recipient).collect();
    logged
        .records
        .iter()
        .filter(|r| r.cycle == 0 && r.held_behind_push())
        .filter(|r| escalated.contains(&r.recipient))
        .collect()
}

/// The next cycle's check and when it is due, unless `check` ran the last one. It runs
/// in the notification's own lane (a timer queued before lanes has none).
pub(super) fn follow_up(
    check: &CheckJob,
    n: &crate::domain::Notification,
    plan: &crate::domain::EscalationPlan,
) -> Option<(CheckJob, chrono::DateTime<chrono::Utc>)> {
    let cycle = check.cycle;
    (cycle < plan.cycles).then(|| {
        (
            CheckJob {
                cycle: cycle + 1,
                page: 0,
                lane: n.category.lane(),
                ..check.clone()
            },
            plan.due(cycle + 1),
        )
    })
}
