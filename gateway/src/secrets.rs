//! Masks secrets before text reaches the audit: what the rules guard's
//! secret detectors find (API keys, cloud and VCS tokens, private keys) is
//! replaced by `[REDACTED]`, whatever the policy's own rules say.

use std::borrow::Cow;

use warden_guard::rules::{BuiltinDetector, DetectorRule};
use warden_guard::{RulesBackend, RulesConfig};
use warden_policies::taxonomy::CategoryCode;

use crate::guarding::redact;

/// The detectors whose matches are secrets (not merely personal data).
const SECRET_DETECTORS: [BuiltinDetector; 7] = [
    BuiltinDetector::ApiKey,
    BuiltinDetector::AwsAccessKey,
    BuiltinDetector::GithubToken,
    BuiltinDetector::SlackToken,
    BuiltinDetector::GoogleApiKey,
    BuiltinDetector::StripeKey,
    BuiltinDetector::PrivateKey,
];

/// The secret detectors, compiled once.
pub struct SecretMask {
    rules: RulesBackend,
}

impl SecretMask {
    /// Compiles the secret detectors.
    pub fn new() -> Self {
        let category: CategoryCode = "S7".parse().expect("S7 is a category code");
        let config = RulesConfig {
            detectors: SECRET_DETECTORS
                .iter()
                .map(|&detector| DetectorRule { detector, category })
                .collect(),
            ..RulesConfig::default()
        };
        let rules = RulesBackend::new(&config).expect("built-in detectors compile");
        Self { rules }
    }

    /// `text` with every secret masked (borrowed when there is none).
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut spans: Vec<_> = self.rules.scan(text).into_iter().map(|m| m.span).collect();
        if spans.is_empty() {
            return Cow::Borrowed(text);
        }
        spans.sort_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
        Cow::Owned(redact(text, &spans))
    }
}

impl Default for SecretMask {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_other_text_kept() {
        let mask = SecretMask::new();
        let text = "key sk-proj-abcdefghijklmnopqrstuvwxyz0123456789 and AKIAIOSFODNN7EXAMPLE ok";
        let masked = mask.mask(text);
        assert!(!masked.contains("sk-proj-abcdef"), "{masked}");
        assert!(!masked.contains("AKIAIOSFODNN7EXAMPLE"), "{masked}");
        assert!(
            masked.starts_with("key [REDACTED]") && masked.ends_with(" ok"),
            "{masked}"
        );
        assert!(matches!(mask.mask("nothing secret here"), Cow::Borrowed(_)));
    }
}
