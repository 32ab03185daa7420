//! Where settings, users and secrets are kept.

use super::*;

/// Every setting of one organization, as one read gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllSettings {
    /// Per control center, in id order.
    pub sms: Vec<SmsSettings>,
    pub email: Option<EmailSettings>,
    pub communication: Option<CommunicationSettings>,
}

impl AllSettings {
    /// The SMS settings a control center sends with: its own, else `main`'s.
    pub fn effective_sms(&self, cc: &ControlCenterId) -> Option<&SmsSettings> {
        self.sms
            .iter()
            .find(|s| &s.control_center_id == cc)
            .or_else(|| self.sms.iter().find(|s| s.control_center_id.is_main()))
    }
}

/// Settings, per organization (SMS per control center, email, communication).
#[async_trait]
pub trait SettingsStore: Send + Sync {
    /// Everything at once: the router and `GET /v1/settings` need all of it, and an
    /// adapter can read it in one call (DynamoDB: one Query on the organization's
    /// partition). By default, three reads.
    async fn all(&self, org: &OrgId) -> StoreResult<AllSettings> {
        Ok(AllSettings {
            sms: self.list_sms(org).await?,
            email: self.get_email(org).await?,
            communication: self.get_communication(org).await?,
        })
    }
    async fn get_sms(&self, org: &OrgId, cc: &ControlCenterId) -> StoreResult<Option<SmsSettings>>;
    /// The SMS settings a control center sends with: its own, else `main`'s.
    async fn effective_sms(
        &self,
        org: &OrgId,
        cc: &ControlCenterId,
    ) -> StoreResult<Option<SmsSettings>> {
        match self.get_sms(org, cc).await? {
            Some(own) => Ok(Some(own)),
            None if !cc.is_main() => self.get_sms(org, &ControlCenterId::main()).await,
            None => Ok(None),
        }
    }
    async fn list_sms(&self, org: &OrgId) -> StoreResult<Vec<SmsSettings>>;
    /// Unconditional (seeding and tests); the API saves with [`Self::put_sms_if`].
    async fn put_sms(&self, org: &OrgId, settings: &SmsSettings) -> StoreResult<()>;
    /// Saves only over what `expect` says is stored; `false` (nothing written) when
    /// another save or delete came first.
    async fn put_sms_if(
        &self,
        org: &OrgId,
        settings: &SmsSettings,
        expect: Expect<'_>,
    ) -> StoreResult<bool>;
    /// Deletes the settings saved at secrets revision `at`; `false` when there are none,
    /// or they were saved again since.
    async fn delete_sms(
        &self,
        org: &OrgId,
        cc: &ControlCenterId,
        at: Option<&str>,
    ) -> StoreResult<bool>;
    async fn get_email(&self, org: &OrgId) -> StoreResult<Option<EmailSettings>>;
    /// Unconditional (seeding and tests); the API saves with [`Self::put_email_if`].
    async fn put_email(&self, org: &OrgId, settings: &EmailSettings) -> StoreResult<()>;
    /// As [`Self::put_sms_if`].
    async fn put_email_if(
        &self,
        org: &OrgId,
        settings: &EmailSettings,
        expect: Expect<'_>,
    ) -> StoreResult<bool>;
    /// As [`Self::delete_sms`].
    async fn delete_email(&self, org: &OrgId, at: Option<&str>) -> StoreResult<bool>;
    /// `None` before the first save (callers then use the defaults).
    async fn get_communication(&self, org: &OrgId) -> StoreResult<Option<CommunicationSettings>>;
    async fn put_communication(
        &self,
        org: &OrgId,
        settings: &CommunicationSettings,
    ) -> StoreResult<()>;
}

/// What a conditional settings write expects to find stored: nothing, or settings saved
/// at this secrets revision (`At(None)`: saved without one). Saves and deletes apply
/// only over what they read, so a username never ends up beside another save's password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect<'a> {
    Absent,
    At(Option<&'a str>),
}

impl Expect<'_> {
    /// Whether `stored` (its secrets revision, if any) is what was expected.
    pub fn matches(&self, stored: Option<Option<&str>>) -> bool {
        match (self, stored) {
            (Expect::Absent, None) => true,
            (Expect::At(want), Some(have)) => *want == have,
            _ => false,
        }
    }
}

