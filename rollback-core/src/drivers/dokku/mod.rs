#![doc = include_str!("docs.md")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest;

use crate::config::{ComponentConfig, DurationValue};
use crate::driver::{Capability, Captured, Context, Drift, Driver, DynDriver};
use crate::error::{Error, ErrorKind, Result};
use crate::registry::DriverEnv;
use crate::secret::Redactor;
use crate::snapshot::Part;

/// Keys of a `dokku` component.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DokkuConfig {
    /// The Dokku app.
    pub app: String,
    /// ssh destination of the Dokku host (`root@paas.example.com`); absent: the local `dokku`.
    #[serde(default)]
    pub host: Option<String>,
    /// The dokku executable (default `dokku`).
    #[serde(default)]
    pub dokku_bin: Option<String>,
    /// The docker executable on the Dokku host, used to pin the image (default `docker`).
    #[serde(default)]
    pub docker_bin: Option<String>,
    /// How long the app may take to be running after the redeploy (default 120 s).
    #[serde(default)]
    pub health_timeout: Option<DurationValue>,
}

/// The `dokku` driver.
#[derive(Debug)]
pub struct DokkuDriver {
    app: String,
    host: Option<String>,
    dokku_bin: String,
    docker_bin: String,
    health_timeout: Duration,
}

pub(crate) fn factory(c: &ComponentConfig, _env: &DriverEnv) -> Result<DynDriver> {
    let cfg: DokkuConfig = c.options.parse()?;
    if cfg.app.is_empty()
        || !cfg.app.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.' || ch == '_')
    {
        return Err(c.options.error("app", "must be a Dokku app name"));
    }
    Ok(Arc::new(DokkuDriver {
        app: cfg.app,
        host: cfg.host.filter(|h| !h.is_empty()),
        dokku_bin: cfg.dokku_bin.unwrap_or_else(|| "dokku".into()),
        docker_bin: cfg.docker_bin.unwrap_or_else(|| "docker".into()),
        health_timeout: cfg.health_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(120)),
    }))
}

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Dokku,
    Docker,
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn config_sha(cfg: &BTreeMap<String, String>) -> String {
    hex::encode(sha2::Sha256::digest(serde_json::to_vec(cfg).unwrap_or_default()))
}

fn b64(s: &str) -> String {
    crate::secret::base64(s.as_bytes())
}

impl DokkuDriver {
    fn where_(&self) -> String {
        self.host.clone().map(|h| format!("on {h}")).unwrap_or_else(|| "locally".into())
    }

