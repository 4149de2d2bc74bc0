#![doc = include_str!("docs.md")]

mod capture;
mod catalog;
mod config;
mod fence;
mod objects;
mod restore;
mod sql;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Row, Value};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::ComponentConfig;
use crate::driver::{Capability, Captured, Context, Discard, Drift, Driver, DynDriver, FencePlan};
use crate::error::{Error, ErrorKind, Result};
use crate::registry::DriverEnv;
use crate::secret::{redact_url_passwords, Redactor};
use crate::snapshot::Part;
use crate::store::ArtifactRef;

use config::{split_tls, SslMode, Tls};
pub use config::{MysqlConfig, Strategy};
use sql::{lit, normalize_create, q, qt};

/// Our scratch tables live in the same database under this prefix; listings skip it.
const TMP_NEW: &str = "_rollback_new_";
const TMP_OLD: &str = "_rollback_old_";
/// Rows per multi-row INSERT on the fallback path (placeholders are capped at 65535).
const INSERT_ROWS: usize = 2000;
/// Bytes per chunk between the row reader and the artifact writer.
const CHUNK: usize = 1 << 20;

/// The `mysql` driver (MySQL and MariaDB).
pub struct MysqlDriver {
    opts: Opts,
    tls: Tls,
    /// `PREFERRED` found a server without TLS once: later connections go plaintext
    /// straight away instead of failing a handshake each time.
    no_tls_on_server: std::sync::atomic::AtomicBool,
    db: String,
    target: String,
    strategy: Strategy,
    tables: Option<Vec<String>>,
    parallel: usize,
    load_data: bool,
    fence: bool,
    /// The session holding the write fence's lock (see `fence.rs`).
    fence_session: tokio::sync::Mutex<Option<Conn>>,
    redactor: Redactor,
}

impl std::fmt::Debug for MysqlDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlDriver")
            .field("target", &self.target)
            .field("strategy", &self.strategy)
            .field("tables", &self.tables)
            .finish()
    }
}

pub(crate) fn factory(c: &ComponentConfig, env: &DriverEnv) -> Result<DynDriver> {
    let cfg: MysqlConfig = c.options.parse()?;
    let (url, tls) = split_tls(&cfg.url, &env.base_dir).map_err(|m| c.options.error("url", m))?;
    let opts = Opts::from_url(&url).map_err(|e| {
        c.options.error(
            "url",
            format!(
                "`{}` is not a MySQL URL ({})",
                redact_url_passwords(&cfg.url),
                redact_url_passwords(&e.to_string())
            ),
        )
    })?;
    if let Some(p) = opts.pass() {
        env.redactor.add(p);
    }
    let db = opts
        .db_name()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| c.options.error("url", "must name the database, e.g. mysql://root@127.0.0.1:3306/trading"))?
        .to_string();
    if let Some(t) = &cfg.tables {
        if t.is_empty() {
            return Err(c.options.error("tables", "must list at least one table (or be left out for all)"));
        }
    }
    let target = format!("{}:{}/{}", opts.ip_or_hostname(), opts.tcp_port(), db);
    crate::tls::install_provider();
    Ok(Arc::new(MysqlDriver {
        opts,
        tls,
        no_tls_on_server: Default::default(),
        db,
        target,
        strategy: cfg.strategy,
        tables: cfg.tables,
        parallel: cfg.parallel.unwrap_or(2).clamp(1, 16),
        load_data: cfg.load_data.unwrap_or(false),
        fence: cfg.fence.unwrap_or(true),
        fence_session: Default::default(),
        redactor: env.redactor.clone(),
    }))
}

/// One table of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TableState {
    name: String,
    /// `SHOW CREATE TABLE`, as captured.
    create: String,
    /// Stored (non-generated) columns, in order: what the data holds.
    columns: Vec<String>,
    rows: u64,
    /// `CHECKSUM TABLE` in the capture's transaction.
    checksum: Option<u64>,
    /// `dump`: the data artifact's name.
    #[serde(default)]
    artifact: Option<String>,
    /// Those of `columns` whose type is JSON (MySQL 5.7 and later; MariaDB's JSON is
    /// a LONGTEXT): written back through [`value_marks`] and [`load_targets`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    json: Vec<String>,
}

/// The `VALUES` tuple of one row of `t` in an INSERT on a `SET NAMES binary`
/// session. MySQL refuses to make a JSON value of a string in the `binary`
/// character set (error 3144), so a JSON column's bytes are read as the utf8mb4
/// they are.
fn value_marks(t: &TableState) -> String {
    let marks: Vec<&str> =
        t.columns.iter().map(|c| if t.json.contains(c) { "CONVERT(? USING utf8mb4)" } else { "?" }).collect();
    format!("({})", marks.join(","))
}

