//! Metrics, provider health and the pacer, in memory.

use super::*;

/// What the pipeline counted (tests).
#[derive(Debug, Default)]
pub struct MemoryMetrics {
    pub deliveries: Mutex<Vec<crate::ports::DeliveryMetric>>,
    /// Per new notification: its category and recipients.
    pub notifications: Mutex<Vec<(crate::domain::Category, usize)>>,
    pub acknowledgements: Mutex<Vec<crate::domain::Category>>,
}

impl crate::ports::Metrics for MemoryMetrics {
    fn delivery(&self, metric: &crate::ports::DeliveryMetric) {
        lock(&self.deliveries).push(metric.clone());
    }
    fn notification(&self, category: crate::domain::Category, recipients: usize) {
        lock(&self.notifications).push((category, recipients));
    }
    fn acknowledged(&self, category: crate::domain::Category) {
        lock(&self.acknowledgements).push(category);
    }
}

/// Providers' health in memory (the local runner: one process is every instance).
#[derive(Default)]
pub struct MemoryHealth {
    items: Mutex<HashMap<(OrgId, String), crate::domain::health::ProviderHealth>>,
}

#[async_trait]
impl HealthStore for MemoryHealth {
    async fn get(
        &self,
        org: &OrgId,
        scope: &crate::domain::health::HealthScope,
    ) -> StoreResult<crate::domain::health::ProviderHealth> {
        Ok(lock(&self.items)
            .get(&(org.clone(), scope.key()))
            .cloned()
            .unwrap_or_default())
    }

    async fn update(
        &self,
        org: &OrgId,
        scope: &crate::domain::health::HealthScope,
        change: &(
             dyn for<'h> Fn(&'h mut crate::domain::health::ProviderHealth) -> bool + Send + Sync
         ),
    ) -> StoreResult<crate::domain::health::ProviderHealth> {
        let mut items = lock(&self.items);
        let h = items.entry((org.clone(), scope.key())).or_default();
        change(h);
        Ok(h.clone())
    }
}

/// Pacing in one process (the local runner, where one process is every instance): per
/// provider, requests start on a schedule of evenly spaced slots, `1.05 / per_second`
/// apart, so none comes in a burst and an urgent request never waits long: it takes the
/// next free slot before any normal request that waits. A request a little late for
/// its slot (up to [`PACE_SLACK`]) keeps the schedule, so timer lateness does not eat
/// the rate; one later than that starts it afresh. Then any `per_second` requests in a
/// row span at least `1.05 - 0.01` s: no second holds more than `per_second`, with
/// 40 ms left for the trips to the provider to differ. A 429's pause holds everyone.
#[derive(Default)]
pub struct MemoryPacer {
    providers: Mutex<HashMap<String, PaceState>>,
}

#[derive(Default)]
struct PaceState {
    next_at: Option<tokio::time::Instant>,
    paused_until: Option<tokio::time::Instant>,
    urgent_waiting: usize,
}

#[async_trait]
impl Pacer for MemoryPacer {
    async fn acquire(&self, provider: &str, per_second: u32, lane: crate::domain::Lane) {
        let urgent = lane == crate::domain::Lane::Urgent;
        // Counted while it waits, and uncounted however the wait ends (a caller cut off
        // at its deadline drops this future): a stale count would hold normal traffic.
        struct Waiting<'a>(Option<(&'a MemoryPacer, &'a str)>);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                if let Some((pacer, provider)) = self.0
                    && let Some(p) = lock(&pacer.providers).get_mut(provider)
                {
                    p.urgent_waiting = p.urgent_waiting.saturating_sub(1);
                }
            }
        }
        if urgent {
            lock(&self.providers)
                .entry(provider.to_string())
                .or_default()
                .urgent_waiting += 1;
        }
        let _waiting = Waiting(urgent.then_some((self, provider)));
        let interval = pace_interval(per_second);
        loop {
            let wait = {
                let mut all = lock(&self.providers);
                let p = all.entry(provider.to_string()).or_default();
                let now = tokio::time::Instant::now();
                let paused = p.paused_until.filter(|u| *u > now);
                match (paused, p.next_at) {
                    (Some(until), _) => Some(until - now),
                    (None, Some(slot)) if slot > now => Some(slot - now),
                    _ if yields_to_urgent(lane, p.urgent_waiting) => Some(PACE_YIELD),
                    (None, slot) => {
                        let on_time = slot.filter(|s| now - *s <= PACE_SLACK);
                        p.next_at = Some(on_time.unwrap_or(now) + interval);
                        None
                    }
                }
            };
            match wait {
                None => return,
                Some(d) => tokio::time::sleep(d).await,
            }
        }
    }

    async fn pause(&self, provider: &str, for_: std::time::Duration) {
        let until = tokio::time::Instant::now() + for_;
        let mut all = lock(&self.providers);
        let p = all.entry(provider.to_string()).or_default();
        if p.paused_until.is_none_or(|u| u < until) {
            p.paused_until = Some(until);
        }
    }
}
