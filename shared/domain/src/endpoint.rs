//! Where custom providers live: an HTTP SMS gateway URL and an SMTP server, and the
//! policy on which addresses they may point at.

use super::validation::{FieldErrors, ValidationError, no_line_breaks};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};

/// Whether custom endpoints may be private (loopback, RFC 1918, link-local, ...).
/// Off in AWS, so a tenant cannot aim Flare at the VPC or the metadata service;
/// the local runner and tests turn it on (binaries read it with
/// `flare_runtime::endpoint_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EndpointPolicy {
    pub allow_private: bool,
}

impl EndpointPolicy {
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip)
    }
}

/// True when an address is a routable public one. Mapped and translated IPv6 forms of
/// IPv4 addresses are judged by the IPv4 address inside them.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            // 64:ff9b::/96, NAT64: the last 32 bits are an IPv4 address.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return is_public_v4(Ipv4Addr::new(a, b, c, d));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated) fec0::/10
                || (s[0] == 0 && s[1..6] == [0; 5] && s[6] != 0xffff) // IPv4-compatible ::a.b.c.d
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254, the metadata service
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

/// The URL of a custom HTTP SMS gateway: https, or http where private endpoints are
/// allowed; no credentials in the URL (they belong in username and password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GatewayUrl(url::Url);

impl GatewayUrl {
    pub fn parse(s: &str, policy: EndpointPolicy) -> Result<Self, ValidationError> {
        // The limit is on what is typed (as the API description says). What is stored is
        // the normalised URL, which percent-encoding can make longer: reading it back
        // does not check the length again, or a saved URL could fail to read back.
        if s.chars().count() > 2048 {
            return Err(ValidationError::new("must be at most 2048 characters"));
        }
        let u = Self::parse_shape(s)?;
        match u.0.scheme() {
            "https" => {}
            "http" if policy.allow_private => {}
            "http" => {
                return Err(ValidationError::new(
                    "must use https (plain http only where private endpoints are allowed)",
                ));
            }
            _ => return Err(ValidationError::new("must be an https URL")),
        }
        if let Some(ip) = u.literal_ip()
            && !policy.allows(ip)
        {
            return Err(ValidationError::new(
                "must not point at a loopback, private, link-local or metadata address",
            ));
        }
        Ok(u)
    }

    /// Shape only (used when reading back stored settings, whose policy was checked on save).
    fn parse_shape(s: &str) -> Result<Self, ValidationError> {
        no_line_breaks(s)?;
        let u = url::Url::parse(s.trim())
            .map_err(|e| ValidationError::new(format!("is not a URL ({e})")))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(ValidationError::new("must be an https URL"));
        }
        if u.host().is_none() {
            return Err(ValidationError::new("must have a host"));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(ValidationError::new(
                "must not contain credentials; use username and password",
            ));
        }
        Ok(Self(u))
    }

    /// The host when it is an IP address (the `url` crate already normalised decimal,
    /// octal and hex spellings such as `2130706433` or `0x7f.1`).
    pub fn literal_ip(&self) -> Option<IpAddr> {
        match self.0.host()? {
            url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
            url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
            url::Host::Domain(_) => None,
        }
    }

    pub fn url(&self) -> &url::Url {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl TryFrom<String> for GatewayUrl {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse_shape(&s)
    }
}

impl From<GatewayUrl> for String {
    fn from(v: GatewayUrl) -> String {
        v.0.into()
    }
}

/// How an SMTP session is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// TLS from the first byte (`smtps://` or port 465).
    ImplicitTls,
    /// Plain connection upgraded with STARTTLS; refusing to go on without it.
    StartTls,
    /// No encryption: only where private endpoints are allowed.
    Plain,
}

/// An SMTP server as configured: `server_url` (a host, `smtp://host` or `smtps://host`),
/// `port` and `use_tls`, kept as typed so the stored view answers what was put.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpServer {
    pub server_url: String,
    pub host: String,
    pub port: u16,
    pub use_tls: bool,
}

impl SmtpServer {
    pub const IMPLICIT_TLS_PORT: u16 = 465;

