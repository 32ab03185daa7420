//! The `DeliveryLog` conformance suite (`flare_tests::conformance`) against each adapter.

use flare_aws::log::DynamoDeliveryLog;
use flare_shared::domain::OrgId;
use flare_shared::memory::MemoryDeliveryLog;
use flare_tests::stack::AwsStack;
use flare_tests::{conformance, moto, unique};

#[tokio::test]
async fn the_in_memory_log_keeps_every_promise() {
    let log = MemoryDeliveryLog::default();
    conformance::delivery_log(&log, &OrgId::parse("acme").unwrap()).await;
}

#[tokio::test]
async fn the_dynamodb_log_keeps_every_promise_on_moto() {
    let stack = AwsStack::create(moto()).await.unwrap();
    let log = DynamoDeliveryLog::new(flare_aws::dynamodb(&stack.sdk), &stack.tables.log);
    conformance::delivery_log(&log, &OrgId::parse(&unique("org")).unwrap()).await;
}
