//! One test per routing rule of the contract and the seed document, named after it.

mod common;

use common::*;
use flare_shared::domain::routing::{
    Action, PushOutcome, Recipient, RoutingContext, after_push, plan,
};
use flare_shared::*;

fn ctx(category: Category, s: &CommunicationSettings) -> RoutingContext<'_> {
    RoutingContext {
        category,
        settings: s,
        sms_provider: Some(Provider::Sns),
        email_provider: Provider::Ses,
    }
}

fn plan_user(category: Category, s: &CommunicationSettings, u: &User) -> routing::RecipientPlan {
    only(&plan(&ctx(category, s), &[Recipient::User(u)])).clone()
}

fn plan_contact(
    category: Category,
    s: &CommunicationSettings,
    c: &ExternalContact,
) -> routing::RecipientPlan {
    only(&plan(
        &ctx(category, s),
        &[Recipient::Contact {
            index: 0,
            contact: c,
        }],
    ))
    .clone()
}

use flare_shared::domain::routing;

// ---- Push ---------------------------------------------------------------------------

#[test]
fn push_goes_only_to_basic_responder_and_above() {
    let s = settings(Method::AppOnly);
    for license in License::ALL {
        let u = with_contacts(with_device(user("u", license)), true, true);
        let r = plan_user(Category::Dispatch, &s, &u);
        if license >= License::BasicResponder {
            assert!(is_sent_now(&r, Channel::Push), "{license:?}");
        } else {
            assert_eq!(
                reason(&r, Channel::Push),
                Some(SkipReason::NotLicensedForApp)
            );
        }
    }
}

#[test]
fn push_is_skipped_for_virtual_users() {
    let r = plan_user(
        Category::Messages,
        &settings(Method::AppOnly),
        &virtual_user("v"),
    );
    assert_eq!(reason(&r, Channel::Push), Some(SkipReason::VirtualUser));
}

#[test]
fn push_needs_a_registered_device() {
    let u = with_contacts(user("u", License::Administrator), true, true);
    let r = plan_user(Category::Dispatch, &settings(Method::AppOnly), &u);
    assert_eq!(reason(&r, Channel::Push), Some(SkipReason::NoDevice));
}

#[test]
fn push_goes_to_every_device_of_the_user_through_sns() {
    let r = plan_user(
        Category::Dispatch,
        &settings(Method::AppOnly),
        &responder("u-1"),
    );
    assert_eq!(
        r.get(Channel::Push).action,
        Action::Send {
            provider: Provider::Sns,
            destination: Destination::Devices(UserId::parse("u-1").unwrap())
        }
    );
}

// ---- Contacts -----------------------------------------------------------------------

#[test]
fn sms_needs_a_primary_mobile() {
    let u = with_contacts(with_device(user("u", License::BasicResponder)), false, true);
    let r = plan_user(Category::Dispatch, &settings(Method::AppSmsEmail), &u);
    assert_eq!(reason(&r, Channel::Sms), Some(SkipReason::NoPrimaryMobile));
    assert!(is_sent_now(&r, Channel::Email));
}

#[test]
fn email_needs_a_primary_email() {
    let u = with_contacts(with_device(user("u", License::BasicResponder)), true, false);
    let r = plan_user(Category::Dispatch, &settings(Method::AppSmsEmail), &u);
    assert_eq!(reason(&r, Channel::Email), Some(SkipReason::NoPrimaryEmail));
    assert!(is_sent_now(&r, Channel::Sms));
}

#[test]
fn contacts_not_marked_primary_are_never_used() {
    let r = plan_user(
        Category::Dispatch,
        &settings(Method::AppSmsEmail),
        &responder("u"),
    );
    let Action::Send { destination, .. } = &r.get(Channel::Sms).action else {
        panic!("no sms")
    };
    assert_eq!(
        destination,
        &Destination::Phone(PhoneNumber::parse("+14155550100").unwrap())
    );
    let Action::Send { destination, .. } = &r.get(Channel::Email).action else {
        panic!("no email")
    };
    assert_eq!(
        destination,
        &Destination::Email(EmailAddress::parse("primary@example.org").unwrap())
    );
}

