//! Latency samples and what is printed about them.

use std::time::Duration;

/// Latencies of one kind of call, and how long the run took.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    latencies: Vec<Duration>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

impl Samples {
    /// Adds the latencies of another client.
    pub fn extend(&mut self, latencies: impl IntoIterator<Item = Duration>) {
        self.latencies.extend(latencies);
    }

    /// Calls measured.
    pub fn count(&self) -> usize {
        self.latencies.len()
    }

    /// The latency below which `quantile` (0..=1) of the calls finished.
    pub fn percentile(&self, quantile: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let rank = ((sorted.len() as f64 * quantile).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    /// Calls per second over the run.
    pub fn per_second(&self, units_per_call: usize) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds <= 0.0 {
            return 0.0;
        }
        (self.count() * units_per_call) as f64 / seconds
    }
}

/// Milliseconds with two decimals.
pub fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}
