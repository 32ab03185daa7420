//! Cold start of each function binary: the time from exec to its first Runtime API poll
//! (`GET /2018-06-01/runtime/invocation/next`), under the test harness's emulator. By
//! then each function has read its configuration, set up tracing and built its AWS
//! clients; nothing else happens before the first event.
//!
//! `cargo bench -p flare-tests --bench startup` (builds the release binaries first).
//! Also prints the size of each stripped arm64 binary `sam build` (or `cargo lambda
//! build --release --arm64`) left in `target/lambda/`, when there is one.

use flare_tests::runtime::{self, LambdaProcess};
use flare_tests::workspace_root;
use std::time::Duration;

/// Cold starts per function, unless a number is given.
const RUNS: usize = 30;

/// A value for each variable template.yaml gives the functions. Nothing is called
/// before the first event, so nothing needs to exist.
fn value(name: &str) -> String {
    match name {
        n if n.ends_with("_QUEUE_URL") => {
            format!("https://sqs.us-east-1.amazonaws.com/123456789012/{n}")
        }
        n if n.starts_with("FLARE_SNS_APP_") => {
            format!("arn:aws:sns:us-east-1:123456789012:app/GCM/{n}")
        }
        "FLARE_DEFAULT_SENDER" => "alerts@flare.example".into(),
        "FLARE_MAX_RECEIVES" => "5".into(),
        "FLARE_SNS_SMS_PER_SECOND" => "20".into(),
        "FLARE_PUBLIC_URL" => "https://api.flare.example".into(),
        "FLARE_AUDIT_RETENTION_DAYS" => "400".into(),
        // Empty as deployed: the SDK resolves each service's endpoint itself.
        "FLARE_AWS_ENDPOINT_URL" => String::new(),
        n => n.to_lowercase(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(RUNS)
        .max(1);
    // `--deployed`: the arm64 binaries `scripts/build-lambdas` left, under qemu (the
    // test command's smoke run: nothing to build); else native release builds.
    let deployed = std::env::args().any(|a| a == "--deployed");
    let binary = |name: &str| -> anyhow::Result<runtime::Binary> {
        Ok(if deployed {
            runtime::deployed_binaries()?.binary(name)
        } else {
            runtime::Binary::native(&runtime::release_binaries()?.join(name))
        })
    };
    let template = runtime::template_env()?;
    let machine = if deployed {
        "arm64 under qemu"
    } else {
        "this machine, x86_64"
    };
    println!("exec to first Runtime API poll, {runs} cold starts each ({machine}):");
    println!(
        "{:<14} {:>8} {:>8} {:>8} {:>8}",
        "function", "min", "median", "p90", "max"
    );
    for name in runtime::FUNCTIONS {
        let mut env: Vec<(String, String)> = template[name]
            .iter()
            .map(|n| (n.clone(), value(n)))
            .collect();
        env.extend(
            [
                ("AWS_REGION", "us-east-1"),
                ("AWS_ACCESS_KEY_ID", "bench"),
                ("AWS_SECRET_ACCESS_KEY", "bench"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let mut times: Vec<Duration> = Vec::with_capacity(runs);
        for _ in 0..runs {
            let f = LambdaProcess::start(&binary(name)?, &env).await?;
            times.push(f.ready().await?);
        }
        times.sort();
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        println!(
            "{:<14} {:>8} {:>8} {:>8} {:>8}",
            name,
            ms(times[0]),
            ms(times[runs / 2]),
            ms(times[runs * 9 / 10]),
            ms(times[runs - 1])
        );
    }

    let lambda = workspace_root().join("target/lambda");
    println!("\nstripped arm64 binaries in {}:", lambda.display());
    for name in runtime::FUNCTIONS {
        let path = lambda.join(name).join("bootstrap");
        match std::fs::metadata(&path) {
            Ok(m) => println!(
                "{name:<14} {:>6.2} MB ({} bytes)",
                m.len() as f64 / 1e6,
                m.len()
            ),
            Err(_) => println!("{name:<14} not built (scripts/build-lambdas builds it)"),
        }
    }
    Ok(())
}
