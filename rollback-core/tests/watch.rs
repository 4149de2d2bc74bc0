//! `watch` against a real http service on a local port, a real log file, a real
//! heartbeat file and real notify commands: the service is put back by the rollback
//! the watch starts, and is healthy again.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rollback_core::watch::PolicyAction;
use rollback_core::{CancelToken, Severity, Stack, Status, WatchOptions, WatchOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Answer = dyn Fn(&str, usize) -> (u16, String) + Send + Sync;

/// A service that reads its deployed version from `app/version` on every request and
/// answers what `answer(version, request number)` says.
struct Service {
    port: u16,
    requests: Arc<AtomicUsize>,
}

impl Service {
    async fn start(dir: &Path, answer: Arc<Answer>) -> Service {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let (n, version) = (requests.clone(), dir.join("app/version"));
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                let (n, version, answer) = (n.clone(), version.clone(), answer.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let i = n.fetch_add(1, Ordering::SeqCst);
                    let v = std::fs::read_to_string(&version).unwrap_or_default();
                    let (status, body) = answer(v.trim(), i);
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                });
            }
        });
        Service { port, requests }
    }

    async fn status(&self) -> u16 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out[9..12].parse().unwrap()
    }
}

/// A stack whose `app` component (files) holds the version the service serves (with a
/// health check, so its snapshots are `last-good`), with `watch` as its `[watch]` table
/// and a notify command that appends every message to `notes.jsonl` (each with one
/// write: two notifications may run at once).
fn app_toml(d: &Path, watch: &str) -> String {
    write(&d.join("app/version"), "v1\n");
    write(
        &d.join("notify.sh"),
        "#!/bin/sh\nd=$(dirname \"$0\")\nt=$(mktemp \"$d/note.XXXXXX\")\n{ cat; echo; } > \"$t\"\n\
         cat \"$t\" >> \"$d/notes.jsonl\"\nrm -f \"$t\"\n",
    );
    let sh = d.join("notify.sh");
    let script = sh.display();
    format!(
        "[[component]]\nname = \"app\"\ndriver = \"files\"\npaths = [\"app\"]\n\
             health = [{{ command = [\"true\"] }}]\n\n\
             [[notify]]\nkind = \"command\"\ncommand = [\"sh\", \"{script}\"]\n\n{watch}"
    )
}

fn app_stack(d: &Path, watch: &str) -> Stack {
    stack(d, &app_toml(d, watch))
}

