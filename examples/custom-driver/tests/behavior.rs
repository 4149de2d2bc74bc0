//! The `flags` driver against the driver contract, through the test kit: the same
//! trials every built-in driver passes, run from this crate.

use std::path::Path;

use rollback_core::testkit::{async_trait, tree_digest, unique, Fixture, Trial};
use rollback_core::{ComponentConfig, Registry, Result};

/// Trials that fail because of a bug not fixed yet, each with why; empty.
const KNOWN_FAILURES: &[(Trial, &str)] = &[];

struct Flags;

#[async_trait]
impl Fixture for Flags {
    fn driver(&self) -> &str {
        "flags"
    }

    async fn component(&self, name: &str, dir: &Path) -> Result<ComponentConfig> {
        tokio::fs::write(dir.join(format!("{name}.env")), "aggressive_fills=false\n").await?;
        // Relative: the driver resolves it against the stack's directory, `dir`.
        Ok(ComponentConfig::new(name, "flags").option("file", format!("{name}.env")))
    }

    async fn mutate(&self, name: &str, dir: &Path) -> Result<()> {
        let flags = format!("aggressive_fills=true\nrelease={}\n", unique("r"));
        Ok(tokio::fs::write(dir.join(format!("{name}.env")), flags).await?)
    }

    async fn digest(&self, name: &str, dir: &Path) -> Result<String> {
        tree_digest(&dir.join(format!("{name}.env"))).await
    }

    async fn cleanup(&self, _name: &str, _dir: &Path) {}

    fn registry(&self) -> Registry {
        custom_driver::registry()
    }
}

rollback_core::behavior_tests!(Flags, KNOWN_FAILURES);
