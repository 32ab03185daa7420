//! The local runner's storage: every port it keeps (settings, directory, secrets, the
//! delivery log, the stand-in providers' outbox) in one SQLite database under
//! `--data-dir`. Items are the same JSON the in-memory adapters hold; claims and
//! finishes apply the same rules ([`RecordState`]), checked by the
//! same conformance suite as the in-memory and DynamoDB logs.

mod db;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flare_memory::{OutboxEntry, OutboxJournal};
use flare_shared::domain::{
    CommunicationSettings, ControlCenterId, DeliveryRecord, DeliveryStatus, EmailSettings,
    Notification, NotificationId, OrgId, RecipientRef, RoutePage, Slot, SmsSettings, User, UserId,
};
use flare_shared::ports::*;
use rusqlite::{Connection, OptionalExtension, params};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::Arc;

pub use db::{Db, urgent};

/// Every store over one database: clone the `Arc` into each port.
#[derive(Clone)]
pub struct Sqlite {
    db: Arc<Db>,
    /// Changes to one user wait for each other (striped by user): a change is made from
    /// the stored user and written only if that is still what is stored, and unordered
    /// changes to one user would otherwise keep undoing each other's reads.
    user_locks: Arc<[tokio::sync::Mutex<()>; USER_LOCKS]>,
}

const USER_LOCKS: usize = 64;

/// Secrets are named as in Secrets Manager, under this prefix.
const SECRET_PREFIX: &str = "flare";
/// How often a user write is tried again when another write came in between.
const UPDATE_TRIES: usize = 20;

fn to_json<T: Serialize>(v: &T) -> anyhow::Result<String> {
    serde_json::to_string(v).context("encoding a stored item")
}

fn from_json<T: DeserializeOwned>(s: &str) -> anyhow::Result<T> {
    serde_json::from_str(s).context("decoding a stored item")
}

fn rows<T: DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> anyhow::Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let bodies = stmt
        .query_map(params, |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    bodies.iter().map(|b| from_json(b)).collect()
}

fn one<T: DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> anyhow::Result<Option<T>> {
    let body: Option<String> = conn
        .prepare_cached(sql)?
        .query_row(params, |r| r.get(0))
        .optional()?;
    body.as_deref().map(from_json).transpose()
}

/// A record is stored as written first (`body`) and its [`RecordState`] (`state`),
/// the only part claims and finishes read and write.
const RECORD_COLUMNS: &str = "state, body";

fn records(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> anyhow::Result<Vec<DeliveryRecord>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut q = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = q.next()? {
        let mut r: DeliveryRecord = from_json(row.get_ref(1)?.as_str()?)?;
        from_json::<RecordState>(row.get_ref(0)?.as_str()?)?.apply(&mut r);
        out.push(r);
    }
    Ok(out)
}

