use super::*;
use serde_json::json;

fn org() -> OrgId {
    OrgId::parse("acme").unwrap()
}

fn main_cc() -> ControlCenterId {
    ControlCenterId::main()
}

#[test]
fn ses_delivery_bounce_complaint_reject_and_the_events_that_change_nothing() {
    let ev = |detail: Value| json!({"source": "aws.ses", "time": "2026-11-27T10:00:00Z", "detail": detail});
    let mail = json!({"messageId": "m-1"});
    let r = parse_ses_event(&ev(json!({"eventType": "Delivery", "mail": mail, "delivery": {"timestamp": "2026-11-27T10:00:02Z"}})))
        .unwrap()
        .unwrap();
    assert_eq!(r.key.as_str(), "ses#m-1");
    assert_eq!(r.status, ReceiptStatus::Delivered);
    assert_eq!(r.at.to_rfc3339(), "2026-11-27T10:00:02+00:00");
    let r = parse_ses_event(&ev(json!({"eventType": "Bounce", "mail": mail, "bounce": {"bounceType": "Permanent", "bouncedRecipients": [{"diagnosticCode": "smtp; 550 5.1.1 user unknown"}]}})))
        .unwrap()
        .unwrap();
    assert_eq!(
        r.status,
        ReceiptStatus::Undelivered {
            reason: "bounced".into(),
            detail: Some("smtp; 550 5.1.1 user unknown".into())
        }
    );
    assert_eq!(
        parse_ses_event(&ev(
            json!({"eventType": "Bounce", "mail": mail, "bounce": {"bounceType": "Transient"}})
        )),
        Ok(None)
    );
    assert_eq!(
        parse_ses_event(&ev(json!({"eventType": "DeliveryDelay", "mail": mail}))),
        Ok(None)
    );
    let r = parse_ses_event(&ev(
        json!({"eventType": "Complaint", "mail": mail, "complaint": {}}),
    ))
    .unwrap()
    .unwrap();
    assert_eq!(r.status, ReceiptStatus::Complaint);
    let r = parse_ses_event(&ev(
        json!({"eventType": "Reject", "mail": mail, "reject": {"reason": "Bad content"}}),
    ))
    .unwrap()
    .unwrap();
    assert!(
        matches!(r.status, ReceiptStatus::Undelivered { ref reason, .. } if reason == "rejected")
    );
    assert!(parse_ses_event(&ev(json!({"eventType": "Delivery"}))).is_err());
}

