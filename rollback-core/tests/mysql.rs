//! The `mysql` driver against a real MariaDB/MySQL (`ROLLBACK_MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306`). Each test makes its own database and drops it.
//! A missing server fails the tests.
#![cfg(feature = "driver-mysql")]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use rollback_core::{
    ComponentConfig, Context, ErrorKind, Registry, RollbackOptions, Scope, SnapshotOptions, Stack, StackConfig, Status,
};

fn base_url() -> String {
    std::env::var("ROLLBACK_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

fn url(db: &str) -> String {
    format!("{}/{db}", base_url().trim_end_matches('/'))
}

struct TestDb {
    name: String,
}

impl TestDb {
    async fn new(tag: &str) -> (TestDb, Conn) {
        let name = format!("rbtest_{tag}_{:08x}", rand::random::<u32>());
        let mut root = Conn::new(mysql_async::Opts::from_url(&base_url()).unwrap())
            .await
            .expect("MariaDB must be running on 127.0.0.1:3306 (scripts/services.sh starts it)");
        root.query_drop(format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4")).await.unwrap();
        let mut c = Conn::new(mysql_async::Opts::from_url(&url(&name)).unwrap()).await.unwrap();
        c.query_drop("SET NAMES utf8mb4, time_zone = '+00:00'").await.unwrap();
        (TestDb { name }, c)
    }

    async fn drop_all(self) {
        let mut root = Conn::new(mysql_async::Opts::from_url(&base_url()).unwrap()).await.unwrap();
        root.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name)).await.unwrap();
    }
}

fn stack(dir: &Path, body: &str) -> Stack {
    stack_for(dir, "store", body)
}

/// A stack with its own store under `dir` (several stacks can share one test's dir).
fn stack_for(dir: &Path, store: &str, body: &str) -> Stack {
    let text = format!("[store]\npath = \"{}\"\n{body}", dir.join(store).display());
    let cfg = StackConfig::from_toml_str(&text, None, dir, &|_| None).unwrap();
    Stack::new(cfg, &Registry::with_default_drivers()).unwrap()
}

fn component(db: &str, strategy: &str, extra: &str) -> String {
    format!(
        "[[component]]\nname = \"db\"\ndriver = \"mysql\"\nurl = \"{}\"\nstrategy = \"{strategy}\"\n{extra}\n",
        url(db)
    )
}

const WEIRD: &str = "we\"ird`; DROP TABLE y; --";

/// Varied types, a foreign key, a generated column, a table with a hostile name.
async fn schema(c: &mut Conn) {
    c.query_drop(
        "CREATE TABLE accounts (
            id INT PRIMARY KEY,
            owner VARCHAR(100) CHARACTER SET utf8mb4 NOT NULL,
            balance DECIMAL(20,8) NOT NULL
        ) ENGINE=InnoDB",
    )
    .await
    .unwrap();
    c.query_drop(
        "CREATE TABLE trades (
            id BIGINT AUTO_INCREMENT PRIMARY KEY,
            account_id INT NOT NULL,
            sym VARCHAR(20) NOT NULL,
            price DECIMAL(18,8) NOT NULL,
            qty DECIMAL(18,8) NOT NULL,
            notional DECIMAL(40,16) AS (price * qty) VIRTUAL,
            at DATETIME(6) NOT NULL,
            ts TIMESTAMP NULL,
            note TEXT CHARACTER SET utf8mb4 NULL,
            raw BLOB NULL,
            flag TINYINT(1) NULL,
            KEY by_account (account_id),
            CONSTRAINT trades_account FOREIGN KEY (account_id) REFERENCES accounts (id)
        ) ENGINE=InnoDB",
    )
    .await
    .unwrap();
    c.query_drop(format!("CREATE TABLE `{}` (k VARCHAR(10) PRIMARY KEY, v INT)", WEIRD.replace('`', "``")))
        .await
        .unwrap();
    c.query_drop("INSERT INTO accounts VALUES (1, 'alice', 1000.5), (2, 'bob ☃ 日本', 2000), (3, 'zoë 🚀', 0)")
        .await
        .unwrap();
    c.exec_drop(
        "INSERT INTO trades (account_id, sym, price, qty, at, ts, note, raw, flag) VALUES \
         (1, 'BTC', 65000.12345678, 0.5, '2026-11-23 10:00:00.123456', '2026-11-23 10:00:00', 'first\ttab\nnewline \\\\ back', ?, 1), \
         (2, 'ETH', 0.00000001, 12345678.87654321, '1999-12-31 23:59:59.999999', NULL, NULL, NULL, NULL), \
         (3, 'émoji🚀', 1, 1, '2026-01-01 00:00:00', '2038-01-19 03:14:07', '', ?, 0)",
        (
            Value::Bytes(b"\x00\x01\t\n\\\xff\x1a\r".to_vec()),
            Value::Bytes(Vec::new()),
        ),
    )
    .await
    .unwrap();
    c.query_drop(format!("INSERT INTO `{}` VALUES ('a;b', 1), ('''q''', NULL)", WEIRD.replace('`', "``")))
        .await
        .unwrap();
}

/// Every row of every table, as raw bytes, in primary-key order.
async fn content(c: &mut Conn) -> Vec<(String, Vec<Vec<Option<Vec<u8>>>>)> {
    c.query_drop("SET NAMES binary").await.unwrap();
    let mut tables: Vec<Vec<u8>> =
        c.query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()").await.unwrap();
    tables.sort();
    let mut out = Vec::new();
    for t in tables {
        let t = String::from_utf8(t).unwrap();
        let rows: Vec<Row> = c.query(format!("SELECT * FROM `{}` ORDER BY 1", t.replace('`', "``"))).await.unwrap();
        let rows = rows
            .into_iter()
            .map(|r| {
                r.unwrap()
                    .into_iter()
                    .map(|v| match v {
                        Value::NULL => None,
                        Value::Bytes(b) => Some(b),
                        other => Some(other.as_sql(true).into_bytes()),
                    })
                    .collect()
            })
            .collect();
        out.push((t, rows));
    }
    c.query_drop("SET NAMES utf8mb4").await.unwrap();
    out
}

async fn indexes(c: &mut Conn, table: &str) -> Vec<String> {
    let mut v: Vec<String> = c
        .query(format!(
            "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}'"
        ))
        .await
        .unwrap();
    v.sort();
    v
}

async fn mutate(c: &mut Conn) {
    c.query_drop("UPDATE accounts SET balance = balance - 100 WHERE id = 1").await.unwrap();
    c.query_drop("INSERT INTO accounts VALUES (4, 'mallory', 5)").await.unwrap();
    c.query_drop("DELETE FROM trades WHERE id = 2").await.unwrap();
    c.query_drop(format!("UPDATE `{}` SET v = 99", WEIRD.replace('`', "``"))).await.unwrap();
    // A migration: an index and a table.
    c.query_drop("ALTER TABLE trades ADD INDEX by_sym (sym)").await.unwrap();
    c.query_drop("CREATE TABLE audit (id INT PRIMARY KEY)").await.unwrap();
    c.query_drop("INSERT INTO audit VALUES (1), (2), (3)").await.unwrap();
}

/// Drops the in-server copies (`fast`) of every snapshot in the stack's store,
/// safety snapshots included.
async fn drop_copies(c: &mut Conn, stack: &Stack) {
    for s in stack.list().unwrap() {
        for p in &s.parts {
            for key in ["snapshot_schema", "ready_schema"] {
                if let Some(schema) = p.state[key].as_str() {
                    c.query_drop(format!("DROP DATABASE IF EXISTS `{schema}`")).await.unwrap();
                }
            }
        }
    }
}

/// How many schemas match a LIKE pattern (a plain name matches itself).
async fn schemas_like(c: &mut Conn, pattern: &str) -> u64 {
    let sql = format!("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '{pattern}'");
    c.query_first::<u64, _>(sql).await.unwrap().unwrap_or(0)
}

