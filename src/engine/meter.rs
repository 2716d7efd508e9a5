//! A per-queue rate meter: tasks finished in the last minute, in one-second buckets. It feeds
//! `Retry-After` estimates, so it only needs to be roughly right and cheap to update.

use dashmap::DashMap;

use crate::task::{QueueName, now_millis};

const SECONDS: usize = 60;

#[derive(Default)]
pub struct Meter {
    queues: DashMap<QueueName, Window>,
}

struct Window {
    buckets: [u32; SECONDS],
    /// The second the newest bucket belongs to.
    newest: i64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            buckets: [0; SECONDS],
            newest: 0,
        }
    }
}

impl Window {
    /// Clears the buckets of the seconds that passed since the newest one.
    fn advance(&mut self, second: i64) {
        let passed = (second - self.newest).clamp(0, SECONDS as i64) as usize;
        for step in 1..=passed {
            let slot = (self.newest + step as i64).rem_euclid(SECONDS as i64) as usize;
            self.buckets[slot] = 0;
        }
        self.newest = self.newest.max(second);
    }
}

impl Meter {
    /// Counts one finished task of `queue`.
    pub fn record(&self, queue: &QueueName) {
        let second = now_millis() / 1000;
        let mut window = match self.queues.get_mut(queue) {
            Some(window) => window,
            None => self.queues.entry(queue.clone()).or_default(),
        };
        window.advance(second);
        window.buckets[second.rem_euclid(SECONDS as i64) as usize] += 1;
    }

    /// Tasks per second over the last minute.
    pub fn rate(&self, queue: &QueueName) -> f64 {
        let Some(mut window) = self.queues.get_mut(queue) else {
            return 0.0;
        };
        window.advance(now_millis() / 1000);
        window.buckets.iter().map(|&n| f64::from(n)).sum::<f64>() / SECONDS as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_seconds_fall_out_of_the_window() {
        let mut window = Window {
            newest: 100,
            ..Window::default()
        };
        window.buckets[(100 % 60) as usize] = 5;
        window.advance(130);
        assert_eq!(window.buckets.iter().sum::<u32>(), 5);
        window.advance(161);
        assert_eq!(window.buckets.iter().sum::<u32>(), 0);
    }

    #[test]
    fn the_rate_counts_the_last_minute() {
        let meter = Meter::default();
        let queue = QueueName::default();
        for _ in 0..120 {
            meter.record(&queue);
        }
        assert!((meter.rate(&queue) - 2.0).abs() < 1e-9);
        assert_eq!(meter.rate(&QueueName::parse("other").unwrap()), 0.0);
    }
}
