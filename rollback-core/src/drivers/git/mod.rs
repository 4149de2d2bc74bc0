#![doc = include_str!("docs.md")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use git2::{build::CheckoutBuilder, Oid, Repository, Signature, StatusOptions};
use serde::{Deserialize, Serialize};

use super::blocking;
use crate::config::ComponentConfig;
use crate::driver::{Capability, Captured, Context, Discard, Drift, Driver, DynDriver};
use crate::error::{Error, ErrorKind, Result};
use crate::registry::DriverEnv;
use crate::snapshot::Part;

/// How a restore puts the code back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Move the branch back to the captured commit (`git reset --hard`).
    #[default]
    Reset,
    /// Add a commit whose tree is the captured one (history kept, like `git revert`).
    Revert,
}

/// Keys of a `git` component.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitConfig {
    /// The repository's working directory.
    pub repo: String,
    /// `reset` (default) or `revert`.
    #[serde(default)]
    pub mode: Mode,
    /// Restore only these paths (relative to the repository root).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Capture even with uncommitted changes (they are not part of the snapshot).
    #[serde(default)]
    pub allow_dirty: bool,
}

/// The `git` driver.
#[derive(Debug)]
pub struct GitDriver {
    repo: PathBuf,
    mode: Mode,
    paths: Vec<String>,
    allow_dirty: bool,
}

pub(crate) fn factory(c: &ComponentConfig, env: &DriverEnv) -> Result<DynDriver> {
    let cfg: GitConfig = c.options.parse()?;
    for p in &cfg.paths {
        if p.is_empty() || Path::new(p).is_absolute() || p.split('/').any(|s| s == "..") {
            return Err(c.options.error("paths", format!("`{p}` must be a path inside the repository")));
        }
    }
    let repo = Path::new(&cfg.repo);
    let repo = if repo.is_absolute() { repo.to_path_buf() } else { env.base_dir.join(repo) };
    Ok(Arc::new(GitDriver {
        repo,
        mode: cfg.mode,
        paths: cfg.paths.iter().map(|p| p.trim_end_matches('/').to_string()).collect(),
        allow_dirty: cfg.allow_dirty,
    }))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    commit: String,
    tree: String,
    branch: Option<String>,
    tag: String,
    #[serde(default)]
    dirty: bool,
}

fn git_err(what: impl Into<String>) -> impl FnOnce(git2::Error) -> Error {
    let what = what.into();
    move |e| {
        let kind = match e.code() {
            git2::ErrorCode::NotFound => ErrorKind::NotFound,
            git2::ErrorCode::Locked => ErrorKind::Locked,
            _ => ErrorKind::Unexpected,
        };
        Error::new(kind, format!("{what}: {}", e.message()))
    }
}

fn signature(repo: &Repository) -> Signature<'static> {
    repo.signature()
        .map(|s| s.to_owned())
        .or_else(|_| Signature::now("rollback", "rollback@localhost"))
        .expect("a fixed signature is valid")
}

/// Paths with uncommitted changes to tracked files (untracked and ignored files
/// are not part of a commit and are left alone).
fn dirty_paths(repo: &Repository, within: &[String]) -> Result<Vec<String>> {
    let mut opts = StatusOptions::new();
    opts.include_untracked(false).include_ignored(false).exclude_submodules(true);
    for p in within {
        opts.pathspec(p);
    }
    let st = repo.statuses(Some(&mut opts)).map_err(git_err("cannot read the working tree status"))?;
    Ok(st
        .iter()
        .filter(|s| !s.status().is_empty() && !s.status().is_ignored() && !s.status().is_wt_new())
        .filter_map(|s| s.path().map(str::to_string))
        .collect())
}

/// A path as git reports it: bytes, which need not be UTF-8.
fn bytes_path(b: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(b))
}

