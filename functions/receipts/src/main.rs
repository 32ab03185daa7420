use flare_receipts::{Config, handle};
use lambda_runtime::{run, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    flare_runtime::init_tracing();
    let config = Config::from_env()?;
    let sdk = flare_aws::sdk_config(flare_aws::AwsOptions::from_env()).await;
    let (receipts, replies) = config.handler(&sdk);
    run(service_fn(|event| handle((&receipts, &replies), event))).await
}
