//! A provider's pace kept across every warm instance: a shared schedule in the delivery
//! log table, one small item per provider (`PACE#{provider}`), whose `tat` is the time
//! (Unix microseconds) the provider's next free send slot starts (the "theoretical
//! arrival time" of the generic cell rate algorithm). An instance books `n` slots in
//! one conditional UpdateItem, moving `tat` on by `n` slots, and sends in each slot as
//! its time comes, so together the instances never send more than the rate.
//!
//! - Cost: one UpdateItem books the slots of every send waiting in the instance, or as
//!   many as it took in the last horizon when that is more (a steady bulk stream), up
//!   to [`MAX_BOOKING`]; plus a failed conditional write when another instance moved the
//!   schedule first; `cargo bench -p flare-tests --bench pacing` measures it. A slot
//!   nobody takes (the end of a stream) is given up after half a slot.
//! - Urgent first: the normal lane's bookings end at most [`NORMAL_HORIZON`] ahead;
//!   when the schedule is further out it waits and books again. The urgent lane books at
//!   the end of the schedule whatever its length, so a dispatch's SMS waits at most about
//!   the horizon behind a bulk send. (In AWS each function runs one lane, so an
//!   instance's booked slots are all of one lane.)
//! - A 429's pause moves `tat` to the end of the pause: no instance books a slot in it,
//!   and this instance drops its booked slots inside it; slots other instances booked
//!   before it (at most the horizon's worth of bulk sends, or an urgent booking) still
//!   go. A provider with no pace of its own is held by a pause only in the instance that
//!   got the 429 (reading the item before every unpaced send would cost a read a
//!   message).
//! - Storage unreachable: the instance paces alone (in memory) rather than hold
//!   emergency messages, so while DynamoDB fails the instances together may send up to
//!   their number times the rate.
//!
//! Slots are set by the instances' clocks (Lambda's are NTP-synchronised to
//! milliseconds); slots are 5% longer than the rate's, as in the local runner.

use crate::error_code;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use flare_shared::domain::Lane;
use flare_shared::pace::{MemoryPacer, Waiting};
use flare_shared::ports::{
    PACE_SLACK, PACE_YIELD, Pacer, UNPACED, pace_interval, yields_to_urgent,
};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far ahead the normal lane may book: an urgent send waits about this long at most
/// behind a bulk send's booked slots.
pub const NORMAL_HORIZON: Duration = Duration::from_millis(300);
/// The most slots one booking takes (an SQS batch's jobs).
pub const MAX_BOOKING: usize = 10;
/// How long an idle provider's item is kept.
const ITEM_TTL_SECONDS: i64 = 24 * 3600;
/// A booking that kept losing races gives up on the shared schedule for this send.
const MAX_BOOKING_ROUNDS: u32 = 200;

pub struct DynamoPacer {
    client: Client,
    table: String,
    providers: StdMutex<HashMap<String, Arc<Schedule>>>,
    /// What an instance does when the table cannot be reached.
    local: MemoryPacer,
}

/// One provider's slots booked by this instance.
#[derive(Default)]
struct Schedule {
    booked: tokio::sync::Mutex<Booked>,
    waiting: AtomicUsize,
    urgent_waiting: AtomicUsize,
    /// A pause this instance knows of (Unix microseconds): read without the lock by a
    /// send about to go in its slot.
    paused_until: AtomicU64,
}

#[derive(Default)]
struct Booked {
    /// Start times (Unix microseconds) of the slots this instance holds, earliest first.
    slots: VecDeque<u64>,
    /// The shared `tat` last seen: which update to try first.
    seen_tat: u64,
    /// The normal lane found the horizon full: its sends wait until then before this
    /// instance asks again (one write per look, not one per waiting send).
    normal_not_before: u64,
    /// When this instance's recent slots were taken (the last horizon's): the demand a
    /// booking provides for, besides the sends waiting now.
    taken: VecDeque<u64>,
}

/// A send waiting for a slot: counted among the provider's waiting sends (the demand a
/// booking provides for), and among its urgent ones when it is urgent.
struct Waiters<'a> {
    _all: Waiting<&'a AtomicUsize>,
    _urgent: Option<Waiting<&'a AtomicUsize>>,
}

impl<'a> Waiters<'a> {
    fn new(schedule: &'a Schedule, lane: Lane) -> Self {
        Self {
            _all: Waiting::new(&schedule.waiting),
            _urgent: (lane == Lane::Urgent).then(|| Waiting::new(&schedule.urgent_waiting)),
        }
    }
}

/// What a waiting send does next, decided under its schedule's lock.
enum Step {
    /// Go in this slot (its start, Unix microseconds) when its time comes.
    Slot(u64),
    /// Slots were just booked: look again.
    Booked,
    /// Look again after this long.
    Wait(Duration),
    /// The shared schedule is unreachable: pace this instance alone.
    Alone,
}

