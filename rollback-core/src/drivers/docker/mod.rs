#![doc = include_str!("docs.md")]

mod spec;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, EndpointSettings, NetworkConnectRequest};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions, RemoveImageOptions,
    RenameContainerOptions, StartContainerOptions, StopContainerOptions, TagImageOptions,
};
use bollard::Docker;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{ComponentConfig, DurationValue};
use crate::driver::{Capability, Captured, Context, Drift, Driver, DynDriver};
use crate::error::{Error, ErrorKind, Result};
use crate::registry::DriverEnv;
use crate::secret::Redactor;
use crate::snapshot::Part;

/// Keys of a `docker` component.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// One container, by name.
    #[serde(default)]
    pub container: Option<String>,
    /// Every container carrying this label (`key=value`), e.g. a compose project.
    #[serde(default)]
    pub label: Option<String>,
    /// Engine address: `unix:///var/run/docker.sock` (default), `tcp://host:2375`.
    #[serde(default)]
    pub host: Option<String>,
    /// How long `docker stop` waits after SIGTERM before SIGKILL (default 10 s, Docker's).
    #[serde(default)]
    pub stop_grace: Option<DurationValue>,
    /// How long a recreated container may take to become healthy (default 60 s).
    #[serde(default)]
    pub health_timeout: Option<DurationValue>,
}

/// How the containers of a component are found.
#[derive(Debug, Clone)]
enum Selector {
    Name(String),
    Label(String),
}

/// The `docker` driver.
#[derive(Debug)]
pub struct DockerDriver {
    selector: Selector,
    host: Option<String>,
    stop_grace: Duration,
    health_timeout: Duration,
}

pub(crate) fn factory(c: &ComponentConfig, _env: &DriverEnv) -> Result<DynDriver> {
    let cfg: DockerConfig = c.options.parse()?;
    let selector = match (cfg.container, cfg.label) {
        (Some(n), None) if !n.trim().is_empty() => Selector::Name(n.trim_start_matches('/').to_string()),
        (None, Some(l)) if l.contains('=') && !l.starts_with('=') => Selector::Label(l),
        (None, Some(_)) => return Err(c.options.error("label", "must be `key=value`")),
        (Some(_), Some(_)) => return Err(c.options.error("label", "give either `container` or `label`, not both")),
        _ => return Err(c.options.error("container", "a `docker` component needs `container` (name) or `label`")),
    };
    if let Some(h) = &cfg.host {
        if !(h.starts_with("unix://") || h.starts_with("tcp://") || h.starts_with("http://")) {
            return Err(c
                .options
                .error("host", "must be unix:///path/to/docker.sock, tcp://host:port or http://host:port"));
        }
    }
    Ok(Arc::new(DockerDriver {
        selector,
        host: cfg.host,
        stop_grace: cfg.stop_grace.map(|d| d.0).unwrap_or(Duration::from_secs(10)),
        health_timeout: cfg.health_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(60)),
    }))
}

fn not_found_err(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code: 404, .. })
}

/// Converts an engine error once, at the edge; the message goes through `scrub` so
/// that an env value the engine echoes back never leaves the driver.
fn docker_err(what: impl Into<String>, e: DockerError, scrub: &Redactor) -> Error {
    let kind = match &e {
        DockerError::DockerResponseServerError { status_code: 404, .. } => ErrorKind::NotFound,
        DockerError::RequestTimeoutError => ErrorKind::Timeout,
        DockerError::IOError { .. } | DockerError::HyperResponseError { .. } | DockerError::HyperLegacyError { .. } => {
            ErrorKind::Unreachable
        }
        _ => ErrorKind::Unexpected,
    };
    let msg = scrub.redact(&format!("{}: {e}", what.into()));
    Error::new(kind, msg)
}

