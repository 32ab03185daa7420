//! Turning an incident event (or a manual SMS) into a notification: load the settings
//! and recipients, ask the routing policy for the plan, record every (recipient,
//! channel), enqueue what is to be sent now. Idempotent on the notification id.

use crate::domain::input::ManualSmsInput;
use crate::domain::routing::{self, JobTemplate, Recipient, RecipientPlan, RoutingContext};
use crate::domain::settings::effective_email_provider;
use crate::domain::{
    Category, CheckJob, CheckKind, ControlCenterId, DeliveryJob, DeliveryRecord, DeliveryStatus,
    EscalationPlan, ExternalContact, IdempotencyKey, IncidentEvent, Message, Notification,
    NotificationId, OrgId, Provider, RecipientRef, Targets, User, UserId,
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
    /// How many users a route page holds ([`ROUTE_PAGE`]; tests make it small): an
    /// event for more, or with an audience, is routed in pages.
    pub page_size: usize,
}

/// How many users one routing invocation plans, writes and queues at most.
pub const ROUTE_PAGE: usize = 1_000;

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

    /// Routes one incident event: in one piece when it lists at most a page of users
    /// and has no audience, else in pages ([`Self::route_in_pages`]).
    pub async fn route(&self, event: &IncidentEvent) -> Result<Routed, RouteError> {
        let listed = match &event.targets {
            Targets::Users(ids) => ids.len(),
            _ => 0,
        };
        if event.audience.is_some() || listed > self.page_size {
            return self.route_in_pages(event).await;
        }
        // The directory's answer is not needed past planning: it is freed (with
        // `plan_event`'s locals) before the writes.
        let (notification, plans) = self.plan_event(event).await?;
        self.commit(notification, plans).await
    }

    /// What routing decides for an event, from one read of the settings (DynamoDB: one
    /// Query) and one of the directory: the notification and every recipient's plan.
    /// Users come in the event's order; unknown ids are recorded, not dropped.
    async fn plan_event(
        &self,
        event: &IncidentEvent,
    ) -> Result<(Notification, Vec<RecipientPlan>), RouteError> {
        let org = &event.org_id;
        let all = self.settings.all(org).await?;
        let comm = all.communication.clone();
        let providers = Self::providers(&all, &event.control_center_id);
        let (user_ids, contacts, creator) = split_targets(&event.targets);
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
        let settings = comm.unwrap_or_default();
        let ctx = RoutingContext {
            category: event.category,
            settings: &settings,
            sms_provider: providers.sms,
            email_provider: providers.email,
        };
        let notification = event_notification(event, creator_user, &ctx);
        let (recipients, unknown) = event_recipients(&user_ids, &by_id, &contacts);
        let mut plans = routing::plan(&ctx, &recipients).recipients;
        plans.extend(unknown);
        plans.extend(creator.as_ref().and_then(|c| creator_plan(c, creator_user)));
        Ok((notification, plans))
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
        let (n, records, written) = match created {
            Created::New => {
                self.log.put_first_records(&n, &planned).await?;
                let w = planned.len();
                (n, planned, w)
            }
            Created::AlreadyExists => self.write_missing(n, planned).await?,
        };
        if created == Created::New {
            self.metrics.notification(n.category, recipients);
        }
        // The records written now are the last `written` (a replay's come after the
        // stored ones).
        self.count_decided(&records[records.len() - written..]);
        let jobs = ready_jobs(&n, &records);
        if !jobs.is_empty() {
            self.queue.enqueue(&jobs).await?;
        }
        self.schedule_timers(&n, &records).await?;
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

    /// A replay: the notification as first routed (its window and escalation are those
    /// of the settings then, not now: they may have changed since), and the planned
    /// records it does not have yet, written now. Answers the notification, every
    /// record (the stored ones, then the new ones) and how many were written.
    async fn write_missing(
        &self,
        n: Notification,
        planned: Vec<DeliveryRecord>,
    ) -> Result<(Notification, Vec<DeliveryRecord>, usize), RouteError> {
        let (stored, existing) = match self
            .log
            .get_notification(&n.org_id, &n.notification_id)
            .await?
        {
            Some(l) => (Some(l.notification), l.records),
            None => (None, Vec::new()),
        };
        let n = stored.unwrap_or(n);
        let missing = missing_records(planned, &existing);
        if !missing.is_empty() {
            self.log.put_records(&n, &missing).await?;
        }
        let w = missing.len();
        Ok((n, existing.into_iter().chain(missing).collect(), w))
    }

    /// What routing decided is final at once (skipped, or failed before a send): counted
    /// when its record is first written.
    fn count_decided(&self, written: &[DeliveryRecord]) {
        for r in written {
            let Some(outcome) = decided_outcome(r.status) else {
                continue;
            };
            self.metrics.delivery(&DeliveryMetric {
                channel: r.channel,
                provider: r.provider,
                outcome,
                fallback: r.fallback,
                latency: None,
                sms: None,
            });
        }
    }

    /// Sets the notification's timers (delayed checks): its fallback window's and its
    /// first escalation cycle's, where it has them.
    async fn schedule_timers(
        &self,
        n: &Notification,
        records: &[DeliveryRecord],
    ) -> Result<(), RouteError> {
        if let Some((check, delay)) = window_timer(n, records) {
            self.queue.schedule(&check, delay).await?;
        }
        if let Some((check, delay)) = first_escalation(n, records, chrono::Utc::now()) {
            self.queue.schedule(&check, delay).await?;
        }
        Ok(())
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
        let settings = all.communication.clone().unwrap_or_default();
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
            audience: None,
            pages: 0,
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

/// An event's targets: the users (in its order), the contacts who are not users, and
/// the SOS creator whose emergency contacts are told.
fn split_targets(targets: &Targets) -> (Vec<UserId>, Vec<ExternalContact>, Option<UserId>) {
    match targets {
        Targets::Users(ids) => (ids.clone(), Vec::new(), None),
        Targets::UsersAndContacts { users, contacts } => (users.clone(), contacts.clone(), None),
        Targets::SosCreator(id) => (Vec::new(), Vec::new(), Some(id.clone())),
    }
}

/// The notification an event makes: its own message (an SOS without one says who
/// raised it), with the fallback window and escalation the settings give it now (kept
/// with it: a replay goes by these, whatever the settings say then).
fn event_notification(
    event: &IncidentEvent,
    creator: Option<&User>,
    ctx: &RoutingContext,
) -> Notification {
    Notification {
        notification_id: event.notification_id.clone(),
        org_id: event.org_id.clone(),
        category: event.category,
        incident_id: Some(event.incident_id.clone()),
        control_center_id: event.control_center_id.clone(),
        message: event
            .message
            .clone()
            .unwrap_or_else(|| sos_message(creator, event)),
        created_at: event.time.unwrap_or_else(chrono::Utc::now),
        app_fallback_seconds: routing::fallback_window(ctx),
        escalation: ctx
            .settings
            .dispatch_escalation
            .filter(|_| event.category == Category::Dispatch)
            .map(|e| EscalationPlan {
                after_seconds: e.after_seconds,
                cycles: e.cycles,
                started_at: chrono::Utc::now(),
            }),
        audience: event.audience.clone(),
        pages: 0,
    }
}

/// Whom an event's plan covers, in order: its users as the directory has them, then
/// the contacts (numbered in their list's order). A user id the directory does not
/// have is planned apart, as unknown.
fn event_recipients<'a>(
    user_ids: &[UserId],
    by_id: &HashMap<&UserId, &'a User>,
    contacts: &'a [ExternalContact],
) -> (Vec<Recipient<'a>>, Vec<RecipientPlan>) {
    let mut recipients = Vec::new();
    let mut unknown = Vec::new();
    for id in user_ids {
        match by_id.get(id).copied() {
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
    (recipients, unknown)
}

/// An SOS that tells no one says why, on its creator: not in the directory, or without
/// emergency contacts.
fn creator_plan(creator: &UserId, found: Option<&User>) -> Option<RecipientPlan> {
    match found {
        None => Some(routing::unknown_user(creator)),
        Some(u) if u.emergency_contacts.is_empty() => Some(routing::no_emergency_contacts(creator)),
        Some(_) => None,
    }
}

/// The planned records a replay finds missing from the stored ones (by recipient and
/// slot).
fn missing_records(planned: Vec<DeliveryRecord>, stored: &[DeliveryRecord]) -> Vec<DeliveryRecord> {
    let have: HashSet<(String, crate::domain::Slot)> = stored
        .iter()
        .map(|r| (r.recipient.key(), r.slot()))
        .collect();
    planned
        .into_iter()
        .filter(|r| !have.contains(&(r.recipient.key(), r.slot())))
        .collect()
}

/// The outcome a record has from routing alone (skipped, or failed before a send);
/// `None` while it is still to be sent.
fn decided_outcome(status: DeliveryStatus) -> Option<Outcome> {
    match status {
        DeliveryStatus::Skipped => Some(Outcome::Skipped),
        DeliveryStatus::Failed => Some(Outcome::Failed),
        _ => None,
    }
}

/// The jobs routing enqueues: every pending record not held behind push. Escalation
/// cycles' records (a replay finds them) have their own timers.
fn ready_jobs(n: &Notification, records: &[DeliveryRecord]) -> Vec<DeliveryJob> {
    let template = JobTemplate::from(n);
    records
        .iter()
        .filter(|r| r.status == DeliveryStatus::Pending && !r.held_behind_push() && r.cycle == 0)
        .filter_map(|r| {
            Some(template.job(
                &r.recipient,
                r.channel,
                r.provider?,
                r.destination.as_ref()?,
                r.fallback,
            ))
        })
        .collect()
}

/// The fallback window's timer, when the notification has a window and holds something
/// behind push: one for the whole notification, not one per recipient. When it fires,
/// every recipient whose push was sent without a receipt in time gets SMS and email (a
/// push sent later makes the check look again).
fn window_timer(
    n: &Notification,
    records: &[DeliveryRecord],
) -> Option<(CheckJob, std::time::Duration)> {
    let window = n.app_fallback_seconds?;
    let held = records.iter().any(DeliveryRecord::held_behind_push);
    held.then(|| {
        let check = CheckJob {
            check: CheckKind::AppFallback,
            org_id: n.org_id.clone(),
            notification_id: n.notification_id.clone(),
            cycle: 0,
            page: 0,
            chain: None,
            lane: n.category.lane(),
        };
        (check, std::time::Duration::from_secs(window.into()))
    })
}

/// The timer of an escalating notification's first cycle, due when its plan says (at
/// once when that has passed). One per notification too: each cycle sets the next
/// one's, so a replay after a cycle started (its records exist) leaves that chain alone.
fn first_escalation(
    n: &Notification,
    records: &[DeliveryRecord],
    now: chrono::DateTime<chrono::Utc>,
) -> Option<(CheckJob, std::time::Duration)> {
    let e = n.escalation?;
    if records.iter().any(|r| r.cycle > 0) {
        return None;
    }
    let check = CheckJob {
        check: CheckKind::Escalation,
        org_id: n.org_id.clone(),
        notification_id: n.notification_id.clone(),
        cycle: 1,
        page: 0,
        // A chain of its own: a replay's timer is another chain, and whichever runs
        // first is the one the notification keeps.
        chain: Some(uuid::Uuid::new_v4().to_string()),
        lane: n.category.lane(),
    };
    Some((check, (e.due(1) - now).to_std().unwrap_or_default()))
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

mod pages;
#[cfg(test)]
mod tests;
