//! The sqlite driver on real database files, with writers running.
#![cfg(feature = "driver-sqlite")]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use rollback_core::{ErrorKind, Scope, SnapshotOptions, Status};
use rusqlite::Connection;

fn sqlite_stack(dir: &Path, extra: &str) -> rollback_core::Stack {
    stack(dir, &format!("[[component]]\nname = \"db\"\ndriver = \"sqlite\"\npath = \"data/app.db\"\n{extra}\n"))
}

fn open(p: &Path) -> Connection {
    let c = Connection::open(p).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(30)).unwrap();
    c
}

fn rows(c: &Connection, sql: &str) -> Vec<String> {
    let mut st = c.prepare(sql).unwrap();
    let n = st.column_count();
    let mut out = Vec::new();
    let mut q = st.query([]).unwrap();
    while let Some(r) = q.next().unwrap() {
        let mut cols = Vec::new();
        for i in 0..n {
            cols.push(match r.get_ref(i).unwrap() {
                rusqlite::types::ValueRef::Text(t) => format!("Text({:?})", String::from_utf8_lossy(t)),
                v => format!("{v:?}"),
            });
        }
        out.push(cols.join("|"));
    }
    out
}

fn fixture(c: &Connection, journal: &str) {
    c.execute_batch(&format!(
        r#"PRAGMA journal_mode = {journal};
        CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
        CREATE TABLE transfers (id INTEGER PRIMARY KEY AUTOINCREMENT, src INT, dst INT, amount INT);
        CREATE TABLE misc (r REAL, b BLOB, t TEXT, n);
        CREATE INDEX transfers_src ON transfers (src);
        CREATE VIEW rich AS SELECT * FROM accounts WHERE balance > 1000;
        CREATE TRIGGER no_negative BEFORE UPDATE ON accounts WHEN NEW.balance < -1000000
          BEGIN SELECT RAISE(ABORT, 'too negative'); END;
        CREATE TABLE y (v TEXT); INSERT INTO y VALUES ('keep me');
        CREATE TABLE "x""; DROP TABLE y; --" (k INT, "we""ird" TEXT);
        INSERT INTO "x""; DROP TABLE y; --" VALUES (1, 'ünïcødé ✓ 🚀');
        INSERT INTO misc VALUES (3.14159, x'00ff10', 'tab	nl
x', NULL), (-0.0, x'', '', 42), (1e308, NULL, '日本語', 'text in untyped');
        WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < 500)
        INSERT INTO accounts SELECT i, 1000 FROM g;
        WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < 20000)
        INSERT INTO misc SELECT i * 0.5, randomblob(64), hex(randomblob(32)), i FROM g;"#
    ))
    .unwrap();
}

const INVARIANT: &str = "SELECT count(*) FROM accounts a WHERE balance <> 1000
    + coalesce((SELECT sum(amount) FROM transfers WHERE dst = a.id), 0)
    - coalesce((SELECT sum(amount) FROM transfers WHERE src = a.id), 0)";

