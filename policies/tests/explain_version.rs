//! Versions, request additions and the explain text.

mod common;

use common::{dir_with, known, DEFAULT};
use warden_policies::load::parse_document;
use warden_policies::{load_dir, Action, LoadedPolicy, Origin, RequestScope, Version};

fn version_of(text: &str) -> Version {
    let doc = parse_document(std::path::Path::new("v.yaml"), text).unwrap();
    LoadedPolicy::new(doc, "v.yaml").version
}

#[test]
fn version_ignores_formatting_but_not_meaning() {
    let a =
        version_of("id: p\ndescription: P.\napplies_to: default\ncheckpoints: [input, output]\n");
    let b = version_of("# a comment\ndescription: \"P.\"\nid:   p\napplies_to:   default\ncheckpoints:\n  - output\n  - input\n");
    let c = version_of("id: p\ndescription: P.\napplies_to: default\ncheckpoints: [input]\n");
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.as_str().len(), 64);
    assert!(a
        .as_str()
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    // Pinned: the canonical form is part of the audit contract.
    assert_eq!(
        warden_policies::version::canonical_json(
            &parse_document(
                std::path::Path::new("v.yaml"),
                "id: p\ndescription: P.\napplies_to: {tenant: t}\ncheckpoints: [output, input]\n"
            )
            .unwrap()
        ),
        r#"{"applies_to":{"tenant":"t"},"checkpoints":["input","output"],"description":"P.","id":"p"}"#
    );
}

const ACME: &str = "\
id: acme
description: Acme.
applies_to: {tenant: acme}
checkpoints: [tool_call]
categories:
  variant: llama-guard-3-8b
  custom:
    S15: {name: Finance, description: Investment advice.}
actions: {S6: block, S15: flag}
thresholds: {S1: 0.25}
max_tool_retries: 1
";

#[test]
fn effective_id_version_and_provenance() {
    let dir = dir_with(&[("default.yaml", DEFAULT), ("acme.yaml", ACME)]);
    let set = load_dir(dir.path(), &known()).unwrap();
    let eff = set.effective(&RequestScope::new("acme", "k", "m"));
    assert_eq!(eff.id, "default+acme");
    assert_eq!(eff.members.len(), 2);
    let other = set.effective(&RequestScope::new("globex", "k", "m"));
    assert_eq!(other.id, "default");
    assert_ne!(eff.version, other.version);

    let acme = Origin::Policy("acme".parse().unwrap());
    let default = Origin::Policy("default".parse().unwrap());
    let s1 = eff.categories.get(&"S1".parse().unwrap()).unwrap();
    assert_eq!(s1.threshold.from, [acme.clone()].into());
    assert_eq!(s1.from, [acme.clone(), default.clone()].into());
    assert_eq!(
        eff.checkpoints[&warden_policies::Checkpoint::ToolCall],
        [acme.clone()].into()
    );
    assert_eq!(eff.max_tool_retries.from, [acme.clone()].into());
    assert_eq!(eff.store_content.from, [Origin::BuiltIn].into());

    let text = set.explain(&RequestScope::new("acme", "k", "m"));
    for expected in [
        "effective policy default+acme",
        "acme                     applies to tenant acme",
        "tool_call    on    from acme",
        "S1   Violent Crimes             block  from built-in; threshold 0.25 from acme; checked by acme, default",
        "S15  Finance                    flag   from acme",
        "Investment advice.",
        "max tool retries: 1    from acme",
        "streaming:        buffered    from built-in",
        "1. rules (rules)    from default",
        "2. llama-guard-local    from default",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn a_request_can_only_add_categories() {
    let dir = dir_with(&[("default.yaml", DEFAULT), ("acme.yaml", ACME)]);
    let set = load_dir(dir.path(), &known()).unwrap();
    let scope = RequestScope::new("acme", "k", "m");
    let base = set.effective(&scope);
    let s15 = "S15".parse().unwrap();
    assert_eq!(base.action(s15), Some(Action::Flag));

    let more = set.effective_with_extras(&scope, &["S15", "S3"]).unwrap();
    assert!(more.weaker_than(&base).is_empty());
    assert_eq!(more.action(s15), Some(Action::Block));
    assert!(more.categories[&s15].action.from.contains(&Origin::Request));
    assert_eq!(more.id, "default+acme+request");
    assert_ne!(more.version, base.version);

    // Only the tenant's documents define S15 here, but the code is known to
    // the directory, so another tenant may ask for it too.
    let other = set
        .effective_with_extras(&RequestScope::new("globex", "k", "m"), &["S15"])
        .unwrap();
    assert_eq!(other.categories[&s15].name, "Finance");

    assert!(set.effective_with_extras(&scope, &["S99"]).is_err());
    assert!(set.effective_with_extras(&scope, &["violence"]).is_err());
    let none: [&str; 0] = [];
    assert_eq!(set.effective_with_extras(&scope, &none).unwrap(), base);
}
