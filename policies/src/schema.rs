//! The JSON Schema of the policy format, generated from the Rust types and
//! shipped as `policies/policy.schema.json` so editors can validate files.
//!
//! The schema checks shape only; references to the gateway configuration
//! (backends, tools) and to a document's own category set are checked by
//! [`crate::load::check_dir`].

use crate::document::PolicyDocument;

/// The schema as JSON.
pub fn policy_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(PolicyDocument);
    serde_json::to_value(&schema).expect("a JSON Schema serialises to JSON")
}

/// The schema as the text of `policy.schema.json` (pretty, newline-terminated).
pub fn policy_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&policy_schema()).expect("a JSON value serialises");
    text.push('\n');
    text
}
