//! The strict Llama Guard verdict parser: never panics; whatever it accepts
//! is exactly a verdict (`safe`, or `unsafe` and listed codes), and it
//! round-trips through its JSON form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_guard::{parse_verdict, Verdict};
use warden_policies::taxonomy::CategoryCode;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    // The first byte picks how many of S1..S20 the prompt listed.
    let allowed: Vec<CategoryCode> = (1..=u16::from(n % 21))
        .map(|i| CategoryCode::new(i).unwrap())
        .collect();
    let Ok(verdict) = parse_verdict(text, &allowed) else {
        return;
    };
    let trimmed = text.trim_matches([' ', '\t', '\r', '\n']);
    match &verdict {
        Verdict::Safe => assert_eq!(trimmed, "safe"),
        Verdict::Unsafe { categories } => {
            assert!(!categories.is_empty());
            assert!(categories.iter().all(|c| allowed.contains(c)));
            let (first, list) = trimmed.split_once('\n').unwrap();
            assert_eq!(first, "unsafe");
            let codes: Vec<String> = categories.iter().map(|c| c.to_string()).collect();
            assert_eq!(list, codes.join(","));
        }
    }
    let json = serde_json::to_value(&verdict).unwrap();
    let back: Verdict = serde_json::from_value(json).unwrap();
    assert_eq!(back, verdict);
});
