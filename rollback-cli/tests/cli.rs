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
            // What the operator sees first: `history`, and a new rollback refused.
            let h = run(&d, &["--json", "history"]);
            let h: Vec<serde_json::Value> = serde_json::from_slice(&h.stdout).unwrap();
            let again = run(&d, &["rollback", &snap, "--yes"]);
            let o = run(&d, &["resume", "latest", "--json"]);
            // The kill may land after the final record was written: nothing to resume then.
            if code(&o) == 0 {
                real_kills += 1;
                let last = h.last().expect("history lists the killed rollback");
                assert_eq!(last["status"], "interrupted", "step {k}: {last}");
                assert!(last["error"].as_str().unwrap().contains("rollback resume"), "{last}");
                assert_eq!(code(&again), 3, "a new rollback over an unfinished one: {}", text(&again));
                assert!(String::from_utf8_lossy(&again.stderr).contains("rollback resume"), "{}", text(&again));
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
    // A severity that is not one of the four is refused before anything runs.
    let o = run(&d, &["rollback", &snap, "--yes", "--severity", "urgent"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("severity `urgent` is not one of low, medium, high, critical"),
        "{}",
        text(&o)
    );
    assert_eq!(code(&run(&d, &["verify", &snap])), 1);
    // A bare year (or any prefix that stops within the date) picks a snapshot by
    // accident: refused, naming the snapshot it would have picked; nothing changes.
    for short in [&snap[..4], &snap[..8]] {
        let o = run(&d, &["rollback", short, "--yes"]);
        assert_eq!(code(&o), 2, "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&snap) && err.contains("only part of a date"), "{}", text(&o));
        assert_eq!(code(&run(&d, &["verify", &snap])), 1);
    }
    let h = run(&d, &["--json", "history"]);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&h.stdout).unwrap(), serde_json::json!([]), "{}", text(&h));

    // A rollback in progress holds the lock: a second one exits 3.
    let first = bin()
        .current_dir(&d)
        .args(["rollback", &snap, "--yes", "--json", "--severity", "high"])
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
    assert_eq!(rec["severity"], "high");

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

#[test]
fn out_of_range_values_exit_2_naming_the_key_and_never_panic() {
    let (_t, d) = tmp();
    let _repo = stack(&d);
    let snap = snapshot(&d);
    let good = std::fs::read_to_string(d.join("rollback.toml")).unwrap();
    for (extra, key) in [
        ("timeout = 1e30\n", "timeout"),
        ("timeout = 1e19\n", "timeout"),
        ("health = [{ tcp = \"127.0.0.1:1\", timeout = -1 }]\n", "timeout"),
        ("health = [{ tcp = \"127.0.0.1:1\", timeout = 1e19 }]\n", "timeout"),
        ("health = [{ tcp = \"127.0.0.1:1\", interval = 1e300 }]\n", "interval"),
        ("health = [{ tcp = \"127.0.0.1:1\", interval = \"0s\" }]\n", "interval"),
        ("health = [{ tcp = \"127.0.0.1:1\", timeout = \"0s\" }]\n", "timeout"),
        ("health = [{ http = \"http://127.0.0.1:1/\", status = 70000 }]\n", "status"),
    ] {
        write(
            &d.join("rollback.toml"),
            &format!("{good}\n[[component]]\nname = \"x\"\ndriver = \"files\"\npaths = [\"config\"]\n{extra}"),
        );
        for args in [&["check"][..], &["rollback", &snap, "--yes"][..], &["resume", "latest"][..]] {
            let o = run(&d, args);
            assert_eq!(code(&o), 2, "{extra} {args:?}: {}", text(&o));
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains(key) && !err.contains("panicked"), "{extra}: {err}");
        }
    }
    write(&d.join("rollback.toml"), &format!("[rto]\ncomplete = 1e300\n{good}"));
    let o = run(&d, &["check"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    write(&d.join("rollback.toml"), &good);
    for max_age in ["1e30", "-1", "NaN"] {
        let o = run(&d, &["gc", "--max-age", max_age]);
        assert_eq!(code(&o), 2, "{max_age}: {}", text(&o));
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
    }
    // Nothing was changed by any of it.
    assert_eq!(code(&run(&d, &["verify", &snap])), 0);
}

/// Runs the CLI with a failpoint armed: it aborts there, like `kill -9`.
fn run_until_failpoint(dir: &Path, failpoint: &str, args: &[&str]) -> Output {
    let o =
        bin().current_dir(dir).env("ROLLBACK_FAILPOINTS", failpoint).args(args).stdin(Stdio::null()).output().unwrap();
    assert!(o.status.code().is_none(), "expected an abort at {failpoint}: {}", text(&o));
    o
}

#[test]
fn a_drill_killed_after_its_perturbation_is_listed_and_resumed() {
    for failpoint in ["drill-journaled", "drill-perturbed"] {
        let (_t, d) = tmp();
        let _repo = stack(&d);
        let before = std::fs::read_to_string(d.join("config/strategy.json")).unwrap();
        run_until_failpoint(&d, failpoint, &["drill", "--component", "cfg"]);
        if failpoint == "drill-perturbed" {
            // The perturbation is in place, as a crash would leave it.
            assert_ne!(std::fs::read_dir(d.join("config")).unwrap().count(), 1, "files drill adds a file");
        }
        let c = run(&d, &["--json", "check"]);
        let c: serde_json::Value = serde_json::from_slice(&c.stdout).unwrap();
        assert_eq!(c["unfinished_rollbacks"].as_array().unwrap().len(), 1, "{c}");
        let h = run(&d, &["--json", "history"]);
        let h: Vec<serde_json::Value> = serde_json::from_slice(&h.stdout).unwrap();
        assert_eq!((h.len(), h[0]["kind"].as_str(), h[0]["status"].as_str()), (1, Some("drill"), Some("interrupted")));
        let o = run(&d, &["drill", "--component", "cfg"]);
        assert_eq!(code(&o), 3, "{}", text(&o));
        let o = run(&d, &["--json", "resume", "latest"]);
        assert_eq!(code(&o), 0, "{}", text(&o));
        assert_eq!(std::fs::read_dir(d.join("config")).unwrap().count(), 1, "the perturbation is undone");
        assert_eq!(std::fs::read_to_string(d.join("config/strategy.json")).unwrap(), before);
        let c = run(&d, &["--json", "check"]);
        let c: serde_json::Value = serde_json::from_slice(&c.stdout).unwrap();
        assert!(c["unfinished_rollbacks"].as_array().unwrap().is_empty(), "{c}");
    }
}

#[test]
fn a_gc_killed_between_forgetting_and_releasing_is_finished_by_the_next() {
    let (_t, d) = tmp();
    let repo = stack(&d);
    let first = snapshot(&d);
    let _second = snapshot(&d);
    let tags =
        |repo: &git2::Repository| repo.tag_names(None).unwrap().iter().flatten().map(String::from).collect::<Vec<_>>();
    let pinned = tags(&repo);
    assert_eq!(pinned.len(), 2, "{pinned:?}");
    run_until_failpoint(&d, "gc-forgotten", &["gc", "--keep", "1"]);
    // Forgotten first: no command offers the half-released snapshot.
    let o = run(&d, &["--json", "list"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains(&first), "{}", text(&o));
    assert_eq!(code(&run(&d, &["plan", &first])), 2);
    assert_eq!(tags(&repo).len(), 2, "killed before the release");
    let o = run(&d, &["gc", "--keep", "5"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(tags(&repo).len(), 1, "the next gc released what the killed one forgot");
    assert_eq!(std::fs::read_dir(d.join(".rollback/gc")).unwrap().count(), 0);
}

#[test]
fn abandon_closes_an_unfinished_rollback_and_names_what_it_left() {
    let (_t, d) = tmp();
    let repo = stack(&d);
    let snap = snapshot(&d);
    bad_deploy(&d, &repo);
    run_until_failpoint(&d, "step-done", &["rollback", &snap, "--yes"]);
    let c = run(&d, &["--json", "check"]);
    let c: serde_json::Value = serde_json::from_slice(&c.stdout).unwrap();
    let id = c["unfinished_rollbacks"][0].as_str().expect("one unfinished").to_string();
    let o = run(&d, &["--json", "abandon", &id]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let rec: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rec["status"], "failed");
    let notes = rec["notes"].to_string();
    assert!(notes.contains("abandoned") && notes.contains("restore started:"), "{notes}");
    assert_eq!(code(&run(&d, &["abandon", &id])), 2, "only once");
    // New rollbacks run again.
    let o = run(&d, &["rollback", &snap, "--yes"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
}

/// Three command components restored c, b, a (reverse phase order); b takes 1.5 s.
fn three_commands(d: &Path) -> String {
    for f in ["a", "b", "c"] {
        write(&d.join(format!("{f}.txt")), &format!("{f}1\n"));
    }
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

[[component]]
name = "c"
driver = "command"
phase = 3
capture = ["cat", "c.txt"]
restore = ["sh", "-c", "cat > c.txt"]
"#,
    );
    let id = snapshot(d);
    for f in ["a", "b", "c"] {
        write(&d.join(format!("{f}.txt")), &format!("{f}2\n"));
    }
    id
}

fn signal_while_b_restores(d: &Path, signal: &str, args: &[&str]) -> Output {
    let child = bin()
        .current_dir(d)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until b's restore has started (its step is journaled), then signal.
    let start = Instant::now();
    while journal_next(d) != Some(1) && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap().success());
    child.wait_with_output().unwrap()
}

#[test]
fn sigterm_during_resume_stops_at_a_step_boundary_and_resume_finishes() {
    let (_t, d) = tmp();
    let id = three_commands(&d);
    run_until_failpoint(&d, "step-done", &["rollback", &id, "--yes", "--no-safety-snapshot"]);
    assert_eq!(std::fs::read_to_string(d.join("c.txt")).unwrap(), "c1\n");
    let o = signal_while_b_restores(&d, "-TERM", &["--json", "resume", "latest"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    let rec: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(rec["status"], "interrupted", "{}", text(&o));
    assert_eq!(std::fs::read_to_string(d.join("b.txt")).unwrap(), "b1\n", "the running step finished");
    assert_eq!(std::fs::read_to_string(d.join("a.txt")).unwrap(), "a2\n", "the next one waited");
    let o = run(&d, &["--json", "resume", "latest"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(code(&run(&d, &["verify", &id])), 0);
}

#[test]
fn a_hang_up_does_not_stop_a_rollback() {
    let (_t, d) = tmp();
    let id = three_commands(&d);
    let o = signal_while_b_restores(&d, "-HUP", &["--json", "rollback", &id, "--yes", "--no-safety-snapshot"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let rec: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(rec["status"], "succeeded", "{}", text(&o));
    assert_eq!(code(&run(&d, &["verify", &id])), 0);
}

#[test]
fn resume_ends_what_a_killed_run_left_running_before_it_runs_the_step_again() {
    let (_t, d) = tmp();
    write(&d.join("b.txt"), "b1\n");
    // The first run of the restore starts a background job that writes "late" 2 s
    // later: left running by a killed CLI, it would overwrite the resumed restore.
    write(
        &d.join("rollback.toml"),
        r#"[[component]]
name = "b"
driver = "command"
capture = ["cat", "b.txt"]
restore = ["sh", "-c", "if [ ! -e ran ]; then touch ran; (sleep 2; echo late > b.txt) & fi; cp \"$ROLLBACK_STATE_FILE\" b.txt; sleep 3"]
"#,
    );
    let id = snapshot(&d);
    write(&d.join("b.txt"), "b2\n");
    let mut child = bin()
        .current_dir(&d)
        .args(["rollback", &id, "--yes", "--no-safety-snapshot"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the CLI once the restore runs (its state was written).
    let start = Instant::now();
    while std::fs::read_to_string(d.join("b.txt")).unwrap_or_default() != "b1\n" {
        assert!(start.elapsed() < Duration::from_secs(20), "the restore never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    unsafe_kill(child.id());
    child.wait().unwrap();
    let o = run(&d, &["--json", "resume", "latest"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    // The resumed restore takes 3 s: the orphan's write (2 s after the kill) would
    // land before the resume's verify.
    let rec: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rec["status"], "succeeded", "{}", text(&o));
    assert_eq!(std::fs::read_to_string(d.join("b.txt")).unwrap(), "b1\n");
    assert!(!d.join(".rollback/journals").read_dir().unwrap().any(|e| e
        .unwrap()
        .path()
        .extension()
        .is_some_and(|x| x == "children")));
}

/// `psql` as the local superuser; the output without alignment or headers.
fn psql(db: &str, sql: &str) -> String {
    let o = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db, "-Atqc", sql])
        .output()
        .expect("psql (PostgreSQL must run on 127.0.0.1:5432)");
    assert!(o.status.success(), "{sql}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A rollback killed right after it fenced a database's writers leaves the fence
/// up (a connection limit of 0): `check` and `history` list the rollback, and both
/// `resume` and `abandon` lift the fence.
#[test]
fn a_rollback_killed_with_its_write_fence_up_is_lifted_by_resume_or_abandon() {
    for finish in ["resume", "abandon"] {
        let (_t, d) = tmp();
        let db = format!("rbcli_fence_{}_{finish}", std::process::id());
        psql("postgres", &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
        psql("postgres", &format!("CREATE DATABASE {db}"));
        psql(&db, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)");
        write(
            &d.join("rollback.toml"),
            &format!("[[component]]\nname = \"db\"\ndriver = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:5432/{db}\"\n"),
        );
        let snap = snapshot(&d);
        psql(&db, "INSERT INTO t VALUES (2)");
        let limit = || psql("postgres", &format!("SELECT datconnlimit FROM pg_database WHERE datname = '{db}'"));
        run_until_failpoint(&d, "fence-raised", &["rollback", &snap, "--yes"]);
        assert_eq!(limit(), "0", "killed with the fence up");
        let h = run(&d, &["--json", "history"]);
        let h: Vec<serde_json::Value> = serde_json::from_slice(&h.stdout).unwrap();
        assert_eq!(h[0]["status"].as_str(), Some("interrupted"), "{h:?}");
        let id = h[0]["rollback_id"].as_str().unwrap().to_string();
        let o = run(&d, &["--json", finish, &id]);
        assert_eq!(code(&o), 0, "{}", text(&o));
        let rec: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(limit(), "-1", "{finish} lifts the fence: {rec}");
        if finish == "resume" {
            assert_eq!(rec["status"], "succeeded", "{rec}");
            assert_eq!(psql(&db, "SELECT string_agg(id::text, ',') FROM t"), "1");
            assert!(rec["fences"][0]["how"].as_str().unwrap().contains("connection limit 0"), "{rec}");
        } else {
            assert_eq!(rec["status"], "failed", "{rec}");
            assert_eq!(psql(&db, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t"), "1,2", "nothing restored");
        }
        psql("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));
    }
}

/// Held by each test that rolls a Redis component back: its write fence takes write
/// commands from every user of the server, so the others' `redis-cli` would fail.
fn redis_turn() -> std::sync::MutexGuard<'static, ()> {
    static REDIS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    REDIS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The same for a Redis fence, killed inside the restore (after its delete) with
/// write commands taken from every ACL user: `resume` raises the fence again (the
/// killed run's user and password are gone with it) and finishes the restore;
/// `resume` and `abandon` give every user its rules back and delete the fence's user.
#[test]
fn a_rollback_killed_with_its_redis_fence_up_is_lifted_by_resume_or_abandon() {
    let _redis = redis_turn();
    for finish in ["resume", "abandon"] {
        let (_t, d) = tmp();
        let key = format!("rbcli:fence:{}:{finish}", std::process::id());
        redis_cli(&["-n", "14", "SET", &key, "before"]);
        write(
            &d.join("rollback.toml"),
            &format!(
                "[[component]]\nname = \"cache\"\ndriver = \"redis\"\nurl = \"redis://127.0.0.1:6379/14\"\npattern = \"{key}\"\n"
            ),
        );
        let snap = snapshot(&d);
        redis_cli(&["-n", "14", "SET", &key, "deployed"]);
        let acl = || redis_cli(&["ACL", "LIST"]);
        let before = acl();
        run_until_failpoint(&d, "redis-deleted", &["rollback", &snap, "--yes"]);
        let fenced = acl();
        assert!(fenced.contains("user default on nopass ~* &* +@all -@write"), "killed with the fence up: {fenced}");
        assert!(fenced.contains("user rollback-fence on"), "{fenced}");
        let h = run(&d, &["--json", "history"]);
        let h: Vec<serde_json::Value> = serde_json::from_slice(&h.stdout).unwrap();
        let id = h[0]["rollback_id"].as_str().unwrap().to_string();
        let o = run(&d, &["--json", finish, &id]);
        assert_eq!(code(&o), 0, "{}", text(&o));
        let rec: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(acl(), before, "{finish} gives every user its rules back: {rec}");
        let value = redis_cli(&["-n", "14", "GET", &key]);
        if finish == "resume" {
            assert_eq!(rec["status"], "succeeded", "{rec}");
            assert_eq!(value, "before");
            assert!(rec["fences"][0]["how"].as_str().unwrap().contains("NOPERM"), "{rec}");
        } else {
            assert_eq!(rec["status"], "failed", "{rec}");
            assert_eq!(value, "", "abandoned after the delete: the safety snapshot holds the key");
        }
        redis_cli(&["-n", "14", "DEL", &key]);
    }
}

/// A tmpfs of a few hundred KiB, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(o.status.success(), "this test mounts a tmpfs (it needs root): {}", String::from_utf8_lossy(&o.stderr));
        SmallDisk(at.to_path_buf())
    }

    /// Fills what is left of it.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let chunk = vec![0x5au8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }

    fn unfill(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The store on a full disk: a snapshot that does not fit, a rollback whose journal
/// cannot be written, and one whose safety snapshot does not fit. Each is an error
/// naming the full disk; none changes the stack, leaves temporary files or lists a
/// snapshot it could not finish; with room again, the same commands work.
#[test]
fn a_full_disk_is_an_error_that_changes_nothing_and_leaves_nothing_behind() {
    let (_t, d) = tmp();
    let disk = SmallDisk::mount(&d.join("store"), "768k");
    write(
        &d.join("rollback.toml"),
        "[store]\npath = \"store\"\n\n[[component]]\nname = \"data\"\ndriver = \"files\"\npaths = [\"data\"]\n",
    );
    write(&d.join("data/orders.json"), "{\"orders\": 1}\n");
    let snap = snapshot(&d);
    let tmp_files = || std::fs::read_dir(d.join("store/tmp")).map(|r| r.count()).unwrap_or(0);
    let listed = || {
        let o = run(&d, &["--json", "list"]);
        serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout).unwrap().len()
    };

    // A snapshot bigger than the disk: random bytes do not compress.
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(d.join("data/big.bin"), &big).unwrap();
    let o = run(&d, &["snapshot"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("No space left on device"), "{}", text(&o));
    assert_eq!(tmp_files(), 0, "no partial artifact is left");
    assert_eq!(listed(), 1, "only the finished snapshot is listed");
    std::fs::remove_file(d.join("data/big.bin")).unwrap();

    // A rollback whose journal cannot be written: nothing changes.
    write(&d.join("data/orders.json"), "{\"orders\": 2}\n");
    disk.fill();
    let o = run(&d, &["rollback", &snap, "--yes"]);
    assert_ne!(code(&o), 0, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("No space left on device"), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(d.join("data/orders.json")).unwrap(), "{\"orders\": 2}\n");
    disk.unfill();

    // A safety snapshot that does not fit: nothing is restored, no rollback is left
    // unfinished.
    std::fs::write(d.join("data/big.bin"), &big).unwrap();
    let o = run(&d, &["rollback", &snap, "--yes"]);
    assert_ne!(code(&o), 0, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("No space left on device"), "{}", text(&o));
    assert!(d.join("data/big.bin").exists(), "nothing was restored");
    assert_eq!(tmp_files(), 0);
    let c = run(&d, &["--json", "check"]);
    let c: serde_json::Value = serde_json::from_slice(&c.stdout).unwrap();
    assert!(c["unfinished_rollbacks"].as_array().unwrap().is_empty(), "{c}");

    // Room again: the rollback runs.
    std::fs::remove_file(d.join("data/big.bin")).unwrap();
    write(&d.join("data/orders.json"), "{\"orders\": 3}\n");
    let o = run(&d, &["rollback", &snap, "--yes"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(std::fs::read_to_string(d.join("data/orders.json")).unwrap(), "{\"orders\": 1}\n");
    drop(disk);
}

fn mysql_cli(sql: &str) -> String {
    let o = Command::new("mysql")
        .args(["-uroot", "-h127.0.0.1", "-P3306", "-N", "-B", "-e", sql])
        .output()
        .expect("the mysql client (MariaDB must run on 127.0.0.1:3306)");
    assert!(o.status.success(), "{sql}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn redis_cli(args: &[&str]) -> String {
    let o = Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", "6379"]).args(args).output().expect("redis-cli");
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn sqlite_cli(db: &Path, sql: &str) -> String {
    let o = Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); r=c.executescript(sys.argv[2]) if ';' in sys.argv[2] else None; print(','.join(str(x[0]) for x in c.execute(sys.argv[2]).fetchall()) if r is None else ''); c.commit()"])
        .arg(db)
        .arg(sql)
        .output()
        .unwrap();
    assert!(o.status.success(), "{sql}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Files beside `dir`'s entries that a restore writes aside before renaming them in.
fn aside_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".rollback-"))
        .collect()
}

/// A kill inside each data driver's restore — after its swap, its rename, its
/// delete, a file written aside — then `resume`: the component verifies equal to
/// the snapshot, and nothing the killed run made is left behind.
#[test]
fn killed_inside_each_drivers_restore_then_resumed_ends_equal_and_leaves_nothing() {
    let _redis = redis_turn();
    let pid = std::process::id();
    for case in [
        "postgres-dropped",
        "postgres-swapped",
        "mysql-dump",
        "mysql-fast",
        "redis-deleted",
        "files-written-aside",
        "file-written-aside",
        "sqlite-written-aside",
        "sqlite-copied-in-transaction",
    ] {
        let (_t, d) = tmp();
        let (component, failpoint, state): (String, &str, Box<dyn Fn() -> String>) = match case {
            "postgres-dropped" | "postgres-swapped" => {
                let strategy = if case == "postgres-dropped" { "dump" } else { "fast" };
                let db = format!("rbcli_kill_{strategy}_{pid}");
                psql("postgres", &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
                psql("postgres", &format!("CREATE DATABASE {db}"));
                psql(&db, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)");
                let db2 = db.clone();
                (
                    format!("driver = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:5432/{db}\"\nstrategy = \"{strategy}\""),
                    case,
                    Box::new(move || psql(&db2, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t")),
                )
            }
            "mysql-dump" | "mysql-fast" => {
                let strategy = &case[6..];
                let db = format!("rbcli_kill_{strategy}_{pid}");
                mysql_cli(&format!(
                    "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}; \
                     CREATE TABLE {db}.t (id INT PRIMARY KEY); INSERT INTO {db}.t VALUES (1), (2); \
                     CREATE TABLE {db}.log (id INT); \
                     CREATE TRIGGER {db}.t_log AFTER INSERT ON {db}.t FOR EACH ROW INSERT INTO {db}.log VALUES (NEW.id)"
                ));
                let db2 = db.clone();
                (
                    format!(
                        "driver = \"mysql\"\nurl = \"mysql://root@127.0.0.1:3306/{db}\"\nstrategy = \"{strategy}\""
                    ),
                    "mysql-swapped",
                    Box::new(move || {
                        mysql_cli(&format!(
                            "SELECT CONCAT((SELECT GROUP_CONCAT(id ORDER BY id) FROM {db2}.t), ' triggers:', \
                             (SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{db2}'), ' scratch:', \
                             (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db2}' AND TABLE_NAME LIKE '\\_rollback\\_%'))"
                        ))
                    }),
                )
            }
            "redis-deleted" => {
                let prefix = format!("rbcli:kill:{pid}:");
                for k in ["a", "b"] {
                    redis_cli(&["SET", &format!("{prefix}{k}"), k]);
                }
                let p2 = prefix.clone();
                (
                    format!("driver = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\npattern = \"{prefix}*\""),
                    case,
                    Box::new(move || {
                        let mut keys: Vec<String> =
                            redis_cli(&["--scan", "--pattern", &format!("{p2}*")]).lines().map(String::from).collect();
                        keys.sort();
                        keys.iter().map(|k| format!("{k}={}", redis_cli(&["GET", k]))).collect::<Vec<_>>().join(",")
                    }),
                )
            }
            "files-written-aside" | "file-written-aside" => {
                write(&d.join("cfg/orders.json"), "{\"v\": 1}\n");
                let d2 = d.clone();
                let path = if case == "files-written-aside" { "cfg" } else { "cfg/orders.json" };
                (
                    format!("driver = \"files\"\npaths = [\"{path}\"]"),
                    "files-written-aside",
                    Box::new(move || {
                        format!(
                            "{} aside:{:?}",
                            std::fs::read_to_string(d2.join("cfg/orders.json")).unwrap_or_default().trim(),
                            aside_files(&d2.join("cfg"))
                        )
                    }),
                )
            }
            _ => {
                let db = d.join("data/app.db");
                std::fs::create_dir_all(db.parent().unwrap()).unwrap();
                let wal = case == "sqlite-copied-in-transaction";
                sqlite_cli(
                    &db,
                    &format!(
                        "PRAGMA journal_mode = {}; CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1), (2);",
                        if wal { "wal" } else { "delete" }
                    ),
                );
                let d2 = d.clone();
                (
                    // `sqlite-written-aside` without the fence: under it the restore writes
                    // in place, one SQLite transaction, and writes nothing aside. In WAL
                    // mode that transaction is the fence's, killed before its commit.
                    format!("driver = \"sqlite\"\npath = \"data/app.db\"\nfence = {wal}"),
                    case,
                    Box::new(move || {
                        format!(
                            "{} aside:{:?}",
                            sqlite_cli(&d2.join("data/app.db"), "SELECT id FROM t ORDER BY id"),
                            aside_files(&d2.join("data"))
                        )
                    }),
                )
            }
        };
        write(&d.join("rollback.toml"), &format!("[[component]]\nname = \"c\"\n{component}\n"));
        let snap = snapshot(&d);
        let want = state();
        // The deploy's change.
        match case {
            "postgres-dropped" | "postgres-swapped" => {
                let strategy = if case == "postgres-dropped" { "dump" } else { "fast" };
                psql(&format!("rbcli_kill_{strategy}_{pid}"), "INSERT INTO t VALUES (3)");
            }
            "mysql-dump" | "mysql-fast" => {
                mysql_cli(&format!("INSERT INTO rbcli_kill_{}_{pid}.t VALUES (3)", &case[6..]));
            }
            "redis-deleted" => {
                redis_cli(&["SET", &format!("rbcli:kill:{pid}:a"), "changed"]);
            }
            "files-written-aside" | "file-written-aside" => write(&d.join("cfg/orders.json"), "{\"v\": 2}\n"),
            _ => {
                sqlite_cli(&d.join("data/app.db"), "INSERT INTO t VALUES (3);");
            }
        }
        assert_ne!(state(), want, "{case}: the deploy changed it");
        run_until_failpoint(&d, failpoint, &["rollback", &snap, "--yes"]);
        let h = run(&d, &["--json", "history"]);
        let h: Vec<serde_json::Value> = serde_json::from_slice(&h.stdout).unwrap();
        assert_eq!(h[0]["status"].as_str(), Some("interrupted"), "{case}: {h:?}");
        let o = run(&d, &["--json", "resume", h[0]["rollback_id"].as_str().unwrap()]);
        assert_eq!(code(&o), 0, "{case}: {}", text(&o));
        assert_eq!(state(), want, "{case}: back to the snapshot, nothing of the killed run left");
        let v = run(&d, &["verify", &snap]);
        assert_eq!(code(&v), 0, "{case}: {}", text(&v));
        assert_eq!(std::fs::read_dir(d.join(".rollback/tmp")).map(|r| r.count()).unwrap_or(0), 0, "{case}");

        // Clean up what lives outside the temporary directory.
        match case {
            "postgres-dropped" | "postgres-swapped" => {
                let strategy = if case == "postgres-dropped" { "dump" } else { "fast" };
                let db = format!("rbcli_kill_{strategy}_{pid}");
                let leftovers = psql(
                    "postgres",
                    &format!("SELECT count(*) FROM pg_database WHERE datname LIKE '{db}\\_\\_rb\\_new%'"),
                );
                assert_eq!(leftovers, "0", "{case}: no half-made copy is left");
                for n in
                    psql("postgres", &format!("SELECT datname FROM pg_database WHERE datname LIKE '{db}%'")).lines()
                {
                    psql("postgres", &format!("DROP DATABASE \"{n}\" WITH (FORCE)"));
                }
            }
            "mysql-dump" | "mysql-fast" => {
                for f in std::fs::read_dir(d.join(".rollback/snapshots")).unwrap() {
                    let m: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(f.unwrap().path()).unwrap()).unwrap();
                    for p in m["parts"].as_array().unwrap() {
                        for k in ["snapshot_schema", "ready_schema"] {
                            if let Some(s) = p["state"][k].as_str() {
                                mysql_cli(&format!("DROP DATABASE IF EXISTS `{s}`"));
                            }
                        }
                    }
                }
                mysql_cli(&format!("DROP DATABASE rbcli_kill_{}_{pid}", &case[6..]));
            }
            "redis-deleted" => {
                for k in redis_cli(&["--scan", "--pattern", &format!("rbcli:kill:{pid}:*")]).lines() {
                    redis_cli(&["DEL", k]);
                }
            }
            _ => {}
        }
    }
}

fn docker_cli(args: &[&str]) -> String {
    let o = Command::new("docker").args(args).output().expect("the docker CLI (scripts/setup-docker.sh)");
    assert!(o.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Removes a test's containers, and any copy of them set aside, even when it fails.
struct Containers(String);

impl Drop for Containers {
    fn drop(&mut self) {
        for id in docker_cli(&["ps", "-aq", "--filter", &format!("name={}", self.0)]).split_whitespace() {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
}

/// A kill after the running container was set aside, and after its replacement was
/// created but not started, then `resume`: the snapshot's container runs, equal to
/// the snapshot, and no container is left aside.
#[test]
fn a_container_restore_killed_midway_is_resumed_and_leaves_no_container_aside() {
    for failpoint in ["docker-set-aside", "docker-created"] {
        let (_t, d) = tmp();
        let name = format!("rbcli-kill-{}-{}", std::process::id(), &failpoint[7..]);
        let _cleanup = Containers(name.clone());
        docker_cli(&["run", "-d", "--name", &name, "-e", "V=1", "rollback-test/web:ok"]);
        write(
            &d.join("rollback.toml"),
            &format!(
                "[[component]]\nname = \"web\"\ndriver = \"docker\"\ncontainer = \"{name}\"\nmin_uptime = \"1s\"\nhealth_timeout = \"30s\"\n"
            ),
        );
        let state = || {
            let all = docker_cli(&["ps", "-a", "--filter", &format!("name={name}"), "--format", "{{.Names}}"]);
            let mut names: Vec<&str> = all.lines().collect();
            names.sort();
            let env = docker_cli(&[
                "inspect",
                "-f",
                "{{.Image}} {{.State.Running}} {{range .Config.Env}}{{.}} {{end}}",
                &name,
            ]);
            format!(
                "{names:?} {}",
                env.split_whitespace().filter(|w| !w.starts_with("PATH=")).collect::<Vec<_>>().join(" ")
            )
        };
        let want = state();
        let snap = snapshot(&d);
        docker_cli(&["rm", "-f", &name]);
        docker_cli(&["run", "-d", "--name", &name, "-e", "V=2", "rollback-test/web:v2"]);
        assert_ne!(state(), want);
        run_until_failpoint(&d, failpoint, &["rollback", &snap, "--yes"]);
        let h = run(&d, &["--json", "history"]);
        let h: Vec<serde_json::Value> = serde_json::from_slice(&h.stdout).unwrap();
        let o = run(&d, &["--json", "resume", h[0]["rollback_id"].as_str().unwrap()]);
        assert_eq!(code(&o), 0, "{failpoint}: {}", text(&o));
        assert_eq!(state(), want, "{failpoint}: the snapshot's container runs, and none is left aside");
        let v = run(&d, &["verify", &snap]);
        assert_eq!(code(&v), 0, "{failpoint}: {}", text(&v));
    }
}

/// What a capture of snapshot `id` pins outside the store for [`pinned_stack`]: its
/// git tag, its PostgreSQL copies and its MySQL schemas, by name.
fn pins_of(d: &Path, db: &str, id: &str) -> Vec<String> {
    let mut out = Vec::new();
    let repo = git2::Repository::open(d.join("app")).unwrap();
    if repo.find_reference(&format!("refs/tags/rollback/{id}")).is_ok() {
        out.push(format!("tag rollback/{id}"));
    }
    let like = format!("{db}__rb_{}", id.to_lowercase()).replace('_', "\\_");
    for n in psql("postgres", &format!("SELECT datname FROM pg_database WHERE datname LIKE '{like}%'")).lines() {
        out.push(format!("database {n}"));
    }
    let schema = format!("CONCAT('_rollback_', LEFT(SHA2(CONCAT('{db}', CHAR(0), '{id}'), 256), 12))");
    for n in mysql_cli(&format!(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ({schema}, CONCAT({schema}, '_r'))"
    ))
    .lines()
    {
        out.push(format!("schema {n}"));
    }
    out
}

/// A stack whose snapshots pin things outside the store: a git tag, PostgreSQL and
/// MySQL `fast` copies. Returns the database name both servers use.
fn pinned_stack(d: &Path, case: &str) -> String {
    let db = format!("rbcli_pin_{case}_{}", std::process::id());
    psql("postgres", &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    psql("postgres", &format!("CREATE DATABASE {db}"));
    psql(&db, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)");
    mysql_cli(&format!(
        "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}; \
         CREATE TABLE {db}.t (id INT PRIMARY KEY); INSERT INTO {db}.t VALUES (1), (2)"
    ));
    let repo = git2::Repository::init(d.join("app")).unwrap();
    write(&d.join("app/engine.py"), "V = 1\n");
    commit_all(&repo, "v1");
    // No MySQL fence: `read_only` is server-wide, and other tests share the server.
    write(
        &d.join("rollback.toml"),
        &format!(
            "[[component]]\nname = \"code\"\ndriver = \"git\"\nrepo = \"app\"\n\n\
             [[component]]\nname = \"pg\"\ndriver = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:5432/{db}\"\nstrategy = \"fast\"\n\n\
             [[component]]\nname = \"my\"\ndriver = \"mysql\"\nurl = \"mysql://root@127.0.0.1:3306/{db}\"\nstrategy = \"fast\"\nfence = false\n"
        ),
    );
    db
}

fn drop_pinned_stack(d: &Path, db: &str) {
    for f in std::fs::read_dir(d.join(".rollback/snapshots")).unwrap() {
        let id = f.unwrap().file_name().to_string_lossy().trim_end_matches(".json").to_string();
        for p in pins_of(d, db, &id) {
            if let Some(s) = p.strip_prefix("schema ") {
                mysql_cli(&format!("DROP DATABASE IF EXISTS `{s}`"));
            }
        }
    }
    for n in psql("postgres", &format!("SELECT datname FROM pg_database WHERE datname LIKE '{db}%'")).lines() {
        psql("postgres", &format!("DROP DATABASE \"{n}\" WITH (FORCE)"));
    }
    mysql_cli(&format!("DROP DATABASE IF EXISTS {db}"));
}

/// The one capture a killed command left begun and never ended, by its note.
fn unfinished_capture(d: &Path) -> Option<String> {
    let mut ids: Vec<String> = std::fs::read_dir(d.join(".rollback/captures"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().trim_end_matches(".json").to_string())
        .collect();
    assert!(ids.len() <= 1, "{ids:?}");
    ids.pop()
}

/// A snapshot killed while its parts are captured (one done, others midway) has
/// pinned a tag and database copies that no manifest names. `check` says so, and
/// the next `gc` releases them all, while the finished snapshots keep theirs. A
/// kill after the manifest is written leaves a whole snapshot: nothing of it goes.
#[test]
fn a_snapshot_killed_midway_leaves_nothing_pinned_once_gc_runs() {
    let (_t, d) = tmp();
    let db = pinned_stack(&d, "snap");
    let good = snapshot(&d);
    let good_pins = pins_of(&d, &db, &good);
    assert_eq!(good_pins.len(), 5, "tag, copy and ready copy, schema and ready schema: {good_pins:?}");

    run_until_failpoint(&d, "part-captured:pg", &["snapshot"]);
    let killed = unfinished_capture(&d).expect("the killed capture left its note");
    let o = run(&d, &["--json", "list"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains(&killed), "never listed: {}", text(&o));
    let c = run(&d, &["--json", "check"]);
    assert!(String::from_utf8_lossy(&c.stdout).contains(&format!("snapshot {killed} of ")), "{}", text(&c));
    let left = pins_of(&d, &db, &killed);
    assert!(
        left.iter().any(|p| p.starts_with("database")),
        "the kill left a copy (else this test shows nothing): {left:?}"
    );

    let o = run(&d, &["gc", "--keep", "10"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(pins_of(&d, &db, &killed), Vec::<String>::new(), "gc released what the killed capture pinned");
    assert_eq!(unfinished_capture(&d), None);
    assert_eq!(pins_of(&d, &db, &good), good_pins, "the finished snapshot keeps its own");

    // Killed after its manifest was written: a whole snapshot, kept.
    run_until_failpoint(&d, "snapshot-written", &["snapshot"]);
    let whole = unfinished_capture(&d).expect("the note is removed after the manifest");
    let o = run(&d, &["gc", "--keep", "10"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(unfinished_capture(&d), None);
    assert_eq!(pins_of(&d, &db, &whole).len(), 5, "a listed snapshot keeps its pins");
    let v = run(&d, &["verify", &whole]);
    assert_eq!(code(&v), 0, "{}", text(&v));
    drop_pinned_stack(&d, &db);
}

/// A rollback killed while it takes its safety snapshot: `resume` takes it again
/// (under a new id), finishes, and releases what the killed capture had pinned.
#[test]
fn a_rollback_killed_in_its_safety_snapshot_is_resumed_and_leaves_nothing_pinned() {
    let (_t, d) = tmp();
    let db = pinned_stack(&d, "safety");
    let snap = snapshot(&d);
    psql(&db, "INSERT INTO t VALUES (3)");
    mysql_cli(&format!("INSERT INTO {db}.t VALUES (3)"));
    run_until_failpoint(&d, "part-captured:my", &["rollback", &snap, "--yes"]);
    let killed = unfinished_capture(&d).expect("the killed safety capture left its note");
    let left = pins_of(&d, &db, &killed);
    assert!(
        left.iter().any(|p| p.starts_with("schema")),
        "the kill left a schema (else this test shows nothing): {left:?}"
    );
    let o = run(&d, &["--json", "resume", "latest"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let rec: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rec["status"], "succeeded", "{rec}");
    assert_ne!(rec["safety_snapshot_id"].as_str(), Some(killed.as_str()));
    assert_eq!(pins_of(&d, &db, &killed), Vec::<String>::new(), "resume released the killed capture's pins");
    assert_eq!(unfinished_capture(&d), None);
    assert_eq!(psql(&db, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t"), "1,2");
    assert_eq!(mysql_cli(&format!("SELECT GROUP_CONCAT(id ORDER BY id) FROM {db}.t")), "1,2");
    let v = run(&d, &["verify", &snap]);
    assert_eq!(code(&v), 0, "{}", text(&v));
    drop_pinned_stack(&d, &db);
}

/// A rollback whose health gate fails is compensated component by component; killed
/// after the first is put back, `resume` puts back the rest (not the first again
/// from scratch, nor the snapshot's state) and ends `compensated`, every component
/// equal to the safety snapshot: the bad deploy, as it was before the rollback.
#[test]
fn a_compensation_killed_midway_is_finished_by_resume() {
    let (_t, d) = tmp();
    let repo = stack(&d);
    // The gate can never pass: the rollback must compensate.
    let cfg = std::fs::read_to_string(d.join("rollback.toml")).unwrap().replace(
        r#"health = [{ command = ["sh", "-c", "sleep 0.3; test -e releases/current/VERSION"], timeout = "5s" }]"#,
        r#"health = [{ command = ["test", "-e", "never-there"], timeout = "1s" }]"#,
    );
    write(&d.join("rollback.toml"), &cfg);
    let snap = snapshot(&d);
    bad_deploy(&d, &repo);
    let state = |d: &Path| {
        (
            std::fs::read_to_string(d.join("config/strategy.json")).unwrap(),
            d.join("config/new.json").exists(),
            std::fs::read_to_string(d.join("svc.state")).unwrap(),
            std::fs::read_link(d.join("releases/current")).unwrap(),
        )
    };
    let deployed = state(&d);
    run_until_failpoint(&d, "compensated-one", &["rollback", &snap, "--yes"]);
    let h = run(&d, &["--json", "history"]);
    let h: Vec<serde_json::Value> = serde_json::from_slice(&h.stdout).unwrap();
    assert_eq!(h.last().unwrap()["status"], "interrupted", "{h:?}");
    assert_ne!(state(&d), deployed, "killed with some components still on the snapshot's state");
    let o = run(&d, &["--json", "resume", "latest"]);
    assert_eq!(code(&o), 1, "a compensated rollback exits 1: {}", text(&o));
    let rec: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rec["status"], "compensated", "{rec}");
    assert_eq!(rec["resumed"], true);
    let compensations: Vec<&str> = rec["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] == "compensate")
        .map(|s| s["component"].as_str().unwrap())
        .collect();
    assert_eq!(compensations.len(), 4, "each changed component put back once: {compensations:?}");
    assert_eq!(state(&d), deployed, "every component is back as the safety snapshot has it");
    let safety = rec["safety_snapshot_id"].as_str().unwrap();
    let v = run(&d, &["verify", safety]);
    assert_eq!(code(&v), 0, "{}", text(&v));
}

/// A service on a local port that reads its deployed version from `app/version` on
/// each request: v1 answers 200; v2 answers 200 to its first `good` requests, then 500.
fn version_service(d: &Path, good: usize) -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let version = d.join("app/version");
    std::thread::spawn(move || {
        let mut v2_requests = 0;
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let v = std::fs::read_to_string(&version).unwrap_or_default();
            let status = if v.trim() == "v2" {
                v2_requests += 1;
                if v2_requests > good {
                    500
                } else {
                    200
                }
            } else {
                200
            };
            let _ = s
                .write_all(format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes());
        }
    });
    port
}

/// A stack of one `files` component (`app/version`) watched over http.
fn watched(d: &Path, good: usize) -> String {
    let port = version_service(d, good);
    write(&d.join("app/version"), "v1\n");
    write(
        &d.join("rollback.toml"),
        &format!(
            "[[component]]\nname = \"app\"\ndriver = \"files\"\npaths = [\"app\"]\n\
             health = [{{ http = \"http://127.0.0.1:{port}/health\" }}]\n\n\
             [watch]\ninterval = \"200ms\"\nwindow = 4\nfailure_limit = 3\n\n\
             [[watch.probe]]\nname = \"api\"\nhttp = \"http://127.0.0.1:{port}/health\"\ntimeout = \"5s\"\n"
        ),
    );
    let id = snapshot(d);
    write(&d.join("app/version"), "v2\n");
    id
}

#[test]
fn watch_for_rolls_back_a_service_that_turns_to_500s_and_exits_1() {
    let (_t, d) = tmp();
    let id = watched(&d, 2);
    let o = run(&d, &["--json", "watch", "--for", "60s"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["outcome"], "rolled_back", "{}", text(&o));
    assert_eq!(r["record"]["status"], "succeeded", "{}", text(&o));
    assert_eq!(r["record"]["snapshot_id"], id.as_str());
    assert_eq!(r["record"]["watch"]["probe"], "api");
    assert_eq!(r["decisions"][0]["bad"], 3);
    assert_eq!(std::fs::read_to_string(d.join("app/version")).unwrap(), "v1\n");
    // Its decisions are in the log even off a terminal.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("watch: BAD api: status 500, expected 200"), "{err}");
    assert!(err.contains("→ rolling back to"), "{err}");
    // The incident report tells the story.
    let o = run(&d, &["report", "latest"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("Decided by probe `api`"), "{}", text(&o));
}

#[test]
fn watch_for_a_healthy_window_exits_0_and_a_dry_run_changes_nothing() {
    let (_t, d) = tmp();
    watched(&d, usize::MAX);
    let o = run(&d, &["watch", "--for", "1s"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("watch elapsed after"), "{}", text(&o));

    let (_t2, d2) = tmp();
    watched(&d2, 0);
    let o = run(&d2, &["--json", "watch", "--for", "60s", "--dry-run"]);
    assert_eq!(code(&o), 1, "a dry run that would roll back fails the gate: {}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["outcome"], "would_roll_back", "{}", text(&o));
    assert_eq!(std::fs::read_to_string(d2.join("app/version")).unwrap(), "v2\n");
    let o = run(&d2, &["--json", "history"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "[]", "{}", text(&o));
}

#[test]
fn sigterm_stops_a_watch_cleanly() {
    let (_t, d) = tmp();
    watched(&d, usize::MAX);
    for (args, want) in [(vec!["--json", "watch"], 0), (vec!["--json", "watch", "--for", "10m"], 1)] {
        let child = bin()
            .current_dir(&d)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(800));
        let t0 = Instant::now();
        assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
        let o = child.wait_with_output().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(10), "{}", text(&o));
        assert_eq!(code(&o), want, "{args:?}: {}", text(&o));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["outcome"], "stopped", "{}", text(&o));
    }
    assert_eq!(std::fs::read_to_string(d.join("app/version")).unwrap(), "v2\n");
}

#[test]
fn watch_refuses_bad_input_with_exit_2() {
    let (_t, d) = tmp();
    watched(&d, usize::MAX);
    for args in [
        vec!["watch", "--for", "soon"],
        vec!["watch", "no-such-snapshot", "--for", "1s"],
        vec!["watch", "--component", "nope", "--for", "1s"],
    ] {
        let o = run(&d, &args);
        assert_eq!(code(&o), 2, "{args:?}: {}", text(&o));
    }
    let toml = std::fs::read_to_string(d.join("rollback.toml")).unwrap();
    write(&d.join("rollback.toml"), &toml.replace("failure_limit = 3", "failure_limt = 3"));
    let o = run(&d, &["watch", "--for", "1s"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("unknown key `failure_limt`"), "{}", text(&o));
    write(&d.join("rollback.toml"), toml.split("[watch]").next().unwrap());
    let o = run(&d, &["watch", "--for", "1s"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("no [watch] table"), "{}", text(&o));
}
