//! Identifiers. They end up in storage keys, queue messages and URLs, so each is a
//! short run of letters, digits and `-_.` (no `#`, which the DynamoDB layout uses as a
//! separator, and no `/`). Ids Flare is handed by other systems (organizations from
//! the identity provider, incidents and notifications from events) may also hold `@`
//! and `:`; the ids the API names in its paths (users, devices, control centers) may not.

use super::validation::ValidationError;

/// The characters an id may hold besides letters, digits, `-`, `_` and `.`.
const PATH_ID: &[char] = &[];
const FOREIGN_ID: &[char] = &['@', ':'];

fn check_id(s: &str, what: &str, max: usize, extra: &[char]) -> Result<(), ValidationError> {
    if s.is_empty() {
        return Err(ValidationError::new(format!("{what} must not be empty")));
    }
    // They name the folder itself or its parent in a path or URL.
    if s == "." || s == ".." {
        return Err(ValidationError::new(format!("{what} may not be . or ..")));
    }
    if s.len() > max {
        return Err(ValidationError::new(format!(
            "{what} must be at most {max} characters"
        )));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || extra.contains(&c))
    {
        let extra: String = extra.iter().map(|c| format!(" {c}")).collect();
        return Err(ValidationError::new(format!(
            "{what} may contain only letters, digits and - _ .{extra}"
        )));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal, $extra:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, ValidationError> {
                check_id(s, $what, $max, $extra)?;
                Ok(Self(s.to_string()))
            }

            /// An id that may name something stored before the API refused `@` and `:`
            /// in path ids (to find, read or delete it), or one another system made.
            pub fn parse_existing(s: &str) -> Result<Self, ValidationError> {
                check_id(s, $what, $max, FOREIGN_ID)?;
                Ok(Self(s.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                // Read back from storage, queues and events: ids written before the API
                // refused `@` and `:` in paths must still read.
                check_id(&s, $what, $max, FOREIGN_ID)?;
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
    OrgId, "organization id", 128, FOREIGN_ID
);
id_type!(
    /// A user of the directory.
    UserId, "user id", 128, PATH_ID
);
id_type!(
    /// An incident of the dispatch platform.
    IncidentId, "incident id", 128, FOREIGN_ID
);
id_type!(
    /// A notification: the incident event's id, so a replayed event is the same notification.
    NotificationId, "notification id", 128, FOREIGN_ID
);
id_type!(
    /// A registered mobile device of a user.
    DeviceId, "device id", 128, PATH_ID
);
id_type!(
    /// A control center of an organization; `main` is the organization's main one.
    ControlCenterId, "control center id", 128, PATH_ID
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

/// An `Idempotency-Key` header: 1 to 255 visible ASCII characters (what HTTP header
/// values carry unchanged everywhere).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX: usize = 255;

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if s.is_empty() || s.len() > Self::MAX || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ValidationError::new(
                "must be 1 to 255 visible ASCII characters (no spaces)",
            ));
        }
        Ok(Self(s.to_string()))
    }

    /// The notification this key names in `org`: the same key from the same organization
    /// always names the same notification, and no two organizations share one.
    pub fn notification_id(&self, org: &OrgId) -> NotificationId {
        // A name-based (v5) UUID of the organization and the key, in a namespace of
        // Flare's own; both are length-prefixed so ("a", "bc") and ("ab", "c") differ.
        const NAMESPACE: uuid::Uuid = uuid::uuid!("6f1d3c1e-8a8b-4f7e-9a55-3c1f0b7e2d41");
        let name = format!("{}:{}:{}:{}", org.0.len(), org.0, self.0.len(), self.0);
        NotificationId(format!(
            "sms-{}",
            uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes())
        ))
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
        // Not in a path any more (contract v1.1), but still read back where stored.
        assert!(UserId::parse("ana@example.org").is_err());
        assert!(UserId::parse("u:17").is_err());
        assert!(serde_json::from_str::<UserId>("\"ana@example.org\"").is_ok());
        assert!(OrgId::parse("tenant:acme").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a#b").is_err());
        for dots in [".", ".."] {
            assert!(UserId::parse(dots).is_err());
            assert!(ControlCenterId::parse(dots).is_err());
            assert!(DeviceId::parse(dots).is_err());
        }
        assert!(UserId::parse("a.b").is_ok() && UserId::parse("...").is_ok());
        assert!(UserId::parse("a/b").is_err());
        assert!(ControlCenterId::parse(&"x".repeat(128)).is_ok());
        assert!(ControlCenterId::parse(&"x".repeat(129)).is_err());
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

    #[test]
    fn an_idempotency_key_names_one_notification_per_organization() {
        let key = IdempotencyKey::parse("dispatch-4711").unwrap();
        let acme = OrgId::parse("acme").unwrap();
        assert_eq!(key.notification_id(&acme), key.notification_id(&acme));
        assert_ne!(
            key.notification_id(&acme),
            key.notification_id(&OrgId::parse("acme2").unwrap())
        );
        // Length-prefixed: ("a", "b:c") and ("a:b", "c") are different names.
        let (a, ab) = (OrgId::parse("a").unwrap(), OrgId::parse("a:b").unwrap());
        assert_ne!(
            IdempotencyKey::parse("b:c").unwrap().notification_id(&a),
            IdempotencyKey::parse("c").unwrap().notification_id(&ab)
        );
        assert!(NotificationId::parse(key.notification_id(&acme).as_str()).is_ok());
        for bad in ["", "two words", "tab\there", "é", &"k".repeat(256)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
    }
}
