//! Every kind of validation error names the file, line, column and field;
//! a directory with any bad file is refused whole.

mod common;

use common::{dir_with, known, DEFAULT};
use warden_policies::{check_dir, load_dir, ErrorKind, PolicyError};

/// The errors of a directory holding the default policy and `bad.yaml`.
fn errors_of(bad: &str) -> Vec<PolicyError> {
    let dir = dir_with(&[("default.yaml", DEFAULT), ("bad.yaml", bad)]);
    let errs = load_dir(dir.path(), &known())
        .expect_err("directory must be refused")
        .0;
    for e in &errs {
        assert_eq!(
            e.file,
            dir.path().join("bad.yaml"),
            "error in the wrong file: {e}"
        );
    }
    errs
}

/// The only error of `bad`, with its line, column and field.
fn single(bad: &str) -> (PolicyError, usize, usize, String) {
    let errs = errors_of(bad);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    let e = errs.into_iter().next().unwrap();
    let loc = e.location.expect("error has a location");
    let field = e.field.to_string();
    (e, loc.line, loc.column, field)
}

const HEAD: &str = "id: bad\ndescription: A bad policy.\napplies_to: {tenant: acme}\n";

fn doc(body: &str) -> String {
    format!("{HEAD}{body}")
}

#[test]
fn unknown_top_level_field() {
    let (e, line, col, field) = single(&doc(
        "checkpoints: [input]\nbackends: [rules]\nchekpoints: [output]\n",
    ));
    assert_eq!((line, col, field.as_str()), (6, 1, "chekpoints"));
    assert!(
        matches!(&e.kind, ErrorKind::Parse(m) if m.contains("unknown field `chekpoints`")),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("bad.yaml:6:1: chekpoints: unknown field"),
        "{text}"
    );
}

#[test]
fn unknown_nested_field() {
    let (_, line, col, field) = single(&doc(
        "categories:\n  variant: llama-guard-3-8b\n  exclude: [S1]\n  colour: red\n",
    ));
    assert_eq!((line, col, field.as_str()), (7, 3, "categories.colour"));
}

#[test]
fn unknown_field_in_streaming() {
    let (_, line, _, field) = single(&doc("streaming:\n  mode: buffered\n  window_tokens: 5\n"));
    assert_eq!((line, field.as_str()), (4, "streaming"));
}

#[test]
fn wrong_enum_value() {
    let (e, line, col, field) = single(&doc("checkpoints: [input, outptu]\nbackends: [rules]\n"));
    assert_eq!((line, col, field.as_str()), (4, 22, "checkpoints[1]"));
    assert!(e.to_string().contains("unknown variant `outptu`"), "{e}");
}

#[test]
fn yaml_syntax_error() {
    let (e, line, _, _) = single("id: bad\ndescription: [unclosed\napplies_to: default\n");
    assert!(line >= 2, "{e}");
    assert!(matches!(e.kind, ErrorKind::Parse(_)));
}

#[test]
fn threshold_out_of_range() {
    let (_, line, _, field) = single(&doc(
        "categories: {variant: llama-guard-3-8b}\nthresholds:\n  S1: 1.5\n",
    ));
    assert_eq!((line, field.as_str()), (6, "thresholds.S1"));
}

#[test]
fn unknown_category_in_actions() {
    let (e, line, col, field) = single(&doc(
        "categories:\n  variant: llama-guard-3-1b\nactions:\n  S14: flag\n",
    ));
    assert_eq!((line, col, field.as_str()), (7, 3, "actions.S14"));
    assert!(matches!(e.kind, ErrorKind::UnknownCategory { .. }), "{e}");
}

#[test]
fn unknown_category_in_rule() {
    let (e, line, col, field) = single(&doc(
        "backends: [rules]\ncategories: {variant: llama-guard-3-8b}\nrules:\n  - id: r1\n    category: S7\n    match: {detector: email}\n  - id: r2\n    category: S20\n    match: {detector: phone}\n",
    ));
    assert_eq!((line, col, field.as_str()), (11, 5, "rules[1].category"));
    assert!(matches!(e.kind, ErrorKind::UnknownCategory { .. }));
}

#[test]
fn category_reference_without_categories() {
    let (e, _, _, field) = single(&doc("thresholds: {S3: 0.2}\n"));
    assert_eq!(field, "thresholds.S3");
    assert!(e.to_string().contains("no `categories`"), "{e}");
}

