//! What paces and carries the work: provider health, the job queue, the pacer.

use super::*;

/// Custom providers' health, where every instance sees it (the circuit's state).
#[async_trait]
pub trait HealthStore: Send + Sync {
    /// The provider's health; the default (healthy) when nothing is stored.
    async fn get(
        &self,
        org: &OrgId,
        scope: &crate::domain::health::HealthScope,
    ) -> StoreResult<crate::domain::health::ProviderHealth>;
    /// Changes it as one step: `change` edits the stored health and answers whether to
    /// write it; the write happens only if nobody wrote in between (else `change` runs
    /// again on the fresh copy). Answers the health as it is now.
    async fn update(
        &self,
        org: &OrgId,
        scope: &crate::domain::health::HealthScope,
        change: &(
             dyn for<'h> Fn(&'h mut crate::domain::health::ProviderHealth) -> bool + Send + Sync
         ),
    ) -> StoreResult<crate::domain::health::ProviderHealth>;
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue temporarily unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("enqueue failed")]
    Failed(#[source] anyhow::Error),
}

/// The queues between the router and the delivery functions, one per channel.
#[async_trait]
pub trait JobQueue: Send + Sync {
    async fn enqueue(&self, jobs: &[DeliveryJob]) -> Result<(), QueueError>;

    /// Runs `check` after `delay` (at most [`MAX_CHECK_DELAY`]; a longer wait is made of
    /// several checks, each finding it is not yet time and scheduling the next).
    async fn schedule(&self, check: &CheckJob, delay: Duration) -> Result<(), QueueError>;

    /// Queues `job` again, at the end of its lane, after `delay` (a postponed job: a new
    /// message, so its receives start again). By default at once.
    async fn postpone(&self, job: &DeliveryJob, delay: Duration) -> Result<(), QueueError> {
        let _ = delay;
        self.enqueue(std::slice::from_ref(job)).await
    }
}

/// The longest a check is delayed in one go: SQS's largest `DelaySeconds`.
pub const MAX_CHECK_DELAY: Duration = Duration::from_secs(900);

/// Paces sends to a provider that may take only so many requests a second (an HTTP
/// gateway's `max_per_second`): across every concurrent delivery, urgent ones first.
#[async_trait]
pub trait Pacer: Send + Sync {
    /// Waits until one more request to `provider` keeps it at `per_second` or under
    /// in any second; urgent callers are let through before normal ones that wait.
    async fn acquire(&self, provider: &str, per_second: u32, lane: crate::domain::Lane);
    /// The provider asked for a pause (a 429's `Retry-After`): nobody sends to it
    /// before `for_` has passed.
    async fn pause(&self, provider: &str, for_: Duration);
}

/// The rate of a provider with no pace of its own (only a 429's pause holds it).
pub const UNPACED: u32 = u32::MAX;

/// The spacing between requests at `per_second`: slots 5% longer than the rate's, so
/// timers and trips to the provider have room to differ.
pub fn pace_interval(per_second: u32) -> Duration {
    Duration::from_secs_f64(1.05 / f64::from(per_second.max(1)))
}

/// How late a request may start for its slot and still keep the schedule.
pub const PACE_SLACK: Duration = Duration::from_millis(10);

/// How long a normal request waits before looking again while urgent ones wait.
pub const PACE_YIELD: Duration = Duration::from_millis(2);

/// Whether a request steps aside for urgent ones: a normal request does while any
/// urgent request for the same provider waits (the count a pacer's `Waiting` guard
/// keeps); an urgent one never does. Every pacer decides it here.
pub fn yields_to_urgent(lane: crate::domain::Lane, urgent_waiting: usize) -> bool {
    lane == crate::domain::Lane::Normal && urgent_waiting > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Lane;

    #[test]
    fn only_a_normal_request_yields_and_only_while_urgent_ones_wait() {
        assert!(yields_to_urgent(Lane::Normal, 1));
        assert!(!yields_to_urgent(Lane::Normal, 0));
        assert!(!yields_to_urgent(Lane::Urgent, 3));
        assert!(!yields_to_urgent(Lane::Urgent, 0));
    }

    #[test]
    fn slots_are_five_percent_longer_than_the_rate() {
        assert_eq!(pace_interval(1), Duration::from_millis(1050));
        assert_eq!(pace_interval(10), Duration::from_millis(105));
        assert_eq!(pace_interval(0), pace_interval(1));
    }
}
