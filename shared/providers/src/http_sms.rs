//! The custom HTTP SMS gateway: `json`, `form` or `twilio` requests with HTTP Basic
//! auth, the configured header, and the sender number as `from`.
//!
//! Names resolve through the SSRF guard and reqwest connects to the checked addresses;
//! literal IP hosts (which skip resolution) are checked before the request; redirects
//! are never followed; connect and total timeouts bound a hung gateway.

use super::guard::{GuardError, resolve_checked};
use async_trait::async_trait;
use flare_shared::domain::{
    EndpointPolicy, FailReason, GatewayFormat, HttpGateway, Provider, SmsProvider, SmsSettings,
};
use flare_shared::ports::{
    Receipt, SecretKey, SecretStore, SendError, SettingsStore, SmsMessage, SmsSender,
};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::Duration;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a gateway's refusal is quoted in the failure reason.
pub const REASON_EXCERPT: usize = 200;

pub struct HttpSmsSender {
    settings: Arc<dyn SettingsStore>,
    secrets: Arc<dyn SecretStore>,
    client: reqwest::Client,
    policy: EndpointPolicy,
}

/// reqwest's resolver: every name goes through the guard.
struct GuardResolver(EndpointPolicy);

impl reqwest::dns::Resolve for GuardResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = resolve_checked(&host, 0, policy).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// TLS with the same crypto provider the AWS SDK uses, and the web PKI roots.
fn tls_config() -> anyhow::Result<rustls::ClientConfig> {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

impl HttpSmsSender {
    /// `secrets` should be a [`flare_shared::secrets_cache::CachedSecrets`] in a delivery function.
    pub fn new(
        settings: Arc<dyn SettingsStore>,
        secrets: Arc<dyn SecretStore>,
        policy: EndpointPolicy,
    ) -> anyhow::Result<Self> {
        Self::with_timeouts(settings, secrets, policy, CONNECT_TIMEOUT, TOTAL_TIMEOUT)
    }

    pub fn with_timeouts(
        settings: Arc<dyn SettingsStore>,
        secrets: Arc<dyn SecretStore>,
        policy: EndpointPolicy,
        connect: Duration,
        total: Duration,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config()?)
            .dns_resolver(Arc::new(GuardResolver(policy)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(connect)
            .timeout(total)
            .user_agent("flare-sms/1")
            .build()?;
        Ok(Self {
            settings,
            secrets,
            client,
            policy,
        })
    }
}

fn not_allowed() -> SendError {
    SendError::permanent(FailReason::EndpointNotAllowed)
}

/// The gateway's own id for the message, when its JSON answer has one.
/// A 429's `Retry-After`: whole seconds, or an HTTP date; 1 s when it says neither, and
/// at most a minute (a gateway's "come back tomorrow" is not a pace).
fn retry_after(v: Option<&reqwest::header::HeaderValue>) -> std::time::Duration {
    let max = std::time::Duration::from_secs(60);
    let text = v.and_then(|v| v.to_str().ok()).map(str::trim).unwrap_or("");
    if let Ok(secs) = text.parse::<u64>() {
        return std::time::Duration::from_secs(secs).min(max);
    }
    if let Ok(at) = chrono::DateTime::parse_from_rfc2822(text) {
        let left = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
        return left.to_std().unwrap_or_default().min(max);
    }
    std::time::Duration::from_secs(1)
}

fn message_id(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    ["id", "sid", "message_id", "messageId", "MessageId"]
        .iter()
        .find_map(|k| match &v[*k] {
            serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

/// What of a gateway's answer may show a secret: each secret as sent, and the Basic
/// credentials (`user:password`, and the password alone) in their base64 form.
fn secret_forms(
    user: Option<&str>,
    password: Option<&str>,
    header_value: Option<&str>,
) -> Vec<String> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut forms: Vec<String> = [password, header_value]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(p) = password.filter(|p| !p.is_empty()) {
        forms.push(b64(&format!("{}:{p}", user.unwrap_or_default())));
        forms.push(b64(p));
    }
    // Longest first, so a secret that contains another is masked whole.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms
}

/// A short, single-line excerpt with every secret masked. Masked before it is cut: a
/// cut first could end inside a secret and leave its prefix, which no longer matches.
/// Only the start of the answer is read, so a huge answer costs nothing.
fn excerpt(body: &str, secrets: &[String]) -> String {
    let window = REASON_EXCERPT * 8 + secrets.iter().map(String::len).max().unwrap_or(0);
    let mut s: String = body.chars().take(window).collect();
    for secret in secrets {
        s = s.replace(secret.as_str(), "****");
    }
    let s: String = s.chars().take(REASON_EXCERPT).collect();
    s.replace(['\r', '\n'], " ").trim().to_string()
}

fn classify(e: reqwest::Error) -> SendError {
    let mut src: Option<&dyn std::error::Error> = Some(&e);
    while let Some(s) = src {
        if let Some(GuardError::NotAllowed { .. }) = s.downcast_ref::<GuardError>() {
            return SendError::permanent(FailReason::EndpointNotAllowed).with_source(e);
        }
        src = s.source();
    }
    let reason = if e.is_timeout() {
        FailReason::GatewayTimeout
    } else if e.is_connect() {
        FailReason::GatewayUnreachable
    } else {
        FailReason::GatewayError
    };
    SendError::transient(reason).with_source(e)
}

/// The header carrying the delivery's id (the name Stripe and the IETF draft use).
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// The gateway's secrets for one send, as the settings' secrets revision holds them.
struct GatewaySecrets {
    password: Option<SecretString>,
    header_value: Option<SecretString>,
}

fn settings_unavailable(e: flare_shared::ports::StoreError) -> SendError {
    SendError::transient(FailReason::SettingsUnavailable).with_source(e)
}

impl HttpSmsSender {
    /// The caller's read when it made one for this control center; else our own.
    async fn settings_for(&self, m: &SmsMessage) -> Result<SmsSettings, SendError> {
        match &m.settings {
            Some(s) if s.control_center_id == m.control_center_id => Ok(s.clone()),
            _ => self
                .settings
                .get_sms(&m.org_id, &m.control_center_id)
                .await
                .map_err(settings_unavailable)?
                .ok_or_else(|| SendError::permanent(FailReason::SmsNotConfigured)),
        }
    }

    /// Refuses a gateway the policy does not allow before any connection: plain HTTP
    /// only where private endpoints are, and a literal IP host here, as it skips the
    /// guarded resolver.
    fn check_endpoint(&self, gw: &HttpGateway) -> Result<(), SendError> {
        if gw.url.url().scheme() != "https" && !self.policy.allow_private {
            return Err(not_allowed());
        }
        if let Some(ip) = gw.url.literal_ip()
            && !self.policy.allows(ip)
        {
            return Err(not_allowed());
        }
        Ok(())
    }

    /// The password and (when the gateway names a header) the header value. Settings
    /// that name a secret their revision no longer holds were replaced by a save during
    /// this send: try again with the new ones, never send without it.
    async fn gateway_secrets(
        &self,
        m: &SmsMessage,
        settings: &SmsSettings,
        gw: &HttpGateway,
    ) -> Result<GatewaySecrets, SendError> {
        let (org, cc, at) = (&m.org_id, &settings.control_center_id, &settings.secrets_at);
        let password = self
            .secrets
            .get(&SecretKey::SmsPassword(org.clone(), cc.clone(), at.clone()))
            .await
            .map_err(settings_unavailable)?;
        let header_value = match &gw.header_name {
            Some(_) => self
                .secrets
                .get(&SecretKey::SmsHeaderValue(
                    org.clone(),
                    cc.clone(),
                    at.clone(),
                ))
                .await
                .map_err(settings_unavailable)?,
            None => None,
        };
        if (settings.password_set && password.is_none())
            || (gw.header_name.is_some() && header_value.is_none())
        {
            return Err(SendError::transient(FailReason::SettingsUnavailable));
        }
        Ok(GatewaySecrets {
            password,
            header_value,
        })
    }

    /// The request in the gateway's format, with its credentials, its header and the
    /// delivery's id.
    fn request(
        &self,
        m: &SmsMessage,
        settings: &SmsSettings,
        gw: &HttpGateway,
        secrets: &GatewaySecrets,
    ) -> Result<reqwest::RequestBuilder, SendError> {
        let from = m
            .from
            .clone()
            .or_else(|| settings.sender_number.clone())
            .map(|f| f.to_string())
            .unwrap_or_default();
        let (to, text) = (m.to.as_str(), m.text.as_str());
        let req = self.client.post(gw.url.url().clone());
        let mut req = match gw.format {
            GatewayFormat::Json => {
                req.json(&serde_json::json!({"to": to, "from": from, "text": text}))
            }
            GatewayFormat::Form => req.form(&[("to", to), ("from", &from), ("text", text)]),
            GatewayFormat::Twilio => req.form(&[("To", to), ("From", &from), ("Body", text)]),
        };
        if let Some(user) = &gw.username {
            let password = secrets.password.as_ref().map(|p| p.expose_secret());
            req = req.basic_auth(user, password);
        }
        req = with_gateway_header(req, gw, secrets.header_value.as_ref())?;
        Ok(with_idempotency_key(req, gw, m.delivery_id.as_deref()))
    }
}

/// The organization's header, its value marked sensitive (kept out of logs).
fn with_gateway_header(
    req: reqwest::RequestBuilder,
    gw: &HttpGateway,
    header_value: Option<&SecretString>,
) -> Result<reqwest::RequestBuilder, SendError> {
    match (&gw.header_name, header_value) {
        // Sending without the header would only be refused by the gateway.
        (Some(_), None) => Err(SendError::permanent(FailReason::HeaderValueMissing)),
        (Some(name), Some(value)) => {
            let mut v = reqwest::header::HeaderValue::from_str(value.expose_secret())
                .map_err(|_| SendError::permanent(FailReason::BadHeaderValue))?;
            v.set_sensitive(true);
            Ok(req.header(name.as_str(), v))
        }
        (None, _) => Ok(req),
    }
}

/// The delivery's id, the same on every attempt: a gateway that dedupes on it drops a
/// repeat sent after a crash between its answer and Flare's record of it. The
/// organization's own header wins if it has this name.
fn with_idempotency_key(
    req: reqwest::RequestBuilder,
    gw: &HttpGateway,
    delivery_id: Option<&str>,
) -> reqwest::RequestBuilder {
    let own = gw
        .header_name
        .as_ref()
        .is_some_and(|n| n.as_str().eq_ignore_ascii_case(IDEMPOTENCY_HEADER));
    match delivery_id {
        Some(id) if !own => req.header(IDEMPOTENCY_HEADER, id),
        _ => req,
    }
}

/// What the gateway's answer (other than a 429) means, its refusals quoted with every
/// secret masked.
fn answer(
    status: reqwest::StatusCode,
    body: &str,
    secrets: &[String],
) -> Result<Receipt, SendError> {
    match status.as_u16() {
        200..=299 => Ok(Receipt {
            provider: Provider::Http,
            provider_message_id: message_id(body),
        }),
        300..=399 => {
            Err(SendError::permanent(FailReason::GatewayRedirected).with_detail(status.to_string()))
        }
        429 | 500..=599 => Err(SendError::transient(FailReason::GatewayStatus)
            .with_detail(status.as_u16().to_string())),
        // Refusals of every request, not of this message: they count toward the
        // gateway's circuit.
        401 | 403 | 404 | 405 | 407 | 410 => Err(SendError::permanent(
            FailReason::GatewayMisconfigured,
        )
        .with_detail(format!("{} {}", status.as_u16(), excerpt(body, secrets)))),
        code => Err(SendError::permanent(FailReason::GatewayRejected)
            .with_detail(format!("{code} {}", excerpt(body, secrets)))),
    }
}

#[async_trait]
impl SmsSender for HttpSmsSender {
    async fn send(&self, m: &SmsMessage) -> Result<Receipt, SendError> {
        let settings = self.settings_for(m).await?;
        let SmsProvider::Http(gw) = &settings.provider else {
            return Err(SendError::permanent(FailReason::ProviderChanged));
        };
        self.check_endpoint(gw)?;
        let secrets = self.gateway_secrets(m, &settings, gw).await?;
        let req = self.request(m, &settings, gw, &secrets)?;
        let resp = req.send().await.map_err(classify)?;
        let status = resp.status();
        if status.as_u16() == 429 {
            let wait = retry_after(resp.headers().get(reqwest::header::RETRY_AFTER));
            return Err(SendError::throttled(FailReason::GatewayStatus, wait).with_detail("429"));
        }
        let body = resp.text().await.unwrap_or_default();
        let masked = secret_forms(
            gw.username.as_deref(),
            secrets.password.as_ref().map(|p| p.expose_secret()),
            secrets.header_value.as_ref().map(|v| v.expose_secret()),
        );
        answer(status, &body, &masked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_a_date_and_bounded() {
        use reqwest::header::HeaderValue;
        let s = |v: &str| retry_after(Some(&HeaderValue::from_str(v).unwrap()));
        assert_eq!(s("2"), std::time::Duration::from_secs(2));
        assert_eq!(s("86400"), std::time::Duration::from_secs(60));
        assert_eq!(s("soon"), std::time::Duration::from_secs(1));
        assert_eq!(retry_after(None), std::time::Duration::from_secs(1));
        let later = (chrono::Utc::now() + chrono::TimeDelta::seconds(5)).to_rfc2822();
        assert!(s(&later) <= std::time::Duration::from_secs(5));
        assert_eq!(
            s("Wed, 21 Oct 2015 07:28:00 GMT"),
            std::time::Duration::ZERO
        );
    }

    #[test]
    fn answers_are_receipts_retries_or_refusals_by_status() {
        let status = |c| reqwest::StatusCode::from_u16(c).unwrap();
        let secrets = secret_forms(None, None, Some("abc123"));
        let ok = answer(status(202), r#"{"id": "m-1"}"#, &secrets).unwrap();
        assert_eq!(ok.provider, Provider::Http);
        assert_eq!(ok.provider_message_id.as_deref(), Some("m-1"));
        let reason = |c, body| answer(status(c), body, &secrets).unwrap_err().to_string();
        let is_transient = |c| {
            matches!(
                answer(status(c), "", &secrets),
                Err(SendError::Transient { .. })
            )
        };
        assert!(is_transient(503) && is_transient(429) && !is_transient(400));
        assert!(reason(301, "").contains("301 Moved Permanently"));
        let refused = reason(401, "bad key abc123");
        assert!(refused.contains("401 bad key ****"), "{refused}");
        let rejected = reason(400, "bad number");
        assert!(rejected.contains("400 bad number"), "{rejected}");
    }

    #[test]
    fn message_ids_are_found_under_the_usual_names() {
        assert_eq!(message_id(r#"{"id": "m-1"}"#).as_deref(), Some("m-1"));
        assert_eq!(message_id(r#"{"sid": "SM123"}"#).as_deref(), Some("SM123"));
        assert_eq!(message_id(r#"{"message_id": 42}"#).as_deref(), Some("42"));
        assert_eq!(message_id("OK"), None);
    }

    #[test]
    fn refusal_excerpts_are_short_one_line_and_never_quote_a_secret() {
        let body = format!("bad key abc123\r\n{}", "x".repeat(500));
        let e = excerpt(&body, &secret_forms(None, None, Some("abc123")));
        assert!(e.len() <= REASON_EXCERPT && !e.contains("abc123") && !e.contains('\n'));
    }

    #[test]
    fn a_secret_across_the_cut_and_the_basic_credentials_are_masked_too() {
        use base64::Engine;
        let password = "s3cret-password-that-is-long";
        let secrets = secret_forms(Some("acct-17"), Some(password), Some("hdr-value"));
        // The password starts just before where the excerpt is cut.
        let body = format!("{}{password} tail", "x".repeat(REASON_EXCERPT - 4));
        let e = excerpt(&body, &secrets);
        assert!(!e.contains("s3cr"), "a prefix of the password leaked: {e}");
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("acct-17:{password}"));
        let body = format!("refused Authorization: Basic {basic} and key hdr-value");
        let e = excerpt(&body, &secrets);
        assert!(!e.contains(&basic[..8]) && !e.contains("hdr-value"), "{e}");
        assert!(e.starts_with("refused Authorization: Basic ****"), "{e}");
    }
}
