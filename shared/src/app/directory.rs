//! Directory operations: users and their devices.

use super::Services;
use super::auth::Claims;
use super::error::ApiError;
use crate::domain::input::{DeviceInput, UserInput};
use crate::domain::{Device, DeviceId, FieldErrors, OrgId, User, UserId};
use serde_json::{Value, json};

/// A user as the API shows it: devices without their tokens or endpoints.
pub fn view(u: &User) -> Value {
    json!({
        "user_id": u.user_id,
        "name": u.name,
        "license": u.license,
        "virtual": u.is_virtual,
        "control_center_id": u.control_center_id,
        "contacts": u.contacts,
        "emergency_contacts": u.emergency_contacts,
        "devices": u.devices.iter().map(|d| json!({"device_id": d.device_id, "platform": d.platform})).collect::<Vec<_>>(),
    })
}

fn path_user(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|e| {
        let mut f = FieldErrors::new();
        f.add("user_id", e);
        ApiError::Validation(f)
    })
}

/// The user themself, or staff (admin or dispatcher), may read a user.
fn may_read(claims: &Claims, id: &str) -> bool {
    claims.is_staff() || claims.sub == id
}

pub async fn get_user(svc: &Services, claims: &Claims, id: &str) -> Result<Value, ApiError> {
    if !may_read(claims, id) {
        return Err(ApiError::Forbidden);
    }
    let id = UserId::parse(id).map_err(|_| ApiError::NotFound)?;
    let u = svc
        .directory
        .get_user(&claims.org_id, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(view(&u))
}

pub async fn list_users(svc: &Services, org: &OrgId) -> Result<Value, ApiError> {
    let users = svc.directory.list_users(org).await?;
    Ok(Value::Array(users.iter().map(view).collect()))
}

pub async fn put_user(
    svc: &Services,
    org: &OrgId,
    id: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let id = path_user(id)?;
    let input = UserInput::parse(body)?;
    // Devices have their own routes; a PUT keeps them.
    let devices = svc
        .directory
        .get_user(org, &id)
        .await?
        .map(|u| u.devices)
        .unwrap_or_default();
    let user = User {
        user_id: id,
        name: input.name,
        license: input.license,
        is_virtual: input.is_virtual,
        control_center_id: input.control_center_id,
        contacts: input.contacts,
        emergency_contacts: input.emergency_contacts,
        devices,
    };
    svc.directory.put_user(org, &user).await?;
    tracing::info!(org_id = %org, user_id = %user.user_id, "user saved");
    Ok(view(&user))
}

pub async fn delete_user(svc: &Services, org: &OrgId, id: &str) -> Result<(), ApiError> {
    let id = UserId::parse(id).map_err(|_| ApiError::NotFound)?;
    let user = svc
        .directory
        .get_user(org, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    for d in &user.devices {
        if let Some(endpoint) = &d.endpoint {
            svc.devices.unregister(endpoint).await?;
        }
    }
    svc.directory.delete_user(org, &id).await?;
    tracing::info!(org_id = %org, user_id = %id, "user deleted");
    Ok(())
}

fn may_manage_devices(claims: &Claims, id: &str) -> bool {
    claims.is_admin() || claims.sub == id
}

/// Registers a device; the same platform and token again answers the existing id.
pub async fn add_device(
    svc: &Services,
    claims: &Claims,
    id: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    if !may_manage_devices(claims, id) {
        return Err(ApiError::Forbidden);
    }
    let org = &claims.org_id;
    let id = UserId::parse(id).map_err(|_| ApiError::NotFound)?;
    let input = DeviceInput::parse(body)?;
    let mut user = svc
        .directory
        .get_user(org, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if let Some(d) = user
        .devices
        .iter()
        .find(|d| d.platform == input.platform && d.token == input.token)
    {
        return Ok(json!({"device_id": d.device_id}));
    }
    let endpoint = svc
        .devices
        .register(input.platform, &input.token, &id)
        .await?;
    let device = Device {
        device_id: DeviceId::generate(),
        platform: input.platform,
        token: input.token,
        endpoint: Some(endpoint),
    };
    let device_id = device.device_id.clone();
    user.devices.push(device);
    svc.directory.put_user(org, &user).await?;
    tracing::info!(org_id = %org, user_id = %id, device_id = %device_id, platform = input.platform.as_str(), "device registered");
    Ok(json!({"device_id": device_id}))
}

pub async fn delete_device(
    svc: &Services,
    claims: &Claims,
    id: &str,
    device: &str,
) -> Result<(), ApiError> {
    if !may_manage_devices(claims, id) {
        return Err(ApiError::Forbidden);
    }
    let org = &claims.org_id;
    let id = UserId::parse(id).map_err(|_| ApiError::NotFound)?;
    let mut user = svc
        .directory
        .get_user(org, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let pos = user
        .devices
        .iter()
        .position(|d| d.device_id.as_str() == device)
        .ok_or(ApiError::NotFound)?;
    let removed = user.devices.remove(pos);
    if let Some(endpoint) = &removed.endpoint {
        svc.devices.unregister(endpoint).await?;
    }
    svc.directory.put_user(org, &user).await?;
    tracing::info!(org_id = %org, user_id = %id, device_id = %removed.device_id, "device removed");
    Ok(())
}
