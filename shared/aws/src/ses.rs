//! Email through Amazon SES v2, with text and HTML parts.

use super::{THROTTLE_WAIT, error_code, is_throttling, is_transient};
use async_trait::async_trait;
use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};
use flare_shared::domain::{FailReason, Provider};
use flare_shared::ports::{EmailMessage, EmailSender, Receipt, SendError};

#[derive(Clone, Debug)]
pub struct SesEmailSender {
    client: Client,
    /// Every send names it, so SES reports the message's fate (delivery, bounce,
    /// complaint) to the receipts function.
    configuration_set: Option<String>,
}

impl SesEmailSender {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            configuration_set: None,
        }
    }

    pub fn with_configuration_set(mut self, name: Option<String>) -> Self {
        self.configuration_set = name;
        self
    }
}

fn content(s: &str) -> Result<Content, SendError> {
    Content::builder()
        .data(s)
        .charset("UTF-8")
        .build()
        .map_err(|e| SendError::permanent(FailReason::BadContent).with_source(e))
}

#[async_trait]
impl EmailSender for SesEmailSender {
    async fn send(&self, m: &EmailMessage) -> Result<Receipt, SendError> {
        let mut body = Body::builder().text(content(&m.text)?);
        if let Some(html) = &m.html {
            body = body.html(content(html)?);
        }
        let message = Message::builder()
            .subject(content(&m.subject)?)
            .body(body.build())
            .build();
        match self
            .client
            .send_email()
            .from_email_address(m.from.as_str())
            .destination(Destination::builder().to_addresses(m.to.as_str()).build())
            .content(EmailContent::builder().simple(message).build())
            .set_configuration_set_name(self.configuration_set.clone())
            .send()
            .await
        {
            Ok(out) => Ok(Receipt {
                provider: Provider::Ses,
                provider_message_id: out.message_id,
            }),
            Err(e) if is_throttling(&e) => Err(SendError::throttled(
                FailReason::SesUnavailable,
                THROTTLE_WAIT,
            )
            .with_detail("throttled")
            .with_source(anyhow::Error::new(e).context("SES SendEmail"))),
            Err(e) => {
                let code = error_code(&e).unwrap_or_default().to_string();
                let transient = is_transient(&e)
                    || matches!(
                        code.as_str(),
                        "TooManyRequestsException" | "LimitExceededException"
                    );
                let reason = match code.as_str() {
                    _ if transient => FailReason::SesUnavailable,
                    "MessageRejected" => FailReason::MessageRejected,
                    "MailFromDomainNotVerifiedException" => FailReason::SenderNotVerified,
                    "AccountSuspendedException" | "SendingPausedException" => {
                        FailReason::SendingPaused
                    }
                    _ => FailReason::SesRejected,
                };
                Err(SendError::new(transient, reason)
                    .with_source(anyhow::Error::new(e).context("SES SendEmail")))
            }
        }
    }
}
