//! One loaded model serving many requests at once.
//!
//! A single worker thread owns the active sequences and advances all of them
//! by one step per pass through [`Model::forward_batch`]: one new token each
//! (or a chunk of a prompt), so a long generation never starves a short guard
//! check and the weights are read once per step for the whole batch. Requests
//! beyond the active slots wait in a bounded queue (guard checks first); a
//! full queue is refused at once with [`SchedulerError::Overloaded`].
//! Cancelling a request, or dropping its handle, frees its slot at the next
//! step.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::cache::KvCache;
use crate::error::InferenceError;
use crate::generate::{
    Chooser, Completion, Delta, FinishReason, GenerateOptions, StreamEvent, TextAssembler,
};
use crate::llama::{BatchItem, Logits};
use crate::model::Model;
use crate::tokenizer::TokenId;

/// Longest piece of a prompt run in one step, so other sequences keep
/// getting tokens while a long prompt is prefilled.
pub const PREFILL_CHUNK: usize = 256;

/// How many requests run and wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Sequences advanced together in each step.
    pub slots: usize,
    /// Requests that may wait for a slot; more are refused.
    pub queue: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            slots: 4,
            queue: 16,
        }
    }
}

/// Who is asking; guard checks are admitted before other waiting requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// A safety check: short, on every turn's critical path.
    Guard,
    /// Ordinary generation.
    Normal,
}

/// A generation request.
#[derive(Debug)]
pub struct Request {
    /// Tokens after what `cache` holds (not empty).
    pub prompt: Vec<TokenId>,
    /// Limits, sampling, stop strings.
    pub options: GenerateOptions,
    /// Admission priority.
    pub priority: Priority,
    /// A cache to continue from (a fork of a prefilled prefix), or `None`
    /// for an empty one.
    pub cache: Option<KvCache>,
}

impl Request {
    /// A normal-priority request from an empty cache.
    pub fn new(prompt: Vec<TokenId>, options: GenerateOptions) -> Self {
        Self {
            prompt,
            options,
            priority: Priority::Normal,
            cache: None,
        }
    }
}

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchedulerError {
    /// Every slot is busy and the queue is full: retry later.
    #[error("overloaded: {running} requests running and {waiting} waiting (the limit)")]
    Overloaded {
        /// Requests in slots.
        running: usize,
        /// Requests in the queue.
        waiting: usize,
    },
    /// The request cannot run at all (empty prompt).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The scheduler has shut down.
    #[error("the scheduler has shut down")]
    Closed,
}

/// The caller's side of a submitted request. Dropping it cancels the
/// request (a caller that went away wants nothing more).
pub struct Handle {
    events: mpsc::Receiver<StreamEvent>,
    cancel: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

impl Handle {
    /// The next event; `None` once the request has ended and all events were read.
    pub fn recv(&self) -> Option<StreamEvent> {
        self.events.recv().ok()
    }

    /// The next event, waiting at most `timeout` for it.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<StreamEvent, mpsc::RecvTimeoutError> {
        self.events.recv_timeout(timeout)
    }

    /// Stops the request: a waiting request leaves the queue now, a running
    /// one frees its slot at the next step; a final [`StreamEvent::Done`]
    /// with [`FinishReason::Cancelled`] follows.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        // Take it out of the queue here rather than when the worker reaches
        // it, so its queue place is free for the next submit at once.
        let removed = {
            let mut state = self.shared.lock();
            let (gone, kept): (VecDeque<Pending>, VecDeque<Pending>) = state
                .waiting
                .drain(..)
                .partition(|p| p.cancel.load(Ordering::Relaxed));
            state.waiting = kept;
            gone
        };
        for p in removed {
            p.cancelled();
        }
        self.shared.wake.notify_all();
    }

    /// Waits for the end: the completion, or the failure message.
    pub fn wait(self) -> Result<Completion, String> {
        while let Some(event) = self.recv() {
            match event {
                StreamEvent::Delta(_) => {}
                StreamEvent::Done(c) => return Ok(c),
                StreamEvent::Failed(e) => return Err(e),
            }
        }
        Err("the scheduler stopped before the request finished".into())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.cancel();
    }
}

struct Pending {
    request: Request,
    events: mpsc::Sender<StreamEvent>,
    cancel: Arc<AtomicBool>,
}

impl Pending {
    /// Ends a request that never ran.
    fn cancelled(self) {
        // The caller may be gone; then nobody wants the end either.
        let _ = self.events.send(StreamEvent::Done(Completion {
            tokens: Vec::new(),
            text: String::new(),
            finish: FinishReason::Cancelled,
            prompt_tokens: self.request.prompt.len(),
        }));
    }
}

