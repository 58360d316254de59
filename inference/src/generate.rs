//! Token-by-token generation with stop tokens, stop strings, a token limit
//! and streaming text deltas that never split a UTF-8 character.

use std::ops::ControlFlow;
use std::sync::mpsc;
use std::sync::Arc;

use crate::cache::KvCache;
use crate::constrain::{ConstrainError, Constraint, TokenMask};
use crate::error::Result;
use crate::llama::Logits;
use crate::model::Model;
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::TokenId;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Upper bound on generated tokens.
    pub max_tokens: usize,
    /// Token choice.
    pub sampling: SamplingParams,
    /// Strings that end generation; the text stops before them. Not applied
    /// under a constraint: there the grammar decides where the output ends.
    pub stop: Vec<String>,
    /// What the output must be (a JSON Schema, a tool call); `None` samples freely.
    pub constraint: Option<Constraint>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            constraint: None,
        }
    }
}

/// Picks each next token: the sampler, behind the constraint's mask when
/// there is one. Without a constraint the choice is exactly the sampler's.
pub(crate) struct Chooser {
    sampler: Sampler,
    mask: Option<TokenMask>,
    max_tokens: usize,
    /// Tokens chosen so far.
    chosen: usize,
}

/// Tokens before the limit from which a constrained output is steered to
/// its end: enough to close a string, the open objects and a call tag.
const CLOSING_MARGIN: usize = 24;

impl Chooser {
    /// Compiles the options' constraint (refusing unsupported schemas before
    /// any token is generated).
    pub(crate) fn new(model: &Model, options: &GenerateOptions) -> Result<Self, ConstrainError> {
        let mask = match &options.constraint {
            Some(c) => Some(model.constrain(c)?),
            None => None,
        };
        Ok(Self {
            sampler: Sampler::new(options.sampling.clone()),
            mask,
            max_tokens: options.max_tokens,
            chosen: 0,
        })
    }

    /// Stop strings in effect: none under a constraint.
    pub(crate) fn stop_strings(&self, options: &GenerateOptions) -> Vec<String> {
        if self.mask.is_some() {
            Vec::new()
        } else {
            options.stop.clone()
        }
    }

    /// The next token for this row of logits, or `None` for an end-of-turn token.
    pub(crate) fn choose(
        &mut self,
        mut row: Vec<f32>,
        stop_ids: &[TokenId],
    ) -> Result<Option<TokenId>, ConstrainError> {
        if let Some(mask) = &mut self.mask {
            mask.apply(&mut row)?;
            if self.chosen + CLOSING_MARGIN >= self.max_tokens {
                mask.close_soon(&mut row);
            }
        }
        self.chosen += 1;
        let token = self.sampler.sample(&row);
        if stop_ids.contains(&token) {
            return Ok(None);
        }
        if let Some(mask) = &mut self.mask {
            mask.commit(token)?;
        }
        Ok(Some(token))
    }

    /// Whether a constrained output is complete and nothing but the end may
    /// follow (saves a forward pass for an end token).
    pub(crate) fn complete(&self) -> bool {
        self.mask.as_ref().is_some_and(TokenMask::is_finished)
    }

    /// The end at the token or context limit: `Length`, unless a constrained
    /// output is incomplete, which is an error rather than a truncated answer.
    pub(crate) fn at_limit(&mut self) -> Result<FinishReason, ConstrainError> {
        let complete = self.mask.as_mut().is_none_or(TokenMask::is_accepting);
        if complete {
            Ok(FinishReason::Length)
        } else {
            Err(ConstrainError::Unfinished {
                max_tokens: self.max_tokens,
            })
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-turn token or a stop string.
    Stop,
    /// `max_tokens` or the model's context was reached.
    Length,
    /// The consumer went away.
    Cancelled,
}

/// One step of a streamed generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// The token just generated.
    pub token: TokenId,
    /// Text that became final with it (may be empty: half a character, or
    /// text held back while it could still be the start of a stop string).
    pub text: String,
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Generated tokens, without the end-of-turn token.
    pub tokens: Vec<TokenId>,
    /// Their text, cut before any stop string.
    pub text: String,
    /// Why it ended.
    pub finish: FinishReason,
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
}

/// Turns token bytes into text deltas: complete characters only, and none
/// that could still turn out to be the start of a stop string.
pub(crate) struct TextAssembler {
    pending: Vec<u8>,
    held: String,
    stop: Vec<String>,
    emitted: String,
}

impl TextAssembler {
    pub(crate) fn new(stop: Vec<String>) -> Self {
        Self {
            pending: Vec::new(),
            held: String::new(),
            stop,
            emitted: String::new(),
        }
    }

