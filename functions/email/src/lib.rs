//! The email delivery function's wiring: SES, and the organizations' SMTP servers.

use flare_aws::secrets::SecretsManagerStore;
use flare_aws::ses::SesEmailSender;
use flare_aws::{self as aws, SdkConfig};
use flare_lambda::DeliveryConfig;
use flare_providers::smtp::SmtpEmailSender;
use flare_shared::app::deliver::Deliverer;
use flare_shared::domain::{EmailAddress, EndpointPolicy, Provider};
use flare_shared::secrets_cache::{CachedSecrets, MAX_TTL};
use std::sync::Arc;

pub const CHANNEL: flare_shared::domain::Channel = flare_shared::domain::Channel::Email;

/// The SES configuration set every send names (its events are the email receipts);
/// unset, SES reports nothing and email stays `sent`.
pub const SES_CONFIGURATION_SET: &str = "FLARE_SES_CONFIGURATION_SET";

/// The deliverer with SES and the SMTP sender (secrets through a cache of at most 5
/// minutes; connections kept within the warm instance).
pub fn deliverer(
    config: &DeliveryConfig,
    sdk: &SdkConfig,
    default_sender: EmailAddress,
    policy: EndpointPolicy,
) -> Deliverer {
    let mut d = config.deliverer(sdk);
    let configuration_set = flare_runtime::optional(SES_CONFIGURATION_SET, "");
    let ses = SesEmailSender::new(aws::sesv2(sdk))
        .with_configuration_set(Some(configuration_set).filter(|s| !s.is_empty()));
    d.email.insert(Provider::Ses, Arc::new(ses));
    let secrets = SecretsManagerStore::new(aws::secretsmanager(sdk), &config.secret_prefix);
    let cached = Arc::new(CachedSecrets::new(Arc::new(secrets), MAX_TTL));
    d.links = config.links(cached.clone());
    d.email.insert(
        Provider::Smtp,
        Arc::new(SmtpEmailSender::new(d.settings.clone(), cached, policy)),
    );
    d.default_sender = Some(default_sender);
    d
}
