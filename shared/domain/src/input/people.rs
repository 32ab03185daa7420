//! Users and the contacts who are not users.

use super::*;

/// `{"name", "mobile", "email"}`: a contact who is not a user; needs a mobile or an email.
pub fn parse_external_contact(
    v: &Value,
    path: &str,
    errors: &mut FieldErrors,
) -> Option<ExternalContact> {
    object(v, path, errors, |r| {
        let name = r.required_with("name", |s| visible_line(s, MAX_NAME));
        let mobile = r.optional_with("mobile", PhoneNumber::parse);
        let email = r.optional_with("email", EmailAddress::parse);
        if matches!(mobile, Some(None)) && matches!(email, Some(None)) {
            r.error("mobile", "a contact needs a mobile or an email");
            return None;
        }
        Some(ExternalContact {
            name: name?,
            mobile: mobile?,
            email: email?,
        })
    })
}

fn parse_contact(v: &Value, path: &str, errors: &mut FieldErrors) -> Option<Contact> {
    reject_unknown(v, path, errors, &["kind", "value", "primary"]);
    object(v, path, errors, |r| {
        let kind = r.required_with("kind", ContactKind::parse);
        let primary = r.optional_bool("primary").map(|p| p.unwrap_or(false));
        let value = match kind {
            Some(ContactKind::Mobile) => {
                r.required_with("value", PhoneNumber::parse)
                    .map(|n| Contact::Mobile {
                        value: n,
                        primary: false,
                    })
            }
            Some(ContactKind::Email) => {
                r.required_with("value", EmailAddress::parse)
                    .map(|a| Contact::Email {
                        value: a,
                        primary: false,
                    })
            }
            None => {
                r.required_str("value");
                None
            }
        };
        let primary = primary?;
        Some(match value? {
            Contact::Mobile { value, .. } => Contact::Mobile { value, primary },
            Contact::Email { value, .. } => Contact::Email { value, primary },
        })
    })
}

/// The body of `PUT /v1/users/{id}`. Devices are not part of it (they have their own
/// routes) and are kept by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInput {
    pub name: String,
    pub license: License,
    pub is_virtual: bool,
    pub control_center_id: Option<ControlCenterId>,
    pub contacts: Contacts,
    pub emergency_contacts: Vec<ExternalContact>,
}

impl UserInput {
    pub fn parse(body: &Value) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        reject_unknown(
            body,
            "",
            &mut errors,
            &[
                "name",
                "license",
                "virtual",
                "control_center_id",
                "contacts",
                "emergency_contacts",
            ],
        );
        let parsed = object(body, "", &mut errors, |r| {
            let name = r.required_with("name", |s| visible_line(s, MAX_NAME));
            let license = r.required_with("license", License::parse);
            let is_virtual = r.optional_bool("virtual");
            let cc = r.optional_with("control_center_id", ControlCenterId::parse);
            let contacts = r.optional_list("contacts", parse_contact);
            let emergency = r.optional_list("emergency_contacts", |v, path, errors| {
                reject_unknown(v, path, errors, &["name", "mobile", "email"]);
                parse_external_contact(v, path, errors)
            });
            let contacts = match contacts? {
                Some(list) => match Contacts::new(list) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        r.errors.merge("", e);
                        None
                    }
                },
                None => Some(Contacts::default()),
            };
            Some(UserInput {
                name: name?,
                license: license?,
                is_virtual: is_virtual?.unwrap_or(false),
                control_center_id: cc?,
                contacts: contacts?,
                emergency_contacts: emergency?.unwrap_or_default(),
            })
        });
        match parsed {
            Some(u) if errors.is_empty() => Ok(u),
            _ => Err(errors),
        }
    }
}
