//! Calling the channel's sender: push, SMS (paced, with failover) and email.

use super::*;

impl Deliverer {
    pub(super) async fn send_push(
        &self,
        job: &DeliveryJob,
    ) -> Result<crate::ports::Receipt, SendError> {
        let sender = self
            .push
            .as_ref()
            .ok_or_else(|| SendError::permanent(FailReason::ProviderUnavailable))?;
        let Destination::Devices(user_id) = &job.destination else {
            return Err(SendError::permanent(FailReason::BadDestination));
        };
        let user = self
            .directory
            .get_user(&job.org_id, user_id)
            .await
            .map_err(|e| SendError::transient(FailReason::DirectoryUnavailable).with_source(e))?;
        let devices: Vec<_> = user
            .map(|u| u.devices)
            .unwrap_or_default()
            .into_iter()
            .filter(|d| d.endpoint.is_some())
            .collect();
        if devices.is_empty() {
            return Err(SendError::permanent(FailReason::NoDevice));
        }
        // Sent when at least one device took it; else transient if any failure was.
        let mut ids = Vec::new();
        let mut last_err: Option<SendError> = None;
        let mut any_transient = false;
        for d in devices {
            let push = PushMessage {
                notification_id: job.notification_id.clone(),
                recipient: user_id.clone(),
                category: job.category,
                device_id: d.device_id.clone(),
                endpoint: d.endpoint.clone().unwrap_or_default(),
                platform: d.platform,
                message: job.message.clone(),
            };
            match sender.send(&push).await {
                Ok(r) => ids.extend(r.provider_message_id),
                Err(e) => {
                    tracing::warn!(device_id = %d.device_id, reason = %e.reason(), "push to a device failed");
                    any_transient |= e.is_transient();
                    last_err = Some(e);
                }
            }
        }
        if !ids.is_empty() || last_err.is_none() {
            return Ok(crate::ports::Receipt {
                provider: Provider::Sns,
                provider_message_id: (!ids.is_empty()).then(|| ids.join(",")),
            });
        }
        match last_err {
            Some(e) if any_transient => Err(e.into_transient()),
            Some(e) => Err(e),
            None => Err(SendError::permanent(FailReason::NoDevice)),
        }
    }

    pub(super) async fn send_sms(
        &self,
        job: &DeliveryJob,
        final_attempt: bool,
    ) -> Result<Accepted, SendError> {
        let Destination::Phone(to) = &job.destination else {
            return Err(SendError::permanent(FailReason::BadDestination));
        };
        let sender = self
            .sms
            .get(&job.provider)
            .ok_or_else(|| SendError::permanent(FailReason::ProviderUnavailable))?;
        let settings = self
            .settings
            .effective_sms(&job.org_id, &job.control_center_id)
            .await
            .map_err(|e| SendError::transient(FailReason::SettingsUnavailable).with_source(e))?;
        let policy = settings
            .as_ref()
            .map(SmsSettings::policy)
            .unwrap_or_default();
        let fitted = job.sms(self.response_link(job).await.as_deref(), policy);
        if fitted.cut {
            tracing::info!(
                segments = fitted.count.segments,
                max_segments = policy.max_segments,
                "the SMS text was cut to its control center's max_segments"
            );
        }
        let sms = SmsMessage {
            notification_id: job.notification_id.clone(),
            delivery_id: Some(job.delivery_id()),
            org_id: job.org_id.clone(),
            control_center_id: settings.as_ref().map_or_else(
                || job.control_center_id.clone(),
                |s| s.control_center_id.clone(),
            ),
            to: to.clone(),
            from: settings.as_ref().and_then(|s| s.sender_number.clone()),
            text: fitted.text,
            settings,
        };
        let secondary = sms
            .settings
            .as_ref()
            .and_then(SmsSettings::failover)
            .and_then(|p| Some((p, self.sms.get(&p)?)));
        let primary = self.paced(job, &sms, job.provider, sender.as_ref());
        let accepted = match (&self.failover, secondary) {
            (Some(f), Some((second, secondary))) if job.provider == Provider::Http => {
                let scope = HealthScope::Sms(sms.control_center_id.clone());
                // SNS sends as the account, never as the gateway's number.
                let over = SmsMessage {
                    from: sms.settings.as_ref().and_then(SmsSettings::failover_sender),
                    ..sms.clone()
                };
                f.send(
                    &job.org_id,
                    &scope,
                    job.provider,
                    final_attempt,
                    primary,
                    || self.paced(job, &over, second, secondary.as_ref()),
                )
                .await?
            }
            _ => Accepted::direct(primary.await?),
        };
        Ok(accepted
            .keyed(&job.org_id, &sms.control_center_id)
            .with_sms(fitted.count))
    }

