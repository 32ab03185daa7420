//! Provider receipts: SES events, SNS SMS delivery status lines and custom gateways'
//! status callbacks move a `sent` delivery to `delivered` or `undelivered` (or mark an
//! email complaint). The receipts function and the local runner's
//! `POST /local/provider-events` call [`Receipts`]; the API's
//! `POST /v1/receipts/sms/{org_id}/{control_center_id}` calls [`gateway_callback`].

use super::Services;
use super::auth::AuthFailure;
use super::error::ApiError;
use crate::domain::receipt::{
    ProviderReceipt, ReceiptParseError, ReceiptStatus, parse_gateway_callback, parse_ses_event,
    parse_sns_sms_status, signature_header, verify_signature,
};
use crate::domain::{ControlCenterId, FieldErrors, GatewayFormat, OrgId, SmsProvider, SmsSettings};
use crate::ports::{DeliveryLog, Finish, Metrics, ReceiptMatch, SecretKey, StoreError};
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;

/// Applies receipts to the delivery log.
#[derive(Clone)]
pub struct Receipts {
    pub log: Arc<dyn DeliveryLog>,
    /// A receipt whose delivery is not found is looked up once more after this long
    /// (AWS: the log's receipt index is eventually consistent, and a fast receipt can
    /// outrun it); `None`: not again.
    pub retry_unknown_after: Option<Duration>,
    /// Counts the deliveries receipts move to `delivered`.
    pub metrics: Arc<dyn Metrics>,
    /// Where a receipt saying the number opted out records it (v1.2); `None`: nowhere.
    pub opt_outs: Option<Arc<dyn crate::ports::Directory>>,
}

/// How many receipts of a batch are applied at once: a CloudWatch Logs batch of SNS
/// status lines may hold thousands, each one lookup and one conditional write (a few
/// milliseconds each in DynamoDB), so at this many at once a large batch ends in
/// seconds, well inside the function's 20 s.
pub const RECEIPT_CONCURRENCY: usize = 16;

