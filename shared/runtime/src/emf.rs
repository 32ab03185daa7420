//! Metrics as CloudWatch embedded metric format (EMF) lines: one JSON object per line on
//! standard output, which CloudWatch Logs turns into metrics. No API call, no extra
//! permission, nothing to wait for on the delivery's path.
//!
//! Delivery lines carry the dimension sets `[Channel, Provider]` and `[Channel]` (so the
//! dashboard reads per-channel figures without a search expression); notification and
//! acknowledgement lines `[Category]`.

use flare_shared::domain::Category;
use flare_shared::ports::{DeliveryMetric, Metrics, Outcome};
use serde_json::{Map, Value, json};
use std::io::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The variable naming the metrics' namespace (the template sets `Flare/<stack>`).
pub const NAMESPACE_VARIABLE: &str = "FLARE_METRICS_NAMESPACE";
pub const DEFAULT_NAMESPACE: &str = "Flare";

/// The metrics' namespace: `FLARE_METRICS_NAMESPACE`, default `Flare`.
pub fn namespace_from_env() -> String {
    crate::optional(NAMESPACE_VARIABLE, DEFAULT_NAMESPACE)
}

/// The names of every metric Flare emits (the dashboard and alarms use these).
pub const DELIVERY_METRICS: [&str; 6] = [
    "Sent",
    "Failed",
    "Skipped",
    "Delivered",
    "Fallback",
    "DeliveryLatencyMs",
];
/// A sent SMS's segments, by provider and control center (what SMS cost is billed by).
pub const SMS_SEGMENTS: &str = "SmsSegments";
pub const RECIPIENTS: &str = "Recipients";
pub const ACKNOWLEDGED: &str = "Acknowledged";

/// EMF lines on standard output in `namespace`, or nothing at all.
pub fn metrics(namespace: Option<&str>) -> std::sync::Arc<dyn Metrics> {
    match namespace {
        Some(ns) => std::sync::Arc::new(EmfMetrics::stdout(ns)),
        None => std::sync::Arc::new(flare_shared::ports::NoMetrics),
    }
}

/// Writes EMF lines to a writer (standard output in Lambda).
pub struct EmfMetrics {
    namespace: String,
    out: Mutex<Box<dyn Write + Send>>,
}

impl EmfMetrics {
    /// To standard output (what Lambda sends to CloudWatch Logs).
    pub fn stdout(namespace: impl Into<String>) -> Self {
        Self::new(namespace, Box::new(std::io::stdout()))
    }

    pub fn new(namespace: impl Into<String>, out: Box<dyn Write + Send>) -> Self {
        Self {
            namespace: namespace.into(),
            out: Mutex::new(out),
        }
    }

    fn emit(&self, line: &Value) {
        let mut text = line.to_string();
        text.push('\n');
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // One write per line, so a log line from another thread cannot land inside it.
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            tracing::warn!(error = %e, "a metric line could not be written");
        }
    }
}

