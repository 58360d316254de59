//! The state every handler shares, and how it is built from the configuration.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use warden_audit::{
    AuditEvent, AuditHandle, AuditWriter, InstanceId, PolicyRef, PolicyText, WriterConfig,
};
use warden_guard::{LocalBackend, LocalOptions, RemoteBackend, RemoteConfig, RemoteMode};
use warden_inference::Model;
use warden_policies::{EffectivePolicy, KnownNames, PolicySet, PolicyStore, PolicyWatcher};

use crate::auth::Auth;
use crate::config::{
    agent_tools, AgentToolChoice, Config, GuardSource, ModelSource, RemoteModeChoice,
    TemplateChoice,
};
use crate::guarding::{Guards, NamedGuard};
use crate::metrics::{Gauges, Metrics};
use crate::policy_cache::PolicyCache;
use crate::secrets::SecretMask;
use warden_agents::agent::AgentProfile;
use warden_agents::tools::ToolCallFormat;
use warden_agents::{Generator, LocalGenerator, UpstreamGenerator};

/// Longest a new turn waits for a backlogged audit writer before a 503.
pub const ADMISSION_WAIT: Duration = Duration::from_secs(2);

/// Everything handlers share.
pub struct AppState {
    /// The configuration in force.
    pub config: Config,
    /// Generators by the name callers use.
    pub models: BTreeMap<String, Arc<Generator>>,
    /// How each local model writes tool calls.
    pub tool_formats: BTreeMap<String, ToolCallFormat>,
    /// Agent profiles by the name callers use.
    pub agents: BTreeMap<String, Arc<AgentProfile>>,
    /// Guard backends.
    pub guards: Guards,
    /// Policies, hot-reloaded.
    pub policies: Arc<PolicyStore>,
    /// Effective policies merged per set version and scope.
    pub policy_cache: PolicyCache,
    /// Key checks.
    pub auth: Auth,
    /// The audit writer, when the audit runs.
    pub audit: Option<AuditHandle>,
    /// PostgreSQL, when configured.
    pub db: Option<PgPool>,
    /// Counters.
    pub metrics: Metrics,
    /// Masks secrets in audited text.
    pub secrets: SecretMask,
    /// Unix seconds at start.
    pub started: i64,
    watcher: Mutex<Option<PolicyWatcher>>,
    /// Effective policy versions whose text this process handed to the audit.
    registered_policies: Mutex<HashSet<String>>,
}

