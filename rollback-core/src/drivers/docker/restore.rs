//! Preflight and restore: start a container that is only stopped, recreate one that
//! differs, with the safe swap.

use bollard::models::{ContainerCreateBody, EndpointSettings, NetworkConnectRequest};
use bollard::query_parameters::{CreateContainerOptions, InspectNetworkOptions};
use bollard::Docker;
use serde_json::Value;

use crate::driver::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::secret::Redactor;
use crate::snapshot::Part;

use super::spec::{self, is_anonymous_volume, Carried};
use super::{aside_name, compare, docker_err, not_found_err, short_id, DockerDriver, Selector};

impl DockerDriver {
    pub(crate) async fn preflight_all(&self, ctx: &Context, part: &Part) -> Result<()> {
        let d = self.connect().await?;
        let captured = Self::captured(part)?;
        let names: Vec<&str> = captured.iter().filter_map(|c| c["name"].as_str()).collect();
        for c in &captured {
            if c["absent"] == true {
                continue;
            }
            let name = c["name"].as_str().unwrap_or("");
            let (snap, _) = Self::load_inspect(ctx, part, c)?;
            let id = c["image_id"].as_str().unwrap_or("");
            if self.inspect_image(&d, id).await?.is_none() {
                return Err(Error::not_found(format!(
                    "image {} of container `{name}` is no longer on the engine (tag {} removed?)",
                    short_id(id),
                    c["protect_tag"].as_str().unwrap_or("?")
                )));
            }
            // What a create cannot put back: refused before anything is stopped.
            if let Some(target) = c["network_container"].as_str() {
                if !names.contains(&target) && self.inspect(&d, target).await?.is_none() {
                    return Err(Error::not_found(format!(
                        "container `{name}` shares the network of `{target}`, which no longer exists"
                    )));
                }
            }
            for net in snap["NetworkSettings"]["Networks"].as_object().into_iter().flat_map(|n| n.keys()) {
                if let Err(e) = d.inspect_network(net, None::<InspectNetworkOptions>).await {
                    if not_found_err(&e) {
                        return Err(Error::not_found(format!(
                            "network `{net}` of container `{name}` no longer exists"
                        )));
                    }
                    return Err(docker_err(format!("cannot inspect network `{net}`"), e, &Redactor::default()));
                }
            }
            // The engine creates a missing named volume empty, silently: the data is gone.
            for m in snap["Mounts"].as_array().into_iter().flatten() {
                let vol = m["Name"].as_str().unwrap_or("");
                if m["Type"] == "volume" && !is_anonymous_volume(vol) && !self.volume_exists(&d, vol).await? {
                    return Err(Error::not_found(format!(
                        "volume `{vol}` of container `{name}` (at {}) no longer exists: a restore would mount \
                         an empty one",
                        m["Destination"].as_str().unwrap_or("?")
                    )));
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn restore_all(&self, ctx: &Context, part: &Part) -> Result<()> {
        let d = self.connect().await?;
        let captured = Self::captured(part)?;
        for c in &network_order(&captured) {
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

    async fn volume_exists(&self, d: &Docker, name: &str) -> Result<bool> {
        match d.inspect_volume(name).await {
            Ok(_) => Ok(true),
            Err(e) if not_found_err(&e) => Ok(false),
            Err(e) => Err(docker_err(format!("cannot inspect volume `{name}`"), e, &Redactor::default())),
        }
    }

    /// The anonymous volumes the new container mounts by name where the captured one had
    /// anonymous volumes: the replaced container's (its data is the latest, as compose
    /// carries them on a recreate), else the captured container's own if it still exists.
    async fn carried(
        &self,
        d: &Docker,
        ctx: &Context,
        name: &str,
        snap: &Value,
        previous: Option<&Value>,
    ) -> Result<Vec<Carried>> {
        let mut out = Vec::new();
        for m in snap["Mounts"].as_array().into_iter().flatten() {
            let vol = m["Name"].as_str().unwrap_or("");
            if m["Type"] != "volume" || !is_anonymous_volume(vol) {
                continue;
            }
            let dest = m["Destination"].as_str().unwrap_or("").to_string();
            let from_previous = previous
                .and_then(|p| p["Mounts"].as_array())
                .and_then(|pm| pm.iter().find(|x| x["Destination"].as_str() == Some(dest.as_str())))
                .filter(|x| x["Type"] == "volume")
                .and_then(|x| x["Name"].as_str())
                .filter(|n| is_anonymous_volume(n));
            let volume = match from_previous {
                Some(v) => v.to_string(),
                None if self.volume_exists(d, vol).await? => vol.to_string(),
                None => {
                    ctx.progress(format!(
                        "the anonymous volume at {dest} of `{name}` no longer exists: the new container gets an \
                         empty one"
                    ));
                    continue;
                }
            };
            ctx.progress(format!("keeping volume {} at {dest} of `{name}`", short_id(&volume)));
            out.push(Carried { volume, destination: dest, read_only: m["RW"].as_bool() == Some(false) });
        }
        Ok(out)
    }

    /// A container equal to the snapshot but for running or not: started or stopped,
    /// never recreated (a recreate would lose nothing here, but it is slower and gives
    /// it a new id).
    async fn set_running(&self, d: &Docker, ctx: &Context, name: &str, cur: &Value, want_running: bool) -> Result<()> {
        let running = cur["State"]["Running"] == true;
        match (running, want_running) {
            (true, true) | (false, false) => {
                // A second run, or a resumed one.
                ctx.progress(format!("container `{name}` already is as the snapshot holds it"));
                Ok(())
            }
            (true, false) => self.stop_one(d, ctx, name).await,
            (false, true) => {
                ctx.progress(format!("container `{name}` is stopped and otherwise as captured: starting it"));
                let r = async {
                    self.start_one(d, name).await?;
                    self.wait_ready(d, ctx, name).await
                }
                .await;
                match r {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let back = self.stop_one(d, ctx, name).await;
                        let how = match back {
                            Ok(()) => "it was stopped again, as it was".to_string(),
                            Err(b) => format!("stopping it again also failed: {b}"),
                        };
                        Err(Error::new(e.kind(), format!("{}; {how}", e.message())))
                    }
                }
            }
        }
    }

    /// Puts one container back: started or stopped when only that differs, else
    /// recreated from its captured inspect with the safe swap.
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
        let want_mode = Self::captured_network_mode(&snap, c);
        let want_running = snap["State"]["Running"].as_bool() != Some(false);
        let current = self.inspect(d, &name).await?;

        if let Some(cur) = &current {
            let cur_mode = self.network_mode(d, cur).await?;
            if compare::differences(cur, &snap, &cur_mode, &want_mode).is_empty() {
                // Left aside by an interrupted run that had already put this one in place.
                self.remove(d, &aside).await?;
                return self.set_running(d, ctx, &name, cur, want_running).await;
            }
        }
        if self.inspect_image(d, &image_id).await?.is_none() {
            return Err(Error::not_found(format!(
                "image {} of container `{name}` is gone (was the tag {} removed?); nothing was changed",
                short_id(&image_id),
                c["protect_tag"].as_str().unwrap_or("?")
            )));
        }
        // A crash between "rename aside" and "delete old" leaves the old one aside: it is
        // the one to put back on failure, and the one whose volumes are carried over.
        let previous = match &current {
            Some(cur) => Some(cur.clone()),
            None => self.inspect(d, &aside).await?,
        };
        let carried = self.carried(d, ctx, &name, &snap, previous.as_ref()).await?;
        // The snapshot's image reference (`app:1.4`) while it still names the snapshot's
        // image: the container then reads as it did (`docker ps`, compose, anything that
        // reads Config.Image). A tag the deploy moved names another image: by id then.
        let reference = match snap["Config"]["Image"].as_str() {
            Some(r) if !r.is_empty() && r != image_id => match self.inspect_image(d, r).await? {
                Some(i) if i["Id"].as_str() == Some(image_id.as_str()) => r.to_string(),
                _ => {
                    ctx.progress(format!(
                        "`{r}` now names another image: `{name}` is created on the snapshot's image {}",
                        short_id(&image_id)
                    ));
                    image_id.clone()
                }
            },
            _ => image_id.clone(),
        };
        let (body, extra_networks) = spec::create_body(&snap, &image, &reference, &want_mode, &carried)?;
        let body: ContainerCreateBody = serde_json::from_value(body).map_err(|e| {
            Error::new(ErrorKind::Corrupt, format!("captured config of `{name}` is invalid")).with_source(e)
        })?;

        let old = if current.is_some() {
            self.remove(d, &aside).await?;
            self.stop_one(d, ctx, &name).await?;
            self.rename(d, &name, &aside).await?;
            crate::failpoint::hit("docker-set-aside");
            true
        } else {
            previous.is_some()
        };

        let attempt = async {
            ctx.progress(format!("creating container `{name}` on image {}", short_id(&image_id)));
            d.create_container(
                Some(CreateContainerOptions { name: Some(name.clone()), platform: String::new() }),
                body,
            )
            .await
            .map_err(|e| docker_err(format!("cannot create container `{name}`"), e, &scrub))?;
            crate::failpoint::hit("docker-created");
            for (net, ep) in &extra_networks {
                let ep: EndpointSettings = serde_json::from_value(ep.clone()).unwrap_or_default();
                d.connect_network(
                    net,
                    NetworkConnectRequest { container: Some(name.clone()), endpoint_config: Some(ep) },
                )
                .await
                .map_err(|e| docker_err(format!("cannot connect `{name}` to network `{net}`"), e, &scrub))?;
            }
            if want_running {
                self.start_one(d, &name).await.map_err(|e| e.redacted(&scrub))?;
                self.wait_ready(d, ctx, &name).await?;
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

/// The captured containers, each after the one whose network it shares
/// (`network_mode: container:<app>`): the sidecar is created against the restored app.
fn network_order(captured: &[Value]) -> Vec<Value> {
    let mut left: Vec<Value> = captured.to_vec();
    let mut out: Vec<Value> = Vec::new();
    while !left.is_empty() {
        let ready = |c: &Value| {
            let t = c["network_container"].as_str();
            t.is_none_or(|t| !left.iter().any(|o| o["name"].as_str() == Some(t) && o["name"] != c["name"]))
        };
        // A cycle cannot be created by the engine; take the first one to be sure to end.
        let i = left.iter().position(ready).unwrap_or(0);
        out.push(left.remove(i));
    }
    out
}
