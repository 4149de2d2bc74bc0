//! `command`: a state file read by `cat` and written back through stdin.

use std::path::Path;

use rollback_core::testkit::{async_trait, tree_digest, unique, Fixture, Trial};
use rollback_core::{ComponentConfig, Result};

const KNOWN_FAILURES: &[(Trial, &str)] = &[];

struct Command;

#[async_trait]
impl Fixture for Command {
    fn driver(&self) -> &str {
        "command"
    }

    async fn component(&self, name: &str, dir: &Path) -> Result<ComponentConfig> {
        let root = dir.join(name);
        tokio::fs::create_dir_all(&root).await?;
        tokio::fs::write(root.join("state.txt"), "weights=v7\n").await?;
        Ok(ComponentConfig::new(name, "command")
            .option("cwd", root.display().to_string())
            .option("capture", vec!["cat", "state.txt"])
            .option("restore", vec!["sh", "-c", "cat > state.txt.new && mv state.txt.new state.txt"]))
    }

    async fn mutate(&self, name: &str, dir: &Path) -> Result<()> {
        Ok(tokio::fs::write(dir.join(name).join("state.txt"), unique("weights")).await?)
    }

    async fn digest(&self, name: &str, dir: &Path) -> Result<String> {
        tree_digest(&dir.join(name)).await
    }

    async fn cleanup(&self, _name: &str, _dir: &Path) {}
}

rollback_core::behavior_tests!(Command, KNOWN_FAILURES);
