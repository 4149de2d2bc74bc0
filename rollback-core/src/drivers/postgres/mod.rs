#![doc = include_str!("docs.md")]

mod catalog;
mod conn;
mod dump;
mod fast;
mod fence;

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::ComponentConfig;
use crate::driver::{Capability, Captured, Context, Discard, Drift, Driver, DynDriver, FencePlan};
use crate::error::{Error, ErrorKind, Result};
use crate::registry::DriverEnv;
use crate::secret::redact_url_passwords;
use crate::snapshot::Part;

use catalog::Scope;
use conn::{parse_qualified, pg_error, qname, Target};

/// How a snapshot is taken and put back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Schema and data into the store (portable to another server).
    #[default]
    Dump,
    /// A template copy of the database kept on the server, swapped in by rename.
    Fast,
}

/// Keys of a `postgres` component.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user[:password]@host:port/db` (or libpq `key=value` form).
    pub url: String,
    /// `dump` (default) or `fast`.
    #[serde(default)]
    pub strategy: Strategy,
    /// Only these schemas (dump strategy).
    #[serde(default)]
    pub schemas: Vec<String>,
    /// Only these tables, `table` or `schema.table` (dump strategy).
    #[serde(default)]
    pub tables: Vec<String>,
    /// The `pg_dump` binary (its major version must equal the server's).
    #[serde(default)]
    pub pg_dump: Option<String>,
    /// Connections copying tables in parallel during a dump capture (default 2).
    #[serde(default)]
    pub jobs: Option<usize>,
    /// The most table data a dump capture reads a second, all jobs together
    /// (`"20MB"`, `"512kB"`; as `pg_basebackup --max-rate`): a slower snapshot that
    /// leaves the server's CPU to the application's writers. Unset: as fast as it can.
    #[serde(default)]
    pub max_rate: Option<String>,
    /// A file holding the password (its first line), when the url has none.
    #[serde(default)]
    pub password_file: Option<String>,
    /// Fence the database's writers while it is put back (default `true`): a
    /// connection limit of 0 and the other sessions ended. Needs a superuser.
    #[serde(default)]
    pub fence: Option<bool>,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact_url_passwords(&self.url))
            .field("strategy", &self.strategy)
            .field("schemas", &self.schemas)
            .field("tables", &self.tables)
            .finish()
    }
}

/// Supabase's transaction-mode pooler (Supavisor, and PgBouncer's usual port there).
const TRANSACTION_POOLER_PORT: u16 = 6543;

/// The `postgres` driver.
#[derive(Debug)]
pub struct PostgresDriver {
    target: Target,
    strategy: Strategy,
    scope: Scope,
    pg_dump: String,
    jobs: usize,
    /// Bytes a second, all copy jobs together (`max_rate`).
    max_rate: Option<u64>,
    fence: bool,
    /// The session holding the write fence's turn (see `fence.rs`).
    fence_session: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

pub(crate) fn factory(c: &ComponentConfig, env: &DriverEnv) -> Result<DynDriver> {
    let cfg: PostgresConfig = c.options.parse()?;
    let (url, tls) = conn::split_tls(&cfg.url, &|k| std::env::var(k).ok())
        .map_err(|m| c.options.error("url", env.redactor.redact(&m)))?;
    let mut pg = tokio_postgres::Config::from_str(&url).map_err(|e| {
        // The parse error may quote the input: keep only what the redactor allows.
        c.options.error("url", env.redactor.redact(&format!("not a PostgreSQL URL: {}", conn::describe(&e))))
    })?;
    if pg.get_password().is_none() {
        if let Some(p) = password(&cfg, &pg, env).map_err(|m| c.options.error("password_file", m))? {
            pg.password(p);
        }
    }
    if let Some(p) = pg.get_password() {
        env.redactor.add(&String::from_utf8_lossy(p));
    }
    let scope = match (cfg.schemas.is_empty(), cfg.tables.is_empty()) {
        (true, true) => Scope::Database,
        (false, true) => Scope::Schemas { schemas: cfg.schemas.clone() },
        (true, false) => Scope::Tables {
            tables: cfg
                .tables
                .iter()
                .map(|t| parse_qualified(t).map_err(|m| c.options.error("tables", m)))
                .collect::<Result<_>>()?,
        },
        (false, false) => return Err(c.options.error("tables", "give `schemas` or `tables`, not both")),
    };
    let max_rate = cfg.max_rate.as_deref().map(parse_rate).transpose().map_err(|m| c.options.error("max_rate", m))?;
    if cfg.strategy == Strategy::Fast && max_rate.is_some() {
        return Err(c.options.error(
            "max_rate",
            "`fast` copies inside the server, where no rate applies; `max_rate` paces the `dump` strategy",
        ));
    }
    if cfg.strategy == Strategy::Fast && scope != Scope::Database {
        return Err(c.options.error(
            "strategy",
            "`fast` copies the whole database; use `dump` to snapshot only some schemas or tables",
        ));
    }
    Ok(Arc::new(PostgresDriver {
        target: Target::new(pg, tls),
        strategy: cfg.strategy,
        scope,
        pg_dump: cfg.pg_dump.unwrap_or_else(|| "pg_dump".into()),
        jobs: cfg.jobs.unwrap_or(2).clamp(1, 16),
        max_rate,
        fence: cfg.fence.unwrap_or(true),
        fence_session: Default::default(),
    }))
}

/// `max_rate`: a size a second, `kB`, `MB` or `GB` (powers of 1024, as PostgreSQL's
/// own units), between 32 kB and 1 GB as `pg_basebackup --max-rate` allows.
fn parse_rate(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit_bytes: u64 = match unit.trim() {
        "kB" | "KB" | "k" => 1 << 10,
        "MB" | "M" => 1 << 20,
        "GB" | "G" => 1 << 30,
        _ => return Err(format!("`{s}` is not a rate like \"20MB\" or \"512kB\" (a second; kB, MB or GB)")),
    };
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a rate like \"20MB\" or \"512kB\""))?;
    let bytes = n * unit_bytes as f64;
    if !(bytes.is_finite() && (32.0 * 1024.0..=1024.0 * 1024.0 * 1024.0).contains(&bytes)) {
        return Err(format!("`{s}` is outside 32kB to 1GB a second"));
    }
    Ok(bytes as u64)
}

