//! The email delivery function's wiring: its senders over the shared delivery logic.

use flare_lambda::DeliveryConfig;
use flare_shared::app::deliver::Deliverer;
use flare_shared::aws::ses::SesEmailSender;
use flare_shared::aws::{self, SdkConfig};
use flare_shared::domain::{EmailAddress, Provider};
use std::sync::Arc;

pub const CHANNEL: flare_shared::domain::Channel = flare_shared::domain::Channel::Email;

/// The deliverer with this channel's AWS senders.
pub fn deliverer(
    config: &DeliveryConfig,
    sdk: &SdkConfig,
    default_sender: EmailAddress,
) -> Deliverer {
    let mut d = config.deliverer(sdk);
    d.email.insert(
        Provider::Ses,
        Arc::new(SesEmailSender::new(aws::sesv2(sdk))),
    );
    d.default_sender = Some(default_sender);
    d
}
