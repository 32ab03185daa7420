//! SMS through Amazon SNS: transactional, from the control center's sender id or
//! origination number.

use super::{THROTTLE_WAIT, error_code, is_throttling, is_transient};
use async_trait::async_trait;
use aws_sdk_sns::Client;
use aws_sdk_sns::types::MessageAttributeValue;
use flare_shared::domain::{FailReason, Provider, SenderId};
use flare_shared::ports::{Receipt, SendError, SmsMessage, SmsSender};

#[derive(Clone, Debug)]
pub struct SnsSmsSender {
    client: Client,
}

impl SnsSmsSender {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// A `String` message attribute.
pub(crate) fn string_attribute(v: &str) -> Result<MessageAttributeValue, SendError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(v)
        .build()
        .map_err(|e| SendError::permanent(FailReason::BadAttribute).with_source(e))
}

#[async_trait]
impl SmsSender for SnsSmsSender {
    async fn send(&self, m: &SmsMessage) -> Result<Receipt, SendError> {
        // Transactional: emergency messages must not be dropped as promotional.
        let mut req = self
            .client
            .publish()
            .phone_number(m.to.as_str())
            .message(&m.text)
            .message_attributes("AWS.SNS.SMS.SMSType", string_attribute("Transactional")?);
        match &m.from {
            Some(SenderId::Alphanumeric(id)) => {
                req = req.message_attributes("AWS.SNS.SMS.SenderID", string_attribute(id)?);
            }
            Some(SenderId::Number(n)) => {
                req = req.message_attributes(
                    "AWS.MM.SMS.OriginationNumber",
                    string_attribute(n.as_str())?,
                );
            }
            None => {}
        }
        match req.send().await {
            Ok(out) => Ok(Receipt {
                provider: Provider::Sns,
                provider_message_id: out.message_id,
            }),
            Err(e) if is_throttling(&e) => Err(SendError::throttled(
                FailReason::SnsUnavailable,
                THROTTLE_WAIT,
            )
            .with_detail("throttled")
            .with_source(anyhow::Error::new(e).context("SNS Publish SMS"))),
            Err(e) => {
                let transient = is_transient(&e);
                let reason = match error_code(&e) {
                    _ if transient => FailReason::SnsUnavailable,
                    Some("InvalidParameter") | Some("InvalidParameterException") => {
                        FailReason::InvalidNumber
                    }
                    Some("OptedOut") | Some("OptedOutException") => FailReason::OptedOut,
                    _ => FailReason::SnsRejected,
                };
                Err(SendError::new(transient, reason)
                    .with_source(anyhow::Error::new(e).context("SNS Publish SMS")))
            }
        }
    }
}
