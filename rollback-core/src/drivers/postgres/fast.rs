//! `strategy = "fast"`: the snapshot is a database on the same server, made with
//! `CREATE DATABASE … TEMPLATE … STRATEGY FILE_COPY`; a restore copies it again and
//! swaps the copy in with two renames in one transaction.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::catalog::{self, RowHash, RowHasher, Scope};
use super::conn::{ident, pg_error, Target};
use super::dump::line_diff;
use super::{Common, PostgresDriver, Strategy};
use crate::driver::{Captured, Context, Discard, Drift};
use crate::error::{Error, ErrorKind, Result};
use crate::snapshot::Part;

pub(super) const MAINTENANCE_DB: &str = "postgres";
const ATTEMPTS: u32 = 10;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FastState {
    #[serde(flatten)]
    common: Common,
    /// The database holding the snapshot, on the same server (kept until gc).
    copy_db: String,
    /// A second copy, ready to be renamed in: the first restore is a rename, not a copy.
    #[serde(default)]
    ready_db: Option<String>,
}

/// `<db>__<tag>`, shortened (with a hash of the name) to PostgreSQL's 63 bytes.
fn derived(db: &str, tag: &str) -> String {
    let full = format!("{db}__{tag}");
    if full.len() <= 63 {
        return full;
    }
    let h = &hex::encode(Sha256::digest(db.as_bytes()))[..8];
    let mut cut = 63usize.saturating_sub(tag.len() + 2 + 9);
    while !db.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{h}__{tag}", &db[..cut])
}

async fn maintenance(d: &PostgresDriver) -> Result<(Client, i32)> {
    let t: Target = d.target.with_db(MAINTENANCE_DB);
    let client = t.connect().await.map_err(|e| {
        Error::new(
            e.kind(),
            format!(
                "{} (the fast strategy runs CREATE/ALTER DATABASE from the maintenance database `{MAINTENANCE_DB}`)",
                e.message()
            ),
        )
    })?;
    let v: String = client
        .query_one("SELECT current_setting('server_version_num')", &[])
        .await
        .map_err(|e| pg_error(&e, "cannot read the server version"))?
        .get(0);
    Ok((client, v.parse().unwrap_or(0)))
}

async fn require_createdb(client: &Client, d: &PostgresDriver) -> Result<()> {
    let row = client
        .query_one("SELECT current_user::text, rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user", &[])
        .await
        .map_err(|e| pg_error(&e, "cannot read the role's privileges"))?;
    let (user, ok): (String, bool) = (row.get(0), row.get(1));
    if ok {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::PermissionDenied,
        format!(
            "strategy `fast` needs the CREATEDB privilege (role `{user}` on {} lacks it): \
             run `ALTER ROLE {} CREATEDB` as a superuser, or use strategy = \"dump\"",
            d.target.desc,
            ident(&user)
        ),
    ))
}

async fn exists(client: &Client, db: &str) -> Result<bool> {
    Ok(client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
        .await
        .map_err(|e| pg_error(&e, "cannot list databases"))?
        .is_some())
}

/// Ends every other session on `db` (and waits for them, PostgreSQL ≥ 14).
async fn terminate(client: &Client, db: &str, version: i32) -> Result<i64> {
    let q = if version >= 140000 {
        "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
    } else {
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
    };
    Ok(client
        .query_one(q, &[&db])
        .await
        .map_err(|e| pg_error(&e, &format!("cannot end the sessions on database `{db}`")))?
        .get(0))
}

/// What can end the swap's transaction: a statement of its own, or a helper's error.
enum Swap {
    Pg(tokio_postgres::Error),
    Other(Error),
}

impl From<tokio_postgres::Error> for Swap {
    fn from(e: tokio_postgres::Error) -> Swap {
        Swap::Pg(e)
    }
}

fn in_use(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::OBJECT_IN_USE)
}