/// Docker image references are lowercase `[a-z0-9._-]` path components.
fn sanitize_repo(s: &str) -> String {
    let s: String = s
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' { c } else { '-' })
        .collect();
    let s = s.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string();
    if s.is_empty() {
        "container".into()
    } else {
        s
    }
}

fn sanitize_tag(s: &str) -> String {
    let t: String = s
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' { c } else { '-' })
        .take(128)
        .collect();
    if t.is_empty() || t.starts_with(['.', '-']) {
        format!("s{t}").chars().take(128).collect()
    } else {
        t
    }
}

/// The tag that keeps a snapshot's image from `docker image prune`.
pub(crate) fn protect_tag(container: &str, snapshot_id: &str) -> (String, String) {
    (format!("rollback/{}", sanitize_repo(container)), sanitize_tag(snapshot_id))
}

fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

impl DockerDriver {
    async fn connect(&self) -> Result<Docker> {
        let scrub = Redactor::default();
        let d = match &self.host {
            None => Docker::connect_with_local_defaults(),
            Some(h) if h.starts_with("unix://") => Docker::connect_with_unix(h, 120, bollard::API_DEFAULT_VERSION),
            Some(h) => Docker::connect_with_http(h, 120, bollard::API_DEFAULT_VERSION),
        }
        .map_err(|e| docker_err(format!("cannot connect to the Docker engine at {}", self.where_()), e, &scrub))?;
        // The engine here speaks 1.41; bollard defaults to a newer version the engine refuses.
        d.negotiate_version()
            .await
            .map_err(|e| docker_err(format!("cannot reach the Docker engine at {}", self.where_()), e, &scrub))
    }

    fn where_(&self) -> String {
        self.host.clone().unwrap_or_else(|| "the local socket".into())
    }

    /// Names of the selected containers, sorted.
    async fn select(&self, d: &Docker) -> Result<Vec<String>> {
        let scrub = Redactor::default();
        match &self.selector {
            Selector::Name(n) => match d.inspect_container(n, None::<InspectContainerOptions>).await {
                Ok(_) => Ok(vec![n.clone()]),
                Err(e) if not_found_err(&e) => Err(Error::not_found(format!("container `{n}` does not exist"))),
                Err(e) => Err(docker_err(format!("cannot inspect container `{n}`"), e, &scrub)),
            },
            Selector::Label(l) => {
                let names = self.label_names(d, l).await?;
                if names.is_empty() {
                    return Err(Error::not_found(format!("no container carries the label `{l}`")));
                }
                Ok(names)
            }
        }
    }

    async fn label_names(&self, d: &Docker, label: &str) -> Result<Vec<String>> {
        let filters = HashMap::from([("label".to_string(), vec![label.to_string()])]);
        let list = d
            .list_containers(Some(ListContainersOptions { all: true, filters: Some(filters), ..Default::default() }))
            .await
            .map_err(|e| docker_err("cannot list containers", e, &Redactor::default()))?;
        let mut names: Vec<String> = list
            .into_iter()
            .filter_map(|c| c.names.and_then(|n| n.into_iter().next()))
            .map(|n| n.trim_start_matches('/').to_string())
            // Containers set aside by an interrupted restore are not part of the component.
            .filter(|n| !n.contains(ASIDE_MARK))
            .collect();
        names.sort();
        Ok(names)
    }

    async fn inspect(&self, d: &Docker, name: &str) -> Result<Option<Value>> {
        match d.inspect_container(name, None::<InspectContainerOptions>).await {
            Ok(i) => Ok(Some(serde_json::to_value(i).map_err(|e| Error::unexpected("inspect").with_source(e))?)),
            Err(e) if not_found_err(&e) => Ok(None),
            Err(e) => Err(docker_err(format!("cannot inspect container `{name}`"), e, &Redactor::default())),
        }
    }