/// `LOAD DATA`'s column list for `t`, and its `SET` clause: a JSON column is read
/// into a user variable and converted, as in [`value_marks`].
fn load_targets(t: &TableState) -> (String, String) {
    let mut set = Vec::new();
    let list: Vec<String> = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if t.json.contains(c) {
                set.push(format!("{} = CONVERT(@rollback_json_{i} USING utf8mb4)", q(c)));
                format!("@rollback_json_{i}")
            } else {
                q(c)
            }
        })
        .collect();
    (list.join(", "), if set.is_empty() { String::new() } else { format!(" SET {}", set.join(", ")) })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    strategy: Strategy,
    target: String,
    db: String,
    server_version: String,
    /// `fast`: the schema holding the copies.
    #[serde(default)]
    snapshot_schema: Option<String>,
    /// `fast`: a second copy, indexes built, that the first restore renames straight
    /// in (the copy is the slow part of a restore; the incident is the wrong time).
    #[serde(default)]
    ready_schema: Option<String>,
    /// `tables` was set: tables outside the list are not ours.
    scoped: bool,
    tables: Vec<TableState>,
    /// Triggers on the captured tables. A restore renames the live tables away with
    /// their triggers and drops them, then creates these again.
    #[serde(default)]
    triggers: Vec<catalog::Trigger>,
    /// Views, procedures, functions and events of a whole-database snapshot; `None`
    /// with `tables` set, and in snapshots from before they were kept (a restore
    /// then leaves them as they are).
    #[serde(default)]
    objects: Option<Vec<objects::Object>>,
}

fn text(v: &Value) -> String {
    match v {
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Value::NULL => String::new(),
        other => other.as_sql(true).trim_matches('\'').to_string(),
    }
}

