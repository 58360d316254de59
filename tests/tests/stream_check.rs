//! Windowed output checks on a local guard continue one incremental session
//! per stream (the bundled model stands in for Llama Guard: its judgement is
//! not the point, the cost and the wiring are).

#[path = "../../inference/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use warden_gateway::stream_check::StreamSessions;
use warden_guard::{
    CategorySet, ChatMessage, Checkpoint, GuardConversation, GuardError, GuardMessage,
    GuardRequest, GuardRole, LocalBackend, LocalOptions,
};
use warden_policies::taxonomy::GuardVariant;

const VARIANT: GuardVariant = GuardVariant::LlamaGuard3_8b;
const QUESTION: &str = "Tell me about the sea.";
const WINDOWS: [&str; 4] = [
    "The sea covers most of the planet",
    " and holds most of its water.",
    " It is deep, salty and cold, and full of life",
    " from plankton to whales.",
];
const LONG: Duration = Duration::from_secs(600);

fn output_request(history: &[ChatMessage], answer: &str) -> GuardRequest {
    let mut messages = history.to_vec();
    messages.push(ChatMessage::assistant(answer));
    GuardRequest::from_chat(
        Checkpoint::Output,
        &messages,
        CategorySet::standard(VARIANT),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_continue_one_session_and_only_add_what_is_new() {
    let local = LocalBackend::new(common::model(), LocalOptions::new(VARIANT)).unwrap();
    let history = [ChatMessage::user(QUESTION)];
    let mut sessions = StreamSessions::default();
    let mut answer = String::new();
    let mut held = Vec::new();
    for window in WINDOWS {
        answer.push_str(window);
        let req = output_request(&history, &answer);
        // The verdict may be an error (SmolLM2 rarely writes one); either
        // way the session must survive the check and hold the answer so far.
        let _ = sessions.classify("guard", &local, &req, LONG).await;
        held.push(sessions.cached_tokens("guard").expect("session kept"));
    }
    assert_eq!(sessions.counts(), (4, 0));
    assert!(
        held.windows(2).all(|w| w[0] < w[1]),
        "the session grows by each window: {held:?}"
    );
    // What the session holds is the prompt up to the answer: the prefix and
    // the conversation, not the closing instructions or a verdict.
    let whole = local.judge(&output_request(&history, &answer)).unwrap();
    let closing = local
        .model_handle()
        .tokenizer()
        .encode(
            &warden_guard::build_prompt_parts(
                VARIANT,
                &CategorySet::standard(VARIANT),
                output_request(&history, &answer).conversation(),
            )
            .suffix,
            true,
        )
        .unwrap()
        .len();
    assert_eq!(*held.last().unwrap() + closing, whole.prompt_tokens);

    // A new stream's answer that does not extend the session's starts over.
    let req = output_request(&history, "Something else entirely.");
    let _ = sessions.classify("guard", &local, &req, LONG).await;
    assert!(sessions.cached_tokens("guard").unwrap() < held[0] + 8);

    // A conversation a session cannot hold (an answer in several parts, as
    // only hand-built requests have) gets a whole check.
    let parts = GuardConversation::new(vec![
        GuardMessage::new(GuardRole::User, QUESTION),
        GuardMessage::with_parts(GuardRole::Agent, vec!["One.".into(), "Two.".into()]),
    ])
    .unwrap();
    let req = GuardRequest::new(Checkpoint::Output, parts, CategorySet::standard(VARIANT)).unwrap();
    let _ = sessions.classify("guard", &local, &req, LONG).await;
    assert_eq!(sessions.counts(), (5, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_past_its_deadline_is_a_timeout_and_the_next_starts_over() {
    let local = LocalBackend::new(common::model(), LocalOptions::new(VARIANT)).unwrap();
    let history = [ChatMessage::user(QUESTION)];
    let mut sessions = StreamSessions::default();
    let req = output_request(&history, WINDOWS[0]);
    let err = sessions
        .classify("guard", &local, &req, Duration::from_millis(1))
        .await
        .unwrap_err();
    assert!(matches!(err, GuardError::Timeout { .. }), "{err}");
    assert_eq!(sessions.cached_tokens("guard"), None, "never read as safe");
    let _ = sessions.classify("guard", &local, &req, LONG).await;
    assert!(sessions.cached_tokens("guard").is_some());
}