#[test]
fn sms_needs_an_effective_sms_provider_for_the_control_center() {
    let s = settings(Method::AppSmsEmail);
    let u = responder("u");
    let c = RoutingContext {
        sms_provider: None,
        ..ctx(Category::Dispatch, &s)
    };
    let r = only(&plan(&c, &[Recipient::User(&u)])).clone();
    assert_eq!(reason(&r, Channel::Sms), Some(SkipReason::SmsNotConfigured));
    assert!(is_sent_now(&r, Channel::Email));
}

#[test]
fn sms_goes_through_the_control_centers_effective_provider() {
    let s = settings(Method::AppSmsEmail);
    let u = responder("u");
    let c = RoutingContext {
        sms_provider: Some(Provider::Http),
        email_provider: Provider::Smtp,
        ..ctx(Category::Dispatch, &s)
    };
    let r = only(&plan(&c, &[Recipient::User(&u)])).clone();
    assert!(matches!(
        r.get(Channel::Sms).action,
        Action::Send {
            provider: Provider::Http,
            ..
        }
    ));
    assert!(matches!(
        r.get(Channel::Email).action,
        Action::Send {
            provider: Provider::Smtp,
            ..
        }
    ));
}

// ---- Methods ------------------------------------------------------------------------

#[test]
fn app_only_sends_push_only() {
    let r = plan_user(
        Category::Dispatch,
        &settings(Method::AppOnly),
        &responder("u"),
    );
    assert!(is_sent_now(&r, Channel::Push));
    assert_eq!(reason(&r, Channel::Sms), Some(SkipReason::NotInMethod));
    assert_eq!(reason(&r, Channel::Email), Some(SkipReason::NotInMethod));
}

#[test]
fn app_sms_email_sends_all_three_at_once() {
    let r = plan_user(
        Category::Dispatch,
        &settings(Method::AppSmsEmail),
        &responder("u"),
    );
    for c in Channel::ALL {
        assert!(is_sent_now(&r, c), "{c:?}");
        assert!(!r.get(c).fallback);
    }
}

#[test]
fn app_then_sms_email_holds_sms_and_email_while_push_is_in_flight() {
    let r = plan_user(
        Category::Dispatch,
        &settings(Method::AppThenSmsEmail),
        &responder("u"),
    );
    assert!(is_sent_now(&r, Channel::Push));
    assert!(is_held(&r, Channel::Sms) && is_held(&r, Channel::Email));
    assert!(r.get(Channel::Sms).fallback && r.get(Channel::Email).fallback);
    // Held deliveries are pending in the log and not enqueued.
    let n = NotificationId::parse("n-1").unwrap();
    let records = r.records(&n);
    assert!(records[1].awaiting_push && records[1].status == DeliveryStatus::Pending);
}

#[test]
fn app_then_sms_email_falls_back_at_once_when_push_is_not_possible() {
    let u = with_contacts(user("u", License::PassiveReporter), true, true);
    let r = plan_user(Category::Dispatch, &settings(Method::AppThenSmsEmail), &u);
    assert_eq!(
        reason(&r, Channel::Push),
        Some(SkipReason::NotLicensedForApp)
    );
    assert!(is_sent_now(&r, Channel::Sms) && r.get(Channel::Sms).fallback);
    assert!(is_sent_now(&r, Channel::Email) && r.get(Channel::Email).fallback);
}

#[test]
fn a_fallback_sent_at_once_records_that_push_was_not_possible() {
    use flare_shared::domain::reason::FallbackReason;
    let id = NotificationId::parse("n-1").unwrap();
    let no_app = with_contacts(user("u", License::PassiveReporter), true, true);
    let r = plan_user(
        Category::Dispatch,
        &settings(Method::AppThenSmsEmail),
        &no_app,
    );
    let why = |r: &routing::RecipientPlan, c: Channel| {
        r.records(&id)
            .into_iter()
            .find(|rec| rec.channel == c)
            .and_then(|rec| rec.fallback_reason)
    };
    assert_eq!(why(&r, Channel::Sms), Some(FallbackReason::PushNotPossible));
    assert_eq!(
        why(&r, Channel::Email),
        Some(FallbackReason::PushNotPossible)
    );
    assert_eq!(why(&r, Channel::Push), None);
    // Held behind a push that is possible: no reason until push fails.
    let r = plan_user(
        Category::Dispatch,
        &settings(Method::AppThenSmsEmail),
        &responder("u"),
    );
    assert_eq!(why(&r, Channel::Sms), None);
    // Not a fallback at all.
    let r = plan_user(Category::Dispatch, &settings(Method::AppSmsEmail), &no_app);
    assert_eq!(why(&r, Channel::Sms), None);
}

