//! The snapshot store: a local directory of content-addressed artifacts, immutable
//! snapshot manifests, journals and records.
//!
//! Layout:
//! ```text
//! objects/ab/<sha256>      artifacts, written aside and renamed into place
//! snapshots/<id>.json      manifests, never overwritten
//! journals/<rollback>.json the executor's write-ahead journal
//! records/<rollback>.json  records (+ .md reports)
//! tmp/                     work in progress
//! lock                     held while a rollback runs
//! ```

mod lock;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::record::Record;
use crate::snapshot::SnapshotManifest;

pub use lock::StoreLock;

/// A stored artifact: its name within the part, checksum and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// Name of the artifact within its part (e.g. `dump.sql`, `files/etc/app.json`).
    pub name: String,
    /// Hex sha256 of the content; also its address in the store.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
}

/// A capture that began and has not ended (see [`Store::begin_capture`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UnfinishedCapture {
    pub(crate) id: String,
    pub(crate) components: Vec<String>,
    pub(crate) started_at: chrono::DateTime<chrono::Utc>,
}

/// The store of one stack.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating when missing) the store at `root`.
    ///
    /// Directories are created 0700 and files 0600 whatever the umask: the store
    /// holds copies of `.env` files, database dumps and container environments.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        create_private_dir(&root).ctx(|| format!("cannot create store directory {}", root.display()))?;
        for d in ["objects", "snapshots", "journals", "records", "tmp", "gc", "captures"] {
            create_private_dir(&root.join(d))
                .ctx(|| format!("cannot create store directory {}", root.join(d).display()))?;
        }
        Ok(Store { root })
    }

    /// What in the store other local users can read or write (for `check`): its
    /// directories and files should be 0700 and 0600. At most `limit` paths are named.
    pub fn permission_warnings(&self, limit: usize) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let mut wide = Vec::new();
        let mut count = 0usize;
        let mut stack = vec![self.root.clone()];
        while let Some(p) = stack.pop() {
            let Ok(meta) = fs::symlink_metadata(&p) else { continue };
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 && p.file_name().is_none_or(|n| n != "lock") {
                count += 1;
                if wide.len() < limit {
                    wide.push(format!("{} is mode {mode:04o}", p.display()));
                }
            }
            if meta.is_dir() {
                if let Ok(rd) = fs::read_dir(&p) {
                    stack.extend(rd.flatten().map(|e| e.path()));
                }
            }
        }
        if count == 0 {
            return Vec::new();
        }
        let mut out = vec![format!(
            "{count} path{} in the store {} readable or writable by other users (it holds secrets); \
             fix with `chmod -R go-rwx {}`",
            if count == 1 { "" } else { "s" },
            if count == 1 { "is" } else { "are" },
            self.root.display()
        )];
        out.extend(wide);
        out
    }

    /// Removes what interrupted work left in `tmp/` (a snapshot killed mid-write,
    /// a command's copy of its state). Call only under the exclusive lock: snapshots,
    /// which write there, hold the lock shared.
    pub(crate) fn clean_tmp(&self) -> (usize, u64) {
        let (mut n, mut bytes) = (0, 0);
        let Ok(rd) = fs::read_dir(self.tmp_dir()) else { return (0, 0) };
        for e in rd.flatten() {
            let p = e.path();
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            let removed = if e.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&p).is_ok()
            } else {
                fs::remove_file(&p).is_ok()
            };
            if removed {
                n += 1;
                bytes += size;
            }
        }
        if n > 0 {
            tracing::info!(files = n, bytes, "removed leftovers of interrupted work from the store's tmp/");
        }
        (n, bytes)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A scratch directory inside the store (same filesystem, so renames are atomic).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Takes the stack's rollback lock, or fails with [`ErrorKind::Locked`].
    pub fn lock(&self) -> Result<StoreLock> {
        StoreLock::acquire(&self.root.join("lock"))
    }

    /// Takes the lock shared (snapshots), failing with [`ErrorKind::Locked`] while a
    /// rollback holds it.
    pub fn lock_shared(&self) -> Result<StoreLock> {
        StoreLock::acquire_shared(&self.root.join("lock"))
    }

    /// Like [`Store::lock`] / [`Store::lock_shared`], but a lock that is busy only for
    /// a moment is waited for (up to 500 ms) before `Locked` is reported.
    ///
    /// Why: a lock is held by an open file description, and a child process forked
    /// by another thread of this process shares it until its `exec`. In the bindings,
    /// where several calls run in one process, that moment would otherwise read as
    /// "another rollback holds the lock".
    pub async fn lock_patiently(&self, shared: bool) -> Result<StoreLock> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
        loop {
            let r = if shared { self.lock_shared() } else { self.lock() };
            match r {
                Err(e) if e.kind() == ErrorKind::Locked && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
                r => return r,
            }
        }
    }

    fn object_path(&self, sha: &str) -> PathBuf {
        self.root.join("objects").join(&sha[..2]).join(sha)
    }

    /// A writer that hashes while it writes; `finish` files it under its checksum.
    pub fn artifact_writer(&self, name: impl Into<String>) -> Result<ArtifactWriter> {
        let (file, path) = tempfile_in(&self.tmp_dir())?;
        Ok(ArtifactWriter {
            name: name.into(),
            file: Some(io::BufWriter::with_capacity(1 << 20, file)),
            tmp: path,
            hasher: Sha256::new(),
            size: 0,
            store: self.clone(),
        })
    }

    /// Stores bytes.
    pub fn put_bytes(&self, name: impl Into<String>, bytes: &[u8]) -> Result<ArtifactRef> {
        let mut w = self.artifact_writer(name)?;
        w.write_all(bytes).ctx(|| "cannot write artifact".into())?;
        w.finish()
    }

    /// Stores a copy of a file.
    pub fn put_file(&self, name: impl Into<String>, path: &Path) -> Result<ArtifactRef> {
        let mut f = File::open(path).ctx(|| format!("cannot read {}", path.display()))?;
        let mut w = self.artifact_writer(name)?;
        io::copy(&mut f, &mut w).ctx(|| format!("cannot copy {} into the store", path.display()))?;
        w.finish()
    }

    /// The file holding an artifact (not checked; see [`Store::check_artifact`]).
    pub fn artifact_path(&self, a: &ArtifactRef) -> Result<PathBuf> {
        if a.sha256.len() != 64 || !a.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::new(ErrorKind::Corrupt, format!("artifact `{}` has an invalid checksum field", a.name)));
        }
        Ok(self.object_path(&a.sha256))
    }

    /// Re-hashes an artifact; refuses one that is missing or fails its checksum.
    pub fn check_artifact(&self, a: &ArtifactRef) -> Result<PathBuf> {
        let p = self.artifact_path(a)?;
        let mut f = File::open(&p).map_err(|e| {
            Error::new(
                ErrorKind::Corrupt,
                format!("artifact `{}` ({}) is missing from the store", a.name, short(&a.sha256)),
            )
            .with_source(e)
        })?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf).ctx(|| format!("cannot read artifact {}", p.display()))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            h.update(&buf[..n]);
        }
        let got = hex::encode(h.finalize());
        if got != a.sha256 || size != a.size {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "artifact `{}` fails its checksum (expected {} / {} bytes, found {} / {} bytes); refusing to use it",
                    a.name,
                    short(&a.sha256),
                    a.size,
                    short(&got),
                    size
                ),
            ));
        }
        Ok(p)
    }

    /// Reads a whole artifact after checking it.
    pub fn read_artifact(&self, a: &ArtifactRef) -> Result<Vec<u8>> {
        let p = self.check_artifact(a)?;
        let data = fs::read(&p).ctx(|| format!("cannot read artifact {}", p.display()))?;
        // Re-check what was read: the file could change between check and read.
        if hex::encode(Sha256::digest(&data)) != a.sha256 {
            return Err(Error::new(ErrorKind::Corrupt, format!("artifact `{}` changed while read", a.name)));
        }
        Ok(data)
    }

    // ---- snapshots ----

    fn snapshot_path(&self, id: &str) -> Result<PathBuf> {
        validate_id(id)?;
        Ok(self.root.join("snapshots").join(format!("{id}.json")))
    }

    /// Writes a manifest; a snapshot is immutable, so an existing id is an error.
    pub fn write_snapshot(&self, m: &SnapshotManifest) -> Result<()> {
        let path = self.snapshot_path(&m.id)?;
        let json =
            serde_json::to_vec_pretty(m).map_err(|e| Error::unexpected("cannot encode manifest").with_source(e))?;
        write_new_durable(&self.tmp_dir(), &path, &json).map_err(|e| match e.kind() {
            ErrorKind::Locked => Error::new(ErrorKind::Unexpected, format!("snapshot `{}` already exists", m.id)),
            _ => e,
        })?;
        // Read-only on disk as a reminder; the store never rewrites it. Owner only:
        // a manifest's state may name hosts, users and paths.
        let _ = fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o400));
        Ok(())
    }

    /// Loads one manifest by exact id.
    pub fn load_snapshot(&self, id: &str) -> Result<SnapshotManifest> {
        let path = self.snapshot_path(id)?;
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!("no snapshot `{id}` in {}", self.root.display())))
            }
            Err(e) => return Err(Error::from(e)),
        };
        serde_json::from_slice(&data).map_err(|e| {
            Error::new(ErrorKind::Corrupt, format!("snapshot manifest `{id}` is unreadable")).with_source(e)
        })
    }

    /// Every snapshot, oldest first.
    pub fn list_snapshots(&self) -> Result<Vec<SnapshotManifest>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.root.join("snapshots")).ctx(|| "cannot list snapshots".into())? {
            let e = e?;
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(id) = name.strip_suffix(".json") {
                match self.load_snapshot(id) {
                    Ok(m) => out.push(m),
                    Err(err) => tracing::warn!(snapshot = id, error = %err, "skipping unreadable snapshot"),
                }
            }
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Resolves what a user typed: an id, a unique id prefix, `latest`, or `last-good`.
    pub fn resolve_snapshot(&self, reference: &str) -> Result<SnapshotManifest> {
        let all = || -> Result<Vec<SnapshotManifest>> {
            Ok(self.list_snapshots()?.into_iter().filter(|s| s.safety_for.is_none()).collect())
        };
        match reference {
            "latest" => all()?.pop().ok_or_else(|| Error::not_found("there are no snapshots yet")),
            "last-good" => all()?
                .into_iter()
                .rev()
                .find(|s| s.healthy == Some(true))
                .ok_or_else(|| Error::not_found("no snapshot was taken while the stack was healthy (last-good)")),
            r => {
                validate_id(r)?;
                match self.load_snapshot(r) {
                    Ok(m) => Ok(m),
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        let mut hits: Vec<_> =
                            self.list_snapshots()?.into_iter().filter(|s| s.id.starts_with(r)).collect();
                        match hits.len() {
                            1 => Ok(hits.remove(0)),
                            0 => Err(e),
                            n => Err(Error::config(format!("`{r}` matches {n} snapshots; give more of the id"))),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Forgets a manifest (gc): it moves to `gc/`, where no listing sees it, until
    /// [`Store::drop_forgotten`] once what it pinned is released. Its artifacts are
    /// collected separately.
    pub(crate) fn forget_snapshot(&self, id: &str) -> Result<()> {
        let p = self.snapshot_path(id)?;
        let to = self.root.join("gc").join(format!("{id}.json"));
        create_private_dir(&self.root.join("gc"))?;
        fs::rename(&p, &to).ctx(|| format!("cannot move {} aside", p.display()))?;
        sync_dir(&to);
        sync_dir(&p);
        Ok(())
    }

    /// Snapshots forgotten by a gc whose releases have not finished.
    pub(crate) fn list_forgotten(&self) -> Result<Vec<SnapshotManifest>> {
        read_json_dir(&self.root.join("gc"))
    }

    /// Drops a forgotten snapshot's entry once what it pinned is released.
    pub(crate) fn drop_forgotten(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        let p = self.root.join("gc").join(format!("{id}.json"));
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::from(e)),
            _ => Ok(()),
        }
    }

    /// Deletes artifacts no manifest references; returns (files, bytes) freed.
    pub(crate) fn sweep_objects(&self) -> Result<(usize, u64)> {
        let mut live = std::collections::HashSet::new();
        // Every manifest must be readable: the artifacts of one we cannot read
        // would look unused.
        let mut manifests = Vec::new();
        for e in fs::read_dir(self.root.join("snapshots"))? {
            let name = e?.file_name().to_string_lossy().to_string();
            if let Some(id) = name.strip_suffix(".json") {
                manifests.push(self.load_snapshot(id).map_err(|e| {
                    Error::new(
                        e.kind(),
                        format!("gc stopped before deleting artifacts: snapshot `{id}` is unreadable ({e})"),
                    )
                })?);
            }
        }
        // A forgotten snapshot's release may still need its artifacts.
        manifests.extend(self.list_forgotten()?);
        for s in manifests {
            for p in &s.parts {
                for a in &p.artifacts {
                    live.insert(a.sha256.clone());
                }
            }
        }
        let (mut n, mut bytes) = (0, 0);
        for dir in fs::read_dir(self.root.join("objects"))? {
            let dir = dir?;
            if !dir.file_type()?.is_dir() {
                continue;
            }
            for f in fs::read_dir(dir.path())? {
                let f = f?;
                let name = f.file_name().to_string_lossy().to_string();
                if !live.contains(&name) {
                    bytes += f.metadata().map(|m| m.len()).unwrap_or(0);
                    fs::remove_file(f.path())?;
                    n += 1;
                }
            }
        }
        Ok((n, bytes))
    }

    // ---- captures that have not finished ----

    /// Notes, durably, that a capture of snapshot `id` of `components` starts. What it
    /// pins outside the store (tags, server-side copies) before its manifest exists
    /// can then be found and released if the process dies; see
    /// [`Store::end_capture`].
    pub(crate) fn begin_capture(&self, id: &str, components: &[String]) -> Result<()> {
        validate_id(id)?;
        let c =
            UnfinishedCapture { id: id.to_string(), components: components.to_vec(), started_at: chrono::Utc::now() };
        let bytes = serde_json::to_vec_pretty(&c).map_err(|e| Error::unexpected("capture note").with_source(e))?;
        replace_durable(&self.tmp_dir(), &self.root.join("captures").join(format!("{id}.json")), &bytes)
    }

    /// The capture of `id` ended: its manifest is written, or what it pinned released.
    pub(crate) fn end_capture(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        let p = self.root.join("captures").join(format!("{id}.json"));
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::from(e)),
            _ => {
                sync_dir(&p);
                Ok(())
            }
        }
    }

    /// Captures begun and never ended. Only meaningful under the exclusive lock (a
    /// capture in progress holds the shared one): then each of these was killed.
    ///
    /// A note that cannot be read is skipped with a warning, never an error: it must
    /// not stop the rollbacks and gc that would clean up after it.
    pub(crate) fn unfinished_captures(&self) -> Vec<UnfinishedCapture> {
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir(self.root.join("captures")) else { return out };
        for p in rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")) {
            // Gone since the listing: that capture just ended.
            let Ok(data) = fs::read(&p) else { continue };
            match serde_json::from_slice::<UnfinishedCapture>(&data) {
                Ok(c) => out.push(c),
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "an unreadable capture note is left as it is")
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Whether the manifest of snapshot `id` exists (readable or not: a snapshot
    /// whose manifest is there finished, and its pins are its own).
    pub(crate) fn has_snapshot(&self, id: &str) -> bool {
        self.snapshot_path(id).is_ok_and(|p| p.exists())
    }

    // ---- journals and records ----

    /// Path of a rollback's journal.
    pub fn journal_path(&self, rollback_id: &str) -> Result<PathBuf> {
        validate_id(rollback_id)?;
        Ok(self.root.join("journals").join(format!("{rollback_id}.json")))
    }

    /// Where a finished journal is kept, out of the way of every rollback's start
    /// (which reads each journal in `journals/` to find unfinished ones).
    pub(crate) fn finished_journal_path(&self, rollback_id: &str) -> Result<PathBuf> {
        validate_id(rollback_id)?;
        Ok(self.root.join("journals").join("finished").join(format!("{rollback_id}.json")))
    }

    /// Moves a finished journal to `journals/finished/`. Best effort: a journal left
    /// behind is still read as finished, and moved by the next call.
    pub(crate) fn retire_journal(&self, rollback_id: &str) {
        let (Ok(from), Ok(to)) = (self.journal_path(rollback_id), self.finished_journal_path(rollback_id)) else {
            return;
        };
        let moved = to.parent().map_or(Ok(()), create_private_dir).and_then(|()| fs::rename(&from, &to));
        match moved {
            Ok(()) => {
                sync_dir(&to);
                sync_dir(&from);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(journal = %from.display(), error = %e, "cannot move a finished journal aside"),
        }
    }

    /// Replaces a journal durably (write aside, fsync, rename, fsync dir).
    pub fn write_journal(&self, rollback_id: &str, bytes: &[u8]) -> Result<()> {
        let p = self.journal_path(rollback_id)?;
        replace_durable(&self.tmp_dir(), &p, bytes)
    }

    /// Writes a record and its Markdown report.
    pub fn write_record(&self, r: &Record) -> Result<()> {
        validate_id(&r.rollback_id)?;
        let dir = self.root.join("records");
        let json =
            serde_json::to_vec_pretty(r).map_err(|e| Error::unexpected("cannot encode record").with_source(e))?;
        replace_durable(&self.tmp_dir(), &dir.join(format!("{}.json", r.rollback_id)), &json)?;
        replace_durable(&self.tmp_dir(), &dir.join(format!("{}.md", r.rollback_id)), r.to_markdown().as_bytes())
    }

    /// Loads a record by id (or unique prefix, or `latest`), or from a path to its JSON.
    pub fn load_record(&self, reference: &str) -> Result<Record> {
        let p = Path::new(reference);
        if reference.ends_with(".json") && p.exists() {
            let d = fs::read(p).ctx(|| format!("cannot read {}", p.display()))?;
            return serde_json::from_slice(&d).map_err(|e| {
                Error::new(ErrorKind::Corrupt, format!("{} is not a record", p.display())).with_source(e)
            });
        }
        // Only the records the reference can name are read: ids begin with their
        // start time, so the newest is the last name.
        let ids = self.record_ids()?;
        if reference == "latest" {
            let newest = ids.last().ok_or_else(|| Error::not_found("there are no records yet"))?;
            return self.read_record(newest);
        }
        validate_id(reference)?;
        let mut hits: Vec<Record> = ids
            .iter()
            .filter(|id| id.starts_with(reference))
            .filter_map(|id| {
                self.read_record(id)
                    .map_err(|e| tracing::warn!(record = %id, error = %e, "skipping unreadable record"))
                    .ok()
            })
            .collect();
        if let Some(i) = hits.iter().position(|r| r.rollback_id == reference) {
            return Ok(hits.swap_remove(i));
        }
        match hits.len() {
            1 => Ok(hits.remove(0)),
            0 => Err(Error::not_found(format!("no record `{reference}`"))),
            n => Err(Error::config(format!("`{reference}` matches {n} records; give more of the id"))),
        }
    }

    /// The ids of every record, by name (which is by start time).
    fn record_ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for e in fs::read_dir(self.root.join("records"))? {
            let name = e?.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    fn read_record(&self, id: &str) -> Result<Record> {
        let p = self.root.join("records").join(format!("{id}.json"));
        let d = fs::read(&p).ctx(|| format!("cannot read {}", p.display()))?;
        serde_json::from_slice(&d)
            .map_err(|e| Error::new(ErrorKind::Corrupt, format!("{} is not a record", p.display())).with_source(e))
    }

    /// The newest `n` records (by id, which begins with the start time), oldest
    /// first; unreadable ones are skipped. What a rollback needs of the past (the
    /// plan's predicted durations, a later rollback's existence) without reading
    /// every record the store has kept.
    pub(crate) fn recent_records(&self, n: usize) -> Result<Vec<Record>> {
        let ids = self.record_ids()?;
        Ok(ids[ids.len().saturating_sub(n)..].iter().filter_map(|id| self.read_record(id).ok()).collect())
    }

    /// The records of rollbacks that started after `rollback_id` (by id).
    pub(crate) fn records_after(&self, rollback_id: &str) -> Result<Vec<Record>> {
        Ok(self
            .record_ids()?
            .into_iter()
            .filter(|id| id.as_str() > rollback_id)
            .filter_map(|id| self.read_record(&id).ok())
            .collect())
    }

    /// Every record, oldest first.
    pub fn list_records(&self) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.root.join("records"))? {
            let e = e?;
            if e.path().extension().is_some_and(|x| x == "json") {
                match fs::read(e.path()).map_err(Error::from).and_then(|d| {
                    serde_json::from_slice::<Record>(&d).map_err(|e| Error::new(ErrorKind::Corrupt, e.to_string()))
                }) {
                    Ok(r) => out.push(r),
                    Err(err) => tracing::warn!(file = %e.path().display(), error = %err, "skipping unreadable record"),
                }
            }
        }
        out.sort_by(|a, b| a.start_time.cmp(&b.start_time).then(a.rollback_id.cmp(&b.rollback_id)));
        Ok(out)
    }
}

/// Hashes while writing into the store's tmp dir; [`ArtifactWriter::finish`] files it.
pub struct ArtifactWriter {
    name: String,
    file: Option<io::BufWriter<File>>,
    tmp: PathBuf,
    hasher: Sha256,
    size: u64,
    store: Store,
}

impl Write for ArtifactWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.as_mut().expect("open until finish").write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("open until finish").flush()
    }
}

impl ArtifactWriter {
    /// Flushes, syncs and renames the artifact into place.
    pub fn finish(mut self) -> Result<ArtifactRef> {
        let file = self.file.take().expect("finish is called once");
        let file = file.into_inner().map_err(|e| Error::from(e.into_error()))?;
        let tmp = self.tmp.clone();
        let store = self.store.clone();
        let name = std::mem::take(&mut self.name);
        let size = self.size;
        let hasher = std::mem::take(&mut self.hasher);
        file.sync_all().ctx(|| "cannot sync artifact".into())?;
        drop(file);
        let sha = hex::encode(hasher.finalize());
        let dest = store.object_path(&sha);
        // Always rename over: an object already there may be the corrupted copy a
        // new snapshot must not silently share.
        create_private_dir(dest.parent().unwrap_or(store.root()))?;
        fs::rename(&tmp, &dest).ctx(|| format!("cannot move artifact into {}", dest.display()))?;
        // The rename is durable only once its directory is: a crash could otherwise
        // lose an artifact that a manifest written after it already names.
        sync_dir(&dest);
        Ok(ArtifactRef { name, sha256: sha, size })
    }
}

impl Drop for ArtifactWriter {
    fn drop(&mut self) {
        // Abandoned (error path): never leave half-written files behind.
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Every `*.json` file of `dir` (none when it does not exist); one that cannot be
/// read is an error naming it, never skipped.
fn read_json_dir<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<Vec<T>> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else { return Ok(out) };
    for e in rd {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "json") {
            let data = fs::read(&p).ctx(|| format!("cannot read {}", p.display()))?;
            out.push(serde_json::from_slice(&data).map_err(|e| {
                Error::new(ErrorKind::Corrupt, format!("{} is unreadable", p.display())).with_source(e)
            })?);
        }
    }
    Ok(out)
}

/// Ids travel from users into file names: letters, digits, `-`, `_`, `.`, no `..`.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && !id.contains("..")
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!("`{id}` is not a valid id (letters, digits, `-`, `_`, `.` only)")))
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// `mkdir -p` whose new directories are 0700 whatever the umask.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

