//! The built-in drivers, each behind its `driver-<name>` feature.

use crate::registry::Registry;

#[cfg(feature = "driver-command")]
pub mod command;
#[cfg(feature = "driver-docker")]
pub mod docker;
#[cfg(feature = "driver-dokku")]
pub mod dokku;
#[cfg(feature = "driver-files")]
pub mod files;
#[cfg(feature = "driver-git")]
pub mod git;
#[cfg(feature = "driver-mysql")]
pub mod mysql;
#[cfg(feature = "driver-pm2")]
pub mod pm2;
#[cfg(feature = "driver-postgres")]
pub mod postgres;
#[cfg(feature = "driver-redis")]
pub mod redis;
#[cfg(feature = "driver-releases")]
pub mod releases;
#[cfg(feature = "driver-sqlite")]
pub mod sqlite;

/// Registers every driver compiled into this build.
pub fn install_default_drivers(r: &mut Registry) {
    #[cfg(feature = "driver-git")]
    r.register("git", git::factory);
    #[cfg(feature = "driver-files")]
    r.register("files", files::factory);
    #[cfg(feature = "driver-releases")]
    r.register("releases", releases::factory);
    #[cfg(feature = "driver-command")]
    r.register("command", command::factory);
    #[cfg(feature = "driver-postgres")]
    r.register("postgres", postgres::factory);
    #[cfg(feature = "driver-mysql")]
    r.register("mysql", mysql::factory);
    #[cfg(feature = "driver-redis")]
    r.register("redis", redis::factory);
    #[cfg(feature = "driver-sqlite")]
    r.register("sqlite", sqlite::factory);
    #[cfg(feature = "driver-docker")]
    r.register("docker", docker::factory);
    #[cfg(feature = "driver-pm2")]
    r.register("pm2", pm2::factory);
    #[cfg(feature = "driver-dokku")]
    r.register("dokku", dokku::factory);
    let _ = r;
}

/// Runs blocking work (git2, file walks, SQLite) off the async threads; drivers in
/// other crates can use it too.
///
/// Inside a rollback step the work is counted: a blocking thread cannot be stopped,
/// so when the step times out (its future dropped) the work goes on, and the executor
/// waits for it before it restores the same component from the safety snapshot.
/// Otherwise a compensation could race a file restore still writing.
pub async fn blocking<T, F>(f: F) -> crate::Result<T>
where
    F: FnOnce() -> crate::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let guard = IN_FLIGHT.try_with(InFlight::enter).ok();
    tokio::task::spawn_blocking(move || {
        let _counted = guard;
        f()
    })
    .await
    .map_err(|e| crate::Error::unexpected("a blocking task failed").with_source(e))?
}

tokio::task_local! {
    /// The executor's tracker, set around each step it runs.
    pub(crate) static IN_FLIGHT: InFlight;
}

/// Counts the blocking work of the steps run under it.
#[derive(Clone, Default)]
pub(crate) struct InFlight(std::sync::Arc<InFlightInner>);

#[derive(Default)]
pub(crate) struct InFlightInner {
    running: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One piece of work; counted until dropped (on the blocking thread, when it ends).
pub(crate) struct InFlightGuard(InFlight);

impl InFlight {
    fn enter(&self) -> InFlightGuard {
        self.0.running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    pub(crate) fn running(&self) -> usize {
        self.0.running.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until no counted work runs, for at most `max`; whether it got there.
    pub(crate) async fn wait_idle(&self, max: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            // Created before the check: a wake-up between the two is not lost.
            let idle = self.0.idle.notified();
            if self.running() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.running() == 0;
            }
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0 .0.running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.0 .0.idle.notify_waiters();
        }
    }
}

/// Of two sorted lists of row hashes: how many are only in `then`, and only in
/// `now` (duplicates counted). What a table restore would discard, per table.
#[cfg(any(feature = "driver-postgres", feature = "driver-sqlite"))]
pub(crate) fn multiset_diff(then: &[u64], now: &[u64]) -> (u64, u64) {
    let (mut i, mut j, mut only_then, mut only_now) = (0, 0, 0u64, 0u64);
    while i < then.len() && j < now.len() {
        match then[i].cmp(&now[j]) {
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Less => {
                only_then += 1;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                only_now += 1;
                j += 1;
            }
        }
    }
    (only_then + (then.len() - i) as u64, only_now + (now.len() - j) as u64)
}

/// The name a restore writes `dest`'s new content under, beside it, before renaming
/// it in: `.<name>.rollback-<8 hex>`.
#[cfg(any(feature = "driver-files", feature = "driver-sqlite"))]
pub(crate) fn aside_path(dest: &std::path::Path) -> Option<std::path::PathBuf> {
    let name = dest.file_name()?.to_string_lossy().to_string();
    Some(dest.parent()?.join(format!(".{name}.rollback-{:08x}", rand::random::<u32>())))
}

/// Removes what a killed restore left beside `dest`: files written aside under
/// [`aside_path`] names and never renamed in. Run before writing aside again.
#[cfg(any(feature = "driver-files", feature = "driver-sqlite"))]
pub(crate) fn remove_stale_aside(dest: &std::path::Path) {
    let (Some(dir), Some(name)) = (dest.parent(), dest.file_name()) else { return };
    let prefix = format!(".{}.rollback-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        let stale =
            n.strip_prefix(&prefix).is_some_and(|rest| rest.len() == 8 && rest.bytes().all(|b| b.is_ascii_hexdigit()));
        if stale {
            tracing::info!(file = %e.path().display(), "removing what an interrupted restore left");
            let _ = std::fs::remove_file(e.path());
        }
    }
}
