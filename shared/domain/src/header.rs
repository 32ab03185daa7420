//! The one custom HTTP header an SMS gateway may need (`X-Api-Key: abc123`). Its name is
//! configuration; its value is a secret and lives in the secret store.

use super::validation::ValidationError;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// A header name: an RFC 9110 token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HeaderName(String);

impl HeaderName {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if s.is_empty() || !s.chars().all(tchar) {
            return Err(ValidationError::new(
                "header name must be a token of letters, digits and !#$%&'*+-.^_`|~",
            ));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HeaderName {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<HeaderName> for String {
    fn from(v: HeaderName) -> String {
        v.0
    }
}

/// A full `Name: value` header line as an administrator types it.
#[derive(Debug, Clone)]
pub struct HttpHeader {
    pub name: HeaderName,
    pub value: SecretString,
}

/// Headers Flare sets itself (or the connection needs), which a gateway's custom header
/// may not replace: a `Content-Length` of its own truncated the body and left the rest
/// on the kept-alive connection; Basic auth comes from `username` and `password`.
pub const RESERVED: [&str; 6] = [
    "Host",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Content-Type",
    "Authorization",
];

impl HeaderName {
    /// Whether this is one of [`RESERVED`] (header names are case-insensitive).
    pub fn is_reserved(&self) -> bool {
        RESERVED.iter().any(|r| r.eq_ignore_ascii_case(&self.0))
    }
}

/// How a stored header value is shown: never the value itself.
pub const MASK: &str = "****";

impl HttpHeader {
    pub fn parse(line: &str) -> Result<Self, ValidationError> {
        if line.contains(['\r', '\n']) {
            return Err(ValidationError::new("must not contain line breaks"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| ValidationError::new("must be of the form `Name: value`"))?;
        // As sent: `Name: value`, the blanks after the colon being the separator.
        let name = HeaderName::parse(name)?;
        if name.is_reserved() {
            return Err(ValidationError::new(format!(
                "may not set {}: Flare sets it (Basic auth comes from username and password)",
                name.as_str()
            )));
        }
        let value = value.trim_start_matches(' ');
        if value.is_empty() {
            return Err(ValidationError::new("header value must not be empty"));
        }
        super::text::check_visible(value)
            .map_err(|e| ValidationError::new(format!("header value {e}")))?;
        if value.trim() != value {
            return Err(ValidationError::new(
                "header value must not start or end with a blank",
            ));
        }
        Ok(Self {
            name,
            value: SecretString::from(value.to_string()),
        })
    }

    /// `X-Api-Key: ****`, the only form in which a stored header is ever shown.
    pub fn masked(name: &HeaderName) -> String {
        format!("{}: {MASK}", name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn header_lines_split_into_name_and_secret_value() {
        let h = HttpHeader::parse("X-Api-Key: abc123").unwrap();
        assert_eq!(h.name.as_str(), "X-Api-Key");
        assert_eq!(h.value.expose_secret(), "abc123");
        assert_eq!(HttpHeader::masked(&h.name), "X-Api-Key: ****");
        assert!(!format!("{h:?}").contains("abc123"));
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "X-Api-Key",
            ": abc",
            "X Api: abc",
            "X-Api-Key:",
            "X-Api-Key: abc\r\nX-Evil: 1",
            "X-Api-Key: a\nb",
            "X-Api-Key: a\u{0}b",
            // As sent: no blank around the name, none trailing, no tab, nothing hidden.
            " X-Api-Key: abc",
            "X-Api-Key : abc",
            "X-Api-Key: abc ",
            "X-Api-Key: a\tb",
            "X-Api-Key:\tabc",
            "X-Api-Key: abc\u{200B}",
            "X-Api-Key: \u{202E}cba",
        ] {
            assert!(HttpHeader::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
