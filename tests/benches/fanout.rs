//! Fan-out benchmark: the AWS calls the router makes for one dispatch to N recipients,
//! against the batching floor plus the fixed calls (`fanout::fixed_calls`), and the
//! router's peak memory. Each routing runs in a child process, so its peak resident set
//! (VmHWM) is the router's alone, not the seeding's.
//!
//!     cargo bench -p flare-tests --bench fanout [-- 300 1000]
//!
//! Above `ROUTE_PAGE` (1,000) users an event is routed in pages, each its own routing
//! invocation; this benchmark counts the first invocation only (it says so), so its
//! default sizes stop at one page. DynamoDB is moto's. moto's SendMessageBatch walks the whole
//! queue on every call, so above 2,000 recipients the jobs go to a sink that only
//! answers SendMessageBatch; the calls counted are the same either way.

use flare_tests::fanout::{Fanout, fixed_calls, route_counted, seed};
use flare_tests::stack::AwsStack;
use serde_json::json;
use std::collections::HashMap;

const SINK_ABOVE: usize = 2_000;

fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Child: route once, print the counts and the peak memory.
fn child(rt: &tokio::runtime::Runtime, job: &std::path::Path) {
    let job: serde_json::Value = serde_json::from_slice(&std::fs::read(job).unwrap()).unwrap();
    let (f, elapsed) = rt.block_on(async {
        let moto = job["moto"].as_str().unwrap();
        let sdk = flare_aws::sdk_config(flare_aws::AwsOptions::local(moto)).await;
        let tables = flare_aws::wiring::Tables {
            settings: job["tables"]["settings"].as_str().unwrap().into(),
            directory: job["tables"]["directory"].as_str().unwrap().into(),
            log: job["tables"]["log"].as_str().unwrap().into(),
        };
        // Keyed "channel/lane" (JSON keys are strings).
        let queues: HashMap<String, String> =
            serde_json::from_value(job["queues"].clone()).unwrap();
        let queues: flare_aws::sqs::QueueUrls = queues
            .into_iter()
            .map(|(k, u)| {
                let (c, l) = k.split_once('/').unwrap();
                let c = serde_json::from_value(json!(c)).unwrap();
                let l = serde_json::from_value(json!(l)).unwrap();
                ((c, l), u)
            })
            .collect();
        let start = std::time::Instant::now();
        let f = route_counted(&sdk, job["sqs"].as_str(), &tables, &queues, &job["event"])
            .await
            .unwrap();
        (f, start.elapsed())
    });
    println!(
        "{}",
        json!({"fanout": f, "seconds": elapsed.as_secs_f64(), "vm_hwm_kb": vm_hwm_kb()})
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Some(job) = std::env::var_os("FLARE_FANOUT_JOB") {
        return child(&rt, std::path::Path::new(&job));
    }
    let sizes: Vec<usize> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    // Above ROUTE_PAGE users an event is routed in pages, each a routing invocation of
    // its own, which this benchmark does not follow yet: it counts the first page only.
    let page = flare_shared::app::notify::ROUTE_PAGE;
    let sizes = if sizes.is_empty() {
        vec![300, page]
    } else {
        sizes
    };
    if let Some(n) = sizes.iter().find(|n| **n > page) {
        println!("(note: {n} recipients are routed in pages of {page}; only the first is counted)");
    }
    let moto = flare_tests::moto();
    let sink = flare_tests::ServerProcess::start(
        "sqs-sink",
        &["--port".into(), flare_tests::free_port().to_string()],
    )
    .unwrap();
    let sink_url = sink.info["url"].as_str().unwrap().to_string();
    println!(
        "| recipients | records | jobs | AWS calls | floor | fixed | calls over floor (after the fixed) | router time | router peak RSS | backends |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut by_operation = Vec::new();
    for n in sizes {
        let (stack, event) = rt.block_on(async {
            let stack = AwsStack::create(moto).await.unwrap();
            let event = seed(&stack, n).await.unwrap();
            (stack, event)
        });
        let dir = flare_tests::TempDir::new("fanout").unwrap();
        let job = dir.path().join("job.json");
        let queues: HashMap<String, String> = stack
            .queues
            .iter()
            .map(|((c, l), u)| (format!("{}/{}", c.as_str(), l.as_str()), u.clone()))
            .collect();
        let sqs = (n > SINK_ABOVE).then(|| sink_url.clone());
        let spec = json!({
            "moto": moto.url, "sqs": sqs, "queues": queues, "event": event,
            "tables": {"settings": stack.tables.settings, "directory": stack.tables.directory, "log": stack.tables.log},
        });
        std::fs::write(&job, spec.to_string()).unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .env("FLARE_FANOUT_JOB", &job)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let f: Fanout = serde_json::from_value(v["fanout"].clone()).unwrap();
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.3}x | {:.1} s | {:.1} MB | {} |",
            f.users,
            f.records,
            f.jobs,
            f.total,
            f.floor,
            fixed_calls(f.records),
            f.ratio(),
            v["seconds"].as_f64().unwrap(),
            v["vm_hwm_kb"].as_f64().unwrap() / 1024.0,
            if n > SINK_ABOVE {
                "moto, SQS sink"
            } else {
                "moto"
            }
        );
        by_operation.push((f.users, f.calls));
    }
    println!();
    for (users, calls) in by_operation {
        println!("{users} recipients, calls by operation: {calls:?}");
    }
}
