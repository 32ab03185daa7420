//! Secrets, in their own table.

use super::*;

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