#[test]
fn excluding_a_code_outside_the_variant() {
    let (_, line, col, field) = single(&doc(
        "categories:\n  variant: llama-guard-3-1b\n  exclude: [S2, S14]\n",
    ));
    assert_eq!(
        (line, col, field.as_str()),
        (6, 17, "categories.exclude[1]")
    );
}

#[test]
fn custom_categories_are_usable_and_cannot_reuse_standard_codes() {
    let ok = doc("categories:\n  variant: llama-guard-3-8b\n  custom:\n    S15: {name: Finance, description: Investment advice.}\nactions: {S15: flag}\n");
    let dir = dir_with(&[("default.yaml", DEFAULT), ("ok.yaml", &ok)]);
    load_dir(dir.path(), &known()).unwrap();

    let (e, line, _, field) = single(&doc(
        "categories:\n  variant: llama-guard-3-8b\n  custom:\n    S3: {name: X, description: Y.}\n",
    ));
    assert_eq!((line, field.as_str()), (7, "categories.custom.S3"));
    assert!(matches!(e.kind, ErrorKind::CustomCodeIsStandard(_)));
}

#[test]
fn unknown_tool() {
    let (e, line, col, field) = single(&doc("allowed_tools:\n  - calculator\n  - rm_rf\n"));
    assert_eq!((line, col, field.as_str()), (6, 5, "allowed_tools[1]"));
    assert!(e.to_string().contains("unknown tool \"rm_rf\""), "{e}");
}

#[test]
fn unknown_backend() {
    let (e, line, col, field) = single(&doc(
        "categories: {variant: llama-guard-3-8b}\nbackends: [rules, llama-guard-gpu]\n",
    ));
    assert_eq!((line, col, field.as_str()), (5, 19, "backends[1]"));
    assert!(matches!(&e.kind, ErrorKind::UnknownBackend { name, .. } if name == "llama-guard-gpu"));
}

#[test]
fn invalid_regex() {
    let (e, line, col, field) = single(&doc(
        "backends: [rules]\ncategories: {variant: llama-guard-3-8b}\nrules:\n  - id: r\n    category: S7\n    match:\n      regex: '([a-z]'\n",
    ));
    assert_eq!((line, col, field.as_str()), (10, 7, "rules[0].match.regex"));
    assert!(matches!(e.kind, ErrorKind::InvalidRegex(_)));
}

#[test]
fn redact_needs_a_rule() {
    let (e, line, _, field) = single(&doc("categories: {variant: llama-guard-3-8b}\nbackends: [llama-guard-local]\nactions:\n  S7: redact\n"));
    assert_eq!((line, field.as_str()), (7, "actions.S7"));
    assert!(matches!(e.kind, ErrorKind::RedactWithoutRule(_)));

    let (e, _, _, field) = single(&doc(
        "categories: {variant: llama-guard-3-8b}\nactions: {default: redact}\n",
    ));
    assert_eq!(field, "actions.default");
    assert!(matches!(e.kind, ErrorKind::RedactAsDefault));
}

#[test]
fn rules_need_the_rules_backend() {
    let (e, line, _, field) = single(&doc(
        "categories: {variant: llama-guard-3-8b}\nbackends: [llama-guard-local]\nrules:\n  - {id: r, category: S7, match: {detector: email}}\n",
    ));
    assert_eq!((line, field.as_str()), (6, "rules"));
    assert_eq!(e.kind, ErrorKind::RulesWithoutBackend);
}

