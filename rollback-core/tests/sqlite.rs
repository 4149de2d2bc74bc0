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
