//! The custom SMTP server: `use_tls` means implicit TLS on 465 or `smtps://`, required
//! STARTTLS otherwise; plaintext only where private endpoints are allowed. AUTH with the
//! stored password; text and HTML parts.
//!
//! The TCP connection is made here, not by lettre: to the address the SSRF guard checked
//! (no second resolution), with `TCP_NODELAY` (lettre 0.11.23 writes the body and the
//! final dot separately, and without it each message waits ~40 ms for a delayed ACK).
//! Connections are kept per server within a warm instance and reused.

use super::guard::{GuardError, resolve_checked};
use async_trait::async_trait;
use flare_shared::domain::{
    EmailProvider, EmailSettings, EndpointPolicy, FailReason, OrgId, Provider, SmtpSecurity,
    SmtpSettings,
};
use flare_shared::ports::{
    EmailMessage, EmailSender, Receipt, SecretKey, SecretStore, SendError, SettingsStore,
};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Mutex;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(20);
/// Connections kept per server.
pub const POOL_PER_SERVER: usize = 4;

/// Organization, host, port, TLS, user and the settings' secrets revision: a connection
/// authenticated with a password that has since changed is never used again.
type PoolKey = (OrgId, String, u16, bool, Option<String>, Option<String>);

pub struct SmtpEmailSender {
    settings: Arc<dyn SettingsStore>,
    secrets: Arc<dyn SecretStore>,
    policy: EndpointPolicy,
    /// Extra trusted roots (PEM), beside the web PKI ones: a private CA an organization uses.
    extra_roots: Vec<Vec<u8>>,
    hello: ClientId,
    pool: Mutex<HashMap<PoolKey, Vec<AsyncSmtpConnection>>>,
}