/// The password when the url has none, where libpq would look: the `password_file`
/// key, else `PGPASSWORD`, else the password file (`PGPASSFILE` or `~/.pgpass`).
fn password(
    cfg: &PostgresConfig,
    pg: &tokio_postgres::Config,
    env: &DriverEnv,
) -> std::result::Result<Option<String>, String> {
    if let Some(f) = &cfg.password_file {
        let path = env.base_dir.join(f);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let p = text.lines().next().unwrap_or("").to_string();
        if p.is_empty() {
            return Err(format!("{} is empty", path.display()));
        }
        return Ok(Some(p));
    }
    if let Some(p) = std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()) {
        return Ok(Some(p));
    }
    let file = std::env::var_os("PGPASSFILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".pgpass")));
    let Some(text) = file.and_then(|f| std::fs::read_to_string(f).ok()) else { return Ok(None) };
    let t =
        Target::new(pg.clone(), conn::PgTls { mode: conn::PgSslMode::Disable, rootcert: None, cert: None, key: None });
    Ok(conn::pgpass_lookup(&text, &t.host(), t.port(), &t.db, pg.get_user().unwrap_or("postgres")))
}

/// What every snapshot of this driver records (never the password).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Common {
    strategy: Strategy,
    /// `user@host:port/db`.
    target: String,
    database: String,
    server_version_num: i32,
}

