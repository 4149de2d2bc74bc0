//! Notifications (`[[notify]]`) against a real http receiver on a local port and a
//! real command: what arrives for each rollback path, retries, a receiver that is
//! down, and the webhook's secret kept out of every record.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use rollback_core::{CancelToken, RollbackOptions, Scope, Stack, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A webhook receiver: answers each request with the next status of `answers` (then
/// 200) and keeps every JSON body it was sent.
struct Receiver {
    port: u16,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    hits: Arc<Mutex<usize>>,
}

impl Receiver {
    async fn start(answers: Vec<u16>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(Mutex::new(0usize));
        let (b, h) = (bodies.clone(), hits.clone());
        let answers = Arc::new(Mutex::new(answers.into_iter()));
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                let (b, h, answers) = (b.clone(), h.clone(), answers.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Headers, then as many body bytes as Content-Length says.
                    let body = loop {
                        let n = sock.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break buf[end + 4..end + 4 + len].to_vec();
                        }
                    };
                    *h.lock().unwrap() += 1;
                    let status = answers.lock().unwrap().next().unwrap_or(200);
                    if status == 200 {
                        b.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                    }
                    let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    let _ = sock.write_all(reply.as_bytes()).await;
                });
            }
        });
        Receiver { port, bodies, hits }
    }

    fn events(&self) -> Vec<String> {
        self.bodies.lock().unwrap().iter().map(|b| b["event"].as_str().unwrap().to_string()).collect()
    }
}

/// A `files` component and the given `[[notify]]` entries.
fn files_stack(d: &Path, notify: &str) -> Stack {
    write(&d.join("cfg/app.json"), "{\"v\": 1}\n");
    stack(d, &format!("[[component]]\nname = \"cfg\"\ndriver = \"files\"\npaths = [\"cfg\"]\n\n{notify}"))
}

const SECRET: &str = "T0KEN-0f1e2d3c4b5a";

fn webhook(port: u16, extra: &str) -> String {
    format!("[[notify]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/hooks/{SECRET}\"\n{extra}\n")
}

#[tokio::test]
async fn a_rollback_sends_one_started_and_one_finished_that_chat_can_show() {
    let rx = Receiver::start(vec![]).await;
    let (_t, d) = tmp();
    let s = files_stack(&d, &webhook(rx.port, ""));
    let snap = snap(&s).await;
    write(&d.join("cfg/app.json"), "{\"v\": 2}\n");
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert_eq!(rx.events(), ["started", "finished"]);
    let b = rx.bodies.lock().unwrap().clone();
    assert!(b[0]["text"].as_str().unwrap().contains(&format!("back to snapshot {}", snap.id)), "{}", b[0]);
    assert!(b[1]["text"].as_str().unwrap().contains("succeeded"), "{}", b[1]);
    assert_eq!((b[1]["status"].as_str(), b[1]["data_loss"].as_bool()), (Some("succeeded"), Some(false)));
    assert_eq!(b[1]["rollback_id"].as_str(), Some(r.rollback_id.as_str()));
    assert!(r.notes.iter().all(|n| !n.contains("notification")), "{:?}", r.notes);
}

/// With the receiver down the rollback still succeeds, and its record says which
/// notifications were not delivered, without the webhook's path.
#[tokio::test]
async fn a_receiver_that_is_down_fails_nothing_and_is_noted_in_the_record() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (_t, d) = tmp();
    let s = files_stack(&d, &webhook(port, "retries = 1"));
    let snap = snap(&s).await;
    write(&d.join("cfg/app.json"), "{\"v\": 2}\n");
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    let notes: Vec<_> = r.notes.iter().filter(|n| n.starts_with("notification not delivered")).collect();
    assert_eq!(notes.len(), 2, "started and finished: {:?}", r.notes);
    assert!(notes[1].contains("webhook http://127.0.0.1/…") && notes[1].contains("(finished)"), "{notes:?}");
    assert!(notes[1].contains("Connection refused") && notes[1].contains("after 2 attempts"), "{notes:?}");
    let stored = s.store().load_record(&r.rollback_id).unwrap();
    assert_eq!(stored.notes, r.notes, "the stored record has the notes too");
    for f in walk(&d.join(".rollback")) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).to_string();
        assert!(!text.contains(SECRET), "the webhook's secret is in {}", f.display());
    }
}

/// 500 and 429 are tried again, with backoff, and then delivered once.
#[tokio::test]
async fn a_server_error_is_retried_and_delivered_once() {
    let rx = Receiver::start(vec![500, 429]).await;
    let (_t, d) = tmp();
    let s = files_stack(&d, &webhook(rx.port, "on = [\"finished\"]"));
    let snap = snap(&s).await;
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert_eq!(rx.events(), ["finished"], "only what `on` asks for");
    assert_eq!(*rx.hits.lock().unwrap(), 3);
    assert!(r.notes.iter().all(|n| !n.contains("notification")), "{:?}", r.notes);
}

