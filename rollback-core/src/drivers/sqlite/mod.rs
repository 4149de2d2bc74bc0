#![doc = include_str!("docs.md")]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod copy;
mod fence;

use super::blocking;
use crate::config::ComponentConfig;
use crate::driver::{Capability, Captured, Context, Discard, Drift, Driver, DynDriver, FencePlan};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::registry::DriverEnv;
use crate::snapshot::Part;

const ARTIFACT: &str = "sqlite/database.sqlite";
/// How long a capture or online restore waits for writers to let go of their lock.
const BUSY: Duration = Duration::from_secs(30);

/// How a restore puts the file back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreMode {
    /// Write the snapshot beside the database, fsync, rename it over the file.
    #[default]
    Rename,
    /// Copy the snapshot into the live database with the backup API (one write
    /// transaction; connections that hold the file open see the restored content).
    Online,
}

/// Keys of a `sqlite` component.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database file.
    pub path: String,
    /// `rename` (default) or `online`.
    #[serde(default)]
    pub restore: RestoreMode,
    /// Keep other connections' writes out while the database is put back (default true).
    #[serde(default = "yes")]
    pub fence: bool,
}

fn yes() -> bool {
    true
}

/// The `sqlite` driver.
#[derive(Debug)]
pub struct SqliteDriver {
    path: PathBuf,
    mode: RestoreMode,
    fence: bool,
    /// The connection that holds the fence (see `fence.rs`) while it is up.
    fenced: std::sync::Mutex<Option<fence::Held>>,
}

pub(crate) fn factory(c: &ComponentConfig, env: &DriverEnv) -> Result<DynDriver> {
    let cfg: SqliteConfig = c.options.parse()?;
    if cfg.path.is_empty() {
        return Err(c.options.error("path", "must name the database file"));
    }
    let p = Path::new(&cfg.path);
    let path = if p.is_absolute() { p.to_path_buf() } else { env.base_dir.join(p) };
    Ok(Arc::new(SqliteDriver { path, mode: cfg.restore, fence: cfg.fence, fenced: std::sync::Mutex::new(None) }))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TableSum {
    rows: u64,
    checksum: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct State {
    path: String,
    /// A safety snapshot of a database file that did not exist: restoring it removes the file.
    absent: bool,
    sqlite_version: String,
    schema_digest: String,
    /// `type|name|table|sql` of every schema object.
    schema: Vec<String>,
    tables: BTreeMap<String, TableSum>,
    /// The file's owner and mode at capture: a restore of a file deleted since gives
    /// them back (absent in snapshots of earlier builds).
    owner: Option<Owner>,
    /// The header's `user_version` and `application_id`: applications and migration
    /// tools keep their schema version there (absent in snapshots of earlier builds,
    /// which then compare without them).
    header: Option<Header>,
}

/// The two header fields an application owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    user_version: i64,
    application_id: i64,
}

/// Owner, group and permission bits of a database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Owner {
    uid: u32,
    gid: u32,
    mode: u32,
}

impl Owner {
    fn of(m: &fs::Metadata) -> Self {
        Owner { uid: m.uid(), gid: m.gid(), mode: m.mode() & 0o7777 }
    }
}

/// Schema lines and per-table sorted row hashes, read in one transaction.
struct Content {
    schema: Vec<String>,
    tables: BTreeMap<String, Vec<u64>>,
    header: Header,
}

fn sq(e: rusqlite::Error, what: impl std::fmt::Display) -> Error {
    let kind = match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => ErrorKind::Timeout,
            rusqlite::ErrorCode::CannotOpen => ErrorKind::NotFound,
            rusqlite::ErrorCode::PermissionDenied | rusqlite::ErrorCode::ReadOnly => ErrorKind::PermissionDenied,
            rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt => ErrorKind::Corrupt,
            _ => ErrorKind::Unexpected,
        },
        _ => ErrorKind::Unexpected,
    };
    let err = Error::new(kind, format!("{what}: {e}"));
    if kind == ErrorKind::Timeout {
        err.set_temporary()
    } else {
        err
    }
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Opens an existing database (never creates one: a typo must not become an empty file).
fn open_existing(path: &Path) -> Result<Connection> {
    if !path.is_file() {
        return Err(Error::not_found(format!("SQLite database {} does not exist", path.display())));
    }
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| sq(e, format_args!("cannot open {}", path.display())))?;
    c.busy_timeout(BUSY).map_err(|e| sq(e, "cannot set a busy timeout"))?;
    Ok(c)
}

