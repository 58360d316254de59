//! The caller-owned KV cache: prefill a prefix once, fork continuations from
//! it, roll back to an earlier position.

mod common;

use warden_inference::{argmax, logits_rows, Logits};

fn ids(v: &serde_json::Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The same computation up to the order of sums: a different batch shape
/// changes rounding (llama.cpp's own batched and incremental paths differ by
/// 0.15 on average), so compare the decision, not the bits.
fn assert_same_prediction(got: &[f32], want: &[f32]) {
    let top = argmax(want) as usize;
    let diff = (got[top] - want[top]).abs();
    assert!(diff < 0.5, "top logit differs by {diff}");
    let mut sorted = want.to_vec();
    sorted.sort_by(|x, y| y.total_cmp(x));
    if sorted[0] - sorted[1] >= 0.5 {
        assert_eq!(argmax(got) as usize, top);
    }
}

#[test]
fn forks_of_a_prefilled_prefix_continue_like_fresh_sequences() {
    let model = common::model();
    let cases = common::fixture("generation/smollm2_greedy.json");
    // Two prompts sharing the system turn: prefill that part once.
    let a = ids(&cases[0]["prompt_ids"]);
    let b = ids(&cases[1]["prompt_ids"]);
    let shared = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    assert!(shared > 10, "prompts share only {shared} tokens");
    let mut prefix = model.new_cache();
    model
        .forward(&a[..shared], &mut prefix, Logits::Last)
        .unwrap();
    assert_eq!(prefix.len(), shared);

    for prompt in [&a, &b] {
        let mut fork = prefix.fork().unwrap();
        let cached = logits_rows(
            &model
                .forward(&prompt[shared..], &mut fork, Logits::Last)
                .unwrap(),
        )
        .unwrap();
        let mut fresh = model.new_cache();
        let full = logits_rows(&model.forward(prompt, &mut fresh, Logits::Last).unwrap()).unwrap();
        assert_eq!(fork.len(), prompt.len());
        assert_same_prediction(&cached[0], &full[0]);
    }
    // The prefix itself was not touched by its forks.
    assert_eq!(prefix.len(), shared);
}

#[test]
fn rolling_back_replays_identically() {
    let model = common::model();
    let prompt = ids(&common::fixture("generation/smollm2_greedy.json")[0]["prompt_ids"]);
    let mut cache = model.new_cache();
    model.forward(&prompt, &mut cache, Logits::Last).unwrap();
    let first = logits_rows(
        &model
            .forward(&[504, 2365], &mut cache, Logits::All)
            .unwrap(),
    )
    .unwrap();
    // Go somewhere else, then roll back to the end of the prompt.
    model
        .forward(&[11, 12, 13, 14], &mut cache, Logits::All)
        .unwrap();
    assert_eq!(cache.len(), prompt.len() + 6);
    cache.truncate(prompt.len());
    assert_eq!(cache.len(), prompt.len());
    let again = logits_rows(
        &model
            .forward(&[504, 2365], &mut cache, Logits::All)
            .unwrap(),
    )
    .unwrap();
    for (x, y) in first.iter().zip(&again) {
        assert_eq!(
            max_abs_diff(x, y),
            0.0,
            "a rolled-back cache must replay exactly"
        );
    }
    // Rolling back into the prompt and re-feeding its tail also matches.
    cache.truncate(prompt.len() - 5);
    let tail = logits_rows(
        &model
            .forward(&prompt[prompt.len() - 5..], &mut cache, Logits::Last)
            .unwrap(),
    )
    .unwrap();
    let mut fresh = model.new_cache();
    let full = logits_rows(&model.forward(&prompt, &mut fresh, Logits::Last).unwrap()).unwrap();
    assert_same_prediction(&tail[0], &full[0]);
}

#[test]
fn sequences_past_the_context_are_refused() {
    let model = common::model();
    let mut cache = model.new_cache();
    let too_long = vec![504u32; cache.max_len() + 1];
    let err = model
        .forward(&too_long, &mut cache, Logits::Last)
        .unwrap_err();
    assert!(
        err.to_string().contains("exceeds the model's context"),
        "{err}"
    );
    let err = model
        .forward(&[u32::MAX], &mut cache, Logits::Last)
        .unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    assert!(cache.is_empty());
}
