//! The `redis` driver against a real Redis (`ROLLBACK_REDIS_URL`, default
//! `redis://127.0.0.1:6379`). Each test owns a db number and a unique key prefix, and
//! every test but one uses a pattern, so they never touch each other's keys. They
//! take turns all the same (`server()`): a rollback's write fence refuses every
//! user's writes, in every db, for its window. A missing server fails the tests.
#![cfg(feature = "driver-redis")]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use rollback_core::{
    ComponentConfig, Context, ErrorKind, Registry, RollbackOptions, Scope, SnapshotOptions, Stack, StackConfig, Status,
};

/// Held for the whole of each test: a rollback's fence takes write commands from every
/// ACL user of the server, so another test's writes would be refused meanwhile.
async fn server() -> tokio::sync::MutexGuard<'static, ()> {
    static SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERVER.lock().await
}

fn base_url() -> String {
    std::env::var("ROLLBACK_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn url(db: u32) -> String {
    format!("{}/{db}", base_url().trim_end_matches('/'))
}

fn prefix(name: &str) -> String {
    format!("rbtest:{name}:{:08x}:", rand::random::<u32>())
}

async fn con(db: u32) -> MultiplexedConnection {
    redis::Client::open(url(db))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis must be running on 127.0.0.1:6379 (scripts/services.sh starts it)")
}

fn stack_toml(dir: &Path, body: &str) -> Stack {
    let text = format!("[store]\npath = \"{}\"\n{body}", dir.join("store").display());
    let cfg = StackConfig::from_toml_str(&text, None, dir, &|_| None).unwrap();
    Stack::new(cfg, &Registry::with_default_drivers()).unwrap()
}

fn component(name: &str, db: u32, pattern: &str, mode: &str) -> String {
    format!(
        "[[component]]\nname = \"{name}\"\ndriver = \"redis\"\nurl = \"{}\"\nmode = \"{mode}\"\npattern = \"{pattern}\"\n",
        url(db)
    )
}

async fn cleanup(c: &mut MultiplexedConnection, pattern: &str) {
    let keys: Vec<Vec<u8>> = c.keys(pattern).await.unwrap();
    if !keys.is_empty() {
        let _: () = c.del(keys).await.unwrap();
    }
}

/// Strings, binary keys and values, hashes, lists, sets, sorted sets (small and
/// hash-table/skiplist sized), a stream, keys with and without TTL.
async fn fill(c: &mut MultiplexedConnection, p: &str) {
    let _: () = c.set(format!("{p}str"), "hello").await.unwrap();
    let _: () = c.set(format!("{p}int"), 12345).await.unwrap();
    let mut bin_key = p.as_bytes().to_vec();
    bin_key.extend_from_slice(b"bin\x00\xff\r\n");
    let _: () = c.set(&bin_key, b"\x00\x01\xfe\xff".to_vec()).await.unwrap();
    let _: () = c.set_ex(format!("{p}ttl"), "expires", 3600).await.unwrap();
    let _: () = c.hset_multiple(format!("{p}hash"), &[("a", "1"), ("b", "2")]).await.unwrap();
    let big: Vec<(String, String)> = (0..300).map(|i| (format!("field-{i}"), format!("value-{i}"))).collect();
    let _: () = c.hset_multiple(format!("{p}bighash"), &big).await.unwrap();
    let _: () = c.rpush(format!("{p}list"), &["x", "y", "z", "y"]).await.unwrap();
    let _: () = c.sadd(format!("{p}set"), &["m1", "m2", "m3"]).await.unwrap();
    let _: () = c.sadd(format!("{p}intset"), &[1, 2, 3, 400]).await.unwrap();
    let members: Vec<String> = (0..300).map(|i| format!("member-{i}")).collect();
    let _: () = c.sadd(format!("{p}bigset"), &members).await.unwrap();
    let _: () = c.zadd_multiple(format!("{p}zset"), &[(1.5, "a"), (2.0, "b")]).await.unwrap();
    let zs: Vec<(f64, String)> = (0..300).map(|i| (i as f64 / 3.0, format!("z-{i}"))).collect();
    let _: () = c.zadd_multiple(format!("{p}bigzset"), &zs).await.unwrap();
    for i in 0..5 {
        let _: String =
            redis::cmd("XADD").arg(format!("{p}stream")).arg("*").arg("trade").arg(i).query_async(c).await.unwrap();
    }
    let _: () = redis::cmd("PEXPIRE").arg(format!("{p}hash")).arg(7_200_000).query_async(c).await.unwrap();
}

async fn ttl_of(c: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(c).await.unwrap()
}

#[tokio::test]
async fn replace_round_trip_of_every_type_through_the_stack() {
    let _server = server().await;
    let db = 1;
    let dir = tempfile::tempdir().unwrap();
    let mut c = con(db).await;
    let p = prefix("replace");
    let pattern = format!("{p}*");
    let outsider = format!("{}outsider", prefix("other"));
    let _: () = c.set(&outsider, "not mine").await.unwrap();
    fill(&mut c, &p).await;
    let stack = stack_toml(dir.path(), &component("cache", db, &pattern, "replace"));

    let snap = stack.snapshot(SnapshotOptions::default()).await.unwrap();
    assert_eq!(snap.parts[0].state["keys"], 13);
    assert!(stack.verify(&snap.id, &[]).await.unwrap().ok);

    // The bad deploy: changes, an added key, a removed key, a TTL dropped, a big hash edited.
    let _: () = c.set(format!("{p}str"), "bad").await.unwrap();
    let _: () = c.set(format!("{p}new"), "added").await.unwrap();
    let _: () = c.del(format!("{p}list")).await.unwrap();
    let _: () = c.persist(format!("{p}ttl")).await.unwrap();
    let _: () = c.hset(format!("{p}bighash"), "field-7", "changed").await.unwrap();
    let _: () = c.set(&outsider, "changed outside the pattern").await.unwrap();

    let v = stack.verify(&snap.id, &[]).await.unwrap();
    assert!(!v.ok);
    let text = v.components["cache"].differences.join("\n");
    assert!(text.contains("1 keys added, 3 changed, 1 missing"), "{text}");
    assert!(text.contains("new` was added") && text.contains("TTL was removed"), "{text}");

    let plan = stack.plan(&snap.id, &Scope::Complete).await.unwrap();
    assert_eq!(plan.discards.len(), 1, "{plan}");
    assert_eq!(plan.discards[0].changes, 5);
    assert!(plan.discards[0].unit.contains("1 added, 3 changed, 1 removed"), "{}", plan.discards[0].unit);
    assert!(plan.to_string().contains("RESTORE 13 keys"), "{plan}");

    let rec = stack.rollback(&snap.id, RollbackOptions::default()).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{rec:?}");
    assert!(rec.verification["cache"].ok);
    assert_eq!(rec.discarded[0].changes, 5);
    assert!(rec.discarded[0].kept_in_safety_snapshot && !rec.data_loss);

    let s: String = c.get(format!("{p}str")).await.unwrap();
    assert_eq!(s, "hello");
    let exists: bool = c.exists(format!("{p}new")).await.unwrap();
    assert!(!exists);
    let l: Vec<String> = c.lrange(format!("{p}list"), 0, -1).await.unwrap();
    assert_eq!(l, ["x", "y", "z", "y"]);
    let f: String = c.hget(format!("{p}bighash"), "field-7").await.unwrap();
    assert_eq!(f, "value-7");
    let t = ttl_of(&mut c, &format!("{p}ttl")).await;
    assert!(t > 3_000_000 && t <= 3_600_000, "TTL kept: {t}");
    assert!(ttl_of(&mut c, &format!("{p}hash")).await > 7_000_000);
    assert_eq!(ttl_of(&mut c, &format!("{p}str")).await, -1);
    let mut bin_key = p.as_bytes().to_vec();
    bin_key.extend_from_slice(b"bin\x00\xff\r\n");
    let b: Vec<u8> = c.get(&bin_key).await.unwrap();
    assert_eq!(b, b"\x00\x01\xfe\xff");
    let n: usize = redis::cmd("XLEN").arg(format!("{p}stream")).query_async(&mut c).await.unwrap();
    assert_eq!(n, 5);
    let zs: Vec<(String, f64)> = c.zrange_withscores(format!("{p}bigzset"), 0, 2).await.unwrap();
    assert_eq!(zs[1], ("z-1".to_string(), 1.0 / 3.0));
    let m: bool = c.sismember(format!("{p}bigset"), "member-299").await.unwrap();
    assert!(m);
    // A replace with a pattern leaves the rest of the db alone.
    let o: String = c.get(&outsider).await.unwrap();
    assert_eq!(o, "changed outside the pattern");
    assert!(stack.verify(&snap.id, &[]).await.unwrap().ok);

    // The safety snapshot holds the discarded state: it can be read back.
    let safety = rec.safety_snapshot_id.clone().unwrap();
    let v = stack.verify(&safety, &[]).await.unwrap();
    assert!(!v.ok);

    cleanup(&mut c, &pattern).await;
    let _: () = c.del(&outsider).await.unwrap();
}

#[tokio::test]
async fn merge_restores_captured_keys_and_keeps_new_ones() {
    let _server = server().await;
    let db = 2;
    let dir = tempfile::tempdir().unwrap();
    let mut c = con(db).await;
    let p = prefix("merge");
    let pattern = format!("{p}*");
    fill(&mut c, &p).await;
    let stack = stack_toml(dir.path(), &component("cache", db, &pattern, "merge"));
    let snap = stack.snapshot(SnapshotOptions::default()).await.unwrap();

    let _: () = c.set(format!("{p}str"), "bad").await.unwrap();
    let _: () = c.del(format!("{p}zset")).await.unwrap();
    let _: () = c.set(format!("{p}session"), "written after").await.unwrap();

    let plan = stack.plan(&snap.id, &Scope::Complete).await.unwrap();
    assert_eq!(plan.discards[0].changes, 1, "only the overwritten key is discarded: {plan}");
    let rec = stack.rollback(&snap.id, RollbackOptions::default()).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{rec:?}");

    let s: String = c.get(format!("{p}str")).await.unwrap();
    assert_eq!(s, "hello");
    let z: Vec<String> = c.zrange(format!("{p}zset"), 0, -1).await.unwrap();
    assert_eq!(z, ["a", "b"]);
    let kept: String = c.get(format!("{p}session")).await.unwrap();
    assert_eq!(kept, "written after");
    cleanup(&mut c, &pattern).await;
}

#[tokio::test]
async fn flush_clears_only_the_matching_keys() {
    let _server = server().await;
    let db = 3;
    let dir = tempfile::tempdir().unwrap();
    let mut c = con(db).await;
    let p = prefix("flush");
    let pattern = format!("{p}*");
    let outsider = format!("{}keep", prefix("other"));
    let _: () = c.set(&outsider, "stay").await.unwrap();
    fill(&mut c, &p).await;
    let stack = stack_toml(dir.path(), &component("cache", db, &pattern, "flush"));
    let snap = stack.snapshot(SnapshotOptions::default()).await.unwrap();
    let v = stack.verify(&snap.id, &[]).await.unwrap();
    assert!(!v.ok && v.components["cache"].differences[0].contains("13 keys match"), "{v:?}");
    let plan = stack.plan(&snap.id, &Scope::Complete).await.unwrap();
    assert_eq!(plan.discards[0].changes, 13);
    assert!(plan.to_string().contains("cache clear"), "{plan}");

    let rec = stack.rollback(&snap.id, RollbackOptions::default()).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{rec:?}");
    let left: Vec<String> = c.keys(&pattern).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    let o: String = c.get(&outsider).await.unwrap();
    assert_eq!(o, "stay");
    // Run again: idempotent.
    let rec = stack.rollback(&snap.id, RollbackOptions::default()).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded);
    let _: () = c.del(&outsider).await.unwrap();
}

