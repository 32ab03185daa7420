//! Who an all-call is for: every user of some control centers, or of the organization.
//! The directory is the authority; the event names the groups, not the people.

use super::ids::ControlCenterId;
use super::input::{Reader, object, string_item};
use super::user::User;
use super::validation::FieldErrors;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An event's `audience`, as given: `{"control_centers": [...]}` or `{"all": true}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audience {
    /// Every user of the organization.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    /// Every user whose control center is one of these (a user without one belongs to
    /// `main`). An unknown control center has no users: it is not an error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub control_centers: Vec<ControlCenterId>,
}

impl Audience {
    /// Whether `user` is one of the audience.
    pub fn includes(&self, user: &User) -> bool {
        if self.all {
            return true;
        }
        let main = ControlCenterId::main();
        let cc = user.control_center_id.as_ref().unwrap_or(&main);
        self.control_centers.contains(cc)
    }
}

/// Parses `detail.audience`: an object with `all: true` or a non-empty
/// `control_centers` list of ids (duplicates removed, order kept).
pub fn parse_audience(v: &Value, path: &str, errors: &mut FieldErrors) -> Option<Audience> {
    object(v, path, errors, |r: &mut Reader| {
        let all = r.optional_bool("all");
        let ccs = r.optional_list("control_centers", string_item(ControlCenterId::parse));
        let (all, ccs) = (all?.unwrap_or(false), ccs?.unwrap_or_default());
        if !all && ccs.is_empty() {
            r.error(
                "control_centers",
                "must list at least one control center (or give \"all\": true)",
            );
            return None;
        }
        let mut seen = std::collections::HashSet::new();
        Some(Audience {
            all,
            control_centers: ccs.into_iter().filter(|c| seen.insert(c.clone())).collect(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(id: &str, cc: Option<&str>) -> User {
        serde_json::from_value(json!({
            "user_id": id, "name": id, "license": "basic_responder", "virtual": false,
            "control_center_id": cc,
        }))
        .unwrap()
    }

    fn parse(v: Value) -> Result<Audience, FieldErrors> {
        let mut errors = FieldErrors::new();
        let a = parse_audience(&v, "detail.audience", &mut errors);
        a.filter(|_| errors.is_empty()).ok_or(errors)
    }

    #[test]
    fn control_centers_take_their_users_and_main_takes_those_without_one() {
        let a = parse(json!({"control_centers": ["north", "main", "north"]})).unwrap();
        assert_eq!(a.control_centers.len(), 2, "duplicates removed");
        assert!(a.includes(&user("a", Some("north"))));
        assert!(a.includes(&user("b", None)));
        assert!(a.includes(&user("c", Some("main"))));
        assert!(!a.includes(&user("d", Some("south"))));
    }

    #[test]
    fn all_takes_everyone_and_is_shown_as_given() {
        let a = parse(json!({"all": true})).unwrap();
        assert!(a.includes(&user("d", Some("south"))));
        assert_eq!(serde_json::to_value(&a).unwrap(), json!({"all": true}));
        let b = parse(json!({"control_centers": ["north"]})).unwrap();
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            json!({"control_centers": ["north"]})
        );
    }

    #[test]
    fn an_audience_of_nobody_or_of_bad_ids_is_named() {
        for bad in [
            json!({}),
            json!({"all": false}),
            json!({"control_centers": []}),
            json!({"control_centers": ["../x"]}),
            json!({"all": "yes"}),
            json!(["north"]),
        ] {
            let errors = parse(bad.clone()).expect_err(&bad.to_string());
            let text = errors.to_string();
            assert!(text.contains("detail.audience"), "{bad}: {text}");
        }
    }
}