async fn round_trip(strategy: &str, extra: &str) {
    let (db, mut c) = TestDb::new(strategy).await;
    schema(&mut c).await;
    let before = content(&mut c).await;
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path(), &component(&db.name, strategy, extra));
    let snap = stack.snapshot(SnapshotOptions::default()).await.unwrap();
    assert!(stack.verify(&snap.id, &[]).await.unwrap().ok);

    mutate(&mut c).await;
    let v = stack.verify(&snap.id, &[]).await.unwrap();
    let text = v.components["db"].differences.join("\n");
    assert!(!v.ok);
    assert!(text.contains("`accounts`: content differs"), "{text}");
    assert!(text.contains("`trades`: schema differs"), "{text}");
    assert!(text.contains("`audit` was added"), "{text}");

    let plan = stack.plan(&snap.id, &Scope::Complete).await.unwrap();
    let shown = plan.to_string();
    let d = |t: &str| plan.discards.iter().find(|d| d.target == format!("table `{t}`")).cloned();
    assert_eq!(d("accounts").unwrap().changes, 1, "{shown}");
    assert_eq!(d("trades").unwrap().changes, 1, "{shown}");
    assert_eq!(d("audit").unwrap().changes, 3, "{shown}");
    assert!(d(&WEIRD.replace('`', "``")).is_some(), "{:?}", plan.discards);
    assert!(shown.contains("RENAME TABLE"), "{shown}");

    let ready = snap.parts[0].state["ready_schema"].as_str().map(str::to_string);
    assert_eq!(ready.is_some(), strategy == "fast", "only `fast` keeps a ready copy");
    if let Some(r) = &ready {
        assert_eq!(schemas_like(&mut c, r).await, 1, "the ready copy is there before the first restore");
    }

    let rec = stack.rollback(&snap.id, RollbackOptions::default()).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{rec:?}");
    assert!(rec.verification["db"].ok);
    if let Some(r) = &ready {
        assert_eq!(schemas_like(&mut c, r).await, 0, "the first restore took the ready copy");
        let safety = stack.list().unwrap().into_iter().find(|s| s.id != snap.id).unwrap();
        assert!(safety.parts[0].state["ready_schema"].is_null(), "a safety snapshot gets no ready copy");
    }
    assert!(!rec.discarded.is_empty() && !rec.data_loss);
    assert_eq!(content(&mut c).await, before);
    assert_eq!(indexes(&mut c, "trades").await, ["PRIMARY", "by_account"]);
    // The foreign key is back and enforced.
    let e = c.query_drop("INSERT INTO trades (account_id, sym, price, qty, at) VALUES (42, 'X', 1, 1, NOW())").await;
    assert!(e.is_err(), "the foreign key must be enforced after the restore");
    // The generated column computes again.
    let n: Option<String> = c.query_first("SELECT CAST(notional AS CHAR) FROM trades WHERE id = 1").await.unwrap();
    assert_eq!(n.as_deref(), Some("32500.0617283900000000"));
    // AUTO_INCREMENT continues after the restored ids.
    c.query_drop("INSERT INTO trades (account_id, sym, price, qty, at) VALUES (1, 'N', 1, 1, NOW())").await.unwrap();
    let id: u64 = c.query_first("SELECT LAST_INSERT_ID()").await.unwrap().unwrap();
    assert!(id > 3);
    c.query_drop("DELETE FROM trades WHERE sym = 'N'").await.unwrap();

    // The same snapshot again (after another bad change): a snapshot is reusable.
    c.query_drop("UPDATE accounts SET owner = 'x' WHERE id = 3").await.unwrap();
    let rec = stack.rollback(&snap.id, RollbackOptions::default()).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{rec:?}");
    assert_eq!(content(&mut c).await, before);

    // gc releases what the snapshots pinned (the snapshot schema of `fast`).
    let schema = snap.parts[0].state["snapshot_schema"].as_str().map(str::to_string);
    let _ = stack.snapshot(SnapshotOptions::default()).await.unwrap();
    stack.gc(Some(1), None).await.unwrap();
    if let Some(s) = schema {
        let n: Option<u64> = c
            .query_first(format!("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{s}'"))
            .await
            .unwrap();
        assert_eq!(n, Some(0), "gc drops the snapshot schema");
    }
    drop_copies(&mut c, &stack).await;
    db.drop_all().await;
}

#[tokio::test]
async fn dump_round_trip_of_types_keys_and_a_migration() {
    round_trip("dump", "").await;
}

#[tokio::test]
async fn dump_round_trip_through_load_data_local_infile() {
    round_trip("dump", "load_data = true\nparallel = 1").await;
}

#[tokio::test]
async fn fast_round_trip_with_an_atomic_swap() {
    round_trip("fast", "").await;
}

/// Forward and back across a migration that adds an index and a column.
#[tokio::test]
async fn rollback_across_a_migration_and_forward_again() {
    let (db, mut c) = TestDb::new("migr").await;
    c.query_drop("CREATE TABLE orders (id INT PRIMARY KEY, sym VARCHAR(10), qty INT)").await.unwrap();
    c.query_drop("INSERT INTO orders VALUES (1, 'A', 1), (2, 'B', 2)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path(), &component(&db.name, "dump", "tables = [\"orders\"]"));
    let v1 = stack.snapshot(SnapshotOptions { label: Some("v1".into()), ..Default::default() }).await.unwrap();
    c.query_drop("ALTER TABLE orders ADD COLUMN side CHAR(1) NOT NULL DEFAULT 'B', ADD INDEX by_sym (sym), ADD UNIQUE INDEX u (sym, qty)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO orders VALUES (3, 'C', 3, 'S')").await.unwrap();
    let v2 = stack.snapshot(SnapshotOptions { label: Some("v2".into()), ..Default::default() }).await.unwrap();
    // An unrelated table outside `tables` is not touched.
    c.query_drop("CREATE TABLE other (id INT PRIMARY KEY)").await.unwrap();

    let rec = stack.rollback(&v1.id, RollbackOptions::default()).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{rec:?}");
    assert_eq!(indexes(&mut c, "orders").await, ["PRIMARY"]);
    let cols: Vec<String> = c
        .query("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'orders' ORDER BY ORDINAL_POSITION")
        .await
        .unwrap();
    assert_eq!(cols, ["id", "sym", "qty"]);
    let n: Option<u64> = c.query_first("SELECT COUNT(*) FROM other").await.unwrap();
    assert_eq!(n, Some(0), "`other` still exists");

    let rec = stack.rollback(&v2.id, RollbackOptions::default()).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{rec:?}");
    assert_eq!(indexes(&mut c, "orders").await, ["PRIMARY", "by_sym", "u"]);
    let side: Option<String> = c.query_first("SELECT side FROM orders WHERE id = 3").await.unwrap();
    assert_eq!(side.as_deref(), Some("S"));
    assert!(stack.verify(&v2.id, &[]).await.unwrap().ok);
    assert!(!stack.verify(&v1.id, &[]).await.unwrap().ok);
    db.drop_all().await;
}

