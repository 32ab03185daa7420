//! Settings operations. A save is whole: it writes its secrets under a fresh revision,
//! then the settings item naming that revision, but only over the item it read (a
//! conditional write); if another save or delete came first it removes what it wrote
//! and runs again on what is stored now. Secrets of the replaced revision go after the
//! item that named them. So after any mix of concurrent saves and deletes the stored
//! username, password and header value belong to one save, and `password_set` is true
//! exactly when a password is stored. A PUT without a password keeps the stored one (it
//! is copied to the new revision); a DELETE deletes the secrets.

use super::Services;
use super::error::ApiError;
use crate::domain::health::HealthScope;
use crate::domain::input::{
    EmailSettingsUpdate, SecretChange, SmsSettingsUpdate, parse_communication,
};
use crate::domain::settings::{gateway_secrets_moved, smtp_secret_moved};
use crate::domain::{
    CommunicationSettings, ControlCenterId, EmailProvider, FieldErrors, OrgId, SmsProvider,
};
use crate::ports::{Expect, SecretKey, Stored, audit_before};
use serde_json::{Value, json};

const MOVED_PASSWORD: &str = "re-enter the password for the new server address or username: a stored password goes only where it was saved for";

/// How often a save or delete runs again after another came first. Each retry waits a
/// few random milliseconds, so 20 saves at once all land well within this.
const ATTEMPTS: u32 = 50;

/// Writes a secret a save sets or keeps under its new revision (`to`); a kept value is
/// copied from the revision it was saved under (`from`). Answers whether one is stored.
async fn write_secret(
    svc: &Services,
    from: SecretKey,
    to: &SecretKey,
    change: SecretChange,
    stored: bool,
) -> Result<bool, ApiError> {
    let value = match change {
        SecretChange::Set(value) => value,
        SecretChange::Keep if stored => match svc.secrets.get(&from).await? {
            Some(value) => value,
            None => return Ok(false),
        },
        SecretChange::Keep | SecretChange::Clear => return Ok(false),
    };
    svc.secrets.put(to, &value).await?;
    Ok(true)
}

async fn delete_secrets(svc: &Services, keys: &[SecretKey]) -> Result<(), ApiError> {
    for key in keys {
        svc.secrets.delete(key).await?;
    }
    Ok(())
}

/// A short random pause before running a save again, so racing saves spread out.
async fn back_off(attempt: u32) {
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 8;
    tokio::time::sleep(std::time::Duration::from_millis(
        1 + jitter + u64::from(attempt.min(10)),
    ))
    .await;
}

fn conflict(what: &str) -> ApiError {
    ApiError::Unavailable(anyhow::anyhow!(
        "{what}: another save kept coming first ({ATTEMPTS} attempts)"
    ))
}

pub fn parse_cc(raw: &str) -> Result<ControlCenterId, ApiError> {
    ControlCenterId::parse(raw).map_err(|e| {
        let mut f = FieldErrors::new();
        f.add("control_center_id", e);
        ApiError::Validation(f)
    })
}

pub async fn get_sms(svc: &Services, org: &OrgId, cc: &str) -> Result<Value, ApiError> {
    let cc = ControlCenterId::parse_existing(cc)
        .map_err(|_| ApiError::not_found("no control center with that id"))?;
    let Some(s) = svc.settings.get_sms(org, &cc).await? else {
        let main = ControlCenterId::main();
        let mut what = format!("no SMS settings for control center \"{cc}\"");
        if cc != main && svc.settings.get_sms(org, &main).await?.is_some() {
            what.push_str(&format!("; it sends with \"{main}\"'s"));
        }
        return Err(ApiError::not_found(what));
    };
    sms_view(svc, org, &s).await
}

/// The stored view, with the provider's `health` when it has a failover.
async fn sms_view(
    svc: &Services,
    org: &OrgId,
    s: &crate::domain::SmsSettings,
) -> Result<Value, ApiError> {
    let mut v = s.view();
    if s.failover().is_some() {
        let scope = HealthScope::Sms(s.control_center_id.clone());
        v["health"] = health(svc, org, &scope).await?;
    }
    Ok(v)
}

