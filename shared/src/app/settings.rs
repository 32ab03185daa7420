//! Settings operations: secrets go to the secret store before the settings item is
//! written, a PUT without a password keeps the stored one, a DELETE deletes the secrets.

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
use crate::ports::SecretKey;
use serde_json::{Value, json};

const MOVED_PASSWORD: &str = "re-enter the password for the new server address or username: a stored password goes only where it was saved for";

/// Applies a secret change; answers whether a secret is stored afterwards.
async fn apply_secret(
    svc: &Services,
    key: SecretKey,
    change: SecretChange,
    stored: bool,
) -> Result<bool, ApiError> {
    match change {
        SecretChange::Set(value) => {
            svc.secrets.put(&key, &value).await?;
            Ok(true)
        }
        SecretChange::Keep => Ok(stored),
        SecretChange::Clear => {
            if stored {
                svc.secrets.delete(&key).await?;
            }
            Ok(false)
        }
    }
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
    let mut update = SmsSettingsUpdate::parse(body, cc.clone(), svc.policy)?;
    let existing = svc.settings.get_sms(org, &cc).await?;
    let (stored_header, stored_password) = match &existing {
        Some(e) => match &e.provider {
            SmsProvider::Http(g) => (g.header_name.clone(), e.password_set),
            SmsProvider::Sns => (None, false),
        },
        None => (None, false),
    };
    // `X-Api-Key: ****` keeps the stored value, but only for the same header name.
    if matches!(update.header_value, SecretChange::Keep) {
        let new_name = match &update.settings.provider {
            SmsProvider::Http(g) => g.header_name.clone(),
            SmsProvider::Sns => None,
        };
        if new_name.is_none() || new_name != stored_header {
            let mut f = FieldErrors::new();
            f.add(
                "http_header",
                "no stored value to keep for this header: send it in full",
            );
            return Err(f.into());
        }
    }
    let header_stored = stored_header.is_some();
    if let Some(old) = &existing
        && gateway_secrets_moved(old, &update.settings)
    {
        let mut f = FieldErrors::new();
        if stored_password && matches!(update.password, SecretChange::Keep) {
            f.add("password", MOVED_PASSWORD);
        }
        if header_stored && matches!(update.header_value, SecretChange::Keep) {
            f.add(
                "http_header",
                "re-enter the header value for the new gateway address or username: a stored value goes only where it was saved for",
            );
        }
        if !f.is_empty() {
            return Err(f.into());
        }
    }
    // Secrets first: a settings item never points at a secret that is not there yet.
    let password_set = apply_secret(
        svc,
        SecretKey::SmsPassword(org.clone(), cc.clone()),
        std::mem::take(&mut update.password),
        stored_password,
    )
    .await?;
    apply_secret(
        svc,
        SecretKey::SmsHeaderValue(org.clone(), cc.clone()),
        std::mem::take(&mut update.header_value),
        header_stored,
    )
    .await?;
    update.settings.password_set = password_set;
    update.settings.secrets_rev = Some(uuid::Uuid::new_v4().to_string());
    svc.settings.put_sms(org, &update.settings).await?;
    reset_health(svc, org, &HealthScope::Sms(cc.clone())).await?;
    tracing::info!(org_id = %org, control_center_id = %cc, provider = update.settings.provider_name().as_str(), "sms settings saved");
    Ok(update.settings.view())
}

pub async fn delete_sms(svc: &Services, org: &OrgId, cc: &str) -> Result<(), ApiError> {
    let cc = ControlCenterId::parse_existing(cc)
        .map_err(|_| ApiError::not_found("no control center with that id"))?;
    let existed = svc.settings.delete_sms(org, &cc).await?;
    reset_health(svc, org, &HealthScope::Sms(cc.clone())).await?;
    // The item goes first: settings never point at a deleted secret.
    svc.secrets
        .delete(&SecretKey::SmsPassword(org.clone(), cc.clone()))
        .await?;
    svc.secrets
        .delete(&SecretKey::SmsHeaderValue(org.clone(), cc.clone()))
        .await?;
    if existed {
        tracing::info!(org_id = %org, control_center_id = %cc, "sms settings deleted");
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "no SMS settings for control center \"{cc}\""
        )))
    }
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
    let mut update = EmailSettingsUpdate::parse(body, svc.policy)?;
    let existing = svc.settings.get_email(org).await?;
    let stored = match &existing {
        Some(e) => match &e.provider {
            EmailProvider::Smtp { smtp } => smtp.password_set,
            EmailProvider::Ses => false,
        },
        None => false,
    };
    if stored
        && matches!(update.password, SecretChange::Keep)
        && existing
            .as_ref()
            .is_some_and(|old| smtp_secret_moved(old, &update.settings))
    {
        let mut f = FieldErrors::new();
        f.add("smtp.password", MOVED_PASSWORD);
        return Err(f.into());
    }
    let password_set = apply_secret(
        svc,
        SecretKey::SmtpPassword(org.clone()),
        std::mem::take(&mut update.password),
        stored,
    )
    .await?;
    if let EmailProvider::Smtp { smtp } = &mut update.settings.provider {
        smtp.password_set = password_set;
        smtp.secrets_rev = Some(uuid::Uuid::new_v4().to_string());
    }
    svc.settings.put_email(org, &update.settings).await?;
    reset_health(svc, org, &HealthScope::Email).await?;
    tracing::info!(org_id = %org, provider = update.settings.provider_name().as_str(), "email settings saved");
    Ok(update.settings.view())
}

/// Back to the default account; answers 204 whether or not settings existed.
pub async fn delete_email(svc: &Services, org: &OrgId) -> Result<(), ApiError> {
    svc.settings.delete_email(org).await?;
    reset_health(svc, org, &HealthScope::Email).await?;
    svc.secrets
        .delete(&SecretKey::SmtpPassword(org.clone()))
        .await?;
    tracing::info!(org_id = %org, "email settings deleted");
    Ok(())
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
    let current = communication(svc, org).await?;
    let next = parse_communication(body, current)?;
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
