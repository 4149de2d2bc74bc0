//! The postgres driver against the real server (ROLLBACK_POSTGRES_URL, default
//! postgres://postgres@127.0.0.1:5432): every test makes its own database.
#![cfg(feature = "driver-postgres")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use rollback_core::{ErrorKind, RollbackPlan, Scope, SnapshotOptions, Stack, Status};
use tokio_postgres::{Client, NoTls};

fn base_url() -> String {
    std::env::var("ROLLBACK_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn url(db: &str) -> String {
    format!("{}/{db}", base_url().trim_end_matches('/'))
}

async fn connect(db: &str) -> Client {
    let (c, conn) = tokio_postgres::connect(&url(db), NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must run at {} for these tests: {e}", base_url()));
    tokio::spawn(conn);
    c
}

/// A scratch database, dropped (with the copies the fast strategy made of it) at the end.
struct TestDb {
    name: String,
}

impl TestDb {
    async fn new(tag: &str) -> TestDb {
        let name = format!("rbt_{tag}_{}_{:06x}", std::process::id(), rand_u32() & 0xff_ffff);
        connect("postgres").await.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
        TestDb { name }
    }
    async fn client(&self) -> Client {
        connect(&self.name).await
    }
    fn url(&self) -> String {
        url(&self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let c = connect("postgres").await;
                let rows = c
                    .query("SELECT datname::text FROM pg_database WHERE datname = $1 OR starts_with(datname, $1 || '__rb_')", &[&name])
                    .await
                    .unwrap();
                for r in rows {
                    let n: String = r.get(0);
                    let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{n}\" WITH (FORCE)")).await;
                }
            })
        })
        .join();
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    h.finish() as u32
}

fn pg_stack(dir: &std::path::Path, url: &str, extra: &str) -> Stack {
    stack(dir, &format!("[[component]]\nname = \"db\"\ndriver = \"postgres\"\nurl = \"{url}\"\n{extra}\n"))
}

/// Every row of every table as text, ordered: what "equal" means to a person.
async fn contents(c: &Client, tables: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for t in tables {
        for r in c.query(&format!("SELECT t::text FROM {t} t ORDER BY t::text"), &[]).await.unwrap() {
            out.push(format!("{t}: {}", r.get::<_, String>(0)));
        }
    }
    out
}

const WEIRD: &str = "x\"; DROP TABLE y; --";

async fn fixture(c: &Client) {
    c.batch_execute(
        r#"
        CREATE TABLE trades (
            id serial PRIMARY KEY,
            price numeric(20, 8) NOT NULL,
            meta jsonb,
            tags text[],
            levels int[],
            raw bytea,
            at timestamptz,
            note text
        );
        CREATE INDEX trades_at ON trades (at);
        CREATE TABLE fills (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                            trade_id int NOT NULL REFERENCES trades (id), qty numeric CHECK (qty > 0));
        CREATE VIEW big_trades AS SELECT id, price FROM trades WHERE price > 100;
        CREATE FUNCTION fee(p numeric) RETURNS numeric LANGUAGE sql IMMUTABLE AS $$ SELECT p * 0.001 $$;
        CREATE TABLE y (v text);
        INSERT INTO y VALUES ('keep me');
        CREATE TABLE "x""; DROP TABLE y; --" (k int PRIMARY KEY, "we""ird col" text);
        INSERT INTO "x""; DROP TABLE y; --" VALUES (1, 'a'), (2, NULL);
        INSERT INTO trades (price, meta, tags, levels, raw, at, note) VALUES
          (123.45678901, '{"side": "buy", "nested": {"a": [1, 2, null]}}', ARRAY['btc', 'ünïcødé ✓'], ARRAY[1, NULL, 3],
           '\x00ff10'::bytea, '2026-11-23 10:00:00.123456+05:30', 'first'),
          (0.00000001, 'null', '{}', NULL, '\x'::bytea, '-infinity', NULL),
          (99999999999.99999999, NULL, NULL, '{}', NULL, NULL, E'tab\there\nnewline \\ back"slash "quote'''),
          (1, '[]', ARRAY[NULL, ''], ARRAY[-2147483648, 2147483647], decode(repeat('ab', 5000), 'hex'), now(), '日本語 🚀');
        INSERT INTO fills (trade_id, qty) VALUES (1, 0.5), (1, 1.5), (3, 2);
    "#,
    )
    .await
    .unwrap();
}

const TABLES: &[&str] = &["trades", "fills", "y", "\"x\"\"; DROP TABLE y; --\""];