fn tempfile_in(dir: &Path) -> Result<(File, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt;
    create_private_dir(dir).ctx(|| format!("cannot create {}", dir.display()))?;
    for _ in 0..16 {
        let p = dir.join(format!(".tmp-{:016x}", rand::random::<u64>()));
        // 0600 from the start (not chmod after): nothing is ever readable by others,
        // not even for a moment, and the mode survives the rename into place.
        match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&p) {
            Ok(f) => return Ok((f, p)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::from(e)),
        }
    }
    Err(Error::unexpected(format!("cannot create a temporary file in {}", dir.display())))
}

use crate::durable::sync_dir;

/// Write aside (0600), fsync, rename over, fsync the directory.
pub(crate) fn replace_durable(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_dir.join(format!(".tmp-{:016x}", rand::random::<u64>()));
    crate::durable::replace_with_bytes(&tmp, dest, 0o600, bytes)
}

/// Like [`replace_durable`] but fails (kind `Locked`) when `dest` exists.
fn write_new_durable(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let (mut f, tmp) = tempfile_in(tmp_dir)?;
    let r = (|| -> io::Result<()> {
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::hard_link(&tmp, dest)
    })();
    let _ = fs::remove_file(&tmp);
    match r {
        Ok(()) => {
            sync_dir(dest);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::new(ErrorKind::Locked, "exists")),
        Err(e) => Err(Error::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_round_trip_and_corruption_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let a = s.put_bytes("x", b"hello").unwrap();
        assert_eq!(s.read_artifact(&a).unwrap(), b"hello");
        let p = s.artifact_path(&a).unwrap();
        fs::write(&p, b"hellO").unwrap();
        let e = s.read_artifact(&a).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        fs::remove_file(&p).unwrap();
        assert_eq!(s.check_artifact(&a).unwrap_err().kind(), ErrorKind::Corrupt);
        assert_eq!(fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn the_store_is_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("store");
        // The umask is process-wide; this test only sets the common default, which
        // no other test depends on.
        let old = set_umask(0o022);
        let s = Store::open(&root).unwrap();
        let a = s.put_bytes("env", b"SECRET=1").unwrap();
        s.write_journal("r1", b"{}").unwrap();
        set_umask(old);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for dir in ["", "objects", "snapshots", "journals", "records", "tmp"] {
            assert_eq!(mode(&root.join(dir)), 0o700, "{dir}");
        }
        let obj = s.artifact_path(&a).unwrap();
        assert_eq!(mode(&obj), 0o600);
        assert_eq!(mode(obj.parent().unwrap()), 0o700);
        assert_eq!(mode(&s.journal_path("r1").unwrap()), 0o600);
        assert!(s.permission_warnings(5).is_empty(), "{:?}", s.permission_warnings(5));
        // A store made by an older build, or by hand, is reported.
        fs::set_permissions(&obj, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(root.join("records"), fs::Permissions::from_mode(0o755)).unwrap();
        let w = s.permission_warnings(5);
        assert!(w[0].starts_with("2 paths") && w[0].contains("chmod -R go-rwx"), "{w:?}");
    }

    /// Sets the process umask, returning the old one.
    #[allow(unsafe_code)]
    fn set_umask(mask: u32) -> u32 {
        // SAFETY: umask(2) cannot fail and touches no memory.
        unsafe { libc::umask(mask as libc::mode_t) as u32 }
    }

    #[test]
    fn tmp_leftovers_are_cleaned() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        fs::write(s.tmp_dir().join(".tmp-0123456789abcdef"), vec![0u8; 4096]).unwrap();
        fs::write(s.tmp_dir().join("state-0123456789abcdef"), b"x").unwrap();
        assert_eq!(s.clean_tmp(), (2, 4097));
        assert_eq!(fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn ids_cannot_traverse() {
        for bad in ["../x", "a/b", "", "..", ".hidden", "a\0b", "x y"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        assert!(validate_id("20261123T100000Z-ab12cd").is_ok());
    }
}
