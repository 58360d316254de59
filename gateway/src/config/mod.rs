//! `warden.toml`: the gateway's configuration, `WARDEN_*` overrides and
//! validation at start. Every error names the key it is about.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use warden_agents::tools::{ToolCallFormat, ToolSpec};
use warden_inference::template::BuiltinTemplate;
use warden_policies::taxonomy::GuardVariant;

mod agents;

pub use agents::{agent_tools, AgentConfig, AgentToolChoice};

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML does not parse or does not fit the format (the message names the key).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with the key, line and column.
        message: String,
    },
    /// An environment override does not fit.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A value parses but cannot be used.
    #[error("{key}: {message}")]
    Invalid {
        /// The key, e.g. `models[1].base_url`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP server settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// Request limits.
    #[serde(default)]
    pub limits: Limits,
    /// API keys.
    #[serde(default)]
    pub auth: AuthConfig,
    /// PostgreSQL.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// The audit trail.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The policy directory.
    pub policies: PolicyConfig,
    /// Generator models callers can name.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// Guard backends policies can name.
    #[serde(default)]
    pub guards: Vec<GuardConfig>,
    /// Tools agents can call.
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
    /// Agent profiles callers name in `model`.
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    /// Traces (OpenTelemetry over OTLP).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// HTTP worker threads (0: one per core).
    pub workers: usize,
    /// Log format: `json` (default) or `text`.
    pub log_format: LogFormat,
    /// Log filter (`info`, `warn,warden_gateway=debug`, ...); `RUST_LOG` overrides it.
    pub log_level: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            workers: 0,
            log_format: LogFormat::Json,
            log_level: "info".into(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// `[telemetry]`: OpenTelemetry traces, off unless an endpoint is set
/// (here or by `OTEL_EXPORTER_OTLP_ENDPOINT`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector's base URL, e.g. `http://127.0.0.1:4318` (HTTP) or `:4317` (gRPC).
    pub otlp_endpoint: Option<String>,
    /// `http/protobuf` (default) or `grpc`; `OTEL_EXPORTER_OTLP_PROTOCOL` overrides it.
    pub protocol: OtlpProtocol,
    /// `service.name` of the spans; `OTEL_SERVICE_NAME` overrides it.
    pub service_name: String,
    /// Fraction of new traces kept (a caller's sampled `traceparent` is always followed).
    pub sample_ratio: f64,
    /// Put message contents on spans (off: contents never leave through traces).
    pub record_content: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            protocol: OtlpProtocol::HttpProtobuf,
            service_name: "warden".into(),
            sample_ratio: 1.0,
            record_content: false,
        }
    }
}

/// OTLP transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    /// Protobuf over HTTP (port 4318 by convention).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// gRPC (port 4317 by convention).
    #[serde(rename = "grpc")]
    Grpc,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most messages in one request (400 beyond).
    pub max_messages: usize,
    /// Most characters in one message's content (400 beyond).
    pub max_content_chars: usize,
    /// Largest `max_tokens` a caller may ask for; also the default.
    pub max_tokens: u32,
    /// Local generations running at once per model.
    pub local_concurrency: usize,
    /// Local generations waiting per model before 429.
    pub local_queue: usize,
    /// Seconds a client has to send a request's headers once connected
    /// (408 and the connection closed beyond).
    pub header_timeout_seconds: f64,
    /// Seconds a client has to send a request's whole body, counted from
    /// the end of its headers (408 in OpenAI's error shape and
    /// the connection closed beyond): a slow-body client cannot hold a
    /// worker's connection slot for longer.
    pub body_timeout_seconds: f64,
}

impl Limits {
    /// `header_timeout_seconds` as a duration.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.header_timeout_seconds)
    }

    /// `body_timeout_seconds` as a duration.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.body_timeout_seconds)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_messages: 256,
            max_content_chars: 100_000,
            max_tokens: 4096,
            local_concurrency: 1,
            local_queue: 8,
            header_timeout_seconds: 5.0,
            body_timeout_seconds: 30.0,
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The admin key for admin routes (better given as `WARDEN_ADMIN_KEY`).
    pub admin_key: Option<String>,
    /// Keys known without a database (e.g. for a database-less test setup):
    /// only their SHA-256 is written here.
    pub static_keys: Vec<StaticKey>,
    /// Seconds a key looked up in PostgreSQL is remembered (0: every request asks).
    pub cache_seconds: u64,
}

