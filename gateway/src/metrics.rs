//! Prometheus counters and histograms, rendered as text on `GET /metrics`.
//!
//! Hand-rolled: a dozen families with few, bounded label sets (routes,
//! configured models, checkpoints, categories) need only maps under a
//! mutex, and the text format is short to write correctly.

use std::collections::BTreeMap;
use std::fmt::{Display, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use warden_audit::WriterMetrics;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// One latency histogram: per-bucket counts (made cumulative when rendered).
#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i] += 1;
        }
        self.sum += secs;
        self.count += 1;
    }
}

/// The gateway's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16, String), u64>>,
    request_seconds: Mutex<BTreeMap<String, Histogram>>,
    checkpoints: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    categories: Mutex<BTreeMap<(&'static str, String, &'static str), u64>>,
    guard_errors: Mutex<BTreeMap<(&'static str, String), u64>>,
    guard_seconds: Mutex<BTreeMap<&'static str, Histogram>>,
    first_token_seconds: Mutex<BTreeMap<String, Histogram>>,
    tokens: Mutex<BTreeMap<String, (u64, u64)>>,
    audit_dropped: AtomicU64,
}

/// Values read at render time from other parts of the gateway.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Policy reloads refused since start.
    pub policy_reload_failures: u64,
    /// Whether the last policy reload failed.
    pub policy_reload_failing: bool,
    /// The audit writer's counters, when the audit runs.
    pub audit: Option<WriterMetrics>,
    /// Local generations admitted, per model.
    pub local_queue: Vec<(String, usize)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// Counts a finished request; `model` when it named a configured one.
    pub fn request(&self, route: &str, status: u16, model: Option<&str>, took: Duration) {
        *lock(&self.requests)
            .entry((route.to_owned(), status, model.unwrap_or("").to_owned()))
            .or_default() += 1;
        let mut h = lock(&self.request_seconds);
        match h.get_mut(route) {
            Some(h) => h.observe(took),
            None => h.entry(route.to_owned()).or_default().observe(took),
        }
    }

    /// Counts a checkpoint outcome, its categories with the action taken,
    /// the backends that gave no verdict, and the time it took.
    pub fn checkpoint(
        &self,
        checkpoint: &'static str,
        decision: &'static str,
        categories: &[String],
        errors: &[&str],
        took: Duration,
    ) {
        *lock(&self.checkpoints)
            .entry((checkpoint, decision))
            .or_default() += 1;
        if !categories.is_empty() {
            let action = match decision {
                "blocked" => "block",
                "flagged" => "flag",
                "redacted" => "redact",
                other => other,
            };
            let mut c = lock(&self.categories);
            for cat in categories {
                *c.entry((checkpoint, cat.clone(), action)).or_default() += 1;
            }
        }
        if !errors.is_empty() {
            let mut e = lock(&self.guard_errors);
            for backend in errors {
                *e.entry((checkpoint, (*backend).to_owned())).or_default() += 1;
            }
        }
        lock(&self.guard_seconds)
            .entry(checkpoint)
            .or_default()
            .observe(took);
    }

    /// Time from the start of generation to the first token of a stream.
    pub fn first_token(&self, model: &str, took: Duration) {
        let mut h = lock(&self.first_token_seconds);
        match h.get_mut(model) {
            Some(h) => h.observe(took),
            None => h.entry(model.to_owned()).or_default().observe(took),
        }
    }

    /// Counts tokens of a model.
    pub fn tokens(&self, model: &str, prompt: u32, completion: u32) {
        if prompt == 0 && completion == 0 {
            return;
        }
        let mut t = lock(&self.tokens);
        let e = match t.get_mut(model) {
            Some(e) => e,
            None => t.entry(model.to_owned()).or_default(),
        };
        e.0 += u64::from(prompt);
        e.1 += u64::from(completion);
    }

    /// Counts an audit event the writer did not take.
    pub fn audit_dropped(&self) {
        self.audit_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = Out(String::with_capacity(4096));
        out.family(
            "warden_requests_total",
            "counter",
            "HTTP requests by route, status and configured model (empty when none).",
        );
        for ((route, status, model), n) in lock(&self.requests).iter() {
            out.sample(
                "warden_requests_total",
                &[
                    ("route", route),
                    ("status", &status.to_string()),
                    ("model", model),
                ],
                n,
            );
        }
        out.histograms(
            "warden_request_duration_seconds",
            "Time from a request's arrival to its response head, by route.",
            "route",
            lock(&self.request_seconds)
                .iter()
                .map(|(k, h)| (k.as_str(), h)),
        );
        out.family(
            "warden_guard_checks_total",
            "counter",
            "Guard checkpoint outcomes.",
        );
        for ((cp, d), n) in lock(&self.checkpoints).iter() {
            out.sample(
                "warden_guard_checks_total",
                &[("checkpoint", cp), ("decision", d)],
                n,
            );
        }
        out.family(
            "warden_guard_categories_total",
            "counter",
            "Categories behind checkpoint outcomes, by the action taken.",
        );
        for ((cp, c, a), n) in lock(&self.categories).iter() {
            out.sample(
                "warden_guard_categories_total",
                &[("checkpoint", cp), ("category", c), ("action", a)],
                n,
            );
        }
        out.family(
            "warden_guard_errors_total",
            "counter",
            "Guard backends that gave no verdict (timeouts, failures).",
        );
        for ((cp, b), n) in lock(&self.guard_errors).iter() {
            out.sample(
                "warden_guard_errors_total",
                &[("checkpoint", cp), ("backend", b)],
                n,
            );
        }
        out.histograms(
            "warden_guard_duration_seconds",
            "Time spent in a guard checkpoint.",
            "checkpoint",
            lock(&self.guard_seconds).iter().map(|(k, h)| (*k, h)),
        );
        out.histograms(
            "warden_first_token_seconds",
            "Time from the start of a streamed generation to its first token.",
            "model",
            lock(&self.first_token_seconds)
                .iter()
                .map(|(k, h)| (k.as_str(), h)),
        );
        out.family(
            "warden_tokens_total",
            "counter",
            "Tokens by model and kind.",
        );
        for (model, (prompt, completion)) in lock(&self.tokens).iter() {
            out.sample(
                "warden_tokens_total",
                &[("model", model), ("kind", "prompt")],
                prompt,
            );
            out.sample(
                "warden_tokens_total",
                &[("model", model), ("kind", "completion")],
                completion,
            );
        }
        out.family(
            "warden_policy_reload_failures_total",
            "counter",
            "Policy reloads refused since start.",
        );
        out.sample(
            "warden_policy_reload_failures_total",
            &[],
            gauges.policy_reload_failures,
        );
        out.family(
            "warden_policy_reload_failing",
            "gauge",
            "1 while the last policy reload failed.",
        );
        out.sample(
            "warden_policy_reload_failing",
            &[],
            u8::from(gauges.policy_reload_failing),
        );
        out.family(
            "warden_audit_dropped_total",
            "counter",
            "Audit events the writer did not take.",
        );
        out.sample(
            "warden_audit_dropped_total",
            &[],
            self.audit_dropped.load(Ordering::Relaxed),
        );
        if let Some(a) = &gauges.audit {
            let age = a.spool_oldest_age.map_or(0.0, |d| d.as_secs_f64());
            let gauges: [(&str, &str, &str, f64); 9] = [
                (
                    "warden_audit_queue_depth",
                    "gauge",
                    "Audit events waiting in memory.",
                    a.queue_depth as f64,
                ),
                (
                    "warden_audit_queue_capacity",
                    "gauge",
                    "Capacity of the audit queue.",
                    a.queue_capacity as f64,
                ),
                (
                    "warden_audit_spool_bytes",
                    "gauge",
                    "Bytes in the audit spool file.",
                    a.spool_bytes as f64,
                ),
                (
                    "warden_audit_spool_records",
                    "gauge",
                    "Audit events waiting in the spool.",
                    a.spool_records as f64,
                ),
                (
                    "warden_audit_spool_oldest_age_seconds",
                    "gauge",
                    "Age of the oldest event waiting in the spool (0 when empty).",
                    age,
                ),
                (
                    "warden_audit_events_written_total",
                    "counter",
                    "Audit events stored in PostgreSQL.",
                    a.events_written as f64,
                ),
                (
                    "warden_audit_events_spooled_total",
                    "counter",
                    "Audit events written to the spool.",
                    a.events_spooled as f64,
                ),
                (
                    "warden_audit_database_errors_total",
                    "counter",
                    "Failed audit database calls.",
                    a.database_errors as f64,
                ),
                (
                    "warden_audit_database_up",
                    "gauge",
                    "1 while PostgreSQL is reachable for the audit.",
                    f64::from(u8::from(a.database_up)),
                ),
            ];
            for (name, kind, help, v) in gauges {
                out.family(name, kind, help);
                out.sample(name, &[], v);
            }
        }
        out.family(
            "warden_local_queue",
            "gauge",
            "Local engine generations admitted (running and queued), per model.",
        );
        for (model, n) in &gauges.local_queue {
            out.sample("warden_local_queue", &[("model", model)], n);
        }
        out.0
    }
}

