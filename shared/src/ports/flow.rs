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
