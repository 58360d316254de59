//! The strict Llama Guard verdict parser.
//!
//! The grammar follows the prompt's own instruction: after trimming ASCII
//! whitespace (space, `\t`, `\r`, `\n`) the text must be exactly `safe`, or
//! `unsafe` and one more line of comma-separated codes (`S1,S10`, no
//! spaces), each listed in the prompt. Anything else is an error, which
//! callers must never treat as safe.

use serde::de::Error as _;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use warden_policies::taxonomy::{CategoryCode, InvalidCategoryCode};

/// A parsed guard verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The judged turn is allowed.
    Safe,
    /// The judged turn violates these categories, in the order the model gave.
    Unsafe {
        /// The violated category codes (never empty).
        categories: Vec<CategoryCode>,
    },
}

impl Verdict {
    /// Whether the verdict is `Safe`.
    pub fn is_safe(&self) -> bool {
        matches!(self, Self::Safe)
    }

    /// The violated categories; empty when safe.
    pub fn categories(&self) -> &[CategoryCode] {
        match self {
            Self::Safe => &[],
            Self::Unsafe { categories } => categories,
        }
    }
}

/// Serialises as `{"verdict":"safe"|"unsafe","categories":[...]}`.
impl Serialize for Verdict {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Verdict", 2)?;
        let word = if self.is_safe() { "safe" } else { "unsafe" };
        st.serialize_field("verdict", word)?;
        st.serialize_field("categories", self.categories())?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for Verdict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Word {
            Safe,
            Unsafe,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            verdict: Word,
            #[serde(default)]
            categories: Vec<CategoryCode>,
        }
        let raw = Raw::deserialize(d)?;
        match (raw.verdict, raw.categories.is_empty()) {
            (Word::Safe, true) => Ok(Self::Safe),
            (Word::Unsafe, false) => Ok(Self::Unsafe {
                categories: raw.categories,
            }),
            (Word::Safe, false) => Err(D::Error::custom("a safe verdict has no categories")),
            (Word::Unsafe, true) => Err(D::Error::custom("an unsafe verdict needs categories")),
        }
    }
}

/// Why a guard output is not a valid verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerdictError {
    /// Nothing but whitespace.
    #[error("the guard output is empty")]
    Empty,
    /// The first line is neither `safe` nor `unsafe`.
    #[error("the guard output's first line is {0:?}, not 'safe' or 'unsafe'")]
    BadFirstLine(String),
    /// `safe` followed by more lines.
    #[error("the guard output says safe but has {0} more line(s)")]
    TextAfterSafe(usize),
    /// `unsafe` without a category line.
    #[error("the guard output says unsafe but lists no categories")]
    MissingCategories,
    /// The category line does not match `S<n>(,S<n>)*`.
    #[error(
        "the guard output's category line {0:?} is not a comma-separated list of codes like S1,S10"
    )]
    MalformedCategories(String),
    /// A code that the prompt did not list.
    #[error("the guard output names category {0}, which the prompt did not list")]
    CategoryNotAllowed(CategoryCode),
    /// More than two lines.
    #[error("the guard output has {0} lines; at most 2 are allowed")]
    TooManyLines(usize),
}

/// Parses a guard completion (decoded without special tokens) strictly;
/// `allowed` is the list of codes the prompt listed.
pub fn parse_verdict(output: &str, allowed: &[CategoryCode]) -> Result<Verdict, VerdictError> {
    let trimmed = output.trim_matches([' ', '\t', '\r', '\n']);
    if trimmed.is_empty() {
        return Err(VerdictError::Empty);
    }
    let lines: Vec<&str> = trimmed.split('\n').collect();
    match lines.as_slice() {
        ["safe"] => Ok(Verdict::Safe),
        ["safe", rest @ ..] => Err(VerdictError::TextAfterSafe(rest.len())),
        ["unsafe"] => Err(VerdictError::MissingCategories),
        ["unsafe", list] => {
            parse_codes(list, allowed).map(|categories| Verdict::Unsafe { categories })
        }
        ["unsafe", ..] => Err(VerdictError::TooManyLines(lines.len())),
        [first, ..] => Err(VerdictError::BadFirstLine((*first).to_owned())),
        [] => Err(VerdictError::Empty),
    }
}

