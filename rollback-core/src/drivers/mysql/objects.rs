//! Views, stored procedures and functions, and events: objects of the database that
//! are not tables. A deploy changes them as it changes tables (a view gets a column,
//! a procedure a new body, an event a new schedule), so a whole-database snapshot
//! keeps each one's `SHOW CREATE` text with the session settings it was created
//! under, and a restore puts back exactly that set: what the deploy added is dropped,
//! what it changed or dropped is created again. With `tables` set they are neither
//! captured nor touched.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use serde::{Deserialize, Serialize};

use super::sql::{lit, q, qt};
use super::{text, MysqlDriver};
use crate::error::{Error, ErrorKind, Result};

/// One object, as the server shows it. Two are the same when every field is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Object {
    /// `VIEW`, `PROCEDURE`, `FUNCTION` or `EVENT`: the word `SHOW CREATE` and `DROP` take.
    pub kind: String,
    pub name: String,
    /// The `SHOW CREATE` statement, byte for byte (`CREATE … DEFINER=… VIEW …`).
    pub statement: String,
    /// The settings the body was parsed with (none for a view: its text is canonical).
    pub sql_mode: String,
    pub character_set_client: String,
    pub collation_connection: String,
    /// Events only: the zone their schedule is read in.
    #[serde(default)]
    pub time_zone: String,
}

impl Object {
    pub(super) fn label(&self) -> String {
        format!("{} {}", self.kind.to_lowercase(), q(&self.name))
    }

    fn key(&self) -> (&str, &str) {
        (&self.kind, &self.name)
    }
}

/// Live objects against a snapshot's.
pub(super) struct ObjectDiff {
    /// In the snapshot, not live.
    pub missing: Vec<Object>,
    /// Live under a snapshot object's kind and name, defined differently.
    pub changed: Vec<Object>,
    /// Live, not in the snapshot.
    pub added: Vec<Object>,
}

pub(super) fn diff(snapshot: &[Object], live: &[Object]) -> ObjectDiff {
    let find = |set: &[Object], o: &Object| set.iter().find(|x| x.key() == o.key()).cloned();
    ObjectDiff {
        missing: snapshot.iter().filter(|s| find(live, s).is_none()).cloned().collect(),
        changed: live.iter().filter(|l| find(snapshot, l).is_some_and(|s| s != **l)).cloned().collect(),
        added: live.iter().filter(|l| find(snapshot, l).is_none()).cloned().collect(),
    }
}

impl ObjectDiff {
    /// Verify's wording.
    pub(super) fn differences(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(self.missing.iter().map(|o| format!("{} is missing", o.label())));
        out.extend(self.changed.iter().map(|o| format!("{} differs from the snapshot", o.label())));
        out.extend(self.added.iter().map(|o| format!("{} was added since the snapshot", o.label())));
        out
    }

    /// What a restore throws away (each is in the safety snapshot).
    pub(super) fn discarded(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for o in &self.added {
            out.push((o.label(), "definitions (created since the snapshot; the restore drops it)".to_string()));
        }
        for o in &self.changed {
            out.push((
                o.label(),
                "definitions (changed since the snapshot; the restore puts the snapshot's back)".to_string(),
            ));
        }
        out
    }
}

/// The `SHOW CREATE` columns of each kind: (statement, sql_mode, character set,
/// collation, time zone). MariaDB and MySQL agree on these positions.
fn columns(kind: &str) -> (usize, Option<usize>, usize, usize, Option<usize>) {
    match kind {
        // View, Create View, character_set_client, collation_connection
        "VIEW" => (1, None, 2, 3, None),
        // Event, sql_mode, time_zone, Create Event, character_set_client, collation_connection
        "EVENT" => (3, Some(1), 4, 5, Some(2)),
        // Procedure|Function, sql_mode, Create …, character_set_client, collation_connection
        _ => (2, Some(1), 3, 4, None),
    }
}

