//! The `rules` backend: configured regexes and keyword lists plus built-in
//! detectors for personal data and secrets, each mapped to a category code.
//!
//! It is cheap and deterministic, so it runs first; a match is an `Unsafe`
//! verdict with the matched categories, and every match carries its byte
//! span so a `redact` action can blank it out.

use std::ops::Range;
use std::time::Instant;

use regex::Regex;
use serde::{Deserialize, Serialize};
use warden_policies::taxonomy::CategoryCode;

use crate::backend::{
    BackendKind, BoxFuture, GuardBackend, GuardError, GuardOutcome, GuardRequest,
};
use crate::verdict::Verdict;

/// A built-in detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinDetector {
    /// E-mail addresses.
    Email,
    /// Phone numbers: `+` international, or `(555) 123-4567` style.
    Phone,
    /// Payment card numbers (13–19 digits) that pass the Luhn check.
    CreditCard,
    /// `sk-…` API keys (OpenAI, Anthropic and similar).
    ApiKey,
    /// AWS access key ids (`AKIA…`, `ASIA…`).
    AwsAccessKey,
    /// GitHub tokens (`ghp_…`, `gho_…`, `github_pat_…`).
    GithubToken,
    /// Slack tokens (`xoxb-…`).
    SlackToken,
    /// Google API keys (`AIza…`).
    GoogleApiKey,
    /// Stripe secret keys (`sk_live_…`).
    StripeKey,
    /// PEM private-key blocks (`-----BEGIN … PRIVATE KEY-----`).
    PrivateKey,
}

impl BuiltinDetector {
    /// Every built-in detector.
    pub const ALL: [Self; 10] = [
        Self::Email,
        Self::Phone,
        Self::CreditCard,
        Self::ApiKey,
        Self::AwsAccessKey,
        Self::GithubToken,
        Self::SlackToken,
        Self::GoogleApiKey,
        Self::StripeKey,
        Self::PrivateKey,
    ];

    /// The candidate pattern; some detectors validate candidates further.
    fn pattern(self) -> &'static str {
        match self {
            Self::Email => {
                r"[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}\b"
            }
            Self::Phone => {
                r"\+\d[\d ().-]{6,22}\d|(?:\(\d{3}\)[ .-]?|\b\d{3}[ .-])\d{3}[ .-]\d{4}\b"
            }
            Self::CreditCard => r"\b\d(?:[ -]?\d){12,18}\b",
            Self::ApiKey => r"\bsk-[A-Za-z0-9_-]{20,}",
            Self::AwsAccessKey => r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
            Self::GithubToken => {
                r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"
            }
            Self::SlackToken => r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
            Self::GoogleApiKey => r"\bAIza[0-9A-Za-z_-]{35}",
            Self::StripeKey => r"\b[rs]k_live_[0-9A-Za-z]{16,}",
            // The whole block up to its END line (or the end of the text)
            // so redaction removes the key material too.
            Self::PrivateKey => {
                r"(?s)-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\z)"
            }
        }
    }

    /// Checks a candidate match beyond what the pattern says.
    fn accepts(self, text: &str, span: &Range<usize>) -> bool {
        let candidate = &text[span.clone()];
        match self {
            Self::Phone => {
                let digits = candidate.bytes().filter(u8::is_ascii_digit).count();
                let before_ok = text[..span.start]
                    .chars()
                    .next_back()
                    .is_none_or(|c| !c.is_alphanumeric());
                let after_ok = text[span.end..]
                    .chars()
                    .next()
                    .is_none_or(|c| !c.is_alphanumeric());
                (7..=15).contains(&digits) && before_ok && after_ok
            }
            Self::CreditCard => is_card_number(candidate),
            _ => true,
        }
    }
}

/// Whether `candidate` (digits with optional single spaces or dashes) is a
/// plausible card number: 13–19 digits, one kind of separator, a card-network
/// leading digit, and a valid Luhn checksum.
fn is_card_number(candidate: &str) -> bool {
    let has_space = candidate.contains(' ');
    let has_dash = candidate.contains('-');
    if has_space && has_dash {
        return false;
    }
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    (13..=19).contains(&digits.len()) && (2..=6).contains(&digits[0]) && luhn_valid(&digits)
}

/// The Luhn checksum over decimal digits.
fn luhn_valid(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A configured regular expression mapped to a category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegexRule {
    /// A name reported with each match.
    pub name: String,
    /// The pattern (Rust `regex` syntax).
    pub pattern: String,
    /// The category a match violates.
    pub category: CategoryCode,
}

/// A configured keyword list mapped to a category; words match whole words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeywordRule {
    /// A name reported with each match.
    pub name: String,
    /// The words or phrases to find.
    pub words: Vec<String>,
    /// The category a match violates.
    pub category: CategoryCode,
    /// Match case exactly (default: ignore case).
    #[serde(default)]
    pub case_sensitive: bool,
}

