//! `strategy = "dump"`: schema (pg_dump --schema-only, pre- and post-data) and data
//! (binary COPY per table) from one exported snapshot; restored in one transaction.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::catalog::{self, Facts, Rel, RowHash, RowHasher, Scope};
use super::conn::{dump_pattern, ident, pg_error, qname, Target};
use super::{Common, PostgresDriver, Strategy};
use crate::driver::{Captured, Context, Discard, Drift};
use crate::error::{Error, ErrorKind, Result};
use crate::snapshot::Part;
use crate::store::ArtifactRef;

const PRE: &str = "schema/pre-data.sql";
const POST: &str = "schema/post-data.sql";
const LINES: &str = "schema/catalog.txt";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DumpState {
    #[serde(flatten)]
    common: Common,
    scope: Scope,
    schema_digest: String,
    /// The whole-database dump does not create `public`; a restore does when it existed.
    had_public: bool,
    tables: Vec<TableState>,
    sequences: Vec<SeqState>,
    /// Materialized views that held data (refreshed after the load).
    matviews: Vec<(String, String)>,
    /// How the table checksums hash rows.
    #[serde(default = "RowHash::legacy")]
    row_hash: RowHash,
    /// Which catalog facts `schema_digest` covers.
    #[serde(default = "Facts::legacy")]
    facts: Facts,
    /// How the table data artifacts are stored.
    #[serde(default)]
    data: DataFormat,
}

/// The table data artifacts: binary COPY streams, plain or in LZ4 frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum DataFormat {
    /// Snapshots from before compression.
    #[default]
    Copy,
    /// LZ4 frames: pgbench's accounts table went from 114 MB to a few MB.
    CopyLz4,
}

/// Reads a table's data artifact as the binary COPY stream it holds.
fn open_data(ctx: &Context, a: &ArtifactRef, format: DataFormat) -> Result<Box<dyn Read + Send>> {
    let path = ctx.store.artifact_path(a)?;
    let f = std::fs::File::open(&path)
        .map_err(|e| Error::new(ErrorKind::Corrupt, format!("cannot read artifact `{}`", a.name)).with_source(e))?;
    let f = std::io::BufReader::with_capacity(1 << 20, f);
    Ok(match format {
        DataFormat::Copy => Box::new(f),
        DataFormat::CopyLz4 => Box::new(lz4_flex::frame::FrameDecoder::new(f)),
    })
}

fn read_err(a: &ArtifactRef, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Corrupt, format!("cannot read artifact `{}`: {e}", a.name)).with_source(e)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TableState {
    schema: String,
    name: String,
    rows: u64,
    checksum: String,
    artifact: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SeqState {
    schema: String,
    name: String,
    last_value: i64,
    is_called: bool,
}

fn artifact<'a>(part: &'a Part, name: &str) -> Result<&'a ArtifactRef> {
    part.artifact(name).ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("the snapshot has no artifact `{name}`")))
}

/// Major version of a `pg_dump` binary (`pg_dump (PostgreSQL) 15.20 ...`), run as
/// every program of a step is (its own process group, recorded beside the journal),
/// and given 10 s: a wrapper script that hangs must not hold the capture forever.
async fn pg_dump_major(ctx: &Context, bin: &str) -> Result<i32> {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--version");
    let out = crate::process::output(ctx, cmd, Some(std::time::Duration::from_secs(10))).await.map_err(|e| match e {
        crate::process::RunError::Spawn(e) | crate::process::RunError::Wait(e) => Error::new(
            ErrorKind::NotFound,
            format!("cannot run `{bin}` (the dump strategy needs PostgreSQL's client tools; install postgresql-client or set `pg_dump`)"),
        )
        .with_source(e),
        crate::process::RunError::Timeout => {
            Error::new(ErrorKind::Timeout, format!("`{bin} --version` did not answer in 10 s"))
        }
    })?;
    let s = String::from_utf8_lossy(&out.stdout);
    s.split_whitespace()
        .find_map(|w| w.split('.').next().and_then(|m| m.parse::<i32>().ok()))
        .ok_or_else(|| Error::unexpected(format!("cannot read the version of `{bin}` from `{}`", s.trim())))
}

