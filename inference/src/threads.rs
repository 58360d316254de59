//! Worker threads for the forward pass.
//!
//! Every model with the same thread count shares one pool, so several models
//! or requests running at once queue work onto the same workers instead of
//! oversubscribing the cores.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{InferenceError, Result};

/// Environment variable that sets the default thread count.
pub const THREADS_ENV: &str = "WARDEN_THREADS";

/// The default thread count: `WARDEN_THREADS`, else every available core.
pub fn default_threads() -> usize {
    std::env::var(THREADS_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The process-wide pool with `threads` workers (created on first use).
pub fn pool(threads: usize) -> Result<Arc<rayon::ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let threads = threads.max(1);
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pools.get(&threads) {
        return Ok(p.clone());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("warden-infer-{threads}.{i}"))
        .build()
        .map_err(|e| {
            InferenceError::InvalidRequest(format!("cannot start {threads} threads: {e}"))
        })?;
    let pool = Arc::new(pool);
    pools.insert(threads, pool.clone());
    Ok(pool)
}
