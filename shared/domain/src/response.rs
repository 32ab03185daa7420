//! A recipient's answer to a dispatch: responding or unavailable, and how it came.

use crate::validation::{FieldErrors, ValidationError};
use serde::{Deserialize, Serialize};

/// What the recipient answered. Any answer is an acknowledgement too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Responding,
    Unavailable,
}

impl Answer {
    pub fn as_str(self) -> &'static str {
        match self {
            Answer::Responding => "responding",
            Answer::Unavailable => "unavailable",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        match s {
            "responding" => Ok(Answer::Responding),
            "unavailable" => Ok(Answer::Unavailable),
            _ => Err(ValidationError::new(
                "must be \"responding\" or \"unavailable\"",
            )),
        }
    }

    /// `{"response": "responding" | "unavailable"}`, nothing else: every bad field
    /// named (`response`, or `body` when it is not an object).
    pub fn from_body(body: &serde_json::Value) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        let Some(fields) = body.as_object() else {
            errors.add("body", "must be an object with a `response`");
            return Err(errors);
        };
        for key in fields.keys().filter(|k| *k != "response") {
            errors.add(key.clone(), "unknown field");
        }
        let answer = match fields.get("response") {
            Some(serde_json::Value::String(s)) => errors.check("response", Answer::parse(s)),
            Some(_) => {
                errors.add("response", "must be \"responding\" or \"unavailable\"");
                None
            }
            None => {
                errors.add("response", "is required");
                None
            }
        };
        match answer {
            Some(a) if errors.is_empty() => Ok(a),
            _ => Err(errors),
        }
    }
}

/// Where the answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnsweredVia {
    App,
    Link,
    Sms,
}

impl AnsweredVia {
    pub fn as_str(self) -> &'static str {
        match self {
            AnsweredVia::App => "app",
            AnsweredVia::Link => "link",
            AnsweredVia::Sms => "sms",
        }
    }
}

/// A recipient's latest answer: a later one replaces it, time and channel included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub answer: Answer,
    pub at: chrono::DateTime<chrono::Utc>,
    pub via: AnsweredVia,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_body_names_one_of_two_answers_and_nothing_else() {
        assert_eq!(
            Answer::from_body(&json!({"response": "responding"})),
            Ok(Answer::Responding)
        );
        assert_eq!(
            Answer::from_body(&json!({"response": "unavailable"})),
            Ok(Answer::Unavailable)
        );
        for (body, field) in [
            (json!({"response": "maybe"}), "response"),
            (json!({"response": "Responding"}), "response"),
            (json!({"response": 1}), "response"),
            (json!({}), "response"),
            (json!({"response": "responding", "eta": 5}), "eta"),
            (json!("responding"), "body"),
        ] {
            let e = Answer::from_body(&body).unwrap_err();
            assert!(e.contains(field), "{body}: {e:?}");
        }
    }

    #[test]
    fn answers_and_channels_read_as_the_contract_spells_them() {
        for a in [Answer::Responding, Answer::Unavailable] {
            assert_eq!(json!(a), json!(a.as_str()));
            assert_eq!(Answer::parse(a.as_str()), Ok(a));
        }
        for v in [AnsweredVia::App, AnsweredVia::Link, AnsweredVia::Sms] {
            assert_eq!(json!(v), json!(v.as_str()));
        }
    }
}