/// A writer moves money between two tables in transactions while the snapshot runs;
/// the restored state keeps the invariant (the snapshot is one read view).
#[tokio::test]
async fn snapshot_is_consistent_while_writers_run() {
    for strategy in ["dump", "fast"] {
        let (db, mut c) = TestDb::new(&format!("cons{strategy}")).await;
        c.query_drop("CREATE TABLE checking (id INT PRIMARY KEY, bal BIGINT NOT NULL)").await.unwrap();
        c.query_drop("CREATE TABLE savings (id INT PRIMARY KEY, bal BIGINT NOT NULL)").await.unwrap();
        c.query_drop("INSERT INTO checking SELECT seq, 1000 FROM seq_1_to_20000").await.unwrap();
        c.query_drop("INSERT INTO savings SELECT seq, 1000 FROM seq_1_to_20000").await.unwrap();
        let total = 40_000_000i64;
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let wurl = url(&db.name);
        let writer = tokio::spawn(async move {
            let mut w = Conn::new(mysql_async::Opts::from_url(&wurl).unwrap()).await.unwrap();
            let mut n = 0u64;
            while !s2.load(Ordering::SeqCst) {
                let id = 1 + (n % 20_000);
                let amt = 1 + (n % 7) as i64;
                let r = async {
                    w.query_drop("START TRANSACTION").await?;
                    w.exec_drop("UPDATE checking SET bal = bal - ? WHERE id = ?", (amt, id)).await?;
                    w.exec_drop("UPDATE savings SET bal = bal + ? WHERE id = ?", (amt, id)).await?;
                    w.query_drop("COMMIT").await
                }
                .await;
                if r.is_err() {
                    let _ = w.query_drop("ROLLBACK").await;
                }
                n += 1;
            }
            n
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let dir = tempfile::tempdir().unwrap();
        let stack = stack(dir.path(), &component(&db.name, strategy, ""));
        let snap = stack.snapshot(SnapshotOptions::default()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, Ordering::SeqCst);
        let transfers = writer.await.unwrap();
        assert!(transfers > 10, "the writer ran ({transfers} transfers)");
        let rec =
            stack.rollback(&snap.id, RollbackOptions { no_safety_snapshot: true, ..Default::default() }).await.unwrap();
        assert_eq!(rec.status, Status::Succeeded, "{rec:?}");
        let sum: Option<i64> = c
            .query_first("SELECT CAST((SELECT SUM(bal) FROM checking) + (SELECT SUM(bal) FROM savings) AS SIGNED)")
            .await
            .unwrap();
        assert_eq!(sum, Some(total), "{strategy}: the invariant holds after the restore");
        if let Some(s) = snap.parts[0].state["snapshot_schema"].as_str() {
            c.query_drop(format!("DROP DATABASE IF EXISTS `{s}`")).await.unwrap();
        }
        db.drop_all().await;
    }
}

/// A rollback killed during the restore (its future dropped after the first table
/// is loaded) is finished by `resume`, and the scratch tables are gone.
#[tokio::test]
async fn killed_restore_resumes_to_a_verified_state() {
    let (db, mut c) = TestDb::new("resume").await;
    for t in ["a", "b", "c"] {
        c.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(50), KEY kv (v))")).await.unwrap();
        c.query_drop(format!("INSERT INTO {t} SELECT seq, CONCAT('row ', seq) FROM seq_1_to_30000")).await.unwrap();
    }
    let before = content(&mut c).await;
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path(), &component(&db.name, "dump", "parallel = 1"));
    let snap = stack.snapshot(SnapshotOptions::default()).await.unwrap();
    c.query_drop("DELETE FROM a WHERE id < 100").await.unwrap();
    c.query_drop("UPDATE c SET v = 'bad'").await.unwrap();

    let loaded = Arc::new(tokio::sync::Notify::new());
    let l2 = loaded.clone();
    let opts = RollbackOptions {
        on_event: Some(Arc::new(move |e: &rollback_core::Event| {
            if e.kind == "progress" && e.message.starts_with("loaded ") {
                l2.notify_one();
            }
        })),
        ..Default::default()
    };
    tokio::select! {
        r = stack.rollback(&snap.id, opts) => panic!("the rollback should have been killed first: {r:?}"),
        _ = loaded.notified() => {}
    }
    // Killed before the swap: the live tables are still the bad ones.
    let n: Option<u64> = c.query_first("SELECT COUNT(*) FROM a").await.unwrap();
    assert_eq!(n, Some(29_901));

    let rec = stack.resume("latest", None).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{rec:?}");
    assert!(rec.resumed);
    assert!(stack.verify(&snap.id, &[]).await.unwrap().ok);
    assert_eq!(content(&mut c).await, before, "no scratch table is left and the data is back");
    db.drop_all().await;
}

/// Driver level: a damaged data artifact is refused before anything is swapped.
#[tokio::test]
async fn damaged_dump_changes_nothing() {
    let (db, mut c) = TestDb::new("corrupt").await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)").await.unwrap();
    c.query_drop("INSERT INTO t SELECT seq, REPEAT('x', 100) FROM seq_1_to_1000").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = rollback_core::Store::open(dir.path().join("store")).unwrap();
    let cfg = ComponentConfig::new("db", "mysql").option("url", url(&db.name));
    let env = rollback_core::DriverEnv { base_dir: dir.path().into(), redactor: Default::default() };
    let d = Registry::with_default_drivers().build(&cfg, &env).unwrap();
    let ctx = Context::new("db", store.clone(), dir.path());
    let cap = d.capture(&ctx).await.unwrap();
    let part = rollback_core::Part {
        component: "db".into(),
        driver: "mysql".into(),
        phase: 1,
        state: cap.state,
        artifacts: cap.artifacts,
        capture_ms: 0,
    };
    c.query_drop("DELETE FROM t WHERE id > 10").await.unwrap();
    let path = store.artifact_path(&part.artifacts[0]).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] = b'y';
    std::fs::write(&path, bytes).unwrap();
    let e = d.restore(&ctx, &part).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    let n: Option<u64> = c.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(10), "nothing was swapped in");
    let left: Vec<String> =
        c.query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()").await.unwrap();
    assert_eq!(left, ["t"], "scratch tables are dropped");
    db.drop_all().await;
}

#[tokio::test]
async fn bad_targets_name_the_component_and_never_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "s3cret-Pa55word";
    let text = format!(
        "[store]\npath = \"{}\"\n\
         [[component]]\nname = \"gone\"\ndriver = \"mysql\"\nurl = \"mysql://root:{secret}@127.0.0.1:1/test\"\n\
         [[component]]\nname = \"wrongpw\"\ndriver = \"mysql\"\nurl = \"mysql://root:${{DB_PW}}@127.0.0.1:3306/test\"\n\
         [[component]]\nname = \"nodb\"\ndriver = \"mysql\"\nurl = \"{}\"\n",
        dir.path().join("store").display(),
        url("rbtest_does_not_exist_9f3a")
    );
    let cfg =
        StackConfig::from_toml_str(&text, None, dir.path(), &|k| (k == "DB_PW").then(|| secret.to_string())).unwrap();
    let stack = Stack::new(cfg, &Registry::with_default_drivers()).unwrap();
    for (name, kind) in
        [("gone", ErrorKind::Unreachable), ("wrongpw", ErrorKind::PermissionDenied), ("nodb", ErrorKind::NotFound)]
    {
        let e =
            stack.snapshot(SnapshotOptions { components: vec![name.into()], ..Default::default() }).await.unwrap_err();
        let m = e.to_string();
        assert!(m.contains(&format!("component `{name}`")), "{m}");
        assert!(!m.contains(secret) && !format!("{e:?}").contains(secret), "{m}");
        assert_eq!(e.kind(), kind, "{name}: {m}");
    }
    let report = stack.check().await.unwrap();
    let json = serde_json::to_string(&report).unwrap();
    assert!(!report.ok && !json.contains(secret), "{json}");
    assert!(json.contains("does not exist"), "{json}");
}

