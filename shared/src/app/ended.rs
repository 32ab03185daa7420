//! Deliveries that end skipped or delivered are counted here, by every path that ends one
//! (push's outcome, the fallback window, a receipt or an ack, an escalation cycle, a
//! provider's receipt): the write that moved the record counts it, so a repeat, which
//! moves nothing, counts nothing.

use crate::domain::{Channel, NotificationId, OrgId, Provider, RecipientRef, Slot};
use crate::ports::{DeliveryLog, DeliveryMetric, Finish, Metrics, Outcome, StoreResult};

/// The metric a record ended by `outcome` counts, if it counts one here (sends and
/// failures are counted where they are attempted).
pub fn metric_of(
    channel: Channel,
    provider: Option<Provider>,
    outcome: &Finish,
) -> Option<DeliveryMetric> {
    let outcome = match outcome {
        Finish::SkipHeld { .. } | Finish::Cancel { .. } => Outcome::Skipped,
        Finish::Delivered { .. } => Outcome::Delivered,
        _ => return None,
    };
    Some(DeliveryMetric {
        channel,
        provider,
        outcome,
        fallback: false,
        latency: None,
        sms: None,
    })
}

/// Ends one delivery (`log.finish`) and, when it moved, counts it.
#[allow(clippy::too_many_arguments)]
pub async fn finish(
    log: &dyn DeliveryLog,
    metrics: &dyn Metrics,
    org: &OrgId,
    id: &NotificationId,
    who: &RecipientRef,
    slot: Slot,
    provider: Option<Provider>,
    outcome: Finish,
) -> StoreResult<bool> {
    let metric = metric_of(slot.channel, provider, &outcome);
    let moved = log.finish(org, id, who, slot, outcome).await?;
    if let (true, Some(m)) = (moved, metric) {
        metrics.delivery(&m);
    }
    Ok(moved)
}
