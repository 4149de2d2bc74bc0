//! The executor: plan order, preflight, lock, compensation, cancellation and
//! resume, corruption, secrets, last-good.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use rollback_core::{Action, ErrorKind, Event, RollbackOptions, Scope, Status};

const THREE: &str = r#"
[rto]
component = "1m"

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
name = "engine"
driver = "releases"
root = "releases"
phase = 3
depends_on = ["cfg"]
"#;

fn three(d: &std::path::Path) -> git2::Repository {
    let repo = repo_with_history(&d.join("app"));
    write(&d.join("config/strategy.json"), "{\"algorithm\": \"v1\"}\n");
    for v in ["v1", "v2"] {
        write(&d.join(format!("releases/{v}/VERSION")), v);
    }
    std::os::unix::fs::symlink("v1", d.join("releases/current")).unwrap();
    repo
}

fn bad_deploy(d: &std::path::Path, repo: &git2::Repository) {
    write(&d.join("app/src/engine.py"), "VERSION = 2\n");
    commit_all(repo, "v2");
    write(&d.join("config/strategy.json"), "{\"algorithm\": \"v2\"}\n");
    std::fs::remove_file(d.join("releases/current")).unwrap();
    std::os::unix::fs::symlink("v2", d.join("releases/current")).unwrap();
}

#[tokio::test]
async fn plans_restore_in_reverse_phase_order_for_every_level() {
    let (_t, d) = tmp();
    three(&d);
    let s = stack(&d, THREE);
    let snap = common::snap(&s).await;
    let p = s.plan(&snap.id, &Scope::Complete).await.unwrap();
    let restores: Vec<_> =
        p.steps.iter().filter(|s| s.action == Action::Restore).map(|s| s.component.as_str()).collect();
    assert_eq!(restores, ["engine", "cfg", "code"]);
    let verifies: Vec<_> =
        p.steps.iter().filter(|s| s.action == Action::Verify).map(|s| s.component.as_str()).collect();
    assert_eq!(verifies, ["code", "cfg", "engine"]);
    assert!(p.to_string().contains("Predicted duration"));

    let p = s.plan(&snap.id, &Scope::Phase { phases: vec![2, 3] }).await.unwrap();
    assert_eq!(p.components, ["cfg", "engine"]);
    let p = s.plan(&snap.id, &Scope::Component { components: vec!["cfg".into()] }).await.unwrap();
    assert_eq!(p.components, ["cfg"]);

    let e = s.plan(&snap.id, &Scope::Phase { phases: vec![9] }).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
    let e = s.plan(&snap.id, &Scope::Component { components: vec!["nope".into()] }).await.unwrap_err();
    assert!(e.to_string().contains("nope"));
    let e = s.plan("does-not-exist", &Scope::Complete).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = s.plan("../../etc/passwd", &Scope::Complete).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
}

#[tokio::test]
async fn each_level_rolls_back_only_its_components() {
    let (_t, d) = tmp();
    let repo = three(&d);
    let s = stack(&d, THREE);
    let snap = common::snap(&s).await;
    bad_deploy(&d, &repo);

    let r = s.rollback(&snap.id, opts(Scope::Component { components: vec!["cfg".into()] })).await.unwrap();
    assert_eq!(r.status, Status::Succeeded);
    assert_eq!(r.level, "component");
    assert_eq!(r.rto_target_ms, 60_000);
    let v = s.verify(&snap.id, &[]).await.unwrap();
    assert!(v.components["cfg"].ok && !v.components["code"].ok && !v.components["engine"].ok);

    let r = s.rollback(&snap.id, opts(Scope::Phase { phases: vec![3] })).await.unwrap();
    assert_eq!(r.status, Status::Succeeded);
    assert_eq!(r.phases, [3]);
    assert!(!s.verify(&snap.id, &[]).await.unwrap().components["code"].ok);

    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded);
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
    assert_eq!(s.history().unwrap().iter().filter(|r| r.kind == "rollback").count(), 3);
    // The Markdown report has the timeline and the objective.
    let md = r.to_markdown();
    assert!(md.contains("## Timeline") && md.contains("objective"), "{md}");
}

#[tokio::test]
async fn a_failed_step_is_compensated_from_the_safety_snapshot() {
    let (_t, d) = tmp();
    write(&d.join("config/a.json"), "good\n");
    write(&d.join("flag"), "ok\n");
    let toml = r#"
[[component]]
name = "cfg"
driver = "files"
paths = ["config"]
phase = 1

[[component]]
name = "svc"
driver = "command"
phase = 2
capture = ["cat", "flag"]
# Restoring the snapshot's state fails; restoring any other state works.
restore = ["sh", "-c", "if grep -q ok \"$ROLLBACK_STATE_FILE\"; then echo 'restore of svc failed' >&2; exit 3; fi; cp \"$ROLLBACK_STATE_FILE\" flag"]
"#;
    let s = stack(&d, toml);
    let snap = common::snap(&s).await;
    write(&d.join("config/a.json"), "new deploy\n");
    write(&d.join("flag"), "new\n");
    // svc (phase 2) restores first and fails: nothing else was touched yet.
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Compensated, "{}", r.to_json());
    assert!(r.error.as_deref().unwrap().contains("restore of svc failed"));
    assert_eq!(std::fs::read_to_string(d.join("config/a.json")).unwrap(), "new deploy\n");

    // Now make cfg restore first (phase 2) and svc fail after it: cfg is put back.
    let toml2 = toml.replace("phase = 1", "phase = 3");
    let s = stack(&d, &toml2);
    write(&d.join("flag"), "ok\n");
    let snap = common::snap(&s).await;
    write(&d.join("config/a.json"), "newer deploy\n");
    write(&d.join("flag"), "new\n");
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Compensated, "{}", r.to_json());
    let compensations: Vec<_> = r.steps.iter().filter(|s| s.action == "compensate").collect();
    assert!(compensations.iter().any(|c| c.component == "cfg" && c.status == "ok"), "{:?}", r.steps);
    assert_eq!(
        std::fs::read_to_string(d.join("config/a.json")).unwrap(),
        "newer deploy\n",
        "cfg was put back as it was before the rollback"
    );

    // Without a safety snapshot the record says failed, never a silent half-state.
    let r = s.rollback(&snap.id, RollbackOptions { no_safety_snapshot: true, ..opts(Scope::Complete) }).await.unwrap();
    assert_eq!(r.status, Status::Failed);
    assert!(r.data_loss, "discarded config changes were not kept anywhere");
}

