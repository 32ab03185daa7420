//! The local runner's storage: every port it keeps (settings, directory, secrets, the
//! delivery log, the stand-in providers' outbox) in one SQLite database under
//! `--data-dir`. Items are the same JSON the in-memory adapters hold; claims and
//! finishes apply the same rules ([`RecordState`]), checked by the
//! same conformance suite as the in-memory and DynamoDB logs.

mod db;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flare_shared::domain::{
    CommunicationSettings, ControlCenterId, DeliveryRecord, DeliveryStatus, EmailSettings,
    Notification, NotificationId, OrgId, RecipientRef, Slot, SmsSettings, User, UserId,
};
use flare_shared::memory::{OutboxEntry, OutboxJournal};
use flare_shared::ports::*;
use rusqlite::{Connection, OptionalExtension, params};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::Arc;

pub use db::Db;

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
    let mut stmt =
        c.prepare_cached("SELECT user, at FROM acks WHERE org = ?1 AND nid = ?2 ORDER BY user")?;
    let acks = stmt
        .query_map(params![org, nid], |r| {
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
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some(Logged {
        notification,
        records,
        acks,
    }))
}

// ---------------------------------------------------------------------------- settings

/// Where each kind keeps its secrets revision in the stored JSON.
const SMS_REV: &str = "$.secrets_at";
const EMAIL_REV: &str = "$.smtp.secrets_at";

/// The stored setting's secrets revision: `None` when there is no such setting.
fn stored_rev(
    c: &rusqlite::Connection,
    (org, kind, key, rev): (&str, &str, &str, &str),
) -> anyhow::Result<Option<Option<String>>> {
    Ok(c.prepare_cached(
        "SELECT json_extract(body, ?4) FROM settings WHERE org = ?1 AND kind = ?2 AND key = ?3",
    )?
    .query_row(params![org, kind, key, rev], |r| {
        r.get::<_, Option<String>>(0)
    })
    .optional()?)
}

fn delete_setting(
    c: &rusqlite::Connection,
    org: &str,
    kind: &str,
    key: &str,
) -> anyhow::Result<bool> {
    Ok(
        c.prepare_cached("DELETE FROM settings WHERE org = ?1 AND kind = ?2 AND key = ?3")?
            .execute(params![org, kind, key])?
            > 0,
    )
}

/// [`Expect`] owned, to cross to the writer thread.
enum OwnedExpect {
    Absent,
    At(Option<String>),
}

fn owned(e: Expect<'_>) -> OwnedExpect {
    match e {
        Expect::Absent => OwnedExpect::Absent,
        Expect::At(at) => OwnedExpect::At(at.map(str::to_string)),
    }
}

fn borrowed(e: &OwnedExpect) -> Expect<'_> {
    match e {
        OwnedExpect::Absent => Expect::Absent,
        OwnedExpect::At(at) => Expect::At(at.as_deref()),
    }
}

const SMS: &str = "sms";
const EMAIL: &str = "email";
const COMMUNICATION: &str = "communication";

impl Sqlite {
    fn get_setting<T: DeserializeOwned>(
        &self,
        org: &OrgId,
        kind: &str,
        key: &str,
    ) -> StoreResult<Option<T>> {
        self.db.read(|c| {
            one(
                c,
                "SELECT body FROM settings WHERE org = ?1 AND kind = ?2 AND key = ?3",
                params![org.as_str(), kind, key],
            )
        })
    }

    async fn put_setting<T: Serialize>(
        &self,
        org: &OrgId,
        kind: &'static str,
        key: &str,
        v: &T,
    ) -> StoreResult<()> {
        let (org, key, body) = (
            org.to_string(),
            key.to_string(),
            to_json(v).map_err(StoreError::Failed)?,
        );
        self.db
            .write_one(move |c| {
                c.prepare_cached("INSERT OR REPLACE INTO settings (org, kind, key, body) VALUES (?1, ?2, ?3, ?4)")?
                    .execute(params![org, kind, key, body])?;
                Ok(())
            })
            .await
    }