/// `extensions`: those created in a scoped schema. `pg_dump --schema` leaves every
/// extension out, so without `--extension` the restore's DROP SCHEMA … CASCADE would
/// take such an extension and the re-created tables would miss its types.
async fn run_pg_dump(
    d: &PostgresDriver,
    ctx: &Context,
    section: &str,
    snapshot: &str,
    extensions: &[String],
) -> Result<Vec<u8>> {
    let mut cmd = tokio::process::Command::new(&d.pg_dump);
    cmd.args(["--schema-only", "--no-password", "--section", section, "--snapshot", snapshot]);
    match &d.scope {
        Scope::Database => {}
        Scope::Schemas { schemas } => {
            for s in schemas {
                cmd.arg("--schema").arg(dump_pattern(&[s]));
            }
            for e in extensions {
                cmd.arg("--extension").arg(dump_pattern(&[e]));
            }
        }
        Scope::Tables { tables } => {
            for (s, t) in tables {
                cmd.arg("--table").arg(dump_pattern(&[s, t]));
            }
        }
    }
    for k in [
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGOPTIONS",
        "PGHOSTADDR",
        "PGPASSWORD",
        "PGDATABASE",
        "PGSSLROOTCERT",
        "PGSSLCERT",
        "PGSSLKEY",
    ] {
        cmd.env_remove(k);
    }
    cmd.envs(d.target.libpq_env()).stdin(std::process::Stdio::null());
    // No limit of its own: the capture's timeout bounds it (the group is ended when
    // the capture is given up).
    let out = crate::process::output(ctx, cmd, None).await.map_err(|e| match e {
        crate::process::RunError::Spawn(e) | crate::process::RunError::Wait(e) => {
            Error::new(ErrorKind::NotFound, format!("cannot run `{}`", d.pg_dump)).with_source(e)
        }
        crate::process::RunError::Timeout => Error::new(ErrorKind::Timeout, "pg_dump did not finish"),
    })?;
    if !out.status.success() {
        return Err(Error::unexpected(format!(
            "pg_dump --section={section} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(strip_meta(&out.stdout))
}

/// Drops psql's `\restrict`/`\unrestrict` lines (pg_dump ≥ 15.14): the SQL runs through
/// the protocol, not psql.
fn strip_meta(sql: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(sql);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let l = line.trim_end();
        if l.starts_with("\\restrict ") || l.starts_with("\\unrestrict ") {
            continue;
        }
        out.push_str(line);
    }
    out.into_bytes()
}

type CopyQueue = Arc<Mutex<VecDeque<(usize, Rel)>>>;
type Copied = Vec<(usize, TableState, ArtifactRef)>;

/// Holds a copy to a rate: after each chunk, sleeps while the bytes read so far are
/// ahead of it. The sleep stops reading the COPY stream, so the server's backend
/// waits on its socket too and both sides' CPU goes to the application meanwhile.
struct Pace {
    bytes_per_sec: f64,
    start: Instant,
    bytes: u64,
    /// Time the copy fell behind beyond `CREDIT` (a slow server): not made up for.
    forgiven: Duration,
}

/// How far behind its rate a copy may fall and then catch up at full speed: any more
/// would be a burst of the very load the rate is there to spread.
const CREDIT: Duration = Duration::from_millis(100);
/// The longest single sleep: the copy checks for a cancel between sleeps.
const SLICE: Duration = Duration::from_millis(50);

impl Pace {
    fn new(bytes_per_sec: u64) -> Pace {
        Pace { bytes_per_sec: bytes_per_sec as f64, start: Instant::now(), bytes: 0, forgiven: Duration::ZERO }
    }

    /// Waits as long as the copy is ahead after `n` more bytes, in slices, until
    /// `stop` is set.
    fn take(&mut self, n: usize, stop: &AtomicBool) {
        let mut wait = self.wait_after(n, self.start.elapsed());
        while !wait.is_zero() && !stop.load(Ordering::Relaxed) {
            let slice = wait.min(SLICE);
            std::thread::sleep(slice);
            wait -= slice;
        }
    }

    /// How long to wait after `n` more bytes, `elapsed` after the start.
    fn wait_after(&mut self, n: usize, elapsed: Duration) -> Duration {
        self.bytes += n as u64;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec);
        let elapsed = elapsed.saturating_sub(self.forgiven);
        if elapsed > due + CREDIT {
            self.forgiven += elapsed - due - CREDIT;
        }
        let ahead = due.saturating_sub(elapsed);
        // Sleeps shorter than a few ms cost more in wake-ups than they smooth.
        if ahead >= Duration::from_millis(5) {
            ahead
        } else {
            Duration::ZERO
        }
    }
}

/// Copies the tables from `queue` with one connection, into the store.
async fn copy_worker(
    client: &Client,
    ctx: &Context,
    queue: CopyQueue,
    stop: &AtomicBool,
    rate: Option<u64>,
) -> Result<Copied> {
    let mut done = Vec::new();
    let mut pace = rate.map(Pace::new);
    loop {
        let next = queue.lock().map_err(|_| Error::unexpected("copy queue poisoned"))?.pop_front();
        let Some((i, rel)) = next else { break };
        let name = format!("data/{i:05}.copy.lz4");
        let mut w = lz4_flex::frame::FrameEncoder::new(ctx.store.artifact_writer(&name)?);
        let h = catalog::copy_out(client, &rel, RowHash::default(), |chunk| {
            if stop.load(Ordering::Relaxed) {
                return Err(Error::new(ErrorKind::Cancelled, "the capture was cancelled"));
            }
            if let Some(p) = pace.as_mut() {
                // This thread's runtime serves only this connection: blocking it is
                // the point (see `Pace`).
                p.take(chunk.len(), stop);
            }
            w.write_all(chunk).map_err(Error::from)
        })
        .await?;
        let w = w.finish().map_err(|e| Error::unexpected("cannot finish the compressed artifact").with_source(e))?;
        let a = w.finish()?;
        let (rows, checksum) = (h.rows(), h.checksum);
        let paced = match rate {
            Some(r) if r >= 1 << 20 => format!(", paced at {:.1} MB a second", r as f64 / (1u64 << 20) as f64),
            Some(r) => format!(", paced at {} kB a second", r >> 10),
            None => String::new(),
        };
        ctx.progress(format!("copied {} ({rows} rows, {} bytes{paced})", rel.display(), a.size));
        done.push((
            i,
            TableState { schema: rel.schema.clone(), name: rel.name.clone(), rows, checksum, artifact: name },
            a,
        ));
    }
    Ok(done)
}

/// One copy job on a thread of its own with a single-threaded runtime, so that the
/// connection's reader and the row consumer share a thread. On the caller's
/// multi-threaded runtime every batch of rows crossed threads: pgbench scale 10 took
/// 0.59-0.66 s to capture that way, 0.46-0.54 s this way (`pg_dump -Fc`: 0.50 s).
async fn copy_job(
    target: Target,
    snapshot: String,
    ctx: Context,
    queue: CopyQueue,
    stop: Arc<AtomicBool>,
    rate: Option<u64>,
) -> Result<Copied> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("rollback-pg-copy".into())
        .spawn(move || {
            let run = || -> Result<Copied> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Error::unexpected("cannot start a copy thread's runtime").with_source(e))?;
                rt.block_on(async {
                    let c = target.connect().await?;
                    c.batch_execute(&format!(
                        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
                        snapshot.replace('\'', "''")
                    ))
                    .await
                    .map_err(|e| pg_error(&e, "cannot join the exported snapshot"))?;
                    let r = copy_worker(&c, &ctx, queue, &stop, rate).await;
                    let _ = c.batch_execute("COMMIT").await;
                    r
                })
            };
            let _ = tx.send(run());
        })
        .map_err(|e| Error::unexpected("cannot start a copy thread").with_source(e))?;
    rx.await.map_err(|_| Error::unexpected("a copy thread ended without an answer"))?
}