/// `CREATE DATABASE new TEMPLATE src`, ending sessions on `src` first; new sessions that
/// race in are ended again, a few times. The copy takes no connections and grants
/// nothing to PUBLIC (see [`lock_down`]); a restore gives the swapped-in copy the live
/// database's properties.
async fn copy_database(client: &Client, version: i32, new: &str, src: &str, owner: Option<&str>) -> Result<()> {
    let mut sql = format!("CREATE DATABASE {} TEMPLATE {}", ident(new), ident(src));
    if version >= 150000 {
        sql.push_str(" STRATEGY FILE_COPY");
    }
    if let Some(o) = owner {
        sql.push_str(&format!(" OWNER {}", ident(o)));
    }
    // Closed from its creation: no session can start on it before the REVOKE below.
    sql.push_str(" ALLOW_CONNECTIONS false");
    for attempt in 1..=ATTEMPTS {
        let ended = terminate(client, src, version).await?;
        if ended > 0 {
            tracing::info!(database = src, sessions = ended, "ended sessions before copying");
        }
        match client.batch_execute(&sql).await {
            Ok(()) => return lock_down(client, new).await,
            Err(e) if in_use(&e) && attempt < ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            Err(e) => return Err(pg_error(&e, &format!("cannot copy database `{src}` to `{new}`"))),
        }
    }
    unreachable!("the loop returns")
}

/// A kept copy is a full copy of production: it takes no connections at all (a
/// template needs none: `template0` is one), and grants nothing to PUBLIC in case
/// connections are ever allowed again (verify allows them for the instant it connects).
/// `CREATE DATABASE` gives a copy the default ACL (anyone may connect), not the
/// template's. Applied again to copies made by earlier builds.
async fn lock_down(client: &Client, db: &str) -> Result<()> {
    client
        .batch_execute(&format!(
            "ALTER DATABASE {0} WITH ALLOW_CONNECTIONS false; REVOKE ALL ON DATABASE {0} FROM PUBLIC",
            ident(db)
        ))
        .await
        .map_err(|e| pg_error(&e, &format!("cannot close the copy `{db}` to connections")))
}