    /// Runs `dokku`/`docker` locally or over ssh. `secret_args` are the indices of
    /// arguments never to show (config values); `scrub` redacts output quoted in errors.
    async fn run(&self, ctx: &Context, tool: Tool, args: &[String], scrub: &Redactor) -> Result<String> {
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains('=') && tool == Tool::Dokku {
                    format!("{}=***", a.split('=').next().unwrap_or(""))
                } else {
                    a.clone()
                }
            })
            .collect();
        let shown = format!("{} {}", if tool == Tool::Dokku { "dokku" } else { "docker" }, shown.join(" "));
        tracing::debug!(component = %ctx.component, "{shown}");
        let bin = if tool == Tool::Dokku { &self.dokku_bin } else { &self.docker_bin };
        let mut cmd = match &self.host {
            None => {
                let mut c = tokio::process::Command::new(bin);
                c.args(args);
                c
            }
            Some(host) => {
                // The `dokku` user's ssh forced command is dokku itself; any other user runs it.
                let dokku_user = host.split('@').next() == Some("dokku") && host.contains('@');
                if dokku_user && tool == Tool::Docker {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!("pinning the image needs `docker` on the Dokku host; ssh as a user who can run it, not {host}"),
                    ));
                }
                let mut remote: Vec<String> = Vec::new();
                if !dokku_user {
                    remote.push(sh_quote(bin));
                }
                remote.extend(args.iter().map(|a| sh_quote(a)));
                let mut c = tokio::process::Command::new("ssh");
                c.args(["-o", "BatchMode=yes", "-T", host.as_str(), "--"]).arg(remote.join(" "));
                c
            }
        };
        cmd.stdin(std::process::Stdio::null());
        let spawn_error = |e: std::io::Error| {
            let kind =
                if e.kind() == std::io::ErrorKind::NotFound { ErrorKind::Unreachable } else { ErrorKind::Unexpected };
            Error::new(kind, format!("cannot run `{bin}` {} (set `dokku_bin`/`docker_bin`/`host`)", self.where_()))
        };
        let out = crate::process::output(ctx, cmd, Some(Duration::from_secs(1800))).await.map_err(|e| match e {
            crate::process::RunError::Spawn(e) | crate::process::RunError::Wait(e) => spawn_error(e),
            crate::process::RunError::Timeout => {
                Error::new(ErrorKind::Timeout, format!("`{shown}` did not finish within 30 min"))
            }
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().chain(stdout.lines()).filter(|l| !l.trim().is_empty()).take(6).collect();
            let kind = if self.host.is_some() && out.status.code() == Some(255) {
                ErrorKind::Unreachable
            } else {
                ErrorKind::Unexpected
            };
            let msg = format!("`{shown}` failed {} ({}): {}", self.where_(), out.status, tail.join(" | "));
            return Err(Error::new(kind, ctx.redactor.redact(&scrub.redact(&msg))));
        }
        Ok(stdout)
    }

    async fn dokku(&self, ctx: &Context, args: &[&str], scrub: &Redactor) -> Result<String> {
        let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.run(ctx, Tool::Dokku, &a, scrub).await
    }

    /// The tag that keeps a snapshot's image through Dokku's cleanup after a deploy;
    /// named from the snapshot id, so that a killed capture's tag can be found again.
    fn snapshot_tag(&self, snapshot_id: &str) -> String {
        let snap: String = snapshot_id
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
            .collect();
        format!("dokku/{}:rollback-{snap}", self.app.to_lowercase())
    }

    async fn docker(&self, ctx: &Context, args: &[&str]) -> Result<String> {
        let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.run(ctx, Tool::Docker, &a, &Redactor::default()).await
    }

    fn json_of(out: &str, what: &str) -> Result<Value> {
        let start = out.find(['{', '[']).unwrap_or(0);
        serde_json::from_str(out[start..].trim())
            .map_err(|e| Error::unexpected(format!("`{what}` did not print JSON")).with_source(e))
    }

    /// The image id the app's containers run (`ps:inspect` prints their docker inspect).
    async fn running_image(&self, ctx: &Context) -> Result<Option<String>> {
        let out = self.dokku(ctx, &["ps:inspect", &self.app], &Redactor::default()).await?;
        if out.trim().is_empty() {
            return Ok(None);
        }
        let v = Self::json_of(&out, "dokku ps:inspect")?;
        Ok(v.as_array().and_then(|a| a.iter().find_map(|c| c["Image"].as_str().map(String::from))))
    }

    /// `config:export --format json`, with a redactor knowing its values.
    async fn config(&self, ctx: &Context) -> Result<(BTreeMap<String, String>, Redactor)> {
        let out = self.dokku(ctx, &["config:export", &self.app, "--format", "json"], &Redactor::default()).await?;
        let v = Self::json_of(&out, "dokku config:export").map_err(|e| Error::unexpected(e.message().to_string()))?;
        let map: BTreeMap<String, String> = v
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map(String::from).unwrap_or_else(|| v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Ok((map.clone(), secrets_of(&map)))
    }

    async fn report(&self, ctx: &Context, kind: &str) -> Result<Value> {
        let out = self.dokku(ctx, &[kind, &self.app, "--format", "json"], &Redactor::default()).await?;
        Self::json_of(&out, &format!("dokku {kind}"))
    }

    /// Brings the app's config from `have` to `want` without restarting it (the redeploy
    /// or restart applies it): `config:set` of the keys that differ or are missing, then
    /// `config:unset` of the keys `want` does not have.
    ///
    /// Never `config:clear`: a kill or a dropped ssh connection after it would leave the
    /// app with no config at all. Here each command is one change of Dokku's ENV file,
    /// and whatever is interrupted leaves the app with every captured value, at worst
    /// beside a key the deploy added; the restore run again finishes it. Only values
    /// that change are passed: Dokku's commands take values as arguments only, so
    /// unchanged secrets never appear in a process list or an ssh command line.
    async fn set_config(
        &self,
        ctx: &Context,
        have: &BTreeMap<String, String>,
        want: &BTreeMap<String, String>,
        scrub: &Redactor,
    ) -> Result<()> {
        let set: Vec<String> = want
            .iter()
            .filter(|(k, v)| have.get(*k) != Some(*v))
            // Base64 (`--encoded`) so values with spaces, quotes or newlines survive ssh
            // and the shell untouched.
            .map(|(k, v)| format!("{k}={}", b64(v)))
            .collect();
        if !set.is_empty() {
            let mut args: Vec<String> =
                vec!["config:set".into(), "--encoded".into(), "--no-restart".into(), self.app.clone()];
            args.extend(set);
            self.run(ctx, Tool::Dokku, &args, scrub).await?;
        }
        let unset: Vec<String> = have.keys().filter(|k| !want.contains_key(*k)).cloned().collect();
        if !unset.is_empty() {
            let mut args: Vec<String> = vec!["config:unset".into(), "--no-restart".into(), self.app.clone()];
            args.extend(unset);
            self.run(ctx, Tool::Dokku, &args, scrub).await?;
        }
        Ok(())
    }

    async fn wait_running(&self, ctx: &Context) -> Result<()> {
        let t = Instant::now();
        loop {
            let r = self.report(ctx, "ps:report").await?;
            let yes = |k: &str| matches!(&r[k], Value::Bool(true)) || r[k].as_str() == Some("true");
            if yes("ps-running") || yes("running") {
                return Ok(());
            }
            if t.elapsed() > self.health_timeout {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("app `{}` was not running {}s after the redeploy", self.app, self.health_timeout.as_secs()),
                ));
            }
            ctx.progress(format!("waiting for app `{}` to run", self.app));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn captured(part: &Part) -> Result<(String, String)> {
        let id = part.state["image_id"].as_str();
        let r = part.state["deploy_ref"].as_str();
        match (id, r) {
            (Some(i), Some(r)) => Ok((i.to_string(), r.to_string())),
            _ => Err(Error::new(
                ErrorKind::Corrupt,
                format!("the snapshot part is not a dokku capture (driver `{}`, no `image_id`)", part.driver),
            )),
        }
    }

    fn captured_config(ctx: &Context, part: &Part) -> Result<BTreeMap<String, String>> {
        let a = part
            .artifact("config.json")
            .ok_or_else(|| Error::new(ErrorKind::Corrupt, "the snapshot has no config.json for this app"))?;
        serde_json::from_slice(&ctx.store.read_artifact(a)?)
            .map_err(|_| Error::new(ErrorKind::Corrupt, "the captured config.json cannot be parsed"))
    }

    /// Deployed: the captured image runs, or the last deploy was from the captured
    /// reference (`git:from-image` rebuilds, so the image id changes).
    async fn deployed(&self, ctx: &Context, image_id: &str, deploy_ref: &str) -> Result<bool> {
        if self.running_image(ctx).await?.as_deref() == Some(image_id) {
            return Ok(true);
        }
        let r = self.report(ctx, "apps:report").await?;
        Ok(r["app-deploy-source-metadata"].as_str() == Some(deploy_ref))
    }

    async fn capture_inner(&self, ctx: &Context) -> Result<Captured> {
        let image_id = self.running_image(ctx).await?.ok_or_else(|| {
            Error::not_found(format!("app `{}` has no deployed container {}", self.app, self.where_()))
        })?;
        let apps = self.report(ctx, "apps:report").await?;
        let digests = self.docker(ctx, &["image", "inspect", "--format", "{{json .RepoDigests}}", &image_id]).await?;
        let digests: Vec<String> = serde_json::from_str(digests.trim()).unwrap_or_default();
        let tag = self.snapshot_tag(&ctx.snapshot_id);
        // Dokku deletes old images after each deploy: a tag keeps this one.
        self.docker(ctx, &["image", "tag", &image_id, &tag]).await?;
        // A digest is a reference `git:from-image` has not seen (the same reference again
        // is a no-op); a locally built image has none, and the unique tag serves instead.
        let deploy_ref = digests.first().cloned().unwrap_or_else(|| tag.clone());
        let (cfg, _) = self.config(ctx).await?;
        let bytes = serde_json::to_vec_pretty(&cfg).map_err(|e| Error::unexpected("config").with_source(e))?;
        let art = ctx.store.put_bytes("config.json", &bytes)?;
        Ok(Captured {
            state: json!({
                "app": self.app,
                "image_id": image_id,
                "deploy_ref": deploy_ref,
                "protect_tag": tag,
                "deploy_source": apps["app-deploy-source"],
                "deploy_source_metadata": apps["app-deploy-source-metadata"],
                "config_keys": cfg.keys().collect::<Vec<_>>(),
                "config_sha256": config_sha(&cfg),
            }),
            artifacts: vec![art],
        })
    }

    async fn restore_inner(&self, ctx: &Context, part: &Part) -> Result<()> {
        let (image_id, deploy_ref) = Self::captured(part)?;
        let want = Self::captured_config(ctx, part)?;
        let (have, _) = self.config(ctx).await?;
        let scrub = secrets_of(&want);
        for v in have.values() {
            scrub.add(v);
            scrub.add(&b64(v));
        }
        let image_same = self.deployed(ctx, &image_id, &deploy_ref).await?;
        let config_same = have == want;
        if image_same && config_same {
            ctx.progress(format!("app `{}` already runs the snapshot's image and config", self.app));
            return Ok(());
        }
        if !config_same {
            ctx.progress(format!("restoring the config of `{}` ({} keys)", self.app, want.len()));
            self.set_config(ctx, &have, &want, &scrub).await?;
        }
        let step = async {
            if !image_same {
                ctx.progress(format!("dokku git:from-image {} {deploy_ref}", self.app));
                self.dokku(ctx, &["git:from-image", &self.app, &deploy_ref], &scrub).await?;
            } else {
                self.dokku(ctx, &["ps:restart", &self.app], &scrub).await?;
            }
            self.wait_running(ctx).await
        }
        .await;
        let Err(e) = step else { return Ok(()) };
        let mut note = "Dokku keeps the previous containers when a deploy fails its checks".to_string();
        if !config_same {
            // From what is there now: the set above may have been cut short.
            let now = self.config(ctx).await.map(|(c, _)| c).unwrap_or_else(|_| want.clone());
            note = match self.set_config(ctx, &now, &have, &scrub).await {
                Ok(()) => format!("the previous config was put back; {note}"),
                Err(b) => format!("putting the previous config back failed: {b}"),
            };
        }
        Err(Error::new(e.kind(), scrub.redact(&format!("{}; {note}", e.message()))))
    }

    async fn verify_inner(&self, ctx: &Context, part: &Part) -> Result<Drift> {
        let (image_id, deploy_ref) = Self::captured(part)?;
        let mut d = Vec::new();
        if !self.deployed(ctx, &image_id, &deploy_ref).await? {
            d.push(format!("app `{}` does not run the snapshot's image {deploy_ref}", self.app));
        }
        let want = Self::captured_config(ctx, part)?;
        let (have, _) = self.config(ctx).await?;
        for k in want.keys().chain(have.keys()).collect::<std::collections::BTreeSet<_>>() {
            match (have.get(k), want.get(k)) {
                (Some(a), Some(b)) if a != b => d.push(format!("config {k} differs")),
                (Some(_), None) => d.push(format!("config {k} was added")),
                (None, Some(_)) => d.push(format!("config {k} is missing")),
                _ => {}
            }
        }
        Ok(Drift::from_differences(d))
    }
}

