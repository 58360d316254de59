//! Reloads a [`PolicyStore`] when files in its directory change.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use crate::load::is_policy_file;
use crate::store::PolicyStore;

/// Editors write a file in several steps; wait this long without events
/// before reloading, so one save means one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches a policy directory while alive; dropping it stops watching.
pub struct PolicyWatcher {
    watcher: Option<RecommendedWatcher>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PolicyWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyWatcher").finish_non_exhaustive()
    }
}

/// Why the directory cannot be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch policy directory: {0}")]
pub struct WatchError(#[from] notify::Error);

/// Whether an event can change what the directory holds.
fn relevant(event: &notify::Event, dir: &Path) -> bool {
    let kind_matters = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    };
    kind_matters && event.paths.iter().any(|p| p == dir || is_policy_file(p))
}

impl PolicyStore {
    /// Starts reloading this store whenever a `*.yaml` / `*.yml` file of its
    /// directory is created, changed, renamed or removed.
    pub fn watch(self: &Arc<Self>) -> Result<PolicyWatcher, WatchError> {
        let (tx, rx) = mpsc::channel::<()>();
        let dir = self.dir().to_owned();
        let watched = dir.clone();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                match res {
                    Ok(event) if relevant(&event, &watched) => {
                        // The receiver is gone only while shutting down.
                        let _ = tx.send(());
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "policy watcher error"),
                }
            })?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;

        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let store = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("policy-watch".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    match rx.recv_timeout(DEBOUNCE) {
                        Ok(()) => {
                            // Drain the burst, then reload once.
                            while rx.recv_timeout(DEBOUNCE).is_ok() {}
                            if !stopping.load(Ordering::Relaxed) {
                                // Errors are logged and recorded by the store.
                                let _ = store.reload();
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            })
            .map_err(|e| WatchError(notify::Error::io(e)))?;

        Ok(PolicyWatcher {
            watcher: Some(watcher),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for PolicyWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.watcher.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