/// Opens a stored copy without writing anything beside it (no journal, no -shm).
fn open_artifact(path: &Path) -> Result<Connection> {
    let mut uri = String::from("file:");
    for ch in path.display().to_string().chars() {
        match ch {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?immutable=1");
    Connection::open_with_flags(
        &uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sq(e, "cannot open the snapshot's database copy"))
}

fn row_hash(row: &rusqlite::Row<'_>, n: usize) -> rusqlite::Result<u64> {
    let mut h = Sha256::new();
    for i in 0..n {
        match row.get_ref(i)? {
            ValueRef::Null => h.update([0]),
            ValueRef::Integer(v) => {
                h.update([1]);
                h.update(v.to_le_bytes());
            }
            ValueRef::Real(f) => {
                h.update([2]);
                h.update(f.to_bits().to_le_bytes());
            }
            ValueRef::Text(t) => {
                h.update([3]);
                h.update((t.len() as u64).to_le_bytes());
                h.update(t);
            }
            ValueRef::Blob(b) => {
                h.update([4]);
                h.update((b.len() as u64).to_le_bytes());
                h.update(b);
            }
        }
    }
    Ok(u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes")))
}

/// Reads schema and rows in one read transaction, so the result is one instant (the
/// WAL-mode fence's own transaction, when `c` is that fence).
fn read_content(c: &Connection) -> Result<Content> {
    let own = c.is_autocommit();
    if own {
        c.execute_batch("BEGIN").map_err(|e| sq(e, "cannot begin a read transaction"))?;
    }
    let r = (|| -> rusqlite::Result<Content> {
        let mut schema = Vec::new();
        let mut tables = Vec::new();
        let mut st = c.prepare(
            "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master
              WHERE name NOT LIKE 'sqlite\\_stat%' ESCAPE '\\' ORDER BY type, name",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let (ty, name, tbl, sql): (String, String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            if ty == "table" && !sql.to_ascii_uppercase().starts_with("CREATE VIRTUAL") {
                tables.push(name.clone());
            }
            if !name.starts_with("sqlite_") {
                schema.push(format!("{ty}|{name}|{tbl}|{sql}"));
            }
        }
        let mut out = BTreeMap::new();
        for t in tables {
            let mut st = c.prepare(&format!("SELECT * FROM {}", ident(&t)))?;
            let n = st.column_count();
            let mut hashes = Vec::new();
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                hashes.push(row_hash(r, n)?);
            }
            hashes.sort_unstable();
            // An empty `sqlite_sequence` is no content: it cannot be dropped, so a
            // restore through SQL leaves one behind that the snapshot never had.
            if t == "sqlite_sequence" && hashes.is_empty() {
                continue;
            }
            out.insert(t, hashes);
        }
        let header = Header {
            user_version: c.query_row("PRAGMA user_version", [], |r| r.get(0))?,
            application_id: c.query_row("PRAGMA application_id", [], |r| r.get(0))?,
        };
        Ok(Content { schema, tables: out, header })
    })();
    if own {
        let _ = c.execute_batch("COMMIT");
    }
    r.map_err(|e| sq(e, "cannot read the database"))
}

fn checksum(hashes: &[u64]) -> String {
    let mut h = Sha256::new();
    for x in hashes {
        h.update(x.to_le_bytes());
    }
    hex::encode(h.finalize())
}

fn digest(lines: &[String]) -> String {
    let mut h = Sha256::new();
    for l in lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Copies `from` into `to` with the online backup API in a single step: one read
/// transaction on the source (a consistent image while writers run), one write
/// transaction on the destination (atomic). Busy/locked: wait and retry.
fn backup_all(from: &Connection, to: &mut Connection) -> Result<()> {
    let b = Backup::new(from, to).map_err(|e| sq(e, "cannot start the backup"))?;
    let deadline = Instant::now() + BUSY;
    loop {
        match b.step(-1).map_err(|e| sq(e, "backup failed"))? {
            StepResult::Done => return Ok(()),
            StepResult::More | StepResult::Busy | StepResult::Locked if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                return Err(
                    Error::new(ErrorKind::Timeout, "the database stayed locked by a writer for 30 s").set_temporary()
                )
            }
        }
    }
}

fn side_files(p: &Path) -> [PathBuf; 3] {
    let s = p.as_os_str().to_owned();
    let with = |suffix: &str| {
        let mut x = s.clone();
        x.push(suffix);
        PathBuf::from(x)
    };
    [with("-wal"), with("-shm"), with("-journal")]
}

impl SqliteDriver {
    fn artifact(part: &Part) -> Result<&crate::store::ArtifactRef> {
        part.artifact(ARTIFACT)
            .ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("the snapshot has no artifact `{ARTIFACT}`")))
    }
}

