//! Devices as SNS platform endpoints, one platform application per platform.

use super::{error_code, is_transient};
use async_trait::async_trait;
use aws_sdk_sns::Client;
use flare_shared::domain::{Platform, UserId};
use flare_shared::ports::{DeviceError, DeviceRegistry};

/// The SNS platform application ARN of each platform (from the function's environment).
#[derive(Clone, Debug, Default)]
pub struct PlatformApps {
    pub fcm: Option<String>,
    pub apns: Option<String>,
    pub apns_sandbox: Option<String>,
}

impl PlatformApps {
    pub const ENV_FCM: &'static str = "FLARE_SNS_APP_FCM";
    pub const ENV_APNS: &'static str = "FLARE_SNS_APP_APNS";
    pub const ENV_APNS_SANDBOX: &'static str = "FLARE_SNS_APP_APNS_SANDBOX";

    pub fn from_env() -> Self {
        let get = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
        Self {
            fcm: get(Self::ENV_FCM),
            apns: get(Self::ENV_APNS),
            apns_sandbox: get(Self::ENV_APNS_SANDBOX),
        }
    }

    fn for_platform(&self, p: Platform) -> Option<&str> {
        match p {
            Platform::Fcm => self.fcm.as_deref(),
            Platform::Apns => self.apns.as_deref(),
            Platform::ApnsSandbox => self.apns_sandbox.as_deref(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SnsDevices {
    client: Client,
    apps: PlatformApps,
}

impl SnsDevices {
    pub fn new(client: Client, apps: PlatformApps) -> Self {
        Self { client, apps }
    }
}

fn device_error<E>(
    e: aws_sdk_sns::error::SdkError<E, aws_smithy_runtime_api::http::Response>,
    what: &'static str,
) -> DeviceError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    let transient = is_transient(&e);
    let invalid = error_code(&e) == Some("InvalidParameter");
    let err = anyhow::Error::new(e).context(what);
    if invalid {
        DeviceError::InvalidToken(err)
    } else if transient {
        DeviceError::Unavailable(err)
    } else {
        DeviceError::Failed(err)
    }
}

#[async_trait]
impl DeviceRegistry for SnsDevices {
    async fn register(
        &self,
        platform: Platform,
        token: &str,
        user: &UserId,
    ) -> Result<String, DeviceError> {
        let app = self
            .apps
            .for_platform(platform)
            .ok_or(DeviceError::PlatformNotConfigured(platform.as_str()))?;
        let out = self
            .client
            .create_platform_endpoint()
            .platform_application_arn(app)
            .token(token)
            .custom_user_data(user.as_str())
            .send()
            .await
            .map_err(|e| device_error(e, "CreatePlatformEndpoint"))?;
        out.endpoint_arn.ok_or_else(|| {
            DeviceError::Failed(anyhow::anyhow!("CreatePlatformEndpoint returned no ARN"))
        })
    }

    async fn unregister(&self, endpoint: &str) -> Result<(), DeviceError> {
        // DeleteEndpoint is idempotent: a missing endpoint is not an error.
        self.client
            .delete_endpoint()
            .endpoint_arn(endpoint)
            .send()
            .await
            .map_err(|e| device_error(e, "DeleteEndpoint"))?;
        Ok(())
    }
}
