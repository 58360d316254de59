//! Incremental checks of a streamed answer, window by window.
//!
//! A [`StreamGuard`] keeps one KV cache holding the guard prefix, the
//! conversation before the answer and the answer so far. Each check appends
//! only what is new, runs the closing instructions (`\n\n<END
//! CONVERSATION>…` and the assistant header), decodes the verdict, then
//! truncates the cache back to before the closing instructions. Checking
//! window k therefore costs that window plus the closing text, not the whole
//! answer again.
//!
//! # Tokenisation boundaries
//!
//! Windows are given as text ([`StreamGuard::push`]), cut anywhere. A whole
//! check tokenises the answer text in one piece, and BPE may merge across a
//! cut, so tokenising each window separately would give the model different
//! tokens than a whole check. Instead each check re-tokenises the whole
//! conversation text (cheap next to a model pass), keeps the longest common
//! token prefix with what the cache already holds, rolls the cache back to
//! it and runs the rest. Usually only the last token or two before the cut
//! (and the `\n\n` that closes the turn) are re-run. The tokens the model
//! sees after the last window are then exactly those of a whole check; only
//! the rounding of batched passes differs.

use std::sync::Arc;
use std::time::Instant;

use warden_inference::{KvCache, TokenId};

use crate::backend::{GuardError, GuardOutcome};
use crate::local::{Engine, Judgement, LocalBackend};
use crate::prompt::{build_prompt_parts, CategorySet, GuardConversation, GuardMessage, GuardRole};

/// An incremental output check of one streamed answer on a [`LocalBackend`].
pub struct StreamGuard {
    engine: Arc<Engine>,
    categories: CategorySet,
    history: Vec<GuardMessage>,
    answer: String,
    prefix_len: usize,
    /// The prompt's fixed prefix and its tokens, to hand the cache back.
    prefix: (String, Vec<TokenId>),
    prefix_cached: bool,
    /// Holds the prefix, then exactly `fed`.
    cache: KvCache,
    /// Conversation tokens in the cache after the prefix.
    fed: Vec<TokenId>,
    suffix: Vec<TokenId>,
}

impl StreamGuard {
    /// A session for the answer to `history` (the turns before it, ending
    /// with a `User` turn), judged against `categories`. Prefills the
    /// conversation so far (blocking).
    pub fn new(
        backend: &LocalBackend,
        history: Vec<GuardMessage>,
        categories: CategorySet,
    ) -> Result<Self, GuardError> {
        let engine = Arc::clone(&backend.engine);
        let mut turns = history.clone();
        turns.push(GuardMessage::new(GuardRole::Agent, ""));
        let conversation = GuardConversation::new(turns)?;
        let parts = build_prompt_parts(engine.variant, &categories, &conversation);
        let tokens = engine.encode(&parts)?;
        let (cache, prefix_cached) = engine.start(&parts.prefix, &tokens.prefix)?;
        let mut session = Self {
            prefix_len: cache.len(),
            prefix: (parts.prefix, tokens.prefix),
            engine,
            categories,
            history,
            answer: String::new(),
            prefix_cached,
            cache,
            fed: Vec::new(),
            suffix: tokens.suffix,
        };
        // Run the earlier turns now, before the answer starts streaming.
        let conversation = session.conversation_tokens()?;
        session.append(&conversation, 0)?;
        Ok(session)
    }

    /// Appends streamed answer text (any cut: see the module docs).
    pub fn push(&mut self, text: &str) {
        self.answer.push_str(text);
    }

    /// The answer received so far.
    pub fn answer(&self) -> &str {
        &self.answer
    }

    /// Positions the cache holds between checks (prefix + conversation).
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// The conversation (history plus the answer so far) as the guard judges it.
    fn conversation(&self) -> Result<GuardConversation, GuardError> {
        let mut turns = self.history.clone();
        turns.push(GuardMessage::new(GuardRole::Agent, self.answer.clone()));
        Ok(GuardConversation::new(turns)?)
    }

    fn conversation_tokens(&self) -> Result<Vec<TokenId>, GuardError> {
        let conversation = self.conversation()?;
        let parts = build_prompt_parts(self.engine.variant, &self.categories, &conversation);
        self.engine.encode_plain(&parts.conversation)
    }

    /// Runs `tokens[keep..]` after the first `keep` fed tokens, with no verdict.
    fn append(&mut self, tokens: &[TokenId], keep: usize) -> Result<(), GuardError> {
        self.rollback(keep);
        if keep < tokens.len() {
            let result = self.engine.model.forward(
                &tokens[keep..],
                &mut self.cache,
                warden_inference::Logits::Last,
            );
            if let Err(e) = result {
                self.rollback(keep);
                return Err(GuardError::Crashed {
                    backend: crate::BackendKind::Local,
                    message: e.to_string(),
                });
            }
        }
        self.fed = tokens.to_vec();
        Ok(())
    }

    fn rollback(&mut self, keep: usize) {
        self.cache.truncate(self.prefix_len + keep);
        self.fed.truncate(keep);
    }

    /// Judges the answer so far; returns the raw output and score (blocking).
    pub fn check_judgement(&mut self) -> Result<Judgement, GuardError> {
        let tokens = self.conversation_tokens()?;
        let keep = self
            .fed
            .iter()
            .zip(&tokens)
            .take_while(|(a, b)| a == b)
            .count();
        self.rollback(keep);
        let input = [&tokens[keep..], self.suffix.as_slice()].concat();
        let result = self.engine.decode(&mut self.cache, &input);
        match result {
            Ok(mut judgement) => {
                // Drop the closing instructions and the verdict; keep the answer.
                self.cache.truncate(self.prefix_len + tokens.len());
                self.fed = tokens;
                judgement.prefix_cached = self.prefix_cached;
                Ok(judgement)
            }
            Err(e) => {
                self.rollback(keep);
                Err(e)
            }
        }
    }

    /// A strict verdict on the answer so far (blocking).
    pub fn check(&mut self) -> Result<GuardOutcome, GuardError> {
        let started = Instant::now();
        let judgement = self.check_judgement()?;
        self.engine.outcome(&judgement, &self.categories, started)
    }

    /// [`StreamGuard::check`] on a blocking worker. The session comes back
    /// unless the worker panicked (then the check is an error too).
    pub async fn check_async(mut self) -> (Option<Self>, Result<GuardOutcome, GuardError>) {
        match tokio::task::spawn_blocking(move || {
            let result = self.check();
            (self, result)
        })
        .await
        {
            Ok((session, result)) => (Some(session), result),
            Err(e) => (
                None,
                Err(GuardError::Crashed {
                    backend: crate::BackendKind::Local,
                    message: e.to_string(),
                }),
            ),
        }
    }
}

impl Drop for StreamGuard {
    /// Hands the cache back to the prefix cache for the next check.
    fn drop(&mut self) {
        let cache = std::mem::replace(&mut self.cache, KvCache::new(0, 0, 0, 0));
        let (text, tokens) = &self.prefix;
        self.engine.finish(text, tokens, cache);
    }
}
