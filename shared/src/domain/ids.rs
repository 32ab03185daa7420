//! Identifiers. They end up in storage keys, queue messages and URLs, so each is a
//! short run of letters, digits and `-_.@:` (no `#`, which the DynamoDB layout uses
//! as a separator, and no `/`).

use super::validation::ValidationError;

fn check_id(s: &str, what: &str, max: usize) -> Result<(), ValidationError> {
    if s.is_empty() {
        return Err(ValidationError::new(format!("{what} must not be empty")));
    }
    if s.len() > max {
        return Err(ValidationError::new(format!(
            "{what} must be at most {max} characters"
        )));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':'))
    {
        return Err(ValidationError::new(format!(
            "{what} may contain only letters, digits and - _ . @ :"
        )));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, ValidationError> {
                check_id(s, $what, $max)?;
                Ok(Self(s.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                check_id(&s, $what, $max)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

id_type!(
    /// An organization: the tenant every read and write is scoped to.
    OrgId, "organization id", 128
);
id_type!(
    /// A user of the directory.
    UserId, "user id", 128
);
id_type!(
    /// An incident of the dispatch platform.
    IncidentId, "incident id", 128
);
id_type!(
    /// A notification: the incident event's id, so a replayed event is the same notification.
    NotificationId, "notification id", 128
);
id_type!(
    /// A registered mobile device of a user.
    DeviceId, "device id", 128
);
id_type!(
    /// A control center of an organization; `main` is the organization's main one.
    ControlCenterId, "control center id", 64
);

impl ControlCenterId {
    pub const MAIN: &'static str = "main";

    pub fn main() -> Self {
        Self(Self::MAIN.to_string())
    }

    pub fn is_main(&self) -> bool {
        self.0 == Self::MAIN
    }
}

impl NotificationId {
    /// A fresh id for notifications that do not come from an event (manual SMS).
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }
}

impl DeviceId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_separators_and_empty() {
        assert!(UserId::parse("u-17").is_ok());
        assert!(UserId::parse("ana@example.org").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a#b").is_err());
        assert!(UserId::parse("a/b").is_err());
        assert!(ControlCenterId::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn main_control_center_is_special() {
        assert!(ControlCenterId::parse("main").unwrap().is_main());
        assert!(!ControlCenterId::parse("north").unwrap().is_main());
    }

    #[test]
    fn ids_validate_when_deserialized() {
        assert!(serde_json::from_str::<OrgId>("\"acme\"").is_ok());
        assert!(serde_json::from_str::<OrgId>("\"a b\"").is_err());
    }
}
