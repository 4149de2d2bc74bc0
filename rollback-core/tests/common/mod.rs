//! Test fixtures: real git repositories, real directories, stacks from TOML.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rollback_core::{RollbackOptions, Scope, SnapshotManifest, SnapshotOptions, Stack, StackConfig};

pub fn write(p: &Path, s: &str) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(p, s).unwrap();
}

pub fn sig() -> git2::Signature<'static> {
    git2::Signature::now("Test", "test@example.invalid").unwrap()
}

/// Stages everything (including deletions) but `notes.txt`, the operator's
/// untracked file, and commits on HEAD.
pub fn commit_all(repo: &git2::Repository, msg: &str) -> git2::Oid {
    let mut idx = repo.index().unwrap();
    let mut skip_notes = |p: &Path, _: &[u8]| -> i32 { i32::from(p == Path::new("notes.txt")) };
    idx.add_all(["*"], git2::IndexAddOption::DEFAULT, Some(&mut skip_notes)).unwrap();
    idx.update_all(["*"], None).unwrap();
    idx.write().unwrap();
    let tree = repo.find_tree(idx.write_tree().unwrap()).unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig(), &sig(), msg, &tree, &parents).unwrap()
}

pub fn head(repo_dir: &Path) -> String {
    let r = git2::Repository::open(repo_dir).unwrap();
    let id = r.head().unwrap().peel_to_commit().unwrap().id().to_string();
    id
}

/// A repository with real history: two commits on main, a feature branch merged
/// with a merge commit, a tag, an ignored file and an untracked file.
pub fn repo_with_history(dir: &Path) -> git2::Repository {
    let repo = git2::Repository::init(dir).unwrap();
    repo.set_head("refs/heads/main").unwrap();
    write(&dir.join(".gitignore"), "*.log\n");
    write(&dir.join("src/engine.py"), "VERSION = 1\n");
    write(&dir.join("exchanges/binance.py"), "FEE = 0.001\n");
    write(&dir.join("exchanges/kraken.py"), "FEE = 0.002\n");
    let base = commit_all(&repo, "initial");
    repo.tag_lightweight("v1.0.0", &repo.find_object(base, None).unwrap(), false).unwrap();
    // feature branch with its own commit, merged back with a merge commit
    {
        let base_commit = repo.find_commit(base).unwrap();
        repo.branch("feature", &base_commit, false).unwrap();
    }
    repo.set_head("refs/heads/feature").unwrap();
    repo.checkout_head(Some(git2::build::CheckoutBuilder::new().force())).unwrap();
    write(&dir.join("src/risk.py"), "LIMIT = 10\n");
    let feat = commit_all(&repo, "risk limits");
    repo.set_head("refs/heads/main").unwrap();
    repo.checkout_head(Some(git2::build::CheckoutBuilder::new().force())).unwrap();
    write(&dir.join("README"), "engine\n");
    let main2 = commit_all(&repo, "readme");
    {
        let (m, f) = (repo.find_commit(main2).unwrap(), repo.find_commit(feat).unwrap());
        let mut idx = repo.merge_commits(&m, &f, None).unwrap();
        let tree = repo.find_tree(idx.write_tree_to(&repo).unwrap()).unwrap();
        repo.commit(Some("HEAD"), &sig(), &sig(), "Merge feature", &tree, &[&m, &f]).unwrap();
    }
    repo.checkout_head(Some(git2::build::CheckoutBuilder::new().force())).unwrap();
    write(&dir.join("engine.log"), "ignored log\n");
    write(&dir.join("notes.txt"), "untracked operator notes\n");
    repo
}

pub fn stack(dir: &Path, toml: &str) -> Stack {
    let cfg =
        StackConfig::from_toml_str(toml, Some(&dir.join("rollback.toml")), dir, &|k| std::env::var(k).ok()).unwrap();
    Stack::new(cfg, &rollback_core::Registry::with_default_drivers()).unwrap()
}

pub async fn snap(s: &Stack) -> SnapshotManifest {
    s.snapshot(SnapshotOptions { label: Some("test".into()), ..Default::default() }).await.unwrap()
}

pub fn opts(scope: Scope) -> RollbackOptions {
    RollbackOptions { scope, trigger: Some("test".into()), ..Default::default() }
}

pub fn tmp() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let p = std::fs::canonicalize(t.path()).unwrap();
    (t, p)
}

/// The TLS-only servers of `scripts/tls-servers.sh` (PostgreSQL, Redis, MariaDB, an
/// https endpoint, with a throwaway CA), started once per test binary if they do not
/// run yet; `scripts/test.sh` stops them after the suites (`bash scripts/tls-servers.sh
/// stop /tmp/rollback-tls-servers` after a bare `cargo test`). Returns the variables of
/// their `env` file (ports, URLs, CA and client certificate paths).
pub fn tls_servers() -> &'static std::collections::HashMap<String, String> {
    static ENV: std::sync::OnceLock<std::collections::HashMap<String, String>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        // Short and fixed: the servers' unix sockets live there (paths are limited to
        // about 100 bytes), and their ports are fixed, so there is one set per machine.
        let dir = std::env::var_os("ROLLBACK_TLS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/tmp/rollback-tls-servers".into());
        let out = std::process::Command::new("bash")
            .arg(root.join("scripts/tls-servers.sh"))
            .arg("start")
            .arg(&dir)
            .output()
            .expect("bash must run");
        assert!(
            out.status.success(),
            "scripts/tls-servers.sh start {} failed:\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(dir.join("env")).unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect()
    })
}
