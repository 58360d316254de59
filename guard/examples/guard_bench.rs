//! Guard benchmark on the bundled model (one stream, 2 threads):
//!
//! 1. checking a 40-token user turn with the prefix cache vs without;
//! 2. guarding a 512-token answer in 64-token windows incrementally
//!    ([`StreamGuard`]) vs one whole check of the full answer, and vs the
//!    naive way (a whole check of everything so far at each window).
//!
//! Run: `cargo run --release -p warden-guard --example guard_bench [MODEL.gguf]`
//! (default: the bundled model in `~/.cache/warden/models`). Every figure is
//! the median of several runs; ratios are computed within the same run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use warden_guard::{
    CategorySet, Checkpoint, GuardConversation, GuardMessage, GuardRequest, GuardRole, Judgement,
    LocalBackend, LocalOptions, StreamGuard,
};
use warden_inference::Model;
use warden_policies::taxonomy::GuardVariant;

const VARIANT: GuardVariant = GuardVariant::LlamaGuard3_8b;
const THREADS: usize = 2;
/// Runs per figure (after one warm-up run): the machine is small and the
/// naive stream check alone runs thousands of tokens.
const REPS: usize = 5;
/// Runs per stream figure.
const STREAM_REPS: usize = 3;

const FILLER: &str = "The committee met on Tuesday to review the quarterly budget, the hiring plan for the new office, \
and the schedule for migrating the customer database to the new cluster. Several members asked whether the \
maintenance window could be moved to the weekend, because the billing team runs its reports on weekday nights, \
and the operations lead agreed to check the on-call rota before the next meeting. The discussion then turned to \
the training programme for new engineers, which will cover code review, incident response, writing runbooks and \
the basics of capacity planning. Everyone agreed that the first cohort should start in the spring, once the \
mentors have been chosen and the course material has been reviewed by the security team. ";

fn model_path() -> PathBuf {
    if let Some(arg) = std::env::args().nth(1) {
        return PathBuf::from(arg);
    }
    PathBuf::from(std::env::var("HOME").expect("HOME"))
        .join(".cache/warden/models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Exactly `n` tokens of filler text, as text (token-aligned, ASCII).
fn text_of_tokens(model: &Model, n: usize) -> String {
    let tok = model.tokenizer();
    let mut ids = Vec::new();
    while ids.len() < n {
        ids.extend(tok.encode(FILLER, false).unwrap());
    }
    ids.extend(tok.encode(FILLER, false).unwrap());
    // Decoded text may merge differently at its end: take the cut whose
    // text re-tokenises to exactly `n` tokens.
    (n.saturating_sub(4)..n + 8)
        .map(|k| tok.decode(&ids[..k], false))
        .find(|text| tok.encode(text, false).unwrap().len() == n)
        .expect("some cut near n re-tokenises to n tokens")
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// Median wall time of `f` over `reps` runs, after one warm-up run.
fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> Duration {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn request(turns: Vec<GuardMessage>) -> GuardRequest {
    let checkpoint = if turns.len() % 2 == 1 {
        Checkpoint::Input
    } else {
        Checkpoint::Output
    };
    GuardRequest::new(
        checkpoint,
        GuardConversation::new(turns).unwrap(),
        CategorySet::standard(VARIANT),
    )
    .unwrap()
}

fn describe(j: &Judgement) -> String {
    format!(
        "{} generated tokens, prompt {} tokens, {} computed",
        j.tokens.len(),
        j.prompt_tokens,
        j.computed_tokens
    )
}

fn main() {
    let model = Arc::new(Model::load(&model_path()).expect("model loads"));
    model.set_threads(THREADS).unwrap();
    let backend = |entries: usize| {
        let mut options = LocalOptions::new(VARIANT);
        options.prefix_cache_entries = entries;
        LocalBackend::new(Arc::clone(&model), options).unwrap()
    };
    let cached = backend(8);
    let uncached = backend(0);

    // 1. A 40-token user turn.
    let user = text_of_tokens(&model, 40);
    let req = request(vec![GuardMessage::new(GuardRole::User, user.clone())]);
    let t_uncached = time(REPS, || uncached.judge(&req).unwrap());
    let t_cached = time(REPS, || cached.judge(&req).unwrap());
    let j_uncached = uncached.judge(&req).unwrap();
    let j_cached = cached.judge(&req).unwrap();
    println!("40-token user turn:");
    println!(
        "  without prefix cache: {:8.1} ms  ({})",
        ms(t_uncached),
        describe(&j_uncached)
    );
    println!(
        "  with prefix cache:    {:8.1} ms  ({})",
        ms(t_cached),
        describe(&j_cached)
    );
    println!(
        "  speed-up: {:.2}x",
        t_uncached.as_secs_f64() / t_cached.as_secs_f64()
    );

    // 2. A 512-token answer in 64-token windows.
    let tok = model.tokenizer();
    let answer = text_of_tokens(&model, 512);
    let ids = tok.encode(&answer, false).unwrap();
    let windows: Vec<String> = ids.chunks(64).map(|c| tok.decode(c, false)).collect();
    let question = GuardMessage::new(GuardRole::User, "Summarise the meeting notes.");
    let whole_req = request(vec![
        question.clone(),
        GuardMessage::new(GuardRole::Agent, answer.clone()),
    ]);
    let t_whole = time(STREAM_REPS, || cached.judge(&whole_req).unwrap());
    let mut incremental_computed = 0;
    let t_incremental = time(STREAM_REPS, || {
        let mut session = StreamGuard::new(
            &cached,
            vec![question.clone()],
            CategorySet::standard(VARIANT),
        )
        .unwrap();
        incremental_computed = 0;
        for w in &windows {
            session.push(w);
            incremental_computed += session.check_judgement().unwrap().computed_tokens;
        }
    });
    let mut naive_computed = 0;
    let t_naive = time(STREAM_REPS, || {
        let mut so_far = String::new();
        naive_computed = 0;
        for w in &windows {
            so_far.push_str(w);
            let req = request(vec![
                question.clone(),
                GuardMessage::new(GuardRole::Agent, so_far.clone()),
            ]);
            naive_computed += cached.judge(&req).unwrap().computed_tokens;
        }
    });
    let j_whole = cached.judge(&whole_req).unwrap();
    println!("512-token answer, {} windows of 64 tokens:", windows.len());
    println!(
        "  one whole check:           {:8.1} ms  ({})",
        ms(t_whole),
        describe(&j_whole)
    );
    println!(
        "  incremental (StreamGuard): {:8.1} ms  ({:.2}x whole; {} tokens computed)",
        ms(t_incremental),
        t_incremental.as_secs_f64() / t_whole.as_secs_f64(),
        incremental_computed
    );
    println!(
        "  naive re-check per window: {:8.1} ms  ({:.2}x whole; {} tokens computed)",
        ms(t_naive),
        t_naive.as_secs_f64() / t_whole.as_secs_f64(),
        naive_computed
    );
    println!(
        "threads: {}, median of {REPS} (turn) / {STREAM_REPS} (stream) runs after a warm-up",
        model.threads()
    );
}
