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

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(millis: impl IntoIterator<Item = u64>, elapsed_ms: u64) -> Samples {
        let mut samples = Samples::default();
        samples.extend(millis.into_iter().map(Duration::from_millis));
        samples.elapsed = Duration::from_millis(elapsed_ms);
        samples
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let hundred = samples((1..=100).rev(), 1000);
        assert_eq!(hundred.percentile(0.50), Duration::from_millis(50));
        assert_eq!(hundred.percentile(0.99), Duration::from_millis(99));
        assert_eq!(hundred.percentile(1.0), Duration::from_millis(100));
        assert_eq!(hundred.percentile(0.0), Duration::from_millis(1));
        let three = samples([30, 10, 20], 1000);
        assert_eq!(three.percentile(0.50), Duration::from_millis(20));
        assert_eq!(three.percentile(0.99), Duration::from_millis(30));
        assert_eq!(Samples::default().percentile(0.5), Duration::ZERO);
    }

    #[test]
    fn rates_count_units_per_call() {
        let four = samples([1, 1, 1, 1], 2000);
        assert_eq!(four.per_second(1), 2.0);
        assert_eq!(four.per_second(1000), 2000.0);
        assert_eq!(samples([1], 0).per_second(1), 0.0);
    }
}
