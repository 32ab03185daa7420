//! The senders, one per channel, their messages and errors, and the device registry.

use super::*;

/// A provider's answer to one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub provider: Provider,
    /// The provider's own id for the message, when it gives one.
    pub provider_message_id: Option<String>,
}

/// Why a send failed, classified so the caller knows whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Throttling, 5xx, timeouts: retry with backoff.
    #[error("transient failure: {}", wire_reason(*.code, .detail.as_deref()))]
    Transient {
        code: FailReason,
        detail: Option<String>,
        #[source]
        source: Option<anyhow::Error>,
        /// The provider asked to be left alone this long (a 429's `Retry-After`): the
        /// send waits and goes again instead of spending an attempt.
        retry_after: Option<Duration>,
    },
    /// Invalid number, disabled endpoint, rejected sender, bad credentials: give up.
    #[error("permanent failure: {}", wire_reason(*.code, .detail.as_deref()))]
    Permanent {
        code: FailReason,
        detail: Option<String>,
        #[source]
        source: Option<anyhow::Error>,
    },
}

impl SendError {
    pub fn transient(code: FailReason) -> Self {
        Self::Transient {
            code,
            detail: None,
            source: None,
            retry_after: None,
        }
    }

    /// The provider's pace gave no moment for this send within the wait allowed: it
    /// is postponed (queued again), not failed and not retried as an attempt.
    pub fn paced() -> Self {
        Self::transient(FailReason::Paced)
    }

    /// A provider's "slow down" (HTTP 429), with how long it asked for.
    pub fn throttled(code: FailReason, retry_after: Duration) -> Self {
        Self::Transient {
            code,
            detail: None,
            source: None,
            retry_after: Some(retry_after),
        }
    }

    /// How long the provider asked to be left alone, when it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SendError::Transient { retry_after, .. } => *retry_after,
            SendError::Permanent { .. } => None,
        }
    }

    pub fn permanent(code: FailReason) -> Self {
        Self::Permanent {
            code,
            detail: None,
            source: None,
        }
    }

    /// Transient or permanent, as `transient` says.
    pub fn new(transient: bool, code: FailReason) -> Self {
        if transient {
            Self::transient(code)
        } else {
            Self::permanent(code)
        }
    }

    /// Adds what the provider said (shown after the code in the record's reason).
    pub fn with_detail(mut self, d: impl Into<String>) -> Self {
        match &mut self {
            SendError::Transient { detail, .. } | SendError::Permanent { detail, .. } => {
                *detail = Some(d.into())
            }
        }
        self
    }

    /// Keeps the underlying error as the cause (logs, never the record).
    pub fn with_source(mut self, e: impl Into<anyhow::Error>) -> Self {
        match &mut self {
            SendError::Transient { source, .. } | SendError::Permanent { source, .. } => {
                *source = Some(e.into())
            }
        }
        self
    }

    /// The same failure, to be retried (another device's failure was transient).
    pub fn into_transient(self) -> Self {
        match self {
            SendError::Permanent {
                code,
                detail,
                source,
            } => SendError::Transient {
                code,
                detail,
                source,
                retry_after: None,
            },
            transient => transient,
        }
    }

    pub fn code(&self) -> FailReason {
        match self {
            SendError::Transient { code, .. } | SendError::Permanent { code, .. } => *code,
        }
    }

    /// The record's `reason`: the code, and the detail after a colon.
    pub fn reason(&self) -> String {
        match self {
            SendError::Transient { code, detail, .. }
            | SendError::Permanent { code, detail, .. } => wire_reason(*code, detail.as_deref()),
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, SendError::Transient { .. })
    }

    /// What the failure says of the provider (see [`FailureKind`]): a "slow down" with
    /// a `Retry-After` is throttling whatever its code.
    pub fn kind(&self) -> crate::domain::FailureKind {
        if self.retry_after().is_some() {
            return crate::domain::FailureKind::Throttled;
        }
        self.code().kind()
    }

    /// Whether a later attempt may succeed: transient, and not a "slow down" (that
    /// postpones the job instead of spending an attempt).
    pub fn retries(&self) -> bool {
        self.is_transient() && self.kind() != crate::domain::FailureKind::Throttled
    }
}

/// One push to one device.
#[derive(Debug, Clone)]
pub struct PushMessage {
    pub notification_id: NotificationId,
    /// Whom it is for: the app calls back (receipt, ack) as this user.
    pub recipient: UserId,
    /// Decides the urgency it is sent with.
    pub category: crate::domain::Category,
    pub device_id: DeviceId,
    /// The provider's handle for the device (an SNS endpoint ARN).
    pub endpoint: String,
    pub platform: crate::domain::Platform,
    pub message: Message,
}

impl PushMessage {
    /// Dispatch, distress and manual messages interrupt (high priority, time-sensitive);
    /// messages and incident contacts do not.
    pub fn is_urgent(&self) -> bool {
        use crate::domain::Category::*;
        matches!(self.category, Dispatch | Distress | ManualSms)
    }
}

#[async_trait]
pub trait PushSender: Send + Sync {
    async fn send(&self, push: &PushMessage) -> Result<Receipt, SendError>;
}

#[derive(Debug, Clone)]
pub struct SmsMessage {
    pub notification_id: NotificationId,
    /// The same for every attempt of one (recipient, channel) of a notification, and
    /// different for every other ([`DeliveryJob::delivery_id`]): providers that take an
    /// idempotency key get it, so one that was sent a repeat (a crash between its
    /// answer and the `sent` write) can drop it. `None` for a test send.
    pub delivery_id: Option<String>,
    pub org_id: OrgId,
    pub control_center_id: ControlCenterId,
    pub to: PhoneNumber,
    pub from: Option<SenderId>,
    pub text: String,
    /// The settings the caller read for this send (the control center's own, or
    /// `main`'s), so a sender that needs them does not read them again. `None`: the
    /// sender reads them itself.
    pub settings: Option<SmsSettings>,
}

#[async_trait]
pub trait SmsSender: Send + Sync {
    async fn send(&self, sms: &SmsMessage) -> Result<Receipt, SendError>;
}

#[derive(Debug, Clone)]
pub struct EmailMessage {
    pub notification_id: NotificationId,
    /// As [`SmsMessage::delivery_id`]: the email's `Message-ID` over SMTP.
    pub delivery_id: Option<String>,
    pub org_id: OrgId,
    pub to: EmailAddress,
    pub from: EmailAddress,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// As [`SmsMessage::settings`].
    pub settings: Option<EmailSettings>,
}

#[async_trait]
pub trait EmailSender: Send + Sync {
    async fn send(&self, email: &EmailMessage) -> Result<Receipt, SendError>;
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The push provider refused the token.
    #[error("the push provider refused the device token")]
    InvalidToken(#[source] anyhow::Error),
    /// No platform application is configured for this platform.
    #[error("push for platform {0} is not configured")]
    PlatformNotConfigured(&'static str),
    #[error("the push provider is temporarily unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("registering the device failed")]
    Failed(#[source] anyhow::Error),
}

/// Registers a device with the push provider (an SNS platform endpoint in AWS).
#[async_trait]
pub trait DeviceRegistry: Send + Sync {
    /// Returns the provider's handle for the device.
    async fn register(
        &self,
        platform: crate::domain::Platform,
        token: &str,
        user: &UserId,
    ) -> Result<String, DeviceError>;
    /// Unregistering a device that is already gone is not an error.
    async fn unregister(&self, endpoint: &str) -> Result<(), DeviceError>;
}
