//! Validated identifiers used across audit records.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

use crate::error::AuditError;

/// Longest identifier accepted, in bytes.
pub const MAX_ID_LEN: usize = 200;

fn check_id(what: &'static str, s: &str) -> Result<(), AuditError> {
    if s.is_empty() {
        return Err(AuditError::InvalidId {
            what,
            reason: "empty",
        });
    }
    if s.len() > MAX_ID_LEN {
        return Err(AuditError::InvalidId {
            what,
            reason: "longer than 200 bytes",
        });
    }
    // PostgreSQL text cannot hold NUL and control characters break CSV/logs.
    if s.chars().any(char::is_control) {
        return Err(AuditError::InvalidId {
            what,
            reason: "contains control characters",
        });
    }
    Ok(())
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps an identifier.
            pub fn new(s: impl Into<String>) -> Result<Self, AuditError> {
                let s = s.into();
                check_id($what, &s)?;
                Ok(Self(s))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = AuditError;
            fn try_from(s: String) -> Result<Self, AuditError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_id!(
    /// The tenant a request belongs to; every query is scoped to one.
    TenantId,
    "tenant id"
);
text_id!(
    /// The id (not the secret) of the API key a request used.
    KeyId,
    "key id"
);
text_id!(
    /// The request id (`x-request-id`) that keys a request's story.
    RequestId,
    "request id"
);
text_id!(
    /// A gateway instance id; each writer start opens a new stream for it.
    InstanceId,
    "instance id"
);

/// One writer stream: the hash chain of one writer from start to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(pub Uuid);

impl StreamId {
    /// A fresh, time-ordered stream id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for StreamId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Which policy (id and version) judged a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PolicyRef {
    /// The policy's id.
    pub id: String,
    /// The policy's version (a content hash).
    pub version: String,
}
