//! The write fence: the server made read-only (`SET GLOBAL read_only = ON`).
//! Setting it waits for commits in flight; afterwards a write of any account
//! without `READ_ONLY ADMIN` (MariaDB) or `SUPER`/`CONNECTION_ADMIN` (MySQL) is
//! refused with an error, so it is never acknowledged, while the rollback's own
//! account, which has it, captures and restores. MySQL has no per-database fence
//! that lets one session write and refuses the others (`LOCK TABLES` holds the
//! locking session to the locked tables, and a rename under it is refused), so the
//! fence covers every database of the server for its window; the record gives it.
//!
//! Two rollbacks fencing one server at once would read each other's fence as the
//! server's setting and leave it read-only: a session holding the named lock
//! `rollback_write_fence`, from reading the setting until the fence is lifted,
//! makes them take turns.

use mysql_async::Conn;
use serde::{Deserialize, Serialize};

use super::{flavor, num, text, MysqlDriver};

/// The named lock that makes fences on one server take turns.
const FENCE_LOCK: &str = "rollback_write_fence";
/// How long a rollback waits for another's fence on the same server.
const FENCE_LOCK_WAIT_S: u32 = 300;
use crate::driver::FencePlan;
use crate::error::{Error, ErrorKind, Result};

/// What lifting the fence puts back.
#[derive(Debug, Serialize, Deserialize)]
struct Undo {
    /// `@@GLOBAL.read_only` before the fence.
    read_only: bool,
}

fn undo_of(v: &serde_json::Value) -> Result<Undo> {
    serde_json::from_value(v.clone())
        .map_err(|e| Error::new(ErrorKind::Corrupt, "the journal's mysql fence is unreadable").with_source(e))
}

impl MysqlDriver {
    async fn global_flag(&self, conn: &mut Conn, name: &str) -> Result<bool> {
        let rows = self.rows(conn, &format!("SELECT @@GLOBAL.{name}"), &format!("cannot read {name}")).await?;
        Ok(rows.first().and_then(|r| r.first()).and_then(num).unwrap_or(0) != 0)
    }

    /// Whether the account writes through `read_only`, from its grants on `*.*`.
    async fn writes_through_read_only(&self, conn: &mut Conn) -> Result<bool> {
        let version = self.server_version(conn).await?;
        let (kind, major) = flavor(&version);
        // MariaDB 11.0 took READ_ONLY ADMIN out of SUPER.
        let super_suffices = kind == "MySQL" || major.parse::<u32>().map(|m| m < 11).unwrap_or(false);
        let grants = self.rows(conn, "SHOW GRANTS", "cannot read the account's grants").await?;
        Ok(grants.iter().filter_map(|r| r.first()).map(text).any(|g| {
            let g = g.to_ascii_uppercase();
            g.contains(" ON *.*")
                && (g.contains("ALL PRIVILEGES")
                    || g.contains("READ_ONLY ADMIN")
                    || g.contains("CONNECTION_ADMIN")
                    || (super_suffices && g.contains("SUPER")))
        }))
    }

    pub(super) async fn plan_write_fence(&self) -> Result<FencePlan> {
        if !self.fence {
            return Ok(FencePlan::Unavailable { reason: "`fence = false` is set".into() });
        }
        let mut conn = self.connect().await?;
        if self.global_flag(&mut conn, "super_read_only").await.unwrap_or(false) {
            return Ok(FencePlan::Unavailable { reason: "the server is super_read_only: nobody writes to it".into() });
        }
        if !self.writes_through_read_only(&mut conn).await? {
            return Ok(FencePlan::Unavailable {
                reason: "the account cannot write through read_only (it needs READ_ONLY ADMIN, SUPER or ALL \
                         PRIVILEGES ON *.*), so a read-only server would lock the rollback out too"
                    .into(),
            });
        }
        let got = self
            .rows(
                &mut conn,
                &format!("SELECT GET_LOCK('{FENCE_LOCK}', {FENCE_LOCK_WAIT_S})"),
                "cannot take the write fence's lock",
            )
            .await?
            .first()
            .and_then(|r| r.first())
            .and_then(num);
        if got != Some(1) {
            return Err(Error::new(
                ErrorKind::Locked,
                format!(
                    "mysql {}: another rollback has held the server's write fence for {FENCE_LOCK_WAIT_S} s",
                    self.target
                ),
            ));
        }
        let read_only = self.global_flag(&mut conn, "read_only").await?;
        // Held until the fence is lifted; a crash ends the session and frees the lock.
        *self.fence_session.lock().await = Some(conn);
        let undo = serde_json::to_value(Undo { read_only })
            .map_err(|e| Error::unexpected("cannot encode the fence").with_source(e))?;
        Ok(FencePlan::Ready { undo })
    }

    pub(super) async fn raise_write_fence(&self, undo: &serde_json::Value) -> Result<String> {
        let u = undo_of(undo)?;
        let mut conn = self.connect().await?;
        self.rows(&mut conn, "SET GLOBAL read_only = ON", "cannot make the server read-only").await?;
        let same = self
            .rows(
                &mut conn,
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE USER = SUBSTRING_INDEX(CURRENT_USER(), '@', 1) AND ID <> CONNECTION_ID()",
                "cannot list the server's sessions",
            )
            .await?
            .first()
            .and_then(|r| r.first())
            .and_then(num)
            .unwrap_or(0);
        let mut how = format!(
            "the server read-only (read_only = ON, it was {}): writes of accounts without READ_ONLY ADMIN or SUPER \
             are refused, in every database of the server",
            if u.read_only { "ON" } else { "OFF" }
        );
        if same > 0 {
            how.push_str(&format!(
                "; {same} other session(s) of the rollback's own account can write through it: their writes are \
                 not fenced"
            ));
        }
        Ok(how)
    }

    pub(super) async fn lift_write_fence(&self, undo: &serde_json::Value) -> Result<()> {
        let u = undo_of(undo)?;
        let mut conn = self.connect().await?;
        let sql = format!("SET GLOBAL read_only = {}", if u.read_only { "ON" } else { "OFF" });
        self.rows(&mut conn, &sql, "cannot set read_only back").await?;
        // Only now may another rollback read the server's setting.
        if let Some(held) = self.fence_session.lock().await.take() {
            let _ = held.disconnect().await;
        }
        Ok(())
    }
}
