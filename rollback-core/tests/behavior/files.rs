//! `files`: a config directory (nested files, a 0600 secret, a relative link) and a
//! configured path that is itself a link into a shared directory; a deploy rewrites
//! a file, adds one, and puts a real file where the link was.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rollback_core::testkit::{async_trait, tree_digest, unique, Fixture, Trial};
use rollback_core::{ComponentConfig, Result};

const KNOWN_FAILURES: &[(Trial, &str)] = &[];

struct Files;

#[async_trait]
impl Fixture for Files {
    fn driver(&self) -> &str {
        "files"
    }

    async fn component(&self, name: &str, dir: &Path) -> Result<ComponentConfig> {
        let root = dir.join(name);
        tokio::fs::create_dir_all(root.join("config/profiles")).await?;
        tokio::fs::create_dir_all(root.join("shared")).await?;
        tokio::fs::write(root.join("config/app.json"), "{\"algo\": \"v1\"}\n").await?;
        tokio::fs::write(root.join("config/profiles/prod.json"), "{\"risk\": 1}\n").await?;
        tokio::fs::write(root.join("config/secret.env"), "TOKEN=x\n").await?;
        tokio::fs::set_permissions(root.join("config/secret.env"), std::fs::Permissions::from_mode(0o600)).await?;
        tokio::fs::symlink("profiles/prod.json", root.join("config/active.json")).await?;
        tokio::fs::write(root.join("shared/site.conf"), "upstream blue;\n").await?;
        tokio::fs::symlink("shared/site.conf", root.join("site.conf")).await?;
        let paths = vec![root.join("config").display().to_string(), root.join("site.conf").display().to_string()];
        Ok(ComponentConfig::new(name, "files").option("paths", paths))
    }

    async fn mutate(&self, name: &str, dir: &Path) -> Result<()> {
        let root = dir.join(name);
        tokio::fs::write(root.join("config/app.json"), format!("{{\"algo\": \"{}\"}}\n", unique("v")).as_bytes())
            .await?;
        tokio::fs::write(root.join(format!("config/profiles/{}.json", unique("new"))), "{}\n").await?;
        // The configured link replaced by a real file, as a deploy that copies does.
        tokio::fs::remove_file(root.join("site.conf")).await?;
        tokio::fs::write(root.join("site.conf"), unique("upstream green")).await?;
        Ok(())
    }

    async fn digest(&self, name: &str, dir: &Path) -> Result<String> {
        tree_digest(&dir.join(name)).await
    }

    async fn cleanup(&self, _name: &str, _dir: &Path) {}
}

rollback_core::behavior_tests!(Files, KNOWN_FAILURES);
