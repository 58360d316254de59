//! The shipped example policies pass validation and merge as documented.

mod common;

use std::path::PathBuf;

use warden_policies::{
    check_dir, load_dir, Action, Checkpoint, FailMode, KnownNames, Origin, RequestScope, Streaming,
    ToolsAllowed,
};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn known() -> KnownNames {
    KnownNames::new(
        ["llama-guard-local", "llama-guard-remote"],
        ["calculator", "current_time", "get_weather"],
    )
}

#[test]
fn examples_pass_policy_check() {
    let report = check_dir(&examples(), &known());
    assert!(report.is_ok(), "{report}");
    let mut ids: Vec<_> = report.policies.iter().map(|p| p.id().to_string()).collect();
    ids.sort();
    assert_eq!(ids, ["default", "finance", "internal-testing"]);
}

#[test]
fn examples_need_their_configured_names() {
    // Without the remote backend and tools configured, finance is refused.
    let report = check_dir(
        &examples(),
        &KnownNames::new(["llama-guard-local"], Vec::<String>::new()),
    );
    assert!(!report.is_ok());
    assert!(
        report
            .errors
            .iter()
            .all(|e| e.file.ends_with("finance.yaml")),
        "{report}"
    );
    assert_eq!(report.errors.len(), 3, "{report}");
}

#[test]
fn finance_is_stricter_than_default() {
    let set = load_dir(&examples(), &known()).unwrap();
    let eff = set.effective(&RequestScope::new("finance", "k1", "llama-3.1-8b"));
    assert_eq!(eff.id, "default+finance");
    assert_eq!(eff.action("S6".parse().unwrap()), Some(Action::Block));
    assert_eq!(eff.action("S15".parse().unwrap()), Some(Action::Block));
    assert_eq!(eff.streaming.value, Streaming::Buffered {});
    assert!(!eff.store_content.value);
    assert_eq!(eff.max_tool_retries.value, 1);
    assert!(eff.allowed_tools.value.allows("calculator"));
    assert!(!eff.allowed_tools.value.allows("get_weather"));
    assert!(eff.refusal_text.value.contains("finance compliance"));
    let default_only = set.effective(&RequestScope::new("someone", "k2", "m"));
    assert_eq!(default_only.id, "default");
    assert!(eff.weaker_than(&default_only).is_empty());
    assert_eq!(default_only.allowed_tools.value, ToolsAllowed::Any);
}

#[test]
fn internal_testing_cannot_loosen_the_default() {
    let set = load_dir(&examples(), &known()).unwrap();
    let eff = set.effective(&RequestScope::new("internal-testing", "k", "m"));
    let default_only = set.effective(&RequestScope::new("x", "k", "m"));
    assert!(
        eff.weaker_than(&default_only).is_empty(),
        "{:?}",
        eff.weaker_than(&default_only)
    );
    assert_eq!(eff.fail_mode(Checkpoint::Input), FailMode::FailClosed);
    assert_eq!(eff.action("S1".parse().unwrap()), Some(Action::Block));
    // The retry limit comes from the default, which is lower.
    assert_eq!(eff.max_tool_retries.value, 2);
    assert!(eff
        .max_tool_retries
        .from
        .contains(&Origin::Policy("default".parse().unwrap())));
}
