//! files, releases and command drivers against real files, symlinks and programs.

mod common;

use std::os::unix::fs::PermissionsExt;

use std::sync::{Arc, Mutex};

use common::*;
use rollback_core::{RollbackOptions, Scope, Status};

#[tokio::test]
async fn files_round_trip_content_modes_links_and_added_paths() {
    let (_t, d) = tmp();
    write(&d.join("config/app.json"), "{\"algo\": \"v1\"}\n");
    write(&d.join("config/profiles/prod.json"), "{\"risk\": 1}\n");
    write(&d.join("single.env"), "MODE=live\n");
    std::fs::set_permissions(d.join("single.env"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("profiles/prod.json", d.join("config/active.json")).unwrap();
    let s = stack(&d, "[[component]]\nname = \"cfg\"\ndriver = \"files\"\npaths = [\"config\", \"single.env\"]\n");
    let snap = common::snap(&s).await;

    write(&d.join("config/app.json"), "{\"algo\": \"v2\"}\n");
    std::fs::remove_file(d.join("config/profiles/prod.json")).unwrap();
    write(&d.join("config/profiles/new.json"), "{}\n");
    std::fs::remove_file(d.join("config/active.json")).unwrap();
    std::os::unix::fs::symlink("profiles/new.json", d.join("config/active.json")).unwrap();
    std::fs::set_permissions(d.join("single.env"), std::fs::Permissions::from_mode(0o644)).unwrap();

    let v = s.verify(&snap.id, &[]).await.unwrap();
    assert!(!v.ok);
    assert!(v.components["cfg"].differences.len() >= 4, "{v:?}");
    let plan = s.plan(&snap.id, &Scope::Complete).await.unwrap();
    assert!(plan.discards.iter().map(|d| d.changes).sum::<u64>() >= 4);

    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert!(!r.data_loss);
    assert_eq!(std::fs::read_to_string(d.join("config/app.json")).unwrap(), "{\"algo\": \"v1\"}\n");
    assert!(d.join("config/profiles/prod.json").exists());
    assert!(!d.join("config/profiles/new.json").exists());
    assert_eq!(std::fs::read_link(d.join("config/active.json")).unwrap().to_str(), Some("profiles/prod.json"));
    assert_eq!(std::fs::metadata(d.join("single.env")).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);

    // What was discarded can be read back from the safety snapshot.
    let safety = s.resolve(r.safety_snapshot_id.as_deref().unwrap()).unwrap();
    let part = &safety.parts[0];
    let a = part.artifacts.iter().find(|a| a.name.ends_with("profiles/new.json")).unwrap();
    assert_eq!(s.store().read_artifact(a).unwrap(), b"{}\n");
}

#[tokio::test]
async fn files_missing_path_is_named() {
    let (_t, d) = tmp();
    let s = stack(&d, "[[component]]\nname = \"cfg\"\ndriver = \"files\"\npaths = [\"nope.json\"]\n");
    let e = s.snapshot(Default::default()).await.unwrap_err();
    assert_eq!(e.component(), Some("cfg"));
    assert!(e.to_string().contains("nope.json"), "{e}");
}

#[tokio::test]
async fn releases_swap_the_link_atomically_and_refuse_a_missing_release() {
    let (_t, d) = tmp();
    for v in ["v1.0.0", "v1.1.0"] {
        write(&d.join(format!("releases/{v}/VERSION")), v);
    }
    std::os::unix::fs::symlink("v1.0.0", d.join("releases/current")).unwrap();
    let s = stack(&d, "[[component]]\nname = \"app\"\ndriver = \"releases\"\nroot = \"releases\"\n");
    let snap = common::snap(&s).await;
    assert_eq!(snap.parts[0].state["release"], "v1.0.0");
    std::fs::remove_file(d.join("releases/current")).unwrap();
    std::os::unix::fs::symlink("v1.1.0", d.join("releases/current")).unwrap();
    assert!(!s.verify(&snap.id, &[]).await.unwrap().ok);
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded);
    assert_eq!(std::fs::read_to_string(d.join("releases/current/VERSION")).unwrap(), "v1.0.0");
    // No temporary links left behind.
    let names: Vec<_> = std::fs::read_dir(d.join("releases")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 3, "{names:?}");

    // The target release is gone: preflight refuses and nothing changes.
    std::fs::remove_file(d.join("releases/current")).unwrap();
    std::os::unix::fs::symlink("v1.1.0", d.join("releases/current")).unwrap();
    std::fs::remove_dir_all(d.join("releases/v1.0.0")).unwrap();
    let e = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap_err();
    assert!(e.to_string().contains("v1.0.0"), "{e}");
    assert_eq!(std::fs::read_link(d.join("releases/current")).unwrap().to_str(), Some("v1.1.0"));
}

#[tokio::test]
async fn command_driver_runs_argv_without_a_shell() {
    let (_t, d) = tmp();
    write(&d.join("state.txt"), "weights=v7\n");
    let s = stack(
        &d,
        r#"[[component]]
name = "model"
driver = "command"
capture = ["cat", "state.txt"]
restore = ["sh", "-c", "cat > state.txt"]
"#,
    );
    let snap = common::snap(&s).await;
    write(&d.join("state.txt"), "weights=v8-bad\n");
    let v = s.verify(&snap.id, &[]).await.unwrap();
    assert!(!v.ok);
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert_eq!(std::fs::read_to_string(d.join("state.txt")).unwrap(), "weights=v7\n");

    // A literal `;` in an argv is an argument, not a shell separator.
    let s = stack(
        &d,
        "[[component]]\nname = \"x\"\ndriver = \"command\"\ncapture = [\"echo\", \"a; touch pwned\"]\nrestore = [\"true\"]\n",
    );
    common::snap(&s).await;
    assert!(!d.join("pwned").exists());
}

#[tokio::test]
async fn files_restore_never_deletes_through_a_restored_link() {
    // Capistrano-style: `conf` links to a shared directory at the snapshot.
    let (_t, d) = tmp();
    write(&d.join("shared/conf/app.json"), "shared v1\n");
    write(&d.join("app/README"), "app\n");
    std::os::unix::fs::symlink("../shared/conf", d.join("app/conf")).unwrap();
    let s = stack(&d, "[[component]]\nname = \"app\"\ndriver = \"files\"\npaths = [\"app\"]\n");
    let snap = common::snap(&s).await;
    // A deploy replaces the link with a real directory holding the same names.
    std::fs::remove_file(d.join("app/conf")).unwrap();
    write(&d.join("app/conf/app.json"), "deployed\n");
    write(&d.join("app/conf/new.json"), "deployed\n");
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert_eq!(std::fs::read_link(d.join("app/conf")).unwrap().to_str(), Some("../shared/conf"));
    assert_eq!(std::fs::read_to_string(d.join("shared/conf/app.json")).unwrap(), "shared v1\n");
}

#[tokio::test]
async fn files_a_linked_path_captures_what_it_points_at() {
    let (_t, d) = tmp();
    write(&d.join("sites-available/app.conf"), "upstream blue;\n");
    std::fs::create_dir_all(d.join("sites-enabled")).unwrap();
    std::os::unix::fs::symlink("../sites-available/app.conf", d.join("sites-enabled/app.conf")).unwrap();
    let s = stack(&d, "[[component]]\nname = \"site\"\ndriver = \"files\"\npaths = [\"sites-enabled/app.conf\"]\n");
    let snap = common::snap(&s).await;
    write(&d.join("sites-available/app.conf"), "upstream green;\n");
    assert!(!s.verify(&snap.id, &[]).await.unwrap().ok, "a change behind the link is drift");
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert_eq!(std::fs::read_to_string(d.join("sites-enabled/app.conf")).unwrap(), "upstream blue;\n");
    assert!(std::fs::symlink_metadata(d.join("sites-enabled/app.conf")).unwrap().file_type().is_symlink());
}

#[tokio::test]
async fn files_a_deleted_root_is_rolled_back_with_a_safety_snapshot() {
    let (_t, d) = tmp();
    write(&d.join("config/a.json"), "v1\n");
    std::fs::set_permissions(d.join("config"), std::fs::Permissions::from_mode(0o555)).unwrap();
    let s = stack(&d, "[[component]]\nname = \"cfg\"\ndriver = \"files\"\npaths = [\"config\"]\n");
    let snap = common::snap(&s).await;
    std::fs::set_permissions(d.join("config"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_dir_all(d.join("config")).unwrap();
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert!(r.safety_snapshot_id.is_some());
    assert_eq!(std::fs::read_to_string(d.join("config/a.json")).unwrap(), "v1\n");
    assert_eq!(std::fs::metadata(d.join("config")).unwrap().permissions().mode() & 0o777, 0o555);
    // Undo the rollback: the safety snapshot recorded the root as absent.
    let undo = s.rollback(r.safety_snapshot_id.as_deref().unwrap(), opts(Scope::Complete)).await.unwrap();
    assert_eq!(undo.status, Status::Succeeded, "{}", undo.to_json());
    assert!(!d.join("config").exists());
}

#[tokio::test]
async fn command_restore_may_start_a_daemon_and_state_is_a_private_copy() {
    let (_t, d) = tmp();
    write(&d.join("state.txt"), "v1\n");
    let s = stack(
        &d,
        r#"[[component]]
name = "svc"
driver = "command"
capture = ["cat", "state.txt"]
# Starts a background process that inherits stdout, and scribbles on the state file.
restore = ["sh", "-c", "cp \"$ROLLBACK_STATE_FILE\" state.txt; echo tampered > \"$ROLLBACK_STATE_FILE\"; sleep 30 & echo started"]
"#,
    );
    let snap = common::snap(&s).await;
    write(&d.join("state.txt"), "v2\n");
    let t = std::time::Instant::now();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let s2 = seen.clone();
    let o = RollbackOptions {
        on_event: Some(Arc::new(move |e: &rollback_core::Event| s2.lock().unwrap().push(e.message.clone()))),
        ..opts(Scope::Complete)
    };
    let r = s.rollback(&snap.id, o).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert!(t.elapsed() < std::time::Duration::from_secs(20), "did not wait for the daemon");
    let seen = seen.lock().unwrap().join("\n");
    assert!(seen.contains("`sh` exited but its stdout stayed open"), "the wait is explained: {seen}");
    assert!(seen.contains("`sh` exited but its stderr stayed open"), "{seen}");
    assert_eq!(std::fs::read_to_string(d.join("state.txt")).unwrap(), "v1\n");
    // The snapshot's artifact is intact.
    let a = &snap.parts[0].artifacts[0];
    assert_eq!(s.store().read_artifact(a).unwrap(), b"v1\n");
}

/// Names as raw bytes (Linux file names need not be UTF-8).
fn raw(b: &[u8]) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b))
}