/// The grantees in `db`'s ACL (the default one when it has none), as SQL names
/// (`PUBLIC` or a quoted role), with whether each is the owner.
async fn grantees(client: &Client, db: &str) -> Result<Vec<(String, bool)>> {
    let rows = client
        .query(
            "SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                    a.grantee = d.datdba
               FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
              WHERE d.datname = $1",
            &[&db],
        )
        .await
        .map_err(|e| pg_error(&e, &format!("cannot read the grants on database `{db}`")))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// GUCs whose stored value is already a quoted list, so it is written as is (the
/// list `pg_dump` keeps for the same reason); any other value is a string literal.
const LIST_GUCS: &[&str] = &[
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

/// An escape-string literal: correct whatever `standard_conforming_strings` says.
fn literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// `ALTER … SET name TO value` from a `pg_db_role_setting` entry `name=value`.
fn setting_sql(target: &str, entry: &str) -> Option<String> {
    let (name, value) = entry.split_once('=')?;
    let name_sql = name.split('.').map(ident).collect::<Vec<_>>().join(".");
    let value_sql =
        if LIST_GUCS.contains(&name.to_ascii_lowercase().as_str()) { value.to_string() } else { literal(value) };
    Some(format!("{target} SET {name_sql} TO {value_sql};\n"))
}

/// Gives `to` the properties of database `from` that live outside its files, so a
/// copy swapped in is what clients and operators knew: owner, ACL (`GRANT … ON
/// DATABASE`), connection limit, whether it takes connections or is a template,
/// comment, and settings (`ALTER DATABASE … SET`, `ALTER ROLE … IN DATABASE … SET`).
/// Runs in the swap's transaction, so all of it lands with the swap or none does.
/// Grants are replayed by the restoring role, so one made by a grantee holding the
/// grant option is recorded as granted by the owner.
async fn carry_properties(client: &Client, from: &str, to: &str) -> Result<()> {
    let err = |e: tokio_postgres::Error| pg_error(&e, &format!("cannot give the copy the properties of `{from}`"));
    let row = client
        .query_one(
            "SELECT oid, quote_ident(pg_get_userbyid(datdba)), datconnlimit, datallowconn, datistemplate,
                    shobj_description(oid, 'pg_database')
               FROM pg_database WHERE datname = $1",
            &[&from],
        )
        .await
        .map_err(err)?;
    let (oid, owner, limit, allow, template, comment): (u32, String, i32, bool, bool, Option<String>) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4), row.get(5));
    let t = ident(to);
    // The owner first: it rewrites the owner's entries in the ACL read next.
    client.batch_execute(&format!("ALTER DATABASE {t} OWNER TO {owner}")).await.map_err(err)?;
    let mut sql = format!(
        "ALTER DATABASE {t} WITH CONNECTION LIMIT {limit} ALLOW_CONNECTIONS {allow} IS_TEMPLATE {template};\n\
         COMMENT ON DATABASE {t} IS {};\n",
        comment.as_deref().map(literal).unwrap_or_else(|| "NULL".into())
    );
    let now: Vec<String> = grantees(client, to).await?.into_iter().map(|(g, _)| g).collect();
    if !now.is_empty() {
        sql.push_str(&format!("REVOKE ALL ON DATABASE {t} FROM {} CASCADE;\n", now.join(", ")));
    }
    let grants = client
        .query(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                    a.privilege_type, a.is_grantable
               FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
              WHERE d.datname = $1",
            &[&from],
        )
        .await
        .map_err(err)?;
    for g in &grants {
        let (grantee, privilege, grantable): (String, String, bool) = (g.get(0), g.get(1), g.get(2));
        sql.push_str(&format!(
            "GRANT {privilege} ON DATABASE {t} TO {grantee}{};\n",
            if grantable { " WITH GRANT OPTION" } else { "" }
        ));
    }
    let settings = client
        .query(
            "SELECT quote_ident(pg_get_userbyid(nullif(s.setrole, 0))), c
               FROM pg_db_role_setting s, unnest(s.setconfig) c WHERE s.setdatabase = $1",
            &[&oid],
        )
        .await
        .map_err(err)?;
    for r in &settings {
        let (role, entry): (Option<String>, String) = (r.get(0), r.get(1));
        let target = match role {
            Some(role) => format!("ALTER ROLE {role} IN DATABASE {t}"),
            None => format!("ALTER DATABASE {t}"),
        };
        sql.extend(setting_sql(&target, &entry));
    }
    client.batch_execute(&sql).await.map_err(err)
}

/// The replaced database, kept as `<db>__rb_old`, stays readable for its owner and
/// superusers only: the grants that let roles reach production do not reach it.
async fn close_replaced(client: &Client, db: &str) -> Result<()> {
    let others: Vec<String> =
        grantees(client, db).await?.into_iter().filter(|(_, owner)| !owner).map(|(g, _)| g).collect();
    if others.is_empty() {
        return Ok(());
    }
    client
        .batch_execute(&format!("REVOKE ALL ON DATABASE {} FROM {} CASCADE", ident(db), others.join(", ")))
        .await
        .map_err(|e| pg_error(&e, &format!("cannot close the replaced database `{db}` to other roles")))
}

/// A connection to a kept copy, which takes none: allowed for the instant it takes to
/// connect (a session outlives the flag), and closed again whatever happened.
async fn connect_copy(d: &PostgresDriver, client: &Client, db: &str) -> Result<Client> {
    client
        .batch_execute(&format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", ident(db)))
        .await
        .map_err(|e| pg_error(&e, &format!("cannot open the copy `{db}` to read it")))?;
    let c = d.target.with_db(db).connect().await;
    lock_down(client, db).await?;
    c
}

async fn drop_database(client: &Client, db: &str, version: i32) -> Result<()> {
    let sql = if version >= 130000 {
        format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(db))
    } else {
        terminate(client, db, version).await?;
        format!("DROP DATABASE IF EXISTS {}", ident(db))
    };
    client.batch_execute(&sql).await.map_err(|e| pg_error(&e, &format!("cannot drop database `{db}`")))
}

