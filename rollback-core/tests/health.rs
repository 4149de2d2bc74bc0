//! Health checks against real endpoints, sockets, files and programs; https against
//! the endpoint `scripts/tls-servers.sh` starts with a throwaway CA.

mod common;

use std::time::Duration;

use rollback_core::{HealthCheck, HealthKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn serve(status: &'static str, body: &'static str, chunked: bool) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let resp = if chunked {
                let half = body.len() / 2;
                format!(
                    "HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
                    half,
                    &body[..half],
                    body.len() - half,
                    &body[half..]
                )
            } else {
                format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            };
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    format!("http://{addr}/health")
}

fn check(kind: HealthKind) -> HealthCheck {
    let mut c = HealthCheck::new(kind);
    c.timeout = Duration::from_millis(500);
    c.interval = Duration::from_millis(50);
    c
}

fn http(url: String, status: u16, json: Option<serde_json::Value>) -> HealthCheck {
    check(HealthKind::Http {
        url,
        status,
        json: json.map(|j| j.as_object().unwrap().clone()),
        headers: Default::default(),
        ca: None,
        expect: Vec::new(),
    })
}

#[tokio::test]
async fn http_status_and_json_fields() {
    let dir = std::env::temp_dir();
    let ok = serve("200 OK", r#"{"status":"healthy","positions":3}"#, false).await;
    assert!(http(ok.clone(), 200, Some(serde_json::json!({"status": "healthy"}))).wait(&dir).await.ok);
    let r = http(ok.clone(), 200, Some(serde_json::json!({"status": "degraded"}))).wait(&dir).await;
    assert!(!r.ok && r.detail.contains("status"), "{r:?}");
    let chunked = serve("200 OK", r#"{"status":"healthy"}"#, true).await;
    assert!(http(chunked, 200, Some(serde_json::json!({"status": "healthy"}))).wait(&dir).await.ok);
    let down = serve("503 Service Unavailable", "{}", false).await;
    let r = http(down, 200, None).wait(&dir).await;
    assert!(!r.ok && r.detail.contains("503"), "{r:?}");
    // Nothing listening.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    assert!(!http(format!("http://127.0.0.1:{port}/"), 200, None).wait(&dir).await.ok);
}

#[tokio::test]
async fn tcp_heartbeat_command_and_log_errors() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    assert!(check(HealthKind::Tcp { addr }).wait(dir).await.ok);

    std::fs::write(dir.join("hb"), "").unwrap();
    let fresh = check(HealthKind::Heartbeat { file: "hb".into(), max_age: Duration::from_secs(30) });
    assert!(fresh.wait(dir).await.ok);
    tokio::time::sleep(Duration::from_millis(120)).await;
    let stale = check(HealthKind::Heartbeat { file: "hb".into(), max_age: Duration::from_millis(100) });
    assert!(!stale.wait(dir).await.ok);

    assert!(check(HealthKind::Command { argv: vec!["true".into()] }).wait(dir).await.ok);
    let r = check(HealthKind::Command { argv: vec!["sh".into(), "-c".into(), "echo boom >&2; exit 4".into()] })
        .wait(dir)
        .await;
    assert!(!r.ok && r.detail.contains("boom"), "{r:?}");

    let mut log = String::new();
    for i in 0..50 {
        log.push_str(if i % 10 == 0 { "ERROR order rejected\n" } else { "INFO fill\n" });
    }
    std::fs::write(dir.join("app.log"), &log).unwrap();
    let errs = |max, lines| check(HealthKind::LogErrors { file: "app.log".into(), regex: "ERROR".into(), max, lines });
    assert!(!errs(2, 50).wait(dir).await.ok, "5 errors in the last 50 lines");
    assert!(errs(5, 50).wait(dir).await.ok);
    assert!(errs(0, 9).wait(dir).await.ok, "the last 9 lines are clean");
}

#[tokio::test]
async fn keep_alive_servers_and_binary_logs_do_not_fail_healthy_services() {
    // A server that answers and keeps the connection open.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let body = r#"{"status":"healthy"}"#;
                let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                let _ = s.write_all(resp.as_bytes()).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let dir = std::env::temp_dir();
    let r = http(format!("http://{addr}/health"), 200, Some(serde_json::json!({"status": "healthy"}))).wait(&dir).await;
    assert!(r.ok, "{r:?}");

    let d = tempfile::tempdir().unwrap();
    let mut log = vec![0xff, 0xfe, b'\n'];
    log.extend_from_slice(b"INFO ok\nERROR \xc3\x28 bad utf8\n");
    std::fs::write(d.path().join("bin.log"), &log).unwrap();
    let c = check(HealthKind::LogErrors { file: "bin.log".into(), regex: "ERROR".into(), max: 1, lines: 10 });
    assert!(c.wait(d.path()).await.ok);
}

#[tokio::test]
async fn a_slow_check_passes_within_its_own_timeout() {
    // Answers after 11 s: longer than any fixed per-try cap of 10 s, well inside 30 s.
    let dir = tempfile::tempdir().unwrap();
    let mut c = HealthCheck::new(HealthKind::Command { argv: vec!["sh".into(), "-c".into(), "sleep 11".into()] });
    c.timeout = Duration::from_secs(30);
    let r = c.wait(dir.path()).await;
    assert!(r.ok, "{r:?}");
    // And a check still gives up at its timeout.
    c.timeout = Duration::from_millis(300);
    let t = std::time::Instant::now();
    assert!(!c.wait(dir.path()).await.ok);
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_command_check_keeps_only_the_end_of_its_output() {
    let d = tempfile::tempdir().unwrap();
    // 200 MB on stdout and 20 MB on stderr, then a failure.
    let script =
        "head -c 200000000 /dev/zero; head -c 20000000 /dev/zero | tr '\\0' x >&2; echo ' last words' >&2; exit 3";
    let mut c = HealthCheck::new(HealthKind::Command { argv: vec!["sh".into(), "-c".into(), script.into()] });
    c.timeout = Duration::from_secs(60);
    let r = c.probe(d.path()).await;
    assert!(!r.ok);
    assert!(r.detail.len() < 4096, "detail of {} bytes", r.detail.len());
    assert!(r.detail.ends_with("last words"), "{}", &r.detail[r.detail.len().saturating_sub(80)..]);
}

#[tokio::test]
async fn user_info_in_an_http_url_is_basic_auth_and_never_shown() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            // "ops:s3cr3t-pw" in base64; header names are case-insensitive.
            let ok = req.lines().any(|l| {
                l.split_once(':').is_some_and(|(k, v)| {
                    k.eq_ignore_ascii_case("authorization") && v.trim() == "Basic b3BzOnMzY3IzdC1wdw=="
                })
            });
            let resp = if ok {
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
            } else {
                "HTTP/1.1 401 No\r\nContent-Length: 0\r\n\r\n"
            };
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    let dir = std::env::temp_dir();
    let r = http(format!("http://ops:s3cr3t-pw@{addr}/health"), 200, None).wait(&dir).await;
    assert!(r.ok, "{r:?}");
    assert!(!r.check.contains("s3cr3t-pw") && r.check.contains("http://***@"), "{}", r.check);
    let r = http(format!("http://ops:wrong-pw@{addr}/health"), 200, None).wait(&dir).await;
    assert!(!r.ok && r.detail.contains("401"), "{r:?}");
    assert!(!format!("{r:?}").contains("wrong-pw"));
    // A token as the user, without a password, is a secret too; so is the user name.
    let c = http(format!("http://tok-3f9a77@{addr}/health"), 200, None);
    let r = c.wait(&dir).await;
    assert!(!r.ok && r.detail.contains("401"), "{r:?}");
    let shown = format!("{r:?}{c:?}{}", c.describe());
    assert!(!shown.contains("tok-3f9a77") && !shown.contains("ops"), "{shown}");
    // A URL the client cannot parse: its error shows no user info either.
    let r = http(format!("http://tok-3f9a77:pw-8c1@{addr}:99999/health"), 200, None).wait(&dir).await;
    assert!(!r.ok && r.detail.contains("is not a URL"), "{r:?}");
    assert!(!format!("{r:?}").contains("tok-3f9a77") && !format!("{r:?}").contains("pw-8c1"), "{r:?}");
}

#[tokio::test]
async fn a_heartbeat_from_the_future_is_not_healthy() {
    let d = tempfile::tempdir().unwrap();
    let f = std::fs::File::create(d.path().join("hb")).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(3600)).unwrap();
    let r = check(HealthKind::Heartbeat { file: "hb".into(), max_age: Duration::from_secs(30) }).probe(d.path()).await;
    assert!(!r.ok && r.detail.contains("future"), "{r:?}");
}

