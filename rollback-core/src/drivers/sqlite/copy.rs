//! A restore written as SQL into a connection that holds a write transaction open:
//! the WAL-mode fence's restore (see `fence.rs`). SQLite's backup API cannot write
//! into a connection with a transaction open, and ending the transaction to use it
//! would let a writer in between the safety snapshot and the restore.
//!
//! Inside a savepoint, every object of the live database is dropped and the
//! snapshot's are created again from their own SQL: tables first, then their rows
//! (rowids kept, generated columns left to SQLite), then indexes, views and
//! triggers, so no trigger fires on the copy. Virtual tables are created by their
//! module and their shadow tables' rows copied as they are. `sqlite_sequence`,
//! `user_version` and `application_id` are put back; statistics (`sqlite_stat*`)
//! are recomputed by `ANALYZE` when the snapshot had them. On any error the
//! savepoint is rolled back, and the live database is as it was.

use rusqlite::Connection;

use super::{ident, sq};
use crate::error::Result;

/// One row of `sqlite_master`.
struct Object {
    ty: String,
    name: String,
    table: String,
    sql: Option<String>,
}

fn objects(c: &Connection) -> rusqlite::Result<Vec<Object>> {
    // rowid order is creation order: what an object refers to was created before it.
    let mut st = c.prepare("SELECT type, name, tbl_name, sql FROM main.sqlite_master ORDER BY rowid")?;
    let rows = st.query_map([], |r| Ok(Object { ty: r.get(0)?, name: r.get(1)?, table: r.get(2)?, sql: r.get(3)? }))?;
    rows.collect()
}

/// `PRAGMA table_list`'s kind of each table: `table`, `view`, `virtual` or `shadow`,
/// and whether it is `WITHOUT ROWID`.
fn table_kinds(c: &Connection) -> rusqlite::Result<Vec<(String, String, bool)>> {
    let mut st = c.prepare("SELECT name, type, wr FROM pragma_table_list WHERE schema = 'main'")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0)))?;
    rows.collect()
}

fn internal(name: &str) -> bool {
    name.len() >= 7 && name[..7].eq_ignore_ascii_case("sqlite_")
}

/// The columns a copy of `table` writes and reads: every stored column but
/// generated ones, and first the rowid of a rowid table, under a name no column
/// has. Always, even where a column looks like its alias: `INTEGER PRIMARY KEY
/// DESC` is not one, and other tables (an FTS index's content, the application)
/// may hold rowids. Giving an alias and its column the same value is allowed.
fn copy_columns(c: &Connection, table: &str, without_rowid: bool) -> rusqlite::Result<Vec<String>> {
    let mut st = c.prepare("SELECT name, hidden FROM pragma_table_xinfo(?1, 'main') ORDER BY cid")?;
    let cols: Vec<(String, i64)> =
        st.query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
    // hidden: 0 a column, 1 a virtual table's hidden column, 2 and 3 generated.
    let mut out: Vec<String> = cols.iter().filter(|c| c.1 == 0 || c.1 == 1).map(|c| c.0.clone()).collect();
    if !without_rowid {
        match ["rowid", "_rowid_", "oid"].into_iter().find(|n| !cols.iter().any(|c| c.0.eq_ignore_ascii_case(n))) {
            Some(rid) => out.insert(0, rid.to_string()),
            None => tracing::warn!(table, "columns named rowid, _rowid_ and oid hide the rowid: it is not kept"),
        }
    }
    Ok(out)
}

fn copy_rows(live: &Connection, snap: &Connection, table: &str, cols: &[String]) -> rusqlite::Result<()> {
    if cols.is_empty() {
        return Ok(());
    }
    let list = cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
    let mut read = snap.prepare(&format!("SELECT {list} FROM main.{}", ident(table)))?;
    let marks = vec!["?"; cols.len()].join(", ");
    let mut write = live.prepare(&format!("INSERT INTO main.{} ({list}) VALUES ({marks})", ident(table)))?;
    let mut rows = read.query([])?;
    while let Some(r) = rows.next()? {
        // Bound as read: a TEXT value need not be valid UTF-8 in SQLite, and an
        // owned `Value` would insist that it is.
        let vals = (0..cols.len())
            .map(|i| r.get_ref(i).map(rusqlite::types::ToSqlOutput::Borrowed))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        write.execute(rusqlite::params_from_iter(vals))?;
    }
    Ok(())
}