/// A key configured by its hash.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticKey {
    /// The key's id (audited, used by `applies_to: {key: ...}` policies).
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// Lower-case hex SHA-256 of the secret.
    pub sha256: String,
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://...`; `DATABASE_URL` overrides it.
    pub url: Option<String>,
    /// Pool size.
    pub max_connections: u32,
    /// Apply migrations at start (as `warden migrate` does).
    pub migrate_on_start: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 8,
            migrate_on_start: true,
        }
    }
}

/// Most audit batches stored at once (each holds a database connection).
const MAX_AUDIT_WRITERS: usize = 16;

/// `[audit]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Record every request (needs the database).
    pub enabled: bool,
    /// Refuse new turns (503) while the audit cannot make progress.
    pub required: bool,
    /// Directory of the spool used while PostgreSQL is down.
    pub spool_dir: PathBuf,
    /// This gateway instance's id in audit streams.
    pub instance_id: String,
    /// An answer leaves only once its turn's decision is stored (PostgreSQL
    /// or the fsync'd spool), so a crash loses no acknowledged turn; `false`
    /// answers at once and stores in the background (the last batch, up to
    /// 50 ms of turns, is then at risk).
    pub durable_answers: bool,
    /// Audit batches stored at once, each on its own PostgreSQL connection
    /// (beyond `database.max_connections`). With durable answers a turn
    /// waits for its batch's commit, so more batches in flight keep the
    /// cores busy while commits are under way; on the 2-core benchmark
    /// machine 6 was slower than 3 (smaller batches), see the README.
    pub writers: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            required: false,
            spool_dir: PathBuf::from("state/audit-spool"),
            instance_id: "gateway-1".into(),
            durable_answers: true,
            writers: 3,
        }
    }
}

/// `[policies]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The policy directory.
    pub dir: PathBuf,
    /// Reload on file changes (SIGHUP always reloads).
    #[serde(default = "yes")]
    pub watch: bool,
    /// Tool names policies may list in `allowed_tools`.
    #[serde(default)]
    pub tools: Vec<String>,
}

fn yes() -> bool {
    true
}

/// `[[models]]`: a generator callers name in `model`.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "RawModel")]
pub struct ModelConfig {
    /// The name callers use.
    pub name: String,
    /// Where it runs.
    pub source: ModelSource,
}

/// The TOML shape of `[[models]]` (serde cannot deny unknown fields
/// through `flatten`, so the name sits in each variant).
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum RawModel {
    Local {
        name: String,
        path: PathBuf,
        #[serde(default)]
        template: TemplateChoice,
        #[serde(default)]
        tool_format: Option<ToolCallFormat>,
    },
    Upstream {
        name: String,
        base_url: String,
        #[serde(default)]
        api_key_env: Option<String>,
        #[serde(default)]
        upstream_model: Option<String>,
        #[serde(default = "default_upstream_timeout")]
        timeout_seconds: f64,
    },
}

impl From<RawModel> for ModelConfig {
    fn from(raw: RawModel) -> Self {
        match raw {
            RawModel::Local {
                name,
                path,
                template,
                tool_format,
            } => Self {
                name,
                source: ModelSource::Local {
                    path,
                    template,
                    tool_format: tool_format.unwrap_or(match template {
                        TemplateChoice::Builtin(BuiltinTemplate::Llama31) => {
                            ToolCallFormat::Llama31
                        }
                        _ => ToolCallFormat::SmolLm2,
                    }),
                },
            },
            RawModel::Upstream {
                name,
                base_url,
                api_key_env,
                upstream_model,
                timeout_seconds,
            } => Self {
                name,
                source: ModelSource::Upstream {
                    base_url,
                    api_key_env,
                    upstream_model,
                    timeout_seconds,
                },
            },
        }
    }
}

/// Where a generator runs.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A model file run in-process.
    Local {
        /// GGUF file or safetensors directory.
        path: PathBuf,
        /// Chat template: `model` (its own, default), `llama3.1` or `chatml`.
        template: TemplateChoice,
        /// How it writes tool calls (default: `llama31` with the Llama 3.1
        /// template, else `smollm2`).
        tool_format: ToolCallFormat,
    },
    /// An OpenAI-compatible server.
    Upstream {
        /// Base URL, e.g. `https://api.openai.com/v1`.
        base_url: String,
        /// Environment variable holding the upstream's API key.
        api_key_env: Option<String>,
        /// Model name sent upstream (default: `name`).
        upstream_model: Option<String>,
        /// Seconds until the upstream must have answered (the whole
        /// response; for streams, the time to the first byte).
        timeout_seconds: f64,
    },
}

