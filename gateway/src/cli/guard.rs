//! `warden guard prompt`, `warden guard parse` and `warden classify`: the
//! guard prompt, the verdict grammar and a local check from the command
//! line (formats are a contract).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::json;
use warden_guard::{
    build_prompt, bundled_model_path, classify_with_timeout, parse_code_list, parse_verdict,
    render_fixture_input, CategorySet, ChatMessage, Checkpoint, GuardBackend, GuardRequest,
    LocalBackend, LocalOptions, RemoteBackend, RemoteConfig, RemoteMode, RulesBackend, RulesConfig,
};
use warden_inference::Model;
use warden_policies::taxonomy::{CategoryCode, GuardVariant};

use super::read_stdin;

/// `warden guard ...`.
#[derive(Debug, Subcommand)]
pub enum GuardCommand {
    /// Print the exact guard prompt for a fixture-shaped JSON input on stdin.
    Prompt(PromptArgs),
    /// Parse a raw guard model output on stdin; print the verdict as JSON.
    Parse(ParseArgs),
}

/// Arguments of `warden guard prompt`.
#[derive(Debug, Args)]
pub struct PromptArgs {
    /// `llama-guard-3-8b` or `llama-guard-3-1b`.
    #[arg(long)]
    variant: GuardVariant,
}

/// Arguments of `warden guard parse`.
#[derive(Debug, Args)]
pub struct ParseArgs {
    /// The category codes the prompt listed, e.g. `S1,S2,S10`.
    #[arg(long)]
    allowed: String,
}

