//! Decode speed with the constrained-decoding mask on vs off, and the mask's
//! own time per token, on one model:
//!
//! ```sh
//! cargo run --release -p warden-inference --example constrain_bench -- MODEL.gguf [RUNS]
//! ```
//!
//! Both sides sample at temperature 1.0 with the same seeds after the same
//! prefilled prompt (forked cache, so prefill is not timed); runs alternate
//! on/off so drift on a shared machine hits both. The mask time is measured
//! by replaying the constrained outputs through a fresh mask.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use warden_inference::template::RenderInput;
use warden_inference::{Constraint, GenerateOptions, Model, SamplingParams};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model_path = PathBuf::from(args.next().ok_or("usage: constrain_bench MODEL [RUNS]")?);
    let runs: u64 = args.next().map(|r| r.parse()).transpose()?.unwrap_or(20);
    let model = Model::load(&model_path)?;
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 40},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "email": {"type": "string", "maxLength": 60},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 6},
            "address": {
                "type": "object",
                "properties": {
                    "street": {"type": "string", "maxLength": 40},
                    "city": {"type": "string", "maxLength": 30},
                    "country": {"enum": ["FR", "DE", "US", "JP"]}
                },
                "required": ["street", "city", "country"],
                "additionalProperties": false
            }
        },
        "required": ["name", "age", "email", "tags", "address"],
        "additionalProperties": false
    });
    let constraint = Constraint::JsonSchema(schema.clone());
    let prompt = model.encode_chat(&RenderInput {
        messages: vec![json!({"role": "user", "content": format!(
            "Invent a person and describe them as JSON matching this schema:\n{schema}")})],
        tools: None,
        add_generation_prompt: true,
        template_kwargs: serde_json::Map::new(),
    })?;
    let (last, prefix) = prompt.split_last().ok_or("empty prompt")?;
    let mut prefilled = model.new_cache();
    model.forward(prefix, &mut prefilled, warden_inference::Logits::Last)?;

    let options = |seed: u64, constraint: Option<Constraint>| GenerateOptions {
        max_tokens: 160,
        sampling: SamplingParams {
            temperature: 1.0,
            seed: Some(seed),
            ..SamplingParams::default()
        },
        stop: Vec::new(),
        constraint,
    };
    let mut time = [Duration::ZERO; 2];
    let mut tokens = [0usize; 2];
    let mut outputs = Vec::new();
    let mut unfinished = 0;
    // One untimed warm-up of each side (the first constrained request builds the trie).
    for c in [None, Some(constraint.clone())] {
        let mut cache = prefilled.fork()?;
        let _ = model.generate_with_cache(&mut cache, &[*last], &options(u64::MAX, c), |_| {
            ControlFlow::Continue(())
        });
    }
    for seed in 0..runs {
        for (side, c) in [(0, None), (1, Some(constraint.clone()))] {
            let mut cache = prefilled.fork()?;
            let started = Instant::now();
            let out = model.generate_with_cache(&mut cache, &[*last], &options(seed, c), |_| {
                ControlFlow::Continue(())
            });
            let spent = started.elapsed();
            match out {
                Ok(done) => {
                    time[side] += spent;
                    tokens[side] += done.tokens.len();
                    if side == 1 {
                        outputs.push(done.tokens);
                    }
                }
                Err(e) if side == 1 => {
                    eprintln!("seed {seed}: {e}");
                    unfinished += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let rate = |side: usize| tokens[side] as f64 / time[side].as_secs_f64();
    let (off, on) = (rate(0), rate(1));

    // The mask alone: every constrained output replayed through a fresh mask.
    let mut row = vec![0.0f32; model.tokenizer().vocab_size()];
    let (mut mask_time, mut masks, mut worst) = (Duration::ZERO, 0u64, Duration::ZERO);
    for out in &outputs {
        let mut mask = model.constrain(&constraint)?;
        for &t in out {
            let before = mask.cost().0;
            mask.apply(&mut row)?;
            mask.commit(t)?;
            worst = worst.max(mask.cost().0 - before);
        }
        let (spent, n) = mask.cost();
        mask_time += spent;
        masks += n;
    }
    let per_token_us = mask_time.as_secs_f64() * 1e6 / masks.max(1) as f64;
    println!(
        "{}",
        json!({
            "model": model_path.display().to_string(),
            "threads": model.threads(),
            "runs": runs,
            "unconstrained": {"tokens": tokens[0], "tok_s": round(off)},
            "constrained": {"tokens": tokens[1], "tok_s": round(on), "unfinished": unfinished},
            "ratio": (on / off * 1000.0).round() / 1000.0,
            "mask_us_per_token": round(per_token_us),
            "mask_worst_us": round(worst.as_secs_f64() * 1e6),
            "decode_ms_per_token": round(1000.0 / off * 100.0) / 100.0,
        })
    );
    Ok(())
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
