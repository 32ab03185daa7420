//! The fault-injection scenario at benchmark size on moto: `cargo bench -p flare-tests
//! --bench faults` (1,000 recipients, one route page; `FLARE_BENCH_RECIPIENTS` for
//! another size). Not more by default: on moto a later page does not finish (see
//! docs/benchmarks.md, "Fault injection").
//! Prints the report as JSON: outcomes, faults injected, provider calls per
//! (recipient, channel), elapsed time.
//!
//! `cargo bench -p flare-tests --bench faults -- --escalation`: the escalation scenario
//! instead (3,000 silent responders in pages of 250, two cycles 20 s apart; the same
//! variable sets the size, a multiple of 4).

#[path = "../tests/support/deployment.rs"]
mod deployment;
#[path = "../tests/support/escalation.rs"]
mod escalation;
#[path = "../tests/support/faults.rs"]
mod scenario;

fn main() {
    let escalating = std::env::args().any(|a| a == "--escalation");
    let n: Option<usize> = std::env::var("FLARE_BENCH_RECIPIENTS")
        .ok()
        .and_then(|v| v.parse().ok());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a runtime");
    let report = if escalating {
        let size = escalation::Size {
            recipients: n.unwrap_or(3000),
            page: 250,
            after_seconds: 20,
            cycles: 2,
        };
        let r = rt
            .block_on(escalation::run(size))
            .expect("the scenario ran");
        serde_json::to_value(r)
    } else {
        let r = rt
            .block_on(scenario::run(n.unwrap_or(1000)))
            .expect("the scenario ran");
        serde_json::to_value(r)
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&report.expect("json")).expect("json")
    );
}
