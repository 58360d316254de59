//! Effective policies cached per policy-set version, tenant, key and model.
//!
//! Merging the applicable documents is pure in the set and the scope, and
//! doing it for every request cost a noticeable share of a request's CPU.
//! A new set version (a reload that changed any document) empties the
//! cache, so a cached policy is never older than the set in force.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use warden_policies::{EffectivePolicy, PolicySet, RequestScope, Version};

/// Most scopes kept; past that the cache starts over (a bound, not an LRU:
/// so many distinct tenant/key/model triples is not the common case).
const MAX_ENTRIES: usize = 10_000;

type ByModel = HashMap<String, Arc<EffectivePolicy>>;

/// The cache; cheap to share between workers.
#[derive(Debug, Default)]
pub struct PolicyCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The set version the entries were merged from.
    version: Option<Version>,
    /// tenant → key id → model → policy; nested so a hit allocates nothing.
    entries: HashMap<String, HashMap<String, ByModel>>,
    len: usize,
}

impl PolicyCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The effective policy of `set` for this tenant, key and model (no
    /// request extras), merged once per set version.
    pub fn effective(
        &self,
        set: &PolicySet,
        tenant: &str,
        key_id: &str,
        model: &str,
    ) -> Arc<EffectivePolicy> {
        {
            let inner = self.lock();
            if inner.version.as_ref() == Some(set.version()) {
                if let Some(hit) = inner
                    .entries
                    .get(tenant)
                    .and_then(|k| k.get(key_id))
                    .and_then(|m| m.get(model))
                {
                    return Arc::clone(hit);
                }
            }
        }
        // Merged outside the lock; two workers missing together both merge
        // the same policy, which is harmless.
        let policy = Arc::new(set.effective(&RequestScope::new(tenant, key_id, model)));
        let mut inner = self.lock();
        if inner.version.as_ref() != Some(set.version()) || inner.len >= MAX_ENTRIES {
            inner.entries.clear();
            inner.len = 0;
            inner.version = Some(set.version().clone());
        }
        let slot = inner
            .entries
            .entry(tenant.to_owned())
            .or_default()
            .entry(key_id.to_owned())
            .or_default();
        if slot.insert(model.to_owned(), Arc::clone(&policy)).is_none() {
            inner.len += 1;
        }
        policy
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_policies::{load_dir, KnownNames};

    fn write(dir: &std::path::Path, name: &str, body: &str) {
        std::fs::write(dir.join(name), body).unwrap();
    }

    fn load(dir: &std::path::Path) -> PolicySet {
        load_dir(
            dir,
            &KnownNames::new(["rules".to_owned()], Vec::<String>::new()),
        )
        .unwrap()
    }

    const DEFAULT: &str =
        "id: base\ndescription: Base.\napplies_to: default\ncheckpoints: [input]\nbackends: [rules]\n";

    #[test]
    fn hits_share_one_merge_and_scopes_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.yaml", DEFAULT);
        write(
            dir.path(),
            "acme.yaml",
            "id: acme\ndescription: Acme.\napplies_to: {tenant: acme}\ncheckpoints: [output]\n",
        );
        let set = load(dir.path());
        let cache = PolicyCache::new();
        let a = cache.effective(&set, "acme", "k1", "m");
        let again = cache.effective(&set, "acme", "k1", "m");
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(*a, set.effective(&RequestScope::new("acme", "k1", "m")));
        let other = cache.effective(&set, "globex", "k1", "m");
        assert_eq!(
            *other,
            set.effective(&RequestScope::new("globex", "k1", "m"))
        );
        assert_ne!(a.id, other.id);
        let model = cache.effective(&set, "acme", "k1", "m2");
        assert!(!Arc::ptr_eq(&a, &model));
    }

    #[test]
    fn a_new_set_version_is_merged_again() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.yaml", DEFAULT);
        let cache = PolicyCache::new();
        let old_set = load(dir.path());
        let old = cache.effective(&old_set, "t", "k", "m");
        write(
            dir.path(),
            "base.yaml",
            "id: base\ndescription: Base.\napplies_to: default\ncheckpoints: [input, output]\nbackends: [rules]\n",
        );
        let new_set = load(dir.path());
        assert_ne!(old_set.version(), new_set.version());
        let new = cache.effective(&new_set, "t", "k", "m");
        assert_ne!(old.version, new.version);
        assert_eq!(*new, new_set.effective(&RequestScope::new("t", "k", "m")));
        // A request still holding the old set gets the old set's policy.
        assert_eq!(*cache.effective(&old_set, "t", "k", "m"), *old);
    }
}