fn capture_blocking(src: &Connection, path: PathBuf, store: crate::store::Store) -> Result<Captured> {
    let tmp = store.tmp_dir().join(format!(".sqlite-{:016x}.db", rand::random::<u64>()));
    let r = (|| {
        let mut dst = Connection::open(&tmp).map_err(|e| sq(e, "cannot create a temporary database"))?;
        backup_all(src, &mut dst)?;
        let content = read_content(&dst)?;
        dst.close().map_err(|(_, e)| sq(e, "cannot close the temporary database"))?;
        let a = store.put_file(ARTIFACT, &tmp)?;
        let st = State {
            path: path.display().to_string(),
            absent: false,
            owner: fs::metadata(&path).ok().map(|m| Owner::of(&m)),
            sqlite_version: rusqlite::version().to_string(),
            schema_digest: digest(&content.schema),
            header: Some(content.header),
            schema: content.schema,
            tables: content
                .tables
                .iter()
                .map(|(k, v)| (k.clone(), TableSum { rows: v.len() as u64, checksum: checksum(v) }))
                .collect(),
        };
        Ok(Captured {
            state: serde_json::to_value(&st).map_err(|e| Error::unexpected("cannot encode state").with_source(e))?,
            artifacts: vec![a],
        })
    })();
    let _ = fs::remove_file(&tmp);
    for f in side_files(&tmp) {
        let _ = fs::remove_file(f);
    }
    r
}

/// The owner and mode the restored file must have: those of the file it replaces, or
/// the snapshot's when the file is gone. The application, not whoever runs the
/// rollback, must be able to write it (and SQLite gives a new -wal/-shm the owner and
/// mode of the database file).
fn wanted_owner(path: &Path, recorded: Option<Owner>) -> Option<Owner> {
    fs::metadata(path).ok().map(|m| Owner::of(&m)).or(recorded)
}

/// Gives `f` (the file `p`) owner `o`, or says who can.
fn set_owner(f: &fs::File, p: &Path, o: Owner) -> Result<()> {
    // chown first: it clears set-id bits, which the chmod then puts back.
    std::os::unix::fs::fchown(f, Some(o.uid), Some(o.gid)).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::PermissionDenied {
            ErrorKind::PermissionDenied
        } else {
            ErrorKind::Unexpected
        };
        Error::new(
            kind,
            format!(
                "cannot give {} the owner {}:{} of the database it replaces; run the rollback as root or as that \
                 user, or use restore = \"online\" (which writes into the existing file)",
                p.display(),
                o.uid,
                o.gid
            ),
        )
        .with_source(e)
    })?;
    f.set_permissions(fs::Permissions::from_mode(o.mode)).ctx(|| format!("cannot set the mode of {}", p.display()))
}

fn temp_beside(path: &Path) -> Result<PathBuf> {
    super::aside_path(path).ok_or_else(|| Error::config(format!("{} has no parent directory", path.display())))
}

