#![doc = include_str!("docs.md")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use super::blocking;
use crate::config::ComponentConfig;
use crate::driver::{Capability, Captured, Context, Drift, Driver, DynDriver};
use crate::error::{Error, ErrorKind, Result};
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
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[async_trait]
impl Driver for ReleasesDriver {
    fn name(&self) -> &str {
        "releases"
    }

    fn capability(&self) -> Capability {
        Capability { perturb: true, idempotent_restore: true, ..Default::default() }
    }

    async fn capture(&self, ctx: &Context) -> Result<Captured> {
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
        ctx.progress(format!("{} -> {}", self.link_path().display(), target.display()));
        let link = self.link_path();
        blocking(move || swap_link(&link, &target)).await
    }

    async fn verify(&self, _ctx: &Context, part: &Part) -> Result<Drift> {
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
            if p.is_dir() && p.file_name() != Some(self.link.as_ref()) && p != current && !p.is_symlink() {
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
