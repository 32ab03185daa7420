//! The push delivery function's wiring: its senders over the shared delivery logic.

use flare_aws::sns_push::SnsPushSender;
use flare_aws::{self as aws, SdkConfig};
use flare_lambda::DeliveryConfig;
use flare_shared::app::deliver::Deliverer;
use std::sync::Arc;

pub const CHANNEL: flare_shared::domain::Channel = flare_shared::domain::Channel::Push;

/// The deliverer with this channel's AWS senders.
pub fn deliverer(config: &DeliveryConfig, sdk: &SdkConfig) -> Deliverer {
    let mut d = config.deliverer(sdk);
    d.push = Some(Arc::new(SnsPushSender::new(aws::sns(sdk))));
    d
}