    /// The pace an SMS through `provider` keeps: an HTTP gateway's `max_per_second`
    /// (one without is still held by a 429's pause), SNS's account rate when set.
    pub(super) fn sms_pace(&self, sms: &SmsMessage, provider: Provider) -> Option<(String, u32)> {
        match (provider, sms.settings.as_ref().map(|s| &s.provider)) {
            (Provider::Http, Some(crate::domain::SmsProvider::Http(g))) => Some((
                format!("http#{}#{}", sms.org_id, sms.control_center_id),
                g.max_per_second.unwrap_or(crate::ports::UNPACED),
            )),
            (Provider::Sns, _) => self.sns_per_second.map(|r| ("sns".to_string(), r)),
            _ => None,
        }
    }

    /// Sends at the provider's pace (urgent lanes first), and waits out its "slow down"
    /// (a 429's `Retry-After`, for every sender to it) and tries again, instead of
    /// spending an attempt, for up to [`THROTTLE_BUDGET`].
    pub(super) async fn paced(
        &self,
        job: &DeliveryJob,
        sms: &SmsMessage,
        provider: Provider,
        sender: &dyn SmsSender,
    ) -> Result<crate::ports::Receipt, SendError> {
        let (Some(pacer), Some((key, rate))) = (&self.pacer, self.sms_pace(sms, provider)) else {
            return sender.send(sms).await;
        };
        let mut waited = Duration::ZERO;
        loop {
            let slot = pacer.acquire(&key, rate, job.lane());
            match self.max_pace_wait {
                Some(limit) => {
                    let left = limit.saturating_sub(waited);
                    let started = tokio::time::Instant::now();
                    if left.is_zero() || tokio::time::timeout(left, slot).await.is_err() {
                        return Err(SendError::paced());
                    }
                    waited += started.elapsed();
                }
                None => slot.await,
            }
            match sender.send(sms).await {
                Err(e) if e.retry_after().is_some() => {
                    // `Retry-After: 0` (or a date gone by) is still a refusal: a short
                    // wait at least, so a provider that keeps refusing is not hammered.
                    let d = e.retry_after().unwrap_or_default().max(MIN_THROTTLE_WAIT);
                    // Every sender to it holds off, also when this one gives up.
                    pacer.pause(&key, d).await;
                    let budget = THROTTLE_BUDGET.min(self.max_pace_wait.unwrap_or(THROTTLE_BUDGET));
                    if waited + d > budget {
                        return Err(e);
                    }
                    tracing::info!(
                        provider = provider.as_str(),
                        wait_ms = d.as_millis() as u64,
                        "the provider asked to slow down: waiting"
                    );
                    tokio::time::sleep(d).await;
                    waited += d;
                }
                other => return other,
            }
        }
    }