/// A snapshot that fails in another component leaves no `fast` copies behind: the
/// parts that were captured are released.
#[tokio::test]
async fn a_failed_snapshot_releases_the_copies_it_made() {
    let (db, mut c) = TestDb::new("failsnap").await;
    // A table name no other test uses: copy schemas are named at random and other tests
    // make and drop theirs concurrently, so only copies holding this table are ours.
    let table = format!("failsnap_{:08x}", rand::random::<u32>());
    c.query_drop(format!("CREATE TABLE {table} (id INT PRIMARY KEY)")).await.unwrap();
    c.query_drop(format!("INSERT INTO {table} VALUES (1), (2)")).await.unwrap();
    let copies = format!(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA LIKE '\\_rollback\\_%' AND TABLE_NAME = '{table}'"
    );
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "{}\n[[component]]\nname = \"broken\"\ndriver = \"command\"\ncapture = [\"sh\", \"-c\", \"sleep 1; exit 3\"]\nrestore = [\"true\"]\n",
        component(&db.name, "fast", "")
    );
    let s = stack(dir.path(), &body);
    let e = s.snapshot(SnapshotOptions::default()).await.unwrap_err();
    assert_eq!(e.component(), Some("broken"), "{e}");
    assert_eq!(
        c.query_first::<u64, _>(copies).await.unwrap().unwrap_or(0),
        0,
        "the snapshot and ready-copy schemas were dropped"
    );
    assert!(s.list().unwrap().is_empty());
    db.drop_all().await;
}

/// Every trigger of the database, as `SHOW CREATE TRIGGER` describes it (creation
/// time left out), in firing order per table, event and timing.
async fn triggers(c: &mut Conn) -> Vec<(String, String, u64, String, String)> {
    let names: Vec<(String, String, u64)> = c
        .query(
            "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_ORDER FROM information_schema.TRIGGERS \
             WHERE TRIGGER_SCHEMA = DATABASE() ORDER BY EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER",
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    for (name, table, order) in names {
        let row: Row = c.query_first(format!("SHOW CREATE TRIGGER `{name}`")).await.unwrap().unwrap();
        let sql_mode: String = row.get(1).unwrap();
        let statement: String = row.get(2).unwrap();
        out.push((name, table, order, sql_mode, statement));
    }
    out
}

async fn log_lines(c: &mut Conn) -> Vec<String> {
    c.query("SELECT msg FROM trigger_log ORDER BY id").await.unwrap()
}

/// Triggers go with the tables a restore renames away: the snapshot's come back,
/// identical and in their firing order; one a bad deploy added is gone and named in
/// the discards; verify compares them.
async fn triggers_round_trip(strategy: &str, extra: &str) {
    let (db, mut c) = TestDb::new(&format!("trg{strategy}")).await;
    c.query_drop("CREATE TABLE orders (id INT PRIMARY KEY, qty INT NOT NULL)").await.unwrap();
    c.query_drop(
        "CREATE TABLE trigger_log (id INT AUTO_INCREMENT PRIMARY KEY, msg VARCHAR(100) CHARACTER SET utf8mb4)",
    )
    .await
    .unwrap();
    c.query_drop(
        "CREATE TRIGGER orders_ai AFTER INSERT ON orders FOR EACH ROW \
         BEGIN INSERT INTO trigger_log (msg) VALUES (CONCAT('insert ', NEW.id, ' ☃')); END",
    )
    .await
    .unwrap();
    // Fires before orders_ai: the order must survive.
    c.query_drop(
        "CREATE TRIGGER orders_ai_first AFTER INSERT ON orders FOR EACH ROW PRECEDES orders_ai \
         INSERT INTO trigger_log (msg) VALUES ('first')",
    )
    .await
    .unwrap();
    c.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES'").await.unwrap();
    c.query_drop(
        "CREATE TRIGGER \"orders bu\" BEFORE UPDATE ON orders FOR EACH ROW \
         SET NEW.qty = GREATEST(NEW.qty, 0)",
    )
    .await
    .unwrap();
    c.query_drop("SET SESSION sql_mode = DEFAULT").await.unwrap();
    c.query_drop("INSERT INTO orders VALUES (1, 5)").await.unwrap();
    let before = triggers(&mut c).await;
    assert_eq!(before.len(), 3);

    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path(), &component(&db.name, strategy, extra));
    let snap = stack.snapshot(SnapshotOptions::default()).await.unwrap();
    assert!(stack.verify(&snap.id, &[]).await.unwrap().ok);

    // The bad deploy: one trigger dropped, one replaced, one added.
    c.query_drop("DROP TRIGGER orders_ai_first").await.unwrap();
    c.query_drop("DROP TRIGGER `orders bu`").await.unwrap();
    c.query_drop("CREATE TRIGGER `orders bu` BEFORE UPDATE ON orders FOR EACH ROW SET NEW.qty = 0").await.unwrap();
    c.query_drop("CREATE TRIGGER orders_bd BEFORE DELETE ON orders FOR EACH ROW SET @x = 1").await.unwrap();
    let v = stack.verify(&snap.id, &[]).await.unwrap();
    let text = v.components["db"].differences.join("\n");
    assert!(!v.ok);
    assert!(text.contains("trigger `orders_ai_first`") && text.contains("missing"), "{text}");
    assert!(text.contains("trigger `orders bu`"), "{text}");
    assert!(text.contains("trigger `orders_bd`"), "{text}");

    let plan = stack.plan(&snap.id, &Scope::Complete).await.unwrap();
    let added = plan.discards.iter().find(|d| d.target.contains("trigger `orders_bd`"));
    assert!(added.is_some(), "the added trigger is named in the discards: {:?}", plan.discards);
    assert!(plan.discards.iter().any(|d| d.target.contains("trigger `orders bu`")), "{:?}", plan.discards);

    let rec = stack.rollback(&snap.id, RollbackOptions::default()).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{rec:?}");
    assert!(rec.verification["db"].ok, "{rec:?}");
    assert!(rec.discarded.iter().any(|d| d.target.contains("trigger `orders_bd`")), "{:?}", rec.discarded);
    assert_eq!(triggers(&mut c).await, before, "the snapshot's triggers, identical, and no others");

    // They fire, in their order.
    c.query_drop("DELETE FROM trigger_log").await.unwrap();
    c.query_drop("INSERT INTO orders VALUES (2, 1)").await.unwrap();
    assert_eq!(log_lines(&mut c).await, ["first", "insert 2 ☃"]);
    c.query_drop("UPDATE orders SET qty = -3 WHERE id = 2").await.unwrap();
    let qty: Option<i64> = c.query_first("SELECT qty FROM orders WHERE id = 2").await.unwrap();
    assert_eq!(qty, Some(0));

    // verify sees a trigger dropped after the restore.
    c.query_drop("DROP TRIGGER orders_ai").await.unwrap();
    let v = stack.verify(&snap.id, &[]).await.unwrap();
    assert!(v.components["db"].differences.join("\n").contains("trigger `orders_ai`"), "{v:?}");

    drop_copies(&mut c, &stack).await;
    db.drop_all().await;
}

#[tokio::test]
async fn dump_restore_brings_back_the_snapshots_triggers() {
    triggers_round_trip("dump", "").await;
}

#[tokio::test]
async fn fast_restore_brings_back_the_snapshots_triggers() {
    triggers_round_trip("fast", "").await;
}

#[tokio::test]
async fn scoped_restore_brings_back_the_triggers_of_listed_tables() {
    triggers_round_trip("dump", "tables = [\"orders\"]").await;
}

