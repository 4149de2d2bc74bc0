//! The git driver against real repositories: history, merges, tags, untracked
//! and ignored files; reset, revert and partial restores.

mod common;

use common::*;
use rollback_core::{ErrorKind, Scope, Status};

fn cfg(mode: &str, extra: &str) -> String {
    format!("[[component]]\nname = \"code\"\ndriver = \"git\"\nrepo = \"app\"\nmode = \"{mode}\"\n{extra}\n")
}

#[tokio::test]
async fn reset_mode_puts_the_branch_back_and_keeps_untracked_files() {
    let (_t, d) = tmp();
    let app = d.join("app");
    let repo = repo_with_history(&app);
    let s = stack(&d, &cfg("reset", ""));
    let before = head(&app);
    let snap = common::snap(&s).await;
    // The protecting tag exists.
    assert!(repo.find_reference(&format!("refs/tags/rollback/{}", snap.id)).is_ok());

    // Bad deploy: two commits, one deleting a file.
    write(&app.join("src/engine.py"), "VERSION = 2\n");
    commit_all(&repo, "v2");
    std::fs::remove_file(app.join("exchanges/kraken.py")).unwrap();
    write(&app.join("src/new.py"), "x = 1\n");
    commit_all(&repo, "v2.1");
    assert!(!s.verify(&snap.id, &[]).await.unwrap().ok);

    let plan = s.plan(&snap.id, &Scope::Complete).await.unwrap();
    assert_eq!(plan.discards.len(), 1);
    assert_eq!(plan.discards[0].changes, 2, "two commits since the snapshot");

    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert!(!r.data_loss, "the safety snapshot's tag keeps the discarded commits");
    assert_eq!(head(&app), before);
    assert_eq!(std::fs::read_to_string(app.join("src/engine.py")).unwrap(), "VERSION = 1\n");
    assert!(app.join("exchanges/kraken.py").exists());
    assert!(!app.join("src/new.py").exists());
    assert!(app.join("notes.txt").exists(), "untracked files are kept");
    assert!(app.join("engine.log").exists(), "ignored files are kept");
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
    // The discarded commits are still reachable through the safety snapshot's tag.
    let safety = r.safety_snapshot_id.unwrap();
    let tag = repo.find_reference(&format!("refs/tags/rollback/{safety}")).unwrap();
    assert_ne!(tag.peel_to_commit().unwrap().id().to_string(), before);
}

#[tokio::test]
async fn revert_mode_keeps_history() {
    let (_t, d) = tmp();
    let app = d.join("app");
    let repo = repo_with_history(&app);
    let s = stack(&d, &cfg("revert", ""));
    let snap = common::snap(&s).await;
    write(&app.join("src/engine.py"), "VERSION = 2\n");
    let bad = commit_all(&repo, "v2");
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    let head_c = repo.head().unwrap().peel_to_commit().unwrap();
    assert_eq!(head_c.parent_id(0).unwrap(), bad, "the revert is a new commit on top");
    assert!(head_c.message().unwrap().starts_with("Revert to"));
    assert_eq!(std::fs::read_to_string(app.join("src/engine.py")).unwrap(), "VERSION = 1\n");
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
    // Running the same restore again changes nothing (resume safety).
    let again = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(again.status, Status::Succeeded);
    assert_eq!(repo.head().unwrap().peel_to_commit().unwrap().id(), head_c.id());
}

#[tokio::test]
async fn partial_paths_restore_one_exchange_module() {
    let (_t, d) = tmp();
    let app = d.join("app");
    let repo = repo_with_history(&app);
    let s = stack(&d, &cfg("reset", "paths = [\"exchanges/binance.py\"]"));
    let snap = common::snap(&s).await;
    write(&app.join("exchanges/binance.py"), "FEE = 0.5  # bug\n");
    write(&app.join("src/engine.py"), "VERSION = 2\n");
    commit_all(&repo, "v2 with a binance bug");
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert_eq!(std::fs::read_to_string(app.join("exchanges/binance.py")).unwrap(), "FEE = 0.001\n");
    assert_eq!(
        std::fs::read_to_string(app.join("src/engine.py")).unwrap(),
        "VERSION = 2\n",
        "paths outside the restore keep the new version"
    );
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
}