/// Untracked and ignored files (within `within`) that checking out `target` would
/// overwrite: the target tree has a file or directory at their path, or a file where
/// one of their parent directories is. A file whose content the target already has
/// loses nothing and is left out.
///
/// Why: a forced checkout replaces such files without a word (a `settings.local` the
/// deploy stopped tracking and the application then wrote; an operator's `app.txt`
/// where the old tree has one), and they are in no commit, so nothing could bring
/// them back.
fn overwritten_untracked(repo: &Repository, target: &git2::Tree<'_>, within: &[String]) -> Result<Vec<PathBuf>> {
    let Some(workdir) = repo.workdir() else { return Ok(Vec::new()) };
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .include_ignored(true)
        .recurse_untracked_dirs(true)
        .recurse_ignored_dirs(true)
        .exclude_submodules(true);
    for p in within {
        opts.pathspec(p);
    }
    let st = repo.statuses(Some(&mut opts)).map_err(git_err("cannot read the working tree status"))?;
    let mut out = Vec::new();
    for e in st.iter() {
        let s = e.status();
        if !(s.is_wt_new() || s.is_ignored()) {
            continue;
        }
        let rel = bytes_path(e.path_bytes());
        let under_a_target_file = rel
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
            .any(|a| target.get_path(a).is_ok_and(|t| t.kind() != Some(git2::ObjectType::Tree)));
        let collides = match target.get_path(&rel) {
            Ok(t) => !same_content(repo, &workdir.join(&rel), &t),
            Err(_) => under_a_target_file,
        };
        if collides {
            out.push(rel);
        }
    }
    Ok(out)
}

/// Whether the file at `abs` is what checking out `entry` would write there.
fn same_content(repo: &Repository, abs: &Path, entry: &git2::TreeEntry<'_>) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(abs) else { return false };
    let Ok(obj) = entry.to_object(repo) else { return false };
    let Some(blob) = obj.as_blob() else { return false };
    if entry.filemode() == i32::from(git2::FileMode::Link) {
        use std::os::unix::ffi::OsStrExt;
        return meta.file_type().is_symlink()
            && std::fs::read_link(abs).is_ok_and(|t| t.as_os_str().as_bytes() == blob.content());
    }
    meta.is_file() && meta.len() == blob.size() as u64 && std::fs::read(abs).is_ok_and(|b| b == blob.content())
}

/// Keeps `files` (untracked or ignored, relative to the working tree) in a commit
/// under `refs/rollback/kept/…` before a checkout overwrites them, and returns the
/// ref. Files that have no content to keep (a FIFO, a socket) are returned apart.
fn keep_untracked(repo: &Repository, files: &[PathBuf], why: &str) -> Result<(String, Vec<PathBuf>)> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let workdir = repo.workdir().map(Path::to_path_buf).unwrap_or_default();
    let empty = repo.treebuilder(None).and_then(|b| b.write()).map_err(git_err("cannot make a tree"))?;
    let empty = repo.find_tree(empty).map_err(git_err("cannot make a tree"))?;
    let mut b = git2::build::TreeUpdateBuilder::new();
    let mut contentless = Vec::new();
    for rel in files {
        let abs = workdir.join(rel);
        let meta = std::fs::symlink_metadata(&abs)
            .map_err(|e| Error::unexpected(format!("cannot read {} to keep it", abs.display())).with_source(e))?;
        let (oid, mode) = if meta.file_type().is_symlink() {
            let t = std::fs::read_link(&abs).map_err(|e| {
                Error::unexpected(format!("cannot read link {} to keep it", abs.display())).with_source(e)
            })?;
            (repo.blob(t.as_os_str().as_bytes()).map_err(git_err("cannot keep a link"))?, git2::FileMode::Link)
        } else if meta.is_file() {
            let exec = meta.permissions().mode() & 0o111 != 0;
            let oid = repo.blob_path(&abs).map_err(git_err(format!("cannot keep {}", rel.display())))?;
            (oid, if exec { git2::FileMode::BlobExecutable } else { git2::FileMode::Blob })
        } else {
            contentless.push(rel.clone());
            continue;
        };
        b.upsert(rel, oid, mode);
    }
    let tree = b.create_updated(repo, &empty).map_err(git_err("cannot build the tree of kept files"))?;
    let tree = repo.find_tree(tree).map_err(git_err("cannot read the tree of kept files"))?;
    let sig = signature(repo);
    let head = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = head.iter().collect();
    let msg = format!(
        "rollback: untracked and ignored files {why} would overwrite\n\nBring one back with `git show <this \
         ref>:<path> > <path>`.\n"
    );
    let commit = repo.commit(None, &sig, &sig, &msg, &tree, &parents).map_err(git_err("cannot keep files"))?;
    let name = format!("refs/rollback/kept/{}", crate::snapshot::new_id());
    repo.reference(&name, commit, false, "rollback: kept untracked files")
        .map_err(git_err(format!("cannot create {name}")))?;
    Ok((name, contentless))
}

