//! A whole Flare deployment on moto: tables, queues with dead-letter queues, platform
//! applications, a secret prefix, all under unique names.

use crate::{Moto, unique};
use flare_aws::sns_devices::PlatformApps;
use flare_aws::sqs::QueueUrls;
use flare_aws::wiring::Tables;
use flare_aws::{self as aws, SdkConfig};
use flare_shared::domain::{Channel, Lane};
use std::collections::HashMap;

pub struct AwsStack {
    pub sdk: SdkConfig,
    pub tables: Tables,
    /// Each channel's two lanes' queues.
    pub queues: QueueUrls,
    pub dlqs: QueueUrls,
    /// The dead-letter queues' ARNs (the delivery functions' `FLARE_<CHANNEL>_DLQ_ARN`).
    pub dlq_arns: QueueUrls,
    pub platform_apps: PlatformApps,
    pub secret_prefix: String,
    /// The audit trail's table (the API function's `FLARE_AUDIT_TABLE`).
    pub audit_table: String,
}

/// The functions' `FLARE_PUBLIC_URL` in tests: response links are under it.
pub const PUBLIC_URL: &str = "https://api.flare.test";

/// The functions' `FLARE_DEFAULT_SENDER` in tests (its domain is verified in SES by the
/// tests that send email).
pub const DEFAULT_SENDER: &str = "flare@flare.example";

/// The template and its SAM transform, made once per test binary (the transform takes
/// seconds; each stack's roles are resolved from it in a fraction of one).
fn transformed() -> anyhow::Result<std::path::PathBuf> {
    static DONE: std::sync::OnceLock<Result<std::path::PathBuf, String>> =
        std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let root = crate::workspace_root();
        let path = std::env::temp_dir().join(format!(
            "flare-template-transformed-{}.json",
            std::process::id()
        ));
        let out = std::process::Command::new(crate::python())
            .arg(root.join("scripts/harness/template_roles.py"))
            .arg(root.join("template.yaml"))
            .arg("--save-transformed")
            .arg(&path)
            .output()
            .map_err(|e| format!("running template_roles.py: {e}\n  Fix: {}", crate::FIX))?;
        if !out.status.success() {
            return Err(format!(
                "template_roles.py --save-transformed failed: {}\n  Fix: {}",
                String::from_utf8_lossy(&out.stderr),
                crate::FIX
            ));
        }
        Ok(path)
    })
    .clone()
    .map_err(|e| anyhow::anyhow!(e))
}

/// Each function's variables by logical id (`{"RouterFunction": {"FLARE_...": "..."}}`),
/// the shape of `sam local invoke --env-vars`.
pub type FunctionEnv =
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>;

/// The variable pointing the functions' AWS clients at a stand-in (empty in AWS).
pub const ENDPOINT_VARIABLE: &str = flare_aws::ENDPOINT_VARIABLE;

/// moto's account.
pub const ACCOUNT: &str = "123456789012";

/// The configuration set the functions name (`FLARE_SES_CONFIGURATION_SET`; moto takes
/// any name and reports no events).
pub const SES_CONFIGURATION_SET: &str = "flare-receipts";

/// An assumed role's temporary credentials.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RoleCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub role_name: String,
}

impl RoleCredentials {
    /// The variables Lambda gives a function running as its role.
    pub fn env(&self) -> [(String, String); 3] {
        [
            ("AWS_ACCESS_KEY_ID".into(), self.access_key_id.clone()),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                self.secret_access_key.clone(),
            ),
            ("AWS_SESSION_TOKEN".into(), self.session_token.clone()),
        ]
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// How many receives before a job goes to its dead-letter queue (as in template.yaml).
pub const MAX_RECEIVES: u32 = 5;

impl AwsStack {
    pub async fn create(moto: &Moto) -> anyhow::Result<Self> {
        Self::create_with_visibility(moto, 0).await
    }

    /// A stack whose queues hide a received job for `visibility` seconds (0: redelivered
    /// at once, as most tests want; the fault-injection test wants AWS's proportions,
    /// a visibility longer than a crashed attempt's claim).
    pub async fn create_with_visibility(moto: &Moto, visibility: u32) -> anyhow::Result<Self> {
        Self::create_on(moto.sdk_config().await, visibility).await
    }