    /// Writes `v` only over what `expect` says is stored, its secrets revision read at
    /// `rev` (a JSON path) in the same call on the one writer, so nothing comes between.
    async fn put_setting_if<T: Serialize>(
        &self,
        org: &OrgId,
        (kind, key, rev): (&'static str, &str, &'static str),
        v: &T,
        expect: Expect<'_>,
    ) -> StoreResult<bool> {
        let (org, key, body) = (
            org.to_string(),
            key.to_string(),
            to_json(v).map_err(StoreError::Failed)?,
        );
        let expect = owned(expect);
        self.db
            .write_one(move |c| {
                let stored = stored_rev(c, (&org, kind, &key, rev))?;
                if !borrowed(&expect).matches(stored.as_ref().map(Option::as_deref)) {
                    return Ok(false);
                }
                c.prepare_cached("INSERT OR REPLACE INTO settings (org, kind, key, body) VALUES (?1, ?2, ?3, ?4)")?
                    .execute(params![org, kind, key, body])?;
                Ok(true)
            })
            .await
    }

    /// Deletes the setting saved at secrets revision `at` (read at the JSON path `rev`).
    async fn delete_setting_if(
        &self,
        org: &OrgId,
        (kind, key, rev): (&'static str, &str, &'static str),
        at: Option<&str>,
    ) -> StoreResult<bool> {
        let (org, key, at) = (org.to_string(), key.to_string(), at.map(str::to_string));
        self.db
            .write_one(move |c| {
                let stored = stored_rev(c, (&org, kind, &key, rev))?;
                if !Expect::At(at.as_deref()).matches(stored.as_ref().map(Option::as_deref)) {
                    return Ok(false);
                }
                self::delete_setting(c, &org, kind, &key)
            })
            .await
    }
}

#[async_trait]
impl SettingsStore for Sqlite {
    async fn get_sms(&self, org: &OrgId, cc: &ControlCenterId) -> StoreResult<Option<SmsSettings>> {
        self.get_setting(org, SMS, cc.as_str())
    }
    async fn list_sms(&self, org: &OrgId) -> StoreResult<Vec<SmsSettings>> {
        self.db.read(|c| {
            rows(
                c,
                "SELECT body FROM settings WHERE org = ?1 AND kind = ?2 ORDER BY key",
                params![org.as_str(), SMS],
            )
        })
    }
    async fn put_sms(&self, org: &OrgId, v: &SmsSettings) -> StoreResult<()> {
        self.put_setting(org, SMS, v.control_center_id.as_str(), v)
            .await
    }
    async fn put_sms_if(
        &self,
        org: &OrgId,
        v: &SmsSettings,
        expect: Expect<'_>,
    ) -> StoreResult<bool> {
        let at = (SMS, v.control_center_id.as_str(), SMS_REV);
        self.put_setting_if(org, at, v, expect).await
    }
    async fn delete_sms(
        &self,
        org: &OrgId,
        cc: &ControlCenterId,
        at: Option<&str>,
    ) -> StoreResult<bool> {
        self.delete_setting_if(org, (SMS, cc.as_str(), SMS_REV), at)
            .await
    }
    async fn get_email(&self, org: &OrgId) -> StoreResult<Option<EmailSettings>> {
        self.get_setting(org, EMAIL, "")
    }
    async fn put_email(&self, org: &OrgId, v: &EmailSettings) -> StoreResult<()> {
        self.put_setting(org, EMAIL, "", v).await
    }
    async fn put_email_if(
        &self,
        org: &OrgId,
        v: &EmailSettings,
        expect: Expect<'_>,
    ) -> StoreResult<bool> {
        self.put_setting_if(org, (EMAIL, "", EMAIL_REV), v, expect)
            .await
    }
    async fn delete_email(&self, org: &OrgId, at: Option<&str>) -> StoreResult<bool> {
        self.delete_setting_if(org, (EMAIL, "", EMAIL_REV), at)
            .await
    }
    async fn get_communication(&self, org: &OrgId) -> StoreResult<Option<CommunicationSettings>> {
        self.get_setting(org, COMMUNICATION, "")
    }
    async fn put_communication(&self, org: &OrgId, v: &CommunicationSettings) -> StoreResult<()> {
        self.put_setting(org, COMMUNICATION, "", v).await
    }
}

// ---------------------------------------------------------------------------- directory

