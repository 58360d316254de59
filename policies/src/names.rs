//! Validated names used in policy documents: policy and rule ids, scope
//! values, tool and backend names.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// Why a string is not an acceptable name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct InvalidName {
    /// Which kind of name was expected.
    pub what: &'static str,
    /// The rejected text.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Ids are shown in audit events and joined with `+` into effective policy
/// ids, so they are restricted to a safe, unambiguous alphabet.
fn check_ident(what: &'static str, s: &str) -> Result<(), InvalidName> {
    let bad = |reason| {
        Err(InvalidName {
            what,
            value: s.to_owned(),
            reason,
        })
    };
    if s.is_empty() {
        return bad("must not be empty");
    }
    if s.len() > 128 {
        return bad("must be at most 128 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return bad("may only contain ASCII letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

/// Free-form names (tenants, keys, models, tools, backends) only need to be
/// non-empty and free of surrounding whitespace, which would never match.
fn check_label(what: &'static str, s: &str) -> Result<(), InvalidName> {
    let bad = |reason| {
        Err(InvalidName {
            what,
            value: s.to_owned(),
            reason,
        })
    };
    if s.is_empty() {
        return bad("must not be empty");
    }
    if s.trim() != s {
        return bad("must not start or end with whitespace");
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal, $check:ident, $schema:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// Validates and wraps `s`.
            pub fn new(s: impl Into<String>) -> Result<Self, InvalidName> {
                let s = s.into();
                $check($what, &s)?;
                Ok(Self(s))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = InvalidName;
            fn try_from(s: String) -> Result<Self, InvalidName> {
                Self::new(s)
            }
        }

        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0
            }
        }

        impl std::str::FromStr for $ty {
            type Err = InvalidName;
            fn from_str(s: &str) -> Result<Self, InvalidName> {
                Self::new(s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                $schema
            }
        }
    };
}

name_type!(
    /// A policy document's id, unique within a policy directory.
    PolicyId,
    "policy id",
    check_ident,
    json_schema!({"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"})
);
name_type!(
    /// A rule's id, unique within its document.
    RuleId,
    "rule id",
    check_ident,
    json_schema!({"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"})
);
name_type!(
    /// A tenant, API key id, model or agent name a policy applies to.
    ScopeName,
    "scope name",
    check_label,
    json_schema!({"type": "string", "minLength": 1})
);
name_type!(
    /// The name of a tool declared in the gateway configuration.
    ToolName,
    "tool name",
    check_label,
    json_schema!({"type": "string", "minLength": 1})
);
name_type!(
    /// The name of a guard backend declared in the gateway configuration.
    BackendName,
    "backend name",
    check_label,
    json_schema!({"type": "string", "minLength": 1})
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_restricted() {
        assert!(PolicyId::new("tenant-acme_v2.1").is_ok());
        for bad in ["", "a b", "a+b", "é", &"x".repeat(129)] {
            assert!(PolicyId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ToolName::new("get weather").is_ok());
        assert!(ToolName::new(" padded").is_err());
        assert!(ScopeName::new("").is_err());
    }
}