/// Changed settings start healthy: a corrected gateway is tried at once, not after the
/// old one's open circuit, and its view does not show the old one's errors.
async fn reset_health(svc: &Services, org: &OrgId, scope: &HealthScope) -> Result<(), ApiError> {
    if let Some(store) = &svc.health {
        store
            .update(org, scope, &|h| {
                let changed = *h != Default::default();
                *h = Default::default();
                changed
            })
            .await?;
    }
    Ok(())
}

async fn health(svc: &Services, org: &OrgId, scope: &HealthScope) -> Result<Value, ApiError> {
    let h = match &svc.health {
        Some(store) => store.get(org, scope).await?,
        None => Default::default(),
    };
    Ok(h.view(chrono::Utc::now()))
}

pub async fn list_sms(svc: &Services, org: &OrgId) -> Result<Value, ApiError> {
    let all = svc.settings.list_sms(org).await?;
    let mut out = Vec::with_capacity(all.len());
    for s in &all {
        out.push(sms_view(svc, org, s).await?);
    }
    Ok(Value::Array(out))
}

pub async fn put_sms(
    svc: &Services,
    org: &OrgId,
    cc: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let cc = parse_cc(cc)?;
    let update = SmsSettingsUpdate::parse(body, cc.clone(), svc.policy)?;
    for attempt in 0..ATTEMPTS {
        if let Some(saved) = try_put_sms(svc, org, &cc, update.clone()).await? {
            reset_health(svc, org, &HealthScope::Sms(cc.clone())).await?;
            tracing::info!(org_id = %org, control_center_id = %cc, provider = saved.provider_name().as_str(), attempt, "sms settings saved");
            return Ok(saved.view());
        }
        back_off(attempt).await;
    }
    Err(conflict("saving SMS settings"))
}

/// One attempt at a save; `None` when another save or delete came first.
async fn try_put_sms(
    svc: &Services,
    org: &OrgId,
    cc: &ControlCenterId,
    mut update: SmsSettingsUpdate,
) -> Result<Option<crate::domain::SmsSettings>, ApiError> {
    let existing = svc.settings.get_sms(org, cc).await?;
    audit_before(Stored::Sms(existing.as_ref()));
    let refused = unkeepable_sms_secrets(existing.as_ref(), &update);
    if !refused.is_empty() {
        return Err(refused.into());
    }
    let (stored_header, stored_password) = stored_sms_secrets(existing.as_ref());
    let old_at = existing.as_ref().and_then(|e| e.secrets_at.clone());
    let at = Some(uuid::Uuid::new_v4().to_string());
    let password =
        |at: &Option<String>| SecretKey::SmsPassword(org.clone(), cc.clone(), at.clone());
    let header =
        |at: &Option<String>| SecretKey::SmsHeaderValue(org.clone(), cc.clone(), at.clone());
    let written = [password(&at), header(&at)];
    // Secrets first: a settings item never names a secret that is not there yet.
    let saved = async {
        let change = std::mem::take(&mut update.password);
        update.settings.password_set =
            write_secret(svc, password(&old_at), &written[0], change, stored_password).await?;
        let change = std::mem::take(&mut update.header_value);
        let header_stored = stored_header.is_some();
        write_secret(svc, header(&old_at), &written[1], change, header_stored).await?;
        update.settings.secrets_at = at.clone();
        let expect = match &existing {
            Some(e) => Expect::At(e.secrets_at.as_deref()),
            None => Expect::Absent,
        };
        Ok::<_, ApiError>(
            svc.settings
                .put_sms_if(org, &update.settings, expect)
                .await?,
        )
    }
    .await;
    let replaced = [password(&old_at), header(&old_at)];
    let replaced = existing.is_some().then_some(&replaced[..]);
    settle(svc, saved, update.settings, replaced, &written).await
}

/// What stored SMS settings hold of their secrets: their gateway's header name (whose
/// value is stored with it), and whether a password is stored.
fn stored_sms_secrets(
    existing: Option<&crate::domain::SmsSettings>,
) -> (Option<crate::domain::HeaderName>, bool) {
    match existing {
        Some(e) => match &e.provider {
            SmsProvider::Http(g) => (g.header_name.clone(), e.password_set),
            SmsProvider::Sns => (None, false),
        },
        None => (None, false),
    }
}

