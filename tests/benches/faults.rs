//! The fault-injection scenario at benchmark size on moto: `cargo bench -p flare-tests
//! --bench faults` (2,000 recipients; `FLARE_BENCH_RECIPIENTS` for another size).
//! Prints the report as JSON: outcomes, faults injected, provider calls per
//! (recipient, channel), elapsed time.

#[path = "../tests/support/faults.rs"]
mod scenario;

fn main() {
    let n: usize = std::env::var("FLARE_BENCH_RECIPIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a runtime");
    let report = rt.block_on(scenario::run(n)).expect("the scenario ran");
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
}
