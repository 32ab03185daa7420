//! A checker for CloudWatch embedded metric format documents, after the format's
//! specification: what CloudWatch Logs would refuse to turn into metrics, it refuses.

use serde_json::Value;

/// The units the specification allows.
const UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Whether a log line is an EMF document at all (it has the `_aws` member).
pub fn is_emf(line: &str) -> bool {
    serde_json::from_str::<Value>(line).is_ok_and(|v| v.get("_aws").is_some())
}

/// Checks one log line as an EMF document; answers the document.
pub fn check(line: &str) -> Result<Value, String> {
    let doc: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let root = doc.as_object().ok_or("the root is not an object")?;
    let aws = root
        .get("_aws")
        .and_then(Value::as_object)
        .ok_or("no _aws object")?;
    let ts = aws.get("Timestamp").ok_or("no _aws.Timestamp")?;
    if !ts.is_u64() {
        return Err(format!(
            "_aws.Timestamp is not milliseconds since the epoch: {ts}"
        ));
    }
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(Value::as_array)
        .ok_or("no _aws.CloudWatchMetrics array")?;
    if directives.is_empty() {
        return Err("_aws.CloudWatchMetrics is empty".into());
    }
    for d in directives {
        let ns = d["Namespace"]
            .as_str()
            .ok_or("a directive has no Namespace")?;
        if ns.is_empty() || ns.len() > 255 || ns.contains(':') {
            return Err(format!("invalid namespace {ns:?}"));
        }
        let sets = d["Dimensions"]
            .as_array()
            .ok_or("a directive has no Dimensions array")?;
        for set in sets {
            let keys = set.as_array().ok_or("a dimension set is not an array")?;
            if keys.len() > 30 {
                return Err("a dimension set has more than 30 dimensions".into());
            }
            for k in keys {
                let k = k.as_str().ok_or("a dimension key is not a string")?;
                match root.get(k).and_then(Value::as_str) {
                    Some(v) if !v.is_empty() && v.len() <= 1024 => {}
                    _ => return Err(format!("dimension {k} has no string value on the root")),
                }
            }
        }
        let metrics = d["Metrics"]
            .as_array()
            .ok_or("a directive has no Metrics array")?;
        if metrics.is_empty() || metrics.len() > 100 {
            return Err("a directive has 0 or more than 100 metrics".into());
        }
        for m in metrics {
            let name = m["Name"].as_str().ok_or("a metric has no Name")?;
            if name.is_empty() || name.len() > 1024 {
                return Err(format!("invalid metric name {name:?}"));
            }
            if let Some(unit) = m.get("Unit") {
                let unit = unit.as_str().unwrap_or_default();
                if !UNITS.contains(&unit) {
                    return Err(format!("metric {name}: unknown unit {unit:?}"));
                }
            }
            if let Some(r) = m.get("StorageResolution")
                && r != 1
                && r != 60
            {
                return Err(format!("metric {name}: storage resolution {r}"));
            }
            let value = root
                .get(name)
                .ok_or(format!("metric {name} has no value on the root"))?;
            let numbers = match value {
                Value::Number(_) => 1,
                Value::Array(a) if a.len() <= 100 && a.iter().all(Value::is_number) => a.len(),
                _ => return Err(format!("metric {name}: {value} is not a number")),
            };
            if numbers == 0 {
                return Err(format!("metric {name} has no value"));
            }
        }
    }
    Ok(doc)
}