/// A built-in detector enabled for a category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectorRule {
    /// Which detector.
    pub detector: BuiltinDetector,
    /// The category a match violates.
    pub category: CategoryCode,
}

/// What the rules backend checks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesConfig {
    /// Configured regular expressions.
    #[serde(default)]
    pub regexes: Vec<RegexRule>,
    /// Configured keyword lists.
    #[serde(default)]
    pub keywords: Vec<KeywordRule>,
    /// Enabled built-in detectors.
    #[serde(default)]
    pub detectors: Vec<DetectorRule>,
}

impl RulesConfig {
    /// Every built-in detector, all mapped to `category` (e.g. S7 Privacy).
    pub fn all_builtins(category: CategoryCode) -> Self {
        Self {
            detectors: BuiltinDetector::ALL
                .iter()
                .map(|&detector| DetectorRule { detector, category })
                .collect(),
            ..Self::default()
        }
    }
}

/// Which rule produced a match.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Detector {
    /// A built-in detector.
    Builtin(BuiltinDetector),
    /// A configured regex, by name.
    Regex(String),
    /// A configured keyword list, by name.
    Keyword(String),
}

/// One match: which rule, which category, and where in the text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMatch {
    /// The rule that matched.
    pub detector: Detector,
    /// The category it maps to.
    pub category: CategoryCode,
    /// Byte range of the match in the scanned text.
    pub span: Range<usize>,
}

/// Why a rules configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// A configured pattern does not compile.
    #[error("rule {name:?}: invalid regex: {message}")]
    InvalidRegex {
        /// The rule's name.
        name: String,
        /// The compiler's message.
        message: String,
    },
    /// A keyword list is empty or holds an empty word.
    #[error("keyword rule {0:?} has no usable words")]
    EmptyKeywords(String),
}

#[derive(Debug)]
struct CompiledRule {
    detector: Detector,
    builtin: Option<BuiltinDetector>,
    category: CategoryCode,
    regex: Regex,
}

/// The compiled rules backend.
#[derive(Debug)]
pub struct RulesBackend {
    rules: Vec<CompiledRule>,
}

/// A whole-word pattern for a keyword: `\b` only where the keyword's end is
/// a word character, so keywords like `c++` still match.
fn keyword_pattern(word: &str) -> String {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut pattern = String::new();
    if word.chars().next().is_some_and(is_word) {
        pattern.push_str(r"\b");
    }
    pattern.push_str(&regex::escape(word));
    if word.chars().next_back().is_some_and(is_word) {
        pattern.push_str(r"\b");
    }
    pattern
}

impl RulesBackend {
    /// Compiles a configuration.
    pub fn new(config: &RulesConfig) -> Result<Self, RulesError> {
        let mut rules = Vec::new();
        for rule in &config.detectors {
            let regex = Regex::new(rule.detector.pattern()).expect("built-in patterns compile");
            rules.push(CompiledRule {
                detector: Detector::Builtin(rule.detector),
                builtin: Some(rule.detector),
                category: rule.category,
                regex,
            });
        }
        for rule in &config.regexes {
            let regex = Regex::new(&rule.pattern).map_err(|e| RulesError::InvalidRegex {
                name: rule.name.clone(),
                message: e.to_string(),
            })?;
            rules.push(CompiledRule {
                detector: Detector::Regex(rule.name.clone()),
                builtin: None,
                category: rule.category,
                regex,
            });
        }
        for rule in &config.keywords {
            let words: Vec<String> = rule
                .words
                .iter()
                .map(|w| w.trim())
                .filter(|w| !w.is_empty())
                .map(keyword_pattern)
                .collect();
            if words.is_empty() || words.len() != rule.words.len() {
                return Err(RulesError::EmptyKeywords(rule.name.clone()));
            }
            let flags = if rule.case_sensitive { "" } else { "(?i)" };
            let pattern = format!("{flags}(?:{})", words.join("|"));
            let regex = Regex::new(&pattern).map_err(|e| RulesError::InvalidRegex {
                name: rule.name.clone(),
                message: e.to_string(),
            })?;
            rules.push(CompiledRule {
                detector: Detector::Keyword(rule.name.clone()),
                builtin: None,
                category: rule.category,
                regex,
            });
        }
        Ok(Self { rules })
    }

    /// Every match in `text`, ordered by where it starts.
    pub fn scan(&self, text: &str) -> Vec<RuleMatch> {
        let mut found = Vec::new();
        for rule in &self.rules {
            for m in rule.regex.find_iter(text) {
                let span = m.range();
                if rule.builtin.is_none_or(|b| b.accepts(text, &span)) {
                    found.push(RuleMatch {
                        detector: rule.detector.clone(),
                        category: rule.category,
                        span,
                    });
                }
            }
        }
        found.sort_by_key(|m| (m.span.start, m.span.end));
        found
    }