fn default_upstream_timeout() -> f64 {
    60.0
}

/// Which chat template a local model uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TemplateChoice {
    /// The model's own template.
    #[default]
    Model,
    /// A built-in one.
    Builtin(BuiltinTemplate),
}

impl<'de> Deserialize<'de> for TemplateChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "model" {
            return Ok(Self::Model);
        }
        s.parse().map(Self::Builtin).map_err(|_| {
            serde::de::Error::custom(format!(
                "unknown template {s:?}: expected \"model\", \"llama3.1\" or \"chatml\""
            ))
        })
    }
}

/// `[[guards]]`: a guard backend policies name in `backends`.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "RawGuard")]
pub struct GuardConfig {
    /// The name policies use.
    pub name: String,
    /// Which Llama Guard 3 prompt the model expects.
    pub variant: GuardVariant,
    /// Seconds one classification may take before it counts as a failure.
    pub timeout_seconds: f64,
    /// Where it runs.
    pub source: GuardSource,
}

/// The TOML shape of `[[guards]]`.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum RawGuard {
    Local {
        name: String,
        #[serde(default = "default_variant")]
        variant: GuardVariant,
        #[serde(default = "default_guard_timeout")]
        timeout_seconds: f64,
        path: PathBuf,
    },
    Remote {
        name: String,
        #[serde(default = "default_variant")]
        variant: GuardVariant,
        #[serde(default = "default_guard_timeout")]
        timeout_seconds: f64,
        base_url: String,
        model: String,
        #[serde(default)]
        mode: RemoteModeChoice,
        #[serde(default)]
        api_key_env: Option<String>,
    },
}

impl From<RawGuard> for GuardConfig {
    fn from(raw: RawGuard) -> Self {
        match raw {
            RawGuard::Local {
                name,
                variant,
                timeout_seconds,
                path,
            } => Self {
                name,
                variant,
                timeout_seconds,
                source: GuardSource::Local { path },
            },
            RawGuard::Remote {
                name,
                variant,
                timeout_seconds,
                base_url,
                model,
                mode,
                api_key_env,
            } => Self {
                name,
                variant,
                timeout_seconds,
                source: GuardSource::Remote {
                    base_url,
                    model,
                    mode,
                    api_key_env,
                },
            },
        }
    }
}

fn default_variant() -> GuardVariant {
    GuardVariant::LlamaGuard3_8b
}

fn default_guard_timeout() -> f64 {
    10.0
}

/// Where a guard model runs.
#[derive(Debug, Clone)]
pub enum GuardSource {
    /// A Llama Guard model file run in-process.
    Local {
        /// GGUF file or safetensors directory.
        path: PathBuf,
    },
    /// A Llama Guard model behind an OpenAI-compatible server.
    Remote {
        /// Base URL.
        base_url: String,
        /// Model name the server knows.
        model: String,
        /// `prompt` (Warden renders the prompt) or `conversation` (the server's template does).
        mode: RemoteModeChoice,
        /// Environment variable holding the server's API key.
        api_key_env: Option<String>,
    },
}

/// How a remote guard gets its prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoteModeChoice {
    /// Send the rendered task text.
    #[default]
    Prompt,
    /// Send the conversation.
    Conversation,
}

/// Environment variables that are not configuration overrides even though
/// they start with `WARDEN_`: test and tool settings.
const NOT_OVERRIDES: &[&str] = &["WARDEN_TEST_MODEL", "WARDEN_FIXTURES", "WARDEN_CONFIG"];

/// Short names for the most common overrides.
const ALIASES: &[(&str, &str)] = &[
    ("WARDEN_LISTEN", "server.listen"),
    ("WARDEN_ADMIN_KEY", "auth.admin_key"),
    ("WARDEN_POLICY_DIR", "policies.dir"),
    ("DATABASE_URL", "database.url"),
];