/// Writes the snapshot beside the database, syncs it, renames it over the file.
fn restore_rename(path: &Path, artifact: &Path, expected_sha: &str, recorded: Option<Owner>) -> Result<()> {
    // A restore killed before its rename left its copy beside the database.
    super::remove_stale_aside(path);
    let tmp = temp_beside(path)?;
    let owner = wanted_owner(path, recorded);
    crate::durable::replace(&tmp, path, owner.map(|o| o.mode).unwrap_or(0o644), |to| {
        if let Some(o) = owner {
            set_owner(to, path, o)?;
        }
        let mut from = fs::File::open(artifact).ctx(|| "cannot read the snapshot's database copy".into())?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = from.read(&mut buf).ctx(|| "cannot read the snapshot's database copy".into())?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            to.write_all(&buf[..n]).ctx(|| format!("cannot write {}", tmp.display()))?;
        }
        // What goes live is checked, not just what was checked in preflight.
        if hex::encode(h.finalize()) != expected_sha {
            return Err(Error::new(
                ErrorKind::Corrupt,
                "the snapshot's database copy changed in the store; refusing it",
            ));
        }
        // A journal or WAL left beside the old file would be replayed into the new one.
        for f in side_files(path) {
            match fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::from(e)),
            }
        }
        crate::failpoint::hit("sqlite-written-aside");
        Ok(())
    })
}

/// Whether a rename restore can give the new file the owner it must have: tried on an
/// empty file beside the database, so a rollback that cannot is refused before
/// anything changes.
fn check_owner(path: &Path, recorded: Option<Owner>) -> Result<()> {
    let Some(o) = wanted_owner(path, recorded) else { return Ok(()) };
    let tmp = temp_beside(path)?;
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .ctx(|| format!("cannot write in {}", tmp.parent().unwrap_or(Path::new("/")).display()))?;
    let r = set_owner(&f, path, o);
    drop(f);
    let _ = fs::remove_file(&tmp);
    r
}

/// Restores through the fence's connection `c`, in place.
fn restore_fenced(c: &mut Connection, kind: fence::Kind, snap: &Connection, path: &Path) -> Result<()> {
    if kind == fence::Kind::Exclusive {
        return backup_all(snap, c);
    }
    // An error that rolled back the whole transaction (I/O, a full disk) took the
    // write lock with it: taken again before anything is written, or no restore.
    if c.is_autocommit() {
        fence::begin_immediate(c, path).map_err(|e| {
            Error::new(e.kind(), format!("the fence's write transaction was lost and cannot be taken again: {e}"))
        })?;
    }
    let r = copy::restore_in_transaction(c, snap)
        .and_then(|()| c.execute_batch("COMMIT").map_err(|e| sq(e, "cannot commit the restore")));
    // After the commit, or an error that ended the whole transaction: the write lock
    // again at once, for the comparison with the snapshot or a compensation (the
    // connection's automatic checkpoint is off, so a commit returns at once). A
    // writer that gets in between writes after the restore: its write is kept, and
    // the comparison names it.
    if c.is_autocommit() {
        if let Err(e) = fence::begin_immediate(c, path) {
            tracing::warn!(error = %e, "the fence's write lock could not be taken again after the restore");
        }
    }
    r
}

fn restore_online(path: &Path, artifact: &Path) -> Result<()> {
    let src = open_artifact(artifact)?;
    let mut live = open_existing(path)?;
    backup_all(&src, &mut live)
}

#[async_trait]
impl Driver for SqliteDriver {
    fn name(&self) -> &str {
        "sqlite"
    }

    fn capability(&self) -> Capability {
        Capability {
            shared_data: true,
            discard_report: true,
            idempotent_restore: true,
            fence: true,
            ..Capability::default()
        }
    }

    async fn plan_fence(&self, _ctx: &Context) -> Result<FencePlan> {
        self.plan_write_fence().await
    }

    async fn fence(&self, _ctx: &Context, _undo: &serde_json::Value) -> Result<String> {
        self.raise_write_fence().await
    }

    async fn unfence(&self, _ctx: &Context, _undo: &serde_json::Value) -> Result<()> {
        self.lift_write_fence().await
    }

