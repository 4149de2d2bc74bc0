//! What the database holds besides the tables' rows and `CREATE TABLE`: triggers
//! (captured, and created again after the swap, because they go with the table that
//! is renamed away and dropped), foreign keys into the restored tables from tables the
//! restore does not replace, and objects the driver does not restore (refused by name,
//! never left out in silence).

use std::collections::BTreeSet;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use serde::{Deserialize, Serialize};

use super::sql::{lit, q, qt};
use super::{text, MysqlDriver, TMP_NEW, TMP_OLD};
use crate::error::{Error, ErrorKind, Result};

/// One trigger, as the server describes it. Two triggers are the same when every
/// field is: that is what verify compares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Trigger {
    pub name: String,
    pub table: String,
    /// `BEFORE` / `AFTER`.
    pub timing: String,
    /// `INSERT` / `UPDATE` / `DELETE`.
    pub event: String,
    /// Place among the table's triggers for the same timing and event (1 fires first).
    /// MariaDB keeps no `FOLLOWS`/`PRECEDES` in the statement: creating the triggers
    /// in this order gives the same order back.
    pub order: u64,
    /// `SQL Original Statement` of `SHOW CREATE TRIGGER` (`CREATE DEFINER=… TRIGGER …`),
    /// byte for byte.
    pub statement: String,
    /// The session settings the body was parsed with; the same text can mean another
    /// thing under another `sql_mode` (`ANSI_QUOTES`, `PIPES_AS_CONCAT`…).
    pub sql_mode: String,
    pub character_set_client: String,
    pub collation_connection: String,
}

impl Trigger {
    fn label(&self) -> String {
        format!("trigger {} on table {}", q(&self.name), q(&self.table))
    }

    /// Same text, settings, table, timing and event: only the place in the firing
    /// order may differ (it moves when a sibling trigger is dropped or added).
    fn same_definition(&self, o: &Trigger) -> bool {
        Trigger { order: o.order, ..self.clone() } == *o
    }
}

/// How live triggers stand against a snapshot's, table by table.
pub(super) struct TriggerDiff {
    /// In the snapshot, not live.
    pub missing: Vec<Trigger>,
    /// Live under a snapshot trigger's name, defined differently.
    pub changed: Vec<Trigger>,
    /// Live as in the snapshot, at another place in the firing order: (live, snapshot's place).
    pub reordered: Vec<(Trigger, u64)>,
    /// Live, not in the snapshot.
    pub added: Vec<Trigger>,
}

pub(super) fn diff_triggers(snapshot: &[Trigger], live: &[Trigger]) -> TriggerDiff {
    let mut d = TriggerDiff { missing: Vec::new(), changed: Vec::new(), reordered: Vec::new(), added: Vec::new() };
    for s in snapshot {
        match live.iter().find(|l| l.name == s.name) {
            None => d.missing.push(s.clone()),
            Some(l) if !l.same_definition(s) => d.changed.push(l.clone()),
            Some(l) if l.order != s.order => d.reordered.push((l.clone(), s.order)),
            Some(_) => {}
        }
    }
    d.added = live.iter().filter(|l| !snapshot.iter().any(|s| s.name == l.name)).cloned().collect();
    d
}

impl TriggerDiff {
    /// Verify's wording.
    pub(super) fn differences(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(self.missing.iter().map(|t| format!("{} is missing", t.label())));
        out.extend(self.changed.iter().map(|t| format!("{} differs from the snapshot", t.label())));
        out.extend(self.reordered.iter().map(|(t, was)| {
            format!(
                "{} fires at place {} of its table's {} {} triggers, {was} in the snapshot",
                t.label(),
                t.order,
                t.timing,
                t.event
            )
        }));
        out.extend(self.added.iter().map(|t| format!("{} was added since the snapshot", t.label())));
        out
    }

    /// What a restore throws away: triggers the snapshot does not have (they go with
    /// the renamed-away table) and definitions the snapshot's replace.
    pub(super) fn discarded(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for t in &self.added {
            out.push((t.label(), "triggers (created since the snapshot; the restore drops it)".to_string()));
        }
        for t in &self.changed {
            out.push((
                t.label(),
                "triggers (defined differently since the snapshot; the restore puts the snapshot's definition back)"
                    .to_string(),
            ));
        }
        out
    }
}

/// An object kind in `information_schema.TABLES` that the driver cannot restore.
pub(super) struct Unrestorable {
    pub name: String,
    pub kind: &'static str,
    pub why: &'static str,
}

impl Unrestorable {
    pub(super) fn label(&self) -> String {
        format!("{} {}", self.kind, q(&self.name))
    }
}

