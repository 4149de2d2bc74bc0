#![doc = include_str!("docs.md")]

mod compare;
mod config;
mod lifecycle;
mod restore;
mod spec;
mod ssh;
mod verify;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptions, ListImagesOptionsBuilder, RemoveContainerOptions,
    RemoveImageOptions, RenameContainerOptions, TagImageOptions,
};
use bollard::Docker;
use serde_json::{json, Value};

use crate::driver::{Capability, Captured, Context, Drift, Driver};
use crate::error::{Error, ErrorKind, Result};
use crate::secret::Redactor;
use crate::snapshot::Part;

pub(crate) use config::factory;
pub use config::DockerConfig;
use config::Selector;

/// The `docker` driver.
#[derive(Debug)]
pub struct DockerDriver {
    selector: Selector,
    host: Option<String>,
    tls: Option<config::EngineTls>,
    /// An `ssh://` host, reached through `tunnel`.
    ssh: Option<ssh::SshEngine>,
    tunnel: tokio::sync::Mutex<Option<ssh::Tunnel>>,
    stop_grace: Duration,
    health_timeout: Duration,
    min_uptime: Duration,
    /// The containers the last `stop` stopped: `start` starts these and no others.
    stopped: Mutex<Option<BTreeSet<String>>>,
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
        let tunneled = match &self.ssh {
            Some(e) => {
                let mut t = self.tunnel.lock().await;
                if !t.as_mut().is_some_and(|t| t.alive()) {
                    *t = Some(ssh::Tunnel::open(e).await?);
                }
                t.as_ref().map(|t| format!("unix://{}", t.socket().display()))
            }
            None => None,
        };
        // An ssh host is reached through its tunnel's socket (and never with TLS).
        let d = match (tunneled.as_deref().or(self.host.as_deref()), &self.tls) {
            (Some(h), Some(t)) => {
                crate::tls::install_provider();
                Docker::connect_with_ssl(h, &t.key, &t.cert, &t.ca, 120, bollard::API_DEFAULT_VERSION)
            }
            (None, _) => Docker::connect_with_local_defaults(),
            (Some(h), None) if h.starts_with("unix://") => {
                Docker::connect_with_unix(h, 120, bollard::API_DEFAULT_VERSION)
            }
            (Some(h), None) => Docker::connect_with_http(h, 120, bollard::API_DEFAULT_VERSION),
        }
        .map_err(|e| docker_err(format!("cannot connect to the Docker engine at {}", self.where_()), e, &scrub))?;
        // The engine here speaks 1.41; bollard defaults to a newer version the engine refuses.
        d.negotiate_version().await.map_err(|e| {
            let what = format!("cannot reach the Docker engine at {}", self.where_());
            match crate::tls::explain(&e) {
                // A certificate does not fix itself between retries: say what is wrong with it.
                Some(why) => Error::new(ErrorKind::Unreachable, format!("{what}: {why}")),
                None => docker_err(what, e, &scrub),
            }
        })
    }

    /// How the connection to the engine is protected, for `check`.
    fn transport(&self) -> String {
        if let Some(e) = &self.ssh {
            return format!("ssh to {} (encrypted by ssh; the engine's socket {} forwarded)", e.dest, e.socket);
        }
        match (&self.host, &self.tls) {
            (Some(_), Some(t)) => {
                format!("TLS: the engine verified against {} and this client's certificate presented", t.ca.display())
            }
            (Some(h), None) if !h.starts_with("unix://") => "NOT encrypted (plain TCP)".into(),
            _ => "local socket".into(),
        }
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
            // Containers set aside or being made by an interrupted restore are not part
            // of the component.
            .filter(|n| !n.contains(ASIDE_MARK) && !n.contains(NEW_MARK))
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

    /// Removes `name` (running or not; gone already is fine). With `volumes`, its
    /// anonymous volumes go with it, as `docker rm -v` does: the engine keeps named
    /// volumes, and any volume another container still mounts.
    async fn remove(&self, d: &Docker, name: &str, volumes: bool) -> Result<()> {
        match d.remove_container(name, Some(RemoveContainerOptions { force: true, v: volumes, link: false })).await {
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
        // `container:<id>` names a container a restore may replace: kept by name.
        let network_container = match inspect["HostConfig"]["NetworkMode"].as_str() {
            Some(m) if m.starts_with("container:") => self.network_mode(d, &inspect).await?,
            _ => String::new(),
        };
        let summary = spec::summary(&inspect, &ctx.redactor);
        let mut state = json!({
            "name": name,
            "image_id": image_id,
            "image": inspect["Config"]["Image"],
            "protect_tag": format!("{repo}:{tag}"),
            "running": inspect["State"]["Running"],
            "artifact": art.name,
        });
        if let Some(target) = network_container.strip_prefix("container:") {
            state["network_container"] = Value::String(target.to_string());
        }
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

    /// The network mode of a container with a `container:<id>` target given by the
    /// target's name (`container:<id>` kept when the target no longer exists).
    async fn network_mode(&self, d: &Docker, i: &Value) -> Result<String> {
        let mode = i["HostConfig"]["NetworkMode"].as_str().unwrap_or("").to_string();
        let Some(target) = mode.strip_prefix("container:") else { return Ok(mode) };
        Ok(match self.inspect(d, target).await? {
            Some(t) => format!("container:{}", t["Name"].as_str().unwrap_or(target).trim_start_matches('/')),
            None => mode,
        })
    }

    /// The network mode the snapshot wants, its `container:` target by the name captured.
    fn captured_network_mode(snap: &Value, c: &Value) -> String {
        match c["network_container"].as_str() {
            Some(t) => format!("container:{t}"),
            None => snap["HostConfig"]["NetworkMode"].as_str().unwrap_or("").to_string(),
        }
    }
}

const ASIDE_MARK: &str = "-rollback-aside-";
const NEW_MARK: &str = "-rollback-new-";

fn aside_name(name: &str, snapshot_id: &str) -> String {
    format!("{name}{ASIDE_MARK}{}", id_tail(snapshot_id))
}

/// The name a restore creates the new container under, until its volumes hold the data.
fn new_name(name: &str, snapshot_id: &str) -> String {
    format!("{name}{NEW_MARK}{}", id_tail(snapshot_id))
}

fn id_tail(snapshot_id: &str) -> String {
    let id: String = snapshot_id.chars().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect();
    sanitize_tag(&id)
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
        self.capture_all(ctx).await
    }

    async fn preflight(&self, ctx: &Context, part: &Part) -> Result<()> {
        self.preflight_all(ctx, part).await
    }

    async fn restore(&self, ctx: &Context, part: &Part) -> Result<()> {
        self.restore_all(ctx, part).await
    }

    async fn verify(&self, ctx: &Context, part: &Part) -> Result<Drift> {
        self.verify_all(ctx, part).await
    }

    async fn stop(&self, ctx: &Context) -> Result<()> {
        self.stop_all(ctx).await
    }

    async fn start(&self, ctx: &Context) -> Result<()> {
        self.start_all(ctx).await
    }

    async fn release(&self, _ctx: &Context, part: &Part) -> Result<()> {
        self.release_all(part).await
    }

    async fn release_unfinished(&self, ctx: &Context) -> Result<()> {
        if ctx.snapshot_id.is_empty() {
            return Ok(());
        }
        // The containers a label selected then may not be the ones it selects now: find
        // the snapshot's tags by the tag itself.
        let (_, tag) = protect_tag("", &ctx.snapshot_id);
        let d = self.connect().await?;
        let filters = HashMap::from([("reference", vec![format!("rollback/*:{tag}")])]);
        let images = d
            .list_images(Some(ListImagesOptionsBuilder::default().filters(&filters).build()))
            .await
            .map_err(|e| docker_err("cannot list images", e, &Redactor::default()))?;
        let suffix = format!(":{tag}");
        for name in images.iter().flat_map(|i| i.repo_tags.iter()) {
            if !(name.starts_with("rollback/") && name.ends_with(&suffix)) {
                continue;
            }
            match d.remove_image(name, Some(RemoveImageOptions { force: false, noprune: true }), None).await {
                Ok(_) => {}
                Err(e) if not_found_err(&e) => {}
                Err(e) => return Err(docker_err(format!("cannot remove image tag {name}"), e, &Redactor::default())),
            }
        }
        Ok(())
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
            "container(s) {}: start one that is only stopped; recreate one that differs from the captured config \
             (stop grace {}, the data of anonymous volumes copied into the new container's own), wait until up, \
             remove the replaced one with its anonymous volumes; put it back on failure",
            list.join(", "),
            humantime::format_duration(self.stop_grace)
        )
    }

    async fn check(&self, _ctx: &Context) -> Result<String> {
        let d = self.connect().await?;
        let v = d.version().await.map_err(|e| docker_err("cannot read the engine version", e, &Redactor::default()))?;
        let names = self.select(&d).await?;
        Ok(format!(
            "Docker {} (API {}) at {} ({}): {}",
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default(),
            self.where_(),
            self.transport(),
            names.join(", ")
        ))
    }

    /// The engine's `RestartCount` over the selected containers: restarts by their
    /// restart policy after the container exited (a crash loop). A `docker restart`
    /// or `docker start` is not counted: the engine sets the count back to 0 then,
    /// which `watch` reads as no restart (checked against Docker 20.10).
    async fn restarts(&self, _ctx: &Context) -> Result<Option<u64>> {
        let d = self.connect().await?;
        let mut total = 0;
        for n in self.select(&d).await? {
            if let Some(i) = self.inspect(&d, &n).await? {
                total += i["RestartCount"].as_u64().unwrap_or(0);
            }
        }
        Ok(Some(total))
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
