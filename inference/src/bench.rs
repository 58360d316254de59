//! `warden bench`: throughput and latency of the bundled model on this
//! machine, in the shapes Warden uses (prefill, decode, a guard pass cold and
//! with a cached prefix, concurrent streams). Figures are meant to be read as
//! ratios within one run; absolute timings on a shared machine are noise.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{InferenceError, Result};
use crate::llama::{argmax, BatchItem, Logits};
use crate::model::Model;
use crate::tokenizer::TokenId;

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchConfig {
    /// The model file.
    pub model: PathBuf,
    /// Thread counts to measure the single-stream figures at.
    pub threads: Vec<usize>,
    /// Prompt length for prefill.
    pub prefill_tokens: usize,
    /// Tokens generated for decode.
    pub decode_tokens: usize,
    /// Prompt length of the guard-shaped pass.
    pub guard_tokens: usize,
    /// Of which this many are a cached prefix in the warm variant.
    pub guard_prefix_tokens: usize,
    /// Concurrent streams for the aggregate figure (0 skips it).
    pub streams: usize,
    /// Repetitions of each measurement; the best is reported.
    pub repeats: usize,
}

impl BenchConfig {
    /// The shapes: 512-token prefill, 128 decoded tokens, a
    /// 600-token guard pass with a 500-token cached prefix, 4 streams, at 1
    /// and 2 threads.
    pub fn new(model: PathBuf) -> Self {
        Self {
            model,
            threads: vec![1, 2],
            prefill_tokens: 512,
            decode_tokens: 128,
            guard_tokens: 600,
            guard_prefix_tokens: 500,
            streams: 4,
            repeats: 2,
        }
    }
}

/// Where a running benchmark is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// What is being measured.
    pub stage: String,
    /// Steps done of `total`.
    pub done: usize,
    /// Steps in the whole run.
    pub total: usize,
}

/// Single-stream figures at one thread count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadFigures {
    /// Worker threads.
    pub threads: usize,
    /// Prompt tokens per second.
    pub prefill_tok_s: f64,
    /// Generated tokens per second (one token per pass).
    pub decode_tok_s: f64,
    /// A whole guard-shaped prompt, then the first-token logits, in ms.
    pub guard_cold_ms: f64,
    /// The same with the prefix already cached (fork of a prefilled cache), in ms.
    pub guard_cached_ms: f64,
}

/// Several streams decoding at once through one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConcurrentFigures {
    /// Worker threads.
    pub threads: usize,
    /// Streams.
    pub streams: usize,
    /// Generated tokens per second over all streams.
    pub aggregate_tok_s: f64,
    /// The same tokens generated one stream after another, per second.
    pub sequential_tok_s: f64,
}

/// Everything measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    /// The model file.
    pub model: PathBuf,
    /// Its size in bytes.
    pub file_bytes: u64,
    /// Resident memory growth from loading the model, in bytes (Linux only).
    pub rss_load_bytes: Option<u64>,
    /// Kernels in use.
    pub isa: String,
    /// Per thread count.
    pub runs: Vec<ThreadFigures>,
    /// Concurrent streams (at the highest thread count).
    pub concurrent: Option<ConcurrentFigures>,
    /// The exact prompts used, for running the same through llama.cpp.
    pub prompts: BenchPrompts,
}

/// Token ids of the prompts (BOS first).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchPrompts {
    /// The prefill prompt.
    pub prefill: Vec<TokenId>,
    /// The guard-shaped prompt.
    pub guard: Vec<TokenId>,
    /// Length of its cached prefix.
    pub guard_prefix: usize,
    /// Tokens decoded.
    pub decode_tokens: usize,
}

/// Resident set size of this process (Linux `/proc`), in bytes.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Fixed prose (a policy-like text, as a guard prompt holds) repeated and cut
/// to exactly `n` tokens after BOS.
fn prompt(model: &Model, n: usize) -> Result<Vec<TokenId>> {
    const TEXT: &str = "Task: Check if there is unsafe content in the conversation below \
        according to our safety policy. The categories are violent crimes, non-violent \
        crimes, sex-related crimes, child sexual exploitation, defamation, specialized \
        advice, privacy, intellectual property, indiscriminate weapons, hate, suicide and \
        self-harm, sexual content, elections and code interpreter abuse. User: How do I \
        bake bread at home with 500 grams of flour? Agent: Mix the flour, 10 grams of salt, \
        7 grams of yeast and 350 ml of water, knead for ten minutes, let it rise. ";
    let mut ids = model.encode_prompt(TEXT)?;
    let body: Vec<TokenId> = model.tokenizer().encode(TEXT, false)?;
    while ids.len() < n {
        ids.extend_from_slice(&body);
    }
    ids.truncate(n);
    Ok(ids)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(1e-9)
}

