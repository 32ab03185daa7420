//! Push through SNS platform endpoints, with payloads for FCM and APNs.

use super::{error_code, is_transient};
use async_trait::async_trait;
use aws_sdk_sns::Client;
use flare_shared::domain::{FailReason, Platform, Provider};
use flare_shared::ports::{PushMessage, PushSender, Receipt, SendError};
use serde_json::json;

#[derive(Clone, Debug)]
pub struct SnsPushSender {
    client: Client,
}

impl SnsPushSender {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// The `MessageStructure: json` body: one payload per platform. The app finds in it
/// what it needs to call back (the notification, the recipient and device, the receipt
/// and ack routes), so it can confirm the push the moment it arrives.
pub fn payload(p: &PushMessage) -> String {
    let m = &p.message;
    let id = &p.notification_id;
    // FCM data values are strings.
    let data = json!({
        "notification_id": id,
        "user_id": p.recipient,
        "device_id": p.device_id,
        "category": p.category.as_str(),
        "receipt": format!("/v1/notifications/{id}/receipt"),
        "ack": format!("/v1/notifications/{id}/ack"),
    });
    let urgent = p.is_urgent();
    let mut apns = json!({
        "aps": {"alert": {"title": m.title, "body": m.body}, "sound": "default",
                "interruption-level": if urgent { "time-sensitive" } else { "active" }},
    });
    if let (Some(a), Some(d)) = (apns.as_object_mut(), data.as_object()) {
        a.extend(d.clone());
    }
    let apns = apns.to_string();
    json!({
        "default": m.body,
        "GCM": json!({"fcmV1Message": {"message": {
            "notification": {"title": m.title, "body": m.body},
            "data": data,
            "android": {"priority": if urgent { "high" } else { "normal" }},
        }}})
        .to_string(),
        "APNS": apns,
        "APNS_SANDBOX": apns,
    })
    .to_string()
}

/// APNs' own priority travels as an SNS message attribute (`apns-priority` 10 delivers
/// at once, 5 when the device sees fit), with the push type an alert needs.
pub fn apns_attributes(p: &PushMessage) -> [(&'static str, &'static str); 2] {
    [
        (
            "AWS.SNS.MOBILE.APNS.PRIORITY",
            if p.is_urgent() { "10" } else { "5" },
        ),
        ("AWS.SNS.MOBILE.APNS.PUSH_TYPE", "alert"),
    ]
}

#[async_trait]
impl PushSender for SnsPushSender {
    async fn send(&self, p: &PushMessage) -> Result<Receipt, SendError> {
        let mut req = self
            .client
            .publish()
            .target_arn(&p.endpoint)
            .message_structure("json")
            .message(payload(p));
        if matches!(p.platform, Platform::Apns | Platform::ApnsSandbox) {
            for (name, value) in apns_attributes(p) {
                req = req.message_attributes(name, super::sns_sms::string_attribute(value)?);
            }
        }
        match req.send().await {
            Ok(out) => Ok(Receipt {
                provider: Provider::Sns,
                provider_message_id: out.message_id,
            }),
            Err(e) => {
                let reason = match error_code(&e) {
                    Some("EndpointDisabled") | Some("EndpointDisabledException") => {
                        FailReason::EndpointDisabled
                    }
                    Some("NotFound") | Some("NotFoundException") => FailReason::EndpointNotFound,
                    Some("InvalidParameter") | Some("InvalidParameterException") => {
                        FailReason::InvalidParameter
                    }
                    _ if is_transient(&e) => FailReason::SnsUnavailable,
                    _ => FailReason::SnsRejected,
                };
                let transient = reason == FailReason::SnsUnavailable;
                Err(SendError::new(transient, reason)
                    .with_source(anyhow::Error::new(e).context("SNS Publish to endpoint")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flare_shared::domain::{Category, DeviceId, Message, NotificationId, UserId};
    use serde_json::Value;

    fn push(category: Category) -> PushMessage {
        PushMessage {
            notification_id: NotificationId::parse("n-1").unwrap(),
            recipient: UserId::parse("u-17").unwrap(),
            category,
            device_id: DeviceId::parse("d-1").unwrap(),
            endpoint: "arn:aws:sns:us-east-1:1:endpoint/GCM/app/1".into(),
            platform: Platform::Fcm,
            message: Message {
                title: "Structure fire".into(),
                body: "Engine 7".into(),
            },
        }
    }

    fn platforms(p: &PushMessage) -> (Value, Value) {
        let all: Value = serde_json::from_str(&payload(p)).unwrap();
        let gcm: Value = serde_json::from_str(all["GCM"].as_str().unwrap()).unwrap();
        let apns: Value = serde_json::from_str(all["APNS"].as_str().unwrap()).unwrap();
        assert_eq!(all["APNS"], all["APNS_SANDBOX"]);
        (gcm["fcmV1Message"]["message"].clone(), apns)
    }

    #[test]
    fn a_dispatch_push_is_urgent_and_tells_the_app_how_to_confirm_it() {
        let p = push(Category::Dispatch);
        let (fcm, apns) = platforms(&p);
        assert_eq!(fcm["android"]["priority"], "high");
        assert_eq!(apns["aps"]["interruption-level"], "time-sensitive");
        assert_eq!(
            apns_attributes(&p)[0],
            ("AWS.SNS.MOBILE.APNS.PRIORITY", "10")
        );
        for data in [&fcm["data"], &apns] {
            assert_eq!(data["notification_id"], "n-1");
            assert_eq!(data["user_id"], "u-17");
            assert_eq!(data["device_id"], "d-1");
            assert_eq!(data["receipt"], "/v1/notifications/n-1/receipt");
            assert_eq!(data["ack"], "/v1/notifications/n-1/ack");
        }
        assert!(
            fcm["data"]
                .as_object()
                .unwrap()
                .values()
                .all(Value::is_string),
            "FCM data values are strings"
        );
        assert_eq!(fcm["notification"]["title"], "Structure fire");
    }

    #[test]
    fn a_message_push_is_normal_priority() {
        let p = push(Category::Messages);
        let (fcm, apns) = platforms(&p);
        assert_eq!(fcm["android"]["priority"], "normal");
        assert_eq!(apns["aps"]["interruption-level"], "active");
        assert_eq!(
            apns_attributes(&p)[0],
            ("AWS.SNS.MOBILE.APNS.PRIORITY", "5")
        );
        assert!(push(Category::Distress).is_urgent());
    }
}