#[tokio::test]
async fn dump_round_trip_types_migration_sequences_and_discards() {
    let db = TestDb::new("dump").await;
    let c = db.client().await;
    fixture(&c).await;
    let before = contents(&c, TABLES).await;
    let (_t, dir) = tmp();
    let s = pg_stack(&dir, &db.url(), "");
    let snap = snap(&s).await;
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);

    // Data changes, sequence advances and a migration (column, index, table, view, function).
    c.batch_execute(
        r#"
        UPDATE trades SET price = price + 1, meta = '{"side": "sell"}' WHERE id = 1;
        DELETE FROM fills WHERE id = 3;
        INSERT INTO trades (price) SELECT g FROM generate_series(1, 50) g;
        INSERT INTO fills (trade_id, qty) VALUES (2, 7);
        ALTER TABLE trades ADD COLUMN venue text DEFAULT 'x';
        CREATE INDEX trades_price ON trades (price);
        CREATE TABLE orders (id int PRIMARY KEY, side text);
        INSERT INTO orders VALUES (1, 'buy'), (2, 'sell');
        CREATE OR REPLACE VIEW big_trades AS SELECT id, price, venue FROM trades WHERE price > 100;
        CREATE OR REPLACE FUNCTION fee(p numeric) RETURNS numeric LANGUAGE sql IMMUTABLE AS $$ SELECT p * 0.002 $$;
        DELETE FROM "x""; DROP TABLE y; --" WHERE k = 2;
    "#,
    )
    .await
    .unwrap();

    let v = s.verify(&snap.id, &[]).await.unwrap();
    assert!(!v.ok);
    let diffs = v.components["db"].differences.join("\n");
    assert!(diffs.contains("public.orders was created after the snapshot"), "{diffs}");
    assert!(diffs.contains("table public.trades: content differs"), "{diffs}");
    assert!(diffs.contains("schema:"), "{diffs}");

    let plan = s.plan(&snap.id, &Scope::Complete).await.unwrap();
    let by_target = |t: &str| plan.discards.iter().find(|d| d.target == t).map(|d| d.changes);
    // 50 rows inserted; the 4 older rows differ too since they gained a column.
    assert_eq!(by_target("table public.trades"), Some(54), "{:?}", plan.discards);
    assert_eq!(by_target("table public.fills"), Some(1), "{:?}", plan.discards);
    assert_eq!(by_target(&format!("table public.{WEIRD}")), Some(1), "{:?}", plan.discards);
    assert_eq!(by_target("table public.orders (created after the snapshot)"), Some(2), "{:?}", plan.discards);
    assert!(by_target("schema").unwrap() >= 3, "{:?}", plan.discards);
    assert!(plan.render().contains("public.orders"), "{}", plan.render());

    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert!(!r.data_loss, "the safety snapshot keeps what was discarded");
    assert!(r.discarded.iter().all(|d| d.kept_in_safety_snapshot));
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);

    let c = db.client().await;
    assert_eq!(contents(&c, TABLES).await, before);
    let cols: Vec<String> = c
        .query("SELECT column_name::text FROM information_schema.columns WHERE table_name = 'trades' ORDER BY ordinal_position", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(cols, ["id", "price", "meta", "tags", "levels", "raw", "at", "note"]);
    let idx: Vec<String> = c
        .query("SELECT indexname::text FROM pg_indexes WHERE tablename = 'trades' ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(idx, ["trades_at", "trades_pkey"]);
    assert!(c.query_opt("SELECT 1 FROM pg_class WHERE relname = 'orders'", &[]).await.unwrap().is_none());
    let fee: String = c.query_one("SELECT fee(1000)::text", &[]).await.unwrap().get(0);
    assert_eq!(fee, "1.000");
    let view_cols: i64 = c
        .query_one("SELECT count(*) FROM information_schema.columns WHERE table_name = 'big_trades'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(view_cols, 2);
    // Sequences are back where they were: the next ids follow the captured rows.
    let next: i32 = c.query_one("INSERT INTO trades (price) VALUES (5) RETURNING id", &[]).await.unwrap().get(0);
    assert_eq!(next, 5);
    let next: i64 =
        c.query_one("INSERT INTO fills (trade_id, qty) VALUES (1, 1) RETURNING id", &[]).await.unwrap().get(0);
    assert_eq!(next, 4);
    // Constraints are back.
    assert!(c.execute("INSERT INTO fills (trade_id, qty) VALUES (999, 1)", &[]).await.is_err());
    assert!(c.execute("INSERT INTO fills (trade_id, qty) VALUES (1, -1)", &[]).await.is_err());

    // What the rollback discarded can be read back: the safety snapshot restores it.
    let safety = r.safety_snapshot_id.clone().unwrap();
    let r2 = s.rollback(&safety, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r2.status, Status::Succeeded, "{}", r2.to_json());
    let c = db.client().await;
    let n: i64 = c.query_one("SELECT count(*) FROM orders", &[]).await.unwrap().get(0);
    assert_eq!(n, 2);
}

#[tokio::test]
async fn dump_is_consistent_while_writers_run() {
    dump_is_consistent_while_writers_run_with("jobs = 3").await;
}

/// Paced to about a second and a half for the 12 MB of `padding`: writers run all
/// through a longer capture, which must still read every table at one instant.
#[tokio::test]
async fn a_paced_dump_is_consistent_while_writers_run() {
    dump_is_consistent_while_writers_run_with("jobs = 3\nmax_rate = \"8MB\"").await;
}

async fn dump_is_consistent_while_writers_run_with(extra: &str) {
    let db = TestDb::new("load").await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
         CREATE TABLE transfers (id bigserial PRIMARY KEY, src int NOT NULL, dst int NOT NULL, amount bigint NOT NULL);
         CREATE TABLE padding (id int, filler text);
         INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, 2000) g;
         INSERT INTO padding SELECT g, repeat('p', 200) FROM generate_series(1, 60000) g;",
    )
    .await
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2u32 {
        let (stop, name) = (stop.clone(), db.name.clone());
        writers.push(tokio::spawn(async move {
            let c = connect(&name).await;
            let mut n = 0u64;
            let mut x = w.wrapping_mul(2_654_435_761).wrapping_add(12345);
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let (a, b) = (x % 2000 + 1, (x / 2000) % 2000 + 1);
                if a == b {
                    continue;
                }
                let (lo, hi) = (a.min(b) as i32, a.max(b) as i32);
                let amount = i64::from(x % 50 + 1);
                // Lock in id order so the two writers never deadlock.
                let sql = format!(
                    "BEGIN; UPDATE accounts SET balance = balance + CASE WHEN id = {lo} THEN -{amount} ELSE {amount} END
                       WHERE id IN ({lo}, {hi});
                     INSERT INTO transfers (src, dst, amount) VALUES ({lo}, {hi}, {amount}); COMMIT;"
                );
                c.batch_execute(&sql).await.unwrap();
                n += 1;
            }
            n
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (_t, dir) = tmp();
    let s = pg_stack(&dir, &db.url(), extra);
    let snap = snap(&s).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in writers {
        total += w.await.unwrap();
    }
    assert!(total > 0, "the writers ran");

    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    let c = db.client().await;
    let sum: i64 = c.query_one("SELECT sum(balance)::bigint FROM accounts", &[]).await.unwrap().get(0);
    assert_eq!(sum, 2000 * 1000);
    // Accounts and the transfer log were read at one instant (by different connections).
    let broken: i64 = c
        .query_one(
            "SELECT count(*) FROM accounts a WHERE balance <> 1000
               + coalesce((SELECT sum(amount) FROM transfers WHERE dst = a.id), 0)
               - coalesce((SELECT sum(amount) FROM transfers WHERE src = a.id), 0)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(broken, 0);
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
}

#[tokio::test]
async fn dump_scoped_to_schemas_and_tables() {
    let db = TestDb::new("scope").await;
    let c = db.client().await;
    c.batch_execute(
        r#"CREATE SCHEMA app; CREATE SCHEMA other;
           CREATE TABLE app.orders (id serial PRIMARY KEY, qty int);
           CREATE TABLE other.audit (id int);
           INSERT INTO app.orders (qty) VALUES (1), (2);
           INSERT INTO other.audit VALUES (1);
           CREATE TABLE y (v text); INSERT INTO y VALUES ('keep me');
           CREATE TABLE "x""; DROP TABLE y; --" (k int, v text); INSERT INTO "x""; DROP TABLE y; --" VALUES (1, 'a');"#,
    )
    .await
    .unwrap();
    let (_t, dir) = tmp();
    let schemas = pg_stack(&dir.join("a"), &db.url(), "schemas = [\"app\"]");
    let tables = pg_stack(&dir.join("b"), &db.url(), "tables = [\"x\\\"; DROP TABLE y; --\"]");
    let s1 = snap(&schemas).await;
    let s2 = snap(&tables).await;
    c.batch_execute(
        r#"INSERT INTO app.orders (qty) VALUES (3); ALTER TABLE app.orders ADD COLUMN px numeric;
           CREATE TABLE app.extra (id int);
           INSERT INTO other.audit VALUES (2);
           UPDATE "x""; DROP TABLE y; --" SET v = 'changed'; INSERT INTO y VALUES ('new');"#,
    )
    .await
    .unwrap();
    let r = schemas.rollback(&s1.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    let r = tables.rollback(&s2.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    let c = db.client().await;
    assert_eq!(contents(&c, &["app.orders"]).await, ["app.orders: (1,1)", "app.orders: (2,2)"]);
    assert!(c.query_opt("SELECT 1 FROM pg_tables WHERE tablename = 'extra'", &[]).await.unwrap().is_none());
    // Outside the scopes, changes stay.
    assert_eq!(contents(&c, &["other.audit"]).await.len(), 2);
    assert_eq!(contents(&c, &["y"]).await.len(), 2);
    assert_eq!(contents(&c, &["\"x\"\"; DROP TABLE y; --\""]).await, ["\"x\"\"; DROP TABLE y; --\": (1,a)"]);
    let next: i32 = c.query_one("INSERT INTO app.orders (qty) VALUES (9) RETURNING id", &[]).await.unwrap().get(0);
    assert_eq!(next, 3);

    // A view outside the scope over a scoped table: the restore would drop it, so it refuses
    // before changing anything.
    c.batch_execute("CREATE VIEW other.v AS SELECT * FROM app.orders; DELETE FROM app.orders WHERE id = 3;")
        .await
        .unwrap();
    let e = schemas.rollback(&s1.id, opts(Scope::Complete)).await.unwrap_err();
    assert!(e.to_string().contains("other.v"), "{e}");
    assert_eq!(e.component(), Some("db"));
    assert!(c.query_opt("SELECT 1 FROM pg_views WHERE viewname = 'v'", &[]).await.unwrap().is_some());
}

#[tokio::test]
async fn fast_strategy_swaps_a_template_copy_and_restores_repeatedly() {
    let db = TestDb::new("fast").await;
    let c = db.client().await;
    fixture(&c).await;
    let before = contents(&c, TABLES).await;
    drop(c);
    let (_t, dir) = tmp();
    let s = pg_stack(&dir, &db.url(), "strategy = \"fast\"");
    let snap = snap(&s).await;
    let copy = snap.parts[0].state["copy_db"].as_str().unwrap().to_string();
    assert!(copy.starts_with(&db.name));
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);

    for round in 0..2 {
        let c = db.client().await;
        c.batch_execute(
            "UPDATE trades SET price = 7 WHERE id = 2; ALTER TABLE trades ADD COLUMN venue text;
             CREATE TABLE orders (id int); INSERT INTO orders VALUES (1), (2), (3);",
        )
        .await
        .unwrap();
        let plan = s.plan(&snap.id, &Scope::Complete).await.unwrap();
        assert!(plan.steps.iter().any(|st| st.description.contains("END EVERY SESSION")), "{}", plan.render());
        assert!(
            plan.discards.iter().any(|d| d.target == "table public.trades" && d.changes == 4),
            "{:?}",
            plan.discards
        );
        assert!(
            plan.discards.iter().any(|d| d.target.contains("public.orders") && d.changes == 3),
            "{:?}",
            plan.discards
        );
        // `c` stays connected: the restore ends its session.
        let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
        assert_eq!(r.status, Status::Succeeded, "round {round}: {}", r.to_json());
        assert!(c.query_one("SELECT 1", &[]).await.is_err(), "the old session was ended");
        let c = db.client().await;
        assert_eq!(contents(&c, TABLES).await, before);
        let next: i32 = c.query_one("INSERT INTO trades (price) VALUES (5) RETURNING id", &[]).await.unwrap().get(0);
        assert_eq!(next, 5);
        c.batch_execute("DELETE FROM trades WHERE id = 5").await.unwrap();
        assert!(s.verify(&snap.id, &[]).await.unwrap().ok, "sequence values are not content");
        c.batch_execute("DELETE FROM fills WHERE id = 1").await.unwrap();
        let v = s.verify(&snap.id, &[]).await.unwrap();
        assert_eq!(
            v.components["db"].differences,
            ["table public.fills: content differs (2 rows now, 3 in the snapshot)"]
        );
    }
    let c = connect("postgres").await;
    let leftovers: i64 = c
        .query_one("SELECT count(*) FROM pg_database WHERE datname = $1 || '__rb_new'", &[&db.name])
        .await
        .unwrap()
        .get(0);
    assert_eq!(leftovers, 0);
    // The replaced database stays readable until the next snapshot or restore.
    let old = connect(&format!("{}__rb_old", db.name)).await;
    let n: i64 = old.query_one("SELECT count(*) FROM orders", &[]).await.unwrap().get(0);
    assert_eq!(n, 3);
    drop(old);
    // gc frees the server-side copy.
    let driver = s.driver("db").unwrap();
    let ctx = rollback_core::Context::new("db", s.store().clone(), &dir);
    driver.release(&ctx, &snap.parts[0]).await.unwrap();
    assert!(c.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&copy]).await.unwrap().is_none());
    let e = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap_err();
    assert!(e.to_string().contains("no longer exists"), "{e}");
}

#[tokio::test]
async fn fast_strategy_without_createdb_is_a_clear_error() {
    let db = TestDb::new("nocreatedb").await;
    let role = format!("{}_r", db.name);
    let admin = connect("postgres").await;
    admin.batch_execute(&format!("CREATE ROLE \"{role}\" LOGIN NOCREATEDB")).await.unwrap();
    let u = base_url().replacen("postgres@", &format!("{role}@"), 1);
    let (_t, dir) = tmp();
    let s = pg_stack(&dir, &format!("{u}/{}", db.name), "strategy = \"fast\"");
    let e = s.snapshot(SnapshotOptions::default()).await.unwrap_err();
    admin.batch_execute(&format!("DROP ROLE \"{role}\"")).await.unwrap();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert_eq!(e.component(), Some("db"));
    assert!(e.to_string().contains("CREATEDB"), "{e}");
}

/// The progress of each copy says whether it was paced: a snapshot is, the safety
/// snapshot of a rollback is not (its writers are fenced: pacing would only keep
/// them out longer).
#[tokio::test]
async fn max_rate_paces_snapshots_but_not_a_rollbacks_safety_snapshot() {
    let db = TestDb::new("paced").await;
    db.client()
        .await
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 2000);")
        .await
        .unwrap();
    let (_t, dir) = tmp();
    let s = pg_stack(&dir, &db.url(), "max_rate = \"1MB\"");
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let cb = {
        let seen = seen.clone();
        Arc::new(move |e: &rollback_core::Event| seen.lock().unwrap().push(e.message.clone()))
            as rollback_core::EventCallback
    };
    let snap = s.snapshot(SnapshotOptions { on_event: Some(cb.clone()), ..Default::default() }).await.unwrap();
    let copied: Vec<String> =
        std::mem::take(&mut *seen.lock().unwrap()).into_iter().filter(|m| m.contains("copied")).collect();
    assert!(!copied.is_empty() && copied.iter().all(|m| m.contains("paced at 1.0 MB a second")), "{copied:?}");

    db.client().await.batch_execute("INSERT INTO t VALUES (-1)").await.unwrap();
    let r = s
        .rollback(&snap.id, rollback_core::RollbackOptions { on_event: Some(cb), ..opts(Scope::Complete) })
        .await
        .unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    let copied: Vec<String> = seen.lock().unwrap().iter().filter(|m| m.contains("copied")).cloned().collect();
    assert!(!copied.is_empty() && copied.iter().all(|m| !m.contains("paced")), "{copied:?}");
}

#[test]
fn a_bad_max_rate_is_refused_naming_the_key() {
    let (_t, dir) = tmp();
    for (extra, says) in [
        ("max_rate = \"fast\"", "is not a rate"),
        ("max_rate = \"8kB\"", "outside 32kB to 1GB"),
        ("strategy = \"fast\"\nmax_rate = \"20MB\"", "`fast` copies inside the server"),
    ] {
        let toml = format!("[[component]]\nname = \"db\"\ndriver = \"postgres\"\nurl = \"{}\"\n{extra}\n", url("x"));
        let cfg = rollback_core::StackConfig::from_toml_str(&toml, None, &dir, &|_| None).unwrap();
        let e = Stack::new(cfg, &rollback_core::Registry::with_default_drivers()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid, "{e}");
        assert!(e.to_string().contains("max_rate") && e.to_string().contains(says), "{extra}: {e}");
    }
}

#[tokio::test]
async fn bad_targets_are_named_and_never_show_the_password() {
    const PW: &str = "S3cretPassw0rd";
    let (_t, dir) = tmp();
    let cases = [
        ("postgres://postgres:S3cretPassw0rd@127.0.0.1:1/trading".to_string(), "127.0.0.1:1"),
        (format!("postgres://postgres:{PW}@127.0.0.1:5432/rbt_missing_{}", std::process::id()), "does not exist"),
        (format!("postgres://no_such_role_rbt:{PW}@127.0.0.1:5432/postgres"), "no_such_role_rbt"),
    ];
    for (i, (u, needle)) in cases.iter().enumerate() {
        let s = pg_stack(&dir.join(i.to_string()), u, "");
        let e = s.snapshot(SnapshotOptions::default()).await.unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.component(), Some("db"), "{msg}");
        assert!(msg.contains(needle), "{msg}");
        assert!(!msg.contains(PW), "{msg}");
        let chk = s.check().await.unwrap();
        assert!(!chk.ok);
        assert!(!serde_json::to_string(&chk).unwrap().contains(PW));
    }

    // A good snapshot with a password in the URL: neither manifest nor record holds it; a
    // rollback whose server is unreachable changes nothing.
    let db = TestDb::new("secret").await;
    db.client().await.batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1);").await.unwrap();
    let with_pw = db.url().replacen("postgres@", &format!("postgres:{PW}@"), 1);
    let d = dir.join("ok");
    let s = pg_stack(&d, &with_pw, "");
    let snap = snap(&s).await;
    assert!(!serde_json::to_string(&snap).unwrap().contains(PW));
    let chk = s.check().await.unwrap();
    assert!(chk.ok, "{chk:?}");
    assert!(chk.components["db"].detail.contains("1 tables in scope"), "{chk:?}");
    db.client().await.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded);
    assert!(!r.to_json().contains(PW));
    for e in std::fs::read_dir(d.join(".rollback/snapshots")).unwrap() {
        assert!(!std::fs::read_to_string(e.unwrap().path()).unwrap().contains(PW));
    }
    db.client().await.batch_execute("INSERT INTO t VALUES (3)").await.unwrap();
    let unreachable = pg_stack(&d, "postgres://postgres:S3cretPassw0rd@127.0.0.1:1/x", "");
    let e = unreachable.rollback(&snap.id, opts(Scope::Complete)).await.unwrap_err();
    assert!(!e.to_string().contains(PW), "{e}");
    assert_eq!(e.component(), Some("db"));
    assert_eq!(contents(&db.client().await, &["t"]).await.len(), 2, "nothing changed");
}

