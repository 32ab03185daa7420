//! Phone numbers (E.164) and SMS sender ids.

use super::validation::{ValidationError, no_line_breaks};
use serde::{Deserialize, Serialize};

/// A phone number in E.164 form (`+` then 8 to 15 digits), parsed with the
/// `phonenumber` crate so the country code is real. Number ranges are not checked
/// against the carrier plan: operators test with fictional ranges like +1 555.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

/// Numbers already parsed, by input: the `phonenumber` crate takes about 10 µs a
/// number, and every record or user read back from storage or a queue parses its
/// numbers again. Bounded (cleared when full), so memory stays flat.
static PARSED: std::sync::LazyLock<
    std::sync::RwLock<std::collections::HashMap<String, PhoneNumber>>,
> = std::sync::LazyLock::new(Default::default);
const PARSED_MAX: usize = 65_536;

impl PhoneNumber {
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        if let Some(p) = PARSED.read().ok().and_then(|m| m.get(input).cloned()) {
            return Ok(p);
        }
        let parsed = Self::parse_uncached(input)?;
        if let Ok(mut m) = PARSED.write() {
            if m.len() >= PARSED_MAX {
                m.clear();
            }
            m.insert(input.to_string(), parsed.clone());
        }
        Ok(parsed)
    }

    /// E.164 as sent: `+`, then digits only. A number that reads differently once
    /// formatting is removed (spaces, a national trunk 0) is refused, not rewritten, so
    /// what is stored and matched is what the caller wrote.
    fn parse_uncached(input: &str) -> Result<Self, ValidationError> {
        no_line_breaks(input)?;
        let s = input;
        if !s.starts_with('+') {
            return Err(ValidationError::new(
                "must be in international E.164 form, starting with + and the country code",
            ));
        }
        // Letters would be read as a vanity number (1-800-FLOWERS): refuse them; so are
        // spaces and punctuation (E.164 as sent).
        if !s[1..].chars().all(|c| c.is_ascii_digit()) {
            return Err(ValidationError::new(
                "must be E.164 as sent: + and digits only, no spaces or punctuation (+14155550100)",
            ));
        }
        let parsed = phonenumber::parse(None, s).map_err(|e| {
            ValidationError::new(format!("is not a phone number in E.164 form ({e})"))
        })?;
        if parsed.extension().is_some() {
            return Err(ValidationError::new("must not have an extension"));
        }
        let e164 = parsed.format().mode(phonenumber::Mode::E164).to_string();
        let digits = e164.len() - 1;
        if !(8..=15).contains(&digits) {
            return Err(ValidationError::new(
                "must have between 8 and 15 digits after the +",
            ));
        }
        if e164 != s {
            return Err(ValidationError::new(format!(
                "must be E.164 as sent: this number is {e164} (no national 0 after the country code)"
            )));
        }
        Ok(Self(e164))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<PhoneNumber> for String {
    fn from(v: PhoneNumber) -> String {
        v.0
    }
}

impl std::fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who an SMS says it is from: an E.164 number, or an alphanumeric sender id of 1 to
/// 11 letters and digits (the limit carriers put on alphanumeric senders).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SenderId {
    Number(PhoneNumber),
    Alphanumeric(String),
}

impl SenderId {
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        no_line_breaks(input)?;
        let s = input;
        if s.starts_with('+') {
            return PhoneNumber::parse(s).map(SenderId::Number);
        }
        if s.is_empty() || s.len() > 11 || !s.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ValidationError::new(
                "must be an E.164 number (+ and 8 to 15 digits) or 1 to 11 letters and digits",
            ));
        }
        Ok(SenderId::Alphanumeric(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            SenderId::Number(n) => n.as_str(),
            SenderId::Alphanumeric(s) => s,
        }
    }
}

impl TryFrom<String> for SenderId {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<SenderId> for String {
    fn from(v: SenderId) -> String {
        v.as_str().to_string()
    }
}

impl std::fmt::Display for SenderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_numbers_parse_and_normalise() {
        assert_eq!(
            PhoneNumber::parse("+14155550100").unwrap().as_str(),
            "+14155550100"
        );
        assert_eq!(
            PhoneNumber::parse("+351912345678").unwrap().as_str(),
            "+351912345678"
        );
        // Fictional 555 ranges are what operators test with; they must be accepted.
        assert!(PhoneNumber::parse("+15551234567").is_ok());
        assert!(PhoneNumber::parse("+15557654321").is_ok());
    }

    #[test]
    fn numbers_without_country_code_or_with_junk_are_refused() {
        for bad in [
            "4155550100",
            "",
            "+",
            "+1",
            "+12345",
            "+1234567890123456789",
            "+1415555010a",
            "+14155550100\r\n",
            "call me",
            // E.164 as sent: no formatting, no surrounding blanks, no trunk 0.
            "+1 415 555 0100",
            " +14155550100",
            "+14155550100 ",
            "+1-415-555-0100",
            "+1(415)5550100",
            "+4407911123456",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sender_ids_are_e164_or_short_alphanumerics() {
        assert!(matches!(
            SenderId::parse("+15551234567"),
            Ok(SenderId::Number(_))
        ));
        assert_eq!(SenderId::parse("ACMEFIRE").unwrap().as_str(), "ACMEFIRE");
        assert!(SenderId::parse("A").is_ok());
        assert!(SenderId::parse("ABCDEFGHIJK").is_ok());
        assert!(SenderId::parse("ABCDEFGHIJKL").is_err());
        assert!(SenderId::parse("ACME FIRE").is_err());
        assert!(SenderId::parse("ACME\r\nX").is_err());
        assert!(SenderId::parse(" ACME").is_err());
        assert!(SenderId::parse("ACME ").is_err());
        assert!(SenderId::parse(" +15551234567").is_err());
        assert!(SenderId::parse("").is_err());
    }
}
