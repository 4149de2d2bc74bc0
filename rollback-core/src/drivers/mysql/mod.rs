#![doc = include_str!("docs.md")]

mod catalog;
mod fence;
mod objects;
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

use sql::{lit, normalize_create, q, qt};

/// Our scratch tables live in the same database under this prefix; listings skip it.
const TMP_NEW: &str = "_rollback_new_";
const TMP_OLD: &str = "_rollback_old_";
/// Rows per multi-row INSERT on the fallback path (placeholders are capped at 65535).
const INSERT_ROWS: usize = 2000;
/// Bytes per chunk between the row reader and the artifact writer.
const CHUNK: usize = 1 << 20;

/// How a snapshot is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Schema and data streamed into the store (portable).
    #[default]
    Dump,
    /// In-server copies in a snapshot schema, swapped in with `RENAME TABLE`.
    Fast,
}

/// Keys of a `mysql` component.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// `mysql://user:password@host:port/database`, with `ssl-mode` and `ssl-ca` (and
    /// `ssl-cert`, `ssl-key`) as URL parameters.
    pub url: String,
    /// `dump` (default) or `fast`.
    #[serde(default)]
    pub strategy: Strategy,
    /// Only these tables (default: every base table of the database).
    pub tables: Option<Vec<String>>,
    /// Tables loaded at once during a restore (default 2).
    pub parallel: Option<usize>,
    /// `true`: restore with `LOAD DATA LOCAL INFILE` (falling back to INSERTs when the
    /// server refuses it). Default `false`: prepared multi-row INSERTs, as fast within
    /// noise on MariaDB 10.11 here, and needing no `local_infile` on the server.
    pub load_data: Option<bool>,
    /// Fence writers while the database is put back (default `true`): the server is
    /// made read-only for accounts without READ_ONLY ADMIN or SUPER, for the window.
    pub fence: Option<bool>,
}

impl std::fmt::Debug for MysqlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlConfig")
            .field("url", &redact_url_passwords(&self.url))
            .field("strategy", &self.strategy)
            .field("tables", &self.tables)
            .finish()
    }
}

/// MySQL's `--ssl-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SslMode {
    Disabled,
    Preferred,
    Required,
    VerifyCa,
    VerifyIdentity,
}

/// The TLS part of a connection: the mode, and the options when it may use TLS.
#[derive(Debug, Clone)]
struct Tls {
    mode: SslMode,
    ssl: Option<mysql_async::SslOpts>,
}

