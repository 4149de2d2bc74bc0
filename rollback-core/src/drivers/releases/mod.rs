#![doc = include_str!("docs.md")]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::blocking;
use crate::config::ComponentConfig;
use crate::driver::{Capability, Captured, Context, Discard, Drift, Driver, DynDriver};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::registry::DriverEnv;
use crate::snapshot::Part;

/// Keys of a `releases` component.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleasesConfig {
    /// Directory holding the release dirs and the link.
    pub root: String,
    /// Name of the link inside `root`.
    #[serde(default = "default_link")]
    pub link: String,
}

fn default_link() -> String {
    "current".into()
}

/// The `releases` driver.
#[derive(Debug)]
pub struct ReleasesDriver {
    root: PathBuf,
    link: String,
}

pub(crate) fn factory(c: &ComponentConfig, env: &DriverEnv) -> Result<DynDriver> {
    let cfg: ReleasesConfig = c.options.parse()?;
    if cfg.link.contains('/') || cfg.link.is_empty() || cfg.link == ".." {
        return Err(c.options.error("link", "must be a plain file name inside `root`"));
    }
    let root = Path::new(&cfg.root);
    let root = if root.is_absolute() { root.to_path_buf() } else { env.base_dir.join(root) };
    Ok(Arc::new(ReleasesDriver { root, link: cfg.link }))
}

impl ReleasesDriver {
    /// A driver for `root/link`.
    pub fn new(root: impl Into<PathBuf>, link: impl Into<String>) -> Self {
        ReleasesDriver { root: root.into(), link: link.into() }
    }

    fn link_path(&self) -> PathBuf {
        self.root.join(&self.link)
    }

    fn read_target(&self) -> Result<PathBuf> {
        let p = self.link_path();
        std::fs::read_link(&p).map_err(|e| {
            let kind =
                if e.kind() == std::io::ErrorKind::NotFound { ErrorKind::NotFound } else { ErrorKind::Unexpected };
            Error::new(kind, format!("{} is not a readable symlink", p.display())).with_source(e)
        })
    }

    fn resolve_target(&self, target: &Path) -> PathBuf {
        if target.is_absolute() {
            target.to_path_buf()
        } else {
            self.root.join(target)
        }
    }

    /// What is at the link's place when it is not a link (a release copied over it).
    fn not_a_link(&self) -> Option<std::fs::Metadata> {
        std::fs::symlink_metadata(self.link_path()).ok().filter(|m| !m.file_type().is_symlink())
    }

    /// Where a restore to snapshot `snapshot_id` moves a directory (or file) found
    /// at the link's place: `<link>.aside-<snapshot id>`, with `-2`, `-3`... when taken.
    /// The plan and the restore compute the same name, so the record can give it.
    fn aside_path(&self, snapshot_id: &str) -> PathBuf {
        let base = format!("{}.aside-{}", self.link, if snapshot_id.is_empty() { "restore" } else { snapshot_id });
        let mut p = self.root.join(&base);
        let mut n = 2;
        while std::fs::symlink_metadata(&p).is_ok() {
            p = self.root.join(format!("{base}-{n}"));
            n += 1;
        }
        p
    }

    fn is_aside(&self, name: &std::ffi::OsStr) -> bool {
        name.to_string_lossy().starts_with(&format!("{}.aside-", self.link))
    }

    /// The aside entry of `root` that is the file system object `id`. Only aside
    /// names are looked at: an inode number freed and reused elsewhere must not move
    /// an unrelated directory.
    fn find_by_id(&self, id: &Replaced) -> Result<Option<PathBuf>> {
        let rd = std::fs::read_dir(&self.root).map_err(|e| {
            Error::new(ErrorKind::NotFound, format!("cannot list {}", self.root.display())).with_source(e)
        })?;
        for e in rd.flatten() {
            if !self.is_aside(&e.file_name()) {
                continue;
            }
            let p = e.path();
            if let Ok(m) = std::fs::symlink_metadata(&p) {
                if (m.dev(), m.ino()) == (id.dev, id.ino) {
                    return Ok(Some(p));
                }
            }
        }
        Ok(None)
    }

    /// Moves a directory (or file) that a restore set aside back to the link's place.
    fn restore_replaced(&self, ctx: &Context, r: &Replaced) -> Result<()> {
        let link = self.link_path();
        let here = std::fs::symlink_metadata(&link).ok();
        if here.as_ref().map(|m| (m.dev(), m.ino())) == Some((r.dev, r.ino)) {
            return Ok(());
        }
        let Some(from) = self.find_by_id(r)? else {
            return Err(Error::not_found(format!(
                "the {} that was {} is no longer in {} (a rollback moves it aside as {}.aside-*)",
                if r.is_dir { "directory" } else { "file" },
                link.display(),
                self.root.display(),
                self.link
            )));
        };
        match here {
            Some(m) if m.file_type().is_symlink() => {
                std::fs::remove_file(&link).ctx(|| format!("cannot remove {}", link.display()))?
            }
            Some(_) => {
                return Err(Error::new(
                    ErrorKind::Unexpected,
                    format!(
                        "{} is neither the link nor the directory the snapshot had; {} was left where it is",
                        link.display(),
                        from.display()
                    ),
                ))
            }
            None => {}
        }
        std::fs::rename(&from, &link).ctx(|| format!("cannot move {} back to {}", from.display(), link.display()))?;
        crate::durable::sync_dir(&link);
        ctx.progress(format!("moved {} back to {}", from.display(), link.display()));
        Ok(())
    }
}