impl Metrics for EmfMetrics {
    fn delivery(&self, metric: &DeliveryMetric) {
        let now = now_ms();
        self.emit(&delivery_line(&self.namespace, metric, now));
        if let Some(line) = segments_line(&self.namespace, metric, now) {
            self.emit(&line);
        }
    }
    fn notification(&self, category: Category, recipients: usize) {
        self.emit(&category_line(
            &self.namespace,
            category,
            RECIPIENTS,
            recipients as f64,
            now_ms(),
        ));
    }
    fn acknowledged(&self, category: Category) {
        self.emit(&category_line(
            &self.namespace,
            category,
            ACKNOWLEDGED,
            1.0,
            now_ms(),
        ));
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The provider dimension of a delivery skipped before a provider was chosen.
pub const NO_PROVIDER: &str = "none";

/// The EMF line of one delivery's outcome.
pub fn delivery_line(namespace: &str, m: &DeliveryMetric, timestamp_ms: u64) -> Value {
    let mut values: Vec<(&str, &str, f64)> = vec![(m.outcome.as_str(), "Count", 1.0)];
    if m.fallback && matches!(m.outcome, Outcome::Sent | Outcome::Failed) {
        values.push(("Fallback", "Count", 1.0));
    }
    if let Some(latency) = m.latency {
        values.push((
            "DeliveryLatencyMs",
            "Milliseconds",
            latency.as_millis() as f64,
        ));
    }
    let provider = m.provider.map_or(NO_PROVIDER, |p| p.as_str());
    line(
        namespace,
        timestamp_ms,
        &[("Channel", m.channel.as_str()), ("Provider", provider)],
        &[&["Channel", "Provider"], &["Channel"]],
        &values,
    )
}

/// The EMF line of a sent SMS's segments: its own line, so `Sent` keeps its dimensions
/// and the control center (many of them) is a dimension of this metric only.
pub fn segments_line(namespace: &str, m: &DeliveryMetric, timestamp_ms: u64) -> Option<Value> {
    let sms = m.sms.as_ref()?;
    let provider = m.provider.map_or(NO_PROVIDER, |p| p.as_str());
    Some(line(
        namespace,
        timestamp_ms,
        &[
            ("Provider", provider),
            ("ControlCenter", sms.control_center_id.as_str()),
        ],
        &[&["Provider", "ControlCenter"], &["Provider"]],
        &[(SMS_SEGMENTS, "Count", f64::from(sms.segments))],
    ))
}

/// The EMF line of a per-notification metric (`Recipients`, `Acknowledged`).
pub fn category_line(
    namespace: &str,
    category: Category,
    name: &str,
    value: f64,
    timestamp_ms: u64,
) -> Value {
    let unit = "Count";
    line(
        namespace,
        timestamp_ms,
        &[("Category", category.as_str())],
        &[&["Category"]],
        &[(name, unit, value)],
    )
}

fn line(
    namespace: &str,
    timestamp_ms: u64,
    dimensions: &[(&str, &str)],
    sets: &[&[&str]],
    values: &[(&str, &str, f64)],
) -> Value {
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": sets,
                "Metrics": values
                    .iter()
                    .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
                    .collect::<Vec<_>>(),
            }],
        }),
    );
    for (k, v) in dimensions {
        root.insert((*k).into(), json!(v));
    }
    for (name, _, value) in values {
        root.insert((*name).into(), json!(value));
    }
    Value::Object(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flare_shared::domain::{Channel, Provider};
    use std::time::Duration;

    #[test]
    fn a_sent_fallback_carries_its_latency_and_both_dimension_sets() {
        let m = DeliveryMetric {
            channel: Channel::Sms,
            provider: Some(Provider::Sns),
            outcome: Outcome::Sent,
            fallback: true,
            latency: Some(Duration::from_millis(1234)),
            sms: None,
        };
        let l = delivery_line("Flare/test", &m, 1_800_000_000_000);
        assert_eq!(l["_aws"]["Timestamp"], 1_800_000_000_000u64);
        let d = &l["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(d["Namespace"], "Flare/test");
        assert_eq!(
            d["Dimensions"],
            json!([["Channel", "Provider"], ["Channel"]])
        );
        assert_eq!(
            d["Metrics"],
            json!([
                {"Name": "Sent", "Unit": "Count"},
                {"Name": "Fallback", "Unit": "Count"},
                {"Name": "DeliveryLatencyMs", "Unit": "Milliseconds"},
            ])
        );
        assert_eq!(l["Channel"], "sms");
        assert_eq!(l["Provider"], "sns");
        assert_eq!(l["Sent"], 1.0);
        assert_eq!(l["Fallback"], 1.0);
        assert_eq!(l["DeliveryLatencyMs"], 1234.0);
    }

    #[test]
    fn a_sent_sms_has_a_segments_line_by_provider_and_control_center() {
        let mut m = DeliveryMetric {
            channel: Channel::Sms,
            provider: Some(Provider::Http),
            outcome: Outcome::Sent,
            fallback: false,
            latency: None,
            sms: None,
        };
        assert!(segments_line("Flare", &m, 0).is_none());
        m.sms = Some(flare_shared::ports::SmsUsage {
            control_center_id: flare_shared::domain::ControlCenterId::parse("north").unwrap(),
            segments: 3,
        });
        let l = segments_line("Flare/test", &m, 7).unwrap();
        let d = &l["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(
            d["Dimensions"],
            json!([["Provider", "ControlCenter"], ["Provider"]])
        );
        assert_eq!(
            d["Metrics"],
            json!([{"Name": "SmsSegments", "Unit": "Count"}])
        );
        assert_eq!(l["Provider"], "http");
        assert_eq!(l["ControlCenter"], "north");
        assert_eq!(l["SmsSegments"], 3.0);
        // The delivery's own line is unchanged by it.
        let sent = delivery_line("Flare/test", &m, 7);
        assert_eq!(sent["Sent"], 1.0);
        assert!(sent.get("ControlCenter").is_none());
    }

    #[test]
    fn a_skip_before_routing_chose_a_provider_has_provider_none() {
        let m = DeliveryMetric {
            channel: Channel::Email,
            provider: None,
            outcome: Outcome::Skipped,
            fallback: false,
            latency: None,
            sms: None,
        };
        let l = delivery_line("Flare", &m, 0);
        assert_eq!(l["Provider"], NO_PROVIDER);
        assert_eq!(l["Skipped"], 1.0);
        assert!(l.get("Fallback").is_none() && l.get("DeliveryLatencyMs").is_none());
    }

    #[test]
    fn lines_are_written_whole_one_per_metric() {
        #[derive(Clone, Default)]
        struct Shared(std::sync::Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Shared::default();
        let emf = EmfMetrics::new("Flare", Box::new(buf.clone()));
        emf.notification(Category::Dispatch, 12);
        emf.acknowledged(Category::Distress);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["Recipients"], 12.0);
        assert_eq!(lines[0]["Category"], "dispatch");
        assert_eq!(lines[1]["Acknowledged"], 1.0);
        assert_eq!(lines[1]["Category"], "distress");
    }
}