/// A TLS stream lettre can drive: implicit TLS is set up here, before the greeting.
#[derive(Debug)]
struct TlsStream(tokio_rustls::client::TlsStream<tokio::net::TcpStream>);

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsStream {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

fn transient(code: FailReason, e: impl Into<anyhow::Error>) -> SendError {
    SendError::transient(code).with_source(e)
}

fn permanent(code: FailReason, e: impl Into<anyhow::Error>) -> SendError {
    SendError::permanent(code).with_source(e)
}

/// 5xx replies are permanent, 4xx and broken connections transient; 535 is a wrong password.
fn classify(e: lettre::transport::smtp::Error, during: &str) -> SendError {
    let code = e.status().map(|c| c.to_string());
    if code.as_deref() == Some("535") {
        return permanent(FailReason::AuthFailed, e);
    }
    if e.is_permanent() {
        let detail = format!("{} during {during}", code.unwrap_or_default());
        return permanent(FailReason::SmtpRejected, e).with_detail(detail);
    }
    match code {
        Some(c) => {
            transient(FailReason::SmtpDeferred, e).with_detail(format!("{c} during {during}"))
        }
        None => transient(FailReason::SmtpConnection, e).with_detail(during),
    }
}

impl SmtpEmailSender {
    pub fn new(
        settings: Arc<dyn SettingsStore>,
        secrets: Arc<dyn SecretStore>,
        policy: EndpointPolicy,
    ) -> Self {
        Self {
            settings,
            secrets,
            policy,
            extra_roots: Vec::new(),
            hello: ClientId::Domain("flare.localhost".into()),
            pool: Mutex::default(),
        }
    }

    /// Also trusts this CA (PEM): tests, or an organization's private CA.
    pub fn with_extra_root(mut self, pem: Vec<u8>) -> Self {
        self.extra_roots.push(pem);
        self
    }

    fn rustls_config(&self) -> Result<rustls::ClientConfig, SendError> {
        let mut roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for pem in &self.extra_roots {
            for cert in rustls_pemfile_certs(pem) {
                roots
                    .add(cert)
                    .map_err(|e| permanent(FailReason::BadExtraRoot, e))?;
            }
        }
        Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| permanent(FailReason::TlsConfig, e))?
        .with_root_certificates(roots)
        .with_no_client_auth())
    }

    fn starttls_params(&self, host: &str) -> Result<TlsParameters, SendError> {
        let mut b = TlsParameters::builder(host.to_string());
        for pem in &self.extra_roots {
            b = b.add_root_certificate(
                Certificate::from_pem(pem).map_err(|e| permanent(FailReason::BadExtraRoot, e))?,
            );
        }
        b.build_rustls()
            .map_err(|e| permanent(FailReason::TlsConfig, e))
    }

    async fn connect(
        &self,
        host: &str,
        port: u16,
        security: SmtpSecurity,
    ) -> Result<AsyncSmtpConnection, SendError> {
        if security == SmtpSecurity::Plain && !self.policy.allow_private {
            return Err(SendError::permanent(FailReason::EndpointNotAllowed));
        }
        let addrs = resolve_checked(host, port, self.policy)
            .await
            .map_err(|e| match e {
                GuardError::NotAllowed { .. } => permanent(FailReason::EndpointNotAllowed, e),
                GuardError::Unresolvable { .. } => transient(FailReason::SmtpUnresolvable, e),
            })?;
        let mut last = None;
        let mut tcp = None;
        for addr in addrs {
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await
            {
                Ok(Ok(s)) => {
                    tcp = Some(s);
                    break;
                }
                Ok(Err(e)) => last = Some(anyhow::Error::new(e)),
                Err(e) => last = Some(anyhow::Error::new(e)),
            }
        }
        let tcp = tcp.ok_or_else(|| {
            transient(
                FailReason::SmtpUnreachable,
                last.unwrap_or_else(|| anyhow::anyhow!("no address")),
            )
        })?;
        tcp.set_nodelay(true)
            .map_err(|e| transient(FailReason::SmtpSocket, e))?;
        let stream: Box<dyn AsyncTokioStream> = match security {
            SmtpSecurity::ImplicitTls => {
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| permanent(FailReason::BadServerName, e))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::new(self.rustls_config()?))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| permanent(FailReason::TlsFailed, e))?;
                Box::new(TlsStream(tls))
            }
            _ => Box::new(tcp),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(|e| classify(e, "greeting"))?;
        if security == SmtpSecurity::StartTls {
            if !conn.can_starttls() {
                return Err(SendError::permanent(FailReason::StarttlsUnavailable));
            }
            conn.starttls(self.starttls_params(host)?, &self.hello)
                .await
                .map_err(|e| classify(e, "starttls"))?;
        }
        Ok(conn)
    }

    async fn checkout(&self, key: &PoolKey) -> Option<AsyncSmtpConnection> {
        let mut pool = self.pool.lock().await;
        // The organization's connections made under other settings (another server, user
        // or password) are closed: they are never used again.
        pool.retain(|k, _| k.0 != key.0 || k == key);
        let conns = pool.get_mut(key)?;
        while let Some(c) = conns.pop() {
            if !c.has_broken() {
                return Some(c);
            }
        }
        None
    }

    /// Says QUIT on every idle pooled connection and forgets them: before an instance
    /// stops, so servers see a goodbye instead of a dropped socket (and the SMTP
    /// benchmark's connection-each row). A server that does not answer is dropped.
    pub async fn close_idle(&self) {
        let idle: Vec<_> = self.pool.lock().await.drain().collect();
        for mut conn in idle.into_iter().flat_map(|(_, conns)| conns) {
            let _ = tokio::time::timeout(SESSION_TIMEOUT, conn.quit()).await;
        }
    }

    async fn checkin(&self, key: PoolKey, conn: AsyncSmtpConnection) {
        let mut pool = self.pool.lock().await;
        let conns = pool.entry(key).or_default();
        if conns.len() < POOL_PER_SERVER && !conn.has_broken() {
            conns.push(conn);
        }
    }
}

/// The DER certificates of a PEM bundle.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

impl SmtpEmailSender {
    /// The caller's read when it made one; else our own.
    async fn settings_for(&self, m: &EmailMessage) -> Result<EmailSettings, SendError> {
        match &m.settings {
            Some(s) => Ok(s.clone()),
            None => self
                .settings
                .get_email(&m.org_id)
                .await
                .map_err(|e| transient(FailReason::SettingsUnavailable, e))?
                .ok_or_else(|| SendError::permanent(FailReason::SmtpNotConfigured)),
        }
    }

    /// The stored password when the server takes a user. As for the gateway: settings
    /// whose revision no longer holds it were replaced by a save during this send.
    async fn password(
        &self,
        m: &EmailMessage,
        smtp: &SmtpSettings,
    ) -> Result<Option<SecretString>, SendError> {
        let password = match &smtp.username {
            Some(_) => self
                .secrets
                .get(&SecretKey::SmtpPassword(
                    m.org_id.clone(),
                    smtp.secrets_at.clone(),
                ))
                .await
                .map_err(|e| transient(FailReason::SettingsUnavailable, e))?,
            None => None,
        };
        if smtp.username.is_some() && smtp.password_set && password.is_none() {
            return Err(SendError::transient(FailReason::SettingsUnavailable));
        }
        Ok(password)
    }