impl MysqlDriver {
    /// The triggers on `tables` (every table when `None`), in the order they are
    /// created back: by table, timing, event, then firing order.
    pub(super) async fn triggers(&self, conn: &mut Conn, tables: Option<&[String]>) -> Result<Vec<Trigger>> {
        let rows = self
            .rows(
                conn,
                &format!(
                    "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER \
                     FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {} \
                     ORDER BY EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER",
                    lit(&self.db)
                ),
                "cannot list triggers",
            )
            .await?;
        let wanted: Option<BTreeSet<&str>> = tables.map(|t| t.iter().map(String::as_str).collect());
        let mut out = Vec::new();
        for r in rows {
            let field = |i: usize| r.get(i).map(text).unwrap_or_default();
            let (name, table) = (field(0), field(1));
            if table.starts_with(TMP_NEW) || table.starts_with(TMP_OLD) {
                continue;
            }
            if wanted.as_ref().is_some_and(|w| !w.contains(table.as_str())) {
                continue;
            }
            let shown: Vec<Row> = conn
                .query(format!("SHOW CREATE TRIGGER {}", qt(&self.db, &name)))
                .await
                .map_err(|e| self.err(&format!("SHOW CREATE TRIGGER {} failed", q(&name)), e))?;
            let Some(shown) = shown.into_iter().next().map(Row::unwrap) else {
                // Dropped between the listing and now: it is not there to capture.
                continue;
            };
            // Columns: Trigger, sql_mode, SQL Original Statement, character_set_client,
            // collation_connection, Database Collation, Created.
            let statement = match shown.get(2) {
                Some(Value::Bytes(b)) => String::from_utf8(b.clone()).map_err(|_| {
                    Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "mysql {}: trigger {} was created with character_set_client {} and its text is not \
                             UTF-8, which the snapshot cannot keep byte for byte; recreate it from a utf8mb4 session",
                            self.target,
                            q(&name),
                            shown.get(3).map(text).unwrap_or_default()
                        ),
                    )
                })?,
                other => other.map(text).unwrap_or_default(),
            };
            out.push(Trigger {
                name,
                table,
                timing: field(2),
                event: field(3),
                order: r.get(4).and_then(super::num).unwrap_or(0),
                statement,
                sql_mode: shown.get(1).map(text).unwrap_or_default(),
                character_set_client: shown.get(3).map(text).unwrap_or_default(),
                collation_connection: shown.get(4).map(text).unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// Creates the snapshot's triggers in their order, each under the settings it was
    /// first created with, then puts the session's settings back.
    pub(super) async fn create_triggers(&self, conn: &mut Conn, triggers: &[Trigger]) -> Result<()> {
        for t in triggers {
            conn.query_drop(format!(
                "SET SESSION sql_mode = {}, character_set_client = {}, collation_connection = {}",
                lit(&t.sql_mode),
                lit(&t.character_set_client),
                lit(&t.collation_connection)
            ))
            .await
            .map_err(|e| self.err(&format!("cannot set up the session for {}", t.label()), e))?;
            conn.query_drop(&t.statement).await.map_err(|e| {
                self.err(
                    &format!("cannot create {} again (needs TRIGGER, and SET USER for another definer)", t.label()),
                    e,
                )
            })?;
        }
        if !triggers.is_empty() {
            conn.query_drop("SET NAMES binary, sql_mode = 'NO_AUTO_VALUE_ON_ZERO'")
                .await
                .map_err(|e| self.err("cannot set up the session", e))?;
        }
        Ok(())
    }

    /// Sequences and system-versioned tables (MariaDB). A sequence's state is not rows a
    /// `SELECT` reads back into a table, and a system-versioned table's history rows
    /// are invisible to `SELECT *` and cannot be inserted with their periods: a restore
    /// of either through this driver would lose them, so they are refused instead.
    pub(super) async fn unrestorable(&self, conn: &mut Conn) -> Result<Vec<Unrestorable>> {
        let rows = self
            .rows(
                conn,
                &format!(
                    "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} \
                     AND TABLE_TYPE IN ('SEQUENCE', 'SYSTEM VERSIONED') ORDER BY TABLE_NAME",
                    lit(&self.db)
                ),
                "cannot list tables",
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let name = r.first().map(text).unwrap_or_default();
                if r.get(1).map(text).as_deref() == Some("SEQUENCE") {
                    Unrestorable {
                        name,
                        kind: "sequence",
                        why: "its state (next value, cache, cycle count) is not kept by a table copy",
                    }
                } else {
                    Unrestorable {
                        name,
                        kind: "system-versioned table",
                        why: "its history rows and row periods are not kept by a table copy",
                    }
                }
            })
            .collect())
    }

    /// Refuses a restore that would leave a foreign key pointing at a renamed-away
    /// table: one whose child the restore does not replace (a table left out of
    /// `tables`, or one in another database) while its parent is replaced. The rename
    /// carries the key along to `_rollback_old_<n>`, which is then dropped, and every
    /// insert into the child fails afterwards.
    pub(super) async fn refuse_foreign_keys_from_outside(&self, conn: &mut Conn, replaced: &[String]) -> Result<()> {
        let rows = self
            .rows(
                conn,
                &format!(
                    "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CONSTRAINT_NAME, REFERENCED_TABLE_NAME \
                     FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE UNIQUE_CONSTRAINT_SCHEMA = {} \
                     ORDER BY CONSTRAINT_SCHEMA, TABLE_NAME, CONSTRAINT_NAME",
                    lit(&self.db)
                ),
                "cannot list foreign keys",
            )
            .await?;
        let replaced: BTreeSet<&str> = replaced.iter().map(String::as_str).collect();
        let mut keys = Vec::new();
        let mut elsewhere = false;
        for r in rows {
            let field = |i: usize| r.get(i).map(text).unwrap_or_default();
            let (schema, child, name, parent) = (field(0), field(1), field(2), field(3));
            if !replaced.contains(parent.as_str()) {
                continue;
            }
            if schema == self.db && replaced.contains(child.as_str()) {
                continue;
            }
            let child = if schema == self.db {
                q(&child)
            } else {
                elsewhere = true;
                qt(&schema, &child)
            };
            keys.push(format!("foreign key {} of table {child} references {}", q(&name), q(&parent)));
        }
        if keys.is_empty() {
            return Ok(());
        }
        let todo = if elsewhere {
            "add the child tables to `tables` (or leave `tables` out to restore the whole database); a child in \
             another database cannot be restored with this component: drop its key for the rollback and add it \
             back after"
        } else {
            "add the child tables to `tables`, or leave `tables` out to restore the whole database"
        };
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "mysql {}: the restore replaces tables that tables it does not restore point at: {}; the swap would \
                 carry those keys to the renamed-away tables and every insert into the child would fail; {todo}",
                self.target,
                keys.join(", ")
            ),
        ))
    }
}