/// Takes MySQL's TLS parameters (`ssl-mode`, `ssl-ca`, `ssl-cert`, `ssl-key`, also with
/// `_`) out of the url, which mysql_async would refuse, and makes its `SslOpts`.
fn split_tls(url: &str, base: &std::path::Path) -> std::result::Result<(String, Tls), String> {
    let mut found: std::collections::BTreeMap<String, String> = Default::default();
    let rest = match url.split_once('?') {
        None => url.to_string(),
        Some((head, query)) => {
            let mut kept = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let key = k.replace('_', "-").to_ascii_lowercase();
                if matches!(key.as_str(), "ssl-mode" | "ssl-ca" | "ssl-cert" | "ssl-key") {
                    found.insert(key, v.to_string());
                } else {
                    kept.push(pair);
                }
            }
            if kept.is_empty() {
                head.to_string()
            } else {
                format!("{head}?{}", kept.join("&"))
            }
        }
    };
    let mode = match found.get("ssl-mode").map(|m| m.to_ascii_uppercase()).as_deref() {
        None | Some("PREFERRED") => SslMode::Preferred,
        Some("DISABLED") => SslMode::Disabled,
        Some("REQUIRED") => SslMode::Required,
        Some("VERIFY_CA") => SslMode::VerifyCa,
        Some("VERIFY_IDENTITY") => SslMode::VerifyIdentity,
        Some(other) => {
            return Err(format!(
                "ssl-mode `{other}` is not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY"
            ))
        }
    };
    if mode == SslMode::Disabled {
        return Ok((rest, Tls { mode, ssl: None }));
    }
    let path = |k: &str| found.get(k).map(|p| base.join(p));
    let verify = matches!(mode, SslMode::VerifyCa | SslMode::VerifyIdentity);
    let mut ssl = mysql_async::SslOpts::default()
        // Without verification any certificate goes, as the mysql client's REQUIRED.
        .with_danger_accept_invalid_certs(!verify)
        .with_disable_built_in_roots(true);
    ssl = match path("ssl-ca") {
        Some(ca) => {
            std::fs::metadata(&ca).map_err(|e| format!("ssl-ca {}: {e}", ca.display()))?;
            ssl.with_root_certs(vec![ca.into()])
        }
        // The system's roots (a managed database's certificate chains up to one).
        None => {
            let system = rustls_native_certs::load_native_certs().certs;
            if verify && system.is_empty() {
                return Err("ssl-mode VERIFY_CA/VERIFY_IDENTITY needs ssl-ca=<CA file> (no system roots found)".into());
            }
            ssl.with_root_certs(system.into_iter().map(|c| c.to_vec().into()).collect())
        }
    };
    match (path("ssl-cert"), path("ssl-key")) {
        (Some(c), Some(k)) => {
            ssl = ssl.with_client_identity(Some(mysql_async::ClientIdentity::new(c.into(), k.into())));
        }
        (None, None) => {}
        _ => return Err("give both ssl-cert and ssl-key for a client certificate, or neither".into()),
    }
    Ok((rest, Tls { mode, ssl: Some(ssl) }))
}

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
    async fn stored_columns(&self, conn: &mut Conn, table: &str) -> Result<(Vec<String>, String)> {
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
        Ok((stored.iter().map(|r| field(r, 0)).collect(), select))
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
                    "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND \
                     (TABLE_NAME LIKE '\\_rollback\\_new\\_%' OR TABLE_NAME LIKE '\\_rollback\\_old\\_%')",
                    lit(&self.db)
                ),
                "cannot list scratch tables",
            )
            .await?;
        for r in rows {
            if let Some(n) = r.first().map(text) {
                conn.query_drop(format!("DROP TABLE IF EXISTS {}", qt(&self.db, &n)))
                    .await
                    .map_err(|e| self.err("cannot drop a scratch table", e))?;
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- capture

    async fn capture_dump(
        &self,
        ctx: &Context,
        conn: &mut Conn,
        tables: &[String],
    ) -> Result<(Vec<TableState>, Vec<ArtifactRef>)> {
        let mut states = Vec::new();
        let mut selects = Vec::new();
        for t in tables {
            let create = self
                .show_create(conn, &self.db, t)
                .await?
                .ok_or_else(|| Error::not_found(format!("mysql {}: table {} vanished", self.target, q(t))))?;
            let (columns, select) = self.stored_columns(conn, t).await?;
            states.push(TableState { name: t.clone(), create, columns, rows: 0, checksum: None, artifact: None });
            selects.push(select);
        }
        // One read view for every table: consistent while writers run, and no locks.
        conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await
            .map_err(|e| self.err("cannot set the isolation level", e))?;
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .await
            .map_err(|e| self.err("cannot start the snapshot transaction", e))?;
        let mut artifacts = Vec::new();
        for (i, st) in states.iter_mut().enumerate() {
            let name = format!("mysql/data/{i}.tsv");
            let t0 = Instant::now();
            let (rows, art) = self.stream_table(ctx, conn, st, &selects[i], &name).await?;
            st.rows = rows;
            st.checksum = self.checksum(conn, &self.db, &st.name).await?;
            st.artifact = Some(name);
            ctx.progress(format!(
                "captured {} ({rows} rows, {} bytes) in {} ms",
                q(&st.name),
                art.size,
                t0.elapsed().as_millis()
            ));
            artifacts.push(art);
        }
        conn.query_drop("COMMIT").await.map_err(|e| self.err("cannot end the snapshot transaction", e))?;
        Ok((states, artifacts))
    }

    /// Streams one table's rows into an artifact; a blocking thread writes while rows arrive.
    async fn stream_table(
        &self,
        ctx: &Context,
        conn: &mut Conn,
        st: &TableState,
        columns: &str,
        name: &str,
    ) -> Result<(u64, ArtifactRef)> {
        let mut w = ctx.store.artifact_writer(name)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        let writer = tokio::task::spawn_blocking(move || -> Result<ArtifactRef> {
            while let Some(chunk) = rx.blocking_recv() {
                w.write_all(&chunk).map_err(Error::from)?;
            }
            w.finish()
        });
        let select = format!("SELECT {columns} FROM {}", qt(&self.db, &st.name));
        let mut n = 0u64;
        let read = async {
            let mut res =
                conn.query_iter(select).await.map_err(|e| self.err(&format!("cannot read {}", q(&st.name)), e))?;
            let mut buf = Vec::with_capacity(CHUNK + 64 * 1024);
            while let Some(row) = res.next().await.map_err(|e| self.err(&format!("cannot read {}", q(&st.name)), e))? {
                for (i, v) in row.unwrap_raw().into_iter().enumerate() {
                    if i > 0 {
                        buf.push(b'\t');
                    }
                    match v {
                        None | Some(Value::NULL) => sql::push_field(&mut buf, None),
                        Some(Value::Bytes(b)) => sql::push_field(&mut buf, Some(&b)),
                        Some(other) => {
                            sql::push_field(&mut buf, Some(other.as_sql(true).trim_matches('\'').as_bytes()))
                        }
                    }
                }
                buf.push(b'\n');
                n += 1;
                if buf.len() >= CHUNK {
                    let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 64 * 1024));
                    if tx.send(full).await.is_err() {
                        break;
                    }
                }
            }
            if !buf.is_empty() {
                let _ = tx.send(buf).await;
            }
            Ok::<(), Error>(())
        }
        .await;
        drop(tx);
        let art = writer.await.map_err(|e| Error::unexpected("the snapshot writer failed").with_source(e))??;
        read?;
        Ok((n, art))
    }

    /// The schema a `fast` snapshot copies into (and `_r` for its ready copy): named
    /// from the database and the snapshot id, so that what a killed capture made can
    /// be found again without its manifest.
    fn snapshot_schema_name(&self, snapshot_id: &str) -> String {
        if snapshot_id.is_empty() {
            return format!("_rollback_{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        }
        let h = Sha256::digest(format!("{}\0{snapshot_id}", self.db).as_bytes());
        format!("_rollback_{}", &hex::encode(h)[..12])
    }

    async fn capture_fast(
        &self,
        ctx: &Context,
        conn: &mut Conn,
        tables: &[String],
    ) -> Result<(Vec<TableState>, String)> {
        let schema = self.snapshot_schema_name(&ctx.snapshot_id);
        conn.query_drop(format!("CREATE DATABASE {}", q(&schema)))
            .await
            .map_err(|e| self.err("cannot create the snapshot schema (needs CREATE privilege)", e))?;
        let r = async {
            let mut states = Vec::new();
            for t in tables {
                let create = self
                    .show_create(conn, &self.db, t)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("mysql {}: table {} vanished", self.target, q(t))))?;
                // The copy reads through the binary protocol: no FLOAT text to mind.
                let (columns, _) = self.stored_columns(conn, t).await?;
                conn.query_drop(format!("CREATE TABLE {} LIKE {}", qt(&schema, t), qt(&self.db, t)))
                    .await
                    .map_err(|e| self.err(&format!("cannot create the copy of {}", q(t)), e))?;
                states.push(TableState { name: t.clone(), create, columns, rows: 0, checksum: None, artifact: None });
            }
            // DDL above commits implicitly. Every table is then read in one read view,
            // as `dump` reads it: consistent across tables while writers run, and no
            // lock on their rows. (An `INSERT … SELECT` here takes a shared lock on every
            // source row until the commit: trading writes waited for the whole copy.)
            conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .await
                .map_err(|e| self.err("cannot set the isolation level", e))?;
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                .await
                .map_err(|e| self.err("cannot start the snapshot transaction", e))?;
            let mut writer = self.connect().await?;
            for st in &states {
                let t0 = Instant::now();
                let n = self.copy_rows(conn, &mut writer, st, &schema).await?;
                ctx.progress(format!("copied {} ({n} rows) in {} ms", q(&st.name), t0.elapsed().as_millis()));
            }
            let _ = writer.disconnect().await;
            conn.query_drop("COMMIT").await.map_err(|e| self.err("cannot end the snapshot transaction", e))?;
            for st in &mut states {
                st.checksum = self.checksum(conn, &schema, &st.name).await?;
                st.rows = self.count(conn, &schema, &st.name).await?;
            }
            Ok::<_, Error>(states)
        }
        .await;
        match r {
            Ok(states) => Ok((states, schema)),
            Err(e) => {
                let _ = conn.query_drop("ROLLBACK").await;
                let _ = conn.query_drop(format!("DROP DATABASE IF EXISTS {}", q(&schema))).await;
                Err(e)
            }
        }
    }

    /// Streams the rows of `st` as `reader`'s read view sees them into
    /// `schema`.`st.name` through `writer`, in prepared multi-row INSERTs; the next
    /// batch is read while one is written. Returns the rows copied.
    async fn copy_rows(&self, reader: &mut Conn, writer: &mut Conn, st: &TableState, schema: &str) -> Result<u64> {
        let ncols = st.columns.len();
        let per = INSERT_ROWS.min(60_000 / ncols.max(1)).max(1);
        let cols = st.columns.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
        let one = format!("({})", vec!["?"; ncols].join(","));
        let stmt_for = |n: usize| {
            format!("INSERT INTO {} ({cols}) VALUES {}", qt(schema, &st.name), vec![one.as_str(); n].join(","))
        };
        let full = writer.prep(stmt_for(per)).await.map_err(|e| self.err("cannot prepare the INSERT", e))?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Value>>(2);
        let select = format!("SELECT {cols} FROM {}", qt(&self.db, &st.name));
        let read = async move {
            // The binary protocol: each value as the server stores it. The text
            // protocol prints a FLOAT with 6 significant digits (1234567 as 1234570).
            let mut res =
                reader.exec_iter(select, ()).await.map_err(|e| self.err(&format!("cannot read {}", q(&st.name)), e))?;
            let mut batch = Vec::with_capacity(per * ncols);
            let mut n = 0u64;
            while let Some(row) = res.next().await.map_err(|e| self.err(&format!("cannot read {}", q(&st.name)), e))? {
                batch.extend(row.unwrap_raw().into_iter().map(|v| v.unwrap_or(Value::NULL)));
                n += 1;
                if batch.len() == per * ncols && tx.send(std::mem::take(&mut batch)).await.is_err() {
                    // The writer failed: its error is the one reported.
                    return Ok(n);
                }
            }
            if !batch.is_empty() {
                let _ = tx.send(batch).await;
            }
            Ok::<u64, Error>(n)
        };
        // Owns `rx`: when it fails, the reader's next send fails and the read stops.
        let write = async move {
            while let Some(batch) = rx.recv().await {
                let rows = batch.len() / ncols.max(1);
                let r = if rows == per {
                    writer.exec_drop(&full, batch).await
                } else {
                    writer.exec_drop(stmt_for(rows), batch).await
                };
                r.map_err(|e| self.err(&format!("cannot copy {}", q(&st.name)), e))?;
            }
            Ok::<(), Error>(())
        };
        let (n, w) = tokio::join!(read, write);
        w?;
        n
    }

    /// Copies the snapshot schema into `<schema>_r`, tables as captured (foreign keys
    /// are added after a swap, as on every restore), indexes built after the load.
    async fn build_ready_copy(&self, ctx: &Context, schema: &str, tables: &[TableState]) -> Result<String> {
        let t0 = Instant::now();
        let ready = format!("{schema}_r");
        let mut conn = self.connect().await?;
        conn.query_drop(format!("CREATE DATABASE {}", q(&ready)))
            .await
            .map_err(|e| self.err("cannot create the ready-copy schema", e))?;
        let ready_ref = ready.as_str();
        // Owned items: borrowed ones trip the compiler's higher-ranked lifetime check here.
        let built = futures_util::stream::iter(tables.to_vec())
            .map(|t| {
                let ready = ready_ref;
                async move {
                    let t = &t;
                    let split = sql::split_create(&t.create, &t.name, ready, &t.name).ok_or_else(|| {
                        Error::new(
                            ErrorKind::Corrupt,
                            format!("the captured CREATE TABLE of {} is not understood", q(&t.name)),
                        )
                    })?;
                    let mut conn = self.connect().await?;
                    self.fill(&mut conn, t, &split, ready, &t.name, schema).await?;
                    let _ = conn.disconnect().await;
                    Ok::<(), Error>(())
                }
            })
            .buffer_unordered(self.parallel)
            .collect::<Vec<_>>()
            .await;
        if let Some(e) = built.into_iter().find_map(|r| r.err()) {
            let _ = conn.query_drop(format!("DROP DATABASE IF EXISTS {}", q(&ready))).await;
            return Err(e);
        }
        let _ = conn.disconnect().await;
        ctx.progress(format!(
            "built the ready copy `{ready}` of {} tables in {} ms",
            tables.len(),
            t0.elapsed().as_millis()
        ));
        Ok(ready)
    }

    /// Creates `schema`.`name` from `split`, copies the rows of `source`.`t` in, then
    /// builds the indexes: once, sorted, faster than maintaining them row by row.
    async fn fill(
        &self,
        conn: &mut Conn,
        t: &TableState,
        split: &sql::SplitCreate,
        schema: &str,
        name: &str,
        source: &str,
    ) -> Result<()> {
        conn.query_drop(&split.create)
            .await
            .map_err(|e| self.err(&format!("cannot create the new {}", q(&t.name)), e))?;
        let cols = t.columns.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
        conn.query_drop(format!(
            "INSERT INTO {} ({cols}) SELECT {cols} FROM {}",
            qt(schema, name),
            qt(source, &t.name)
        ))
        .await
        .map_err(|e| self.err(&format!("cannot copy {} from the snapshot", q(&t.name)), e))?;
        self.add_indexes(conn, t, split, schema, name).await
    }

    async fn add_indexes(
        &self,
        conn: &mut Conn,
        t: &TableState,
        split: &sql::SplitCreate,
        schema: &str,
        name: &str,
    ) -> Result<()> {
        if split.indexes.is_empty() {
            return Ok(());
        }
        let adds = split.indexes.iter().map(|x| format!("ADD {x}")).collect::<Vec<_>>().join(", ");
        conn.query_drop(format!("ALTER TABLE {} {adds}", qt(schema, name)))
            .await
            .map_err(|e| self.err(&format!("cannot build the indexes of {}", q(&t.name)), e))
    }

    /// The ready copy, when this snapshot still has a whole one.
    async fn ready_copy(&self, conn: &mut Conn, st: &State) -> Result<Option<String>> {
        let (Strategy::Fast, Some(ready)) = (st.strategy, &st.ready_schema) else {
            return Ok(None);
        };
        let have: BTreeSet<String> = self.list_tables(conn, ready).await?.into_iter().collect();
        if st.tables.iter().all(|t| have.contains(&t.name)) {
            return Ok(Some(ready.clone()));
        }
        // Taken by an earlier restore (or part-taken by one that was killed; its swap
        // is all or nothing, so what is left is not a whole copy): copy instead.
        conn.query_drop(format!("DROP DATABASE IF EXISTS {}", q(ready)))
            .await
            .map_err(|e| self.err("cannot drop the used ready copy", e))?;
        Ok(None)
    }

    // ---------------------------------------------------------------- restore

    /// Creates `_rollback_new_<i>` for each table and fills it (from the dump, or from
    /// the snapshot schema), then swaps every table in with one atomic RENAME TABLE.
    async fn restore_tables(&self, ctx: &Context, part: &Part, st: &State) -> Result<()> {
        let t0 = Instant::now();
        let mut conn = self.connect().await?;
        self.drop_leftovers(&mut conn).await?;
        if !self.database_exists(&mut conn, &self.db).await? {
            return Err(Error::not_found(format!("mysql {}: database `{}` does not exist", self.target, self.db)));
        }
        // What is there now (a listed table may have been dropped since the snapshot).
        let now_tables = self.list_tables(&mut conn, &self.db).await?;
        let mut plans = Vec::new();
        for (i, t) in st.tables.iter().enumerate() {
            let tmp = format!("{TMP_NEW}{i}");
            let split = sql::split_create(&t.create, &t.name, &self.db, &tmp).ok_or_else(|| {
                Error::new(ErrorKind::Corrupt, format!("the captured CREATE TABLE of {} is not understood", q(&t.name)))
            })?;
            plans.push((i, t.clone(), tmp, split));
        }
        let ready = self.ready_copy(&mut conn, st).await?;
        let loaded = match &ready {
            Some(r) => {
                ctx.progress(format!("taking the ready copy `{r}`: no rows to copy"));
                Vec::new()
            }
            None => {
                futures_util::stream::iter(plans.clone())
                    .map(|(_, t, tmp, split)| async move {
                        let mut conn = self.connect().await?;
                        let t1 = Instant::now();
                        match st.strategy {
                            Strategy::Dump => {
                                conn.query_drop(&split.create)
                                    .await
                                    .map_err(|e| self.err(&format!("cannot create the new {}", q(&t.name)), e))?;
                                self.load_dump(ctx, &mut conn, part, &t, &tmp).await?;
                                self.add_indexes(&mut conn, &t, &split, &self.db, &tmp).await?;
                            }
                            Strategy::Fast => {
                                let schema = st.snapshot_schema.as_deref().unwrap_or_default();
                                self.fill(&mut conn, &t, &split, &self.db, &tmp, schema).await?;
                            }
                        }
                        ctx.progress(format!(
                            "loaded {} ({} rows) in {} ms",
                            q(&t.name),
                            t.rows,
                            t1.elapsed().as_millis()
                        ));
                        Ok::<(), Error>(())
                    })
                    .buffer_unordered(self.parallel)
                    .collect::<Vec<_>>()
                    .await
            }
        };
        if let Some(e) = loaded.into_iter().find_map(|r| r.err()) {
            let _ = self.drop_leftovers(&mut conn).await;
            return Err(e);
        }
        // The swap: every table at once, or none.
        let wanted: BTreeSet<&str> = st.tables.iter().map(|t| t.name.as_str()).collect();
        let mut renames = Vec::new();
        let mut old = 0usize;
        for t in &now_tables {
            // Whole-database scope: tables created since the snapshot go too.
            if wanted.contains(t.as_str()) || !st.scoped {
                renames.push(format!("{} TO {}", qt(&self.db, t), qt(&self.db, &format!("{TMP_OLD}{old}"))));
                old += 1;
            }
        }
        for (_, t, tmp, _) in &plans {
            let from = match &ready {
                Some(r) => qt(r, &t.name),
                None => qt(&self.db, tmp),
            };
            renames.push(format!("{from} TO {}", qt(&self.db, &t.name)));
        }
        let t_swap = Instant::now();
        conn.query_drop(format!("RENAME TABLE {}", renames.join(", ")))
            .await
            .map_err(|e| self.err("the atomic RENAME TABLE swap failed (nothing was swapped)", e))?;
        crate::failpoint::hit("mysql-swapped");
        let swap_ms = t_swap.elapsed().as_millis();
        // The old tables go first: they still hold the foreign key and trigger names
        // (both unique per database), and their triggers go with them.
        self.drop_leftovers(&mut conn).await?;
        self.create_triggers(&mut conn, &st.triggers).await?;
        for (_, t, _, split) in &plans {
            if !split.foreign_keys.is_empty() {
                let adds = split.foreign_keys.iter().map(|x| format!("ADD {x}")).collect::<Vec<_>>().join(", ");
                conn.query_drop(format!("ALTER TABLE {} {adds}", qt(&self.db, &t.name)))
                    .await
                    .map_err(|e| self.err(&format!("cannot restore the foreign keys of {}", q(&t.name)), e))?;
            }
        }
        if let Some(r) = &ready {
            // Empty now; a later restore of this snapshot copies from the snapshot schema.
            conn.query_drop(format!("DROP DATABASE IF EXISTS {}", q(r)))
                .await
                .map_err(|e| self.err("cannot drop the emptied ready-copy schema", e))?;
        }
        ctx.progress(format!(
            "restored {} tables of {} in {} ms (atomic swap: {swap_ms} ms)",
            st.tables.len(),
            self.db,
            t0.elapsed().as_millis()
        ));
        Ok(())
    }

    /// Loads one table's dump, hashing the bytes as they go: a damaged artifact fails
    /// the load before anything is swapped in.
    async fn load_dump(&self, ctx: &Context, conn: &mut Conn, part: &Part, t: &TableState, tmp: &str) -> Result<()> {
        let name = t.artifact.as_deref().unwrap_or_default();
        let art = part
            .artifact(name)
            .ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("mysql snapshot has no `{name}`")))?
            .clone();
        let path = ctx.store.artifact_path(&art)?;
        let cols = t.columns.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
        let seen: Arc<Mutex<Option<(String, u64)>>> = Arc::default();
        let mut loaded = false;
        if self.load_data {
            let file = tokio::fs::File::open(&path).await.map_err(|e| {
                Error::new(ErrorKind::Corrupt, format!("artifact `{name}` is missing from the store")).with_source(e)
            })?;
            let slot = seen.clone();
            let stream = futures_util::stream::unfold(Some((file, Sha256::new(), 0u64)), move |st| {
                let slot = slot.clone();
                async move {
                    let (mut f, mut h, n) = st?;
                    let mut buf = vec![0u8; CHUNK];
                    match tokio::io::AsyncReadExt::read(&mut f, &mut buf).await {
                        Ok(0) => {
                            if let Ok(mut s) = slot.lock() {
                                *s = Some((hex::encode(h.finalize()), n));
                            }
                            None
                        }
                        Ok(k) => {
                            buf.truncate(k);
                            h.update(&buf);
                            Some((Ok(Bytes::from(buf)), Some((f, h, n + k as u64))))
                        }
                        Err(e) => Some((Err(e), None)),
                    }
                }
            });
            conn.set_infile_handler(async move { Ok(stream.boxed()) });
            let load = format!(
                "LOAD DATA LOCAL INFILE 'rollback' INTO TABLE {} CHARACTER SET binary \
                 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({cols})",
                qt(&self.db, tmp)
            );
            match conn.query_drop(load).await {
                Ok(()) => loaded = true,
                // Local infile disabled on the server (or client): fall back to INSERTs.
                Err(mysql_async::Error::Server(e)) if matches!(e.code, 1148 | 3948 | 4166) => {
                    tracing::info!(component = %ctx.component, "LOAD DATA LOCAL is refused by the server; using multi-row INSERTs");
                }
                Err(e) => return Err(self.err(&format!("cannot load {}", q(&t.name)), e)),
            }
        }
        if !loaded {
            *seen.lock().map_err(|_| Error::unexpected("poisoned"))? =
                Some(self.insert_rows(conn, &path, t, tmp).await?);
        }
        let got = seen.lock().map_err(|_| Error::unexpected("poisoned"))?.clone();
        match got {
            Some((sha, size)) if sha == art.sha256 && size == art.size => Ok(()),
            _ => Err(Error::new(
                ErrorKind::Corrupt,
                format!("artifact `{name}` fails its checksum; refusing to use it (nothing was swapped in)"),
            )),
        }
    }

    /// The INSERT path: multi-row prepared INSERTs of `INSERT_ROWS` rows. Returns the
    /// file's (sha256, size).
    async fn insert_rows(
        &self,
        conn: &mut Conn,
        path: &std::path::Path,
        t: &TableState,
        tmp: &str,
    ) -> Result<(String, u64)> {
        use tokio::io::AsyncBufReadExt;
        let ncols = t.columns.len();
        let per = INSERT_ROWS.min(60_000 / ncols.max(1)).max(1);
        let cols = t.columns.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
        let one = format!("({})", vec!["?"; ncols].join(","));
        let stmt_for =
            |n: usize| format!("INSERT INTO {} ({cols}) VALUES {}", qt(&self.db, tmp), vec![one.as_str(); n].join(","));
        let full = conn.prep(stmt_for(per)).await.map_err(|e| self.err("cannot prepare the INSERT", e))?;
        let f = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::new(ErrorKind::Corrupt, "a data artifact is missing").with_source(e))?;
        let mut r = tokio::io::BufReader::with_capacity(CHUNK, f);
        let mut h = Sha256::new();
        let mut size = 0u64;
        let mut line = Vec::new();
        let mut params: Vec<Value> = Vec::with_capacity(per * ncols);
        let mut rows = 0usize;
        loop {
            line.clear();
            let n = r.read_until(b'\n', &mut line).await.map_err(Error::from)?;
            if n == 0 {
                break;
            }
            h.update(&line);
            size += n as u64;
            let body = line.strip_suffix(b"\n").unwrap_or(&line);
            let vals = sql::parse_line(body, ncols)
                .ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("the data of {} is damaged", q(&t.name))))?;
            params.extend(vals.into_iter().map(|v| v.map(Value::Bytes).unwrap_or(Value::NULL)));
            rows += 1;
            if rows == per {
                conn.exec_drop(&full, std::mem::take(&mut params))
                    .await
                    .map_err(|e| self.err(&format!("cannot insert into {}", q(&t.name)), e))?;
                rows = 0;
            }
        }
        if rows > 0 {
            conn.exec_drop(stmt_for(rows), params)
                .await
                .map_err(|e| self.err(&format!("cannot insert into {}", q(&t.name)), e))?;
        }
        Ok((hex::encode(h.finalize()), size))
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

    async fn plan_fence(&self, ctx: &Context) -> Result<FencePlan> {
        self.plan_write_fence().await.map_err(|e| e.with_component(&ctx.component))
    }

    async fn fence(&self, ctx: &Context, undo: &serde_json::Value) -> Result<String> {
        self.raise_write_fence(undo).await.map_err(|e| e.with_component(&ctx.component))
    }

    async fn unfence(&self, ctx: &Context, undo: &serde_json::Value) -> Result<()> {
        self.lift_write_fence(undo).await.map_err(|e| e.with_component(&ctx.component))
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
    use super::is_generated;

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
}
