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
    /// When the circuit last opened: a success of a send that started before then says
    /// nothing of the provider now, and does not close it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<DateTime<Utc>>,
    /// Half-open: the one send let through to try the provider again (its id), and
    /// until when it holds that right (a probe that crashed lets another try after).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_until: Option<DateTime<Utc>>,
}

/// How a send goes, by the circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Closed: through the provider.
    Primary,
    /// Half-open: one send may try the provider again (claim it with
    /// [`ProviderHealth::claim_probe`]); every other goes through the failover provider.
    Probe,
    /// Open, or another send is probing: through the failover provider.
    Secondary,
}

/// How long a half-open circuit's probe holds its right to try the provider (a send
/// waits for the provider's pace for 8 s at most and takes 10 s at most).
pub const PROBE_LEASE: Duration = Duration::from_secs(30);

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

impl ProviderHealth {
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.open_until.is_some_and(|u| u > now)
    }

    /// The circuit's time is up but nothing has closed it yet: the next send is a probe.
    fn half_open(&self, now: DateTime<Utc>, policy: &CircuitPolicy) -> bool {
        self.open_until
            .is_some_and(|u| u <= now && now - u <= delta(policy.within))
            && self.consecutive_failures >= policy.failures
    }

    /// How a send starting `now` goes.
    pub fn route(&self, now: DateTime<Utc>, policy: &CircuitPolicy) -> Route {
        if self.is_open(now) {
            Route::Secondary
        } else if !self.half_open(now, policy) {
            Route::Primary
        } else if self.probe_until.is_some_and(|u| u > now) {
            Route::Secondary
        } else {
            Route::Probe
        }
    }

    /// Takes the half-open circuit's one probe for `id`; false (nothing to write) when
    /// the circuit is not half-open or another send holds the probe.
    pub fn claim_probe(&mut self, id: &str, now: DateTime<Utc>, policy: &CircuitPolicy) -> bool {
        if self.route(now, policy) != Route::Probe {
            return false;
        }
        self.probe = Some(id.to_string());
        self.probe_until = Some(now + delta(PROBE_LEASE));
        true
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
        self.probe = None;
        self.probe_until = None;
        if self.consecutive_failures >= policy.failures && !self.is_open(now) {
            self.open_until = Some(now + delta(policy.open_for));
            self.opened_at = Some(now);
            return true;
        }
        false
    }

    /// A success of a send that started at `started`; whether anything worth storing
    /// changed (see [`SUCCESS_REFRESH`]). One that started before the circuit last
    /// opened changes nothing: the provider may have broken since.
    pub fn succeeded(&mut self, started: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        if self.opened_at.is_some_and(|o| started < o) {
            return false;
        }
        let was_clean = self.consecutive_failures == 0 && self.open_until.is_none();
        let fresh = self
            .last_success_at
            .is_some_and(|t| now - t < delta(SUCCESS_REFRESH));
        self.consecutive_failures = 0;
        self.failing_since = None;
        self.open_until = None;
        self.opened_at = None;
        self.probe = None;
        self.probe_until = None;
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
        assert!(h.succeeded(at(130), at(130)));
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
        h.succeeded(at(5), at(5));
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
    fn a_half_open_circuit_lets_one_probe_through_at_a_time() {
        let p = CircuitPolicy::default();
        let mut h = ProviderHealth::default();
        for i in 0..5 {
            h.failed(at(i), "x", &p);
        }
        assert_eq!(h.route(at(10), &p), Route::Secondary);
        // Time is up: the first send probes, the others go around it meanwhile.
        assert_eq!(h.route(at(65), &p), Route::Probe);
        assert!(h.claim_probe("a", at(65), &p));
        assert!(!h.claim_probe("b", at(65), &p));
        assert_eq!(h.route(at(66), &p), Route::Secondary);
        // A probe that never reported back lets another try after its lease.
        assert!(h.claim_probe("b", at(96), &p));
        assert_eq!(h.probe.as_deref(), Some("b"));
        // The probe's success closes the circuit.
        assert!(h.succeeded(at(96), at(97)));
        assert_eq!(h.route(at(98), &p), Route::Primary);
        // A probe's failure opens it again at once.
        for i in 0..5 {
            h.failed(at(100 + i), "x", &p);
        }
        assert!(h.claim_probe("c", at(170), &p));
        assert!(h.failed(at(171), "x", &p));
        assert_eq!(h.route(at(172), &p), Route::Secondary);
    }

    #[test]
    fn a_success_that_started_before_the_circuit_opened_does_not_close_it() {
        let p = CircuitPolicy::default();
        let mut h = ProviderHealth::default();
        for i in 0..5 {
            h.failed(at(10 + i), "x", &p);
        }
        // A slow send that began at 5 s ends well at 20 s: the circuit stays open.
        assert!(!h.succeeded(at(5), at(20)));
        assert_eq!(h.state(at(20)), HealthState::Open);
        // One that began after it opened closes it.
        assert!(h.succeeded(at(15), at(21)));
        assert_eq!(h.state(at(21)), HealthState::Ok);
    }

    #[test]
    fn a_healthy_provider_needs_a_write_at_most_once_a_minute() {
        let mut h = ProviderHealth::default();
        assert!(h.succeeded(at(0), at(0)));
        assert!(!h.succeeded(at(30), at(30)));
        assert!(h.succeeded(at(61), at(61)));
        h.failed(at(62), "x", &CircuitPolicy::default());
        assert!(h.succeeded(at(63), at(63)));
    }
}