/// Tells the copy threads to stop when the capture is dropped (cancelled or timed out).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn check_listed(scope: &Scope, rels: &[Rel], schemas: &[String]) -> Result<()> {
    match scope {
        Scope::Database => Ok(()),
        Scope::Schemas { schemas: want } => {
            let missing: Vec<_> = want.iter().filter(|s| !schemas.contains(s)).cloned().collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(Error::not_found(format!("schema(s) {} do not exist", missing.join(", "))))
            }
        }
        Scope::Tables { tables } => {
            let missing: Vec<_> = tables
                .iter()
                .filter(|(s, t)| !rels.iter().any(|r| r.schema == *s && r.name == *t))
                .map(|(s, t)| format!("{s}.{t}"))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(Error::not_found(format!("table(s) {} do not exist", missing.join(", "))))
            }
        }
    }
}

pub(super) async fn capture(d: &PostgresDriver, ctx: &Context) -> Result<Captured> {
    let (client, version) = d.open().await?;
    let dump_major = pg_dump_major(ctx, &d.pg_dump).await?;
    if dump_major != version / 10000 {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "`{}` is version {dump_major} but the server runs PostgreSQL {}; install the client tools of the \
                 server's major version and point the `pg_dump` key at that binary",
                d.pg_dump,
                version / 10000
            ),
        ));
    }
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(|e| pg_error(&e, "cannot start the snapshot transaction"))?;
    let snapshot: String = client
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(|e| pg_error(&e, "cannot export a snapshot"))?
        .get(0);
    let rels = catalog::relations(&client, &d.scope).await?;
    let schemas = catalog::existing_schemas(&client).await?;
    check_listed(&d.scope, &rels, &schemas)?;
    let lines = catalog::schema_lines(&client, &d.scope, &rels, Facts::default()).await?;
    let extensions = match &d.scope {
        Scope::Schemas { schemas } => catalog::extensions_in(&client, schemas).await?,
        _ => Vec::new(),
    };

    // The schema comes from pg_dump (it knows every object kind), reading the same snapshot.
    let pre = run_pg_dump(d, ctx, "pre-data", &snapshot, &extensions);
    let post = run_pg_dump(d, ctx, "post-data", &snapshot, &extensions);

    let mut sequences = Vec::new();
    for r in rels.iter().filter(|r| r.kind == 'S') {
        let row = client
            .query_one(&format!("SELECT last_value, is_called FROM {}", r.qname()), &[])
            .await
            .map_err(|e| pg_error(&e, &format!("cannot read sequence {}", r.display())))?;
        sequences.push(SeqState {
            schema: r.schema.clone(),
            name: r.name.clone(),
            last_value: row.get(0),
            is_called: row.get(1),
        });
    }
    let matviews =
        rels.iter().filter(|r| r.kind == 'm' && r.populated).map(|r| (r.schema.clone(), r.name.clone())).collect();

    let tables: Vec<(usize, Rel)> = rels.iter().filter(|r| r.has_data()).cloned().enumerate().collect();
    let n_tables = tables.len();
    let queue: CopyQueue = Arc::new(Mutex::new(tables.into_iter().collect::<VecDeque<_>>()));
    // Every job joins the exported snapshot, so every table is read at one instant;
    // `client` keeps the exporting transaction (and so the snapshot) open meanwhile.
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let jobs = d.jobs.min(n_tables).max(1);
    // `max_rate` is for all jobs together: each holds to its share. Not for a
    // rollback's safety snapshot: the writers are fenced or stopped by then, and a
    // slower copy would only keep them out longer.
    let rate = if ctx.safety { None } else { d.max_rate.map(|r| (r / jobs as u64).max(1)) };
    let workers: Vec<_> = (0..jobs)
        .map(|_| copy_job(d.target.clone(), snapshot.clone(), ctx.clone(), queue.clone(), stop.0.clone(), rate))
        .collect();
    let (copied, pre, post) = tokio::join!(futures_util::future::try_join_all(workers), pre, post);
    drop(stop);
    let (pre, post) = (pre?, post?);
    let mut copied: Vec<_> = copied?.into_iter().flatten().collect();
    copied.sort_by_key(|(i, _, _)| *i);
    let _ = client.batch_execute("COMMIT").await;

    let mut artifacts = vec![
        ctx.store.put_bytes(PRE, &pre)?,
        ctx.store.put_bytes(POST, &post)?,
        ctx.store.put_bytes(LINES, lines.join("\n").as_bytes())?,
    ];
    let mut table_states = Vec::new();
    for (_, t, a) in copied {
        table_states.push(t);
        artifacts.push(a);
    }
    let st = DumpState {
        common: Common {
            strategy: Strategy::Dump,
            target: d.target.desc.clone(),
            database: d.target.db.clone(),
            server_version_num: version,
        },
        scope: d.scope.clone(),
        schema_digest: catalog::digest_lines(&lines),
        had_public: schemas.iter().any(|s| s == "public"),
        tables: table_states,
        sequences,
        matviews,
        row_hash: RowHash::default(),
        facts: Facts::default(),
        data: DataFormat::CopyLz4,
    };
    Ok(Captured {
        state: serde_json::to_value(&st).map_err(|e| Error::unexpected("cannot encode state").with_source(e))?,
        artifacts,
    })
}

