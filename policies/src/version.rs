//! Content versions.
//!
//! A document's version is the SHA-256 (lowercase hex) of its canonical
//! content: the parsed document serialised as compact JSON with object keys
//! sorted at every level. Comments, key order, quoting and whitespace in the
//! YAML therefore do not change the version; any change of meaning does.
//! Settings left out are absent from the JSON, so writing a default value
//! explicitly does change the version (the text says something more).

use std::fmt;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::document::PolicyDocument;

/// A SHA-256 content hash in lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(String);

impl Version {
    /// The hash of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self(hex::encode(Sha256::digest(bytes)))
    }

    /// The version of a document (hash of its canonical JSON).
    pub fn of_document(doc: &PolicyDocument) -> Self {
        Self::of_bytes(canonical_json(doc).as_bytes())
    }

    /// The hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for humans.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The canonical JSON text of a document (sorted keys, no whitespace).
pub fn canonical_json(doc: &PolicyDocument) -> String {
    // Serialising our own derive-generated types cannot fail: every map key
    // is a string.
    let value = serde_json::to_value(doc).expect("policy documents serialise to JSON");
    let mut out = String::new();
    write_sorted(&value, &mut out);
    out
}

fn write_sorted(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_sorted(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}