    /// The verdict for a set of matches: the matched categories in order of
    /// first appearance, or `Safe` when nothing matched.
    pub fn verdict_for(matches: &[RuleMatch]) -> Verdict {
        let mut categories: Vec<CategoryCode> = Vec::new();
        for m in matches {
            if !categories.contains(&m.category) {
                categories.push(m.category);
            }
        }
        if categories.is_empty() {
            Verdict::Safe
        } else {
            Verdict::Unsafe { categories }
        }
    }
}

impl GuardBackend for RulesBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Rules
    }

    fn model(&self) -> Option<&str> {
        None
    }

    /// Scans the judged (last) turn; spans refer to its text parts joined by `\n`.
    fn classify<'a>(
        &'a self,
        request: &'a GuardRequest,
    ) -> BoxFuture<'a, Result<GuardOutcome, GuardError>> {
        Box::pin(async move {
            let started = Instant::now();
            let text = request.conversation().last().parts().join("\n");
            let findings = self.scan(&text);
            Ok(GuardOutcome {
                verdict: Self::verdict_for(&findings),
                unsafe_score: None,
                backend: BackendKind::Rules,
                model: None,
                latency: started.elapsed(),
                findings,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::conversation::ChatMessage;
    use crate::prompt::CategorySet;
    use warden_policies::taxonomy::GuardVariant;

    fn code(n: u16) -> CategoryCode {
        CategoryCode::new(n).unwrap()
    }

    fn builtins() -> RulesBackend {
        RulesBackend::new(&RulesConfig::all_builtins(code(7))).unwrap()
    }

    /// The detectors that fire on `text` and the matched substrings.
    fn hits(text: &str) -> Vec<(Detector, String)> {
        builtins()
            .scan(text)
            .into_iter()
            .map(|m| (m.detector, text[m.span].to_owned()))
            .collect()
    }

    fn only(detector: BuiltinDetector, text: &str, expected: &str) {
        assert_eq!(
            hits(text),
            [(Detector::Builtin(detector), expected.to_owned())],
            "in {text:?}"
        );
    }

    #[test]
    fn each_builtin_detector_catches_its_case() {
        use BuiltinDetector::*;
        only(
            Email,
            "mail jane.doe+x@example.co.uk now",
            "jane.doe+x@example.co.uk",
        );
        only(Phone, "call +1 (415) 555-0132 today", "+1 (415) 555-0132");
        only(Phone, "call (415) 555-0132.", "(415) 555-0132");
        only(Phone, "or 415-555-0132", "415-555-0132");
        only(
            CreditCard,
            "card 4111 1111 1111 1111 exp",
            "4111 1111 1111 1111",
        );
        only(
            CreditCard,
            "card 5500-0000-0000-0004",
            "5500-0000-0000-0004",
        );
        only(CreditCard, "amex 378282246310005", "378282246310005");
        let openai = "sk-proj-AbCdEf0123456789AbCdEf0123";
        only(ApiKey, &format!("key={openai}"), openai);
        only(
            AwsAccessKey,
            "id AKIAIOSFODNN7EXAMPLE here",
            "AKIAIOSFODNN7EXAMPLE",
        );
        let ghp = format!("ghp_{}", "a1B2".repeat(9));
        only(GithubToken, &format!("token: {ghp}"), &ghp);
        let pat = format!("github_pat_{}", "Ab1_".repeat(8));
        only(GithubToken, &format!("{pat} "), &pat);
        only(
            SlackToken,
            "xoxb-1234567890-abcdefghij",
            "xoxb-1234567890-abcdefghij",
        );
        let google = format!("AIza{}", "Sy0-_abcde".repeat(3) + "12345");
        only(GoogleApiKey, &google, &google);
        let stripe = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
        only(StripeKey, stripe, stripe);
        let pem =
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----";
        only(PrivateKey, &format!("here:\n{pem}\nbye"), pem);
        let open = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk";
        only(PrivateKey, &format!("x {open}"), open);
        only(
            PrivateKey,
            "-----BEGIN PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY-----",
        );
    }

    #[test]
    fn near_misses_are_not_flagged() {
        for text in [
            "order 4111 1111 1111 1112 shipped",            // fails Luhn
            "ref 4111111111111112",                         // fails Luhn, no separators
            "id 1234567812345678",                          // fails Luhn
            "card 4111 1111-1111 1111",                     // mixed separators
            "user@localhost",                               // no top-level domain
            "@handle and a@b",                              // not addresses
            "on 2024-01-15 at 10:30",                       // a date
            "version 1.2.3 build 45",                       // a version
            "call 555-0132",                                // too short for a phone number
            "sk-short and task-1234567890abcdefghijklmnop", // too short / inside a word
            "AKIA1234",                                     // too short
            "ghp_tooShort",                                 // too short
            "-----BEGIN PUBLIC KEY-----",                   // not private
            "12345678901234567890123",                      // a long digit run
        ] {
            assert_eq!(hits(text), [], "flagged {text:?}");
        }
    }

    #[test]
    fn luhn_checks_the_checksum() {
        let digits = |s: &str| s.chars().filter_map(|c| c.to_digit(10)).collect::<Vec<_>>();
        assert!(luhn_valid(&digits("79927398713")));
        assert!(!luhn_valid(&digits("79927398710")));
        assert!(luhn_valid(&digits("4111111111111111")));
        assert!(!luhn_valid(&digits("4111111111111112")));
    }

    #[test]
    fn configured_regex_and_keywords_catch_with_spans() {
        let config = RulesConfig {
            regexes: vec![RegexRule {
                name: "project-codename".into(),
                pattern: r"\bPROJECT-[A-Z]{4}\b".into(),
                category: code(15),
            }],
            keywords: vec![KeywordRule {
                name: "weapons".into(),
                words: vec!["nerve agent".into(), "c++".into()],
                category: code(9),
                case_sensitive: false,
            }],
            detectors: vec![],
        };
        let rules = RulesBackend::new(&config).unwrap();
        let text = "Tell me about PROJECT-ZEUS and Nerve Agent synthesis in C++ please";
        let found = rules.scan(text);
        let got: Vec<_> = found
            .iter()
            .map(|m| (m.detector.clone(), m.category, &text[m.span.clone()]))
            .collect();
        assert_eq!(
            got,
            [
                (
                    Detector::Regex("project-codename".into()),
                    code(15),
                    "PROJECT-ZEUS"
                ),
                (Detector::Keyword("weapons".into()), code(9), "Nerve Agent"),
                (Detector::Keyword("weapons".into()), code(9), "C++"),
            ]
        );
        assert_eq!(found[0].span, 14..26);
        assert_eq!(
            RulesBackend::verdict_for(&found),
            Verdict::Unsafe {
                categories: vec![code(15), code(9)]
            }
        );
        // Whole words only.
        assert_eq!(rules.scan("nerve agents and PROJECT-ZEUSX"), []);
    }

    #[test]
    fn bad_configuration_is_refused() {
        let config = RulesConfig {
            regexes: vec![RegexRule {
                name: "broken".into(),
                pattern: "(unclosed".into(),
                category: code(1),
            }],
            ..RulesConfig::default()
        };
        assert!(matches!(
            RulesBackend::new(&config),
            Err(RulesError::InvalidRegex { .. })
        ));
        let config = RulesConfig {
            keywords: vec![KeywordRule {
                name: "blank".into(),
                words: vec!["ok".into(), "  ".into()],
                category: code(1),
                case_sensitive: true,
            }],
            ..RulesConfig::default()
        };
        assert_eq!(
            RulesBackend::new(&config).unwrap_err(),
            RulesError::EmptyKeywords("blank".into())
        );
    }

    #[test]
    fn config_reads_from_json() {
        let config: RulesConfig = serde_json::from_str(
            r#"{"detectors":[{"detector":"credit_card","category":"S7"}],
                "keywords":[{"name":"k","words":["secret sauce"],"category":"S15"}]}"#,
        )
        .unwrap();
        assert_eq!(config.detectors[0].detector, BuiltinDetector::CreditCard);
        assert!(!config.keywords[0].case_sensitive);
    }

    #[tokio::test]
    async fn backend_judges_the_last_turn() {
        let rules = builtins();
        let categories = CategorySet::standard(GuardVariant::LlamaGuard3_8b);
        let request = GuardRequest::from_chat(
            Checkpoint::Output,
            &[
                ChatMessage::user("my mail is a@example.com"),
                ChatMessage::assistant("Noted. Your card 4111-1111-1111-1111 is on file."),
            ],
            categories.clone(),
        )
        .unwrap();
        let outcome = rules.classify(&request).await.unwrap();
        assert_eq!(outcome.backend, BackendKind::Rules);
        assert_eq!(
            outcome.verdict,
            Verdict::Unsafe {
                categories: vec![code(7)]
            }
        );
        assert_eq!(outcome.findings.len(), 1);
        assert_eq!(
            outcome.findings[0].detector,
            Detector::Builtin(BuiltinDetector::CreditCard)
        );

        let clean = GuardRequest::from_chat(
            Checkpoint::Input,
            &[ChatMessage::user("what is 2+2?")],
            categories,
        )
        .unwrap();
        let outcome = rules.classify(&clean).await.unwrap();
        assert!(outcome.verdict.is_safe());
        assert!(outcome.findings.is_empty());
    }
}