pub(super) async fn preflight(d: &PostgresDriver, _ctx: &Context, part: &Part, c: &Common) -> Result<()> {
    let st = part.state_as::<DumpState>()?;
    for n in [PRE, POST, LINES] {
        artifact(part, n)?;
    }
    for t in &st.tables {
        artifact(part, &t.artifact)?;
    }
    let (client, version) = d.open().await?;
    d.same_major(c.server_version_num, version)?;
    let rels = catalog::relations(&client, &st.scope).await?;
    refuse_outside_dependents(&client, &st.scope, &rels).await
}

async fn refuse_outside_dependents(client: &Client, scope: &Scope, rels: &[Rel]) -> Result<()> {
    let deps = catalog::outside_dependents(client, scope, rels).await?;
    if deps.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = deps.iter().map(|d| format!("{} (depends on {})", d.object, d.depends_on)).collect();
    let schemas: BTreeSet<&str> = deps.iter().filter_map(|d| d.schema.as_deref()).collect();
    let widen = match scope {
        Scope::Tables { .. } => "list them in `tables`".to_string(),
        _ if schemas.is_empty() => "widen `schemas`".to_string(),
        _ => format!(
            "add schema(s) {} to `schemas`",
            schemas.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
        ),
    };
    Err(Error::new(
        ErrorKind::Unsupported,
        format!(
            "objects outside the component's scope ({}) depend on objects in it, and the restore's DROP … CASCADE \
             would remove them although the snapshot does not hold them: {}. Nothing was changed. To roll back \
             this scope, {widen} (or leave `schemas` and `tables` unset for the whole database) and take a new \
             snapshot, or remove those dependencies first",
            scope.describe(),
            list.join("; ")
        ),
    ))
}

