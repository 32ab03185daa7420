//! Who is calling: the JWT's claims, as API Gateway's authorizer or the local runner
//! hands them over. Identity comes only from here, never from a path or a body.

use crate::domain::OrgId;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Dispatcher,
    Responder,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Dispatcher => "dispatcher",
            Role::Responder => "responder",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "dispatcher" => Some(Role::Dispatcher),
            "responder" => Some(Role::Responder),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The caller's user id (kept as given: identity providers use `|` and other
    /// characters user ids may not).
    pub sub: String,
    pub org_id: OrgId,
    pub roles: Vec<Role>,
}

/// Why a request's token was refused: the 401's message says which check failed (it
/// never quotes the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no token: send the header `Authorization: Bearer <token>`")]
    NoToken,
    #[error("the Authorization header is not a bearer token (`Bearer <token>`)")]
    NotBearer,
    #[error("more than one Authorization header")]
    TwoHeaders,
    #[error("the bearer token is not a JWT")]
    NotAJwt,
    #[error("the token is signed with an algorithm this server does not accept (HS256 only)")]
    WrongAlgorithm,
    /// With a hint for where the key comes from (the local runner's secret).
    #[error("the token's signature does not verify{0}")]
    BadSignature(&'static str),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (its nbf is in the future)")]
    NotYetValid,
    #[error("{0}")]
    Claims(#[from] ClaimsError),
    /// A gateway's status callback whose signature does not verify.
    #[error("the callback's signature does not verify with the gateway's stored password")]
    CallbackSignature,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("the token has no `{0}` claim")]
    Missing(&'static str),
    #[error("the token's `{0}` claim is malformed")]
    Malformed(&'static str),
}

impl Claims {
    /// The roles as the token named them (`admin`, ...).
    pub fn role_names(&self) -> Vec<String> {
        self.roles.iter().map(|r| r.as_str().to_string()).collect()
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn is_admin(&self) -> bool {
        self.has(Role::Admin)
    }

    /// Admin or dispatcher: may read settings, users and notifications.
    pub fn is_staff(&self) -> bool {
        self.has(Role::Admin) || self.has(Role::Dispatcher)
    }

    /// From a decoded JWT payload (the local runner).
    pub fn from_json(claims: &Value) -> Result<Self, ClaimsError> {
        let text = |k: &'static str| -> Result<String, ClaimsError> {
            match claims.get(k) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(_) => Err(ClaimsError::Malformed(k)),
                None => Err(ClaimsError::Missing(k)),
            }
        };
        let roles = match claims.get("roles") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .filter_map(Role::parse)
                .collect(),
            Some(Value::String(s)) => parse_roles(s),
            Some(_) => return Err(ClaimsError::Malformed("roles")),
            None => Vec::new(),
        };
        Self::build(text("sub")?, &text("org_id")?, roles)
    }

    /// From API Gateway's HTTP API JWT authorizer, which hands every claim over as a
    /// string: an array claim arrives as `[admin dispatcher]`.
    pub fn from_strings(get: impl Fn(&str) -> Option<String>) -> Result<Self, ClaimsError> {
        let sub = get("sub")
            .filter(|s| !s.is_empty())
            .ok_or(ClaimsError::Missing("sub"))?;
        let org = get("org_id").ok_or(ClaimsError::Missing("org_id"))?;
        let roles = get("roles").map(|r| parse_roles(&r)).unwrap_or_default();
        Self::build(sub, &org, roles)
    }

    fn build(sub: String, org: &str, roles: Vec<Role>) -> Result<Self, ClaimsError> {
        let org_id = OrgId::parse(org).map_err(|_| ClaimsError::Malformed("org_id"))?;
        Ok(Self { sub, org_id, roles })
    }
}

/// `admin dispatcher`, `[admin dispatcher]`, `["admin","dispatcher"]` or `admin,dispatcher`.
fn parse_roles(s: &str) -> Vec<Role> {
    let s = s.trim();
    if s.starts_with('[')
        && let Ok(Value::Array(items)) = serde_json::from_str::<Value>(s)
    {
        return items
            .iter()
            .filter_map(Value::as_str)
            .filter_map(Role::parse)
            .collect();
    }
    s.trim_matches(|c| c == '[' || c == ']')
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter_map(|r| Role::parse(r.trim_matches('"')))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles_come_as_an_array_or_one_space_separated_string() {
        let a = Claims::from_json(
            &json!({"sub": "u-1", "org_id": "acme", "roles": ["admin", "dispatcher"]}),
        )
        .unwrap();
        assert!(a.is_admin() && a.has(Role::Dispatcher));
        let b = Claims::from_json(
            &json!({"sub": "u-1", "org_id": "acme", "roles": "dispatcher responder"}),
        )
        .unwrap();
        assert_eq!(b.roles, [Role::Dispatcher, Role::Responder]);
    }

    #[test]
    fn api_gateway_string_claims_are_understood() {
        for raw in [
            "[admin dispatcher]",
            "admin dispatcher",
            "[\"admin\",\"dispatcher\"]",
            "admin,dispatcher",
        ] {
            let c = Claims::from_strings(|k| match k {
                "sub" => Some("auth0|abc".into()),
                "org_id" => Some("acme".into()),
                "roles" => Some(raw.into()),
                _ => None,
            })
            .unwrap();
            assert_eq!(c.roles, [Role::Admin, Role::Dispatcher], "{raw}");
            assert_eq!(c.sub, "auth0|abc");
        }
    }

    #[test]
    fn missing_or_malformed_identity_is_refused() {
        assert_eq!(
            Claims::from_json(&json!({"org_id": "acme"})).unwrap_err(),
            ClaimsError::Missing("sub")
        );
        assert_eq!(
            Claims::from_json(&json!({"sub": "u", "org_id": "a/b"})).unwrap_err(),
            ClaimsError::Malformed("org_id")
        );
        let unknown =
            Claims::from_json(&json!({"sub": "u", "org_id": "acme", "roles": ["root"]})).unwrap();
        assert!(unknown.roles.is_empty());
    }
}