    /// The same on any SDK configuration (for example [`crate::split_sdk_config`]).
    pub async fn create_on(sdk: SdkConfig, visibility: u32) -> anyhow::Result<Self> {
        let db = aws::dynamodb(&sdk);
        let tables = Tables {
            settings: unique("settings"),
            directory: unique("directory"),
            log: unique("log"),
        };
        for t in [&tables.settings, &tables.directory] {
            flare_aws::dynamodb::create_table(&db, t).await?;
        }
        flare_aws::log::create_table(&db, &tables.log).await?;
        let audit_table = unique("audit");
        flare_aws::dynamodb::create_table(&db, &audit_table).await?;
        let sqs = aws::sqs(&sdk);
        let mut queues = HashMap::new();
        let mut dlqs = HashMap::new();
        let mut dlq_arns = HashMap::new();
        for (c, lane) in Channel::ALL
            .into_iter()
            .flat_map(|c| Lane::ALL.map(|l| (c, l)))
        {
            let name = format!("{}-{}", c.as_str(), lane.as_str());
            let dlq = sqs
                .create_queue()
                .queue_name(unique(&format!("{name}-dlq")))
                // A job a dead-letter queue could not settle yet comes back as soon as
                // its main queue's would (SQS's default is 30 s).
                .attributes(
                    aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                    visibility.to_string(),
                )
                .send()
                .await?
                .queue_url
                .unwrap_or_default();
            let dlq_arn = sqs
                .get_queue_attributes()
                .queue_url(&dlq)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .send()
                .await?
                .attributes
                .and_then(|a| {
                    a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                        .cloned()
                })
                .unwrap_or_default();
            let redrive = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVES}).to_string();
            let url = sqs
                .create_queue()
                .queue_name(unique(&name))
                .attributes(
                    aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                    visibility.to_string(),
                )
                .attributes(
                    aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
                    redrive,
                )
                .send()
                .await?
                .queue_url
                .unwrap_or_default();
            queues.insert((c, lane), url);
            dlqs.insert((c, lane), dlq);
            dlq_arns.insert((c, lane), dlq_arn);
        }
        let sns = aws::sns(&sdk);
        let mut platform_apps = PlatformApps::default();
        for (platform, slot) in [
            ("GCM", &mut platform_apps.fcm),
            ("APNS", &mut platform_apps.apns),
            ("APNS_SANDBOX", &mut platform_apps.apns_sandbox),
        ] {
            let out = sns
                .create_platform_application()
                .name(unique("app"))
                .platform(platform)
                .attributes("PlatformCredential", "credential")
                .attributes("PlatformPrincipal", "principal")
                .send()
                .await?;
            *slot = out.platform_application_arn;
        }
        // The response link key, as the template's LinkKeySecret makes it.
        let secret_prefix = unique("flare");
        aws::secretsmanager(&sdk)
            .create_secret()
            .name(flare_shared::ports::SecretKey::LinkKey.name(&secret_prefix))
            .secret_string(unique("link-key"))
            .send()
            .await?;
        Ok(Self {
            sdk,
            tables,
            queues,
            dlqs,
            dlq_arns,
            platform_apps,
            secret_prefix,
            audit_table,
        })
    }

    /// This stack's value for one of the variables `template.yaml` gives the functions
    /// (`None` for a name the stack does not know).
    pub fn env_value(&self, name: &str) -> Option<String> {
        use flare_aws::wiring;
        let lanes = || {
            Channel::ALL
                .into_iter()
                .flat_map(|c| Lane::ALL.map(|l| (c, l)))
        };
        if let Some(k) = lanes().find(|(c, l)| wiring::queue_env(*c, *l) == name) {
            return self.queues.get(&k).cloned();
        }
        // The normal lane's function's (the urgent one's is set per function).
        if let Some(c) = Channel::ALL
            .iter()
            .find(|c| wiring::dead_letter_env(**c) == name)
        {
            return self.dlq_arns.get(&(*c, Lane::Normal)).cloned();
        }
        match name {
            wiring::SETTINGS_TABLE => Some(self.tables.settings.clone()),
            wiring::DIRECTORY_TABLE => Some(self.tables.directory.clone()),
            wiring::LOG_TABLE => Some(self.tables.log.clone()),
            "FLARE_AUDIT_TABLE" => Some(self.audit_table.clone()),
            "FLARE_AUDIT_RETENTION_DAYS" => Some("400".to_string()),
            // As in AWS: the SDK's own endpoints, or AWS_ENDPOINT_URL's.
            ENDPOINT_VARIABLE => Some(String::new()),
            "FLARE_SECRET_PREFIX" => Some(self.secret_prefix.clone()),
            wiring::DEFAULT_SENDER => Some(DEFAULT_SENDER.to_string()),
            "FLARE_MAX_RECEIVES" => Some(MAX_RECEIVES.to_string()),
            wiring::PUBLIC_URL => Some(PUBLIC_URL.to_string()),
            // SNS paced as a new account's (the binaries keep it through the log table).
            "FLARE_SNS_SMS_PER_SECOND" => Some("20".to_string()),
            "FLARE_SES_CONFIGURATION_SET" => Some(SES_CONFIGURATION_SET.to_string()),
            flare_runtime::emf::NAMESPACE_VARIABLE => Some("Flare/test".to_string()),
            PlatformApps::ENV_FCM => self.platform_apps.fcm.clone(),
            PlatformApps::ENV_APNS => self.platform_apps.apns.clone(),
            PlatformApps::ENV_APNS_SANDBOX => self.platform_apps.apns_sandbox.clone(),
            _ => None,
        }
    }

    /// What `template.yaml`'s resources are on this stack, for
    /// `scripts/harness/template_roles.py --resources`: each logical id's `Ref` and the
    /// attributes the policies read (`Arn`, `QueueName`).
    pub fn resources(&self) -> serde_json::Value {
        use serde_json::json;
        let arn =
            |service: &str, rest: &str| format!("arn:aws:{service}:us-east-1:{ACCOUNT}:{rest}");
        let mut map = serde_json::Map::new();
        for (id, name) in [
            ("SettingsTable", &self.tables.settings),
            ("DirectoryTable", &self.tables.directory),
            ("LogTable", &self.tables.log),
            ("AuditTable", &self.audit_table),
        ] {
            map.insert(
                id.into(),
                json!({"Ref": name, "Arn": arn("dynamodb", &format!("table/{name}"))}),
            );
        }
        for c in Channel::ALL {
            for lane in Lane::ALL {
                let base = format!(
                    "{}{}",
                    capitalized(c.as_str()),
                    if lane == Lane::Urgent { "Urgent" } else { "" }
                );
                for (id, url) in [
                    (format!("{base}Queue"), &self.queues[&(c, lane)]),
                    (format!("{base}DeadLetterQueue"), &self.dlqs[&(c, lane)]),
                ] {
                    let name = url.rsplit('/').next().unwrap_or_default();
                    map.insert(
                        id,
                        json!({"Ref": url, "QueueName": name, "Arn": arn("sqs", name)}),
                    );
                }
            }
        }
        map.insert(
            "SesConfigurationSet".into(),
            json!({"Ref": SES_CONFIGURATION_SET}),
        );
        serde_json::Value::Object(map)
    }

    /// Each function's role as the template deploys it (`ids`: their logical ids), made
    /// on `moto` (a server enforcing IAM) and assumed: its credentials by logical id.
    /// `drop` removes actions from them (`"SmsFunction:sqs:SendMessage"`), to prove a
    /// test needs them.
    pub fn roles(
        &self,
        moto: &Moto,
        ids: &[&str],
        drop: &[&str],
    ) -> anyhow::Result<HashMap<String, RoleCredentials>> {
        let mut args: Vec<String> = vec![
            "--endpoint-url".into(),
            moto.url.clone(),
            "--access-key-id".into(),
            moto.credentials.0.clone(),
            "--secret-access-key".into(),
            moto.credentials.1.clone(),
        ];
        for id in ids {
            args.extend(["--function".into(), id.to_string()]);
        }
        for d in drop {
            args.extend(["--drop".into(), d.to_string()]);
        }
        self.template_roles(&args)
    }

    /// `scripts/harness/template_roles.py` over the template (its transform made once),
    /// this stack's resources and parameters, and `args`; its JSON answer.
    fn template_roles<T: serde::de::DeserializeOwned>(&self, args: &[String]) -> anyhow::Result<T> {
        use anyhow::Context;
        let root = crate::workspace_root();
        let mut cmd = std::process::Command::new(crate::python());
        cmd.arg(root.join("scripts/harness/template_roles.py"))
            .arg(root.join("template.yaml"))
            .arg("--transformed")
            .arg(transformed()?)
            .arg("--resources")
            .arg(self.resources().to_string())
            .args(args);
        for (name, value) in self.template_params() {
            cmd.arg("--param").arg(format!("{name}={value}"));
        }
        let out = cmd
            .output()
            .with_context(|| format!("running template_roles.py.\n  Fix: {}", crate::FIX))?;
        anyhow::ensure!(
            out.status.success(),
            "template_roles.py {args:?} failed: {}\n  Fix: {}",
            String::from_utf8_lossy(&out.stderr),
            crate::FIX
        );
        serde_json::from_slice(&out.stdout).context("template_roles.py printed no JSON")
    }

    /// The template parameters this stack stands for (the others keep their defaults).
    fn template_params(&self) -> Vec<(&'static str, String)> {
        let apps = &self.platform_apps;
        [
            ("SecretPrefix", Some(self.secret_prefix.as_str())),
            ("DefaultSender", Some(DEFAULT_SENDER)),
            ("PublicUrl", Some(PUBLIC_URL)),
            ("FcmPlatformApplicationArn", apps.fcm.as_deref()),
            ("ApnsPlatformApplicationArn", apps.apns.as_deref()),
            (
                "ApnsSandboxPlatformApplicationArn",
                apps.apns_sandbox.as_deref(),
            ),
        ]
        .into_iter()
        .map(|(name, value)| (name, value.unwrap_or_default().to_string()))
        .collect()
    }

    /// Each function's environment as `template.yaml` gives it (Globals merged with its
    /// own), resolved against this stack, by logical id, with `FLARE_AWS_ENDPOINT_URL`
    /// set to `endpoint`: the env file `sam local invoke --env-vars` takes
    /// (`scripts/local-aws` writes it; the emulator tests start the binaries with it).
    /// The same resolver as [`Self::roles`], from the same transform.
    pub fn function_env(&self, endpoint: &str) -> anyhow::Result<FunctionEnv> {
        use anyhow::Context;
        let args = ["--stack-name", "test", "--strict", "--env"].map(String::from);
        let mut env: FunctionEnv = self.template_roles(&args)?;
        for (id, vars) in env.iter_mut() {
            let v = vars.get_mut(ENDPOINT_VARIABLE).with_context(|| {
                format!("template.yaml gives {id} no {ENDPOINT_VARIABLE} (Globals)")
            })?;
            *v = endpoint.to_string();
        }
        Ok(env)
    }

    /// The secret `{prefix}/{rest}`; `None` when it does not exist.
    pub async fn secret(&self, rest: &str) -> Option<String> {
        read_secret(&self.sdk, &format!("{}/{rest}", self.secret_prefix)).await
    }

    /// The values of every secret named `{prefix}/{rest}/...` (one per settings revision;
    /// a save leaves exactly one), in no set order.
    pub async fn secrets_under(&self, rest: &str) -> Vec<String> {
        secrets_under(&self.sdk, &format!("{}/{rest}", self.secret_prefix)).await
    }

    /// The ARN of the FCM platform endpoint registered for a device `token`.
    pub async fn fcm_endpoint(&self, token: &str) -> Option<String> {
        let app = self.platform_apps.fcm.clone()?;
        let out = aws::sns(&self.sdk)
            .list_endpoints_by_platform_application()
            .platform_application_arn(app)
            .send()
            .await
            .unwrap_or_else(|e| panic!("ListEndpointsByPlatformApplication: {e:?}"));
        out.endpoints()
            .iter()
            .find(|e| {
                e.attributes()
                    .and_then(|a| a.get("Token"))
                    .map(String::as_str)
                    == Some(token)
            })
            .and_then(|e| e.endpoint_arn().map(str::to_string))
    }

    /// Messages in a queue, visible or being handled.
    pub async fn in_queue(&self, url: &str) -> anyhow::Result<u64> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = aws::sqs(&self.sdk)
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await?;
        let attrs = out.attributes.unwrap_or_default();
        let n = |a: A| -> u64 { attrs.get(&a).and_then(|v| v.parse().ok()).unwrap_or(0) };
        Ok(n(A::ApproximateNumberOfMessages) + n(A::ApproximateNumberOfMessagesNotVisible))
    }

    /// Messages waiting in a queue (visible now).
    pub async fn depth(&self, url: &str) -> anyhow::Result<u64> {
        let out = aws::sqs(&self.sdk)
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await?;
        Ok(out
            .attributes
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
                    .cloned()
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }
}

