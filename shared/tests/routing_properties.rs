//! Property tests of the routing policy over random recipients and settings.

mod common;

use common::*;
use flare_shared::domain::routing::{Action, Recipient, RoutingContext, plan};
use flare_shared::*;
use proptest::prelude::*;

fn license() -> impl Strategy<Value = License> {
    prop::sample::select(License::ALL.to_vec())
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(Method::ALL.to_vec())
}

fn category() -> impl Strategy<Value = Category> {
    prop::sample::select(vec![
        Category::Dispatch,
        Category::IncidentContacts,
        Category::Messages,
        Category::Distress,
        Category::ManualSms,
    ])
}

fn comm_settings() -> impl Strategy<Value = CommunicationSettings> {
    (
        method(),
        method(),
        method(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                dispatch,
                incident_contacts,
                messages,
                distress,
                dispatch_virtual_users,
                manual_sms,
            )| {
                CommunicationSettings {
                    dispatch,
                    incident_contacts,
                    messages,
                    distress,
                    dispatch_virtual_users,
                    manual_sms,
                    // The plan does not depend on the window.
                    app_fallback_seconds: 60,
                    dispatch_escalation: None,
                    sms_help_text: None,
                }
            },
        )
}

/// 0 = no such contact, 1 = present but not primary, 2 = primary.
fn a_user() -> impl Strategy<Value = User> {
    (license(), any::<bool>(), 0usize..3, 0u8..3, 0u8..3).prop_map(
        |(lic, is_virtual, devices, mobile, email)| {
            let mut u = user("u", lic);
            u.is_virtual = is_virtual;
            for _ in 0..devices {
                u = with_device(u);
            }
            let mut contacts = vec![];
            if mobile > 0 {
                contacts.push(Contact::Mobile {
                    value: PhoneNumber::parse("+14155550100").unwrap(),
                    primary: mobile == 2,
                });
            }
            if email > 0 {
                contacts.push(Contact::Email {
                    value: EmailAddress::parse("a@example.org").unwrap(),
                    primary: email == 2,
                });
            }
            u.contacts = Contacts::new(contacts).unwrap();
            u
        },
    )
}

fn a_contact() -> impl Strategy<Value = ExternalContact> {
    (any::<bool>(), any::<bool>()).prop_map(|(m, e)| contact("c", m, e))
}

#[derive(Debug, Clone)]
struct Case {
    category: Category,
    settings: CommunicationSettings,
    sms_provider: Option<Provider>,
    email_provider: Provider,
    users: Vec<User>,
    contacts: Vec<ExternalContact>,
}

fn a_case() -> impl Strategy<Value = Case> {
    (
        category(),
        comm_settings(),
        prop::option::of(prop::sample::select(vec![Provider::Sns, Provider::Http])),
        prop::sample::select(vec![Provider::Ses, Provider::Smtp]),
        prop::collection::vec(a_user(), 0..8),
        prop::collection::vec(a_contact(), 0..4),
    )
        .prop_map(
            |(category, settings, sms_provider, email_provider, mut users, contacts)| {
                for (i, u) in users.iter_mut().enumerate() {
                    u.user_id = UserId::parse(&format!("u-{i}")).unwrap();
                }
                Case {
                    category,
                    settings,
                    sms_provider,
                    email_provider,
                    users,
                    contacts,
                }
            },
        )
}

fn run(c: &Case) -> (Vec<Recipient<'_>>, routing::Plan) {
    let mut recipients: Vec<Recipient> = c.users.iter().map(Recipient::User).collect();
    recipients.extend(
        c.contacts
            .iter()
            .enumerate()
            .map(|(i, contact)| Recipient::Contact {
                index: i as u32,
                contact,
            }),
    );
    let ctx = RoutingContext {
        category: c.category,
        settings: &c.settings,
        sms_provider: c.sms_provider,
        email_provider: c.email_provider,
    };
    let p = plan(&ctx, &recipients);
    (recipients, p)
}

use flare_shared::domain::routing;