    async fn capture(&self, ctx: &Context) -> Result<Captured> {
        if ctx.safety && !self.path.exists() {
            // Nothing to keep; undoing the rollback means removing the file again.
            let st = State { path: self.path.display().to_string(), absent: true, ..State::default() };
            return Ok(Captured {
                state: serde_json::to_value(&st)
                    .map_err(|e| Error::unexpected("cannot encode state").with_source(e))?,
                artifacts: Vec::new(),
            });
        }
        let (path, store) = (self.path.clone(), ctx.store.clone());
        self.on_live(move |c, kind| {
            if kind == Some(fence::Kind::Transaction) {
                // The backup API reads no source with a write transaction open: a
                // connection of its own reads what is committed, which the fence's
                // write lock keeps from changing.
                let reader = open_existing(&path)?;
                return capture_blocking(&reader, path, store);
            }
            capture_blocking(c, path, store)
        })
        .await
    }

    async fn preflight(&self, _ctx: &Context, part: &Part) -> Result<()> {
        let r = (|| {
            let st = part.state_as::<State>()?;
            if st.absent {
                return Ok(());
            }
            Self::artifact(part)?;
            let dir = self.path.parent().unwrap_or(Path::new("/"));
            let m = fs::metadata(dir)
                .map_err(|e| Error::not_found(format!("directory {} is missing", dir.display())).with_source(e))?;
            if m.permissions().readonly() {
                return Err(Error::new(
                    ErrorKind::PermissionDenied,
                    format!("directory {} is read-only", dir.display()),
                ));
            }
            if self.mode == RestoreMode::Online && !self.path.is_file() {
                return Err(Error::not_found(format!(
                    "{} does not exist; an online restore copies into the live file (use restore = \"rename\")",
                    self.path.display()
                )));
            }
            if self.mode == RestoreMode::Rename {
                check_owner(&self.path, st.owner)?;
            }
            Ok(())
        })();
        r
    }