/// A foreign key from a table the restore does not replace into one it does would
/// follow the renamed-away table: preflight refuses, naming the key and the fix.
#[tokio::test]
async fn preflight_refuses_a_foreign_key_from_outside_the_restored_tables() {
    let (db, mut c) = TestDb::new("fkin").await;
    c.query_drop("CREATE TABLE parent (id INT PRIMARY KEY)").await.unwrap();
    c.query_drop(
        "CREATE TABLE child (id INT PRIMARY KEY, parent_id INT NOT NULL, \
         CONSTRAINT child_parent FOREIGN KEY (parent_id) REFERENCES parent (id))",
    )
    .await
    .unwrap();
    c.query_drop("INSERT INTO parent VALUES (1), (2)").await.unwrap();
    c.query_drop("INSERT INTO child VALUES (1, 1)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path(), &component(&db.name, "dump", "tables = [\"parent\"]"));
    let snap = stack.snapshot(SnapshotOptions::default()).await.unwrap();
    c.query_drop("INSERT INTO parent VALUES (3)").await.unwrap();

    let e = stack.rollback(&snap.id, RollbackOptions::default()).await.unwrap_err();
    let m = e.to_string();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{m}");
    assert!(m.contains("`child`") && m.contains("`child_parent`") && m.contains("`parent`"), "{m}");
    assert!(m.contains("tables"), "the message says what to do: {m}");
    // Nothing was touched: the key still points at `parent` and is enforced.
    c.query_drop("INSERT INTO child VALUES (2, 3)").await.unwrap();
    assert!(c.query_drop("INSERT INTO child VALUES (3, 42)").await.is_err());

    // With the child listed too, the restore goes through and the key holds.
    let stack2 = stack_for(dir.path(), "s2", &component(&db.name, "dump", "tables = [\"parent\", \"child\"]"));
    let snap2 = stack2.snapshot(SnapshotOptions::default()).await.unwrap();
    c.query_drop("INSERT INTO parent VALUES (4)").await.unwrap();
    let rec = stack2.rollback(&snap2.id, RollbackOptions::default()).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{rec:?}");
    c.query_drop("INSERT INTO child VALUES (4, 1)").await.unwrap();
    assert!(c.query_drop("INSERT INTO child VALUES (5, 42)").await.is_err());

    // A key from another database into a whole-database scope is refused as well.
    let (other, mut o) = TestDb::new("fkout").await;
    o.query_drop(format!(
        "CREATE TABLE remote (id INT PRIMARY KEY, p INT, CONSTRAINT remote_parent FOREIGN KEY (p) REFERENCES `{}`.parent (id))",
        db.name
    ))
    .await
    .unwrap();
    let stack3 = stack_for(dir.path(), "s3", &component(&db.name, "dump", ""));
    let snap3 = stack3.snapshot(SnapshotOptions::default()).await.unwrap();
    let e = stack3.rollback(&snap3.id, RollbackOptions::default()).await.unwrap_err();
    let m = e.to_string();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{m}");
    assert!(m.contains(&other.name) && m.contains("`remote`") && m.contains("`remote_parent`"), "{m}");
    other.drop_all().await;
    db.drop_all().await;
}

/// MariaDB sequences and system-versioned tables are not restored by this driver:
/// capture and preflight refuse them by name instead of leaving them out.
#[tokio::test]
async fn sequences_and_system_versioned_tables_are_refused_by_name() {
    let (db, mut c) = TestDb::new("seqver").await;
    c.query_drop("CREATE TABLE plain (id INT PRIMARY KEY)").await.unwrap();
    c.query_drop("CREATE SEQUENCE order_ids").await.unwrap();
    c.query_drop("CREATE TABLE prices (id INT PRIMARY KEY, px INT) WITH SYSTEM VERSIONING").await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let whole = stack_for(dir.path(), "whole", &component(&db.name, "dump", ""));
    let e = whole.snapshot(SnapshotOptions::default()).await.unwrap_err();
    let m = e.to_string();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{m}");
    assert!(m.contains("sequence `order_ids`") && m.contains("`prices`") && m.contains("tables"), "{m}");

    let listed = stack_for(dir.path(), "listed", &component(&db.name, "fast", "tables = [\"prices\"]"));
    let e = listed.snapshot(SnapshotOptions::default()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("`prices`") && e.to_string().contains("system-versioned"), "{e}");
    let listed = stack_for(dir.path(), "listed2", &component(&db.name, "dump", "tables = [\"order_ids\"]"));
    let e = listed.snapshot(SnapshotOptions::default()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("sequence `order_ids`"), "{e}");

    // Outside `tables` they are not ours and stay as they are.
    let scoped = stack_for(dir.path(), "scoped", &component(&db.name, "dump", "tables = [\"plain\"]"));
    let snap = scoped.snapshot(SnapshotOptions::default()).await.unwrap();
    let rec = scoped.rollback(&snap.id, RollbackOptions::default()).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{rec:?}");
    let next: Option<u64> = c.query_first("SELECT NEXTVAL(order_ids)").await.unwrap();
    assert_eq!(next, Some(1));

    // One created after a whole-database snapshot is refused at preflight.
    c.query_drop("DROP SEQUENCE order_ids").await.unwrap();
    c.query_drop("ALTER TABLE prices DROP SYSTEM VERSIONING").await.unwrap();
    let snap = whole.snapshot(SnapshotOptions::default()).await.unwrap();
    c.query_drop("CREATE SEQUENCE late_ids").await.unwrap();
    let e = whole.rollback(&snap.id, RollbackOptions::default()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("sequence `late_ids`"), "{e}");
    db.drop_all().await;
}

/// Trigger names are unique per database: a snapshot trigger whose name is now taken
/// by a trigger on a table outside `tables` could not be created back after the swap.
/// Preflight refuses, naming it, before anything changes.
#[tokio::test]
async fn preflight_refuses_a_trigger_name_taken_outside_the_tables() {
    let (db, mut c) = TestDb::new("trgname").await;
    c.query_drop("CREATE TABLE orders (id INT PRIMARY KEY)").await.unwrap();
    c.query_drop("CREATE TABLE other (id INT PRIMARY KEY)").await.unwrap();
    c.query_drop("CREATE TRIGGER audit_it BEFORE INSERT ON orders FOR EACH ROW SET @seen = NEW.id").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path(), &component(&db.name, "dump", "tables = [\"orders\"]"));
    let snap = stack.snapshot(SnapshotOptions::default()).await.unwrap();
    c.query_drop("DROP TRIGGER audit_it").await.unwrap();
    c.query_drop("CREATE TRIGGER audit_it BEFORE INSERT ON other FOR EACH ROW SET @seen = NEW.id").await.unwrap();
    c.query_drop("INSERT INTO orders VALUES (1)").await.unwrap();

    let e = stack.rollback(&snap.id, RollbackOptions::default()).await.unwrap_err();
    let m = e.to_string();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{m}");
    assert!(m.contains("trigger `audit_it`") && m.contains("`other`"), "{m}");
    let n: Option<u64> = c.query_first("SELECT COUNT(*) FROM orders").await.unwrap();
    assert_eq!(n, Some(1), "nothing was restored");
    db.drop_all().await;
}