#[tokio::test]
async fn a_failing_health_gate_compensates() {
    let (_t, d) = tmp();
    for v in ["v1", "v2"] {
        write(&d.join(format!("releases/{v}/VERSION")), v);
    }
    std::os::unix::fs::symlink("v1", d.join("releases/current")).unwrap();
    let s = stack(
        &d,
        r#"[[component]]
name = "app"
driver = "releases"
root = "releases"
health = [{ command = ["sh", "-c", "grep -q v2 releases/current/VERSION"], timeout = "1s", interval = "100ms" }]
"#,
    );
    let snap = common::snap(&s).await;
    assert_eq!(snap.healthy, Some(false), "health is recorded at capture");
    std::fs::remove_file(d.join("releases/current")).unwrap();
    std::os::unix::fs::symlink("v2", d.join("releases/current")).unwrap();
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Compensated, "{}", r.to_json());
    assert_eq!(std::fs::read_link(d.join("releases/current")).unwrap().to_str(), Some("v2"));
}

#[tokio::test]
async fn a_corrupted_artifact_is_refused_and_nothing_changes() {
    let (_t, d) = tmp();
    write(&d.join("config/a.json"), "v1\n");
    write(&d.join("config/b.json"), "v1\n");
    let s = stack(&d, "[[component]]\nname = \"cfg\"\ndriver = \"files\"\npaths = [\"config\"]\n");
    let snap = common::snap(&s).await;
    write(&d.join("config/a.json"), "v2\n");
    write(&d.join("config/b.json"), "v2\n");
    let a = snap.parts[0].artifacts.iter().find(|a| a.name.ends_with("b.json")).unwrap();
    let p = s.store().artifact_path(a).unwrap();
    std::fs::write(&p, "tampered\n").unwrap();
    let e = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert_eq!(e.component(), Some("cfg"));
    assert!(e.to_string().contains("checksum"), "{e}");
    assert_eq!(std::fs::read_to_string(d.join("config/a.json")).unwrap(), "v2\n");
    assert_eq!(std::fs::read_to_string(d.join("config/b.json")).unwrap(), "v2\n");
    assert!(s.history().unwrap().is_empty(), "no rollback started");
}

#[tokio::test]
async fn a_second_rollback_is_locked_out() {
    let (_t, d) = tmp();
    write(&d.join("config/a.json"), "v1\n");
    let s = stack(&d, "[[component]]\nname = \"cfg\"\ndriver = \"files\"\npaths = [\"config\"]\n");
    let snap = common::snap(&s).await;
    let held = s.store().lock().unwrap();
    let e = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked);
    let e = s.snapshot(Default::default()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "no snapshot of a half-restored stack");
    drop(held);
    // Snapshots share the lock with each other.
    let (a, b) = tokio::join!(s.snapshot(Default::default()), s.snapshot(Default::default()));
    assert!(a.is_ok() && b.is_ok());
}

#[tokio::test]
async fn cancel_stops_at_a_step_boundary_and_resume_finishes() {
    let (_t, d) = tmp();
    let repo = three(&d);
    let s = stack(&d, THREE);
    let snap = common::snap(&s).await;
    bad_deploy(&d, &repo);
    let token = rollback_core::CancelToken::new();
    let t2 = token.clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let r = s
        .rollback(
            &snap.id,
            RollbackOptions {
                cancel: token,
                on_event: Some(Arc::new(move |e: &Event| {
                    seen2.lock().unwrap().push(e.kind);
                    if e.kind == "step_finished" {
                        t2.cancel();
                    }
                })),
                ..opts(Scope::Complete)
            },
        )
        .await
        .unwrap();
    assert_eq!(r.status, Status::Interrupted);
    assert_eq!(r.steps.len(), 1);
    assert!(seen.lock().unwrap().contains(&rollback_core::EventKind::StepStarted));
    assert!(!s.verify(&snap.id, &[]).await.unwrap().ok);
    assert_eq!(s.check().await.unwrap().unfinished_rollbacks, vec![r.rollback_id.clone()]);

    let done = s.resume(&r.rollback_id, None).await.unwrap();
    assert_eq!(done.status, Status::Succeeded, "{}", done.to_json());
    assert!(done.resumed);
    assert_eq!(done.rollback_id, r.rollback_id);
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
    let e = s.resume(&r.rollback_id, None).await.unwrap_err();
    assert!(e.to_string().contains("already finished"));
}

