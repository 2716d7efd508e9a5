//! Percentiles of a set of latencies, printed as `key=value` fields of a RESULT line.
//!
//! Every sample is kept and sorted (at most a few hundred thousand here), so the percentiles
//! are exact, not a histogram's estimate.

use std::fmt::Write;

/// Latencies in microseconds.
#[derive(Debug, Default)]
pub struct Latencies {
    samples: Vec<i64>,
}

impl Latencies {
    pub fn record(&mut self, us: i64) {
        self.samples.push(us);
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// The nearest-rank percentile `p` (0–100); 0 when there are no samples.
    fn percentile(sorted: &[i64], p: f64) -> i64 {
        if sorted.is_empty() {
            return 0;
        }
        // The epsilon keeps 99.9% of 1000 at rank 999, not 1000 by a rounding error.
        let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    /// `{prefix}p50_us=… {prefix}p99_us=… {prefix}p999_us=… {prefix}max_us=…`.
    pub fn fields(&mut self, prefix: &str) -> String {
        self.samples.sort_unstable();
        let mut out = String::new();
        for (name, p) in [("p50", 50.0), ("p99", 99.0), ("p999", 99.9), ("max", 100.0)] {
            let value = Self::percentile(&self.samples, p);
            let _ = write!(out, " {prefix}{name}_us={value}");
        }
        let _ = write!(out, " {prefix}n={}", self.samples.len());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Latencies;

    #[test]
    fn nearest_rank() {
        let sorted: Vec<i64> = (1..=1000).collect();
        assert_eq!(Latencies::percentile(&sorted, 50.0), 500);
        assert_eq!(Latencies::percentile(&sorted, 99.0), 990);
        assert_eq!(Latencies::percentile(&sorted, 99.9), 999);
        assert_eq!(Latencies::percentile(&sorted, 100.0), 1000);
        assert_eq!(Latencies::percentile(&[], 99.0), 0);
        assert_eq!(Latencies::percentile(&[7], 0.0), 7);
    }
}