#[async_trait]
impl Directory for Sqlite {
    async fn get_user(&self, org: &OrgId, id: &UserId) -> StoreResult<Option<User>> {
        self.db.read(|c| {
            one(
                c,
                "SELECT body FROM users WHERE org = ?1 AND id = ?2",
                params![org.as_str(), id.as_str()],
            )
        })
    }
    async fn get_users(&self, org: &OrgId, ids: &[UserId]) -> StoreResult<Vec<User>> {
        self.db.read(|c| {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.extend(one::<User>(
                    c,
                    "SELECT body FROM users WHERE org = ?1 AND id = ?2",
                    params![org.as_str(), id.as_str()],
                )?);
            }
            Ok(out)
        })
    }
    async fn list_users(&self, org: &OrgId) -> StoreResult<Vec<User>> {
        self.db.read(|c| {
            rows(
                c,
                "SELECT body FROM users WHERE org = ?1 ORDER BY id",
                params![org.as_str()],
            )
        })
    }
    async fn put_user(&self, org: &OrgId, user: &User) -> StoreResult<()> {
        let (org, id) = (org.to_string(), user.user_id.to_string());
        let body = to_json(user).map_err(StoreError::Failed)?;
        self.db
            .write_one(move |c| {
                c.prepare_cached(
                    "INSERT OR REPLACE INTO users (org, id, body) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![org, id, body])?;
                Ok(())
            })
            .await
    }
    async fn delete_user(&self, org: &OrgId, id: &UserId) -> StoreResult<bool> {
        let (org, id) = (org.to_string(), id.to_string());
        self.db
            .write_one(move |c| {
                Ok(
                    c.prepare_cached("DELETE FROM users WHERE org = ?1 AND id = ?2")?
                        .execute(params![org, id])?
                        > 0,
                )
            })
            .await
    }
    async fn update_user(
        &self,
        org: &OrgId,
        id: &UserId,
        change: &(dyn for<'u> Fn(&'u mut User) + Send + Sync),
    ) -> StoreResult<Option<User>> {
        // The change runs here, not on the writer: it is written only if the stored body
        // is still the one it was made from, and made again from the new one otherwise
        // (another process on the same file). In this process, changes to one user take
        // turns.
        let stripe = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (org.as_str(), id.as_str()).hash(&mut h);
            (h.finish() % USER_LOCKS as u64) as usize
        };
        let _turn = self.user_locks[stripe].lock().await;
        for _ in 0..UPDATE_TRIES {
            let before: Option<String> = self.db.read(|c| {
                Ok(
                    c.prepare_cached("SELECT body FROM users WHERE org = ?1 AND id = ?2")?
                        .query_row(params![org.as_str(), id.as_str()], |r| r.get(0))
                        .optional()?,
                )
            })?;
            let Some(before) = before else {
                return Ok(None);
            };
            let mut user: User = from_json(&before).map_err(StoreError::Failed)?;
            change(&mut user);
            let after = to_json(&user).map_err(StoreError::Failed)?;
            let (o, i) = (org.to_string(), id.to_string());
            let written = self
                .db
                .write_one(move |c| {
                    Ok(c.prepare_cached(
                        "UPDATE users SET body = ?3 WHERE org = ?1 AND id = ?2 AND body = ?4",
                    )?
                    .execute(params![o, i, after, before])?
                        > 0)
                })
                .await?;
            if written {
                return Ok(Some(user));
            }
        }
        Err(StoreError::Unavailable(anyhow::anyhow!(
            "user {id} kept changing under {UPDATE_TRIES} tries"
        )))
    }
    async fn create_user(&self, org: &OrgId, user: &User) -> StoreResult<bool> {
        let (org, id) = (org.to_string(), user.user_id.to_string());
        let body = to_json(user).map_err(StoreError::Failed)?;
        self.db
            .write_one(move |c| {
                Ok(c.prepare_cached(
                    "INSERT OR IGNORE INTO users (org, id, body) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![org, id, body])?
                    > 0)
            })
            .await
    }
}

// ---------------------------------------------------------------------------- secrets