fn names(dir: &std::path::Path) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let mut v: Vec<Vec<u8>> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().as_bytes().to_vec()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn files_a_root_link_replaced_by_a_directory_is_put_back_as_the_link() {
    let (_t, d) = tmp();
    write(&d.join("config-v1/app.json"), "v1\n");
    std::os::unix::fs::symlink("config-v1", d.join("config")).unwrap();
    let s = stack(&d, "[[component]]\nname = \"cfg\"\ndriver = \"files\"\npaths = [\"config\"]\n");
    let snap = common::snap(&s).await;
    // A deploy replaces the link with a real directory.
    std::fs::remove_file(d.join("config")).unwrap();
    write(&d.join("config/app.json"), "deployed\n");
    let v = s.verify(&snap.id, &[]).await.unwrap();
    assert!(!v.ok, "a link replaced by a directory is drift: {v:?}");

    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert_eq!(std::fs::read_link(d.join("config")).unwrap().to_str(), Some("config-v1"), "the link came back");
    assert_eq!(std::fs::read_to_string(d.join("config/app.json")).unwrap(), "v1\n");
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
    // The directory it replaced is in the safety snapshot.
    let safety = s.resolve(r.safety_snapshot_id.as_deref().unwrap()).unwrap();
    let a = safety.parts[0].artifacts.iter().find(|a| a.name.ends_with("app.json")).unwrap();
    assert_eq!(s.store().read_artifact(a).unwrap(), b"deployed\n");
}