impl PostgresDriver {
    /// Connects and reads the server version: the preflight of every operation.
    async fn open(&self) -> Result<(tokio_postgres::Client, i32)> {
        if self.target.port() == TRANSACTION_POOLER_PORT {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{} is on port {TRANSACTION_POOLER_PORT}, a transaction-mode connection pooler's \
                     (Supabase's), which hands each transaction to another server session: a consistent \
                     snapshot, a restore and their locks need one session. Use the direct connection \
                     (db.<project>.supabase.co:5432) or the session pooler (port 5432)",
                    self.target.desc
                ),
            ));
        }
        let client = self.target.connect().await?;
        let v: String = client
            .query_one("SELECT current_setting('server_version_num')", &[])
            .await
            .map_err(|e| pg_error(&e, "cannot read the server version"))?
            .get(0);
        let v = v.parse::<i32>().map_err(|_| Error::unexpected(format!("odd server_version_num `{v}`")))?;
        Ok((client, v))
    }

    /// Whether this connection is encrypted and what was verified, as the server sees it.
    async fn tls_status(&self, client: &tokio_postgres::Client) -> String {
        let row = client
            .query_opt("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
            .await
            .ok()
            .flatten();
        let mode = self.target.tls.mode.as_str();
        match row.map(|r| (r.get::<_, bool>(0), r.get::<_, Option<String>>(1))) {
            Some((true, version)) => format!(
                "TLS {} (sslmode={mode}): {}",
                version.unwrap_or_default(),
                self.target.tls.verify().unwrap_or(crate::tls::Verify::None).describe()
            ),
            Some((false, _)) => format!("NOT encrypted (sslmode={mode})"),
            None => format!("encryption unknown (sslmode={mode}; pg_stat_ssl is not readable)"),
        }
    }

    fn common(&self, part: &Part) -> Result<Common> {
        part.state_as()
    }

    fn same_major(&self, captured: i32, now: i32) -> Result<()> {
        if captured / 10000 != now / 10000 {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the snapshot was taken from PostgreSQL {} but {} runs {}; restore it on a server of the same major version",
                    captured / 10000,
                    self.target.desc,
                    now / 10000
                ),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Driver for PostgresDriver {
    fn name(&self) -> &str {
        "postgres"
    }

    fn capability(&self) -> Capability {
        Capability {
            shared_data: true,
            discard_report: true,
            perturb: true,
            idempotent_restore: true,
            fence: true,
            ..Capability::default()
        }
    }

    async fn plan_fence(&self, _ctx: &Context) -> Result<FencePlan> {
        fence::plan(self).await
    }

    async fn fence(&self, _ctx: &Context, undo: &serde_json::Value) -> Result<String> {
        fence::raise(self, undo).await
    }

    async fn unfence(&self, _ctx: &Context, undo: &serde_json::Value) -> Result<()> {
        fence::lift(self, undo).await
    }

    async fn capture(&self, ctx: &Context) -> Result<Captured> {
        let r = match self.strategy {
            Strategy::Dump => dump::capture(self, ctx).await,
            Strategy::Fast => fast::capture(self, ctx).await,
        };
        r
    }

    async fn preflight(&self, ctx: &Context, part: &Part) -> Result<()> {
        let r = async {
            let c = self.common(part)?;
            match c.strategy {
                Strategy::Dump => dump::preflight(self, ctx, part, &c).await,
                Strategy::Fast => fast::preflight(self, ctx, part, &c).await,
            }
        }
        .await;
        r
    }

    async fn restore(&self, ctx: &Context, part: &Part) -> Result<()> {
        let r = async {
            let c = self.common(part)?;
            match c.strategy {
                Strategy::Dump => dump::restore(self, ctx, part, &c).await,
                Strategy::Fast => fast::restore(self, ctx, part, &c).await,
            }
        }
        .await;
        r
    }

    async fn verify(&self, ctx: &Context, part: &Part) -> Result<Drift> {
        let r = async {
            let c = self.common(part)?;
            match c.strategy {
                Strategy::Dump => dump::verify(self, ctx, part).await,
                Strategy::Fast => fast::verify(self, ctx, part).await,
            }
        }
        .await;
        r
    }

    async fn discards(&self, ctx: &Context, part: &Part) -> Result<Vec<Discard>> {
        let r = async {
            let c = self.common(part)?;
            match c.strategy {
                Strategy::Dump => dump::discards(self, ctx, part).await,
                Strategy::Fast => fast::discards(self, ctx, part).await,
            }
        }
        .await;
        r
    }

    async fn release(&self, _ctx: &Context, part: &Part) -> Result<()> {
        let r = async {
            match self.common(part)?.strategy {
                Strategy::Dump => Ok(()),
                Strategy::Fast => fast::release(self, part).await,
            }
        }
        .await;
        r
    }

    async fn release_unfinished(&self, ctx: &Context) -> Result<()> {
        match self.strategy {
            // `dump` keeps everything in the store.
            Strategy::Dump => Ok(()),
            Strategy::Fast => fast::release_unfinished(self, ctx).await,
        }
    }

    fn describe_restore(&self, part: &Part) -> String {
        match self.common(part) {
            Ok(c) if c.strategy == Strategy::Fast => fast::describe(part, &c),
            Ok(c) => dump::describe(part, &c),
            Err(_) => "restore postgres (unreadable snapshot state)".into(),
        }
    }

    /// A table the snapshot does not have, in the first schema in scope: the drill's
    /// restore must remove it (both strategies), and `verify` must see it gone.
    async fn perturb(&self, _ctx: &Context) -> Result<String> {
        let r = async {
            let (client, _) = self.open().await?;
            let schema = match &self.scope {
                Scope::Tables { .. } => {
                    return Ok("`tables` is set; the drill does not write into listed tables".to_string())
                }
                Scope::Schemas { schemas } => schemas.first().cloned(),
                Scope::Database => {
                    let all = catalog::existing_schemas(&client).await?;
                    all.iter().find(|s| *s == "public").or(all.first()).cloned()
                }
            };
            let Some(schema) = schema else {
                return Ok("no schema to write into".to_string());
            };
            let table = qname(&schema, "rollback_drill");
            client
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {table} (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
                     INSERT INTO {table} (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET at = now();"
                ))
                .await
                .map_err(|e| pg_error(&e, "cannot create the drill table"))?;
            Ok(format!("created table {schema}.rollback_drill"))
        }
        .await;
        r
    }

    async fn check(&self, _ctx: &Context) -> Result<String> {
        let r = async {
            let (client, v) = self.open().await?;
            let rels = catalog::relations(&client, &self.scope).await?;
            Ok(format!(
                "PostgreSQL {}.{} at {}: {} tables in scope ({}), strategy {:?}; {}",
                v / 10000,
                v % 100,
                self.target.desc,
                rels.iter().filter(|r| r.has_data()).count(),
                self.scope.describe(),
                self.strategy,
                self.tls_status(&client).await
            ))
        }
        .await;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn max_rate_takes_a_size_a_second_within_pg_basebackups_bounds() {
        assert_eq!(parse_rate("20MB"), Ok(20 << 20));
        assert_eq!(parse_rate("512kB"), Ok(512 << 10));
        assert_eq!(parse_rate("1.5 GB").unwrap_err(), "`1.5 GB` is outside 32kB to 1GB a second");
        assert_eq!(parse_rate("1GB"), Ok(1 << 30));
        assert_eq!(parse_rate("32k"), Ok(32 << 10));
        for bad in ["20", "fast", "MB", "-1MB", "1e3MB", "16kB", "NaNMB"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