/// Loads the model and measures everything in `config`, calling `progress`
/// after each step.
pub fn run(config: &BenchConfig, mut progress: impl FnMut(&Progress)) -> Result<BenchReport> {
    let file_bytes = std::fs::metadata(&config.model)
        .map_err(|source| InferenceError::Io {
            path: config.model.clone(),
            source,
        })?
        .len();
    let before = resident_bytes();
    let model = Arc::new(Model::load(&config.model)?);
    let rss_load_bytes = match (before, resident_bytes()) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    let prefill = prompt(&model, config.prefill_tokens)?;
    let guard = prompt(&model, config.guard_tokens)?;
    let steps_per_thread = 4 * config.repeats;
    let total = config.threads.len() * steps_per_thread + usize::from(config.streams > 0) * 2 + 1;
    let mut done = 0;
    let mut step = |stage: String, progress: &mut dyn FnMut(&Progress)| {
        done += 1;
        progress(&Progress { stage, done, total });
    };
    // Warm-up: page in the weights, start the pools.
    let mut cache = model.new_cache();
    model.forward(&prefill[..64.min(prefill.len())], &mut cache, Logits::Last)?;
    step("warm-up".into(), &mut progress);

    let mut runs = Vec::new();
    for &threads in &config.threads {
        model.set_threads(threads)?;
        let mut best = ThreadFigures {
            threads,
            prefill_tok_s: 0.0,
            decode_tok_s: 0.0,
            guard_cold_ms: f64::INFINITY,
            guard_cached_ms: f64::INFINITY,
        };
        for _ in 0..config.repeats {
            let t = time_prefill(&model, &prefill)?;
            best.prefill_tok_s = best.prefill_tok_s.max(prefill.len() as f64 / secs(t));
            step(format!("prefill, {threads} threads"), &mut progress);

            let t = time_decode(
                &model,
                &prefill[..16.min(prefill.len())],
                config.decode_tokens,
            )?;
            best.decode_tok_s = best.decode_tok_s.max(config.decode_tokens as f64 / secs(t));
            step(format!("decode, {threads} threads"), &mut progress);

            let t = time_prefill(&model, &guard)?;
            best.guard_cold_ms = best.guard_cold_ms.min(t.as_secs_f64() * 1e3);
            step(format!("guard pass cold, {threads} threads"), &mut progress);

            let t = time_cached(&model, &guard, config.guard_prefix_tokens)?;
            best.guard_cached_ms = best.guard_cached_ms.min(t.as_secs_f64() * 1e3);
            step(
                format!("guard pass cached, {threads} threads"),
                &mut progress,
            );
        }
        runs.push(best);
    }

    let concurrent = if config.streams > 0 {
        let threads = config.threads.iter().copied().max().unwrap_or(1);
        model.set_threads(threads)?;
        let start = &prefill[..16.min(prefill.len())];
        let t = time_streams(&model, start, config.streams, config.decode_tokens)?;
        let tokens = (config.streams * config.decode_tokens) as f64;
        step(
            format!("{} concurrent streams", config.streams),
            &mut progress,
        );
        let seq = time_decode(&model, start, config.decode_tokens)?;
        step("one stream for comparison".into(), &mut progress);
        Some(ConcurrentFigures {
            threads,
            streams: config.streams,
            aggregate_tok_s: tokens / secs(t),
            sequential_tok_s: config.decode_tokens as f64 / secs(seq),
        })
    } else {
        None
    };

    Ok(BenchReport {
        model: config.model.clone(),
        file_bytes,
        rss_load_bytes,
        isa: format!("{:?}", crate::kernels::Isa::detect()),
        runs,
        concurrent,
        prompts: BenchPrompts {
            prefill,
            guard,
            guard_prefix: config.guard_prefix_tokens,
            decode_tokens: config.decode_tokens,
        },
    })
}

/// [`run`] with a progress bar on standard error (cleared at the end).
pub fn run_with_progress_bar(config: &BenchConfig) -> Result<BenchReport> {
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("loading the model");
    let report = run(config, |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(p.stage.clone());
    });
    bar.finish_and_clear();
    report
}

