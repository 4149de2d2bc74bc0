//! Stop, start, and the wait for a started container to be up.

use std::time::{Duration, Instant};

use bollard::errors::Error as DockerError;
use bollard::query_parameters::{KillContainerOptions, StartContainerOptions, StopContainerOptions};
use bollard::Docker;
use serde_json::Value;

use crate::driver::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::secret::Redactor;

use super::{docker_err, not_found_err, DockerDriver};

/// What one look at a starting container says.
enum Seen {
    Up,
    Waiting,
    Failed(Error),
}

impl DockerDriver {
    /// The grace in the whole seconds the engine takes, rounded up.
    fn grace_secs(&self) -> i32 {
        let s = self.stop_grace.as_secs() + u64::from(self.stop_grace.subsec_nanos() > 0);
        s.min(i32::MAX as u64) as i32
    }

    /// Stops `name`; a container that is already stopped or gone is left as it is.
    ///
    /// The engine's stop takes its grace in whole seconds. A grace with a fraction of a
    /// second (`500ms`) is kept here: the stop is asked for with the grace rounded up
    /// (the stop signal goes at once, and the engine counts the container as stopped
    /// by hand, so its restart policy does not start it again), and the container is
    /// killed once the exact grace has passed. Truncating it instead gave 0 s: a kill at
    /// once, in the middle of what the service does on its stop signal.
    pub(crate) async fn stop_one(&self, d: &Docker, ctx: &Context, name: &str) -> Result<()> {
        ctx.progress(format!("stopping container `{name}` (grace {})", humantime::format_duration(self.stop_grace)));
        let stop = d.stop_container(name, Some(StopContainerOptions { t: Some(self.grace_secs()), signal: None }));
        let r = if self.stop_grace.subsec_nanos() == 0 {
            stop.await
        } else {
            tokio::pin!(stop);
            tokio::select! {
                r = &mut stop => r,
                _ = tokio::time::sleep(self.stop_grace) => {
                    let kill = KillContainerOptions { signal: "SIGKILL".into() };
                    match d.kill_container(name, Some(kill)).await {
                        // 409: it ended in the meantime.
                        Ok(()) | Err(DockerError::DockerResponseServerError { status_code: 404 | 409, .. }) => {}
                        Err(e) => tracing::warn!(container = name, error = %e, "kill after the stop grace failed"),
                    }
                    stop.await
                }
            }
        };
        match r {
            Ok(()) => Ok(()),
            Err(DockerError::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            Err(e) if not_found_err(&e) => {
                ctx.progress(format!("container `{name}` does not exist: nothing to stop"));
                Ok(())
            }
            Err(e) => Err(docker_err(format!("cannot stop container `{name}`"), e, &Redactor::default())),
        }
    }

    pub(crate) async fn start_one(&self, d: &Docker, name: &str) -> Result<()> {
        match d.start_container(name, None::<StartContainerOptions>).await {
            Ok(()) => Ok(()),
            Err(DockerError::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            Err(e) => Err(docker_err(format!("cannot start container `{name}`"), e, &Redactor::default())),
        }
    }

    /// The selected containers; none when they are gone, with a note. The planner stops
    /// and starts a dependent around the restore of what it depends on: a dependent that
    /// no longer exists has nothing to stop, and must not block that restore.
    async fn select_present(&self, d: &Docker, ctx: &Context, doing: &str) -> Result<Vec<String>> {
        match self.select(d).await {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                ctx.progress(format!("{}: nothing to {doing}", e.message()));
                Ok(Vec::new())
            }
            r => r,
        }
    }

    /// Stops the running containers of the component and remembers which, so that
    /// `start` starts those and no others (a finished one-shot job stays finished).
    pub(crate) async fn stop_all(&self, ctx: &Context) -> Result<()> {
        let d = self.connect().await?;
        // Added to what an earlier stop stopped and no start has started yet: a second
        // stop finds them stopped, and must not make `start` forget them.
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default();
        for n in self.select_present(&d, ctx, "stop").await? {
            let Some(i) = self.inspect(&d, &n).await? else { continue };
            if i["State"]["Running"] != true {
                ctx.progress(format!("container `{n}` is not running: left as it is"));
                continue;
            }
            self.stop_one(&d, ctx, &n).await?;
            stopped.insert(n);
            // Kept after each stop: a later stop failing must not forget the earlier ones.
            *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = Some(stopped.clone());
        }
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = Some(stopped);
        Ok(())
    }

    /// Starts what `stop` stopped. Without that memory (a `resume` in another process),
    /// starts the stopped containers except those that ended on their own: exit code 0
    /// under restart policy `no`, as a one-shot job ends.
    pub(crate) async fn start_all(&self, ctx: &Context) -> Result<()> {
        let d = self.connect().await?;
        let remembered = self.stopped.lock().unwrap_or_else(|e| e.into_inner()).take();
        let names = match &remembered {
            Some(set) => set.iter().cloned().collect(),
            None => self.select_present(&d, ctx, "start").await?,
        };
        for n in names {
            let Some(i) = self.inspect(&d, &n).await? else {
                ctx.progress(format!("container `{n}` does not exist: nothing to start"));
                continue;
            };
            if i["State"]["Running"] == true {
                continue;
            }
            if remembered.is_none() && finished_job(&i) {
                ctx.progress(format!("container `{n}` ended on its own (exit 0, restart policy no): not started"));
                continue;
            }
            self.start_one(&d, &n).await?;
            self.wait_ready(&d, ctx, &n).await?;
        }
        Ok(())
    }

    /// Waits until `name` is up: running and, with a Docker healthcheck, `healthy`;
    /// without one, running for `min_uptime` with no restart. A restart while waiting
    /// is a failure at once: a container in a restart loop is `running` between its
    /// crashes, and counting it up would discard the container it replaced.
    pub(crate) async fn wait_ready(&self, d: &Docker, ctx: &Context, name: &str) -> Result<()> {
        let started = Instant::now();
        let mut last_report = Instant::now();
        let mut delay = Duration::from_millis(50);
        // (restart count, start time) at the first look, and when it was first seen running.
        let mut first: Option<(u64, String)> = None;
        let mut running_since: Option<Instant> = None;
        loop {
            let i = self.inspect(d, name).await?.ok_or_else(|| {
                Error::not_found(format!("container `{name}` disappeared while waiting for it to be healthy"))
            })?;
            let state = &i["State"];
            let status = state["Status"].as_str().unwrap_or("");
            let health = state["Health"]["Status"].as_str();
            let restarts = i["RestartCount"].as_u64().unwrap_or(0);
            let started_at = state["StartedAt"].as_str().unwrap_or("").to_string();
            let (count0, at0) = first.get_or_insert_with(|| (restarts, started_at.clone())).clone();
            let seen = if status == "restarting" || restarts > count0 || (status == "running" && started_at != at0) {
                Seen::Failed(Error::unexpected(format!(
                    "container `{name}` is in a restart loop: it exited (code {}) and was restarted {} time(s) \
                     while waiting for it to be up",
                    state["ExitCode"],
                    restarts.saturating_sub(count0).max(1)
                )))
            } else {
                match (status, health) {
                    ("running", Some("healthy")) => Seen::Up,
                    ("running", None) => {
                        let since = *running_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= self.min_uptime {
                            Seen::Up
                        } else {
                            Seen::Waiting
                        }
                    }
                    ("exited" | "dead", _) => Seen::Failed(Error::unexpected(format!(
                        "container `{name}` exited (code {}) instead of becoming healthy",
                        state["ExitCode"]
                    ))),
                    (_, Some("unhealthy")) => {
                        Seen::Failed(Error::unexpected(format!("container `{name}` is unhealthy{}", last_check(state))))
                    }
                    _ => Seen::Waiting,
                }
            };
            match seen {
                Seen::Up => return Ok(()),
                Seen::Failed(e) => return Err(e),
                Seen::Waiting => {}
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
                    "waiting for `{name}` to be up ({}s, {})",
                    started.elapsed().as_secs(),
                    health.map(|h| format!("health {h}")).unwrap_or_else(|| format!("status {status}"))
                ));
                last_report = Instant::now();
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(250));
        }
    }
}

fn last_check(state: &Value) -> String {
    state["Health"]["Log"]
        .as_array()
        .and_then(|l| l.last())
        .map(|l| format!(" (last check: exit {}, {})", l["ExitCode"], l["Output"].as_str().unwrap_or("").trim()))
        .unwrap_or_default()
}

/// A container that ended by itself as a one-shot job does: exit code 0 and no restart
/// policy that would have kept it running.
fn finished_job(i: &Value) -> bool {
    let policy = i["HostConfig"]["RestartPolicy"]["Name"].as_str().unwrap_or("");
    i["State"]["ExitCode"].as_i64() == Some(0) && matches!(policy, "" | "no" | "on-failure")
}