impl Config {
    /// Reads `path`, applies overrides from `env` and validates.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(path, &text, env)?;
        // Relative paths in the file are relative to the file.
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text with overrides, without validating.
    pub fn parse(
        path: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut env: Vec<(String, String)> = env.into_iter().collect();
        env.sort();
        for (var, value) in env {
            let Some(key) = override_key(&var)? else {
                continue;
            };
            set_path(&mut table, &key, parse_env_value(&value)).map_err(|message| {
                ConfigError::Env {
                    var: var.clone(),
                    message,
                }
            })?;
        }
        // The path tracker names the key (`limits.max_tokens: ...`), which
        // toml cannot once the table no longer has source spans.
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            ConfigError::Parse {
                path: path.to_owned(),
                message: format!(
                    "{}: {} (after environment overrides)",
                    e.path(),
                    e.inner().message()
                ),
            }
        })
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if let Some(rest) = p.to_str().and_then(|s| s.strip_prefix("~/")) {
                if let Some(home) = std::env::var_os("HOME") {
                    *p = PathBuf::from(home).join(rest);
                    return;
                }
            }
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.policies.dir);
        fix(&mut self.audit.spool_dir);
        for m in &mut self.models {
            if let ModelSource::Local { path, .. } = &mut m.source {
                fix(path);
            }
        }
        for g in &mut self.guards {
            if let GuardSource::Local { path } = &mut g.source {
                fix(path);
            }
        }
    }

    /// Checks what the types cannot; every error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if !(0.0..=1.0).contains(&self.telemetry.sample_ratio) {
            return Err(invalid("telemetry.sample_ratio", "must be between 0 and 1"));
        }
        if let Some(e) = &self.telemetry.otlp_endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(invalid(
                    "telemetry.otlp_endpoint",
                    format!("{e:?} must be an http:// or https:// URL"),
                ));
            }
        }
        let l = &self.limits;
        for (key, v) in [
            ("limits.max_body_bytes", l.max_body_bytes),
            ("limits.max_messages", l.max_messages),
            ("limits.max_content_chars", l.max_content_chars),
            ("limits.max_tokens", l.max_tokens as usize),
            ("limits.local_concurrency", l.local_concurrency),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        for (key, v) in [
            ("limits.header_timeout_seconds", l.header_timeout_seconds),
            ("limits.body_timeout_seconds", l.body_timeout_seconds),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
                return Err(invalid(
                    key,
                    "must be a number of seconds above 0 (at most 86400)",
                ));
            }
        }
        if let Some(k) = &self.auth.admin_key {
            if k.len() < 16 {
                return Err(invalid(
                    "auth.admin_key",
                    "must be at least 16 characters long",
                ));
            }
        }
        for (i, k) in self.auth.static_keys.iter().enumerate() {
            let ok = k.sha256.len() == 64
                && k.sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !ok {
                return Err(invalid(
                    format!("auth.static_keys[{i}].sha256"),
                    "must be 64 lower-case hex digits (the SHA-256 of the key)",
                ));
            }
            if k.id.trim().is_empty() || k.tenant.trim().is_empty() {
                return Err(invalid(
                    format!("auth.static_keys[{i}]"),
                    "id and tenant must not be empty",
                ));
            }
        }
        if let Some(url) = &self.database.url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(invalid(
                    "database.url",
                    "must start with postgres:// or postgresql://",
                ));
            }
        }
        if self.audit.enabled && self.database.url.is_none() {
            return Err(invalid(
                "audit.enabled",
                "the audit needs database.url (or DATABASE_URL); set audit.enabled = false to run without it",
            ));
        }
        if !(1..=MAX_AUDIT_WRITERS).contains(&self.audit.writers) {
            return Err(invalid(
                "audit.writers",
                format!("must be between 1 and {MAX_AUDIT_WRITERS}"),
            ));
        }
        if self.audit.instance_id.trim().is_empty() {
            return Err(invalid("audit.instance_id", "must not be empty"));
        }
        if !self.policies.dir.is_dir() {
            return Err(invalid(
                "policies.dir",
                format!("{} is not a directory", self.policies.dir.display()),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, m) in self.models.iter().enumerate() {
            let key = format!("models[{i}]");
            check_name(&format!("{key}.name"), &m.name)?;
            if !names.insert(m.name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("model {:?} is configured twice", m.name),
                ));
            }
            match &m.source {
                ModelSource::Local { path, .. } => {
                    if !path.exists() {
                        return Err(invalid(
                            format!("{key}.path"),
                            format!("{} does not exist", path.display()),
                        ));
                    }
                }
                ModelSource::Upstream {
                    base_url,
                    api_key_env,
                    timeout_seconds,
                    ..
                } => {
                    check_url(&format!("{key}.base_url"), base_url)?;
                    check_timeout(&format!("{key}.timeout_seconds"), *timeout_seconds)?;
                    if let Some(var) = api_key_env {
                        if std::env::var_os(var).is_none() {
                            return Err(invalid(
                                format!("{key}.api_key_env"),
                                format!("environment variable {var} is not set"),
                            ));
                        }
                    }
                }
            }
        }
        let mut guard_names = BTreeSet::new();
        for (i, g) in self.guards.iter().enumerate() {
            let key = format!("guards[{i}]");
            check_name(&format!("{key}.name"), &g.name)?;
            if g.name == "rules" {
                return Err(invalid(
                    format!("{key}.name"),
                    "\"rules\" is the built-in rules backend; choose another name",
                ));
            }
            if !guard_names.insert(g.name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("guard {:?} is configured twice", g.name),
                ));
            }
            check_timeout(&format!("{key}.timeout_seconds"), g.timeout_seconds)?;
            match &g.source {
                GuardSource::Local { path } => {
                    if !path.exists() {
                        return Err(invalid(
                            format!("{key}.path"),
                            format!("{} does not exist", path.display()),
                        ));
                    }
                }
                GuardSource::Remote {
                    base_url,
                    api_key_env,
                    ..
                } => {
                    check_url(&format!("{key}.base_url"), base_url)?;
                    if let Some(var) = api_key_env {
                        if std::env::var_os(var).is_none() {
                            return Err(invalid(
                                format!("{key}.api_key_env"),
                                format!("environment variable {var} is not set"),
                            ));
                        }
                    }
                }
            }
        }
        agents::validate(self)
    }

    /// The listen address, parsed.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|_| {
            invalid(
                "server.listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:8080",
                    self.server.listen
                ),
            )
        })
    }
}