/// Parses a code list typed by a person (e.g. `--allowed S1, S2,S10`):
/// comma-separated, spaces around codes allowed, empty items skipped.
/// Not for model output, which [`parse_verdict`] parses strictly.
pub fn parse_code_list(list: &str) -> Result<Vec<CategoryCode>, InvalidCategoryCode> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::parse)
        .collect()
}

/// Parses `S1,S10` strictly; every code must be in `allowed`.
fn parse_codes(list: &str, allowed: &[CategoryCode]) -> Result<Vec<CategoryCode>, VerdictError> {
    let malformed = || VerdictError::MalformedCategories(list.to_owned());
    let mut codes = Vec::new();
    for item in list.split(',') {
        // CategoryCode's FromStr accepts exactly S[1-9][0-9]*.
        let code: CategoryCode = item.parse().map_err(|_| malformed())?;
        if !allowed.contains(&code) {
            return Err(VerdictError::CategoryNotAllowed(code));
        }
        codes.push(code);
    }
    Ok(codes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::load_fixture;

    fn codes(value: &serde_json::Value) -> Vec<CategoryCode> {
        serde_json::from_value(value.clone()).unwrap()
    }

    #[test]
    fn every_output_fixture_parses_as_expected() {
        let cases = load_fixture("llamaguard_outputs.json");
        assert!(cases.len() >= 30);
        for case in &cases {
            let name = case["name"].as_str().unwrap();
            let output = case["input"]["output"].as_str().unwrap();
            let allowed = codes(&case["input"]["allowed_categories"]);
            let got = parse_verdict(output, &allowed);
            if case["expected"] == "error" {
                assert!(got.is_err(), "{name}: accepted as {got:?}");
            } else {
                let got = got.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(
                    serde_json::to_value(&got).unwrap(),
                    case["expected"],
                    "{name}"
                );
                let back: Verdict = serde_json::from_value(case["expected"].clone()).unwrap();
                assert_eq!(back, got, "{name}");
            }
        }
    }

    #[test]
    fn verdict_json_shape_is_exact() {
        assert_eq!(
            serde_json::to_string(&Verdict::Safe).unwrap(),
            r#"{"verdict":"safe","categories":[]}"#
        );
        let unsafe_ = Verdict::Unsafe {
            categories: vec!["S1".parse().unwrap(), "S10".parse().unwrap()],
        };
        assert_eq!(
            serde_json::to_string(&unsafe_).unwrap(),
            r#"{"verdict":"unsafe","categories":["S1","S10"]}"#
        );
        assert!(
            serde_json::from_str::<Verdict>(r#"{"verdict":"unsafe","categories":[]}"#).is_err()
        );
    }

    #[test]
    fn code_lists_from_the_command_line() {
        let codes = parse_code_list("S1, S2,S10,").unwrap();
        assert_eq!(
            codes.iter().map(|c| c.number()).collect::<Vec<_>>(),
            [1, 2, 10]
        );
        assert!(parse_code_list("S1,s2").is_err());
        assert_eq!(parse_code_list("").unwrap(), []);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let all: Vec<CategoryCode> = (1..=14).map(|n| CategoryCode::new(n).unwrap()).collect();
        assert_eq!(parse_verdict(" \n ", &all), Err(VerdictError::Empty));
        assert_eq!(
            parse_verdict("unsafe", &all),
            Err(VerdictError::MissingCategories)
        );
        assert_eq!(
            parse_verdict("safe\nS1", &all),
            Err(VerdictError::TextAfterSafe(1))
        );
        assert_eq!(
            parse_verdict("unsafe\nS1, S2", &all),
            Err(VerdictError::MalformedCategories("S1, S2".into()))
        );
        assert_eq!(
            parse_verdict("unsafe\nS15", &all),
            Err(VerdictError::CategoryNotAllowed(
                CategoryCode::new(15).unwrap()
            ))
        );
        assert_eq!(
            parse_verdict("unsafe\nS1\nwhy", &all),
            Err(VerdictError::TooManyLines(3))
        );
        // Only the four ASCII whitespace characters are trimmed.
        assert!(parse_verdict("\u{c}safe", &all).is_err());
    }
}
