//! Failpoints: named places where a test can make the process die, as a kill
//! or a power cut would, to prove that `resume`, `gc` and `check` pick up from there.
//!
//! Compiled in only with the `failpoints` feature (the test builds turn it on);
//! without it [`hit`] is an empty inline function. With it, a process whose
//! `ROLLBACK_FAILPOINTS` lists a name (comma-separated) aborts on reaching it:
//! no destructor runs, no lock is released by hand, nothing is flushed — only what
//! was already durable survives, as after `kill -9`.

/// Marks a place a test may stop the process at.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

/// Marks a place a test may stop the process at.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    let armed = std::env::var("ROLLBACK_FAILPOINTS").unwrap_or_default();
    if armed.split(',').any(|n| n.trim() == name) {
        tracing::error!(failpoint = name, "failpoint reached: aborting");
        std::process::abort();
    }
}
