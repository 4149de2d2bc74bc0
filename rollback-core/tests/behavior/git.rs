//! `git`: a repository with a branch; a deploy is a new commit.

use std::path::Path;

use rollback_core::testkit::{async_trait, run, unique, Fixture, Trial};
use rollback_core::{ComponentConfig, Result};

const KNOWN_FAILURES: &[(Trial, &str)] = &[];

/// `ROLLBACK_GIT_MODE`: `reset` (default) or `revert`.
struct Git {
    mode: String,
}

fn fixture() -> Git {
    Git { mode: super::setting("ROLLBACK_GIT_MODE", "reset") }
}

async fn git(repo: &Path, args: &[&str]) -> Result<String> {
    let mut all = vec!["-c", "user.name=testkit", "-c", "user.email=testkit@example.invalid"];
    all.extend_from_slice(args);
    run("git", &all, Some(repo)).await
}

#[async_trait]
impl Fixture for Git {
    fn driver(&self) -> &str {
        "git"
    }

    async fn component(&self, name: &str, dir: &Path) -> Result<ComponentConfig> {
        let repo = dir.join(name);
        tokio::fs::create_dir_all(repo.join("src")).await?;
        git(&repo, &["init", "-q", "-b", "main"]).await?;
        tokio::fs::write(repo.join("src/app.py"), "VERSION = 1\n").await?;
        tokio::fs::write(repo.join(".gitignore"), "*.log\n").await?;
        tokio::fs::write(repo.join("app.log"), "ignored\n").await?;
        git(&repo, &["add", "-A"]).await?;
        git(&repo, &["commit", "-q", "-m", "initial"]).await?;
        tokio::fs::write(repo.join("notes.txt"), "untracked\n").await?;
        Ok(ComponentConfig::new(name, "git")
            .option("repo", repo.display().to_string())
            .option("mode", self.mode.as_str()))
    }

    async fn mutate(&self, name: &str, dir: &Path) -> Result<()> {
        let repo = dir.join(name);
        tokio::fs::write(repo.join("src/app.py"), format!("VERSION = '{}'\n", unique("v"))).await?;
        tokio::fs::write(repo.join(format!("src/{}.py", unique("new"))), "x = 1\n").await?;
        git(&repo, &["add", "-A", "src"]).await?;
        git(&repo, &["commit", "-q", "-m", "deploy"]).await?;
        Ok(())
    }

    async fn digest(&self, name: &str, dir: &Path) -> Result<String> {
        let repo = dir.join(name);
        // A revert restores the tree in a new commit; a reset restores the commit.
        let head = if self.mode == "revert" { "HEAD^{tree}" } else { "HEAD" };
        let id = git(&repo, &["rev-parse", head]).await?;
        let branch = git(&repo, &["symbolic-ref", "HEAD"]).await?;
        let status = git(&repo, &["status", "--porcelain", "--ignored"]).await?;
        Ok(format!("{id}{branch}{status}"))
    }

    async fn cleanup(&self, _name: &str, _dir: &Path) {}

    async fn pinned(&self, name: &str, dir: &Path, snapshot_id: &str) -> Result<Option<usize>> {
        let tags = git(&dir.join(name), &["tag", "-l", &format!("rollback/{snapshot_id}")]).await?;
        Ok(Some(tags.lines().count()))
    }
}

rollback_core::behavior_tests!(fixture(), KNOWN_FAILURES);

/// Generated repositories: a few commits of files with odd names, links and
/// executable bits, a `.gitignore`, untracked and ignored files, `reset` or `revert`
/// mode, sometimes a partial restore of one directory. Mutations commit, stop tracking
/// a file the application then rewrites (now ignored), delete a tracked file and leave
/// an untracked one in its place, leave uncommitted changes, add untracked and ignored
/// files. The oracle is `git` itself: the digest is what a snapshot holds (the commit
/// or tree), and every file's content from before the rollback must still be in the
/// working tree or reachable from a ref or reflog (the stash, `refs/rollback/kept/`).
mod property {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use rollback_core::testkit::{async_trait, run_property, Cases, Gen, Generator, Inventory};
    use rollback_core::{ComponentConfig, Error, Result};

    use super::git;

    struct Repos;

    /// Where each generated repository's settings are kept between calls.
    fn settings(dir: &Path) -> PathBuf {
        dir.join("generator.json")
    }

    fn file_name(g: &mut Gen) -> String {
        // git keeps any name but these; a leading dash is fine with `--`.
        let n = g.name(20).replace(['\n', '\r'], "_");
        if n == ".git" || n.starts_with(".git/") {
            "dotgit".into()
        } else {
            n
        }
    }

