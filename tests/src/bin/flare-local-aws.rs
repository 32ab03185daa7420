//! A local AWS stand-in for `sam local invoke` and `sam local start-api`: the pinned moto
//! server with every resource the functions need (what the tests deploy:
//! [`AwsStack::create`]), and the env file that points each function at it.
//!
//!     flare-local-aws [--port 4566] [--host 0.0.0.0] [--container-host host.docker.internal]
//!                     [--env-file target/local-aws/env.json]
//!
//! Prints the endpoint and the env file, then `ready`, and serves until interrupted
//! (SIGINT or SIGTERM; `scripts/local-aws --stop` sends it by process id). moto stops
//! with it. Nothing here talks to AWS: every client is at the stand-in, with throwaway
//! credentials.

use flare_tests::Moto;
use flare_tests::stack::{AwsStack, DEFAULT_SENDER, SES_CONFIGURATION_SET};
use std::path::PathBuf;

struct Args {
    port: u16,
    host: String,
    container_host: String,
    env_file: PathBuf,
}

fn args() -> anyhow::Result<Args> {
    let root = flare_tests::workspace_root();
    let mut a = Args {
        port: 4566,
        host: "0.0.0.0".into(),
        container_host: "host.docker.internal".into(),
        env_file: root.join("target/local-aws/env.json"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--port" => a.port = value()?.parse()?,
            "--host" => a.host = value()?,
            "--container-host" => a.container_host = value()?,
            "--env-file" => a.env_file = value()?.into(),
            _ => anyhow::bail!(
                "unknown argument {flag}: flare-local-aws [--port N] [--host ADDR] [--container-host HOST] [--env-file PATH]"
            ),
        }
    }
    Ok(a)
}

/// SES as the functions expect it: the default sender's domain verified (moto verifies
/// at once) and the configuration set they name.
async fn ses(stack: &AwsStack) -> anyhow::Result<()> {
    let ses = flare_aws::sesv2(&stack.sdk);
    let domain = DEFAULT_SENDER.rsplit('@').next().unwrap_or_default();
    ses.create_email_identity()
        .email_identity(domain)
        .send()
        .await?;
    ses.create_configuration_set()
        .configuration_set_name(SES_CONFIGURATION_SET)
        .send()
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let moto = Moto::start_on(&a.host, a.port)?;
    let stack = AwsStack::create(&moto).await?;
    ses(&stack).await?;
    let inside = format!("http://{}:{}", a.container_host, a.port);
    let env = stack.function_env(&inside)?;
    if let Some(dir) = a.env_file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.env_file, serde_json::to_string_pretty(&env)? + "\n")?;
    println!(
        "endpoint: {} (listening on {}:{})",
        moto.url, a.host, a.port
    );
    println!("from a container: {inside} (--container-host to change)");
    println!("env file: {}", a.env_file.display());
    println!(
        "functions: {}",
        env.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    println!("ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    // Dropping the server process stops moto. Whoever read the output may be gone.
    drop(moto);
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "stopped");
    Ok(())
}