/// Runs a guard command.
pub fn run(cmd: GuardCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GuardCommand::Prompt(args) => {
            let input: serde_json::Value =
                serde_json::from_str(&read_stdin()?).context("stdin is not JSON")?;
            match render_fixture_input(args.variant, &input) {
                Ok(prompt) => {
                    print!("{prompt}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        GuardCommand::Parse(args) => {
            let allowed = parse_code_list(&args.allowed).context("--allowed")?;
            match parse_verdict(&read_stdin()?, &allowed) {
                Ok(verdict) => {
                    println!("{}", serde_json::to_string(&verdict)?);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

/// Arguments of `warden classify`.
#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// The text to judge, as one user turn (or use `--file`).
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    text: Option<String>,
    /// A JSON conversation: an array of OpenAI-style chat messages, or an
    /// object with a `messages` array.
    #[arg(long)]
    file: Option<PathBuf>,
    /// What is judged: `input`, `output`, `tool_call` or `tool_result`
    /// (default: from the last message's role).
    #[arg(long)]
    checkpoint: Option<String>,
    /// Only these categories of the variant's defaults, e.g. `S1,S2,S10`.
    #[arg(long)]
    categories: Option<String>,
    /// Leave these categories out, e.g. `S6,S7`.
    #[arg(long)]
    exclude: Option<String>,
    /// `llama-guard-3-8b` or `llama-guard-3-1b`.
    #[arg(long, default_value = "llama-guard-3-8b")]
    variant: GuardVariant,
    /// Which backend judges: `local` (a model file run in-process), `rules`
    /// (regexes, keywords and built-in detectors) or `remote` (an
    /// OpenAI-compatible server).
    #[arg(long, value_enum, default_value = "local")]
    backend: BackendChoice,
    /// Guard model file for `local` (default: the bundled model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Rules file for `rules`: TOML (JSON when it ends in `.json`) with
    /// `[[regexes]]` (name, pattern, category), `[[keywords]]` (name, words,
    /// category) and `[[detectors]]` (detector, category), the shape of a
    /// policy's rules; default: every built-in detector, reported as S7.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Server base URL for `remote`, e.g. `http://127.0.0.1:11434`.
    #[arg(long, required_if_eq("backend", "remote"))]
    url: Option<String>,
    /// Model name the remote server knows.
    #[arg(long, default_value = "llama-guard3")]
    remote_model: String,
    /// `prompt` sends the rendered guard prompt as one user message;
    /// `conversation` sends the conversation for servers whose template
    /// renders the guard prompt themselves.
    #[arg(long, value_enum, default_value = "prompt")]
    remote_mode: RemoteModeChoice,
    /// Seconds before the check counts as failed.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Print the exact prompt the model would see and exit (no model run).
    #[arg(long)]
    print_prompt: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BackendChoice {
    Local,
    Rules,
    Remote,
}

/// `--remote-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RemoteModeChoice {
    Prompt,
    Conversation,
}

/// Reads a rules file as TOML, or as JSON when it ends in `.json`.
fn read_rules(path: &Path) -> anyhow::Result<RulesConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{} (JSON rules)", path.display()))
    } else {
        toml::from_str(&text).with_context(|| format!("{} (TOML rules)", path.display()))
    }
}

/// The backend `--backend` names, built from its flags.
fn backend_for(args: &ClassifyArgs) -> anyhow::Result<Box<dyn GuardBackend>> {
    Ok(match args.backend {
        BackendChoice::Local => {
            let path = args.model.clone().unwrap_or_else(bundled_model_path);
            let model =
                Model::load(&path).with_context(|| format!("loading {}", path.display()))?;
            Box::new(LocalBackend::new(
                Arc::new(model),
                LocalOptions::new(args.variant),
            )?)
        }
        BackendChoice::Rules => {
            let config = match &args.rules {
                Some(path) => read_rules(path)?,
                None => RulesConfig::all_builtins(CategoryCode::new(7).context("S7")?),
            };
            Box::new(RulesBackend::new(&config).context("--rules")?)
        }
        BackendChoice::Remote => {
            let url = args
                .url
                .clone()
                .context("--url is required with --backend remote")?;
            let mode = match args.remote_mode {
                RemoteModeChoice::Prompt => RemoteMode::Prompt,
                RemoteModeChoice::Conversation => RemoteMode::Conversation {
                    variant: args.variant,
                },
            };
            let mut config = RemoteConfig::new(url, args.remote_model.clone(), mode);
            config.timeout = timeout_of(args)?;
            Box::new(RemoteBackend::new(config).context("--url")?)
        }
    })
}

fn timeout_of(args: &ClassifyArgs) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--timeout must be a positive number of seconds")
}

fn checkpoint_named(name: &str) -> anyhow::Result<Checkpoint> {
    Ok(match name {
        "input" => Checkpoint::Input,
        "output" => Checkpoint::Output,
        "tool_call" => Checkpoint::ToolCall,
        "tool_result" => Checkpoint::ToolResult,
        other => {
            bail!("unknown checkpoint {other:?}: expected input, output, tool_call or tool_result")
        }
    })
}

/// The checkpoint a conversation's last message calls for.
fn checkpoint_of(messages: &[ChatMessage]) -> Checkpoint {
    match messages.last() {
        Some(ChatMessage::Assistant { tool_calls, .. }) if !tool_calls.is_empty() => {
            Checkpoint::ToolCall
        }
        Some(ChatMessage::Assistant { .. }) => Checkpoint::Output,
        Some(ChatMessage::Tool { .. }) => Checkpoint::ToolResult,
        _ => Checkpoint::Input,
    }
}

fn read_messages(args: &ClassifyArgs) -> anyhow::Result<Vec<ChatMessage>> {
    let Some(path) = &args.file else {
        return Ok(vec![ChatMessage::user(
            args.text.clone().unwrap_or_default(),
        )]);
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let messages = match value {
        serde_json::Value::Object(mut map) => map.remove("messages").unwrap_or_default(),
        other => other,
    };
    serde_json::from_value(messages)
        .with_context(|| format!("{}: expected an array of chat messages", path.display()))
}

fn categories_for(args: &ClassifyArgs) -> anyhow::Result<CategorySet> {
    let mut set = CategorySet::standard(args.variant);
    if let Some(only) = &args.categories {
        let only = parse_code_list(only).context("--categories")?;
        if let Some(missing) = only.iter().find(|c| !set.contains(**c)) {
            bail!(
                "--categories: {missing} is not a {} category",
                args.variant.as_str()
            );
        }
        let excluded: Vec<_> = set
            .codes()
            .into_iter()
            .filter(|c| !only.contains(c))
            .collect();
        set = set.excluding(&excluded)?;
    }
    if let Some(exclude) = &args.exclude {
        set = set.excluding(&parse_code_list(exclude).context("--exclude")?)?;
    }
    Ok(set)
}

/// The category's name: its prompt text up to the first line end, without the final dot.
fn category_name(set: &CategorySet, code: warden_policies::taxonomy::CategoryCode) -> String {
    let text = set.text(code).unwrap_or_default();
    let line = text.lines().next().unwrap_or_default();
    line.strip_suffix('.').unwrap_or(line).to_owned()
}

/// Runs `warden classify`.
pub fn classify(args: ClassifyArgs) -> anyhow::Result<ExitCode> {
    let messages = read_messages(&args)?;
    let checkpoint = match &args.checkpoint {
        Some(name) => checkpoint_named(name)?,
        None => checkpoint_of(&messages),
    };
    let categories = categories_for(&args)?;
    let request = match GuardRequest::from_chat(checkpoint, &messages, categories.clone()) {
        Ok(request) => request,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if args.print_prompt {
        print!(
            "{}",
            build_prompt(args.variant, &categories, request.conversation())
        );
        return Ok(ExitCode::SUCCESS);
    }
    let timeout = timeout_of(&args)?;
    let backend = backend_for(&args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(classify_with_timeout(backend.as_ref(), &request, timeout));
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let named: Vec<(String, String)> = outcome
        .verdict
        .categories()
        .iter()
        .map(|c| (c.to_string(), category_name(&categories, *c)))
        .collect();
    let latency_ms = outcome.latency.as_secs_f64() * 1000.0;
    let word = if outcome.verdict.is_safe() {
        "safe"
    } else {
        "unsafe"
    };
    if args.json {
        let categories: Vec<_> = named
            .iter()
            .map(|(code, name)| json!({"code": code, "name": name}))
            .collect();
        let out = json!({
            "verdict": word,
            "categories": categories,
            "unsafe_score": outcome.unsafe_score,
            "latency_ms": latency_ms,
            "checkpoint": checkpoint.as_str(),
            "backend": outcome.backend.as_str(),
            "model": outcome.model,
            "findings": outcome.findings,
        });
        println!("{out}");
    } else {
        println!("verdict: {word}");
        for (code, name) in &named {
            println!("category: {code} {name}");
        }
        for f in &outcome.findings {
            println!(
                "finding: {} {} at bytes {}..{}",
                f.category,
                serde_json::to_string(&f.detector)?,
                f.span.start,
                f.span.end
            );
        }
        match outcome.unsafe_score {
            Some(score) => println!("score: {score:.4}"),
            None => println!("score: none"),
        }
        println!("latency: {latency_ms:.1} ms");
    }
    Ok(ExitCode::SUCCESS)
}
