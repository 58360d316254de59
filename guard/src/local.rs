//! The `local` backend: a Llama Guard model run in-process through
//! `warden-inference`, with the prefix cache and the P(unsafe) score.
//!
//! A check builds the prompt parts for the backend's variant and the
//! request's categories, tokenises the prefix and suffix with special-token
//! parsing and the conversation without it (untrusted text can never become
//! a control token), starts from the prefilled prefix, greedy-decodes a
//! short verdict and parses it strictly. The model work runs on
//! `tokio::task::spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use warden_inference::{argmax, logits_rows, KvCache, Logits, Model, TokenId};
use warden_policies::taxonomy::GuardVariant;

use crate::backend::{
    BackendKind, BoxFuture, GuardBackend, GuardError, GuardOutcome, GuardRequest,
};
use crate::prefix_cache::{PrefixCache, PrefixCacheStats, DEFAULT_PREFIX_ENTRIES};
use crate::prompt::{
    build_prompt_parts, CategorySet, GuardConversation, PromptParts, PromptTokens,
};
use crate::score::{is_whitespace_token, ScoreTokens};
use crate::verdict::{parse_verdict, Verdict};

/// Tokens a verdict may take by default: `\n\nunsafe\nS1,S2,…` for a few
/// categories fits easily; a longer answer is not a verdict.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 24;

/// File name of the bundled model (`scripts/fetch-model.sh` fetches it).
pub const BUNDLED_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where the bundled model lives: `$WARDEN_MODEL_DIR`, else
/// `~/.cache/warden/models`, the directory the fetch script fills.
pub fn bundled_model_path() -> PathBuf {
    let dir = std::env::var_os("WARDEN_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/warden/models")
        });
    dir.join(BUNDLED_MODEL_FILE)
}

/// Settings of a [`LocalBackend`].
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Which Llama Guard prompt layout the model expects.
    pub variant: GuardVariant,
    /// The model name reported in outcomes (default: the file stem).
    pub name: Option<String>,
    /// Most tokens decoded for one verdict.
    pub max_new_tokens: usize,
    /// How many prefixes the prefix cache keeps; 0 disables it.
    pub prefix_cache_entries: usize,
}

impl LocalOptions {
    /// Defaults for a variant: prefix cache on, a 24-token verdict budget.
    pub fn new(variant: GuardVariant) -> Self {
        Self {
            variant,
            name: None,
            max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
            prefix_cache_entries: DEFAULT_PREFIX_ENTRIES,
        }
    }
}

/// What the model wrote for one check, before strict parsing.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The generated text, decoded without special tokens.
    pub text: String,
    /// The generated token ids (without the end-of-turn token).
    pub tokens: Vec<TokenId>,
    /// Whether generation ended with an end-of-turn token.
    pub finished: bool,
    /// P(unsafe) at the first non-whitespace position, if one was reached.
    pub unsafe_score: Option<f32>,
    /// Length of the whole prompt in tokens.
    pub prompt_tokens: usize,
    /// Prompt tokens this check actually ran through the model (the rest
    /// came from a cache).
    pub computed_tokens: usize,
    /// Whether the prefix came from the prefix cache.
    pub prefix_cached: bool,
}

impl Judgement {
    /// The strict verdict: an unfinished or unparseable output is an error.
    pub fn verdict(
        &self,
        allowed: &[warden_policies::taxonomy::CategoryCode],
    ) -> Result<Verdict, GuardError> {
        let verdict =
            parse_verdict(&self.text, allowed).map_err(|source| GuardError::UnparseableOutput {
                output: self.text.clone(),
                source,
            })?;
        // Checked after parsing so garbage is reported as garbage; a clean
        // but cut-off verdict may still be missing categories.
        if !self.finished {
            return Err(GuardError::Unfinished {
                output: self.text.clone(),
                max_tokens: self.tokens.len(),
            });
        }
        Ok(verdict)
    }

    /// The output's first word: the run of ASCII letters after leading
    /// whitespace (`safe` in `\n\nsafe<|eot_id|>` decoded without skipping).
    pub fn first_word(&self) -> &str {
        let text = self.text.trim_start();
        let end = text
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(text.len());
        &text[..end]
    }
}

/// The shared state of a local backend; stream sessions hold it too.
pub(crate) struct Engine {
    pub(crate) model: Arc<Model>,
    pub(crate) name: String,
    pub(crate) variant: GuardVariant,
    max_new_tokens: usize,
    stop_ids: Vec<TokenId>,
    score: ScoreTokens,
    prefixes: PrefixCache,
}

fn crashed(message: impl ToString) -> GuardError {
    GuardError::Crashed {
        backend: BackendKind::Local,
        message: message.to_string(),
    }
}

