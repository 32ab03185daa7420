use flare_lambda::DeliveryConfig;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    flare_runtime::init_tracing();
    let config = DeliveryConfig::from_env(flare_email::CHANNEL)?;
    let sender = flare_aws::wiring::default_sender()?;
    let sdk = flare_aws::sdk_config(flare_aws::AwsOptions::from_env()).await;
    let deliverer = flare_email::deliverer(
        &config,
        &sdk,
        sender,
        flare_runtime::endpoint_policy(false)?,
    );
    flare_lambda::run(config.function(&sdk, deliverer)).await
}
