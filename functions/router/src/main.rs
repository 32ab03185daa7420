use flare_router::{Config, handle};
use lambda_runtime::{run, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    flare_runtime::init_tracing();
    let config = Config::from_env()?;
    let sdk = flare_aws::sdk_config(flare_aws::AwsOptions::from_env()).await;
    let notifier = config.notifier(&sdk);
    run(service_fn(|event| async {
        handle(&notifier, event).await.map(|o| o.to_json())
    }))
    .await
}
