//! `dokku`, against a MOCK: Dokku cannot run on this machine, so the component is a
//! stand-in `dokku` and `docker` (tests/common/*-standin.sh, shared with
//! tests/dokku.rs) that implement the documented commands over state files. A deploy
//! is a new image built from other code plus a changed secret and an added key; the
//! oracle reads the state files directly: what the running image was built from,
//! and the app's config.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rollback_core::testkit::{async_trait, unique, Fixture, Trial};
use rollback_core::{ComponentConfig, Result};

const KNOWN_FAILURES: &[(Trial, &str)] = &[];

const DOKKU: &str = include_str!("../common/dokku-standin.sh");
const DOCKER: &str = include_str!("../common/docker-standin.sh");

struct Dokku;

async fn write(root: &Path, file: &str, text: &str) -> Result<()> {
    Ok(tokio::fs::write(root.join(file), text).await?)
}

#[async_trait]
impl Fixture for Dokku {
    fn driver(&self) -> &str {
        "dokku"
    }

    async fn component(&self, name: &str, dir: &Path) -> Result<ComponentConfig> {
        let root = dir.join(name);
        tokio::fs::create_dir_all(&root).await?;
        for (file, text) in [("dokku", DOKKU), ("docker", DOCKER)] {
            write(&root, file, text).await?;
            tokio::fs::set_permissions(root.join(file), std::fs::Permissions::from_mode(0o755)).await?;
        }
        let image = unique("sha256:built");
        write(&root, "image", &format!("{image}\n")).await?;
        write(&root, "origin", &unique("code-v1")).await?;
        write(&root, "source", "git-push\n").await?;
        write(&root, "meta", "\n").await?;
        // Built here, so no registry digest: snapshots pin it with a protecting tag.
        write(&root, "digests", "[]\n").await?;
        write(&root, "images", &format!("{image}\n")).await?;
        write(&root, "tags", "").await?;
        write(&root, "config", "DATABASE_URL\tpostgres://shop:pw-v1@db/shop\nMODE\tlive\n").await?;
        write(&root, "argv.log", "").await?;
        Ok(ComponentConfig::new(name, "dokku")
            .option("app", "shop")
            .option("dokku_bin", root.join("dokku").display().to_string())
            .option("docker_bin", root.join("docker").display().to_string()))
    }

    async fn mutate(&self, name: &str, dir: &Path) -> Result<()> {
        let root = dir.join(name);
        let image = unique("sha256:deploy");
        write(&root, "image", &format!("{image}\n")).await?;
        let mut images = tokio::fs::read_to_string(root.join("images")).await?;
        images.push_str(&format!("{image}\n"));
        write(&root, "images", &images).await?;
        write(&root, "origin", &unique("code-deploy")).await?;
        write(&root, "source", "git-push\n").await?;
        write(&root, "meta", "\n").await?;
        let secret = unique("pw");
        write(&root, "config", &format!("DATABASE_URL\tpostgres://shop:{secret}@db/shop\nMODE\tlive\nDEBUG\t1\n")).await
    }

    async fn digest(&self, name: &str, dir: &Path) -> Result<String> {
        let root = dir.join(name);
        let origin = tokio::fs::read_to_string(root.join("origin")).await?;
        let config = tokio::fs::read_to_string(root.join("config")).await?;
        let mut lines: Vec<&str> = config.lines().collect();
        lines.sort_unstable();
        Ok(format!("runs {}; config {}", origin.trim(), lines.join(" | ")))
    }

    async fn cleanup(&self, _name: &str, _dir: &Path) {}

    /// A redeploy loses nothing: the deployed image stays on the host.
    fn mutation_discards(&self) -> bool {
        false
    }

    /// The protecting tags of the snapshot (`dokku/<app>:rollback-<id>`).
    async fn pinned(&self, name: &str, dir: &Path, snapshot_id: &str) -> Result<Option<usize>> {
        let images = tokio::fs::read_to_string(dir.join(name).join("images")).await?;
        let tag = format!(":rollback-{}", snapshot_id.to_lowercase());
        Ok(Some(images.lines().filter(|l| l.ends_with(&tag)).count()))
    }
}

rollback_core::behavior_tests!(Dokku, KNOWN_FAILURES);
