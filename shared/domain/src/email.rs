//! Email addresses, validated with the `email_address` crate.

use super::validation::{ValidationError, no_line_breaks};
use serde::{Deserialize, Serialize};

/// A bare address (`local@domain.tld`): no display name, no domain literal, a domain
/// with at least one dot so it can be delivered on the internet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        no_line_breaks(input)?;
        let s = input.trim();
        // RFC 5321's limit on a path; longer ones no mail server takes.
        if s.chars().count() > 254 {
            return Err(ValidationError::new("must be at most 254 characters"));
        }
        let options = email_address::Options::default()
            .with_required_tld()
            .without_display_text()
            .without_domain_literal();
        let parsed = email_address::EmailAddress::parse_with_options(s, options)
            .map_err(|e| ValidationError::new(format!("is not an email address ({e})")))?;
        let email = parsed.email();
        // RFC 5322 allows quoted local parts, comments and (with SMTPUTF8) any script;
        // Flare takes plain ASCII local@domain only, so no address can carry a space, a
        // quote, a control or a line separator into a header or an SMTP command.
        let (local, domain) = email.rsplit_once('@').unwrap_or_default();
        let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c);
        let dot_atom = local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atext));
        let ldh = domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
        if !dot_atom || !ldh {
            return Err(ValidationError::new(
                "must be a plain address, local@domain: letters, digits and !#$%&'*+/=?^_`{|}~- in dot-separated parts before the @, an ASCII domain after it (IDN as xn--)",
            ));
        }
        Ok(Self(email.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<EmailAddress> for String {
    fn from(v: EmailAddress) -> String {
        v.0
    }
}

impl std::fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        let a = EmailAddress::parse(" ana@example.org ").unwrap();
        assert_eq!(a.as_str(), "ana@example.org");
        assert_eq!(a.domain(), "example.org");
        assert!(EmailAddress::parse("alerts+dispatch@acme.example").is_ok());
        assert!(EmailAddress::parse("o'brien.j_x-y{1}@xn--mnchen-3ya.example").is_ok());
    }

    #[test]
    fn junk_display_names_and_header_injection_are_refused() {
        for bad in [
            "",
            "ana",
            "ana@",
            "@example.org",
            "ana@localhost",
            "Ana <ana@example.org>",
            "ana@example.org\r\nBcc: x@evil.example",
            "ana@[127.0.0.1]",
            "\"a b\"@example.org",
            "\"ana\"@example.org",
            "ana(comment)@example.org",
            "an\u{2028}a@example.org",
            "ana@exa\u{2028}mple.org",
            "ana..silva@example.org",
            ".ana@example.org",
            "anä@example.org",
            "ana@münchen.example",
            "ana\u{0}@example.org",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
