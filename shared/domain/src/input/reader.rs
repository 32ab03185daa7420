//! Reading a JSON object field by field, each problem recorded under its path.

use super::*;

/// Reads fields of one JSON object, recording each problem under its path.
pub struct Reader<'a, 'e> {
    obj: &'a Map<String, Value>,
    prefix: String,
    pub(super) errors: &'e mut FieldErrors,
}

impl<'a, 'e> Reader<'a, 'e> {
    pub fn new(obj: &'a Map<String, Value>, prefix: &str, errors: &'e mut FieldErrors) -> Self {
        Self {
            obj,
            prefix: prefix.to_string(),
            errors,
        }
    }

    pub fn path(&self, key: &str) -> String {
        join(&self.prefix, key)
    }

    fn present(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.present(key).is_some()
    }

    pub fn error(&mut self, key: &str, reason: impl Display) {
        let p = self.path(key);
        self.errors.add(p, reason);
    }

    pub fn optional_str(&mut self, key: &str) -> Option<Option<&'a str>> {
        match self.present(key) {
            None => Some(None),
            Some(Value::String(s)) => Some(Some(s.as_str())),
            Some(_) => {
                self.error(key, "must be a string");
                None
            }
        }
    }

    pub fn required_str(&mut self, key: &str) -> Option<&'a str> {
        match self.optional_str(key) {
            Some(Some(s)) => Some(s),
            Some(None) => {
                self.error(key, "is required");
                None
            }
            None => None,
        }
    }

    pub fn required_with<T, E: Display>(
        &mut self,
        key: &str,
        f: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        let s = self.required_str(key)?;
        let p = self.path(key);
        self.errors.check(p, f(s))
    }

    /// `Some(None)` when absent or null; `None` when present and bad.
    pub fn optional_with<T, E: Display>(
        &mut self,
        key: &str,
        f: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<Option<T>> {
        match self.optional_str(key)? {
            None => Some(None),
            Some(s) => {
                let p = self.path(key);
                self.errors.check(p, f(s)).map(Some)
            }
        }
    }

    pub fn optional_bool(&mut self, key: &str) -> Option<Option<bool>> {
        match self.present(key) {
            None => Some(None),
            Some(Value::Bool(b)) => Some(Some(*b)),
            Some(_) => {
                self.error(key, "must be true or false");
                None
            }
        }
    }

    /// `Some(None)` when absent or null; `None` when present and not a whole number.
    pub fn optional_int(&mut self, key: &str) -> Option<Option<i64>> {
        match self.present(key) {
            None => Some(None),
            Some(_) => self.required_int(key).map(Some),
        }
    }

    /// A whole number from `lo` to `hi`, or left out (`Some(None)`); `None` when it is
    /// anything else (its error recorded).
    pub fn optional_int_in<T>(&mut self, key: &str, lo: T, hi: T) -> Option<Option<T>>
    where
        T: TryFrom<i64> + PartialOrd + Display + Copy,
    {
        let Some(n) = self.optional_int(key)? else {
            return Some(None);
        };
        match T::try_from(n) {
            Ok(n) if lo <= n && n <= hi => Some(Some(n)),
            _ => {
                self.error(key, format!("must be a whole number from {lo} to {hi}"));
                None
            }
        }
    }

    pub fn required_int(&mut self, key: &str) -> Option<i64> {
        match self.present(key) {
            None => {
                self.error(key, "is required");
                None
            }
            // JSON has one number type: 587.0 is the whole number 587.
            Some(v) => match v.as_i64().or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                    .map(|f| f as i64)
            }) {
                Some(n) => Some(n),
                None => {
                    self.error(key, "must be a whole number");
                    None
                }
            },
        }
    }

    /// A nested value, parsed by `f` with the field's path as prefix.
    pub fn optional_value<T>(
        &mut self,
        key: &str,
        f: impl FnOnce(&Value, &str, &mut FieldErrors) -> Option<T>,
    ) -> Option<Option<T>> {
        match self.present(key) {
            None => Some(None),
            Some(v) => {
                let p = self.path(key);
                f(v, &p, self.errors).map(Some)
            }
        }
    }

    pub fn required_value<T>(
        &mut self,
        key: &str,
        f: impl FnOnce(&Value, &str, &mut FieldErrors) -> Option<T>,
    ) -> Option<T> {
        match self.optional_value(key, f) {
            Some(Some(v)) => Some(v),
            Some(None) => {
                self.error(key, "is required");
                None
            }
            None => None,
        }
    }

    /// A list whose items are parsed by `f` at paths `key[i]`; `None` if any item is bad.
    pub fn optional_list<T>(
        &mut self,
        key: &str,
        f: impl Fn(&Value, &str, &mut FieldErrors) -> Option<T>,
    ) -> Option<Option<Vec<T>>> {
        let items = match self.present(key) {
            None => return Some(None),
            Some(Value::Array(items)) => items,
            Some(_) => {
                self.error(key, "must be a list");
                return None;
            }
        };
        let base = self.path(key);
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match f(item, &format!("{base}[{i}]"), self.errors) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(Some(out))
    }

    pub fn required_list<T>(
        &mut self,
        key: &str,
        f: impl Fn(&Value, &str, &mut FieldErrors) -> Option<T>,
    ) -> Option<Vec<T>> {
        match self.optional_list(key, f) {
            Some(Some(v)) => Some(v),
            Some(None) => {
                self.error(key, "is required");
                None
            }
            None => None,
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// An item parser for lists of strings.
pub fn string_item<T, E: Display>(
    f: impl Fn(&str) -> Result<T, E>,
) -> impl Fn(&Value, &str, &mut FieldErrors) -> Option<T> {
    move |v, path, errors| match v.as_str() {
        Some(s) => errors.check(path, f(s)),
        None => {
            errors.add(path, "must be a string");
            None
        }
    }
}

/// Runs `f` on a JSON object (an error at `path` if it is not one).
pub fn object<T>(
    v: &Value,
    path: &str,
    errors: &mut FieldErrors,
    f: impl FnOnce(&mut Reader) -> Option<T>,
) -> Option<T> {
    match v.as_object() {
        Some(obj) => {
            let mut r = Reader::new(obj, path, errors);
            f(&mut r)
        }
        None => {
            errors.add(
                if path.is_empty() { "body" } else { path },
                "must be an object",
            );
            None
        }
    }
}

/// Names each field of the object `v` that is not in `known` ("unknown field"): a
/// misspelt optional field must not be silently ignored. Request bodies only; events
/// stay lenient, so an upstream addition never stops a notification.
pub fn reject_unknown(v: &Value, path: &str, errors: &mut FieldErrors, known: &[&str]) {
    if let Some(obj) = v.as_object() {
        for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
            errors.add(join(path, key), "unknown field");
        }
    }
}

/// Free text: trimmed, non-empty, bounded, and without control characters where it may
/// end up in a header line.
pub fn text(s: &str, max: usize, single_line: bool) -> Result<String, ValidationError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(ValidationError::new("must not be empty"));
    }
    // The limit applies to what was sent, so it is the same limit the OpenAPI schema states.
    if s.chars().count() > max {
        return Err(ValidationError::new(format!(
            "must be at most {max} characters"
        )));
    }
    if single_line && t.chars().any(|c| c.is_control()) {
        return Err(ValidationError::new(
            "must be one line without control characters",
        ));
    }
    Ok(t.to_string())
}

/// An SMS text as a caller sends it: not blank, at most [`super::MAX_SMS_TEXT`]
/// characters, no control character but line ends and tab, and no noncharacter nor
/// U+FFFD (what a broken encoding leaves behind). Trimmed.
pub fn sms_text(s: &str) -> Result<String, ValidationError> {
    let t = text(s, super::MAX_SMS_TEXT, false)?;
    let bad = t.chars().find(|&c| {
        (c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
            || c == '\u{FFFD}'
            || crate::text::hidden(c) == Some("noncharacters")
    });
    match bad {
        Some(c) => Err(ValidationError::new(format!(
            "must not contain control characters (but line ends and tab), noncharacters or U+FFFD (U+{:04X})",
            c as u32
        ))),
        None => Ok(t),
    }
}