pub(super) async fn capture(d: &PostgresDriver, ctx: &Context) -> Result<Captured> {
    let (client, version) = maintenance(d).await?;
    require_createdb(&client, d).await?;
    let db = &d.target.db;
    if !exists(&client, db).await? {
        return Err(Error::not_found(format!("database `{db}` does not exist on {}", d.target.desc)));
    }
    let tag = copy_tag(&ctx.snapshot_id);
    let copy = derived(db, &tag);
    if exists(&client, &copy).await? {
        drop_database(&client, &copy, version).await?;
    }
    let ready = derived(db, &format!("{tag}_r"));
    drop_database(&client, &derived(db, "rb_old"), version).await?;
    if exists(&client, &ready).await? {
        drop_database(&client, &ready, version).await?;
    }
    ctx.progress(format!("ending the sessions on `{db}` and copying it to `{copy}` on the server"));
    copy_database(&client, version, &copy, db, None).await?;
    // The spare comes from the copy, which has no sessions: clients are cut off once.
    copy_database(&client, version, &ready, &copy, None).await?;
    let st = FastState {
        common: Common {
            strategy: Strategy::Fast,
            target: d.target.desc.clone(),
            database: db.clone(),
            server_version_num: version,
        },
        copy_db: copy,
        ready_db: Some(ready),
    };
    Ok(Captured {
        state: serde_json::to_value(&st).map_err(|e| Error::unexpected("cannot encode state").with_source(e))?,
        artifacts: Vec::new(),
    })
}

async fn require_copy(client: &Client, st: &FastState) -> Result<()> {
    if exists(client, &st.copy_db).await? {
        return Ok(());
    }
    Err(Error::not_found(format!(
        "the snapshot's copy database `{}` no longer exists on the server (dropped outside rollback?)",
        st.copy_db
    )))
}

pub(super) async fn preflight(d: &PostgresDriver, _ctx: &Context, part: &Part, c: &Common) -> Result<()> {
    let st = part.state_as::<FastState>()?;
    let (client, version) = maintenance(d).await?;
    d.same_major(c.server_version_num, version)?;
    require_createdb(&client, d).await?;
    require_copy(&client, &st).await
}

pub(super) fn describe(part: &Part, c: &Common) -> String {
    let copy = part.state_as::<FastState>().map(|s| s.copy_db).unwrap_or_default();
    format!(
        "swap database `{}` ({}) for a copy of `{copy}` (its spare copy the first time, else CREATE DATABASE … \
         TEMPLATE), then END EVERY SESSION connected to `{}` and rename both in one transaction; the replaced \
         database is kept as `{}__rb_old` until the next snapshot or restore",
        c.database, c.target, c.database, c.database
    )
}