#[tokio::test]
async fn a_rollback_killed_mid_restore_changes_nothing_and_resumes_to_a_verified_state() {
    let db = TestDb::new("kill").await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE a_small (id int PRIMARY KEY); INSERT INTO a_small VALUES (1), (2);
         CREATE TABLE big (id int PRIMARY KEY, v text);
         INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 150000) g;",
    )
    .await
    .unwrap();
    let (_t, dir) = tmp();
    let s = pg_stack(&dir, &db.url(), "");
    let snap = snap(&s).await;
    c.batch_execute("DELETE FROM a_small; DELETE FROM big WHERE id % 2 = 0; CREATE TABLE after (id int);")
        .await
        .unwrap();

    // Kill the rollback (drop its future, as a crash would end the process) once the
    // restore transaction has loaded its first table.
    let loaded = Arc::new(tokio::sync::Notify::new());
    let cb: rollback_core::EventCallback = {
        let loaded = loaded.clone();
        Arc::new(move |e: &rollback_core::Event| {
            if e.kind == "progress" && e.message.starts_with("loaded public.a_small") {
                loaded.notify_one();
            }
        })
    };
    let task = {
        let (s, id) = (s.clone(), snap.id.clone());
        tokio::spawn(async move {
            s.rollback(&id, rollback_core::RollbackOptions { on_event: Some(cb), ..opts(Scope::Complete) }).await
        })
    };
    loaded.notified().await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());

    // The restore's transaction never committed: the database is as the rollback found it.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let c = db.client().await;
    let n: i64 = c.query_one("SELECT count(*) FROM big", &[]).await.unwrap().get(0);
    assert_eq!(n, 75000);
    assert!(c.query_opt("SELECT 1 FROM pg_class WHERE relname = 'after'", &[]).await.unwrap().is_some());

    let r = s.resume("latest", None).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert!(r.resumed);
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
    // `resume` raised the fence again, which ended every other session, this one too.
    assert!(c.is_closed());
    let c = db.client().await;
    let n: i64 = c.query_one("SELECT count(*) FROM big", &[]).await.unwrap().get(0);
    assert_eq!(n, 150000);
}