fn method_of(c: &Case) -> Option<Method> {
    match c.category {
        Category::Dispatch => Some(c.settings.dispatch),
        Category::IncidentContacts => Some(c.settings.incident_contacts),
        Category::Messages => Some(c.settings.messages),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_recipient_given_has_an_outcome_for_each_channel(c in a_case()) {
        let (recipients, p) = run(&c);
        prop_assert_eq!(p.recipients.len(), recipients.len());
        for r in &p.recipients {
            let channels: Vec<_> = r.deliveries.iter().map(|d| d.channel).collect();
            prop_assert_eq!(channels, Channel::ALL.to_vec());
        }
    }

    #[test]
    fn no_push_below_basic_responder_or_for_virtual_users(c in a_case()) {
        let (recipients, p) = run(&c);
        for (r, rp) in recipients.iter().zip(&p.recipients) {
            if let Recipient::User(u) = r
                && (u.license < License::BasicResponder || u.is_virtual || u.devices.is_empty())
            {
                prop_assert!(!rp.get(Channel::Push).is_planned());
            }
            if let Recipient::Contact { .. } = r {
                prop_assert!(!rp.get(Channel::Push).is_planned());
            }
        }
    }

    #[test]
    fn no_sms_without_a_primary_mobile_and_no_email_without_a_primary_email(c in a_case()) {
        let (recipients, p) = run(&c);
        for (r, rp) in recipients.iter().zip(&p.recipients) {
            let (mobile, email) = match r {
                Recipient::User(u) => (u.contacts.primary_mobile().is_some(), u.contacts.primary_email().is_some()),
                Recipient::Contact { contact, .. } => (contact.mobile.is_some(), contact.email.is_some()),
            };
            if !mobile { prop_assert!(!rp.get(Channel::Sms).is_planned()); }
            if !email { prop_assert!(!rp.get(Channel::Email).is_planned()); }
            if c.sms_provider.is_none() { prop_assert!(!rp.get(Channel::Sms).is_planned()); }
        }
    }

    #[test]
    fn app_only_never_plans_sms_or_email(c in a_case()) {
        // Virtual users in a dispatch are governed by their own switch, not the method.
        let (recipients, p) = run(&c);
        if method_of(&c) == Some(Method::AppOnly) {
            for (r, rp) in recipients.iter().zip(&p.recipients) {
                let virtual_dispatch = matches!(r, Recipient::User(u) if u.is_virtual)
                    && c.category == Category::Dispatch;
                if !virtual_dispatch {
                    prop_assert!(!rp.get(Channel::Sms).is_planned());
                    prop_assert!(!rp.get(Channel::Email).is_planned());
                }
            }
        }
    }

    #[test]
    fn fallback_deliveries_only_under_app_then_sms_email(c in a_case()) {
        let (_, p) = run(&c);
        for rp in &p.recipients {
            for d in &rp.deliveries {
                if d.fallback {
                    prop_assert_eq!(method_of(&c), Some(Method::AppThenSmsEmail));
                }
                if matches!(d.action, Action::AwaitPush { .. }) {
                    prop_assert!(d.fallback);
                    prop_assert!(rp.get(Channel::Push).is_planned(), "held behind a push that exists");
                }
            }
        }
    }

    #[test]
    fn distress_off_plans_nothing_for_emergency_contacts(c in a_case()) {
        let c = Case { category: Category::Distress, settings: CommunicationSettings { distress: false, ..c.settings }, ..c };
        let (_, p) = run(&c);
        for rp in &p.recipients {
            prop_assert!(rp.deliveries.iter().all(|d| !d.is_planned()));
        }
    }

    #[test]
    fn virtual_user_dispatch_off_plans_nothing_for_virtual_users(c in a_case()) {
        let c = Case { category: Category::Dispatch, settings: CommunicationSettings { dispatch_virtual_users: false, ..c.settings }, ..c };
        let (recipients, p) = run(&c);
        for (r, rp) in recipients.iter().zip(&p.recipients) {
            if matches!(r, Recipient::User(u) if u.is_virtual) {
                prop_assert!(rp.deliveries.iter().all(|d| !d.is_planned()));
            }
        }
    }

    #[test]
    fn manual_sms_plans_nothing_but_sms(c in a_case()) {
        let c = Case { category: Category::ManualSms, ..c };
        let (_, p) = run(&c);
        for rp in &p.recipients {
            prop_assert!(!rp.get(Channel::Push).is_planned());
            prop_assert!(!rp.get(Channel::Email).is_planned());
        }
    }

    #[test]
    fn planning_is_deterministic_and_skips_always_say_why(c in a_case()) {
        let (_, a) = run(&c);
        let (_, b) = run(&c);
        prop_assert_eq!(&a, &b);
        for rp in &a.recipients {
            for rec in rp.records(&NotificationId::parse("n").unwrap()) {
                match rec.status {
                    DeliveryStatus::Skipped => prop_assert!(rec.reason.is_some()),
                    DeliveryStatus::Pending => prop_assert!(rec.provider.is_some() && rec.destination.is_some()),
                    other => prop_assert!(false, "a plan never starts {:?}", other),
                }
            }
        }
    }
}