async fn round_trip_under_writes(journal: &str, restore: &str) {
    let (_t, dir) = tmp();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let db = dir.join("data/app.db");
    fixture(&open(&db), journal);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, db) = (stop.clone(), db.clone());
        std::thread::spawn(move || {
            let c = open(&db);
            let mut x: u64 = 88172645463325252;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let (a, b, amt) = (x % 500 + 1, (x >> 20) % 500 + 1, (x >> 40) % 50 + 1);
                c.execute_batch(&format!(
                    "BEGIN IMMEDIATE; UPDATE accounts SET balance = balance - {amt} WHERE id = {a};
                     UPDATE accounts SET balance = balance + {amt} WHERE id = {b};
                     INSERT INTO transfers (src, dst, amount) VALUES ({a}, {b}, {amt}); COMMIT;"
                ))
                .unwrap();
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    let s = sqlite_stack(&dir, restore);
    let snap = snap(&s).await;
    std::thread::sleep(std::time::Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0);

    // A migration after the snapshot, and more data.
    let c = open(&db);
    c.execute_batch(
        r#"ALTER TABLE accounts ADD COLUMN tier TEXT; CREATE INDEX accounts_tier ON accounts (tier);
           CREATE TABLE orders (id INT); INSERT INTO orders VALUES (1), (2);
           DELETE FROM misc WHERE rowid <= 3; UPDATE "x""; DROP TABLE y; --" SET k = 2;"#,
    )
    .unwrap();
    let v = s.verify(&snap.id, &[]).await.unwrap();
    assert!(!v.ok);
    let plan = s.plan(&snap.id, &Scope::Complete).await.unwrap();
    let by = |t: &str| plan.discards.iter().find(|d| d.target == t).map(|d| d.changes);
    assert_eq!(by("table misc"), Some(3), "{:?}", plan.discards);
    assert_eq!(by("table orders (created after the snapshot)"), Some(2), "{:?}", plan.discards);
    assert_eq!(by("table x\"; DROP TABLE y; --"), Some(1), "{:?}", plan.discards);
    assert!(by("schema").unwrap() >= 3, "{:?}", plan.discards);
    // Online mode copies into this connection's file; rename mode replaces the file.
    drop(c);

    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
    let c = open(&db);
    assert_eq!(rows(&c, INVARIANT), ["Integer(0)"]);
    assert_eq!(rows(&c, "SELECT sum(balance) FROM accounts"), ["Integer(500000)"]);
    assert!(rows(&c, "SELECT name FROM sqlite_master WHERE name IN ('orders', 'accounts_tier')").is_empty());
    assert_eq!(rows(&c, "SELECT count(*) FROM misc"), ["Integer(20003)"]);
    assert_eq!(rows(&c, "SELECT v FROM y"), ["Text(\"keep me\")"]);
    assert_eq!(rows(&c, "PRAGMA integrity_check"), ["Text(\"ok\")"]);
    assert_eq!(rows(&c, "PRAGMA journal_mode"), [format!("Text({journal:?})")]);
    // AUTOINCREMENT continues from the captured counter.
    let max: i64 = c.query_row("SELECT max(id) FROM transfers", [], |r| r.get(0)).unwrap();
    c.execute("INSERT INTO transfers (src, dst, amount) VALUES (1, 1, 0)", []).unwrap();
    assert_eq!(c.last_insert_rowid(), max + 1);
}

#[tokio::test]
async fn wal_database_round_trips_while_a_writer_runs() {
    round_trip_under_writes("wal", "").await;
}

#[tokio::test]
async fn rollback_journal_database_round_trips_while_a_writer_runs() {
    round_trip_under_writes("delete", "").await;
}

#[tokio::test]
async fn online_restore_round_trips_while_a_writer_runs() {
    round_trip_under_writes("wal", "restore = \"online\"").await;
}

#[tokio::test]
async fn online_restore_is_seen_by_open_connections() {
    let (_t, dir) = tmp();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let db = dir.join("data/app.db");
    let c = open(&db);
    c.execute_batch("PRAGMA journal_mode = wal; CREATE TABLE t (v INT); INSERT INTO t VALUES (1);").unwrap();
    let s = sqlite_stack(&dir, "restore = \"online\"");
    let snap = snap(&s).await;
    c.execute_batch("INSERT INTO t VALUES (2)").unwrap();
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert_eq!(rows(&c, "SELECT v FROM t"), ["Integer(1)"], "the open connection sees the restore");
}

#[tokio::test]
async fn missing_file_is_named_and_not_created() {
    let (_t, dir) = tmp();
    let s = sqlite_stack(&dir, "");
    let e = s.snapshot(SnapshotOptions::default()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(e.component(), Some("db"));
    assert!(e.to_string().contains("data/app.db"), "{e}");
    assert!(!dir.join("data/app.db").exists());
    let chk = s.check().await.unwrap();
    assert!(!chk.ok);
}

#[tokio::test]
async fn restore_recreates_a_deleted_database() {
    let (_t, dir) = tmp();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let db = dir.join("data/app.db");
    open(&db).execute_batch("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('a');").unwrap();
    let s = sqlite_stack(&dir, "");
    let snap = snap(&s).await;
    std::fs::remove_file(&db).unwrap();
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert_eq!(rows(&open(&db), "SELECT v FROM t"), ["Text(\"a\")"]);
}

/// Runs `sqlite3 db sql` as uid/gid 65534, the application's user in these tests.
fn as_app_user(db: &Path, sql: &str) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "sqlite3"])
        .arg(db)
        .arg(sql)
        .output()
        .expect("setpriv and sqlite3 must be installed")
}