impl Sqlite {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            db: Arc::new(Db::open(path)?),
            user_locks: Arc::new(std::array::from_fn(|_| tokio::sync::Mutex::new(()))),
        })
    }

    /// Notifications that still have pending records, or an escalation started in the
    /// last 6 hours (its timers are not records), with all their records: the work a
    /// restart resumes.
    pub fn unfinished(&self) -> StoreResult<Vec<Logged>> {
        let ids: std::collections::BTreeSet<(String, String)> = self.db.read(|c| {
            // Pending records, and escalations (whose timers are not records): the caller
            // decides what is still due.
            let mut stmt = c.prepare(
                "SELECT DISTINCT org, nid FROM records WHERE pending = 1
                 UNION SELECT org, id FROM notifications
                   WHERE json_extract(body, '$.escalation.started_at') > ?1",
            )?;
            // An escalation ends at most 5 cycles of an hour after it started.
            let since = (chrono::Utc::now() - chrono::TimeDelta::hours(6))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let ids = stmt
                .query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(ids)
        })?;
        let mut out = Vec::new();
        for (org, nid) in ids {
            let logged = self.db.read(|c| logged(c, &org, &nid))?;
            out.extend(logged);
        }
        Ok(out)
    }

    /// The route-page checks of the pages not routed yet of notifications that exist
    /// (a runner stopped while routing an all-call), in the notification's lane.
    pub fn unrouted_pages(&self) -> StoreResult<Vec<flare_shared::domain::CheckJob>> {
        use flare_shared::domain::{Category, CheckJob, CheckKind};
        self.db.read(|c| {
            let mut stmt = c.prepare(
                "SELECT p.org, p.nid, p.page, json_extract(n.body, '$.category')
                 FROM route_pages p JOIN notifications n ON n.org = p.org AND n.id = p.nid
                 WHERE coalesce(json_extract(p.body, '$.routed'), 0) = 0
                 ORDER BY p.org, p.nid, p.page",
            )?;
            let rows: Vec<(String, String, u32, String)> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?;
            rows.into_iter()
                .map(|(org, nid, page, category)| {
                    let category: Category =
                        serde_json::from_value(serde_json::Value::String(category))
                            .context("a stored category")?;
                    Ok(CheckJob {
                        check: CheckKind::RoutePage,
                        org_id: OrgId::parse(&org).context("a stored org id")?,
                        notification_id: NotificationId::parse_existing(&nid)
                            .context("a stored notification id")?,
                        cycle: 0,
                        page,
                        chain: None,
                        lane: category.lane(),
                    })
                })
                .collect()
        })
    }

    /// How many records of a notification are still pending (from the index that
    /// holds only those).
    pub fn pending_count(&self, org: &OrgId, id: &NotificationId) -> StoreResult<u64> {
        self.db.read(|c| {
            Ok(c.prepare_cached(
                "SELECT count(*) FROM records WHERE org = ?1 AND nid = ?2 AND pending = 1",
            )?
            .query_row(params![org.as_str(), id.as_str()], |r| r.get::<_, i64>(0))?
            .try_into()?)
        })
    }

    /// Drops every claim: after a restart no attempt is alive, and a claim left by one
    /// that died would hold its record until the lease ran out.
    pub async fn release_claims(&self) -> StoreResult<usize> {
        self.db
            .write(|c| {
                let mut claimed = Vec::new();
                {
                    let mut stmt = c.prepare(
                        "SELECT org, nid, recipient, channel, state FROM records WHERE pending = 1",
                    )?;
                    let mut q = stmt.query([])?;
                    while let Some(r) = q.next()? {
                        let mut state: RecordState = from_json(r.get_ref(4)?.as_str()?)?;
                        if state.claimed_until.take().is_some() {
                            let key: [String; 4] = [r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?];
                            claimed.push((key, to_json(&state)?));
                        }
                    }
                }
                for ([org, nid, recipient, channel], body) in &claimed {
                    c.execute(
                        "UPDATE records SET state = ?5 WHERE org = ?1 AND nid = ?2 AND recipient = ?3 AND channel = ?4",
                        params![org, nid, recipient, channel, body],
                    )?;
                }
                Ok(claimed.len())
            })
            .await
    }
}

