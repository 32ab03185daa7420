//! Data directories written before the database (`settings.json`, `users.json`,
//! `secrets.json`): imported into it once, then renamed `*.imported`, so an upgrade keeps
//! what the runner was told to keep.

use anyhow::Context;
use flare_shared::domain::{CommunicationSettings, EmailSettings, OrgId, SmsSettings, User};
use flare_shared::ports::{Directory, SettingsStore};
use flare_sqlite::Sqlite;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Settings {
    /// Keyed `org/control_center`.
    sms: BTreeMap<String, SmsSettings>,
    /// Keyed by org, as the next two.
    email: BTreeMap<String, EmailSettings>,
    communication: BTreeMap<String, CommunicationSettings>,
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn org_of(key: &str) -> anyhow::Result<OrgId> {
    let org = key.split('/').next().unwrap_or_default();
    OrgId::parse(org).map_err(|e| anyhow::anyhow!("organization {org:?}: {e}"))
}

fn done(path: &Path) -> anyhow::Result<()> {
    std::fs::rename(path, path.with_extension("json.imported"))
        .with_context(|| format!("renaming {}", path.display()))
}

pub async fn import(dir: &Path, db: &Sqlite) -> anyhow::Result<()> {
    let path = dir.join("settings.json");
    if let Some(s) = read::<Settings>(&path)? {
        for (k, v) in &s.sms {
            db.put_sms(&org_of(k)?, v).await?;
        }
        for (k, v) in &s.email {
            db.put_email(&org_of(k)?, v).await?;
        }
        for (k, v) in &s.communication {
            db.put_communication(&org_of(k)?, v).await?;
        }
        done(&path)?;
        tracing::info!(path = %path.display(), "settings imported into the database");
    }
    let path = dir.join("users.json");
    if let Some(users) = read::<BTreeMap<String, User>>(&path)? {
        for (k, user) in &users {
            db.put_user(&org_of(k)?, user).await?;
        }
        done(&path)?;
        tracing::info!(path = %path.display(), users = users.len(), "users imported into the database");
    }
    let path = dir.join("secrets.json");
    if let Some(secrets) = read::<BTreeMap<String, String>>(&path)? {
        for (name, value) in secrets {
            db.import_secret(&name, value.into()).await?;
        }
        // The old file held passwords in the clear: it goes, not renamed.
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        tracing::info!("secrets imported into the database");
    }
    Ok(())
}
