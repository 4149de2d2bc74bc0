//! A driver written outside `rollback-core`: feature flags kept in a key=value
//! file (think of a vendor flag service reached through its API). It shows the
//! whole extension surface: a config read from `rollback.toml`, capture into the
//! store, restore, verify, and registration next to the built-in drivers.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use rollback_core::{
    Capability, Captured, ComponentConfig, Context, Drift, Driver, DriverEnv, DynDriver, Error, ErrorKind, Part,
    Registry, Result,
};

/// The `flags` driver.
#[derive(Debug)]
pub struct FlagsDriver {
    file: PathBuf,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FlagsConfig {
    file: String,
}

/// The factory the registry calls for each `driver = "flags"` component.
pub fn factory(c: &ComponentConfig, env: &DriverEnv) -> Result<DynDriver> {
    let cfg: FlagsConfig = c.options.parse()?;
    Ok(Arc::new(FlagsDriver { file: env.base_dir.join(cfg.file) }))
}

/// The default drivers plus `flags`.
pub fn registry() -> Registry {
    let mut r = Registry::with_default_drivers();
    r.register("flags", factory);
    r
}

#[async_trait]
impl Driver for FlagsDriver {
    fn name(&self) -> &str {
        "flags"
    }

    /// The restore writes the whole file aside and renames it over: run twice, it
    /// ends the same, so `resume` may run it again.
    fn capability(&self) -> Capability {
        Capability { idempotent_restore: true, ..Capability::default() }
    }

    async fn capture(&self, ctx: &Context) -> Result<Captured> {
        let bytes = tokio::fs::read(&self.file).await.map_err(|e| {
            Error::new(ErrorKind::NotFound, format!("cannot read {}", self.file.display())).with_source(e)
        })?;
        let flags = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
        Ok(Captured {
            state: serde_json::json!({ "flags": flags }),
            artifacts: vec![ctx.store.put_bytes("flags", &bytes)?],
        })
    }

    async fn restore(&self, ctx: &Context, part: &Part) -> Result<()> {
        let a = part.artifact("flags").ok_or_else(|| Error::new(ErrorKind::Corrupt, "no flags artifact"))?;
        let bytes = ctx.store.read_artifact(a)?;
        let tmp = self.file.with_extension("rollback-tmp");
        tokio::fs::write(&tmp, &bytes).await?;
        tokio::fs::rename(&tmp, &self.file).await?;
        Ok(())
    }

    async fn verify(&self, ctx: &Context, part: &Part) -> Result<Drift> {
        let a = part.artifact("flags").ok_or_else(|| Error::new(ErrorKind::Corrupt, "no flags artifact"))?;
        let want = ctx.store.read_artifact(a)?;
        let got = tokio::fs::read(&self.file).await.unwrap_or_default();
        Ok(if got == want {
            Drift::equal()
        } else {
            Drift::from_differences(vec![format!("{} differs from the snapshot", self.file.display())])
        })
    }

    fn describe_restore(&self, _part: &Part) -> String {
        format!("write back the flags in {}", self.file.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollback_core::{Action, RollbackOptions, RollbackPlan, Scope, SnapshotOptions, Stack, StackConfig, Status};

    #[tokio::test]
    async fn an_outside_driver_joins_a_plan_with_built_in_ones() {
        let d = tempfile::tempdir().unwrap();
        let d = d.path();
        std::fs::write(d.join("flags.env"), "aggressive_fills=false\n").unwrap();
        std::fs::create_dir(d.join("config")).unwrap();
        std::fs::write(d.join("config/app.json"), "{}").unwrap();
        let toml = r#"
[[component]]
name = "config"
driver = "files"
paths = ["config"]

[[component]]
name = "flags"
driver = "flags"
phase = 2
file = "flags.env"
"#;
        let cfg = StackConfig::from_toml_str(toml, None, d, &|_| None).unwrap();
        // Without the registration the driver is unknown, and the error lists the known ones.
        let e = Stack::new(cfg.clone(), &Registry::with_default_drivers()).unwrap_err();
        assert!(e.to_string().contains("unknown driver `flags`"), "{e}");

        let stack = Stack::new(cfg, &registry()).unwrap();
        let snap = stack.snapshot(SnapshotOptions::default()).await.unwrap();
        std::fs::write(d.join("flags.env"), "aggressive_fills=true\n").unwrap();
        let plan = stack.plan(&snap.id, &Scope::Complete).await.unwrap();
        let first = &plan.steps()[0];
        assert_eq!((first.component.as_str(), first.action), ("flags", Action::Restore));
        let r = stack.rollback(&snap.id, RollbackOptions::default()).await.unwrap();
        assert_eq!(r.status, Status::Succeeded, "{}", r.to_json());
        assert_eq!(std::fs::read_to_string(d.join("flags.env")).unwrap(), "aggressive_fills=false\n");
    }
}