pub(super) async fn restore(d: &PostgresDriver, ctx: &Context, part: &Part, c: &Common) -> Result<()> {
    let st = part.state_as::<FastState>()?;
    let (client, version) = maintenance(d).await?;
    d.same_major(c.server_version_num, version)?;
    require_createdb(&client, d).await?;
    require_copy(&client, &st).await?;
    let db = &d.target.db;
    let (new, old) = (derived(db, "rb_new"), derived(db, "rb_old"));
    // Leftovers of an interrupted restore: `new` never went live; `old` was already replaced.
    drop_database(&client, &new, version).await?;
    drop_database(&client, &old, version).await?;
    let owner: Option<String> = client
        .query_opt("SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1", &[db])
        .await
        .map_err(|e| pg_error(&e, "cannot read the database owner"))?
        .map(|r| r.get(0));
    let ready = match &st.ready_db {
        Some(r) if exists(&client, r).await? => Some(r.clone()),
        _ => None,
    };
    // Copies made by earlier builds took connections from anyone.
    lock_down(&client, &st.copy_db).await?;
    match ready {
        // First restore of this snapshot: its spare copy is renamed in, no copying.
        Some(r) => {
            client
                .batch_execute(&format!("ALTER DATABASE {} RENAME TO {}", ident(&r), ident(&new)))
                .await
                .map_err(|e| pg_error(&e, &format!("cannot take the spare copy `{r}`")))?;
        }
        // Later restores copy the kept snapshot again; it stays a template.
        None => {
            ctx.progress(format!("copying `{}` to `{new}`", st.copy_db));
            copy_database(&client, version, &new, &st.copy_db, owner.as_deref()).await?;
        }
    }
    ctx.progress(format!("ending the sessions on `{db}` and swapping in the copy"));
    let db_exists = owner.is_some();
    for attempt in 1..=ATTEMPTS {
        let r = async {
            client.batch_execute("BEGIN").await?;
            if db_exists {
                carry_properties(&client, db, &new).await.map_err(Swap::Other)?;
            } else {
                // Nothing to take them from: PostgreSQL's defaults for a new database.
                client
                    .batch_execute(&format!(
                        "ALTER DATABASE {0} WITH ALLOW_CONNECTIONS true; GRANT CONNECT, TEMPORARY ON DATABASE {0} TO PUBLIC",
                        ident(&new)
                    ))
                    .await?;
            }
            if db_exists {
                let wait = if version >= 140000 { ", 5000" } else { "" };
                client
                    .query_one(
                        &format!(
                            "SELECT count(pg_terminate_backend(pid{wait})) FROM pg_stat_activity \
                             WHERE datname = $1 AND pid <> pg_backend_pid()"
                        ),
                        &[db],
                    )
                    .await?;
                client.batch_execute(&format!("ALTER DATABASE {} RENAME TO {}", ident(db), ident(&old))).await?;
                close_replaced(&client, &old).await.map_err(Swap::Other)?;
            }
            client.batch_execute(&format!("ALTER DATABASE {} RENAME TO {}", ident(&new), ident(db))).await?;
            client.batch_execute("COMMIT").await?;
            crate::failpoint::hit("postgres-swapped");
            Ok::<(), Swap>(())
        }
        .await;
        match r {
            Ok(()) => break,
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                if matches!(&e, Swap::Pg(e) if in_use(e)) && attempt < ATTEMPTS {
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                    continue;
                }
                let _ = drop_database(&client, &new, version).await;
                let what = format!("cannot swap the copy in for `{db}` (nothing changed)");
                return Err(match e {
                    Swap::Pg(e) => pg_error(&e, &what),
                    Swap::Other(e) => Error::new(e.kind(), format!("{what}: {}", e.message())),
                });
            }
        }
    }
    // The replaced database stays as `<db>__rb_old` (what the rollback discarded, readable
    // there) and is dropped by the next fast snapshot or restore of this database:
    // dropping it here would double the restore's time (0.74 s of 0.8 s measured).
    if db_exists {
        ctx.progress(format!("the replaced database is kept as `{old}` until the next snapshot or restore"));
    }
    Ok(())
}

/// Schema lines and per-table row hashes of a whole database, read in one snapshot.
async fn read_database(
    client: impl std::future::Future<Output = Result<Client>>,
) -> Result<(Vec<String>, BTreeMap<String, RowHasher>)> {
    let client = client.await?;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(|e| pg_error(&e, "cannot begin a read transaction"))?;
    let rels = catalog::relations(&client, &Scope::Database).await?;
    let lines = catalog::schema_lines(&client, &Scope::Database, &rels, catalog::Facts::default()).await?;
    let mut tables = BTreeMap::new();
    for r in rels.iter().filter(|r| r.has_data()) {
        tables.insert(r.display(), catalog::copy_out(&client, r, RowHash::default(), |_| Ok(())).await?);
    }
    let _ = client.batch_execute("COMMIT").await;
    Ok((lines, tables))
}