    /// Validates the three fields together; errors are keyed `server_url`, `port`, `use_tls`.
    pub fn parse(
        server_url: &str,
        port: i64,
        use_tls: bool,
        policy: EndpointPolicy,
    ) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        let server_url = server_url.trim();
        if server_url.chars().count() > 253 {
            errors.add("server_url", "must be at most 253 characters");
        }
        let (scheme, rest) = match server_url.split_once("://") {
            Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
            None => (None, server_url),
        };
        let mut host = String::new();
        match scheme.as_deref() {
            None | Some("smtp") | Some("smtps") => {
                let rest = rest.trim_end_matches('/');
                // A bracketed IPv6 literal has colons; anything else with one carries a port.
                let shaped = rest.starts_with('[')
                    || (!rest.is_empty() && !rest.contains([':', '/', '@', '?', '#', ' ']));
                match url::Host::parse(rest) {
                    Ok(h) if shaped => {
                        if let Some(ip) = host_ip(&h)
                            && !policy.allows(ip)
                        {
                            errors.add(
                                "server_url",
                                "must not point at a loopback, private, link-local or metadata address",
                            );
                        }
                        host = h.to_string();
                    }
                    _ => errors.add(
                        "server_url",
                        "must be a host name, smtp://host or smtps://host (the port is a separate field)",
                    ),
                }
            }
            Some(_) => errors.add("server_url", "scheme must be smtp:// or smtps://"),
        }
        let port = match u16::try_from(port) {
            Ok(p) if p > 0 => p,
            _ => {
                errors.add("port", "must be between 1 and 65535");
                0
            }
        };
        if scheme.as_deref() == Some("smtps") && !use_tls {
            errors.add(
                "use_tls",
                "smtps:// is always encrypted: set use_tls to true",
            );
        }
        if !use_tls && !policy.allow_private {
            errors.add(
                "use_tls",
                "an unencrypted SMTP session is allowed only where private endpoints are allowed",
            );
        }
        let server_url = server_url.to_string();
        errors.finish(|| Self {
            server_url,
            host,
            port,
            use_tls,
        })
    }

    pub fn security(&self) -> SmtpSecurity {
        if !self.use_tls {
            SmtpSecurity::Plain
        } else if self.server_url.to_ascii_lowercase().starts_with("smtps://")
            || self.port == Self::IMPLICIT_TLS_PORT
        {
            SmtpSecurity::ImplicitTls
        } else {
            SmtpSecurity::StartTls
        }
    }
}

fn host_ip(h: &url::Host) -> Option<IpAddr> {
    match h {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(*v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(*v6)),
        url::Host::Domain(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWS: EndpointPolicy = EndpointPolicy {
        allow_private: false,
    };
    const LOCAL: EndpointPolicy = EndpointPolicy {
        allow_private: true,
    };

    /// schemathesis found it once settings were stored as JSON: a URL under 2048
    /// characters as typed grew past it when percent-encoded, was saved, and could not
    /// be read back (every settings read of the organization answered 500).
    #[test]
    fn a_saved_url_always_reads_back() {
        let typed = format!("https://gw.example/{}", "é".repeat(2000));
        assert!(typed.chars().count() <= 2048);
        let saved = GatewayUrl::parse(&typed, LOCAL).unwrap();
        assert!(saved.as_str().len() > 2048, "percent-encoded");
        let back: GatewayUrl =
            serde_json::from_str(&serde_json::to_string(&saved).unwrap()).unwrap();
        assert_eq!(back, saved);
        let too_long = format!("https://gw.example/{}", "a".repeat(2048));
        assert!(GatewayUrl::parse(&too_long, LOCAL).is_err());
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} counted as public");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip} counted as private");
        }
    }

    #[test]
    fn gateway_urls_need_https_unless_private_endpoints_are_allowed() {
        assert!(GatewayUrl::parse("https://sms.example.com/send", AWS).is_ok());
        assert!(GatewayUrl::parse("http://sms.example.com/send", AWS).is_err());
        assert!(GatewayUrl::parse("http://127.0.0.1:8081/send", LOCAL).is_ok());
        assert!(GatewayUrl::parse("ftp://sms.example.com", LOCAL).is_err());
        assert!(GatewayUrl::parse("https://user:pw@sms.example.com", AWS).is_err());
    }

    #[test]
    fn literal_private_gateway_hosts_are_refused_in_every_spelling() {
        for url in [
            "https://127.0.0.1/send",
            "https://10.0.0.1/send",
            "https://169.254.169.254/latest",
            "https://[::1]/send",
            "https://[::ffff:127.0.0.1]/send",
            "https://2130706433/send",
            "https://0x7f.1/send",
            "https://0177.0.0.1/send",
        ] {
            assert!(GatewayUrl::parse(url, AWS).is_err(), "{url} accepted");
            assert!(
                GatewayUrl::parse(url, LOCAL).is_ok(),
                "{url} refused locally"
            );
        }
    }

    #[test]
    fn smtp_security_follows_use_tls_scheme_and_port() {
        let s = SmtpServer::parse("smtp.acme.example", 587, true, AWS).unwrap();
        assert_eq!(s.security(), SmtpSecurity::StartTls);
        assert_eq!(s.host, "smtp.acme.example");
        let s = SmtpServer::parse("smtp.acme.example", 465, true, AWS).unwrap();
        assert_eq!(s.security(), SmtpSecurity::ImplicitTls);
        let s = SmtpServer::parse("smtps://smtp.acme.example", 2465, true, AWS).unwrap();
        assert_eq!(s.security(), SmtpSecurity::ImplicitTls);
        let s = SmtpServer::parse("smtp://127.0.0.1", 2525, false, LOCAL).unwrap();
        assert_eq!(s.security(), SmtpSecurity::Plain);
    }

    #[test]
    fn smtp_errors_name_every_bad_field() {
        let err = SmtpServer::parse("https://smtp.acme.example", 70000, false, AWS).unwrap_err();
        assert!(err.contains("server_url"));
        assert!(err.contains("port"));
        assert!(err.contains("use_tls"));
        assert!(SmtpServer::parse("smtp.acme.example:587", 587, true, AWS).is_err());
        assert!(SmtpServer::parse("", 587, true, AWS).is_err());
        assert!(SmtpServer::parse("smtps://smtp.acme.example", 465, false, LOCAL).is_err());
        assert!(SmtpServer::parse("10.1.2.3", 587, true, AWS).is_err());
    }
}
