//! The stack's rollback lock: an OS file lock, released by the kernel if the
//! process dies, so a killed rollback never blocks `resume`.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// Held while a rollback runs; dropping it releases the lock.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    pub(crate) fn acquire(path: &Path) -> Result<StoreLock> {
        Self::take(path, false)
    }

    /// Shared: snapshots may run together, but not while a rollback runs.
    pub(crate) fn acquire_shared(path: &Path) -> Result<StoreLock> {
        Self::take(path, true)
    }

    fn take(path: &Path, shared: bool) -> Result<StoreLock> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(Error::from)?;
        let r = if shared { f.try_lock_shared() } else { f.try_lock() };
        match r {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(path).unwrap_or_default();
                // Only an exclusive holder (a rollback, drill, resume or gc) writes its
                // pid; snapshots share the lock and write nothing.
                let who = if holder.trim().is_empty() {
                    "a snapshot is being taken".to_string()
                } else {
                    format!("another rollback holds it: {}", holder.trim())
                };
                return Err(Error::new(
                    ErrorKind::Locked,
                    format!("the lock of this stack ({}) is busy: {who}", path.display()),
                ));
            }
            Err(TryLockError::Error(e)) => return Err(Error::from(e)),
        }
        // No exclusive holder now: what an earlier (perhaps killed) one wrote is stale.
        let _ = f.set_len(0);
        if !shared {
            let _ = writeln!(f, "rollback running in pid {}", std::process::id());
        }
        Ok(StoreLock { _file: f })
    }
}
