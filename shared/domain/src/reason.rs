//! Every `reason` code a delivery record carries, with its wire name, in one place:
//! [`SkipReason`] for a channel never attempted, [`FailReason`] for a delivery that
//! failed or waits to be retried. A failure may carry a detail after a colon
//! (`gateway_rejected: 400 ...`); a delivery that ran out of attempts is
//! `gave_up: <the last code>`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a channel was not attempted for a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    NotLicensedForApp,
    VirtualUser,
    NoDevice,
    NoPrimaryMobile,
    NoPrimaryEmail,
    SmsNotConfigured,
    NotInMethod,
    PushSent,
    VirtualDispatchDisabled,
    NoApp,
    DistressDisabled,
    ManualSmsDisabled,
    /// The event named a user the directory does not have.
    UnknownUser,
    /// An SOS whose creator has no emergency contacts: recorded on the creator, so the
    /// notification says why no one was told.
    NoEmergencyContacts,
    /// The recipient's app confirmed the push (a receipt or an acknowledgement) while
    /// SMS and email still waited behind it.
    PushDelivered,
    /// A dispatch escalation cycle notified the recipient again on every channel while
    /// SMS and email still waited for the app's receipt: they went with that cycle.
    Escalated,
    /// The recipient acknowledged before this escalation cycle's delivery was sent.
    Acknowledged,
    /// The SMS's number replied STOP (v1.2): no SMS to it until it replies START.
    OptedOut,
}

impl SkipReason {
    /// Every skip reason, for documentation and tests.
    pub const ALL: &'static [SkipReason] = &[
        SkipReason::NotLicensedForApp,
        SkipReason::VirtualUser,
        SkipReason::NoDevice,
        SkipReason::NoPrimaryMobile,
        SkipReason::NoPrimaryEmail,
        SkipReason::SmsNotConfigured,
        SkipReason::NotInMethod,
        SkipReason::PushSent,
        SkipReason::VirtualDispatchDisabled,
        SkipReason::NoApp,
        SkipReason::DistressDisabled,
        SkipReason::ManualSmsDisabled,
        SkipReason::UnknownUser,
        SkipReason::NoEmergencyContacts,
        SkipReason::PushDelivered,
        SkipReason::Escalated,
        SkipReason::Acknowledged,
        SkipReason::OptedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotLicensedForApp => "not_licensed_for_app",
            SkipReason::VirtualUser => "virtual_user",
            SkipReason::NoDevice => "no_device",
            SkipReason::NoPrimaryMobile => "no_primary_mobile",
            SkipReason::NoPrimaryEmail => "no_primary_email",
            SkipReason::SmsNotConfigured => "sms_not_configured",
            SkipReason::NotInMethod => "not_in_method",
            SkipReason::PushSent => "push_sent",
            SkipReason::VirtualDispatchDisabled => "virtual_dispatch_disabled",
            SkipReason::NoApp => "no_app",
            SkipReason::DistressDisabled => "distress_disabled",
            SkipReason::ManualSmsDisabled => "manual_sms_disabled",
            SkipReason::UnknownUser => "unknown_user",
            SkipReason::NoEmergencyContacts => "no_emergency_contacts",
            SkipReason::PushDelivered => "push_delivered",
            SkipReason::Escalated => "escalated",
            SkipReason::Acknowledged => "acknowledged",
            SkipReason::OptedOut => "opted_out",
        }
    }
}

/// Why SMS and email went as the fallback of push (`fallback_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackReason {
    /// Push was not possible for the recipient (no app, no device, ...): at once.
    PushNotPossible,
    /// Push failed on every device.
    PushFailed,
    /// Push was sent but the app did not confirm it within the window.
    NoAppReceipt,
}

