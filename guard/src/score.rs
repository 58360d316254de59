//! P(unsafe) from the logits of the first verdict token.
//!
//! Llama Guard's answer starts with `safe` or `unsafe`, usually after a
//! leading `\n\n` (the 8B template ends right after the assistant header).
//! The score is the softmax over just two logits, the first token of `safe`
//! and the first token of `unsafe`, read at the first generated position
//! whose greedy token is not whitespace: the position where the model
//! actually chooses its word. A policy can block on a threshold of it.

use warden_inference::{TokenId, Tokenizer};

use crate::backend::{BackendKind, GuardError};

/// The two token ids the score compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreTokens {
    /// The first token of `safe`.
    pub safe: TokenId,
    /// The first token of `unsafe`.
    pub unsafe_: TokenId,
}

impl ScoreTokens {
    /// The first tokens of `safe` and `unsafe` in this tokenizer (as plain text).
    pub fn new(tokenizer: &Tokenizer) -> Result<Self, GuardError> {
        let first = |word: &str| -> Result<TokenId, GuardError> {
            tokenizer
                .encode(word, false)
                .ok()
                .and_then(|ids| ids.first().copied())
                .ok_or_else(|| GuardError::Crashed {
                    backend: BackendKind::Local,
                    message: format!("the tokenizer cannot encode {word:?}"),
                })
        };
        let tokens = Self {
            safe: first("safe")?,
            unsafe_: first("unsafe")?,
        };
        // With one shared first token the score would always be 0.5: useless.
        if tokens.safe == tokens.unsafe_ {
            return Err(GuardError::Config(
                "`safe` and `unsafe` start with the same token: no score possible".into(),
            ));
        }
        Ok(tokens)
    }

    /// P(unsafe) from one logits row: `softmax([safe, unsafe])[1]`.
    pub fn unsafe_probability(&self, row: &[f32]) -> f32 {
        unsafe_probability(row[self.safe as usize], row[self.unsafe_ as usize])
    }
}

/// `softmax([safe, unsafe])[1]`, written as a logistic so it cannot overflow.
pub fn unsafe_probability(safe_logit: f32, unsafe_logit: f32) -> f32 {
    let d = f64::from(unsafe_logit) - f64::from(safe_logit);
    let p = if d >= 0.0 {
        1.0 / (1.0 + (-d).exp())
    } else {
        let e = d.exp();
        e / (1.0 + e)
    };
    p as f32
}

/// Whether a token is only ASCII whitespace (such as the leading `\n\n`),
/// so the score is read at a later position.
pub fn is_whitespace_token(tokenizer: &Tokenizer, id: TokenId) -> bool {
    let bytes = tokenizer.token_bytes(id);
    !bytes.is_empty() && !tokenizer.is_special(id) && bytes.iter().all(u8::is_ascii_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probability_is_a_two_way_softmax() {
        assert_eq!(unsafe_probability(1.0, 1.0), 0.5);
        let p = unsafe_probability(0.0, 2.0);
        let expected = 2f32.exp() / (1.0 + 2f32.exp());
        assert!((p - expected).abs() < 1e-6);
        assert!((unsafe_probability(2.0, 0.0) - (1.0 - expected)).abs() < 1e-6);
        // Extreme logits saturate instead of producing NaN.
        assert_eq!(unsafe_probability(-1e30, 1e30), 1.0);
        assert_eq!(unsafe_probability(1e30, -1e30), 0.0);
    }
}
