//! The sms delivery function's wiring: SNS, and the organizations' HTTP gateways.

use flare_aws::secrets::SecretsManagerStore;
use flare_aws::sns_sms::SnsSmsSender;
use flare_aws::{self as aws, SdkConfig};
use flare_lambda::DeliveryConfig;
use flare_providers::http_sms::HttpSmsSender;
use flare_shared::app::deliver::Deliverer;
use flare_shared::domain::{EndpointPolicy, Provider};
use flare_shared::secrets_cache::{CachedSecrets, MAX_TTL};
use std::sync::Arc;

pub const CHANNEL: flare_shared::domain::Channel = flare_shared::domain::Channel::Sms;

/// The deliverer with SNS and the HTTP gateway sender; gateway secrets are read through
/// a cache (at most 5 minutes) so a fan-out reads each once.
pub fn deliverer(
    config: &DeliveryConfig,
    sdk: &SdkConfig,
    policy: EndpointPolicy,
) -> anyhow::Result<Deliverer> {
    let mut d = config.deliverer(sdk);
    d.sms
        .insert(Provider::Sns, Arc::new(SnsSmsSender::new(aws::sns(sdk))));
    let secrets = SecretsManagerStore::new(aws::secretsmanager(sdk), &config.secret_prefix);
    let cached = Arc::new(CachedSecrets::new(Arc::new(secrets), MAX_TTL));
    d.links = config.links(cached.clone());
    d.sms.insert(
        Provider::Http,
        Arc::new(HttpSmsSender::new(d.settings.clone(), cached, policy)?),
    );
    // A gateway's max_per_second and SNS's account rate, kept across every instance of
    // both lanes' functions by a schedule in the log table.
    d.pacer = Some(Arc::new(flare_aws::pacer::DynamoPacer::new(
        aws::dynamodb(sdk),
        &config.tables.log,
    )));
    d.sns_per_second = config.sns_per_second;
    Ok(d)
}