#[tokio::test]
async fn secrets_never_reach_errors_or_records() {
    let (_t, d) = tmp();
    std::env::set_var("ROLLBACK_TEST_API_TOKEN", "tok-93f8a1c55e");
    write(&d.join("state"), "x\n");
    let s = stack(
        &d,
        r#"[[component]]
name = "vendor"
driver = "command"
capture = ["cat", "state"]
restore = ["sh", "-c", "grep -q y \"$ROLLBACK_STATE_FILE\" && exit 0; echo \"auth failed for token $1 at postgres://u:hunter22@db/x\" >&2; exit 1", "sh", "${ROLLBACK_TEST_API_TOKEN}"]
"#,
    );
    let snap = common::snap(&s).await;
    write(&d.join("state"), "y\n");
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Compensated);
    let json = r.to_json() + &r.to_markdown();
    assert!(!json.contains("tok-93f8a1c55e"), "{json}");
    assert!(!json.contains("hunter22"), "{json}");
    assert!(json.contains("auth failed for token ***"), "{json}");
    for entry in walk(s.store().root()) {
        let text = String::from_utf8_lossy(&std::fs::read(&entry).unwrap()).to_string();
        assert!(!text.contains("tok-93f8a1c55e"), "secret in {}", entry.display());
    }
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap().path();
        if e.is_dir() {
            out.extend(walk(&e));
        } else {
            out.push(e);
        }
    }
    out
}

#[tokio::test]
async fn last_good_and_latest_resolve() {
    let (_t, d) = tmp();
    write(&d.join("ok"), "1");
    let s = stack(
        &d,
        "[[component]]\nname = \"f\"\ndriver = \"files\"\npaths = [\"ok\"]\nhealth = [{ command = [\"sh\", \"-c\", \"grep -q 1 ok\"], timeout = \"200ms\" }]\n",
    );
    let good = snap(&s).await;
    write(&d.join("ok"), "0");
    let bad = snap(&s).await;
    assert_eq!(good.healthy, Some(true));
    assert_eq!(bad.healthy, Some(false));
    assert_eq!(s.resolve("last-good").unwrap().id, good.id);
    assert_eq!(s.resolve("latest").unwrap().id, bad.id);
    assert_eq!(s.resolve(&good.id[..good.id.len() - 2]).unwrap().id, good.id);
}

#[tokio::test]
async fn drill_measures_a_full_cycle() {
    let (_t, d) = tmp();
    three(&d);
    let s = stack(&d, THREE);
    let r = s.drill(opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.kind, "drill");
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert!(r.rto_met);
    assert!(r.notes.iter().any(|n| n.starts_with("perturbed code")), "{:?}", r.notes);
    assert!(r.verification.values().all(|v| v.ok));
    let check = s.check().await.unwrap();
    assert!(check.ok && check.newest_drill.is_some());
}

#[tokio::test]
async fn gc_keeps_the_newest_the_last_good_and_obeys_both_limits() {
    let (_t, d) = tmp();
    write(&d.join("ok"), "1");
    let s = stack(
        &d,
        "[[component]]\nname = \"f\"\ndriver = \"files\"\npaths = [\"ok\"]\nhealth = [{ command = [\"sh\", \"-c\", \"grep -q 1 ok\"], timeout = \"200ms\" }]\n",
    );
    let good = common::snap(&s).await;
    let mut bad = Vec::new();
    for deploy in ["a", "b", "c"] {
        write(&d.join("ok"), &format!("0 deploy {deploy}"));
        bad.push(common::snap(&s).await);
    }
    // Young snapshots survive `--keep 1 --max-age 1h`: both limits must be passed.
    let r = s.gc(Some(1), Some(std::time::Duration::from_secs(3600))).await.unwrap();
    assert!(r.removed.is_empty(), "{r:?}");
    let r = s.gc(Some(1), None).await.unwrap();
    assert_eq!(r.removed, vec![bad[1].id.clone(), bad[0].id.clone()]);
    assert!(r.kept.contains(&good.id), "last-good is kept: {r:?}");
    assert!(r.kept.contains(&bad[2].id), "the newest is kept: {r:?}");
    assert!(r.freed_files > 0);
    // The artifacts of what is kept are intact.
    assert!(s.verify(&good.id, &[]).await.is_ok());
    for a in &s.resolve(&good.id).unwrap().parts[0].artifacts {
        s.store().check_artifact(a).unwrap();
    }
}

/// A driver whose restore of `v1` blocks a thread for `delay` ms (longer than the step
/// may take); every restore logs when its work starts and ends.
#[derive(Debug)]
struct SlowDriver {
    file: std::path::PathBuf,
    log: std::path::PathBuf,
    delay: u64,
}

#[async_trait::async_trait]
impl rollback_core::Driver for SlowDriver {
    fn name(&self) -> &str {
        "slow"
    }

    async fn capture(&self, _ctx: &rollback_core::Context) -> rollback_core::Result<rollback_core::Captured> {
        let v = std::fs::read_to_string(&self.file)?;
        Ok(rollback_core::Captured { state: serde_json::json!({ "value": v }), artifacts: Vec::new() })
    }

    async fn restore(&self, _ctx: &rollback_core::Context, part: &rollback_core::Part) -> rollback_core::Result<()> {
        let v = part.state["value"].as_str().unwrap_or_default().to_string();
        let (file, log, delay) = (self.file.clone(), self.log.clone(), self.delay);
        rollback_core::drivers::blocking(move || {
            let note = |what: &str| {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
                writeln!(f, "{what} {v}")
            };
            note("start")?;
            if v == "v1" {
                std::thread::sleep(std::time::Duration::from_millis(delay));
            }
            std::fs::write(&file, &v)?;
            note("end")?;
            Ok(())
        })
        .await
    }