#[derive(Default)]
struct State {
    waiting: VecDeque<Pending>,
    running: usize,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Serves requests on one model; dropping it finishes the running requests'
/// current step, fails the rest and stops the worker.
pub struct Scheduler {
    shared: Arc<Shared>,
    config: SchedulerConfig,
    worker: Option<JoinHandle<()>>,
}

impl Scheduler {
    /// Starts the worker thread for `model`.
    pub fn new(model: Arc<Model>, config: SchedulerConfig) -> Self {
        let config = SchedulerConfig {
            slots: config.slots.max(1),
            queue: config.queue,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let worker = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("warden-scheduler".into())
                .spawn(move || Worker::new(model, shared, config.slots).run())
                .ok()
        };
        Self {
            shared,
            config,
            worker,
        }
    }

    /// Queues a request, or refuses it at once when the queue is full.
    pub fn submit(&self, request: Request) -> Result<Handle, SchedulerError> {
        if request.prompt.is_empty() {
            return Err(SchedulerError::Invalid("empty prompt".into()));
        }
        let (tx, rx) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        {
            let mut state = self.shared.lock();
            if state.closed || self.worker.is_none() {
                return Err(SchedulerError::Closed);
            }
            let free_slots = self.config.slots.saturating_sub(state.running);
            if state.waiting.len() >= self.config.queue + free_slots {
                return Err(SchedulerError::Overloaded {
                    running: state.running,
                    waiting: state.waiting.len(),
                });
            }
            // Guards go ahead of every waiting normal request.
            let at = match request.priority {
                Priority::Guard => state
                    .waiting
                    .iter()
                    .position(|p| p.request.priority > Priority::Guard)
                    .unwrap_or(state.waiting.len()),
                Priority::Normal => state.waiting.len(),
            };
            state.waiting.insert(
                at,
                Pending {
                    request,
                    events: tx,
                    cancel: cancel.clone(),
                },
            );
        }
        self.shared.wake.notify_all();
        Ok(Handle {
            events: rx,
            cancel,
            shared: self.shared.clone(),
        })
    }

    /// Requests running and waiting right now.
    pub fn load(&self) -> (usize, usize) {
        let state = self.shared.lock();
        (state.running, state.waiting.len())
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        if let Some(worker) = self.worker.take() {
            // A panicked worker has already dropped its senders; nothing to report.
            let _ = worker.join();
        }
    }
}

/// A sequence in a slot.
struct Active {
    cache: KvCache,
    input: Vec<TokenId>,
    chooser: Chooser,
    text: TextAssembler,
    tokens: Vec<TokenId>,
    options: GenerateOptions,
    prompt_tokens: usize,
    events: mpsc::Sender<StreamEvent>,
    cancel: Arc<AtomicBool>,
}

impl Active {
    fn finish(self, finish: FinishReason) {
        let completion = Completion {
            tokens: self.tokens,
            text: self.text.finish(),
            finish,
            prompt_tokens: self.prompt_tokens,
        };
        // The caller may be gone; then nobody wants the end either.
        let _ = self.events.send(StreamEvent::Done(completion));
    }
}

struct Worker {
    model: Arc<Model>,
    shared: Arc<Shared>,
    slots: usize,
    active: Vec<Active>,
}

impl Worker {
    fn new(model: Arc<Model>, shared: Arc<Shared>, slots: usize) -> Self {
        Self {
            model,
            shared,
            slots,
            active: Vec::new(),
        }
    }

    fn run(mut self) {
        loop {
            // Cancelled sequences leave before admission, so their slots
            // are refilled in the same round.
            self.drop_cancelled();
            if !self.admit() {
                break;
            }
            if !self.active.is_empty() {
                self.step();
            }
            self.shared.lock().running = self.active.len();
        }
        let pending: Vec<Pending> = self.shared.lock().waiting.drain(..).collect();
        for p in pending {
            let _ = p
                .events
                .send(StreamEvent::Failed("the scheduler shut down".into()));
        }
        for a in self.active.drain(..) {
            let _ = a
                .events
                .send(StreamEvent::Failed("the scheduler shut down".into()));
        }
    }

