//! Prometheus counters, rendered as text on `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The gateway's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    checkpoints: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    categories: Mutex<BTreeMap<(&'static str, String), u64>>,
    guard_micros: Mutex<BTreeMap<&'static str, (u64, u64)>>,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    audit_dropped: AtomicU64,
}

/// Values read at render time from other parts of the gateway.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Policy reloads refused since start.
    pub policy_reload_failures: u64,
    /// Whether the last policy reload failed.
    pub policy_reload_failing: bool,
    /// Audit queue depth, when the audit runs.
    pub audit_queue_depth: Option<usize>,
    /// Audit spool bytes.
    pub audit_spool_bytes: Option<u64>,
    /// Local generations admitted, per model.
    pub local_queue: Vec<(String, usize)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// Counts a finished request.
    pub fn request(&self, route: &str, status: u16) {
        *lock(&self.requests)
            .entry((route.to_owned(), status))
            .or_default() += 1;
    }

    /// Counts a checkpoint outcome and its categories.
    pub fn checkpoint(
        &self,
        checkpoint: &'static str,
        decision: &'static str,
        categories: &[String],
        micros: u64,
    ) {
        *lock(&self.checkpoints)
            .entry((checkpoint, decision))
            .or_default() += 1;
        for c in categories {
            *lock(&self.categories)
                .entry((checkpoint, c.clone()))
                .or_default() += 1;
        }
        let mut g = lock(&self.guard_micros);
        let e = g.entry(checkpoint).or_default();
        e.0 += micros;
        e.1 += 1;
    }

    /// Counts tokens.
    pub fn tokens(&self, prompt: u32, completion: u32) {
        self.prompt_tokens
            .fetch_add(u64::from(prompt), Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(u64::from(completion), Ordering::Relaxed);
    }

    /// Counts an audit event the writer did not take.
    pub fn audit_dropped(&self) {
        self.audit_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP warden_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(out, "# TYPE warden_requests_total counter");
        for ((route, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "warden_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP warden_guard_checks_total Guard checkpoint outcomes."
        );
        let _ = writeln!(out, "# TYPE warden_guard_checks_total counter");
        for ((cp, d), n) in lock(&self.checkpoints).iter() {
            let _ = writeln!(
                out,
                "warden_guard_checks_total{{checkpoint=\"{cp}\",decision=\"{d}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP warden_guard_categories_total Violated categories by checkpoint."
        );
        let _ = writeln!(out, "# TYPE warden_guard_categories_total counter");
        for ((cp, c), n) in lock(&self.categories).iter() {
            let _ = writeln!(
                out,
                "warden_guard_categories_total{{checkpoint=\"{cp}\",category=\"{c}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP warden_guard_seconds Time spent in guard checkpoints."
        );
        let _ = writeln!(out, "# TYPE warden_guard_seconds summary");
        for (cp, (us, n)) in lock(&self.guard_micros).iter() {
            let _ = writeln!(
                out,
                "warden_guard_seconds_sum{{checkpoint=\"{cp}\"}} {}",
                *us as f64 / 1e6
            );
            let _ = writeln!(out, "warden_guard_seconds_count{{checkpoint=\"{cp}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP warden_tokens_total Tokens by kind.");
        let _ = writeln!(out, "# TYPE warden_tokens_total counter");
        let _ = writeln!(
            out,
            "warden_tokens_total{{kind=\"prompt\"}} {}",
            self.prompt_tokens.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "warden_tokens_total{{kind=\"completion\"}} {}",
            self.completion_tokens.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# TYPE warden_policy_reload_failures_total counter");
        let _ = writeln!(
            out,
            "warden_policy_reload_failures_total {}",
            gauges.policy_reload_failures
        );
        let _ = writeln!(out, "# TYPE warden_policy_reload_failing gauge");
        let _ = writeln!(
            out,
            "warden_policy_reload_failing {}",
            u8::from(gauges.policy_reload_failing)
        );
        let _ = writeln!(out, "# TYPE warden_audit_dropped_total counter");
        let _ = writeln!(
            out,
            "warden_audit_dropped_total {}",
            self.audit_dropped.load(Ordering::Relaxed)
        );
        if let Some(d) = gauges.audit_queue_depth {
            let _ = writeln!(out, "# TYPE warden_audit_queue_depth gauge");
            let _ = writeln!(out, "warden_audit_queue_depth {d}");
        }
        if let Some(b) = gauges.audit_spool_bytes {
            let _ = writeln!(out, "# TYPE warden_audit_spool_bytes gauge");
            let _ = writeln!(out, "warden_audit_spool_bytes {b}");
        }
        let _ = writeln!(out, "# TYPE warden_local_queue gauge");
        for (model, n) in &gauges.local_queue {
            let _ = writeln!(out, "warden_local_queue{{model=\"{model}\"}} {n}");
        }
        out
    }
}
