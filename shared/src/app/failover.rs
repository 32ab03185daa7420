//! Sending through an organization's own provider with a second one behind it: the
//! contract's failover (`"failover": "sns"` for an HTTP gateway, `"ses"` for SMTP).
//! The secondary is used when the primary fails permanently, fails on the job's last
//! attempt, or while its circuit is open ([`crate::domain::health`]); the circuit's
//! state is read and written through a [`HealthStore`] every instance shares.

use crate::domain::health::{CircuitPolicy, HealthScope, ProviderHealth};
use crate::domain::{OrgId, Provider};
use crate::ports::{HealthStore, Receipt, SendError};
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
}

impl Accepted {
    pub fn direct(receipt: Receipt) -> Self {
        Self {
            receipt,
            failover_from: None,
            receipt_key: None,
        }
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
    /// outcome. A health store that cannot be read or written never stops a send: the
    /// circuit is then treated as closed, and the failure logged.
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
        let now = chrono::Utc::now();
        let health = match self.health.get(org, scope).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = ?e, "provider health unreadable: trying the primary");
                ProviderHealth::default()
            }
        };
        let over = |receipt| Accepted {
            receipt,
            failover_from: Some(primary),
            receipt_key: None,
        };
        if health.is_open(now) {
            tracing::info!(
                primary = primary.as_str(),
                "the primary's circuit is open: sending through the failover provider"
            );
            return secondary_send().await.map(over);
        }
        let result = primary_send.await;
        // The send may have waited (a gateway's pace, a 429): its outcome is now.
        let now = chrono::Utc::now();
        match result {
            Ok(receipt) => {
                let mut known = health;
                if known.succeeded(now)
                    && let Err(e) = self.health.update(org, scope, &|h| h.succeeded(now)).await
                {
                    tracing::warn!(error = ?e, "recording the provider's success failed");
                }
                Ok(Accepted::direct(receipt))
            }
            Err(e) => {
                let reason = e.reason();
                let policy = self.policy;
                let after = self
                    .health
                    .update(org, scope, &|h| {
                        h.failed(now, &reason, &policy);
                        true
                    })
                    .await;
                let open = match after {
                    Ok(h) => h.is_open(now),
                    Err(store) => {
                        tracing::warn!(error = ?store, "recording the provider's failure failed");
                        false
                    }
                };
                if e.is_transient() && !final_attempt && !open {
                    return Err(e);
                }
                tracing::warn!(
                    primary = primary.as_str(),
                    reason = %reason,
                    circuit_open = open,
                    "the primary failed: sending through the failover provider"
                );
                secondary_send().await.map(over)
            }
        }
    }
}