/// What a batch of receipts did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReceiptSummary {
    /// Deliveries the receipts moved.
    pub applied: usize,
    /// Receipts for deliveries that already had one (or are failed or skipped).
    pub unchanged: usize,
    /// Receipts that named no delivery Flare sent: logged and dropped.
    pub unknown: usize,
    /// Events that change nothing (a delivery delay, a transient bounce).
    pub ignored: usize,
    /// Inbound SMS read (End User Messaging's two-way messages, v1.2).
    #[serde(skip_serializing_if = "is_zero")]
    pub replies: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    #[error("malformed provider event")]
    Malformed(#[from] ReceiptParseError),
    #[error("storage failed")]
    Store(#[from] StoreError),
}

/// What a receipt asks of its delivery.
pub fn finish_of(r: &ProviderReceipt) -> Finish {
    match &r.status {
        ReceiptStatus::Delivered => Finish::Delivered { at: r.at },
        ReceiptStatus::Undelivered { reason, detail } => Finish::Undelivered {
            reason: reason.clone(),
            detail: detail.clone(),
        },
        ReceiptStatus::Complaint => Finish::Complaint,
    }
}

impl Receipts {
    pub fn new(log: Arc<dyn DeliveryLog>) -> Self {
        Self {
            log,
            retry_unknown_after: None,
            metrics: Arc::new(crate::ports::NoMetrics),
            opt_outs: None,
        }
    }

    /// Applies one receipt: one lookup and one conditional write.
    pub async fn apply(&self, r: &ProviderReceipt) -> Result<ReceiptMatch, StoreError> {
        let finish = finish_of(r);
        let found = self.log.receipt(&r.key, finish.clone()).await?;
        if let ReceiptMatch::Found {
            target,
            moved: true,
        } = &found
            && let Some(m) = super::ended::metric_of(target.channel, r.key.provider(), &finish)
        {
            self.metrics.delivery(&m);
        }
        let status = match &r.status {
            ReceiptStatus::Delivered => "delivered",
            ReceiptStatus::Undelivered { .. } => "undelivered",
            ReceiptStatus::Complaint => "complaint",
        };
        match &found {
            ReceiptMatch::Unknown => {
                tracing::warn!(receipt_key = %r.key, status, "receipt for no known delivery: dropped");
            }
            ReceiptMatch::Found { target, moved } => tracing::info!(
                notification_id = %target.notification_id,
                channel = target.channel.as_str(),
                recipient = %target.recipient,
                status,
                moved,
                "provider receipt"
            ),
        }
        if let (
            ReceiptMatch::Found {
                target,
                moved: true,
            },
            Finish::Undelivered { reason, .. },
        ) = (&found, &finish)
            && reason == crate::domain::receipt::OPTED_OUT
        {
            self.record_opt_out(target).await?;
        }
        Ok(found)
    }

    /// The provider says the number of `target`'s SMS opted out: so it is in the
    /// organization too, and later SMS to it end `skipped` `opted_out` without a send.
    async fn record_opt_out(&self, target: &crate::ports::ReceiptTarget) -> Result<(), StoreError> {
        let Some(directory) = &self.opt_outs else {
            return Ok(());
        };
        // A user's number (an emergency contact's SMS says nothing of an organization's
        // user, and its record is not found by its key alone).
        let Some(user) = target
            .recipient
            .strip_prefix("user:")
            .and_then(|u| crate::domain::UserId::parse_existing(u).ok())
        else {
            return Ok(());
        };
        let who = crate::domain::RecipientRef::User(user);
        let records = self
            .log
            .recipient_records(&target.org_id, &target.notification_id, &who)
            .await?;
        let number = records
            .iter()
            .find_map(|r| match (&r.channel, &r.destination) {
                (crate::domain::Channel::Sms, Some(crate::domain::Destination::Phone(p))) => {
                    Some(p)
                }
                _ => None,
            });
        if let Some(number) = number {
            directory
                .set_opt_out(&target.org_id, number, Some(chrono::Utc::now()))
                .await?;
            tracing::info!(org_id = %target.org_id, notification_id = %target.notification_id, "a receipt says the number opted out: recorded");
        }
        Ok(())
    }

    /// [`Self::apply`], looking once more after [`Self::retry_unknown_after`] when the
    /// delivery is not found (one receipt: a gateway's callback).
    pub async fn apply_patiently(&self, r: &ProviderReceipt) -> Result<ReceiptMatch, StoreError> {
        let found = self.apply(r).await?;
        match (found, self.retry_unknown_after) {
            (ReceiptMatch::Unknown, Some(wait)) => {
                tokio::time::sleep(wait).await;
                self.apply(r).await
            }
            (found, _) => Ok(found),
        }
    }

    async fn apply_all(
        &self,
        receipts: Vec<Option<ProviderReceipt>>,
    ) -> Result<ReceiptSummary, StoreError> {
        let receipts_len = receipts.len();
        let mut sum = ReceiptSummary::default();
        let receipts: Vec<ProviderReceipt> = receipts.into_iter().flatten().collect();
        sum.ignored = receipts_len - receipts.len();
        let mut unknown = self.apply_each(receipts, &mut sum).await?;
        // One wait for the whole batch, however many were not found.
        if !unknown.is_empty()
            && let Some(wait) = self.retry_unknown_after
        {
            tokio::time::sleep(wait).await;
            unknown = self.apply_each(unknown, &mut sum).await?;
        }
        sum.unknown = unknown.len();
        Ok(sum)
    }

    /// Applies `receipts`, [`RECEIPT_CONCURRENCY`] at a time, counting what they did in
    /// `sum`; answers those whose delivery was not found.
    async fn apply_each(
        &self,
        receipts: Vec<ProviderReceipt>,
        sum: &mut ReceiptSummary,
    ) -> Result<Vec<ProviderReceipt>, StoreError> {
        use futures::StreamExt;
        let results: Vec<(ProviderReceipt, Result<ReceiptMatch, StoreError>)> =
            futures::stream::iter(receipts)
                .map(|r| async move {
                    let found = self.apply(&r).await;
                    (r, found)
                })
                .buffer_unordered(RECEIPT_CONCURRENCY)
                .collect()
                .await;
        let mut unknown = Vec::new();
        for (r, found) in results {
            match found? {
                ReceiptMatch::Unknown => unknown.push(r),
                ReceiptMatch::Found { moved: true, .. } => sum.applied += 1,
                ReceiptMatch::Found { moved: false, .. } => sum.unchanged += 1,
            }
        }
        Ok(unknown)
    }

    /// An SES event as EventBridge delivers it.
    pub async fn ses_event(
        &self,
        event: &serde_json::Value,
    ) -> Result<ReceiptSummary, ReceiptError> {
        let r = parse_ses_event(event)?;
        Ok(self.apply_all(vec![r]).await?)
    }

    /// The lines of SNS's SMS delivery status log (a CloudWatch Logs subscription
    /// delivers them in batches). A line Flare cannot read is logged and skipped: one
    /// bad line must not make the batch (and every good line in it) retry forever.
    pub async fn sns_sms_lines<'a>(
        &self,
        lines: impl IntoIterator<Item = &'a str>,
    ) -> Result<ReceiptSummary, ReceiptError> {
        let mut parsed = Vec::new();
        let mut bad = 0;
        let mut first_error = None;
        for line in lines {
            match parse_sns_sms_status(line) {
                Ok(r) => parsed.push(Some(r)),
                Err(e) => {
                    bad += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        // One line for the batch, however many lines were bad (a junk batch must not
        // write a warning per line).
        if let Some(e) = first_error {
            tracing::warn!(lines = bad, first_error = %e, "unreadable SNS SMS status lines: skipped");
        }
        let mut sum = self.apply_all(parsed).await?;
        sum.ignored += bad;
        Ok(sum)
    }
}

/// The key a callback is checked with when there is no gateway: random per process, so
/// no signature matches it, and the check costs what a real one does.
static UNMATCHABLE_KEY: std::sync::LazyLock<[u8; 32]> = std::sync::LazyLock::new(|| {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    key
});

/// A gateway's status callback as the API received it.
#[derive(Clone, Copy)]
pub struct Callback<'a> {
    /// The full URL the gateway called (Twilio signs it).
    pub url: &'a str,
    /// A request header by (lower-case) name.
    pub header: &'a (dyn Fn(&str) -> Option<String> + Sync),
    pub body: &'a [u8],
}

/// A request from the custom gateway of `org`'s control center `cc` (its receipts, its
/// inbound messages): verified with the gateway's stored password as the gateway signs.
/// Anything that cannot be verified (no such settings, no password, a bad signature)
/// is one 401, so the routes tell a stranger nothing. Answers the organization, the
/// gateway's format and the settings that verified it (main's for a control center
/// without its own).
pub(crate) async fn verify_gateway(
    svc: &Services,
    org: &str,
    cc: &str,
    callback: &Callback<'_>,
) -> Result<(OrgId, GatewayFormat, SmsSettings), ApiError> {
    let unverified = || ApiError::Unauthorized(AuthFailure::CallbackSignature);
    let (Ok(org), Ok(cc)) = (OrgId::parse(org), ControlCenterId::parse(cc)) else {
        return Err(unverified());
    };
    // A control center without settings of its own sends through main's gateway, and
    // its deliveries are keyed by main: a callback naming it is verified as main's.
    let settings = svc.settings.effective_sms(&org, &cc).await?;
    let gateway = settings.as_ref().and_then(|s| match &s.provider {
        SmsProvider::Http(g) => Some((g.format, s)),
        SmsProvider::Sns => None,
    });
    // The same work whether or not there is a gateway to verify against (a secret read
    // and a signature check, with a key no signature can match when there is none), so
    // the time a refusal takes does not tell which control centers have a gateway.
    let (format, key) = match gateway {
        Some((format, s)) => (
            format,
            SecretKey::SmsPassword(
                org.clone(),
                s.control_center_id.clone(),
                s.secrets_at.clone(),
            ),
        ),
        None => (
            GatewayFormat::Json,
            SecretKey::SmsPassword(org.clone(), cc.clone(), None),
        ),
    };
    let password = svc.secret_reads.get(&key).await?;
    let signature = (callback.header)(signature_header(format)).unwrap_or_default();
    let signed = verify_signature(
        format,
        match (&gateway, &password) {
            (Some(_), Some(p)) => p.expose_secret().as_bytes(),
            _ => &UNMATCHABLE_KEY[..],
        },
        callback.url,
        callback.body,
        &signature,
    );
    let (Some((format, settings)), Some(_), true) = (gateway, password, signed) else {
        tracing::warn!(org_id = %org, control_center_id = %cc, "gateway callback not verified: refused");
        return Err(unverified());
    };
    Ok((org, format, settings.clone()))
}

/// `POST /v1/receipts/sms/{org_id}/{control_center_id}`: no token; the signature made
/// with the control center's stored gateway password is the authentication. Anything
/// that cannot be verified (no such settings, no password, a bad signature) is one 401,
/// so the route tells a stranger nothing. An unknown message id is a 404, a repeat 204.
pub async fn gateway_callback(
    svc: &Services,
    org: &str,
    cc: &str,
    callback: Callback<'_>,
) -> Result<(), ApiError> {
    let (org, format, settings) = verify_gateway(svc, org, cc, &callback).await?;
    let cc = settings.control_center_id.clone();
    let content_type = (callback.header)("content-type");
    let receipt = parse_gateway_callback(format, &org, &cc, content_type.as_deref(), callback.body)
        .map_err(|e| {
            let mut f = FieldErrors::new();
            f.add("body", e.to_string());
            ApiError::Validation(f)
        })?;
    let Some(receipt) = receipt else {
        return Ok(());
    };
    let receipts = Receipts {
        log: svc.log.clone(),
        retry_unknown_after: svc.receipt_retry,
        metrics: svc.metrics.clone(),
        opt_outs: Some(svc.directory.clone()),
    };
    match receipts.apply_patiently(&receipt).await? {
        ReceiptMatch::Unknown => Err(ApiError::not_found(
            "no delivery was sent with this message id",
        )),
        ReceiptMatch::Found { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::receipt::{ReceiptKey, ReceiptStatus};
    use crate::domain::{
        DeliveryRecord, Notification, NotificationId, OrgId, Provider, RecipientRef, Slot, UserId,
    };
    use crate::ports::{Claim, Created, ListPosition, Logged, NotificationSummary, StoreResult};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A log whose receipt lookups take a moment and count how many run at once; it
    /// knows no delivery.
    #[derive(Default)]
    struct SlowReceipts {
        now: AtomicUsize,
        most: AtomicUsize,
    }

    fn unused<T>() -> StoreResult<T> {
        Err(StoreError::Failed(anyhow::anyhow!("not used by this test")))
    }

    #[async_trait::async_trait]
    impl DeliveryLog for SlowReceipts {
        async fn create_notification(&self, _: &Notification) -> StoreResult<Created> {
            unused()
        }
        async fn get_notification(
            &self,
            _: &OrgId,
            _: &NotificationId,
        ) -> StoreResult<Option<Logged>> {
            unused()
        }
        async fn put_records(&self, _: &Notification, _: &[DeliveryRecord]) -> StoreResult<()> {
            unused()
        }
        async fn claim(
            &self,
            _: &OrgId,
            _: &NotificationId,
            _: &RecipientRef,
            _: Slot,
            _: Duration,
        ) -> StoreResult<Claim> {
            unused()
        }
        async fn finish(
            &self,
            _: &OrgId,
            _: &NotificationId,
            _: &RecipientRef,
            _: Slot,
            _: Finish,
        ) -> StoreResult<bool> {
            unused()
        }
        async fn ack(&self, _: &OrgId, _: &NotificationId, _: &UserId) -> StoreResult<bool> {
            unused()
        }
        async fn respond(
            &self,
            _: &OrgId,
            _: &NotificationId,
            _: &UserId,
            _: &crate::domain::Response,
        ) -> StoreResult<Option<crate::domain::Response>> {
            unused()
        }
        async fn remember_sms(
            &self,
            _: Option<&OrgId>,
            _: &crate::domain::PhoneNumber,
            _: &crate::ports::SmsSent,
        ) -> StoreResult<()> {
            unused()
        }
        async fn last_sms(
            &self,
            _: Option<&OrgId>,
            _: &crate::domain::PhoneNumber,
        ) -> StoreResult<Option<crate::ports::SmsSent>> {
            unused()
        }
        async fn first_inbound(&self, _: &OrgId, _: &str) -> StoreResult<bool> {
            unused()
        }
        async fn put_link(&self, _: &crate::domain::ResponseLink) -> StoreResult<()> {
            unused()
        }
        async fn link_for(
            &self,
            _: &crate::domain::ResponseLink,
            _: &crate::domain::SealedCode,
        ) -> StoreResult<Option<crate::domain::SealedCode>> {
            unused()
        }
        async fn link(&self, _: &str) -> StoreResult<Option<crate::domain::ResponseLink>> {
            unused()
        }
        async fn receipt(&self, _: &ReceiptKey, _: Finish) -> StoreResult<ReceiptMatch> {
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            Ok(ReceiptMatch::Unknown)
        }
        async fn list_notifications(
            &self,
            _: &OrgId,
            _: Option<&ListPosition>,
            _: usize,
        ) -> StoreResult<Vec<NotificationSummary>> {
            unused()
        }
    }

    #[tokio::test]
    async fn a_batch_of_receipts_is_applied_concurrently_within_a_bound() {
        let log = Arc::new(SlowReceipts::default());
        let receipts = Receipts::new(log.clone());
        let batch: Vec<Option<ProviderReceipt>> = (0..100)
            .map(|i| {
                Some(ProviderReceipt {
                    key: ReceiptKey::global(Provider::Sns, &format!("m-{i}")),
                    status: ReceiptStatus::Delivered,
                    at: chrono::Utc::now(),
                })
            })
            .chain([None])
            .collect();
        let sum = receipts.apply_all(batch).await.unwrap();
        assert_eq!((sum.unknown, sum.ignored), (100, 1));
        let most = log.most.load(Ordering::SeqCst);
        assert!(
            (2..=RECEIPT_CONCURRENCY).contains(&most),
            "{most} receipts were applied at once"
        );
    }
}