/// A directory or file that a safety snapshot found at the link's place. A rename
/// keeps device and inode, so it is found again under its aside name.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Replaced {
    dev: u64,
    ino: u64,
    is_dir: bool,
}

fn replaced_of(part: &Part) -> Result<Option<Replaced>> {
    match part.state.get("replaced") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
            Error::new(ErrorKind::Corrupt, "releases snapshot has an unreadable `replaced`").with_source(e)
        }),
    }
}

/// The captured target; `None` when a safety snapshot found no link.
fn target_of(part: &Part) -> Result<Option<PathBuf>> {
    match part.state.get("target") {
        Some(serde_json::Value::String(s)) => Ok(Some(PathBuf::from(s))),
        Some(serde_json::Value::Null) => Ok(None),
        _ => Err(Error::new(ErrorKind::Corrupt, "releases snapshot has no `target`")),
    }
}

/// Points `link` at `target` atomically: a new link beside it renamed over it.
pub(crate) fn swap_link(link: &Path, target: &Path) -> Result<()> {
    let dir = link.parent().unwrap_or(Path::new("."));
    let name = link.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.rollback-{:08x}", rand::random::<u32>()));
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| {
        Error::new(ErrorKind::Unexpected, format!("cannot create a link in {}", dir.display())).with_source(e)
    })?;
    if let Err(e) = std::fs::rename(&tmp, link) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::new(ErrorKind::Unexpected, format!("cannot swap {}", link.display())).with_source(e));
    }
    crate::durable::sync_dir(link);
    Ok(())
}

#[async_trait]
impl Driver for ReleasesDriver {
    fn name(&self) -> &str {
        "releases"
    }

    fn capability(&self) -> Capability {
        Capability { perturb: true, idempotent_restore: true, discard_report: true, ..Default::default() }
    }

