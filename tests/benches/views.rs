//! What one page of a notification's view costs in DynamoDB, on moto: a notification
//! of N recipients (three records each, as a dispatch under `app_sms_email` writes them,
//! spread over ceil(3N / 1,000) partitions as the log spreads them), one in ten having
//! acknowledged; the first page, a page from the middle and the last page of 500
//! recipients, each counted in items read (a Query's `ScannedCount`, a GetItem's item, a
//! BatchGetItem's items: what read capacity is paid for) and in calls.
//!
//!     cargo bench -p flare-tests --bench views [-- 1000 10000]
//!
//! Writing the records takes most of the run (moto, 25 items a call); only the reads are
//! counted. It covers the log's reads, not the API's rendering or the network.

use flare_aws::log::DynamoDeliveryLog;
use flare_shared::domain::*;
use flare_shared::ports::DeliveryLog;
use flare_tests::conformance;
use flare_tests::fanout::{CallCounter, ItemsRead};
use flare_tests::stack::AwsStack;

const PAGE: usize = 500;

async fn run(stack: &AwsStack, n: usize) -> Vec<(String, u64, u64, usize)> {
    let writer = DynamoDeliveryLog::new(flare_aws::dynamodb(&stack.sdk), &stack.tables.log);
    let org = OrgId::parse(&flare_tests::unique("views")).unwrap();
    let note = conformance::notification(&org);
    let id = note.notification_id.clone();
    let records: Vec<_> = (0..n)
        .flat_map(|i| {
            let who = format!("u-{i:06}");
            Channel::ALL.map(|c| conformance::record(&note, &who, c, false))
        })
        .collect();
    writer.create_notification(&note).await.unwrap();
    writer.put_first_records(&note, &records).await.unwrap();
    for i in (0..n).step_by(10) {
        writer
            .ack(&org, &id, &UserId::parse(&format!("u-{i:06}")).unwrap())
            .await
            .unwrap();
    }
    // A reader of its own, counted, that has never seen the notification (a fresh
    // Lambda instance): it reads the layout too.
    let items = ItemsRead::default();
    let calls = CallCounter::default();
    let db = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&stack.sdk)
            .interceptor(items.clone())
            .interceptor(calls.clone())
            .build(),
    );
    let reader = DynamoDeliveryLog::new(db, &stack.tables.log);
    let pages = n.div_ceil(PAGE);
    let wanted = [0, pages / 2, pages - 1];
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    for page in 0..pages {
        let (before_items, before_calls) = (items.total(), calls.total());
        let (logged, next) = reader
            .notification_page(&org, &id, after.as_deref(), PAGE)
            .await
            .unwrap()
            .unwrap();
        if wanted.contains(&page) {
            let mut who: Vec<String> = logged.records.iter().map(|r| r.recipient.key()).collect();
            who.dedup();
            out.push((
                format!("page {} of {pages}", page + 1),
                items.total() - before_items,
                calls.total() - before_calls,
                who.len(),
            ));
        }
        match next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    out
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000]
    } else {
        sizes
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stack = AwsStack::create(flare_tests::moto()).await.unwrap();
        let mut firsts = Vec::new();
        for &n in &sizes {
            let pages = run(&stack, n).await;
            for (which, items, calls, recipients) in &pages {
                println!(
                    "{n:>6} recipients, {which}: {items} items read in {calls} calls ({recipients} recipients shown)"
                );
            }
            let most = pages.iter().map(|p| p.1).max().unwrap_or(0);
            firsts.push((n, most));
        }
        if let [(n1, i1), (n2, i2), ..] = firsts[..] {
            println!(
                "most items read by one page: {n2} / {n1} recipients: {:.2} times ({i2} / {i1})",
                i2 as f64 / i1 as f64
            );
        }
    });
}