#[test]
fn checkpoints_need_a_backend_here_or_in_a_default_policy() {
    let tenant = "id: t\ndescription: T.\napplies_to: {tenant: t}\ncheckpoints: [tool_call]\n";
    let bare_default = "id: default\ndescription: D.\napplies_to: default\n";
    // The default policy provides backends: fine.
    load_dir(
        dir_with(&[("default.yaml", DEFAULT), ("t.yaml", tenant)]).path(),
        &known(),
    )
    .unwrap();
    // Nothing would run at the tenant's checkpoint.
    let dir = dir_with(&[("default.yaml", bare_default), ("t.yaml", tenant)]);
    let errs = load_dir(dir.path(), &known()).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].kind, ErrorKind::CheckpointsWithoutBackend);
    assert_eq!(errs[0].file, dir.path().join("t.yaml"));
    assert_eq!(errs[0].location.map(|l| (l.line, l.column)), Some((4, 1)));

    // A model backend needs categories, here or in a default policy.
    let model = "id: m\ndescription: M.\napplies_to: {model: m}\nbackends: [llama-guard-remote]\n";
    load_dir(
        dir_with(&[("default.yaml", DEFAULT), ("m.yaml", model)]).path(),
        &known(),
    )
    .unwrap();
    let dir = dir_with(&[("default.yaml", bare_default), ("m.yaml", model)]);
    let errs = load_dir(dir.path(), &known()).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].kind, ErrorKind::ModelBackendWithoutCategories);
    assert_eq!(errs[0].field.to_string(), "backends");
}

#[test]
fn duplicate_ids_across_files() {
    let dir = dir_with(&[
        ("a.yaml", DEFAULT),
        (
            "b.yaml",
            "# same id again\nid: default\ndescription: Again.\napplies_to: {tenant: t}\n",
        ),
    ]);
    let errs = load_dir(dir.path(), &known()).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let e = &errs[0];
    assert_eq!(e.file, dir.path().join("b.yaml"));
    assert_eq!(e.location.map(|l| (l.line, l.column)), Some((2, 1)));
    assert_eq!(e.field.to_string(), "id");
    assert!(e.to_string().contains("a.yaml"), "{e}");
}

#[test]
fn custom_code_with_two_meanings() {
    let custom = |id: &str, name: &str| {
        format!("id: {id}\ndescription: C.\napplies_to: {{tenant: {id}}}\ncategories:\n  variant: llama-guard-3-8b\n  custom:\n    S15: {{name: {name}, description: D.}}\n")
    };
    let dir = dir_with(&[
        ("default.yaml", DEFAULT),
        ("a.yaml", &custom("a", "Finance")),
        ("b.yaml", &custom("b", "Medicine")),
    ]);
    let errs = load_dir(dir.path(), &known()).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].field.to_string(), "categories.custom.S15");
    assert_eq!(errs[0].location.map(|l| l.line), Some(7));
    assert!(matches!(
        errs[0].kind,
        ErrorKind::CustomCategoryConflict { .. }
    ));
}

#[test]
fn a_default_policy_is_required() {
    let dir = dir_with(&[(
        "t.yaml",
        "id: t\ndescription: T.\napplies_to: {tenant: t}\n",
    )]);
    let errs = load_dir(dir.path(), &known()).unwrap_err().0;
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].kind, ErrorKind::NoDefaultPolicy);
    assert_eq!(errs[0].file, dir.path());
    let empty = tempfile::tempdir().unwrap();
    assert!(load_dir(empty.path(), &known()).is_err());
}

#[test]
fn one_bad_file_refuses_the_directory_and_all_errors_are_reported() {
    let good = "id: good\ndescription: Fine.\napplies_to: {key: k1}\nallowed_tools: [calculator]\n";
    let dir = dir_with(&[
        ("default.yaml", DEFAULT),
        ("good.yaml", good),
        (
            "bad1.yaml",
            "id: bad1\ndescription: B.\napplies_to: {tenant: a}\nallowed_tools: [nope]\n",
        ),
        (
            "bad2.yml",
            "id: bad2\ndescription: B.\napplies_to: {tenant: b}\nstore_content: maybe\n",
        ),
        ("notes.txt", "not a policy: ignored"),
    ]);
    let report = check_dir(dir.path(), &known());
    assert!(!report.is_ok());
    let files: Vec<_> = report
        .errors
        .iter()
        .map(|e| e.file.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(files, ["bad1.yaml", "bad2.yml"], "{:#?}", report.errors);
    let printed = report.to_string();
    assert!(printed.contains("refused, 2 error(s)"), "{printed}");
    assert!(
        printed.contains("bad2.yml:4:16: store_content:"),
        "{printed}"
    );
    assert!(load_dir(dir.path(), &known()).is_err());
}

#[test]
fn valid_directory_loads() {
    let dir = dir_with(&[("default.yaml", DEFAULT)]);
    let set = load_dir(dir.path(), &known()).unwrap();
    assert_eq!(set.policies().len(), 1);
    assert_eq!(set.policies()[0].id().as_str(), "default");
}