/// A drill writes a table the snapshot lacks, rolls back and verifies: with both
/// strategies the table is gone afterwards and the data is the snapshot's.
#[tokio::test]
async fn drill_perturbs_and_restores_with_both_strategies() {
    for strategy in ["dump", "fast"] {
        let db = TestDb::new(&format!("drill{strategy}")).await;
        let c = db.client().await;
        fixture(&c).await;
        let before = contents(&c, TABLES).await;
        drop(c);
        let (_t, dir) = tmp();
        let s = pg_stack(&dir, &db.url(), &format!("strategy = \"{strategy}\""));
        let r = s.drill(opts(Scope::Complete)).await.unwrap();
        assert_eq!(r.status, Status::Succeeded, "{strategy}: {}", r.to_json());
        assert!(r.notes.iter().any(|n| n.contains("created table public.rollback_drill")), "{strategy}: {:?}", r.notes);
        assert!(
            r.discarded.iter().any(|d| d.target.contains("public.rollback_drill")),
            "{strategy}: the drill's table is what the restore discards: {:?}",
            r.discarded
        );
        let c = db.client().await;
        let n: i64 =
            c.query_one("SELECT count(*) FROM pg_tables WHERE tablename = 'rollback_drill'", &[]).await.unwrap().get(0);
        assert_eq!(n, 0, "{strategy}: the drill table is gone");
        assert_eq!(contents(&c, TABLES).await, before, "{strategy}");
        // Dropping `db` drops the fast strategy's copies too (`<db>__rb_*`).
    }
}

/// A snapshot in the format of earlier builds (plain COPY artifacts, no `data` field)
/// still restores: made here from a new one by decompressing its data artifacts.
#[tokio::test]
async fn a_snapshot_with_uncompressed_data_still_restores() {
    let db = TestDb::new("legacy").await;
    let c = db.client().await;
    fixture(&c).await;
    let before = contents(&c, TABLES).await;
    let (_t, dir) = tmp();
    let s = pg_stack(&dir, &db.url(), "");
    let snap = snap(&s).await;
    let mut part = snap.parts[0].clone();
    assert_eq!(part.state["data"], "copy_lz4");
    part.state.as_object_mut().unwrap().remove("data");
    for t in part.state["tables"].as_array_mut().unwrap() {
        let old = t["artifact"].as_str().unwrap().to_string();
        let a = snap.parts[0].artifacts.iter().find(|a| a.name == old).unwrap();
        let mut plain = Vec::new();
        let packed = s.store().read_artifact(a).unwrap();
        std::io::Read::read_to_end(&mut lz4_flex::frame::FrameDecoder::new(&packed[..]), &mut plain).unwrap();
        let name = old.trim_end_matches(".lz4").to_string();
        part.artifacts.push(s.store().put_bytes(name.clone(), &plain).unwrap());
        t["artifact"] = name.into();
    }
    c.batch_execute("DELETE FROM fills; UPDATE trades SET price = 0").await.unwrap();
    let driver = s.driver("db").unwrap();
    let ctx = rollback_core::Context::new("db", s.store().clone(), &dir);
    driver.restore(&ctx, &part).await.unwrap();
    assert!(driver.verify(&ctx, &part).await.unwrap().ok);
    let c = db.client().await;
    assert_eq!(contents(&c, TABLES).await, before);
}

/// A `schemas` scope whose types, functions and sequences are used outside it: the
/// restore's DROP SCHEMA … CASCADE would take the outside column, view and default
/// with it, and the safety snapshot (the scope only) could not bring them back. The
/// preflight refuses, naming each outside object, what it depends on and the fix.
#[tokio::test]
async fn schemas_scope_refuses_when_outside_objects_use_its_types_functions_or_sequences() {
    let db = TestDb::new("scopedeps").await;
    let c = db.client().await;
    c.batch_execute(
        r#"CREATE SCHEMA app; CREATE SCHEMA other;
           CREATE TYPE app.side AS ENUM ('buy', 'sell');
           CREATE FUNCTION app.fee(p numeric) RETURNS numeric LANGUAGE sql IMMUTABLE AS $$ SELECT p * 0.001 $$;
           CREATE SEQUENCE app.ids;
           CREATE TABLE app.orders (id int PRIMARY KEY DEFAULT nextval('app.ids'), side app.side);
           INSERT INTO app.orders (side) VALUES ('buy'), ('sell');
           CREATE TABLE other.fills (id int DEFAULT nextval('app.ids'), side app.side, note text);
           INSERT INTO other.fills (side, note) VALUES ('sell', 'kept');
           CREATE VIEW other.fees AS SELECT app.fee(100) AS fee;"#,
    )
    .await
    .unwrap();
    let (_t, dir) = tmp();
    let s = pg_stack(&dir, &db.url(), "schemas = [\"app\"]");
    let snap = snap(&s).await;
    c.batch_execute("INSERT INTO app.orders (side) VALUES ('buy')").await.unwrap();
    let fills_before = contents(&c, &["other.fills"]).await;

    let e = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{msg}");
    assert_eq!(e.component(), Some("db"));
    for needle in [
        "column side of table other.fills",
        "type app.side",
        "default value for column id of table other.fills",
        "sequence app.ids",
        "view other.fees",
        "function app.fee(numeric)",
        "`schemas`",
        "other",
    ] {
        assert!(msg.contains(needle), "`{needle}` not in: {msg}");
    }
    // Nothing changed: the outside objects, and the scope's newer row, are all there.
    assert_eq!(contents(&c, &["other.fills"]).await, fills_before);
    assert!(c.query_opt("SELECT 1 FROM pg_views WHERE viewname = 'fees'", &[]).await.unwrap().is_some());
    assert_eq!(contents(&c, &["app.orders"]).await.len(), 3);
}

