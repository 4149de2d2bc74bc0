//! `releases`: a releases directory and its `current` link; a deploy adds a release
//! and switches the link to it.

use std::path::Path;

use rollback_core::testkit::{async_trait, tree_digest, unique, Fixture, Trial};
use rollback_core::{ComponentConfig, Result};

const KNOWN_FAILURES: &[(Trial, &str)] = &[];

struct Releases;

async fn release(root: &Path, version: &str) -> Result<()> {
    tokio::fs::create_dir_all(root.join(version)).await?;
    tokio::fs::write(root.join(version).join("VERSION"), version).await?;
    // Switched by rename, as deploy tools do: readers never see no link.
    let tmp = root.join(format!(".{}", unique("link")));
    tokio::fs::symlink(version, &tmp).await?;
    tokio::fs::rename(&tmp, root.join("current")).await?;
    Ok(())
}

#[async_trait]
impl Fixture for Releases {
    fn driver(&self) -> &str {
        "releases"
    }

    async fn component(&self, name: &str, dir: &Path) -> Result<ComponentConfig> {
        let root = dir.join(name);
        release(&root, "v0").await?;
        release(&root, "v1").await?;
        Ok(ComponentConfig::new(name, "releases").option("root", root.display().to_string()))
    }

    async fn mutate(&self, name: &str, dir: &Path) -> Result<()> {
        release(&dir.join(name), &unique("v")).await
    }

    async fn digest(&self, name: &str, dir: &Path) -> Result<String> {
        // The link and what it serves; releases added since stay on disk by design.
        let link = dir.join(name).join("current");
        let target = tokio::fs::read_link(&link).await?;
        Ok(format!("{} {}", target.display(), tree_digest(&dir.join(name).join(&target)).await?))
    }

    async fn cleanup(&self, _name: &str, _dir: &Path) {}

    /// The release switched away from stays on disk: a rollback loses nothing.
    fn mutation_discards(&self) -> bool {
        false
    }
}

rollback_core::behavior_tests!(Releases, KNOWN_FAILURES);