/// An https check parsed as `rollback.toml` would give it.
fn https(extra: serde_json::Value) -> HealthCheck {
    let e = common::tls_servers();
    let mut v = serde_json::json!({"http": format!("{}/health", e["HTTPS_URL"]), "ca": e["TLS_CA"], "timeout": "2s"});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    HealthCheck::parse_list(serde_json::json!([v])).unwrap().remove(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_a_private_ca_headers_and_json_bounds() {
    let dir = std::env::temp_dir();
    let key = common::tls_servers()["HTTPS_APIKEY"].clone();
    let ok = https(serde_json::json!({
        "headers": {"apikey": key},
        "expect": ["status == \"ok\"", "error_rate < 0.3", "nested.accuracy >= 0.9"]
    }));
    let r = ok.probe(&dir).await;
    assert!(r.ok, "{r:?}");

    // The header is required: without it the endpoint answers 401.
    let r = https(serde_json::json!({})).probe(&dir).await;
    assert!(!r.ok && r.detail.contains("401"), "{r:?}");
    // A bound that does not hold names the value and the bound.
    let r = https(serde_json::json!({"headers": {"apikey": key}, "expect": ["error_rate < 0.1"]})).probe(&dir).await;
    assert!(!r.ok && r.detail.contains("`error_rate` is 0.12, expected < 0.1"), "{r:?}");
    assert!(!format!("{r:?}").contains(&key), "the apikey is in the result: {r:?}");

    // Another CA: refused, and the reason says so.
    let mut wrong = https(serde_json::json!({"headers": {"apikey": key}}));
    if let HealthKind::Http { ca, .. } = &mut wrong.kind {
        *ca = Some(common::tls_servers()["TLS_OTHER_CA"].clone().into());
    }
    let r = wrong.probe(&dir).await;
    assert!(!r.ok && r.detail.contains("not signed by a trusted CA"), "{r:?}");
    // The system's roots do not know the test CA either.
    let mut system = https(serde_json::json!({"headers": {"apikey": key}}));
    if let HealthKind::Http { ca, .. } = &mut system.kind {
        *ca = None;
    }
    assert!(!system.probe(&dir).await.ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_apikey_from_the_environment_never_reaches_results_or_plans() {
    let (_t, dir) = common::tmp();
    let e = common::tls_servers();
    let toml = format!(
        "[store]\npath = \"store\"\n[[component]]\nname = \"api\"\ndriver = \"command\"\ncapture = [\"true\"]\nrestore = [\"true\"]\n\
         health = [{{ http = \"{}/health\", ca = \"{}\", headers = {{ apikey = \"${{SUPABASE_KEY}}\" }}, expect = [\"error_rate < 0.3\"] }}]\n",
        e["HTTPS_URL"], e["TLS_CA"]
    );
    let key = e["HTTPS_APIKEY"].clone();
    let lookup = |k: &str| (k == "SUPABASE_KEY").then(|| key.clone());
    let cfg =
        rollback_core::StackConfig::from_toml_str(&toml, Some(&dir.join("rollback.toml")), &dir, &lookup).unwrap();
    let s = rollback_core::Stack::new(cfg, &rollback_core::Registry::with_default_drivers()).unwrap();
    let h = s.health(&[]).await.unwrap();
    assert!(h["api"][0].ok, "{h:?}");
    let snap = common::snap(&s).await;
    let r = s.rollback(&snap.id, common::opts(rollback_core::Scope::Complete)).await.unwrap();
    assert_eq!(r.status, rollback_core::Status::Succeeded, "{}", r.to_json());
    let plan = s.plan(&snap.id, &rollback_core::Scope::Complete).await.unwrap();
    for text in [format!("{h:?}"), r.to_json(), format!("{plan:?}"), all_files(&dir.join("store"))] {
        assert!(!text.contains(&key), "the apikey leaked: {text}");
    }
}

fn all_files(d: &std::path::Path) -> String {
    let mut s = String::new();
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            s.push_str(&all_files(&p));
        } else {
            s.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()));
        }
    }
    s
}

