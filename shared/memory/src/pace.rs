//! Metrics and provider health in memory, and the in-process pacer.

use super::*;

/// What the pipeline counted (tests).
#[derive(Debug, Default)]
pub struct MemoryMetrics {
    pub deliveries: Mutex<Vec<flare_shared::ports::DeliveryMetric>>,
    /// Per new notification: its category and recipients.
    pub notifications: Mutex<Vec<(flare_shared::domain::Category, usize)>>,
    pub acknowledgements: Mutex<Vec<flare_shared::domain::Category>>,
}

impl flare_shared::ports::Metrics for MemoryMetrics {
    fn delivery(&self, metric: &flare_shared::ports::DeliveryMetric) {
        lock(&self.deliveries).push(metric.clone());
    }
    fn notification(&self, category: flare_shared::domain::Category, recipients: usize) {
        lock(&self.notifications).push((category, recipients));
    }
    fn acknowledged(&self, category: flare_shared::domain::Category) {
        lock(&self.acknowledgements).push(category);
    }
}

/// Providers' health in memory (the local runner: one process is every instance).
#[derive(Default)]
pub struct MemoryHealth {
    items: Mutex<HashMap<(OrgId, String), flare_shared::domain::health::ProviderHealth>>,
}

#[async_trait]
impl HealthStore for MemoryHealth {
    async fn get(
        &self,
        org: &OrgId,
        scope: &flare_shared::domain::health::HealthScope,
    ) -> StoreResult<flare_shared::domain::health::ProviderHealth> {
        Ok(lock(&self.items)
            .get(&(org.clone(), scope.key()))
            .cloned()
            .unwrap_or_default())
    }

    async fn update(
        &self,
        org: &OrgId,
        scope: &flare_shared::domain::health::HealthScope,
        change: &(
             dyn for<'h> Fn(&'h mut flare_shared::domain::health::ProviderHealth) -> bool
                 + Send
                 + Sync
         ),
    ) -> StoreResult<flare_shared::domain::health::ProviderHealth> {
        let mut items = lock(&self.items);
        let h = items.entry((org.clone(), scope.key())).or_default();
        change(h);
        Ok(h.clone())
    }
}

/// The pacer in one process lives in `flare_shared::pace` (a DynamoDB pacer falls back
/// on it when its table is unreachable); re-exported here beside the other adapters.
pub use flare_shared::pace::MemoryPacer;