    async fn verify(
        &self,
        _ctx: &rollback_core::Context,
        part: &rollback_core::Part,
    ) -> rollback_core::Result<rollback_core::Drift> {
        let now = std::fs::read_to_string(&self.file)?;
        let then = part.state["value"].as_str().unwrap_or_default();
        Ok(rollback_core::Drift::from_differences(if now == then { vec![] } else { vec![format!("{now} != {then}")] }))
    }
}

/// A stack of one `slow` component with a 300 ms step timeout, on `v2`, with a
/// snapshot of `v1`.
async fn slow_stack(d: &std::path::Path, delay: u64) -> (rollback_core::Stack, rollback_core::SnapshotManifest) {
    let (file, log) = (d.join("value"), d.join("log"));
    std::fs::write(&file, "v1").unwrap();
    let mut reg = rollback_core::Registry::with_default_drivers();
    reg.register("slow", move |_c: &rollback_core::ComponentConfig, _e: &rollback_core::DriverEnv| {
        Ok(Arc::new(SlowDriver { file: file.clone(), log: log.clone(), delay }) as rollback_core::DynDriver)
    });
    let toml = "[[component]]\nname = \"slow\"\ndriver = \"slow\"\ntimeout = \"300ms\"\n";
    let cfg = rollback_core::StackConfig::from_toml_str(toml, Some(&d.join("rollback.toml")), d, &|_| None).unwrap();
    let s = rollback_core::Stack::new(cfg, &reg).unwrap();
    let snap = snap(&s).await;
    std::fs::write(d.join("value"), "v2").unwrap();
    (s, snap)
}

/// A step that times out while its blocking work runs on: compensation waits for that
/// work to end before it puts the component back, so the late write cannot undo it.
#[tokio::test(flavor = "multi_thread")]
async fn compensation_waits_for_the_timed_out_restore_to_end() {
    let (_t, d) = tmp();
    let (s, snap) = slow_stack(&d, 500).await;
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let s2 = seen.clone();
    let o = RollbackOptions {
        on_event: Some(Arc::new(move |e: &Event| s2.lock().unwrap().push(e.message.clone()))),
        ..opts(Scope::Complete)
    };
    let r = s.rollback(&snap.id, o).await.unwrap();
    assert_eq!(r.status, Status::Compensated, "{}", r.to_json());
    assert!(r.steps[0].error.as_deref().unwrap_or_default().contains("did not finish within 300ms"), "{}", r.to_json());
    assert_eq!(
        std::fs::read_to_string(d.join("log")).unwrap(),
        "start v1\nend v1\nstart v2\nend v2\n",
        "the compensation ran after the timed-out restore's work, not beside it"
    );
    assert_eq!(std::fs::read_to_string(d.join("value")).unwrap(), "v2", "put back, and not overwritten afterwards");
    assert!(seen.lock().unwrap().iter().any(|m| m.contains("waiting for it to end")), "{:?}", seen.lock().unwrap());
}

/// Work that outlives a second timeout too: the component is not put back (that would
/// race it) and the record says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_still_running_after_the_wait_is_not_raced() {
    let (_t, d) = tmp();
    let (s, snap) = slow_stack(&d, 1500).await;
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Failed, "{}", r.to_json());
    let step = |a: &str| r.steps.iter().find(|x| x.action == a).and_then(|x| x.error.clone()).unwrap_or_default();
    assert!(step("restore").contains("its work was still running 300ms later"), "{}", r.to_json());
    let how = step("compensate");
    assert!(how.contains("not put back"), "{}", r.to_json());
    let safety = r.safety_snapshot_id.clone().unwrap();
    assert!(how.contains(&format!("rollback rollback {safety} --component slow")), "names the way back: {how}");
    assert_eq!(std::fs::read_to_string(d.join("log")).unwrap(), "start v1\n", "no second restore beside the first");
}

