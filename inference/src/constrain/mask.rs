//! The per-step token mask: llguidance's matcher over a token trie built
//! from our tokenizer's bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenizerEnv};

use super::{grammar, ConstrainError, Constraint};
use crate::tokenizer::{TokenId, Tokenizer};

/// llguidance's view of our vocabulary. Tokenizing is greedy over the trie
/// (marked non-canonical): llguidance only needs it for forced tokens,
/// which we do not use.
struct TrieEnv {
    trie: TokTrie,
}

impl TokenizerEnv for TrieEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        self.trie.greedy_tokenize(s)
    }

    fn tokenize_is_canonical(&self) -> bool {
        false
    }
}

/// Compiles constraints for one tokenizer; built once per model.
pub struct ConstraintCompiler {
    factory: ParserFactory,
    closers: Arc<[Closer]>,
}

/// How directly a token ends structure, for steering an output that is
/// running out of tokens towards its end: llguidance has no "shortest
/// completion", so near the budget the choice is narrowed to the allowed
/// tokens that close the most. The order matters inside a string, where
/// brackets are mere content: a quote must win so the string ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Closer {
    /// An end-of-sequence token.
    End,
    /// Starts with `"`: ends the string being written.
    Quote,
    /// Starts with `}`, `]` or `)` (a calculator's group).
    Bracket,
    /// Starts with `<` (SmolLM2's `</tool_call>`).
    Tag,
    /// Starts with `,`.
    Separator,
    /// Anything else.
    Other,
}

impl Closer {
    fn of(bytes: &[u8], stop: bool) -> Self {
        match bytes.first() {
            _ if stop => Self::End,
            Some(b'"') => Self::Quote,
            Some(b'}' | b']' | b')') => Self::Bracket,
            Some(b'<') => Self::Tag,
            Some(b',') => Self::Separator,
            _ => Self::Other,
        }
    }
}

impl ConstraintCompiler {
    /// The trie of `tokenizer`'s tokens (special ones marked so grammars can
    /// never produce them as text) with its stop tokens as end of sequence.
    pub fn new(tokenizer: &Tokenizer) -> Result<Self, ConstrainError> {
        let n = tokenizer.vocab_size();
        let words: Vec<Vec<u8>> = (0..n as TokenId)
            .map(|id| {
                let bytes = tokenizer.token_bytes(id);
                if tokenizer.is_special(id) {
                    let mut marked = Vec::with_capacity(bytes.len() + 1);
                    marked.push(TokTrie::SPECIAL_TOKEN_MARKER);
                    marked.extend_from_slice(bytes);
                    marked
                } else {
                    bytes.to_vec()
                }
            })
            .collect();
        let stop = tokenizer.stop_ids();
        let closers: Arc<[Closer]> = (0..n as TokenId)
            .map(|id| Closer::of(tokenizer.token_bytes(id), stop.contains(&id)))
            .collect();
        let Some(&eos) = stop.first() else {
            return Err(ConstrainError::Invalid {
                reason: "the tokenizer has no end-of-sequence token".into(),
            });
        };
        let trie = TokTrie::from(&TokRxInfo::new(n as u32, eos), &words).with_eos_tokens(stop);
        let env: TokEnv = Arc::new(TrieEnv { trie });
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| ConstrainError::Engine(e.to_string()))?;
        factory.quiet();
        Ok(Self { factory, closers })
    }

    /// A fresh mask for one generation under `constraint`; refuses schemas
    /// the grammar compiler cannot implement.
    pub fn start(&self, constraint: &Constraint) -> Result<TokenMask, ConstrainError> {
        let lark = grammar::to_lark(constraint)?;
        let parser = self
            .factory
            .create_parser(TopLevelGrammar::from_lark(lark))
            .map_err(|e| grammar::compile_error(&format!("{e:#}")))?;
        Ok(TokenMask {
            matcher: Matcher::new(Ok(parser)),
            closers: Arc::clone(&self.closers),
            time: Duration::ZERO,
            steps: 0,
        })
    }
}

/// The state of one constrained generation: which tokens may come next.
pub struct TokenMask {
    matcher: Matcher,
    closers: Arc<[Closer]>,
    time: Duration,
    steps: u64,
}

impl TokenMask {
    /// Sets the logit of every token the grammar forbids now to -inf.
    pub fn apply(&mut self, logits: &mut [f32]) -> Result<(), ConstrainError> {
        let started = Instant::now();
        let allowed = self.matcher.compute_mask().map_err(engine)?;
        if allowed.is_zero() {
            return Err(ConstrainError::Engine("the grammar allows no token".into()));
        }
        let n = allowed.len().min(logits.len());
        allowed.iter_unset_entries(|i| {
            if i < n {
                logits[i] = f32::NEG_INFINITY;
            }
        });
        // Rows wider than the vocabulary (padding) hold no real tokens.
        logits[n..].fill(f32::NEG_INFINITY);
        self.time += started.elapsed();
        self.steps += 1;
        Ok(())
    }

    /// Narrows masked `logits` to the allowed tokens that close the most
    /// (see [`Closer`]): used when few tokens are left, so that a long
    /// string or list ends instead of running out of budget.
    pub fn close_soon(&self, logits: &mut [f32]) {
        let best = logits
            .iter()
            .zip(self.closers.iter())
            .filter(|(l, _)| l.is_finite())
            .map(|(_, c)| *c)
            .min();
        let Some(best) = best.filter(|b| *b != Closer::Other) else {
            return;
        };
        for (l, c) in logits.iter_mut().zip(self.closers.iter()) {
            if *c != best {
                *l = f32::NEG_INFINITY;
            }
        }
    }

    /// Advances the grammar by the token that was sampled.
    pub fn commit(&mut self, token: TokenId) -> Result<(), ConstrainError> {
        let started = Instant::now();
        let r = self.matcher.consume_token(token).map_err(engine);
        self.time += started.elapsed();
        r
    }

    /// Whether the output so far is complete (end of sequence is allowed).
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }

    /// Whether the grammar is complete and allows nothing more but the end.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// Time spent computing masks and advancing the grammar, and the number
    /// of masks computed.
    pub fn cost(&self) -> (Duration, u64) {
        (self.time, self.steps)
    }
}

fn engine(e: impl std::fmt::Display) -> ConstrainError {
    ConstrainError::Engine(e.to_string())
}