/// The exposition being written.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                self.0.push_str(k);
                self.0.push_str("=\"");
                escape_into(&mut self.0, v);
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn histograms<'a>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        rows: impl Iterator<Item = (&'a str, &'a Histogram)>,
    ) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (key, h) in rows {
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(h.counts) {
                cumulative += n;
                self.sample(
                    &bucket,
                    &[(label, key), ("le", &bound.to_string())],
                    cumulative,
                );
            }
            self.sample(&bucket, &[(label, key), ("le", "+Inf")], h.count);
            self.sample(&format!("{name}_sum"), &[(label, key)], h.sum);
            self.sample(&format!("{name}_count"), &[(label, key)], h.count);
        }
    }
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let m = Metrics::default();
        m.request("/a\"b", 200, None, Duration::from_millis(2));
        m.request("/a\"b", 200, None, Duration::from_secs(100));
        let text = m.render(&Gauges::default());
        assert!(text.contains(
            "warden_request_duration_seconds_bucket{route=\"/a\\\"b\",le=\"0.0025\"} 1\n"
        ));
        assert!(text
            .contains("warden_request_duration_seconds_bucket{route=\"/a\\\"b\",le=\"60\"} 1\n"));
        assert!(text
            .contains("warden_request_duration_seconds_bucket{route=\"/a\\\"b\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("warden_request_duration_seconds_count{route=\"/a\\\"b\"} 2\n"));
        assert!(
            text.contains("warden_requests_total{route=\"/a\\\"b\",status=\"200\",model=\"\"} 2\n")
        );
    }
}