/// The people Flare notifies.
#[async_trait]
pub trait Directory: Send + Sync {
    async fn get_user(&self, org: &OrgId, id: &UserId) -> StoreResult<Option<User>>;
    /// Many users at once; missing ones are left out. Order is not kept.
    async fn get_users(&self, org: &OrgId, ids: &[UserId]) -> StoreResult<Vec<User>>;
    /// Every user of the organization, in id order.
    async fn list_users(&self, org: &OrgId) -> StoreResult<Vec<User>>;
    /// At most `limit` users whose id sorts after `after` (from the first without),
    /// in id order: the directory a page at a time, for an audience of thousands.
    async fn list_users_after(
        &self,
        org: &OrgId,
        after: Option<&UserId>,
        limit: usize,
    ) -> StoreResult<Vec<User>>;
    async fn put_user(&self, org: &OrgId, user: &User) -> StoreResult<()>;
    async fn delete_user(&self, org: &OrgId, id: &UserId) -> StoreResult<bool>;
    /// Changes a stored user as one step: `change` edits the user as stored, and the edit
    /// is written only if nobody wrote the user in between; otherwise it runs again on the
    /// fresh copy. So two device registrations at once both land (a read, change and
    /// blind write lost one of them). `None` when there is no such user.
    async fn update_user(
        &self,
        org: &OrgId,
        id: &UserId,
        change: &(dyn for<'u> Fn(&'u mut User) + Send + Sync),
    ) -> StoreResult<Option<User>>;
    /// Stores a user that does not exist yet; `false` (nothing written) when it does.
    async fn create_user(&self, org: &OrgId, user: &User) -> StoreResult<bool>;
    /// v1.2: `number` opted out of the organization's SMS (`Some`: since when, a reply
    /// STOP) or back in (`None`: START).
    async fn set_opt_out(
        &self,
        org: &OrgId,
        number: &crate::domain::PhoneNumber,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> StoreResult<()>;
    /// Since when `number` has opted out of the organization's SMS; `None`: it has not.
    async fn opted_out(
        &self,
        org: &OrgId,
        number: &crate::domain::PhoneNumber,
    ) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>>;
}

/// Which secret: each lives under a name scoped to its organization, and ends with the
/// revision of the settings save that wrote it (`flare/acme/sms/north/password/<rev>`).
/// A save writes its secrets under a fresh revision and the settings item names it, so
/// settings and secrets change together; a secret is never rewritten in place.
/// Settings saved before revisions (`None`) have their secrets under the plain name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretKey {
    SmsPassword(OrgId, ControlCenterId, Option<String>),
    SmsHeaderValue(OrgId, ControlCenterId, Option<String>),
    SmtpPassword(OrgId, Option<String>),
    /// v1.2: the deployment's key that seals each (notification, recipient)'s response
    /// link code in the log (`{prefix}/response-link-key`; the template makes it).
    LinkKey,
}

impl SecretKey {
    /// The secret's name under a prefix (`flare/acme/sms/north/password/<rev>`): the
    /// prefix lets IAM confine Flare to its own secrets.
    pub fn name(&self, prefix: &str) -> String {
        let prefix = prefix.trim_end_matches('/');
        let (mut name, rev) = match self {
            SecretKey::SmsPassword(o, c, r) => (format!("{prefix}/{o}/sms/{c}/password"), r),
            SecretKey::SmsHeaderValue(o, c, r) => (format!("{prefix}/{o}/sms/{c}/header-value"), r),
            SecretKey::SmtpPassword(o, r) => (format!("{prefix}/{o}/smtp/password"), r),
            SecretKey::LinkKey => (format!("{prefix}/response-link-key"), &None),
        };
        if let Some(rev) = rev {
            name.push('/');
            name.push_str(rev);
        }
        name
    }

    /// Whether the name ends with a settings revision (written once, never changed).
    pub fn is_versioned(&self) -> bool {
        match self {
            SecretKey::SmsPassword(_, _, r)
            | SecretKey::SmsHeaderValue(_, _, r)
            | SecretKey::SmtpPassword(_, r) => r.is_some(),
            SecretKey::LinkKey => false,
        }
    }
}

#[async_trait]
pub trait SecretStore: Send + Sync {
    async fn get(&self, key: &SecretKey) -> StoreResult<Option<SecretString>>;
    async fn put(&self, key: &SecretKey, value: &SecretString) -> StoreResult<()>;
    /// Deleting a missing secret is not an error.
    async fn delete(&self, key: &SecretKey) -> StoreResult<()>;
}
