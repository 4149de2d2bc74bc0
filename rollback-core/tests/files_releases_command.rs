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