fn list_paths(paths: &[PathBuf]) -> String {
    list(&paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>())
}

fn list(paths: &[String]) -> String {
    let mut s = paths.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if paths.len() > 5 {
        s.push_str(&format!(" and {} more", paths.len() - 5));
    }
    s
}

/// One git operation per repository at a time in this process: components that
/// share a repository (one per path set) are captured in parallel, and libgit2
/// fails rather than waits on a locked ref or index.
fn repo_lock(path: &Path) -> Arc<std::sync::Mutex<()>> {
    static LOCKS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<PathBuf, Arc<std::sync::Mutex<()>>>>> =
        std::sync::OnceLock::new();
    let mut m = LOCKS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    m.entry(path.to_path_buf()).or_default().clone()
}

impl GitDriver {
    /// Runs `f` on the blocking pool while holding this repository's lock.
    async fn with_repo<T: Send + 'static>(
        &self,
        f: impl FnOnce(&GitDriver) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let me = self.clone_cfg();
        blocking(move || {
            let lock = repo_lock(&me.repo);
            let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
            f(&me)
        })
        .await
    }

    fn open(&self) -> Result<Repository> {
        Repository::open(&self.repo).map_err(|e| {
            Error::new(ErrorKind::NotFound, format!("{} is not a git repository: {}", self.repo.display(), e.message()))
        })
    }

    fn capture_blocking(&self, snapshot_id: &str, safety: bool) -> Result<Captured> {
        let repo = self.open()?;
        let head = repo.head().map_err(git_err("cannot read HEAD (an empty repository?)"))?;
        let commit = head.peel_to_commit().map_err(git_err("HEAD is not a commit"))?;
        let branch = if repo.head_detached().unwrap_or(false) { None } else { head.shorthand().map(str::to_string) };
        let dirty = dirty_paths(&repo, &[])?;
        if !dirty.is_empty() && !self.allow_dirty && !safety {
            return Err(Error::config(format!(
                "{} has uncommitted changes ({}); commit or stash them, or set allow_dirty = true",
                self.repo.display(),
                list(&dirty)
            )));
        }
        // A tag keeps the commit alive through rebases, force-pushes and `git gc`.
        let tag = format!("rollback/{snapshot_id}");
        repo.reference(&format!("refs/tags/{tag}"), commit.id(), true, "rollback snapshot")
            .map_err(git_err(format!("cannot create tag {tag}")))?;
        let st = State {
            commit: commit.id().to_string(),
            tree: commit.tree_id().to_string(),
            branch,
            tag,
            dirty: !dirty.is_empty(),
        };
        Ok(Captured {
            state: serde_json::to_value(&st).map_err(|e| Error::unexpected("state").with_source(e))?,
            artifacts: Vec::new(),
        })
    }

    /// Keeps uncommitted changes in the stash rather than overwriting them.
    fn stash_if_dirty(&self, repo: &mut Repository, snapshot_id: &str, ctx: &Context) -> Result<()> {
        let dirty = dirty_paths(repo, &self.paths)?;
        if dirty.is_empty() {
            return Ok(());
        }
        let sig = signature(repo);
        let msg = format!("rollback {snapshot_id}: uncommitted changes before restore");
        // Only the paths being restored: a partial restore must not sweep unrelated
        // work in progress into the stash.
        if self.paths.is_empty() {
            repo.stash_save(&sig, &msg, None).map_err(git_err("cannot stash uncommitted changes"))?;
        } else {
            // git2 cannot set the message of a pathspec stash: it gets git's "WIP on …".
            // libgit2 refuses a pathspec that matches an unchanged file: name the
            // changed files themselves. KEEP_ALL: libgit2 1.9 resets the *whole*
            // working tree after a pathspec stash, which would throw away unrelated
            // work; the path-limited checkout below overwrites only what was stashed.
            let mut opts = git2::StashSaveOptions::new(sig);
            opts.flags(Some(git2::StashFlags::KEEP_ALL));
            for p in &dirty {
                opts.pathspec(p.as_str());
            }
            repo.stash_save_ext(Some(&mut opts)).map_err(git_err("cannot stash uncommitted changes"))?;
        }
        ctx.progress(format!("kept uncommitted changes to {} in `git stash` ({msg})", list(&dirty)));
        tracing::warn!(component = %ctx.component, "stashed uncommitted changes before restore");
        Ok(())
    }

    fn restore_blocking(&self, st: &State, ctx: &Context) -> Result<()> {
        let mut repo = self.open()?;
        let target = Oid::from_str(&st.commit).map_err(git_err("bad commit id in snapshot"))?;
        if self.verify_repo(&repo, st)?.is_empty() {
            return Ok(()); // already there: restores must be idempotent for `resume`
        }
        let gone = || git_err(format!("commit {} is gone", &st.commit[..12]));
        let want = self.wanted_tree(&repo, &repo.find_commit(target).map_err(gone())?)?;
        // The working tree is checked out first, while HEAD still names what it holds:
        // libgit2 compares the target with HEAD to know what to write, so a checkout
        // after HEAD has moved skips what HEAD and the target agree on, and a file a
        // deploy turned into a link (or an untracked file in the place of a tracked
        // one) stayed as it was. A run killed between the checkout and the move of
        // HEAD left the index and working tree at `want`: stashing them again would
        // stash the restore itself.
        if !self.checked_out(&repo, want)? {
            self.stash_if_dirty(&mut repo, &ctx.snapshot_id, ctx)?;
            let tree = repo.find_tree(want).map_err(git_err("cannot read the tree to restore"))?;
            self.keep_overwritten(&repo, &tree, ctx)?;
            let mut co = CheckoutBuilder::new();
            co.force();
            // A partial restore checks out only its paths: a forced checkout of
            // everything would overwrite uncommitted work elsewhere in the tree.
            for p in &self.paths {
                co.path(p.as_str());
            }
            repo.checkout_tree(tree.as_object(), Some(&mut co)).map_err(git_err("cannot check out the snapshot"))?;
        }
        let commit = repo.find_commit(target).map_err(gone())?;
        if !self.paths.is_empty() {
            return self.commit_paths(&repo, &commit, want, ctx);
        }
        match self.mode {
            Mode::Reset => {
                if let Some(b) = &st.branch {
                    let r = format!("refs/heads/{b}");
                    // HEAD may be on another branch now: commits on the captured branch
                    // since the snapshot would become unreachable. Tag its tip first.
                    if let Ok(tip) = repo.refname_to_id(&r) {
                        let kept_by_target = tip == target || repo.graph_descendant_of(target, tip).unwrap_or(false);
                        if !kept_by_target {
                            let tag = format!("refs/tags/rollback/before-{}", crate::snapshot::new_id());
                            repo.reference(&tag, tip, false, "rollback: previous tip")
                                .map_err(git_err(format!("cannot tag the previous tip of {b}")))?;
                            ctx.progress(format!("previous tip of {b} kept as {}", &tag["refs/tags/".len()..]));
                        }
                    }
                    repo.reference(&r, target, true, "rollback: reset").map_err(git_err(format!("cannot move {b}")))?;
                    repo.set_head(&r).map_err(git_err(format!("cannot check out {b}")))?;
                } else {
                    repo.set_head_detached(target).map_err(git_err("cannot detach HEAD"))?;
                }
            }
            Mode::Revert => {
                let head = repo.head().and_then(|h| h.peel_to_commit()).map_err(git_err("cannot read HEAD"))?;
                if head.tree_id() != commit.tree_id() {
                    let n = count_since(&repo, head.id(), target).unwrap_or(0);
                    let msg = format!(
                        "Revert to {} (rollback snapshot {})\n\nThis reverts the {n} commit(s) since {}.\n",
                        &st.commit[..12],
                        ctx.snapshot_id,
                        &st.commit[..12]
                    );
                    let sig = signature(&repo);
                    let tree = commit.tree().map_err(git_err("cannot read tree"))?;
                    repo.commit(Some("HEAD"), &sig, &sig, &msg, &tree, &[&head])
                        .map_err(git_err("cannot commit the revert"))?;
                }
            }
        }
        Ok(())
    }

    /// The tree the working tree must hold once restored: the snapshot's, or for a
    /// partial restore HEAD's with the snapshot's entries at `paths`.
    fn wanted_tree(&self, repo: &Repository, commit: &git2::Commit<'_>) -> Result<Oid> {
        let snap_tree = commit.tree().map_err(git_err("cannot read snapshot tree"))?;
        if self.paths.is_empty() {
            return Ok(snap_tree.id());
        }
        let head = repo.head().and_then(|h| h.peel_to_commit()).map_err(git_err("cannot read HEAD"))?;
        let head_tree = head.tree().map_err(git_err("cannot read HEAD tree"))?;
        let mut b = git2::build::TreeUpdateBuilder::new();
        for p in &self.paths {
            match snap_tree.get_path(Path::new(p)) {
                Ok(e) => {
                    let mode = match e.filemode() {
                        0o040000 => git2::FileMode::Tree,
                        0o100755 => git2::FileMode::BlobExecutable,
                        0o120000 => git2::FileMode::Link,
                        0o160000 => git2::FileMode::Commit,
                        _ => git2::FileMode::Blob,
                    };
                    b.upsert(p, e.id(), mode);
                }
                Err(_) => {
                    b.remove(p);
                }
            }
        }
        b.create_updated(repo, &head_tree).map_err(git_err("cannot build the restored tree"))
    }

    /// Whether the index holds `want` and the working tree matches the index (in the
    /// restored paths): a checkout of `want` has already run.
    fn checked_out(&self, repo: &Repository, want: Oid) -> Result<bool> {
        let mut index = repo.index().map_err(git_err("cannot read the index"))?;
        if index.write_tree().map_err(git_err("cannot read the index"))? != want {
            return Ok(false);
        }
        let mut opts = StatusOptions::new();
        opts.include_untracked(false).include_ignored(false).exclude_submodules(true);
        for p in &self.paths {
            opts.pathspec(p);
        }
        let st = repo.statuses(Some(&mut opts)).map_err(git_err("cannot read the working tree status"))?;
        let worktree_changed = git2::Status::WT_MODIFIED
            | git2::Status::WT_DELETED
            | git2::Status::WT_TYPECHANGE
            | git2::Status::WT_RENAMED;
        Ok(!st.iter().any(|e| e.status().intersects(worktree_changed)))
    }

    /// Keeps the untracked and ignored files that checking out `tree` would
    /// overwrite (see [`overwritten_untracked`]).
    fn keep_overwritten(&self, repo: &Repository, tree: &git2::Tree<'_>, ctx: &Context) -> Result<()> {
        let files = overwritten_untracked(repo, tree, &self.paths)?;
        if files.is_empty() {
            return Ok(());
        }
        let (name, contentless) =
            keep_untracked(repo, &files, &format!("the rollback to snapshot {}", ctx.snapshot_id))?;
        ctx.progress(format!(
            "kept untracked and ignored files the restore overwrites ({}) in {name}",
            list_paths(&files)
        ));
        if !contentless.is_empty() {
            tracing::warn!(component = %ctx.component, files = %list_paths(&contentless), "special files replaced by the restore");
        }
        Ok(())
    }

    /// Commits the partially restored tree (already checked out) on top of HEAD.
    fn commit_paths(&self, repo: &Repository, commit: &git2::Commit<'_>, want: Oid, ctx: &Context) -> Result<()> {
        let head = repo.head().and_then(|h| h.peel_to_commit()).map_err(git_err("cannot read HEAD"))?;
        if want == head.tree_id() {
            return Ok(());
        }
        let tree = repo.find_tree(want).map_err(git_err("cannot read restored tree"))?;
        let sig = signature(repo);
        let msg = format!(
            "Restore {} to {} (rollback snapshot {})\n",
            self.paths.join(", "),
            &commit.id().to_string()[..12],
            ctx.snapshot_id
        );
        repo.commit(Some("HEAD"), &sig, &sig, &msg, &tree, &[&head]).map_err(git_err("cannot commit the restore"))?;
        Ok(())
    }

    /// Differences between the repository and the snapshot (empty: equal).
    fn verify_repo(&self, repo: &Repository, st: &State) -> Result<Vec<String>> {
        let mut d = Vec::new();
        let head = repo.head().and_then(|h| h.peel_to_commit()).map_err(git_err("cannot read HEAD"))?;
        let short = |s: &str| s[..s.len().min(12)].to_string();
        if self.paths.is_empty() {
            match self.mode {
                Mode::Reset => {
                    if head.id().to_string() != st.commit {
                        d.push(format!(
                            "HEAD is {}, snapshot has {}",
                            short(&head.id().to_string()),
                            short(&st.commit)
                        ));
                    }
                    if let Some(b) = &st.branch {
                        let cur = repo.head().ok().and_then(|h| h.shorthand().map(str::to_string));
                        if repo.head_detached().unwrap_or(false) || cur.as_deref() != Some(b) {
                            d.push(format!(
                                "on {}, snapshot was on branch {b}",
                                cur.unwrap_or_else(|| "detached HEAD".into())
                            ));
                        }
                    }
                }
                Mode::Revert => {
                    if head.tree_id().to_string() != st.tree {
                        d.push(format!("HEAD's tree differs from snapshot commit {}", short(&st.commit)));
                    }
                }
            }
        } else {
            let snap = repo
                .find_commit(Oid::from_str(&st.commit).map_err(git_err("bad commit id"))?)
                .and_then(|c| c.tree())
                .map_err(git_err(format!("commit {} is gone", short(&st.commit))))?;
            let cur = head.tree().map_err(git_err("cannot read HEAD tree"))?;
            for p in &self.paths {
                let a = snap.get_path(Path::new(p)).ok().map(|e| e.id());
                let b = cur.get_path(Path::new(p)).ok().map(|e| e.id());
                if a != b {
                    d.push(format!("{p} differs from the snapshot"));
                }
            }
        }
        let dirty = dirty_paths(repo, &self.paths)?;
        if !dirty.is_empty() {
            d.push(format!("uncommitted changes: {}", list(&dirty)));
        }
        Ok(d)
    }
}