#[test]
fn keys_stay_short_and_numbered_ids_match() {
    let long = "x".repeat(5000);
    let k = ReceiptKey::new(Provider::Http, &org(), &main_cc(), &long).unwrap();
    assert!(k.as_str().len() < 200, "{k}");
    assert_eq!(
        Some(k),
        ReceiptKey::new(Provider::Http, &org(), &main_cc(), &long)
    );
    let r = parse_gateway_callback(
        GatewayFormat::Json,
        &org(),
        &main_cc(),
        Some("application/json"),
        br#"{"message_id": 42, "status": "delivered"}"#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(r.key.as_str(), "http#acme#main#42");
}

#[test]
fn sns_sms_status_lines() {
    let ok = r#"{"notification":{"messageId":"abc","timestamp":"2016-06-28 00:40:34.558"},"delivery":{"providerResponse":"Message has been accepted by phone carrier"},"status":"SUCCESS"}"#;
    let r = parse_sns_sms_status(ok).unwrap();
    assert_eq!(r.key.as_str(), "sns#abc");
    assert_eq!(r.status, ReceiptStatus::Delivered);
    assert_eq!(r.at.to_rfc3339(), "2016-06-28T00:40:34.558+00:00");
    let bad = r#"{"notification":{"messageId":"abc"},"delivery":{"providerResponse":"Phone is currently unreachable"},"status":"FAILURE"}"#;
    assert_eq!(
        parse_sns_sms_status(bad).unwrap().status,
        ReceiptStatus::Undelivered {
            reason: "carrier_failed".into(),
            detail: Some("Phone is currently unreachable".into())
        }
    );
    assert!(parse_sns_sms_status("not json").is_err());
}

#[test]
fn gateway_callbacks_in_each_format_are_scoped_to_their_organization() {
    let r = parse_gateway_callback(
        GatewayFormat::Json,
        &org(),
        &main_cc(),
        Some("application/json"),
        br#"{"message_id": "g-1", "status": "undelivered", "error": "absent subscriber"}"#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(r.key.as_str(), "http#acme#main#g-1");
    assert_eq!(
        r.status,
        ReceiptStatus::Undelivered {
            reason: "carrier_failed".into(),
            detail: Some("absent subscriber".into())
        }
    );
    let r = parse_gateway_callback(
        GatewayFormat::Form,
        &org(),
        &main_cc(),
        Some("application/x-www-form-urlencoded"),
        b"message_id=g-2&status=delivered",
    )
    .unwrap()
    .unwrap();
    assert_eq!(r.status, ReceiptStatus::Delivered);
    let twilio = |status: &str| {
        parse_gateway_callback(
            GatewayFormat::Twilio,
            &org(),
            &main_cc(),
            None,
            format!("MessageSid=SM1&MessageStatus={status}").as_bytes(),
        )
    };
    assert_eq!(
        twilio("delivered").unwrap().unwrap().status,
        ReceiptStatus::Delivered
    );
    assert_eq!(twilio("sent"), Ok(None));
    assert!(twilio("bogus").is_err());
    for word in ["canceled", "partially_delivered"] {
        assert_eq!(
            twilio(word).unwrap().unwrap().status,
            ReceiptStatus::Undelivered {
                reason: word.into(),
                detail: None
            },
            "{word}"
        );
    }
}

#[test]
fn signatures_verify_only_with_the_right_key_url_and_body() {
    let url = "https://api.example/v1/receipts/sms/acme/main";
    for format in [
        GatewayFormat::Json,
        GatewayFormat::Form,
        GatewayFormat::Twilio,
    ] {
        let body = b"MessageSid=SM1&MessageStatus=delivered&AccountSid=AC1";
        let sig = sign(format, b"s3cret", url, body);
        assert!(verify_signature(format, b"s3cret", url, body, &sig));
        assert!(!verify_signature(format, b"other", url, body, &sig));
        assert!(!verify_signature(
            format,
            b"s3cret",
            url,
            b"MessageSid=SM2",
            &sig
        ));
        assert!(!verify_signature(format, b"s3cret", url, body, ""));
    }
    // Twilio signs the URL too.
    let body = b"MessageSid=SM1&MessageStatus=delivered";
    let sig = sign(GatewayFormat::Twilio, b"k", url, body);
    assert!(!verify_signature(
        GatewayFormat::Twilio,
        b"k",
        "https://evil.example/",
        body,
        &sig
    ));
    // Twilio's own documented example.
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    let body = b"CallSid=CA1234567890ABCDE&Caller=%2B14158675310&Digits=1234&From=%2B14158675310&To=%2B18005551212";
    assert_eq!(
        sign(GatewayFormat::Twilio, b"12345", url, body),
        "GvWf1cFY/Q7PnoempGyD5oXAezc="
    );
}

/// v1.2: receipts saying the number opted out end the delivery `opted_out`.
#[test]
fn receipts_saying_the_number_opted_out_are_told_apart() {
    let reason = |r: ProviderReceipt| match r.status {
        ReceiptStatus::Undelivered { reason, .. } => reason,
        other => panic!("{other:?}"),
    };
    let sns = |words: &str| {
        reason(
            parse_sns_sms_status(
                &serde_json::json!({"notification": {"messageId": "m-1"}, "status": "FAILURE",
                    "delivery": {"providerResponse": words}})
                .to_string(),
            )
            .unwrap(),
        )
    };
    assert_eq!(sns("Phone number is opted out"), OPTED_OUT);
    assert_eq!(
        sns("Unknown error attempting to reach phone"),
        "carrier_failed"
    );
    let gateway = |format, body: &str| {
        reason(
            parse_gateway_callback(format, &org(), &main_cc(), None, body.as_bytes())
                .unwrap()
                .unwrap(),
        )
    };
    assert_eq!(
        gateway(
            GatewayFormat::Twilio,
            "MessageSid=SM1&MessageStatus=undelivered&ErrorCode=21610"
        ),
        OPTED_OUT
    );
    assert_eq!(
        gateway(
            GatewayFormat::Twilio,
            "MessageSid=SM1&MessageStatus=undelivered&ErrorCode=30003"
        ),
        "carrier_failed"
    );
    assert_eq!(
        gateway(
            GatewayFormat::Json,
            r#"{"message_id": "m", "status": "undelivered", "error": "Recipient has OPTED OUT"}"#
        ),
        OPTED_OUT
    );
}