#[test]
fn app_then_sms_email_sends_fallback_when_push_fails_on_every_device() {
    let r = plan_user(
        Category::Dispatch,
        &settings(Method::AppThenSmsEmail),
        &responder("u"),
    );
    let follow = after_push(&r.held(), PushOutcome::FailedOnEveryDevice);
    assert_eq!(follow.len(), 2);
    for d in &follow {
        assert!(d.fallback);
        assert!(matches!(d.action, Action::Send { .. }), "{d:?}");
    }
}

#[test]
fn app_then_sms_email_skips_sms_and_email_with_push_sent_once_push_is_sent() {
    let r = plan_user(
        Category::Dispatch,
        &settings(Method::AppThenSmsEmail),
        &responder("u"),
    );
    let follow = after_push(&r.held(), PushOutcome::Sent);
    assert_eq!(follow.len(), 2);
    assert!(
        follow
            .iter()
            .all(|d| d.skip_reason() == Some(SkipReason::PushSent))
    );
}

#[test]
fn app_then_sms_email_fallback_still_needs_primary_contacts() {
    let u = with_contacts(
        with_device(user("u", License::BasicResponder)),
        false,
        false,
    );
    let r = plan_user(Category::Dispatch, &settings(Method::AppThenSmsEmail), &u);
    assert_eq!(reason(&r, Channel::Sms), Some(SkipReason::NoPrimaryMobile));
    assert_eq!(reason(&r, Channel::Email), Some(SkipReason::NoPrimaryEmail));
    assert!(
        r.get(Channel::Sms).fallback,
        "recorded as the fallback that could not happen"
    );
    assert!(r.held().is_empty());
}

#[test]
fn a_channel_the_method_does_not_use_is_recorded_not_in_method() {
    let r = plan_user(
        Category::Messages,
        &settings(Method::AppOnly),
        &responder("u"),
    );
    let records = r.records(&NotificationId::parse("n-1").unwrap());
    assert_eq!(records.len(), 3, "one record per channel");
    assert_eq!(records[1].status, DeliveryStatus::Skipped);
    assert_eq!(records[1].reason.as_deref(), Some("not_in_method"));
}

// ---- Categories ---------------------------------------------------------------------

#[test]
fn dispatch_sends_virtual_users_sms_and_email_while_dispatch_virtual_users_is_on() {
    // Even under app_only: the switch, not the method, decides for virtual users.
    let r = plan_user(
        Category::Dispatch,
        &settings(Method::AppOnly),
        &virtual_user("v"),
    );
    assert_eq!(reason(&r, Channel::Push), Some(SkipReason::VirtualUser));
    assert!(is_sent_now(&r, Channel::Sms) && is_sent_now(&r, Channel::Email));
    assert!(!r.get(Channel::Sms).fallback);
}

#[test]
fn dispatch_skips_virtual_users_with_virtual_dispatch_disabled_while_off() {
    let s = CommunicationSettings {
        dispatch_virtual_users: false,
        ..settings(Method::AppSmsEmail)
    };
    let r = plan_user(Category::Dispatch, &s, &virtual_user("v"));
    assert_eq!(
        reason(&r, Channel::Sms),
        Some(SkipReason::VirtualDispatchDisabled)
    );
    assert_eq!(
        reason(&r, Channel::Email),
        Some(SkipReason::VirtualDispatchDisabled)
    );
}

