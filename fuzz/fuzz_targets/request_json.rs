//! The gateway's request JSON: `/v1/chat/completions` bodies deserialised
//! into the OpenAI request type, then validated against the limits and
//! mapped onto guard turns, as the handler does. Never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_gateway::config::Limits;
use warden_gateway::openai::ChatCompletionRequest;
use warden_gateway::routes::chat::validate;
use warden_gateway::turn::{guard_messages, input_checkpoint};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<ChatCompletionRequest>(data) else {
        return;
    };
    let _ = validate(&req, &Limits::default());
    let _ = input_checkpoint(&req.messages);
    let _ = guard_messages(&req.messages);
});