/// Whether no continuation of `text` can parse as a verdict, so decoding
/// can stop early. Stopping changes nothing but the time: the output is an
/// error either way.
fn hopeless(text: &str) -> bool {
    let t = text.trim_start_matches([' ', '\t', '\r', '\n']);
    let mut lines = t.split('\n');
    let first = lines.next().unwrap_or("");
    let more: Vec<&str> = lines.collect();
    if more.is_empty() {
        let word = first.trim_end_matches([' ', '\t', '\r']);
        return !"safe".starts_with(word) && !"unsafe".starts_with(word);
    }
    let rest_has_text = |from: usize| more[from..].iter().any(|l| !l.trim().is_empty());
    match first.trim_end_matches([' ', '\t', '\r']) {
        "safe" => rest_has_text(0),
        "unsafe" => more.len() > 1 && rest_has_text(1),
        _ => true,
    }
}

impl Engine {
    fn new(model: Arc<Model>, options: LocalOptions) -> Result<Self, GuardError> {
        let tokenizer = model.tokenizer();
        let score = ScoreTokens::new(tokenizer)?;
        let mut stop_ids = tokenizer.stop_ids().to_vec();
        // Llama Guard ends its verdict with <|eot_id|>; make sure it stops
        // even if the file's metadata lists only <|end_of_text|>.
        if let Some(eot) = tokenizer.special_id("<|eot_id|>") {
            if !stop_ids.contains(&eot) {
                stop_ids.push(eot);
            }
        }
        let name = options.name.unwrap_or_else(|| {
            model
                .path()
                .file_stem()
                .map_or_else(|| "local".into(), |s| s.to_string_lossy().into_owned())
        });
        Ok(Self {
            model,
            name,
            variant: options.variant,
            max_new_tokens: options.max_new_tokens.max(1),
            stop_ids,
            score,
            prefixes: PrefixCache::new(options.prefix_cache_entries),
        })
    }

    /// Tokenises the parts: prefix and suffix with special tokens, the
    /// conversation as plain text.
    pub(crate) fn encode(&self, parts: &PromptParts) -> Result<PromptTokens, GuardError> {
        let tokenizer = self.model.tokenizer();
        parts
            .encode_with(|text, special| tokenizer.encode(text, special))
            .map_err(crashed)
    }

    /// Tokenises conversation text as plain text.
    pub(crate) fn encode_plain(&self, text: &str) -> Result<Vec<TokenId>, GuardError> {
        self.model.tokenizer().encode(text, false).map_err(crashed)
    }

    /// A cache holding the prefix, ready to continue: an idle copy of the
    /// cached prefill, a fork of it, or a fresh prefill when the prefix
    /// cache is off. Hand it back with [`Self::finish`].
    pub(crate) fn start(
        &self,
        text: &str,
        tokens: &[TokenId],
    ) -> Result<(KvCache, bool), GuardError> {
        if let Some(copy) = self.prefixes.take_idle(text, tokens) {
            return Ok((copy, true));
        }
        let prefill = || -> Result<KvCache, GuardError> {
            let mut cache = self.model.new_cache();
            self.model
                .forward(tokens, &mut cache, Logits::Last)
                .map_err(crashed)?;
            Ok(cache)
        };
        if !self.prefixes.enabled() {
            return Ok((prefill()?, false));
        }
        let (shared, hit) = self.prefixes.get_or_prefill(text, tokens, prefill)?;
        Ok((shared.fork().map_err(crashed)?, hit))
    }

    /// Ends a check that started from [`Self::start`] with prefix `text`
    /// (`tokens`): the prefix cache keeps the copy for the next check.
    pub(crate) fn finish(&self, text: &str, tokens: &[TokenId], cache: KvCache) {
        if self.prefixes.enabled() {
            self.prefixes.give_back(text, tokens, cache);
        }
    }

    /// Runs `input` after what `cache` holds and greedy-decodes a verdict.
    /// The cache keeps `input` and the generated tokens; callers roll back.
    pub(crate) fn decode(
        &self,
        cache: &mut KvCache,
        input: &[TokenId],
    ) -> Result<Judgement, GuardError> {
        let tokenizer = self.model.tokenizer();
        let prompt_tokens = cache.len() + input.len();
        let logits = self
            .model
            .forward(input, cache, Logits::Last)
            .map_err(crashed)?;
        let mut row = last_row(logits_rows(&logits))?;
        let mut tokens = Vec::new();
        let mut unsafe_score = None;
        let mut finished = false;
        loop {
            let token = argmax(&row);
            // The score is read where the model picks its first word, not at
            // the leading `\n\n`.
            if unsafe_score.is_none() && !is_whitespace_token(tokenizer, token) {
                unsafe_score = Some(self.score.unsafe_probability(&row));
            }
            if self.stop_ids.contains(&token) {
                finished = true;
                break;
            }
            tokens.push(token);
            if tokens.len() >= self.max_new_tokens
                || cache.len() + 1 > cache.max_len()
                || hopeless(&tokenizer.decode(&tokens, true))
            {
                break;
            }
            let logits = self
                .model
                .forward(&[token], cache, Logits::Last)
                .map_err(crashed)?;
            row = last_row(logits_rows(&logits))?;
        }
        Ok(Judgement {
            text: tokenizer.decode(&tokens, true),
            tokens,
            finished,
            unsafe_score,
            prompt_tokens,
            computed_tokens: input.len(),
            prefix_cached: false,
        })
    }

