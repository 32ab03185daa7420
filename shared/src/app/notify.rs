//! Turning an incident event (or a manual SMS) into a notification: load the settings
//! and recipients, ask the routing policy for the plan, record every (recipient,
//! channel), enqueue what is to be sent now. Idempotent on the notification id.

use crate::domain::input::ManualSmsInput;
use crate::domain::routing::{self, JobTemplate, Recipient, RecipientPlan, RoutingContext};
use crate::domain::settings::effective_email_provider;
use crate::domain::{
    Category, CheckJob, CheckKind, ControlCenterId, DeliveryJob, DeliveryRecord, DeliveryStatus,
    EscalationPlan, IdempotencyKey, IncidentEvent, Message, Notification, NotificationId, OrgId,
    Provider, RecipientRef, Targets, User, UserId,
};

/// How long an `Idempotency-Key` names the same manual SMS.
pub const IDEMPOTENCY_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(24);
use crate::ports::{
    AllSettings, Created, DeliveryLog, DeliveryMetric, Directory, JobQueue, Metrics, Outcome,
    QueueError, SettingsStore, StoreError,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

#[derive(Clone)]
pub struct Notifier {
    pub settings: Arc<dyn SettingsStore>,
    pub directory: Arc<dyn Directory>,
    pub log: Arc<dyn DeliveryLog>,
    pub queue: Arc<dyn JobQueue>,
    pub metrics: Arc<dyn Metrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// Nothing is known of the organization: retrying will not help.
    #[error("unknown organization {0}")]
    UnknownOrganization(OrgId),
    #[error("storage failed")]
    Store(#[from] StoreError),
    #[error("enqueuing failed")]
    Queue(#[from] QueueError),
    /// Writing the records or enqueuing failed after the notification was created, of
    /// whatever kind: routing the event again completes it (the replay path writes the
    /// missing records and enqueues what is pending), so it is always worth a retry;
    /// dropping it would leave records `pending` with no job.
    #[error("routing stopped after the notification was created; routing it again completes it")]
    Incomplete(#[source] Box<RouteError>),
}

impl RouteError {
    /// Worth failing the invocation so Lambda retries it (and, once its retries are spent,
    /// the event waits in the router's failure queue).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RouteError::Store(StoreError::Unavailable(_))
                | RouteError::Queue(QueueError::Unavailable(_))
                | RouteError::Incomplete(_)
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManualSmsError {
    #[error("manual SMS is disabled")]
    Disabled,
    #[error("no such user")]
    UnknownUser,
    #[error(transparent)]
    Route(#[from] RouteError),
}

/// What routing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub notification_id: NotificationId,
    /// The notification already existed: this was a replay (or a retry).
    pub replay: bool,
    pub recipients: usize,
    pub records_written: usize,
    pub jobs_enqueued: usize,
}

/// The effective providers of a notification's control center.
pub(crate) struct Providers {
    pub sms: Option<Provider>,
    pub email: Provider,
    known: bool,
}

impl Providers {
    pub(crate) fn of(all: &AllSettings, cc: &ControlCenterId) -> Providers {
        let sms = all.effective_sms(cc);
        Providers {
            known: sms.is_some() || all.email.is_some(),
            sms: sms.map(|s| s.provider_name()),
            email: effective_email_provider(all.email.as_ref()),
        }
    }
}

impl Notifier {
    fn providers(all: &AllSettings, cc: &ControlCenterId) -> Providers {
        Providers::of(all, cc)
    }

    /// Routes one incident event.
    pub async fn route(&self, event: &IncidentEvent) -> Result<Routed, RouteError> {
        let org = &event.org_id;
        // One read for every setting (DynamoDB: one Query).
        let all = self.settings.all(org).await?;
        let comm = all.communication;
        let providers = Self::providers(&all, &event.control_center_id);

        // Recipients: users in the event's order; unknown ids are recorded, not dropped.
        let (user_ids, contacts, creator) = match &event.targets {
            Targets::Users(ids) => (ids.clone(), Vec::new(), None),
            Targets::UsersAndContacts { users, contacts } => {
                (users.clone(), contacts.clone(), None)
            }
            Targets::SosCreator(id) => (Vec::new(), Vec::new(), Some(id.clone())),
        };
        let lookup: Vec<UserId> = user_ids.iter().chain(creator.iter()).cloned().collect();
        let found = if lookup.is_empty() {
            Vec::new()
        } else {
            self.directory.get_users(org, &lookup).await?
        };
        if comm.is_none() && !providers.known && found.is_empty() {
            return Err(RouteError::UnknownOrganization(org.clone()));
        }
        let by_id: HashMap<&UserId, &User> = found.iter().map(|u| (&u.user_id, u)).collect();
        let creator_user = creator.as_ref().and_then(|c| by_id.get(c).copied());
        let contacts = match creator_user {
            Some(u) => u.emergency_contacts.clone(),
            None => contacts,
        };
        if let (Some(c), None) = (&creator, creator_user) {
            tracing::warn!(notification_id = %event.notification_id, creator_id = %c, "SOS creator not in the directory: no emergency contacts to tell");
        }

        let message = event
            .message
            .clone()
            .unwrap_or_else(|| sos_message(creator_user, event));
        let notification = Notification {
            notification_id: event.notification_id.clone(),
            org_id: org.clone(),
            category: event.category,
            incident_id: Some(event.incident_id.clone()),
            control_center_id: event.control_center_id.clone(),
            message,
            created_at: event.time.unwrap_or_else(chrono::Utc::now),
            app_fallback_seconds: None,
            escalation: None,
        };
        let settings = comm.unwrap_or_default();
        let ctx = RoutingContext {
            category: event.category,
            settings: &settings,
            sms_provider: providers.sms,
            email_provider: providers.email,
        };
        let notification = Notification {
            app_fallback_seconds: routing::fallback_window(&ctx),
            escalation: settings
                .dispatch_escalation
                .filter(|_| event.category == Category::Dispatch)
                .map(|e| EscalationPlan {
                    after_seconds: e.after_seconds,
                    cycles: e.cycles,
                    started_at: chrono::Utc::now(),
                }),
            ..notification
        };
        let mut recipients = Vec::new();
        let mut unknown = Vec::new();
        for id in &user_ids {
            match by_id.get(id) {
                Some(u) => recipients.push(Recipient::User(u)),
                None => unknown.push(routing::unknown_user(id)),
            }
        }
        recipients.extend(
            contacts
                .iter()
                .enumerate()
                .map(|(i, c)| Recipient::Contact {
                    index: i as u32,
                    contact: c,
                }),
        );
        let mut plans = routing::plan(&ctx, &recipients).recipients;
        plans.extend(unknown);
        // An SOS that tells no one says why, on its creator: not in the directory, or
        // without emergency contacts.
        if let Some(c) = &creator {
            match creator_user {
                None => plans.push(routing::unknown_user(c)),
                Some(u) if u.emergency_contacts.is_empty() => {
                    plans.push(routing::no_emergency_contacts(c))
                }
                Some(_) => {}
            }
        }
        // The directory's answer is not needed past planning: free it before the writes.
        drop(recipients);
        drop(by_id);
        drop(contacts);
        drop(found);
        self.commit(notification, plans).await
    }

    /// Records the plan and enqueues what is to be sent now. On a replay only the
    /// missing records are written and only records still pending are enqueued again
    /// (their claims make a duplicate job harmless).
    async fn commit(
        &self,
        n: Notification,
        plans: Vec<RecipientPlan>,
    ) -> Result<Routed, RouteError> {
        let id = n.notification_id.clone();
        let planned: Vec<DeliveryRecord> = plans.iter().flat_map(|p| p.records(&id)).collect();
        let recipients = plans.len();
        drop(plans);
        let created = self.log.create_notification(&n).await?;
        self.complete(n, planned, recipients, created)
            .await
            .map_err(|e| RouteError::Incomplete(Box::new(e)))
    }

    /// The part of [`Self::commit`] after the notification exists.
    async fn complete(
        &self,
        n: Notification,
        planned: Vec<DeliveryRecord>,
        recipients: usize,
        created: Created,
    ) -> Result<Routed, RouteError> {
        let org = n.org_id.clone();
        let id = n.notification_id.clone();
        let mut n = n;
        let (records, written) = match created {
            Created::New => {
                self.log.put_first_records(&n, &planned).await?;
                let w = planned.len();
                (planned, w)
            }
            Created::AlreadyExists => {
                let (stored, existing) = match self.log.get_notification(&org, &id).await? {
                    Some(l) => (Some(l.notification), l.records),
                    None => (None, Vec::new()),
                };
                // The notification as first routed: its window and escalation are those
                // of the settings then, not now (they may have changed since).
                if let Some(stored) = stored {
                    n = stored;
                }
                let have: HashSet<(String, crate::domain::Slot)> = existing
                    .iter()
                    .map(|r| (r.recipient.key(), r.slot()))
                    .collect();
                let missing: Vec<DeliveryRecord> = planned
                    .into_iter()
                    .filter(|r| !have.contains(&(r.recipient.key(), r.slot())))
                    .collect();
                if !missing.is_empty() {
                    self.log.put_records(&n, &missing).await?;
                }
                let w = missing.len();
                (existing.into_iter().chain(missing).collect(), w)
            }
        };
        if created == Created::New {
            self.metrics.notification(n.category, recipients);
        }
        // What routing decided is final at once (skipped, or failed before a send): counted
        // when its record is first written.
        let newly_written = match created {
            Created::New => &records[..],
            Created::AlreadyExists => &records[records.len() - written..],
        };
        for r in newly_written {
            let outcome = match r.status {
                DeliveryStatus::Skipped => Outcome::Skipped,
                DeliveryStatus::Failed => Outcome::Failed,
                _ => continue,
            };
            self.metrics.delivery(&DeliveryMetric {
                channel: r.channel,
                provider: r.provider,
                outcome,
                fallback: r.fallback,
                latency: None,
            });
        }
        let template = JobTemplate::from(&n);
        // Escalation cycles' records (a replay finds them) have their own timers.
        let jobs: Vec<DeliveryJob> = records
            .iter()
            .filter(|r| r.status == DeliveryStatus::Pending && !r.awaiting_push && r.cycle == 0)
            .filter_map(|r| {
                Some(template.job(
                    &r.recipient,
                    r.channel,
                    r.provider?,
                    r.destination.as_ref()?,
                    r.fallback,
                ))
            })
            .collect();
        if !jobs.is_empty() {
            self.queue.enqueue(&jobs).await?;
        }
        // One timer for the whole notification, not one per recipient: when it fires,
        // every recipient whose push was sent without a receipt in time gets SMS and
        // email (a push sent later makes the check look again).
        let held = records
            .iter()
            .any(|r| r.status == DeliveryStatus::Pending && r.awaiting_push);
        if let (Some(window), true) = (n.app_fallback_seconds, held) {
            let check = CheckJob {
                check: CheckKind::AppFallback,
                org_id: org.clone(),
                notification_id: id.clone(),
                cycle: 0,
                lane: n.category.lane(),
            };
            self.queue
                .schedule(&check, std::time::Duration::from_secs(window.into()))
                .await?;
        }
        // Escalation: one timer per notification too, for its first cycle; each cycle
        // sets the next one's (a replay after a cycle started leaves that chain alone).
        let escalating = records.iter().any(|r| r.cycle > 0);
        if let (Some(e), false) = (n.escalation, escalating) {
            let check = CheckJob {
                check: CheckKind::Escalation,
                org_id: org.clone(),
                notification_id: id.clone(),
                cycle: 1,
                lane: n.category.lane(),
            };
            let delay = (e.due(1) - chrono::Utc::now()).to_std().unwrap_or_default();
            self.queue.schedule(&check, delay).await?;
        }
        let routed = Routed {
            notification_id: id,
            replay: created == Created::AlreadyExists,
            recipients,
            records_written: written,
            jobs_enqueued: jobs.len(),
        };
        tracing::info!(
            notification_id = %routed.notification_id,
            org_id = %org,
            category = n.category.as_str(),
            recipients = routed.recipients,
            records_written = routed.records_written,
            jobs_enqueued = routed.jobs_enqueued,
            replay = routed.replay,
            "notification routed"
        );
        Ok(routed)
    }

    /// A dispatcher's SMS to one user (`POST /v1/messages/sms`). With an idempotency
    /// key, the same key from the same organization within [`IDEMPOTENCY_WINDOW`] answers
    /// the first request's notification and sends nothing again (a first request that
    /// stopped part-way is completed, never repeated).
    pub async fn manual_sms(
        &self,
        org: &OrgId,
        input: ManualSmsInput,
        key: Option<&IdempotencyKey>,
    ) -> Result<NotificationId, ManualSmsError> {
        let all = self.settings.all(org).await.map_err(RouteError::from)?;
        let settings = all.communication.unwrap_or_default();
        if !settings.manual_sms {
            return Err(ManualSmsError::Disabled);
        }
        let user = self
            .directory
            .get_user(org, &input.user_id)
            .await
            .map_err(RouteError::from)?
            .ok_or(ManualSmsError::UnknownUser)?;
        let cc = input
            .control_center_id
            .or_else(|| user.control_center_id.clone())
            .unwrap_or_else(ControlCenterId::main);
        let providers = Self::providers(&all, &cc);
        let mut notification_id = NotificationId::generate();
        let mut first = None;
        if let Some(key) = key {
            let id = key.notification_id(org);
            match self
                .log
                .get_notification(org, &id)
                .await
                .map_err(RouteError::from)?
            {
                Some(l) if chrono::Utc::now() - l.notification.created_at < IDEMPOTENCY_WINDOW => {
                    let me = RecipientRef::User(user.user_id.clone());
                    if l.records.iter().any(|r| r.recipient != me) {
                        // The key was used for another user's message: the first one stands.
                        return Ok(id);
                    }
                    first = Some(l.notification);
                    notification_id = id;
                }
                // Older than the window: the key names a new message now.
                Some(_) => {}
                None => notification_id = id,
            }
        }
        let notification = first.unwrap_or(Notification {
            notification_id,
            org_id: org.clone(),
            category: Category::ManualSms,
            incident_id: None,
            control_center_id: cc,
            message: Message {
                title: String::new(),
                body: input.text,
            },
            created_at: chrono::Utc::now(),
            // Manual SMS holds nothing behind push and is not escalated.
            app_fallback_seconds: None,
            escalation: None,
        });
        let ctx = RoutingContext {
            category: Category::ManualSms,
            settings: &settings,
            sms_provider: providers.sms,
            email_provider: providers.email,
        };
        let plans = routing::plan(&ctx, &[Recipient::User(&user)]).recipients;
        let routed = self.commit(notification, plans).await?;
        Ok(routed.notification_id)
    }
}

/// An SOS without a message of its own.
fn sos_message(creator: Option<&User>, event: &IncidentEvent) -> Message {
    let who = creator.map_or("Someone", |u| u.name.as_str());
    Message {
        title: format!("SOS from {who}"),
        body: format!(
            "{who} raised an SOS (incident {}). You are listed as an emergency contact.",
            event.incident_id
        ),
    }
}