#[tokio::test]
async fn files_compensation_puts_a_root_link_back_exactly() {
    let (_t, d) = tmp();
    write(&d.join("config/a.json"), "v1\n");
    write(&d.join("flag"), "ok\n");
    let toml = r#"
[[component]]
name = "cfg"
driver = "files"
paths = ["config"]
phase = 2

[[component]]
name = "svc"
driver = "command"
phase = 1
capture = ["cat", "flag"]
# Restoring the snapshot's state fails; restoring any other state (compensation) works.
restore = ["sh", "-c", "if grep -q ok \"$ROLLBACK_STATE_FILE\"; then echo 'restore of svc failed' >&2; exit 3; fi; cp \"$ROLLBACK_STATE_FILE\" flag"]
"#;
    let s = stack(&d, toml);
    let snap = common::snap(&s).await;
    // The deploy turns the directory into a link to a new one.
    std::fs::remove_dir_all(d.join("config")).unwrap();
    write(&d.join("config-v2/a.json"), "v2\n");
    std::os::unix::fs::symlink("config-v2", d.join("config")).unwrap();
    write(&d.join("flag"), "new\n");

    // cfg is restored (a real directory again), then svc fails: cfg is put back.
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Compensated, "{}", r.to_json());
    assert!(r.steps.iter().any(|s| s.action == "compensate" && s.component == "cfg" && s.status == "ok"));
    assert_eq!(
        std::fs::read_link(d.join("config")).ok().as_deref().and_then(|p| p.to_str()),
        Some("config-v2"),
        "the link before the rollback came back, not a directory"
    );
    assert_eq!(std::fs::read_to_string(d.join("config-v2/a.json")).unwrap(), "v2\n");
    let stray: Vec<_> = names(&d).into_iter().filter(|n| n.starts_with(b".config")).collect();
    assert!(stray.is_empty(), "no temporary names left: {stray:?}");
}