fn notes(d: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(d.join("notes.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn events(d: &Path) -> Vec<String> {
    notes(d).iter().map(|n| n["event"].as_str().unwrap().to_string()).collect()
}

/// Watches over `snap` (a stack without health checks has no `last-good`) for `duration`.
fn watch_opts(snap: &rollback_core::SnapshotManifest, duration: Duration) -> WatchOptions {
    WatchOptions { snapshot: Some(snap.id.clone()), duration: Some(duration), ..Default::default() }
}

fn deploy_v2(d: &Path) {
    write(&d.join("app/version"), "v2\n");
}

/// v2 answers 200 for its first three requests, then 500s. (The probe's timeout is
/// generous: on a loaded machine a slow answer must not count as a bad reading.)
fn turns_to_500s() -> Arc<Answer> {
    Arc::new(|v: &str, i: usize| if v == "v2" && i >= 3 { (500, "{}".into()) } else { (200, "{}".into()) })
}

const HTTP_WATCH: &str = "[watch]\ninterval = \"200ms\"\nwindow = 4\nfailure_limit = 3\n\n\
                          [[watch.probe]]\nname = \"api\"\nhttp = \"http://127.0.0.1:PORT/health\"\n\
                          timeout = \"5s\"\n";

#[tokio::test]
async fn a_service_that_turns_to_500s_is_rolled_back_and_is_healthy_again() {
    let (_t, d) = tmp();
    let svc = Service::start(&d, turns_to_500s()).await;
    let s = app_stack(&d, &HTTP_WATCH.replace("PORT", &svc.port.to_string()));
    let good = snap(&s).await;
    deploy_v2(&d);
    // The default snapshot: `last-good`.
    let r = s.watch(WatchOptions { duration: Some(Duration::from_secs(30)), ..Default::default() }).await.unwrap();
    assert_eq!(r.outcome, WatchOutcome::RolledBack, "{r:?}");
    let rec = r.record.as_ref().unwrap();
    assert_eq!((rec.status, rec.snapshot_id.as_str()), (Status::Succeeded, good.id.as_str()), "{}", rec.to_json());
    // Three good readings, then exactly `failure_limit` bad ones: not one more.
    assert_eq!(r.rounds, 6, "{r:?}");
    let w = rec.watch.as_ref().expect("the record names the watch decision");
    assert_eq!((w.probe.as_str(), w.severity, w.bad, w.window), ("api", Severity::High, 3, 4));
    assert_eq!(w.reason, "api: status 500, expected 200 (high) in 3 of the last 4 probes");
    assert!(rec.trigger.as_deref().unwrap().starts_with("watch: api: status 500"), "{:?}", rec.trigger);
    assert_eq!(rec.severity, Some(rollback_core::Severity::High));
    assert!(w.first_bad_at <= w.decided_at && w.decided_at <= rec.start_time, "{w:?}");
    assert!(rec.to_markdown().contains("Decided by probe `api`"));
    assert_eq!(std::fs::read_to_string(d.join("app/version")).unwrap(), "v1\n");
    assert_eq!(svc.status().await, 200, "the service is healthy again");
    // One started and one finished, and the finished one carries the decision.
    assert_eq!(events(&d), ["started", "finished"]);
    assert_eq!(notes(&d)[1]["watch"]["probe"], "api");
    assert_eq!(s.history().unwrap().len(), 1, "it rolled back once and stopped");
}

#[tokio::test]
async fn one_bad_reading_in_the_window_does_not_roll_back() {
    let (_t, d) = tmp();
    let svc =
        Service::start(&d, Arc::new(|_: &str, i: usize| if i == 2 { (500, "{}".into()) } else { (200, "{}".into()) }))
            .await;
    let s = app_stack(&d, &HTTP_WATCH.replace("PORT", &svc.port.to_string()));
    let good = snap(&s).await;
    deploy_v2(&d);
    let r = s.watch(watch_opts(&good, Duration::from_millis(1500))).await.unwrap();
    assert_eq!(r.outcome, WatchOutcome::Elapsed, "{r:?}");
    assert!(r.clean() && r.decisions.is_empty() && r.record.is_none(), "{r:?}");
    assert!(r.rounds >= 5, "{r:?}");
    assert_eq!(std::fs::read_to_string(d.join("app/version")).unwrap(), "v2\n", "nothing was rolled back");
    assert!(s.history().unwrap().is_empty());
    assert!(events(&d).is_empty());
}

#[tokio::test]
async fn a_log_that_gains_error_lines_rolls_back() {
    let (_t, d) = tmp();
    write(&d.join("logs/app.log"), "ERROR from before the deploy\n".repeat(50).as_str());
    let s = app_stack(
        &d,
        "[watch]\ninterval = \"200ms\"\nwindow = 5\nfailure_limit = 2\n\n\
         [[watch.probe]]\nname = \"errors\"\nlog = \"logs/app.log\"\nregex = \"ERROR|CRITICAL\"\nthreshold = 3\n",
    );
    let good = snap(&s).await;
    deploy_v2(&d);
    let log = d.join("logs/app.log");
    let writer = tokio::spawn(async move {
        for i in 0..60 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let line = if i % 4 == 3 { format!("INFO ok {i}\n") } else { format!("CRITICAL fill {i}\n") };
            use std::io::Write;
            std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(line.as_bytes()).unwrap();
        }
    });
    let r = s.watch(watch_opts(&good, Duration::from_secs(30))).await.unwrap();
    writer.abort();
    assert_eq!(r.outcome, WatchOutcome::RolledBack, "{r:?}");
    let w = r.record.as_ref().unwrap().watch.clone().unwrap();
    assert_eq!(w.probe, "errors");
    assert!(w.reason.contains("matching lines in the window (more than 3)"), "{}", w.reason);
    assert!(w.values["matches"] > 3.0 && w.values["matches"] < 50.0, "old lines are not counted: {w:?}");
    assert_eq!(std::fs::read_to_string(d.join("app/version")).unwrap(), "v1\n");
}

#[tokio::test]
async fn a_heartbeat_that_stops_rolls_back_and_one_that_beats_does_not() {
    let (_t, d) = tmp();
    let s = app_stack(
        &d,
        "[watch]\ninterval = \"200ms\"\nwindow = 3\nfailure_limit = 2\n\n\
         [[watch.probe]]\nname = \"bot\"\nheartbeat = \"run/heartbeat\"\nmax_age = \"1s\"\n",
    );
    write(&d.join("run/heartbeat"), "");
    let good = snap(&s).await;
    deploy_v2(&d);
    let hb = d.join("run/heartbeat");
    let beat = |until: Duration| {
        let hb = hb.clone();
        tokio::spawn(async move {
            let end = tokio::time::Instant::now() + until;
            while tokio::time::Instant::now() < end {
                write(&hb, "");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // While it beats, the watch sees nothing wrong.
    let b = beat(Duration::from_secs(3));
    let r = s.watch(watch_opts(&good, Duration::from_millis(1500))).await.unwrap();
    assert_eq!(r.outcome, WatchOutcome::Elapsed, "{r:?}");
    b.await.unwrap();
    // Then the bot beats for a second more, and stops.
    let b = beat(Duration::from_secs(1));
    let r = s.watch(watch_opts(&good, Duration::from_secs(30))).await.unwrap();
    b.await.unwrap();
    assert_eq!(r.outcome, WatchOutcome::RolledBack, "{r:?}");
    let w = r.record.as_ref().unwrap().watch.clone().unwrap();
    assert!(w.reason.starts_with("bot: last beat") && w.reason.contains("ago"), "{}", w.reason);
    assert_eq!(std::fs::read_to_string(d.join("app/version")).unwrap(), "v1\n");
}

/// A JSON metric crossing the matrix's bound rolls back; a custom metric crossing its
/// own bound at medium severity notifies once, and does not roll back.
#[tokio::test]
async fn json_metrics_are_rated_by_the_matrix_and_by_their_own_bounds() {
    let (_t, d) = tmp();
    let svc = Service::start(
        &d,
        Arc::new(|v: &str, i: usize| {
            let (err, acc) = if v == "v2" && i >= 2 { (0.34, 0.42) } else { (0.01, 0.93) };
            (200, format!("{{\"stats\": {{\"error_rate\": {err}}}, \"model\": {{\"accuracy\": {acc}}}}}"))
        }),
    )
    .await;
    let url = format!("http://127.0.0.1:{}/metrics", svc.port);
    let watch = |metrics: &str, extra: &str| {
        format!(
            "[watch]\ninterval = \"200ms\"\nwindow = 4\nfailure_limit = 3\n\n[[watch.probe]]\nname = \"model\"\n\
             http = \"{url}\"\nmetrics = {metrics}\n{extra}"
        )
    };
    // Accuracy below its bound, at medium: notify, once, and go on watching.
    let s = app_stack(
        &d,
        &watch("{ accuracy = \"model.accuracy\" }", "bounds = { accuracy = \"< 0.5\" }\nseverity = \"medium\"\n"),
    );
    let good = snap(&s).await;
    deploy_v2(&d);
    let r = s.watch(watch_opts(&good, Duration::from_secs(2))).await.unwrap();
    assert_eq!(r.outcome, WatchOutcome::Elapsed, "{r:?}");
    assert_eq!(r.decisions.len(), 1, "notified once, not every round: {:?}", r.decisions);
    let dec = &r.decisions[0];
    assert_eq!((dec.action, dec.severity), (PolicyAction::Notify, Severity::Medium));
    assert!(dec.reason.starts_with("model: accuracy 0.42 < 0.5 (medium) in 3 of the last"), "{}", dec.reason);
    assert_eq!(events(&d), ["watch"]);
    let n = &notes(&d)[0];
    assert!(n["text"].as_str().unwrap().contains("accuracy 0.42 < 0.5"), "{n}");
    assert_eq!(n["watch"]["values"]["accuracy"], 0.42);
    assert!(s.history().unwrap().is_empty(), "a medium decision does not roll back");

    // The error rate from the body, rated by the matrix: 0.34 ≥ 0.25 is high.
    let (_t2, d2) = tmp();
    let svc2 = Service::start(
        &d2,
        Arc::new(|v: &str, i: usize| {
            let err = if v == "v2" && i >= 2 { 0.34 } else { 0.01 };
            (200, format!("{{\"stats\": {{\"error_rate\": {err}}}}}"))
        }),
    )
    .await;
    let url2 = format!("http://127.0.0.1:{}/metrics", svc2.port);
    let s2 = app_stack(&d2, &watch("{ error_rate = \"stats.error_rate\" }", "").replace(&url, &url2));
    let good2 = snap(&s2).await;
    deploy_v2(&d2);
    let r = s2.watch(watch_opts(&good2, Duration::from_secs(30))).await.unwrap();
    assert_eq!(r.outcome, WatchOutcome::RolledBack, "{r:?}");
    let w = r.record.as_ref().unwrap().watch.clone().unwrap();
    assert!(w.reason.starts_with("model: error_rate 0.34 ≥ 0.25 (high) in 3 of the last"), "{}", w.reason);
    assert_eq!(w.values["error_rate"], 0.34);
}

#[tokio::test]
async fn a_dry_run_decides_and_notifies_and_changes_nothing() {
    let (_t, d) = tmp();
    let svc = Service::start(&d, turns_to_500s()).await;
    let s = app_stack(&d, &HTTP_WATCH.replace("PORT", &svc.port.to_string()));
    let good = snap(&s).await;
    deploy_v2(&d);
    let before = walk(&d.join(".rollback"));
    let r = s.watch(WatchOptions { dry_run: true, ..watch_opts(&good, Duration::from_secs(30)) }).await.unwrap();
    assert_eq!(r.outcome, WatchOutcome::WouldRollBack, "{r:?}");
    assert!(!r.clean());
    assert!(r.record.is_none() && r.decisions.len() == 1 && r.decisions[0].dry_run, "{r:?}");
    assert_eq!(std::fs::read_to_string(d.join("app/version")).unwrap(), "v2\n");
    assert!(s.history().unwrap().is_empty());
    assert_eq!(walk(&d.join(".rollback")), before, "the store is as it was");
    assert_eq!(events(&d), ["watch"]);
    assert!(notes(&d)[0]["text"].as_str().unwrap().contains("would roll back (dry run"), "{:?}", notes(&d));
}

#[tokio::test]
async fn a_cancelled_watch_stops_cleanly_without_a_rollback() {
    let (_t, d) = tmp();
    let svc = Service::start(&d, Arc::new(|_: &str, _| (200, "{}".into()))).await;
    let s = app_stack(&d, &HTTP_WATCH.replace("PORT", &svc.port.to_string()));
    let good = snap(&s).await;
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        c2.cancel();
    });
    let t0 = std::time::Instant::now();
    let r = s.watch(WatchOptions { cancel, snapshot: Some(good.id.clone()), ..Default::default() }).await.unwrap();
    assert_eq!(r.outcome, WatchOutcome::Stopped, "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(20), "a watch without --for stops when cancelled");
    assert!(svc.requests.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn a_watch_refuses_bad_input_before_it_starts() {
    let (_t, d) = tmp();
    let s = app_stack(&d, "");
    let e = s.watch(WatchOptions::default()).await.unwrap_err();
    assert_eq!(e.kind(), rollback_core::ErrorKind::ConfigInvalid);
    assert!(e.to_string().contains("no [watch] table"), "{e}");
    let s = app_stack(&d, &HTTP_WATCH.replace("PORT", "1"));
    let e = s.watch(WatchOptions::default()).await.unwrap_err();
    assert_eq!(e.kind(), rollback_core::ErrorKind::NotFound, "no snapshot yet: {e}");
    let e = stack_err(
        &d,
        "[[component]]\nname = \"app\"\ndriver = \"files\"\npaths = [\"app\"]\n\
         [watch]\n[[watch.probe]]\nname = \"loop\"\nprocess = \"api\"\n",
    );
    assert!(e.contains("rollback.toml:6: [[watch.probe]] `loop`: `process` names component `api`"), "{e}");
    // A process probe on a component that runs no processes.
    let s = stack(
        &d,
        "[[component]]\nname = \"app\"\ndriver = \"files\"\npaths = [\"app\"]\n\
         [watch]\n[[watch.probe]]\nname = \"loop\"\nprocess = \"app\"\n",
    );
    let good = snap(&s).await;
    let e = s.watch(watch_opts(&good, Duration::from_secs(1))).await.unwrap_err();
    assert!(e.to_string().contains("process probes take pm2 and docker components"), "{e}");
}

fn stack_err(d: &Path, toml: &str) -> String {
    let p: PathBuf = d.join("rollback.toml");
    std::fs::write(&p, toml).unwrap();
    Stack::load(&p).unwrap_err().to_string()
}

/// Every file under `dir` with its bytes, sorted.
fn walk(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
        }
    }
    out.sort();
    out
}

/// A probe whose URL carries a `${ENV}` secret: the error it reads quotes the URL, and
/// the secret is in no decision, record, report or notification.
#[tokio::test]
async fn a_secret_in_a_probe_url_stays_out_of_the_record() {
    let (_t, d) = tmp();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = app_toml(
        &d,
        &format!(
            "[watch]\ninterval = \"200ms\"\nwindow = 2\nfailure_limit = 2\n\n[[watch.probe]]\nname = \"api\"\n\
             http = \"http://127.0.0.1:{port}/health?token=${{PROBE_TOKEN}}\"\n"
        ),
    );
    let env = |k: &str| (k == "PROBE_TOKEN").then(|| "tok-5ecret-93c1".to_string());
    let cfg = rollback_core::StackConfig::from_toml_str(&text, Some(&d.join("rollback.toml")), &d, &env).unwrap();
    let s = Stack::new(cfg, &rollback_core::Registry::with_default_drivers()).unwrap();
    let good = snap(&s).await;
    deploy_v2(&d);
    let r = s.watch(watch_opts(&good, Duration::from_secs(30))).await.unwrap();
    assert_eq!(r.outcome, WatchOutcome::RolledBack, "{r:?}");
    let rec = r.record.as_ref().unwrap();
    assert!(rec.watch.as_ref().unwrap().reason.contains("Connection refused"), "{:?}", rec.watch);
    let everything = format!("{}{}{:?}", serde_json::to_string(&r).unwrap(), rec.to_markdown(), notes(&d));
    assert!(!everything.contains("tok-5ecret-93c1"), "the secret leaked: {everything}");
    for (f, bytes) in walk(&d.join(".rollback")) {
        assert!(!String::from_utf8_lossy(&bytes).contains("tok-5ecret-93c1"), "in {}", f.display());
    }
}

/// An unfinished rollback would make the watch's own rollback fail when it decides:
/// the watch refuses to start, naming it.
#[tokio::test]
async fn a_watch_refuses_to_start_over_an_unfinished_rollback() {
    let (_t, d) = tmp();
    let s = app_stack(&d, &HTTP_WATCH.replace("PORT", "1"));
    let good = snap(&s).await;
    deploy_v2(&d);
    // A rollback stopped at its first step boundary is unfinished (`resume` ends it).
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    let on_event: rollback_core::EventCallback = Arc::new(move |e: &rollback_core::Event| {
        if e.kind == "step_started" {
            c2.cancel();
        }
    });
    let r = s
        .rollback(&good.id, rollback_core::RollbackOptions { cancel, on_event: Some(on_event), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(r.status, Status::Interrupted, "{}", r.to_json());
    let e = s.watch(watch_opts(&good, Duration::from_secs(1))).await.unwrap_err();
    assert_eq!(e.kind(), rollback_core::ErrorKind::Locked, "{e}");
    assert!(e.to_string().contains(&format!("rollback resume {}", r.rollback_id)), "{e}");
}

/// `perf = true`: the latency of the first rounds is the baseline; a deploy that
/// answers ten times slower (still under the matrix's 500 ms latency bound) is rated
/// by its performance degradation, and rolled back.
#[tokio::test]
async fn a_service_slower_than_its_baseline_is_rolled_back() {
    let (_t, d) = tmp();
    let svc = Service::start(&d, Arc::new(|_: &str, _| (200, "{}".into()))).await;
    let slow = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A proxy in front of the service that, once `slow` is set, waits 300 ms per request.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (s2, target) = (slow.clone(), svc.port);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let s2 = s2.clone();
            tokio::spawn(async move {
                if s2.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut sock, &mut up).await;
            });
        }
    });
    let s = app_stack(
        &d,
        &format!(
            "[watch]\ninterval = \"200ms\"\nwindow = 3\nfailure_limit = 2\nbaseline = 3\n\n\
             [[watch.probe]]\nname = \"api\"\nhttp = \"http://127.0.0.1:{port}/health\"\nperf = true\ntimeout = \"5s\"\n"
        ),
    );
    let good = snap(&s).await;
    deploy_v2(&d);
    let (s3, seen) = (slow.clone(), svc.requests.clone());
    tokio::spawn(async move {
        // Slow from the fourth request on: the three baseline rounds were fast.
        while seen.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        s3.store(true, Ordering::SeqCst);
    });
    let r = s.watch(watch_opts(&good, Duration::from_secs(30))).await.unwrap();
    assert_eq!(r.outcome, WatchOutcome::RolledBack, "{r:?}");
    let w = r.record.as_ref().unwrap().watch.clone().unwrap();
    assert!(w.reason.starts_with("api: perf_degradation 0."), "{}", w.reason);
    assert!(w.severity >= Severity::High, "{w:?}");
    assert!(w.values["latency_ms"] >= 300.0 && w.values["latency_ms"] < 500.0, "{w:?}");
}

/// A command that prints a number: the number is the metric, rated by its bound.
#[tokio::test]
async fn a_number_printed_by_a_command_crossing_its_bound_rolls_back() {
    let (_t, d) = tmp();
    write(&d.join("cost"), "0.8\n");
    let s = app_stack(
        &d,
        "[watch]\ninterval = \"200ms\"\nwindow = 3\nfailure_limit = 2\n\n\
         [[watch.probe]]\nname = \"budget\"\ncommand = [\"sh\", \"-c\", \"echo checking; cat cost\"]\n\
         metric = \"cost_ratio\"\nbounds = { cost_ratio = \"> 2.0\" }\n",
    );
    let good = snap(&s).await;
    deploy_v2(&d);
    let r = s.watch(watch_opts(&good, Duration::from_millis(1200))).await.unwrap();
    assert_eq!(r.outcome, WatchOutcome::Elapsed, "under its bound: {r:?}");
    write(&d.join("cost"), "3.5\n");
    let r = s.watch(watch_opts(&good, Duration::from_secs(30))).await.unwrap();
    assert_eq!(r.outcome, WatchOutcome::RolledBack, "{r:?}");
    let w = r.record.as_ref().unwrap().watch.clone().unwrap();
    assert_eq!(w.reason, "budget: cost_ratio 3.5 > 2 (high) in 2 of the last 2 probes");
    assert_eq!(w.values["cost_ratio"], 3.5);
}

/// The resident memory of this test process, in bytes (`VmRSS`).
fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 =
        s.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap();
    kb * 1024
}

/// Whether `pid` has ended (gone, or a zombie waiting to be reaped).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Waits (up to 10 s: the machine may be busy) until every pid written to `file` ended.
async fn all_ended(file: &Path) -> Vec<u32> {
    let pids: Vec<u32> =
        std::fs::read_to_string(file).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < until && !pids.iter().all(|p| ended(*p)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pids.into_iter().filter(|p| !ended(*p)).collect()
}

/// A probe that prints 400 MB before its number: the number is read, and the watch
/// keeps only the end of the output (it held all of it: 1 GB for `yes` over 3 s).
#[tokio::test]
async fn a_command_probe_that_floods_its_output_keeps_only_its_end() {
    let (_t, d) = tmp();
    let s = app_stack(
        &d,
        "[watch]\ninterval = \"200ms\"\nwindow = 1\nfailure_limit = 1\n\n\
         [[watch.probe]]\nname = \"flood\"\ncommand = [\"sh\", \"-c\", \"head -c 400000000 /dev/zero; echo; echo 0.5\"]\n\
         metric = \"ratio\"\nbounds = { ratio = \"> 2\" }\ntimeout = \"60s\"\n",
    );
    let good = snap(&s).await;
    let before = rss();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (p2, s2) = (peak.clone(), stop.clone());
    let sampler = tokio::spawn(async move {
        while !s2.load(Ordering::SeqCst) {
            p2.fetch_max(rss(), Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    // Stopped after its first reading (a busy machine may take seconds to pipe 400 MB).
    let cancel = CancelToken::new();
    let readings = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c2, r2) = (cancel.clone(), readings.clone());
    let on_event: rollback_core::EventCallback = Arc::new(move |e: &rollback_core::Event| {
        if e.kind == "watch_probe" {
            r2.lock().unwrap().push(e.message.clone());
            c2.cancel();
        }
    });
    let r = s
        .watch(WatchOptions { on_event: Some(on_event), cancel, ..watch_opts(&good, Duration::from_secs(120)) })
        .await
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    sampler.await.unwrap();
    assert_eq!(r.outcome, WatchOutcome::Stopped, "{r:?}");
    assert_eq!(*readings.lock().unwrap(), ["flood: ratio 0.5"], "the number after 400 MB was read");
    let grew = peak.load(Ordering::SeqCst).saturating_sub(before);
    assert!(grew < 100 << 20, "the watch took {} MB for a probe's output", grew >> 20);
}

/// A probe that hangs past the end of `--for`: the watch ends on time and ends the
/// probe's process (it waited for the probe's timeout).
#[tokio::test]
async fn a_watch_ends_on_time_and_ends_a_probe_still_running() {
    let (_t, d) = tmp();
    let pids = d.join("pids");
    let s = app_stack(
        &d,
        &format!(
            "[watch]\ninterval = \"200ms\"\n\n[[watch.probe]]\nname = \"hung\"\n\
             command = [\"sh\", \"-c\", \"echo $$ >> '{}'; exec sleep 60\"]\ntimeout = \"40s\"\n",
            pids.display()
        ),
    );
    let good = snap(&s).await;
    let t0 = std::time::Instant::now();
    let r = s.watch(watch_opts(&good, Duration::from_millis(1500))).await.unwrap();
    let took = t0.elapsed();
    assert_eq!(r.outcome, WatchOutcome::Elapsed, "{r:?}");
    // The window plus a small margin; generous for a busy machine, far from 40 s.
    assert!(took < Duration::from_secs(5), "a 1.5 s watch took {took:?}");
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert!(std::fs::metadata(&pids).is_ok(), "the probe ran");
    assert_eq!(all_ended(&pids).await, Vec::<u32>::new(), "probe processes outlived the watch");
}

/// Stopping a watch (Ctrl-C, SIGTERM, cancel) interrupts a round whose probe hangs,
/// and ends the probe's process.
#[tokio::test]
async fn stopping_a_watch_interrupts_a_hung_probe() {
    let (_t, d) = tmp();
    let pids = d.join("pids");
    let s = app_stack(
        &d,
        &format!(
            "[watch]\ninterval = \"200ms\"\n\n[[watch.probe]]\nname = \"hung\"\n\
             command = [\"sh\", \"-c\", \"echo $$ >> '{}'; exec sleep 60\"]\ntimeout = \"40s\"\n",
            pids.display()
        ),
    );
    let good = snap(&s).await;
    let cancel = CancelToken::new();
    let (c2, p2) = (cancel.clone(), pids.clone());
    let stopped_at = tokio::spawn(async move {
        while std::fs::read_to_string(&p2).unwrap_or_default().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        c2.cancel();
        std::time::Instant::now()
    });
    let r = s.watch(WatchOptions { cancel, ..watch_opts(&good, Duration::from_secs(120)) }).await.unwrap();
    let took = stopped_at.await.unwrap().elapsed();
    assert_eq!(r.outcome, WatchOutcome::Stopped, "{r:?}");
    assert!(took < Duration::from_secs(2), "the watch stopped {took:?} after it was asked to");
    assert_eq!(all_ended(&pids).await, Vec::<u32>::new(), "the hung probe outlived the watch");
}

/// Two probes bad at the same severity while neither recovers: each is decided and
/// notified on its own (the second one never was).
#[tokio::test]
async fn two_probes_bad_at_the_same_severity_are_each_decided_and_notified() {
    let (_t, d) = tmp();
    let s = app_stack(
        &d,
        "[watch]\ninterval = \"200ms\"\nwindow = 2\nfailure_limit = 2\n\n\
         [[watch.probe]]\nname = \"recon\"\ncommand = [\"false\"]\nseverity = \"medium\"\n\n\
         [[watch.probe]]\nname = \"ledger\"\ncommand = [\"sh\", \"-c\", \"exit 3\"]\nseverity = \"medium\"\n",
    );
    let good = snap(&s).await;
    let r = s.watch(watch_opts(&good, Duration::from_secs(3))).await.unwrap();
    assert_eq!(r.outcome, WatchOutcome::Elapsed, "{r:?}");
    let mut decided: Vec<&str> = r.decisions.iter().map(|d| d.probe.as_str()).collect();
    decided.sort();
    assert_eq!(decided, ["ledger", "recon"], "once each: {:?}", r.decisions);
    assert!(r.decisions.iter().all(|d| d.action == PolicyAction::Notify && d.severity == Severity::Medium));
    let mut notified: Vec<String> =
        notes(&d).iter().map(|n| n["watch"]["probe"].as_str().unwrap().to_string()).collect();
    notified.sort();
    assert_eq!(notified, ["ledger", "recon"]);
}

/// A beat written before the watch started is not the deployed version's: the watch
/// judges only beats written since its start, and gives a writer `max_age` from then.
#[tokio::test]
async fn a_heartbeat_from_before_the_watch_neither_vouches_for_nor_condemns_the_deploy() {
    let (_t, d) = tmp();
    let s = app_stack(
        &d,
        "[watch]\ninterval = \"200ms\"\nwindow = 3\nfailure_limit = 2\n\n\
         [[watch.probe]]\nname = \"bot\"\nheartbeat = \"run/heartbeat\"\nmax_age = \"3s\"\n",
    );
    write(&d.join("run/heartbeat"), "");
    let good = snap(&s).await;
    deploy_v2(&d);
    // The old version's last beat, 2.9 s old when the watch starts: v2 has not beaten yet.
    let f = std::fs::File::options().write(true).open(d.join("run/heartbeat")).unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_millis(2900)).unwrap();
    let r = s.watch(watch_opts(&good, Duration::from_millis(1500))).await.unwrap();
    assert_eq!(r.outcome, WatchOutcome::Elapsed, "v2 still has time to beat: {r:?}");
    // v2 never beats: once `max_age` has passed since the watch started, it is bad.
    let t0 = std::time::Instant::now();
    let r = s.watch(watch_opts(&good, Duration::from_secs(30))).await.unwrap();
    assert_eq!(r.outcome, WatchOutcome::RolledBack, "{r:?}");
    assert!(t0.elapsed() >= Duration::from_secs(3), "decided before v2 had `max_age` to beat: {:?}", t0.elapsed());
    let w = r.record.as_ref().unwrap().watch.clone().unwrap();
    assert!(w.reason.starts_with("bot: no beat since the watch started"), "{}", w.reason);
}

/// A token given as the user of an http probe's URL (`http://TOKEN@host`) is in no
/// reading, event, decision, record or notification.
#[tokio::test]
async fn a_token_as_url_user_info_is_never_shown() {
    let (_t, d) = tmp();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let token = "ghp_T0kenAsUser77";
    let s = app_stack(
        &d,
        &format!(
            "[watch]\ninterval = \"200ms\"\nwindow = 2\nfailure_limit = 2\n\n[[watch.probe]]\nname = \"api\"\n\
             http = \"http://{token}@127.0.0.1:{port}/health\"\n\n[[watch.probe]]\nname = \"bad-url\"\n\
             http = \"http://{token}:pw-{token}@127.0.0.1:{port}:99999/health\"\nseverity = \"low\"\n"
        ),
    );
    let good = snap(&s).await;
    deploy_v2(&d);
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let s2 = seen.clone();
    let on_event: rollback_core::EventCallback = Arc::new(move |e: &rollback_core::Event| {
        s2.lock().unwrap().push_str(&format!("{}\n", serde_json::to_string(e).unwrap()));
    });
    let r =
        s.watch(WatchOptions { on_event: Some(on_event), ..watch_opts(&good, Duration::from_secs(30)) }).await.unwrap();
    assert_eq!(r.outcome, WatchOutcome::RolledBack, "{r:?}");
    let rec = r.record.as_ref().unwrap();
    let w = rec.watch.as_ref().unwrap();
    assert!(w.reason.contains("GET http://***@127.0.0.1:") && w.reason.contains("Connection refused"), "{w:?}");
    let events = seen.lock().unwrap().clone();
    assert!(events.contains("bad-url: "), "{events}");
    let everything = format!("{}{}{:?}{events}", serde_json::to_string(&r).unwrap(), rec.to_markdown(), notes(&d));
    assert!(!everything.contains(token), "the token leaked: {everything}");
    for (f, bytes) in walk(&d.join(".rollback")) {
        assert!(!String::from_utf8_lossy(&bytes).contains(token), "in {}", f.display());
    }
}
