//! A user of the directory: who they are, their license, their contacts and devices.

use super::contact::{Contacts, ExternalContact};
use super::ids::{ControlCenterId, DeviceId, UserId};
use super::license::License;
use super::validation::ValidationError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Fcm,
    Apns,
    ApnsSandbox,
}

impl Platform {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        match s {
            "fcm" => Ok(Self::Fcm),
            "apns" => Ok(Self::Apns),
            "apns_sandbox" => Ok(Self::ApnsSandbox),
            _ => Err(ValidationError::new("must be fcm, apns or apns_sandbox")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fcm => "fcm",
            Self::Apns => "apns",
            Self::ApnsSandbox => "apns_sandbox",
        }
    }
}

/// A registered mobile device. `endpoint` is the push provider's handle for it (an SNS
/// platform endpoint ARN in AWS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub device_id: DeviceId,
    pub platform: Platform,
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub user_id: UserId,
    pub name: String,
    pub license: License,
    #[serde(rename = "virtual")]
    pub is_virtual: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_center_id: Option<ControlCenterId>,
    #[serde(default)]
    pub contacts: Contacts,
    #[serde(default)]
    pub emergency_contacts: Vec<ExternalContact>,
    #[serde(default)]
    pub devices: Vec<Device>,
}

impl User {
    pub fn has_device(&self) -> bool {
        !self.devices.is_empty()
    }
}
