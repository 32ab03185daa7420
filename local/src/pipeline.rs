//! The local pipeline: in-process queues and workers doing what SQS and the delivery
//! functions do in AWS, with the same claims, retries with backoff and fallback.

use flare_shared::app::deliver::{DeliverError, Deliverer, lease_for, retry_delay};
use flare_shared::domain::{Channel, CheckJob, DeliveryJob, Lane};
use flare_shared::ports::{JobQueue, QueueError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Attempts before a transient failure becomes final (the DLQ's `maxReceiveCount`).
pub const MAX_ATTEMPTS: u32 = 5;

/// A local attempt has no invocation deadline; its sends are bounded by the providers'
/// own timeouts (25 s at most), so its claim holds a minute.
const LEASE: Duration = lease_for(Duration::from_secs(55));

struct Queued {
    job: DeliveryJob,
    attempt: u32,
}

/// Two in-process queues per channel, one per lane: each channel's worker takes urgent
/// work first (as the urgent lane's own queue and reserved concurrency do in AWS).
#[derive(Clone)]
pub struct LocalQueue {
    /// By channel (push, SMS, email), then lane (urgent, normal).
    senders: Arc<[[mpsc::UnboundedSender<Queued>; 2]; 3]>,
    /// Checks whose time has come (each waits out its delay in its own task first).
    checks: mpsc::UnboundedSender<CheckJob>,
    /// How many checks were scheduled (a delayed SQS message each, in AWS).
    scheduled: Arc<std::sync::atomic::AtomicU64>,
    /// Jobs queued or running (a retry waiting out its delay is not): what an all-call's
    /// next route page waits on, so the runner never holds a whole large send's jobs.
    backlog: Arc<std::sync::atomic::AtomicUsize>,
    /// One route page at a time (SQS and Lambda's concurrency bound them in AWS).
    route_pages: Arc<tokio::sync::Semaphore>,
}

/// One job in [`LocalQueue::backlog`] until dropped.
struct InBacklog(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for InBacklog {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The backlog under which the next route page of an all-call is routed: a few pages'
/// jobs, enough to keep every channel's workers busy, and memory flat whatever the
/// audience.
pub const ROUTE_BACKLOG: usize = 5 * flare_shared::app::notify::ROUTE_PAGE;

impl LocalQueue {
    /// The queue and its workers: each job runs in its own task, retried with
    /// exponential backoff (`retry_base`, doubling, capped at 30 times it).
    pub fn start_with(mut deliverer: Deliverer, retry_base: Duration) -> Self {
        let lanes = || {
            let (urgent_tx, urgent_rx) = mpsc::unbounded_channel();
            let (normal_tx, normal_rx) = mpsc::unbounded_channel();
            ([urgent_tx, normal_tx], (urgent_rx, normal_rx))
        };
        let (push_tx, push_rx) = lanes();
        let (sms_tx, sms_rx) = lanes();
        let (email_tx, email_rx) = lanes();
        let (checks_tx, checks_rx) = mpsc::unbounded_channel();
        let queue = Self {
            senders: Arc::new([push_tx, sms_tx, email_tx]),
            checks: checks_tx,
            scheduled: Default::default(),
            backlog: Default::default(),
            route_pages: Arc::new(tokio::sync::Semaphore::new(1)),
        };
        deliverer.queue = Some(Arc::new(queue.clone()));
        for rx in [push_rx, sms_rx, email_rx] {
            tokio::spawn(worker(rx, deliverer.clone(), queue.clone(), retry_base));
        }
        tokio::spawn(check_worker(
            checks_rx,
            deliverer,
            queue.clone(),
            retry_base,
        ));
        queue
    }

    /// Runs a previous run's timers: each check at its time (at once when it is past).
    pub fn resume_checks(&self, checks: Vec<(CheckJob, chrono::DateTime<chrono::Utc>)>) {
        for (check, at) in checks {
            let delay = (at - chrono::Utc::now()).to_std().unwrap_or_default();
            self.after(check, delay);
        }
    }

    /// How many checks were scheduled since the start (retries of failed ones included).
    pub fn checks_scheduled(&self) -> u64 {
        self.scheduled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Hands `check` to the check worker once `delay` has passed.
    fn after(&self, check: CheckJob, delay: Duration) {
        self.scheduled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tx = self.checks.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(check);
        });
    }

    /// Queues jobs a previous run left unfinished, each with the attempts its record
    /// has used (so a restart does not grant a job more attempts than the queue would).
    pub fn resume(&self, jobs: Vec<(DeliveryJob, u32)>) {
        for (job, used) in jobs {
            let _ = self.send(Queued {
                job,
                attempt: (used + 1).min(MAX_ATTEMPTS),
            });
        }
    }

    fn send(&self, q: Queued) -> Result<(), QueueError> {
        let i = match q.job.channel {
            Channel::Push => 0,
            Channel::Sms => 1,
            Channel::Email => 2,
        };
        let lane = match q.job.lane() {
            Lane::Urgent => 0,
            Lane::Normal => 1,
        };
        self.backlog
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.senders[i][lane]
            .send(q)
            .map_err(|_| QueueError::Failed(anyhow::anyhow!("local queue closed")))
    }

    /// Counts a job's attempt out of the backlog when dropped: when the attempt ends,
    /// or its task unwinds from a panic (it may be sent again, and counted again, as a
    /// retry).
    fn attempt(&self) -> InBacklog {
        InBacklog(self.backlog.clone())
    }

    /// Waits for the route-page slot and for the backlog to fall under
    /// [`ROUTE_BACKLOG`].
    async fn route_page_turn(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permit = self.route_pages.clone().acquire_owned().await.ok()?;
        while self.backlog.load(std::sync::atomic::Ordering::Relaxed) >= ROUTE_BACKLOG {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Some(permit)
    }
}

#[async_trait::async_trait]
impl JobQueue for LocalQueue {
    async fn enqueue(&self, jobs: &[DeliveryJob]) -> Result<(), QueueError> {
        for job in jobs {
            let copies = if flare_shared::faults::duplicate_job(job) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                self.send(Queued {
                    job: job.clone(),
                    attempt: 1,
                })?;
            }
        }
        Ok(())
    }

    /// A timer in this process: the check runs when `delay` has passed. A restart
    /// loses the timer but not the check: `resume` finds the held records and
    /// schedules it again from their stored window.
    async fn schedule(&self, check: &CheckJob, delay: Duration) -> Result<(), QueueError> {
        self.after(check.clone(), delay);
        Ok(())
    }
}

/// Runs the checks whose time has come, each in its own task; a check that fails
/// (storage) runs again after `retry_base`, as SQS would redeliver it.
async fn check_worker(
    mut rx: mpsc::UnboundedReceiver<CheckJob>,
    deliverer: Deliverer,
    queue: LocalQueue,
    retry_base: Duration,
) {
    while let Some(check) = rx.recv().await {
        let deliverer = deliverer.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            let _turn = if check.check == flare_shared::domain::CheckKind::RoutePage {
                queue.route_page_turn().await
            } else {
                None
            };
            if let Err(e) = in_lane(
                check.lane,
                deliverer.check_and_reschedule(&check, chrono::Utc::now()),
            )
            .await
            {
                tracing::warn!(notification_id = %check.notification_id, error = ?e, "check failed: running it again");
                queue.after(check, retry_base);
            }
        });
    }
}

/// Runs `f` with its database writes ahead of the others waiting when `lane` is urgent:
/// the runner's one SQLite writer would otherwise queue a dispatch's records and claims
/// behind a bulk send's (in AWS each function writes to DynamoDB on its own).
pub(crate) async fn in_lane<F: std::future::Future>(lane: Lane, f: F) -> F::Output {
    match lane {
        Lane::Urgent => flare_sqlite::urgent(f).await,
        Lane::Normal => f.await,
    }
}

/// Jobs of one channel that run at once (Lambda's concurrency times its batch size, in
/// AWS): a 10,000-recipient send must not open 10,000 connections to one SMTP server.
pub const CONCURRENCY: usize = 256;

/// Of a channel's slots, how many only urgent jobs may take.
pub const URGENT_RESERVED: usize = 64;

async fn worker(
    (mut urgent, mut normal): (
        mpsc::UnboundedReceiver<Queued>,
        mpsc::UnboundedReceiver<Queued>,
    ),
    deliverer: Deliverer,
    queue: LocalQueue,
    retry_base: Duration,
) {
    let running = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    // Normal jobs may hold all slots but URGENT_RESERVED (the urgent lane's reserved
    // concurrency, in AWS): bulk work waiting on a gateway's pace or a 429 can never
    // take the slots an urgent job needs, whoever's gateway it is.
    let normal_slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY - URGENT_RESERVED));
    loop {
        // A slot first, then the job: whenever one frees, an urgent job waiting takes
        // it before any normal one (biased: the urgent lane is always looked at first).
        let Ok(permit) = running.clone().acquire_owned().await else {
            return;
        };
        let mut normal_permit = normal_slots.clone().try_acquire_owned().ok();
        let (q, normal_permit) = loop {
            tokio::select! {
                biased;
                Some(q) = urgent.recv() => break (q, None),
                Some(q) = normal.recv(), if normal_permit.is_some() => {
                    break (q, normal_permit.take());
                }
                p = normal_slots.clone().acquire_owned(), if normal_permit.is_none() => {
                    normal_permit = p.ok();
                }
                else => return,
            }
        };
        let deliverer = deliverer.clone();
        let queue = queue.clone();
        let in_backlog = queue.attempt();
        tokio::spawn(async move {
            let last = q.attempt >= MAX_ATTEMPTS;
            let outcome = in_lane(q.job.lane(), deliverer.deliver(&q.job, last, LEASE)).await;
            // Waiting for a retry holds no slot, and is not backlog.
            drop(permit);
            drop(normal_permit);
            drop(in_backlog);
            match outcome {
                Ok(_) => {}
                // Not a failed attempt: back in its lane after the delay (the runner
                // sets no pace wait limit, so this is for completeness).
                Err(DeliverError::Postpone { after }) => {
                    tokio::time::sleep(after).await;
                    let _ = queue.send(q);
                }
                Err(e) if !last => {
                    let reason = match &e {
                        DeliverError::Retry { reason } => reason.clone(),
                        other => format!("{other:?}"),
                    };
                    let delay = retry_delay(retry_base, q.attempt);
                    tracing::info!(notification_id = %q.job.notification_id, channel = q.job.channel.as_str(), attempt = q.attempt, delay_ms = delay.as_millis() as u64, reason = %reason, "retrying");
                    tokio::time::sleep(delay).await;
                    let _ = queue.send(Queued {
                        job: q.job,
                        attempt: q.attempt + 1,
                    });
                }
                Err(e) => {
                    tracing::error!(notification_id = %q.job.notification_id, channel = q.job.channel.as_str(), error = ?e, "job given up after {MAX_ATTEMPTS} attempts: settling its record (its dead-letter queue in AWS)");
                    settle(&deliverer, &q.job).await;
                }
            }
        });
    }
}

/// What the delivery functions do with a dead-lettered job: end its record
/// `gave_up: dead_letter` (and release a push's held SMS and email), waiting out a live
/// attempt's lease if one still holds the record.
async fn settle(deliverer: &Deliverer, job: &DeliveryJob) {
    for _ in 0..3 {
        match deliverer.abandon(job).await {
            Ok(outcome) => {
                tracing::info!(notification_id = %job.notification_id, channel = job.channel.as_str(), outcome = ?outcome, "dead-lettered job settled");
                return;
            }
            Err(e) => {
                tracing::warn!(notification_id = %job.notification_id, channel = job.channel.as_str(), error = ?e, "dead-lettered job not settled yet");
                tokio::time::sleep(LEASE).await;
            }
        }
    }
}
