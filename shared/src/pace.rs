//! Pacing in one process: the local runner's pacer (one process is every instance), and
//! what a DynamoDB pacer falls back on when its table is unreachable.

use crate::ports::{PACE_SLACK, PACE_YIELD, Pacer, pace_interval, yields_to_urgent};
use async_trait::async_trait;
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic in another task must not poison every later call.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One waiting request, counted while it waits and uncounted however the wait ends (a
/// caller cut off at its deadline drops the future): a stale count would hold normal
/// traffic. Both pacers count their waiting requests with it.
pub struct Waiting<C: Deref<Target = AtomicUsize>>(C);

impl<C: Deref<Target = AtomicUsize>> Waiting<C> {
    pub fn new(count: C) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl<C: Deref<Target = AtomicUsize>> Drop for Waiting<C> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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
    urgent_waiting: Arc<AtomicUsize>,
}

#[async_trait]
impl Pacer for MemoryPacer {
    async fn acquire(&self, provider: &str, per_second: u32, lane: crate::domain::Lane) {
        let urgent = lane == crate::domain::Lane::Urgent;
        let _waiting = urgent.then(|| {
            let mut all = lock(&self.providers);
            Waiting::new(
                all.entry(provider.to_string())
                    .or_default()
                    .urgent_waiting
                    .clone(),
            )
        });
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
                    _ if yields_to_urgent(lane, p.urgent_waiting.load(Ordering::SeqCst)) => {
                        Some(PACE_YIELD)
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Lane;
    use std::time::Duration;

    #[test]
    fn a_waiting_request_is_counted_until_it_is_dropped() {
        let n = AtomicUsize::new(0);
        {
            let _a = Waiting::new(&n);
            let _b = Waiting::new(&n);
            assert_eq!(n.load(Ordering::SeqCst), 2);
        }
        assert_eq!(n.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_urgent_wait_cut_off_at_its_deadline_leaves_no_count() {
        let pacer = MemoryPacer::default();
        pacer.pause("gw", Duration::from_secs(60)).await;
        let cut = tokio::time::timeout(
            Duration::from_millis(20),
            pacer.acquire("gw", 10, Lane::Urgent),
        )
        .await;
        assert!(cut.is_err(), "the pause holds it");
        let count = lock(&pacer.providers)["gw"]
            .urgent_waiting
            .load(Ordering::SeqCst);
        assert_eq!(count, 0, "a stale count would hold normal traffic");
    }
}
