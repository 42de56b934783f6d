//! The table printed at the end: one row per measurement, with the issue's
//! target and whether it is met.

use crate::procfs::CpuUse;
use crate::stats::Samples;
use std::time::Duration;

/// One line of the table.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// What was measured.
    pub scenario: String,
    /// `SQLite` or `PostgreSQL`.
    pub backend: &'static str,
    /// Calls made.
    pub calls: Option<usize>,
    /// Calls per second.
    pub per_second: Option<f64>,
    /// Median latency.
    pub p50: Option<Duration>,
    /// 99th percentile latency.
    pub p99: Option<Duration>,
    /// CPU of every marketbridge process per call.
    pub cpu_marketbridge: Option<Duration>,
    /// CPU of PostgreSQL per call (`None` on SQLite).
    pub cpu_postgres: Option<Duration>,
    /// The target.
    pub target: String,
    /// The figures the target is judged on.
    pub measured: String,
    /// Whether the target is met (`None`: no target).
    pub met: Option<bool>,
}

impl Row {
    /// A row of `samples` (one call each) and the CPU they cost; `postgres`
    /// says whether PostgreSQL's CPU is a column of this run.
    pub fn of(
        scenario: impl Into<String>,
        backend: &'static str,
        samples: &Samples,
        cpu: CpuUse,
        postgres: bool,
    ) -> Self {
        let calls = samples.count();
        Self {
            scenario: scenario.into(),
            backend,
            calls: Some(calls),
            per_second: Some(samples.per_second(1)),
            p50: Some(samples.percentile(0.50)),
            p99: Some(samples.percentile(0.99)),
            cpu_marketbridge: Some(per_call(cpu.marketbridge, calls)),
            cpu_postgres: postgres.then(|| per_call(cpu.postgres, calls)),
            ..Self::default()
        }
    }

    /// CPU per call of every process (marketbridge and PostgreSQL).
    pub fn cpu_total(&self) -> Duration {
        self.cpu_marketbridge.unwrap_or_default() + self.cpu_postgres.unwrap_or_default()
    }

    /// Sets the target and the verdict.
    pub fn judged(
        mut self,
        target: impl Into<String>,
        measured: impl Into<String>,
        met: bool,
    ) -> Self {
        self.target = target.into();
        self.measured = measured.into();
        self.met = Some(met);
        self
    }

    /// A one-line summary, printed as the scenario ends.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(calls) = self.calls {
            parts.push(format!("{calls} calls"));
        }
        if let Some(rate) = self.per_second {
            parts.push(format!("{rate:.0}/s"));
        }
        if let (Some(p50), Some(p99)) = (self.p50, self.p99) {
            parts.push(format!("p50 {} p99 {}", ms(p50), ms(p99)));
        }
        if let Some(cpu) = self.cpu_marketbridge {
            parts.push(format!("CPU {} ms/call", cpu_ms(cpu)));
        }
        if let Some(cpu) = self.cpu_postgres {
            parts.push(format!("+ PostgreSQL {} ms/call", cpu_ms(cpu)));
        }
        if !self.measured.is_empty() {
            parts.push(self.measured.clone());
        }
        format!("{} [{}]: {}", self.scenario, self.backend, parts.join(", "))
    }
}

/// `total` shared over `calls`.
pub fn per_call(total: Duration, calls: usize) -> Duration {
    match u32::try_from(calls) {
        Ok(0) => Duration::ZERO,
        Ok(calls) => total / calls,
        Err(_) => Duration::from_secs_f64(total.as_secs_f64() / calls as f64),
    }
}

/// Milliseconds, two decimals.
pub fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

/// CPU milliseconds, three decimals.
pub fn cpu_ms(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64() * 1000.0)
}

/// The table, in Markdown.
pub fn render(rows: &[Row]) -> String {
    let dash = || "—".to_owned();
    let mut out = String::from(
        "| scenario | backend | calls | calls/s | p50 | p99 | CPU ms/call (marketbridge) | CPU ms/call (PostgreSQL) | target | measured | met |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---|---|---|\n",
    );
    for row in rows {
        let cells = [
            row.scenario.clone(),
            row.backend.to_owned(),
            row.calls.map_or_else(dash, |c| c.to_string()),
            row.per_second.map_or_else(dash, |r| format!("{r:.0}")),
            row.p50.map_or_else(dash, ms),
            row.p99.map_or_else(dash, ms),
            row.cpu_marketbridge.map_or_else(dash, cpu_ms),
            row.cpu_postgres.map_or_else(dash, cpu_ms),
            if row.target.is_empty() {
                dash()
            } else {
                row.target.clone()
            },
            if row.measured.is_empty() {
                dash()
            } else {
                row.measured.clone()
            },
            match row.met {
                Some(true) => "yes".to_owned(),
                Some(false) => "**no**".to_owned(),
                None => dash(),
            },
        ];
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_shared_over_calls() {
        assert_eq!(
            per_call(Duration::from_millis(10), 4),
            Duration::from_micros(2500)
        );
        assert_eq!(per_call(Duration::from_millis(10), 0), Duration::ZERO);
    }

    #[test]
    fn rows_render_with_dashes_for_missing_cells() {
        let mut samples = Samples::default();
        samples.extend([Duration::from_millis(2), Duration::from_millis(4)]);
        samples.elapsed = Duration::from_secs(1);
        let cpu = CpuUse {
            marketbridge: Duration::from_millis(1),
            postgres: Duration::ZERO,
        };
        let row = Row::of("GET plans", "SQLite", &samples, cpu, false).judged(
            "≤ 0.1 ms CPU",
            "0.500 ms CPU",
            false,
        );
        assert_eq!(row.cpu_total(), Duration::from_micros(500));
        let table = render(&[row]);
        assert!(
            table.contains(
                "| GET plans | SQLite | 2 | 2 | 2.00 ms | 4.00 ms | 0.500 | — | ≤ 0.1 ms CPU | 0.500 ms CPU | **no** |"
            ),
            "{table}"
        );
    }
}
