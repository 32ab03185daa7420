//! The directory: users and their devices.

use super::*;

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
    async fn list_users_after(
        &self,
        org: &OrgId,
        after: Option<&UserId>,
        limit: usize,
    ) -> StoreResult<Vec<User>> {
        let after = after.map_or("", |a| a.as_str());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db.read(|c| {
            rows(
                c,
                "SELECT body FROM users WHERE org = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                params![org.as_str(), after, limit],
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
        let (o, id) = (org.to_string(), id.to_string());
        self.change_audited(org, Stored::User(None), move |c| {
            Ok(
                c.prepare_cached("DELETE FROM users WHERE org = ?1 AND id = ?2")?
                    .execute(params![o, id])?
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
                audit_before(Stored::User(None));
                return Ok(None);
            };
            let mut user: User = from_json(&before).map_err(StoreError::Failed)?;
            audit_before(Stored::User(Some(&user)));
            change(&mut user);
            let after = to_json(&user).map_err(StoreError::Failed)?;
            let (o, i) = (org.to_string(), id.to_string());
            let written = self
                .change_audited(org, Stored::User(Some(&user)), move |c| {
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
        let (o, id) = (org.to_string(), user.user_id.to_string());
        let body = to_json(user).map_err(StoreError::Failed)?;
        self.change_audited(org, Stored::User(Some(user)), move |c| {
            Ok(
                c.prepare_cached(
                    "INSERT OR IGNORE INTO users (org, id, body) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![o, id, body])?
                    > 0,
            )
        })
        .await
    }
    async fn set_opt_out(
        &self,
        org: &OrgId,
        number: &flare_shared::domain::PhoneNumber,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> StoreResult<()> {
        let (org, number) = (org.to_string(), number.as_str().to_string());
        let since = since.map(|at| at.to_rfc3339());
        self.db
            .write_one(move |c| {
                match since {
                    // The first opt-out's time is kept.
                    Some(at) => c
                        .prepare_cached(
                            "INSERT OR IGNORE INTO opt_outs (org, number, at) VALUES (?1, ?2, ?3)",
                        )?
                        .execute(params![org, number, at])?,
                    None => c
                        .prepare_cached("DELETE FROM opt_outs WHERE org = ?1 AND number = ?2")?
                        .execute(params![org, number])?,
                };
                Ok(())
            })
            .await
    }

    async fn opted_out(
        &self,
        org: &OrgId,
        number: &flare_shared::domain::PhoneNumber,
    ) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
        self.db.read(|c| {
            let at: Option<String> = c
                .prepare_cached("SELECT at FROM opt_outs WHERE org = ?1 AND number = ?2")?
                .query_row(params![org.as_str(), number.as_str()], |r| r.get(0))
                .optional()?;
            at.map(|at| {
                Ok(chrono::DateTime::parse_from_rfc3339(&at)
                    .context("a stored opt-out time")?
                    .with_timezone(&chrono::Utc))
            })
            .transpose()
        })
    }
}