fn count_since(repo: &Repository, head: Oid, base: Oid) -> Result<u64> {
    let mut w = repo.revwalk().map_err(git_err("revwalk"))?;
    w.push(head).map_err(git_err("revwalk"))?;
    w.hide(base).map_err(git_err("revwalk"))?;
    Ok(w.count() as u64)
}

#[async_trait]
impl Driver for GitDriver {
    fn name(&self) -> &str {
        "git"
    }

    fn capability(&self) -> Capability {
        Capability { discard_report: true, perturb: true, idempotent_restore: true, ..Default::default() }
    }

    async fn capture(&self, ctx: &Context) -> Result<Captured> {
        let (id, safety) = (ctx.snapshot_id.clone(), ctx.safety);
        self.with_repo(move |me| me.capture_blocking(&id, safety)).await
    }

    async fn preflight(&self, _ctx: &Context, part: &Part) -> Result<()> {
        let st = part.state_as::<State>()?;
        self.with_repo(move |me| {
            let repo = me.open()?;
            let oid = Oid::from_str(&st.commit).map_err(git_err("bad commit id in snapshot"))?;
            repo.find_commit(oid).map_err(|_| {
                Error::not_found(format!("commit {} is no longer in {}", &st.commit[..12], me.repo.display()))
            })?;
            Ok(())
        })
        .await
    }