fn num(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::UInt(u) => Some(*u),
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// Whether a column's `EXTRA` says it is generated: computed by the server, so not
/// captured nor loaded. MySQL 8 marks a column whose *default* is an expression
/// (`DEFAULT CURRENT_TIMESTAMP`, `DEFAULT (uuid())`) `DEFAULT_GENERATED`: that one
/// holds data like any other.
fn is_generated(extra: &str) -> bool {
    extra
        .to_ascii_uppercase()
        .split_whitespace()
        .any(|w| matches!(w, "GENERATED" | "VIRTUAL" | "PERSISTENT" | "STORED"))
}

/// MariaDB or MySQL, and the major version: a dump moves only within one of these.
fn flavor(version: &str) -> (String, String) {
    let kind = if version.to_ascii_lowercase().contains("mariadb") { "MariaDB" } else { "MySQL" };
    let major = version.split('.').next().unwrap_or("").to_string();
    (kind.into(), major)
}

impl MysqlDriver {
    fn err(&self, what: &str, e: mysql_async::Error) -> Error {
        let (kind, temporary, hint) = match &e {
            mysql_async::Error::Server(s) => match s.code {
                1045 | 1044 | 1142 | 1143 | 1227 | 1370 => {
                    (ErrorKind::PermissionDenied, false, " (check the user, password and privileges)")
                }
                1049 => (ErrorKind::NotFound, false, " (the database does not exist)"),
                1146 => (ErrorKind::NotFound, false, ""),
                1205 | 1213 | 1040 | 1203 => (ErrorKind::Unexpected, true, ""),
                _ => (ErrorKind::Unexpected, false, ""),
            },
            mysql_async::Error::Io(_) => (ErrorKind::Unreachable, true, " (is the server running and reachable?)"),
            mysql_async::Error::Url(_) => (ErrorKind::ConfigInvalid, false, ""),
            _ => (ErrorKind::Unexpected, false, ""),
        };
        let detail = self.redactor.redact(&e.to_string());
        let mut out = Error::new(kind, format!("mysql {}: {what}: {detail}{hint}", self.target));
        if temporary {
            out = out.set_temporary();
        }
        out
    }

    /// A session that reads and writes bytes as stored (`SET NAMES binary`), in UTC,
    /// where an inserted 0 stays 0 in AUTO_INCREMENT columns.
    async fn connect(&self) -> Result<Conn> {
        use std::sync::atomic::Ordering;
        // Never the unix socket: it would bypass TLS, and the url names a TCP address.
        let plain = OptsBuilder::from_opts(self.opts.clone()).prefer_socket(false);
        let skip_tls = self.tls.ssl.is_none()
            || (self.tls.mode == SslMode::Preferred && self.no_tls_on_server.load(Ordering::Relaxed));
        let opts = if skip_tls { plain.clone() } else { plain.clone().ssl_opts(self.tls.ssl.clone()) };
        let attempt = async {
            match Conn::new(opts).await {
                Err(mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer))
                    if self.tls.mode == SslMode::Preferred =>
                {
                    self.no_tls_on_server.store(true, Ordering::Relaxed);
                    Conn::new(plain).await
                }
                r => r,
            }
        };
        let mut conn = match tokio::time::timeout(Duration::from_secs(15), attempt).await {
            Ok(r) => r.map_err(|e| match crate::tls::explain(&e) {
                Some(why) => {
                    Error::new(ErrorKind::Unreachable, format!("mysql {}: cannot connect: {why}", self.target))
                }
                None if matches!(
                    e,
                    mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer)
                ) =>
                {
                    Error::new(
                        ErrorKind::Unreachable,
                        format!(
                            "mysql {}: cannot connect: the server does not offer TLS, which ssl-mode requires",
                            self.target
                        ),
                    )
                }
                None => self.err("cannot connect", e),
            })?,
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Unreachable,
                    format!("mysql {}: cannot connect: no answer within 15 s", self.target),
                )
                .set_temporary())
            }
        };
        conn.query_drop(
            "SET NAMES binary, time_zone = '+00:00', sql_mode = 'NO_AUTO_VALUE_ON_ZERO', \
             foreign_key_checks = 0, unique_checks = 0",
        )
        .await
        .map_err(|e| self.err("cannot set up the session", e))?;
        Ok(conn)
    }

    async fn rows(&self, conn: &mut Conn, sql: &str, what: &str) -> Result<Vec<Vec<Value>>> {
        let rows: Vec<Row> = conn.query(sql).await.map_err(|e| self.err(what, e))?;
        Ok(rows.into_iter().map(Row::unwrap).collect())
    }

    async fn server_version(&self, conn: &mut Conn) -> Result<String> {
        let r = self.rows(conn, "SELECT VERSION()", "cannot read the server version").await?;
        Ok(r.first().and_then(|r| r.first()).map(text).unwrap_or_default())
    }

    /// Base tables of the database (ours excluded), sorted.
    async fn list_tables(&self, conn: &mut Conn, schema: &str) -> Result<Vec<String>> {
        let rows = self
            .rows(
                conn,
                &format!(
                    "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_TYPE = 'BASE TABLE'",
                    lit(schema)
                ),
                "cannot list tables",
            )
            .await?;
        let mut t: Vec<String> = rows
            .iter()
            .filter_map(|r| r.first().map(text))
            .filter(|n| !n.starts_with(TMP_NEW) && !n.starts_with(TMP_OLD))
            .collect();
        t.sort();
        Ok(t)
    }

    async fn database_exists(&self, conn: &mut Conn, schema: &str) -> Result<bool> {
        let r = self
            .rows(
                conn,
                &format!("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}", lit(schema)),
                "cannot list databases",
            )
            .await?;
        Ok(!r.is_empty())
    }

    /// The tables this component owns now: the configured list, or every base table.
    async fn scope(&self, conn: &mut Conn) -> Result<Vec<String>> {
        if !self.database_exists(conn, &self.db).await? {
            return Err(Error::not_found(format!("mysql {}: database `{}` does not exist", self.target, self.db)));
        }
        let all = self.list_tables(conn, &self.db).await?;
        let odd = self.unrestorable(conn).await?;
        match &self.tables {
            None => {
                if !odd.is_empty() {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "mysql {}: `{}` holds objects this driver cannot snapshot and restore: {}; list the \
                             other tables in `tables` to leave them out (they are then neither captured nor touched)",
                            self.target,
                            self.db,
                            odd.iter().map(|o| format!("{} ({})", o.label(), o.why)).collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
                Ok(all)
            }
            Some(want) => {
                if let Some(o) = odd.iter().find(|o| want.contains(&o.name)) {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "mysql {}: {} is listed in `tables`, and this driver cannot snapshot and restore it ({}); \
                             remove it from `tables`",
                            self.target,
                            o.label(),
                            o.why
                        ),
                    ));
                }
                let have: BTreeSet<&String> = all.iter().collect();
                if let Some(missing) = want.iter().find(|t| !have.contains(t)) {
                    return Err(Error::not_found(format!(
                        "mysql {}: table {} listed in `tables` does not exist",
                        self.target,
                        q(missing)
                    )));
                }
                Ok(want.clone())
            }
        }
    }

    async fn show_create(&self, conn: &mut Conn, schema: &str, table: &str) -> Result<Option<String>> {
        match conn.query::<Row, _>(format!("SHOW CREATE TABLE {}", qt(schema, table))).await {
            Ok(rows) => Ok(rows.into_iter().next().and_then(|r| r.unwrap().get(1).map(text))),
            Err(mysql_async::Error::Server(s)) if s.code == 1146 => Ok(None),
            Err(e) => Err(self.err(&format!("SHOW CREATE TABLE {} failed", q(table)), e)),
        }
    }

    /// The stored (not generated) columns of `table`, and a `SELECT` list of them
    /// whose text output loads back bit for bit: a FLOAT is read as the DOUBLE it
    /// exactly is (`f + 0E0`), because the server prints a FLOAT with 6 significant
    /// digits (1234567 as 1234570), and that text would load back as another number.
    async fn stored_columns(&self, conn: &mut Conn, table: &str) -> Result<(Vec<String>, String, Vec<String>)> {
        let rows = self
            .rows(
                conn,
                &format!(
                    "SELECT COLUMN_NAME, EXTRA, DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {} \
                     AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
                    lit(&self.db),
                    lit(table)
                ),
                "cannot list columns",
            )
            .await?;
        let field = |r: &Vec<Value>, i: usize| r.get(i).map(text).unwrap_or_default();
        let stored: Vec<&Vec<Value>> = rows.iter().filter(|r| !is_generated(&field(r, 1))).collect();
        let select = stored
            .iter()
            .map(|r| if field(r, 2) == "float" { format!("({} + 0E0)", q(&field(r, 0))) } else { q(&field(r, 0)) })
            .collect::<Vec<_>>()
            .join(", ");
        let json = stored.iter().filter(|r| field(r, 2).eq_ignore_ascii_case("json")).map(|r| field(r, 0)).collect();
        Ok((stored.iter().map(|r| field(r, 0)).collect(), select, json))
    }

    async fn checksum(&self, conn: &mut Conn, schema: &str, table: &str) -> Result<Option<u64>> {
        let r = self.rows(conn, &format!("CHECKSUM TABLE {}", qt(schema, table)), "CHECKSUM TABLE failed").await?;
        Ok(r.first().and_then(|r| r.get(1)).and_then(num))
    }

    async fn count(&self, conn: &mut Conn, schema: &str, table: &str) -> Result<u64> {
        let r = self.rows(conn, &format!("SELECT COUNT(*) FROM {}", qt(schema, table)), "cannot count rows").await?;
        Ok(r.first().and_then(|r| r.first()).and_then(num).unwrap_or(0))
    }

    /// Drops scratch tables a killed restore left behind.
    async fn drop_leftovers(&self, conn: &mut Conn) -> Result<()> {
        let rows = self
            .rows(
                conn,
                &format!(
                    "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND \
                     (TABLE_NAME LIKE '\\_rollback\\_new\\_%' OR TABLE_NAME LIKE '\\_rollback\\_old\\_%')",
                    lit(&self.db)
                ),
                "cannot list scratch tables",
            )
            .await?;
        for r in rows {
            if let Some(n) = r.first().map(text) {
                // A view the swap moved out of a table's way is renamed like a table.
                let kind = if r.get(1).map(text).as_deref() == Some("VIEW") { "VIEW" } else { "TABLE" };
                conn.query_drop(format!("DROP {kind} IF EXISTS {}", qt(&self.db, &n)))
                    .await
                    .map_err(|e| self.err("cannot drop a scratch table", e))?;
            }
        }
        Ok(())
    }

    /// The views of the database named like a table of `st`: a deploy that turned a
    /// table into a view.
    async fn views_in_the_way(&self, conn: &mut Conn, st: &State) -> Result<Vec<String>> {
        let rows = self
            .rows(
                conn,
                &format!(
                    "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_TYPE = 'VIEW'",
                    lit(&self.db)
                ),
                "cannot list views",
            )
            .await?;
        let mut v: Vec<String> = rows
            .iter()
            .filter_map(|r| r.first().map(text))
            .filter(|n| st.tables.iter().any(|t| &t.name == n))
            .collect();
        v.sort();
        Ok(v)
    }

    /// A rollback of listed tables does not replace a view that took a table's
    /// place: its safety snapshot keeps no views, so the view would be lost.
    async fn refuse_views_in_the_way(&self, conn: &mut Conn, st: &State) -> Result<()> {
        if !st.scoped {
            return Ok(());
        }
        let views = self.views_in_the_way(conn, st).await?;
        if views.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "mysql {}: {} {} a view now, where the snapshot has a table; a rollback of listed tables does not \
                 replace views (its safety snapshot keeps none): drop the view first, or roll back the whole database",
                self.target,
                views.iter().map(|v| q(v)).collect::<Vec<_>>().join(", "),
                if views.len() == 1 { "is" } else { "are" }
            ),
        ))
    }

    /// The live triggers a restore of `st` replaces: those on its tables, or every one
    /// when it restores the whole database.
    async fn live_triggers(&self, conn: &mut Conn, st: &State) -> Result<Vec<catalog::Trigger>> {
        let names: Vec<String> = st.tables.iter().map(|t| t.name.clone()).collect();
        self.triggers(conn, st.scoped.then_some(names.as_slice())).await
    }

    fn scope_word(&self) -> String {
        match &self.tables {
            None => format!("every table of `{}`", self.db),
            Some(t) => format!("{} listed tables of `{}`", t.len(), self.db),
        }
    }
}

