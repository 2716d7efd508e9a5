//! Giving memory back to the OS after large bodies, on glibc (a no-op on other allocators).
//!
//! - [`return_large_buffers_to_the_os`]: buffers of 128 KiB and up are mapped from the OS and
//!   unmapped when freed.
//! - [`trim_free_heap`]: what glibc keeps of smaller freed memory in its arenas is given back
//!   every few seconds, once it is large. After 300 submits of 1 MB on SQLite, 241 MB of RSS
//!   stayed once every task had ended, of which `malloc_trim` gave back all but 49 MB
//!   (bench/bodies, docs/benchmarks.md).

use std::time::Duration;

/// Allocations from this size up are mapped from the OS and unmapped when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// How often the free heap is looked at.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Free heap below this is left to glibc: reused at once by the next requests, and trimming
/// it would only cost page faults.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_ABOVE: usize = 32 * 1024 * 1024;

/// Makes glibc give the memory of large buffers (bodies, their parsed strings) back to the
/// OS when they are freed. Its default threshold for that starts at 128 KiB but rises to the
/// largest buffer freed so far (up to 32 MiB), after which 1 MB bodies come from its heap and
/// stay there: 100 concurrent 1 MB submits left ~490 MB of RSS behind for good
/// (bench/bodies). Setting the threshold fixes it where it starts. Process-wide.
pub fn return_large_buffers_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator; any value is valid to pass.
    if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) } != 1 {
        tracing::warn!("cannot set the allocator's mmap threshold");
    }
}

/// Runs for as long as the server serves: every [`TRIM_EVERY`], if glibc holds more than
/// [`TRIM_ABOVE`] of freed memory, gives it back (`malloc_trim`), on the blocking pool since
/// it walks every arena. Between bursts of large work the check finds little and does
/// nothing.
pub async fn trim_free_heap() {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        let _ = tokio::task::spawn_blocking(|| {
            // SAFETY: both only read and adjust the allocator's own state, under its locks.
            unsafe {
                if libc::mallinfo2().fordblks > TRIM_ABOVE {
                    libc::malloc_trim(0);
                }
            }
        })
        .await;
    }
}