#[tokio::test]
async fn a_new_rollback_over_an_unfinished_one_is_refused_until_resumed_or_abandoned() {
    let (_t, d) = tmp();
    let repo = three(&d);
    let s = stack(&d, THREE);
    let snap = common::snap(&s).await;
    bad_deploy(&d, &repo);
    let token = rollback_core::CancelToken::new();
    let t2 = token.clone();
    let on_event: rollback_core::EventCallback = Arc::new(move |e: &Event| {
        if e.kind == "step_finished" {
            t2.cancel();
        }
    });
    let r = s
        .rollback(&snap.id, RollbackOptions { cancel: token, on_event: Some(on_event), ..opts(Scope::Complete) })
        .await
        .unwrap();
    assert_eq!(r.status, Status::Interrupted);
    let e = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    let m = e.to_string();
    assert!(m.contains(&format!("rollback resume {}", r.rollback_id)) && m.contains("abandon"), "{m}");
    let e = s.drill(opts(Scope::Complete)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");

    let a = s.abandon(&r.rollback_id).await.unwrap();
    assert_eq!(a.status, Status::Failed);
    assert!(a.notes.iter().any(|n| n.contains("abandoned") && n.contains("restore started: engine")), "{:?}", a.notes);
    assert!(s.check().await.unwrap().unfinished_rollbacks.is_empty());
    assert_eq!(s.history().unwrap().last().unwrap().status, Status::Failed);
    assert_eq!(s.abandon(&r.rollback_id).await.unwrap_err().kind(), ErrorKind::ConfigInvalid);
    let done = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(done.status, Status::Succeeded, "{}", done.to_json());
}

#[tokio::test]
async fn a_journal_that_cannot_be_written_still_compensates() {
    let (_t, d) = tmp();
    write(&d.join("config/a.json"), "good\n");
    write(&d.join("flag"), "ok\n");
    // cfg (phase 2) is restored first; svc's restore then makes the journal
    // unwritable (a directory where the file goes: even root cannot rename over it)
    // and fails.
    let toml = r#"
[[component]]
name = "svc"
driver = "command"
phase = 1
capture = ["cat", "flag"]
restore = ["sh", "-c", "if grep -q ok \"$ROLLBACK_STATE_FILE\"; then for j in .rollback/journals/*.json; do rm \"$j\"; mkdir -p \"$j/full\"; done; echo 'disk full' >&2; exit 1; fi; cp \"$ROLLBACK_STATE_FILE\" flag"]

[[component]]
name = "cfg"
driver = "files"
paths = ["config"]
phase = 2
"#;
    let s = stack(&d, toml);
    let snap = common::snap(&s).await;
    write(&d.join("config/a.json"), "new deploy\n");
    write(&d.join("flag"), "new\n");
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.expect("a record, not an I/O error");
    assert_eq!(r.status, Status::Compensated, "{}", r.to_json());
    assert_eq!(std::fs::read_to_string(d.join("config/a.json")).unwrap(), "new deploy\n", "cfg was put back");
    assert!(r.notes.iter().any(|n| n.contains("journal could not be written")), "{:?}", r.notes);
    // The record is final: nothing is listed as unfinished, nothing blocks the next rollback.
    assert!(s.check().await.unwrap().unfinished_rollbacks.is_empty());
    assert_eq!(s.history().unwrap().len(), 1);
}

#[tokio::test]
async fn gc_keeps_safety_snapshots_to_the_same_limit() {
    let (_t, d) = tmp();
    write(&d.join("config/a.json"), "v1\n");
    let s = stack(&d, "[[component]]\nname = \"cfg\"\ndriver = \"files\"\npaths = [\"config\"]\n");
    let snap = common::snap(&s).await;
    let mut safeties = Vec::new();
    for v in ["v2", "v3", "v4"] {
        write(&d.join("config/a.json"), &format!("{v}\n"));
        let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
        safeties.push(r.safety_snapshot_id.unwrap());
    }
    let r = s.gc(Some(1), None).await.unwrap();
    let left: Vec<String> = s.list().unwrap().into_iter().filter(|m| m.safety_for.is_some()).map(|m| m.id).collect();
    assert_eq!(left, vec![safeties[2].clone()], "{r:?}");
    assert!(r.removed.contains(&safeties[0]) && r.removed.contains(&safeties[1]));
    assert!(r.kept.contains(&snap.id));
}

#[tokio::test]
async fn an_unreadable_journal_is_an_error_not_a_free_pass_for_gc() {
    let (_t, d) = tmp();
    write(&d.join("config/a.json"), "v1\n");
    let s = stack(&d, "[[component]]\nname = \"cfg\"\ndriver = \"files\"\npaths = [\"config\"]\n");
    let old = common::snap(&s).await;
    let _new = common::snap(&s).await;
    write(&s.store().root().join("journals/20260101T000000000Z-abcdef.json"), "{ torn");
    let e = s.gc(Some(1), None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("20260101T000000000Z-abcdef"), "{e}");
    assert!(s.resolve(&old.id).is_ok(), "nothing was removed");
}

#[tokio::test]
async fn a_component_named_twice_is_planned_captured_and_drilled_once() {
    let (_t, d) = tmp();
    let repo = three(&d);
    let s = stack(&d, THREE);
    let twice = vec!["cfg".to_string(), "cfg".to_string()];
    let snap =
        s.snapshot(rollback_core::SnapshotOptions { components: twice.clone(), ..Default::default() }).await.unwrap();
    assert_eq!(snap.parts.len(), 1);
    bad_deploy(&d, &repo);
    let scope = Scope::Component { components: twice.clone() };
    let p = s.plan(&snap.id, &scope).await.unwrap();
    assert_eq!(p.components, vec!["cfg".to_string()]);
    assert_eq!(p.steps.iter().filter(|st| st.action == Action::Restore).count(), 1, "{}", p);
    let from_words = Scope::from_parts(None, vec![], twice.clone()).unwrap();
    assert_eq!(from_words, Scope::Component { components: vec!["cfg".into()] });
    let r = s.rollback(&snap.id, opts(scope.clone())).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert_eq!(r.steps.iter().filter(|st| st.action == "restore").count(), 1);
    let r = s.drill(opts(scope)).await.unwrap();
    assert_eq!(r.steps.iter().filter(|st| st.action == "restore").count(), 1, "{}", r.to_json());
}

/// A writer service: one row per 10 ms into `trades.db`, each id appended to
/// `acks.log` only after its commit (so every line is an acknowledged write).
const WRITER: &str = r#"
import os, signal, sqlite3, sys, time
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
con = sqlite3.connect("trades.db", timeout=30)
acks = open("acks.log", "a")
n = 0
while not stop:
    n += 1
    i = f"{os.getpid()}-{n}"
    con.execute("insert into trades(id) values (?)", (i,))
    con.commit()
    acks.write(i + "\n"); acks.flush()
    time.sleep(0.01)
con.close()
open("writer.stopped", "w").close()
"#;

fn sqlite_ids(db: &std::path::Path) -> std::collections::BTreeSet<String> {
    let o = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; [print(r[0]) for r in sqlite3.connect(sys.argv[1]).execute('select id from trades')]",
        ])
        .arg(db)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().lines().map(String::from).collect()
}

