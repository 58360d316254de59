//! The prefix cache: the guard prompt's fixed instruction text, prefilled
//! once and reused.
//!
//! Everything before the conversation (header, task line, category list,
//! `<BEGIN CONVERSATION>`) depends only on the variant, the category set and
//! the judged role. Its KV cache is computed once and every check starts
//! from a copy of it, so a check costs the conversation plus the closing
//! instructions. Copies are handed back when a check ends, rolled back to
//! the prefix and kept (a few per entry) for the next check: a steady
//! stream of checks then copies nothing, where a fork per check copied the
//! whole prefix (about 5% of a check with a 500-token prefix at one thread,
//! 13% at two) into fresh, page-faulting memory.
//!
//! Entries are keyed by the prefix text itself: it is a function of
//! (variant, categories, judged role), so a policy that changes its
//! categories gets a new entry and can never reuse a prefix it did not ask
//! for. One cache belongs to one model, so the model is part of the key
//! implicitly. The map is small and least-recently-used: a gateway has a
//! handful of policies, and a prefix is a few hundred positions of KV.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use warden_inference::{KvCache, TokenId};

/// How many prefixes a cache keeps by default.
pub const DEFAULT_PREFIX_ENTRIES: usize = 8;

/// Idle copies kept per prefix: enough for the checks of a couple of
/// concurrent turns; more copies would only hold memory.
const IDLE_COPIES: usize = 2;

struct Entry {
    text: String,
    tokens: Vec<TokenId>,
    cache: Arc<KvCache>,
    /// Copies handed back by finished checks, holding exactly the prefix.
    idle: Vec<KvCache>,
}

/// A bounded, least-recently-used map from prefix text to its prefilled KV cache.
pub struct PrefixCache {
    capacity: usize,
    /// Most recently used last.
    entries: Mutex<Vec<Entry>>,
    hits: AtomicU64,
    misses: AtomicU64,
    reused: AtomicU64,
}

/// Counters of a [`PrefixCache`], for tests, benchmarks and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrefixCacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to prefill.
    pub misses: u64,
    /// Hits served by an idle copy (no fork).
    pub reused: u64,
    /// Prefixes held now.
    pub entries: usize,
}