/// The one test that owns a whole db (15): pattern `*` restores with FLUSHDB.
#[tokio::test]
async fn whole_db_replace_uses_flushdb_and_skips_keys_expired_since() {
    let _server = server().await;
    let db = 15;
    let dir = tempfile::tempdir().unwrap();
    let mut c = con(db).await;
    let _: () = redis::cmd("FLUSHDB").query_async(&mut c).await.unwrap();
    fill(&mut c, "").await;
    let _: () = c.pset_ex("short-lived", "soon gone", 400).await.unwrap();
    let stack = stack_toml(dir.path(), &component("cache", db, "*", "replace"));
    let snap = stack.snapshot(SnapshotOptions::default()).await.unwrap();
    assert_eq!(snap.parts[0].state["keys"], 14);
    assert_eq!(snap.parts[0].state["with_ttl"], 3);

    let _: () = c.set("junk", "x").await.unwrap();
    let _: () = c.del("str").await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;

    let notes = Arc::new(Mutex::new(Vec::<String>::new()));
    let n2 = notes.clone();
    let opts = RollbackOptions {
        on_event: Some(Arc::new(move |e: &rollback_core::Event| n2.lock().unwrap().push(e.message.clone()))),
        ..Default::default()
    };
    let rec = stack.rollback(&snap.id, opts).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{rec:?}");
    let notes = notes.lock().unwrap().join("\n");
    assert!(notes.contains("skipped 1 keys whose TTL ran out"), "{notes}");
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    assert_eq!(size, 13);
    let s: String = c.get("str").await.unwrap();
    assert_eq!(s, "hello");
    let _: () = redis::cmd("FLUSHDB").query_async(&mut c).await.unwrap();
}

