//! 10,000 user PUTs against the local runner over HTTP, one after another on one
//! keep-alive connection: each is answered after its write is committed to the data
//! directory's database. Prints the rate of the first 100, of each thousand, and of the
//! last 100: a store that rewrote every user on each write (the JSON file before the
//! database) falls with the number of users; this one must not.
//!
//!     cargo bench -p flare-local --bench users [-- 10000]
//!
//! What it does not cover: concurrent writers (the database's writer commits them in
//! groups, so many clients at once go faster per write than one), and disk syncs: a
//! commit reaches the operating system, not the platter, and checkpoints sync apart.

use flare_local::{LocalApp, LocalConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(n));
}

async fn run(n: usize) {
    let dir = std::env::temp_dir().join(format!("flare-bench-users-{}", uuid::Uuid::new_v4()));
    let cfg = LocalConfig::from_env(dir.clone()).unwrap();
    let app = Arc::new(LocalApp::open(&cfg).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(flare_local::serve(listener, app, std::future::pending()));
    let token = flare_local::token(
        &cfg.jwt_secret,
        "bench",
        &["admin".to_string()],
        "u-admin",
        chrono::Duration::hours(1),
    )
    .unwrap();
    let client = flare_tests::http();
    let mut each = Vec::with_capacity(n);
    for i in 0..n {
        let body = serde_json::json!({
            "name": format!("Responder {i}"), "license": "basic_responder", "virtual": false,
            "contacts": [
                {"kind": "mobile", "value": format!("+1415555{:04}", i % 10_000), "primary": true},
                {"kind": "email", "value": format!("u{i}@example.org"), "primary": true}]
        });
        let start = Instant::now();
        let resp = client
            .put(format!("{base}/v1/users/u-{i:06}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "PUT {i}: {}", resp.status());
        resp.bytes().await.unwrap();
        each.push(start.elapsed());
    }
    let rate = |d: &[Duration]| d.len() as f64 / d.iter().sum::<Duration>().as_secs_f64();
    println!("{n} user PUTs, one client, keep-alive:");
    println!("  first 100:     {:7.0} PUTs/s", rate(&each[..100.min(n)]));
    for (k, chunk) in each.chunks(1000).enumerate() {
        println!(
            "  {:>5} to {:>5}: {:7.0} PUTs/s",
            k * 1000 + 1,
            k * 1000 + chunk.len(),
            rate(chunk)
        );
    }
    println!(
        "  last 100:      {:7.0} PUTs/s",
        rate(&each[n.saturating_sub(100)..])
    );
    println!(
        "  last 100 / first 100: {:.2}",
        rate(&each[n.saturating_sub(100)..]) / rate(&each[..100.min(n)])
    );
    let _ = std::fs::remove_dir_all(&dir);
}
