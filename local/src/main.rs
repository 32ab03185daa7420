use clap::{Parser, Subcommand};
use flare_local::{LocalApp, LocalConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Flare in one process: no AWS account, no Docker.
#[derive(Parser)]
#[command(name = "flare-local", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every /v1 route (and the /local routes) on one address.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// Where settings, users and secrets are kept across restarts.
        #[arg(long, default_value = ".flare-data")]
        data_dir: PathBuf,
    },
    /// Seed a demo organization, fire one of each event and a manual SMS, and print
    /// who was told on which channel, and why not.
    Demo,
    /// Print a JWT that `serve` accepts.
    Token {
        #[arg(long)]
        org: String,
        /// Comma-separated: admin, dispatcher, responder.
        #[arg(long, value_delimiter = ',', default_value = "admin")]
        roles: Vec<String>,
        /// The caller's user id.
        #[arg(long, default_value = "local-user")]
        sub: String,
        #[arg(long, default_value_t = 12)]
        ttl_hours: i64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve { addr, data_dir } => {
            flare_runtime::init_tracing();
            let cfg = LocalConfig::from_env(data_dir)?;
            let app = Arc::new(LocalApp::open(&cfg).await?);
            let listener = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!(addr = %listener.local_addr()?, data_dir = %cfg.data_dir.display(), "flare-local serving");
            flare_local::serve(listener, app, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        }
        Command::Demo => print!("{}", flare_local::demo::run().await?),
        Command::Token {
            org,
            roles,
            sub,
            ttl_hours,
        } => {
            let secret = LocalConfig::from_env(PathBuf::new())?.jwt_secret;
            let roles: Vec<String> = roles.into_iter().map(|r| r.trim().to_string()).collect();
            println!(
                "{}",
                flare_local::token(
                    &secret,
                    &org,
                    &roles,
                    &sub,
                    chrono::Duration::hours(ttl_hours)
                )?
            );
        }
    }
    Ok(())
}
