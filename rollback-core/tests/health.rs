//! Health checks against real endpoints, sockets, files and programs.

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
    check(HealthKind::Http { url, status, json: json.map(|j| j.as_object().unwrap().clone()) })
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
