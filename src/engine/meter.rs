//! A per-queue rate meter: tasks finished in the last minute, in one-second buckets, and the
//! `Retry-After` estimate it feeds. It only needs to be roughly right and cheap to update,
//! but it must be honest: a fresh server has not watched for a minute, so the count is
//! divided by the time actually watched, and an estimate is never above `max_wait`.
//!
//! Time is an input: every method has an `_at(now)` form that the tests drive.

use std::time::Duration;

use dashmap::DashMap;

use crate::task::{Millis, QueueName, now_millis};

const SECONDS: usize = 60;
/// Below this much watched time a rate says little (one burst, one idle second): the
/// estimate asks the client back soon instead of guessing.
const MIN_OBSERVED_MS: Millis = 3_000;
/// The estimate when there is no rate yet to go by.
const UNMEASURED: Duration = Duration::from_secs(1);

pub struct Meter {
    queues: DashMap<QueueName, Window>,
    /// When the meter started watching: the rate divides by the time since, up to a minute.
    started: Millis,
    /// The most an estimate may say (`--max-retry-after`).
    max_wait: Duration,
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
    pub fn new(max_wait: Duration) -> Meter {
        Meter::started_at(now_millis(), max_wait)
    }

    fn started_at(started: Millis, max_wait: Duration) -> Meter {
        Meter {
            queues: DashMap::new(),
            started,
            max_wait,
        }
    }

    /// Counts one finished task of `queue`.
    pub fn record(&self, queue: &QueueName) {
        self.record_at(queue, now_millis());
    }

    fn record_at(&self, queue: &QueueName, now: Millis) {
        let second = now / 1000;
        let mut window = match self.queues.get_mut(queue) {
            Some(window) => window,
            None => self.queues.entry(queue.clone()).or_default(),
        };
        window.advance(second);
        window.buckets[second.rem_euclid(SECONDS as i64) as usize] += 1;
    }

    /// Tasks per second over the last minute, or over the time watched if that is shorter;
    /// `None` while less than [`MIN_OBSERVED_MS`] was watched.
    fn rate_at(&self, queue: &QueueName, now: Millis) -> Option<f64> {
        let observed = (now - self.started).min(SECONDS as Millis * 1000);
        if observed < MIN_OBSERVED_MS {
            return None;
        }
        let Some(mut window) = self.queues.get_mut(queue) else {
            return Some(0.0);
        };
        window.advance(now / 1000);
        let finished: f64 = window.buckets.iter().map(|&n| f64::from(n)).sum();
        Some(finished * 1000.0 / observed as f64)
    }

    /// How long until a task with `waiting_before` tasks ahead of it in `queue` starts, at
    /// the queue's measured rate: at least a second, at most `max_wait`. A queue that
    /// finished nothing lately gets `max_wait`; one not yet measured, a second.
    pub fn estimate_wait(&self, queue: &QueueName, waiting_before: u64) -> Duration {
        self.estimate_wait_at(queue, waiting_before, now_millis())
    }

    fn estimate_wait_at(&self, queue: &QueueName, waiting_before: u64, now: Millis) -> Duration {
        let ceiling = self.max_wait.max(UNMEASURED);
        let wait = match self.rate_at(queue, now) {
            None => UNMEASURED,
            Some(rate) if rate <= 0.0 => ceiling,
            Some(rate) => {
                Duration::try_from_secs_f64(waiting_before as f64 / rate).unwrap_or(ceiling)
            }
        };
        wait.clamp(UNMEASURED, ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_000_000;
    const MINUTE: Duration = Duration::from_secs(60);

    fn queue() -> QueueName {
        QueueName::default()
    }

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
        let meter = Meter::started_at(T0, MINUTE);
        let now = T0 + 120_000;
        for _ in 0..120 {
            meter.record_at(&queue(), now);
        }
        assert!((meter.rate_at(&queue(), now).unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(
            meter.rate_at(&QueueName::parse("other").unwrap(), now),
            Some(0.0)
        );
    }

    /// The case: a fresh server drains 80 tasks a second; 200 waiting drain in
    /// 2.5 s, and the estimate says so (not 200 ÷ 80/60 = 150 s, let alone 3,000).
    #[test]
    fn a_fresh_server_divides_by_the_time_it_watched() {
        let meter = Meter::started_at(T0, MINUTE);
        for second in 0..4 {
            for _ in 0..80 {
                meter.record_at(&queue(), T0 + second * 1000 + 500);
            }
        }
        let now = T0 + 4_000;
        let rate = meter.rate_at(&queue(), now).unwrap();
        assert!((rate - 80.0).abs() < 1e-9, "{rate}");
        let wait = meter.estimate_wait_at(&queue(), 200, now);
        assert!(wait <= Duration::from_secs(3), "{wait:?}");
    }

    #[test]
    fn estimates_are_bounded_and_ask_back_soon_before_any_measure() {
        let meter = Meter::started_at(T0, Duration::from_secs(60));
        // Nothing watched yet: a second, whatever waits.
        assert_eq!(
            meter.estimate_wait_at(&queue(), 1_000_000, T0 + 500),
            UNMEASURED
        );
        // Watched, nothing finished: the ceiling, not an eternity.
        assert_eq!(meter.estimate_wait_at(&queue(), 10, T0 + 10_000), MINUTE);
        // Slow: one a second, a million waiting: still the ceiling.
        meter.record_at(&queue(), T0 + 9_000);
        assert_eq!(
            meter.estimate_wait_at(&queue(), 1_000_000, T0 + 10_000),
            MINUTE
        );
        // Nothing ahead: at least a second.
        assert_eq!(meter.estimate_wait_at(&queue(), 0, T0 + 10_000), UNMEASURED);
        let tight = Meter::started_at(T0, Duration::from_secs(5));
        assert_eq!(
            tight.estimate_wait_at(&queue(), 10, T0 + 10_000),
            Duration::from_secs(5)
        );
    }
}