fn drop_everything(live: &Connection) -> rusqlite::Result<()> {
    let objs = objects(live)?;
    for o in objs.iter().filter(|o| o.ty == "view" || o.ty == "trigger") {
        live.execute_batch(&format!("DROP {} IF EXISTS main.{}", o.ty.to_uppercase(), ident(&o.name)))?;
    }
    // Virtual tables first: dropping one drops its shadow tables. Then the rest,
    // shadow tables whose virtual table is gone (its module missing, say) too.
    for (name, _, _) in table_kinds(live)?.iter().filter(|k| k.1 == "virtual") {
        live.execute_batch(&format!("DROP TABLE IF EXISTS main.{}", ident(name)))?;
    }
    for (name, _, _) in table_kinds(live)?.iter().filter(|k| (k.1 == "table" || k.1 == "shadow") && !internal(&k.0)) {
        live.execute_batch(&format!("DROP TABLE IF EXISTS main.{}", ident(name)))?;
    }
    Ok(())
}

fn exists(c: &Connection, table: &str) -> rusqlite::Result<bool> {
    c.query_row("SELECT count(*) FROM main.sqlite_master WHERE name = ?1", [table], |r| r.get::<_, i64>(0))
        .map(|n| n > 0)
}

fn pragma_int(c: &Connection, name: &str) -> rusqlite::Result<i64> {
    c.query_row(&format!("PRAGMA main.{name}"), [], |r| r.get(0))
}

fn copy_all(live: &Connection, snap: &Connection) -> rusqlite::Result<()> {
    drop_everything(live)?;
    let objs = objects(snap)?;
    let kinds = table_kinds(snap)?;
    let kind = |name: &str| kinds.iter().find(|k| k.0 == name).map(|k| (k.1.as_str(), k.2));
    // Tables; a virtual table's module creates its shadow tables.
    for o in objs.iter().filter(|o| o.ty == "table" && !internal(&o.name)) {
        if matches!(kind(&o.name), Some(("shadow", _))) {
            continue;
        }
        if let Some(sql) = &o.sql {
            live.execute_batch(sql)?;
        }
    }
    // Rows: of ordinary tables, and of shadow tables as they are (a module fills
    // some at creation: those rows go first).
    for o in objs.iter().filter(|o| o.ty == "table" && !internal(&o.name)) {
        match kind(&o.name) {
            Some(("table", wr)) => {
                let cols = copy_columns(snap, &o.name, wr)?;
                copy_rows(live, snap, &o.name, &cols)?;
            }
            Some(("shadow", wr)) => {
                if !exists(live, &o.name)? {
                    if let Some(sql) = &o.sql {
                        live.execute_batch(sql)?;
                    }
                }
                live.execute_batch(&format!("DELETE FROM main.{}", ident(&o.name)))?;
                let cols = copy_columns(snap, &o.name, wr)?;
                copy_rows(live, snap, &o.name, &cols)?;
            }
            _ => {}
        }
    }
    if exists(snap, "sqlite_sequence")? && exists(live, "sqlite_sequence")? {
        live.execute_batch("DELETE FROM main.sqlite_sequence")?;
        copy_rows(live, snap, "sqlite_sequence", &["name".into(), "seq".into()])?;
    }
    // Indexes, views and triggers after the rows, in the order they were created.
    for o in objs.iter().filter(|o| matches!(o.ty.as_str(), "index" | "view" | "trigger") && !internal(&o.name)) {
        if let Some(sql) = &o.sql {
            // An index a virtual table's module made with its shadow tables is there.
            if !(o.ty == "index" && matches!(kind(&o.table), Some(("shadow", _))) && exists(live, &o.name)?) {
                live.execute_batch(sql)?;
            }
        }
    }
    for p in ["user_version", "application_id"] {
        live.execute_batch(&format!("PRAGMA main.{p} = {}", pragma_int(snap, p)?))?;
    }
    if exists(snap, "sqlite_stat1")? {
        live.execute_batch("ANALYZE main")?;
    }
    Ok(())
}

/// Writes the snapshot `snap` into `live`, whose write transaction is open, inside
/// a savepoint: all of it, or (on error) nothing. The transaction stays open.
pub(super) fn restore_in_transaction(live: &Connection, snap: &Connection) -> Result<()> {
    live.execute_batch("SAVEPOINT rollback_restore").map_err(|e| sq(e, "cannot start the restore"))?;
    match copy_all(live, snap) {
        Ok(()) => {
            crate::failpoint::hit("sqlite-copied-in-transaction");
            live.execute_batch("RELEASE rollback_restore").map_err(|e| sq(e, "cannot finish the restore"))
        }
        Err(e) => {
            let _ = live.execute_batch("ROLLBACK TO rollback_restore; RELEASE rollback_restore");
            Err(sq(e, "cannot write the snapshot into the database (nothing of it was kept)"))
        }
    }
}
