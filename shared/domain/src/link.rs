//! Response links (v1.2): `<public URL>/r/<code>` in a dispatch SMS or email lets its
//! recipient answer without the app. The code is random; only its SHA-256 is stored, so
//! a copy of the table answers nobody's dispatch.

use crate::ids::{NotificationId, OrgId, UserId};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How long a link answers after it was sent.
pub const LINK_VALIDITY: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// A link's code: letters and digits, random.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkCode(String);

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl LinkCode {
    /// Characters in a code Flare makes: 62^16, about 95 bits.
    pub const LEN: usize = 16;
    /// The shortest code [`Self::parse`] takes (the contract's floor).
    const MIN: usize = 10;
    const MAX: usize = 64;

    /// A code from 16 random bytes (the caller draws them from the OS's generator:
    /// the domain does no I/O).
    pub fn from_random(bytes: [u8; 16]) -> Self {
        let mut n = u128::from_le_bytes(bytes);
        let code = (0..Self::LEN)
            .map(|_| {
                let c = ALPHABET[(n % 62) as usize] as char;
                n /= 62;
                c
            })
            .collect();
        LinkCode(code)
    }

    /// A code from a URL; `None` for anything no code Flare made can be (so a junk
    /// path costs no read).
    pub fn parse(s: &str) -> Option<Self> {
        ((Self::MIN..=Self::MAX).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| LinkCode(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What is stored in its place: SHA-256, hex.
    pub fn digest(&self) -> String {
        Sha256::digest(self.0.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The link a message carries: `<base>/r/<code>`.
    pub fn url(&self, base: &str) -> String {
        format!("{}/r/{}", base.trim_end_matches('/'), self.0)
    }
}

/// The one-time pad that seals the code of (`org`, `notification`, `user`) under the
/// deployment's link key: the first 16 bytes of HMAC-SHA256 over the three, each
/// length-prefixed. Each (notification, recipient) has one code, written once, so its pad
/// seals nothing else.
pub fn link_pad(key: &[u8], org: &OrgId, notification: &NotificationId, user: &UserId) -> [u8; 16] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in [org.as_str(), notification.as_str(), user.as_str()] {
        mac.update(&(part.len() as u32).to_be_bytes());
        mac.update(part.as_bytes());
    }
    let mut pad = [0; 16];
    pad.copy_from_slice(&mac.finalize().into_bytes()[..16]);
    pad
}

impl LinkCode {
    /// The code sealed with `pad`, hex: what the log keeps, useless without the key.
    pub fn seal(&self, pad: &[u8; 16]) -> String {
        self.0
            .bytes()
            .zip(pad)
            .map(|(c, p)| format!("{:02x}", c ^ p))
            .collect()
    }

    /// The code [`Self::seal`] sealed with `pad` (`None` for anything else).
    pub fn unseal(sealed: &str, pad: &[u8; 16]) -> Option<Self> {
        if sealed.len() != 2 * Self::LEN || !sealed.is_ascii() {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..Self::LEN)
            .map(|i| u8::from_str_radix(&sealed[2 * i..2 * i + 2], 16).ok())
            .zip(pad)
            .map(|(b, p)| b.map(|b| b ^ p))
            .collect();
        Self::parse(std::str::from_utf8(&bytes?).ok()?)
    }
}

/// A (notification, recipient)'s code as the log keeps it: sealed, and its digest (which
/// an unsealed code must match: a key changed since gives another code, refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedCode {
    pub digest: String,
    pub sealed: String,
}

/// Never printed: a code in a log line would answer someone's dispatch.
impl std::fmt::Debug for LinkCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkCode(..)")
    }
}

/// What a link answers, stored under its code's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseLink {
    pub digest: String,
    pub org_id: OrgId,
    pub notification_id: NotificationId,
    pub user_id: UserId,
    /// The message's title and the start of its text: the page names the incident.
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub text: String,
    /// Stored as `valid_until` (DynamoDB's TTL attribute is `expires_at`).
    #[serde(rename = "valid_until")]
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

impl ResponseLink {
    /// The most of a message's text a link keeps for its page.
    pub const TEXT_KEPT: usize = 280;

    /// Whether it still answers at `now`.
    pub fn valid_at(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        now < self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_sixteen_letters_and_digits_and_differ_by_their_bytes() {
        let a = LinkCode::from_random([7; 16]);
        let b = LinkCode::from_random([8; 16]);
        assert_eq!(a.as_str().len(), LinkCode::LEN);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert_eq!(LinkCode::parse(a.as_str()), Some(a.clone()));
        assert_eq!(
            a.url("https://api.example.org/"),
            format!("https://api.example.org/r/{}", a.as_str())
        );
        assert_eq!(format!("{a:?}"), "LinkCode(..)");
    }

    #[test]
    fn a_digest_is_sha256_hex_and_not_the_code() {
        let code = LinkCode::parse("abcdefghij").unwrap();
        assert_eq!(
            code.digest(),
            "72399361da6a7754fec986dca5b7cbaf1c810a28ded4abaf56b2106d06cb78b0"
        );
        assert!(!code.digest().contains(code.as_str()));
    }

    #[test]
    fn a_sealed_code_opens_only_with_its_pairs_pad() {
        let (org, user) = (
            OrgId::parse("acme").unwrap(),
            UserId::parse("u-17").unwrap(),
        );
        let n1 = NotificationId::parse("n-1").unwrap();
        let n2 = NotificationId::parse("n-2").unwrap();
        let pad = link_pad(b"key", &org, &n1, &user);
        assert_ne!(pad, link_pad(b"key", &org, &n2, &user));
        assert_ne!(pad, link_pad(b"another key", &org, &n1, &user));
        let code = LinkCode::from_random([9; 16]);
        let sealed = code.seal(&pad);
        assert_eq!(sealed.len(), 32);
        assert!(!sealed.contains(code.as_str()));
        assert_eq!(LinkCode::unseal(&sealed, &pad), Some(code.clone()));
        let other = link_pad(b"key", &org, &n2, &user);
        assert_ne!(LinkCode::unseal(&sealed, &other), Some(code));
        assert_eq!(LinkCode::unseal("zz", &pad), None);
    }

    #[test]
    fn what_no_code_can_be_is_refused_before_any_read() {
        for bad in [
            "",
            "short",
            "abc/def/gh",
            "abcdefghij!",
            &"a".repeat(65),
            "ábcdefghijk",
        ] {
            assert_eq!(LinkCode::parse(bad), None, "{bad:?}");
        }
    }
}