/// The secrets a save says to keep (`****`, or a password left out) that it may not: a
/// header value for another header name, or with none stored; or a stored password or
/// header value when the gateway's address or username changed (a stored secret goes
/// only where it was saved for). Empty when the save may go on.
fn unkeepable_sms_secrets(
    existing: Option<&crate::domain::SmsSettings>,
    update: &SmsSettingsUpdate,
) -> FieldErrors {
    let (stored_header, stored_password) = stored_sms_secrets(existing);
    let mut f = FieldErrors::new();
    // `X-Api-Key: ****` keeps the stored value, but only for the same header name.
    if matches!(update.header_value, SecretChange::Keep) {
        let new_name = match &update.settings.provider {
            SmsProvider::Http(g) => g.header_name.clone(),
            SmsProvider::Sns => None,
        };
        if new_name.is_none() || new_name != stored_header {
            f.add(
                "http_header",
                "no stored value to keep for this header: send it in full",
            );
            return f;
        }
    }
    if let Some(old) = existing
        && gateway_secrets_moved(old, &update.settings)
    {
        if stored_password && matches!(update.password, SecretChange::Keep) {
            f.add("password", MOVED_PASSWORD);
        }
        if stored_header.is_some() && matches!(update.header_value, SecretChange::Keep) {
            f.add(
                "http_header",
                "re-enter the header value for the new gateway address or username: a stored value goes only where it was saved for",
            );
        }
    }
    f
}

/// Ends a save after its conditional write (`saved`). Written: the secrets of the
/// revision it replaced (`replaced`, when there was one) go, after the item that named
/// them. Not written (another save or delete came first), or failed: nothing names what
/// this attempt wrote (`written`), so it is removed, whatever went wrong.
async fn settle<T>(
    svc: &Services,
    saved: Result<bool, ApiError>,
    settings: T,
    replaced: Option<&[SecretKey]>,
    written: &[SecretKey],
) -> Result<Option<T>, ApiError> {
    match saved {
        Ok(true) => {
            if let Some(replaced) = replaced {
                delete_secrets(svc, replaced).await?;
            }
            Ok(Some(settings))
        }
        Ok(false) => {
            delete_secrets(svc, written).await?;
            Ok(None)
        }
        Err(e) => {
            let _ = delete_secrets(svc, written).await;
            Err(e)
        }
    }
}

pub async fn delete_sms(svc: &Services, org: &OrgId, cc: &str) -> Result<(), ApiError> {
    let cc = ControlCenterId::parse_existing(cc)
        .map_err(|_| ApiError::not_found("no control center with that id"))?;
    for attempt in 0..ATTEMPTS {
        let Some(existing) = svc.settings.get_sms(org, &cc).await? else {
            return Err(ApiError::not_found(format!(
                "no SMS settings for control center \"{cc}\""
            )));
        };
        audit_before(Stored::Sms(Some(&existing)));
        let at = existing.secrets_at;
        if svc.settings.delete_sms(org, &cc, at.as_deref()).await? {
            reset_health(svc, org, &HealthScope::Sms(cc.clone())).await?;
            // The item goes first: settings never name a deleted secret.
            delete_secrets(
                svc,
                &[
                    SecretKey::SmsPassword(org.clone(), cc.clone(), at.clone()),
                    SecretKey::SmsHeaderValue(org.clone(), cc.clone(), at),
                ],
            )
            .await?;
            tracing::info!(org_id = %org, control_center_id = %cc, "sms settings deleted");
            return Ok(());
        }
        back_off(attempt).await;
    }
    Err(conflict("deleting SMS settings"))
}

pub async fn get_email(svc: &Services, org: &OrgId) -> Result<Value, ApiError> {
    let s = svc.settings.get_email(org).await?.ok_or_else(|| {
        ApiError::not_found("no email settings: email goes from the default sender")
    })?;
    let mut v = s.view();
    if s.failover().is_some() {
        v["health"] = health(svc, org, &HealthScope::Email).await?;
    }
    Ok(v)
}