impl GuardConfig {
    /// The classification deadline.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_seconds)
    }
}

pub(crate) fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{name:?} must be 1-100 characters of letters, digits and - _ . : /"),
        ))
    }
}

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{url:?} must start with http:// or https://"),
        ))
    }
}

pub(crate) fn check_timeout(key: &str, seconds: f64) -> Result<(), ConfigError> {
    if seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0 {
        Ok(())
    } else {
        Err(invalid(key, "must be between 0 and 3600 seconds"))
    }
}

/// The config key an environment variable overrides, if it is an override:
/// an alias, or `WARDEN_<SECTION>__<KEY>` (`__` between levels; array
/// entries by index, e.g. `WARDEN_MODELS__0__PATH`).
fn override_key(var: &str) -> Result<Option<Vec<String>>, ConfigError> {
    if let Some((_, key)) = ALIASES.iter().find(|(v, _)| *v == var) {
        return Ok(Some(key.split('.').map(str::to_owned).collect()));
    }
    let Some(rest) = var.strip_prefix("WARDEN_") else {
        return Ok(None);
    };
    if NOT_OVERRIDES.contains(&var) || !rest.contains("__") {
        return Ok(None);
    }
    let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
    if parts.iter().any(String::is_empty) {
        return Err(ConfigError::Env {
            var: var.to_owned(),
            message: "empty key segment".into(),
        });
    }
    Ok(Some(parts))
}