#[async_trait]
impl Driver for MysqlDriver {
    fn name(&self) -> &str {
        "mysql"
    }

    fn capability(&self) -> Capability {
        Capability {
            shared_data: true,
            discard_report: true,
            perturb: true,
            idempotent_restore: true,
            fence: true,
            ..Default::default()
        }
    }

    async fn plan_fence(&self, _ctx: &Context) -> Result<FencePlan> {
        self.plan_write_fence().await
    }

    async fn fence(&self, _ctx: &Context, undo: &serde_json::Value) -> Result<String> {
        self.raise_write_fence(undo).await
    }

    async fn unfence(&self, _ctx: &Context, undo: &serde_json::Value) -> Result<()> {
        self.lift_write_fence(undo).await
    }

    async fn capture(&self, ctx: &Context) -> Result<Captured> {
        let t0 = Instant::now();
        let mut conn = self.connect().await?;
        let server_version = self.server_version(&mut conn).await?;
        let tables = self.scope(&mut conn).await?;
        let triggers = self.triggers(&mut conn, Some(tables.as_slice())).await?;
        let objects = match self.tables {
            None => Some(self.objects(&mut conn).await?),
            Some(_) => None,
        };
        let (tables, artifacts, snapshot_schema) = match self.strategy {
            Strategy::Dump => {
                let (t, a) = self.capture_dump(ctx, &mut conn, &tables).await?;
                (t, a, None)
            }
            Strategy::Fast => {
                let (t, s) = self.capture_fast(ctx, &mut conn, &tables).await?;
                (t, Vec::new(), Some(s))
            }
        };
        // A safety snapshot is only read back by hand: it gets no ready copy.
        let ready_schema = match &snapshot_schema {
            Some(s) if !ctx.safety => match self.build_ready_copy(ctx, s, &tables).await {
                Ok(r) => Some(r),
                Err(e) => {
                    let _ = conn.query_drop(format!("DROP DATABASE IF EXISTS {}", q(s))).await;
                    return Err(e);
                }
            },
            _ => None,
        };
        let rows: u64 = tables.iter().map(|t| t.rows).sum();
        ctx.progress(format!(
            "captured {} tables ({rows} rows) of {} with strategy {:?} in {} ms",
            tables.len(),
            self.target,
            self.strategy,
            t0.elapsed().as_millis()
        ));
        let state = State {
            strategy: self.strategy,
            target: self.target.clone(),
            db: self.db.clone(),
            server_version,
            snapshot_schema,
            ready_schema,
            scoped: self.tables.is_some(),
            tables,
            triggers,
            objects,
        };
        let _ = conn.disconnect().await;
        Ok(Captured {
            state: serde_json::to_value(&state).map_err(|e| Error::unexpected("cannot encode state").with_source(e))?,
            artifacts,
        })
    }

