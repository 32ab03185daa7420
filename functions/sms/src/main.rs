use flare_lambda::DeliveryConfig;
use flare_shared::domain::EndpointPolicy;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    flare_shared::config::init_tracing();
    let config = DeliveryConfig::from_env(flare_sms::CHANNEL)?;
    let sdk = flare_shared::aws::sdk_config(Default::default()).await;
    let deliverer = flare_sms::deliverer(&config, &sdk, EndpointPolicy::from_env())?;
    flare_lambda::run(config.function(&sdk, deliverer)).await
}