impl FallbackReason {
    pub const ALL: &'static [FallbackReason] = &[
        FallbackReason::PushNotPossible,
        FallbackReason::PushFailed,
        FallbackReason::NoAppReceipt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::PushNotPossible => "push_not_possible",
            FallbackReason::PushFailed => "push_failed",
            FallbackReason::NoAppReceipt => "no_app_receipt",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! fail_reasons {
    ($($(#[$doc:meta])* $variant:ident = $wire:literal,)+) => {
        /// A failure code (see the module docs).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum FailReason {
            $($(#[$doc])* $variant,)+
        }

        impl FailReason {
            /// Every code, for documentation and tests.
            pub const ALL: &'static [FailReason] = &[$(FailReason::$variant,)+];

            /// The wire name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(FailReason::$variant => $wire,)+
                }
            }
        }
    };
}

fail_reasons! {
    // Flare's own.
    /// Every attempt failed transiently (`gave_up: <last code>`).
    GaveUp = "gave_up",
    /// The job reached its dead-letter queue with the record unfinished (after
    /// `gave_up: `): its attempts crashed, timed out or found the record held.
    DeadLetter = "dead_letter",
    /// The provider's pace had no free moment for the send in time (a long backlog
    /// at a paced gateway): the job goes back to the end of its queue, spending no
    /// attempt; seen only on a pending delivery.
    Paced = "paced",
    /// No sender is configured for the record's provider.
    ProviderUnavailable = "provider_unavailable",
    /// The record's destination does not suit its channel.
    BadDestination = "bad_destination",
    /// The recipient has no registered device (any more).
    NoDevice = "no_device",
    /// Neither the organization nor the deployment has a sender address.
    NoSenderAddress = "no_sender_address",
    DirectoryUnavailable = "directory_unavailable",
    SettingsUnavailable = "settings_unavailable",
    /// The settings changed provider after the job was queued.
    ProviderChanged = "provider_changed",
    SmsNotConfigured = "sms_not_configured",
    SmtpNotConfigured = "smtp_not_configured",
    /// The custom endpoint resolves to an address the endpoint policy refuses.
    EndpointNotAllowed = "endpoint_not_allowed",
    // SNS and SES.
    SnsUnavailable = "sns_unavailable",
    SnsRejected = "sns_rejected",
    EndpointDisabled = "endpoint_disabled",
    EndpointNotFound = "endpoint_not_found",
    InvalidParameter = "invalid_parameter",
    InvalidNumber = "invalid_number",
    OptedOut = "opted_out",
    BadAttribute = "bad_attribute",
    SesUnavailable = "ses_unavailable",
    SesRejected = "ses_rejected",
    MessageRejected = "message_rejected",
    SenderNotVerified = "sender_not_verified",
    SendingPaused = "sending_paused",
    BadContent = "bad_content",
    // The organization's HTTP gateway.
    HeaderValueMissing = "header_value_missing",
    BadHeaderValue = "bad_header_value",
    GatewayRedirected = "gateway_redirected",
    GatewayStatus = "gateway_status",
    GatewayRejected = "gateway_rejected",
    /// The gateway refuses every request (401, 403, 404, 405, 407, 410): its
    /// credentials, URL or method are wrong, whatever the message.
    GatewayMisconfigured = "gateway_misconfigured",
    GatewayTimeout = "gateway_timeout",
    GatewayUnreachable = "gateway_unreachable",
    GatewayError = "gateway_error",
    // The organization's SMTP server.
    AuthFailed = "auth_failed",
    SmtpRejected = "smtp_rejected",
    SmtpDeferred = "smtp_deferred",
    SmtpConnection = "smtp_connection",
    SmtpUnresolvable = "smtp_unresolvable",
    SmtpUnreachable = "smtp_unreachable",
    SmtpSocket = "smtp_socket",
    SmtpTimeout = "smtp_timeout",
    StarttlsUnavailable = "starttls_unavailable",
    TlsFailed = "tls_failed",
    TlsConfig = "tls_config",
    BadExtraRoot = "bad_extra_root",
    BadServerName = "bad_server_name",
    BadFrom = "bad_from",
    BadTo = "bad_to",
    BadMessage = "bad_message",
}

/// What a failed send says, one classification for retries, the circuit and failover
/// alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The provider is down or refuses everyone (5xx, timeouts, refused connections, bad
    /// credentials): retried while it is transient; counts toward its circuit.
    ProviderDown,
    /// The provider refused this one message (a bad number, an opted-out one, a 4xx about
    /// the content): not retried; never counts toward the circuit, may still fail over.
    Refused,
    /// "Slow down" (HTTP 429, SNS or SES throttling, our own pace): the send waits or its
    /// job is postponed; never a failure, never an attempt.
    Throttled,
    /// Our own fault (settings, secrets, the directory, the log, our configuration):
    /// retried; never counts against the provider.
    Ours,
}

impl FailReason {
    /// The kind of failure this code is, for a failure that is not a "slow down" (a
    /// send error with a `Retry-After` is [`FailureKind::Throttled`] whatever its code).
    pub const fn kind(self) -> FailureKind {
        use FailReason::*;
        match self {
            Paced => FailureKind::Throttled,
            GaveUp | DeadLetter | ProviderUnavailable | NoSenderAddress | DirectoryUnavailable
            | SettingsUnavailable | ProviderChanged | SmsNotConfigured | SmtpNotConfigured
            | HeaderValueMissing | BadHeaderValue | BadAttribute | TlsConfig | BadExtraRoot => {
                FailureKind::Ours
            }
            BadDestination | NoDevice | EndpointDisabled | EndpointNotFound | InvalidParameter
            | InvalidNumber | OptedOut | SnsRejected | SesRejected | MessageRejected
            | BadContent | GatewayRejected | SmtpRejected | BadFrom | BadTo | BadMessage => {
                FailureKind::Refused
            }
            EndpointNotAllowed | SnsUnavailable | SenderNotVerified | SesUnavailable
            | SendingPaused | GatewayRedirected | GatewayStatus | GatewayMisconfigured
            | GatewayTimeout | GatewayUnreachable | GatewayError | AuthFailed | SmtpDeferred
            | SmtpConnection | SmtpUnresolvable | SmtpUnreachable | SmtpSocket | SmtpTimeout
            | StarttlsUnavailable | TlsFailed | BadServerName => FailureKind::ProviderDown,
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `code` or `code: detail`, as a record's `reason` says it.
pub fn wire_reason(code: FailReason, detail: Option<&str>) -> String {
    match detail {
        Some(d) if !d.is_empty() => format!("{code}: {d}"),
        _ => code.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for r in FailReason::ALL {
            let s = r.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{s}");
        }
    }

    #[test]
    fn a_provider_is_blamed_only_for_what_says_it_is_down() {
        // Our pace, our storage and one message's refusal say nothing of the provider.
        assert_eq!(FailReason::Paced.kind(), FailureKind::Throttled);
        for ours in [
            FailReason::SettingsUnavailable,
            FailReason::DirectoryUnavailable,
        ] {
            assert_eq!(ours.kind(), FailureKind::Ours);
        }
        for refused in [
            FailReason::InvalidNumber,
            FailReason::OptedOut,
            FailReason::GatewayRejected,
            FailReason::SmtpRejected,
        ] {
            assert_eq!(refused.kind(), FailureKind::Refused);
        }
        for down in [
            FailReason::GatewayStatus,
            FailReason::GatewayTimeout,
            FailReason::GatewayUnreachable,
            FailReason::GatewayMisconfigured,
            FailReason::AuthFailed,
            FailReason::SmtpConnection,
        ] {
            assert_eq!(down.kind(), FailureKind::ProviderDown);
        }
    }

    #[test]
    fn a_detail_follows_the_code_after_a_colon() {
        assert_eq!(wire_reason(FailReason::NoDevice, None), "no_device");
        assert_eq!(
            wire_reason(FailReason::GatewayStatus, Some("503")),
            "gateway_status: 503"
        );
    }
}

#[cfg(test)]
mod docs {
    use super::*;

    /// docs/reasons.md is what an operator reads: it must name every code.
    #[test]
    fn the_reasons_page_names_every_code() {
        let page = include_str!("../../../docs/reasons.md");
        let codes = SkipReason::ALL
            .iter()
            .map(|r| r.as_str())
            .chain(FailReason::ALL.iter().map(|r| r.as_str()))
            .chain(FallbackReason::ALL.iter().map(|r| r.as_str()));
        for code in codes {
            assert!(
                page.contains(&format!("| `{code}` |")),
                "docs/reasons.md does not explain {code}"
            );
        }
    }
}