/// Interrupted, then resumed: one `started`, one `interrupted`, one `resumed`, one
/// `finished`.
#[tokio::test]
async fn an_interrupted_and_resumed_rollback_sends_one_event_for_each() {
    let rx = Receiver::start(vec![]).await;
    let (_t, d) = tmp();
    write(&d.join("other/x"), "1");
    let s = stack(
        &d,
        &format!(
            "[[component]]\nname = \"a\"\ndriver = \"files\"\npaths = [\"other\"]\n\n[[component]]\nname = \"cfg\"\n\
             driver = \"files\"\npaths = [\"cfg\"]\nphase = 2\n\n{}",
            webhook(rx.port, "")
        ),
    );
    write(&d.join("cfg/app.json"), "{\"v\": 1}\n");
    let snap = snap(&s).await;
    write(&d.join("cfg/app.json"), "{\"v\": 2}\n");
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    let o = RollbackOptions {
        cancel,
        on_event: Some(Arc::new(move |e: &rollback_core::Event| {
            if e.kind == "step_finished" {
                c2.cancel();
            }
        })),
        ..opts(Scope::Complete)
    };
    let r = s.rollback(&snap.id, o).await.unwrap();
    assert_eq!(r.status, Status::Interrupted, "{}", r.to_json());
    let r = s.resume(&r.rollback_id, None).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert_eq!(rx.events(), ["started", "interrupted", "resumed", "finished"]);
    let b = rx.bodies.lock().unwrap().clone();
    assert!(b[1]["text"].as_str().unwrap().contains("rollback resume"), "{}", b[1]);
}

/// A command gets the JSON on its stdin; one that fails is noted with its stderr.
#[tokio::test]
async fn a_command_gets_the_json_on_stdin_and_a_failing_one_is_noted() {
    let (_t, d) = tmp();
    let out = d.join("notified.jsonl");
    let notify = format!(
        "[[notify]]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"cat >> '{}'; echo >> '{}'\"]\n\n\
         [[notify]]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"echo pager is down >&2; exit 3\"]\non = [\"finished\"]\n",
        out.display(),
        out.display()
    );
    let s = files_stack(&d, &notify);
    let snap = snap(&s).await;
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<_> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["started", "finished"]);
    let note = r.notes.iter().find(|n| n.starts_with("notification not delivered")).expect("the failing command");
    assert!(
        note.contains("command `sh`") && note.contains("exit status: 3") && note.contains("pager is down"),
        "{note}"
    );
}

#[test]
fn bad_notify_entries_are_refused_naming_what_is_wrong() {
    let (_t, d) = tmp();
    for (entry, want) in [
        ("kind = \"pager\"", "`kind` must be \"webhook\" or \"command\""),
        ("kind = \"webhook\"", "a webhook needs `url`"),
        ("kind = \"webhook\"\nurl = \"ftp://x/y\"", "`url` must be an http:// or https:// URL"),
        ("kind = \"command\"", "a command needs `command`"),
        ("kind = \"webhook\"\nurl = \"http://x/\"\non = [\"done\"]", "unknown event `done`"),
        ("kind = \"webhook\"\nurl = \"http://x/\"\nbogus = 1", "bogus"),
    ] {
        let text = format!("[[component]]\nname = \"c\"\ndriver = \"files\"\npaths = [\"c\"]\n\n[[notify]]\n{entry}\n");
        let e = rollback_core::StackConfig::from_toml_str(&text, Some(Path::new("rollback.toml")), &d, &|_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rollback.toml:") && e.contains(want), "{entry}: {e}");
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A notify command runs in the config's directory, as health checks and probes do:
/// a relative program and the files it writes are found there, whatever the
/// directory of the process that runs the rollback.
#[tokio::test]
async fn a_command_runs_in_the_directory_of_the_config() {
    let (_t, d) = tmp();
    write(&d.join("hooks/page.sh"), "#!/bin/sh\ncat > /dev/null\npwd >> where.txt\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("hooks/page.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = files_stack(&d, "[[notify]]\nkind = \"command\"\ncommand = [\"./hooks/page.sh\"]\non = [\"finished\"]\n");
    assert_ne!(std::env::current_dir().unwrap(), d, "the test runs elsewhere than the config");
    let snap = snap(&s).await;
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert!(r.notes.iter().all(|n| !n.contains("notification")), "{:?}", r.notes);
    assert_eq!(std::fs::read_to_string(d.join("where.txt")).unwrap().trim(), d.display().to_string());
}