/// A `files` component `app` (its deployed version in `app/version`) gated by `check`.
fn gated_stack(d: &std::path::Path, check: &str) -> rollback_core::Stack {
    common::write(&d.join("app/version"), "v1\n");
    common::stack(
        d,
        &format!("[[component]]\nname = \"app\"\ndriver = \"files\"\npaths = [\"app\"]\nhealth = [{check}]\n"),
    )
}

fn append(p: &std::path::Path, s: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).create(true).open(p).unwrap().write_all(s.as_bytes()).unwrap();
}

/// Sets `flag` once the restore step of the rollback has finished.
fn on_restored(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> rollback_core::EventCallback {
    std::sync::Arc::new(move |e: &rollback_core::Event| {
        if e.kind == "step_finished" && e.action == Some(rollback_core::StepAction::Restore) {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    })
}

/// The error lines of the bad release are why it is rolled back: a `log_errors` gate
/// counts only what the restored version writes, so a good restore is kept (it was
/// compensated, putting the bad release back), and a restored version that logs
/// errors still fails it.
#[tokio::test]
async fn a_log_errors_gate_judges_only_what_the_restored_version_wrote() {
    let (_t, d) = common::tmp();
    let log = d.join("logs/app.log");
    common::write(&log, "INFO v1 started\n");
    let s = gated_stack(
        &d,
        "{ log_errors = \"logs/app.log\", regex = \"ERROR\", max = 0, lines = 100, interval = \"1s\", timeout = \"5s\" }",
    );
    let good = common::snap(&s).await;
    assert_eq!(good.healthy, Some(true));
    // The bad release, and the errors it logged.
    common::write(&d.join("app/version"), "v2\n");
    append(&log, &"ERROR v2: order rejected\n".repeat(5));
    let r = s.rollback(&good.id, common::opts(rollback_core::Scope::Complete)).await.unwrap();
    assert_eq!(r.status, rollback_core::Status::Succeeded, "{}", r.to_json());
    assert_eq!(std::fs::read_to_string(d.join("app/version")).unwrap(), "v1\n");

    // The restored version logs errors of its own: the gate fails, and says so.
    common::write(&d.join("app/version"), "v2\n");
    let restored = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flag, log2) = (restored.clone(), log.clone());
    let writer = tokio::spawn(async move {
        while !flag.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        loop {
            append(&log2, "ERROR v1 cannot reach the exchange\n");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let o = rollback_core::RollbackOptions {
        on_event: Some(on_restored(restored)),
        ..common::opts(rollback_core::Scope::Complete)
    };
    let r = s.rollback(&good.id, o).await.unwrap();
    writer.abort();
    assert_eq!(r.status, rollback_core::Status::Compensated, "{}", r.to_json());
    let gate = r.steps.iter().find(|s| s.action == rollback_core::StepAction::HealthGate).unwrap();
    assert!(gate.error.as_deref().unwrap_or("").contains("error lines"), "{gate:?}");
}

/// Restores run before gates: what the restored version logs between the end of its
/// restore and the start of its gate (here, while another component's restore takes
/// a second and a half) is its own, and counts.
#[tokio::test]
async fn a_log_errors_gate_counts_what_the_restored_version_wrote_before_the_gate_began() {
    let (_t, d) = common::tmp();
    let log = d.join("logs/app.log");
    common::write(&log, "INFO v1 started\n");
    common::write(&d.join("app/version"), "v1\n");
    common::write(&d.join("slow.state"), "s1\n");
    let s = common::stack(
        &d,
        r#"
[[component]]
name = "app"
driver = "command"
phase = 2
capture = ["cat", "app/version"]
restore = ["sh", "-c", "cp \"$ROLLBACK_STATE_FILE\" app/version; (sleep 0.3; echo 'ERROR restored version cannot start' >> logs/app.log) >/dev/null 2>&1 &"]
health = [{ log_errors = "logs/app.log", regex = "ERROR", max = 0, lines = 100, interval = "200ms", timeout = "2s" }]

[[component]]
name = "slow"
driver = "command"
phase = 1
capture = ["cat", "slow.state"]
restore = ["sh", "-c", "sleep 1.5; cp \"$ROLLBACK_STATE_FILE\" slow.state"]
"#,
    );
    let snap = common::snap(&s).await;
    common::write(&d.join("app/version"), "v2\n");
    common::write(&d.join("slow.state"), "s2\n");
    let r = s.rollback(&snap.id, common::opts(rollback_core::Scope::Complete)).await.unwrap();
    let order: Vec<String> = r.steps.iter().map(|s| format!("{} {}", s.action, s.component)).collect();
    assert_eq!(order[..3], ["restore app", "restore slow", "health_gate app"], "{order:?}");
    assert_ne!(r.status, rollback_core::Status::Succeeded, "{}", r.to_json());
    let gate = r.steps.iter().find(|s| s.action == rollback_core::StepAction::HealthGate).unwrap();
    assert!(gate.error.as_deref().unwrap_or("").contains("1 error line"), "{gate:?}");
}

/// A beat the bad release wrote just before the rollback proves nothing about the
/// restored version: the gate waits for a beat written after the restore.
#[tokio::test]
async fn a_heartbeat_gate_does_not_pass_on_a_beat_from_before_the_restore() {
    let (_t, d) = common::tmp();
    let hb = d.join("run/heartbeat");
    common::write(&hb, "");
    let s = gated_stack(
        &d,
        "{ heartbeat = \"run/heartbeat\", max_age = \"30s\", timeout = \"1500ms\", interval = \"50ms\" }",
    );
    let good = common::snap(&s).await;
    assert_eq!(good.healthy, Some(true));
    // The bad release beats, then it is rolled back; nothing beats after the restore.
    common::write(&d.join("app/version"), "v2\n");
    common::write(&hb, "");
    let r = s.rollback(&good.id, common::opts(rollback_core::Scope::Complete)).await.unwrap();
    assert_eq!(r.status, rollback_core::Status::Compensated, "{}", r.to_json());
    let gate = r.steps.iter().find(|s| s.action == rollback_core::StepAction::HealthGate).unwrap();
    assert!(gate.error.as_deref().unwrap_or("").contains("no beat since the restore"), "{gate:?}");

    // The restored version beats: the gate passes.
    common::write(&hb, "");
    let restored = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flag, hb2) = (restored.clone(), hb.clone());
    let beater = tokio::spawn(async move {
        while !flag.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            common::write(&hb2, "");
        }
    });
    let o = rollback_core::RollbackOptions {
        on_event: Some(on_restored(restored)),
        ..common::opts(rollback_core::Scope::Complete)
    };
    let r = s.rollback(&good.id, o).await.unwrap();
    beater.abort();
    assert_eq!(r.status, rollback_core::Status::Succeeded, "{}", r.to_json());
    assert_eq!(std::fs::read_to_string(d.join("app/version")).unwrap(), "v1\n");
}

/// `interval = "0s"` made a check spin; zero and absurd intervals and timeouts are
/// refused when the config is loaded, naming the key.
#[test]
fn zero_and_absurd_intervals_and_timeouts_are_refused_naming_the_key() {
    let (_t, d) = common::tmp();
    for (check, key) in [
        ("{ tcp = \"127.0.0.1:1\", interval = \"0s\" }", "`interval`"),
        ("{ tcp = \"127.0.0.1:1\", interval = 0 }", "`interval`"),
        ("{ tcp = \"127.0.0.1:1\", interval = \"1ms\" }", "`interval`"),
        ("{ tcp = \"127.0.0.1:1\", interval = \"2d\" }", "`interval`"),
        ("{ tcp = \"127.0.0.1:1\", timeout = \"0s\" }", "`timeout`"),
        ("{ tcp = \"127.0.0.1:1\", timeout = \"5ms\" }", "`timeout`"),
        ("{ heartbeat = \"hb\", timeout = \"3650d\" }", "`timeout`"),
    ] {
        let text = format!("[[component]]\nname = \"c\"\ndriver = \"files\"\npaths = [\"c\"]\nhealth = [{check}]\n");
        let e = rollback_core::StackConfig::from_toml_str(&text, Some(&d.join("rollback.toml")), &d, &|_| None)
            .expect_err(check);
        assert_eq!(e.kind(), rollback_core::ErrorKind::ConfigInvalid, "{check}: {e}");
        assert!(e.to_string().contains("key `health`") && e.to_string().contains(key), "{check}: {e}");
    }
    let ok = "{ tcp = \"127.0.0.1:1\", interval = \"10ms\", timeout = \"100ms\" }";
    let text = format!("[[component]]\nname = \"c\"\ndriver = \"files\"\npaths = [\"c\"]\nhealth = [{ok}]\n");
    assert!(rollback_core::StackConfig::from_toml_str(&text, None, &d, &|_| None).is_ok());
}

/// `openssl` makes a CA (`NAME-ca.crt`) and a certificate for localhost signed by it
/// (`NAME.crt`, `NAME.key`) in `dir`.
fn make_ca_and_leaf(dir: &std::path::Path, name: &str) {
    let run = |args: &[&str]| {
        let o = std::process::Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let (ca, ca_key) = (format!("{name}-ca.crt"), format!("{name}-ca.key"));
    let mut a = vec!["req", "-x509", "-new"];
    a.extend(ec);
    let subj = format!("/CN={name} test CA");
    a.extend(["-keyout", &ca_key, "-out", &ca, "-days", "30", "-subj", &subj]);
    a.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    run(&a);
    let (key, csr, crt) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"));
    let mut a = vec!["req", "-new"];
    a.extend(ec);
    a.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"]);
    run(&a);
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n\
         subjectAltName=DNS:localhost,IP:127.0.0.1\nauthorityKeyIdentifier=keyid\n",
    )
    .unwrap();
    run(&["x509", "-req", "-in", &csr, "-CA", &ca, "-CAkey", &ca_key, "-set_serial", "0x1f2e3d", "-days", "30"]
        .into_iter()
        .chain(["-sha256", "-extfile", &ext, "-out", &crt])
        .collect::<Vec<_>>());
}

type ServerCfg = std::sync::Arc<std::sync::Mutex<std::sync::Arc<rustls::ServerConfig>>>;

fn server_config(dir: &std::path::Path, name: &str) -> std::sync::Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(dir.join(format!("{name}.crt")))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    std::sync::Arc::new(cfg)
}

/// An https endpoint answering 200 with the certificate `cfg` holds at each handshake.
fn https_endpoint(cfg: ServerCfg) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for sock in l.incoming().flatten() {
            let cfg = cfg.lock().unwrap().clone();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let Ok(conn) = rustls::ServerConnection::new(cfg) else { return };
                let mut tls = rustls::StreamOwned::new(conn, sock);
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    port
}

/// A long-running process (a watch) checks an endpoint whose CA is rotated: the new
/// CA in the same file is trusted from the next check on, and the removed one no
/// longer (it was read once per process and trusted forever).
#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_ca_file_is_trusted_from_the_next_check_and_the_old_one_no_longer() {
    let (_t, d) = common::tmp();
    make_ca_and_leaf(&d, "old");
    make_ca_and_leaf(&d, "new");
    let served: ServerCfg = std::sync::Arc::new(std::sync::Mutex::new(server_config(&d, "old")));
    let port = https_endpoint(served.clone());
    let ca = d.join("ca.pem");
    std::fs::copy(d.join("old-ca.crt"), &ca).unwrap();
    let c = HealthCheck::parse_list(serde_json::json!([
        {"http": format!("https://localhost:{port}/health"), "ca": "ca.pem", "timeout": "5s"}
    ]))
    .unwrap()
    .remove(0);
    let r = c.probe(&d).await;
    assert!(r.ok, "before the rotation: {r:?}");
    // The rotation: the endpoint's new certificate, and the file holds the new CA only.
    *served.lock().unwrap() = server_config(&d, "new");
    std::fs::write(&ca, std::fs::read(d.join("new-ca.crt")).unwrap()).unwrap();
    let r = c.probe(&d).await;
    assert!(r.ok, "after the rotation: {r:?}");
    // A certificate of the removed CA is refused.
    *served.lock().unwrap() = server_config(&d, "old");
    let r = c.probe(&d).await;
    assert!(!r.ok && r.detail.contains("not signed by a trusted CA"), "the removed CA is still trusted: {r:?}");
}