#[tokio::test]
async fn files_non_utf8_names_round_trip_byte_exactly() {
    let (_t, d) = tmp();
    let cfg = d.join("config");
    std::fs::create_dir_all(cfg.join(raw(b"d\xff"))).unwrap();
    std::fs::write(cfg.join(raw(b"caf\xe9.json")), "v1\n").unwrap();
    std::fs::write(cfg.join(raw(b"d\xff/x\xfe")), "inner\n").unwrap();
    std::fs::write(cfg.join("plain.json"), "plain\n").unwrap();
    let s = stack(&d, "[[component]]\nname = \"cfg\"\ndriver = \"files\"\npaths = [\"config\"]\n");
    let snap = common::snap(&s).await;
    let before = names(&cfg);
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);

    std::fs::write(cfg.join(raw(b"caf\xe9.json")), "v2\n").unwrap();
    std::fs::remove_file(cfg.join(raw(b"d\xff/x\xfe"))).unwrap();
    std::fs::write(cfg.join(raw(b"new\xfe")), "added\n").unwrap();
    std::fs::write(cfg.join(raw(b"caf\xef\xbf\xbd.json")), "a UTF-8 name a lossy decoding would produce\n").unwrap();
    let v = s.verify(&snap.id, &[]).await.unwrap();
    assert!(!v.ok);

    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert_eq!(names(&cfg), before, "no stray or mangled names");
    assert_eq!(std::fs::read_to_string(cfg.join(raw(b"caf\xe9.json"))).unwrap(), "v1\n");
    assert_eq!(std::fs::read_to_string(cfg.join(raw(b"d\xff/x\xfe"))).unwrap(), "inner\n");
    assert_eq!(names(&cfg.join(raw(b"d\xff"))), [b"x\xfe".to_vec()]);
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);

    // Undo through the safety snapshot: the added non-UTF-8 names come back too.
    let undo = s.rollback(r.safety_snapshot_id.as_deref().unwrap(), opts(Scope::Complete)).await.unwrap();
    assert_eq!(undo.status, Status::Succeeded, "{}", undo.to_json());
    assert_eq!(std::fs::read_to_string(cfg.join(raw(b"new\xfe"))).unwrap(), "added\n");
    assert_eq!(std::fs::read_to_string(cfg.join(raw(b"caf\xe9.json"))).unwrap(), "v2\n");
    assert!(!cfg.join(raw(b"d\xff/x\xfe")).exists());
}

