//! The scheduler on the bundled model: a bounded queue that refuses the
//! excess at once, results equal to plain greedy generation, cancellation
//! (explicit or by dropping the handle) that frees the place at once, and
//! guard checks admitted before waiting generation.
//!
//! Waits are bounded only as a guard against hangs; nothing here asserts a
//! duration.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use warden_inference::scheduler::{
    Handle, Priority, Request, Scheduler, SchedulerConfig, SchedulerError,
};
use warden_inference::{
    argmax, Completion, FinishReason, GenerateOptions, Logits, Model, StreamEvent,
};

/// Far longer than any request here takes; only there to turn a hang into a failure.
const HANG: Duration = Duration::from_secs(300);

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        ..GenerateOptions::default()
    }
}

fn encode(model: &Model, text: &str) -> Vec<u32> {
    model.encode_prompt(text).unwrap()
}

/// Prompts of different lengths (one past a prefill chunk) so sequences in
/// one batch are at different positions.
fn prompts(model: &Model) -> Vec<Vec<u32>> {
    let long = "The city council met on Tuesday to discuss the new bus routes. ".repeat(30);
    vec![
        encode(model, "The capital of France is"),
        encode(model, "Here is a short recipe for pancakes:"),
        encode(model, &format!("{long}In summary, the council")),
        encode(model, "def fibonacci(n):"),
        encode(model, "Once upon a time, in a small village,"),
        encode(model, "The three primary colours are"),
    ]
}

/// A prompt the model continues for a long time without an end-of-turn token.
fn counting(model: &Model) -> Vec<u32> {
    let numbers: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
    encode(model, &format!("{},", numbers.join(", ")))
}

/// Reads events until the end, failing on a hang or an error.
fn finish(handle: &Handle) -> Completion {
    let deadline = Instant::now() + HANG;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match handle.recv_timeout(left) {
            Ok(StreamEvent::Delta(_)) => {}
            Ok(StreamEvent::Done(c)) => return c,
            Ok(StreamEvent::Failed(e)) => panic!("request failed: {e}"),
            Err(e) => panic!("no end of the request: {e}"),
        }
    }
}

/// Waits for the first event (the request is running).
fn first_event(handle: &Handle) -> StreamEvent {
    handle
        .recv_timeout(HANG)
        .unwrap_or_else(|e| panic!("the request never started: {e}"))
}

/// The scheduler's completion equals plain greedy generation of the same
/// prompt, up to a near-tie: batching changes the order of sums (as in
/// llama.cpp), so where the two first differ, the reference's top two
/// logits must be within 0.5 of each other.
fn assert_like_generate(
    model: &Model,
    prompt: &[u32],
    options: &GenerateOptions,
    got: &Completion,
) {
    let want = model
        .generate(prompt, options, |_| std::ops::ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(got.prompt_tokens, want.prompt_tokens);
    if got.tokens == want.tokens {
        assert_eq!(got.text, want.text);
        assert_eq!(got.finish, want.finish);
        return;
    }
    let at = got
        .tokens
        .iter()
        .zip(&want.tokens)
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| {
            panic!(
                "one output is a prefix of the other:\n got {:?}\nwant {:?}",
                got.tokens, want.tokens
            )
        });
    let mut context = prompt.to_vec();
    context.extend_from_slice(&want.tokens[..at]);
    let mut cache = model.new_cache();
    let logits = model.forward(&context, &mut cache, Logits::Last).unwrap();
    let mut row = logits.squeeze(0).unwrap().to_vec1::<f32>().unwrap();
    let top = argmax(&row) as usize;
    assert_eq!(top as u32, want.tokens[at]);
    let first = row[top];
    row[top] = f32::NEG_INFINITY;
    let gap = first - row[argmax(&row) as usize];
    assert!(
        gap < 0.5,
        "outputs differ at token {at} where greedy is not a near tie (gap {gap}):\n got {:?}\nwant {:?}",
        got.tokens,
        want.tokens
    );
}