    /// Sends `email` on a pooled connection, or else on a fresh one: a pooled
    /// connection may have been closed by the server, so it gets one fresh try then.
    async fn session(
        &self,
        key: &PoolKey,
        smtp: &SmtpSettings,
        password: Option<&SecretString>,
        email: &lettre::Message,
    ) -> Result<(AsyncSmtpConnection, Response), SendError> {
        let (envelope, bytes) = (email.envelope().clone(), email.formatted());
        if let Some(mut conn) = self.checkout(key).await {
            match conn.send(&envelope, &bytes).await {
                Ok(r) => return Ok((conn, r)),
                Err(e) if e.is_response() => return Err(classify(e, "send")),
                Err(_) => {}
            }
        }
        let mut conn = self.open(smtp, password).await?;
        let r = conn
            .send(&envelope, &bytes)
            .await
            .map_err(|e| classify(e, "send"))?;
        Ok((conn, r))
    }

    /// A fresh connection to the server, authenticated when it takes a user.
    async fn open(
        &self,
        smtp: &SmtpSettings,
        password: Option<&SecretString>,
    ) -> Result<AsyncSmtpConnection, SendError> {
        let server = &smtp.server;
        let mut conn = self
            .connect(&server.host, server.port, server.security())
            .await?;
        if let (Some(user), Some(pass)) = (&smtp.username, password) {
            conn.auth(
                &[Mechanism::Plain, Mechanism::Login],
                &Credentials::new(user.clone(), pass.expose_secret().to_string()),
            )
            .await
            .map_err(|e| classify(e, "auth"))?;
        }
        Ok(conn)
    }
}

/// The pool a connection for these settings belongs to.
fn pool_key(m: &EmailMessage, smtp: &SmtpSettings) -> PoolKey {
    (
        m.org_id.clone(),
        smtp.server.host.clone(),
        smtp.server.port,
        smtp.server.use_tls,
        smtp.username.clone(),
        smtp.secrets_at.clone(),
    )
}

/// The message, text and HTML (the text escaped when there is no HTML), with the
/// delivery's id as its Message-ID, the same on every attempt: a repeat after a crash
/// between the server's answer and Flare's record of it is recognisable.
fn message(m: &EmailMessage) -> Result<lettre::Message, SendError> {
    let message_id = m
        .delivery_id
        .as_ref()
        .map(|id| format!("<{id}@{}>", m.from.domain()));
    let mailbox = |address: &str, bad: FailReason| {
        let address = address.parse().map_err(|e| permanent(bad, e))?;
        Ok::<_, SendError>(Mailbox::new(None, address))
    };
    let html = match &m.html {
        Some(html) => html.clone(),
        None => flare_shared::domain::delivery::html_escape(&m.text),
    };
    lettre::Message::builder()
        .message_id(message_id)
        .from(mailbox(m.from.as_str(), FailReason::BadFrom)?)
        .to(mailbox(m.to.as_str(), FailReason::BadTo)?)
        .subject(&m.subject)
        .multipart(MultiPart::alternative_plain_html(m.text.clone(), html))
        .map_err(|e| permanent(FailReason::BadMessage, e))
}

#[async_trait]
impl EmailSender for SmtpEmailSender {
    async fn send(&self, m: &EmailMessage) -> Result<Receipt, SendError> {
        let settings = self.settings_for(m).await?;
        let EmailProvider::Smtp { smtp } = &settings.provider else {
            return Err(SendError::permanent(FailReason::ProviderChanged));
        };
        let password = self.password(m, smtp).await?;
        let email = message(m)?;
        let key = pool_key(m, smtp);
        let session = self.session(&key, smtp, password.as_ref(), &email);
        let (conn, response) = tokio::time::timeout(SESSION_TIMEOUT, session)
            .await
            .map_err(|e| transient(FailReason::SmtpTimeout, e))??;
        self.checkin(key, conn).await;
        Ok(Receipt {
            provider: Provider::Smtp,
            provider_message_id: response.message().last().map(|s| s.to_string()),
        })
    }
}
