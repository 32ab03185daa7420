//! A user's contacts (mobile numbers and email addresses, at most one primary of each
//! kind) and contacts who are not users (incident contacts, emergency contacts).

use super::email::EmailAddress;
use super::phone::PhoneNumber;
use super::validation::{FieldErrors, ValidationError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactKind {
    Mobile,
    Email,
}

impl ContactKind {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        match s {
            "mobile" => Ok(ContactKind::Mobile),
            "email" => Ok(ContactKind::Email),
            _ => Err(ValidationError::new("must be mobile or email")),
        }
    }
}

/// One contact of a user; the value's type follows its kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Contact {
    Mobile { value: PhoneNumber, primary: bool },
    Email { value: EmailAddress, primary: bool },
}

impl Contact {
    pub fn kind(&self) -> ContactKind {
        match self {
            Contact::Mobile { .. } => ContactKind::Mobile,
            Contact::Email { .. } => ContactKind::Email,
        }
    }

    pub fn is_primary(&self) -> bool {
        match self {
            Contact::Mobile { primary, .. } | Contact::Email { primary, .. } => *primary,
        }
    }
}

/// A user's contacts, with at most one primary per kind (checked on construction).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Contact>", into = "Vec<Contact>")]
pub struct Contacts(Vec<Contact>);

impl Contacts {
    /// Builds the list, naming each contact that is a second primary of its kind.
    pub fn new(contacts: Vec<Contact>) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        let mut seen = Vec::new();
        for (i, c) in contacts.iter().enumerate() {
            if c.is_primary() {
                if seen.contains(&c.kind()) {
                    errors.add(
                        format!("contacts[{i}].primary"),
                        "only one contact of each kind may be primary",
                    );
                }
                seen.push(c.kind());
            }
        }
        errors.finish(|| Self(contacts))
    }

    /// The primary mobile: the only number SMS goes to. Non-primary numbers are never used.
    pub fn primary_mobile(&self) -> Option<&PhoneNumber> {
        self.0.iter().find_map(|c| match c {
            Contact::Mobile {
                value,
                primary: true,
            } => Some(value),
            _ => None,
        })
    }

    /// The primary email: the only address email goes to.
    pub fn primary_email(&self) -> Option<&EmailAddress> {
        self.0.iter().find_map(|c| match c {
            Contact::Email {
                value,
                primary: true,
            } => Some(value),
            _ => None,
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Contact> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<Vec<Contact>> for Contacts {
    type Error = FieldErrors;
    fn try_from(v: Vec<Contact>) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<Contacts> for Vec<Contact> {
    fn from(c: Contacts) -> Self {
        c.0
    }
}

/// Someone who is not a user: an incident contact or an SOS creator's emergency contact.
/// Each may have a mobile, an email, or both; they are that person's only contacts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExternalContact {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile: Option<PhoneNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailAddress>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mobile(n: &str, primary: bool) -> Contact {
        Contact::Mobile {
            value: PhoneNumber::parse(n).unwrap(),
            primary,
        }
    }

    fn email(a: &str, primary: bool) -> Contact {
        Contact::Email {
            value: EmailAddress::parse(a).unwrap(),
            primary,
        }
    }

    #[test]
    fn primary_contacts_are_found_and_others_ignored() {
        let c = Contacts::new(vec![
            mobile("+14155550101", false),
            mobile("+14155550100", true),
            email("home@example.org", false),
        ])
        .unwrap();
        assert_eq!(c.primary_mobile().unwrap().as_str(), "+14155550100");
        assert!(c.primary_email().is_none());
    }

    #[test]
    fn two_primaries_of_one_kind_are_refused_by_position() {
        let err = Contacts::new(vec![
            mobile("+14155550100", true),
            email("a@example.org", true),
            mobile("+14155550101", true),
        ])
        .unwrap_err();
        assert!(err.contains("contacts[2].primary"), "{err:?}");
        assert_eq!(err.fields.len(), 1);
    }

    #[test]
    fn contacts_serialize_as_kind_value_primary() {
        let c = Contacts::new(vec![mobile("+14155550100", true)]).unwrap();
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"kind": "mobile", "value": "+14155550100", "primary": true}])
        );
        let back: Contacts = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
        let bad =
            serde_json::json!([{"kind": "mobile", "value": "ana@example.org", "primary": true}]);
        assert!(serde_json::from_value::<Contacts>(bad).is_err());
    }
}