fn secrets_of(cfg: &BTreeMap<String, String>) -> Redactor {
    let r = Redactor::default();
    for v in cfg.values() {
        r.add(v);
        r.add(&b64(v));
    }
    r
}

#[async_trait]
impl Driver for DokkuDriver {
    fn name(&self) -> &str {
        "dokku"
    }

    fn capability(&self) -> Capability {
        Capability { idempotent_restore: true, ..Default::default() }
    }

    async fn capture(&self, ctx: &Context) -> Result<Captured> {
        self.capture_inner(ctx).await
    }

    async fn preflight(&self, ctx: &Context, part: &Part) -> Result<()> {
        let r = async {
            let (_, deploy_ref) = Self::captured(part)?;
            Self::captured_config(ctx, part)?;
            self.docker(ctx, &["image", "inspect", "--format", "{{.Id}}", &deploy_ref]).await.map_err(|e| {
                Error::not_found(format!("image {deploy_ref} is not on the Dokku host any more: {}", e.message()))
            })?;
            Ok(())
        };
        r.await
    }

    async fn restore(&self, ctx: &Context, part: &Part) -> Result<()> {
        self.restore_inner(ctx, part).await
    }

    async fn verify(&self, ctx: &Context, part: &Part) -> Result<Drift> {
        self.verify_inner(ctx, part).await
    }