/// A database with a publication rolls back (the restore re-creates it with its
/// tables instead of failing on "already exists"), and an extension created in a
/// scoped schema comes back with the scope.
#[tokio::test]
async fn publications_and_extensions_in_a_scoped_schema_round_trip() {
    let db = TestDb::new("pubext").await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');
         CREATE TABLE u (id int PRIMARY KEY);
         CREATE PUBLICATION pub FOR TABLE t;
         CREATE SCHEMA app; CREATE EXTENSION citext SCHEMA app;
         CREATE TABLE app.users (name app.citext PRIMARY KEY); INSERT INTO app.users VALUES ('Alice');",
    )
    .await
    .unwrap();
    let publications = "SELECT p.pubname || ':' || coalesce(string_agg(r.prrelid::regclass::text, ',' ORDER BY 1), '')
                          FROM pg_publication p LEFT JOIN pg_publication_rel r ON r.prpubid = p.oid GROUP BY p.pubname";
    let (_t, dir) = tmp();
    let whole = pg_stack(&dir.join("a"), &db.url(), "");
    let scoped = pg_stack(&dir.join("b"), &db.url(), "schemas = [\"app\"]");
    let s1 = snap(&whole).await;
    let s2 = snap(&scoped).await;

    c.batch_execute(
        "INSERT INTO t VALUES (2, 'b'); ALTER PUBLICATION pub ADD TABLE u; INSERT INTO app.users VALUES ('Bob');",
    )
    .await
    .unwrap();
    let r = whole.rollback(&s1.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    let c = db.client().await;
    let p: Vec<String> = c.query(publications, &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(p, ["pub:t"], "the snapshot's publication, with the snapshot's tables");
    assert_eq!(contents(&c, &["t", "app.users"]).await, ["t: (1,a)", "app.users: (Alice)"]);

    c.batch_execute("INSERT INTO app.users VALUES ('Carol'); DROP PUBLICATION pub;").await.unwrap();
    let r = scoped.rollback(&s2.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    let c = db.client().await;
    assert_eq!(contents(&c, &["app.users"]).await, ["app.users: (Alice)"]);
    let ext: String = c
        .query_one("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'citext'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ext, "app");
    // citext compares without case: the type is the extension's, not a stand-in.
    let n: i64 =
        c.query_one("SELECT count(*) FROM app.users WHERE name OPERATOR(app.=) 'ALICE'", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
    assert!(scoped.verify(&s2.id, &[]).await.unwrap().ok);
}

/// What `ALTER DATABASE`, `GRANT … ON DATABASE` and `COMMENT ON DATABASE` set: the
/// owner, the grants (grantee, privilege, grant option), the connection limit, the
/// comment and the settings (per database and per role in the database).
async fn database_properties(admin: &Client, db: &str) -> Vec<String> {
    let mut out: Vec<String> = admin
        .query(
            "SELECT 'owner ' || pg_get_userbyid(d.datdba) || ' limit ' || d.datconnlimit || ' allowconn '
                    || d.datallowconn || ' comment ' || coalesce(shobj_description(d.oid, 'pg_database'), '-')
               FROM pg_database d WHERE d.datname = $1
             UNION ALL
             SELECT 'grant ' || CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END
                    || ' ' || a.privilege_type || ' ' || a.is_grantable
               FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
              WHERE d.datname = $1
             UNION ALL
             SELECT 'setting ' || coalesce(pg_get_userbyid(nullif(s.setrole, 0)), '*') || ' ' || c
               FROM pg_database d JOIN pg_db_role_setting s ON s.setdatabase = d.oid, unnest(s.setconfig) c
              WHERE d.datname = $1",
            &[&db],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    out.sort();
    out
}

/// A fast restore keeps the database's grants, settings, connection limit, comment and
/// owner; the copies it keeps on the server take no connections, and the replaced
/// database kept as `__rb_old` only its owner's (and superusers').
#[tokio::test]
async fn fast_restore_keeps_database_grants_settings_and_locks_its_copies() {
    let tag = format!("rbt_fastacl_{}_{:06x}", std::process::id(), rand_u32() & 0xff_ffff);
    let (owner, reader) = (format!("{tag}_o"), format!("{tag}_u"));
    let roles = TestRoles(vec![reader.clone(), owner.clone()]);
    let db = TestDb::new("fastacl").await;
    let admin = connect("postgres").await;
    let d = &db.name;
    admin
        .batch_execute(&format!(
            r#"CREATE ROLE "{owner}"; CREATE ROLE "{reader}" LOGIN;
               ALTER DATABASE "{d}" OWNER TO "{owner}";
               REVOKE CONNECT, TEMPORARY ON DATABASE "{d}" FROM PUBLIC;
               GRANT CONNECT ON DATABASE "{d}" TO "{reader}" WITH GRANT OPTION;
               ALTER DATABASE "{d}" SET work_mem = '7MB';
               ALTER DATABASE "{d}" SET search_path = app, "$user", public;
               ALTER DATABASE "{d}" SET application_name = 'it''s a \ name';
               ALTER ROLE "{reader}" IN DATABASE "{d}" SET statement_timeout = '5s';
               ALTER DATABASE "{d}" CONNECTION LIMIT 42;
               COMMENT ON DATABASE "{d}" IS 'trading: it''s production';"#
        ))
        .await
        .unwrap();
    db.client().await.batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1);").await.unwrap();
    let props = database_properties(&admin, d).await;
    assert!(props.iter().any(|p| p.contains("statement_timeout=5s")), "{props:?}");

    let (_t, dir) = tmp();
    let s = pg_stack(&dir, &db.url(), "strategy = \"fast\"");
    let snap = snap(&s).await;
    db.client().await.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert_eq!(database_properties(&admin, d).await, props, "the restored database's own properties");
    assert_eq!(contents(&db.client().await, &["t"]).await, ["t: (1)"]);
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok, "verify still reads the kept copy");

    // Every `__rb_*` database: no connection for a role that may connect to the live one.
    let copies: Vec<(String, bool)> = admin
        .query("SELECT datname::text, datallowconn FROM pg_database WHERE starts_with(datname, $1 || '__rb_')", &[&d])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(copies.len() >= 4, "snapshot copy, safety copy and its spare, the replaced database: {copies:?}");
    for (copy, allowconn) in &copies {
        let may: bool =
            admin.query_one("SELECT has_database_privilege($1, $2, 'CONNECT')", &[&reader, copy]).await.unwrap().get(0);
        assert!(!may, "{reader} may connect to {copy}");
        assert_eq!(*allowconn, copy.ends_with("__rb_old"), "{copy}: only the replaced database is readable");
    }
    let as_reader = tokio_postgres::connect(
        &base_url().replacen("postgres@", &format!("{reader}@"), 1).to_string().add_db(&format!("{d}__rb_old")),
        NoTls,
    )
    .await;
    assert!(as_reader.is_err(), "{reader} connected to the replaced database");
    drop(db);
    drop(roles);
}

/// Roles a test made, dropped at its end (declared before the test's database, which
/// a role may own, so that the database goes first).
struct TestRoles(Vec<String>);

impl Drop for TestRoles {
    fn drop(&mut self) {
        let roles = std::mem::take(&mut self.0);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let c = connect("postgres").await;
                for r in roles {
                    let _ = c.batch_execute(&format!("DROP ROLE IF EXISTS \"{}\"", r.replace('"', "\"\""))).await;
                }
            })
        })
        .join();
    }
}