/// A writer the rollback does not know about (no component stops it) inserts one
/// row at a time as an ordinary account, reconnecting after each error, through a
/// rollback: every write it was told succeeded is in the restored database or in
/// the safety snapshot, and the server is writable again afterwards.
async fn an_unknown_writer_loses_no_acknowledged_write(strategy: &str) {
    let (db, mut c) = TestDb::new(&format!("fence{strategy}")).await;
    let user = TestUser(format!("rbw_{:08x}", rand::random::<u32>()));
    let user = &user.0;
    c.query_drop(format!(
        "CREATE USER '{user}'@'%'; CREATE USER '{user}'@'localhost'; \
         GRANT SELECT, INSERT ON `{d}`.* TO '{user}'@'%'; GRANT SELECT, INSERT ON `{d}`.* TO '{user}'@'localhost'",
        d = db.name
    ))
    .await
    .unwrap();
    c.query_drop("CREATE TABLE trades (id BIGINT PRIMARY KEY, note VARCHAR(200))").await.unwrap();
    c.query_drop("INSERT INTO trades SELECT seq, REPEAT('x', 200) FROM seq_1_to_60000").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = stack(dir.path(), &component(&db.name, strategy, ""));
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();

    let acked = Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let wurl = format!("mysql://{user}@127.0.0.1:3306/{}", db.name);
    let (a, r, st) = (acked.clone(), refused.clone(), stop.clone());
    let writer = tokio::spawn(async move {
        let mut id = 1_000_000i64;
        let mut conn: Option<Conn> = None;
        while !st.load(Ordering::SeqCst) {
            if conn.is_none() {
                match Conn::new(mysql_async::Opts::from_url(&wurl).unwrap()).await {
                    Ok(x) => conn = Some(x),
                    Err(_) => {
                        r.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
            }
            id += 1;
            match conn.as_mut().unwrap().exec_drop("INSERT INTO trades (id) VALUES (?)", (id,)).await {
                Ok(()) => a.lock().unwrap().push(id),
                Err(_) => {
                    r.fetch_add(1, Ordering::SeqCst);
                    conn = None;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    });
    let len = || acked.lock().unwrap().len();
    let t0 = std::time::Instant::now();
    while len() < 50 {
        assert!(t0.elapsed() < std::time::Duration::from_secs(30), "the writer cannot write before the rollback");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rec = s.rollback(&snap.id, RollbackOptions::default()).await.unwrap();
    let after = len();
    let t = std::time::Instant::now();
    while len() < after + 20 && t.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert_eq!(rec.status, Status::Succeeded, "{}", rec.to_json());
    let fence = rec.fences.iter().find(|f| f.component == "db").unwrap_or_else(|| panic!("{}", rec.to_json()));
    assert!(fence.error.is_none() && fence.how.contains("read-only"), "{fence:?}");
    assert!(refused.load(Ordering::SeqCst) > 0, "the fence refused the writer at least once");
    assert!(acked.len() >= after + 20, "the writer writes again once the fence is lifted");
    // Fences take turns on the lock: holding it, no other test's fence is up.
    let got: Option<u8> = c.query_first("SELECT GET_LOCK('rollback_write_fence', 120)").await.unwrap();
    assert_eq!(got, Some(1));
    let read_only: Option<u8> = c.query_first("SELECT @@GLOBAL.read_only").await.unwrap();
    c.query_drop("DO RELEASE_LOCK('rollback_write_fence')").await.unwrap();
    assert_eq!(read_only, Some(0), "the fence is lifted");

    let ids = |rows: Vec<i64>| rows.into_iter().collect::<std::collections::BTreeSet<_>>();
    let now = ids(c.query("SELECT id FROM trades").await.unwrap());
    let back = s.rollback(rec.safety_snapshot_id.as_deref().unwrap(), RollbackOptions::default()).await.unwrap();
    assert_eq!(back.status, Status::Succeeded, "{}", back.to_json());
    let kept = ids(c.query("SELECT id FROM trades").await.unwrap());
    let lost: Vec<_> = acked.iter().filter(|i| !now.contains(i) && !kept.contains(i)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes in neither the database nor the safety snapshot: {lost:?}",
        lost.len()
    );
    drop_copies(&mut c, &s).await;
    db.drop_all().await;
}

/// An account of the test's, dropped at the end whatever happens.
struct TestUser(String);

impl Drop for TestUser {
    fn drop(&mut self) {
        let user = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let mut root = Conn::new(mysql_async::Opts::from_url(&base_url()).unwrap()).await.unwrap();
                let _ = root.query_drop(format!("DROP USER IF EXISTS '{user}'@'%', '{user}'@'localhost'")).await;
            })
        })
        .join();
    }
}

#[tokio::test]
async fn dump_restore_fences_writers_it_does_not_know() {
    an_unknown_writer_loses_no_acknowledged_write("dump").await;
}

#[tokio::test]
async fn fast_restore_fences_writers_it_does_not_know() {
    an_unknown_writer_loses_no_acknowledged_write("fast").await;
}

/// Names a careless migration can make: a newline, quotes, backticks, a semicolon,
/// a non-ASCII letter, and the longest name MySQL allows (64 characters), in tables
/// and columns. Both strategies put them back as they were, and verify.
#[tokio::test]
async fn hostile_names_round_trip() {
    for strategy in ["dump", "fast"] {
        let (db, mut c) = TestDb::new(&format!("hostile{strategy}")).await;
        let odd = "new\nline \"q\" `bt` ;'ü";
        let col = "col\numn `x`";
        let long = "t".repeat(64);
        let q = |s: &str| format!("`{}`", s.replace('`', "``"));
        c.query_drop(format!("CREATE TABLE {} ({} INT PRIMARY KEY, {} TEXT)", q(odd), q(col), q("ü'q\"")))
            .await
            .unwrap();
        c.query_drop(format!("INSERT INTO {} VALUES (1, 'a'), (2, 'b\\nc')", q(odd))).await.unwrap();
        c.query_drop(format!("CREATE TABLE {} (id INT PRIMARY KEY)", q(&long))).await.unwrap();
        c.query_drop(format!("INSERT INTO {} VALUES (1), (2)", q(&long))).await.unwrap();
        let before = content(&mut c).await;
        let dir = tempfile::tempdir().unwrap();
        let s = stack(dir.path(), &component(&db.name, strategy, ""));
        let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();

        c.query_drop(format!("UPDATE {} SET {} = 'changed' WHERE {} = 1", q(odd), q("ü'q\""), q(col))).await.unwrap();
        c.query_drop(format!("INSERT INTO {} VALUES (3, 'new')", q(odd))).await.unwrap();
        c.query_drop(format!("DROP TABLE {}", q(&long))).await.unwrap();
        c.query_drop(format!("CREATE TABLE {} (id INT)", q("another\none"))).await.unwrap();
        let rec = s.rollback(&snap.id, RollbackOptions::default()).await.unwrap();
        assert_eq!(rec.status, Status::Succeeded, "{strategy}: {}", rec.to_json());
        assert!(rec.discarded.iter().any(|d| d.target.contains("new\nline") && d.changes > 0), "{:?}", rec.discarded);
        assert_eq!(content(&mut c).await, before, "{strategy}");
        assert!(s.verify(&snap.id, &[]).await.unwrap().ok, "{strategy}");
        drop_copies(&mut c, &s).await;
        db.drop_all().await;
    }
}

/// Columns a capture can miss: an INVISIBLE one (`SELECT *` does not return it), a
/// generated one (computed again, not loaded), a `DEFAULT CURRENT_TIMESTAMP` one and
/// an expression default. Their data comes back exactly, with both strategies.
#[tokio::test]
async fn invisible_generated_and_defaulted_columns_round_trip() {
    for strategy in ["dump", "fast"] {
        let (db, mut c) = TestDb::new(&format!("cols{strategy}")).await;
        c.query_drop(
            "CREATE TABLE t (id INT PRIMARY KEY, secret VARCHAR(20) INVISIBLE, qty INT, \
             twice INT AS (qty * 2) STORED, half INT AS (qty DIV 2) VIRTUAL, \
             at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), \
             tag VARCHAR(40) DEFAULT (concat('t-', 1 + 1)), doc JSON)",
        )
        .await
        .unwrap();
        c.query_drop(
            "INSERT INTO t (id, secret, qty, at, tag, doc) VALUES \
             (1, 'hidden-1', 10, '2026-01-02 03:04:05.123456', DEFAULT, '{\"a\": [1, 2]}'), \
             (2, 'hidden-2', 7, '2026-02-03 04:05:06.654321', 'x', NULL)",
        )
        .await
        .unwrap();
        let all = "SELECT id, secret, qty, twice, half, CAST(at AS CHAR), tag, doc FROM t ORDER BY id";
        type Row8 = (i32, Option<String>, i32, i32, i32, String, Option<String>, Option<String>);
        let before: Vec<Row8> = c.query(all).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let s = stack(dir.path(), &component(&db.name, strategy, ""));
        let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
        c.query_drop("UPDATE t SET secret = 'changed', qty = 1, tag = 'y' WHERE id = 1").await.unwrap();
        c.query_drop("DELETE FROM t WHERE id = 2").await.unwrap();
        let rec = s.rollback(&snap.id, RollbackOptions::default()).await.unwrap();
        assert_eq!(rec.status, Status::Succeeded, "{strategy}: {}", rec.to_json());
        let after: Vec<Row8> = c.query(all).await.unwrap();
        assert_eq!(after, before, "{strategy}");
        drop_copies(&mut c, &s).await;
        db.drop_all().await;
    }
}

/// Every kind of object a MariaDB/MySQL database holds, each with a property a
/// deploy can change (system-versioned tables and sequences are refused by name:
/// `sequences_and_system_versioned_tables_are_refused_by_name`).
const EVERY_KIND: &[&str] = &[
    "CREATE TABLE accounts (id INT PRIMARY KEY, owner VARCHAR(50) NOT NULL DEFAULT 'nobody',
       doc JSON, created TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, secret INT INVISIBLE DEFAULT 7,
       owner_len INT AS (CHAR_LENGTH(owner)) VIRTUAL, note TEXT, ratio FLOAT, FULLTEXT KEY ft_note (note)) ENGINE=InnoDB",
    "CREATE TABLE trades (id INT PRIMARY KEY, account INT, qty INT DEFAULT (1 + 1),
       CONSTRAINT trades_account FOREIGN KEY (account) REFERENCES accounts (id)) ENGINE=InnoDB",
    "CREATE TABLE places (id INT PRIMARY KEY, pos POINT NOT NULL, SPATIAL KEY sp_pos (pos)) ENGINE=InnoDB",
    "CREATE TABLE ticks (at DATE NOT NULL, v INT) PARTITION BY RANGE (YEAR(at))
       (PARTITION p2025 VALUES LESS THAN (2026), PARTITION p2026 VALUES LESS THAN (2027))",
    // A FLOAT the server prints with 6 significant digits (1234567 as 1234570).
    "INSERT INTO accounts (id, owner, doc, note, ratio) VALUES (1, 'ada', '{\"a\": [1, 2]}', 'long trading note', 1234567),
       (2, 'bob', NULL, NULL, 0.123456789)",
    "INSERT INTO trades VALUES (1, 1, 5), (2, 2, DEFAULT)",
    "INSERT INTO places VALUES (1, ST_GeomFromText('POINT(1 2)'))",
    "INSERT INTO ticks VALUES ('2025-06-01', 1), ('2026-06-01', 2)",
    "CREATE TRIGGER trades_qty BEFORE INSERT ON trades FOR EACH ROW SET NEW.qty = IF(NEW.qty = 0, 1, NEW.qty)",
    "CREATE VIEW big_trades AS SELECT id, qty FROM trades WHERE qty > 3",
    "CREATE VIEW big_trade_ids AS SELECT id FROM big_trades",
    "CREATE FUNCTION fee(p DECIMAL(10,2)) RETURNS DECIMAL(10,4) DETERMINISTIC RETURN p * 0.001",
    "CREATE PROCEDURE settle() MODIFIES SQL DATA UPDATE trades SET qty = qty",
    "CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DISABLE DO DELETE FROM ticks WHERE v < 0",
];