/// A rollback killed in the middle of the restore (its future dropped while the
/// RESTORE pipelines run) is finished by `resume` to a verified state.
#[tokio::test]
async fn killed_restore_resumes_to_a_verified_state() {
    let _server = server().await;
    let db = 4;
    let dir = tempfile::tempdir().unwrap();
    let mut c = con(db).await;
    let p = prefix("resume");
    let pattern = format!("{p}*");
    let mut pipe = redis::pipe();
    for i in 0..60_000 {
        pipe.set(format!("{p}{i}"), format!("value {i}")).ignore();
    }
    let _: () = pipe.query_async(&mut c).await.unwrap();
    let stack = stack_toml(dir.path(), &component("cache", db, &pattern, "replace"));
    let snap = stack.snapshot(SnapshotOptions::default()).await.unwrap();
    for i in 0..100 {
        let _: () = c.set(format!("{p}{i}"), "bad").await.unwrap();
    }

    let started = Arc::new(tokio::sync::Notify::new());
    let s2 = started.clone();
    let opts = RollbackOptions {
        on_event: Some(Arc::new(move |e: &rollback_core::Event| {
            // Right after the restore deleted the old keys, before the snapshot's are back.
            if e.kind == "progress" && e.message.starts_with("deleted ") {
                s2.notify_one();
            }
        })),
        ..Default::default()
    };
    let run = stack.rollback(&snap.id, opts);
    tokio::select! {
        r = run => panic!("the rollback should have been killed first: {r:?}"),
        _ = started.notified() => {}
    }
    // Killed mid-restore: the db holds part of the snapshot at most.
    let partial: Vec<String> = c.keys(&pattern).await.unwrap();
    assert!(partial.len() < 60_000, "the kill came too late to test anything ({} keys)", partial.len());

    let rec = stack.resume("latest", None).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{rec:?}");
    assert!(rec.resumed);
    assert!(stack.verify(&snap.id, &[]).await.unwrap().ok);
    let v: String = c.get(format!("{p}7")).await.unwrap();
    assert_eq!(v, "value 7");
    cleanup(&mut c, &pattern).await;
}

/// Driver level: restores are idempotent, TTL presence is verified, a damaged
/// artifact is refused before anything changes.
#[tokio::test]
async fn driver_restore_twice_ttl_drift_and_corrupt_artifact() {
    let _server = server().await;
    let db = 5;
    let dir = tempfile::tempdir().unwrap();
    let mut c = con(db).await;
    let p = prefix("driver");
    let pattern = format!("{p}*");
    fill(&mut c, &p).await;
    let store = rollback_core::Store::open(dir.path().join("store")).unwrap();
    let cfg = ComponentConfig::new("cache", "redis").option("url", url(db)).option("pattern", pattern.clone());
    let env = rollback_core::DriverEnv { base_dir: dir.path().into(), redactor: Default::default() };
    let d = Registry::with_default_drivers().build(&cfg, &env).unwrap();
    let ctx = Context::new("cache", store.clone(), dir.path());
    let cap = d.capture(&ctx).await.unwrap();
    let part = rollback_core::Part {
        component: "cache".into(),
        driver: "redis".into(),
        phase: 1,
        state: cap.state,
        artifacts: cap.artifacts,
        capture_ms: 0,
    };
    assert!(d.verify(&ctx, &part).await.unwrap().ok);
    let _: () = c.expire(format!("{p}str"), 100).await.unwrap();
    let drift = d.verify(&ctx, &part).await.unwrap();
    assert!(!drift.ok && drift.differences.join(" ").contains("a TTL was added"), "{drift:?}");
    d.restore(&ctx, &part).await.unwrap();
    d.restore(&ctx, &part).await.unwrap();
    assert!(d.verify(&ctx, &part).await.unwrap().ok);
    assert_eq!(ttl_of(&mut c, &format!("{p}str")).await, -1);

    // Flip one byte of the keys file: the restore refuses it.
    let a = part.artifact("redis/keys.bin").unwrap();
    let path = store.artifact_path(a).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let _: () = c.set(format!("{p}str"), "after").await.unwrap();
    let e = d.restore(&ctx, &part).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    let s: String = c.get(format!("{p}str")).await.unwrap();
    assert_eq!(s, "after", "nothing was changed");
    cleanup(&mut c, &pattern).await;
}

#[tokio::test]
async fn unreachable_server_and_bad_password_name_the_component_and_hide_the_password() {
    let _server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = "hunter2-very-secret";
    let text = format!(
        "[store]\npath = \"{}\"\n[[component]]\nname = \"cache\"\ndriver = \"redis\"\nurl = \"redis://:${{REDIS_PW}}@127.0.0.1:6379/6\"\n\
         [[component]]\nname = \"gone\"\ndriver = \"redis\"\nurl = \"redis://:{secret}@127.0.0.1:1/0\"\n",
        dir.path().join("store").display()
    );
    let cfg = StackConfig::from_toml_str(&text, None, dir.path(), &|k| (k == "REDIS_PW").then(|| secret.to_string()))
        .unwrap();
    let stack = Stack::new(cfg, &Registry::with_default_drivers()).unwrap();
    for name in ["cache", "gone"] {
        let e =
            stack.snapshot(SnapshotOptions { components: vec![name.into()], ..Default::default() }).await.unwrap_err();
        let m = e.to_string();
        assert!(m.contains(&format!("component `{name}`")), "{m}");
        assert!(!m.contains(secret), "{m}");
        assert!(!format!("{e:?}").contains(secret), "{e:?}");
        if name == "gone" {
            assert_eq!(e.kind(), ErrorKind::Unreachable, "{m}");
        }
    }
    let report = stack.check().await.unwrap();
    assert!(!report.ok);
    let json = serde_json::to_string(&report).unwrap();
    assert!(!json.contains(secret), "{json}");
    assert!(json.contains("127.0.0.1:1/0"), "{json}");
}

/// Every key matching `pattern` as the application reads it: type, value in a
/// canonical order (set and hash members sorted) and PTTL. An oracle independent of
/// the driver's own hashing.
async fn key_space(
    c: &mut MultiplexedConnection,
    pattern: &str,
) -> std::collections::BTreeMap<Vec<u8>, (String, String, i64)> {
    let keys: Vec<Vec<u8>> = c.keys(pattern).await.unwrap();
    let mut out = std::collections::BTreeMap::new();
    for k in keys {
        let ty: String = redis::cmd("TYPE").arg(&k).query_async(c).await.unwrap();
        let value = match ty.as_str() {
            "string" => format!("{:?}", c.get::<_, Vec<u8>>(&k).await.unwrap()),
            "list" => format!("{:?}", c.lrange::<_, Vec<Vec<u8>>>(&k, 0, -1).await.unwrap()),
            "set" => {
                let mut m: Vec<Vec<u8>> = c.smembers(&k).await.unwrap();
                m.sort();
                format!("{m:?}")
            }
            "hash" => {
                let mut m: Vec<(Vec<u8>, Vec<u8>)> = c.hgetall(&k).await.unwrap();
                m.sort();
                format!("{m:?}")
            }
            "zset" => format!("{:?}", c.zrange_withscores::<_, Vec<(Vec<u8>, f64)>>(&k, 0, -1).await.unwrap()),
            "stream" => {
                let v: redis::Value = redis::cmd("XRANGE").arg(&k).arg("-").arg("+").query_async(c).await.unwrap();
                format!("{v:?}")
            }
            other => panic!("no oracle for type {other}"),
        };
        let pttl: i64 = redis::cmd("PTTL").arg(&k).query_async(c).await.unwrap();
        out.insert(k, (ty, value, pttl));
    }
    out
}