impl MysqlDriver {
    /// Every view, procedure, function and event of the database, sorted by kind
    /// and name.
    pub(super) async fn objects(&self, conn: &mut Conn) -> Result<Vec<Object>> {
        let db = lit(&self.db);
        let rows = self
            .rows(
                conn,
                &format!(
                    "SELECT 'VIEW', TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = {db} \
                     UNION ALL SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES \
                       WHERE ROUTINE_SCHEMA = {db} AND ROUTINE_TYPE IN ('PROCEDURE', 'FUNCTION') \
                     UNION ALL SELECT 'EVENT', EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {db}"
                ),
                "cannot list views, routines and events",
            )
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let (kind, name) = (r.first().map(text).unwrap_or_default(), r.get(1).map(text).unwrap_or_default());
            let shown: Vec<Row> = match conn.query(format!("SHOW CREATE {kind} {}", qt(&self.db, &name))).await {
                Ok(rows) => rows,
                // Dropped between the listing and now: not there to capture.
                Err(mysql_async::Error::Server(s)) if [1049, 1146, 1305, 1539].contains(&s.code) => continue,
                Err(e) => return Err(self.err(&format!("SHOW CREATE {kind} {} failed", q(&name)), e)),
            };
            let Some(shown) = shown.into_iter().next().map(Row::unwrap) else { continue };
            let (stmt, mode, cs, coll, tz) = columns(&kind);
            let statement = match shown.get(stmt) {
                Some(Value::Bytes(b)) => String::from_utf8(b.clone()).map_err(|_| {
                    Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "mysql {}: {} {} was created with a character set whose text is not UTF-8, which the \
                             snapshot cannot keep byte for byte; recreate it from a utf8mb4 session",
                            self.target,
                            kind.to_lowercase(),
                            q(&name)
                        ),
                    )
                })?,
                Some(Value::NULL) | None => {
                    // A routine whose body the account may not read shows NULL.
                    return Err(Error::new(
                        ErrorKind::PermissionDenied,
                        format!(
                            "mysql {}: the definition of {} {} is hidden from this account; grant it SELECT on \
                             mysql.proc (MariaDB) or SHOW_ROUTINE (MySQL), or set `tables` to leave routines out",
                            self.target,
                            kind.to_lowercase(),
                            q(&name)
                        ),
                    ));
                }
                Some(other) => text(other),
            };
            let field = |i: Option<usize>| i.and_then(|i| shown.get(i)).map(text).unwrap_or_default();
            out.push(Object {
                kind,
                name,
                statement,
                sql_mode: field(mode),
                character_set_client: field(Some(cs)),
                collation_connection: field(Some(coll)),
                time_zone: field(tz),
            });
        }
        out.sort_by(|a, b| (order(&a.kind), &a.name).cmp(&(order(&b.kind), &b.name)));
        Ok(out)
    }

    /// Makes the live set equal to `snapshot`: drops what differs or was added, then
    /// creates what is missing — routines first (a view may call a function), views
    /// in as many passes as their dependencies on each other need, events last. Safe
    /// to run again.
    pub(super) async fn put_objects_back(&self, conn: &mut Conn, snapshot: &[Object]) -> Result<()> {
        let live = self.objects(conn).await?;
        let d = diff(snapshot, &live);
        for o in d.added.iter().chain(&d.changed) {
            let sql = format!("DROP {} IF EXISTS {}", o.kind, qt(&self.db, &o.name));
            conn.query_drop(sql).await.map_err(|e| self.err(&format!("cannot drop {}", o.label()), e))?;
        }
        let live = self.objects(conn).await?;
        let mut todo: Vec<&Object> = snapshot.iter().filter(|s| !live.contains(s)).collect();
        let mut last_err = None;
        // A view over a view that is not there yet fails with 1146: try it again once
        // the others are in. Each pass creates at least one, or gives up.
        while !todo.is_empty() {
            let mut left = Vec::new();
            for o in todo.iter().copied() {
                match self.create_object(conn, o).await {
                    Ok(()) => {}
                    Err(e) if o.kind == "VIEW" => {
                        left.push(o);
                        last_err = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            if left.len() == todo.len() {
                return Err(last_err.unwrap_or_else(|| Error::unexpected("views could not be created")));
            }
            todo = left;
        }
        conn.query_drop("SET NAMES binary, sql_mode = 'NO_AUTO_VALUE_ON_ZERO', time_zone = 'SYSTEM'")
            .await
            .map_err(|e| self.err("cannot set up the session", e))?;
        Ok(())
    }

    async fn create_object(&self, conn: &mut Conn, o: &Object) -> Result<()> {
        let mut set = format!(
            "SET SESSION character_set_client = {}, collation_connection = {}",
            lit(&o.character_set_client),
            lit(&o.collation_connection)
        );
        // A view's text is canonical (qualified, quoted): no mode of its own, and none
        // left over from the routine created before it (ONLY_FULL_GROUP_BY would
        // refuse a view that was valid when it was made).
        set.push_str(&format!(", sql_mode = {}", lit(if o.kind == "VIEW" { "" } else { &o.sql_mode })));
        if !o.time_zone.is_empty() {
            set.push_str(&format!(", time_zone = {}", lit(&o.time_zone)));
        }
        conn.query_drop(set).await.map_err(|e| self.err(&format!("cannot set up the session for {}", o.label()), e))?;
        // The statements name the object without its database.
        conn.query_drop(format!("USE {}", q(&self.db))).await.map_err(|e| self.err("cannot select the database", e))?;
        conn.query_drop(&o.statement).await.map_err(|e| {
            self.err(
                &format!(
                    "cannot create {} again (needs CREATE VIEW / CREATE ROUTINE / EVENT, and SET USER for another \
                     definer)",
                    o.label()
                ),
                e,
            )
        })
    }
}

fn order(kind: &str) -> u8 {
    match kind {
        "FUNCTION" => 0,
        "PROCEDURE" => 1,
        "VIEW" => 2,
        _ => 3,
    }
}