    /// Adds a token's bytes; returns the newly final text and whether a stop
    /// string was completed.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> (String, bool) {
        self.pending.extend_from_slice(bytes);
        self.held.push_str(&take_complete_utf8(&mut self.pending));
        if let Some(at) = self
            .stop
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            self.held.truncate(at);
            return (self.release(self.held.len()), true);
        }
        // Hold back the longest tail that is a proper prefix of a stop string.
        let keep = self
            .stop
            .iter()
            .flat_map(|s| {
                let held = &self.held;
                (1..s.len().min(held.len() + 1))
                    .rev()
                    .find(|&k| s.is_char_boundary(k) && held.ends_with(&s[..k]))
            })
            .max()
            .unwrap_or(0);
        (self.release(self.held.len() - keep), false)
    }

    fn release(&mut self, upto: usize) -> String {
        let out: String = self.held.drain(..upto).collect();
        self.emitted.push_str(&out);
        out
    }

    /// Whatever is still held when generation ends without a stop string.
    pub(crate) fn finish(mut self) -> String {
        if !self.pending.is_empty() {
            self.held
                .push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.pending)));
        }
        let rest = std::mem::take(&mut self.held);
        self.emitted.push_str(&rest);
        self.emitted
    }
}

/// Splits off the longest prefix of `bytes` that is complete UTF-8; bytes that
/// can never become valid are replaced by U+FFFD.
fn take_complete_utf8(bytes: &mut Vec<u8>) -> String {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                bytes.clear();
                return out;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                out.push_str(std::str::from_utf8(&bytes[..valid]).unwrap_or_default());
                match e.error_len() {
                    // An incomplete character at the end: wait for more bytes.
                    None => {
                        bytes.drain(..valid);
                        return out;
                    }
                    Some(bad) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        bytes.drain(..valid + bad);
                    }
                }
            }
        }
    }
}

impl Model {
    /// Generates after `prompt` from an empty cache; `on_delta` sees every
    /// step and can stop the work by returning `Break`.
    pub fn generate(
        &self,
        prompt: &[TokenId],
        options: &GenerateOptions,
        on_delta: impl FnMut(&Delta) -> ControlFlow<()>,
    ) -> Result<Completion> {
        let mut cache = self.new_cache();
        self.generate_with_cache(&mut cache, prompt, options, on_delta)
    }

    /// Generates after what `cache` holds followed by `prompt` (which must not
    /// be empty). The cache keeps the prompt and the generated tokens.
    pub fn generate_with_cache(
        &self,
        cache: &mut KvCache,
        prompt: &[TokenId],
        options: &GenerateOptions,
        mut on_delta: impl FnMut(&Delta) -> ControlFlow<()>,
    ) -> Result<Completion> {
        let tokenizer = self.tokenizer();
        let mut chooser = Chooser::new(self, options)?;
        let mut text = TextAssembler::new(chooser.stop_strings(options));
        let mut tokens = Vec::new();
        let mut input: Vec<TokenId> = prompt.to_vec();
        let finish = loop {
            if tokens.len() >= options.max_tokens || cache.len() + input.len() > cache.max_len() {
                break chooser.at_limit()?;
            }
            let logits = self.forward(&input, cache, Logits::Last)?;
            let row = logits.squeeze(0)?.to_vec1::<f32>()?;
            let Some(token) = chooser.choose(row, tokenizer.stop_ids())? else {
                break FinishReason::Stop;
            };
            tokens.push(token);
            let (delta, stopped) = text.push(tokenizer.token_bytes(token));
            if on_delta(&Delta { token, text: delta }).is_break() {
                break FinishReason::Cancelled;
            }
            if stopped || chooser.complete() {
                break FinishReason::Stop;
            }
            input = vec![token];
        };
        Ok(Completion {
            tokens,
            text: text.finish(),
            finish,
            prompt_tokens: prompt.len(),
        })
    }

    /// Generates on a background thread, handing each step to the returned
    /// receiver. Dropping the receiver stops the work at the next token.
    pub fn stream(
        self: &Arc<Self>,
        prompt: Vec<TokenId>,
        options: GenerateOptions,
    ) -> mpsc::Receiver<StreamEvent> {
        let (tx, rx) = mpsc::sync_channel(16);
        let model = Arc::clone(self);
        std::thread::spawn(move || {
            let result = model.generate(&prompt, &options, |d| {
                match tx.send(StreamEvent::Delta(d.clone())) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(()),
                }
            });
            // The receiver may be gone; then nobody wants the end either.
            let _ = tx.send(match result {
                Ok(c) => StreamEvent::Done(c),
                Err(e) => StreamEvent::Failed(e.to_string()),
            });
        });
        rx
    }
}

/// What a [`Model::stream`] receiver gets.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// One generated token and its final text.
    Delta(Delta),
    /// Generation ended; the full completion.
    Done(Completion),
    /// Generation failed.
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_never_split() {
        let mut a = TextAssembler::new(Vec::new());
        let euro = "€".as_bytes();
        assert_eq!(a.push(&euro[..1]).0, "");
        assert_eq!(a.push(&euro[1..]).0, "€");
        assert_eq!(a.push(&[0xFF, b'a']).0, "\u{FFFD}a");
        assert_eq!(a.finish(), "€\u{FFFD}a");
    }

    #[test]
    fn stop_strings_are_held_back_and_cut() {
        let stop = vec!["STOP".to_string()];
        let mut a = TextAssembler::new(stop);
        assert_eq!(a.push(b"hello S"), ("hello ".to_string(), false));
        assert_eq!(a.push(b"T"), (String::new(), false));
        assert_eq!(a.push(b"x"), ("STx".to_string(), false));
        assert_eq!(a.push(b" STO"), (" ".to_string(), false));
        assert_eq!(a.push(b"P and more"), (String::new(), true));
        assert_eq!(a.finish(), "hello STx ");
    }
}
