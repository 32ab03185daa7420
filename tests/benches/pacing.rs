//! What pacing a provider across Lambda instances costs, on moto: `instances` SMS
//! function instances (each its own `DynamoPacer`, ten sends at a time as an SQS batch
//! is handled) send N bulk SMS to one provider limited to R a second, while an urgent
//! send is asked for every second. Counted: every DynamoDB call the pacers make (the
//! extra store calls a message costs). Timed: the bulk send's rate as a share of R, the
//! busiest second (starts in any one second), and how long each urgent send waited.
//! The sends themselves are not made (the clock covers pacing alone); moto answers one
//! call at a time, so the waits include its queueing, not DynamoDB's latency.
//!
//!     cargo bench -p flare-tests --bench pacing [-- 1500]

use flare_aws::pacer::DynamoPacer;
use flare_shared::domain::Lane;
use flare_shared::ports::Pacer;
use flare_tests::fanout::{CallCounter, counted_clients};
use flare_tests::stack::AwsStack;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const RATE: u32 = 100;
const BATCH: usize = 10;

struct Round {
    calls_per_message: f64,
    share_of_rate: f64,
    busiest: usize,
    urgent_ms: Vec<f64>,
}

async fn round(stack: &AwsStack, instances: usize, n: usize) -> Round {
    let counter = CallCounter::default();
    let pacers: Vec<Arc<DynamoPacer>> = (0..instances)
        .map(|_| {
            let (db, _) = counted_clients(&stack.sdk, None, &counter);
            Arc::new(DynamoPacer::new(db, &stack.tables.log))
        })
        .collect();
    let provider = format!("http#bench#{}", uuid::Uuid::new_v4().simple());
    let left = Arc::new(AtomicUsize::new(n));
    let clock = Instant::now();
    let mut workers = Vec::new();
    for pacer in &pacers {
        for _ in 0..BATCH {
            let (pacer, provider, left) = (pacer.clone(), provider.clone(), left.clone());
            workers.push(tokio::spawn(async move {
                let mut starts = Vec::new();
                while left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(1))
                    .is_ok()
                {
                    pacer.acquire(&provider, RATE, Lane::Normal).await;
                    starts.push(clock.elapsed().as_secs_f64());
                }
                starts
            }));
        }
    }
    let mut urgent_ms = Vec::new();
    let mut urgent_starts = Vec::new();
    let mut i = 0;
    while left.load(Ordering::SeqCst) > 0 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let asked = Instant::now();
        pacers[i % instances]
            .acquire(&provider, RATE, Lane::Urgent)
            .await;
        urgent_ms.push(asked.elapsed().as_secs_f64() * 1000.0);
        urgent_starts.push(clock.elapsed().as_secs_f64());
        i += 1;
    }
    let mut starts: Vec<f64> = Vec::new();
    for w in workers {
        starts.extend(w.await.unwrap());
    }
    let bulk_span = starts.iter().cloned().fold(0.0, f64::max)
        - starts.iter().cloned().fold(f64::MAX, f64::min);
    let share_of_rate = (starts.len() as f64 / bulk_span) / f64::from(RATE);
    starts.extend(urgent_starts);
    starts.sort_by(f64::total_cmp);
    let busiest = (0..starts.len())
        .map(|i| {
            starts[i..]
                .iter()
                .take_while(|t| **t < starts[i] + 1.0)
                .count()
        })
        .max()
        .unwrap_or(0);
    urgent_ms.sort_by(f64::total_cmp);
    Round {
        calls_per_message: counter.total() as f64 / (n + urgent_ms.len()) as f64,
        share_of_rate,
        busiest,
        urgent_ms,
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1500);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stack = AwsStack::create(flare_tests::moto()).await.unwrap();
        println!(
            "{n} bulk sends at {RATE}/s through DynamoPacer on moto, {BATCH} at a time per instance, an urgent send every second:"
        );
        println!("| instances | round | DynamoDB calls a message | bulk rate / limit | busiest second | urgent wait p50 / p99 / max (ms) |");
        println!("|---|---|---|---|---|---|");
        for instances in [1, 2, 4, 8] {
            let rounds = if instances == 4 { 3 } else { 1 };
            for r in 1..=rounds {
                let round = round(&stack, instances, n).await;
                println!(
                    "| {instances} | {r} | {:.3} | {:.1}% | {} | {:.0} / {:.0} / {:.0} |",
                    round.calls_per_message,
                    round.share_of_rate * 100.0,
                    round.busiest,
                    pct(&round.urgent_ms, 0.5),
                    pct(&round.urgent_ms, 0.99),
                    round.urgent_ms.last().copied().unwrap_or(f64::NAN),
                );
            }
        }
    });
}
