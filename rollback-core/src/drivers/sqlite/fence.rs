//! The write fence: a connection of the rollback's in `locking_mode = EXCLUSIVE`
//! that takes the database's exclusive lock (`BEGIN EXCLUSIVE; COMMIT`) and keeps it
//! until the fence is lifted. Every other connection, of any process, then gets
//! `SQLITE_BUSY` (after its own busy timeout) for a write, which is never
//! acknowledged, and for a read too: SQLite has no lock that refuses writers and
//! lets readers of another connection in while one connection rewrites the file.
//! While it is up, the driver's own capture, discards, restore and comparison go
//! through that connection; the restore then writes into the file in place (the
//! backup API into the held connection), whatever `restore` says, so a process that
//! holds the file open keeps seeing the database it writes to.
//!
//! In WAL mode an open connection keeps a shared lock on the file for as long as it
//! is open, idle or not, so the exclusive lock cannot be had while another process
//! holds the database open: there is no fence then, and the record says why, naming
//! the processes. Stopping them first (`depends_on`) is what fences them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::{open_existing, sq, SqliteDriver};
use crate::driver::FencePlan;
use crate::error::Result;

/// How long the fence waits for transactions in flight to end.
const TAKE_WAIT: Duration = Duration::from_secs(10);
/// The same in WAL mode (see [`take`]).
const WAL_TAKE_WAIT: Duration = Duration::from_secs(2);

/// Takes the exclusive lock and keeps it: the connection in `locking_mode =
/// EXCLUSIVE` never lets go of a lock it took until it is set back to normal.
///
/// Tried every millisecond rather than through SQLite's busy handler: that one
/// sleeps ever longer between tries without holding anything, and a writer that
/// commits in a loop leaves gaps of microseconds, so it starved for 5 s here.
fn take(path: &Path) -> Result<Connection> {
    let c = open_existing(path)?;
    c.busy_timeout(Duration::ZERO).map_err(|e| sq(e, "cannot set a busy timeout"))?;
    // In WAL mode a connection left open blocks the lock for as long as it stays
    // open: waiting long rarely helps, and only delays the record saying so.
    let wal = c
        .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
        .map(|m| m.eq_ignore_ascii_case("wal"))
        .unwrap_or(false);
    let wait = if wal { WAL_TAKE_WAIT } else { TAKE_WAIT };
    c.execute_batch("PRAGMA locking_mode = EXCLUSIVE").map_err(|e| sq(e, "cannot set the locking mode"))?;
    let t0 = Instant::now();
    loop {
        match c.execute_batch("BEGIN EXCLUSIVE; COMMIT;") {
            Ok(()) => break,
            Err(e) if busy(&e) && t0.elapsed() < wait => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(sq(e, format_args!("cannot lock {}", path.display()))),
        }
    }
    c.busy_timeout(super::BUSY).map_err(|e| sq(e, "cannot set a busy timeout"))?;
    Ok(c)
}

fn busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// Lets go of the lock: a normal locking mode takes effect at the next access.
fn release(c: Connection) {
    let _ = c.execute_batch("PRAGMA locking_mode = NORMAL; SELECT count(*) FROM sqlite_master;");
    drop(c);
}

/// The processes other than this one that hold `path` (or its `-wal`) open, as
/// `pid (name)`, from `/proc` (empty where it cannot be read).
fn holders(path: &Path) -> Vec<String> {
    let Ok(real) = path.canonicalize() else { return Vec::new() };
    let mut wal = real.clone().into_os_string();
    wal.push("-wal");
    let wanted = [real, PathBuf::from(wal)];
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return out };
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        if fds.flatten().any(|fd| std::fs::read_link(fd.path()).map(|t| wanted.contains(&t)).unwrap_or(false)) {
            let name = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            out.push(format!("{pid} ({})", name.trim()));
        }
    }
    out
}

impl SqliteDriver {
    pub(super) async fn plan_write_fence(&self) -> Result<FencePlan> {
        if !self.fence {
            return Ok(FencePlan::Unavailable { reason: "`fence = false` is set".into() });
        }
        if !self.path.is_file() {
            return Ok(FencePlan::Unavailable { reason: format!("{} does not exist", self.path.display()) });
        }
        // Taken here, not when raised: whether it can be had is the plan.
        let path = self.path.clone();
        let taken = super::blocking(move || Ok(take(&path).map_err(|e| (e, holders(&path))))).await?;
        match taken {
            Ok(c) => {
                *self.held() = Some(c);
                Ok(FencePlan::Ready { undo: serde_json::json!({ "path": self.path.display().to_string() }) })
            }
            Err((e, pids)) => Ok(FencePlan::Unavailable {
                reason: format!(
                    "the database's exclusive lock could not be had ({}){}",
                    e.message(),
                    if pids.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; held open by {} (in WAL mode an open connection keeps a shared lock): stop it first \
                             (make it depends_on this component)",
                            pids.join(", ")
                        )
                    }
                ),
            }),
        }
    }

    pub(super) async fn raise_write_fence(&self) -> Result<String> {
        if self.held().is_none() {
            // Raised again by `resume`: the killed run's lock died with it.
            let path = self.path.clone();
            let c = super::blocking(move || take(&path)).await?;
            *self.held() = Some(c);
        }
        Ok(format!(
            "{} locked exclusively (locking_mode = EXCLUSIVE): other connections' writes and reads get SQLITE_BUSY; \
             the restore writes into the file in place",
            self.path.display()
        ))
    }

    pub(super) async fn lift_write_fence(&self) -> Result<()> {
        let held = self.held().take();
        if let Some(c) = held {
            super::blocking(move || {
                release(c);
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    pub(super) fn held(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        self.fenced.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the live database on a blocking thread: through the fence's
    /// connection while it is up (`true`), otherwise on a connection of its own.
    pub(super) async fn on_live<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&mut Connection, bool) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let held = self.held().take();
        let path = self.path.clone();
        let (back, r) = super::blocking(move || match held {
            Some(mut c) => {
                let r = f(&mut c, true);
                Ok((Some(c), r))
            }
            None => {
                let mut c = open_existing(&path)?;
                let r = f(&mut c, false);
                Ok((None, r))
            }
        })
        .await?;
        if let Some(c) = back {
            *self.held() = Some(c);
        }
        r
    }

    /// Whether the fence is up in this process.
    pub(super) fn fenced(&self) -> bool {
        self.held().is_some()
    }
}