pub(super) fn describe(part: &Part, c: &Common) -> String {
    let (tables, rows) = part
        .state_as::<DumpState>()
        .map(|s| (s.tables.len(), s.tables.iter().map(|t| t.rows).sum::<u64>()))
        .unwrap_or((0, 0));
    format!(
        "restore {} ({}) from the dump: in one transaction drop the scoped objects, re-create the schema, \
         load {tables} tables ({rows} rows), set sequences, rebuild indexes and constraints; writers wait on locks meanwhile",
        c.target,
        part.state_as::<DumpState>().map(|s| s.scope.describe()).unwrap_or_default()
    )
}

async fn copy_in_file(client: &Client, ctx: &Context, a: &ArtifactRef, format: DataFormat, table: &str) -> Result<u64> {
    // Reads of a MB from the page cache (and its LZ4 decoding) are short enough to
    // do between sends.
    let mut f = open_data(ctx, a, format)?;
    let sink = client
        // FREEZE: the table was created in this transaction, so rows can be written
        // frozen and hinted; the first reads after the restore (verify) then write nothing.
        .copy_in::<_, Bytes>(&format!("COPY {table} FROM STDIN (FORMAT binary, FREEZE)"))
        .await
        .map_err(|e| pg_error(&e, &format!("cannot load {table}")))?;
    futures_util::pin_mut!(sink);
    loop {
        let mut buf = vec![0u8; 1 << 20];
        let n = f.read(&mut buf).map_err(|e| read_err(a, e))?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        sink.send(Bytes::from(buf)).await.map_err(|e| pg_error(&e, &format!("cannot load {table}")))?;
    }
    sink.as_mut().finish().await.map_err(|e| pg_error(&e, &format!("cannot load {table}")))
}

