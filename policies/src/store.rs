//! The current policy set of a running gateway, swapped atomically on reload.
//!
//! Requests take an `Arc` of the set when they start and keep it, so a
//! reload never changes the policy of a request in flight. A reload that
//! finds any error keeps the last good set and records the errors (for
//! `/readyz` details and the reload-failure metric).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwap;

use crate::error::{PolicyError, PolicyErrors};
use crate::load::{load_dir, PolicySet};
use crate::validate::KnownNames;
use crate::version::Version;

/// What a successful reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The directory validated and its content is the same as before.
    Unchanged,
    /// A new set is in force.
    Changed {
        /// The version of the set replaced.
        from: Version,
        /// The version now in force.
        to: Version,
    },
}

/// A snapshot of the store's health, for `/readyz` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStatus {
    /// The directory watched.
    pub dir: PathBuf,
    /// Version of the set in force.
    pub version: Version,
    /// Number of documents in force.
    pub policies: usize,
    /// Errors of the last reload when it failed; empty after a good one.
    pub last_errors: Vec<PolicyError>,
    /// Reloads that replaced or confirmed the set.
    pub reloads_ok: u64,
    /// Reloads refused because the directory was invalid.
    pub reloads_failed: u64,
}

/// Holds the validated set in force and reloads it.
#[derive(Debug)]
pub struct PolicyStore {
    dir: PathBuf,
    known: RwLock<KnownNames>,
    current: ArcSwap<PolicySet>,
    last_errors: Mutex<Vec<PolicyError>>,
    // Two reloads at once (watcher and SIGHUP) would race to swap.
    reloading: Mutex<()>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

impl PolicyStore {
    /// Loads `dir`; the gateway does not start on an invalid directory.
    pub fn open(dir: impl Into<PathBuf>, known: KnownNames) -> Result<Self, PolicyErrors> {
        let dir = dir.into();
        let set = load_dir(&dir, &known)?;
        tracing::info!(
            dir = %dir.display(),
            version = %set.version(),
            policies = set.policies().len(),
            "policies loaded"
        );
        Ok(Self {
            dir,
            known: RwLock::new(known),
            current: ArcSwap::from_pointee(set),
            last_errors: Mutex::new(Vec::new()),
            reloading: Mutex::new(()),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        })
    }

    /// The policy directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The set in force; keep the `Arc` for the whole request.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// Re-validates the whole directory; on success the new set replaces the
    /// old one, on any error the old one stays and the errors are recorded.
    /// The gateway calls this on SIGHUP; the watcher calls it on file changes.
    pub fn reload(&self) -> Result<ReloadOutcome, PolicyErrors> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let known = self.known.read().unwrap_or_else(|p| p.into_inner()).clone();
        match load_dir(&self.dir, &known) {
            Ok(set) => {
                let old = self.current.load_full();
                let outcome = if old.version() == set.version() {
                    ReloadOutcome::Unchanged
                } else {
                    ReloadOutcome::Changed {
                        from: old.version().clone(),
                        to: set.version().clone(),
                    }
                };
                if let ReloadOutcome::Changed { from, to } = &outcome {
                    tracing::info!(dir = %self.dir.display(), %from, %to, "policies reloaded");
                }
                self.current.store(Arc::new(set));
                self.lock_errors().clear();
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                Ok(outcome)
            }
            Err(errors) => {
                tracing::error!(
                    dir = %self.dir.display(),
                    kept = %self.current.load().version(),
                    %errors,
                    "policy reload refused; keeping the last good set"
                );
                *self.lock_errors() = errors.0.clone();
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                Err(errors)
            }
        }
    }

    /// Replaces the names policies are checked against (after the gateway
    /// configuration changed) and reloads with them.
    pub fn set_known(&self, known: KnownNames) -> Result<ReloadOutcome, PolicyErrors> {
        *self.known.write().unwrap_or_else(|p| p.into_inner()) = known;
        self.reload()
    }

    /// Errors of the last reload when it failed; empty after a good one.
    pub fn last_errors(&self) -> Vec<PolicyError> {
        self.lock_errors().clone()
    }

    /// How many reloads were refused since start (a counter metric).
    pub fn reload_failures(&self) -> u64 {
        self.reloads_failed.load(Ordering::Relaxed)
    }

    /// Health snapshot for `/readyz` details.
    pub fn status(&self) -> StoreStatus {
        let set = self.current();
        StoreStatus {
            dir: self.dir.clone(),
            version: set.version().clone(),
            policies: set.policies().len(),
            last_errors: self.last_errors(),
            reloads_ok: self.reloads_ok.load(Ordering::Relaxed),
            reloads_failed: self.reload_failures(),
        }
    }

    fn lock_errors(&self) -> std::sync::MutexGuard<'_, Vec<PolicyError>> {
        self.last_errors.lock().unwrap_or_else(|p| p.into_inner())
    }
}
