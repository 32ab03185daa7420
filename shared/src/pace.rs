//! Pacing in one process: the local runner's pacer (one process is every instance), and
//! what a DynamoDB pacer falls back on when its table is unreachable.

use crate::ports::{PACE_SLACK, PACE_YIELD, Pacer, pace_interval, yields_to_urgent};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic in another task must not poison every later call.
    m.lock().unwrap_or_else(|e| e.into_inner())
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
