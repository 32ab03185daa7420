use super::*;
use secrecy::ExposeSecret;
use serde_json::json;

const AWS: EndpointPolicy = EndpointPolicy {
    allow_private: false,
};

#[test]
fn the_contracts_sms_example_parses_with_its_secrets_apart() {
    let body = json!({
        "provider": "http", "url": "https://sms.example.com/send", "format": "json",
        "username": "acct-17", "password": "s3cret-pw", "sender_number": "+15551234567",
        "http_header": "X-Api-Key: abc123"
    });
    let u = SmsSettingsUpdate::parse(&body, ControlCenterId::main(), AWS).unwrap();
    let stored = serde_json::to_string(&u.settings).unwrap();
    assert!(
        !stored.contains("s3cret-pw") && !stored.contains("abc123"),
        "{stored}"
    );
    assert!(matches!(&u.password, SecretChange::Set(p) if p.expose_secret() == "s3cret-pw"));
    assert!(matches!(&u.header_value, SecretChange::Set(v) if v.expose_secret() == "abc123"));
    assert_eq!(u.settings.view()["http_header"], "X-Api-Key: ****");
}

#[test]
fn sms_settings_without_password_keep_it_and_a_masked_header_keeps_its_value() {
    let body = json!({"provider": "http", "url": "https://sms.example.com/send",
        "sender_number": "ACME", "http_header": "X-Api-Key: ****"});
    let u = SmsSettingsUpdate::parse(&body, ControlCenterId::main(), AWS).unwrap();
    assert!(matches!(u.password, SecretChange::Keep));
    assert!(matches!(u.header_value, SecretChange::Keep));
    let sns = SmsSettingsUpdate::parse(&json!({"provider": "sns"}), ControlCenterId::main(), AWS)
        .unwrap();
    assert!(matches!(sns.header_value, SecretChange::Clear));
}

#[test]
fn sms_validation_names_every_bad_field() {
    let body = json!({"provider": "http", "url": "http://10.0.0.1/x", "format": "xml",
        "sender_number": "TOO LONG SENDER", "http_header": "X-Evil: a\r\nb: c",
        "password": 5});
    let err = SmsSettingsUpdate::parse(&body, ControlCenterId::main(), AWS).unwrap_err();
    for f in ["url", "format", "sender_number", "http_header", "password"] {
        assert!(err.contains(f), "{f} missing: {err:?}");
    }
    let err = SmsSettingsUpdate::parse(
        &json!({"provider": "carrier-pigeon"}),
        ControlCenterId::main(),
        AWS,
    )
    .unwrap_err();
    assert!(err.contains("provider"));
}

#[test]
fn the_contracts_email_example_parses() {
    let body = json!({"provider": "smtp", "sender_email": "alerts@acme.example",
        "smtp": {"server_url": "smtp.acme.example", "port": 587, "username": "alerts",
                 "password": "s3cret-pw", "use_tls": true}});
    let u = EmailSettingsUpdate::parse(&body, AWS).unwrap();
    assert!(
        !serde_json::to_string(&u.settings)
            .unwrap()
            .contains("s3cret-pw")
    );
    assert_eq!(u.settings.view()["smtp"]["port"], 587);
    assert_eq!(u.settings.view()["smtp"]["password_set"], false);
    let err = EmailSettingsUpdate::parse(
        &json!({"provider": "smtp", "sender_email": "nope",
                "smtp": {"server_url": "ftp://x", "port": 0, "use_tls": false}}),
        AWS,
    )
    .unwrap_err();
    for f in [
        "sender_email",
        "smtp.server_url",
        "smtp.port",
        "smtp.use_tls",
    ] {
        assert!(err.contains(f), "{f} missing: {err:?}");
    }
    assert!(
        EmailSettingsUpdate::parse(&json!({"provider": "smtp"}), AWS)
            .unwrap_err()
            .contains("smtp")
    );
}

#[test]
fn communication_updates_keep_fields_left_out() {
    let current = CommunicationSettings {
        distress: true,
        ..Default::default()
    };
    let c = parse_communication(&json!({"messages": "app_only"}), &current).unwrap();
    assert!(c.distress);
    assert_eq!(c.messages, Method::AppOnly);
    let err =
        parse_communication(&json!({"dispatch": "fax", "distress": "yes"}), &current).unwrap_err();
    assert!(err.contains("dispatch") && err.contains("distress"));
}

#[test]
fn dispatch_escalation_is_off_by_default_kept_when_left_out_and_null_turns_it_off() {
    let current = CommunicationSettings::default();
    assert_eq!(current.dispatch_escalation, None);
    let on = parse_communication(
        &json!({"dispatch_escalation": {"after_seconds": 120, "cycles": 3}}),
        &current,
    )
    .unwrap();
    let want = Escalation {
        after_seconds: 120,
        cycles: 3,
    };
    assert_eq!(on.dispatch_escalation, Some(want));
    let kept = parse_communication(&json!({"distress": true}), &on).unwrap();
    assert_eq!(kept.dispatch_escalation, Some(want));
    let off = parse_communication(&json!({"dispatch_escalation": null}), &on).unwrap();
    assert_eq!(off.dispatch_escalation, None);
    for (bad, field) in [
        (
            json!({"after_seconds": 0, "cycles": 1}),
            "dispatch_escalation.after_seconds",
        ),
        (
            json!({"after_seconds": 3601, "cycles": 1}),
            "dispatch_escalation.after_seconds",
        ),
        (
            json!({"after_seconds": 60, "cycles": 6}),
            "dispatch_escalation.cycles",
        ),
        (json!({"after_seconds": 60}), "dispatch_escalation.cycles"),
        (
            json!({"after_seconds": 60, "cycles": 1, "every": 2}),
            "dispatch_escalation.every",
        ),
        (json!(true), "dispatch_escalation"),
    ] {
        let err = parse_communication(&json!({"dispatch_escalation": bad}), &on).unwrap_err();
        assert!(err.contains(field), "{bad}: {err:?}");
    }
}

