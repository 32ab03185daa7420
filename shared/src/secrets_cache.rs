//! A cache in front of any secret store: a fan-out of thousands of jobs reads each
//! provider secret once. Settings saved with a changed secret name a new revision and
//! so a new secret ([`SecretKey`]), which the next send reads at once; the TTL bounds
//! the rest (secrets under a plain name, from before revisions) and the cache's size.

use crate::ports::{SecretKey, SecretStore, StoreResult};
use async_trait::async_trait;
use secrecy::SecretString;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// At most five minutes, as operators are told a changed password takes effect within.
pub const MAX_TTL: Duration = Duration::from_secs(300);

pub struct CachedSecrets {
    inner: Arc<dyn SecretStore>,
    ttl: Duration,
    entries: Mutex<HashMap<SecretKey, Entry>>,
}

struct Entry {
    at: Instant,
    value: Option<SecretString>,
}

impl CachedSecrets {
    pub fn new(inner: Arc<dyn SecretStore>, ttl: Duration) -> Self {
        Self {
            inner,
            ttl: ttl.min(MAX_TTL),
            entries: Mutex::default(),
        }
    }
}

#[async_trait]
impl SecretStore for CachedSecrets {
    async fn get(&self, key: &SecretKey) -> StoreResult<Option<SecretString>> {
        let cached = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries.retain(|_, e| e.at.elapsed() < self.ttl);
            entries.get(key).map(|e| e.value.clone())
        };
        if let Some(value) = cached {
            return Ok(value);
        }
        let value = self.inner.get(key).await?;
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                key.clone(),
                Entry {
                    at: Instant::now(),
                    value: value.clone(),
                },
            );
        Ok(value)
    }

    async fn put(&self, key: &SecretKey, value: &SecretString) -> StoreResult<()> {
        self.inner.put(key, value).await?;
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        Ok(())
    }

    async fn delete(&self, key: &SecretKey) -> StoreResult<()> {
        self.inner.delete(key).await?;
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrgId;
    use secrecy::ExposeSecret;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A secret store that counts its reads.
    #[derive(Default)]
    struct Counting(Mutex<HashMap<String, SecretString>>, AtomicUsize);

    #[async_trait]
    impl SecretStore for Counting {
        async fn get(&self, key: &SecretKey) -> StoreResult<Option<SecretString>> {
            self.1.fetch_add(1, Ordering::SeqCst);
            Ok(self.0.lock().unwrap().get(&key.name("t")).cloned())
        }
        async fn put(&self, key: &SecretKey, value: &SecretString) -> StoreResult<()> {
            self.0.lock().unwrap().insert(key.name("t"), value.clone());
            Ok(())
        }
        async fn delete(&self, key: &SecretKey) -> StoreResult<()> {
            self.0.lock().unwrap().remove(&key.name("t"));
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_secret_is_read_once_per_ttl_and_a_change_is_seen_after_it() {
        let inner = Arc::new(Counting::default());
        let key = SecretKey::SmtpPassword(OrgId::parse("acme").unwrap(), None);
        inner.put(&key, &SecretString::from("one")).await.unwrap();
        let cache = CachedSecrets::new(inner.clone(), Duration::from_millis(100));
        for _ in 0..1000 {
            assert_eq!(
                cache.get(&key).await.unwrap().unwrap().expose_secret(),
                "one"
            );
        }
        assert_eq!(
            inner.1.load(Ordering::SeqCst),
            1,
            "one read for 1,000 sends"
        );
        // Changed elsewhere (the API function): seen once the TTL has run out.
        inner.put(&key, &SecretString::from("two")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(
            cache.get(&key).await.unwrap().unwrap().expose_secret(),
            "two"
        );
        assert!(CachedSecrets::new(inner, Duration::from_secs(3600)).ttl <= MAX_TTL);
    }

    #[tokio::test]
    async fn a_new_settings_revision_reads_the_secret_afresh_at_once() {
        let inner = Arc::new(Counting::default());
        let org = OrgId::parse("acme").unwrap();
        let r1 = SecretKey::SmtpPassword(org.clone(), Some("r1".into()));
        inner.put(&r1, &SecretString::from("one")).await.unwrap();
        let cache = CachedSecrets::new(inner.clone(), MAX_TTL);
        for _ in 0..100 {
            let v = cache.get(&r1).await.unwrap();
            assert_eq!(v.unwrap().expose_secret(), "one");
        }
        assert_eq!(inner.1.load(Ordering::SeqCst), 1);
        // Saved elsewhere with its settings under revision r2: no waiting for the TTL.
        let r2 = SecretKey::SmtpPassword(org, Some("r2".into()));
        inner.put(&r2, &SecretString::from("two")).await.unwrap();
        let v = cache.get(&r2).await.unwrap();
        assert_eq!(v.unwrap().expose_secret(), "two");
        let v = cache.get(&r2).await.unwrap();
        assert_eq!(v.unwrap().expose_secret(), "two");
        assert_eq!(inner.1.load(Ordering::SeqCst), 2);
    }
}