/// A rollback in flush mode clears the cache; when a later step fails, the
/// compensation must put back every key and TTL the cache held before the rollback
/// (what its safety snapshot captured), not clear it again.
#[tokio::test]
async fn flush_mode_compensation_puts_every_key_and_ttl_back() {
    let _server = server().await;
    let db = 7;
    let dir = tempfile::tempdir().unwrap();
    let mut c = con(db).await;
    let p = prefix("flushcomp");
    let pattern = format!("{p}*");
    fill(&mut c, &p).await;
    std::fs::write(dir.path().join("flag"), "ok\n").unwrap();
    // The cache (phase 2) is restored first; then svc (phase 1) fails.
    let toml = format!(
        "{}phase = 2\n[[component]]\nname = \"svc\"\ndriver = \"command\"\nphase = 1\ncapture = [\"cat\", \"flag\"]\n\
         restore = [\"sh\", \"-c\", \"if grep -q ok \\\"$ROLLBACK_STATE_FILE\\\"; then echo 'restore of svc failed' >&2; exit 3; fi; \
         cp \\\"$ROLLBACK_STATE_FILE\\\" flag\"]\n",
        component("cache", db, &pattern, "flush")
    );
    let stack = stack_toml(dir.path(), &toml);
    let snap = stack.snapshot(SnapshotOptions::default()).await.unwrap();

    // The cache as the deploy left it: a value changed, a key added with a TTL.
    std::fs::write(dir.path().join("flag"), "new\n").unwrap();
    let _: () = c.set(format!("{p}str"), "after the deploy").await.unwrap();
    let _: () = c.set_ex(format!("{p}added"), "warm", 5000).await.unwrap();
    let before = key_space(&mut c, &pattern).await;
    assert_eq!(before.len(), 14);

    let rec = stack.rollback(&snap.id, RollbackOptions::default()).await.unwrap();
    assert_eq!(rec.status, Status::Compensated, "{rec:?}");
    let comp = rec.steps.iter().find(|s| s.action == "compensate" && s.component == "cache").unwrap();
    assert_eq!(comp.status, "ok", "{rec:?}");

    let after = key_space(&mut c, &pattern).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the compensation puts back every key"
    );
    for (k, (ty, value, pttl)) in &before {
        let (ty2, value2, pttl2) = &after[k];
        assert_eq!((ty, value), (ty2, value2), "key {}", String::from_utf8_lossy(k));
        if *pttl < 0 {
            assert_eq!(*pttl2, *pttl, "key {} has no TTL", String::from_utf8_lossy(k));
        } else {
            assert!(
                *pttl2 > 0 && pttl2 <= pttl,
                "key {}: TTL {pttl} before, {pttl2} after",
                String::from_utf8_lossy(k)
            );
        }
    }
    // The safety snapshot verifies equal: it is what the cache now holds.
    let safety = rec.safety_snapshot_id.clone().unwrap();
    let v = stack.verify(&safety, &[]).await.unwrap();
    assert!(v.components["cache"].ok, "{v:?}");
    cleanup(&mut c, &pattern).await;
}

/// `ACL GETUSER`'s command rules and selectors of `user`, as text.
async fn acl_rules(c: &mut MultiplexedConnection, user: &str) -> Option<String> {
    let v: redis::Value = redis::cmd("ACL").arg("GETUSER").arg(user).query_async(c).await.unwrap();
    if v == redis::Value::Nil {
        return None;
    }
    let redis::Value::Array(items) = v else { panic!("{v:?}") };
    let mut out = Vec::new();
    for pair in items.chunks(2) {
        let k: String = redis::from_redis_value(&pair[0]).unwrap();
        if k == "commands" || k == "keys" || k == "selectors" {
            out.push(format!("{k}={:?}", pair[1]));
        }
    }
    Some(out.join(" "))
}

