//! The sms delivery function's wiring: its senders over the shared delivery logic.

use flare_lambda::DeliveryConfig;
use flare_shared::app::deliver::Deliverer;
use flare_shared::aws::sns_sms::SnsSmsSender;
use flare_shared::aws::{self, SdkConfig};
use flare_shared::domain::Provider;
use std::sync::Arc;

pub const CHANNEL: flare_shared::domain::Channel = flare_shared::domain::Channel::Sms;

/// The deliverer with this channel's AWS senders.
pub fn deliverer(config: &DeliveryConfig, sdk: &SdkConfig) -> Deliverer {
    let mut d = config.deliverer(sdk);
    d.sms
        .insert(Provider::Sns, Arc::new(SnsSmsSender::new(aws::sns(sdk))));
    d
}