    fn write_random(g: &mut Gen, repo: &Path, rel: &str) -> std::io::Result<()> {
        let p = repo.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            return Ok(());
        }
        let _ = std::fs::remove_file(&p);
        if g.chance(10) {
            std::os::unix::fs::symlink(g.name(12), &p)
        } else {
            let content = if g.chance(50) { g.text(300).into_bytes() } else { g.bytes(2048) };
            std::fs::write(&p, content)?;
            use std::os::unix::fs::PermissionsExt;
            let mode = if g.chance(20) { 0o755 } else { 0o644 };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
        }
    }

    async fn commit(repo: &Path, msg: &str) -> Result<()> {
        git(repo, &["add", "-A"]).await?;
        git(repo, &["commit", "-q", "--allow-empty", "-m", msg]).await.map(drop)
    }

    async fn tracked(repo: &Path) -> Result<Vec<String>> {
        Ok(git(repo, &["ls-files", "-z"]).await?.split('\0').filter(|s| !s.is_empty()).map(String::from).collect())
    }

    /// The `paths` of a partial restore, if this repository has one.
    fn partial(dir: &Path) -> Option<String> {
        let s: serde_json::Value = serde_json::from_slice(&std::fs::read(settings(dir)).ok()?).ok()?;
        s["paths"].as_str().map(String::from)
    }

    fn mode(dir: &Path) -> String {
        std::fs::read(settings(dir))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["mode"].as_str().map(String::from))
            .unwrap_or_else(|| "reset".into())
    }

    /// The blob id git gives each file of the working tree (links: their target).
    async fn blobs(repo: &Path) -> Result<Inventory> {
        let mut out = Inventory::new();
        let mut files = Vec::new();
        let mut stack = vec![repo.to_path_buf()];
        while let Some(p) = stack.pop() {
            let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
            if m.is_dir() {
                if p.file_name().is_some_and(|n| n == ".git") {
                    continue;
                }
                for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                    stack.push(e.path());
                }
            } else if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p)?;
                let tmp = repo.join(".git").join("generator-link");
                std::fs::write(&tmp, t.as_os_str().as_encoded_bytes())?;
                let id = git(repo, &["hash-object", "--no-filters", tmp.to_str().unwrap_or_default()]).await?;
                out.insert(p.strip_prefix(repo).unwrap_or(&p).display().to_string(), id.trim().to_string());
            } else if m.is_file() {
                files.push(p);
            }
        }
        for p in files {
            let id = git(repo, &["hash-object", "--no-filters", "--", p.to_str().unwrap_or_default()]).await?;
            out.insert(p.strip_prefix(repo).unwrap_or(&p).display().to_string(), id.trim().to_string());
        }
        Ok(out)
    }

    #[async_trait]
    impl Generator for Repos {
        fn driver(&self) -> &str {
            "git"
        }

        async fn component(&self, g: &mut Gen, name: &str, dir: &Path) -> Result<ComponentConfig> {
            let repo = dir.join(name);
            std::fs::create_dir_all(&repo)?;
            git(&repo, &["init", "-q", "-b", "main"]).await?;
            std::fs::write(repo.join(".gitignore"), "*.log\ntmp/\nsettings.local\n")?;
            std::fs::create_dir_all(repo.join("app"))?;
            std::fs::write(repo.join("app/main.py"), "VERSION = 1\n")?;
            for i in 0..1 + g.below(3) {
                for _ in 0..1 + g.below(5) {
                    let dirpart = *g.pick(&["", "app/", "lib/", "conf/nested/"]);
                    let rel = format!("{dirpart}{}", file_name(g));
                    write_random(g, &repo, &rel)?;
                }
                commit(&repo, &format!("commit {i}")).await?;
            }
            // Untracked and ignored files at the snapshot.
            for _ in 0..g.below(3) {
                let rel = format!("notes-{}", g.ident(6));
                write_random(g, &repo, &rel)?;
            }
            for _ in 0..g.below(3) {
                let rel = format!("{}.log", g.ident(6));
                write_random(g, &repo, &rel)?;
            }
            let mode = if g.chance(30) { "revert" } else { "reset" };
            let paths = g.chance(20).then(|| "app".to_string());
            std::fs::write(settings(dir), serde_json::json!({ "mode": mode, "paths": paths }).to_string())?;
            let mut c =
                ComponentConfig::new(name, "git").option("repo", repo.display().to_string()).option("mode", mode);
            if let Some(p) = paths {
                c = c.option("paths", vec![p]);
            }
            Ok(c)
        }

        async fn mutate(&self, g: &mut Gen, name: &str, dir: &Path) -> Result<()> {
            let repo = dir.join(name);
            // Always a committed change a snapshot holds, inside a partial restore's paths.
            std::fs::write(repo.join("app/main.py"), format!("VERSION = {}\n", g.u64()))?;
            let files = tracked(&repo).await?;
            let mut uncommitted = Vec::new();
            for _ in 0..1 + g.below(3) {
                match g.below(7) {
                    0 => {
                        // Stop tracking a file (now ignored); the application rewrites it.
                        let rel = format!("conf/{}", "settings.local");
                        if !files.contains(&rel) {
                            write_random(g, &repo, &rel)?;
                            git(&repo, &["add", "-f", "--", &rel]).await?;
                            commit(&repo, "track settings").await?;
                        }
                        git(&repo, &["rm", "-q", "--cached", "--", &rel]).await?;
                        commit(&repo, "stop tracking settings").await?;
                        std::fs::write(repo.join(&rel), format!("written by the app {}\n", g.u64()))?;
                    }
                    1 => {
                        // A tracked file deleted; an untracked one left in its place.
                        if let Some(rel) = files.get(g.below(files.len())).filter(|r| *r != "app/main.py") {
                            git(&repo, &["rm", "-q", "--", rel]).await?;
                            commit(&repo, "delete").await?;
                            write_random(g, &repo, rel)?;
                        }
                    }
                    2 => {
                        // Uncommitted changes to a tracked file (kept in the stash).
                        if let Some(rel) = files.get(g.below(files.len())) {
                            uncommitted.push(rel.clone());
                        }
                    }
                    3 => {
                        let rel = format!("untracked-{}", g.ident(8));
                        write_random(g, &repo, &rel)?
                    }
                    4 => {
                        let rel = format!("tmp/{}", file_name(g));
                        write_random(g, &repo, &rel)?
                    }
                    _ => {
                        for _ in 0..1 + g.below(3) {
                            let dirpart = *g.pick(&["", "app/", "lib/", "new/"]);
                            let rel = format!("{dirpart}{}", file_name(g));
                            write_random(g, &repo, &rel)?;
                        }
                        commit(&repo, "deploy").await?;
                    }
                }
            }
            commit(&repo, "deploy main").await?;
            for rel in uncommitted {
                if std::fs::symlink_metadata(repo.join(&rel)).is_ok_and(|m| m.is_file()) {
                    std::fs::write(repo.join(&rel), format!("uncommitted {}\n", g.u64()))?;
                }
            }
            Ok(())
        }

        /// What a snapshot holds: the commit and branch (reset), the tree (revert), or
        /// the partial paths' tree entries.
        async fn digest(&self, name: &str, dir: &Path) -> Result<String> {
            let repo = dir.join(name);
            if let Some(p) = partial(dir) {
                return git(&repo, &["ls-tree", "-r", "HEAD", "--", &p]).await;
            }
            if mode(dir) == "revert" {
                return git(&repo, &["rev-parse", "HEAD^{tree}"]).await;
            }
            let id = git(&repo, &["rev-parse", "HEAD"]).await?;
            let branch = git(&repo, &["symbolic-ref", "HEAD"]).await?;
            Ok(format!("{id}{branch}"))
        }

        async fn cleanup(&self, _name: &str, _dir: &Path) {}

        /// Every file of the working tree, tracked or not, as git hashes it.
        async fn inventory(&self, name: &str, dir: &Path) -> Result<Inventory> {
            blobs(&dir.join(name)).await
        }

        async fn lost(&self, name: &str, dir: &Path, before: &Inventory) -> Result<Vec<String>> {
            let repo = dir.join(name);
            // The restored files are what the commit holds.
            let scope: Vec<String> = partial(dir).into_iter().collect();
            let mut args = vec!["status", "--porcelain", "--untracked-files=no", "--"];
            args.extend(scope.iter().map(String::as_str));
            let dirty = git(&repo, &args).await?;
            if !dirty.trim().is_empty() {
                return Err(Error::unexpected(format!("tracked files differ from HEAD after the rollback: {dirty}")));
            }
            let reachable: BTreeSet<String> = git(&repo, &["rev-list", "--objects", "--all", "--reflog"])
                .await?
                .lines()
                .filter_map(|l| l.split(' ').next().map(String::from))
                .collect();
            let now: BTreeSet<String> = blobs(&repo).await?.into_values().collect();
            Ok(before
                .iter()
                .filter(|(_, id)| !reachable.contains(*id) && !now.contains(*id))
                .map(|(path, _)| path.clone())
                .collect())
        }
    }

    /// Cases the generator found: a revert whose checkout ran after HEAD had moved
    /// left a tracked link a regular file (and an untracked file where the snapshot
    /// tracks a link), while the rollback said succeeded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn regressions() {
        run_property(&Repos, &Cases::of(&[7958955049054603978, 5833679380957638813])).await.assert_passed();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn generated_repositories_round_trip_and_lose_no_file() {
        run_property(&Repos, &Cases::from_env(24)).await.assert_passed();
    }
}
