//! The CLI as an operator runs it: exit codes, --json, the demo, and crash +
//! resume (SIGKILL at each step of a multi-component rollback).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rollback"));
    c.env_remove("ROLLBACK_CONFIG").env("ROLLBACK_LOG", "error");
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    bin().current_dir(dir).args(args).stdin(Stdio::null()).output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn write(p: &Path, s: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

fn commit_all(repo: &git2::Repository, msg: &str) {
    let mut idx = repo.index().unwrap();
    idx.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
    idx.update_all(["*"], None).unwrap();
    idx.write().unwrap();
    let tree = repo.find_tree(idx.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, msg, &tree, &parents).unwrap();
}

/// A four-component stack: git (1), files (2), a slow command service (3),
/// releases with a health check (4).
fn stack(d: &Path) -> git2::Repository {
    let repo = git2::Repository::init(d.join("app")).unwrap();
    write(&d.join("app/engine.py"), "V = 1\n");
    commit_all(&repo, "v1");
    write(&d.join("config/strategy.json"), "{\"algo\": 1}\n");
    write(&d.join("svc.state"), "svc-v1\n");
    for v in ["v1", "v2"] {
        write(&d.join(format!("releases/{v}/VERSION")), v);
    }
    std::os::unix::fs::symlink("v1", d.join("releases/current")).unwrap();
    write(
        &d.join("rollback.toml"),
        r#"
[[component]]
name = "code"
driver = "git"
repo = "app"
phase = 1

[[component]]
name = "cfg"
driver = "files"
paths = ["config"]
phase = 2

[[component]]
name = "svc"
driver = "command"
phase = 3
capture = ["cat", "svc.state"]
restore = ["sh", "-c", "sleep 0.4; cp \"$ROLLBACK_STATE_FILE\" svc.state.tmp && mv svc.state.tmp svc.state"]

[[component]]
name = "engine"
driver = "releases"
root = "releases"
phase = 4
health = [{ command = ["sh", "-c", "sleep 0.3; test -e releases/current/VERSION"], timeout = "5s" }]
"#,
    );
    repo
}

fn bad_deploy(d: &Path, repo: &git2::Repository) {
    write(&d.join("app/engine.py"), "V = 2\n");
    commit_all(repo, "v2");
    write(&d.join("config/strategy.json"), "{\"algo\": 2}\n");
    write(&d.join("config/new.json"), "{}\n");
    write(&d.join("svc.state"), "svc-v2\n");
    std::fs::remove_file(d.join("releases/current")).unwrap();
    std::os::unix::fs::symlink("v2", d.join("releases/current")).unwrap();
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let p = std::fs::canonicalize(t.path()).unwrap();
    (t, p)
}

fn snapshot(d: &Path) -> String {
    let o = run(d, &["snapshot", "--label", "pre-deploy"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn journal_next(d: &Path) -> Option<u64> {
    let dir = d.join(".rollback/journals");
    for e in std::fs::read_dir(dir).ok()? {
        let bytes = std::fs::read(e.ok()?.path()).ok()?;
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            return v["next"].as_u64();
        }
    }
    None
}

#[test]
fn killed_at_each_step_then_resumed_ends_equal_to_the_snapshot() {
    let total_steps = 9; // 4 restores, 1 health gate, 4 verifies
    let mut real_kills = 0;
    for k in 0..total_steps {
        let (_t, d) = tmp();
        let repo = stack(&d);
        let snap = snapshot(&d);
        bad_deploy(&d, &repo);
        let mut child = bin()
            .current_dir(&d)
            .args(["rollback", &snap, "--yes", "--json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let mut killed = false;
        while start.elapsed() < Duration::from_secs(20) {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "rollback exited {status} before the kill at step {k}");
                break;
            }
            if journal_next(&d).is_some_and(|n| n >= k) {
                // SIGKILL: no destructor, no flush, no lock release but the kernel's.
                unsafe_kill(child.id());
                killed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if child.try_wait().unwrap().is_none() {
            let _ = child.kill();
        }
        child.wait().unwrap();
        if killed {
            let o = run(&d, &["resume", "latest", "--json"]);
            // The kill may land after the final record was written: nothing to resume then.
            if code(&o) == 0 {
                real_kills += 1;
                let rec: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                assert_eq!(rec["status"], "succeeded", "{}", text(&o));
                assert_eq!(rec["resumed"], true);
                assert_eq!(rec["data_loss"], false);
            } else {
                assert_eq!(code(&o), 2, "step {k}: {}", text(&o));
            }
        }
        let v = run(&d, &["verify", &snap]);
        assert_eq!(code(&v), 0, "after a kill at step {k} and resume: {}", text(&v));
        assert_eq!(std::fs::read_to_string(d.join("svc.state")).unwrap(), "svc-v1\n");
        assert!(!d.join("config/new.json").exists());
    }
    assert!(real_kills >= 3, "only {real_kills} kills landed mid-rollback");
}

#[allow(unsafe_code)]
fn unsafe_kill(pid: u32) {
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

#[test]
fn exit_codes_and_json() {
    let (_t, d) = tmp();
    let repo = stack(&d);
    // Bad input: 2, naming the file, line and key.
    write(&d.join("bad.toml"), "[[component]]\nname = \"x\"\ndriver = \"git\"\nphase = \"one\"\n");
    let o = run(&d, &["--config", "bad.toml", "list"]);
    assert_eq!(code(&o), 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.toml:4"), "{}", text(&o));
    let o = run(&d, &["--json", "plan", "nope"]);
    assert_eq!(code(&o), 2);
    let err: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(err["error"]["code"], "NOT_FOUND");
    let o = run(&d, &["plan", "latest", "--level", "sideways"]);
    assert_eq!(code(&o), 2);

    let snap = snapshot(&d);
    let o = run(&d, &["--json", "list"]);
    assert_eq!(code(&o), 0);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let o = run(&d, &["verify", &snap]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    bad_deploy(&d, &repo);
    let o = run(&d, &["verify", &snap]);
    assert_eq!(code(&o), 1);
    assert!(String::from_utf8_lossy(&o.stdout).contains("DRIFT"));

    // Dry run changes nothing.
    let o = run(&d, &["rollback", &snap, "--dry-run"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(code(&run(&d, &["verify", &snap])), 1);

    // A rollback in progress holds the lock: a second one exits 3.
    let first = bin()
        .current_dir(&d)
        .args(["rollback", &snap, "--yes", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while journal_next(&d).is_none() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = run(&d, &["rollback", &snap, "--yes"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success());
    let rec: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints one JSON document");
    assert_eq!(rec["status"], "succeeded");
    assert_eq!(rec["kind"], "rollback");

    let o = run(&d, &["--json", "assess", "--error-rate", "31%", "--perf-degradation", "0.55"]);
    let a: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(a["severity"], "high");
    assert_eq!(a["decision"], "rollback");
    let o = run(&d, &["assess", "--error-rate", "1.7", "--perf-degradation", "0"]);
    assert_eq!(code(&o), 2, "{}", text(&o));

    let o = run(&d, &["report", "latest"]);
    assert_eq!(code(&o), 0);
    assert!(String::from_utf8_lossy(&o.stdout).contains("## Timeline"));
    let o = run(&d, &["--json", "history"]);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap().as_array().unwrap().len(), 1);
    let o = run(&d, &["check"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = run(&d, &["gc", "--keep", "1"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
}

#[test]
fn demo_runs_with_no_server() {
    let (_t, d) = tmp();
    let o = run(&d, &["--json", "demo", "--dir", d.join("demo").to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let rec: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
    assert_eq!(rec["status"], "succeeded");
    assert_eq!(rec["data_loss"], false);
    assert_eq!(rec["level"], "complete");
    // It leaves nothing behind but its scratch dir.
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
}

/// SIGTERM (a service manager stopping the CLI) mid-rollback: the running step ends,
/// the rest waits, the record says `interrupted`, and `resume` finishes it.
#[test]
fn sigterm_stops_at_a_step_boundary_and_resume_finishes() {
    let (_t, d) = tmp();
    write(&d.join("a.txt"), "a1\n");
    write(&d.join("b.txt"), "b1\n");
    write(
        &d.join("rollback.toml"),
        r#"[[component]]
name = "a"
driver = "command"
phase = 1
capture = ["cat", "a.txt"]
restore = ["sh", "-c", "cat > a.txt"]

[[component]]
name = "b"
driver = "command"
phase = 2
capture = ["cat", "b.txt"]
restore = ["sh", "-c", "sleep 1.5; cat > b.txt"]
"#,
    );
    let id = snapshot(&d);
    write(&d.join("a.txt"), "a2\n");
    write(&d.join("b.txt"), "b2\n");
    let child = bin()
        .current_dir(&d)
        .args(["--json", "rollback", &id, "--yes", "--no-safety-snapshot"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Phase 2 (`b`, 1.5 s) is restored first: signal while it runs.
    std::thread::sleep(Duration::from_millis(700));
    let k = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(k.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 1, "{}", text(&o));
    let rec: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(rec["status"], "interrupted", "{}", text(&o));
    assert_eq!(std::fs::read_to_string(d.join("b.txt")).unwrap(), "b1\n", "the running step finished");
    assert_eq!(std::fs::read_to_string(d.join("a.txt")).unwrap(), "a2\n", "the next one waited");

    let o = run(&d, &["--json", "resume", "latest"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(std::fs::read_to_string(d.join("a.txt")).unwrap(), "a1\n");
    let o = run(&d, &["verify", &id]);
    assert_eq!(code(&o), 0, "{}", text(&o));
}