/// One change per kind, as a deploy would make it.
const CHANGES: &[(&str, &str)] = &[
    ("column default", "ALTER TABLE accounts ALTER COLUMN owner SET DEFAULT 'anon'"),
    ("json", "UPDATE accounts SET doc = JSON_SET(doc, '$.b', 3) WHERE id = 1"),
    ("float", "UPDATE accounts SET ratio = 1 WHERE id = 2"),
    ("invisible column", "ALTER TABLE accounts MODIFY secret INT INVISIBLE DEFAULT 8"),
    ("generated column", "ALTER TABLE accounts MODIFY owner_len INT AS (LENGTH(owner)) VIRTUAL"),
    ("fulltext key", "ALTER TABLE accounts DROP INDEX ft_note"),
    ("expression default", "ALTER TABLE trades ALTER COLUMN qty SET DEFAULT (2 + 2)"),
    ("foreign key", "ALTER TABLE trades DROP FOREIGN KEY trades_account"),
    ("spatial key", "ALTER TABLE places DROP INDEX sp_pos"),
    ("partition", "ALTER TABLE ticks ADD PARTITION (PARTITION p2027 VALUES LESS THAN (2028))"),
    ("trigger", "DROP TRIGGER trades_qty"),
    ("view", "CREATE OR REPLACE VIEW big_trades AS SELECT id, qty FROM trades WHERE qty > 4"),
    ("view added", "CREATE VIEW small_trades AS SELECT id FROM trades WHERE qty < 3"),
    ("view dropped", "DROP VIEW big_trade_ids"),
    ("function", "DROP FUNCTION fee"),
    ("function body", "DROP FUNCTION IF EXISTS fee; CREATE FUNCTION fee(p DECIMAL(10,2)) RETURNS DECIMAL(10,4) DETERMINISTIC RETURN p * 0.002"),
    ("procedure", "DROP PROCEDURE settle; CREATE PROCEDURE settle() MODIFIES SQL DATA UPDATE trades SET qty = qty + 0"),
    ("procedure added", "CREATE PROCEDURE wipe() MODIFIES SQL DATA DELETE FROM ticks"),
    ("event", "ALTER EVENT nightly ON SCHEDULE EVERY 2 DAY STARTS '2030-01-01 00:00:00'"),
    ("event added", "CREATE EVENT hourly ON SCHEDULE EVERY 1 HOUR STARTS '2030-01-01 00:00:00' DISABLE DO DELETE FROM ticks"),
];