pub(super) async fn restore(d: &PostgresDriver, ctx: &Context, part: &Part, c: &Common) -> Result<()> {
    let st = part.state_as::<DumpState>()?;
    let pre = String::from_utf8(strip_meta(&ctx.store.read_artifact(artifact(part, PRE)?)?))
        .map_err(|_| Error::new(ErrorKind::Corrupt, "the schema artifact is not UTF-8"))?;
    let post = String::from_utf8(strip_meta(&ctx.store.read_artifact(artifact(part, POST)?)?))
        .map_err(|_| Error::new(ErrorKind::Corrupt, "the schema artifact is not UTF-8"))?;
    let (client, version) = d.open().await?;
    d.same_major(c.server_version_num, version)?;
    let r = restore_in_tx(&client, ctx, part, &st, &pre, &post, version).await;
    if r.is_err() {
        // Nothing is committed: the server undoes every step of the transaction.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    r
}

#[allow(clippy::too_many_arguments)]
async fn restore_in_tx(
    client: &Client,
    ctx: &Context,
    part: &Part,
    st: &DumpState,
    pre: &str,
    post: &str,
    version: i32,
) -> Result<()> {
    client.batch_execute("BEGIN").await.map_err(|e| pg_error(&e, "cannot begin the restore transaction"))?;
    let rels = catalog::relations(client, &st.scope).await?;
    refuse_outside_dependents(client, &st.scope, &rels).await?;
    let mut drop = String::new();
    match &st.scope {
        Scope::Database => {
            // Publications belong to the database, not to a schema: the dump re-creates
            // them (with their tables), which fails on the ones still there.
            for p in catalog::publications(client).await? {
                drop.push_str(&format!("DROP PUBLICATION {};\n", ident(&p)));
            }
            for s in catalog::existing_schemas(client).await? {
                drop.push_str(&format!("DROP SCHEMA {} CASCADE;\n", ident(&s)));
            }
            if st.had_public && !pre.contains("\nCREATE SCHEMA public;") {
                drop.push_str(if version >= 140000 {
                    "CREATE SCHEMA public AUTHORIZATION pg_database_owner;\n\
                     COMMENT ON SCHEMA public IS 'standard public schema';\nGRANT USAGE ON SCHEMA public TO PUBLIC;\n"
                } else {
                    "CREATE SCHEMA public;\nCOMMENT ON SCHEMA public IS 'standard public schema';\n\
                     GRANT ALL ON SCHEMA public TO PUBLIC;\n"
                });
            }
        }
        Scope::Schemas { schemas } => {
            for s in schemas {
                drop.push_str(&format!("DROP SCHEMA IF EXISTS {} CASCADE;\n", ident(s)));
            }
        }
        Scope::Tables { tables } => {
            for (s, t) in tables {
                if let Some(r) = rels.iter().find(|r| r.schema == *s && r.name == *t) {
                    let what = match r.kind {
                        'v' => "VIEW",
                        'm' => "MATERIALIZED VIEW",
                        'S' => "SEQUENCE",
                        'f' => "FOREIGN TABLE",
                        _ => "TABLE",
                    };
                    drop.push_str(&format!("DROP {what} IF EXISTS {} CASCADE;\n", r.qname()));
                }
            }
        }
    }
    client.batch_execute(&drop).await.map_err(|e| pg_error(&e, "cannot drop the current objects"))?;
    crate::failpoint::hit("postgres-dropped");
    client.batch_execute(pre).await.map_err(|e| pg_error(&e, "cannot re-create the schema"))?;
    for t in &st.tables {
        let n = copy_in_file(client, ctx, artifact(part, &t.artifact)?, st.data, &qname(&t.schema, &t.name)).await?;
        if n != t.rows {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("loaded {n} rows into {}.{} but the snapshot holds {}", t.schema, t.name, t.rows),
            ));
        }
        ctx.progress(format!("loaded {}.{} ({n} rows)", t.schema, t.name));
    }
    for s in &st.sequences {
        client
            .execute(
                "SELECT pg_catalog.setval($1::text::regclass, $2, $3)",
                &[&qname(&s.schema, &s.name), &s.last_value, &s.is_called],
            )
            .await
            .map_err(|e| pg_error(&e, &format!("cannot set sequence {}.{}", s.schema, s.name)))?;
    }
    for (s, m) in &st.matviews {
        client
            .batch_execute(&format!("REFRESH MATERIALIZED VIEW {}", qname(s, m)))
            .await
            .map_err(|e| pg_error(&e, &format!("cannot refresh {s}.{m}")))?;
    }
    ctx.progress("rebuilding indexes and constraints");
    client.batch_execute(post).await.map_err(|e| pg_error(&e, "cannot re-create indexes and constraints"))?;
    client.batch_execute("COMMIT").await.map_err(|e| pg_error(&e, "cannot commit the restore"))?;
    Ok(())
}