#[test]
fn dispatch_reaches_other_users_by_the_dispatch_method() {
    let s = CommunicationSettings {
        dispatch: Method::AppSmsEmail,
        messages: Method::AppOnly,
        incident_contacts: Method::AppOnly,
        ..settings(Method::AppOnly)
    };
    let r = plan_user(Category::Dispatch, &s, &responder("u"));
    assert!(is_sent_now(&r, Channel::Sms));
}

#[test]
fn messages_follow_the_messages_method() {
    let s = CommunicationSettings {
        messages: Method::AppOnly,
        dispatch: Method::AppSmsEmail,
        ..settings(Method::AppSmsEmail)
    };
    let r = plan_user(Category::Messages, &s, &responder("u"));
    assert_eq!(reason(&r, Channel::Sms), Some(SkipReason::NotInMethod));
}

#[test]
fn messages_reach_virtual_users_by_the_method_regardless_of_the_dispatch_switch() {
    let s = CommunicationSettings {
        dispatch_virtual_users: false,
        ..settings(Method::AppThenSmsEmail)
    };
    let r = plan_user(Category::Messages, &s, &virtual_user("v"));
    assert!(is_sent_now(&r, Channel::Sms) && r.get(Channel::Sms).fallback);
}

#[test]
fn incident_contacts_reach_users_by_the_incident_contacts_method() {
    let s = CommunicationSettings {
        incident_contacts: Method::AppSmsEmail,
        ..settings(Method::AppOnly)
    };
    let r = plan_user(Category::IncidentContacts, &s, &responder("u"));
    assert!(is_sent_now(&r, Channel::Sms) && is_sent_now(&r, Channel::Email));
}

#[test]
fn incident_contacts_who_are_not_users_get_sms_and_email() {
    let s = settings(Method::AppThenSmsEmail);
    let r = plan_contact(
        Category::IncidentContacts,
        &s,
        &contact("Neighbour", true, true),
    );
    assert_eq!(reason(&r, Channel::Push), Some(SkipReason::NoApp));
    assert!(is_sent_now(&r, Channel::Sms) && is_sent_now(&r, Channel::Email));
    assert!(matches!(
        r.recipient,
        RecipientRef::Contact { index: 0, .. }
    ));
}

#[test]
fn incident_contacts_who_are_not_users_are_skipped_no_app_under_app_only() {
    let r = plan_contact(
        Category::IncidentContacts,
        &settings(Method::AppOnly),
        &contact("Neighbour", true, true),
    );
    for c in Channel::ALL {
        assert_eq!(reason(&r, c), Some(SkipReason::NoApp), "{c:?}");
    }
}

#[test]
fn distress_reaches_the_sos_creators_emergency_contacts_by_sms_and_email() {
    let r = plan_contact(
        Category::Distress,
        &settings(Method::AppOnly),
        &contact("Rui", true, true),
    );
    assert!(is_sent_now(&r, Channel::Sms) && is_sent_now(&r, Channel::Email));
    assert!(!r.get(Channel::Sms).fallback);
    let r = plan_contact(
        Category::Distress,
        &settings(Method::AppOnly),
        &contact("Rui", false, true),
    );
    assert_eq!(reason(&r, Channel::Sms), Some(SkipReason::NoPrimaryMobile));
}

#[test]
fn distress_off_skips_emergency_contacts_with_distress_disabled() {
    let s = CommunicationSettings {
        distress: false,
        ..settings(Method::AppSmsEmail)
    };
    let r = plan_contact(Category::Distress, &s, &contact("Rui", true, true));
    for c in Channel::ALL {
        assert_eq!(reason(&r, c), Some(SkipReason::DistressDisabled), "{c:?}");
    }
}

#[test]
fn manual_sms_sends_sms_only_to_the_users_primary_mobile() {
    let r = plan_user(
        Category::ManualSms,
        &settings(Method::AppOnly),
        &responder("u"),
    );
    assert_eq!(reason(&r, Channel::Push), Some(SkipReason::NotInMethod));
    assert_eq!(reason(&r, Channel::Email), Some(SkipReason::NotInMethod));
    assert_eq!(
        r.get(Channel::Sms).action,
        Action::Send {
            provider: Provider::Sns,
            destination: Destination::Phone(PhoneNumber::parse("+14155550100").unwrap())
        }
    );
}

