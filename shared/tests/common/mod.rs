//! Builders shared by the routing tests.
#![allow(dead_code)]

use flare_shared::domain::routing::{Action, Plan, RecipientPlan};
use flare_shared::*;

pub fn user(id: &str, license: License) -> User {
    User {
        user_id: UserId::parse(id).unwrap(),
        name: format!("User {id}"),
        license,
        is_virtual: false,
        control_center_id: None,
        contacts: Contacts::default(),
        emergency_contacts: vec![],
        devices: vec![],
    }
}

/// A responder with a device, a primary mobile and a primary email: reachable everywhere.
pub fn responder(id: &str) -> User {
    with_contacts(with_device(user(id, License::BasicResponder)), true, true)
}

pub fn with_device(mut u: User) -> User {
    u.devices.push(Device {
        device_id: DeviceId::parse(&format!("d-{}", u.user_id)).unwrap(),
        platform: Platform::Fcm,
        token: "tok".into(),
        endpoint: Some(format!("endpoint/{}", u.user_id)),
    });
    u
}

pub fn with_contacts(mut u: User, primary_mobile: bool, primary_email: bool) -> User {
    u.contacts = Contacts::new(vec![
        Contact::Mobile {
            value: PhoneNumber::parse("+14155550100").unwrap(),
            primary: primary_mobile,
        },
        Contact::Mobile {
            value: PhoneNumber::parse("+14155550101").unwrap(),
            primary: false,
        },
        Contact::Email {
            value: EmailAddress::parse("primary@example.org").unwrap(),
            primary: primary_email,
        },
        Contact::Email {
            value: EmailAddress::parse("other@example.org").unwrap(),
            primary: false,
        },
    ])
    .unwrap();
    u
}

pub fn virtual_user(id: &str) -> User {
    let mut u = responder(id);
    u.is_virtual = true;
    u
}

pub fn contact(name: &str, mobile: bool, email: bool) -> ExternalContact {
    ExternalContact {
        name: name.into(),
        mobile: mobile.then(|| PhoneNumber::parse("+351912345678").unwrap()),
        email: email.then(|| EmailAddress::parse("rui@example.org").unwrap()),
    }
}

pub fn settings(method: Method) -> CommunicationSettings {
    CommunicationSettings {
        dispatch: method,
        incident_contacts: method,
        messages: method,
        distress: true,
        dispatch_virtual_users: true,
        manual_sms: true,
        // No window: push accepted is enough (the window has tests of its own).
        app_fallback_seconds: 0,
        dispatch_escalation: None,
    }
}

pub fn only(plan: &Plan) -> &RecipientPlan {
    assert_eq!(plan.recipients.len(), 1);
    &plan.recipients[0]
}

pub fn reason(r: &RecipientPlan, c: Channel) -> Option<SkipReason> {
    r.get(c).skip_reason()
}

pub fn is_sent_now(r: &RecipientPlan, c: Channel) -> bool {
    matches!(r.get(c).action, Action::Send { .. })
}

pub fn is_held(r: &RecipientPlan, c: Channel) -> bool {
    matches!(r.get(c).action, Action::AwaitPush { .. })
}