#[tokio::test]
async fn a_dirty_tree_is_refused_unless_allowed_and_never_overwritten() {
    let (_t, d) = tmp();
    let app = d.join("app");
    let repo = repo_with_history(&app);
    write(&app.join("src/engine.py"), "VERSION = 1  # hotfix in progress\n");
    let s = stack(&d, &cfg("reset", ""));
    let e = s.snapshot(Default::default()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
    assert!(e.to_string().contains("src/engine.py") && e.to_string().contains("allow_dirty"), "{e}");
    assert_eq!(e.component(), Some("code"));

    let s = stack(&d, &cfg("reset", "allow_dirty = true"));
    let snap = common::snap(&s).await;
    commit_all(&repo, "commit the hotfix");
    write(&app.join("src/engine.py"), "VERSION = 3  # unsaved work\n");
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    // The record names the uncommitted work and where it went.
    let d0 = r.discarded.iter().find(|x| x.target.contains("uncommitted")).expect("named in the discards");
    assert!(d0.target.contains("src/engine.py") && d0.target.contains("git stash"), "{d0:?}");
    assert_eq!(d0.changes, 1);
    // The uncommitted work was stashed, not lost.
    let mut repo = git2::Repository::open(&app).unwrap();
    let mut stashes = Vec::new();
    repo.stash_foreach(|_, msg, _| {
        stashes.push(msg.to_string());
        true
    })
    .unwrap();
    assert_eq!(stashes.len(), 1, "{stashes:?}");
}

#[tokio::test]
async fn a_missing_repository_is_a_clear_error() {
    let (_t, d) = tmp();
    let s = stack(&d, &cfg("reset", ""));
    let e = s.snapshot(Default::default()).await.unwrap_err();
    assert_eq!(e.component(), Some("code"));
    assert!(e.to_string().contains("not a git repository"), "{e}");
}

#[tokio::test]
async fn gc_deletes_the_protecting_tag() {
    let (_t, d) = tmp();
    let app = d.join("app");
    let repo = repo_with_history(&app);
    let s = stack(&d, &cfg("reset", ""));
    let a = snap(&s).await;
    let b = snap(&s).await;
    let r = s.gc(Some(1), None).await.unwrap();
    assert_eq!(r.removed, vec![a.id.clone()]);
    assert!(repo.find_reference(&format!("refs/tags/rollback/{}", a.id)).is_err());
    assert!(repo.find_reference(&format!("refs/tags/rollback/{}", b.id)).is_ok());
    // Never the newest.
    let r = s.gc(Some(1), Some(std::time::Duration::from_secs(0))).await.unwrap();
    assert!(r.removed.is_empty(), "{r:?}");
}

#[tokio::test]
async fn partial_directory_restore_removes_files_added_inside_it() {
    let (_t, d) = tmp();
    let app = d.join("app");
    let repo = repo_with_history(&app);
    let s = stack(&d, &cfg("revert", "paths = [\"exchanges\"]"));
    let snap = common::snap(&s).await;
    write(&app.join("exchanges/binance.py"), "FEE = 0.5\n");
    write(&app.join("exchanges/coinbase.py"), "FEE = 0.004\n");
    write(&app.join("src/engine.py"), "VERSION = 2\n");
    commit_all(&repo, "v2");
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert!(!app.join("exchanges/coinbase.py").exists());
    assert_eq!(std::fs::read_to_string(app.join("exchanges/binance.py")).unwrap(), "FEE = 0.001\n");
    assert_eq!(std::fs::read_to_string(app.join("src/engine.py")).unwrap(), "VERSION = 2\n");
    assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
}

#[tokio::test]
async fn a_partial_restore_leaves_unrelated_work_in_progress_alone() {
    let (_t, d) = tmp();
    let app = d.join("app");
    let repo = repo_with_history(&app);
    let s = stack(&d, &cfg("reset", "paths = [\"exchanges\"]\nallow_dirty = true"));
    let snap = common::snap(&s).await;
    write(&app.join("exchanges/binance.py"), "FEE = 0.5\n");
    commit_all(&repo, "bad fee");
    write(&app.join("exchanges/kraken.py"), "FEE = 0.9  # uncommitted, inside the restored paths\n");
    write(&app.join("src/engine.py"), "VERSION = 1  # uncommitted work elsewhere\n");
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert_eq!(
        std::fs::read_to_string(app.join("src/engine.py")).unwrap(),
        "VERSION = 1  # uncommitted work elsewhere\n",
        "work outside the restored paths is neither stashed nor reverted"
    );
    assert_eq!(std::fs::read_to_string(app.join("exchanges/kraken.py")).unwrap(), "FEE = 0.002\n");
    // The uncommitted change inside the restored paths is kept in the stash.
    let mut repo = git2::Repository::open(&app).unwrap();
    let mut n = 0;
    repo.stash_foreach(|_, _, _| {
        n += 1;
        true
    })
    .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn resetting_a_branch_head_is_not_on_keeps_its_commits_reachable() {
    let (_t, d) = tmp();
    let app = d.join("app");
    let repo = repo_with_history(&app);
    let s = stack(&d, &cfg("reset", ""));
    let snap = common::snap(&s).await;
    write(&app.join("src/engine.py"), "VERSION = 2\n");
    let lost_candidate = commit_all(&repo, "v2 on main");
    // The operator is now on a hotfix branch.
    let head = repo.head().unwrap().peel_to_commit().unwrap();
    repo.branch("hotfix", &head, false).unwrap();
    repo.set_head("refs/heads/hotfix").unwrap();
    let plan = s.plan(&snap.id, &Scope::Complete).await.unwrap();
    assert_eq!(plan.discards[0].target, "branch main");
    assert_eq!(plan.discards[0].changes, 1);
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    let mut kept = false;
    for name in repo.tag_names(Some("rollback/before-*")).unwrap().iter().flatten() {
        let t = repo.find_reference(&format!("refs/tags/{name}")).unwrap();
        kept |= t.peel_to_commit().unwrap().id() == lost_candidate;
    }
    assert!(kept, "the previous tip of main is tagged");
}

/// `git` itself, as the oracle: the driver's own reading is not asked.
fn git_cli(dir: &std::path::Path, args: &[&str]) -> String {
    let o = std::process::Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
    assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[tokio::test]
async fn untracked_and_ignored_files_the_old_tree_has_are_kept_not_overwritten() {
    for mode in ["reset", "revert"] {
        let (_t, d) = tmp();
        let app = d.join("app");
        let repo = repo_with_history(&app);
        write(&app.join("settings.local"), "threads = 4\n");
        write(&app.join("app.txt"), "v1 app\n");
        commit_all(&repo, "settings and app.txt tracked");
        let s = stack(&d, &cfg(mode, ""));
        let snap = common::snap(&s).await;

        // The deploy stops tracking settings.local (now ignored) and deletes app.txt.
        git_cli(&app, &["rm", "-q", "--cached", "settings.local"]);
        git_cli(&app, &["rm", "-q", "app.txt"]);
        write(&app.join(".gitignore"), "*.log\nsettings.local\n");
        git_cli(&app, &["add", ".gitignore"]);
        git_cli(&app, &["-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "-m", "stop tracking"]);
        // The application then writes its settings; the operator leaves a file.
        write(&app.join("settings.local"), "threads = 64  # tuned in production\n");
        write(&app.join("app.txt"), "operator's notes\n");
        assert_eq!(git_cli(&app, &["status", "--porcelain", "--ignored", "settings.local"]), "!! settings.local\n");

        let plan = s.plan(&snap.id, &Scope::Complete).await.unwrap();
        let named = plan.discards.iter().find(|x| x.target.contains("untracked or ignored")).expect("in the plan");
        assert!(named.target.contains("settings.local") && named.target.contains("app.txt"), "{named:?}");
        assert_eq!(named.changes, 2);

        let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
        assert_eq!(r.status, Status::Succeeded, "{mode}: {}", r.to_json());
        assert!(!r.data_loss, "{mode}: {}", r.to_json());
        assert!(r.discarded.iter().any(|x| x.target.contains("settings.local") && x.kept_in_safety_snapshot));
        assert_eq!(std::fs::read_to_string(app.join("settings.local")).unwrap(), "threads = 4\n");
        assert_eq!(std::fs::read_to_string(app.join("app.txt")).unwrap(), "v1 app\n");
        // What was there is in a commit under refs/rollback/kept/, as git shows it.
        let refs = git_cli(&app, &["for-each-ref", "--format=%(refname)", "refs/rollback/kept/"]);
        let kept: Vec<&str> = refs.lines().collect();
        assert_eq!(kept.len(), 1, "{mode}: {refs}");
        assert_eq!(
            git_cli(&app, &["show", &format!("{}:settings.local", kept[0])]),
            "threads = 64  # tuned in production\n"
        );
        assert_eq!(git_cli(&app, &["show", &format!("{}:app.txt", kept[0])]), "operator's notes\n");
        // Ignored files the old tree does not have are left alone.
        assert!(app.join("engine.log").exists());
        assert!(s.verify(&snap.id, &[]).await.unwrap().ok);
    }
}

#[tokio::test]
async fn a_partial_restore_keeps_the_untracked_files_it_replaces() {
    let (_t, d) = tmp();
    let app = d.join("app");
    let repo = repo_with_history(&app);
    let s = stack(&d, &cfg("reset", "paths = [\"exchanges\"]"));
    let snap = common::snap(&s).await;
    std::fs::remove_file(app.join("exchanges/kraken.py")).unwrap();
    commit_all(&repo, "drop kraken");
    // An untracked file where the old tree has one, and one where it has a directory.
    write(&app.join("exchanges/kraken.py"), "FEE = 0.5  # local experiment\n");
    let r = s.rollback(&snap.id, opts(Scope::Complete)).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
    assert!(!r.data_loss, "{}", r.to_json());
    assert_eq!(std::fs::read_to_string(app.join("exchanges/kraken.py")).unwrap(), "FEE = 0.002\n");
    let refs = git_cli(&app, &["for-each-ref", "--format=%(refname)", "refs/rollback/kept/"]);
    let kept = refs.lines().next().expect("kept");
    assert_eq!(git_cli(&app, &["show", &format!("{kept}:exchanges/kraken.py")]), "FEE = 0.5  # local experiment\n");
}
