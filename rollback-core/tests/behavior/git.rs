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
