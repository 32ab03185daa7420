//! Incident events as they arrive from EventBridge, parsed into typed details.

use super::audience::{Audience, parse_audience};
use super::contact::ExternalContact;
use super::delivery::Message;
use super::ids::{ControlCenterId, IncidentId, NotificationId, OrgId, UserId};
use super::input::{Reader, parse_external_contact, parse_message, string_item};
use super::validation::FieldErrors;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a notification is about; each has its own communication setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Dispatch,
    IncidentContacts,
    Messages,
    Distress,
    ManualSms,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Category::Dispatch,
        Category::IncidentContacts,
        Category::Messages,
        Category::Distress,
        Category::ManualSms,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Dispatch => "dispatch",
            Category::IncidentContacts => "incident_contacts",
            Category::Messages => "messages",
            Category::Distress => "distress",
            Category::ManualSms => "manual_sms",
        }
    }

    /// The lane its deliveries travel in: a dispatch, an SOS and a dispatcher's manual
    /// SMS (and so their fallbacks and escalations, which keep the category) go before
    /// messages and incident contacts, which may be sent to thousands at once.
    pub fn lane(self) -> Lane {
        match self {
            Category::Dispatch | Category::Distress | Category::ManualSms => Lane::Urgent,
            Category::Messages | Category::IncidentContacts => Lane::Normal,
        }
    }
}

/// Which of a channel's two queues a delivery waits in.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    Urgent,
    /// Also what a message queued before lanes existed is read as.
    #[default]
    Normal,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Urgent, Lane::Normal];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Urgent => "urgent",
            Lane::Normal => "normal",
        }
    }
}

/// The detail-types Flare takes, with their categories.
pub const DETAIL_TYPES: [(&str, Category); 4] = [
    ("Incident Dispatched", Category::Dispatch),
    ("Incident Message Posted", Category::Messages),
    ("Incident Contacts Notified", Category::IncidentContacts),
    ("SOS Raised", Category::Distress),
];

/// Who an event is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Targets {
    /// Users of the directory, by id (duplicates removed, order kept).
    Users(Vec<UserId>),
    /// Users, and contacts who are not users.
    UsersAndContacts {
        users: Vec<UserId>,
        contacts: Vec<ExternalContact>,
    },
    /// The emergency contacts of the user who raised an SOS.
    SosCreator(UserId),
}

/// An incident event, valid by construction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentEvent {
    /// The event's `id`: a replayed event is the same notification.
    pub notification_id: NotificationId,
    pub category: Category,
    pub org_id: OrgId,
    pub control_center_id: ControlCenterId,
    pub incident_id: IncidentId,
    /// Optional only for an SOS.
    pub message: Option<Message>,
    pub targets: Targets,
    /// v1.2: the groups of users it is for as well as (or instead of) `targets`' ids
    /// (dispatches and messages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<Audience>,
    pub time: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the event is not an EventBridge envelope: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("unknown detail-type {0:?}; Flare takes {accepted}", accepted = accepted_detail_types())]
    UnknownDetailType(String),
    #[error("invalid event detail: {0}")]
    InvalidDetail(FieldErrors),
}