/// What a booking attempt came to.
enum Booking {
    /// The first of the booked slots starts then (Unix microseconds).
    Booked(u64),
    /// The normal lane's horizon is full: look again after this.
    Full(Duration),
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

fn until(micros: u64) -> Duration {
    Duration::from_micros(micros.saturating_sub(now_micros()))
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The `tat` of the item a failed conditional update found (it asks for the old item).
fn failed_tat(
    e: &crate::SdkError<
        aws_sdk_dynamodb::operation::update_item::UpdateItemError,
        aws_smithy_runtime_api::http::Response,
    >,
) -> Option<u64> {
    use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
    match e.as_service_error()? {
        UpdateItemError::ConditionalCheckFailedException(c) => tat_of(c.item()),
        _ => None,
    }
}

fn tat_of(item: Option<&HashMap<String, AttributeValue>>) -> Option<u64> {
    match item?.get("tat")? {
        AttributeValue::N(v) => v.parse().ok(),
        _ => None,
    }
}

impl DynamoPacer {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            providers: StdMutex::default(),
            local: MemoryPacer::default(),
        }
    }

    fn schedule(&self, provider: &str) -> Arc<Schedule> {
        let mut all = self
            .providers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.entry(provider.to_string()).or_default().clone()
    }

    fn key(provider: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".into(), AttributeValue::S(format!("PACE#{provider}"))),
            ("sk".into(), AttributeValue::S("pace".into())),
        ])
    }

    /// `tat` set to `end` where it is missing or `condition` (over `:now` / `:end`)
    /// holds; the old item comes back when it does not.
    async fn set_tat(
        &self,
        provider: &str,
        end: u64,
        condition: &str,
        now: u64,
    ) -> Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        crate::SdkError<
            aws_sdk_dynamodb::operation::update_item::UpdateItemError,
            aws_smithy_runtime_api::http::Response,
        >,
    > {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(provider)))
            .update_expression("SET tat = :end, expires_at = :exp")
            .condition_expression(format!("attribute_not_exists(tat) OR {condition}"))
            .expression_attribute_values(":end", n(end))
            .expression_attribute_values(":exp", Self::expires())
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if condition.contains(":now") {
            update = update.expression_attribute_values(":now", n(now));
        }
        update.send().await
    }

    fn expires() -> AttributeValue {
        AttributeValue::N((chrono::Utc::now().timestamp() + ITEM_TTL_SECONDS).to_string())
    }

    /// Books `count` slots of `interval` for `lane`: one conditional UpdateItem when
    /// the schedule is as last seen, two when another instance changed it.
    async fn book(
        &self,
        provider: &str,
        paused_until: u64,
        booked: &mut Booked,
        count: usize,
        interval: u64,
        lane: Lane,
    ) -> anyhow::Result<Booking> {
        let cost = interval * count as u64;
        for _ in 0..2 {
            let now = now_micros().max(paused_until);
            let booking = if booked.seen_tat <= now {
                self.book_idle(provider, booked, now, cost).await?
            } else {
                self.book_busy(provider, booked, now, cost, lane).await?
            };
            if let Some(booking) = booking {
                return Ok(booking);
            }
        }
        Ok(Booking::Full(Duration::ZERO))
    }

    /// Idle: the schedule restarts now. `None` when another instance moved it first
    /// (what it found is remembered for the next try).
    async fn book_idle(
        &self,
        provider: &str,
        booked: &mut Booked,
        now: u64,
        cost: u64,
    ) -> anyhow::Result<Option<Booking>> {
        match self.set_tat(provider, now + cost, "tat <= :now", now).await {
            Ok(_) => {
                booked.seen_tat = now + cost;
                Ok(Some(Booking::Booked(now)))
            }
            Err(e) if error_code(&e) == Some("ConditionalCheckFailedException") => {
                booked.seen_tat = failed_tat(&e).unwrap_or(now + 1);
                Ok(None)
            }
            Err(e) => Err(anyhow::Error::new(e).context("UpdateItem pace (idle)")),
        }
    }

    /// Busy: after the last booked slot, for the normal lane only up to
    /// [`normal_limit`]. `None` when the schedule turned out idle (try again).
    async fn book_busy(
        &self,
        provider: &str,
        booked: &mut Booked,
        now: u64,
        cost: u64,
        lane: Lane,
    ) -> anyhow::Result<Option<Booking>> {
        use anyhow::Context;
        let limit = normal_limit(now, cost);
        let condition = match lane {
            Lane::Urgent => "tat > :now",
            Lane::Normal => "tat > :now AND tat <= :limit",
        };
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(provider)))
            .update_expression("SET tat = tat + :cost, expires_at = :exp")
            .condition_expression(condition)
            .expression_attribute_values(":cost", n(cost))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":exp", Self::expires())
            .return_values(ReturnValue::UpdatedNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if lane == Lane::Normal {
            update = update.expression_attribute_values(":limit", n(limit));
        }
        match update.send().await {
            Ok(out) => {
                let tat =
                    tat_of(out.attributes.as_ref()).context("UpdateItem pace answered no tat")?;
                booked.seen_tat = tat;
                Ok(Some(Booking::Booked(tat - cost)))
            }
            Err(e) if error_code(&e) == Some("ConditionalCheckFailedException") => {
                let tat = failed_tat(&e).unwrap_or(0);
                booked.seen_tat = tat;
                Ok((tat > limit).then(|| Booking::Full(full_wait(tat, limit))))
            }
            Err(e) => Err(anyhow::Error::new(e).context("UpdateItem pace (busy)")),
        }
    }

    /// A waiting send's next step: a slot this instance holds, else a wait (urgent
    /// sends first, the normal lane's full horizon), else a booking for every send
    /// waiting.
    async fn next_step(
        &self,
        provider: &str,
        schedule: &Schedule,
        booked: &mut Booked,
        lane: Lane,
        interval: u64,
    ) -> Step {
        let now = now_micros();
        let paused_until = schedule.paused_until.load(Ordering::SeqCst);
        if let Some(slot) = take_slot(booked, now, slot_slack(interval), paused_until) {
            return Step::Slot(slot);
        }
        if yields_to_urgent(lane, schedule.urgent_waiting.load(Ordering::SeqCst)) {
            return Step::Wait(PACE_YIELD);
        }
        if lane == Lane::Normal && booked.normal_not_before > now {
            return Step::Wait(Duration::from_micros(booked.normal_not_before - now));
        }
        let waiting = schedule.waiting.load(Ordering::SeqCst);
        let count = booking_size(lane, interval, waiting, booked.taken.len());
        match self
            .book(provider, paused_until, booked, count, interval, lane)
            .await
        {
            Ok(Booking::Booked(start)) => {
                booked
                    .slots
                    .extend((0..count as u64).map(|i| start + i * interval));
                Step::Booked
            }
            Ok(Booking::Full(d)) => {
                let d = d.max(PACE_YIELD);
                if lane == Lane::Normal {
                    booked.normal_not_before = now_micros() + d.as_micros() as u64;
                }
                Step::Wait(d)
            }
            Err(e) => {
                tracing::warn!(provider, error = ?e, "the shared pace is unreachable: pacing this instance alone");
                Step::Alone
            }
        }
    }
}