    async fn inspect_image(&self, d: &Docker, id: &str) -> Result<Option<Value>> {
        match d.inspect_image(id).await {
            Ok(i) => Ok(Some(serde_json::to_value(i).map_err(|e| Error::unexpected("inspect").with_source(e))?)),
            Err(e) if not_found_err(&e) => Ok(None),
            Err(e) => Err(docker_err(format!("cannot inspect image {}", short_id(id)), e, &Redactor::default())),
        }
    }

    fn grace_secs(&self) -> i32 {
        self.stop_grace.as_secs().min(i32::MAX as u64) as i32
    }

    async fn stop_one(&self, d: &Docker, ctx: &Context, name: &str) -> Result<()> {
        ctx.progress(format!("stopping container `{name}` (grace {}s)", self.grace_secs()));
        match d.stop_container(name, Some(StopContainerOptions { t: Some(self.grace_secs()), signal: None })).await {
            Ok(()) => Ok(()),
            Err(DockerError::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            Err(e) => Err(docker_err(format!("cannot stop container `{name}`"), e, &Redactor::default())),
        }
    }

    async fn start_one(&self, d: &Docker, name: &str) -> Result<()> {
        match d.start_container(name, None::<StartContainerOptions>).await {
            Ok(()) => Ok(()),
            Err(DockerError::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            Err(e) => Err(docker_err(format!("cannot start container `{name}`"), e, &Redactor::default())),
        }
    }

    async fn remove(&self, d: &Docker, name: &str) -> Result<()> {
        match d.remove_container(name, Some(RemoveContainerOptions { force: true, v: false, link: false })).await {
            Ok(()) => Ok(()),
            Err(e) if not_found_err(&e) => Ok(()),
            Err(e) => Err(docker_err(format!("cannot remove container `{name}`"), e, &Redactor::default())),
        }
    }

    async fn rename(&self, d: &Docker, from: &str, to: &str) -> Result<()> {
        d.rename_container(from, RenameContainerOptions { name: to.to_string() })
            .await
            .map_err(|e| docker_err(format!("cannot rename container `{from}` to `{to}`"), e, &Redactor::default()))
    }

    /// Waits until `name` is running and, when it has a Docker healthcheck, healthy.
    async fn wait_healthy(&self, d: &Docker, ctx: &Context, name: &str) -> Result<()> {
        let started = Instant::now();
        let mut last_report = Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let i = self.inspect(d, name).await?.ok_or_else(|| {
                Error::not_found(format!("container `{name}` disappeared while waiting for it to be healthy"))
            })?;
            let state = &i["State"];
            let status = state["Status"].as_str().unwrap_or("");
            let health = state["Health"]["Status"].as_str();
            match (status, health) {
                ("running", None) | ("running", Some("healthy")) => return Ok(()),
                ("exited" | "dead", _) => {
                    return Err(Error::unexpected(format!(
                        "container `{name}` exited (code {}) instead of becoming healthy",
                        state["ExitCode"]
                    )))
                }
                (_, Some("unhealthy")) => {
                    let log = state["Health"]["Log"]
                        .as_array()
                        .and_then(|l| l.last())
                        .map(|l| {
                            format!(
                                " (last check: exit {}, {})",
                                l["ExitCode"],
                                l["Output"].as_str().unwrap_or("").trim()
                            )
                        })
                        .unwrap_or_default();
                    return Err(Error::unexpected(format!("container `{name}` is unhealthy{log}")));
                }
                _ => {}
            }
            if started.elapsed() > self.health_timeout {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "container `{name}` was not healthy within {}s (status {status}, health {})",
                        self.health_timeout.as_secs(),
                        health.unwrap_or("none")
                    ),
                ));
            }
            if last_report.elapsed() > Duration::from_secs(2) {
                ctx.progress(format!(
                    "waiting for `{name}` to be healthy ({}s, health {})",
                    started.elapsed().as_secs(),
                    health.unwrap_or(status)
                ));
                last_report = Instant::now();
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(250));
        }
    }

    async fn capture_one(
        &self,
        d: &Docker,
        ctx: &Context,
        name: &str,
    ) -> Result<(Value, Vec<crate::store::ArtifactRef>)> {
        let inspect = self
            .inspect(d, name)
            .await?
            .ok_or_else(|| Error::not_found(format!("container `{name}` does not exist")))?;
        let image_id = inspect["Image"].as_str().unwrap_or_default().to_string();
        if image_id.is_empty() {
            return Err(Error::unexpected(format!("container `{name}` has no image id")));
        }
        let image = self
            .inspect_image(d, &image_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("image {} of container `{name}` is gone", short_id(&image_id))))?;
        let (repo, tag) = protect_tag(name, &ctx.snapshot_id);
        d.tag_image(&image_id, Some(TagImageOptions { repo: Some(repo.clone()), tag: Some(tag.clone()) }))
            .await
            .map_err(|e| {
                docker_err(format!("cannot tag image {} as {repo}:{tag}", short_id(&image_id)), e, &Redactor::default())
            })?;
        // The inspect holds env values (secrets, often): it goes into the store as an
        // artifact; the manifest only gets a summary without values.
        let doc = json!({ "container": inspect, "image": image });
        let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| Error::unexpected("inspect").with_source(e))?;
        let art = ctx.store.put_bytes(format!("inspect/{name}.json"), &bytes)?;
        let summary = spec::summary(&inspect, &ctx.redactor);
        let mut state = json!({
            "name": name,
            "image_id": image_id,
            "image": inspect["Config"]["Image"],
            "protect_tag": format!("{repo}:{tag}"),
            "running": inspect["State"]["Running"],
            "artifact": art.name,
        });
        if let (Value::Object(s), Value::Object(m)) = (&mut state, summary) {
            s.extend(m);
        }
        Ok((state, vec![art]))
    }

    fn captured(part: &Part) -> Result<Vec<Value>> {
        let list = part.state.get("containers").and_then(|c| c.as_array()).ok_or_else(|| {
            Error::new(
                ErrorKind::Corrupt,
                format!("the snapshot part is not a docker capture (driver `{}`, no `containers`)", part.driver),
            )
        })?;
        Ok(list.clone())
    }

    fn load_inspect(ctx: &Context, part: &Part, c: &Value) -> Result<(Value, Value)> {
        let name = c["name"].as_str().unwrap_or("");
        let art_name = c["artifact"].as_str().unwrap_or("");
        let a = part.artifact(art_name).ok_or_else(|| {
            Error::new(ErrorKind::Corrupt, format!("the snapshot has no inspect artifact for container `{name}`"))
        })?;
        let bytes = ctx.store.read_artifact(a)?;
        let mut doc: Value = serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(ErrorKind::Corrupt, format!("inspect of `{name}` cannot be parsed")).with_source(e)
        })?;
        Ok((doc["container"].take(), doc["image"].take()))
    }

    /// Recreates one container from its captured inspect, with the safe swap.
    async fn restore_one(&self, d: &Docker, ctx: &Context, part: &Part, c: &Value) -> Result<()> {
        let name = c["name"].as_str().unwrap_or_default().to_string();
        if c["absent"] == true {
            if self.inspect(d, &name).await?.is_some() {
                ctx.progress(format!("removing container `{name}` (absent in the snapshot)"));
                self.stop_one(d, ctx, &name).await?;
                self.remove(d, &name).await?;
            }
            return Ok(());
        }
        let (snap, image) = Self::load_inspect(ctx, part, c)?;
        let scrub = spec::env_redactor(&snap);
        let image_id = snap["Image"].as_str().unwrap_or_default().to_string();
        let aside = aside_name(&name, &ctx.snapshot_id);
        let current = self.inspect(d, &name).await?;

        if let Some(cur) = &current {
            if spec::same(cur, &snap).is_empty() && cur["State"]["Running"].as_bool() == Some(true) {
                // Already what the snapshot holds (a second run, or a resumed one).
                self.remove(d, &aside).await?;
                ctx.progress(format!("container `{name}` already runs the snapshot's image and config"));
                return Ok(());
            }
        }
        if self.inspect_image(d, &image_id).await?.is_none() {
            return Err(Error::not_found(format!(
                "image {} of container `{name}` is gone (was the tag {} removed?); nothing was changed",
                short_id(&image_id),
                c["protect_tag"].as_str().unwrap_or("?")
            )));
        }
        let (body, extra_networks) = spec::create_body(&snap, &image, &image_id)?;
        let body: ContainerCreateBody = serde_json::from_value(body).map_err(|e| {
            Error::new(ErrorKind::Corrupt, format!("captured config of `{name}` is invalid")).with_source(e)
        })?;

        // A crash between "rename aside" and "delete old" leaves the old one aside: it is
        // the one to put back on failure.
        let old = if current.is_some() {
            self.remove(d, &aside).await?;
            self.stop_one(d, ctx, &name).await?;
            self.rename(d, &name, &aside).await?;
            true
        } else {
            self.inspect(d, &aside).await?.is_some()
        };

        let attempt = async {
            ctx.progress(format!("creating container `{name}` on image {}", short_id(&image_id)));
            d.create_container(
                Some(CreateContainerOptions { name: Some(name.clone()), platform: String::new() }),
                body,
            )
            .await
            .map_err(|e| docker_err(format!("cannot create container `{name}`"), e, &scrub))?;
            for (net, ep) in &extra_networks {
                let ep: EndpointSettings = serde_json::from_value(ep.clone()).unwrap_or_default();
                d.connect_network(
                    net,
                    NetworkConnectRequest { container: Some(name.clone()), endpoint_config: Some(ep) },
                )
                .await
                .map_err(|e| docker_err(format!("cannot connect `{name}` to network `{net}`"), e, &scrub))?;
            }
            if snap["State"]["Running"].as_bool() != Some(false) {
                self.start_one(d, &name).await.map_err(|e| e.redacted(&scrub))?;
                self.wait_healthy(d, ctx, &name).await?;
            }
            Ok::<(), Error>(())
        }
        .await;

        match attempt {
            Ok(()) => {
                if old {
                    self.remove(d, &aside).await?;
                }
                Ok(())
            }
            Err(e) => {
                // Health check output and engine messages may quote env values.
                let e = Error::new(e.kind(), scrub.redact(e.message()));
                ctx.progress(format!("restore of `{name}` failed; putting the previous container back"));
                let _ = self.stop_one(d, ctx, &name).await;
                let _ = self.remove(d, &name).await;
                if !old {
                    return Err(Error::new(
                        e.kind(),
                        format!(
                            "{}; the new container was removed (there was no previous one to put back)",
                            e.message()
                        ),
                    ));
                }
                let back = async {
                    self.rename(d, &aside, &name).await?;
                    self.start_one(d, &name).await
                }
                .await;
                match back {
                    Ok(()) => Err(Error::new(
                        e.kind(),
                        format!("{}; the previous container `{name}` was put back and started", e.message()),
                    )),
                    Err(b) => Err(Error::unexpected(format!(
                        "{}; putting the previous container back also failed: {b} (it may be named `{aside}`)",
                        e.message()
                    ))),
                }
            }
        }
    }
}

