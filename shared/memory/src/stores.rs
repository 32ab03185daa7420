//! Settings, users and secrets in memory, optionally kept in a file across restarts.

use super::*;

#[derive(Default, Serialize, Deserialize)]
struct SettingsState {
    sms: BTreeMap<String, SmsSettings>,
    email: BTreeMap<String, EmailSettings>,
    communication: BTreeMap<String, CommunicationSettings>,
}

#[derive(Default)]
pub struct MemorySettings {
    inner: Persisted<SettingsState>,
}

impl MemorySettings {
    /// Settings kept in `path` across restarts.
    pub fn open(path: PathBuf) -> anyhow::Result<Self> {
        Ok(Self {
            inner: Persisted::open(path)?,
        })
    }
}

#[async_trait]
impl SettingsStore for MemorySettings {
    async fn get_sms(&self, org: &OrgId, cc: &ControlCenterId) -> StoreResult<Option<SmsSettings>> {
        Ok(self
            .inner
            .read(|s| s.sms.get(&key(org, cc.as_str())).cloned()))
    }
    async fn list_sms(&self, org: &OrgId) -> StoreResult<Vec<SmsSettings>> {
        let prefix = key(org, "");
        Ok(self.inner.read(|s| {
            s.sms
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(_, v)| v.clone())
                .collect()
        }))
    }
    async fn put_sms(&self, org: &OrgId, v: &SmsSettings) -> StoreResult<()> {
        self.inner.write(|s| {
            s.sms
                .insert(key(org, v.control_center_id.as_str()), v.clone());
        })
    }
    async fn put_sms_if(
        &self,
        org: &OrgId,
        v: &SmsSettings,
        expect: Expect<'_>,
    ) -> StoreResult<bool> {
        let k = key(org, v.control_center_id.as_str());
        self.inner.write(|s| {
            let stored = s.sms.get(&k).map(|o| o.secrets_at.as_deref());
            let ok = expect.matches(stored);
            if ok {
                s.sms.insert(k, v.clone());
            }
            ok
        })
    }
    async fn delete_sms(
        &self,
        org: &OrgId,
        cc: &ControlCenterId,
        at: Option<&str>,
    ) -> StoreResult<bool> {
        let k = key(org, cc.as_str());
        self.inner.write(|s| {
            let stored = s.sms.get(&k).map(|o| o.secrets_at.as_deref());
            Expect::At(at).matches(stored) && s.sms.remove(&k).is_some()
        })
    }
    async fn get_email(&self, org: &OrgId) -> StoreResult<Option<EmailSettings>> {
        Ok(self.inner.read(|s| s.email.get(org.as_str()).cloned()))
    }
    async fn put_email(&self, org: &OrgId, v: &EmailSettings) -> StoreResult<()> {
        self.inner.write(|s| {
            s.email.insert(org.to_string(), v.clone());
        })
    }
    async fn put_email_if(
        &self,
        org: &OrgId,
        v: &EmailSettings,
        expect: Expect<'_>,
    ) -> StoreResult<bool> {
        self.inner.write(|s| {
            let stored = s.email.get(org.as_str()).map(EmailSettings::secrets_at);
            let ok = expect.matches(stored);
            if ok {
                s.email.insert(org.to_string(), v.clone());
            }
            ok
        })
    }
    async fn delete_email(&self, org: &OrgId, at: Option<&str>) -> StoreResult<bool> {
        self.inner.write(|s| {
            let stored = s.email.get(org.as_str()).map(EmailSettings::secrets_at);
            Expect::At(at).matches(stored) && s.email.remove(org.as_str()).is_some()
        })
    }
    async fn get_communication(&self, org: &OrgId) -> StoreResult<Option<CommunicationSettings>> {
        Ok(self
            .inner
            .read(|s| s.communication.get(org.as_str()).cloned()))
    }
    async fn put_communication(&self, org: &OrgId, v: &CommunicationSettings) -> StoreResult<()> {
        self.inner.write(|s| {
            s.communication.insert(org.to_string(), v.clone());
        })
    }
}

#[derive(Default)]
pub struct MemoryDirectory {
    users: Persisted<BTreeMap<String, User>>,
    /// (org, number) → since when it opted out (not kept across restarts).
    opt_outs: std::sync::Mutex<HashMap<(OrgId, String), chrono::DateTime<chrono::Utc>>>,
}

impl MemoryDirectory {
    /// Users kept in `path` across restarts.
    pub fn open(path: PathBuf) -> anyhow::Result<Self> {
        Ok(Self {
            users: Persisted::open(path)?,
            opt_outs: Default::default(),
        })
    }
}