/// The rollback runs as root, the application as another user: the restored file
/// (and the -wal/-shm SQLite makes beside it) stays the application's, with its
/// mode, so the application can still write. Also when the file was deleted: the
/// snapshot's recorded owner and mode are used.
#[tokio::test]
async fn rename_restore_keeps_the_owner_group_and_mode_of_the_database() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let (_t, dir) = tmp();
    assert_eq!(std::fs::metadata(&dir).unwrap().uid(), 0, "this test runs as root (it changes file owners)");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::os::unix::fs::chown(dir.join("data"), Some(65534), Some(65534)).unwrap();
    let db = dir.join("data/app.db");
    open(&db).execute_batch("PRAGMA journal_mode = wal; CREATE TABLE t (v INT); INSERT INTO t VALUES (1);").unwrap();
    std::os::unix::fs::chown(&db, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = as_app_user(&db, "INSERT INTO t VALUES (2)");
    assert!(out.status.success(), "the application writes before: {}", String::from_utf8_lossy(&out.stderr));

    let s = sqlite_stack(&dir, "");
    let snap = snap(&s).await;
    let out = as_app_user(&db, "INSERT INTO t VALUES (3)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let owned_by_app = |what: &str| {
        let m = std::fs::metadata(&db).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (65534, 65534, 0o640), "{what}: the database file");
        for side in ["-wal", "-shm"] {
            let p = dir.join(format!("data/app.db{side}"));
            if let Ok(m) = std::fs::metadata(&p) {
                assert_eq!((m.uid(), m.gid()), (65534, 65534), "{what}: {}", p.display());
            }
        }
    };
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    owned_by_app("after a rollback");
    let out = as_app_user(&db, "INSERT INTO t VALUES (4)");
    assert!(out.status.success(), "the application writes after: {}", String::from_utf8_lossy(&out.stderr));
    // A connection held open (as the rollback's root would in a verify) makes -wal/-shm.
    let c = open(&db);
    assert_eq!(rows(&c, "SELECT v FROM t ORDER BY v"), ["Integer(1)", "Integer(2)", "Integer(4)"]);
    owned_by_app("with a connection open");
    drop(c);

    // The file is gone: the owner and mode recorded in the snapshot are used.
    std::fs::remove_file(&db).unwrap();
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    owned_by_app("after restoring a deleted file");
    let out = as_app_user(&db, "INSERT INTO t VALUES (5)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Another process that reads the table and inserts one row at a time (autocommit,
/// 50 ms busy timeout), appending each id SQLite acknowledged to `acked` (and
/// `refused` for a refused write, `read refused` for a refused read), until `stop`
/// exists. With `reconnect` it opens a connection per write, as a CLI or a cron job
/// does; without, it keeps one open, as a service does.
const WRITER: &str = r#"
import os, sqlite3, sys, time
db, acked, stop, reconnect = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
out = open(acked, "a", buffering=1)
c, i = None, 1000000
while not os.path.exists(stop):
    try:
        if c is None:
            c = sqlite3.connect(db, timeout=0.05, isolation_level=None)
        try:
            c.execute("SELECT count(*) FROM trades").fetchone()
        except sqlite3.Error:
            out.write("read refused\n")
        i += 1
        c.execute("INSERT INTO trades (id) VALUES (?)", (i,))
        out.write(f"{i}\n")
        if reconnect:
            c.close(); c = None
    except sqlite3.Error:
        out.write("refused\n")
        try:
            c.close()
        except Exception:
            pass
        c = None
        time.sleep(0.01)
"#;

struct Writer {
    child: std::process::Child,
    acked: std::path::PathBuf,
    stop: std::path::PathBuf,
}

impl Writer {
    fn start(db: &Path, dir: &Path, reconnect: bool) -> Writer {
        let (acked, stop) = (dir.join("acked.txt"), dir.join("stop"));
        let child = std::process::Command::new("python3")
            .args(["-c", WRITER])
            .arg(db)
            .arg(&acked)
            .arg(&stop)
            .arg(if reconnect { "1" } else { "0" })
            .spawn()
            .expect("python3");
        Writer { child, acked, stop }
    }

    /// (acknowledged ids, refused writes) so far.
    fn read(&self) -> (Vec<i64>, usize) {
        let text = std::fs::read_to_string(&self.acked).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        (lines.iter().filter_map(|l| l.parse().ok()).collect(), lines.iter().filter(|l| **l == "refused").count())
    }

    /// Refused reads so far.
    fn refused_reads(&self) -> usize {
        std::fs::read_to_string(&self.acked).unwrap_or_default().lines().filter(|l| *l == "read refused").count()
    }

    fn wait_for(&self, n: usize) {
        let t0 = std::time::Instant::now();
        while self.read().0.len() < n {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(30),
                "the writer stalled at {:?}",
                self.read().0.len()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn stop(mut self) -> (Vec<i64>, usize) {
        std::fs::write(&self.stop, "").unwrap();
        assert!(self.child.wait().unwrap().success());
        self.read()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.stop, "");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A writer the rollback does not know about, in another process: every write it
/// was told succeeded is in the restored database or in the safety snapshot, it was
/// refused while the fence was up, and it writes again (to the restored database,
/// not a replaced file) afterwards.
async fn an_unknown_writer_loses_no_acknowledged_write(journal: &str, reconnect: bool) {
    let (_t, dir) = tmp();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let db = dir.join("data/app.db");
    open(&db)
        .execute_batch(&format!(
            "PRAGMA journal_mode = {journal}; CREATE TABLE trades (id INTEGER PRIMARY KEY, note TEXT);
             WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < 20000)
             INSERT INTO trades SELECT i, hex(randomblob(16)) FROM g;"
        ))
        .unwrap();
    let s = sqlite_stack(&dir, "");
    let snap = snap(&s).await;
    let w = Writer::start(&db, &dir, reconnect);
    w.wait_for(50);
    let rec = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    let after = w.read().0.len();
    w.wait_for(after + 20);
    let refused_reads = w.refused_reads();
    let (acked, refused) = w.stop();
    assert_eq!(rec.status, Status::Succeeded, "{}", rec.to_json());
    let fence = rec.fences.iter().find(|f| f.component == "db").unwrap_or_else(|| panic!("{}", rec.to_json()));
    let kind = if journal == "wal" { "a write transaction held open" } else { "locked exclusively" };
    assert!(fence.error.is_none() && fence.how.contains(kind), "{fence:?}");
    assert!(refused > 0, "the fence refused the writer at least once");
    if journal == "wal" {
        // Reads go on under a WAL-mode fence.
        assert_eq!(refused_reads, 0, "reads refused under the WAL-mode fence");
    }

    let ids = |c: &Connection| -> std::collections::BTreeSet<i64> {
        let mut st = c.prepare("SELECT id FROM trades WHERE id > 1000000").unwrap();
        st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    let now = ids(&open(&db));
    assert!(acked.iter().rev().take(20).all(|i| now.contains(i)), "writes after the fence land in the restored file");
    let back = s.rollback(rec.safety_snapshot_id.as_deref().unwrap(), opts(Scope::Complete)).await.unwrap();
    assert_eq!(back.status, Status::Succeeded, "{}", back.to_json());
    let kept = ids(&open(&db));
    let lost: Vec<_> = acked.iter().filter(|i| !now.contains(i) && !kept.contains(i)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes in neither the database nor the safety snapshot: {lost:?}",
        lost.len()
    );
}

#[tokio::test]
async fn rollback_journal_fences_a_writer_it_does_not_know() {
    an_unknown_writer_loses_no_acknowledged_write("delete", false).await;
}

#[tokio::test]
async fn wal_fences_a_writer_that_reconnects() {
    an_unknown_writer_loses_no_acknowledged_write("wal", true).await;
}

/// A service keeps its connection open. In WAL mode that connection keeps a shared
/// lock, so no exclusive lock can be had: the fence is a write transaction held
/// open, and the restore is written through it. (Before, the record said the writer
/// was neither stopped nor fenced, and its writes between the safety snapshot and
/// the restore were lost.)
#[tokio::test]
async fn wal_fences_a_writer_that_holds_its_connection_open() {
    an_unknown_writer_loses_no_acknowledged_write("wal", false).await;
}

/// Every kind of object a SQLite database holds.
const CATALOG: &str = r#"
    PRAGMA journal_mode = wal; PRAGMA user_version = 7; PRAGMA application_id = 4242;
    CREATE TABLE accounts (id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL UNIQUE,
                           balance INTEGER NOT NULL, cents INTEGER GENERATED ALWAYS AS (balance * 100) VIRTUAL,
                           label TEXT GENERATED ALWAYS AS (upper(owner)) STORED);
    CREATE TABLE fills (account INTEGER REFERENCES accounts (id) ON DELETE CASCADE, qty INT);
    CREATE TABLE notes (body TEXT);
    CREATE TABLE odd (rowid TEXT, v ANY) STRICT;
    CREATE TABLE prices (sym TEXT, day INT, px REAL, PRIMARY KEY (sym, day)) WITHOUT ROWID;
    CREATE TABLE audit (what TEXT);
    CREATE TABLE docs (id INTEGER PRIMARY KEY DESC, body TEXT);
    CREATE VIRTUAL TABLE docs_index USING fts5 (body, content = 'docs');
    CREATE INDEX fills_big ON fills (qty) WHERE qty > 100;
    CREATE INDEX accounts_lower ON accounts (lower(owner));
    CREATE VIEW rich AS SELECT owner, balance FROM accounts WHERE balance > 500;
    CREATE TRIGGER audit_fills AFTER INSERT ON fills BEGIN INSERT INTO audit VALUES ('fill ' || NEW.qty); END;
    CREATE VIRTUAL TABLE search USING fts5 (body);
    CREATE VIRTUAL TABLE boxes USING rtree (id, x0, x1);
    INSERT INTO accounts (owner, balance) VALUES ('ada', 1000), ('bob', 20), ('cy', 700);
    DELETE FROM accounts WHERE owner = 'cy';
    INSERT INTO fills VALUES (1, 50), (1, 150), (2, 7);
    INSERT INTO notes VALUES ('one'), ('two'), ('three'), ('four'), ('five');
    DELETE FROM notes WHERE body IN ('two', 'four');
    INSERT INTO odd VALUES ('not the rowid', x'00ff'), ('second', 2.5);
    INSERT INTO prices VALUES ('ES', 1, 5000.25), ('NQ', 1, 17000.5);
    INSERT INTO search VALUES ('liquidation cascade on ETH'), ('funding rate flip');
    INSERT INTO boxes VALUES (1, 0.0, 10.0), (2, 5.0, 7.5);
    INSERT INTO docs (rowid, id, body) VALUES (10, 1, 'alpha'), (20, 2, 'beta');
    INSERT INTO docs_index (docs_index) VALUES ('rebuild');
    ANALYZE;
"#;

/// A deploy's change to each kind.
const CATALOG_DEPLOY: &str = r#"
    PRAGMA user_version = 8;
    INSERT INTO accounts (owner, balance) VALUES ('dee', 5);
    UPDATE accounts SET balance = balance + 1;
    DELETE FROM accounts WHERE owner = 'bob';
    INSERT INTO fills VALUES (1, 999);
    INSERT INTO notes VALUES ('six'); DELETE FROM notes WHERE body = 'one';
    UPDATE odd SET v = 3;
    INSERT INTO prices VALUES ('ES', 2, 5010);
    INSERT INTO search VALUES ('new listing');
    DELETE FROM boxes WHERE id = 2;
    DELETE FROM docs WHERE id = 1; INSERT INTO docs_index (docs_index) VALUES ('rebuild');
    DROP TRIGGER audit_fills; DROP VIEW rich; DROP INDEX fills_big;
    ALTER TABLE notes ADD COLUMN author TEXT;
    CREATE TABLE migrations (v INT); INSERT INTO migrations VALUES (8);
"#;

/// The oracle: Python's own dump of schema and rows, hashed, and what a dump does
/// not show (rowids of tables without an alias, header fields, sequences, a search).
fn catalog_state(db: &Path) -> String {
    const ORACLE: &str = r#"
import hashlib, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
dump = '\n'.join(l for l in c.iterdump() if 'sqlite_stat' not in l)
print(hashlib.sha256(dump.encode()).hexdigest())
for q in ['PRAGMA user_version', 'PRAGMA application_id', 'PRAGMA journal_mode',
          'SELECT rowid, body FROM notes', 'SELECT _rowid_, rowid, v FROM odd',
          'SELECT * FROM sqlite_sequence', "SELECT rowid FROM search WHERE search MATCH 'cascade'",
          'SELECT id FROM boxes WHERE x1 > 8', 'SELECT count(*) > 0 FROM sqlite_stat1',
          'SELECT rowid, id FROM docs', "SELECT rowid FROM docs_index WHERE docs_index MATCH 'beta'",
          "SELECT count(*) FROM docs_index WHERE docs_index MATCH 'alpha'"]:
    print(q, c.execute(q).fetchall())
"#;
    let o = std::process::Command::new("python3").args(["-c", ORACLE]).arg(db).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// A WAL database with every kind of object, held open by its application, is put
/// back through the fence's transaction: the oracle matches, no trigger fired and
/// no foreign key cascaded during the copy, and the application's open connection
/// reads and writes the restored database (its trigger fires again).
#[tokio::test]
async fn wal_restore_through_the_fence_keeps_every_kind_of_object() {
    let (_t, dir) = tmp();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let db = dir.join("data/app.db");
    let app = open(&db);
    app.execute_batch(CATALOG).unwrap();
    let want = catalog_state(&db);
    assert!(want.contains("[(1, 'one'), (3, 'three'), (5, 'five')]"), "{want}");
    let s = sqlite_stack(&dir, "");
    let snap = snap(&s).await;
    app.execute_batch(CATALOG_DEPLOY).unwrap();
    assert_ne!(catalog_state(&db), want);

    let rec = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{}", rec.to_json());
    assert!(rec.fences.iter().any(|f| f.how.contains("a write transaction held open")), "{}", rec.to_json());
    assert_eq!(catalog_state(&db), want, "the restored database");

    // The application's connection, open throughout.
    // The snapshot's three audit rows, no more: no trigger fired during the copy.
    assert_eq!(rows(&app, "SELECT count(*) FROM audit"), ["Integer(3)"]);
    assert_eq!(rows(&app, "SELECT count(*) FROM fills"), ["Integer(3)"]);
    app.execute_batch("INSERT INTO fills VALUES (2, 500)").unwrap();
    assert_eq!(rows(&app, "SELECT what FROM audit WHERE rowid = 4"), ["Text(\"fill 500\")"], "the trigger fires");
    assert_eq!(rows(&app, "SELECT owner FROM rich"), ["Text(\"ada\")"]);

    // Back to the deploy's state from the safety snapshot, the same way.
    let back = s.rollback(rec.safety_snapshot_id.as_deref().unwrap(), opts(Scope::Complete)).await.unwrap();
    assert_eq!(back.status, Status::Succeeded, "{}", back.to_json());
    assert_eq!(rows(&app, "SELECT v FROM migrations"), ["Integer(8)"]);
    assert_eq!(rows(&app, "PRAGMA user_version"), ["Integer(8)"]);
}

/// An index on a collation only the application defines cannot be created by the
/// rollback's connection: the restore written through a WAL-mode fence fails as a
/// whole, naming the collation, and the live database is left exactly as it was.
#[tokio::test]
async fn wal_restore_that_fails_midway_keeps_nothing_of_itself() {
    let (_t, dir) = tmp();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let db = dir.join("data/app.db");
    const APP: &str = "import sqlite3, sys\n\
        c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
        c.create_collation('rev', lambda a, b: (a < b) - (a > b))\n\
        c.executescript(sys.argv[2])\n";
    let app = |sql: &str| {
        let o = std::process::Command::new("python3").args(["-c", APP]).arg(&db).arg(sql).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    app("PRAGMA journal_mode = wal; CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT);
         CREATE INDEX t_name ON t (name COLLATE rev); INSERT INTO t VALUES (1, 'a'), (2, 'b');");
    let s = sqlite_stack(&dir, "");
    let snap = snap(&s).await;
    app("INSERT INTO t VALUES (3, 'c'); CREATE TABLE later (v INT);");
    let before = catalog_dump(&db);

    let rec = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_ne!(rec.status, Status::Succeeded, "{}", rec.to_json());
    assert!(rec.to_json().contains("no such collation sequence: rev"), "{}", rec.to_json());
    assert_eq!(catalog_dump(&db), before, "the live database is as it was");
    // The fence was lifted: the application writes again.
    app("INSERT INTO t VALUES (4, 'd');");
}

/// Python's dump of a database, schema and rows.
fn catalog_dump(db: &Path) -> String {
    let o = std::process::Command::new("python3")
        .args(["-c", "import sqlite3, sys\nprint('\\n'.join(sqlite3.connect(sys.argv[1]).iterdump()))"])
        .arg(db)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// What SQL-level copies get wrong, each of which a restore through the WAL-mode
/// fence once did: TEXT that is not valid UTF-8 (SQLite keeps it; the copy panicked
/// and the fence was dropped unseen), and an AUTOINCREMENT table the deploy added,
/// whose `sqlite_sequence` cannot be dropped (the comparison said it "was created
/// after the snapshot" and the rollback failed).
#[tokio::test]
async fn wal_restore_keeps_text_that_is_not_utf8_and_forgets_a_new_sequence() {
    let (_t, dir) = tmp();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let db = dir.join("data/app.db");
    let app = open(&db);
    app.execute_batch(
        "PRAGMA journal_mode = wal; CREATE TABLE raw (t TEXT);
         INSERT INTO raw VALUES (CAST(x'ff00fe41' AS TEXT)), ('plain');",
    )
    .unwrap();
    let hex = |c: &Connection| rows(c, "SELECT typeof(t) || ':' || hex(t) FROM raw ORDER BY rowid");
    let want = hex(&app);
    assert_eq!(want, ["Text(\"text:FF00FE41\")", "Text(\"text:706C61696E\")"]);
    let s = sqlite_stack(&dir, "");
    let snap = snap(&s).await;
    app.execute_batch(
        "DELETE FROM raw; CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, v INT);
         INSERT INTO jobs (v) VALUES (1), (2);",
    )
    .unwrap();
    let rec = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{}", rec.to_json());
    assert_eq!(hex(&app), want);
    assert_eq!(rows(&app, "SELECT count(*) FROM sqlite_master WHERE name = 'jobs'"), ["Integer(0)"]);
}

/// `user_version` and `application_id` are where applications and migration tools
/// keep their schema version: a deploy that bumps them is drift, and a rollback puts
/// them back. The oracle is SQLite's own `PRAGMA`, read by Python's sqlite3.
#[tokio::test]
async fn verify_sees_the_header_fields_and_a_rollback_puts_them_back() {
    for journal in ["wal", "delete"] {
        let (_t, d) = tmp();
        std::fs::create_dir_all(d.join("data")).unwrap();
        let db = d.join("data/app.db");
        open(&db).execute_batch(&format!("PRAGMA journal_mode = {journal}; CREATE TABLE t (x); PRAGMA user_version = 3; PRAGMA application_id = 1234;")).unwrap();
        let s = sqlite_stack(&d, "");
        let snap = common::snap(&s).await;
        open(&db).execute_batch("PRAGMA user_version = 4; PRAGMA application_id = 99;").unwrap();
        let v = s.verify(&snap.id, &[]).await.unwrap();
        assert!(!v.ok, "{journal}: a bumped user_version is drift: {v:?}");
        let diffs = v.components["db"].differences.join("; ");
        assert!(diffs.contains("user_version") && diffs.contains("application_id"), "{diffs}");
        let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
        assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
        let py = "import sqlite3,sys; c = sqlite3.connect(sys.argv[1]); print(c.execute('pragma user_version').fetchone()[0], c.execute('pragma application_id').fetchone()[0])";
        let o = std::process::Command::new("python3").args(["-c", py]).arg(&db).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "3 1234", "{journal}");
    }
}