#[async_trait]
impl SecretStore for Sqlite {
    async fn get(&self, k: &SecretKey) -> StoreResult<Option<SecretString>> {
        let name = k.name(SECRET_PREFIX);
        self.db.read(|c| {
            Ok(
                c.prepare_cached("SELECT value FROM secrets WHERE name = ?1")?
                    .query_row(params![name], |r| r.get::<_, String>(0))
                    .optional()?
                    .map(SecretString::from),
            )
        })
    }
    async fn put(&self, k: &SecretKey, value: &SecretString) -> StoreResult<()> {
        let (name, value) = (k.name(SECRET_PREFIX), value.expose_secret().to_string());
        self.db
            .write_one(move |c| {
                c.prepare_cached("INSERT OR REPLACE INTO secrets (name, value) VALUES (?1, ?2)")?
                    .execute(params![name, value])?;
                Ok(())
            })
            .await
    }
    async fn delete(&self, k: &SecretKey) -> StoreResult<()> {
        let name = k.name(SECRET_PREFIX);
        self.db
            .write_one(move |c| {
                c.prepare_cached("DELETE FROM secrets WHERE name = ?1")?
                    .execute(params![name])?;
                Ok(())
            })
            .await
    }
}

impl Sqlite {
    /// Stores a secret under its full name (`flare/acme/smtp/password`), as an earlier
    /// store kept it: for importing one.
    pub async fn import_secret(&self, name: &str, value: SecretString) -> StoreResult<()> {
        let (name, value) = (name.to_string(), value.expose_secret().to_string());
        self.db
            .write_one(move |c| {
                c.prepare_cached("INSERT OR IGNORE INTO secrets (name, value) VALUES (?1, ?2)")?
                    .execute(params![name, value])?;
                Ok(())
            })
            .await
    }
}

// ---------------------------------------------------------------------------- delivery log

/// A record's key columns: (org, notification, recipient, channel).
fn record_key(
    org: &OrgId,
    id: &NotificationId,
    recipient: &RecipientRef,
    slot: Slot,
) -> [String; 4] {
    [org.to_string(), id.to_string(), recipient.key(), slot.key()]
}

/// Reads one record's state on the writer, lets `f` change it, and writes it back when
/// `f` says it changed: the read and the write are one step, as a conditional update is.
fn update_record<R>(
    c: &Connection,
    key: &[String; 4],
    f: impl FnOnce(&mut RecordState) -> (R, bool),
) -> anyhow::Result<Option<R>> {
    let Some(mut state) = one::<RecordState>(
        c,
        "SELECT state FROM records WHERE org = ?1 AND nid = ?2 AND recipient = ?3 AND channel = ?4",
        params![key[0], key[1], key[2], key[3]],
    )?
    else {
        return Ok(None);
    };
    let (out, changed) = f(&mut state);
    if changed {
        c.prepare_cached(
            "UPDATE records SET state = ?5, pending = ?6 WHERE org = ?1 AND nid = ?2 AND recipient = ?3 AND channel = ?4",
        )?
        .execute(params![
            key[0],
            key[1],
            key[2],
            key[3],
            to_json(&state)?,
            state.status == DeliveryStatus::Pending
        ])?;
    }
    Ok(Some(out))
}

