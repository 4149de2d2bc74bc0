//! `docker`: one container per trial from the test images (`scripts/setup-docker.sh`
//! builds `rollback-test/web:{ok,v2}`), with an environment value, a label and a
//! memory limit; a deploy recreates it on the other image with another value and
//! limit. The oracle is the `docker` CLI's inspect of what runs.

use std::path::Path;

use rollback_core::testkit::{async_trait, run, unique, Fixture, Trial};
use rollback_core::{ComponentConfig, Result};

const KNOWN_FAILURES: &[(Trial, &str)] = &[];

struct Docker;

async fn docker(args: &[&str]) -> Result<String> {
    run("docker", args, None).await
}

#[async_trait]
impl Fixture for Docker {
    fn driver(&self) -> &str {
        "docker"
    }

    async fn component(&self, name: &str, _dir: &Path) -> Result<ComponentConfig> {
        docker(&[
            "run",
            "-d",
            "--name",
            name,
            "-e",
            "K=v1",
            "--label",
            "rbt.kit=1",
            "-m",
            "64m",
            "rollback-test/web:ok",
        ])
        .await?;
        // The test images ignore SIGTERM (busybox httpd as PID 1): a short grace, and a
        // short uptime to count as started, keep the trials quick.
        Ok(ComponentConfig::new(name, "docker")
            .option("container", name)
            .option("stop_grace", "1s")
            .option("min_uptime", "1s")
            .option("health_timeout", "30s"))
    }

    async fn mutate(&self, name: &str, _dir: &Path) -> Result<()> {
        docker(&["rm", "-f", name]).await?;
        let env = format!("K={}", unique("v"));
        docker(&["run", "-d", "--name", name, "-e", &env, "-m", "32m", "rollback-test/web:v2"]).await.map(drop)
    }

    async fn digest(&self, name: &str, _dir: &Path) -> Result<String> {
        let format =
            "{{.Config.Image}}|{{.Image}}|{{json .Config.Env}}|{{json .Config.Labels}}|{{.HostConfig.Memory}}|\
                      {{.State.Running}}";
        match docker(&["inspect", "--format", format, name]).await {
            Ok(s) => Ok(s),
            Err(e) if e.to_string().contains("No such object") => Ok("absent".into()),
            Err(e) => Err(e),
        }
    }

    async fn running(&self, name: &str, _dir: &Path) -> Result<Option<bool>> {
        Ok(Some(docker(&["inspect", "--format", "{{.State.Running}}", name]).await?.trim() == "true"))
    }

    async fn cleanup(&self, name: &str, _dir: &Path) {
        // The container, and any copy a restore set aside under a derived name.
        if let Ok(ids) = docker(&["ps", "-aq", "--filter", &format!("name={name}")]).await {
            for id in ids.split_whitespace() {
                let _ = docker(&["rm", "-f", id]).await;
            }
        }
        if let Ok(tags) = docker(&["images", "--format", "{{.Repository}}:{{.Tag}}", &format!("rollback/{name}")]).await
        {
            for t in tags.lines() {
                let _ = docker(&["rmi", t]).await;
            }
        }
    }

    async fn pinned(&self, name: &str, _dir: &Path, snapshot_id: &str) -> Result<Option<usize>> {
        let tag = format!("rollback/{name}:{}", snapshot_id.to_lowercase());
        let tags = docker(&["images", "--format", "{{.Repository}}:{{.Tag}}", &format!("rollback/{name}")]).await?;
        Ok(Some(tags.lines().filter(|t| *t == tag).count()))
    }
}

rollback_core::behavior_tests!(Docker, KNOWN_FAILURES);