async fn compare(d: &PostgresDriver, part: &Part) -> Result<(Vec<String>, Vec<(String, u64, &'static str)>)> {
    let st = part.state_as::<FastState>()?;
    let (client, _) = maintenance(d).await?;
    require_copy(&client, &st).await?;
    let copy = connect_copy(d, &client, &st.copy_db).await?;
    drop(client);
    let (now, then) = tokio::join!(read_database(d.target.connect()), read_database(async { Ok(copy) }));
    let ((lines_now, tables_now), (lines_then, tables_then)) = (now?, then?);
    let mut diffs = Vec::new();
    let mut discards = Vec::new();
    let n = line_diff(&lines_then, &lines_now, &mut diffs);
    if n > 0 {
        discards.push(("schema".to_string(), n as u64, "schema facts differing (columns, indexes, constraints...)"));
    }
    for (name, then) in &tables_then {
        match tables_now.get(name) {
            None => diffs.push(format!("table {name} is missing")),
            Some(now) if now.checksum != then.checksum => {
                diffs.push(format!(
                    "table {name}: content differs ({} rows now, {} in the snapshot)",
                    now.rows(),
                    then.rows()
                ));
                let (a, b) = catalog::multiset_diff(&then.hashes, &now.hashes);
                discards.push((
                    format!("table {name}"),
                    a.max(b),
                    "rows differing (inserted, updated or deleted since the snapshot)",
                ));
            }
            Some(_) => {}
        }
    }
    for (name, now) in &tables_now {
        if !tables_then.contains_key(name) {
            diffs.push(format!("table {name} was created after the snapshot"));
            discards.push((format!("table {name} (created after the snapshot)"), now.rows(), "rows"));
        }
    }
    Ok((diffs, discards))
}

pub(super) async fn verify(d: &PostgresDriver, _ctx: &Context, part: &Part) -> Result<Drift> {
    Ok(Drift::from_differences(compare(d, part).await?.0))
}

pub(super) async fn discards(d: &PostgresDriver, ctx: &Context, part: &Part) -> Result<Vec<Discard>> {
    Ok(compare(d, part)
        .await?
        .1
        .into_iter()
        .map(|(target, changes, unit)| Discard {
            component: ctx.component.clone(),
            target,
            changes,
            unit: unit.into(),
            kept_in_safety_snapshot: false,
            keepable: true,
        })
        .collect())
}

/// The tag of a snapshot's copies: named from the snapshot id, so that what a killed
/// capture made can be found again without its manifest.
fn copy_tag(snapshot_id: &str) -> String {
    if snapshot_id.is_empty() {
        format!("rb_{:08x}", rand::random::<u32>())
    } else {
        format!("rb_{}", snapshot_id.to_lowercase())
    }
}

/// Drops the copies a capture of `ctx.snapshot_id` that never finished may have made.
pub(super) async fn release_unfinished(d: &PostgresDriver, ctx: &Context) -> Result<()> {
    if ctx.snapshot_id.is_empty() {
        return Ok(());
    }
    let tag = copy_tag(&ctx.snapshot_id);
    let (client, version) = maintenance(d).await?;
    for name in [derived(&d.target.db, &format!("{tag}_r")), derived(&d.target.db, &tag)] {
        // The server goes on with a statement whose client was killed: a `CREATE
        // DATABASE` of this copy may still be running, and would commit after the
        // check below. End it first (it then cleans up after itself).
        let pattern =
            format!("%CREATE DATABASE {}%", ident(&name).replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        for _ in 0..100 {
            let left: i64 = client
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE pid <> pg_backend_pid() AND state <> 'idle' AND query LIKE $1",
                    &[&pattern],
                )
                .await
                .map_err(|e| pg_error(&e, "cannot list the sessions of an interrupted capture"))?
                .get(0);
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if exists(&client, &name).await? {
            drop_database(&client, &name, version).await?;
        }
    }
    Ok(())
}

pub(super) async fn release(d: &PostgresDriver, part: &Part) -> Result<()> {
    let st = part.state_as::<FastState>()?;
    let (client, version) = maintenance(d).await?;
    if let Some(r) = &st.ready_db {
        drop_database(&client, r, version).await?;
    }
    drop_database(&client, &st.copy_db, version).await
}

#[cfg(test)]
mod tests {
    use super::derived;

    #[test]
    fn derived_names_fit() {
        assert_eq!(derived("trading", "rb_new"), "trading__rb_new");
        let long = "é".repeat(40);
        let n = derived(&long, "rb_20261123t100000123z-3f9a1c");
        assert!(n.len() <= 63, "{n}");
        assert_ne!(derived(&format!("{long}a"), "x"), derived(&format!("{long}b"), "x"));
    }
}
