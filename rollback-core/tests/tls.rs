//! Connections over TLS to real servers that accept nothing else, started by
//! `scripts/tls-servers.sh` with certificates from a CA it makes (and an unrelated CA
//! for the wrong-trust cases): a second PostgreSQL cluster with `hostssl` lines only,
//! Redis on a TLS port with an ACL user, MariaDB with `require_secure_transport`.
//! Passwords must never reach the store, records, events or errors.
#![cfg(all(feature = "driver-postgres", feature = "driver-redis", feature = "driver-mysql"))]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use common::*;
use rollback_core::{ErrorKind, Scope, SnapshotOptions, Stack, StackConfig, Status};

const PG_PASSWORD: &str = "tls-secret-PW1";

fn env() -> &'static HashMap<String, String> {
    tls_servers()
}

/// `psql` over TLS (verify-full): the oracle, independent of the driver.
fn psql(db: &str, sql: &str) -> String {
    let e = env();
    let url = format!(
        "postgres://rollback_tls:{PG_PASSWORD}@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}",
        e["PG_TLS_PORT"], e["TLS_CA"]
    );
    let out = Command::new("psql").args([&url, "-XAtqv", "ON_ERROR_STOP=1", "-c", sql]).output().unwrap();
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A scratch database on the TLS cluster.
fn scratch_db(tag: &str) -> String {
    let name = format!("tls_{tag}_{:08x}", rand::random::<u32>());
    psql("tlsdb", &format!("CREATE DATABASE {name}"));
    name
}

/// A stack whose url is `url` with `${PG_TLS_PASSWORD}` resolved from a private lookup
/// (the way an operator keeps the password out of the file).
fn tls_stack(dir: &Path, url: &str, extra: &str) -> Stack {
    let toml = format!(
        "[store]\npath = \"{}\"\n[[component]]\nname = \"db\"\ndriver = \"postgres\"\nurl = \"{url}\"\n{extra}\n",
        dir.join("store").display()
    );
    let lookup = |k: &str| (k == "PG_TLS_PASSWORD").then(|| PG_PASSWORD.to_string());
    let cfg = StackConfig::from_toml_str(&toml, Some(&dir.join("rollback.toml")), dir, &lookup).unwrap();
    Stack::new(cfg, &rollback_core::Registry::with_default_drivers()).unwrap()
}

fn url(db: &str, params: &str) -> String {
    format!("postgres://rollback_tls:${{PG_TLS_PASSWORD}}@localhost:{}/{db}?{params}", env()["PG_TLS_PORT"])
}

/// What a rollback that must not succeed said: its error, or its record.
async fn refused_rollback(s: &Stack, snap: &str) -> String {
    match s.rollback(snap, opts(Scope::Complete)).await {
        Err(e) => e.to_string(),
        Ok(r) => {
            assert_ne!(r.status, Status::Succeeded, "{}", r.to_json());
            r.to_json()
        }
    }
}

/// Every file under `dir`, read as text.
fn all_text(dir: &Path) -> String {
    let mut s = String::new();
    for e in walk(dir) {
        s.push_str(&String::from_utf8_lossy(&std::fs::read(e).unwrap_or_default()));
    }
    s
}

fn walk(d: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            v.extend(walk(&p));
        } else {
            v.push(p);
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_snapshot_rollback_and_verify_over_tls() {
    let db = scratch_db("full");
    psql(&db, "CREATE TABLE orders (id int PRIMARY KEY, qty int); INSERT INTO orders SELECT g, g FROM generate_series(1, 500) g;");
    let (_t, dir) = tmp();
    let params = format!("sslmode=verify-full&sslrootcert={}", env()["TLS_CA"]);
    let s = tls_stack(&dir, &url(&db, &params), "");

    let text = s.check().await.unwrap().components["db"].detail.clone();
    assert!(text.contains("TLS") && text.contains("certificate and host name verified"), "{text}");

    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
    psql(&db, "DELETE FROM orders WHERE id > 250; UPDATE orders SET qty = 0;");
    assert!(!s.verify(&snap.id, &[]).await.unwrap().ok);
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert_eq!(psql(&db, "SELECT count(*), sum(qty) FROM orders"), "500|125250");
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);

    // The password stays out of everything the library writes.
    assert!(!all_text(&dir.join("store")).contains(PG_PASSWORD), "the password is in the store");
    assert!(!r.to_json().contains(PG_PASSWORD));
    psql("tlsdb", &format!("DROP DATABASE {db} WITH (FORCE)"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wrong_ca_is_refused_clearly_and_nothing_changes() {
    let db = scratch_db("wrongca");
    psql(&db, "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);");
    let (_t, dir) = tmp();
    let good = tls_stack(&dir, &url(&db, &format!("sslmode=verify-full&sslrootcert={}", env()["TLS_CA"])), "");
    let snap = good.snapshot(SnapshotOptions::default()).await.unwrap();
    psql(&db, "INSERT INTO t VALUES (3)");

    // The same store, a url trusting another CA.
    let bad = tls_stack(&dir, &url(&db, &format!("sslmode=verify-full&sslrootcert={}", env()["TLS_OTHER_CA"])), "");
    let e = bad.rollback(&snap.id, opts(Scope::Complete)).await;
    let text = match e {
        Err(e) => e.to_string(),
        Ok(r) => {
            assert_ne!(r.status, Status::Succeeded, "{}", r.to_json());
            r.to_json()
        }
    };
    assert!(text.contains("not signed by a trusted CA"), "{text}");
    assert!(!text.contains(PG_PASSWORD), "{text}");
    assert_eq!(psql(&db, "SELECT count(*) FROM t"), "3", "nothing changed");
    let e = bad.snapshot(SnapshotOptions::default()).await.unwrap_err();
    assert!(e.to_string().contains("not signed by a trusted CA"), "{e}");
    psql("tlsdb", &format!("DROP DATABASE {db} WITH (FORCE)"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sslmode_disable_is_refused_by_the_server_and_the_error_says_so() {
    let (_t, dir) = tmp();
    let s = tls_stack(&dir, &url("tlsdb", "sslmode=disable"), "");
    let e = s.snapshot(SnapshotOptions::default()).await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("no encryption") && text.contains("pg_hba.conf"), "{text}");
    assert!(!text.contains(PG_PASSWORD), "{text}");
    // `check` says the same, per component, without failing the whole call.
    let check = s.check().await.unwrap().components["db"].detail.clone();
    assert!(check.contains("no encryption"), "{check}");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_without_a_ca_file_is_a_config_error_naming_the_key() {
    let (_t, dir) = tmp();
    let s = tls_stack(&dir, &url("tlsdb", "sslmode=verify-full"), "");
    let e = s.snapshot(SnapshotOptions::default()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConfigInvalid, "{e}");
    assert!(e.to_string().contains("sslrootcert"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn require_encrypts_without_a_ca_and_a_password_file_and_client_certificate_work() {
    let (_t, dir) = tmp();
    std::fs::write(dir.join("pgpass"), format!("{PG_PASSWORD}\n")).unwrap();
    let e = env();
    // No password in the url: the `password_file` key gives it. The client certificate
    // is offered (the server accepts it; its hba asks for a password).
    let u = format!(
        "postgres://rollback_tls@localhost:{}/tlsdb?sslmode=require&sslcert={}&sslkey={}",
        e["PG_TLS_PORT"], e["TLS_CLIENT_CERT"], e["TLS_CLIENT_KEY"]
    );
    let s = tls_stack(&dir, &u, "password_file = \"pgpass\"");
    let check = s.check().await.unwrap().components["db"].detail.clone();
    assert!(check.contains("TLS") && check.contains("not verified"), "{check}");
    assert!(!check.contains(PG_PASSWORD));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_mode_pooler_is_refused_at_preflight() {
    let (_t, dir) = tmp();
    let s = tls_stack(&dir, "postgres://postgres.abcd:secret@aws-0-eu-central-1.pooler.supabase.com:6543/postgres", "");
    let e = s.snapshot(SnapshotOptions::default()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("transaction-mode") && e.to_string().contains("session pooler"), "{e}");
    assert!(!e.to_string().contains("secret"), "{e}");
}

const REDIS_PASSWORD: &str = "redis-secret-PW2";

fn redis_cli(args: &[&str]) -> String {
    let e = env();
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert", &e["TLS_CA"], "-p", &e["REDIS_TLS_PORT"], "--user", "rbuser", "--pass"])
        .arg(REDIS_PASSWORD)
        .arg("--no-auth-warning")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn redis_stack(dir: &Path, ca: &str, db: u32, pattern: &str) -> Stack {
    let toml = format!(
        "[store]\npath = \"{}\"\n[[component]]\nname = \"cache\"\ndriver = \"redis\"\n\
         url = \"rediss://rbuser:${{REDIS_PW}}@localhost:{}/{db}\"\nca = \"{ca}\"\npattern = \"{pattern}\"\n",
        dir.join("store").display(),
        env()["REDIS_TLS_PORT"]
    );
    let lookup = |k: &str| (k == "REDIS_PW").then(|| REDIS_PASSWORD.to_string());
    let cfg = StackConfig::from_toml_str(&toml, Some(&dir.join("rollback.toml")), dir, &lookup).unwrap();
    Stack::new(cfg, &rollback_core::Registry::with_default_drivers()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn rediss_with_an_acl_user_rolls_back_and_a_wrong_ca_is_refused() {
    let (_t, dir) = tmp();
    // Each run its own key prefix in db 3: runs never see each other's keys.
    let prefix = format!("tls{:08x}", rand::random::<u32>());
    let pattern = format!("{prefix}:*");
    for i in 0..50 {
        redis_cli(&["-n", "3", "SET", &format!("{prefix}:k{i}"), &format!("v{i}")]);
    }
    let s = redis_stack(&dir, &env()["TLS_CA"], 3, &pattern);
    let check = s.check().await.unwrap().components["cache"].detail.clone();
    assert!(check.contains("TLS, certificate and host name verified"), "{check}");
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
    redis_cli(&["-n", "3", "SET", &format!("{prefix}:k1"), "changed"]);
    redis_cli(&["-n", "3", "DEL", &format!("{prefix}:k2")]);
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert_eq!(redis_cli(&["-n", "3", "GET", &format!("{prefix}:k1")]), "v1");
    assert_eq!(redis_cli(&["-n", "3", "GET", &format!("{prefix}:k2")]), "v2");
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
    assert!(!all_text(&dir.join("store")).contains(REDIS_PASSWORD));
    assert!(!r.to_json().contains(REDIS_PASSWORD));

    // The same store, another CA: nothing is touched.
    redis_cli(&["-n", "3", "SET", &format!("{prefix}:k1"), "changed-again"]);
    let bad = redis_stack(&dir, &env()["TLS_OTHER_CA"], 3, &pattern);
    let text = refused_rollback(&bad, &snap.id).await;
    assert!(text.contains("not signed by a trusted CA"), "{text}");
    assert!(!text.contains(REDIS_PASSWORD), "{text}");
    assert_eq!(redis_cli(&["-n", "3", "GET", &format!("{prefix}:k1")]), "changed-again");
    let keys = redis_cli(&["-n", "3", "--scan", "--pattern", &pattern]);
    for k in keys.lines() {
        redis_cli(&["-n", "3", "DEL", k]);
    }
}

const MYSQL_PASSWORD: &str = "mysql-secret-PW3";

fn mariadb(sql: &str) -> String {
    let e = env();
    let out = Command::new("mariadb")
        .args(["--no-defaults", "--ssl", "--ssl-ca", &e["TLS_CA"], "--ssl-verify-server-cert", "-h", "127.0.0.1"])
        .args(["-P", &e["MYSQL_TLS_PORT"], "-u", "rbtls"])
        .arg(format!("-p{MYSQL_PASSWORD}"))
        .args(["-N", "-B", "-e", sql])
        .output()
        .unwrap();
    assert!(out.status.success(), "mariadb {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn mysql_stack(dir: &Path, db: &str, params: &str) -> Stack {
    let toml = format!(
        "[store]\npath = \"{}\"\n[[component]]\nname = \"db\"\ndriver = \"mysql\"\n\
         url = \"mysql://rbtls:${{MYSQL_PW}}@localhost:{}/{db}?{params}\"\n",
        dir.join("store").display(),
        env()["MYSQL_TLS_PORT"]
    );
    let lookup = |k: &str| (k == "MYSQL_PW").then(|| MYSQL_PASSWORD.to_string());
    let cfg = StackConfig::from_toml_str(&toml, Some(&dir.join("rollback.toml")), dir, &lookup).unwrap();
    Stack::new(cfg, &rollback_core::Registry::with_default_drivers()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_verify_identity_round_trip_and_refusals() {
    let db = format!("tls_{:08x}", rand::random::<u32>());
    mariadb(&format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.orders (id INT PRIMARY KEY, qty INT); \
         INSERT INTO {db}.orders VALUES (1, 10), (2, 20), (3, 30);"
    ));
    let (_t, dir) = tmp();
    let s = mysql_stack(&dir, &db, &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={}", env()["TLS_CA"]));
    let check = s.check().await.unwrap().components["db"].detail.clone();
    assert!(check.contains("TLS (") && check.contains("certificate and host name verified"), "{check}");
    let snap = s.snapshot(SnapshotOptions::default()).await.unwrap();
    mariadb(&format!("DELETE FROM {db}.orders WHERE id = 2; UPDATE {db}.orders SET qty = 0"));
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert_eq!(mariadb(&format!("SELECT SUM(qty), COUNT(*) FROM {db}.orders")), "60\t3");
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
    assert!(!all_text(&dir.join("store")).contains(MYSQL_PASSWORD));
    assert!(!r.to_json().contains(MYSQL_PASSWORD));

    // Another CA: refused, nothing changes.
    mariadb(&format!("UPDATE {db}.orders SET qty = 1 WHERE id = 1"));
    let bad = mysql_stack(&dir, &db, &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={}", env()["TLS_OTHER_CA"]));
    let text = refused_rollback(&bad, &snap.id).await;
    assert!(text.contains("not signed by a trusted CA"), "{text}");
    assert!(!text.contains(MYSQL_PASSWORD), "{text}");
    assert_eq!(mariadb(&format!("SELECT qty FROM {db}.orders WHERE id = 1")), "1");

    // Without TLS the server refuses the login (require_secure_transport).
    let plain = mysql_stack(&dir, &db, "ssl-mode=DISABLED");
    let e = plain.snapshot(SnapshotOptions::default()).await.unwrap_err();
    assert!(!e.to_string().contains(MYSQL_PASSWORD), "{e}");
    // REQUIRED encrypts without checking whose certificate it is.
    let req = mysql_stack(&dir, &db, "ssl-mode=REQUIRED");
    let check = req.check().await.unwrap().components["db"].detail.clone();
    assert!(check.contains("not verified"), "{check}");
    // A mode MySQL does not have is a config error naming it.
    let (_t2, dir2) = tmp();
    let toml = format!(
        "[store]\npath = \"s\"\n[[component]]\nname = \"db\"\ndriver = \"mysql\"\nurl = \"mysql://u@h/{db}?ssl-mode=VERIFY\"\n"
    );
    let cfg = StackConfig::from_toml_str(&toml, None, &dir2, &|_| None).unwrap();
    let e = Stack::new(cfg, &rollback_core::Registry::with_default_drivers()).unwrap_err();
    assert!(e.to_string().contains("ssl-mode `VERIFY`"), "{e}");
    mariadb(&format!("DROP DATABASE {db}"));
}
