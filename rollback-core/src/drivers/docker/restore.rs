//! Preflight and restore: start a container that is only stopped, recreate one that
//! differs, with the safe swap.

use std::sync::{Arc, Mutex};

use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, Mount, MountTypeEnum, NetworkConnectRequest};
use bollard::query_parameters::{
    CreateContainerOptions, DownloadFromContainerOptions, InspectNetworkOptions, UploadToContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use serde_json::Value;

use crate::driver::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::secret::Redactor;
use crate::snapshot::Part;

use super::spec::{self, is_anonymous_volume};
use super::{aside_name, compare, docker_err, new_name, not_found_err, short_id, DockerDriver, Selector};

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
                    // Its volumes stay: undoing the rollback recreates it with their data.
                    self.remove(&d, &n, false).await?;
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

    /// Copies the data of the snapshot's anonymous volumes into the new container `to`
    /// (created, not started), into the anonymous volumes it has of its own at the same
    /// places: from the replaced container's anonymous volume there (its data is the
    /// latest, as compose carries them on a recreate), else from the captured
    /// container's own volume if it still exists. Mounting the old volume by name
    /// instead would make it a named volume of the new container, which `docker rm -v`
    /// leaves behind. A read-only anonymous volume holds what the image put there,
    /// which the new container's gets too: nothing to copy.
    async fn copy_volumes(
        &self,
        d: &Docker,
        ctx: &Context,
        name: &str,
        to: &str,
        snap: &Value,
        previous: Option<&Value>,
    ) -> Result<()> {
        // A read-only root file system takes no archive at a path outside a volume.
        let read_only_root = snap["HostConfig"]["ReadonlyRootfs"] == true;
        for m in snap["Mounts"].as_array().into_iter().flatten() {
            let vol = m["Name"].as_str().unwrap_or("");
            if m["Type"] != "volume" || !is_anonymous_volume(vol) || m["RW"] == false {
                continue;
            }
            let dest = m["Destination"].as_str().unwrap_or("").to_string();
            let from_previous = previous
                .filter(|p| {
                    p["Mounts"].as_array().into_iter().flatten().any(|x| {
                        x["Destination"].as_str() == Some(dest.as_str())
                            && x["Type"] == "volume"
                            && x["Name"].as_str().is_some_and(is_anonymous_volume)
                    })
                })
                .and_then(|p| p["Id"].as_str());
            let (from, helper) = match from_previous {
                Some(id) => (id.to_string(), None),
                None if self.volume_exists(d, vol).await? => {
                    // A container of its own mounts it, to read it through the engine.
                    let helper = format!("{to}-src");
                    self.remove(d, &helper, true).await?;
                    let body = ContainerCreateBody {
                        image: snap["Image"].as_str().map(String::from),
                        host_config: Some(HostConfig {
                            mounts: Some(vec![Mount {
                                typ: Some(MountTypeEnum::VOLUME),
                                source: Some(vol.to_string()),
                                target: Some(dest.clone()),
                                read_only: Some(true),
                                ..Default::default()
                            }]),
                            ..Default::default()
                        }),
                        ..Default::default()
                    };
                    d.create_container(
                        Some(CreateContainerOptions { name: Some(helper.clone()), platform: String::new() }),
                        body,
                    )
                    .await
                    .map_err(|e| {
                        docker_err(
                            format!("cannot create `{helper}` to read volume {}", short_id(vol)),
                            e,
                            &Redactor::default(),
                        )
                    })?;
                    (helper.clone(), Some(helper))
                }
                None => {
                    ctx.progress(format!(
                        "the anonymous volume at {dest} of `{name}` no longer exists: the new container gets an \
                         empty one"
                    ));
                    continue;
                }
            };
            ctx.progress(format!(
                "copying the data at {dest} of `{name}` (volume {}) into the new container's own volume",
                short_id(vol)
            ));
            let r = copy_path(d, &from, to, &dest, read_only_root).await;
            if let Some(h) = helper {
                // Its anonymous volumes (an image's VOLUMEs) go with it; the one it read is named here.
                self.remove(d, &h, true).await?;
            }
            r?;
        }
        Ok(())
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
    ///
    /// The new container is created under a name of its own (`<name>-rollback-new-…`)
    /// while the old one still runs; then the old one stops, the data of its anonymous
    /// volumes is copied into the new one's, and only then do the names change hands.
    /// A run killed before that leaves the old container in place and a half-made one
    /// this removes; killed after, it leaves the new one in place, whose data is
    /// complete, and the old one aside, removed with its volumes.
    async fn restore_one(&self, d: &Docker, ctx: &Context, part: &Part, c: &Value) -> Result<()> {
        let name = c["name"].as_str().unwrap_or_default().to_string();
        if c["absent"] == true {
            if self.inspect(d, &name).await?.is_some() {
                ctx.progress(format!("removing container `{name}` (absent in the snapshot)"));
                self.stop_one(d, ctx, &name).await?;
                // Its volumes stay: undoing the rollback recreates it with their data.
                self.remove(d, &name, false).await?;
            }
            return Ok(());
        }
        let (snap, image) = Self::load_inspect(ctx, part, c)?;
        let scrub = spec::env_redactor(&snap);
        let image_id = snap["Image"].as_str().unwrap_or_default().to_string();
        let aside = aside_name(&name, &ctx.snapshot_id);
        let fresh = new_name(&name, &ctx.snapshot_id);
        let want_mode = Self::captured_network_mode(&snap, c);
        let want_running = snap["State"]["Running"].as_bool() != Some(false);
        // Made by an interrupted run and never given the name: its copies may be partial.
        self.remove(d, &format!("{fresh}-src"), true).await?;
        self.remove(d, &fresh, true).await?;
        let current = self.inspect(d, &name).await?;

        if let Some(cur) = &current {
            let cur_mode = self.network_mode(d, cur).await?;
            if compare::differences(cur, &snap, &cur_mode, &want_mode).is_empty() {
                // Left aside by an interrupted run that had already put this one in place
                // (with the data of its volumes: the name changes hands after the copy).
                self.remove(d, &aside, true).await?;
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
        // A crash between "rename aside" and "rename the new one" leaves the old one aside:
        // it is the one to put back on failure, and the one whose volumes' data is copied.
        let previous = match &current {
            Some(cur) => Some(cur.clone()),
            None => self.inspect(d, &aside).await?,
        };
        let was_running = current.as_ref().is_none_or(|c| c["State"]["Running"] == true);
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
        let (body, extra_networks) = spec::create_body(&snap, &image, &reference, &want_mode)?;
        let body: ContainerCreateBody = serde_json::from_value(body).map_err(|e| {
            Error::new(ErrorKind::Corrupt, format!("captured config of `{name}` is invalid")).with_source(e)
        })?;

        // Created beside the old one, which still runs.
        let made = async {
            ctx.progress(format!("creating container `{name}` on image {} (as `{fresh}`)", short_id(&image_id)));
            d.create_container(
                Some(CreateContainerOptions { name: Some(fresh.clone()), platform: String::new() }),
                body,
            )
            .await
            .map_err(|e| docker_err(format!("cannot create container `{name}`"), e, &scrub))?;
            crate::failpoint::hit("docker-created");
            for (net, ep) in &extra_networks {
                let ep: EndpointSettings = serde_json::from_value(ep.clone()).unwrap_or_default();
                d.connect_network(
                    net,
                    NetworkConnectRequest { container: Some(fresh.clone()), endpoint_config: Some(ep) },
                )
                .await
                .map_err(|e| docker_err(format!("cannot connect `{name}` to network `{net}`"), e, &scrub))?;
            }
            if current.is_some() {
                self.stop_one(d, ctx, &name).await?;
            }
            self.copy_volumes(d, ctx, &name, &fresh, &snap, previous.as_ref()).await
        }
        .await;
        if let Err(e) = made {
            let e = Error::new(e.kind(), scrub.redact(e.message()));
            let _ = self.remove(d, &fresh, true).await;
            let back = match &current {
                Some(_) if was_running => match self.start_one(d, &name).await {
                    Ok(()) => format!("the container `{name}` was started again, unchanged"),
                    Err(b) => format!("starting the container `{name}` again failed: {b}"),
                },
                Some(_) => format!("the container `{name}` was left as it was"),
                None => "the new container was removed".to_string(),
            };
            return Err(Error::new(e.kind(), format!("{}; {back}", e.message())));
        }

        let old = if current.is_some() {
            self.remove(d, &aside, true).await?;
            self.rename(d, &name, &aside).await?;
            crate::failpoint::hit("docker-set-aside");
            true
        } else {
            previous.is_some()
        };

        let attempt = async {
            self.rename(d, &fresh, &name).await?;
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
                    // With its anonymous volumes: their data is in the new container's.
                    self.remove(d, &aside, true).await?;
                }
                Ok(())
            }
            Err(e) => {
                // Health check output and engine messages may quote env values.
                let e = Error::new(e.kind(), scrub.redact(e.message()));
                ctx.progress(format!("restore of `{name}` failed; putting the previous container back"));
                let _ = self.stop_one(d, ctx, &name).await;
                let _ = self.remove(d, &name, true).await;
                let _ = self.remove(d, &fresh, true).await;
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
                    if was_running {
                        self.start_one(d, &name).await?;
                    }
                    Ok::<(), Error>(())
                }
                .await;
                match back {
                    Ok(()) => Err(Error::new(
                        e.kind(),
                        format!(
                            "{}; the previous container `{name}` was put back{}",
                            e.message(),
                            if was_running { " and started" } else { "" }
                        ),
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

/// Copies what is at `dest` in container `from` to the same place in `to`, through the
/// engine's archive endpoints, streamed: owners, modes and times come along (the
/// archive keeps them, and the engine applies them when it extracts as root).
async fn copy_path(d: &Docker, from: &str, to: &str, dest: &str, read_only_root: bool) -> Result<()> {
    // Extracted at the parent, the archive's top entry puts back the volume's own owner and
    // mode. A read-only root file system takes an archive only inside the volume: its
    // contents then (`dest/.`), and the volume's top directory keeps the engine's mode.
    let parent = std::path::Path::new(dest).parent().map(|p| p.to_string_lossy().to_string());
    let (get, put) = match parent {
        Some(p) if !read_only_root => (dest.to_string(), p),
        _ => (format!("{}/.", dest.trim_end_matches('/')), dest.to_string()),
    };
    let failed: Arc<Mutex<Option<DockerError>>> = Arc::default();
    let f = failed.clone();
    // A failed read fails the upload's body, so the engine never takes a cut archive.
    let tar = d.download_from_container(from, Some(DownloadFromContainerOptions { path: get })).map(move |r| {
        r.map_err(|e| {
            let io = std::io::Error::other(e.to_string());
            *f.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            io
        })
    });
    let up = d
        .upload_to_container(
            to,
            Some(UploadToContainerOptions { path: put, ..Default::default() }),
            bollard::body_try_stream(tar),
        )
        .await;
    // A failed read is the cause of a failed upload: its error is the one to report.
    if let Some(e) = failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(docker_err(format!("cannot read {dest} of the replaced container"), e, &Redactor::default()));
    }
    up.map_err(|e| docker_err(format!("cannot copy {dest} into the new container"), e, &Redactor::default()))
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