/// The four detail-types, quoted, for an error message.
fn accepted_detail_types() -> String {
    DETAIL_TYPES
        .iter()
        .map(|(t, _)| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The envelope's fields are all optional here so that a missing one is a named
/// validation error, not "invalid JSON".
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    id: Option<String>,
    #[serde(rename = "detail-type", default)]
    detail_type: Option<String>,
    #[serde(default)]
    time: Option<DateTime<Utc>>,
    #[serde(default)]
    detail: serde_json::Value,
}

impl IncidentEvent {
    pub fn from_json(bytes: &[u8]) -> Result<Self, EventError> {
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(EventError::Malformed)?;
        Self::from_value(v)
    }

    pub fn from_value(v: serde_json::Value) -> Result<Self, EventError> {
        let env: Envelope = serde_json::from_value(v).map_err(EventError::Malformed)?;
        let detail_type = env.detail_type.unwrap_or_default();
        let category = DETAIL_TYPES
            .iter()
            .find(|(t, _)| *t == detail_type)
            .map(|(_, c)| *c)
            .ok_or_else(|| EventError::UnknownDetailType(detail_type.clone()))?;

        let mut errors = FieldErrors::new();
        let notification_id = match &env.id {
            Some(id) => errors.check("id", NotificationId::parse(id)),
            None => {
                errors.add("id", "is required");
                None
            }
        };
        let empty = serde_json::Map::new();
        let detail = match env.detail.as_object() {
            Some(d) => d,
            None => {
                errors.add("detail", "must be an object");
                &empty
            }
        };
        let mut r = Reader::new(detail, "detail", &mut errors);
        let org_id = r.required_with("org_id", OrgId::parse);
        let control_center_id = r.required_with("control_center_id", ControlCenterId::parse);
        let incident_id = r.required_with("incident_id", IncidentId::parse);
        let message = match category {
            Category::Distress => r.optional_value("message", parse_message),
            _ => r.required_value("message", parse_message).map(Some),
        };
        let audience = read_audience(&mut r, category);
        let targets = read_targets(&mut r, category, matches!(audience, Some(Some(_))));
        if !errors.is_empty() {
            return Err(EventError::InvalidDetail(errors));
        }
        // Every Option below is Some: a None would have recorded an error above.
        match (
            notification_id,
            org_id,
            control_center_id,
            incident_id,
            message,
            targets,
            audience,
        ) {
            (Some(n), Some(o), Some(c), Some(i), Some(m), Some(t), Some(a)) => Ok(IncidentEvent {
                notification_id: n,
                category,
                org_id: o,
                control_center_id: c,
                incident_id: i,
                message: m,
                targets: t,
                audience: a,
                time: env.time,
            }),
            _ => Err(EventError::InvalidDetail(errors)),
        }
    }
}

/// `detail.audience`: taken by dispatches and messages only. `Some(None)` is no audience;
/// `None` an error recorded in the reader.
fn read_audience(r: &mut Reader<'_, '_>, category: Category) -> Option<Option<Audience>> {
    match category {
        Category::Dispatch | Category::Messages => r.optional_value("audience", parse_audience),
        _ if r.has("audience") => {
            r.error(
                "audience",
                "is taken only by \"Incident Dispatched\" and \"Incident Message Posted\"",
            );
            None
        }
        _ => Some(None),
    }
}

/// Who the event names: the SOS creator, the incident contacts, or the listed users.
fn read_targets(r: &mut Reader<'_, '_>, category: Category, has_audience: bool) -> Option<Targets> {
    match category {
        Category::Distress => r
            // Ids in events are another system's: users stored with `@` or `:`
            // (before path ids refused them) are still notified.
            .required_with("creator_id", UserId::parse_existing)
            .map(Targets::SosCreator),
        Category::IncidentContacts => {
            let users = r.required_list("recipient_ids", string_item(UserId::parse_existing));
            let contacts = r.optional_list("contacts", parse_external_contact);
            match (users, contacts) {
                (Some(users), Some(contacts)) => Some(Targets::UsersAndContacts {
                    users: dedupe(users),
                    contacts: contacts.unwrap_or_default(),
                }),
                _ => None,
            }
        }
        // With an audience, `recipient_ids` is optional (the audience names the rest).
        _ if has_audience => r
            .optional_list("recipient_ids", string_item(UserId::parse_existing))
            .map(|ids| Targets::Users(dedupe(ids.unwrap_or_default()))),
        _ => r
            .required_list("recipient_ids", string_item(UserId::parse_existing))
            .map(|ids| Targets::Users(dedupe(ids))),
    }
}

/// The same user twice in one event must not be told twice.
fn dedupe(ids: Vec<UserId>) -> Vec<UserId> {
    let mut seen = std::collections::HashSet::new();
    ids.into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(detail_type: &str, detail: serde_json::Value) -> serde_json::Value {
        json!({
            "version": "0", "id": "9f1c2d3e-0000-4000-8000-000000000001",
            "detail-type": detail_type, "source": "flare.incidents",
            "account": "123456789012", "time": "2026-11-26T21:00:00Z",
            "region": "us-east-1", "resources": [], "detail": detail
        })
    }

    fn msg() -> serde_json::Value {
        json!({"title": "Structure fire", "body": "12 Main St"})
    }

    #[test]
    fn the_four_detail_types_map_to_their_categories() {
        let base = json!({"org_id": "acme", "control_center_id": "north",
            "incident_id": "inc-88", "recipient_ids": ["u-1"], "message": msg()});
        let cases = [
            ("Incident Dispatched", Category::Dispatch),
            ("Incident Message Posted", Category::Messages),
            ("Incident Contacts Notified", Category::IncidentContacts),
        ];
        for (t, c) in cases {
            let e = IncidentEvent::from_value(envelope(t, base.clone())).unwrap();
            assert_eq!(e.category, c);
            assert_eq!(
                e.notification_id.as_str(),
                "9f1c2d3e-0000-4000-8000-000000000001"
            );
        }
        let sos = IncidentEvent::from_value(envelope(
            "SOS Raised",
            json!({"org_id": "acme", "control_center_id": "main", "incident_id": "inc-9",
                   "creator_id": "u-5"}),
        ))
        .unwrap();
        assert_eq!(sos.category, Category::Distress);
        assert_eq!(
            sos.targets,
            Targets::SosCreator(UserId::parse("u-5").unwrap())
        );
        assert!(sos.message.is_none());
    }

    #[test]
    fn an_audience_makes_recipient_ids_optional_for_dispatches_and_messages_only() {
        let base = json!({"org_id": "acme", "control_center_id": "north",
            "incident_id": "inc-88", "message": msg(), "audience": {"all": true}});
        for t in ["Incident Dispatched", "Incident Message Posted"] {
            let e = IncidentEvent::from_value(envelope(t, base.clone())).unwrap();
            assert_eq!(e.targets, Targets::Users(vec![]));
            assert!(e.audience.as_ref().is_some_and(|a| a.all), "{t}");
        }
        let err = IncidentEvent::from_value(envelope("Incident Contacts Notified", base.clone()))
            .unwrap_err();
        let EventError::InvalidDetail(fields) = err else {
            panic!("{err}")
        };
        assert!(fields.contains("detail.audience"), "{fields}");
        assert!(fields.contains("detail.recipient_ids"), "{fields}");
        // Without an audience the ids are required, as in v1.
        let mut no_ids = base.clone();
        no_ids.as_object_mut().unwrap().remove("audience");
        let err = IncidentEvent::from_value(envelope("Incident Dispatched", no_ids)).unwrap_err();
        assert!(err.to_string().contains("detail.recipient_ids"), "{err}");
        // A bad audience is named with its path.
        let mut bad = base;
        bad["audience"] = json!({"control_centers": []});
        let err = IncidentEvent::from_value(envelope("Incident Dispatched", bad)).unwrap_err();
        assert!(
            err.to_string().contains("detail.audience.control_centers"),
            "{err}"
        );
    }

    #[test]
    fn contacts_who_are_not_users_are_parsed() {
        let e = IncidentEvent::from_value(envelope(
            "Incident Contacts Notified",
            json!({"org_id": "acme", "control_center_id": "north", "incident_id": "inc-88",
                   "recipient_ids": ["u-1", "u-1", "u-2"], "message": msg(),
                   "contacts": [{"name": "Neighbour", "mobile": "+14155550199"}]}),
        ))
        .unwrap();
        match e.targets {
            Targets::UsersAndContacts { users, contacts } => {
                assert_eq!(users.len(), 2, "duplicates removed");
                assert_eq!(
                    contacts[0].mobile.as_ref().unwrap().as_str(),
                    "+14155550199"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_bad_field_is_named() {
        let err = IncidentEvent::from_value(envelope(
            "Incident Dispatched",
            json!({"org_id": "", "incident_id": 5, "recipient_ids": ["ok", "a b"],
                   "message": {"title": "x\r\ny"}}),
        ))
        .unwrap_err();
        let EventError::InvalidDetail(f) = err else {
            panic!("{err:?}")
        };
        for path in [
            "detail.org_id",
            "detail.control_center_id",
            "detail.incident_id",
            "detail.recipient_ids[1]",
            "detail.message.title",
            "detail.message.body",
        ] {
            assert!(f.contains(path), "{path} missing from {f:?}");
        }
    }

    #[test]
    fn a_missing_id_is_a_named_field_and_an_unknown_detail_type_lists_the_four() {
        let mut ev = envelope(
            "Incident Dispatched",
            json!({"org_id": "acme", "control_center_id": "main", "incident_id": "i",
                   "recipient_ids": ["u-1"], "message": {"title": "t", "body": "b"}}),
        );
        ev.as_object_mut().unwrap().remove("id");
        let err = IncidentEvent::from_value(ev).unwrap_err();
        let EventError::InvalidDetail(f) = err else {
            panic!("{err:?}")
        };
        assert!(f.contains("id"), "{f:?}");
        let err = IncidentEvent::from_value(envelope("Incident Closed", json!({}))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown detail-type \"Incident Closed\"; Flare takes \"Incident Dispatched\", \"Incident Message Posted\", \"Incident Contacts Notified\", \"SOS Raised\""
        );
    }

    #[test]
    fn unknown_detail_types_and_non_envelopes_are_refused() {
        assert!(matches!(
            IncidentEvent::from_value(envelope("Incident Closed", json!({}))),
            Err(EventError::UnknownDetailType(_))
        ));
        assert!(matches!(
            IncidentEvent::from_json(b"{not json"),
            Err(EventError::Malformed(_))
        ));
    }
}