    async fn capture(&self, ctx: &Context) -> Result<Captured> {
        if let Some(m) = self.not_a_link() {
            let what = if m.is_dir() { "a directory" } else { "a file" };
            if !ctx.safety {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "{} is {what}, not a link: there is no release to snapshot (move it aside and point {} at a \
                         release directory)",
                        self.link_path().display(),
                        self.link
                    ),
                ));
            }
            // Undoing a rollback that moved it aside moves it back.
            let r = Replaced { dev: m.dev(), ino: m.ino(), is_dir: m.is_dir() };
            return Ok(Captured { state: serde_json::json!({ "target": null, "replaced": r }), artifacts: Vec::new() });
        }
        let target = match self.read_target() {
            Ok(t) => t,
            // A safety snapshot records the broken state too: restoring it removes the link.
            Err(e) if ctx.safety && e.kind() == ErrorKind::NotFound => {
                return Ok(Captured { state: serde_json::json!({ "target": null }), artifacts: Vec::new() })
            }
            Err(e) => return Err(e),
        };
        let dir = self.resolve_target(&target);
        if !dir.is_dir() && !ctx.safety {
            return Err(Error::not_found(format!(
                "{} points at {}, which is not a directory",
                self.link_path().display(),
                dir.display()
            )));
        }
        let release = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        Ok(Captured { state: serde_json::json!({ "target": target, "release": release }), artifacts: Vec::new() })
    }

    async fn preflight(&self, _ctx: &Context, part: &Part) -> Result<()> {
        if let Some(r) = replaced_of(part)? {
            let here = std::fs::symlink_metadata(self.link_path()).ok().map(|m| (m.dev(), m.ino()));
            if here != Some((r.dev, r.ino)) && self.find_by_id(&r)?.is_none() {
                return Err(Error::not_found(format!(
                    "the directory that was {} is no longer in {} as {}.aside-*",
                    self.link_path().display(),
                    self.root.display(),
                    self.link
                )));
            }
        }
        if let Some(t) = target_of(part)? {
            let dir = self.resolve_target(&t);
            if !dir.is_dir() {
                return Err(Error::not_found(format!("release directory {} is gone", dir.display())));
            }
        }
        if !self.root.is_dir() {
            return Err(Error::not_found(format!("releases root {} does not exist", self.root.display())));
        }
        Ok(())
    }

    async fn restore(&self, ctx: &Context, part: &Part) -> Result<()> {
        if let Some(r) = replaced_of(part)? {
            return self.restore_replaced(ctx, &r);
        }
        let Some(target) = target_of(part)? else {
            let link = self.link_path();
            return match std::fs::remove_file(&link) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(Error::unexpected(format!("cannot remove {}", link.display())).with_source(e))
                }
                _ => Ok(()),
            };
        };
        if self.read_target().ok().as_deref() == Some(target.as_path()) {
            return Ok(());
        }
        if self.not_a_link().is_some() {
            // A rename cannot put a link over a directory; moved aside, nothing in it is
            // lost, and the name is the one the plan and the record give. Between the two
            // renames there is no `link` for an instant.
            let aside = self.aside_path(&ctx.snapshot_id);
            std::fs::rename(self.link_path(), &aside)
                .ctx(|| format!("cannot move {} aside to {}", self.link_path().display(), aside.display()))?;
            ctx.progress(format!("moved {} aside to {} (kept)", self.link_path().display(), aside.display()));
        }
        ctx.progress(format!("{} -> {}", self.link_path().display(), target.display()));
        let link = self.link_path();
        blocking(move || swap_link(&link, &target)).await
    }

    async fn discards(&self, ctx: &Context, part: &Part) -> Result<Vec<Discard>> {
        if target_of(part)?.is_none() {
            return Ok(Vec::new());
        }
        let Some(m) = self.not_a_link() else { return Ok(Vec::new()) };
        let aside = self.aside_path(&ctx.snapshot_id);
        let what = if m.is_dir() { "directory" } else { "file" };
        Ok(vec![Discard {
            component: ctx.component.clone(),
            target: self.link_path().display().to_string(),
            changes: 1,
            unit: format!("{what} in the link's place (moved aside to {}, with everything in it)", aside.display()),
            kept_in_safety_snapshot: false,
            keepable: true,
        }])
    }

    async fn verify(&self, _ctx: &Context, part: &Part) -> Result<Drift> {
        if let Some(r) = replaced_of(part)? {
            let here = std::fs::symlink_metadata(self.link_path()).ok().map(|m| (m.dev(), m.ino()));
            return Ok(if here == Some((r.dev, r.ino)) {
                Drift::equal()
            } else {
                Drift::from_differences(vec![format!(
                    "{} is not the {} that was there at the snapshot",
                    self.link_path().display(),
                    if r.is_dir { "directory" } else { "file" }
                )])
            });
        }
        let Some(want) = target_of(part)? else {
            return Ok(match self.read_target() {
                Err(_) => Drift::equal(),
                Ok(t) => {
                    Drift::from_differences(vec![format!("{} exists (-> {})", self.link_path().display(), t.display())])
                }
            });
        };
        Ok(match self.read_target() {
            Ok(t) if t == want => Drift::equal(),
            Ok(t) => Drift::from_differences(vec![format!(
                "{} points at {}, snapshot has {}",
                self.link_path().display(),
                t.display(),
                want.display()
            )]),
            Err(e) => Drift::from_differences(vec![e.to_string()]),
        })
    }

    async fn perturb(&self, ctx: &Context) -> Result<String> {
        let current = self.resolve_target(&self.read_target()?);
        let mut other = None;
        for e in std::fs::read_dir(&self.root)? {
            let p = e?.path();
            let aside = p.file_name().is_some_and(|n| self.is_aside(n));
            if p.is_dir() && p.file_name() != Some(self.link.as_ref()) && p != current && !p.is_symlink() && !aside {
                other = Some(p);
                break;
            }
        }
        let Some(other) = other else {
            return Ok("only one release directory; link left as it was".into());
        };
        let name = other.file_name().unwrap_or_default().to_owned();
        swap_link(&self.link_path(), Path::new(&name))?;
        ctx.progress(format!("drill: {} -> {}", self.link, name.to_string_lossy()));
        Ok(format!("pointed {} at {}", self.link, name.to_string_lossy()))
    }

    fn describe_restore(&self, part: &Part) -> String {
        if part.state.get("replaced").is_some_and(|v| !v.is_null()) {
            return format!("move the directory set aside back to {}", self.link_path().display());
        }
        if self.not_a_link().is_some() {
            return format!(
                "move the directory at {} aside (named under Discards), then point it at {}",
                self.link_path().display(),
                part.state.get("target").and_then(|v| v.as_str()).unwrap_or("?")
            );
        }
        format!(
            "point {} at {} (atomic symlink swap)",
            self.link_path().display(),
            part.state.get("target").and_then(|v| v.as_str()).unwrap_or("?")
        )
    }

    async fn check(&self, _ctx: &Context) -> Result<String> {
        let t = self.read_target()?;
        Ok(format!("{} -> {}", self.link_path().display(), t.display()))
    }
}
