//! The Llama Guard 3 hazard taxonomy: category codes, their names, and the
//! default set each guard variant's prompt lists.
//!
//! It lives here rather than in `warden-guard` because policies validate
//! category codes and the guard builds prompts from them; policies depend on
//! no other Warden crate, so the shared type sits on this side.

use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// A category code such as `S1`; the number is at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CategoryCode(u16);

/// Why a string is not a category code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid category code {0:?}: expected S followed by a number from 1 (e.g. S1, S14)")]
pub struct InvalidCategoryCode(pub String);

impl CategoryCode {
    /// The code `S<n>`; `None` when `n` is 0.
    pub fn new(n: u16) -> Option<Self> {
        (n >= 1).then_some(Self(n))
    }

    /// The number after the `S`.
    pub fn number(self) -> u16 {
        self.0
    }

    /// The standard Llama Guard 3 name of this code, if it is one of S1–S14.
    pub fn standard_name(self) -> Option<&'static str> {
        STANDARD_CATEGORIES
            .get(usize::from(self.0).wrapping_sub(1))
            .copied()
    }
}

impl fmt::Display for CategoryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S{}", self.0)
    }
}

impl FromStr for CategoryCode {
    type Err = InvalidCategoryCode;

    /// Accepts exactly `S[1-9][0-9]*`, the form the verdict grammar uses.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || InvalidCategoryCode(s.to_owned());
        let digits = s.strip_prefix('S').ok_or_else(err)?;
        if digits.is_empty()
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(err());
        }
        digits
            .parse::<u16>()
            .ok()
            .and_then(Self::new)
            .ok_or_else(err)
    }
}

impl Serialize for CategoryCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CategoryCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for CategoryCode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CategoryCode".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^S[1-9][0-9]*$",
            "description": "A Llama Guard category code such as S1."
        })
    }
}

/// Names of the standard categories S1–S14, in code order, as the Llama
/// Guard 3 model card and official prompts write them.
pub const STANDARD_CATEGORIES: [&str; 14] = [
    "Violent Crimes",
    "Non-Violent Crimes",
    "Sex Crimes",
    "Child Exploitation",
    "Defamation",
    "Specialized Advice",
    "Privacy",
    "Intellectual Property",
    "Indiscriminate Weapons",
    "Hate",
    "Self-Harm",
    "Sexual Content",
    "Elections",
    "Code Interpreter Abuse",
];

/// Which Llama Guard 3 prompt a guard model expects.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum GuardVariant {
    /// Llama Guard 3 8B: categories S1–S14.
    #[serde(rename = "llama-guard-3-8b")]
    LlamaGuard3_8b,
    /// Llama Guard 3 1B: categories S1–S13 by default.
    #[serde(rename = "llama-guard-3-1b")]
    LlamaGuard3_1b,
}

impl GuardVariant {
    /// The variant's name as used in configuration and on the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LlamaGuard3_8b => "llama-guard-3-8b",
            Self::LlamaGuard3_1b => "llama-guard-3-1b",
        }
    }

    /// The categories the variant's prompt lists when nothing is excluded.
    pub fn default_categories(self) -> impl Iterator<Item = (CategoryCode, &'static str)> {
        let count = match self {
            Self::LlamaGuard3_8b => 14,
            Self::LlamaGuard3_1b => 13,
        };
        STANDARD_CATEGORIES
            .iter()
            .take(count)
            .zip(1u16..)
            .map(|(name, n)| (CategoryCode(n), *name))
    }
}

impl FromStr for GuardVariant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "llama-guard-3-8b" => Ok(Self::LlamaGuard3_8b),
            "llama-guard-3-1b" => Ok(Self::LlamaGuard3_1b),
            other => Err(format!(
                "unknown guard variant {other:?}: expected llama-guard-3-8b or llama-guard-3-1b"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_parse_strictly() {
        assert_eq!("S1".parse::<CategoryCode>().unwrap().number(), 1);
        assert_eq!("S14".parse::<CategoryCode>().unwrap().to_string(), "S14");
        for bad in ["", "S", "S0", "S01", "s1", "S1 ", "S-1", "X1", "S99999999"] {
            assert!(bad.parse::<CategoryCode>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn variants_list_their_defaults() {
        let eight: Vec<_> = GuardVariant::LlamaGuard3_8b.default_categories().collect();
        let one: Vec<_> = GuardVariant::LlamaGuard3_1b.default_categories().collect();
        assert_eq!(eight.len(), 14);
        assert_eq!(one.len(), 13);
        assert_eq!(eight[13].1, "Code Interpreter Abuse");
        assert_eq!(
            CategoryCode::new(6).unwrap().standard_name(),
            Some("Specialized Advice")
        );
        assert_eq!(CategoryCode::new(15).unwrap().standard_name(), None);
    }
}