impl PrefixCache {
    /// A cache holding at most `capacity` prefixes; 0 disables caching.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(Vec::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            reused: AtomicU64::new(0),
        }
    }

    /// Whether the cache keeps anything.
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// An idle copy of the prefilled cache for `text` (tokenised as
    /// `tokens`), if a finished check handed one back; counts as a hit.
    pub fn take_idle(&self, text: &str, tokens: &[TokenId]) -> Option<KvCache> {
        let mut entries = self.lock();
        let i = entries
            .iter()
            .position(|e| e.text == text && e.tokens == tokens)?;
        let copy = entries[i].idle.pop()?;
        let entry = entries.remove(i);
        entries.push(entry);
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.reused.fetch_add(1, Ordering::Relaxed);
        Some(copy)
    }

    /// Takes back a check's copy of `text`'s prefilled cache (from
    /// [`Self::take_idle`] or a fork of [`Self::get_or_prefill`]'s cache,
    /// its prefix positions untouched), rolled back to the prefix for the
    /// next check. Dropped when the entry is gone or has enough copies.
    pub fn give_back(&self, text: &str, tokens: &[TokenId], mut copy: KvCache) {
        let mut entries = self.lock();
        let Some(entry) = entries
            .iter_mut()
            .find(|e| e.text == text && e.tokens == tokens)
        else {
            return;
        };
        let prefix = entry.cache.len();
        if copy.len() >= prefix && entry.idle.len() < IDLE_COPIES {
            copy.truncate(prefix);
            entry.idle.push(copy);
        }
    }

    /// The prefilled cache for `text` (tokenised as `tokens`), prefilling
    /// it with `prefill` on a miss. Returns the shared cache and whether it
    /// was a hit; callers fork it before appending.
    pub fn get_or_prefill<E>(
        &self,
        text: &str,
        tokens: &[TokenId],
        prefill: impl FnOnce() -> Result<KvCache, E>,
    ) -> Result<(Arc<KvCache>, bool), E> {
        {
            let mut entries = self.lock();
            if let Some(i) = entries
                .iter()
                .position(|e| e.text == text && e.tokens == tokens)
            {
                let entry = entries.remove(i);
                let cache = Arc::clone(&entry.cache);
                entries.push(entry);
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok((cache, true));
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        // Prefill outside the lock: other policies' checks must not wait on
        // it. Two concurrent misses may both prefill; only one is kept.
        let cache = Arc::new(prefill()?);
        if self.capacity > 0 {
            let mut entries = self.lock();
            if !entries.iter().any(|e| e.text == text) {
                if entries.len() >= self.capacity {
                    entries.remove(0);
                }
                entries.push(Entry {
                    text: text.to_owned(),
                    tokens: tokens.to_vec(),
                    cache: Arc::clone(&cache),
                    idle: Vec::new(),
                });
            }
        }
        Ok((cache, false))
    }

    /// Drops every entry (e.g. after a policy reload).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Hits, misses and the number of entries.
    pub fn stats(&self) -> PrefixCacheStats {
        PrefixCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            reused: self.reused.load(Ordering::Relaxed),
            entries: self.lock().len(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        // A panic elsewhere cannot leave the list half-edited: every edit is
        // a single push/remove, so a poisoned lock is still consistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> Result<KvCache, ()> {
        Ok(KvCache::new(1, 1, 1, 16))
    }

    #[test]
    fn hits_misses_and_lru_eviction() {
        let cache = PrefixCache::new(2);
        assert!(!cache.get_or_prefill("a", &[1], empty).unwrap().1);
        assert!(cache.get_or_prefill("a", &[1], empty).unwrap().1);
        assert!(!cache.get_or_prefill("b", &[2], empty).unwrap().1);
        // `a` is used again, so `b` is the least recently used.
        assert!(cache.get_or_prefill("a", &[1], empty).unwrap().1);
        assert!(!cache.get_or_prefill("c", &[3], empty).unwrap().1);
        assert!(cache.get_or_prefill("a", &[1], empty).unwrap().1);
        assert!(!cache.get_or_prefill("b", &[2], empty).unwrap().1);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (3, 4, 2));
    }

    #[test]
    fn handed_back_copies_are_rolled_back_and_reused_a_few_at_a_time() {
        let cache = PrefixCache::new(2);
        let (shared, _) = cache.get_or_prefill("a", &[1], empty).unwrap();
        assert!(cache.take_idle("a", &[1]).is_none());
        // Three checks end; only IDLE_COPIES copies are kept.
        for _ in 0..3 {
            cache.give_back("a", &[1], shared.fork().unwrap());
        }
        // A copy for another prefix, or a different tokenisation, is refused.
        cache.give_back("b", &[2], shared.fork().unwrap());
        assert!(cache.take_idle("a", &[9]).is_none());
        assert!(cache.take_idle("a", &[1]).is_some());
        assert!(cache.take_idle("a", &[1]).is_some());
        assert!(cache.take_idle("a", &[1]).is_none());
        assert!(cache.take_idle("b", &[2]).is_none());
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.reused, stats.misses), (2, 2, 1));
    }

    #[test]
    fn zero_capacity_never_hits_and_errors_pass_through() {
        let cache = PrefixCache::new(0);
        assert!(!cache.enabled());
        assert!(!cache.get_or_prefill("a", &[1], empty).unwrap().1);
        assert!(!cache.get_or_prefill("a", &[1], empty).unwrap().1);
        assert_eq!(cache.stats().entries, 0);
        let failed: Result<_, &str> = PrefixCache::new(2).get_or_prefill("a", &[1], || Err("boom"));
        assert_eq!(failed.unwrap_err(), "boom");
    }
}