const ASIDE_MARK: &str = "-rollback-aside-";

fn aside_name(name: &str, snapshot_id: &str) -> String {
    let id: String = snapshot_id.chars().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect();
    format!("{name}{ASIDE_MARK}{}", sanitize_tag(&id))
}

#[async_trait]
impl Driver for DockerDriver {
    fn name(&self) -> &str {
        "docker"
    }

    fn capability(&self) -> Capability {
        Capability { lifecycle: true, idempotent_restore: true, ..Default::default() }
    }

    async fn capture(&self, ctx: &Context) -> Result<Captured> {
        self.capture_all(ctx).await.map_err(|e| e.with_component(&ctx.component))
    }

    async fn preflight(&self, ctx: &Context, part: &Part) -> Result<()> {
        self.preflight_all(ctx, part).await.map_err(|e| e.with_component(&ctx.component))
    }

    async fn restore(&self, ctx: &Context, part: &Part) -> Result<()> {
        self.restore_all(ctx, part).await.map_err(|e| e.with_component(&ctx.component))
    }

    async fn verify(&self, ctx: &Context, part: &Part) -> Result<Drift> {
        self.verify_all(ctx, part).await.map_err(|e| e.with_component(&ctx.component))
    }

    async fn stop(&self, ctx: &Context) -> Result<()> {
        self.stop_all(ctx).await.map_err(|e| e.with_component(&ctx.component))
    }

