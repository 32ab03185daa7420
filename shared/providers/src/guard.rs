//! The SSRF guard: resolve once, check every address, connect to a checked one.

use flare_shared::domain::EndpointPolicy;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The host is, or resolves to, an address the policy refuses.
    #[error("endpoint_not_allowed: {host} resolves to a refused address")]
    NotAllowed { host: String },
    #[error("cannot resolve {host}")]
    Unresolvable {
        host: String,
        #[source]
        source: std::io::Error,
    },
}

/// Resolves `host` (a name or an IP literal) and answers its addresses, refusing when
/// any of them is not allowed: one refused address is enough to refuse the host, so DNS
/// answers mixing public and private addresses cannot slip through.
pub async fn resolve_checked(
    host: &str,
    port: u16,
    policy: EndpointPolicy,
) -> Result<Vec<SocketAddr>, GuardError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|source| GuardError::Unresolvable {
                host: host.to_string(),
                source,
            })?
            .collect(),
    };
    if addrs.is_empty() || addrs.iter().any(|a| !policy.allows(a.ip())) {
        return Err(GuardError::NotAllowed {
            host: host.to_string(),
        });
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWS: EndpointPolicy = EndpointPolicy {
        allow_private: false,
    };

    #[tokio::test]
    async fn loopback_names_and_literals_are_refused_in_aws_mode() {
        for host in [
            "127.0.0.1",
            "localhost",
            "[::1]",
            "::ffff:127.0.0.1",
            "10.0.0.1",
            "169.254.169.254",
        ] {
            assert!(
                matches!(
                    resolve_checked(host, 443, AWS).await,
                    Err(GuardError::NotAllowed { .. })
                ),
                "{host} allowed"
            );
        }
        let local = EndpointPolicy {
            allow_private: true,
        };
        assert!(resolve_checked("localhost", 443, local).await.is_ok());
    }
}