/// Reads an override as a TOML value (number, boolean, array), else as a string.
fn parse_env_value(value: &str) -> toml::Value {
    let probe = format!("v = {value}");
    match toml::from_str::<toml::Table>(&probe) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| value.into()),
        Err(_) => toml::Value::String(value.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (head, rest) = path.split_first().ok_or("empty key")?;
    if rest.is_empty() {
        table.insert(head.clone(), value);
        return Ok(());
    }
    let entry = table
        .entry(head.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    set_in_value(entry, rest, value, head)
}

fn set_in_value(
    node: &mut toml::Value,
    path: &[String],
    value: toml::Value,
    at: &str,
) -> Result<(), String> {
    match node {
        toml::Value::Table(t) => set_path(t, path, value),
        toml::Value::Array(items) => {
            let (index, rest) = path.split_first().ok_or("empty key")?;
            let i: usize = index
                .parse()
                .map_err(|_| format!("{at} is a list; expected an index, got {index:?}"))?;
            let len = items.len();
            let item = items
                .get_mut(i)
                .ok_or_else(|| format!("{at} has {len} entries; index {i} does not exist"))?;
            if rest.is_empty() {
                *item = value;
                Ok(())
            } else {
                set_in_value(item, rest, value, &format!("{at}[{i}]"))
            }
        }
        _ => Err(format!("{at} is not a table")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn base(policies: &Path) -> String {
        format!(
            "[policies]\ndir = {:?}\n[audit]\nenabled = false\n",
            policies.display().to_string()
        )
    }

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let d = dir();
        let file = d.path().join("warden.toml");
        std::fs::write(&file, text).unwrap();
        Config::load(
            &file,
            env.iter().map(|(a, b)| (a.to_string(), b.to_string())),
        )
    }

    #[test]
    fn unknown_keys_are_named() {
        let p = dir();
        let err = load(&format!("{}[limits]\nmax_body = 3\n", base(p.path())), &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("max_body"), "{msg}");
    }

    #[test]
    fn env_overrides_apply_and_are_checked() {
        let p = dir();
        let c = load(
            &base(p.path()),
            &[
                ("WARDEN_LIMITS__MAX_TOKENS", "12"),
                ("WARDEN_LISTEN", "127.0.0.1:9999"),
                ("WARDEN_TEST_MODEL", "/nowhere"),
            ],
        )
        .unwrap();
        assert_eq!(c.limits.max_tokens, 12);
        assert_eq!(c.server.listen, "127.0.0.1:9999");
        let err = load(&base(p.path()), &[("WARDEN_LIMITS__NOPE", "1")]).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err = load(&base(p.path()), &[("WARDEN_LISTEN", "here")]).unwrap_err();
        assert!(err.to_string().starts_with("server.listen"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let p = dir();
        let text = format!(
            "{}[[models]]\nname = \"up\"\nkind = \"upstream\"\nbase_url = \"ftp://x\"\n",
            base(p.path())
        );
        let err = load(&text, &[]).unwrap_err();
        assert!(err.to_string().starts_with("models[0].base_url"), "{err}");
        let text = format!(
            "{}[[guards]]\nname = \"rules\"\nkind = \"remote\"\nbase_url = \"http://x\"\nmodel = \"m\"\n",
            base(p.path())
        );
        let err = load(&text, &[]).unwrap_err();
        assert!(err.to_string().starts_with("guards[0].name"), "{err}");
        let err = load(
            &format!("[policies]\ndir = {:?}\n", p.path().display().to_string()),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("audit.enabled"), "{err}");
        for writers in ["0", "17"] {
            let err = load(&base(p.path()), &[("WARDEN_AUDIT__WRITERS", writers)]).unwrap_err();
            assert!(err.to_string().starts_with("audit.writers"), "{err}");
        }
        let c = load(&base(p.path()), &[("WARDEN_AUDIT__WRITERS", "6")]).unwrap();
        assert_eq!(c.audit.writers, 6);
    }

    #[test]
    fn model_kinds_parse() {
        let p = dir();
        let text = format!(
            "{}[[models]]\nname = \"up\"\nkind = \"upstream\"\nbase_url = \"http://127.0.0.1:1\"\ntimeout_seconds = 2\n\
             [[guards]]\nname = \"lg\"\nkind = \"remote\"\nbase_url = \"http://x\"\nmodel = \"m\"\nmode = \"conversation\"\nvariant = \"llama-guard-3-1b\"\n",
            base(p.path())
        );
        let c = load(&text, &[]).unwrap();
        assert!(
            matches!(c.models[0].source, ModelSource::Upstream { timeout_seconds, .. } if timeout_seconds == 2.0)
        );
        assert!(matches!(
            c.guards[0].source,
            GuardSource::Remote {
                mode: RemoteModeChoice::Conversation,
                ..
            }
        ));
        let bad = format!(
            "{}[[models]]\nname = \"up\"\nkind = \"upstream\"\nbase_url = \"http://x\"\ntypo = 1\n",
            base(p.path())
        );
        assert!(load(&bad, &[]).unwrap_err().to_string().contains("typo"));
    }
}
