//! The local engine: a model file run in-process on blocking threads, with
//! a bounded queue (429 when full) and cancellation when the caller leaves.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use warden_inference::template::RenderInput;
use warden_inference::{
    Completion, ConstrainError, Constraint, FinishReason, GenerateOptions, InferenceError, Model,
    SamplingParams,
};

use super::StreamEvent;
use crate::chat::{
    content_text, ChatRequest, ChunkHeader, GenParams, Generated, StreamItem, Usage,
};
use crate::error::GenerateError;

/// A local model with its admission control.
pub struct LocalGenerator {
    name: String,
    model: Arc<Model>,
    running: Arc<Semaphore>,
    admitted: Arc<AtomicUsize>,
    capacity: usize,
}

/// A place in the queue; leaving it (drop) frees the place.
struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A running slot and the queue place behind it, held until generation ends.
type Admission = (tokio::sync::OwnedSemaphorePermit, Ticket);

/// Sets the flag when dropped: the request future went away.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl LocalGenerator {
    /// Wraps a loaded model: `concurrency` generations at once, `queue` more waiting.
    pub fn new(name: String, model: Model, concurrency: usize, queue: usize) -> Self {
        Self {
            name,
            model: Arc::new(model),
            running: Arc::new(Semaphore::new(concurrency.max(1))),
            admitted: Arc::new(AtomicUsize::new(0)),
            capacity: concurrency.max(1) + queue,
        }
    }

    /// Generations admitted (running or waiting).
    pub fn queued(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }

    /// Whether this model can generate under `constraint` (its schemas use
    /// only features the grammar compiler implements).
    pub fn can_constrain(&self, constraint: &Constraint) -> Result<(), ConstrainError> {
        self.model.constrain(constraint).map(drop)
    }

    fn admit(&self) -> Result<Ticket, GenerateError> {
        let before = self.admitted.fetch_add(1, Ordering::AcqRel);
        let ticket = Ticket(Arc::clone(&self.admitted));
        if before >= self.capacity {
            return Err(GenerateError::Overloaded {
                model: self.name.clone(),
                retry_after: Duration::from_secs(1),
            });
        }
        Ok(ticket)
    }

    fn prepare(
        &self,
        req: &ChatRequest,
        params: &GenParams,
    ) -> Result<(Vec<u32>, GenerateOptions), GenerateError> {
        // Built-in templates refuse content-part arrays: flatten to text.
        let messages: Vec<Value> = req
            .messages()
            .iter()
            .map(|m| {
                let mut v = m.clone();
                if m.get("content").is_some_and(Value::is_array) {
                    v["content"] = Value::String(content_text(m.get("content")));
                }
                v
            })
            .collect();
        let input = RenderInput {
            messages,
            tools: req.tools().cloned(),
            add_generation_prompt: true,
            template_kwargs: serde_json::Map::new(),
        };
        let prompt = self.model.encode_chat(&input).map_err(|e| match e {
            InferenceError::InvalidRequest(m) => GenerateError::InvalidRequest {
                param: "messages",
                message: m,
            },
            other => GenerateError::Internal(other.to_string()),
        })?;
        // The loop's tool-call constraint, else the caller's `response_format`
        // (refused with a 400 naming the feature when it cannot be compiled).
        let constraint = match &params.constraint {
            Some(c) => Some(c.clone()),
            None => match response_format(req.body())? {
                Some(c) => {
                    self.can_constrain(&c)
                        .map_err(|e| refused("response_format", e))?;
                    Some(c)
                }
                None => None,
            },
        };
        let options = GenerateOptions {
            max_tokens: params.max_tokens as usize,
            sampling: SamplingParams {
                temperature: params.temperature.unwrap_or(0.0),
                top_p: params.top_p.unwrap_or(1.0),
                top_k: 0,
                seed: params.seed.map(|s| s as u64),
            },
            stop: params.stop.clone(),
            constraint,
        };
        Ok((prompt, options))
    }

    /// Takes a queue place, renders the prompt and waits for a running slot.
    async fn start(
        &self,
        req: &ChatRequest,
        params: &GenParams,
    ) -> Result<(Vec<u32>, GenerateOptions, Admission), GenerateError> {
        let ticket = self.admit()?;
        let (prompt, options) = self.prepare(req, params)?;
        let permit = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .map_err(|_| GenerateError::Internal("the engine is shutting down".into()))?;
        Ok((prompt, options, (permit, ticket)))
    }

    /// Generates a whole answer on a blocking thread; dropping the future
    /// stops the generation at the next token.
    pub async fn complete(
        &self,
        req: &ChatRequest,
        params: &GenParams,
    ) -> Result<Generated, GenerateError> {
        let (prompt, options, held) = self.start(req, params).await?;
        let cancelled = Arc::new(AtomicBool::new(false));
        let _cancel = CancelOnDrop(Arc::clone(&cancelled));
        let model = Arc::clone(&self.model);
        let done = tokio::task::spawn_blocking(move || {
            let _held = held;
            model.generate(&prompt, &options, |_| {
                if cancelled.load(Ordering::Acquire) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
        })
        .await
        .map_err(|e| GenerateError::Internal(format!("generation panicked: {e}")))?
        .map_err(failure)?;
        Ok(Generated {
            content: Some(done.text.clone()),
            tool_calls: None,
            finish_reason: finish(&done).into(),
            usage: usage(&done),
            raw: None,
        })
    }

    /// Streams an answer: one chunk per token with text. Dropping the
    /// receiver stops the generation at the next token.
    pub async fn stream(
        &self,
        req: &ChatRequest,
        params: &GenParams,
        header: ChunkHeader,
    ) -> Result<mpsc::Receiver<StreamEvent>, GenerateError> {
        let (prompt, options, held) = self.start(req, params).await?;
        let (tx, rx) = mpsc::channel(64);
        let model = Arc::clone(&self.model);
        tokio::task::spawn_blocking(move || {
            let _held = held;
            let chunk = |delta: Value, finish: Option<&str>| {
                json!({
                    "id": header.id, "object": "chat.completion.chunk",
                    "created": header.created, "model": header.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
                })
                .to_string()
            };
            let first = StreamItem {
                payload: chunk(json!({"role": "assistant", "content": ""}), None),
                text: String::new(),
                is_content: false,
                finish_reason: None,
                usage: None,
            };
            if tx.blocking_send(StreamEvent::Item(first)).is_err() {
                return;
            }
            let result = model.generate(&prompt, &options, |d| {
                if d.text.is_empty() {
                    // Half a character or held back for a stop string:
                    // still a token, but nothing to send yet.
                    return if tx.is_closed() {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    };
                }
                let item = StreamItem {
                    payload: chunk(json!({"content": d.text}), None),
                    text: d.text.clone(),
                    is_content: true,
                    finish_reason: None,
                    usage: None,
                };
                match tx.blocking_send(StreamEvent::Item(item)) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(()),
                }
            });
            let event = match result {
                Ok(done) => {
                    let reason = finish(&done);
                    StreamEvent::Item(StreamItem {
                        payload: chunk(json!({}), Some(reason)),
                        text: String::new(),
                        is_content: false,
                        finish_reason: Some(reason.into()),
                        usage: Some(usage(&done)),
                    })
                }
                Err(e) => StreamEvent::Failed(failure(e)),
            };
            let _ = tx.blocking_send(event);
        });
        Ok(rx)
    }
}