/// Current schema lines and per-table row hashes, read in one snapshot.
struct Current {
    lines: Vec<String>,
    rels: Vec<Rel>,
}

async fn current(client: &Client, scope: &Scope, facts: Facts) -> Result<Current> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(|e| pg_error(&e, "cannot begin a read transaction"))?;
    let rels = catalog::relations(client, scope).await?;
    let lines = catalog::schema_lines(client, scope, &rels, facts).await?;
    Ok(Current { lines, rels })
}

pub(super) fn line_diff(then: &[String], now: &[String], out: &mut Vec<String>) -> usize {
    let a: BTreeSet<&String> = then.iter().collect();
    let b: BTreeSet<&String> = now.iter().collect();
    let gone: Vec<_> = a.difference(&b).collect();
    let added: Vec<_> = b.difference(&a).collect();
    for g in gone.iter().take(10) {
        out.push(format!("schema: missing since the snapshot: {g}"));
    }
    for x in added.iter().take(10) {
        out.push(format!("schema: not in the snapshot: {x}"));
    }
    gone.len() + added.len()
}

pub(super) async fn verify(d: &PostgresDriver, ctx: &Context, part: &Part) -> Result<Drift> {
    let st = part.state_as::<DumpState>()?;
    let (client, _) = d.open().await?;
    let cur = current(&client, &st.scope, st.facts).await?;
    let mut diffs = Vec::new();
    if catalog::digest_lines(&cur.lines) != st.schema_digest {
        let then: Vec<String> = String::from_utf8_lossy(&ctx.store.read_artifact(artifact(part, LINES)?)?)
            .lines()
            .map(String::from)
            .collect();
        if line_diff(&then, &cur.lines, &mut diffs) == 0 {
            diffs.push("schema digest differs".into());
        }
    }
    let known: BTreeMap<(String, String), &TableState> =
        st.tables.iter().map(|t| ((t.schema.clone(), t.name.clone()), t)).collect();
    for t in &st.tables {
        match cur.rels.iter().find(|r| r.schema == t.schema && r.name == t.name && r.has_data()) {
            None => diffs.push(format!("table {}.{} is missing", t.schema, t.name)),
            Some(r) => {
                let h = catalog::copy_out(&client, r, st.row_hash, |_| Ok(())).await?;
                let rows = h.rows();
                if h.checksum != t.checksum {
                    diffs.push(format!(
                        "table {}.{}: content differs ({rows} rows now, {} in the snapshot)",
                        t.schema, t.name, t.rows
                    ));
                }
            }
        }
    }
    for r in cur.rels.iter().filter(|r| r.has_data()) {
        if !known.contains_key(&(r.schema.clone(), r.name.clone())) {
            diffs.push(format!("table {} was created after the snapshot", r.display()));
        }
    }
    let _ = client.batch_execute("COMMIT").await;
    Ok(Drift::from_differences(diffs))
}

