//! The write fence, one of two kinds by the database's journal mode.
//!
//! In rollback-journal mode, a connection of the rollback's in `locking_mode =
//! EXCLUSIVE` takes the database's exclusive lock (`BEGIN EXCLUSIVE; COMMIT`) and
//! keeps it until the fence is lifted. Every other connection, of any process, then
//! gets `SQLITE_BUSY` (after its own busy timeout) for a write, which is never
//! acknowledged, and for a read too: in that mode no lock refuses writers and lets
//! readers of another connection in while one connection rewrites the file. The
//! restore writes into the file in place (the backup API into the held connection).
//!
//! In WAL mode an open connection keeps a shared lock on the file for as long as it
//! is open, idle or not, so an exclusive lock cannot be had while an application
//! holds the database open, which is how most do. There the fence is a write
//! transaction held open (`BEGIN IMMEDIATE`): it holds the WAL's one write lock, so
//! other connections' writes get `SQLITE_BUSY` and are never acknowledged, while
//! their reads go on, seeing the last committed state. The backup API cannot write
//! into a connection with a transaction open, so the restore is written as SQL into
//! that transaction (`copy.rs`), committed, and the write lock taken again at once
//! for the comparison that follows.
//!
//! Either way, while the fence is up the driver's own capture, discards, restore and
//! comparison go through the fence's connection, and the restore writes into the
//! file in place, whatever `restore` says, so a process that holds the file open
//! keeps seeing the database it writes to.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::{open_existing, sq, SqliteDriver};
use crate::driver::FencePlan;
use crate::error::Result;

/// How long the fence waits for transactions in flight to end.
const TAKE_WAIT: Duration = Duration::from_secs(10);

/// Which fence a connection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Rollback-journal mode: the exclusive lock, kept by `locking_mode = EXCLUSIVE`.
    Exclusive,
    /// WAL mode: a write transaction held open.
    Transaction,
}

/// The fence's connection and its kind. The kind is kept, not read off the
/// connection: an error that rolls the whole transaction back (I/O, a full disk)
/// leaves it in autocommit, and it must then be taken again, never taken for the
/// other kind.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) conn: Connection,
    pub(super) kind: Kind,
}

/// Raises the fence on a connection of its own (see the module's doc) and returns
/// it: in WAL mode with its write transaction open, otherwise in `locking_mode =
/// EXCLUSIVE` holding the exclusive lock, which such a connection never lets go of
/// until it is set back to normal.
fn take(path: &Path) -> Result<Held> {
    let c = open_existing(path)?;
    // Read under the same wait: a writer's lock keeps even this read out in
    // rollback-journal mode.
    let wal = retry(&c, path, |c| c.query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0)))?
        .eq_ignore_ascii_case("wal");
    if wal {
        // The restore drops and creates tables in this transaction: SQLite's
        // `foreign_keys` (on in this build) would cascade or refuse those drops, and
        // can only be set outside a transaction.
        // Rows the snapshot holds are put back as they were, also those a CHECK added
        // since would refuse. And no checkpoint in the restore's COMMIT: it would
        // run after the write lock is let go and before it is taken again, a gap of
        // seconds for a large database instead of microseconds (lifting checkpoints).
        c.execute_batch(
            "PRAGMA foreign_keys = OFF; PRAGMA ignore_check_constraints = ON; PRAGMA wal_autocheckpoint = 0",
        )
        .map_err(|e| sq(e, "cannot set up the fence's connection"))?;
        begin_immediate(&c, path)?;
    } else {
        c.execute_batch("PRAGMA locking_mode = EXCLUSIVE").map_err(|e| sq(e, "cannot set the locking mode"))?;
        retry(&c, path, |c| c.execute_batch("BEGIN EXCLUSIVE; COMMIT;"))?;
    }
    Ok(Held { conn: c, kind: if wal { Kind::Transaction } else { Kind::Exclusive } })
}

