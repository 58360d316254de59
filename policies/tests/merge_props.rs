//! Property tests of the merge: for random sets of documents the effective
//! policy is at least as strict as each document on every dimension, and the
//! order of the documents does not matter.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;

use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;
use warden_policies::taxonomy::{CategoryCode, GuardVariant};
use warden_policies::{
    merge, Action, AppliesTo, BackendRef, BuiltinDetector, CategorySelector, CategorySet,
    Checkpoint, CustomCategory, FailMode, FailModes, LoadedPolicy, Matcher, PolicyDocument, Rule,
    Streaming, Threshold,
};

fn code(n: u16) -> CategoryCode {
    CategoryCode::new(n).unwrap()
}

fn applies_to() -> impl Strategy<Value = AppliesTo> {
    prop_oneof![
        Just(AppliesTo::Default),
        Just(AppliesTo::Tenant("t".parse().unwrap())),
        Just(AppliesTo::Key("k".parse().unwrap())),
        Just(AppliesTo::Model("m".parse().unwrap())),
        Just(AppliesTo::Agent("a".parse().unwrap())),
    ]
}

fn checkpoint() -> impl Strategy<Value = Checkpoint> {
    prop::sample::select(Checkpoint::ALL.to_vec())
}

fn backends() -> impl Strategy<Value = Vec<BackendRef>> {
    let all = vec![
        BackendRef::Rules,
        BackendRef::Named("guard-a".parse().unwrap()),
        BackendRef::Named("guard-b".parse().unwrap()),
    ];
    prop::sample::subsequence(all, 0..=3).prop_shuffle()
}

fn categories() -> impl Strategy<Value = Option<CategorySet>> {
    let set = (
        prop::sample::select(vec![
            GuardVariant::LlamaGuard3_8b,
            GuardVariant::LlamaGuard3_1b,
        ]),
        btree_set((1u16..=6).prop_map(code), 0..3),
        any::<bool>(),
    )
        .prop_map(|(variant, exclude, custom)| CategorySet {
            variant,
            exclude,
            custom: if custom {
                BTreeMap::from([(
                    code(15),
                    CustomCategory {
                        name: "Finance".into(),
                        description: "Investment advice.".into(),
                    },
                )])
            } else {
                BTreeMap::new()
            },
        });
    prop::option::weighted(0.8, set)
}