/// A writer the rollback does not know about (no component stops it) sets one key at
/// a time as an ACL user of its own, with a selector, reconnecting after each error,
/// through a rollback: every write it was told succeeded is in the final key space or
/// in the safety snapshot, its writes were refused while the fence was up, and every
/// user has its own rules back afterwards.
async fn an_unknown_writer_loses_no_acknowledged_write(mode: &str, db: u32) {
    let _server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = con(db).await;
    let p = prefix(&format!("fence-{mode}"));
    let pattern = format!("{p}*");
    fill(&mut c, &p).await;
    let user = AclUser(format!("rbtest-writer-{:08x}", rand::random::<u32>()));
    let user = &user.0;
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", user, "on", ">writer-pw", "~rbtest:*", "+@all", "-flushall", "(~other:* +get)"][..])
        .query_async(&mut c)
        .await
        .unwrap();
    let (rules_default, rules_user) = (acl_rules(&mut c, "default").await, acl_rules(&mut c, user).await);
    let stack = stack_toml(dir.path(), &component("cache", db, &pattern, mode));
    let snap = stack.snapshot(SnapshotOptions::default()).await.unwrap();

    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let wurl = format!(
        "redis://{user}:writer-pw@{}/{db}",
        base_url().trim_start_matches("redis://").trim_end_matches('/').rsplit('@').next().unwrap()
    );
    let (a, r, st, wp) = (acked.clone(), refused.clone(), stop.clone(), p.clone());
    let writer = tokio::spawn(async move {
        let mut id = 0u64;
        let mut w: Option<MultiplexedConnection> = None;
        while !st.load(std::sync::atomic::Ordering::SeqCst) {
            if w.is_none() {
                match redis::Client::open(wurl.as_str()).unwrap().get_multiplexed_async_connection().await {
                    Ok(x) => w = Some(x),
                    Err(_) => {
                        r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
            }
            id += 1;
            let res: redis::RedisResult<()> = w.as_mut().unwrap().set(format!("{wp}w:{id}"), id).await;
            match res {
                Ok(()) => a.lock().unwrap().push(id),
                Err(_) => {
                    r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    w = None;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    });
    let len = || acked.lock().unwrap().len();
    let t0 = std::time::Instant::now();
    while len() < 50 {
        assert!(t0.elapsed() < Duration::from_secs(30), "the writer cannot write before the rollback");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rec = stack.rollback(&snap.id, RollbackOptions::default()).await.unwrap();
    let after = len();
    let t = std::time::Instant::now();
    while len() < after + 20 && t.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert_eq!(rec.status, Status::Succeeded, "{}", rec.to_json());
    let fence = rec.fences.iter().find(|f| f.component == "cache").unwrap_or_else(|| panic!("{}", rec.to_json()));
    assert!(fence.error.is_none() && fence.how.contains("NOPERM") && fence.how.contains(user.as_str()), "{fence:?}");
    assert!(refused.load(std::sync::atomic::Ordering::SeqCst) > 0, "the fence refused the writer at least once");
    assert!(acked.len() >= after + 20, "the writer writes again once the fence is lifted");
    assert_eq!(acl_rules(&mut c, "default").await, rules_default, "default has its rules back");
    assert_eq!(acl_rules(&mut c, user).await, rules_user, "the writer's user has its rules and selector back");
    assert_eq!(acl_rules(&mut c, "rollback-fence").await, None, "the fence's user is gone");

    let ids = |keys: Vec<String>| {
        keys.iter().filter_map(|k| k.rsplit(':').next()?.parse::<u64>().ok()).collect::<std::collections::BTreeSet<_>>()
    };
    let now = ids(c.keys(format!("{p}w:*")).await.unwrap());
    let back = stack.rollback(rec.safety_snapshot_id.as_deref().unwrap(), RollbackOptions::default()).await.unwrap();
    assert_eq!(back.status, Status::Succeeded, "{}", back.to_json());
    let kept = ids(c.keys(format!("{p}w:*")).await.unwrap());
    let lost: Vec<_> = acked.iter().filter(|i| !now.contains(i) && !kept.contains(i)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes in neither the key space nor the safety snapshot: {lost:?}",
        lost.len()
    );
    cleanup(&mut c, &pattern).await;
}

/// An ACL user of the test's, deleted at the end whatever happens.
struct AclUser(String);

impl Drop for AclUser {
    fn drop(&mut self) {
        let u = url(0);
        let _ = std::process::Command::new("redis-cli").args(["-u", &u, "ACL", "DELUSER", &self.0]).output();
    }
}

#[tokio::test]
async fn replace_fences_writers_it_does_not_know() {
    an_unknown_writer_loses_no_acknowledged_write("replace", 11).await;
}

#[tokio::test]
async fn merge_fences_writers_it_does_not_know() {
    an_unknown_writer_loses_no_acknowledged_write("merge", 12).await;
}

#[tokio::test]
async fn flush_fences_writers_it_does_not_know() {
    an_unknown_writer_loses_no_acknowledged_write("flush", 13).await;
}

/// `CLIENT LIST` as (id, flags, db) per client.
async fn clients(c: &mut MultiplexedConnection) -> Vec<(u64, String, u32)> {
    let text: String = redis::cmd("CLIENT").arg("LIST").query_async(c).await.unwrap();
    text.lines()
        .map(|l| {
            let f = |k: &str| {
                l.split(' ')
                    .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                    .unwrap_or("")
                    .to_string()
            };
            (f("id").parse().unwrap_or(0), f("flags"), f("db").parse().unwrap_or(0))
        })
        .collect()
}

/// The last string in a reply, depth first.
fn last_string(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::Array(items) => items.iter().rev().find_map(last_string),
        _ => None,
    }
}

/// What a blocked consumer runs, in a loop.
#[derive(Clone, Debug)]
enum Pop {
    Blpop(String),
    Blmove(String, String),
    Bzpopmin(String),
    XReadGroup(String),
}

/// One consumer of `what`, on a connection of its own: every element it was handed
/// goes to `acked` with the moment it arrived; every refusal counts in `refused`.
/// Sends its client id once connected. Runs until aborted.
async fn consumer(
    db: u32,
    what: Pop,
    id: tokio::sync::oneshot::Sender<u64>,
    acked: Arc<Mutex<Vec<(String, std::time::Instant)>>>,
    refused: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut c = con(db).await;
    let me: u64 = redis::cmd("CLIENT").arg("ID").query_async(&mut c).await.unwrap();
    id.send(me).unwrap();
    loop {
        let got: redis::RedisResult<Option<String>> = match &what {
            Pop::Blpop(k) => redis::cmd("BLPOP")
                .arg(k)
                .arg(0)
                .query_async::<Option<(String, String)>>(&mut c)
                .await
                .map(|o| o.map(|(_, v)| v)),
            Pop::Blmove(src, dst) => {
                redis::cmd("BLMOVE").arg(src).arg(dst).arg("LEFT").arg("RIGHT").arg(0).query_async(&mut c).await
            }
            Pop::Bzpopmin(k) => redis::cmd("BZPOPMIN")
                .arg(k)
                .arg(0)
                .query_async::<Option<(String, String, f64)>>(&mut c)
                .await
                .map(|o| o.map(|(_, m, _)| m)),
            Pop::XReadGroup(k) => redis::cmd("XREADGROUP")
                .arg(&["GROUP", "g", "c1", "COUNT", "1", "BLOCK", "0", "STREAMS", k, ">"][..])
                .query_async::<redis::Value>(&mut c)
                .await
                // [[key, [[id, [field, value]]]]]: the value is the last string.
                .map(|v| last_string(&v)),
        };
        match got {
            Ok(Some(v)) => acked.lock().unwrap().push((v, std::time::Instant::now())),
            Ok(None) => {}
            Err(_) => {
                refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Clients blocked in BLPOP, BLMOVE, BZPOPMIN and XREADGROUP on keys the deploy
/// emptied, before the rollback: the restore re-creates those keys, and no client's
/// pop may be served inside the fence window (where it would take an element of the
/// restored state before the restore is compared, and be in neither the safety
/// snapshot nor the state the rollback leaves). Every element is handed out exactly
/// once, after the fence is lifted, from the restored state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_blocked_before_the_fence_pop_nothing_inside_it() {
    let _server = server().await;
    let db = 10;
    let dir = tempfile::tempdir().unwrap();
    let mut c = con(db).await;
    let p = prefix("blocked");
    let pattern = format!("{p}*");
    let moved = format!("{}moved", prefix("other"));
    let (q1, q2, z, s) = (format!("{p}q1"), format!("{p}q2"), format!("{p}z"), format!("{p}s"));
    let _: () = c.rpush(&q1, &["a1", "a2", "a3", "a4"]).await.unwrap();
    let _: () = c.rpush(&q2, &["m1", "m2", "m3"]).await.unwrap();
    let _: () = c.zadd_multiple(&z, &[(1, "z1"), (2, "z2"), (3, "z3")]).await.unwrap();
    let _: () = redis::cmd("XGROUP").arg(&["CREATE", &s, "g", "$", "MKSTREAM"][..]).query_async(&mut c).await.unwrap();
    for e in ["s1", "s2"] {
        let _: String = redis::cmd("XADD").arg(&s).arg("*").arg("v").arg(e).query_async(&mut c).await.unwrap();
    }
    let mut expected: Vec<String> = ["a1", "a2", "a3", "a4", "m1", "m2", "m3", "z1", "z2", "z3", "s1", "s2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    expected.sort();
    let stack = stack_toml(dir.path(), &component("cache", db, &pattern, "replace"));
    let snap = stack.snapshot(SnapshotOptions::default()).await.unwrap();

    // The deploy's consumers took everything: the keys are gone, the group is read up.
    let _: () = c.del(&[&q1, &q2, &z]).await.unwrap();
    let _: redis::Value =
        redis::cmd("XREADGROUP").arg(&["GROUP", "g", "c0", "STREAMS", &s, ">"][..]).query_async(&mut c).await.unwrap();

    let acked = Arc::new(Mutex::new(Vec::<(String, std::time::Instant)>::new()));
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let kinds = [
        Pop::Blpop(q1.clone()),
        Pop::Blpop(q1.clone()),
        Pop::Blmove(q2.clone(), moved.clone()),
        Pop::Bzpopmin(z.clone()),
        Pop::XReadGroup(s.clone()),
    ];
    let mut tasks = Vec::new();
    let mut ids = Vec::new();
    for k in kinds {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tasks.push(tokio::spawn(consumer(db, k, tx, acked.clone(), refused.clone())));
        ids.push(rx.await.unwrap());
    }
    // Every consumer is blocked before the rollback starts.
    let t0 = std::time::Instant::now();
    loop {
        let list = clients(&mut c).await;
        let blocked = ids.iter().filter(|id| list.iter().any(|(i, f, _)| i == *id && f.contains('b'))).count();
        if blocked == ids.len() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "the consumers never blocked: {list:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(acked.lock().unwrap().is_empty());

    let restored_at = Arc::new(Mutex::new(None::<std::time::Instant>));
    let r2 = restored_at.clone();
    let opts = RollbackOptions {
        on_event: Some(Arc::new(move |e: &rollback_core::Event| {
            // The restore is done and the fence not yet lifted: nothing of the
            // restored state may have been handed out by then.
            if e.kind == "step_finished" && e.action == Some(rollback_core::StepAction::Restore) {
                r2.lock().unwrap().get_or_insert_with(std::time::Instant::now);
            }
        })),
        ..Default::default()
    };
    let rec = stack.rollback(&snap.id, opts).await.unwrap();
    // After the lift the consumers drain the restored keys.
    let t0 = std::time::Instant::now();
    while acked.lock().unwrap().len() < expected.len() && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for t in &tasks {
        t.abort();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(rec.status, Status::Succeeded, "{}", rec.to_json());
    assert!(rec.verification["cache"].ok, "{:?}", rec.verification["cache"]);
    let restored_at = restored_at.lock().unwrap().expect("the restore step finished");
    let early: Vec<_> = acked.iter().filter(|(_, t)| *t < restored_at).map(|(v, _)| v.clone()).collect();
    assert!(early.is_empty(), "popped inside the fence window: {early:?}");
    let mut got: Vec<String> = acked.iter().map(|(v, _)| v.clone()).collect();
    got.sort();
    assert_eq!(got, expected, "every restored element is handed out once, after the fence");
    assert!(refused.load(std::sync::atomic::Ordering::SeqCst) > 0, "the blocked consumers were refused in the window");
    let m: Vec<String> = c.lrange(&moved, 0, -1).await.unwrap();
    assert_eq!(m, ["m1", "m2", "m3"]);
    let _: () = c.del(&moved).await.unwrap();
    cleanup(&mut c, &pattern).await;
}

/// Set in the child process of `large_values_stay_in_bounded_memory`: the one
/// operation it runs (`capture`, `restore` or `verify`), with its peak RSS on stdout.
const MEMORY_CHILD: &str = "ROLLBACK_REDIS_TEST_MEMORY_OP";

/// The child's half: one driver operation in a fresh process, so `VmHWM` is that
/// operation's peak alone.
async fn memory_child(op: &str) {
    let dir = std::path::PathBuf::from(std::env::var("ROLLBACK_REDIS_TEST_MEMORY_DIR").unwrap());
    let pattern = std::env::var("ROLLBACK_REDIS_TEST_MEMORY_PATTERN").unwrap();
    let db: u32 = std::env::var("ROLLBACK_REDIS_TEST_MEMORY_DB").unwrap().parse().unwrap();
    let store = rollback_core::Store::open(dir.join("store")).unwrap();
    let cfg = ComponentConfig::new("cache", "redis").option("url", url(db)).option("pattern", pattern);
    let env = rollback_core::DriverEnv { base_dir: dir.clone(), redactor: Default::default() };
    let d = Registry::with_default_drivers().build(&cfg, &env).unwrap();
    let ctx = Context::new("cache", store, &dir);
    let part_file = dir.join("part.json");
    match op {
        "capture" => {
            let cap = d.capture(&ctx).await.unwrap();
            let part = rollback_core::Part {
                component: "cache".into(),
                driver: "redis".into(),
                phase: 1,
                state: cap.state,
                artifacts: cap.artifacts,
                capture_ms: 0,
            };
            std::fs::write(&part_file, serde_json::to_vec(&part).unwrap()).unwrap();
        }
        "restore" | "verify" => {
            let part: rollback_core::Part = serde_json::from_slice(&std::fs::read(&part_file).unwrap()).unwrap();
            if op == "restore" {
                d.restore(&ctx, &part).await.unwrap();
            } else {
                let v = d.verify(&ctx, &part).await.unwrap();
                assert!(v.ok, "{v:?}");
            }
        }
        other => panic!("unknown operation {other}"),
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches("kB").trim();
    // A line of its own: the harness prints the test's name without a newline.
    println!("\npeak-rss-kb={kb}");
}

/// A capture of large values holds a bounded number of bytes in memory, not a page of
/// keys' worth (2,200 values of 512 KB once took 1.1 GB); the restore and the verify
/// of that snapshot too. Each operation runs in a child process (this test binary,
/// running only this test) that reports its own peak RSS. The test owns db 14: other
/// keys there would spread its keys over many SCAN pages, and hide a page's worth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_stay_in_bounded_memory() {
    if let Ok(op) = std::env::var(MEMORY_CHILD) {
        memory_child(&op).await;
        return;
    }
    let _server = server().await;
    let db = 14;
    let dir = tempfile::tempdir().unwrap();
    let mut c = con(db).await;
    let _: () = redis::cmd("FLUSHDB").query_async(&mut c).await.unwrap();
    let p = prefix("memory");
    let pattern = format!("{p}*");
    // 165 MB: 300 strings and 30 hashes of 512 KB each, of bytes LZF cannot shrink.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = |n: usize| {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect::<Vec<u8>>()
    };
    for chunk in 0..30 {
        let mut pipe = redis::pipe();
        for i in 0..10 {
            pipe.set(format!("{p}s:{}", chunk * 10 + i), noise(512 << 10)).ignore();
        }
        let fields: Vec<(String, Vec<u8>)> = (0..256).map(|f| (format!("f{f}"), noise(2 << 10))).collect();
        pipe.hset_multiple(format!("{p}h:{chunk}"), &fields).ignore();
        let _: () = pipe.query_async(&mut c).await.unwrap();
    }
    let mut peaks = Vec::new();
    let mut failed = None;
    for op in ["capture", "restore", "verify"] {
        let t = std::time::Instant::now();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["large_values_stay_in_bounded_memory", "--exact", "--nocapture", "--test-threads=1"])
            .env(MEMORY_CHILD, op)
            .env("ROLLBACK_REDIS_TEST_MEMORY_DIR", dir.path())
            .env("ROLLBACK_REDIS_TEST_MEMORY_PATTERN", &pattern)
            .env("ROLLBACK_REDIS_TEST_MEMORY_DB", db.to_string())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let kb = text.lines().find_map(|l| l.strip_prefix("peak-rss-kb=")).and_then(|kb| kb.parse::<u64>().ok());
        match kb {
            Some(kb) if out.status.success() => peaks.push((op, kb / 1024, t.elapsed().as_millis())),
            _ => {
                failed = Some(format!("{op} failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr)));
                break;
            }
        }
    }
    println!("peak RSS in MB, ms: {peaks:?}");
    let n = c.keys::<_, Vec<String>>(&pattern).await.unwrap().len();
    // 165 MB are not left in the server, whatever the outcome.
    let _: () = redis::cmd("FLUSHDB").query_async(&mut c).await.unwrap();
    assert_eq!(failed, None);
    assert_eq!(n, 330);
    // Reads of a page's worth of keys held all 165 MB at once (213 MB peak for the
    // capture and the verify), and the restore's 8 MB batches, 6 queued, 104 MB. The
    // bounded reads need about 45 MB here; the bound leaves room for a busy allocator.
    for (op, mb, _) in &peaks {
        assert!(*mb < 90, "{op} peaked at {mb} MB for 165 MB of values: {peaks:?}");
    }
}

/// Writers hammer hashes and sets (large enough to be hash tables), and turn keys
/// from one type into another, while snapshots are taken: whatever each snapshot
/// stored, a rollback to it succeeds and verifies equal (the values' hashes come from
/// the same read as the values themselves).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_taken_under_writers_roll_back_and_verify_equal() {
    let _server = server().await;
    let db = 8;
    let dir = tempfile::tempdir().unwrap();
    let mut c = con(db).await;
    let p = prefix("hammer");
    let pattern = format!("{p}*");
    let mut pipe = redis::pipe();
    for i in 0..60 {
        let fields: Vec<(String, String)> = (0..200).map(|f| (format!("f{f}"), format!("v{f}"))).collect();
        pipe.hset_multiple(format!("{p}h:{i}"), &fields).ignore();
        let members: Vec<String> = (0..200).map(|m| format!("m{m}")).collect();
        pipe.sadd(format!("{p}s:{i}"), &members).ignore();
        pipe.set(format!("{p}x:{i}"), "a string for now").ignore();
    }
    let _: () = pipe.query_async(&mut c).await.unwrap();
    let stack = stack_toml(dir.path(), &component("cache", db, &pattern, "replace"));

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..2u64 {
        let (stop, writes, p) = (stop.clone(), writes.clone(), p.clone());
        writers.push(tokio::spawn(async move {
            let mut c = con(db).await;
            let mut n = w;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let mut pipe = redis::pipe();
                for _ in 0..40 {
                    n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let (i, f) = ((n >> 33) % 60, (n >> 45) % 400);
                    match (n >> 20) % 4 {
                        0 => pipe.hset(format!("{p}h:{i}"), format!("f{f}"), n).ignore(),
                        1 => pipe.sadd(format!("{p}s:{i}"), format!("m{f}")).ignore(),
                        2 => pipe.srem(format!("{p}s:{i}"), format!("m{}", f / 2)).ignore(),
                        // A string becomes a hash, or a hash a string.
                        _ if f % 2 == 0 => {
                            pipe.del(format!("{p}x:{i}")).ignore().hset(format!("{p}x:{i}"), "k", n).ignore()
                        }
                        _ => pipe.del(format!("{p}x:{i}")).ignore().set(format!("{p}x:{i}"), n).ignore(),
                    };
                }
                let _: () = pipe.query_async(&mut c).await.unwrap();
                writes.fetch_add(40, std::sync::atomic::Ordering::SeqCst);
            }
        }));
    }
    let t0 = std::time::Instant::now();
    while writes.load(std::sync::atomic::Ordering::SeqCst) < 2000 {
        assert!(t0.elapsed() < Duration::from_secs(30), "the writers do not write");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut snaps = Vec::new();
    for _ in 0..4 {
        let before = writes.load(std::sync::atomic::Ordering::SeqCst);
        snaps.push(stack.snapshot(SnapshotOptions::default()).await.unwrap());
        assert!(writes.load(std::sync::atomic::Ordering::SeqCst) > before, "the writers wrote during the capture");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    for snap in &snaps {
        let rec = stack.rollback(&snap.id, RollbackOptions::default()).await.unwrap();
        assert_eq!(rec.status, Status::Succeeded, "{}", rec.to_json());
        assert!(rec.verification["cache"].ok, "{:?}", rec.verification["cache"]);
        let v = stack.verify(&snap.id, &[]).await.unwrap();
        assert!(v.ok, "{v:?}");
    }
    cleanup(&mut c, &pattern).await;
}

/// Values whose in-memory encoding the restore changes (Redis loads a small hash,
/// set or sorted set compactly, whatever it was when dumped): a hash and a sorted set
/// that shrank, a set of integers that once held a string, a list. Each verifies
/// equal after the rollback.
#[tokio::test]
async fn values_whose_encoding_the_restore_changes_verify_equal() {
    let _server = server().await;
    let db = 8;
    let dir = tempfile::tempdir().unwrap();
    let mut c = con(db).await;
    let p = prefix("encoding");
    let pattern = format!("{p}*");
    let big: Vec<(String, String)> = (0..300).map(|i| (format!("f{i}"), format!("v{i}"))).collect();
    let _: () = c.hset_multiple(format!("{p}hash"), &big).await.unwrap();
    let gone: Vec<String> = (3..300).map(|i| format!("f{i}")).collect();
    let _: () = c.hdel(format!("{p}hash"), &gone).await.unwrap();
    let zs: Vec<(f64, String)> = (0..300).map(|i| (i as f64 / 7.0, format!("z{i}"))).collect();
    let _: () = c.zadd_multiple(format!("{p}zset"), &zs).await.unwrap();
    let gone: Vec<String> = (4..300).map(|i| format!("z{i}")).collect();
    let _: () = c.zrem(format!("{p}zset"), &gone).await.unwrap();
    let _: () = c.sadd(format!("{p}ints"), &["1", "2", "300", "not a number"]).await.unwrap();
    let _: () = c.srem(format!("{p}ints"), "not a number").await.unwrap();
    let members: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
    let _: () = c.sadd(format!("{p}set"), &members).await.unwrap();
    let _: () = c.srem(format!("{p}set"), &members[2..]).await.unwrap();
    let items: Vec<String> = (0..500).map(|i| format!("item {i} {}", "x".repeat(i % 40))).collect();
    let _: () = c.rpush(format!("{p}list"), &items).await.unwrap();
    let _: () = c.ltrim(format!("{p}list"), 0, 9).await.unwrap();
    let stack = stack_toml(dir.path(), &component("cache", db, &pattern, "replace"));
    let snap = stack.snapshot(SnapshotOptions::default()).await.unwrap();
    let _: () = c.set(format!("{p}hash"), "deployed").await.unwrap();
    let _: () = c.del(&[format!("{p}zset"), format!("{p}ints"), format!("{p}set"), format!("{p}list")]).await.unwrap();

    let before = key_space(&mut c, &pattern).await;
    let rec = stack.rollback(&snap.id, RollbackOptions::default()).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{}", rec.to_json());
    assert!(stack.verify(&snap.id, &[]).await.unwrap().ok);
    let after = key_space(&mut c, &pattern).await;
    assert_ne!(before, after);
    let h: Vec<(String, String)> = c.hgetall(format!("{p}hash")).await.unwrap();
    assert_eq!(h.len(), 3);
    let s: Vec<i64> = c.smembers(format!("{p}ints")).await.unwrap();
    assert_eq!(s.len(), 3);
    cleanup(&mut c, &pattern).await;
}

/// A user that may not run `MEMORY USAGE` (a managed server may rename or refuse it)
/// still captures, restores and verifies: its keys are read a few at a time.
#[tokio::test]
async fn a_user_without_memory_usage_still_captures() {
    let _server = server().await;
    let db = 8;
    let dir = tempfile::tempdir().unwrap();
    let mut c = con(db).await;
    let p = prefix("nomemory");
    let pattern = format!("{p}*");
    fill(&mut c, &p).await;
    let user = AclUser(format!("rbtest-nomemory-{:08x}", rand::random::<u32>()));
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", &user.0, "on", ">nomemory-pw", "~*", "&*", "+@all", "-memory"][..])
        .query_async(&mut c)
        .await
        .unwrap();
    let refused: redis::RedisResult<Option<u64>> = {
        let u = format!("redis://{}:nomemory-pw@{}/{db}", user.0, base_url().trim_start_matches("redis://"));
        let mut uc = redis::Client::open(u).unwrap().get_multiplexed_async_connection().await.unwrap();
        redis::cmd("MEMORY").arg("USAGE").arg(format!("{p}str")).query_async(&mut uc).await
    };
    assert!(refused.is_err(), "the user may not run MEMORY USAGE");
    let store = rollback_core::Store::open(dir.path().join("store")).unwrap();
    let u = format!("redis://{}:nomemory-pw@{}/{db}", user.0, base_url().trim_start_matches("redis://"));
    let cfg = ComponentConfig::new("cache", "redis").option("url", u).option("pattern", pattern.clone());
    let env = rollback_core::DriverEnv { base_dir: dir.path().into(), redactor: Default::default() };
    let d = Registry::with_default_drivers().build(&cfg, &env).unwrap();
    let ctx = Context::new("cache", store, dir.path());
    let cap = d.capture(&ctx).await.unwrap();
    assert_eq!(cap.state["keys"], 13);
    let part = rollback_core::Part {
        component: "cache".into(),
        driver: "redis".into(),
        phase: 1,
        state: cap.state,
        artifacts: cap.artifacts,
        capture_ms: 0,
    };
    let _: () = c.set(format!("{p}str"), "changed").await.unwrap();
    assert!(!d.verify(&ctx, &part).await.unwrap().ok);
    d.restore(&ctx, &part).await.unwrap();
    assert!(d.verify(&ctx, &part).await.unwrap().ok);
    let s: String = c.get(format!("{p}str")).await.unwrap();
    assert_eq!(s, "hello");
    cleanup(&mut c, &pattern).await;
}

/// A url's user that may run ACL but not CLIENT cannot unblock the clients a restore
/// would serve inside the window: no fence is raised, the rollback goes on, and the
/// record says the writers were neither stopped nor fenced, and why. Nobody's rules
/// change.
#[tokio::test]
async fn a_user_without_client_gets_no_fence_and_the_record_says_why() {
    let _server = server().await;
    let db = 10;
    let dir = tempfile::tempdir().unwrap();
    let mut c = con(db).await;
    let p = prefix("noclient");
    let pattern = format!("{p}*");
    fill(&mut c, &p).await;
    let user = AclUser(format!("rbtest-noclient-{:08x}", rand::random::<u32>()));
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", &user.0, "on", ">noclient-pw", "~*", "&*", "+@all", "-client"][..])
        .query_async(&mut c)
        .await
        .unwrap();
    let rules_default = acl_rules(&mut c, "default").await;
    let u = format!("redis://{}:noclient-pw@{}/{db}", user.0, base_url().trim_start_matches("redis://"));
    let toml = format!("[[component]]\nname = \"cache\"\ndriver = \"redis\"\nurl = \"{u}\"\npattern = \"{pattern}\"\n");
    let stack = stack_toml(dir.path(), &toml);
    let snap = stack.snapshot(SnapshotOptions::default()).await.unwrap();
    let _: () = c.set(format!("{p}str"), "changed").await.unwrap();
    let rec = stack.rollback(&snap.id, RollbackOptions::default()).await.unwrap();
    assert_eq!(rec.status, Status::Succeeded, "{}", rec.to_json());
    assert!(rec.fences.is_empty(), "{:?}", rec.fences);
    let notes = rec.notes.join("\n");
    assert!(notes.contains("nor fenced") && notes.contains("CLIENT LIST") && notes.contains("+client"), "{notes}");
    assert_eq!(acl_rules(&mut c, "default").await, rules_default);
    assert_eq!(acl_rules(&mut c, "rollback-fence").await, None);
    let s: String = c.get(format!("{p}str")).await.unwrap();
    assert_eq!(s, "hello");
    cleanup(&mut c, &pattern).await;
}
