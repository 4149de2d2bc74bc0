//! `pm2`: a small Node HTTP app per trial under a pm2 daemon of its own (`PM2_HOME`
//! in the trial's directory, killed at cleanup), started from an ecosystem file, with
//! releases and a `current` link; a deploy adds a release, points the link at it,
//! changes a variable in the ecosystem file and reloads. The oracle is `pm2 jlist`
//! and the link. pm2 is the one `scripts/setup-pm2.sh` installs (`ROLLBACK_PM2_BIN`).

use std::path::{Path, PathBuf};

use rollback_core::testkit::{async_trait, unique, Fixture, Trial};
use rollback_core::{ComponentConfig, Result};

const KNOWN_FAILURES: &[(Trial, &str)] = &[];

struct Pm2;

fn pm2_bin() -> String {
    super::setting(
        "ROLLBACK_PM2_BIN",
        &format!("{}/../target/tools/pm2/node_modules/.bin/pm2", env!("CARGO_MANIFEST_DIR")),
    )
}

fn root(name: &str, dir: &Path) -> PathBuf {
    dir.join(name)
}

async fn pm2(name: &str, dir: &Path, args: &[&str]) -> Result<String> {
    let home = root(name, dir).join("pm2");
    let mut c = tokio::process::Command::new(pm2_bin());
    // A deploy user's small environment: pm2 copies the caller's into the app at a
    // start or an `--update-env` reload, and the test runner's is large.
    c.args(args).current_dir(root(name, dir)).env_clear().env("PM2_HOME", &home).stdin(std::process::Stdio::null());
    for k in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(k) {
            c.env(k, v);
        }
    }
    let out = c.output().await?;
    if !out.status.success() {
        return Err(rollback_core::Error::unexpected(format!(
            "pm2 {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A release directory `releases/<v>` whose server answers `<v>`.
async fn release(root: &Path, v: &str) -> Result<()> {
    let d = root.join("releases").join(v);
    tokio::fs::create_dir_all(&d).await?;
    tokio::fs::write(
        d.join("server.js"),
        format!("require('http').createServer((q, s) => s.end('{v}')).listen(process.env.PORT, '127.0.0.1');\n"),
    )
    .await?;
    Ok(())
}

async fn ecosystem(name: &str, root: &Path, port: u16, flavour: &str) -> Result<()> {
    let text = format!(
        "module.exports = {{ apps: [{{ name: '{name}', cwd: '{}', script: 'server.js', exec_mode: 'fork', \
         instances: 1, env: {{ PORT: {port}, FLAVOUR: '{flavour}' }} }}] }};\n",
        root.join("releases/current").display()
    );
    Ok(tokio::fs::write(root.join("ecosystem.config.js"), text).await?)
}

async fn port_of(root: &Path) -> Result<u16> {
    Ok(tokio::fs::read_to_string(root.join("port")).await?.trim().parse().unwrap_or(0))
}

#[async_trait]
impl Fixture for Pm2 {
    fn driver(&self) -> &str {
        "pm2"
    }

    async fn component(&self, name: &str, dir: &Path) -> Result<ComponentConfig> {
        let root = root(name, dir);
        release(&root, "v1").await?;
        tokio::fs::symlink("v1", root.join("releases/current")).await?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        tokio::fs::write(root.join("port"), port.to_string()).await?;
        ecosystem(name, &root, port, "v1").await?;
        pm2(name, dir, &["start", "ecosystem.config.js"]).await?;
        Ok(ComponentConfig::new(name, "pm2")
            .option("app", name)
            .option("ecosystem", root.join("ecosystem.config.js").display().to_string())
            .option("releases", root.join("releases").display().to_string())
            .option("pm2_home", root.join("pm2").display().to_string())
            .option("pm2_bin", pm2_bin()))
    }

    async fn mutate(&self, name: &str, dir: &Path) -> Result<()> {
        let root = root(name, dir);
        let v = unique("v");
        release(&root, &v).await?;
        let tmp = root.join("releases/.current.tmp");
        let _ = tokio::fs::remove_file(&tmp).await;
        tokio::fs::symlink(&v, &tmp).await?;
        tokio::fs::rename(&tmp, root.join("releases/current")).await?;
        ecosystem(name, &root, port_of(&root).await?, &v).await?;
        pm2(name, dir, &["startOrReload", "ecosystem.config.js", "--update-env"]).await.map(drop)
    }

    async fn digest(&self, name: &str, dir: &Path) -> Result<String> {
        let root = root(name, dir);
        let link = tokio::fs::read_link(root.join("releases/current")).await?;
        let list: serde_json::Value =
            serde_json::from_str(pm2(name, dir, &["jlist"]).await?.lines().last().unwrap_or("[]")).unwrap_or_default();
        let mut procs: Vec<String> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["name"] == name)
            .map(|p| {
                let env = &p["pm2_env"]["env"];
                format!(
                    "{} {} {} PORT={} FLAVOUR={}",
                    p["pm2_env"]["status"],
                    p["pm2_env"]["exec_mode"],
                    p["pm2_env"]["pm_exec_path"],
                    env["PORT"],
                    env["FLAVOUR"]
                )
            })
            .collect();
        procs.sort();
        Ok(format!("{} | {}", link.display(), procs.join(" | ")))
    }

    async fn running(&self, name: &str, dir: &Path) -> Result<Option<bool>> {
        let list: serde_json::Value =
            serde_json::from_str(pm2(name, dir, &["jlist"]).await?.lines().last().unwrap_or("[]")).unwrap_or_default();
        let online =
            list.as_array().into_iter().flatten().any(|p| p["name"] == name && p["pm2_env"]["status"] == "online");
        Ok(Some(online))
    }

    async fn cleanup(&self, name: &str, dir: &Path) {
        // This trial's daemon only (never the default ~/.pm2 one).
        let _ = pm2(name, dir, &["kill"]).await;
    }
}

rollback_core::behavior_tests!(Pm2, KNOWN_FAILURES);