trait AddDb {
    fn add_db(&self, db: &str) -> String;
}

impl AddDb for String {
    fn add_db(&self, db: &str) -> String {
        format!("{}/{db}", self.trim_end_matches('/'))
    }
}

/// `resume` runs a restore again when the process died after the fast swap committed
/// but before the journal recorded the step. That second run must leave the database
/// equal to the snapshot (with its properties), not swap the replaced one back.
#[tokio::test]
async fn fast_restore_run_again_after_its_swap_committed_leaves_the_snapshot() {
    let db = TestDb::new("fastagain").await;
    let c = db.client().await;
    fixture(&c).await;
    let d = &db.name;
    let admin = connect("postgres").await;
    admin
        .batch_execute(&format!(
            r#"REVOKE CONNECT ON DATABASE "{d}" FROM PUBLIC; ALTER DATABASE "{d}" SET work_mem = '3MB';"#
        ))
        .await
        .unwrap();
    let before = contents(&c, TABLES).await;
    drop(c);
    let (_t, dir) = tmp();
    let s = pg_stack(&dir, &db.url(), "strategy = \"fast\"");
    let snap = snap(&s).await;
    db.client().await.batch_execute("DELETE FROM fills; INSERT INTO y VALUES ('after')").await.unwrap();
    let props = database_properties(&admin, d).await;

    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    // The journal did not advance: resume runs the same restore step again.
    let driver = s.driver("db").unwrap();
    let mut ctx = rollback_core::Context::new("db", s.store().clone(), &dir);
    ctx.snapshot_id = snap.id.clone();
    driver.restore(&ctx, &snap.parts[0]).await.unwrap();

    let c = db.client().await;
    assert_eq!(contents(&c, TABLES).await, before, "the snapshot, not the replaced database");
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
    assert_eq!(database_properties(&admin, d).await, props);
    let leftovers: i64 = admin
        .query_one("SELECT count(*) FROM pg_database WHERE datname = $1 || '__rb_new'", &[d])
        .await
        .unwrap()
        .get(0);
    assert_eq!(leftovers, 0);
    // And once more, from a clean state: still the snapshot.
    driver.restore(&ctx, &snap.parts[0]).await.unwrap();
    assert_eq!(contents(&db.client().await, TABLES).await, before);
}