#[tokio::test]
async fn every_acknowledged_write_of_a_stopped_writer_is_kept_or_in_the_safety_snapshot() {
    let (_t, d) = tmp();
    write(&d.join("writer.py"), WRITER);
    let py = "import sqlite3; c = sqlite3.connect('trades.db'); c.execute('create table trades(id text primary key)'); c.execute(\"insert into trades values ('seed')\"); c.commit()";
    assert!(std::process::Command::new("python3").args(["-c", py]).current_dir(&d).status().unwrap().success());
    // The stop takes 300 ms before the writer ends: writes go on meanwhile, as they
    // do while a real service drains.
    let toml = r#"
[[component]]
name = "db"
driver = "sqlite"
path = "trades.db"

[[component]]
name = "writer"
driver = "command"
phase = 2
depends_on = ["db"]
capture = ["true"]
restore = ["true"]
stop = ["sh", "-c", "sleep 0.3; rm -f writer.stopped; kill $(cat writer.pid) || exit 1; end=$(($(date +%s) + 60)); while [ $(date +%s) -lt $end ]; do [ -e writer.stopped ] && exit 0; sleep 0.01; done; echo 'writer did not stop' >&2; exit 1"]
start = ["sh", "-c", "python3 writer.py >/dev/null 2>&1 & echo $! > writer.pid"]
"#;
    let s = stack(&d, toml);
    let snap = common::snap(&s).await;
    let writer = s.driver("writer").unwrap();
    let ctx = rollback_core::Context::new("writer", s.store().clone(), &d);
    writer.start(&ctx).await.unwrap();
    // Wait for the writer to be writing, not for a time: on a busy machine Python may
    // not even have installed its SIGTERM handler 400 ms after the start, and a stop
    // that kills it then leaves no `writer.stopped` ("writer did not stop").
    let acks =
        |d: &std::path::Path| std::fs::read_to_string(d.join("acks.log")).map(|s| s.lines().count()).unwrap_or(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while acks(&d) < 6 {
        assert!(std::time::Instant::now() < deadline, "the writer never wrote");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = s.rollback(&snap.id, opts(Scope::Component { components: vec!["db".into()] })).await.unwrap();
    // The rollback started the writer again: as above, stop it only once it writes
    // (before its SIGTERM handler is installed, a stop kills it outright).
    let after = acks(&d);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while acks(&d) <= after {
        assert!(std::time::Instant::now() < deadline, "the restarted writer never wrote");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    writer.stop(&ctx).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    let steps: Vec<_> = r.steps.iter().map(|s| format!("{} {}", s.action, s.component)).collect();
    assert_eq!(steps[..2], ["stop writer".to_string(), "restore db".to_string()], "{steps:?}");

    let acked: Vec<String> = std::fs::read_to_string(d.join("acks.log")).unwrap().lines().map(String::from).collect();
    assert!(acked.len() > 5, "the writer wrote before and during the rollback: {}", acked.len());
    let now = sqlite_ids(&d.join("trades.db"));
    let safety = s.resolve(r.safety_snapshot_id.as_deref().unwrap()).unwrap();
    let art = safety.parts.iter().find(|p| p.component == "db").unwrap().artifacts[0].clone();
    let kept = sqlite_ids(&s.store().check_artifact(&art).unwrap());
    let lost: Vec<_> = acked.iter().filter(|i| !now.contains(*i) && !kept.contains(*i)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes in neither the database nor the safety snapshot: {lost:?}",
        lost.len()
    );
    // The discards name what the safety snapshot keeps.
    assert!(
        r.discarded.iter().any(|x| x.component == "db" && x.changes > 0 && x.kept_in_safety_snapshot),
        "{:?}",
        r.discarded
    );
    assert!(!r.notes.iter().any(|n| n.contains("were not stopped")), "{:?}", r.notes);
}

#[tokio::test]
async fn a_hung_capture_times_out_and_frees_the_lock() {
    let (_t, d) = tmp();
    write(&d.join("state"), "v1\n");
    let s = stack(
        &d,
        "[[component]]\nname = \"svc\"\ndriver = \"command\"\ntimeout = \"1s\"\ncapture = [\"sh\", \"-c\", \"cat state; sleep 600\"]\nrestore = [\"true\"]\n",
    );
    let t = std::time::Instant::now();
    let snap = s.snapshot(Default::default());
    let other = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        s.gc(Some(1), None).await
    };
    let (snap, other) = tokio::join!(snap, other);
    let e = snap.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(t.elapsed() < std::time::Duration::from_secs(30), "{:?}", t.elapsed());
    let busy = other.unwrap_err();
    assert_eq!(busy.kind(), ErrorKind::Locked);
    assert!(busy.to_string().contains("a snapshot is being taken"), "{busy}");
    // Once the capture has timed out, the lock is free again.
    assert!(s.gc(Some(1), None).await.is_ok());
}

#[tokio::test]
async fn a_rollback_cancelled_before_it_starts_changes_nothing() {
    let (_t, d) = tmp();
    let repo = three(&d);
    let s = stack(&d, THREE);
    let snap = common::snap(&s).await;
    bad_deploy(&d, &repo);
    let token = rollback_core::CancelToken::new();
    token.cancel();
    let before = s.list().unwrap().len();
    let e = s.rollback(&snap.id, RollbackOptions { cancel: token.clone(), ..opts(Scope::Complete) }).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    let e = s.drill(RollbackOptions { cancel: token, ..opts(Scope::Complete) }).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    assert_eq!(s.list().unwrap().len(), before, "no safety snapshot");
    assert!(s.check().await.unwrap().unfinished_rollbacks.is_empty(), "nothing for a later resume to carry out");
    assert!(s.history().unwrap().is_empty());
}

#[tokio::test]
async fn the_record_says_when_nothing_stopped_a_databases_writers() {
    let (_t, d) = tmp();
    let repo = three(&d);
    let py = "import sqlite3; c = sqlite3.connect('t.db'); c.execute('create table t(x)'); c.commit()";
    assert!(std::process::Command::new("python3").args(["-c", py]).current_dir(&d).status().unwrap().success());
    // Without its fence: no component stops the database's writers, and nothing fences them.
    let s = stack(
        &d,
        &format!("{THREE}\n[[component]]\nname = \"db\"\ndriver = \"sqlite\"\npath = \"t.db\"\nfence = false\n"),
    );
    let snap = common::snap(&s).await;
    bad_deploy(&d, &repo);
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    let notes: Vec<_> = r.notes.iter().filter(|n| n.contains("were not stopped")).collect();
    assert!(notes[0].contains("nor fenced (`fence = false` is set)"), "{notes:?}");
    assert_eq!(notes.len(), 1, "only the database, not code or files: {:?}", r.notes);
    assert!(notes[0].contains("`db`"), "{notes:?}");
}

/// Without a safety snapshot nothing keeps a service's state that the restore
/// replaces: the record names it and says data was lost. Equal states are not named.
#[tokio::test]
async fn no_safety_snapshot_names_the_state_of_components_that_cannot_report_discards() {
    let (_t, d) = tmp();
    write(&d.join("svc.state"), "v1\n");
    write(&d.join("same.state"), "same\n");
    let s = stack(
        &d,
        r#"
[[component]]
name = "svc"
driver = "command"
capture = ["cat", "svc.state"]
restore = ["sh", "-c", "cp \"$ROLLBACK_STATE_FILE\" svc.state"]

[[component]]
name = "same"
driver = "command"
capture = ["cat", "same.state"]
restore = ["sh", "-c", "cp \"$ROLLBACK_STATE_FILE\" same.state"]
"#,
    );
    let snap = common::snap(&s).await;
    write(&d.join("svc.state"), "v2 with its own state\n");
    let mut o = opts(Scope::Complete);
    o.no_safety_snapshot = true;
    let r = s.rollback(&snap.id, o).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert!(r.data_loss, "the state v2 had is kept nowhere: {}", r.to_json());
    let named: Vec<_> = r.discarded.iter().filter(|x| x.component == "svc").collect();
    assert_eq!(named.len(), 1, "{:?}", r.discarded);
    assert!(!named[0].kept_in_safety_snapshot && named[0].changes > 0, "{named:?}");
    assert!(!r.discarded.iter().any(|x| x.component == "same"), "{:?}", r.discarded);

    // With the safety snapshot, the same rollback loses nothing.
    let snap2 = common::snap(&s).await;
    write(&d.join("svc.state"), "v3\n");
    let r = s.rollback(&snap2.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert!(!r.data_loss, "{}", r.to_json());
}

/// The blue/green switch: an nginx upstream file (`files`) and the reload that reads
/// it (a `command` that depends on it). A failed health gate puts both back from the
/// safety snapshot: the upstream file first, then the reload, which checks that the
/// file it serves is the one its state names.
#[tokio::test]
async fn compensation_puts_dependencies_back_first() {
    let (_t, d) = tmp();
    write(&d.join("nginx/upstream.conf"), "server blue;\n");
    write(&d.join("nginx/serving"), "server blue;\n");
    write(&d.join("gate"), "ok\n");
    let s = stack(
        &d,
        r#"
[[component]]
name = "upstream"
driver = "files"
paths = ["nginx/upstream.conf"]

[[component]]
name = "nginx"
driver = "command"
depends_on = ["upstream"]
capture = ["cat", "nginx/serving"]
restore = ["sh", "-c", "cmp -s \"$ROLLBACK_STATE_FILE\" nginx/upstream.conf || { echo 'reload: upstream.conf is not the one to serve' >&2; exit 1; }; cp nginx/upstream.conf nginx/serving"]
health = [{ command = ["sh", "-c", "grep -q ok gate"], timeout = "2s" }]
"#,
    );
    let snap = common::snap(&s).await;
    // The deploy switches to green; the old version's health gate will fail.
    write(&d.join("nginx/upstream.conf"), "server green;\n");
    write(&d.join("nginx/serving"), "server green;\n");
    write(&d.join("gate"), "failing\n");
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Compensated, "{}", r.to_json());
    let comp: Vec<_> = r
        .steps
        .iter()
        .filter(|st| st.action.as_str() == "compensate")
        .map(|st| (st.component.clone(), st.status.as_str().to_string()))
        .collect();
    assert_eq!(
        comp,
        [("upstream".to_string(), "ok".to_string()), ("nginx".to_string(), "ok".to_string())],
        "{}",
        r.to_json()
    );
    assert_eq!(std::fs::read_to_string(d.join("nginx/serving")).unwrap(), "server green;\n");
    let safety = r.safety_snapshot_id.clone().unwrap();
    assert!(s.verify(&safety, &[]).await.unwrap().ok, "every component equals the safety snapshot");
}

/// A writer writes after a database's restore, then a health gate fails: the
/// discard labelled "written after the restore" counts those rows, not the rows the
/// restore itself put back.
#[tokio::test]
async fn a_discard_written_after_the_restore_counts_only_those_writes() {
    let (_t, d) = tmp();
    let db = format!("rb_after_{:08x}", rand::random::<u32>());
    let psql = |db: &str, sql: &str| {
        let o = std::process::Command::new("psql")
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{sql}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    psql("postgres", &format!("CREATE DATABASE {db}"));
    psql(&db, "CREATE TABLE trades (id int PRIMARY KEY); INSERT INTO trades SELECT g FROM generate_series(0, 999) g");
    // Once armed (after the snapshot: a snapshot probes health too, though a safety
    // snapshot does not), the gate of the restored version writes 7 rows once, as its
    // clients would once the fence is lifted, then fails at every try.
    let toml = format!(
        r#"
[[component]]
name = "db"
driver = "postgres"
url = "postgres://postgres@127.0.0.1:5432/{db}"
health = [{{ command = ["sh", "-c", "[ ! -e armed ] || [ -e wrote ] || {{ psql -X -q -h 127.0.0.1 -U postgres -d {db} -c 'INSERT INTO trades SELECT g FROM generate_series(5000, 5006) g' && touch wrote; }}; exit 1"], timeout = "5s" }}]
"#
    );
    let s = stack(&d, &toml);
    let snap = common::snap(&s).await;
    psql(&db, "DELETE FROM trades WHERE id < 500");
    write(&d.join("armed"), "");
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    let rows = psql(&db, "SELECT count(*) FROM trades");
    psql("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));
    assert_eq!(r.status, Status::Compensated, "{}", r.to_json());
    assert!(d.join("wrote").exists(), "the gate wrote its rows: {}", r.to_json());
    let after: Vec<_> = r.discarded.iter().filter(|x| x.target.contains("written after the restore")).collect();
    assert_eq!(after.len(), 1, "{:?}", r.discarded);
    assert_eq!(after[0].changes, 7, "{:?}", after[0]);
    // Compensated: the table is as it was before the rollback.
    assert_eq!(rows.trim(), "500");
}

/// A store keeps every record and journal; a rollback's start must not read them
/// all. A finished rollback's journal is moved to `journals/finished/`, and old
/// records the plan no longer needs are not read: a store whose old records and
/// finished journals are all unreadable still plans, rolls back and resumes-checks.
#[tokio::test]
async fn old_records_and_finished_journals_are_not_read_on_the_rollback_path() {
    let (_t, d) = tmp();
    write(&d.join("state"), "v1\n");
    let s = stack(
        &d,
        "[[component]]\nname = \"svc\"\ndriver = \"command\"\ncapture = [\"cat\", \"state\"]\nrestore = [\"sh\", \"-c\", \"cp \\\"$ROLLBACK_STATE_FILE\\\" state\"]\n",
    );
    let snap = common::snap(&s).await;
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    let journals = d.join(".rollback/journals");
    assert!(!journals.join(format!("{}.json", r.rollback_id)).exists(), "moved out of the way");
    let finished = journals.join("finished").join(format!("{}.json", r.rollback_id));
    assert!(finished.exists());
    // `resume` still knows it finished.
    let e = s.resume(&r.rollback_id, None).await.unwrap_err();
    assert!(e.to_string().contains("already finished"), "{e}");

    // 200 old rollbacks: their finished journals unreadable, their records claiming
    // the restore took 999 s. Neither is read by a plan or a rollback: an unreadable
    // journal among those read stops every rollback, and the plan predicts from the
    // newest records only.
    let real: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join(format!(".rollback/records/{}.json", r.rollback_id))).unwrap())
            .unwrap();
    for i in 0..200 {
        let id = format!("20000101T000000{:03}Z-{:06x}", i, i);
        let mut old = real.clone();
        old["rollback_id"] = id.clone().into();
        old["start_time"] = "2000-01-01T00:00:00Z".into();
        for st in old["steps"].as_array_mut().unwrap() {
            st["duration_ms"] = 999_000.into();
        }
        std::fs::write(d.join(format!(".rollback/records/{id}.json")), serde_json::to_vec(&old).unwrap()).unwrap();
        std::fs::write(journals.join("finished").join(format!("{id}.json")), b"{ not json").unwrap();
    }
    let predicted =
        |p: &rollback_core::Plan| p.steps.iter().find(|st| st.action == Action::Restore).unwrap().predicted_ms;
    assert_eq!(predicted(&s.plan(&snap.id, &Scope::Complete).await.unwrap()), 999_000, "the old records count now");
    for _ in 0..110 {
        let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
        assert_eq!(r.status, Status::Succeeded);
    }
    let p = s.plan(&snap.id, &Scope::Complete).await.unwrap();
    assert!(predicted(&p) < 999_000, "predicted from the newest records: {p:?}");
    assert_eq!(s.history().unwrap().len(), 311, "history still lists every record");
}

/// A safety snapshot is taken inside the rollback, its writers fenced: it runs no
/// health check (it is never `last-good`, and a check's command would run against a
/// stack half put back, inside the fence window).
#[tokio::test]
async fn a_safety_snapshot_runs_no_health_check() {
    let (_t, d) = tmp();
    write(&d.join("state"), "v1\n");
    let s = stack(
        &d,
        "[[component]]\nname = \"svc\"\ndriver = \"command\"\ncapture = [\"cat\", \"state\"]\nrestore = [\"sh\", \"-c\", \"cp \\\"$ROLLBACK_STATE_FILE\\\" state\"]\nhealth = [{ command = [\"sh\", \"-c\", \"echo probed >> probes\"] }]\n",
    );
    let snap = common::snap(&s).await;
    let probes = || std::fs::read_to_string(d.join("probes")).unwrap_or_default().lines().count();
    assert_eq!(probes(), 1, "the snapshot records health");
    write(&d.join("state"), "v2\n");
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert_eq!(probes(), 2, "the health gate only, not the safety snapshot");
    let safety = s.resolve(r.safety_snapshot_id.as_deref().unwrap()).unwrap();
    assert!(safety.health.is_empty() && safety.healthy.is_none(), "{safety:?}");
}
