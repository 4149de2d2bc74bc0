//! Child processes of a step: each in its own process group, ended with its whole
//! group when the step gives up on it, and recorded beside the journal so that
//! `resume` ends what a killed run left behind before it runs the step again.
//!
//! Why a group: `kill_on_drop` reaches only the direct child, and a `sh -c` restore's
//! background job would go on changing things after its step timed out. Why the
//! record: when the CLI itself is killed, nothing kills its children; a `resume`
//! running the same restore beside the orphan could see it overwrite what was just
//! put back.

// Used by the drivers that run programs: a build without some of them leaves some of
// this unused (a build with all of them, the default, still checks for dead code).
#![cfg_attr(
    not(all(
        feature = "driver-command",
        feature = "driver-dokku",
        feature = "driver-pm2",
        feature = "driver-postgres"
    )),
    allow(dead_code)
)]

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::driver::Context;

/// Puts a command in a process group of its own (whose id is the child's pid).
///
/// A Ctrl-C at the operator's terminal then no longer reaches it halfway through a
/// restore: the CLI turns it into a stop at the next step boundary.
pub(crate) fn own_group(cmd: &mut tokio::process::Command) {
    cmd.process_group(0);
}

/// Ends a child's process group when dropped before [`GroupGuard::finished`]: the
/// step timed out or was given up. A command that ran to its end keeps what it
/// started on purpose (a daemon).
pub(crate) struct GroupGuard {
    pgid: Option<u32>,
}

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

    /// Guards the group of `pid` without recording it anywhere (a program the library
    /// runs outside any step, such as a notification's).
    pub(crate) fn unrecorded(pid: Option<u32>) -> Self {
        GroupGuard { pgid: pid }
    }

    /// The child exited by itself: leave its group alone.
    pub(crate) fn finished(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            tracing::warn!(pgid, "stopping the process group of an unfinished command");
            kill_group(pgid);
        }
    }
}

/// How running a program to its end failed.
#[derive(Debug)]
pub(crate) enum RunError {
    /// It could not be started (not found, not executable).
    Spawn(std::io::Error),
    /// It did not end within its limit; its whole group was ended.
    Timeout,
    /// Its output could not be read.
    Wait(std::io::Error),
}

/// Runs `cmd` to its end and collects its output, the one way drivers run programs
/// (`pm2`, `dokku`/`ssh`, `pg_dump`): in a process group of its own, recorded beside
/// the journal while it runs (a `resume` after a kill ends what is left of it before
/// the step runs again), and the whole group ended when `limit` (if any) passes or the caller
/// gives up on it (a cancelled or timed-out step).
pub(crate) async fn output(
    ctx: &Context,
    mut cmd: tokio::process::Command,
    limit: Option<Duration>,
) -> Result<std::process::Output, RunError> {
    cmd.kill_on_drop(true).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    own_group(&mut cmd);
    let child = cmd.spawn().map_err(RunError::Spawn)?;
    let mut group = GroupGuard::new(ctx, child.id());
    let out = match limit {
        Some(limit) => tokio::time::timeout(limit, child.wait_with_output()).await.map_err(|_| RunError::Timeout)?,
        None => child.wait_with_output().await,
    };
    let out = out.map_err(RunError::Wait)?;
    group.finished();
    Ok(out)
}

/// Appends `pid start-time` to the record, durably: it must be on disk before the
/// process can outlive us.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `(sleep 1; touch late) & sleep 30`: the background job outlives its parent
    /// unless the whole group is ended.
    fn with_a_background_job(late: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg(format!("(sleep 1; touch '{}') & sleep 30", late.display()));
        cmd
    }

    /// What pm2, dokku and pg_dump run through: given up on (a cancelled or timed-out
    /// step drops it) or past its limit, it ends the whole group, and while it runs
    /// the group is recorded beside the journal for a later `resume`. With
    /// `kill_on_drop` alone (how pm2 and pg_dump ran) the background job wrote `late`.
    #[tokio::test]
    async fn a_program_given_up_or_timed_out_ends_its_whole_group_and_was_recorded() {
        let d = tempfile::tempdir().unwrap();
        let mut ctx = Context::new("c", crate::Store::open(d.path().join("store")).unwrap(), d.path());
        let log = d.path().join("children");
        ctx.child_log = Some(log.clone());
        let late = d.path().join("late");

        let given_up =
            tokio::time::timeout(Duration::from_millis(300), output(&ctx, with_a_background_job(&late), None)).await;
        assert!(given_up.is_err());
        let recorded = std::fs::read_to_string(&log).unwrap();
        assert_eq!(recorded.lines().count(), 1, "{recorded}");

        let timed_out = output(&ctx, with_a_background_job(&late), Some(Duration::from_millis(300))).await;
        assert!(matches!(timed_out, Err(RunError::Timeout)), "{timed_out:?}");

        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!late.exists(), "a background job outlived the program it belonged to");

        let ran = output(&ctx, tokio::process::Command::new("true"), Some(Duration::from_secs(5))).await.unwrap();
        assert!(ran.status.success());
    }
}