pub async fn put_email(svc: &Services, org: &OrgId, body: &Value) -> Result<Value, ApiError> {
    let update = EmailSettingsUpdate::parse(body, svc.policy)?;
    for attempt in 0..ATTEMPTS {
        if let Some(saved) = try_put_email(svc, org, update.clone()).await? {
            reset_health(svc, org, &HealthScope::Email).await?;
            tracing::info!(org_id = %org, provider = saved.provider_name().as_str(), attempt, "email settings saved");
            return Ok(saved.view());
        }
        back_off(attempt).await;
    }
    Err(conflict("saving email settings"))
}

/// As [`try_put_sms`].
async fn try_put_email(
    svc: &Services,
    org: &OrgId,
    mut update: EmailSettingsUpdate,
) -> Result<Option<crate::domain::EmailSettings>, ApiError> {
    let existing = svc.settings.get_email(org).await?;
    audit_before(Stored::Email(existing.as_ref()));
    let refused = unkeepable_smtp_password(existing.as_ref(), &update);
    if !refused.is_empty() {
        return Err(refused.into());
    }
    let stored = stored_smtp_password(existing.as_ref());
    let old_at = existing
        .as_ref()
        .and_then(|e| e.secrets_at().map(str::to_string));
    let at = Some(uuid::Uuid::new_v4().to_string());
    let written = SecretKey::SmtpPassword(org.clone(), at.clone());
    let old = SecretKey::SmtpPassword(org.clone(), old_at);
    let saved = async {
        let change = std::mem::take(&mut update.password);
        let password_set = write_secret(svc, old.clone(), &written, change, stored).await?;
        if let EmailProvider::Smtp { smtp } = &mut update.settings.provider {
            smtp.password_set = password_set;
            smtp.secrets_at = at.clone();
        }
        let expect = match &existing {
            Some(e) => Expect::At(e.secrets_at()),
            None => Expect::Absent,
        };
        Ok::<_, ApiError>(
            svc.settings
                .put_email_if(org, &update.settings, expect)
                .await?,
        )
    }
    .await;
    let replaced = existing.is_some().then_some(std::slice::from_ref(&old));
    settle(
        svc,
        saved,
        update.settings,
        replaced,
        std::slice::from_ref(&written),
    )
    .await
}

/// Whether stored email settings hold an SMTP password.
fn stored_smtp_password(existing: Option<&crate::domain::EmailSettings>) -> bool {
    match existing {
        Some(e) => match &e.provider {
            EmailProvider::Smtp { smtp } => smtp.password_set,
            EmailProvider::Ses => false,
        },
        None => false,
    }
}

/// As [`unkeepable_sms_secrets`]: a stored SMTP password is not kept for another
/// server, port, TLS setting or user.
fn unkeepable_smtp_password(
    existing: Option<&crate::domain::EmailSettings>,
    update: &EmailSettingsUpdate,
) -> FieldErrors {
    let mut f = FieldErrors::new();
    if stored_smtp_password(existing)
        && matches!(update.password, SecretChange::Keep)
        && existing.is_some_and(|old| smtp_secret_moved(old, &update.settings))
    {
        f.add("smtp.password", MOVED_PASSWORD);
    }
    f
}

/// Back to the default account; answers 204 whether or not settings existed.
pub async fn delete_email(svc: &Services, org: &OrgId) -> Result<(), ApiError> {
    for attempt in 0..ATTEMPTS {
        let Some(existing) = svc.settings.get_email(org).await? else {
            return Ok(());
        };
        audit_before(Stored::Email(Some(&existing)));
        let at = existing.secrets_at().map(str::to_string);
        if svc.settings.delete_email(org, at.as_deref()).await? {
            reset_health(svc, org, &HealthScope::Email).await?;
            svc.secrets
                .delete(&SecretKey::SmtpPassword(org.clone(), at))
                .await?;
            tracing::info!(org_id = %org, "email settings deleted");
            return Ok(());
        }
        back_off(attempt).await;
    }
    Err(conflict("deleting email settings"))
}

pub async fn communication(svc: &Services, org: &OrgId) -> Result<CommunicationSettings, ApiError> {
    Ok(svc
        .settings
        .get_communication(org)
        .await?
        .unwrap_or_default())
}

pub async fn put_communication(
    svc: &Services,
    org: &OrgId,
    body: &Value,
) -> Result<Value, ApiError> {
    let stored = svc.settings.get_communication(org).await?;
    audit_before(Stored::Communication(stored.as_ref()));
    let next = parse_communication(body, &stored.unwrap_or_default())?;
    svc.settings.put_communication(org, &next).await?;
    tracing::info!(org_id = %org, "communication settings saved");
    Ok(json!(next))
}

