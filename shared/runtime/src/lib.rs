//! What every binary shares and the domain must not know about: configuration from the
//! environment (failing fast with the variable's name), the tracing subscriber and the
//! metrics (CloudWatch embedded metric format).

pub mod emf;
pub mod provider_events;

use flare_shared::domain::EndpointPolicy;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// A variable that must be set and non-empty.
pub fn required(name: &'static str) -> Result<String, ConfigError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(ConfigError::Missing(name)),
    }
}

/// A variable with a default.
pub fn optional(name: &'static str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// A positive whole number, or `default` when unset; anything else stops the process.
pub fn number(name: &'static str, default: u32) -> Result<u32, ConfigError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => match v.trim().parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ConfigError::Invalid {
                name,
                reason: "must be a whole number above 0".into(),
            }),
        },
        _ => Ok(default),
    }
}

/// When a failing custom provider's circuit opens and for how long:
/// `FLARE_CIRCUIT_FAILURES` failures in a row (default 5) within
/// `FLARE_CIRCUIT_WINDOW_SECONDS` (300) open it for `FLARE_CIRCUIT_OPEN_SECONDS` (60).
/// Tests shorten them; a value that is not a positive whole number stops the process.
pub fn circuit_policy() -> Result<flare_shared::domain::health::CircuitPolicy, ConfigError> {
    let mut p = flare_shared::domain::health::CircuitPolicy::default();
    let secs = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    let seconds = |name, d| number(name, secs(d)).map(|n| std::time::Duration::from_secs(n.into()));
    p.failures = number("FLARE_CIRCUIT_FAILURES", p.failures)?;
    p.within = seconds("FLARE_CIRCUIT_WINDOW_SECONDS", p.within)?;
    p.open_for = seconds("FLARE_CIRCUIT_OPEN_SECONDS", p.open_for)?;
    Ok(p)
}

/// The variable that allows private custom endpoints (loopback, RFC 1918, ...).
pub const ALLOW_PRIVATE_ENDPOINTS: &str = "FLARE_ALLOW_PRIVATE_ENDPOINTS";

/// The endpoint policy from `FLARE_ALLOW_PRIVATE_ENDPOINTS`: `true` or `false`, or
/// `default` when unset. Anything else is refused, so a typo (`off`, `ture`) can never
/// open or close private endpoints silently.
pub fn endpoint_policy(default: bool) -> Result<EndpointPolicy, ConfigError> {
    parse_endpoint_policy(
        std::env::var(ALLOW_PRIVATE_ENDPOINTS).ok().as_deref(),
        default,
    )
}

/// [`endpoint_policy`] for a given value of the variable.
pub fn parse_endpoint_policy(
    value: Option<&str>,
    default: bool,
) -> Result<EndpointPolicy, ConfigError> {
    let allow_private = match value.map(str::trim) {
        None | Some("") => default,
        Some("true") => true,
        Some("false") => false,
        Some(_) => {
            return Err(ConfigError::Invalid {
                name: ALLOW_PRIVATE_ENDPOINTS,
                reason: "must be true or false".into(),
            });
        }
    };
    Ok(EndpointPolicy { allow_private })
}

/// Structured logs: JSON in Lambda (searchable fields in CloudWatch), compact text
/// elsewhere. `RUST_LOG` filters; the default is `info`.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let result = if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        tracing_subscriber::registry()
            .with(filter)
            .with(json_layer(std::io::stdout))
            .try_init()
            .map_err(|e| e.to_string())
    } else {
        // Colour only on a terminal: a log written to a file or a pipe has no escapes.
        use std::io::IsTerminal;
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .compact()
            .with_ansi(std::io::stdout().is_terminal())
            .try_init()
            .map_err(|e| e.to_string())
    };
    // Already initialised (tests): keep the first subscriber.
    let _ = result;
}

/// One flat JSON object per line: the event's fields and those of the spans it is in
/// (a delivery's notification, channel and recipient), each named once at the top
/// level, where CloudWatch Logs Insights and metric filters find them (`$.message`,
/// `$.notification_id`).
pub fn json_layer<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    json_subscriber::layer()
        .with_writer(writer)
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .flatten_span_list_on_top_level(true)
        .with_target(false)
        .without_time() // CloudWatch stamps every line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_endpoints_take_only_true_or_false() {
        let allows = |v, default| parse_endpoint_policy(v, default).map(|p| p.allow_private);
        assert_eq!(allows(None, false).ok(), Some(false));
        assert_eq!(allows(Some(""), true).ok(), Some(true));
        assert_eq!(allows(Some("true"), false).ok(), Some(true));
        assert_eq!(allows(Some(" false "), true).ok(), Some(false));
        // The local runner once read "off" as allowed; a typo must stop the process.
        for typo in ["off", "0", "yes", "TRUE", "ture"] {
            let err = allows(Some(typo), true).unwrap_err();
            assert!(
                err.to_string().contains(ALLOW_PRIVATE_ENDPOINTS),
                "{typo}: {err}"
            );
        }
    }
}