/// How late a slot may still be used: up to half of it (the next starts on time, and
/// slots are 5% longer than the rate's), and at least the local slack.
fn slot_slack(interval: u64) -> u64 {
    (interval / 2).max(PACE_SLACK.as_micros() as u64)
}

/// The first slot this instance holds that can still be used at `now`, recorded as
/// taken. A slot missed by more than `slack` is given up (sending in it late could
/// crowd the next one's send), and so is one inside a pause; takings older than the
/// horizon are forgotten.
fn take_slot(booked: &mut Booked, now: u64, slack: u64, paused_until: u64) -> Option<u64> {
    while booked
        .slots
        .front()
        .is_some_and(|s| s + slack < now || *s < paused_until)
    {
        booked.slots.pop_front();
    }
    let recent = now.saturating_sub(NORMAL_HORIZON.as_micros() as u64);
    while booked.taken.front().is_some_and(|t| *t < recent) {
        booked.taken.pop_front();
    }
    let slot = booked.slots.pop_front()?;
    booked.taken.push_back(now);
    Some(slot)
}

/// How many slots to book: every send of this instance waiting for the provider, or
/// as many as it took in the last horizon when that is more (a steady stream gets a
/// booking's worth at once, not one write per send; a lone send books one); at most
/// [`MAX_BOOKING`], and for the normal lane no more than its horizon holds.
fn booking_size(lane: Lane, interval: u64, waiting: usize, taken: usize) -> usize {
    let most = match lane {
        Lane::Urgent => MAX_BOOKING,
        Lane::Normal => {
            let fits = NORMAL_HORIZON.as_micros() as u64 / interval.max(1);
            (fits as usize).clamp(1, MAX_BOOKING)
        }
    };
    waiting.max(taken).clamp(1, most)
}

/// Where a normal-lane booking of `cost` starting after `now` must begin by: its end
/// within the horizon, or, where one booking is longer than the horizon (3 a second or
/// less), its start within it: else that lane could only ever book a schedule that has
/// run empty.
fn normal_limit(now: u64, cost: u64) -> u64 {
    let horizon = NORMAL_HORIZON.as_micros() as u64;
    now + if cost >= horizon {
        horizon
    } else {
        horizon - cost
    }
}