#[test]
fn manual_sms_is_skipped_while_the_manual_sms_switch_is_off() {
    let s = CommunicationSettings {
        manual_sms: false,
        ..settings(Method::AppOnly)
    };
    let r = plan_user(Category::ManualSms, &s, &responder("u"));
    assert_eq!(
        reason(&r, Channel::Sms),
        Some(SkipReason::ManualSmsDisabled)
    );
}

#[test]
fn jobs_are_made_for_planned_deliveries_only() {
    let s = settings(Method::AppThenSmsEmail);
    let u = responder("u");
    let r = plan_user(Category::Dispatch, &s, &u);
    let t = routing::JobTemplate {
        notification_id: NotificationId::parse("n-1").unwrap(),
        org_id: OrgId::parse("acme").unwrap(),
        control_center_id: ControlCenterId::main(),
        category: Category::Dispatch,
        message: Message {
            title: "t".into(),
            body: "b".into(),
        },
        created_at: None,
        app_fallback_seconds: None,
        incident_id: None,
    };
    let jobs = r.jobs(&t);
    assert_eq!(jobs.len(), 1, "held SMS and email wait for push");
    assert_eq!(jobs[0].channel, Channel::Push);
}

// The app fallback window (`app_fallback_seconds`): what a window check does with SMS
// and email held behind push.
mod window {
    use super::*;
    use chrono::{TimeDelta, Utc};
    use flare_shared::domain::reason::FallbackReason;
    use flare_shared::domain::routing::{WindowStep, window_step};

    const W: TimeDelta = TimeDelta::seconds(60);

    #[test]
    fn the_window_applies_only_under_app_then_sms_email_and_when_above_0() {
        let mut s = settings(Method::AppThenSmsEmail);
        s.app_fallback_seconds = 60;
        assert_eq!(s.fallback_window(Method::AppThenSmsEmail), Some(60));
        assert_eq!(s.fallback_window(Method::AppSmsEmail), None);
        assert_eq!(s.fallback_window(Method::AppOnly), None);
        s.app_fallback_seconds = 0;
        assert_eq!(s.fallback_window(Method::AppThenSmsEmail), None);
    }

    #[test]
    fn a_sent_push_inside_its_window_waits_until_the_window_ends() {
        let now = Utc::now();
        let end = now + TimeDelta::seconds(5);
        assert_eq!(
            window_step(DeliveryStatus::Sent, Some(end), W, now),
            WindowStep::WaitUntil(end)
        );
    }

    #[test]
    fn a_sent_push_without_a_receipt_by_the_window_end_sends_them_no_app_receipt() {
        let now = Utc::now();
        for end in [now, now - TimeDelta::hours(2)] {
            assert_eq!(
                window_step(DeliveryStatus::Sent, Some(end), W, now),
                WindowStep::FallBack(FallbackReason::NoAppReceipt)
            );
        }
    }

    #[test]
    fn a_push_the_app_confirmed_skips_them_push_delivered_even_after_the_window() {
        let now = Utc::now();
        for end in [None, Some(now + W), Some(now - W)] {
            assert_eq!(
                window_step(DeliveryStatus::Delivered, end, W, now),
                WindowStep::Skip(SkipReason::PushDelivered)
            );
        }
    }

    #[test]
    fn a_push_that_failed_on_every_device_sends_them_at_once_push_failed() {
        let now = Utc::now();
        assert_eq!(
            window_step(DeliveryStatus::Failed, Some(now + W), W, now),
            WindowStep::FallBack(FallbackReason::PushFailed)
        );
    }

    #[test]
    fn a_push_still_in_flight_or_without_its_window_looks_again_one_window_later() {
        let now = Utc::now();
        for (push, end) in [
            (DeliveryStatus::Pending, None),
            (DeliveryStatus::Pending, Some(now - W)),
            (DeliveryStatus::Sent, None),
        ] {
            assert_eq!(
                window_step(push, end, W, now),
                WindowStep::WaitUntil(now + W),
                "{push:?} {end:?}"
            );
        }
    }
}
