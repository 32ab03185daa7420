//! Sending through an organization's own provider with a second one behind it: the
//! contract's failover (`"failover": "sns"` for an HTTP gateway, `"ses"` for SMTP).
//! The secondary is used when the primary fails permanently, fails on the job's last
//! attempt, or while its circuit is open ([`crate::domain::health`]); the circuit's
//! state is read and written through a [`HealthStore`] every instance shares.

use crate::domain::health::{CircuitPolicy, HealthScope, ProviderHealth, Route};
use crate::domain::{FailureKind, OrgId, Provider};
use crate::ports::{HealthStore, Receipt, SendError};
use chrono::{DateTime, Utc};
use std::future::Future;
use std::sync::Arc;

/// The shared health and the circuit's rule.
#[derive(Clone)]
pub struct Failover {
    pub health: Arc<dyn HealthStore>,
    pub policy: CircuitPolicy,
}

/// A send that a provider accepted, and whether the secondary stood in for `primary`.
#[derive(Debug)]
pub struct Accepted {
    pub receipt: Receipt,
    pub failover_from: Option<Provider>,
    /// Where the provider's receipts will find the delivery.
    pub receipt_key: Option<crate::domain::receipt::ReceiptKey>,
    /// An SMS's encoding and segments, as sent.
    pub sms: Option<crate::domain::SmsCount>,
}

impl Accepted {
    pub fn direct(receipt: Receipt) -> Self {
        Self {
            receipt,
            failover_from: None,
            receipt_key: None,
            sms: None,
        }
    }

    /// With what the SMS it carried costs.
    pub fn with_sms(mut self, count: crate::domain::SmsCount) -> Self {
        self.sms = Some(count);
        self
    }

    /// With the key its provider's receipts will name it by (sent for `org` with the
    /// settings of control center `cc`).
    pub fn keyed(mut self, org: &OrgId, cc: &crate::domain::ControlCenterId) -> Self {
        self.receipt_key = self.receipt.provider_message_id.as_deref().and_then(|id| {
            crate::domain::receipt::ReceiptKey::new(self.receipt.provider, org, cc, id)
        });
        self
    }
}

impl Failover {
    pub fn new(health: Arc<dyn HealthStore>) -> Self {
        Self {
            health,
            policy: CircuitPolicy::default(),
        }
    }

    /// Sends through `primary_send` (the provider `primary`) unless its circuit is open,
    /// falling over to `secondary_send` as the module says; records the primary's
    /// outcome by what it says of the provider ([`FailureKind`]): only a provider that
    /// is down counts toward its circuit; a "slow down" and our own faults never fail
    /// over early, a refusal of this one message fails it over without counting. A
    /// half-open circuit lets one send probe the primary. A health store that cannot be
    /// read or written never stops a send: the circuit is then treated as closed, and
    /// the failure logged.
    pub async fn send<P, S, SF>(
        &self,
        org: &OrgId,
        scope: &HealthScope,
        primary: Provider,
        final_attempt: bool,
        primary_send: P,
        secondary_send: S,
    ) -> Result<Accepted, SendError>
    where
        P: Future<Output = Result<Receipt, SendError>>,
        S: FnOnce() -> SF,
        SF: Future<Output = Result<Receipt, SendError>>,
    {
        let over = |receipt| Accepted {
            receipt,
            sms: None,
            failover_from: Some(primary),
            receipt_key: None,
        };
        let started = chrono::Utc::now();
        let Some(mut known) = self.may_try(org, scope, started).await else {
            tracing::info!(
                primary = primary.as_str(),
                "the primary's circuit is open: sending through the failover provider"
            );
            return secondary_send().await.map(over);
        };
        let result = primary_send.await;
        // The send may have waited (a gateway's pace, a 429): its outcome is now.
        let now = chrono::Utc::now();
        let e = match result {
            Ok(receipt) => {
                // A provider known healthy needs no write (a fan-out costs reads only).
                if known.succeeded(started, now) {
                    self.record(org, scope, &|h| h.succeeded(started, now))
                        .await;
                }
                return Ok(Accepted::direct(receipt));
            }
            Err(e) => e,
        };
        let kind = e.kind();
        let open = match kind {
            FailureKind::ProviderDown => {
                let (reason, policy) = (e.reason(), self.policy);
                self.record(org, scope, &|h| {
                    h.failed(now, &reason, &policy);
                    true
                })
                .await
                .is_some_and(|h| h.is_open(now))
            }
            // A refusal says the provider is up; our pace and our faults say nothing.
            FailureKind::Refused | FailureKind::Throttled | FailureKind::Ours => false,
        };
        let give_up = !e.is_transient() || final_attempt || open;
        if kind == FailureKind::Throttled
            || (kind == FailureKind::Ours && !final_attempt)
            || !give_up
        {
            return Err(e);
        }
        tracing::warn!(
            primary = primary.as_str(),
            reason = %e.reason(),
            circuit_open = open,
            "the primary failed: sending through the failover provider"
        );
        secondary_send().await.map(over)
    }

    /// The primary's health when a send starting `now` may try it (its circuit is
    /// closed, or half-open and this send took the one probe); `None`: it may not.
    async fn may_try(
        &self,
        org: &OrgId,
        scope: &HealthScope,
        now: DateTime<Utc>,
    ) -> Option<ProviderHealth> {
        let health = match self.health.get(org, scope).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = ?e, "provider health unreadable: trying the primary");
                return Some(ProviderHealth::default());
            }
        };
        match health.route(now, &self.policy) {
            Route::Primary => Some(health),
            Route::Secondary => None,
            Route::Probe => {
                let id = uuid::Uuid::new_v4().to_string();
                let policy = self.policy;
                match self
                    .health
                    .update(org, scope, &|h| h.claim_probe(&id, now, &policy))
                    .await
                {
                    Ok(h) if h.probe.as_deref() == Some(id.as_str()) => Some(h),
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(error = ?e, "taking the circuit's probe failed: trying the primary");
                        Some(health)
                    }
                }
            }
        }
    }

    /// Writes a change of the provider's health; the health after it, `None` (logged)
    /// when the store failed.
    async fn record(
        &self,
        org: &OrgId,
        scope: &HealthScope,
        change: &(dyn for<'h> Fn(&'h mut ProviderHealth) -> bool + Send + Sync),
    ) -> Option<ProviderHealth> {
        match self.health.update(org, scope, change).await {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = ?e, "recording the provider's health failed");
                None
            }
        }
    }
}