    async fn restore(&self, ctx: &Context, part: &Part) -> Result<()> {
        let st = part.state_as::<State>()?;
        let ctx = ctx.clone();
        self.with_repo(move |me| me.restore_blocking(&st, &ctx)).await
    }

    async fn verify(&self, _ctx: &Context, part: &Part) -> Result<Drift> {
        let st = part.state_as::<State>()?;
        self.with_repo(move |me| {
            let repo = me.open()?;
            Ok(Drift::from_differences(me.verify_repo(&repo, &st)?))
        })
        .await
    }

    async fn discards(&self, ctx: &Context, part: &Part) -> Result<Vec<Discard>> {
        let st = part.state_as::<State>()?;
        let component = ctx.component.clone();
        self.with_repo(move |me| {
            let repo = me.open()?;
            // What a reset throws away is on the branch it moves, wherever HEAD is.
            let tip = match &st.branch {
                Some(b) => repo.refname_to_id(&format!("refs/heads/{b}")).ok(),
                None => None,
            };
            let tip = match tip {
                Some(t) => t,
                None => repo.head().and_then(|h| h.peel_to_commit()).map_err(git_err("cannot read HEAD"))?.id(),
            };
            let base = Oid::from_str(&st.commit).map_err(git_err("bad commit id"))?;
            let mut out = Vec::new();
            // Uncommitted work is not in any commit, nor in the safety snapshot (which
            // records commits): the restore moves it to `git stash`. Say so, with
            // where it is, so neither a success nor a compensation hides it.
            let dirty = dirty_paths(&repo, &me.paths)?;
            if !dirty.is_empty() {
                out.push(Discard {
                    component: component.clone(),
                    target: format!(
                        "uncommitted changes to {} (moved to `git stash` by the restore; `git stash pop` brings them \
                         back)",
                        list(&dirty)
                    ),
                    changes: dirty.len() as u64,
                    unit: "files changed".into(),
                    // Not in the safety snapshot, but kept all the same: in the stash.
                    kept_in_safety_snapshot: true,
                    keepable: true,
                });
            }
            let target = repo.find_commit(base).and_then(|c| c.tree()).map_err(git_err("cannot read snapshot tree"))?;
            let over = overwritten_untracked(&repo, &target, &me.paths)?;
            let workdir = repo.workdir().map(Path::to_path_buf).unwrap_or_default();
            let (keepable, contentless): (Vec<PathBuf>, Vec<PathBuf>) = over.into_iter().partition(|p| {
                std::fs::symlink_metadata(workdir.join(p)).is_ok_and(|m| m.is_file() || m.file_type().is_symlink())
            });
            if !keepable.is_empty() {
                out.push(Discard {
                    component: component.clone(),
                    target: format!(
                        "untracked or ignored files the snapshot's tree also has: {} (kept by the restore in a \
                         commit under refs/rollback/kept/)",
                        list_paths(&keepable)
                    ),
                    changes: keepable.len() as u64,
                    unit: "files replaced".into(),
                    kept_in_safety_snapshot: true,
                    keepable: true,
                });
            }
            if !contentless.is_empty() {
                out.push(Discard {
                    component: component.clone(),
                    target: format!(
                        "special files (FIFOs, sockets, devices) where the snapshot's tree has files: {}",
                        list_paths(&contentless)
                    ),
                    changes: contentless.len() as u64,
                    unit: "files replaced".into(),
                    kept_in_safety_snapshot: false,
                    keepable: false,
                });
            }
            // Revert mode and partial restores keep history: nothing is discarded.
            if me.mode == Mode::Reset && me.paths.is_empty() {
                let n = count_since(&repo, tip, base)?;
                if n > 0 {
                    out.push(Discard {
                        component: component.clone(),
                        target: format!("branch {}", st.branch.clone().unwrap_or_else(|| "HEAD".into())),
                        changes: n,
                        unit: "commits".into(),
                        kept_in_safety_snapshot: false,
                        keepable: true,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn perturb(&self, ctx: &Context) -> Result<String> {
        let id = ctx.snapshot_id.clone();
        self.with_repo(move |me| {
            let repo = me.open()?;
            let head = repo.head().and_then(|h| h.peel_to_commit()).map_err(git_err("cannot read HEAD"))?;
            let head_tree = head.tree().map_err(git_err("tree"))?;
            let mut b = git2::build::TreeUpdateBuilder::new();
            // A file in `paths` gets a line appended; a directory (or the whole
            // repository) gets a `.rollback-drill` file.
            let file = me.paths.first().and_then(|p| {
                head_tree
                    .get_path(Path::new(p))
                    .ok()
                    .filter(|e| e.kind() == Some(git2::ObjectType::Blob))
                    .map(|e| (p.clone(), e))
            });
            let rel = match file {
                Some((p, entry)) => {
                    let old = repo.find_blob(entry.id()).map_err(git_err("blob"))?;
                    let mut content = old.content().to_vec();
                    content.extend_from_slice(format!("\n# rollback drill {id}\n").as_bytes());
                    let blob = repo.blob(&content).map_err(git_err("blob"))?;
                    let mode = if entry.filemode() == 0o100755 {
                        git2::FileMode::BlobExecutable
                    } else {
                        git2::FileMode::Blob
                    };
                    b.upsert(&p, blob, mode);
                    p
                }
                None => {
                    let rel = match me.paths.first() {
                        Some(p) => format!("{p}/.rollback-drill"),
                        None => ".rollback-drill".into(),
                    };
                    let blob = repo.blob(format!("rollback drill {id}\n").as_bytes()).map_err(git_err("blob"))?;
                    b.upsert(&rel, blob, git2::FileMode::Blob);
                    rel
                }
            };
            let tree = b.create_updated(&repo, &head_tree).map_err(git_err("tree"))?;
            let tree = repo.find_tree(tree).map_err(git_err("tree"))?;
            let sig = signature(&repo);
            repo.commit(Some("HEAD"), &sig, &sig, &format!("rollback drill {id}"), &tree, &[&head])
                .map_err(git_err("cannot commit the drill change"))?;
            let mut co = CheckoutBuilder::new();
            co.force();
            repo.checkout_head(Some(&mut co)).map_err(git_err("checkout"))?;
            Ok(format!("committed a change to {rel} on top of HEAD"))
        })
        .await
    }

    async fn release(&self, _ctx: &Context, part: &Part) -> Result<()> {
        let st = part.state_as::<State>()?;
        self.with_repo(move |me| {
            let repo = me.open()?;
            if let Ok(mut r) = repo.find_reference(&format!("refs/tags/{}", st.tag)) {
                r.delete().map_err(git_err(format!("cannot delete tag {}", st.tag)))?;
            }
            Ok(())
        })
        .await
    }

    async fn release_unfinished(&self, ctx: &Context) -> Result<()> {
        let tag = format!("refs/tags/rollback/{}", ctx.snapshot_id);
        self.with_repo(move |me| {
            let repo = me.open()?;
            if let Ok(mut r) = repo.find_reference(&tag) {
                r.delete().map_err(git_err(format!("cannot delete tag {tag}")))?;
            }
            Ok(())
        })
        .await
    }

    fn describe_restore(&self, part: &Part) -> String {
        let st = part.state_as::<State>().ok();
        let c = st.as_ref().map(|s| s.commit[..12].to_string()).unwrap_or_default();
        let b = st.and_then(|s| s.branch).unwrap_or_else(|| "HEAD".into());
        if !self.paths.is_empty() {
            format!("restore {} to {c} in a new commit on {b}", self.paths.join(", "))
        } else if self.mode == Mode::Revert {
            format!("commit a revert of {b} to {c} (history kept)")
        } else {
            format!("reset {b} to {c} (git reset --hard; local changes stashed, untracked files it replaces kept)")
        }
    }

    async fn check(&self, _ctx: &Context) -> Result<String> {
        self.with_repo(move |me| {
            let repo = me.open()?;
            let head = repo.head().and_then(|h| h.peel_to_commit()).map_err(git_err("cannot read HEAD"))?;
            Ok(format!("HEAD {}", &head.id().to_string()[..12]))
        })
        .await
    }
}

impl GitDriver {
    fn clone_cfg(&self) -> GitDriver {
        GitDriver { repo: self.repo.clone(), mode: self.mode, paths: self.paths.clone(), allow_dirty: self.allow_dirty }
    }
}
