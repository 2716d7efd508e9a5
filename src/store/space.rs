//! Whether the database takes writes: the space watch behind `/readyz` and the one log line
//! of a full disk.
//!
//! A full disk refuses every write at once, so a line per refused write would flood the log
//! (tens of thousands a minute under load) exactly when the disk has no room for it. The watch
//! says it once when writes start failing, then how many were refused every [`REPORT_EVERY`],
//! then once when a write succeeds again. Readiness follows the same state: not ready from
//! the first refused write until the next write that stored something.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::StoreError;

/// How often a store that stays full reports how many writes it refused meanwhile.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Space {
    /// Read on every `/readyz`; an atomic so a probe never waits on the log's bookkeeping.
    full: AtomicBool,
    /// The refusals not yet reported and when the last report was. A plain mutex: held
    /// for a few arithmetic steps, never across an await.
    tally: Mutex<Tally>,
}

#[derive(Default)]
struct Tally {
    refused: u64,
    since: Option<Instant>,
}

/// What the log should say after a write was refused.
#[derive(Debug, PartialEq, Eq)]
enum Report {
    /// The first refusal after writes worked: say it.
    Began,
    /// Still full, and a report is due: this many refusals since the last.
    Count(u64),
    Quiet,
}

impl Space {
    /// Writes work (or none failed for space since the last one that worked).
    pub fn writable(&self) -> bool {
        !self.full.load(Ordering::Acquire)
    }

    /// Notes the outcome of a write: a refusal for space, or a write that stored something.
    pub fn note(&self, error: Option<&StoreError>, wrote: bool) {
        match error {
            Some(error @ StoreError::StorageFull(_)) => self.refused(error, Instant::now()),
            Some(_) => {}
            None if wrote => self.wrote(),
            None => {}
        }
    }

    fn refused(&self, error: &StoreError, now: Instant) {
        match self.tally_refusal(now) {
            Report::Began => tracing::error!(
                %error,
                "the database is out of space: writes answer 507 and /readyz 503 until one succeeds"
            ),
            Report::Count(refused) => tracing::warn!(
                refused,
                "the database is still out of space; writes refused since the last report"
            ),
            Report::Quiet => {}
        }
    }

    fn tally_refusal(&self, now: Instant) -> Report {
        let began = !self.full.swap(true, Ordering::AcqRel);
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        if began {
            *tally = Tally {
                refused: 0,
                since: Some(now),
            };
            return Report::Began;
        }
        tally.refused += 1;
        let since = *tally.since.get_or_insert(now);
        if now.duration_since(since) < REPORT_EVERY {
            return Report::Quiet;
        }
        let refused = std::mem::take(&mut tally.refused);
        tally.since = Some(now);
        Report::Count(refused)
    }

    fn wrote(&self) {
        // The common case, every successful write: one atomic read, no lock.
        if !self.full.load(Ordering::Acquire) {
            return;
        }
        if self.full.swap(false, Ordering::AcqRel) {
            let refused =
                std::mem::take(&mut self.tally.lock().unwrap_or_else(|e| e.into_inner()).refused);
            tracing::info!(refused, "the database takes writes again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_is_said_once_then_counted_every_few_seconds_until_a_write_works() {
        let space = Space::default();
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        assert!(space.writable());
        assert_eq!(space.tally_refusal(at(0)), Report::Began);
        assert!(!space.writable());
        for _ in 0..1000 {
            assert_eq!(space.tally_refusal(at(1)), Report::Quiet);
        }
        assert_eq!(space.tally_refusal(at(5)), Report::Count(1001));
        assert_eq!(space.tally_refusal(at(6)), Report::Quiet);
        space.note(None, false);
        assert!(
            !space.writable(),
            "a write that stored nothing proves nothing"
        );
        space.note(Some(&StoreError::Closed), false);
        assert!(!space.writable());
        space.note(None, true);
        assert!(space.writable());
        assert_eq!(space.tally_refusal(at(7)), Report::Began);
    }
}