    async fn preflight(&self, _ctx: &Context, part: &Part) -> Result<()> {
        let st = part.state_as::<State>()?;
        let mut conn = self.connect().await?;
        if !self.database_exists(&mut conn, &self.db).await? {
            return Err(Error::not_found(format!("mysql {}: database `{}` does not exist", self.target, self.db)));
        }
        let now = self.server_version(&mut conn).await?;
        if st.strategy == Strategy::Dump && flavor(&now) != flavor(&st.server_version) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "mysql {}: the snapshot was taken from {} and this server runs {}; restore it into the same server kind and major version",
                    self.target, st.server_version, now
                ),
            ));
        }
        if st.strategy == Strategy::Fast {
            let schema = st.snapshot_schema.clone().unwrap_or_default();
            let have: BTreeSet<String> = self.list_tables(&mut conn, &schema).await?.into_iter().collect();
            if let Some(t) = st.tables.iter().find(|t| !have.contains(&t.name)) {
                return Err(Error::not_found(format!(
                    "mysql {}: the snapshot copy of {} is missing from schema `{schema}`",
                    self.target,
                    q(&t.name)
                )));
            }
        }
        // What the swap renames away: the listed tables, or every table there is now.
        let replaced: Vec<String> = if st.scoped {
            st.tables.iter().map(|t| t.name.clone()).collect()
        } else {
            self.list_tables(&mut conn, &self.db).await?
        };
        let odd = self.unrestorable(&mut conn).await?;
        let odd: Vec<String> = odd
            .iter()
            .filter(|o| !st.scoped || replaced.contains(&o.name))
            .map(|o| format!("{} ({})", o.label(), o.why))
            .collect();
        if !odd.is_empty() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "mysql {}: `{}` now holds objects this driver cannot restore or drop: {}; the restore would \
                     leave them as they are, so it is refused: drop them (or turn versioning off) before the rollback",
                    self.target,
                    self.db,
                    odd.join(", ")
                ),
            ));
        }
        self.refuse_foreign_keys_from_outside(&mut conn, &replaced).await?;
        self.refuse_views_in_the_way(&mut conn, &st).await?;
        if st.scoped {
            // Trigger names are unique per database: one on a table the restore does
            // not replace would stop a snapshot trigger from being created after the swap.
            let others: Vec<String> =
                self.list_tables(&mut conn, &self.db).await?.into_iter().filter(|t| !replaced.contains(t)).collect();
            let taken = self.triggers(&mut conn, Some(others.as_slice())).await?;
            if let Some(t) = taken.iter().find(|t| st.triggers.iter().any(|s| s.name == t.name)) {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "mysql {}: trigger {} is now on table {}, outside `tables`, and the snapshot has a trigger of \
                         that name on a table it restores; rename or drop the trigger on {} before the rollback",
                        self.target,
                        q(&t.name),
                        q(&t.table),
                        q(&t.table)
                    ),
                ));
            }
        }
        let _ = conn.disconnect().await;
        Ok(())
    }

    async fn restore(&self, ctx: &Context, part: &Part) -> Result<()> {
        let st = part.state_as::<State>()?;
        self.restore_tables(ctx, part, &st).await?;
        if let Some(objects) = &st.objects {
            // After the tables: a view is checked against the columns it selects.
            let mut conn = self.connect().await?;
            self.put_objects_back(&mut conn, objects).await?;
            let _ = conn.disconnect().await;
        }
        Ok(())
    }

    async fn verify(&self, _ctx: &Context, part: &Part) -> Result<Drift> {
        let st = part.state_as::<State>()?;
        let mut conn = self.connect().await?;
        let mut d = Vec::new();
        let now: BTreeSet<String> = self.list_tables(&mut conn, &self.db).await?.into_iter().collect();
        for t in &st.tables {
            let Some(create) = self.show_create(&mut conn, &self.db, &t.name).await? else {
                d.push(format!("table {} is missing", q(&t.name)));
                continue;
            };
            if normalize_create(&create) != normalize_create(&t.create) {
                d.push(format!("table {}: schema differs from the snapshot", q(&t.name)));
            }
            let ck = self.checksum(&mut conn, &self.db, &t.name).await?;
            if ck != t.checksum {
                let rows = self.count(&mut conn, &self.db, &t.name).await?;
                d.push(format!(
                    "table {}: content differs (CHECKSUM TABLE; {rows} rows now, {} in the snapshot)",
                    q(&t.name),
                    t.rows
                ));
            }
        }
        if !st.scoped {
            let snap: BTreeSet<&str> = st.tables.iter().map(|t| t.name.as_str()).collect();
            for t in now.iter().filter(|t| !snap.contains(t.as_str())) {
                d.push(format!("table {} was added since the snapshot", q(t)));
            }
        }
        let live = self.live_triggers(&mut conn, &st).await?;
        d.extend(catalog::diff_triggers(&st.triggers, &live).differences());
        if let Some(objects) = &st.objects {
            let live = self.objects(&mut conn).await?;
            d.extend(objects::diff(objects, &live).differences());
        }
        let _ = conn.disconnect().await;
        Ok(Drift::from_differences(d))
    }

    async fn discards(&self, ctx: &Context, part: &Part) -> Result<Vec<Discard>> {
        let st = part.state_as::<State>()?;
        let mut conn = self.connect().await?;
        let mut out = Vec::new();
        let now: BTreeSet<String> = self.list_tables(&mut conn, &self.db).await?.into_iter().collect();
        let discard = |target: String, changes: u64, unit: String| Discard {
            component: ctx.component.clone(),
            target,
            changes,
            unit,
            kept_in_safety_snapshot: false,
            keepable: true,
        };
        for t in &st.tables {
            if !now.contains(&t.name) {
                continue;
            }
            let ck = self.checksum(&mut conn, &self.db, &t.name).await?;
            if ck == t.checksum {
                continue;
            }
            let rows = self.count(&mut conn, &self.db, &t.name).await?;
            let net = rows.abs_diff(t.rows);
            out.push(discard(
                format!("table {}", q(&t.name)),
                net.max(1),
                format!(
                    "rows: net row-count change {}{net} ({rows} now, {} in the snapshot); CHECKSUM TABLE differs, so rows changed in place are not counted",
                    if rows >= t.rows { "+" } else { "-" },
                    t.rows
                ),
            ));
        }
        if !st.scoped {
            let snap: BTreeSet<&str> = st.tables.iter().map(|t| t.name.as_str()).collect();
            for t in now.iter().filter(|t| !snap.contains(t.as_str())) {
                let rows = self.count(&mut conn, &self.db, t).await?;
                out.push(discard(
                    format!("table {}", q(t)),
                    rows,
                    "rows (the table was created since the snapshot and is dropped)".into(),
                ));
            }
        }
        let live = self.live_triggers(&mut conn, &st).await?;
        for (target, unit) in catalog::diff_triggers(&st.triggers, &live).discarded() {
            out.push(discard(target, 1, unit));
        }
        if let Some(objects) = &st.objects {
            let live = self.objects(&mut conn).await?;
            for (target, unit) in objects::diff(objects, &live).discarded() {
                out.push(discard(target, 1, unit));
            }
        }
        let _ = conn.disconnect().await;
        Ok(out)
    }

    async fn release(&self, _ctx: &Context, part: &Part) -> Result<()> {
        let st = part.state_as::<State>()?;
        let schemas: Vec<String> = st.ready_schema.into_iter().chain(st.snapshot_schema).collect();
        if !schemas.is_empty() {
            let mut conn = self.connect().await?;
            for schema in schemas {
                conn.query_drop(format!("DROP DATABASE IF EXISTS {}", q(&schema)))
                    .await
                    .map_err(|e| self.err("cannot drop the snapshot schema", e))?;
            }
        }
        Ok(())
    }

    async fn release_unfinished(&self, ctx: &Context) -> Result<()> {
        if self.strategy != Strategy::Fast || ctx.snapshot_id.is_empty() {
            return Ok(());
        }
        let schema = self.snapshot_schema_name(&ctx.snapshot_id);
        let mut conn = self.connect().await?;
        for s in [format!("{schema}_r"), schema] {
            conn.query_drop(format!("DROP DATABASE IF EXISTS {}", q(&s)))
                .await
                .map_err(|e| self.err("cannot drop the schema of an unfinished snapshot", e))?;
        }
        Ok(())
    }

    async fn perturb(&self, _ctx: &Context) -> Result<String> {
        if self.tables.is_some() {
            return Ok("`tables` is set; the drill does not write into listed tables".into());
        }
        let mut conn = self.connect().await?;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {} (id INT PRIMARY KEY, at VARCHAR(64))",
            qt(&self.db, "rollback_drill")
        ))
        .await
        .map_err(|e| self.err("cannot create the drill table", e))?;
        Ok(format!("created table `rollback_drill` in `{}`", self.db))
    }

    fn describe_restore(&self, part: &Part) -> String {
        let Ok(st) = part.state_as::<State>() else {
            return "restore mysql tables".into();
        };
        let rows: u64 = st.tables.iter().map(|t| t.rows).sum();
        let n = st.tables.len();
        match st.strategy {
            Strategy::Dump => format!(
                "load {n} tables ({rows} rows) into new tables ({} at once, {}, indexes built after), then swap them in with one atomic RENAME TABLE",
                self.parallel,
                if self.load_data { "LOAD DATA LOCAL INFILE" } else { "prepared multi-row INSERTs" }
            ),
            Strategy::Fast => {
                let schema = st.snapshot_schema.unwrap_or_default();
                match st.ready_schema {
                    Some(ready) => format!(
                        "swap in {n} tables ({rows} rows) with one atomic RENAME TABLE: the ready copy `{ready}` if no \
                         restore has taken it, else new copies of snapshot schema `{schema}` made in the server first"
                    ),
                    None => format!(
                        "copy {n} tables ({rows} rows) from snapshot schema `{schema}` in the server, then swap them in \
                         with one atomic RENAME TABLE"
                    ),
                }
            }
        }
    }

    async fn check(&self, _ctx: &Context) -> Result<String> {
        let mut conn = self.connect().await?;
        let v = self.server_version(&mut conn).await?;
        let t = self.scope(&mut conn).await?;
        let cipher = self
            .rows(&mut conn, "SHOW SESSION STATUS LIKE 'Ssl_cipher'", "cannot read Ssl_cipher")
            .await?
            .first()
            .and_then(|r| r.get(1))
            .map(text)
            .unwrap_or_default();
        let _ = conn.disconnect().await;
        let tls = match (cipher.is_empty(), self.tls.mode) {
            (true, _) => "NOT encrypted".to_string(),
            (false, SslMode::VerifyCa | SslMode::VerifyIdentity) => {
                format!("TLS ({cipher}), certificate and host name verified")
            }
            (false, _) => format!("TLS ({cipher}), server certificate not verified"),
        };
        Ok(format!("{v} at {}: {} ({} tables); {tls}", self.target, self.scope_word(), t.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_generated_columns_are_left_out_not_expression_defaults() {
        for extra in ["VIRTUAL GENERATED", "STORED GENERATED", "PERSISTENT", "VIRTUAL", "stored generated"] {
            assert!(is_generated(extra), "{extra}");
        }
        // MySQL 8: a DEFAULT CURRENT_TIMESTAMP or DEFAULT (expr) column holds data.
        for extra in [
            "",
            "auto_increment",
            "DEFAULT_GENERATED",
            "DEFAULT_GENERATED on update CURRENT_TIMESTAMP",
            "on update current_timestamp()",
            "INVISIBLE",
        ] {
            assert!(!is_generated(extra), "{extra}");
        }
    }

    fn table(json: &[&str]) -> TableState {
        TableState {
            name: "orders".into(),
            create: String::new(),
            columns: vec!["id".into(), "doc".into(), "note".into()],
            rows: 0,
            checksum: None,
            artifact: None,
            json: json.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn json_columns_are_written_as_utf8mb4_and_others_as_bytes() {
        assert_eq!(value_marks(&table(&[])), "(?,?,?)");
        assert_eq!(value_marks(&table(&["doc"])), "(?,CONVERT(? USING utf8mb4),?)");
        assert_eq!(load_targets(&table(&[])), ("`id`, `doc`, `note`".into(), String::new()));
        assert_eq!(
            load_targets(&table(&["doc"])),
            ("`id`, @rollback_json_1, `note`".into(), " SET `doc` = CONVERT(@rollback_json_1 USING utf8mb4)".into())
        );
    }

    /// The statements the driver writes a JSON column with, run on this machine's
    /// MariaDB in the driver's `SET NAMES binary` session. MariaDB's JSON is a
    /// LONGTEXT, which takes the bytes without the conversion, so this shows the
    /// statements are valid and keep every byte (NULL too); that MySQL 8 takes them
    /// into a JSON column, which is why they convert, is not tested here: no MySQL
    /// 8 server can run on this machine.
    #[tokio::test]
    async fn json_statements_round_trip_on_mariadb() {
        let db = format!("rb_unit_json_{}", std::process::id());
        let mut c = Conn::new(Opts::from_url("mysql://root@127.0.0.1:3306").unwrap()).await.unwrap();
        c.query_drop(format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}")).await.unwrap();
        c.query_drop(format!(
            "CREATE TABLE {db}.orders (id INT, doc LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, note BLOB)"
        ))
        .await
        .unwrap();
        c.query_drop("SET NAMES binary").await.unwrap();
        let t = table(&["doc"]);
        let doc = "{\"px\": \"ünï ✓\", \"q\": [1, 2.5]}";
        c.exec_drop(
            format!("INSERT INTO {db}.orders (`id`, `doc`, `note`) VALUES {}", value_marks(&t)),
            (1, doc.as_bytes().to_vec(), b"\x00\xff".to_vec()),
        )
        .await
        .unwrap();
        let line = format!("2\t{}\t\\N\n3\t\\N\tx\n", doc);
        c.set_infile_handler(
            async move { Ok(futures_util::stream::iter([Ok(Bytes::from(line.into_bytes()))]).boxed()) },
        );
        let (targets, set) = load_targets(&t);
        c.query_drop(format!(
            "LOAD DATA LOCAL INFILE 'rollback' INTO TABLE {db}.orders CHARACTER SET binary \
             FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({targets}){set}"
        ))
        .await
        .unwrap();
        type Cell = Option<Vec<u8>>;
        let rows: Vec<(i32, Cell, Cell)> =
            c.query(format!("SELECT id, doc, note FROM {db}.orders ORDER BY id")).await.unwrap();
        c.query_drop(format!("DROP DATABASE {db}")).await.unwrap();
        assert_eq!(
            rows,
            vec![
                (1, Some(doc.as_bytes().to_vec()), Some(b"\x00\xff".to_vec())),
                (2, Some(doc.as_bytes().to_vec()), None),
                (3, None, Some(b"x".to_vec())),
            ]
        );
    }
}
