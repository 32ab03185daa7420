//! The eight licenses, ordered lowest first: deriving `Ord` from the declaration order
//! is what makes "Basic Responder and above" a comparison.

use super::validation::ValidationError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum License {
    PassiveReporter,
    MonitoredReporter,
    EngagedReporter,
    BasicResponder,
    AdvancedResponder,
    MobileSupervisor,
    DispatchOperator,
    Administrator,
}

impl License {
    pub const ALL: [License; 8] = [
        License::PassiveReporter,
        License::MonitoredReporter,
        License::EngagedReporter,
        License::BasicResponder,
        License::AdvancedResponder,
        License::MobileSupervisor,
        License::DispatchOperator,
        License::Administrator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            License::PassiveReporter => "passive_reporter",
            License::MonitoredReporter => "monitored_reporter",
            License::EngagedReporter => "engaged_reporter",
            License::BasicResponder => "basic_responder",
            License::AdvancedResponder => "advanced_responder",
            License::MobileSupervisor => "mobile_supervisor",
            License::DispatchOperator => "dispatch_operator",
            License::Administrator => "administrator",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| {
                ValidationError::new(format!(
                    "must be one of {}",
                    Self::ALL.map(|l| l.as_str()).join(", ")
                ))
            })
    }

    /// Only Basic Responder and above receive in-app notifications.
    pub fn allows_app(self) -> bool {
        self >= License::BasicResponder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licenses_are_ordered_lowest_first() {
        let mut sorted = License::ALL;
        sorted.sort();
        assert_eq!(sorted, License::ALL);
        assert!(License::PassiveReporter < License::Administrator);
    }

    #[test]
    fn only_basic_responder_and_above_get_the_app() {
        let allowed: Vec<_> = License::ALL
            .into_iter()
            .filter(|l| l.allows_app())
            .collect();
        assert_eq!(allowed.first(), Some(&License::BasicResponder));
        assert_eq!(allowed.len(), 5);
    }

    #[test]
    fn parse_round_trips_and_names_the_choices() {
        for l in License::ALL {
            assert_eq!(License::parse(l.as_str()).unwrap(), l);
            assert_eq!(
                serde_json::to_string(&l).unwrap(),
                format!("\"{}\"", l.as_str())
            );
        }
        let err = License::parse("captain").unwrap_err();
        assert!(err.0.contains("basic_responder"));
    }
}