/// A secret's value; `None` when it does not exist. Any other failure panics, so a
/// broken connection never passes for a deleted secret.
/// The values of every secret named `{name}/...`: a settings secret's revisions.
pub async fn secrets_under(sdk: &SdkConfig, name: &str) -> Vec<String> {
    let prefix = format!("{name}/");
    let out = aws::secretsmanager(sdk)
        .list_secrets()
        .filters(
            aws_sdk_secretsmanager::types::Filter::builder()
                .key(aws_sdk_secretsmanager::types::FilterNameStringType::Name)
                .values(&prefix)
                .build(),
        )
        .max_results(100)
        .send()
        .await
        .unwrap_or_else(|e| panic!("ListSecrets {prefix}: {e:?}"));
    let mut values = Vec::new();
    for s in out.secret_list() {
        if let Some(name) = s.name().filter(|n| n.starts_with(&prefix))
            && let Some(v) = read_secret(sdk, name).await
        {
            values.push(v);
        }
    }
    values
}

pub async fn read_secret(sdk: &SdkConfig, name: &str) -> Option<String> {
    match aws::secretsmanager(sdk)
        .get_secret_value()
        .secret_id(name)
        .send()
        .await
    {
        Ok(out) => out.secret_string().map(str::to_string),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            None
        }
        Err(e) => panic!("GetSecretValue {name}: {e:?}"),
    }
}
