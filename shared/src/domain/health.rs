//! A custom provider's health and its circuit: after `failures` failures in a row within
//! `within`, the provider is not tried for `open_for` (its deliveries go through the
//! failover provider); the first send after that tries it again, and one more failure
//! opens the circuit again at once, a success closes it. Pure: the store keeps it.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// When the circuit opens and for how long (the contract's 5 in 5 minutes, for 60 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitPolicy {
    pub failures: u32,
    pub within: Duration,
    pub open_for: Duration,
}

impl Default for CircuitPolicy {
    fn default() -> Self {
        Self {
            failures: 5,
            within: Duration::from_secs(300),
            open_for: Duration::from_secs(60),
        }
    }
}

/// How often a healthy provider's `last_success_at` is written at most: a success of a
/// provider already known healthy needs no write, so a fan-out costs reads only.
pub const SUCCESS_REFRESH: Duration = Duration::from_secs(60);

/// The state the settings view shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Ok,
    /// Failed lately, still tried.
    Failing,
    /// Not tried until the circuit's time is up.
    Open,
}

/// Which provider of an organization: the SMS gateway of a control center's settings,
/// or the SMTP server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HealthScope {
    Sms(super::ControlCenterId),
    Email,
}

impl HealthScope {
    /// Its part of a storage key (`sms#main`, `email`).
    pub fn key(&self) -> String {
        match self {
            HealthScope::Sms(cc) => format!("sms#{cc}"),
            HealthScope::Email => "email".into(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderHealth {
    pub consecutive_failures: u32,
    /// When the current run of failures began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<DateTime<Utc>>,
    /// While in the future, the provider is not tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_until: Option<DateTime<Utc>>,
    /// The last failure's reason (the delivery's `reason`: a code and what the provider
    /// answered, never a credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<DateTime<Utc>>,
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

impl ProviderHealth {
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.open_until.is_some_and(|u| u > now)
    }

    pub fn state(&self, now: DateTime<Utc>) -> HealthState {
        if self.is_open(now) {
            HealthState::Open
        } else if self.consecutive_failures > 0 {
            HealthState::Failing
        } else {
            HealthState::Ok
        }
    }

    /// One more failure; whether the circuit opened with it.
    pub fn failed(&mut self, now: DateTime<Utc>, error: &str, policy: &CircuitPolicy) -> bool {
        // A run that began too long ago starts again: one that never opened the
        // circuit, or whose circuit closed longer than `within` ago (a failure hours
        // after an outage is not the outage going on).
        let within = delta(policy.within);
        let stale = match self.open_until {
            None => self.failing_since.is_none_or(|since| now - since > within),
            Some(until) => now - until > within,
        };
        if self.consecutive_failures == 0 || stale {
            self.consecutive_failures = 0;
            self.failing_since = Some(now);
            self.open_until = None;
        }
        self.consecutive_failures += 1;
        self.last_error = Some(error.chars().take(300).collect());
        if self.consecutive_failures >= policy.failures && !self.is_open(now) {
            self.open_until = Some(now + delta(policy.open_for));
            return true;
        }
        false
    }

    /// A success; whether anything worth storing changed (see [`SUCCESS_REFRESH`]).
    pub fn succeeded(&mut self, now: DateTime<Utc>) -> bool {
        let was_clean = self.consecutive_failures == 0 && self.open_until.is_none();
        let fresh = self
            .last_success_at
            .is_some_and(|t| now - t < delta(SUCCESS_REFRESH));
        self.consecutive_failures = 0;
        self.failing_since = None;
        self.open_until = None;
        if was_clean && fresh {
            return false;
        }
        self.last_success_at = Some(now);
        true
    }

    /// The settings view's `health`.
    pub fn view(&self, now: DateTime<Utc>) -> serde_json::Value {
        serde_json::json!({
            "state": self.state(now),
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "last_success_at": self.last_success_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn five_failures_in_a_row_open_the_circuit_for_sixty_seconds() {
        let p = CircuitPolicy::default();
        let mut h = ProviderHealth::default();
        for i in 0..4 {
            assert!(!h.failed(at(i), "gateway_unavailable: 503", &p));
            assert_eq!(h.state(at(i)), HealthState::Failing);
        }
        assert!(h.failed(at(4), "gateway_unavailable: 503", &p));
        assert_eq!(h.state(at(5)), HealthState::Open);
        assert_eq!(h.state(at(63)), HealthState::Open);
        // Time is up: tried again; one more failure opens it again at once.
        assert_eq!(h.state(at(64)), HealthState::Failing);
        assert!(h.failed(at(65), "gateway_unavailable: 503", &p));
        assert!(h.is_open(at(100)));
        // A success closes it.
        assert!(h.succeeded(at(130)));
        assert_eq!(h.state(at(130)), HealthState::Ok);
        assert_eq!(h.last_error.as_deref(), Some("gateway_unavailable: 503"));
    }

    #[test]
    fn failures_spread_over_more_than_five_minutes_do_not_open_it() {
        let p = CircuitPolicy::default();
        let mut h = ProviderHealth::default();
        for i in 0..4 {
            h.failed(at(i * 100), "x", &p);
        }
        // The run began 400 s ago: this failure starts a new one.
        assert!(!h.failed(at(400), "x", &p));
        assert_eq!(h.consecutive_failures, 1);
        // A success in between ends a run too.
        let mut h = ProviderHealth::default();
        for i in 0..4 {
            h.failed(at(i), "x", &p);
        }
        h.succeeded(at(5));
        assert!(!h.failed(at(6), "x", &p));
    }

    #[test]
    fn a_failure_long_after_an_outage_starts_a_new_run() {
        let p = CircuitPolicy::default();
        let mut h = ProviderHealth::default();
        for i in 0..5 {
            h.failed(at(i), "x", &p);
        }
        assert!(h.is_open(at(10)));
        // Closed at 64 s; a failure an hour later, with no send in between, is one.
        assert!(!h.failed(at(3600), "x", &p));
        assert_eq!(
            (h.consecutive_failures, h.state(at(3600))),
            (1, HealthState::Failing)
        );
    }

    #[test]
    fn a_healthy_provider_needs_a_write_at_most_once_a_minute() {
        let mut h = ProviderHealth::default();
        assert!(h.succeeded(at(0)));
        assert!(!h.succeeded(at(30)));
        assert!(h.succeeded(at(61)));
        h.failed(at(62), "x", &CircuitPolicy::default());
        assert!(h.succeeded(at(63)));
    }
}