    async fn restore(&self, ctx: &Context, part: &Part) -> Result<()> {
        let r = async {
            if part.state_as::<State>()?.absent {
                let path = self.path.clone();
                return blocking(move || {
                    for f in std::iter::once(path.clone()).chain(side_files(&path)) {
                        match fs::remove_file(&f) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => return Err(Error::from(e)),
                        }
                    }
                    crate::durable::sync_dir(&path);
                    Ok(())
                })
                .await;
            }
            let owner = part.state_as::<State>()?.owner;
            let a = Self::artifact(part)?.clone();
            if self.fenced() {
                // In place, through the connection holding the lock: the fence stays
                // up, and processes holding the file open see what they write to.
                let file = ctx.store.check_artifact(&a)?;
                let path = self.path.clone();
                return self
                    .on_live(move |c, kind| match kind {
                        Some(kind) => restore_fenced(c, kind, &open_artifact(&file)?, &path),
                        // Lifted meanwhile: in place all the same, through SQLite's locking.
                        None => backup_all(&open_artifact(&file)?, c),
                    })
                    .await;
            }
            let file = ctx.store.artifact_path(&a)?;
            let (path, mode) = (self.path.clone(), self.mode);
            blocking(move || match mode {
                RestoreMode::Rename => restore_rename(&path, &file, &a.sha256, owner),
                RestoreMode::Online => restore_online(&path, &file),
            })
            .await
        }
        .await;
        r
    }

    async fn verify(&self, _ctx: &Context, part: &Part) -> Result<Drift> {
        let r = async {
            let st = part.state_as::<State>()?;
            if st.absent {
                return Ok(if self.path.exists() {
                    Drift::from_differences(vec![format!(
                        "{} exists but did not when the snapshot was taken",
                        self.path.display()
                    )])
                } else {
                    Drift::equal()
                });
            }
            let now = self.on_live(|c, _| read_content(c)).await?;
            let mut diffs = Vec::new();
            if digest(&now.schema) != st.schema_digest {
                for l in st.schema.iter().filter(|l| !now.schema.contains(l)).take(10) {
                    diffs.push(format!("schema: missing since the snapshot: {l}"));
                }
                for l in now.schema.iter().filter(|l| !st.schema.contains(l)).take(10) {
                    diffs.push(format!("schema: not in the snapshot: {l}"));
                }
            }
            for (t, sum) in &st.tables {
                match now.tables.get(t) {
                    // Recorded empty by earlier builds (see `read_content`).
                    None if t == "sqlite_sequence" && sum.rows == 0 => {}
                    None => diffs.push(format!("table {t} is missing")),
                    Some(h) if checksum(h) != sum.checksum => diffs.push(format!(
                        "table {t}: content differs ({} rows now, {} in the snapshot)",
                        h.len(),
                        sum.rows
                    )),
                    Some(_) => {}
                }
            }
            for t in now.tables.keys().filter(|t| !st.tables.contains_key(*t)) {
                diffs.push(format!("table {t} was created after the snapshot"));
            }
            if let Some(h) = st.header {
                if now.header.user_version != h.user_version {
                    diffs.push(format!(
                        "user_version is {}, the snapshot has {}",
                        now.header.user_version, h.user_version
                    ));
                }
                if now.header.application_id != h.application_id {
                    diffs.push(format!(
                        "application_id is {}, the snapshot has {}",
                        now.header.application_id, h.application_id
                    ));
                }
            }
            Ok(Drift::from_differences(diffs))
        }
        .await;
        r
    }

    async fn discards(&self, ctx: &Context, part: &Part) -> Result<Vec<Discard>> {
        let r = async {
            if part.state_as::<State>()?.absent {
                return Ok(Vec::new());
            }
            let a = Self::artifact(part)?.clone();
            let file = ctx.store.check_artifact(&a)?;
            let then = blocking(move || read_content(&open_artifact(&file)?)).await?;
            let now = if self.path.is_file() {
                self.on_live(|c, _| read_content(c)).await?
            } else {
                Content {
                    schema: Vec::new(),
                    tables: BTreeMap::new(),
                    header: Header { user_version: 0, application_id: 0 },
                }
            };
            let d = |target: String, changes: u64, unit: &str| Discard {
                component: ctx.component.clone(),
                target,
                changes,
                unit: unit.into(),
                kept_in_safety_snapshot: false,
                keepable: true,
            };
            let mut out = Vec::new();
            let schema_changes = then.schema.iter().filter(|l| !now.schema.contains(l)).count()
                + now.schema.iter().filter(|l| !then.schema.contains(l)).count();
            if schema_changes > 0 {
                out.push(d(
                    "schema".into(),
                    schema_changes as u64,
                    "schema objects differing (tables, indexes, triggers, views)",
                ));
            }
            for (t, rows) in &now.tables {
                match then.tables.get(t) {
                    None => out.push(d(format!("table {t} (created after the snapshot)"), rows.len() as u64, "rows")),
                    Some(old) if old != rows => {
                        let (a, b) = crate::drivers::multiset_diff(old, rows);
                        out.push(d(
                            format!("table {t}"),
                            a.max(b),
                            "rows differing (inserted, updated or deleted since the snapshot)",
                        ));
                    }
                    Some(_) => {}
                }
            }
            Ok(out)
        }
        .await;
        r
    }

    fn describe_restore(&self, _part: &Part) -> String {
        match self.mode {
            RestoreMode::Rename => format!(
                "replace {} with the snapshot's copy (written beside it, fsynced, renamed over; its -wal/-shm/-journal \
                 are removed; processes holding the file open keep the old one until they reopen it)",
                self.path.display()
            ),
            RestoreMode::Online => format!(
                "copy the snapshot into the live database {} with SQLite's backup API (one write transaction)",
                self.path.display()
            ),
        }
    }

    async fn check(&self, _ctx: &Context) -> Result<String> {
        let path = self.path.clone();
        blocking(move || {
            let c = open_existing(&path)?;
            let n: i64 = c
                .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0))
                .map_err(|e| sq(e, "cannot read the schema"))?;
            Ok(format!("SQLite {} database {}: {n} tables", rusqlite::version(), path.display()))
        })
        .await
    }
}