    /// Moves waiting requests into free slots, sleeping while there is
    /// nothing to do; `false` once the scheduler is closed.
    fn admit(&mut self) -> bool {
        let mut state = self.shared.lock();
        loop {
            if state.closed {
                return false;
            }
            while self.active.len() < self.slots {
                let Some(p) = state.waiting.pop_front() else {
                    break;
                };
                if p.cancel.load(Ordering::Relaxed) {
                    p.cancelled();
                    continue;
                }
                let Request {
                    prompt,
                    options,
                    cache,
                    ..
                } = p.request;
                let chooser = match Chooser::new(&self.model, &options) {
                    Ok(c) => c,
                    Err(e) => {
                        // The caller may be gone; then nobody wants the error either.
                        let _ = p.events.send(StreamEvent::Failed(e.to_string()));
                        continue;
                    }
                };
                self.active.push(Active {
                    cache: cache.unwrap_or_else(|| self.model.new_cache()),
                    prompt_tokens: prompt.len(),
                    input: prompt,
                    text: TextAssembler::new(chooser.stop_strings(&options)),
                    chooser,
                    tokens: Vec::new(),
                    options,
                    events: p.events,
                    cancel: p.cancel,
                });
            }
            state.running = self.active.len();
            if !self.active.is_empty() {
                return true;
            }
            state = self
                .shared
                .wake
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    fn drop_cancelled(&mut self) {
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].cancel.load(Ordering::Relaxed) {
                done.push((self.active.swap_remove(i), Some(FinishReason::Cancelled)));
            } else {
                i += 1;
            }
        }
        self.retire(done);
    }

    /// Frees the slots of ended sequences (visible to `submit` before the
    /// callers hear of the end), then tells the callers.
    fn retire(&mut self, done: Vec<(Active, Option<FinishReason>)>) {
        if done.is_empty() {
            return;
        }
        self.shared.lock().running = self.active.len();
        for (a, reason) in done {
            if let Some(reason) = reason {
                a.finish(reason);
            }
        }
    }

    /// One pass: every active sequence advances by a token or a prompt chunk.
    fn step(&mut self) {
        // Sequences that cannot run another pass end before it.
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.active.len() {
            let a = &mut self.active[i];
            let next = a.input.len().min(PREFILL_CHUNK);
            if a.tokens.len() >= a.options.max_tokens || a.cache.len() + next > a.cache.max_len() {
                let reason = match a.chooser.at_limit() {
                    Ok(reason) => Some(reason),
                    Err(e) => {
                        let _ = a.events.send(StreamEvent::Failed(e.to_string()));
                        None
                    }
                };
                done.push((self.active.swap_remove(i), reason));
            } else {
                i += 1;
            }
        }
        self.retire(done);
        if self.active.is_empty() {
            return;
        }
        let chunks: Vec<Vec<TokenId>> = self
            .active
            .iter_mut()
            .map(|a| {
                let n = a.input.len().min(PREFILL_CHUNK);
                a.input.drain(..n).collect()
            })
            .collect();
        let result = {
            let mut items: Vec<BatchItem<'_>> = self
                .active
                .iter_mut()
                .zip(&chunks)
                .map(|(a, tokens)| BatchItem {
                    tokens,
                    cache: &mut a.cache,
                    logits: Logits::Last,
                })
                .collect();
            self.model.forward_batch(&mut items)
        };
        let logits = match result {
            Ok(l) => l,
            Err(e) => return self.fail_all(&e),
        };
        let tokenizer = self.model.tokenizer();
        let mut finished = Vec::new();
        for (i, (a, row)) in self.active.iter_mut().zip(logits).enumerate() {
            if !a.input.is_empty() {
                continue; // still prefilling its prompt
            }
            let row = match row.squeeze(0).and_then(|r| r.to_vec1::<f32>()) {
                Ok(r) => r,
                Err(e) => {
                    let _ = a.events.send(StreamEvent::Failed(e.to_string()));
                    finished.push((i, None));
                    continue;
                }
            };
            let token = match a.chooser.choose(row, tokenizer.stop_ids()) {
                Ok(Some(token)) => token,
                Ok(None) => {
                    finished.push((i, Some(FinishReason::Stop)));
                    continue;
                }
                Err(e) => {
                    let _ = a.events.send(StreamEvent::Failed(e.to_string()));
                    finished.push((i, None));
                    continue;
                }
            };
            a.tokens.push(token);
            let (text, stopped) = a.text.push(tokenizer.token_bytes(token));
            if a.events
                .send(StreamEvent::Delta(Delta { token, text }))
                .is_err()
            {
                finished.push((i, None)); // the caller went away
                continue;
            }
            if stopped || a.chooser.complete() {
                finished.push((i, Some(FinishReason::Stop)));
            } else {
                a.input.push(token);
            }
        }
        let done = finished
            .into_iter()
            .rev()
            .map(|(i, reason)| (self.active.swap_remove(i), reason))
            .collect();
        self.retire(done);
    }

    fn fail_all(&mut self, e: &InferenceError) {
        let failed: Vec<Active> = self.active.drain(..).collect();
        self.shared.lock().running = 0;
        for a in failed {
            let _ = a.events.send(StreamEvent::Failed(e.to_string()));
        }
    }
}