    /// One whole check of a request (blocking).
    pub(crate) fn judge(
        &self,
        categories: &CategorySet,
        conversation: &GuardConversation,
    ) -> Result<Judgement, GuardError> {
        let parts = build_prompt_parts(self.variant, categories, conversation);
        let tokens = self.encode(&parts)?;
        let (mut cache, hit) = self.start(&parts.prefix, &tokens.prefix)?;
        let input = [tokens.conversation.as_slice(), &tokens.suffix].concat();
        let mut judgement = self.decode(&mut cache, &input)?;
        self.finish(&parts.prefix, &tokens.prefix, cache);
        judgement.prefix_cached = hit;
        if !hit {
            // A prefill counts as computed, whether or not it is now cached.
            judgement.computed_tokens += tokens.prefix.len();
        }
        Ok(judgement)
    }

    pub(crate) fn outcome(
        &self,
        judgement: &Judgement,
        categories: &CategorySet,
        started: Instant,
    ) -> Result<GuardOutcome, GuardError> {
        let verdict = judgement.verdict(&categories.codes())?;
        Ok(GuardOutcome {
            verdict,
            unsafe_score: judgement.unsafe_score,
            backend: BackendKind::Local,
            model: Some(self.name.clone()),
            latency: started.elapsed(),
            findings: Vec::new(),
        })
    }
}

/// The last row of a pass's logits.
fn last_row(rows: warden_inference::Result<Vec<Vec<f32>>>) -> Result<Vec<f32>, GuardError> {
    rows.map_err(crashed)?
        .into_iter()
        .next_back()
        .ok_or_else(|| crashed("the model returned no logits"))
}

/// A Llama Guard model run in-process (the `local` backend).
#[derive(Clone)]
pub struct LocalBackend {
    pub(crate) engine: Arc<Engine>,
}

impl LocalBackend {
    /// Wraps a loaded model.
    pub fn new(model: Arc<Model>, options: LocalOptions) -> Result<Self, GuardError> {
        Ok(Self {
            engine: Arc::new(Engine::new(model, options)?),
        })
    }

    /// Loads a model file and wraps it.
    pub fn load(path: &Path, options: LocalOptions) -> Result<Self, GuardError> {
        let model = Model::load(path)
            .map_err(|e| GuardError::Config(format!("cannot load {}: {e}", path.display())))?;
        Self::new(Arc::new(model), options)
    }

    /// The model.
    pub fn model_handle(&self) -> &Arc<Model> {
        &self.engine.model
    }

    /// The prompt layout used.
    pub fn variant(&self) -> GuardVariant {
        self.engine.variant
    }

    /// The prefix cache's counters.
    pub fn prefix_cache_stats(&self) -> PrefixCacheStats {
        self.engine.prefixes.stats()
    }

    /// Drops the cached prefixes (e.g. after a policy reload; entries for
    /// changed category sets would age out anyway).
    pub fn clear_prefix_cache(&self) {
        self.engine.prefixes.clear();
    }

    /// The raw model output and score for a request, unparsed (blocking).
    pub fn judge(&self, request: &GuardRequest) -> Result<Judgement, GuardError> {
        self.engine
            .judge(request.categories(), request.conversation())
    }

    /// A strict verdict for a request (blocking; async callers use
    /// [`GuardBackend::classify`], which runs this off the runtime).
    pub fn classify_blocking(&self, request: &GuardRequest) -> Result<GuardOutcome, GuardError> {
        let started = Instant::now();
        let judgement = self.judge(request)?;
        self.engine
            .outcome(&judgement, request.categories(), started)
    }
}

impl GuardBackend for LocalBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Local
    }

    fn model(&self) -> Option<&str> {
        Some(&self.engine.name)
    }

    fn classify<'a>(
        &'a self,
        request: &'a GuardRequest,
    ) -> BoxFuture<'a, Result<GuardOutcome, GuardError>> {
        let backend = self.clone();
        let owned = request.clone();
        Box::pin(async move {
            // Model passes take milliseconds to seconds of CPU: keep them off
            // the async workers.
            tokio::task::spawn_blocking(move || backend.classify_blocking(&owned))
                .await
                .map_err(crashed)?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::hopeless;

    #[test]
    fn hopeless_only_when_no_verdict_can_follow() {
        for open in [
            "",
            "\n\n",
            "s",
            "\n\nsaf",
            "unsafe",
            "unsafe\n",
            "unsafe\nS1,",
            "safe",
            "safe\n",
            "safe \n ",
        ] {
            assert!(!hopeless(open), "{open:?}");
        }
        for dead in [
            "The",
            "\n\nsafety",
            "safe\nS1",
            "unsafe\nS1\nmore",
            "unsafe x",
            "Safe",
        ] {
            assert!(hopeless(dead), "{dead:?}");
        }
    }
}
