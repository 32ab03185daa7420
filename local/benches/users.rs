//! 10,000 user PUTs against the local runner over HTTP, one after another on one
//! keep-alive connection: each is answered after its write is committed to the data
//! directory's database. Prints the median time of a PUT (and the slowest, and the rate)
//! for the first 100, each thousand and the last 100: a store that rewrote every user on each write (the JSON file before the
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
    // Warm-up (the connection, prepared statements, and the phone number library's
    // metadata, which its first parse loads in about 100 ms): one user, written again
    // and again, so the store still holds one user when the count starts.
    for _ in 0..200 {
        let resp = client
            .put(format!("{base}/v1/users/u-warmup"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"name": "Warm-up", "license": "basic_responder", "virtual": false,
                "contacts": [{"kind": "mobile", "value": "+14155550000", "primary": true}]}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "warm-up: {}", resp.status());
        resp.bytes().await.unwrap();
    }
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
    // Medians, with the rate and the slowest: one slow write (a checkpoint's disk sync
    // landing in the window) would decide a rate over 100 writes on its own.
    let stats = |d: &[Duration]| {
        let mut v = d.to_vec();
        v.sort();
        let rate = v.len() as f64 / v.iter().sum::<Duration>().as_secs_f64();
        (v[v.len() / 2], v[v.len() - 1], rate)
    };
    let line = |what: String, d: &[Duration]| {
        let (median, max, rate) = stats(d);
        println!(
            "  {what:<16} median {:6.0} µs, slowest {:8.0} µs, {rate:6.0} PUTs/s",
            median.as_secs_f64() * 1e6,
            max.as_secs_f64() * 1e6
        );
    };
    println!("{n} user PUTs, one client, keep-alive:");
    line("first 100".into(), &each[..100.min(n)]);
    for (k, chunk) in each.chunks(1000).enumerate() {
        line(
            format!("{} to {}", k * 1000 + 1, k * 1000 + chunk.len()),
            chunk,
        );
    }
    let last = &each[n.saturating_sub(100)..];
    line("last 100".into(), last);
    println!(
        "  median of the last 100 / median of the first 100: {:.2}",
        stats(last).0.as_secs_f64() / stats(&each[..100.min(n)]).0.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
