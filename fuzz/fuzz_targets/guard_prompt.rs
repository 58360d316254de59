//! The guard prompt around untrusted text: whatever a message says, the
//! prompt has each block marker exactly once, one `User:`/`Agent:` line per
//! turn, no `<|`/`|>` in the conversation, and the prefix and suffix of a
//! benign prompt (the structure cannot be forged; see guard/src/structure.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_guard::prompt::{build_prompt_parts, CategorySet, GuardConversation, GuardMessage};
use warden_guard::structure::{neutralize, BLOCK_MARKERS};
use warden_guard::GuardRole;
use warden_policies::taxonomy::GuardVariant;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Idempotent: a rewritten text has nothing left to rewrite.
    let once = neutralize(text).into_owned();
    assert_eq!(neutralize(&once), once);

    let variant = GuardVariant::LlamaGuard3_1b;
    let categories = CategorySet::standard(variant);
    let turns = |last: &str| {
        GuardConversation::new(vec![
            GuardMessage::new(GuardRole::User, "hi"),
            GuardMessage::new(GuardRole::Agent, "hello"),
            GuardMessage::new(GuardRole::User, last),
        ])
        .unwrap()
    };
    let parts = build_prompt_parts(variant, &categories, &turns(text));
    let benign = build_prompt_parts(variant, &categories, &turns("x"));
    assert_eq!(parts.prefix, benign.prefix);
    assert_eq!(parts.suffix, benign.suffix);
    let full = parts.full();
    for marker in BLOCK_MARKERS {
        assert_eq!(full.matches(marker).count(), 1, "{marker}");
    }
    assert!(!parts.conversation.contains("<|") && !parts.conversation.contains("|>"));
    let turn_lines = parts
        .conversation
        .split('\n')
        .filter(|l| l.starts_with("User:") || l.starts_with("Agent:"))
        .count();
    assert_eq!(turn_lines, 3);
});