    pub(super) async fn send_email(
        &self,
        job: &DeliveryJob,
        final_attempt: bool,
    ) -> Result<Accepted, SendError> {
        let Destination::Email(to) = &job.destination else {
            return Err(SendError::permanent(FailReason::BadDestination));
        };
        let sender = self
            .email
            .get(&job.provider)
            .ok_or_else(|| SendError::permanent(FailReason::ProviderUnavailable))?;
        let settings =
            self.settings.get_email(&job.org_id).await.map_err(|e| {
                SendError::transient(FailReason::SettingsUnavailable).with_source(e)
            })?;
        let from = effective_sender(settings.as_ref(), self.default_sender.as_ref())
            .cloned()
            .ok_or_else(|| SendError::permanent(FailReason::NoSenderAddress))?;
        let (text, html) = job.email_parts(self.response_link(job).await.as_deref());
        let email = EmailMessage {
            notification_id: job.notification_id.clone(),
            delivery_id: Some(job.delivery_id()),
            org_id: job.org_id.clone(),
            to: to.clone(),
            from,
            subject: job.message.title.clone(),
            text,
            html: Some(html),
            settings,
        };
        let secondary = email
            .settings
            .as_ref()
            .and_then(EmailSettings::failover)
            .and_then(|p| self.email.get(&p));
        let accepted = match (&self.failover, secondary) {
            (Some(f), Some(secondary)) if job.provider == Provider::Smtp => {
                // SES sends from the organization's address where it may; where it
                // refuses that sender, from the default account.
                let via_secondary = || async {
                    match secondary.send(&email).await {
                        Err(e) if !e.is_transient() => match &self.default_sender {
                            Some(d) if d != &email.from => {
                                tracing::info!(reason = %e.reason(), "the failover provider refused the sender: from the default account");
                                let mut m = email.clone();
                                m.from = d.clone();
                                secondary.send(&m).await
                            }
                            _ => Err(e),
                        },
                        r => r,
                    }
                };
                f.send(
                    &job.org_id,
                    &HealthScope::Email,
                    job.provider,
                    final_attempt,
                    sender.send(&email),
                    via_secondary,
                )
                .await?
            }
            _ => Accepted::direct(sender.send(&email).await?),
        };
        Ok(accepted.keyed(&job.org_id, &job.control_center_id))
    }

    /// The response link of a dispatch to a user, when links are on: the
    /// (notification, recipient)'s one code, made on its first message (random, stored
    /// sealed under the link key with the link under its digest) and read back, unsealed,
    /// by every later one (the SMS after the email, an escalation cycle). A link that
    /// cannot be made is left out: the message goes without it (a reply still answers),
    /// never later for it.
    pub(super) async fn response_link(&self, job: &DeliveryJob) -> Option<String> {
        let (Some(links), RecipientRef::User(user)) = (&self.links, &job.recipient) else {
            return None;
        };
        if !job.answerable() {
            return None;
        }
        match self.link_code(links, job, user).await {
            Ok(Some(code)) => Some(code.url(&links.public_url)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = ?e, "no response link: the message goes without it");
                None
            }
        }
    }

    async fn link_code(
        &self,
        links: &Links,
        job: &DeliveryJob,
        user: &crate::domain::UserId,
    ) -> Result<Option<crate::domain::LinkCode>, crate::ports::StoreError> {
        use crate::domain::{LinkCode, ResponseLink, SealedCode};
        use secrecy::ExposeSecret;
        let Some(key) = links.secrets.get(&crate::ports::SecretKey::LinkKey).await? else {
            tracing::warn!("the response link key is not in the secret store: no link");
            return Ok(None);
        };
        let pad = crate::domain::link_pad(
            key.expose_secret().as_bytes(),
            &job.org_id,
            &job.notification_id,
            user,
        );
        let code = LinkCode::from_random(uuid::Uuid::new_v4().into_bytes());
        let link = ResponseLink {
            digest: code.digest(),
            org_id: job.org_id.clone(),
            notification_id: job.notification_id.clone(),
            user_id: user.clone(),
            title: job.message.title.chars().take(200).collect(),
            text: job
                .message
                .body
                .chars()
                .take(ResponseLink::TEXT_KEPT)
                .collect(),
            expires_at: chrono::Utc::now() + crate::domain::LINK_VALIDITY,
        };
        let candidate = SealedCode {
            digest: link.digest.clone(),
            sealed: code.seal(&pad),
        };
        let Some(existing) = self.log.link_for(&link, &candidate).await? else {
            return Ok(Some(code));
        };
        let opened =
            LinkCode::unseal(&existing.sealed, &pad).filter(|c| c.digest() == existing.digest);
        if opened.is_none() {
            // Sealed under another key (it was replaced): this message gets a code of its own.
            tracing::warn!(
                "the pair's response link code does not open with the link key: a new one"
            );
            self.log.put_link(&link).await?;
            return Ok(Some(code));
        }
        Ok(opened)
    }
}
