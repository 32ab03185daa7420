//! The one AWS client factory every adapter and function uses.
//!
//! `aws-config` already reads `AWS_ENDPOINT_URL` (and per-service
//! `AWS_ENDPOINT_URL_<SERVICE>`), `AWS_REGION` and credentials from the environment,
//! which is how the functions run against moto in tests. [`AwsOptions`] lets a test
//! harness say the same things without touching the process environment.

pub use aws_config::SdkConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    /// One endpoint for every service (moto), overriding `AWS_ENDPOINT_URL`.
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    /// Static access key and secret (tests); otherwise the default provider chain.
    pub static_credentials: Option<(String, String)>,
    /// A certificate authority (valid PEM) trusted besides the system's roots: a private
    /// CA in front of an endpoint, or a test server's.
    pub extra_root_ca: Option<Vec<u8>>,
}

/// The variable that points every AWS client at one endpoint, a local stand-in (what
/// `sam local invoke` is given by scripts/local-aws's env file); empty in AWS.
/// Credentials still come from the environment (SAM passes the shell's).
pub const ENDPOINT_VARIABLE: &str = "FLARE_AWS_ENDPOINT_URL";

impl AwsOptions {
    /// A function's options: [`ENDPOINT_VARIABLE`]'s endpoint when it is set and not
    /// empty, else the SDK's own resolution (`AWS_ENDPOINT_URL`, then AWS's endpoints).
    pub fn from_env() -> Self {
        let endpoint_url = std::env::var(ENDPOINT_VARIABLE)
            .ok()
            .filter(|v| !v.trim().is_empty());
        Self {
            endpoint_url,
            ..Self::default()
        }
    }

    /// Everything at a local endpoint such as moto, with throwaway credentials.
    pub fn local(endpoint_url: impl Into<String>) -> Self {
        Self {
            endpoint_url: Some(endpoint_url.into()),
            region: Some("us-east-1".into()),
            static_credentials: Some(("testing".into(), "testing".into())),
            extra_root_ca: None,
        }
    }
}

/// Loads the shared SDK configuration once (call it in `main`, before the first event).
pub async fn sdk_config(opts: AwsOptions) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client(opts.extra_root_ca.as_deref()))
        .timeout_config(
            // A hung AWS call must not eat a Lambda's whole time budget.
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(25))
                .build(),
        );
    if let Some(url) = opts.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(region) = opts.region {
        loader = loader.region(Region::new(region));
    }
    if let Some((key, secret)) = opts.static_credentials {
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            key,
            secret,
            None,
            None,
            "flare-static",
        ));
    }
    loader.load().await
}

/// The SDK's HTTPS client on rustls with ring (what `default-https-client` builds, with
/// aws-lc), so every TLS connection Flare makes uses one crypto library. It trusts the
/// system's roots, and `extra_root_ca` too.
fn https_client(
    extra_root_ca: Option<&[u8]>,
) -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{
        Provider, TlsContext, TrustStore, rustls_provider::CryptoMode,
    };
    let mut roots = TrustStore::default();
    if let Some(pem) = extra_root_ca {
        roots.add_pem_certificate(pem);
    }
    let context = TlsContext::builder()
        .with_trust_store(roots)
        .build()
        // It only stores what it is given (the PEM is parsed when the first connection
        // is made, and must be valid).
        .expect("TlsContextBuilder::build cannot fail");
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .tls_context(context)
        .build_https()
}

#[cfg(feature = "dynamodb")]
pub fn dynamodb(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

#[cfg(feature = "secretsmanager")]
pub fn secretsmanager(config: &SdkConfig) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(config)
}

#[cfg(feature = "sesv2")]
pub fn sesv2(config: &SdkConfig) -> aws_sdk_sesv2::Client {
    aws_sdk_sesv2::Client::new(config)
}

#[cfg(feature = "sns")]
pub fn sns(config: &SdkConfig) -> aws_sdk_sns::Client {
    aws_sdk_sns::Client::new(config)
}

#[cfg(feature = "sqs")]
pub use aws_sdk_sqs::Client as SqsClient;

#[cfg(feature = "sqs")]
pub fn sqs(config: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(config)
}

#[cfg(feature = "dynamodb")]
pub mod audit;
pub mod batch;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(feature = "dynamodb")]
pub mod health;
#[cfg(feature = "dynamodb")]
pub mod log;
#[cfg(feature = "dynamodb")]
pub mod pacer;
#[cfg(feature = "secretsmanager")]
pub mod secrets;
#[cfg(feature = "sesv2")]
pub mod ses;
#[cfg(feature = "sns")]
pub mod sns_devices;
#[cfg(feature = "sns")]
pub mod sns_push;
#[cfg(feature = "sns")]
pub mod sns_sms;
#[cfg(feature = "sqs")]
pub mod sqs;
pub mod wiring;

pub use aws_smithy_runtime_api::client::result::SdkError;
pub use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Whether an SDK error is worth retrying (throttling, 5xx, timeouts, I/O).
pub fn is_transient<E: ProvideErrorMetadata>(
    err: &SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(e) => {
            let code = e.err().code().unwrap_or_default();
            e.raw().status().as_u16() >= 500
                || code.contains("Throttl")
                || matches!(
                    code,
                    "ProvisionedThroughputExceededException"
                        | "RequestLimitExceeded"
                        | "InternalServerError"
                        | "InternalFailure"
                        | "InternalServiceError"
                        | "ServiceUnavailable"
                )
        }
        _ => false,
    }
}

/// An AWS "slow down" (`Throttling`, `ThrottlingException`, SES's `TooManyRequests`):
/// not a failure of the service, the send waits and tries again.
pub fn is_throttling<E: ProvideErrorMetadata>(
    err: &SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> bool {
    match err {
        SdkError::ServiceError(e) => {
            let code = e.err().code().unwrap_or_default();
            code.contains("Throttl") || code == "TooManyRequestsException"
        }
        _ => false,
    }
}

/// How long a throttled send waits before it goes again (AWS names no time).
pub const THROTTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The service's error code, for logs and mapping.
pub fn error_code<E: ProvideErrorMetadata>(
    err: &SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> Option<&str> {
    match err {
        SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    }
}

/// Maps an SDK error to a store error, keeping the whole error as the cause.
pub fn store_error<E>(
    err: SdkError<E, aws_smithy_runtime_api::http::Response>,
    what: &'static str,
) -> flare_shared::ports::StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let transient = is_transient(&err);
    let e = anyhow::Error::new(err).context(what);
    if transient {
        flare_shared::ports::StoreError::Unavailable(e)
    } else {
        flare_shared::ports::StoreError::Failed(e)
    }
}

impl From<batch::Unprocessed> for flare_shared::ports::StoreError {
    fn from(e: batch::Unprocessed) -> Self {
        Self::Unavailable(e.into())
    }
}

impl From<batch::Unprocessed> for flare_shared::ports::QueueError {
    fn from(e: batch::Unprocessed) -> Self {
        Self::Unavailable(e.into())
    }
}
