//! Directory operations: users and their devices.

use super::Services;
use super::error::ApiError;
use crate::domain::input::{DeviceInput, UserInput};
use crate::domain::{Device, DeviceId, FieldErrors, OrgId, User, UserId};
use crate::ports::{Stored, audit_before};
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

/// Who may call each of these is the route table's (`routes::Access`), checked before.
pub async fn get_user(svc: &Services, org: &OrgId, id: &str) -> Result<Value, ApiError> {
    let id = UserId::parse_existing(id).map_err(|_| ApiError::not_found("no user with that id"))?;
    let u = svc
        .directory
        .get_user(org, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user \"{id}\"")))?;
    let mut v = view(&u);
    mark_opt_outs(svc, org, &mut v).await?;
    Ok(v)
}

/// v1.2: each mobile contact of a user's view whose number opted out of the
/// organization's SMS (a reply STOP) shows since when (`opted_out_at`).
async fn mark_opt_outs(svc: &Services, org: &OrgId, v: &mut Value) -> Result<(), ApiError> {
    let Some(contacts) = v["contacts"].as_array_mut() else {
        return Ok(());
    };
    for c in contacts.iter_mut().filter(|c| c["kind"] == "mobile") {
        let Some(number) = c["value"]
            .as_str()
            .and_then(|n| crate::domain::PhoneNumber::parse(n).ok())
        else {
            continue;
        };
        if let Some(at) = svc.directory.opted_out(org, &number).await? {
            c["opted_out_at"] = json!(at);
        }
    }
    Ok(())
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
    // Devices have their own routes; a PUT keeps them, including one registered while
    // the PUT runs (an update, not a read and a blind write).
    let apply = |user: &mut User| {
        user.name = input.name.clone();
        user.license = input.license;
        user.is_virtual = input.is_virtual;
        user.control_center_id = input.control_center_id.clone();
        user.contacts = input.contacts.clone();
        user.emergency_contacts = input.emergency_contacts.clone();
    };
    let user = loop {
        if let Some(user) = svc.directory.update_user(org, &id, &apply).await? {
            break user;
        }
        let mut user = User {
            user_id: id.clone(),
            name: String::new(),
            license: input.license,
            is_virtual: false,
            control_center_id: None,
            contacts: Default::default(),
            emergency_contacts: Vec::new(),
            devices: Vec::new(),
        };
        apply(&mut user);
        if svc.directory.create_user(org, &user).await? {
            break user;
        }
        // Created by someone else in between: update theirs.
    };
    tracing::info!(org_id = %org, user_id = %user.user_id, "user saved");
    Ok(view(&user))
}

pub async fn delete_user(svc: &Services, org: &OrgId, id: &str) -> Result<(), ApiError> {
    let id = UserId::parse_existing(id).map_err(|_| ApiError::not_found("no user with that id"))?;
    let user = svc
        .directory
        .get_user(org, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user \"{id}\"")))?;
    audit_before(Stored::User(Some(&user)));
    for d in &user.devices {
        if let Some(endpoint) = &d.endpoint {
            svc.devices.unregister(endpoint).await?;
        }
    }
    svc.directory.delete_user(org, &id).await?;
    tracing::info!(org_id = %org, user_id = %id, "user deleted");
    Ok(())
}

/// Registers a device; the same platform and token again answers the existing id.
pub async fn add_device(
    svc: &Services,
    org: &OrgId,
    id: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let id = UserId::parse_existing(id).map_err(|_| ApiError::not_found("no user with that id"))?;
    let input = DeviceInput::parse(body)?;
    let user = svc
        .directory
        .get_user(org, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user \"{id}\"")))?;
    audit_before(Stored::User(Some(&user)));
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
    // Added as one step with whatever else registered meanwhile; the same token
    // registered meanwhile answers that device instead.
    let updated = svc
        .directory
        .update_user(org, &id, &|u: &mut User| {
            if !u
                .devices
                .iter()
                .any(|d| d.platform == device.platform && d.token == device.token)
            {
                u.devices.push(device.clone());
            }
        })
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user \"{id}\"")))?;
    let device_id = updated
        .devices
        .iter()
        .find(|d| d.platform == device.platform && d.token == device.token)
        .map(|d| d.device_id.clone())
        .unwrap_or(device.device_id);
    tracing::info!(org_id = %org, user_id = %id, device_id = %device_id, platform = input.platform.as_str(), "device registered");
    Ok(json!({"device_id": device_id}))
}

pub async fn delete_device(
    svc: &Services,
    org: &OrgId,
    id: &str,
    device: &str,
) -> Result<(), ApiError> {
    let id = UserId::parse_existing(id).map_err(|_| ApiError::not_found("no user with that id"))?;
    let removed = std::sync::Mutex::new(None);
    svc.directory
        .update_user(org, &id, &|u: &mut User| {
            let pos = u
                .devices
                .iter()
                .position(|d| d.device_id.as_str() == device);
            *removed.lock().unwrap_or_else(|e| e.into_inner()) = pos.map(|p| u.devices.remove(p));
        })
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user \"{id}\"")))?;
    let removed = removed
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .ok_or_else(|| ApiError::not_found(format!("user \"{id}\" has no such device")))?;
    // The device is gone from the user first: a push never goes to an endpoint that is
    // being deleted.
    if let Some(endpoint) = &removed.endpoint {
        svc.devices.unregister(endpoint).await?;
    }
    tracing::info!(org_id = %org, user_id = %id, device_id = %removed.device_id, "device removed");
    Ok(())
}