    async fn start(&self, ctx: &Context) -> Result<()> {
        self.start_all(ctx).await.map_err(|e| e.with_component(&ctx.component))
    }

    async fn release(&self, ctx: &Context, part: &Part) -> Result<()> {
        self.release_all(part).await.map_err(|e| e.with_component(&ctx.component))
    }

    fn describe_restore(&self, part: &Part) -> String {
        let list: Vec<String> = part
            .state
            .get("containers")
            .and_then(|c| c.as_array())
            .map(|a| {
                a.iter()
                    .map(|c| {
                        format!(
                            "{} on {}",
                            c["name"].as_str().unwrap_or("?"),
                            short_id(c["image_id"].as_str().unwrap_or("?"))
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "recreate container(s) {} from the captured config (stop grace {}s), wait healthy, remove the replaced one; put it back on failure",
            list.join(", "),
            self.grace_secs()
        )
    }

    async fn check(&self, _ctx: &Context) -> Result<String> {
        let d = self.connect().await?;
        let v = d.version().await.map_err(|e| docker_err("cannot read the engine version", e, &Redactor::default()))?;
        let names = self.select(&d).await?;
        Ok(format!(
            "Docker {} (API {}) at {}: {}",
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default(),
            self.where_(),
            names.join(", ")
        ))
    }
}

impl DockerDriver {
    async fn capture_all(&self, ctx: &Context) -> Result<Captured> {
        let d = self.connect().await?;
        let names = match (self.select(&d).await, &self.selector) {
            // A safety snapshot records "no container" so that undoing a rollback that
            // recreated a removed container removes it again.
            (Err(e), Selector::Name(n)) if ctx.safety && e.kind() == ErrorKind::NotFound => {
                return Ok(Captured {
                    state: json!({ "selector": { "container": n }, "containers": [{ "name": n, "absent": true }] }),
                    artifacts: Vec::new(),
                });
            }
            // Likewise a project whose containers are all gone.
            (Err(e), Selector::Label(l)) if ctx.safety && e.kind() == ErrorKind::NotFound => {
                return Ok(Captured {
                    state: json!({ "selector": { "label": l }, "containers": [] }),
                    artifacts: Vec::new(),
                });
            }
            (r, _) => r?,
        };
        let mut containers = Vec::new();
        let mut artifacts = Vec::new();
        for n in &names {
            let (state, arts) = self.capture_one(&d, ctx, n).await?;
            containers.push(state);
            artifacts.extend(arts);
        }
        let selector = match &self.selector {
            Selector::Name(n) => json!({ "container": n }),
            Selector::Label(l) => json!({ "label": l }),
        };
        Ok(Captured { state: json!({ "selector": selector, "containers": containers }), artifacts })
    }

    async fn preflight_all(&self, ctx: &Context, part: &Part) -> Result<()> {
        let d = self.connect().await?;
        for c in Self::captured(part)? {
            if c["absent"] == true {
                continue;
            }
            let name = c["name"].as_str().unwrap_or("");
            let _ = Self::load_inspect(ctx, part, &c)?;
            let id = c["image_id"].as_str().unwrap_or("");
            if self.inspect_image(&d, id).await?.is_none() {
                return Err(Error::not_found(format!(
                    "image {} of container `{name}` is no longer on the engine (tag {} removed?)",
                    short_id(id),
                    c["protect_tag"].as_str().unwrap_or("?")
                )));
            }
        }
        Ok(())
    }

    async fn restore_all(&self, ctx: &Context, part: &Part) -> Result<()> {
        let d = self.connect().await?;
        let captured = Self::captured(part)?;
        for c in &captured {
            self.restore_one(&d, ctx, part, c).await?;
        }
        if let Selector::Label(l) = &self.selector {
            // Containers the bad deploy added to the project are not in the snapshot.
            let want: Vec<&str> = captured.iter().filter_map(|c| c["name"].as_str()).collect();
            for n in self.label_names(&d, l).await? {
                if !want.contains(&n.as_str()) {
                    ctx.progress(format!("removing container `{n}` (label `{l}`, not in the snapshot)"));
                    self.stop_one(&d, ctx, &n).await?;
                    self.remove(&d, &n).await?;
                }
            }
        }
        Ok(())
    }

    async fn verify_all(&self, ctx: &Context, part: &Part) -> Result<Drift> {
        let d = self.connect().await?;
        let captured = Self::captured(part)?;
        let mut diffs = Vec::new();
        for c in &captured {
            let name = c["name"].as_str().unwrap_or("");
            if c["absent"] == true {
                if self.inspect(&d, name).await?.is_some() {
                    diffs.push(format!("container `{name}` exists, the snapshot has none"));
                }
                continue;
            }
            let (snap, _) = Self::load_inspect(ctx, part, c)?;
            match self.inspect(&d, name).await? {
                None => diffs.push(format!("container `{name}` does not exist")),
                Some(cur) => {
                    if cur["State"]["Running"].as_bool() != snap["State"]["Running"].as_bool() {
                        diffs.push(format!(
                            "container `{name}` is {}, snapshot has it {}",
                            cur["State"]["Status"].as_str().unwrap_or("?"),
                            snap["State"]["Status"].as_str().unwrap_or("?")
                        ));
                    }
                    diffs.extend(spec::same(&cur, &snap).into_iter().map(|d| format!("container `{name}`: {d}")));
                }
            }
        }
        if let Selector::Label(l) = &self.selector {
            let want: Vec<&str> = captured.iter().filter_map(|c| c["name"].as_str()).collect();
            for n in self.label_names(&d, l).await? {
                if !want.contains(&n.as_str()) {
                    diffs.push(format!("container `{n}` carries `{l}` but is not in the snapshot"));
                }
            }
        }
        Ok(Drift::from_differences(diffs))
    }

    async fn stop_all(&self, ctx: &Context) -> Result<()> {
        let d = self.connect().await?;
        for n in self.select(&d).await? {
            self.stop_one(&d, ctx, &n).await?;
        }
        Ok(())
    }

    async fn start_all(&self, ctx: &Context) -> Result<()> {
        let d = self.connect().await?;
        for n in self.select(&d).await? {
            self.start_one(&d, &n).await?;
            self.wait_healthy(&d, ctx, &n).await?;
        }
        Ok(())
    }

    async fn release_all(&self, part: &Part) -> Result<()> {
        let d = self.connect().await?;
        for c in Self::captured(part)? {
            let Some(tag) = c["protect_tag"].as_str() else { continue };
            match d.remove_image(tag, Some(RemoveImageOptions { force: false, noprune: true }), None).await {
                Ok(_) => {}
                Err(e) if not_found_err(&e) => {}
                // 409: a container still uses it and this is its only name; keep it.
                Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => {
                    tracing::info!(tag, "image tag kept: a container still uses it");
                }
                Err(e) => return Err(docker_err(format!("cannot remove image tag {tag}"), e, &Redactor::default())),
            }
        }
        Ok(())
    }
}