#[test]
fn excess_requests_are_refused_at_once_and_the_rest_match_generate() {
    let model = common::model();
    let config = SchedulerConfig { slots: 2, queue: 2 };
    let scheduler = Scheduler::new(model.clone(), config);
    let prompts = prompts(&model);
    let options = greedy(12);
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    // Submitting takes microseconds; no request can finish its prefill and
    // twelve decode steps meanwhile, so exactly slots + queue get in.
    for (i, prompt) in prompts.iter().enumerate() {
        match scheduler.submit(Request::new(prompt.clone(), options.clone())) {
            Ok(h) => accepted.push((i, h)),
            Err(e) => refused.push((i, e)),
        }
    }
    assert_eq!(
        accepted.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(refused.len(), 2, "{refused:?}");
    for (_, e) in &refused {
        match e {
            SchedulerError::Overloaded { running, waiting } => {
                assert_eq!(running + waiting, 4, "{e}");
                assert!(e.to_string().contains("overloaded"));
            }
            other => panic!("expected Overloaded, got {other:?}"),
        }
    }
    for (i, handle) in &accepted {
        let got = finish(handle);
        assert_like_generate(&model, &prompts[*i], &options, &got);
    }
    // Everything finished: the scheduler takes requests again.
    let again = scheduler
        .submit(Request::new(prompts[4].clone(), options.clone()))
        .expect("an idle scheduler accepts");
    assert_like_generate(&model, &prompts[4], &options, &finish(&again));
}

#[test]
fn a_cancelled_request_frees_its_slot() {
    let model = common::model();
    let scheduler = Scheduler::new(model.clone(), SchedulerConfig { slots: 1, queue: 0 });
    let long = scheduler
        .submit(Request::new(counting(&model), greedy(2000)))
        .unwrap();
    assert!(matches!(first_event(&long), StreamEvent::Delta(_)));
    let short = encode(&model, "The capital of France is");
    assert!(matches!(
        scheduler.submit(Request::new(short.clone(), greedy(8))),
        Err(SchedulerError::Overloaded {
            running: 1,
            waiting: 0
        })
    ));
    long.cancel();
    let ended = finish(&long);
    assert_eq!(ended.finish, FinishReason::Cancelled);
    assert!(!ended.tokens.is_empty());
    // The slot was freed before the caller heard of the end.
    let next = scheduler
        .submit(Request::new(short.clone(), greedy(8)))
        .expect("the cancelled request's slot is free");
    assert_like_generate(&model, &short, &greedy(8), &finish(&next));
}

#[test]
fn cancelling_or_dropping_a_waiting_request_frees_its_queue_place_at_once() {
    let model = common::model();
    let scheduler = Scheduler::new(model.clone(), SchedulerConfig { slots: 1, queue: 1 });
    let running = scheduler
        .submit(Request::new(counting(&model), greedy(2000)))
        .unwrap();
    assert!(matches!(first_event(&running), StreamEvent::Delta(_)));
    let short = encode(&model, "The capital of France is");

    let waiting = scheduler
        .submit(Request::new(short.clone(), greedy(8)))
        .unwrap();
    assert!(scheduler
        .submit(Request::new(short.clone(), greedy(8)))
        .is_err());
    waiting.cancel();
    let ended = finish(&waiting);
    assert_eq!(ended.finish, FinishReason::Cancelled);
    assert!(ended.tokens.is_empty());

    // The long request still runs (it cannot end meanwhile: 2000 tokens), so
    // only the freed queue place lets these in.
    let dropped = scheduler
        .submit(Request::new(short.clone(), greedy(8)))
        .expect("the cancelled request's queue place is free");
    drop(dropped);
    let kept = scheduler
        .submit(Request::new(short.clone(), greedy(8)))
        .expect("the dropped request's queue place is free");
    assert_eq!(scheduler.load(), (1, 1));

    drop(running);
    assert_like_generate(&model, &short, &greedy(8), &finish(&kept));
}

#[test]
fn a_dropped_running_request_frees_its_slot() {
    let model = common::model();
    let scheduler = Scheduler::new(model.clone(), SchedulerConfig { slots: 1, queue: 0 });
    let running = scheduler
        .submit(Request::new(counting(&model), greedy(2000)))
        .unwrap();
    assert!(matches!(first_event(&running), StreamEvent::Delta(_)));
    drop(running);
    // Freed at the worker's next step; poll (bounded) rather than time it.
    let deadline = Instant::now() + HANG;
    while scheduler.load() != (0, 0) {
        assert!(
            Instant::now() < deadline,
            "the dropped request kept its slot"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let short = encode(&model, "The capital of France is");
    let next = scheduler
        .submit(Request::new(short.clone(), greedy(8)))
        .expect("the dropped request's slot is free");
    assert_like_generate(&model, &short, &greedy(8), &finish(&next));
}

#[test]
fn guard_checks_overtake_waiting_generation() {
    let model = common::model();
    let scheduler = Scheduler::new(model.clone(), SchedulerConfig { slots: 1, queue: 3 });
    let running = scheduler
        .submit(Request::new(counting(&model), greedy(2000)))
        .unwrap();
    assert!(matches!(first_event(&running), StreamEvent::Delta(_)));
    let prompts = prompts(&model);
    let normal_a = scheduler
        .submit(Request::new(prompts[0].clone(), greedy(6)))
        .unwrap();
    let normal_b = scheduler
        .submit(Request::new(prompts[1].clone(), greedy(6)))
        .unwrap();
    let guard_options = greedy(4);
    let guard = scheduler
        .submit(Request {
            priority: Priority::Guard,
            ..Request::new(prompts[5].clone(), guard_options.clone())
        })
        .unwrap();
    assert_eq!(scheduler.load(), (1, 3));
    running.cancel();
    // One slot: the worker runs one request at a time and sends each event
    // in order, so when the first normal request shows its first event the
    // guard check's end is already in its channel.
    let _ = first_event(&normal_a);
    let mut guard_done = None;
    while let Ok(event) = guard.recv_timeout(Duration::ZERO) {
        if let StreamEvent::Done(c) = event {
            guard_done = Some(c);
        }
    }
    let guard_done = guard_done.expect("the guard check ran before waiting generation");
    assert_like_generate(&model, &prompts[5], &guard_options, &guard_done);
    // Normal requests keep their order among themselves.
    let a = finish(&normal_a);
    let _ = first_event(&normal_b);
    assert_ne!(a.finish, FinishReason::Cancelled);
    finish(&normal_b);
}

#[test]
fn sequences_share_steps_without_waiting_for_each_other() {
    let model = common::model();
    let scheduler = Arc::new(Scheduler::new(
        model.clone(),
        SchedulerConfig { slots: 2, queue: 0 },
    ));
    let running = scheduler
        .submit(Request::new(counting(&model), greedy(2000)))
        .unwrap();
    assert!(matches!(first_event(&running), StreamEvent::Delta(_)));
    // A short request admitted next to a long generation finishes while the
    // long one is still going: they advance token by token together.
    let short = encode(&model, "The capital of France is");
    let next = scheduler
        .submit(Request {
            priority: Priority::Guard,
            ..Request::new(short.clone(), greedy(8))
        })
        .unwrap();
    let done = finish(&next);
    assert_like_generate(&model, &short, &greedy(8), &done);
    assert!(
        running.recv_timeout(Duration::ZERO).is_ok(),
        "the long generation kept producing tokens"
    );
    assert_eq!(
        scheduler.load().0,
        1,
        "the long generation is still running"
    );
}