#[async_trait]
impl DeliveryLog for Sqlite {
    async fn create_notification(&self, n: &Notification) -> StoreResult<Created> {
        let (org, id) = (n.org_id.to_string(), n.notification_id.to_string());
        let created_ms = n.created_at.timestamp_millis();
        let body = to_json(n).map_err(StoreError::Failed)?;
        self.db
            .write_one(move |c| {
                let new = c
                    .prepare_cached(
                        "INSERT OR IGNORE INTO notifications (org, id, created_ms, body) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![org, id, created_ms, body])?
                    > 0;
                Ok(if new {
                    Created::New
                } else {
                    Created::AlreadyExists
                })
            })
            .await
    }

    async fn get_notification(
        &self,
        org: &OrgId,
        id: &NotificationId,
    ) -> StoreResult<Option<Logged>> {
        self.db.read(|c| logged(c, org.as_str(), id.as_str()))
    }

    async fn recipient_records(
        &self,
        org: &OrgId,
        id: &NotificationId,
        recipient: &RecipientRef,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        self.db.read(|c| {
            records(
                c,
                &format!("SELECT {RECORD_COLUMNS} FROM records WHERE org = ?1 AND nid = ?2 AND recipient = ?3 ORDER BY channel"),
                params![org.as_str(), id.as_str(), recipient.key()],
            )
        })
    }

    async fn put_records(&self, n: &Notification, records: &[DeliveryRecord]) -> StoreResult<()> {
        let org = n.org_id.to_string();
        let items = records
            .iter()
            .map(|r| {
                Ok((
                    r.notification_id.to_string(),
                    r.recipient.key(),
                    r.slot().key(),
                    r.status == DeliveryStatus::Pending,
                    to_json(&RecordState::of(r))?,
                    to_json(r)?,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(StoreError::Failed)?;
        self.db
            .write(move |c| {
                let mut stmt = c.prepare_cached(
                    "INSERT OR IGNORE INTO records (org, nid, recipient, channel, pending, state, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for (nid, recipient, channel, pending, state, body) in &items {
                    stmt.execute(params![org, nid, recipient, channel, pending, state, body])?;
                }
                Ok(())
            })
            .await
    }

    async fn claim(
        &self,
        org: &OrgId,
        id: &NotificationId,
        recipient: &RecipientRef,
        slot: Slot,
        lease: std::time::Duration,
    ) -> StoreResult<Claim> {
        let key = record_key(org, id, recipient, slot);
        self.db
            .write_one(move |c| {
                let claim = update_record(c, &key, |r| {
                    let claim = r.claim(Utc::now(), lease);
                    let changed = matches!(claim, Claim::Claimed { .. });
                    (claim, changed)
                })?;
                Ok(claim.unwrap_or(Claim::Missing))
            })
            .await
    }

    async fn finish(
        &self,
        org: &OrgId,
        id: &NotificationId,
        recipient: &RecipientRef,
        slot: Slot,
        outcome: Finish,
    ) -> StoreResult<bool> {
        let key = record_key(org, id, recipient, slot);
        self.db
            .write_one(move |c| {
                let moved = update_record(c, &key, |r| {
                    let moved = r.finish(outcome, Utc::now());
                    (moved, moved)
                })?;
                Ok(moved.unwrap_or(false))
            })
            .await
    }

    async fn receipt(
        &self,
        key: &flare_shared::domain::receipt::ReceiptKey,
        outcome: Finish,
    ) -> StoreResult<ReceiptMatch> {
        let key = key.as_str().to_string();
        self.db
            .write_one(move |c| {
                // The partial index on the state's receipt key finds it.
                let mut found = c
                    .prepare_cached(
                        "SELECT org, nid, recipient, channel FROM records WHERE json_extract(state, '$.receipt_key') = ?1 LIMIT 2",
                    )?
                    .query_map(params![key], |r| {
                        Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?])
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                // A key two deliveries share (a gateway that reuses its ids) names neither.
                if found.len() != 1 {
                    return Ok(ReceiptMatch::Unknown);
                }
                let k = found.remove(0);
                let slot = Slot::parse_key(&k[3]).context("a stored record's channel")?;
                let moved = update_record(c, &k, |r| {
                    let moved = r.finish(outcome, Utc::now());
                    (moved, moved)
                })?
                .unwrap_or(false);
                let [org, nid, recipient, _] = k;
                Ok(ReceiptMatch::Found {
                    target: ReceiptTarget {
                        org_id: OrgId::parse(&org).context("a stored org id")?,
                        notification_id: NotificationId::parse_existing(&nid)
                            .context("a stored notification id")?,
                        recipient,
                        channel: slot.channel,
                    },
                    moved,
                })
            })
            .await
    }

    async fn list_notifications(
        &self,
        org: &OrgId,
        after: Option<&ListPosition>,
        limit: usize,
    ) -> StoreResult<Vec<NotificationSummary>> {
        self.db.read(|c| {
            let (ms, id) = after.map_or((i64::MAX, String::new()), |a| {
                (a.created_ms, a.notification_id.to_string())
            });
            // Newest first from the index; "after" a place is strictly older than it.
            let notifications: Vec<Notification> = rows(
                c,
                "SELECT body FROM notifications WHERE org = ?1 AND (?4 = 0 OR (created_ms, id) < (?2, ?3)) ORDER BY created_ms DESC, id DESC LIMIT ?5",
                params![org.as_str(), ms, id, after.is_some(), limit as i64],
            )?;
            let mut counted = c.prepare_cached(
                "SELECT json_extract(state, '$.status'), count(*) FROM records WHERE org = ?1 AND nid = ?2 GROUP BY 1",
            )?;
            notifications
                .into_iter()
                .map(|n| {
                    let mut counts = StatusCounts::default();
                    let by_status = counted
                        .query_map(params![org.as_str(), n.notification_id.as_str()], |r| {
                            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    for (status, k) in by_status {
                        let status: DeliveryStatus =
                            serde_json::from_value(serde_json::Value::String(status))?;
                        counts.add_many(status, u64::try_from(k)?);
                    }
                    Ok(NotificationSummary {
                        notification: n,
                        counts,
                    })
                })
                .collect()
        })
    }

    async fn ack(&self, org: &OrgId, id: &NotificationId, user: &UserId) -> StoreResult<bool> {
        let (org, id, user) = (org.to_string(), id.to_string(), user.to_string());
        self.db
            .write_one(move |c| {
                let exists = c
                    .prepare_cached("SELECT 1 FROM notifications WHERE org = ?1 AND id = ?2")?
                    .exists(params![org, id])?;
                if !exists {
                    return Ok(false);
                }
                let inserted = c
                    .prepare_cached(
                        "INSERT OR IGNORE INTO acks (org, nid, user, at) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![org, id, user, Utc::now().to_rfc3339()])?;
                Ok(inserted == 1)
            })
            .await
    }
}

// ---------------------------------------------------------------------------- outbox

#[async_trait]
impl OutboxJournal for Sqlite {
    async fn append(&self, entry: &OutboxEntry) -> anyhow::Result<u64> {
        let body = to_json(entry)?;
        let seq = self
            .db
            .write_one(move |c| {
                c.prepare_cached("INSERT INTO outbox (body) VALUES (?1)")?
                    .execute(params![body])?;
                Ok(c.last_insert_rowid())
            })
            .await?;
        Ok(u64::try_from(seq)?)
    }

    async fn entries(&self) -> anyhow::Result<Vec<OutboxEntry>> {
        Ok(self
            .db
            .read(|c| rows(c, "SELECT body FROM outbox ORDER BY seq", []))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db() -> (Sqlite, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("flare-sqlite-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        (Sqlite::open(&dir.join("flare.db")).unwrap(), dir)
    }

    fn user(id: &str) -> User {
        serde_json::from_value(serde_json::json!({
            "user_id": id, "name": "", "license": "basic_responder", "virtual": false}))
        .unwrap()
    }

    /// A hundred changes at once to one user: each lands (none is lost to another's write).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_changes_to_a_user_all_land() {
        let (db, dir) = temp_db();
        let org = OrgId::parse("acme").unwrap();
        db.put_user(&org, &user("u-1")).await.unwrap();
        let id = UserId::parse("u-1").unwrap();
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (db, org, id) = (db.clone(), org.clone(), id.clone());
                tokio::spawn(async move {
                    db.update_user(&org, &id, &|u: &mut User| u.name.push('x'))
                        .await
                        .unwrap()
                        .unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let u = db.get_user(&org, &id).await.unwrap().unwrap();
        assert_eq!(u.name.len(), 100);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A write that fails leaves nothing behind and does not undo the others committed
    /// with it; what was answered is on disk for the next open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failed_write_is_undone_alone_and_answered_writes_survive_a_reopen() {
        let (db, dir) = temp_db();
        let org = OrgId::parse("acme").unwrap();
        let writes: Vec<_> = (0..200)
            .map(|i| {
                let (db, org) = (db.clone(), org.clone());
                tokio::spawn(async move { db.put_user(&org, &user(&format!("u-{i}"))).await })
            })
            .collect();
        let failing = db.db.write(|c| -> anyhow::Result<()> {
            c.execute(
                "INSERT INTO users (org, id, body) VALUES ('acme', 'half', '{}')",
                [],
            )?;
            anyhow::bail!("fails after its first statement")
        });
        assert!(failing.await.is_err());
        for w in writes {
            w.await.unwrap().unwrap();
        }
        drop(db);
        let db = Sqlite::open(&dir.join("flare.db")).unwrap();
        assert_eq!(db.list_users(&org).await.unwrap().len(), 200);
        assert!(
            db.get_user(&org, &UserId::parse("half").unwrap())
                .await
                .unwrap()
                .is_none()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