/// Writes one row at a time as an ordinary role, as a trading service would,
/// reconnecting after every error; logs each write the server acknowledged.
struct Writer {
    acked: Arc<std::sync::Mutex<Vec<i64>>>,
    refused: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(url: String) -> Writer {
        let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, r, s) = (acked.clone(), refused.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut id = 1_000_000i64;
            let mut client: Option<Client> = None;
            while !s.load(Ordering::SeqCst) {
                if client.is_none() {
                    match tokio_postgres::connect(&url, NoTls).await {
                        Ok((c, conn)) => {
                            tokio::spawn(conn);
                            client = Some(c);
                        }
                        Err(_) => {
                            r.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            continue;
                        }
                    }
                }
                let c = client.as_ref().unwrap();
                id += 1;
                match c.execute("INSERT INTO trades (id) VALUES ($1)", &[&id]).await {
                    Ok(_) => a.lock().unwrap().push(id),
                    Err(_) => {
                        r.fetch_add(1, Ordering::SeqCst);
                        client = None;
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                }
            }
        });
        Writer { acked, refused, stop, task }
    }

    async fn acked_len(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `n` writes were acknowledged; the writer must get going first.
    async fn wait_for(&self, n: usize) {
        let t0 = std::time::Instant::now();
        while self.acked_len().await < n {
            assert!(t0.elapsed() < std::time::Duration::from_secs(30), "the writer cannot write before the rollback");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    async fn finish(self) -> (Vec<i64>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        let acked = self.acked.lock().unwrap().clone();
        (acked, self.refused.load(Ordering::SeqCst))
    }
}

async fn trade_ids(c: &Client) -> std::collections::BTreeSet<i64> {
    c.query("SELECT id FROM trades", &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
}

/// A writer the rollback does not know about (no component stops it) inserts all
/// through a rollback: each write it was told succeeded is in the restored database
/// or in the safety snapshot, for both strategies.
async fn an_unknown_writer_loses_no_acknowledged_write(strategy: &str) {
    let db = TestDb::new(&format!("fence{strategy}")).await;
    let role = TestRole::new().await;
    let role = &role.0;
    let admin = connect("postgres").await;
    let c = db.client().await;
    c.batch_execute(&format!(
        "CREATE TABLE trades (id bigint PRIMARY KEY, note text);
         INSERT INTO trades SELECT g, repeat('x', 200) FROM generate_series(1, 60000) g;
         GRANT INSERT, SELECT ON trades TO \"{role}\";"
    ))
    .await
    .unwrap();
    let (_t, dir) = tmp();
    let s = pg_stack(&dir, &db.url(), &format!("strategy = \"{strategy}\""));
    let snap = snap(&s).await;
    let writer_url = format!("postgres://{role}@127.0.0.1:5432/{}", db.name);
    let w = Writer::start(writer_url);
    w.wait_for(50).await;
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    // Writes go on after the rollback: they must land in the restored database.
    let after = w.acked_len().await;
    let t = std::time::Instant::now();
    while w.acked_len().await < after + 20 && t.elapsed() < std::time::Duration::from_secs(20) {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (acked, refused) = w.finish().await;
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    let fence = r.fences.iter().find(|f| f.component == "db").unwrap_or_else(|| panic!("{}", r.to_json()));
    assert!(fence.error.is_none() && fence.how.contains("connection limit 0"), "{fence:?}");
    assert!(refused > 0, "the fence refused the writer at least once");
    assert!(acked.len() > after + 19, "the writer writes again once the fence is lifted");
    assert!(!r.notes.iter().any(|n| n.contains("were not stopped")), "{:?}", r.notes);

    let now = trade_ids(&db.client().await).await;
    let s2 = pg_stack(&dir, &db.url(), &format!("strategy = \"{strategy}\""));
    let back = s2.rollback(r.safety_snapshot_id.as_deref().unwrap(), opts(Scope::Complete)).await.unwrap();
    assert_eq!(back.status, Status::Succeeded, "{}", back.to_json());
    let kept = trade_ids(&db.client().await).await;
    let lost: Vec<_> = acked.iter().filter(|i| !now.contains(i) && !kept.contains(i)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes in neither the database nor the safety snapshot: {lost:?}",
        lost.len()
    );
    // The fence is lifted: the database takes connections as before.
    let limit: i32 =
        admin.query_one("SELECT datconnlimit FROM pg_database WHERE datname = $1", &[&db.name]).await.unwrap().get(0);
    assert_eq!(limit, -1);
}

/// An ordinary login role, dropped at the end (after the databases it has grants in).
struct TestRole(String);

impl TestRole {
    async fn new() -> TestRole {
        let role = format!("rbw_{}_{:06x}", std::process::id(), rand_u32() & 0xff_ffff);
        connect("postgres").await.batch_execute(&format!("CREATE ROLE \"{role}\" LOGIN")).await.unwrap();
        TestRole(role)
    }
}

impl Drop for TestRole {
    fn drop(&mut self) {
        let role = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let c = connect("postgres").await;
                for db in c.query("SELECT datname::text FROM pg_database WHERE datallowconn", &[]).await.unwrap() {
                    let db: String = db.get(0);
                    if let Ok((c, conn)) = tokio_postgres::connect(&url(&db), NoTls).await {
                        tokio::spawn(conn);
                        let _ = c.batch_execute(&format!("DROP OWNED BY \"{role}\"")).await;
                    }
                }
                let _ = c.batch_execute(&format!("DROP ROLE IF EXISTS \"{role}\"")).await;
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

/// A rollback whose health gate fails after the restore is compensated while a
/// writer it does not know about writes on: what the writer wrote after the restore
/// is kept in a snapshot of its own before the safety snapshot is put back, so every
/// acknowledged write is in the database or in one of the two snapshots.
#[tokio::test]
async fn compensation_keeps_what_was_written_after_the_restore() {
    let db = TestDb::new("fencecomp").await;
    let role = TestRole::new().await;
    let c = db.client().await;
    c.batch_execute(&format!(
        "CREATE TABLE trades (id bigint PRIMARY KEY, note text);
         INSERT INTO trades SELECT g, 'x' FROM generate_series(1, 1000) g;
         GRANT INSERT, SELECT ON trades TO \"{}\";",
        role.0
    ))
    .await
    .unwrap();
    let (_t, dir) = tmp();
    let health = "health = [{ command = [\"sh\", \"-c\", \"sleep 0.5; exit 1\"], timeout = \"3s\" }]";
    let s = pg_stack(&dir, &db.url(), health);
    let snap = snap(&s).await;
    let w = Writer::start(format!("postgres://{}@127.0.0.1:5432/{}", role.0, db.name));
    w.wait_for(50).await;
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    let (acked, _) = w.finish().await;
    assert_eq!(r.status, Status::Compensated, "{}", r.to_json());
    assert_eq!(r.fences.len(), 2, "fenced for the restore and again for the compensation: {}", r.to_json());
    let note = r.notes.iter().find(|n| n.contains("after its restore")).unwrap_or_else(|| panic!("{:?}", r.notes));
    let kept_id = note.rsplit(' ').next().unwrap().to_string();
    assert!(
        r.discarded.iter().any(|d| d.target.contains("written after the restore") && d.changes > 0),
        "{:?}",
        r.discarded
    );

    let mut found = trade_ids(&db.client().await).await;
    let plain = pg_stack(&dir, &db.url(), "");
    for id in [r.safety_snapshot_id.clone().unwrap(), kept_id] {
        let back = plain.rollback(&id, opts(Scope::Complete)).await.unwrap();
        assert_eq!(back.status, Status::Succeeded, "{}", back.to_json());
        found.extend(trade_ids(&db.client().await).await);
    }
    let lost: Vec<_> = acked.iter().filter(|i| !found.contains(i)).collect();
    assert!(lost.is_empty(), "{} acknowledged writes kept nowhere: {lost:?}", lost.len());
}

/// Names a careless migration can make: a newline, quotes, a backtick, a semicolon,
/// a non-ASCII letter, and the longest name PostgreSQL keeps (63 bytes), in a
/// schema, tables and a column. Both strategies, and a dump scoped to the odd
/// schema, put them back as they were, and verify.
#[tokio::test]
async fn hostile_names_round_trip() {
    let schema = "we\"ird\nschema`;ü";
    let table = "new\nline \"table\" `x`";
    let long = "t".repeat(63);
    let qi = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let odd = format!("{}.{}", qi(schema), qi(table));
    let longq = format!("public.{}", qi(&long));
    let schema_toml = schema.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    for (strategy, extra) in
        [("dump", String::new()), ("fast", String::new()), ("dump", format!("schemas = [\"{schema_toml}\"]"))]
    {
        let db = TestDb::new(&format!("hostile{strategy}")).await;
        let c = db.client().await;
        c.batch_execute(&format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {odd} ({col} int PRIMARY KEY, {q} text);
             INSERT INTO {odd} VALUES (1, 'a'), (2, E'b\\nc');
             CREATE TABLE {longq} (id int PRIMARY KEY);
             INSERT INTO {longq} VALUES (1), (2);",
            s = qi(schema),
            col = qi("col\numn"),
            q = qi("ü'q\""),
        ))
        .await
        .unwrap();
        let tables = [odd.as_str(), longq.as_str()];
        let before = contents(&c, &tables).await;
        let (_t, dir) = tmp();
        let s = pg_stack(&dir, &db.url(), &format!("strategy = \"{strategy}\"\n{extra}"));
        let snap = snap(&s).await;
        // The fast capture ends the database's sessions to copy it.
        let c = db.client().await;
        c.batch_execute(&format!(
            "UPDATE {odd} SET {q} = 'changed' WHERE {col} = 1; INSERT INTO {odd} VALUES (3, 'new');
             CREATE TABLE {s}.{t2} (id int);",
            col = qi("col\numn"),
            q = qi("ü'q\""),
            s = qi(schema),
            t2 = qi("another\none"),
        ))
        .await
        .unwrap();
        if extra.is_empty() {
            c.batch_execute(&format!("DROP TABLE {longq}")).await.unwrap();
        }
        drop(c);
        let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
        assert_eq!(r.status, Status::Succeeded, "{strategy} {extra}: {}", r.to_json());
        if strategy == "dump" {
            assert!(r.discarded.iter().any(|d| d.target.contains("new\nline") && d.changes > 0), "{:?}", r.discarded);
        }
        let c = db.client().await;
        assert_eq!(contents(&c, &tables).await, before, "{strategy} {extra}");
        let gone: i64 = c
            .query_one("SELECT count(*) FROM pg_tables WHERE tablename = $1", &[&"another\none"])
            .await
            .unwrap()
            .get(0);
        assert_eq!(gone, 0, "{strategy} {extra}: the table made after the snapshot is gone");
        assert!(s.verify(&snap.id, &[]).await.unwrap().ok, "{strategy} {extra}");
    }
}

/// Every kind of object a PostgreSQL database holds, each with a property a deploy
/// can change.
const EVERY_KIND: &str = r#"
    CREATE EXTENSION hstore;
    CREATE TYPE side AS ENUM ('buy', 'sell');
    CREATE TYPE pair AS (base text, quote text);
    CREATE TYPE band AS RANGE (subtype = numeric);
    CREATE DOMAIN qty AS numeric DEFAULT 1 CHECK (VALUE > 0);
    CREATE SEQUENCE ticket START 5 INCREMENT 3;
    CREATE TABLE orders (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, s side NOT NULL, p pair,
                         b band, q qty, attrs hstore, t int DEFAULT nextval('ticket'));
    INSERT INTO orders (s, p, b, q, attrs) VALUES ('buy', ('BTC', 'USD'), '[1,2)', 3, 'a=>1'), ('sell', NULL, NULL, 1, NULL);
    ALTER TABLE orders SET (fillfactor = 90);
    ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
    CREATE POLICY positive ON orders USING (id > 0);
    COMMENT ON TABLE orders IS 'the book';
    COMMENT ON COLUMN orders.q IS 'lots';
    CREATE FUNCTION fee(p numeric) RETURNS numeric LANGUAGE sql IMMUTABLE AS $$ SELECT p * 0.001 $$;
    CREATE PROCEDURE settle() LANGUAGE sql AS $$ UPDATE orders SET q = q $$;
    CREATE AGGREGATE total(numeric) (SFUNC = numeric_add, STYPE = numeric, INITCOND = '0');
    CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
    CREATE TRIGGER orders_stamp BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION stamp();
    CREATE FUNCTION on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;
    CREATE EVENT TRIGGER rb_on_ddl ON ddl_command_end EXECUTE FUNCTION on_ddl();
    CREATE VIEW buys AS SELECT id, q FROM orders WHERE s = 'buy';
    CREATE MATERIALIZED VIEW order_count AS SELECT count(*) AS n FROM orders;
    CREATE TABLE ticks (at date NOT NULL, v int) PARTITION BY RANGE (at);
    CREATE TABLE ticks_2026 PARTITION OF ticks FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
    INSERT INTO ticks VALUES ('2026-06-01', 1);
    CREATE TABLE base_log (id int);
    CREATE TABLE audit_log (who text) INHERITS (base_log);
    INSERT INTO audit_log VALUES (1, 'ada');
    CREATE RULE no_delete AS ON DELETE TO base_log DO INSTEAD NOTHING;
    CREATE UNLOGGED TABLE scratch (k text PRIMARY KEY);
    CREATE PUBLICATION rb_pub FOR TABLE orders;
    CREATE SCHEMA reports;
    CREATE TABLE reports.daily (d date PRIMARY KEY);
    GRANT USAGE ON SCHEMA reports TO rbw_catalog;
    GRANT SELECT ON orders TO rbw_catalog;
    GRANT EXECUTE ON FUNCTION fee(numeric) TO rbw_catalog;
    ALTER TABLE reports.daily OWNER TO rbw_catalog;
"#;

/// One change per kind, as a deploy would make it.
const CHANGES: &[(&str, &str)] = &[
    ("extension", "ALTER TABLE orders DROP COLUMN attrs; DROP EXTENSION hstore"),
    ("enum", "ALTER TYPE side ADD VALUE 'hold'"),
    ("composite", "ALTER TYPE pair ADD ATTRIBUTE venue text"),
    ("range", "ALTER TABLE orders DROP COLUMN b; DROP TYPE band"),
    ("domain", "ALTER DOMAIN qty SET DEFAULT 2"),
    ("domain check", "ALTER DOMAIN qty ADD CONSTRAINT lots CHECK (VALUE < 1000)"),
    ("sequence", "ALTER SEQUENCE ticket INCREMENT 7"),
    ("identity", "ALTER TABLE orders ALTER COLUMN id SET GENERATED ALWAYS"),
    ("reloptions", "ALTER TABLE orders RESET (fillfactor)"),
    ("row security", "ALTER TABLE orders DISABLE ROW LEVEL SECURITY"),
    ("policy", "ALTER POLICY positive ON orders USING (id > 1)"),
    ("table comment", "COMMENT ON TABLE orders IS 'another book'"),
    ("column comment", "COMMENT ON COLUMN orders.q IS NULL"),
    (
        "function",
        "CREATE OR REPLACE FUNCTION fee(p numeric) RETURNS numeric LANGUAGE sql IMMUTABLE AS $$ SELECT p * 0.002 $$",
    ),
    ("procedure", "DROP PROCEDURE settle()"),
    ("aggregate", "DROP AGGREGATE total(numeric)"),
    ("trigger", "ALTER TABLE orders DISABLE TRIGGER orders_stamp"),
    ("event trigger", "ALTER EVENT TRIGGER rb_on_ddl DISABLE"),
    ("view", "CREATE OR REPLACE VIEW buys AS SELECT id, q FROM orders WHERE s = 'sell'"),
    ("materialized view", "DROP MATERIALIZED VIEW order_count"),
    ("partition", "ALTER TABLE ticks DETACH PARTITION ticks_2026"),
    ("inheritance", "ALTER TABLE audit_log NO INHERIT base_log"),
    ("rule", "DROP RULE no_delete ON base_log"),
    ("unlogged", "ALTER TABLE scratch SET LOGGED"),
    ("publication", "ALTER PUBLICATION rb_pub ADD TABLE base_log"),
    ("grant", "REVOKE SELECT ON orders FROM rbw_catalog"),
    ("function grant", "REVOKE EXECUTE ON FUNCTION fee(numeric) FROM rbw_catalog"),
    ("schema grant", "REVOKE USAGE ON SCHEMA reports FROM rbw_catalog"),
    ("owner", "ALTER TABLE reports.daily OWNER TO postgres"),
];

/// The oracle: the schema as `pg_dump --schema-only` prints it, plus every table's rows.
fn schema_dump(db: &str) -> String {
    let o = std::process::Command::new("pg_dump").args(["--schema-only", &url(db)]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // pg_dump's per-dump random `\restrict` key differs between two dumps of one schema.
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    text.lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn every_kind_round_trips(strategy: &str) {
    let admin = connect("postgres").await;
    let _ = admin.batch_execute("CREATE ROLE rbw_catalog").await; // shared by both strategies' tests
    let db = TestDb::new(&format!("kinds_{strategy}")).await;
    let c = db.client().await;
    c.batch_execute(EVERY_KIND).await.unwrap();
    c.batch_execute("REFRESH MATERIALIZED VIEW order_count").await.unwrap();
    let tables = ["orders", "ticks", "base_log", "audit_log", "scratch", "reports.daily", "order_count"];
    let (schema, rows) = (schema_dump(&db.name), contents(&c, &tables).await);
    let (_t, dir) = tmp();
    let s = pg_stack(&dir, &db.url(), &format!("strategy = \"{strategy}\""));
    let snapshot = snap(&s).await;
    assert!(s.verify(&snapshot.id, &[]).await.unwrap().ok);

    // `verify` sees each change on its own.
    let mut unseen = Vec::new();
    for (kind, sql) in CHANGES {
        let c = db.client().await;
        c.batch_execute(sql).await.unwrap_or_else(|e| panic!("{kind}: {sql}: {e}"));
        if s.verify(&snapshot.id, &[]).await.unwrap().ok {
            unseen.push(*kind);
        }
        let r = s.rollback(&snapshot.id, opts(Scope::Complete)).await.unwrap();
        assert_eq!(r.status, Status::Succeeded, "{strategy}, after the {kind} change: {}", r.to_json());
        assert_eq!(schema_dump(&db.name), schema, "{strategy}: the {kind} change is undone");
    }
    assert!(unseen.is_empty(), "{strategy}: verify called these changes equal: {unseen:?}");

    // All of them at once, and the rows: one rollback puts everything back.
    let c = db.client().await;
    for (kind, sql) in CHANGES {
        c.batch_execute(sql).await.unwrap_or_else(|e| panic!("{kind}: {sql}: {e}"));
    }
    c.batch_execute("INSERT INTO scratch VALUES ('x'); DELETE FROM audit_log;").await.unwrap();
    let r = s.rollback(&snapshot.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{strategy}: {}", r.to_json());
    let c = db.client().await;
    assert_eq!(schema_dump(&db.name), schema, "{strategy}");
    assert_eq!(contents(&c, &tables).await, rows, "{strategy}");
    assert!(s.verify(&snapshot.id, &[]).await.unwrap().ok);
}

#[tokio::test]
async fn dump_round_trips_every_object_kind_and_verify_sees_each_change() {
    every_kind_round_trips("dump").await;
}

#[tokio::test]
async fn fast_round_trips_every_object_kind_and_verify_sees_each_change() {
    every_kind_round_trips("fast").await;
}

/// A `pg_dump` that never answers `--version` (a wrapper script stuck on a network
/// mount, say) fails the snapshot after 10 s, naming it, and its whole process group
/// is ended: nothing of it is left running.
#[tokio::test]
async fn a_pg_dump_that_hangs_on_its_version_fails_the_snapshot_and_is_ended() {
    let db = TestDb::new("hungver").await;
    let (_t, dir) = tmp();
    let script = dir.join("stuck-pg_dump");
    // Its child names the directory too, so both can be looked for in /proc.
    let body = format!("#!/bin/sh\npython3 -c 'import time; time.sleep(600)' {} &\nwait\n", dir.display());
    std::fs::write(&script, body).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let s = pg_stack(&dir, &db.url(), &format!("strategy = \"dump\"\npg_dump = \"{}\"", script.display()));
    let e = s.snapshot(SnapshotOptions::default()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.to_string().contains("--version` did not answer in 10 s"), "{e}");
    // The script and its child, in one group, are gone.
    let t0 = std::time::Instant::now();
    let running = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
            std::fs::read(p.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&*dir.to_string_lossy()))
                .unwrap_or(false)
        })
    };
    while running() {
        assert!(t0.elapsed() < std::time::Duration::from_secs(5), "the stuck pg_dump is still running");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
