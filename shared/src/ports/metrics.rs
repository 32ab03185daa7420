//! What a delivery's outcome adds to the metrics.

use super::*;

/// How a delivery ended, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    Failed,
    Skipped,
    /// A receipt said a sent delivery arrived.
    Delivered,
}

impl Outcome {
    /// The metric's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "Sent",
            Outcome::Failed => "Failed",
            Outcome::Skipped => "Skipped",
            Outcome::Delivered => "Delivered",
        }
    }
}

/// One (recipient, channel) that reached its final status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryMetric {
    pub channel: Channel,
    /// None for a delivery skipped before a provider was chosen.
    pub provider: Option<Provider>,
    pub outcome: Outcome,
    /// Sent or failed as the fallback of a push.
    pub fallback: bool,
    /// From the event's time to the provider's acceptance (sent deliveries only).
    pub latency: Option<std::time::Duration>,
    /// A sent SMS: its notification's control center and its segments.
    pub sms: Option<SmsUsage>,
}

/// What a sent SMS counts toward the `SmsSegments` metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsUsage {
    pub control_center_id: crate::domain::ControlCenterId,
    pub segments: u32,
}

/// Counts what the pipeline does (CloudWatch metrics in AWS). Recording cannot fail:
/// a metric lost is never worth a delivery lost.
pub trait Metrics: Send + Sync {
    fn delivery(&self, metric: &DeliveryMetric);
    /// A new notification and how many recipients it has (replays are not counted).
    fn notification(&self, category: crate::domain::Category, recipients: usize);
    /// A recipient acknowledged a notification.
    fn acknowledged(&self, category: crate::domain::Category);
}

/// Counts nothing (the local runner, and tests that do not look at metrics).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMetrics;

impl Metrics for NoMetrics {
    fn delivery(&self, _: &DeliveryMetric) {}
    fn notification(&self, _: crate::domain::Category, _: usize) {}
    fn acknowledged(&self, _: crate::domain::Category) {}
}
