//! A Llama Guard model run in-process, behind the guard crate's backend
//! trait. Stands in until `warden-guard` ships its own `local` backend
//! (with the prefix cache); it renders the same prompt and parses the
//! verdict with the same strict parser.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use warden_guard::{
    build_prompt_parts, parse_verdict, BackendKind, BoxFuture, GuardBackend, GuardError,
    GuardOutcome, GuardRequest,
};
use warden_inference::{GenerateOptions, Model, SamplingParams};
use warden_policies::taxonomy::GuardVariant;

/// A local guard model.
pub struct LocalGuard {
    model: Arc<Model>,
    name: String,
    variant: GuardVariant,
}

impl LocalGuard {
    /// Wraps a loaded model.
    pub fn new(model: Model, name: String, variant: GuardVariant) -> Self {
        Self {
            model: Arc::new(model),
            name,
            variant,
        }
    }
}

impl GuardBackend for LocalGuard {
    fn kind(&self) -> BackendKind {
        BackendKind::Local
    }

    fn model(&self) -> Option<&str> {
        Some(&self.name)
    }

    fn classify<'a>(
        &'a self,
        request: &'a GuardRequest,
    ) -> BoxFuture<'a, Result<GuardOutcome, GuardError>> {
        Box::pin(async move {
            let started = Instant::now();
            let parts =
                build_prompt_parts(self.variant, request.categories(), request.conversation());
            let model = Arc::clone(&self.model);
            let crashed = |message: String| GuardError::Crashed {
                backend: BackendKind::Local,
                message,
            };
            let tokens = parts
                .encode_with(|text, special| model.tokenizer().encode(text, special))
                .map_err(|e| crashed(e.to_string()))?
                .all();
            let options = GenerateOptions {
                max_tokens: 12,
                sampling: SamplingParams::default(),
                stop: Vec::new(),
            };
            let done = tokio::task::spawn_blocking(move || {
                model.generate(&tokens, &options, |_| ControlFlow::Continue(()))
            })
            .await
            .map_err(|e| crashed(e.to_string()))?
            .map_err(|e| crashed(e.to_string()))?;
            let allowed = request.categories().codes();
            let verdict = parse_verdict(&done.text, &allowed).map_err(|source| {
                GuardError::UnparseableOutput {
                    output: done.text.clone(),
                    source,
                }
            })?;
            Ok(GuardOutcome {
                verdict,
                unsafe_score: None,
                backend: BackendKind::Local,
                model: Some(self.name.clone()),
                latency: started.elapsed(),
                findings: Vec::new(),
            })
        })
    }
}
