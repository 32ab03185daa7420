use anyhow::Context;
use clap::{Parser, Subcommand};
use flare_local::{LocalApp, LocalConfig};
use std::path::PathBuf;
use std::sync::Arc;

const ENVIRONMENT: &str = "\
Environment:
  FLARE_LOCAL_JWT_SECRET         the HS256 secret `serve` checks tokens with and `token`
                                 signs with (default: flare-local-dev)
  FLARE_DEFAULT_SENDER           the address email goes from when an organization has
                                 no email settings (default: flare@flare.localhost)
  FLARE_ALLOW_PRIVATE_ENDPOINTS  `true` (the default here) lets SMS gateways and SMTP
                                 servers be on private or loopback addresses; `false`
                                 refuses them, as in AWS
  FLARE_SMTP_EXTRA_CA            a PEM file of a private CA to trust for SMTP servers
  FLARE_PUBLIC_URL               the address response links in dispatch SMS and email
                                 point to (default: the address `serve` listens on)
  RUST_LOG                       log filter (default: info), e.g. flare_shared=debug";

/// Flare in one process: no AWS account, no Docker.
#[derive(Parser)]
#[command(name = "flare-local", version, after_help = ENVIRONMENT)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every /v1 route (and the /local routes) on one address.
    #[command(after_help = ENVIRONMENT)]
    Serve {
        /// The address to listen on: host:port (`localhost:8081`, `0.0.0.0:8080`).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        /// Where the database (settings, users, secrets, notifications) is kept across
        /// restarts.
        #[arg(long, default_value = ".flare-data")]
        data_dir: PathBuf,
    },
    /// Seed a demo organization, fire one of each event and a manual SMS, and print
    /// who was told on which channel, and why not.
    Demo,
    /// Print a JWT that `serve` accepts (signed with FLARE_LOCAL_JWT_SECRET).
    #[command(after_help = ENVIRONMENT)]
    Token {
        /// The organization the token is for (its `org_id` claim).
        #[arg(long)]
        org: String,
        /// Comma-separated roles.
        #[arg(long, value_delimiter = ',', default_value = "admin",
              value_parser = ["admin", "dispatcher", "responder"])]
        roles: Vec<String>,
        /// The caller's user id (its `sub` claim).
        #[arg(long, default_value = "local-user")]
        sub: String,
        /// How long the token is valid, in hours.
        #[arg(long, default_value_t = 12)]
        ttl_hours: i64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve { addr, data_dir } => {
            flare_runtime::init_tracing();
            let mut cfg = LocalConfig::from_env(data_dir)?;
            // One address, IPv4 first (`localhost` is then 127.0.0.1, as curl tries it):
            // a busy port is an error, never a quiet fall-through to another address.
            let resolved: Vec<std::net::SocketAddr> = tokio::net::lookup_host(&addr)
                .await
                .with_context(|| format!("--addr {addr}: not a host:port this machine resolves"))?
                .collect();
            let bind_to = resolved
                .iter()
                .find(|a| a.is_ipv4())
                .or(resolved.first())
                .copied()
                .with_context(|| format!("--addr {addr} resolves to no address"))?;
            let listener = match tokio::net::TcpListener::bind(bind_to).await {
                Ok(l) => l,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
                    "{addr} is already in use (another flare-local?): stop it, or pick another address with --addr, e.g. --addr 127.0.0.1:8081"
                ),
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!("listening on {addr}")));
                }
            };
            // Response links point here unless FLARE_PUBLIC_URL says otherwise.
            if cfg.public_url.is_none() {
                cfg.public_url = Some(format!("http://{}", listener.local_addr()?));
            }
            let app = Arc::new(LocalApp::open(&cfg).await?);
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
