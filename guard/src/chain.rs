//! Several backends in order, rules first: a cheap rules block skips the model.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::backend::{
    classify_with_timeout, BackendKind, GuardBackend, GuardError, GuardOutcome, GuardRequest,
};
use crate::verdict::Verdict;

/// One backend of a chain and its deadline.
#[derive(Clone)]
pub struct ChainStep {
    /// The backend.
    pub backend: Arc<dyn GuardBackend>,
    /// How long it may take; running out is a [`GuardError::Timeout`].
    pub timeout: Duration,
}

/// Backends run in order, `rules` backends first; the first `Unsafe`
/// verdict ends the chain.
#[derive(Clone, Default)]
pub struct GuardChain {
    steps: Vec<ChainStep>,
}

/// What a chain decided and every outcome that went into it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChainOutcome {
    /// `Unsafe` from the first backend that blocked, else `Safe`.
    pub verdict: Verdict,
    /// The outcomes in the order the backends ran; the last one decided.
    pub outcomes: Vec<GuardOutcome>,
}

impl ChainOutcome {
    /// The backend that blocked, if any.
    pub fn blocked_by(&self) -> Option<BackendKind> {
        self.outcomes
            .iter()
            .find(|o| !o.verdict.is_safe())
            .map(|o| o.backend)
    }
}

impl GuardChain {
    /// An empty chain (which judges everything safe: add a backend).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a backend. Rules backends are moved before model backends
    /// (keeping the order within each group): they cost microseconds, and a
    /// rules block makes the model's opinion moot.
    pub fn with(mut self, backend: Arc<dyn GuardBackend>, timeout: Duration) -> Self {
        self.steps.push(ChainStep { backend, timeout });
        self.steps
            .sort_by_key(|s| s.backend.kind() != BackendKind::Rules);
        self
    }

    /// The backends in the order they run.
    pub fn steps(&self) -> &[ChainStep] {
        &self.steps
    }

    /// Runs the backends in order until one blocks. Any backend error is
    /// returned as is (the caller applies the policy's fail mode): an error
    /// never counts as safe.
    pub async fn classify(&self, request: &GuardRequest) -> Result<ChainOutcome, GuardError> {
        let mut outcomes = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            let outcome =
                classify_with_timeout(step.backend.as_ref(), request, step.timeout).await?;
            let blocked = !outcome.verdict.is_safe();
            let verdict = outcome.verdict.clone();
            outcomes.push(outcome);
            if blocked {
                return Ok(ChainOutcome { verdict, outcomes });
            }
        }
        Ok(ChainOutcome {
            verdict: Verdict::Safe,
            outcomes,
        })
    }
}
