//! `warden tokenize`, `template render`, `generate`, `logits`: what a model sees.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use warden_inference::template::{BuiltinTemplate, ChatTemplate, RenderInput};
use warden_inference::{Constraint, GenerateOptions, Logits, Model, SamplingParams};

use super::read_stdin;

/// Arguments of `warden tokenize`.
#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// Model file (GGUF) or safetensors directory.
    #[arg(long)]
    model: PathBuf,
    /// Match special-token text (template mode) instead of treating it as text.
    #[arg(long)]
    parse_special: bool,
}

/// `warden template ...`.
#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Render a fixture-shaped JSON input from stdin; prints the exact prompt.
    Render(RenderArgs),
}

/// Arguments of `warden template render`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct RenderArgs {
    /// Use this model's own chat template.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Use a built-in template: `llama3.1` or `chatml`.
    #[arg(long)]
    builtin: Option<BuiltinTemplate>,
}

/// Arguments of `warden generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Model file (GGUF) or safetensors directory.
    #[arg(long)]
    model: PathBuf,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Keep only the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Random seed: the same seed gives the same text.
    #[arg(long)]
    seed: Option<u64>,
    /// Stdin is an already rendered prompt (special tokens parsed, nothing added).
    #[arg(long)]
    raw: bool,
    /// Constrain the output to JSON valid against the JSON Schema in this file.
    #[arg(long)]
    json_schema: Option<PathBuf>,
}

/// Arguments of `warden logits`.
#[derive(Debug, Args)]
pub struct LogitsArgs {
    /// Model file (GGUF) or safetensors directory.
    #[arg(long)]
    model: PathBuf,
    /// How many of the best tokens to print per position.
    #[arg(long, default_value_t = 5)]
    top: usize,
}

fn load(path: &Path) -> anyhow::Result<Model> {
    Ok(Model::load(path)?)
}

pub fn tokenize(args: TokenizeArgs) -> anyhow::Result<ExitCode> {
    let model = load(&args.model)?;
    let text = read_stdin()?;
    let ids = model.tokenizer().encode(&text, args.parse_special)?;
    println!("{}", serde_json::to_string(&ids)?);
    Ok(ExitCode::SUCCESS)
}

pub fn template(cmd: TemplateCommand) -> anyhow::Result<ExitCode> {
    let TemplateCommand::Render(args) = cmd;
    let input: RenderInput =
        serde_json::from_str(&read_stdin()?).context("stdin is not a render input object")?;
    let rendered = match (args.model, args.builtin) {
        (Some(path), _) => {
            let model = load(&path)?;
            let template: &ChatTemplate = model
                .chat_template()
                .with_context(|| format!("{} has no chat template", path.display()))?;
            template.render(&input)
        }
        (None, Some(which)) => ChatTemplate::builtin(which).render(&input),
        (None, None) => bail!("give --model or --builtin"),
    };
    match rendered {
        Ok(prompt) => {
            print!("{prompt}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("template error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

pub fn generate(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let model = load(&args.model)?;
    let stdin = read_stdin()?;
    let prompt = if args.raw {
        model.tokenizer().encode(&stdin, true)?
    } else {
        model.encode_chat(&parse_messages(&stdin)?)?
    };
    let constraint = match &args.json_schema {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let schema = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            Some(Constraint::JsonSchema(schema))
        }
        None => None,
    };
    let options = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_p: args.top_p,
            top_k: args.top_k,
            seed: args.seed,
        },
        stop: Vec::new(),
        constraint,
    };
    let mut out = std::io::stdout().lock();
    model.generate(&prompt, &options, |d| {
        // A closed stdout (e.g. piped into `head`) stops the work.
        match out.write_all(d.text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    })?;
    let _ = writeln!(out);
    Ok(ExitCode::SUCCESS)
}

/// Accepts `{"messages": [...], ...}` or a bare array of messages.
fn parse_messages(text: &str) -> anyhow::Result<RenderInput> {
    let value: serde_json::Value = serde_json::from_str(text).context("stdin is not JSON")?;
    let value = if value.is_array() {
        serde_json::json!({"messages": value, "add_generation_prompt": true})
    } else {
        let mut v = value;
        if v.get("add_generation_prompt").is_none() {
            v["add_generation_prompt"] = true.into();
        }
        v
    };
    serde_json::from_value(value)
        .context("stdin must be {\"messages\": [...]} or an array of messages")
}

pub fn logits(args: LogitsArgs) -> anyhow::Result<ExitCode> {
    let model = load(&args.model)?;
    let ids: Vec<u32> =
        serde_json::from_str(&read_stdin()?).context("stdin must be a JSON array of token ids")?;
    let mut cache = model.new_cache();
    let rows = warden_inference::logits_rows(&model.forward(&ids, &mut cache, Logits::All)?)?;
    let out: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            order.truncate(args.top);
            serde_json::json!({
                "top_ids": order,
                "top_logits": order.iter().map(|&i| row[i]).collect::<Vec<_>>(),
            })
        })
        .collect();
    println!("{}", serde_json::to_string(&out)?);
    Ok(ExitCode::SUCCESS)
}