fn selector() -> impl Strategy<Value = CategorySelector> {
    prop_oneof![
        Just(CategorySelector::Default),
        prop::sample::select(vec![1u16, 2, 3, 6, 7, 14, 15])
            .prop_map(|n| CategorySelector::Code(code(n))),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop::sample::select(vec![Action::Flag, Action::Redact, Action::Block])
}

fn threshold() -> impl Strategy<Value = Threshold> {
    prop::sample::select(vec![0.0, 0.1, 0.3, 0.5, 0.9, 1.0])
        .prop_map(|t| Threshold::new(t).unwrap())
}

fn fail_mode() -> impl Strategy<Value = Option<FailMode>> {
    prop::option::of(prop::sample::select(vec![
        FailMode::FailOpen,
        FailMode::FailClosed,
    ]))
}

fn streaming() -> impl Strategy<Value = Option<Streaming>> {
    prop::option::of(prop_oneof![
        Just(Streaming::Buffered {}),
        prop::sample::select(vec![1u32, 16, 64, 256]).prop_map(|n| Streaming::Windowed {
            window_tokens: NonZeroU32::new(n).unwrap()
        }),
    ])
}

fn rules() -> impl Strategy<Value = Vec<Rule>> {
    vec(
        (
            prop::sample::select(vec![1u16, 7, 15]),
            prop_oneof![
                Just(Matcher::Detector(BuiltinDetector::Email)),
                Just(Matcher::Regex("[0-9]{4}".into())),
                Just(Matcher::Keywords(vec!["secret".into()])),
            ],
        ),
        0..3,
    )
    .prop_map(|rs| {
        rs.into_iter()
            .enumerate()
            .map(|(i, (c, matcher))| Rule {
                id: format!("r{i}").parse().unwrap(),
                category: code(c),
                matcher,
                case_sensitive: false,
            })
            .collect()
    })
}

fn document() -> impl Strategy<Value = PolicyDocument> {
    (
        (
            applies_to(),
            btree_set(checkpoint(), 0..4),
            backends(),
            categories(),
        ),
        (
            btree_map(selector(), action(), 0..4),
            btree_map(selector(), threshold(), 0..3),
            prop::option::of(prop::sample::select(vec![
                "No.",
                "Refused.",
                "Not allowed.",
            ])),
            (fail_mode(), fail_mode(), fail_mode(), fail_mode()),
        ),
        (
            streaming(),
            prop::option::of(btree_set(prop::sample::select(vec!["x", "y", "z"]), 0..3)),
            prop::option::of(any::<bool>()),
            prop::option::of(0u8..5),
            rules(),
        ),
    )
        .prop_map(
            |(
                (applies_to, checkpoints, backends, categories),
                (actions, thresholds, refusal, (fi, fo, fc, fr)),
                (streaming, tools, store_content, max_tool_retries, rules),
            )| PolicyDocument {
                id: "placeholder".parse().unwrap(),
                description: "generated".into(),
                applies_to,
                checkpoints,
                backends,
                categories,
                actions,
                thresholds,
                refusal_text: refusal.map(str::to_owned),
                fail_mode: FailModes {
                    input: fi,
                    output: fo,
                    tool_call: fc,
                    tool_result: fr,
                },
                streaming,
                allowed_tools: tools.map(|t| t.into_iter().map(|n| n.parse().unwrap()).collect()),
                store_content,
                max_tool_retries,
                rules,
            },
        )
}

/// Up to five documents with distinct ids, and the same documents shuffled.
fn documents() -> impl Strategy<Value = (Vec<LoadedPolicy>, Vec<LoadedPolicy>)> {
    vec(document(), 1..6).prop_flat_map(|docs| {
        let loaded: Vec<LoadedPolicy> = docs
            .into_iter()
            .enumerate()
            .map(|(i, mut d)| {
                d.id = format!("p{i}").parse().unwrap();
                LoadedPolicy::new(d, format!("p{i}.yaml"))
            })
            .collect();
        (Just(loaded.clone()), Just(loaded).prop_shuffle())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn merged_is_at_least_as_strict_as_each((docs, _) in documents()) {
        let all: Vec<&LoadedPolicy> = docs.iter().collect();
        let merged = merge(&all);
        for d in &docs {
            let alone = merge(&[d]);
            let weaker = merged.weaker_than(&alone);
            prop_assert!(weaker.is_empty(), "weaker than {} alone: {:?}", d.id(), weaker);
        }
        // The member list is exactly the inputs.
        let ids: BTreeSet<_> = merged.members.iter().map(|m| m.id.clone()).collect();
        prop_assert_eq!(ids.len(), docs.len());
    }

    #[test]
    fn merging_is_order_independent((docs, shuffled) in documents()) {
        let a = merge(&docs.iter().collect::<Vec<_>>());
        let b = merge(&shuffled.iter().collect::<Vec<_>>());
        prop_assert_eq!(a, b);
    }

    #[test]
    fn adding_a_document_never_weakens((docs, _) in documents(), extra in document()) {
        let base = merge(&docs.iter().collect::<Vec<_>>());
        let mut extra = extra;
        extra.id = "extra".parse().unwrap();
        let extra = LoadedPolicy::new(extra, "extra.yaml");
        let mut more: Vec<&LoadedPolicy> = docs.iter().collect();
        more.push(&extra);
        let grown = merge(&more);
        prop_assert!(grown.weaker_than(&base).is_empty(), "{:?}", grown.weaker_than(&base));
        prop_assert_ne!(grown.version, base.version);
    }
}

#[test]
fn weaker_than_detects_each_dimension() {
    // Guard against a `weaker_than` that never reports anything, which would
    // make the properties above vacuous.
    let strict: PolicyDocument = serde_norway::from_str(
        "id: s\ndescription: S.\napplies_to: default\ncheckpoints: [input]\nbackends: [rules]\n\
         categories: {variant: llama-guard-3-8b}\nthresholds: {default: 0.2}\nstreaming: {mode: buffered}\n\
         allowed_tools: [x]\nstore_content: false\nmax_tool_retries: 0\n\
         rules: [{id: r, category: S7, match: {detector: email}}]\n",
    )
    .unwrap();
    let loose: PolicyDocument = serde_norway::from_str(
        "id: l\ndescription: L.\napplies_to: default\ncategories: {variant: llama-guard-3-1b, exclude: [S1]}\n\
         actions: {default: flag}\nfail_mode: {input: fail_open, output: fail_open, tool_call: fail_open, tool_result: fail_open}\n\
         streaming: {mode: windowed, window_tokens: 64}\n",
    )
    .unwrap();
    let s = merge(&[&LoadedPolicy::new(strict, "s.yaml")]);
    let l = merge(&[&LoadedPolicy::new(loose, "l.yaml")]);
    let found = l.weaker_than(&s).join("\n");
    for dimension in [
        "checkpoint input",
        "backend rules",
        "category S1 is not checked",
        "category S14 is not checked",
        "category S2: flag is weaker than block",
        "category S2: threshold",
        "fails open",
        "streaming",
        "more tools",
        "content is stored",
        "more tool retries",
        "rule s/r",
    ] {
        assert!(
            found.contains(dimension),
            "{dimension} not reported in:\n{found}"
        );
    }
    assert!(s.weaker_than(&s).is_empty());
}