/// A page of a notification: the records of at most `recipients` recipients after the
/// recipient key `after` (from the primary key's order: reads only the page), the acks
/// of the page's users, and the key to continue after when more follow.
#[allow(clippy::type_complexity)]
fn logged_page(
    c: &Connection,
    org: &str,
    nid: &str,
    after: Option<&str>,
    recipients: usize,
) -> anyhow::Result<Option<(Logged, Option<String>)>> {
    let Some(notification) = one::<Notification>(
        c,
        "SELECT body FROM notifications WHERE org = ?1 AND id = ?2",
        params![org, nid],
    )?
    else {
        return Ok(None);
    };
    // One more than the page: whether a next page follows.
    let keys: Vec<String> = c
        .prepare_cached(
            "SELECT DISTINCT recipient FROM records WHERE org = ?1 AND nid = ?2 AND recipient > ?3 ORDER BY recipient LIMIT ?4",
        )?
        .query_map(
            params![org, nid, after.unwrap_or(""), recipients as i64 + 1],
            |r| r.get(0),
        )?
        .collect::<Result<_, _>>()?;
    let next = (keys.len() > recipients).then(|| keys[recipients - 1].clone());
    let page = &keys[..keys.len().min(recipients)];
    let (Some(first), Some(last)) = (page.first(), page.last()) else {
        return Ok(Some((
            Logged {
                notification,
                records: Vec::new(),
                acks: Vec::new(),
                responses: Vec::new(),
            },
            next,
        )));
    };
    let records = records(
        c,
        &format!(
            "SELECT {RECORD_COLUMNS} FROM records WHERE org = ?1 AND nid = ?2 AND recipient >= ?3 AND recipient <= ?4 ORDER BY recipient, channel"
        ),
        params![org, nid, first, last],
    )?;
    let users: Vec<&str> = page
        .iter()
        .filter_map(|k| k.strip_prefix("user:"))
        .collect();
    let (acks, responses) = match (users.first(), users.last()) {
        (Some(from), Some(to)) => (
            acks(c, org, nid, Some((from, to)))?,
            responses(c, org, nid, Some((from, to)))?,
        ),
        _ => (Vec::new(), Vec::new()),
    };
    Ok(Some((
        Logged {
            notification,
            records,
            acks,
            responses,
        },
        next,
    )))
}

/// A notification's acks, of the users between `range`'s ends when given.
fn acks(
    c: &Connection,
    org: &str,
    nid: &str,
    range: Option<(&str, &str)>,
) -> anyhow::Result<Vec<(UserId, DateTime<Utc>)>> {
    let (from, to) = range.unwrap_or(("", "\u{10ffff}"));
    let mut stmt = c.prepare_cached(
        "SELECT user, at FROM acks WHERE org = ?1 AND nid = ?2 AND user >= ?3 AND user <= ?4 ORDER BY user",
    )?;
    stmt.query_map(params![org, nid, from, to], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?
    .collect::<Result<Vec<_>, _>>()?
    .into_iter()
    .map(|(u, at)| {
        Ok((
            UserId::parse(&u).map_err(|e| anyhow::anyhow!("stored user id {u:?}: {e}"))?,
            DateTime::parse_from_rfc3339(&at)
                .context("a stored acknowledgement time")?
                .with_timezone(&Utc),
        ))
    })
    .collect()
}

fn logged(c: &Connection, org: &str, nid: &str) -> anyhow::Result<Option<Logged>> {
    let Some(notification) = one::<Notification>(
        c,
        "SELECT body FROM notifications WHERE org = ?1 AND id = ?2",
        params![org, nid],
    )?
    else {
        return Ok(None);
    };
    let records = records(
        c,
        &format!(
            "SELECT {RECORD_COLUMNS} FROM records WHERE org = ?1 AND nid = ?2 ORDER BY recipient, channel"
        ),
        params![org, nid],
    )?;
    let acks = acks(c, org, nid, None)?;
    let responses = responses(c, org, nid, None)?;
    Ok(Some(Logged {
        notification,
        records,
        acks,
        responses,
    }))
}

/// A notification's answers, of the users between `range`'s ends when given.
fn responses(
    c: &Connection,
    org: &str,
    nid: &str,
    range: Option<(&str, &str)>,
) -> anyhow::Result<Vec<(UserId, flare_shared::domain::Response)>> {
    let (from, to) = range.unwrap_or(("", "\u{10ffff}"));
    let mut stmt = c.prepare_cached(
        "SELECT user, body FROM responses WHERE org = ?1 AND nid = ?2 AND user >= ?3 AND user <= ?4 ORDER BY user",
    )?;
    stmt.query_map(params![org, nid, from, to], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?
    .collect::<Result<Vec<_>, _>>()?
    .into_iter()
    .map(|(u, body)| {
        Ok((
            UserId::parse(&u).map_err(|e| anyhow::anyhow!("stored user id {u:?}: {e}"))?,
            serde_json::from_str(&body).context("a stored answer")?,
        ))
    })
    .collect()
}

mod audit;
mod directory;
mod log;
mod outbox;
mod secrets;
mod settings;

#[cfg(test)]
mod tests;