    async fn release(&self, ctx: &Context, part: &Part) -> Result<()> {
        if let Some(tag) = part.state["protect_tag"].as_str() {
            self.docker(ctx, &["image", "rm", tag]).await?;
        }
        Ok(())
    }

    async fn release_unfinished(&self, ctx: &Context) -> Result<()> {
        if ctx.snapshot_id.is_empty() {
            return Ok(());
        }
        let tag = self.snapshot_tag(&ctx.snapshot_id);
        let r = async {
            if !self.docker(ctx, &["image", "ls", "-q", &tag]).await?.trim().is_empty() {
                self.docker(ctx, &["image", "rm", &tag]).await?;
            }
            Ok(())
        };
        r.await
    }

    fn describe_restore(&self, part: &Part) -> String {
        format!(
            "restore the config of `{}` (config:set and config:unset of the keys that differ, --no-restart), redeploy {} with git:from-image, wait until running",
            self.app,
            part.state["deploy_ref"].as_str().unwrap_or("?")
        )
    }

    async fn check(&self, ctx: &Context) -> Result<String> {
        let img = self.running_image(ctx).await?;
        Ok(format!("dokku app `{}` {}: image {}", self.app, self.where_(), img.unwrap_or_else(|| "none".into())))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(super::b64(""), "");
        assert_eq!(super::b64("f"), "Zg==");
        assert_eq!(super::b64("fo"), "Zm8=");
        assert_eq!(super::b64("foo"), "Zm9v");
        assert_eq!(super::b64("p@ss word\n"), "cEBzcyB3b3JkCg==");
    }

    #[test]
    fn arguments_are_quoted_for_the_remote_shell() {
        assert_eq!(super::sh_quote("a'b"), r"'a'\''b'");
    }
}