/// The normal lane found the horizon full up to `tat`: it looks again when there is
/// room, each instance at a random point of a third of the horizon after, so they do
/// not all race (each lost race is a write too).
fn full_wait(tat: u64, limit: u64) -> Duration {
    let spread = NORMAL_HORIZON.as_micros() as u64 / 3;
    let jitter = (uuid::Uuid::new_v4().as_u128() % u128::from(spread.max(1))) as u64;
    Duration::from_micros(tat - limit + jitter)
}

#[async_trait]
impl Pacer for DynamoPacer {
    async fn acquire(&self, provider: &str, per_second: u32, lane: Lane) {
        if per_second == UNPACED {
            return self.local.acquire(provider, per_second, lane).await;
        }
        let interval = pace_interval(per_second).as_micros() as u64;
        let schedule = self.schedule(provider);
        let mut waiters = Some(Waiters::new(&schedule, lane));
        for _ in 0..MAX_BOOKING_ROUNDS {
            let step = {
                let mut booked = schedule.booked.lock().await;
                self.next_step(provider, &schedule, &mut booked, lane, interval)
                    .await
            };
            match step {
                Step::Slot(slot) => {
                    // Holding a slot is no longer waiting for one: the next booking is
                    // for the sends that still need theirs.
                    drop(waiters.take());
                    tokio::time::sleep(until(slot)).await;
                    // A pause that began meanwhile (this instance's 429) voids the slot.
                    if slot >= schedule.paused_until.load(Ordering::SeqCst) {
                        return;
                    }
                    waiters = Some(Waiters::new(&schedule, lane));
                }
                Step::Booked => {}
                Step::Wait(d) => tokio::time::sleep(d).await,
                Step::Alone => return self.local.acquire(provider, per_second, lane).await,
            }
        }
        tracing::warn!(
            provider,
            "no slot booked after {MAX_BOOKING_ROUNDS} rounds: pacing this instance alone"
        );
        self.local.acquire(provider, per_second, lane).await
    }

    async fn pause(&self, provider: &str, for_: Duration) {
        self.local.pause(provider, for_).await;
        let end = now_micros() + for_.as_micros() as u64;
        {
            let schedule = self.schedule(provider);
            let mut booked = schedule.booked.lock().await;
            schedule.paused_until.fetch_max(end, Ordering::SeqCst);
            booked.seen_tat = booked.seen_tat.max(end);
        }
        let out = self.set_tat(provider, end, "tat < :end", 0).await;
        match out {
            Ok(_) => {}
            // Already paused as long or booked further out.
            Err(e) if error_code(&e) == Some("ConditionalCheckFailedException") => {}
            Err(e) => {
                tracing::warn!(provider, error = ?e, "could not share the provider's pause")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_missed_by_more_than_the_slack_or_inside_a_pause_is_given_up() {
        let mut booked = Booked {
            slots: VecDeque::from([1_000, 2_000, 3_000, 4_000]),
            ..Booked::default()
        };
        // 1,000 is missed by more than the slack; 2,000 is late but within it.
        assert_eq!(take_slot(&mut booked, 2_400, 500, 0), Some(2_000));
        assert_eq!(booked.taken, [2_400]);
        // A pause until 3,500 voids 3,000.
        assert_eq!(take_slot(&mut booked, 2_500, 500, 3_500), Some(4_000));
        assert_eq!(take_slot(&mut booked, 2_600, 500, 0), None);
        // Takings older than the horizon are forgotten.
        let later = 2_400 + NORMAL_HORIZON.as_micros() as u64 + 1;
        take_slot(&mut booked, later, 500, 0);
        assert_eq!(booked.taken.len(), 1);
    }

    #[test]
    fn a_booking_is_for_the_demand_within_the_lane_s_bounds() {
        let fast = 10_000; // 100 a second: 30 slots in the horizon.
        assert_eq!(booking_size(Lane::Normal, fast, 0, 0), 1);
        assert_eq!(booking_size(Lane::Normal, fast, 3, 7), 7);
        assert_eq!(booking_size(Lane::Urgent, fast, 50, 0), MAX_BOOKING);
        let slow = 100_000; // 3 slots in the horizon.
        assert_eq!(booking_size(Lane::Normal, slow, 50, 0), 3);
        assert_eq!(booking_size(Lane::Normal, 1_000_000, 5, 0), 1);
    }

    #[test]
    fn the_normal_lane_books_within_the_horizon_or_starts_within_it() {
        let horizon = NORMAL_HORIZON.as_micros() as u64;
        assert_eq!(normal_limit(1_000, 100_000), 1_000 + horizon - 100_000);
        assert_eq!(normal_limit(1_000, horizon * 2), 1_000 + horizon);
        assert_eq!(slot_slack(1_000_000), 500_000);
        assert_eq!(slot_slack(1_000), PACE_SLACK.as_micros() as u64);
    }
}
