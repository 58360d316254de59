//! The shipped JSON Schema must equal the one generated from the types.
//! Regenerate with `WARDEN_REGENERATE_SCHEMA=1 cargo test -p warden-policies --test schema`.

use std::path::PathBuf;

use warden_policies::schema::policy_schema_text;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policy.schema.json")
}

#[test]
fn shipped_schema_is_current() {
    let generated = policy_schema_text();
    if std::env::var_os("WARDEN_REGENERATE_SCHEMA").is_some() {
        std::fs::write(shipped(), &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(shipped()).expect("policies/policy.schema.json exists");
    assert!(
        on_disk == generated,
        "policies/policy.schema.json is stale; regenerate with WARDEN_REGENERATE_SCHEMA=1 cargo test -p warden-policies --test schema"
    );
}

#[test]
fn schema_rejects_unknown_fields_and_names_the_fields() {
    let schema: serde_json::Value = serde_json::from_str(&policy_schema_text()).unwrap();
    assert_eq!(schema["additionalProperties"], serde_json::json!(false));
    let required = schema["required"].as_array().unwrap();
    for field in ["id", "description", "applies_to"] {
        assert!(required.iter().any(|r| r == field), "{field} not required");
    }
    for field in [
        "checkpoints",
        "backends",
        "categories",
        "actions",
        "thresholds",
        "fail_mode",
        "streaming",
        "allowed_tools",
        "store_content",
        "max_tool_retries",
        "rules",
        "refusal_text",
    ] {
        assert!(schema["properties"].get(field).is_some(), "{field} missing");
    }
}
