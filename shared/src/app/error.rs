//! The API's errors and how each is answered: `{"error": {"code", "message"}}` with the
//! contract's status codes. No message carries a secret: they are built from fixed text
//! and field paths, never from request values.

use crate::domain::FieldErrors;
use crate::ports::{DeviceError, StoreError};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(#[from] crate::app::auth::AuthFailure),
    /// What the caller would need (`this needs the admin role`).
    #[error("{0}")]
    Forbidden(&'static str),
    /// What was not found, in words (`no user "u-17"`).
    #[error("{0}")]
    NotFound(String),
    /// A thing the body names does not exist (`no such user`).
    #[error("no such {0}")]
    Missing(&'static str),
    #[error("method not allowed here; allowed: {}", .0.join(", "))]
    MethodNotAllowed(Vec<&'static str>),
    #[error("the body is larger than 64 KiB")]
    PayloadTooLarge,
    #[error("the body is not valid JSON")]
    InvalidJson(#[source] serde_json::Error),
    #[error("validation failed")]
    Validation(FieldErrors),
    #[error("manual SMS is disabled in the communication settings")]
    ManualSmsDisabled,
    #[error("the provider refused the message: {0}")]
    ProviderFailed(String),
    #[error("a dependency is temporarily unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(e) => ApiError::Unavailable(e),
            e => ApiError::Internal(e.into()),
        }
    }
}

impl From<DeviceError> for ApiError {
    fn from(e: DeviceError) -> Self {
        match e {
            DeviceError::InvalidToken(_) => {
                let mut f = FieldErrors::new();
                f.add("token", "the push provider refused this token");
                ApiError::Validation(f)
            }
            DeviceError::PlatformNotConfigured(p) => {
                let mut f = FieldErrors::new();
                f.add("platform", format!("push for {p} is not configured"));
                ApiError::Validation(f)
            }
            DeviceError::Unavailable(e) => ApiError::Unavailable(e),
            DeviceError::Failed(e) => ApiError::Internal(e),
        }
    }
}

impl From<FieldErrors> for ApiError {
    fn from(f: FieldErrors) -> Self {
        ApiError::Validation(f)
    }
}

impl ApiError {
    /// A 404 saying what was not found.
    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::NotFound(what.into())
    }

    pub fn status(&self) -> u16 {
        match self {
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) | ApiError::ManualSmsDisabled => 403,
            ApiError::NotFound(_) | ApiError::Missing(_) => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::PayloadTooLarge => 413,
            ApiError::InvalidJson(_) | ApiError::Validation(_) => 400,
            ApiError::ProviderFailed(_) => 502,
            ApiError::Unavailable(_) => 503,
            ApiError::Internal(_) => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) | ApiError::Missing(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::Validation(_) => "validation_failed",
            ApiError::ManualSmsDisabled => "manual_sms_disabled",
            ApiError::ProviderFailed(_) => "provider_failed",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn body(&self) -> Value {
        let message = match self {
            ApiError::Validation(f) if f.fields.len() == 1 => {
                "one field is invalid; see fields".to_string()
            }
            ApiError::Validation(f) => format!("{} fields are invalid; see fields", f.fields.len()),
            // The JSON error's position helps; its text never echoes the input.
            ApiError::InvalidJson(e) => format!(
                "the body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
            other => {
                let mut m = other.to_string();
                if let Some(first) = m.get(..1) {
                    m.replace_range(..1, &first.to_uppercase());
                }
                m
            }
        };
        let mut error = json!({"code": self.code(), "message": message});
        if let ApiError::Validation(f) = self {
            error["fields"] = json!(f.fields);
        }
        json!({ "error": error })
    }
}
