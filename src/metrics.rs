//! Server metrics, rendered in the Prometheus text format on `/metrics`.
//!
//! A few dozen figures do not justify a metrics framework; these are atomics, two maps and one
//! histogram, rendered by hand. The server-wide labels come from a closed set (statement kinds,
//! outcomes, SQLSTATEs); the per-object families ([`Family`]) carry object names, escaped as the
//! text format requires, so no client can break the output.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    pub connections_active: AtomicI64,
    pub connections_total: AtomicU64,
    pub connections_rejected: AtomicU64,
    /// Connections refused because `max_connections` were open (53300).
    pub connections_over_limit: AtomicU64,
    /// Logins refused: wrong password, unknown user, or too many failures from the address.
    pub auth_failures: AtomicU64,
    /// Statements by (kind, outcome).
    statements: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Errors by SQLSTATE.
    errors: Mutex<BTreeMap<String, u64>>,
    /// How long statements took, from receiving them to their last row sent.
    pub statement_duration: Histogram,
    /// `SUBSCRIBE`s streaming now (statements, cursors and `COPY (SUBSCRIBE ...) TO STDOUT`).
    pub subscriptions_active: AtomicI64,
    /// Subscriptions refused because `max_subscriptions` were open (53400).
    pub subscriptions_over_limit: AtomicU64,
}

/// Upper bounds (seconds) of the statement duration buckets: from a point lookup to a long scan.
const DURATION_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0];

/// A Prometheus histogram with fixed buckets: one counter per bucket (not cumulative; summed
/// when rendered), the count and the sum in microseconds.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: std::time::Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, n) in DURATION_BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

impl Metrics {
    pub fn statement(&self, kind: &'static str, ok: bool) {
        let mut m = self.statements.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((kind, if ok { "ok" } else { "error" })).or_default() += 1;
    }

    pub fn error(&self, sqlstate: &str) {
        let mut m = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        // SQLSTATEs are five characters from a fixed alphabet; anything else is not counted by
        // its value, so a label never carries arbitrary text.
        let key = if sqlstate.len() == 5 && sqlstate.chars().all(|c| c.is_ascii_alphanumeric()) {
            sqlstate.to_string()
        } else {
            "other".to_string()
        };
        *m.entry(key).or_default() += 1;
    }

    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64;
        single(&mut out, "weir_connections_active", "Client connections currently open.", "gauge", self.connections_active.load(Ordering::Relaxed) as f64);
        single(&mut out, "weir_connections_total", "Client connections accepted since start.", "counter", load(&self.connections_total));
        single(&mut out, "weir_connections_rejected_total", "Connections closed because of a protocol error.", "counter", load(&self.connections_rejected));
        single(&mut out, "weir_connections_over_limit_total", "Connections refused because max_connections were open.", "counter", load(&self.connections_over_limit));
        single(&mut out, "weir_auth_failures_total", "Logins refused (wrong password, unknown user, or too many failures from one address).", "counter", load(&self.auth_failures));
        let _ = writeln!(out, "# HELP weir_statements_total Statements executed, by kind and outcome.");
        let _ = writeln!(out, "# TYPE weir_statements_total counter");
        for ((kind, outcome), n) in self.statements.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "weir_statements_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP weir_errors_total Errors returned to clients, by SQLSTATE.");
        let _ = writeln!(out, "# TYPE weir_errors_total counter");
        for (code, n) in self.errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "weir_errors_total{{sqlstate=\"{code}\"}} {n}");
        }
        self.statement_duration.render(&mut out, "weir_statement_duration_seconds", "How long statements took, from receiving them to their last row sent (a SUBSCRIBE until it ended).");
        single(&mut out, "weir_subscriptions_active", "SUBSCRIBEs streaming now.", "gauge", self.subscriptions_active.load(Ordering::Relaxed) as f64);
        single(&mut out, "weir_subscriptions_over_limit_total", "SUBSCRIBEs refused because max_subscriptions were open.", "counter", load(&self.subscriptions_over_limit));
        for (name, help, value) in extra {
            single(&mut out, name, help, "gauge", *value);
        }
        out
    }
}

/// A family of one unlabelled value.
fn single(out: &mut String, name: &str, help: &str, kind: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// A labelled metric family: `name{label="value",...} number` per row, one label value per
/// label name.
pub struct Family<'a> {
    pub name: &'a str,
    pub help: &'a str,
    pub kind: &'a str,
    pub labels: &'a [&'a str],
    pub rows: Vec<(Vec<String>, f64)>,
}

/// Label values here are object names (user input): escaped as the text format requires.
fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub fn render_families(families: &[Family<'_>]) -> String {
    let mut out = String::new();
    for f in families {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (values, number) in &f.rows {
            let labels: Vec<String> =
                f.labels.iter().zip(values).map(|(label, value)| format!("{label}=\"{}\"", escape_label(value))).collect();
            if labels.is_empty() {
                let _ = writeln!(out, "{} {}", f.name, number);
            } else {
                let _ = writeln!(out, "{}{{{}}} {}", f.name, labels.join(","), number);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_by_label() {
        let m = Metrics::default();
        m.statement("INSERT", true);
        m.statement("INSERT", true);
        m.statement("SELECT", false);
        m.error("42P01");
        m.error("bad\"label");
        let text = m.render(&[]);
        assert!(text.contains("weir_statements_total{kind=\"INSERT\",outcome=\"ok\"} 2"), "{text}");
        assert!(text.contains("weir_statements_total{kind=\"SELECT\",outcome=\"error\"} 1"));
        assert!(text.contains("weir_errors_total{sqlstate=\"42P01\"} 1"));
        assert!(text.contains("weir_errors_total{sqlstate=\"other\"} 1"));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.statement_duration.observe(std::time::Duration::from_micros(500));
        m.statement_duration.observe(std::time::Duration::from_millis(30));
        m.statement_duration.observe(std::time::Duration::from_secs(100));
        let text = m.render(&[]);
        assert!(text.contains("weir_statement_duration_seconds_bucket{le=\"0.001\"} 1\n"), "{text}");
        assert!(text.contains("weir_statement_duration_seconds_bucket{le=\"0.025\"} 1\n"), "{text}");
        assert!(text.contains("weir_statement_duration_seconds_bucket{le=\"0.05\"} 2\n"), "{text}");
        assert!(text.contains("weir_statement_duration_seconds_bucket{le=\"60\"} 2\n"), "{text}");
        assert!(text.contains("weir_statement_duration_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("weir_statement_duration_seconds_count 3\n"), "{text}");
        assert!(text.contains("weir_statement_duration_seconds_sum 100.0305\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let text = render_families(&[Family {
            name: "weir_view_rows",
            help: "h",
            kind: "gauge",
            labels: &["view", "partition"],
            rows: vec![(vec!["a\"b\\c\nd".to_string(), "0".to_string()], 3.0)],
        }]);
        assert!(text.contains("weir_view_rows{view=\"a\\\"b\\\\c\\nd\",partition=\"0\"} 3"), "{text}");
    }
}
