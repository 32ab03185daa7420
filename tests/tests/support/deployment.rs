//! A deployment's functions on moto, wired as in AWS, for the scenarios that drive them
//! with pollers of their own (`faults.rs`, `escalation.rs`): the API's services (to
//! save settings as an administrator would), the router and the three delivery
//! functions, their retries delayed one second instead of 10 s doubling.

use flare_aws as aws;
use flare_lambda::{DeliveryConfig, DeliveryFunction, RetryDelay};
use flare_shared::app::Services;
use flare_shared::app::notify::Notifier;
use flare_shared::domain::{Channel, EmailAddress, EndpointPolicy, Lane};
use flare_tests::moto;
use flare_tests::stack::AwsStack;
use std::collections::HashMap;
use std::sync::Arc;

pub struct Deployment {
    /// DynamoDB's own moto server: moto serves one request at a time, and DynamoDB is
    /// most of the requests (kept alive for the deployment's life).
    pub _dynamodb: flare_tests::Moto,
    pub stack: AwsStack,
    pub services: Services,
    pub notifier: Notifier,
    pub functions: HashMap<Channel, DeliveryFunction>,
}

/// A retry delay scaled down like the scenarios' deadlines: one second instead of 10 s
/// doubling. Every job of the scenarios is in the urgent lane.
struct ScaledDelay {
    client: aws::SqsClient,
    url: String,
}

#[async_trait::async_trait]
impl RetryDelay for ScaledDelay {
    async fn delay(&self, _source: Option<&str>, receipt_handle: &str, _seconds: i32) {
        let _ = self
            .client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(1)
            .send()
            .await;
    }
}

impl Deployment {
    /// A fresh stack whose queues hide a received message for `visibility` seconds (longer
    /// than a claim's lease under the scenario's deadline, as in the template).
    pub async fn start(visibility: u32) -> anyhow::Result<Self> {
        let dynamodb = flare_tests::Moto::start()?;
        let stack =
            AwsStack::create_on(moto().split_sdk_config(&dynamodb).await, visibility).await?;
        let sdk = &stack.sdk;
        let policy = EndpointPolicy {
            allow_private: true,
        };
        let services = flare_api::Config {
            settings_table: stack.tables.settings.clone(),
            audit_table: stack.audit_table.clone(),
            audit_retention_days: 400,
            directory_table: stack.tables.directory.clone(),
            log_table: stack.tables.log.clone(),
            queues: stack.queues.clone(),
            secret_prefix: stack.secret_prefix.clone(),
            platform_apps: stack.platform_apps.clone(),
            policy,
            default_sender: None,
            metrics_namespace: None,
        }
        .services(sdk)?;
        let notifier = flare_router::Config {
            tables: stack.tables.clone(),
            queues: stack.queues.clone(),
            metrics_namespace: None,
        }
        .notifier(sdk);
        let cfg = |channel| DeliveryConfig {
            channel,
            tables: stack.tables.clone(),
            queues: stack.queues.clone(),
            secret_prefix: stack.secret_prefix.clone(),
            max_receives: flare_tests::stack::MAX_RECEIVES,
            dead_letter_queues: Lane::ALL
                .iter()
                .map(|l| stack.dlq_arns[&(channel, *l)].clone())
                .collect(),
            metrics_namespace: None,
            circuit: Default::default(),
            sns_per_second: None,
            max_pace_wait: flare_lambda::MAX_PACE_WAIT,
            // No response links: the faults and escalation scenarios are about delivery
            // under load on one moto server, where a link's writes per message (two for
            // its first) made the faults test 83 s against 68 s alone on this machine, and
            // beside the other tests pushed an SMS past its receives (the links have tests
            // of their own: pipeline, binaries, the local runner).
            public_url: None,
        };
        let (p, s, e) = (cfg(Channel::Push), cfg(Channel::Sms), cfg(Channel::Email));
        let mut functions = HashMap::new();
        functions.insert(
            Channel::Push,
            p.function(sdk, flare_push::deliverer(&p, sdk)),
        );
        functions.insert(
            Channel::Sms,
            s.function(sdk, flare_sms::deliverer(&s, sdk, policy)?),
        );
        let sender = EmailAddress::parse("flare@flare.example")?;
        functions.insert(
            Channel::Email,
            e.function(sdk, flare_email::deliverer(&e, sdk, sender, policy)),
        );
        for (channel, f) in functions.iter_mut() {
            f.delay = Some(Arc::new(ScaledDelay {
                client: aws::sqs(sdk),
                url: stack.queues[&(*channel, Lane::Urgent)].clone(),
            }));
        }
        Ok(Self {
            _dynamodb: dynamodb,
            stack,
            services,
            notifier,
            functions,
        })
    }

    /// Routes `event` as the router function would.
    pub async fn route(&self, event: &serde_json::Value) -> anyhow::Result<flare_router::Outcome> {
        flare_router::handle(
            &self.notifier,
            lambda_runtime::LambdaEvent::new(event.clone(), lambda_runtime::Context::default()),
        )
        .await
        .map_err(|e| anyhow::anyhow!("routing: {e}"))
    }

    /// How many messages wait in every queue and dead-letter queue.
    pub async fn queued(&self) -> anyhow::Result<u64> {
        let mut queued = 0;
        for url in self.stack.queues.values().chain(self.stack.dlqs.values()) {
            queued += self.stack.in_queue(url).await?;
        }
        Ok(queued)
    }
}