/// The oracle: `SHOW CREATE` of every table, view, routine, event and trigger, and
/// `CHECKSUM TABLE` of every table.
async fn catalog_oracle(c: &mut Conn, db: &str) -> Vec<String> {
    let mut out = Vec::new();
    let list: Vec<(String, String)> = c
        .query(format!(
            "SELECT IF(TABLE_TYPE = 'VIEW', 'VIEW', 'TABLE'), TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}'
             UNION ALL SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '{db}'
             UNION ALL SELECT 'EVENT', EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '{db}'
             UNION ALL SELECT 'TRIGGER', TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{db}'
             ORDER BY 1, 2"
        ))
        .await
        .unwrap();
    for (kind, name) in list {
        let row: Row = c.query_first(format!("SHOW CREATE {kind} `{db}`.`{name}`")).await.unwrap().unwrap();
        let shown: Vec<String> = row
            .unwrap()
            .into_iter()
            .map(|v| match v {
                Value::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        // The trigger's creation time changes when it is created again; what it does does not.
        let shown = if kind == "TRIGGER" { shown[..6].join(" | ") } else { shown.join(" | ") };
        out.push(format!("{kind} {name}: {shown}"));
        if kind == "TABLE" {
            let sum: Row = c.query_first(format!("CHECKSUM TABLE `{db}`.`{name}`")).await.unwrap().unwrap();
            out.push(format!("CHECKSUM {name}: {:?}", sum.unwrap()[1]));
        }
    }
    out
}

async fn every_kind_round_trips(strategy: &str) {
    let (db, mut c) = TestDb::new(&format!("kinds_{strategy}")).await;
    for sql in EVERY_KIND {
        c.query_drop(*sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let before = catalog_oracle(&mut c, &db.name).await;
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path(), &component(&db.name, strategy, "fence = false"));
    let snap = stack.snapshot(SnapshotOptions::default()).await.unwrap();
    assert!(stack.verify(&snap.id, &[]).await.unwrap().ok);

    // Each change alone: verify sees it, the plan names what it throws away, and a
    // rollback puts the database back as the oracle saw it.
    let mut unseen = Vec::new();
    for (kind, sql) in CHANGES {
        for s in sql.split("; ") {
            c.query_drop(s).await.unwrap_or_else(|e| panic!("{kind}: {s}: {e}"));
        }
        if stack.verify(&snap.id, &[]).await.unwrap().ok {
            unseen.push(*kind);
        }
        let rec = stack.rollback(&snap.id, RollbackOptions::default()).await.unwrap();
        assert_eq!(rec.status, Status::Succeeded, "{strategy}, after the {kind} change: {rec:?}");
        assert_eq!(catalog_oracle(&mut c, &db.name).await, before, "{strategy}: the {kind} change is undone");
    }
    assert!(unseen.is_empty(), "{strategy}: verify called these changes equal: {unseen:?}");

    // All at once.
    for (kind, sql) in CHANGES {
        for s in sql.split("; ") {
            c.query_drop(s).await.unwrap_or_else(|e| panic!("{kind}: {s}: {e}"));
        }
    }
    let plan = stack.plan(&snap.id, &Scope::Complete).await.unwrap();
    let named: Vec<&str> = plan.discards.iter().map(|d| d.target.as_str()).collect();
    for target in ["view `small_trades`", "view `big_trades`", "procedure `wipe`", "event `hourly`"] {
        assert!(named.contains(&target), "{strategy}: the plan names {target}: {named:?}");
    }
    let rec = stack.rollback(&snap.id, RollbackOptions::default()).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{strategy}: {rec:?}");
    assert_eq!(catalog_oracle(&mut c, &db.name).await, before, "{strategy}");
    drop_copies(&mut c, &stack).await;
    db.drop_all().await;
}

#[tokio::test]
async fn dump_round_trips_every_object_kind_and_verify_sees_each_change() {
    every_kind_round_trips("dump").await;
}

#[tokio::test]
async fn fast_round_trips_every_object_kind_and_verify_sees_each_change() {
    every_kind_round_trips("fast").await;
}

/// A `fast` snapshot reads its tables in a read view and copies them through a
/// second connection: it takes no lock on the rows it copies, so a writer that locks
/// a row (`FOR UPDATE NOWAIT`) right after it was copied never finds it locked.
/// (The copy used to be `INSERT … SELECT` in one transaction: a shared lock on every
/// source row until the last table was copied; every such write here failed then.)
#[tokio::test]
async fn a_fast_snapshot_takes_no_lock_on_the_rows_writers_change() {
    let (db, mut c) = TestDb::new("nolock").await;
    c.query_drop("CREATE TABLE book (id INT PRIMARY KEY, v INT NOT NULL)").await.unwrap();
    c.query_drop("CREATE TABLE history (id INT PRIMARY KEY, pad CHAR(100) NOT NULL)").await.unwrap();
    c.query_drop("INSERT INTO book VALUES (1, 0), (2, 0)").await.unwrap();
    // Copied after `book` (tables go in name order): its rows stay locked meanwhile
    // with a locking copy.
    c.query_drop("INSERT INTO history SELECT a.seq * 1000 + b.seq, 'x' FROM seq_0_to_299 a, seq_0_to_999 b")
        .await
        .unwrap();
    // Other tests' write fences set the global `read_only`, which takes a lock that a
    // NOWAIT write also meets: take turns with them (as the fence itself does).
    let mut turn = Conn::new(mysql_async::Opts::from_url(&base_url()).unwrap()).await.unwrap();
    let _: Option<i64> = turn.query_first("SELECT GET_LOCK('rollback_write_fence', 300)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path(), &component(&db.name, "fast", "fence = false"));
    let s2 = stack.clone();
    let capture = tokio::spawn(async move { s2.snapshot(SnapshotOptions::default()).await });
    let (mut writes, mut blocked) = (0u32, Vec::new());
    while !capture.is_finished() {
        let r = async {
            c.query_drop("START TRANSACTION").await?;
            c.query_drop("SELECT v FROM book WHERE id = 1 FOR UPDATE NOWAIT").await?;
            c.query_drop("UPDATE book SET v = v + 1 WHERE id = 1").await?;
            c.query_drop("COMMIT").await
        }
        .await;
        match r {
            Ok(()) => writes += 1,
            Err(e) => {
                let _ = c.query_drop("ROLLBACK").await;
                blocked.push(e.to_string());
            }
        }
    }
    let snap = capture.await.unwrap().unwrap();
    assert!(
        blocked.is_empty(),
        "writes found their row locked by the snapshot: {} of {}: {:?}",
        blocked.len(),
        writes + blocked.len() as u32,
        blocked.first()
    );
    assert!(writes > 0, "the writer ran during the capture");
    // The copy is whole and consistent: verify after undoing the writer's changes.
    let v: u64 = c.query_first("SELECT v FROM book WHERE id = 1").await.unwrap().unwrap();
    assert!(v >= u64::from(writes));
    let rec = stack.rollback(&snap.id, RollbackOptions::default()).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{rec:?}");
    let n: u64 = c.query_first("SELECT COUNT(*) FROM history").await.unwrap().unwrap();
    assert_eq!(n, 300_000);
    let _ = turn.query_drop("DO RELEASE_LOCK('rollback_write_fence')").await;
    drop_copies(&mut c, &stack).await;
    db.drop_all().await;
}

/// A deploy that turned a table into a view (the table renamed, a view in its
/// place): the swap's RENAME failed with 1050 on the view. Now a whole-database
/// rollback moves the view aside in the same atomic RENAME and puts the table back;
/// the safety snapshot brings the view back. A rollback of listed tables, whose
/// safety snapshot keeps no views, is refused at preflight, naming the view.
#[tokio::test]
async fn a_table_turned_into_a_view_is_put_back() {
    for strategy in ["dump", "fast"] {
        let (db, mut c) = TestDb::new(&format!("view{strategy}")).await;
        c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO t VALUES (1, 'a'), (2, 'b')")
            .await
            .unwrap();
        let (dir, dir2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let s = stack(dir.path(), &component(&db.name, strategy, ""));
        let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
        let listed = stack(dir2.path(), &component(&db.name, strategy, "tables = [\"t\"]"));
        let lsnap = listed.snapshot(SnapshotOptions::default()).await.unwrap();
        c.query_drop("RENAME TABLE t TO t_v2; CREATE VIEW t AS SELECT id, v FROM t_v2").await.unwrap();
        let kind_sql = format!(
            "SELECT TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = 't'",
            db.name
        );

        let e = listed.rollback(&lsnap.id, RollbackOptions::default()).await.unwrap_err().to_string();
        assert!(e.contains("`t` is a view now") && e.contains("roll back the whole database"), "{e}");
        assert_eq!(
            c.query_first::<String, _>(&kind_sql).await.unwrap().as_deref(),
            Some("VIEW"),
            "refused: nothing changed"
        );

        let rec = s.rollback(&snap.id, RollbackOptions::default()).await.unwrap();
        assert_eq!(rec.status, Status::Succeeded, "{strategy}: {}", rec.to_json());
        assert_eq!(c.query_first::<String, _>(&kind_sql).await.unwrap().as_deref(), Some("BASE TABLE"));
        let rows: Vec<(i32, String)> = c.query("SELECT id, v FROM t ORDER BY id").await.unwrap();
        assert_eq!(rows, [(1, "a".to_string()), (2, "b".to_string())]);
        let left: Option<u64> = c
            .query_first(format!(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME LIKE '\\_rollback%'",
                db.name
            ))
            .await
            .unwrap();
        assert_eq!(left, Some(0), "the view moved aside is dropped");

        let back = s.rollback(rec.safety_snapshot_id.as_deref().unwrap(), RollbackOptions::default()).await.unwrap();
        assert_eq!(back.status, Status::Succeeded, "{strategy}: {}", back.to_json());
        assert_eq!(
            c.query_first::<String, _>(&kind_sql).await.unwrap().as_deref(),
            Some("VIEW"),
            "the safety snapshot has the view"
        );
        let n: Option<u64> = c.query_first("SELECT COUNT(*) FROM t").await.unwrap();
        assert_eq!(n, Some(2));
        drop_copies(&mut c, &s).await;
        drop_copies(&mut c, &listed).await;
        db.drop_all().await;
    }
}
