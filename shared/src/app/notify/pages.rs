//! Routing in pages: an event for more users than one page holds, or with an audience,
//! is resolved to user ids (the directory read a page at a time), split into route
//! pages stored with the notification, and each page is planned, written and queued on
//! its own: the first in the router's invocation, the others as route-page checks on
//! the push queue (their own invocations). No invocation holds more than a page of
//! users, records or jobs, and a replay routes the pages the first routing fixed.

use super::*;
use crate::domain::{Channel, CheckJob, RoutePage};

/// What routing one page did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRouted {
    /// Users the page holds (0 when it was routed already).
    pub users: usize,
    pub records_written: usize,
    pub jobs_enqueued: usize,
}

impl Notifier {
    /// Routes an event in pages. A replay (the notification exists) resolves nothing
    /// again: it finishes the pages not routed yet, from the stored plan.
    pub(super) async fn route_in_pages(&self, event: &IncidentEvent) -> Result<Routed, RouteError> {
        let org = &event.org_id;
        match self.log.notification(org, &event.notification_id).await? {
            Some(n) if n.pages > 0 => return self.resume_pages(n).await,
            // First routed in one piece (by a version before pages): replayed the same way.
            Some(_) => {
                let (n, plans) = self.plan_event(event).await?;
                return self.commit(n, plans).await;
            }
            None => {}
        }
        let all = self.settings.all(org).await?;
        let providers = Self::providers(&all, &event.control_center_id);
        let ids = self.resolve(event).await?;
        if all.communication.is_none() && !providers.known && ids.is_empty() {
            return Err(RouteError::UnknownOrganization(org.clone()));
        }
        let settings = all.communication.unwrap_or_default();
        let ctx = RoutingContext {
            category: event.category,
            settings: &settings,
            sms_provider: providers.sms,
            email_provider: providers.email,
        };
        let mut n = event_notification(event, None, &ctx);
        let pages = split_pages(ids, self.page_size);
        n.audience = event.audience.clone();
        n.pages = pages.len() as u32;
        let users: usize = pages.iter().map(|p| p.user_ids.len()).sum();
        // The plan first: once the notification exists, its pages do.
        self.log.put_route_pages(&n, &pages).await?;
        drop(pages);
        if self.log.create_notification(&n).await? == Created::AlreadyExists {
            // Another routing of the same event got there first: its plan stands.
            let stored = self.log.notification(org, &n.notification_id).await?;
            return self.resume_pages(stored.unwrap_or(n)).await;
        }
        self.metrics.notification(n.category, users);
        self.start_pages(&n, users)
            .await
            .map_err(|e| RouteError::Incomplete(Box::new(e)))
    }

    /// The first routing's part after the notification exists: the record layout for
    /// every page, the escalation timer (once, here), the other pages queued, then the
    /// first page routed in this invocation.
    async fn start_pages(&self, n: &Notification, users: usize) -> Result<Routed, RouteError> {
        // About three records a user: one per channel.
        self.log
            .prepare_layout(n, users * Channel::ALL.len())
            .await?;
        if let Some((check, delay)) = first_escalation(n, &[], chrono::Utc::now()) {
            self.queue.schedule(&check, delay).await?;
        }
        self.queue_pages(n, 2..=n.pages).await?;
        let first = self.route_page(n, 1).await?;
        let routed = Routed {
            notification_id: n.notification_id.clone(),
            replay: false,
            recipients: users,
            records_written: first.records_written,
            jobs_enqueued: first.jobs_enqueued,
        };
        tracing::info!(
            notification_id = %n.notification_id,
            org_id = %n.org_id,
            category = n.category.as_str(),
            recipients = users,
            pages = n.pages,
            "notification routed in pages: the first routed, the others queued"
        );
        Ok(routed)
    }

    /// A replay of a notification routed in pages: every page not routed yet is
    /// queued again (the first routed here). The escalation timer is set again only
    /// when the first page was never routed (the first routing stopped before it, and
    /// may have stopped before setting the timer).
    async fn resume_pages(&self, n: Notification) -> Result<Routed, RouteError> {
        let mut users = 0;
        let mut unrouted = Vec::new();
        for page in 1..=n.pages {
            match self
                .log
                .route_page(&n.org_id, &n.notification_id, page)
                .await?
            {
                Some(p) => {
                    users += p.user_ids.len();
                    if !p.routed {
                        unrouted.push(page);
                    }
                }
                None => {
                    tracing::warn!(notification_id = %n.notification_id, page, "route page missing (expired?)")
                }
            }
        }
        let mut first = PageRouted::default();
        if unrouted.first() == Some(&1) {
            if let Some((check, delay)) = first_escalation(&n, &[], chrono::Utc::now()) {
                self.queue.schedule(&check, delay).await?;
            }
            first = self.route_page(&n, 1).await?;
        }
        self.queue_pages(&n, unrouted.into_iter().filter(|p| *p != 1))
            .await?;
        tracing::info!(notification_id = %n.notification_id, pages = n.pages, "replay of a notification routed in pages");
        Ok(Routed {
            notification_id: n.notification_id,
            replay: true,
            recipients: users,
            records_written: first.records_written,
            jobs_enqueued: first.jobs_enqueued,
        })
    }