/// One pass over `tokens` from an empty cache, last-position logits.
fn time_prefill(model: &Model, tokens: &[TokenId]) -> Result<Duration> {
    let mut cache = model.new_cache();
    let t = Instant::now();
    model.forward(tokens, &mut cache, Logits::Last)?;
    Ok(t.elapsed())
}

/// `count` greedy single-token passes after `start`.
fn time_decode(model: &Model, start: &[TokenId], count: usize) -> Result<Duration> {
    let mut cache = model.new_cache();
    let logits = model.forward(start, &mut cache, Logits::Last)?;
    let mut next = argmax(&logits.squeeze(0)?.to_vec1::<f32>()?);
    let t = Instant::now();
    for _ in 0..count {
        let logits = model.forward(&[next], &mut cache, Logits::Last)?;
        next = argmax(&logits.squeeze(0)?.to_vec1::<f32>()?);
    }
    Ok(t.elapsed())
}

/// The guard pass with its first `prefix` tokens already cached, as the
/// guard runs a check in steady state: on a copy of the prefilled prefix
/// that an earlier check used and handed back, rolled back to the prefix
/// (the guard's prefix cache keeps such copies; only the first checks on
/// a prefix fork it).
fn time_cached(model: &Model, tokens: &[TokenId], prefix: usize) -> Result<Duration> {
    let prefix = prefix.min(tokens.len().saturating_sub(1));
    let mut base = model.new_cache();
    model.forward(&tokens[..prefix], &mut base, Logits::Last)?;
    // The earlier check.
    let mut cache = base.fork()?;
    model.forward(&tokens[prefix..], &mut cache, Logits::Last)?;
    cache.truncate(prefix);
    let t = Instant::now();
    model.forward(&tokens[prefix..], &mut cache, Logits::Last)?;
    Ok(t.elapsed())
}

/// `streams` sequences decoding `count` tokens each, interleaved one token
/// per sequence per pass through [`Model::forward_batch`].
fn time_streams(
    model: &Model,
    start: &[TokenId],
    streams: usize,
    count: usize,
) -> Result<Duration> {
    let mut caches: Vec<_> = (0..streams).map(|_| model.new_cache()).collect();
    let mut next = Vec::with_capacity(streams);
    for cache in &mut caches {
        let logits = model.forward(start, cache, Logits::Last)?;
        next.push(argmax(&logits.squeeze(0)?.to_vec1::<f32>()?));
    }
    let t = Instant::now();
    for _ in 0..count {
        let tokens: Vec<[TokenId; 1]> = next.iter().map(|&t| [t]).collect();
        let mut items: Vec<BatchItem<'_>> = caches
            .iter_mut()
            .zip(&tokens)
            .map(|(cache, tok)| BatchItem {
                tokens: tok,
                cache,
                logits: Logits::Last,
            })
            .collect();
        let logits = model.forward_batch(&mut items)?;
        for (n, l) in next.iter_mut().zip(logits) {
            *n = argmax(&l.squeeze(0)?.to_vec1::<f32>()?);
        }
    }
    Ok(t.elapsed())
}

impl BenchReport {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "model: {} ({:.1} MiB), kernels: {}",
            self.model.display(),
            mib(self.file_bytes),
            self.isa
        )?;
        if let Some(rss) = self.rss_load_bytes {
            writeln!(
                f,
                "resident memory from loading: {:.1} MiB ({:.2}x the file)",
                mib(rss),
                rss as f64 / self.file_bytes.max(1) as f64
            )?;
        }
        writeln!(
            f,
            "{:>7} {:>12} {:>12} {:>14} {:>16} {:>8}",
            "threads", "prefill t/s", "decode t/s", "guard cold ms", "guard cached ms", "speedup"
        )?;
        for r in &self.runs {
            writeln!(
                f,
                "{:>7} {:>12.1} {:>12.1} {:>14.1} {:>16.1} {:>7.1}x",
                r.threads,
                r.prefill_tok_s,
                r.decode_tok_s,
                r.guard_cold_ms,
                r.guard_cached_ms,
                r.guard_cold_ms / r.guard_cached_ms.max(1e-9)
            )?;
        }
        if let Some(c) = &self.concurrent {
            writeln!(
                f,
                "{} streams at {} threads: {:.1} tokens/s aggregate vs {:.1} single stream ({:.2}x)",
                c.streams,
                c.threads,
                c.aggregate_tok_s,
                c.sequential_tok_s,
                c.aggregate_tok_s / c.sequential_tok_s.max(1e-9)
            )?;
        }
        Ok(())
    }
}
