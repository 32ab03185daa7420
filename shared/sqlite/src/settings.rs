//! Settings: one row per setting, its JSON body; saves conditional on the secrets revision.

use super::*;

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

    /// Writes `v` whatever is stored (`after`: what it is, for an audited write).
    async fn put_setting<T: Serialize>(
        &self,
        org: &OrgId,
        (kind, key): (&'static str, &str),
        v: &T,
        after: Stored<'_>,
    ) -> StoreResult<()> {
        let (o, key, body) = (
            org.to_string(),
            key.to_string(),
            to_json(v).map_err(StoreError::Failed)?,
        );
        self.change_audited(org, after, move |c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO settings (org, kind, key, body) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![o, kind, key, body])?;
            Ok(true)
        })
        .await?;
        Ok(())
    }

    /// Writes `v` only over what `expect` says is stored, its secrets revision read at
    /// `rev` (a JSON path) in the same call on the one writer, so nothing comes between.
    async fn put_setting_if<T: Serialize>(
        &self,
        org: &OrgId,
        (kind, key, rev): (&'static str, &str, &'static str),
        (v, after): (&T, Stored<'_>),
        expect: Expect<'_>,
    ) -> StoreResult<bool> {
        let (o, key, body) = (
            org.to_string(),
            key.to_string(),
            to_json(v).map_err(StoreError::Failed)?,
        );
        let expect = owned(expect);
        self.change_audited(org, after, move |c| {
            let stored = stored_rev(c, (&o, kind, &key, rev))?;
            if !borrowed(&expect).matches(stored.as_ref().map(Option::as_deref)) {
                return Ok(false);
            }
            c.prepare_cached(
                "INSERT OR REPLACE INTO settings (org, kind, key, body) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![o, kind, key, body])?;
            Ok(true)
        })
        .await
    }

    /// Deletes the setting saved at secrets revision `at` (read at the JSON path `rev`);
    /// `gone`: the setting's kind with nothing stored, for an audited write.
    async fn delete_setting_if(
        &self,
        org: &OrgId,
        (kind, key, rev): (&'static str, &str, &'static str),
        at: Option<&str>,
        gone: Stored<'_>,
    ) -> StoreResult<bool> {
        let (o, key, at) = (org.to_string(), key.to_string(), at.map(str::to_string));
        self.change_audited(org, gone, move |c| {
            let stored = stored_rev(c, (&o, kind, &key, rev))?;
            if !Expect::At(at.as_deref()).matches(stored.as_ref().map(Option::as_deref)) {
                return Ok(false);
            }
            self::delete_setting(c, &o, kind, &key)
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
        let at = (SMS, v.control_center_id.as_str());
        self.put_setting(org, at, v, Stored::Sms(Some(v))).await
    }
    async fn put_sms_if(
        &self,
        org: &OrgId,
        v: &SmsSettings,
        expect: Expect<'_>,
    ) -> StoreResult<bool> {
        let at = (SMS, v.control_center_id.as_str(), SMS_REV);
        self.put_setting_if(org, at, (v, Stored::Sms(Some(v))), expect)
            .await
    }
    async fn delete_sms(
        &self,
        org: &OrgId,
        cc: &ControlCenterId,
        at: Option<&str>,
    ) -> StoreResult<bool> {
        let gone = Stored::Sms(None);
        self.delete_setting_if(org, (SMS, cc.as_str(), SMS_REV), at, gone)
            .await
    }
    async fn get_email(&self, org: &OrgId) -> StoreResult<Option<EmailSettings>> {
        self.get_setting(org, EMAIL, "")
    }
    async fn put_email(&self, org: &OrgId, v: &EmailSettings) -> StoreResult<()> {
        self.put_setting(org, (EMAIL, ""), v, Stored::Email(Some(v)))
            .await
    }
    async fn put_email_if(
        &self,
        org: &OrgId,
        v: &EmailSettings,
        expect: Expect<'_>,
    ) -> StoreResult<bool> {
        let after = Stored::Email(Some(v));
        self.put_setting_if(org, (EMAIL, "", EMAIL_REV), (v, after), expect)
            .await
    }
    async fn delete_email(&self, org: &OrgId, at: Option<&str>) -> StoreResult<bool> {
        let gone = Stored::Email(None);
        self.delete_setting_if(org, (EMAIL, "", EMAIL_REV), at, gone)
            .await
    }
    async fn get_communication(&self, org: &OrgId) -> StoreResult<Option<CommunicationSettings>> {
        self.get_setting(org, COMMUNICATION, "")
    }
    async fn put_communication(&self, org: &OrgId, v: &CommunicationSettings) -> StoreResult<()> {
        let after = Stored::Communication(Some(v));
        self.put_setting(org, (COMMUNICATION, ""), v, after).await
    }
}
