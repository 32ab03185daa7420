use flare_api::{Config, handle};
use lambda_http::{run, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    flare_runtime::init_tracing();
    let config = Config::from_env()?;
    let sdk = flare_aws::sdk_config(flare_aws::AwsOptions::from_env()).await;
    let services = config.services(&sdk)?;
    run(service_fn(|req| handle(&services, req))).await
}
