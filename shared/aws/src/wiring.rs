//! The functions' AWS wiring from their environment, in one place so every function
//! names the same variables and fails fast naming the missing one.

use flare_runtime::{self as config, ConfigError};
use flare_shared::domain::{Channel, EmailAddress, Lane};
use std::collections::HashMap;

/// The queue URL of each channel's lane.
pub type QueueUrls = HashMap<(Channel, Lane), String>;

pub const SETTINGS_TABLE: &str = "FLARE_SETTINGS_TABLE";
pub const DIRECTORY_TABLE: &str = "FLARE_DIRECTORY_TABLE";
pub const LOG_TABLE: &str = "FLARE_LOG_TABLE";
pub const DEFAULT_SENDER: &str = "FLARE_DEFAULT_SENDER";
/// The API's public address, which response links are under.
pub const PUBLIC_URL: &str = "FLARE_PUBLIC_URL";

/// The queue URL variable of a channel's lane.
pub fn queue_env(channel: Channel, lane: Lane) -> &'static str {
    match (channel, lane) {
        (Channel::Push, Lane::Normal) => "FLARE_PUSH_QUEUE_URL",
        (Channel::Sms, Lane::Normal) => "FLARE_SMS_QUEUE_URL",
        (Channel::Email, Lane::Normal) => "FLARE_EMAIL_QUEUE_URL",
        (Channel::Push, Lane::Urgent) => "FLARE_PUSH_URGENT_QUEUE_URL",
        (Channel::Sms, Lane::Urgent) => "FLARE_SMS_URGENT_QUEUE_URL",
        (Channel::Email, Lane::Urgent) => "FLARE_EMAIL_URGENT_QUEUE_URL",
    }
}

/// The dead-letter queue ARN variable of a channel's delivery function (each lane's
/// function is given its own lane's): messages from that queue are jobs to give up on
/// (their records end `gave_up: dead_letter`).
pub fn dead_letter_env(channel: Channel) -> &'static str {
    match channel {
        Channel::Push => "FLARE_PUSH_DLQ_ARN",
        Channel::Sms => "FLARE_SMS_DLQ_ARN",
        Channel::Email => "FLARE_EMAIL_DLQ_ARN",
    }
}

#[derive(Debug, Clone)]
pub struct Tables {
    pub settings: String,
    pub directory: String,
    pub log: String,
}

impl Tables {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            settings: config::required(SETTINGS_TABLE)?,
            directory: config::required(DIRECTORY_TABLE)?,
            log: config::required(LOG_TABLE)?,
        })
    }
}

/// The URLs of both lanes' queues of `channels`, each required.
pub fn queue_urls(channels: &[Channel]) -> Result<QueueUrls, ConfigError> {
    channels
        .iter()
        .flat_map(|c| Lane::ALL.map(|l| (*c, l)))
        .map(|(c, l)| Ok(((c, l), config::required(queue_env(c, l))?)))
        .collect()
}

/// `FLARE_DEFAULT_SENDER`, required and a valid address.
pub fn default_sender() -> Result<EmailAddress, ConfigError> {
    let raw = config::required(DEFAULT_SENDER)?;
    EmailAddress::parse(&raw).map_err(|e| ConfigError::Invalid {
        name: DEFAULT_SENDER,
        reason: e.to_string(),
    })
}
