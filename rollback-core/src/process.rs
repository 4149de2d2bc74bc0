//! Child processes of a step: each in its own process group, ended with its whole
//! group when the step gives up on it, and recorded beside the journal so that
//! `resume` ends what a killed run left behind before it runs the step again.
//!
//! Why a group: `kill_on_drop` reaches only the direct child, and a `sh -c` restore's
//! background job would go on changing things after its step timed out. Why the
//! record: when the CLI itself is killed, nothing kills its children; a `resume`
//! running the same restore beside the orphan could see it overwrite what was just
//! put back.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::driver::Context;

/// Puts a command in a process group of its own (whose id is the child's pid).
///
/// A Ctrl-C at the operator's terminal then no longer reaches it halfway through a
/// restore: the CLI turns it into a stop at the next step boundary.
#[cfg_attr(not(any(feature = "driver-command", feature = "driver-dokku")), allow(dead_code))]
pub(crate) fn own_group(cmd: &mut tokio::process::Command) {
    cmd.process_group(0);
}

/// Ends a child's process group when dropped before [`GroupGuard::finished`]: the
/// step timed out or was given up. A command that ran to its end keeps what it
/// started on purpose (a daemon).
#[cfg_attr(not(any(feature = "driver-command", feature = "driver-dokku")), allow(dead_code))]
pub(crate) struct GroupGuard {
    pgid: Option<u32>,
}

#[cfg_attr(not(any(feature = "driver-command", feature = "driver-dokku")), allow(dead_code))]
impl GroupGuard {
    /// Guards the group of `pid` (spawned with [`own_group`]) and records it beside
    /// the journal of the rollback running the step, if any.
    pub(crate) fn new(ctx: &Context, pid: Option<u32>) -> Self {
        if let (Some(pid), Some(log)) = (pid, ctx.child_log.as_deref()) {
            if let Err(e) = record(log, pid) {
                tracing::warn!(error = %e, pid, "cannot record a child process beside the journal");
            }
        }
        GroupGuard { pgid: pid }
    }

    /// The child exited by itself: leave its group alone.
    pub(crate) fn finished(&mut self) {
        self.pgid = None;
    }
}

#[cfg_attr(not(any(feature = "driver-command", feature = "driver-dokku")), allow(dead_code))]
impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            tracing::warn!(pgid, "stopping the process group of an unfinished command");
            kill_group(pgid);
        }
    }
}

/// Appends `pid start-time` to the record, durably: it must be on disk before the
/// process can outlive us.
#[cfg_attr(not(any(feature = "driver-command", feature = "driver-dokku")), allow(dead_code))]
fn record(log: &Path, pid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let start = start_time(pid).unwrap_or(0);
    let mut f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(log)?;
    writeln!(f, "{pid} {start}")?;
    f.sync_all()
}

/// Ends every process group recorded in `log` that still runs, waits (up to 10 s)
/// for them to go, and removes the record. Returns how many groups were ended.
pub(crate) fn end_recorded(log: &Path) -> usize {
    let Ok(text) = std::fs::read_to_string(log) else { return 0 };
    let mut ended = 0;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(Ok(pgid)), Some(Ok(start))) = (it.next().map(str::parse::<u32>), it.next().map(str::parse::<u64>))
        else {
            continue;
        };
        if pgid <= 1 || !group_alive(pgid) {
            continue;
        }
        // A leader still there with another start time: the pid was reused by an
        // unrelated process, which leads a group of its own. Leave it alone. (A
        // leader gone while its group lives on: the group is still the recorded one,
        // since Linux hands out no pid that is a live group's id.)
        if let Some(now) = start_time(pgid) {
            if start != 0 && now != start {
                continue;
            }
        }
        tracing::warn!(pgid, "ending the processes an interrupted run of this step left behind");
        kill_group(pgid);
        let deadline = Instant::now() + Duration::from_secs(10);
        while group_alive(pgid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        ended += 1;
    }
    let _ = std::fs::remove_file(log);
    ended
}

/// Forgets the record: the step's children ended by themselves.
pub(crate) fn clear_record(log: &Path) {
    let _ = std::fs::remove_file(log);
}

/// The start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[allow(unsafe_code)]
fn kill_group(pgid: u32) {
    // SAFETY: kill(2) touches no memory; a negative pid names the group.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
    }
}

#[allow(unsafe_code)]
fn group_alive(pgid: u32) -> bool {
    // SAFETY: as above; signal 0 only checks that the group exists. Zombies count
    // until reaped, which the wait loop tolerates up to its deadline.
    let r = unsafe { libc::kill(-(pgid as libc::pid_t), 0) };
    r == 0
}