/// The constraint OpenAI's `response_format` asks for: `json_object`, or
/// `json_schema` with its `schema`; `None` for `text` or no format.
fn response_format(
    body: &serde_json::Map<String, Value>,
) -> Result<Option<Constraint>, GenerateError> {
    let bad = |message: &str| GenerateError::InvalidRequest {
        param: "response_format",
        message: message.to_owned(),
    };
    let Some(format) = body.get("response_format").filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Constraint::JsonObject)),
        Some("json_schema") => match format.pointer("/json_schema/schema") {
            Some(schema @ (Value::Object(_) | Value::Bool(_))) => {
                Ok(Some(Constraint::JsonSchema(schema.clone())))
            }
            Some(_) => Err(bad(
                "response_format.json_schema.schema must be a JSON Schema object",
            )),
            None => Err(bad("response_format.json_schema.schema is required")),
        },
        _ => Err(bad(
            "response_format.type must be \"text\", \"json_object\" or \"json_schema\"",
        )),
    }
}

/// A constraint that cannot be used, as the request's error.
fn refused(param: &'static str, e: ConstrainError) -> GenerateError {
    match e {
        ConstrainError::Unsupported { feature } => {
            GenerateError::UnsupportedSchema { param, feature }
        }
        ConstrainError::Invalid { reason } => GenerateError::InvalidRequest {
            param,
            message: format!("{param}: {reason}"),
        },
        other => GenerateError::Internal(other.to_string()),
    }
}

/// A generation failure as the generator's error.
fn failure(e: InferenceError) -> GenerateError {
    match e {
        InferenceError::Constrain(ConstrainError::Unfinished { max_tokens }) => {
            GenerateError::Unfinished { max_tokens }
        }
        other => GenerateError::Internal(other.to_string()),
    }
}

fn finish(done: &Completion) -> &'static str {
    match done.finish {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

fn usage(done: &Completion) -> Usage {
    Usage::new(done.prompt_tokens as u32, done.tokens.len() as u32)
}
