//! Collecting every bad field of an input, not only the first.

use std::collections::BTreeMap;

/// A value that failed validation, with a reason a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValidationError(pub String);

impl ValidationError {
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

/// Every bad field of one input, by field path (`smtp.port`, `contacts[1].value`).
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("invalid fields: {}", self.describe())]
pub struct FieldErrors {
    pub fields: BTreeMap<String, String>,
}

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, path: impl Into<String>, reason: impl std::fmt::Display) {
        // The first reason for a path is kept: it is usually the most basic one.
        self.fields
            .entry(path.into())
            .or_insert_with(|| reason.to_string());
    }

    /// Records the error of `result` under `path` and hands back its value.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        path: impl Into<String>,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(path, e);
                None
            }
        }
    }

    /// Folds another input's errors in under a prefix (`smtp` + `port` = `smtp.port`).
    pub fn merge(&mut self, prefix: &str, other: FieldErrors) {
        for (k, v) in other.fields {
            let path = if prefix.is_empty() {
                k
            } else {
                format!("{prefix}.{k}")
            };
            self.fields.entry(path).or_insert(v);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn contains(&self, path: &str) -> bool {
        self.fields.contains_key(path)
    }

    /// `Ok(value)` when nothing was recorded.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, FieldErrors> {
        if self.is_empty() {
            Ok(value())
        } else {
            Err(self)
        }
    }

    fn describe(&self) -> String {
        self.fields
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Refuses CR and LF: they would let a value add lines to a header or a protocol command.
pub(crate) fn no_line_breaks(s: &str) -> Result<(), ValidationError> {
    if s.contains(['\r', '\n']) {
        Err(ValidationError::new("must not contain line breaks"))
    } else {
        Ok(())
    }
}