/// `current` became a real directory (a release copied over the link by hand): the
/// rollback moves that directory aside under the name the plan and the record give,
/// keeping every file in it, then puts the link back. Undoing the rollback (the
/// safety snapshot) moves the directory back.
#[tokio::test]
async fn releases_a_current_that_became_a_directory_is_moved_aside_not_lost() {
    let (_t, d) = tmp();
    for v in ["v1", "v2"] {
        write(&d.join(format!("releases/{v}/VERSION")), v);
    }
    std::os::unix::fs::symlink("v1", d.join("releases/current")).unwrap();
    let s = stack(&d, "[[component]]\nname = \"app\"\ndriver = \"releases\"\nroot = \"releases\"\n");
    let snap = common::snap(&s).await;
    std::fs::remove_file(d.join("releases/current")).unwrap();
    write(&d.join("releases/current/VERSION"), "hand-copied");
    write(&d.join("releases/current/uploads/report.csv"), "only copy\n");
    assert!(!s.verify(&snap.id, &[]).await.unwrap().ok);

    let plan = s.plan(&snap.id, &Scope::Complete).await.unwrap();
    assert_eq!(plan.discards.len(), 1, "{plan}");
    let aside = format!("current.aside-{}", snap.id);
    assert!(plan.discards[0].unit.contains(&aside), "the plan names where it goes: {}", plan.discards[0].unit);

    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert!(r.discarded.iter().any(|x| x.unit.contains(&aside)), "the record names it: {}", r.to_json());
    assert_eq!(std::fs::read_link(d.join("releases/current")).unwrap().to_str(), Some("v1"));
    assert_eq!(
        std::fs::read_to_string(d.join("releases").join(&aside).join("uploads/report.csv")).unwrap(),
        "only copy\n"
    );
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);

    // Undo: the directory is `current` again, with its files; the aside name is free.
    let undo = s.rollback(r.safety_snapshot_id.as_deref().unwrap(), opts(Scope::Complete)).await.unwrap();
    assert_eq!(undo.status, Status::Succeeded, "{}", undo.to_json());
    let m = std::fs::symlink_metadata(d.join("releases/current")).unwrap();
    assert!(m.is_dir(), "a directory again");
    assert_eq!(std::fs::read_to_string(d.join("releases/current/uploads/report.csv")).unwrap(), "only copy\n");
    assert!(!d.join("releases").join(&aside).exists());
}

