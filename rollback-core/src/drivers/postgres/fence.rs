//! The write fence: a connection limit of 0 on the database, then every other
//! session of it ended. A client that was writing gets an error for the write in
//! flight (its transaction is rolled back, so it was never acknowledged) and cannot
//! connect again until the fence is lifted; the rollback's own connections, as a
//! superuser's, are not held by the limit.
//!
//! Two rollbacks fencing one database at once would read each other's limit of 0
//! as the database's own and leave it at 0: a session on the maintenance database
//! holding an advisory lock named after the database, from reading the limit until
//! the fence is lifted, makes them take turns.

use serde::{Deserialize, Serialize};

use super::conn::{ident, pg_error};
use super::PostgresDriver;
use crate::driver::FencePlan;
use crate::error::{Error, ErrorKind, Result};

/// What lifting the fence puts back.
#[derive(Debug, Serialize, Deserialize)]
struct Undo {
    database: String,
    /// `datconnlimit` before the fence (-1: no limit).
    connlimit: i32,
}

fn undo_of(v: &serde_json::Value) -> Result<Undo> {
    serde_json::from_value(v.clone())
        .map_err(|e| Error::new(ErrorKind::Corrupt, "the journal's postgres fence is unreadable").with_source(e))
}

pub(super) async fn plan(d: &PostgresDriver) -> Result<FencePlan> {
    if !d.fence {
        return Ok(FencePlan::Unavailable { reason: "`fence = false` is set".into() });
    }
    let (client, _) = d.open().await?;
    let row = client
        .query_one("SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user", &[])
        .await
        .map_err(|e| pg_error(&e, "cannot read the role"))?;
    let (role, superuser): (String, bool) = (row.get(0), row.get(1));
    if !superuser {
        return Ok(FencePlan::Unavailable {
            reason: format!(
                "the role `{role}` is not a superuser, so a connection limit of 0 would lock the rollback out too"
            ),
        });
    }
    // Read only once this rollback has the turn: another's fence would read as 0.
    take_turn(d).await?;
    let connlimit: i32 = client
        .query_one("SELECT datconnlimit FROM pg_database WHERE datname = current_database()", &[])
        .await
        .map_err(|e| pg_error(&e, "cannot read the database's connection limit"))?
        .get(0);
    let undo = Undo { database: d.target.db.clone(), connlimit };
    Ok(FencePlan::Ready { undo: serde_json::to_value(undo).map_err(|e| Error::unexpected("encode").with_source(e))? })
}

/// How long a rollback waits for another's fence on the same database.
const TURN_WAIT: &str = "300s";

/// Waits for any other rollback's fence on this database to be lifted, then holds
/// the turn (a session on the maintenance database with an advisory lock) until
/// [`lift`]. A crash ends the session and frees the lock. Without a maintenance
/// database to hold it on, rollbacks simply do not take turns.
async fn take_turn(d: &PostgresDriver) -> Result<()> {
    use sha2::{Digest, Sha256};
    let Ok(session) = d.target.with_db(super::fast::MAINTENANCE_DB).connect().await else {
        tracing::warn!("no maintenance database to hold the write fence's turn on");
        return Ok(());
    };
    let h = Sha256::digest(format!("rollback write fence {}", d.target.db));
    let key = i64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
    session.batch_execute(&format!("SET lock_timeout = '{TURN_WAIT}'; SELECT pg_advisory_lock({key})")).await.map_err(
        |e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
                Error::new(
                    ErrorKind::Locked,
                    format!("another rollback has held the write fence of `{}` for {TURN_WAIT}", d.target.db),
                )
            } else {
                pg_error(&e, "cannot take the write fence's turn")
            }
        },
    )?;
    *d.fence_session.lock().await = Some(session);
    Ok(())
}

pub(super) async fn raise(d: &PostgresDriver, undo: &serde_json::Value) -> Result<String> {
    let u = undo_of(undo)?;
    let (client, version) = d.open().await?;
    let db = ident(&u.database);
    client
        .batch_execute(&format!("ALTER DATABASE {db} CONNECTION LIMIT 0"))
        .await
        .map_err(|e| pg_error(&e, "cannot set the database's connection limit to 0"))?;
    // With a timeout (PostgreSQL 14+) the call waits until the session is gone: its
    // transaction rolled back and its locks released before the safety snapshot.
    let terminate =
        if version >= 140000 { "pg_terminate_backend(a.pid, 10000)" } else { "pg_terminate_backend(a.pid)" };
    let rows = client
        .query(
            &format!(
                "SELECT coalesce(a.usename::text, ''), coalesce(r.rolsuper, false), {terminate}
                   FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid
                  WHERE a.datname = $1 AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'"
            ),
            &[&u.database],
        )
        .await
        .map_err(|e| pg_error(&e, "cannot end the database's other sessions"))?;
    if version < 140000 {
        wait_gone(&client, &u.database).await?;
    }
    let mut supers: Vec<String> = rows.iter().filter(|r| r.get::<_, bool>(1)).map(|r| r.get(0)).collect();
    supers.sort();
    supers.dedup();
    let mut how = format!(
        "connection limit 0 on database `{}` (it was {}), {} other session(s) ended",
        u.database,
        u.connlimit,
        rows.len()
    );
    if !supers.is_empty() {
        how.push_str(&format!(
            "; sessions of the superuser role(s) {} can connect again through the limit: their writes are not fenced",
            supers.join(", ")
        ));
    }
    Ok(how)
}

/// Before PostgreSQL 14 `pg_terminate_backend` only signals: waits (up to 10 s) for
/// the sessions to be gone.
async fn wait_gone(client: &tokio_postgres::Client, db: &str) -> Result<()> {
    for _ in 0..100 {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                &[&db],
            )
            .await
            .map_err(|e| pg_error(&e, "cannot count the database's sessions"))?
            .get(0);
        if n == 0 {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

pub(super) async fn lift(d: &PostgresDriver, undo: &serde_json::Value) -> Result<()> {
    let u = undo_of(undo)?;
    // The database itself, else the maintenance database (a restore that failed
    // half-way may have left none of that name).
    let client = match d.target.connect().await {
        Ok(c) => c,
        Err(_) => d.target.with_db(super::fast::MAINTENANCE_DB).connect().await?,
    };
    client
        .batch_execute(&format!("ALTER DATABASE {} CONNECTION LIMIT {}", ident(&u.database), u.connlimit))
        .await
        .map_err(|e| pg_error(&e, &format!("cannot set the connection limit of `{}` back", u.database)))?;
    // Only now may another rollback read the database's limit.
    d.fence_session.lock().await.take();
    Ok(())
}