async fn hash_artifact(ctx: &Context, a: &ArtifactRef, algo: RowHash, format: DataFormat) -> Result<Vec<u64>> {
    let mut f = open_data(ctx, a, format)?;
    let a = a.clone();
    crate::drivers::blocking(move || {
        let mut h = RowHasher::new(algo);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| read_err(&a, e))?;
            if n == 0 {
                break;
            }
            h.feed(&buf[..n])?;
        }
        h.finish()?;
        Ok(std::mem::take(&mut h.hashes))
    })
    .await
}

pub(super) async fn discards(d: &PostgresDriver, ctx: &Context, part: &Part) -> Result<Vec<Discard>> {
    let st = part.state_as::<DumpState>()?;
    let (client, _) = d.open().await?;
    let cur = current(&client, &st.scope, st.facts).await?;
    let mut out = Vec::new();
    let discard = |target: String, changes: u64, unit: &str| Discard {
        component: ctx.component.clone(),
        target,
        changes,
        unit: unit.into(),
        kept_in_safety_snapshot: false,
        keepable: true,
    };
    if catalog::digest_lines(&cur.lines) != st.schema_digest {
        let then: Vec<String> = String::from_utf8_lossy(&ctx.store.read_artifact(artifact(part, LINES)?)?)
            .lines()
            .map(String::from)
            .collect();
        let n = line_diff(&then, &cur.lines, &mut Vec::new());
        out.push(discard(
            "schema".into(),
            n.max(1) as u64,
            "schema facts differing (columns, indexes, constraints...)",
        ));
    }
    let mut known = BTreeSet::new();
    for t in &st.tables {
        known.insert((t.schema.clone(), t.name.clone()));
        let Some(r) = cur.rels.iter().find(|r| r.schema == t.schema && r.name == t.name && r.has_data()) else {
            continue;
        };
        let h = catalog::copy_out(&client, r, st.row_hash, |_| Ok(())).await?;
        if h.checksum == t.checksum {
            continue;
        }
        let then = hash_artifact(ctx, artifact(part, &t.artifact)?, st.row_hash, st.data).await?;
        let (only_then, only_now) = catalog::multiset_diff(&then, &h.hashes);
        out.push(discard(
            format!("table {}", r.display()),
            only_then.max(only_now),
            "rows differing (inserted, updated or deleted since the snapshot)",
        ));
    }
    for r in cur.rels.iter().filter(|r| r.has_data()) {
        if !known.contains(&(r.schema.clone(), r.name.clone())) {
            let h = catalog::copy_out(&client, r, st.row_hash, |_| Ok(())).await?;
            out.push(discard(format!("table {} (created after the snapshot)", r.display()), h.rows(), "rows"));
        }
    }
    let _ = client.batch_execute("COMMIT").await;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pace_waits_while_the_copy_is_ahead_of_its_rate() {
        let mut p = Pace::new(1 << 20);
        assert_eq!(p.wait_after(512 << 10, Duration::ZERO), Duration::from_millis(500));
        // It slept: on time now.
        assert_eq!(p.wait_after(0, Duration::from_millis(500)), Duration::ZERO);
        // A chunk that puts it 3 ms ahead: too short to sleep for, owed on the next.
        assert_eq!(p.wait_after(3 << 10, Duration::from_millis(500)), Duration::ZERO);
        let w = p.wait_after(3 << 10, Duration::from_millis(500));
        assert!(w >= Duration::from_millis(5) && w <= Duration::from_millis(6), "{w:?}");
        // Far behind its rate (the server was slow): no wait, and only `CREDIT` of
        // the lag is made up at full speed before the rate holds again.
        assert_eq!(p.wait_after(1 << 10, Duration::from_secs(10)), Duration::ZERO);
        assert_eq!(p.wait_after(100 << 10, Duration::from_secs(10)), Duration::ZERO);
        let w = p.wait_after(100 << 10, Duration::from_secs(10));
        assert!(w >= Duration::from_millis(90) && w <= Duration::from_millis(100), "{w:?}");
    }
}