/// Opens the write transaction that is the WAL-mode fence (see [`retry`]).
pub(super) fn begin_immediate(c: &Connection, path: &Path) -> Result<()> {
    retry(c, path, |c| c.execute_batch("BEGIN IMMEDIATE"))
}

/// Runs `f` on `c` until it does not find the database busy, for up to
/// [`TAKE_WAIT`], with `c`'s own busy handler off meanwhile.
///
/// Tried every millisecond rather than through SQLite's busy handler: that one
/// sleeps ever longer between tries without holding anything, and a writer that
/// commits in a loop leaves gaps of microseconds, so it starved for 5 s here.
fn retry<T>(c: &Connection, path: &Path, f: impl Fn(&Connection) -> rusqlite::Result<T>) -> Result<T> {
    c.busy_timeout(Duration::ZERO).map_err(|e| sq(e, "cannot set a busy timeout"))?;
    let t0 = Instant::now();
    let r = loop {
        match f(c) {
            Ok(v) => break Ok(v),
            Err(e) if busy(&e) && t0.elapsed() < TAKE_WAIT => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => break Err(sq(e, format_args!("cannot lock {}", path.display()))),
        }
    };
    c.busy_timeout(super::BUSY).map_err(|e| sq(e, "cannot set a busy timeout"))?;
    r
}

fn busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// Lets go of the lock: a normal locking mode takes effect at the next access, and
/// a WAL-mode fence's transaction holds nothing of its own (a restore commits). The
/// WAL a restore filled is then checkpointed without blocking anyone (`PASSIVE`):
/// the fence's connection had automatic checkpoints off.
fn release(h: Held) {
    let c = h.conn;
    match h.kind {
        Kind::Transaction => {
            if !c.is_autocommit() {
                let _ = c.execute_batch("ROLLBACK");
            }
            let _ = c.execute_batch("PRAGMA wal_checkpoint(PASSIVE)");
        }
        Kind::Exclusive => {
            let _ = c.execute_batch("PRAGMA locking_mode = NORMAL; SELECT count(*) FROM sqlite_master;");
        }
    }
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
                    "the database's lock could not be had in {} s ({}){}",
                    TAKE_WAIT.as_secs(),
                    e.message(),
                    if pids.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; held open by {}, whose transaction kept it: stop it first (make it depends_on this \
                             component)",
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
        let wal = self.held().as_ref().is_some_and(|h| h.kind == Kind::Transaction);
        Ok(if wal {
            format!(
                "{}: a write transaction held open (BEGIN IMMEDIATE, WAL mode): other connections' writes get \
                 SQLITE_BUSY, their reads go on; the restore writes into the file in place through it",
                self.path.display()
            )
        } else {
            format!(
                "{} locked exclusively (locking_mode = EXCLUSIVE): other connections' writes and reads get \
                 SQLITE_BUSY; the restore writes into the file in place",
                self.path.display()
            )
        })
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

    pub(super) fn held(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
        self.fenced.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the live database on a blocking thread: through the fence's
    /// connection while it is up (with its kind), otherwise on a connection of its
    /// own (`None`). The fence's connection goes back even when `f` panics: dropped,
    /// it would lift the fence unseen.
    pub(super) async fn on_live<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&mut Connection, Option<Kind>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let held = self.held().take();
        let path = self.path.clone();
        let (back, r) = super::blocking(move || match held {
            Some(mut h) => {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut h.conn, Some(h.kind))))
                    .unwrap_or_else(|_| Err(crate::error::Error::unexpected("the SQLite work panicked")));
                Ok((Some(h), r))
            }
            None => {
                let mut c = open_existing(&path)?;
                let r = f(&mut c, None);
                Ok((None, r))
            }
        })
        .await?;
        if let Some(h) = back {
            *self.held() = Some(h);
        }
        r
    }

    /// Whether the fence is up in this process.
    pub(super) fn fenced(&self) -> bool {
        self.held().is_some()
    }
}