/// A later step fails after `current` (a directory) was moved aside: compensation
/// moves it back, and the record says compensated.
#[tokio::test]
async fn releases_compensation_moves_the_directory_back() {
    let (_t, d) = tmp();
    for v in ["v1", "v2"] {
        write(&d.join(format!("releases/{v}/VERSION")), v);
    }
    std::os::unix::fs::symlink("v1", d.join("releases/current")).unwrap();
    write(&d.join("flag"), "ok\n");
    let toml = r#"
[[component]]
name = "app"
driver = "releases"
root = "releases"
phase = 2

[[component]]
name = "svc"
driver = "command"
phase = 1
capture = ["cat", "flag"]
# Restoring the snapshot's state fails; restoring any other state (compensation) works.
restore = ["sh", "-c", "if grep -q ok \"$ROLLBACK_STATE_FILE\"; then echo 'restore of svc failed' >&2; exit 3; fi; cp \"$ROLLBACK_STATE_FILE\" flag"]
"#;
    let s = stack(&d, toml);
    let snap = common::snap(&s).await;
    std::fs::remove_file(d.join("releases/current")).unwrap();
    write(&d.join("releases/current/VERSION"), "hand-copied");
    write(&d.join("flag"), "new\n");
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Compensated, "{}", r.to_json());
    assert!(r.steps.iter().any(|s| s.action == "compensate" && s.component == "app" && s.status == "ok"));
    assert!(std::fs::symlink_metadata(d.join("releases/current")).unwrap().is_dir());
    assert_eq!(std::fs::read_to_string(d.join("releases/current/VERSION")).unwrap(), "hand-copied");
    let mut left = names(&d.join("releases"));
    left.retain(|n| n != b"v1" && n != b"v2" && n != b"current");
    assert!(left.is_empty(), "nothing left beside it: {left:?}");
}

/// A restore command that outlives its step's timeout is stopped with everything it
/// started: a background child of `sh -c` must not go on after the step gave up.
#[tokio::test]
async fn a_timed_out_command_is_stopped_with_its_children() {
    let (_t, d) = tmp();
    write(&d.join("state.txt"), "v1\n");
    let s = stack(
        &d,
        r#"[[component]]
name = "svc"
driver = "command"
capture = ["cat", "state.txt"]
restore = ["sh", "-c", "sleep 30 & echo $! > bg.pid; sleep 30"]
timeout = "500ms"
"#,
    );
    let snap = common::snap(&s).await;
    write(&d.join("state.txt"), "v2\n");
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_ne!(r.status, Status::Succeeded, "{}", r.to_json());
    let pid = std::fs::read_to_string(d.join("bg.pid")).unwrap().trim().to_string();
    // Gone, or a zombie waiting for PID 1 to reap it: either way no longer running.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        let running =
            state.as_deref().and_then(|s| s.rsplit(')').next()).map(|s| s.trim_start().starts_with(['R', 'S', 'D']));
        if running != Some(true) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the background child {pid} still runs: {state:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A socket and a FIFO inside a directory added since the snapshot: the restore
/// removes the directory, and no snapshot can keep them, so the plan and the record
/// name them and say data was lost.
#[tokio::test]
async fn special_files_a_restore_removes_are_named() {
    let (_t, d) = tmp();
    write(&d.join("config/app.json"), "{}\n");
    let s = stack(&d, "[[component]]\nname = \"cfg\"\ndriver = \"files\"\npaths = [\"config\"]\n");
    let snap = common::snap(&s).await;
    std::fs::create_dir_all(d.join("config/run")).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(d.join("config/run/app.sock")).unwrap();
    let st = std::process::Command::new("mkfifo").arg(d.join("config/run/events")).status().unwrap();
    assert!(st.success());
    write(&d.join("config/run/app.pid"), "42\n");

    let plan = s.plan(&snap.id, &Scope::Complete).await.unwrap();
    let named = plan.discards.iter().find(|x| x.unit.contains("special")).expect("named in the plan");
    assert!(named.target.contains("app.sock") && named.target.contains("events"), "{named:?}");
    assert_eq!(named.changes, 2);
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert!(r.data_loss, "{}", r.to_json());
    assert!(r.discarded.iter().any(|x| x.unit.contains("special") && !x.kept_in_safety_snapshot));
    assert!(!d.join("config/run").exists());
}