#[test]
fn the_app_fallback_window_is_0_to_900_seconds_and_kept_when_left_out() {
    let current = CommunicationSettings::default();
    assert_eq!(current.app_fallback_seconds, 60);
    let c = parse_communication(&json!({"app_fallback_seconds": 5}), &current).unwrap();
    assert_eq!(c.app_fallback_seconds, 5);
    let kept = parse_communication(&json!({"distress": true}), &c).unwrap();
    assert_eq!(kept.app_fallback_seconds, 5);
    for ok in [0, 900] {
        let c = parse_communication(&json!({"app_fallback_seconds": ok}), &current).unwrap();
        assert_eq!(c.app_fallback_seconds, ok);
    }
    for bad in [json!(-1), json!(901), json!(1.5), json!("60"), json!(true)] {
        let err = parse_communication(&json!({"app_fallback_seconds": bad}), &current).unwrap_err();
        assert!(err.contains("app_fallback_seconds"), "{bad}: {err:?}");
    }
}

#[test]
fn the_contracts_user_example_parses_and_errors_are_positional() {
    let body = json!({
        "name": "Ana Silva", "license": "basic_responder", "virtual": false,
        "control_center_id": "north",
        "contacts": [
            {"kind": "mobile", "value": "+14155550100", "primary": true},
            {"kind": "email", "value": "ana@example.org", "primary": true},
            {"kind": "email", "value": "ana.home@example.org", "primary": false}
        ],
        "emergency_contacts": [{"name": "Rui Silva", "mobile": "+351912345678", "email": "rui@example.org"}]
    });
    let u = UserInput::parse(&body).unwrap();
    assert_eq!(
        u.contacts.primary_email().unwrap().as_str(),
        "ana@example.org"
    );
    assert_eq!(u.emergency_contacts.len(), 1);

    let bad = json!({"license": "chief", "contacts": [
        {"kind": "mobile", "value": "12", "primary": true},
        {"kind": "pager", "value": "x"}],
        "emergency_contacts": [{"name": "Rui"}]});
    let err = UserInput::parse(&bad).unwrap_err();
    for f in [
        "name",
        "license",
        "contacts[0].value",
        "contacts[1].kind",
        "emergency_contacts[0].mobile",
    ] {
        assert!(err.contains(f), "{f} missing: {err:?}");
    }
    let two_primaries = json!({"name": "A", "license": "administrator", "contacts": [
        {"kind": "email", "value": "a@example.org", "primary": true},
        {"kind": "email", "value": "b@example.org", "primary": true}]});
    assert!(
        UserInput::parse(&two_primaries)
            .unwrap_err()
            .contains("contacts[1].primary")
    );
    assert!(UserInput::parse(&json!([1])).unwrap_err().contains("body"));
}

#[test]
fn device_and_manual_sms_bodies_parse() {
    assert!(DeviceInput::parse(&json!({"platform": "fcm", "token": "abc"})).is_ok());
    let err = DeviceInput::parse(&json!({"platform": "blackberry", "token": ""})).unwrap_err();
    assert!(err.contains("platform") && err.contains("token"));
    let m = ManualSmsInput::parse(&json!({"user_id": "u-17", "text": "Call base"})).unwrap();
    assert!(m.control_center_id.is_none());
    let err = ManualSmsInput::parse(&json!({"text": ""})).unwrap_err();
    assert!(err.contains("user_id") && err.contains("text"));
}

#[test]
fn a_gateway_header_may_not_replace_what_flare_sets() {
    for name in [
        "Host",
        "content-length",
        "Transfer-Encoding",
        "CONNECTION",
        "Content-Type",
        "Authorization",
    ] {
        for value in ["x", "****"] {
            let body = json!({"provider": "http", "url": "https://sms.example.com/send",
                "sender_number": "ACME", "http_header": format!("{name}: {value}")});
            let err = SmsSettingsUpdate::parse(&body, ControlCenterId::main(), AWS).unwrap_err();
            assert!(err.contains("http_header"), "{name}: {value} accepted");
        }
    }
    let ok = json!({"provider": "http", "url": "https://sms.example.com/send",
        "sender_number": "ACME", "http_header": "X-Content-Type-Key: x"});
    assert!(SmsSettingsUpdate::parse(&ok, ControlCenterId::main(), AWS).is_ok());
}

#[test]
fn a_bad_provider_does_not_hide_the_other_bad_fields() {
    let body = json!({"provider": "carrier-pigeon", "sender_number": "TOO LONG SENDER",
        "url": "ftp://x", "http_header": "no colon"});
    let err = SmsSettingsUpdate::parse(&body, ControlCenterId::main(), AWS).unwrap_err();
    for f in ["provider", "sender_number", "url", "http_header"] {
        assert!(err.contains(f), "{f} missing: {err:?}");
    }
    let body = json!({"provider": "pigeon", "sender_email": "nope",
        "smtp": {"server_url": "smtp.acme.example", "port": 0}});
    let err = EmailSettingsUpdate::parse(&body, AWS).unwrap_err();
    for f in ["provider", "sender_email", "smtp.port"] {
        assert!(err.contains(f), "{f} missing: {err:?}");
    }
}