pub async fn all(svc: &Services, org: &OrgId) -> Result<Value, ApiError> {
    let all = svc.settings.all(org).await?;
    let sms: Vec<Value> = all.sms.iter().map(|s| s.view()).collect();
    let email = all.email.map(|e| e.view());
    let comm = all.communication.unwrap_or_default();
    Ok(json!({"sms": sms, "email": email, "communication": comm}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EmailSettings, EndpointPolicy, SmsSettings};

    const POLICY: EndpointPolicy = EndpointPolicy {
        allow_private: false,
    };

    /// `base` with `changes` made (a `null` takes the field out).
    fn with(mut base: Value, changes: Value) -> Value {
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        base
    }

    fn gateway(changes: Value) -> SmsSettingsUpdate {
        let body = json!({"provider": "http", "url": "https://sms.example.com/send",
            "format": "json", "username": "acct", "password": "s3cret-pw",
            "sender_number": "ACME", "http_header": "X-Api-Key: abc123"});
        SmsSettingsUpdate::parse(&with(body, changes), ControlCenterId::main(), POLICY).unwrap()
    }

    fn refused_sms(existing: Option<&SmsSettings>, update: SmsSettingsUpdate) -> Vec<String> {
        let f = unkeepable_sms_secrets(existing, &update);
        f.fields.into_keys().collect()
    }

    #[test]
    fn a_save_keeps_a_stored_gateway_secret_only_for_its_header_and_endpoint() {
        let mut old = gateway(json!({})).settings;
        old.password_set = true;
        let old = Some(&old);
        let keep = |changes: Value| {
            gateway(with(
                json!({"password": null, "http_header": "X-Api-Key: ****"}),
                changes,
            ))
        };
        assert!(refused_sms(old, keep(json!({"format": "form"}))).is_empty());
        // Another header name, or none stored: there is no value to keep.
        let other_header = keep(json!({"http_header": "X-Other: ****"}));
        assert_eq!(refused_sms(old, other_header), ["http_header"]);
        assert_eq!(refused_sms(None, keep(json!({}))), ["http_header"]);
        // Another address or user: both are entered again.
        let moved = keep(json!({"username": "other"}));
        assert_eq!(refused_sms(old, moved), ["http_header", "password"]);
        let moved = keep(json!({"url": "https://sms.example.com:8443/send"}));
        assert_eq!(refused_sms(old, moved), ["http_header", "password"]);
        // Entered again, the move goes on.
        assert!(refused_sms(old, gateway(json!({"username": "other"}))).is_empty());
    }

    #[test]
    fn a_save_keeps_a_stored_smtp_password_only_for_its_server_and_user() {
        let smtp = |changes: Value| {
            let body = json!({"provider": "smtp", "sender_email": "alerts@acme.example",
                "smtp": with(json!({"server_url": "smtp.acme.example", "port": 587,
                    "username": "alerts", "password": "smtp-pw-1", "use_tls": true}), changes)});
            EmailSettingsUpdate::parse(&body, POLICY).unwrap()
        };
        let mut old: EmailSettings = smtp(json!({})).settings;
        if let EmailProvider::Smtp { smtp } = &mut old.provider {
            smtp.password_set = true;
        }
        let refused = |existing: Option<&EmailSettings>, update: EmailSettingsUpdate| {
            let f = unkeepable_smtp_password(existing, &update);
            f.fields.into_keys().collect::<Vec<_>>()
        };
        let kept = |changes: Value| smtp(with(json!({"password": null}), changes));
        assert!(refused(Some(&old), kept(json!({}))).is_empty());
        assert_eq!(
            refused(Some(&old), kept(json!({"port": 465}))),
            ["smtp.password"]
        );
        assert_eq!(
            refused(Some(&old), kept(json!({"username": "other"}))),
            ["smtp.password"]
        );
        // Nothing stored to move, or entered again: the save goes on.
        assert!(refused(None, kept(json!({"port": 465}))).is_empty());
        assert!(refused(Some(&old), smtp(json!({"port": 465}))).is_empty());
    }
}
