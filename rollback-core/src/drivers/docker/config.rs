//! The keys of a `docker` component and the driver built from them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ComponentConfig, DurationValue};
use crate::driver::DynDriver;
use crate::error::Result;
use crate::registry::DriverEnv;

use super::DockerDriver;

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
    /// How long a started container without a Docker healthcheck must keep running,
    /// without a restart, to count as up (default 5 s).
    #[serde(default)]
    pub min_uptime: Option<DurationValue>,
}

/// How the containers of a component are found.
#[derive(Debug, Clone)]
pub(crate) enum Selector {
    Name(String),
    Label(String),
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
    let health_timeout = cfg.health_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(60));
    let min_uptime = cfg.min_uptime.map(|d| d.0).unwrap_or(Duration::from_secs(5));
    if min_uptime >= health_timeout {
        return Err(c.options.error("min_uptime", "must be shorter than `health_timeout`, which includes it"));
    }
    Ok(Arc::new(DockerDriver {
        selector,
        host: cfg.host,
        stop_grace: cfg.stop_grace.map(|d| d.0).unwrap_or(Duration::from_secs(10)),
        health_timeout,
        min_uptime,
        stopped: Mutex::new(None),
    }))
}
