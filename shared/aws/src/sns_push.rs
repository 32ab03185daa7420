//! Push through SNS platform endpoints, with payloads for FCM and APNs.

use super::{error_code, is_transient};
use async_trait::async_trait;
use aws_sdk_sns::Client;
use flare_shared::domain::{FailReason, Provider};
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

/// The `MessageStructure: json` body: one payload per platform.
pub fn payload(p: &PushMessage) -> String {
    let m = &p.message;
    let data = json!({"notification_id": p.notification_id});
    let apns = json!({
        "aps": {"alert": {"title": m.title, "body": m.body}, "sound": "default",
                "interruption-level": "time-sensitive"},
        "notification_id": p.notification_id,
    })
    .to_string();
    json!({
        "default": m.body,
        "GCM": json!({
            "notification": {"title": m.title, "body": m.body},
            "data": data,
            "android": {"priority": "high"},
        }).to_string(),
        "APNS": apns,
        "APNS_SANDBOX": apns,
    })
    .to_string()
}

#[async_trait]
impl PushSender for SnsPushSender {
    async fn send(&self, p: &PushMessage) -> Result<Receipt, SendError> {
        match self
            .client
            .publish()
            .target_arn(&p.endpoint)
            .message_structure("json")
            .message(payload(p))
            .send()
            .await
        {
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