#[async_trait]
impl Directory for MemoryDirectory {
    async fn get_user(&self, org: &OrgId, id: &UserId) -> StoreResult<Option<User>> {
        Ok(self.users.read(|u| u.get(&key(org, id.as_str())).cloned()))
    }
    async fn get_users(&self, org: &OrgId, ids: &[UserId]) -> StoreResult<Vec<User>> {
        Ok(self.users.read(|u| {
            ids.iter()
                .filter_map(|id| u.get(&key(org, id.as_str())).cloned())
                .collect()
        }))
    }
    async fn list_users(&self, org: &OrgId) -> StoreResult<Vec<User>> {
        let prefix = key(org, "");
        Ok(self.users.read(|u| {
            u.range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(_, v)| v.clone())
                .collect()
        }))
    }
    async fn list_users_after(
        &self,
        org: &OrgId,
        after: Option<&UserId>,
        limit: usize,
    ) -> StoreResult<Vec<User>> {
        use std::ops::Bound::{Excluded, Included};
        let prefix = key(org, "");
        let from = match after {
            Some(a) => Excluded(key(org, a.as_str())),
            None => Included(prefix.clone()),
        };
        Ok(self.users.read(|u| {
            u.range((from, std::ops::Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(&prefix))
                .take(limit)
                .map(|(_, v)| v.clone())
                .collect()
        }))
    }
    async fn put_user(&self, org: &OrgId, user: &User) -> StoreResult<()> {
        self.users.write(|u| {
            u.insert(key(org, user.user_id.as_str()), user.clone());
        })
    }
    async fn delete_user(&self, org: &OrgId, id: &UserId) -> StoreResult<bool> {
        self.users
            .write(|u| u.remove(&key(org, id.as_str())).is_some())
    }
    async fn update_user(
        &self,
        org: &OrgId,
        id: &UserId,
        change: &(dyn for<'u> Fn(&'u mut User) + Send + Sync),
    ) -> StoreResult<Option<User>> {
        // Under the lock: nothing can write in between.
        self.users.write(|u| {
            u.get_mut(&key(org, id.as_str())).map(|user| {
                change(user);
                user.clone()
            })
        })
    }
    async fn create_user(&self, org: &OrgId, user: &User) -> StoreResult<bool> {
        self.users.write(|u| {
            let k = key(org, user.user_id.as_str());
            if u.contains_key(&k) {
                return false;
            }
            u.insert(k, user.clone());
            true
        })
    }

    async fn set_opt_out(
        &self,
        org: &OrgId,
        number: &flare_shared::domain::PhoneNumber,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> StoreResult<()> {
        let key = (org.clone(), number.as_str().to_string());
        let mut all = lock(&self.opt_outs);
        match since {
            Some(at) => {
                all.entry(key).or_insert(at);
            }
            None => {
                all.remove(&key);
            }
        }
        Ok(())
    }

    async fn opted_out(
        &self,
        org: &OrgId,
        number: &flare_shared::domain::PhoneNumber,
    ) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
        Ok(lock(&self.opt_outs)
            .get(&(org.clone(), number.as_str().to_string()))
            .copied())
    }
}

/// Secrets in memory, or in their own file (mode 0600) apart from the settings.
#[derive(Default)]
pub struct MemorySecrets {
    secrets: Persisted<BTreeMap<String, String>>,
}

impl MemorySecrets {
    pub fn open(path: PathBuf) -> anyhow::Result<Self> {
        Ok(Self {
            secrets: Persisted::open(path)?,
        })
    }

    /// How many secrets are stored (tests check deletes).
    pub fn len(&self) -> usize {
        self.secrets.read(BTreeMap::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const LOCAL_PREFIX: &str = "flare";

#[async_trait]
impl SecretStore for MemorySecrets {
    async fn get(&self, k: &SecretKey) -> StoreResult<Option<SecretString>> {
        Ok(self.secrets.read(|s| {
            s.get(&k.name(LOCAL_PREFIX))
                .map(|v| SecretString::from(v.clone()))
        }))
    }
    async fn put(&self, k: &SecretKey, value: &SecretString) -> StoreResult<()> {
        self.secrets.write(|s| {
            s.insert(k.name(LOCAL_PREFIX), value.expose_secret().to_string());
        })
    }
    async fn delete(&self, k: &SecretKey) -> StoreResult<()> {
        self.secrets.write(|s| {
            s.remove(&k.name(LOCAL_PREFIX));
        })
    }
}