    /// Queues a route-page check for each of `pages` (at once, in the notification's
    /// lane, so an all-call's pages do not wait behind bulk pushes).
    async fn queue_pages(
        &self,
        n: &Notification,
        pages: impl IntoIterator<Item = u32>,
    ) -> Result<(), RouteError> {
        for page in pages {
            let check = CheckJob {
                check: CheckKind::RoutePage,
                org_id: n.org_id.clone(),
                notification_id: n.notification_id.clone(),
                cycle: 0,
                page,
                chain: None,
                lane: n.category.lane(),
            };
            self.queue
                .schedule(&check, std::time::Duration::ZERO)
                .await?;
        }
        Ok(())
    }

    /// The users an event is for: its listed ids (in its order), then every user of
    /// its audience not listed (in id order), each once. The directory is read a page
    /// at a time and only ids are kept.
    async fn resolve(&self, event: &IncidentEvent) -> Result<Vec<UserId>, RouteError> {
        let (mut ids, _, _) = split_targets(&event.targets);
        let Some(audience) = &event.audience else {
            return Ok(ids);
        };
        let mut seen: HashSet<UserId> = ids.iter().cloned().collect();
        let mut after: Option<UserId> = None;
        loop {
            let users = self
                .directory
                .list_users_after(&event.org_id, after.as_ref(), self.page_size)
                .await?;
            let full = users.len() >= self.page_size;
            after = users.last().map(|u| u.user_id.clone());
            ids.extend(
                users
                    .into_iter()
                    .filter(|u| audience.includes(u))
                    .map(|u| u.user_id)
                    .filter(|id| seen.insert(id.clone())),
            );
            if !full || after.is_none() {
                return Ok(ids);
            }
        }
    }

    /// Routes page `page` of `n`: plans its users with the settings of now, writes the
    /// records none exist for, queues what is to be sent now and the fallback window's
    /// timer when the page holds anything behind push, and marks the page routed. A
    /// page routed already does nothing; one that stopped part-way is completed (a
    /// record is written only where none exists, and a claim makes a job queued twice
    /// harmless).
    pub async fn route_page(&self, n: &Notification, page: u32) -> Result<PageRouted, RouteError> {
        let (org, id) = (&n.org_id, &n.notification_id);
        let Some(p) = self.log.route_page(org, id, page).await? else {
            tracing::warn!(notification_id = %id, page, "no such route page: nothing to route");
            return Ok(PageRouted::default());
        };
        if p.routed {
            return Ok(PageRouted::default());
        }
        let all = self.settings.all(org).await?;
        let providers = Self::providers(&all, &n.control_center_id);
        let settings = all.communication.unwrap_or_default();
        let ctx = RoutingContext {
            category: n.category,
            settings: &settings,
            sms_provider: providers.sms,
            email_provider: providers.email,
        };
        let found = self.directory.get_users(org, &p.user_ids).await?;
        let by_id: HashMap<&UserId, &User> = found.iter().map(|u| (&u.user_id, u)).collect();
        let (recipients, unknown) = event_recipients(&p.user_ids, &by_id, &[]);
        let mut plans = routing::plan(&ctx, &recipients).recipients;
        plans.extend(unknown);
        let records: Vec<DeliveryRecord> = plans.iter().flat_map(|r| r.records(id)).collect();
        drop(plans);
        self.log.put_records(n, &records).await?;
        self.count_decided(&records);
        let jobs = ready_jobs(n, &records);
        if !jobs.is_empty() {
            self.queue.enqueue(&jobs).await?;
        }
        if let Some((check, delay)) = window_timer(n, &records) {
            self.queue.schedule(&check, delay).await?;
        }
        self.log.page_routed(org, id, page).await?;
        tracing::info!(notification_id = %id, page, users = p.user_ids.len(), records = records.len(), jobs = jobs.len(), "route page routed");
        Ok(PageRouted {
            users: p.user_ids.len(),
            records_written: records.len(),
            jobs_enqueued: jobs.len(),
        })
    }
}

/// Splits the users into pages of at most `size` (at least one page, so that even an
/// audience of nobody is a notification with a plan).
fn split_pages(ids: Vec<UserId>, size: usize) -> Vec<RoutePage> {
    if ids.is_empty() {
        return vec![RoutePage {
            page: 1,
            user_ids: Vec::new(),
            routed: false,
        }];
    }
    ids.chunks(size.max(1))
        .enumerate()
        .map(|(i, chunk)| RoutePage {
            page: i as u32 + 1,
            user_ids: chunk.to_vec(),
            routed: false,
        })
        .collect()
}