impl AppState {
    /// Connects, migrates, loads models and policies: everything `serve` needs.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = match &config.database.url {
            Some(url) => {
                let options: PgConnectOptions = url.parse().context("database.url")?;
                let port = options.get_port();
                // Lazy: the gateway starts (and spools audit) while PostgreSQL is down.
                let pool = PgPoolOptions::new()
                    .max_connections(config.database.max_connections)
                    .acquire_timeout(Duration::from_secs(5))
                    .after_connect(move |_, _| {
                        Box::pin(async move {
                            crate::pg_nodelay::set_on_connections_to(port);
                            Ok(())
                        })
                    })
                    .connect_lazy_with(options);
                if config.database.migrate_on_start {
                    warden_audit::migrate(&pool)
                        .await
                        .context("applying migrations at start (database.migrate_on_start)")?;
                }
                Some(pool)
            }
            None => None,
        };
        let audit = match (&db, config.audit.enabled) {
            (Some(pool), true) => {
                let mut wc = WriterConfig::new(
                    InstanceId::new(config.audit.instance_id.clone())
                        .context("audit.instance_id")?,
                    config.audit.spool_dir.clone(),
                );
                wc.required = config.audit.required;
                wc.max_in_flight = config.audit.writers;
                std::fs::create_dir_all(&config.audit.spool_dir).with_context(|| {
                    format!("audit.spool_dir {}", config.audit.spool_dir.display())
                })?;
                let spawned =
                    AuditWriter::spawn(pool.clone(), wc).context("starting the audit writer")?;
                Some(spawned.handle)
            }
            _ => None,
        };

        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        let mut models = BTreeMap::new();
        let mut tool_formats = BTreeMap::new();
        for (i, m) in config.models.iter().enumerate() {
            let generator = match &m.source {
                ModelSource::Local {
                    path,
                    template,
                    tool_format,
                } => {
                    tool_formats.insert(m.name.clone(), *tool_format);
                    let path = path.clone();
                    let template = *template;
                    let mut model = tokio::task::spawn_blocking(move || Model::load(&path))
                        .await?
                        .with_context(|| format!("models[{i}].path"))?;
                    if let TemplateChoice::Builtin(which) = template {
                        model.set_builtin_template(which);
                    }
                    Generator::Local(LocalGenerator::new(
                        m.name.clone(),
                        model,
                        config.limits.local_concurrency,
                        config.limits.local_queue,
                    ))
                }
                ModelSource::Upstream {
                    base_url,
                    api_key_env,
                    upstream_model,
                    timeout_seconds,
                } => {
                    let key = api_key_env.as_ref().and_then(|v| std::env::var(v).ok());
                    Generator::Upstream(UpstreamGenerator::new(
                        http.clone(),
                        base_url,
                        key,
                        upstream_model.clone().unwrap_or_else(|| m.name.clone()),
                        Duration::from_secs_f64(*timeout_seconds),
                    ))
                }
            };
            models.insert(m.name.clone(), Arc::new(generator));
        }

        let mut named = BTreeMap::new();
        for (i, g) in config.guards.iter().enumerate() {
            let (backend, local): (Arc<dyn warden_guard::GuardBackend>, _) = match &g.source {
                GuardSource::Local { path } => {
                    let path = path.clone();
                    let model = tokio::task::spawn_blocking(move || Model::load(&path))
                        .await?
                        .with_context(|| format!("guards[{i}].path"))?;
                    let options = LocalOptions {
                        name: Some(g.name.clone()),
                        ..LocalOptions::new(g.variant)
                    };
                    let local = LocalBackend::new(Arc::new(model), options)
                        .with_context(|| format!("guards[{i}]"))?;
                    (Arc::new(local.clone()), Some(local))
                }
                GuardSource::Remote {
                    base_url,
                    model,
                    mode,
                    api_key_env,
                } => {
                    let mut rc = RemoteConfig::new(
                        base_url.clone(),
                        model.clone(),
                        match mode {
                            RemoteModeChoice::Prompt => RemoteMode::Prompt,
                            RemoteModeChoice::Conversation => {
                                RemoteMode::Conversation { variant: g.variant }
                            }
                        },
                    );
                    rc.timeout = g.timeout();
                    rc.api_key = api_key_env.as_ref().and_then(|v| std::env::var(v).ok());
                    let remote = RemoteBackend::new(rc).with_context(|| format!("guards[{i}]"))?;
                    (Arc::new(remote), None)
                }
            };
            named.insert(
                g.name.clone(),
                NamedGuard {
                    backend,
                    timeout: g.timeout(),
                    local,
                },
            );
        }
        let guards = Guards::new(named);
        let mut agents = BTreeMap::new();
        for (i, a) in config.agents.iter().enumerate() {
            let tools =
                agent_tools(&config, a).map_err(|e| anyhow::anyhow!("agents[{i}].tools: {e}"))?;
            let profile = AgentProfile {
                name: a.name.clone(),
                model: a.model.clone(),
                system_prompt: a.system_prompt.clone(),
                tools,
                step_limit: a.step_limit,
                timeout: Duration::from_secs_f64(a.timeout_seconds),
                call_required: a.tool_choice == AgentToolChoice::Required,
            };
            agents.insert(a.name.clone(), Arc::new(profile));
        }
        let known = KnownNames::new(
            guards.names().map(str::to_owned),
            config
                .policies
                .tools
                .iter()
                .chain(config.tools.iter().map(|t| &t.name))
                .cloned(),
        );
        let dir = config.policies.dir.clone();
        let policies = tokio::task::spawn_blocking(move || PolicyStore::open(dir, known))
            .await?
            .map_err(|e| anyhow::anyhow!("policies.dir: the policy directory is invalid:\n{e}"))?;
        let policies = Arc::new(policies);
        let watcher = if config.policies.watch {
            Some(policies.watch().context("policies.watch")?)
        } else {
            None
        };
        let auth = Auth::new(&config.auth, db.clone());
        Ok(Self {
            config,
            models,
            tool_formats,
            agents,
            guards,
            policies,
            policy_cache: PolicyCache::new(),
            auth,
            audit,
            db,
            metrics: Metrics::default(),
            secrets: SecretMask::new(),
            started: chrono::Utc::now().timestamp(),
            watcher: Mutex::new(watcher),
            registered_policies: Mutex::new(HashSet::new()),
        })
    }

    /// Hands an event to the audit writer (never waits).
    pub fn record(&self, event: AuditEvent) {
        if let Some(audit) = &self.audit {
            if audit.record(event).is_err() {
                self.metrics.audit_dropped();
            }
        }
    }

    /// Hands a turn's deciding event to the audit writer; with
    /// `audit.durable_answers`, returns what resolves once it is stored;
    /// an error when the writer has stopped and the decision cannot be.
    pub fn record_decision(
        &self,
        event: AuditEvent,
    ) -> Result<Option<warden_audit::Durable>, warden_audit::AuditError> {
        let Some(audit) = &self.audit else {
            return Ok(None);
        };
        if !self.config.audit.durable_answers {
            self.record(event);
            return Ok(None);
        }
        audit.record_durable(event).map(Some).inspect_err(|_| {
            self.metrics.audit_dropped();
        })
    }

    /// Hands the text of an effective policy to the audit the first time
    /// this process sees its version (the table keeps one row per version).
    pub fn register_policy(&self, set: &PolicySet, policy: &EffectivePolicy) {
        let Some(audit) = &self.audit else { return };
        let version = policy.version.as_str();
        {
            let mut seen = self
                .registered_policies
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if seen.contains(version) {
                return;
            }
            seen.insert(version.to_owned());
        }
        let text = PolicyText {
            policy: PolicyRef {
                id: policy.id.clone(),
                version: version.to_owned(),
            },
            body: warden_policies::record_text(policy, set),
        };
        if audit.register_policy(text).is_err() {
            self.metrics.audit_dropped();
        }
    }

    /// Admits a new turn as far as the audit is concerned. A writer that is
    /// only behind (backlog at capacity) makes the turn wait up to
    /// [`ADMISSION_WAIT`] for it to catch up, turning a burst into latency
    /// rather than refusals; a writer that cannot store events (or has
    /// stopped) refuses at once.
    pub async fn admit_audited_turn(&self) -> Result<(), crate::error::ApiError> {
        let Some(audit) = &self.audit else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + ADMISSION_WAIT;
        loop {
            let health = audit.health();
            if !health.refuse_new_turns() {
                return Ok(());
            }
            let stuck = health.closed || (health.required && !health.can_make_progress());
            if stuck || tokio::time::Instant::now() >= deadline {
                return Err(crate::error::ApiError::AuditUnavailable);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Current gauge values for `/metrics`.
    pub fn gauges(&self) -> Gauges {
        let status = self.policies.status();
        Gauges {
            policy_reload_failures: status.reloads_failed,
            policy_reload_failing: !status.last_errors.is_empty(),
            audit: self.audit.as_ref().map(AuditHandle::metrics),
            local_queue: self
                .models
                .iter()
                .filter_map(|(n, g)| match g.as_ref() {
                    Generator::Local(l) => Some((n.clone(), l.queued())),
                    Generator::Upstream(_) => None,
                })
                .collect(),
        }
    }

    /// Stops watching the policy directory.
    pub fn stop_watching(&self) {
        self.watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}
