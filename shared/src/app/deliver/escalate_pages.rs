//! Escalation of a notification routed in pages, a page at a time: the cycle's timer
//! (page 0) queues one check per route page and sets the next cycle's timer; each page's
//! check notifies again the page's users who have not acknowledged. No invocation reads
//! more than a page of users, acks or records.

use super::check::{cycle_work, follow_up};
use super::*;
use crate::domain::{Notification, Slot, UserId};
use std::collections::HashSet;

impl Deliverer {
    pub(super) async fn escalate_paged(
        &self,
        check: &CheckJob,
        n: &Notification,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Checked, DeliverError> {
        // A page's check carries no chain (its cycle's timer claimed it).
        let plan = match self.start_cycle(check, n, now).await? {
            Ok(plan) => plan,
            Err(done) => return Ok(done),
        };
        if check.page > 0 {
            return self
                .escalate_page(check, n, plan.due(check.cycle), now)
                .await;
        }
        let queue = self.queue()?;
        for page in 1..=n.pages {
            let one = CheckJob {
                page,
                // The cycle's pages are this chain's: they need no gate of their own.
                chain: None,
                ..check.clone()
            };
            queue.schedule(&one, Duration::ZERO).await?;
        }
        tracing::info!(
            cycle = check.cycle,
            pages = n.pages,
            "escalation cycle started: its pages queued"
        );
        Ok(Checked {
            follow_up: follow_up(check, n, &plan),
            ..Checked::default()
        })
    }

    /// One page of an escalation cycle: its users who have not acknowledged get the
    /// cycle's records and jobs; then their cycle-0 SMS and email still held behind push
    /// end `escalated` (only while held). Run twice, it writes and sends nothing twice.
    /// A route page not routed yet is waited for ([`routing_wait`]).
    async fn escalate_page(
        &self,
        check: &CheckJob,
        n: &Notification,
        due: chrono::DateTime<chrono::Utc>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Checked, DeliverError> {
        let cycle = check.cycle;
        let Some(page) = self
            .log
            .route_page(&n.org_id, &n.notification_id, check.page)
            .await?
        else {
            tracing::warn!(
                page = check.page,
                "escalation of a route page that is not there: dropped"
            );
            return Ok(Checked::default());
        };
        if let Some(again) = routing_wait(page.routed, due, now) {
            tracing::info!(
                cycle,
                page = check.page,
                "escalation page waits for its route page to be routed"
            );
            return Ok(Checked {
                next: Some(again),
                ..Checked::default()
            });
        }
        let acked = self.acked_among(n, &page.user_ids).await?;
        let users: Vec<UserId> = page
            .user_ids
            .into_iter()
            .filter(|u| !acked.contains(u))
            .collect();
        if users.is_empty() {
            return Ok(Checked::default());
        }
        let plans = self.escalation_plans(n, &users).await?;
        let (records, mut jobs) = cycle_work(n, &plans, cycle);
        self.log.put_records(n, &records).await?;
        // An ack that landed while the records were written: they did not exist when
        // the ack looked.
        let late = self.acked_among(n, &users).await?;
        self.cancel_late_acks(n, &records, &mut jobs, &late).await?;
        if !jobs.is_empty() {
            self.queue()?.enqueue(&jobs).await?;
        }
        self.end_held_escalated(n, &jobs).await?;
        tracing::info!(
            cycle,
            page = check.page,
            recipients = plans.len(),
            jobs = jobs.len(),
            "escalation cycle page done"
        );
        Ok(Checked {
            escalated: plans.len(),
            ..Checked::default()
        })
    }

    /// The cycle-0 SMS and email still held behind push of those `jobs` notify again
    /// end `escalated` (only while held: a record that was sent or is not there moves
    /// nothing). Called once the cycle's own records and jobs exist.
    async fn end_held_escalated(
        &self,
        n: &Notification,
        jobs: &[DeliveryJob],
    ) -> Result<(), DeliverError> {
        let escalated: HashSet<&RecipientRef> = jobs.iter().map(|j| &j.recipient).collect();
        let held: Vec<(&RecipientRef, Slot)> = escalated
            .iter()
            .flat_map(|who| {
                [
                    (*who, Slot::from(Channel::Sms)),
                    (*who, Slot::from(Channel::Email)),
                ]
            })
            .collect();
        self.each(&held, |(who, slot)| {
            crate::app::ended::finish(
                self.log.as_ref(),
                self.metrics.as_ref(),
                &n.org_id,
                &n.notification_id,
                who,
                *slot,
                None,
                Finish::SkipHeld {
                    reason: crate::domain::SkipReason::Escalated.as_str().to_string(),
                },
            )
        })
        .await?;
        Ok(())
    }

    /// Which of `users` have acknowledged `n`.
    async fn acked_among(
        &self,
        n: &Notification,
        users: &[UserId],
    ) -> Result<HashSet<UserId>, DeliverError> {
        Ok(self
            .log
            .acked_among(&n.org_id, &n.notification_id, users)
            .await?
            .into_iter()
            .collect())
    }
}

/// How long past its due time a cycle's page waits for its route page to be routed
/// (its cycle-0 records written): long enough for a route page's retries, short of the
/// longest fallback window (900 s), so a page that is never routed is escalated anyway.
pub(super) const ROUTING_WAIT: chrono::TimeDelta = chrono::TimeDelta::seconds(600);
/// How often a waiting page looks again.
const ROUTING_RECHECK: chrono::TimeDelta = chrono::TimeDelta::seconds(2);

/// When a cycle's page due at `due` runs again instead of now: while its route page is
/// not routed, for at most [`ROUTING_WAIT`]. A cycle that ran first would write the
/// cycle's records while cycle 0's SMS and email were not there to be ended `escalated`;
/// they would be written held afterwards and sent when the fallback window ends, after
/// the cycle's own.
pub(super) fn routing_wait(
    routed: bool,
    due: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    (!routed && now < due + ROUTING_WAIT).then(|| now + ROUTING_RECHECK)
}
