//! The keys of a `docker` component and the driver built from them.

use std::path::PathBuf;
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
    /// Engine address: `unix:///var/run/docker.sock`, `tcp://host:2376`,
    /// `ssh://[user@]host[:port][/path/to/docker.sock]`; default `DOCKER_HOST`, else
    /// the local socket.
    #[serde(default)]
    pub host: Option<String>,
    /// With an `ssh://` host: the ssh config file to use (`ssh -F`) instead of
    /// `~/.ssh/config`.
    #[serde(default)]
    pub ssh_config: Option<String>,
    /// TLS with the engine, the server checked against the CA and this client
    /// presenting its certificate (`dockerd --tlsverify`); default `DOCKER_TLS_VERIFY`.
    #[serde(default)]
    pub tls_verify: Option<bool>,
    /// Directory holding `ca.pem`, `cert.pem` and `key.pem`; default
    /// `DOCKER_CERT_PATH`, else `~/.docker`.
    #[serde(default)]
    pub cert_path: Option<String>,
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

/// The files of a TLS connection to the engine (Docker's `--tlsverify` layout).
#[derive(Debug, Clone)]
pub(crate) struct EngineTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The engine address and its TLS, from the keys, else Docker's own environment
/// variables (`DOCKER_HOST`, `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`), as the
/// `docker` CLI reads them.
fn engine(
    cfg: &DockerConfig,
    c: &ComponentConfig,
    env: &DriverEnv,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<(Option<String>, Option<EngineTls>)> {
    let host = cfg.host.clone().or_else(|| var("DOCKER_HOST").filter(|h| !h.is_empty()));
    if let Some(h) = &host {
        let ok = ["unix://", "tcp://", "http://", "https://", "ssh://"].iter().any(|p| h.starts_with(p));
        if !ok {
            return Err(c.options.error(
                "host",
                "must be unix:///path/to/docker.sock, tcp://host:port, http://host:port, https://host:port or \
                 ssh://[user@]host[:port]",
            ));
        }
    }
    let wants_tls = cfg.tls_verify.unwrap_or_else(|| {
        var("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty())
            || host.as_deref().is_some_and(|h| h.starts_with("https://"))
    });
    if !wants_tls {
        return Ok((host, None));
    }
    match host.as_deref() {
        Some(h) if h.starts_with("tcp://") || h.starts_with("https://") => {}
        _ => {
            return Err(c.options.error(
                "tls_verify",
                "TLS needs a tcp://host:port engine address (`host` or DOCKER_HOST); the local socket has none",
            ))
        }
    }
    let dir = match (&cfg.cert_path, var("DOCKER_CERT_PATH").filter(|p| !p.is_empty())) {
        (Some(p), _) => env.base_dir.join(p),
        (None, Some(p)) => PathBuf::from(p),
        (None, None) => match var("HOME") {
            Some(h) => PathBuf::from(h).join(".docker"),
            None => return Err(c.options.error("cert_path", "not set, and no HOME to find ~/.docker in")),
        },
    };
    let file = |n: &str| -> Result<PathBuf> {
        let p = dir.join(n);
        if p.is_file() {
            Ok(p)
        } else {
            Err(c.options.error(
                "cert_path",
                format!("{} is missing (the engine's TLS needs ca.pem, cert.pem and key.pem there)", p.display()),
            ))
        }
    };
    Ok((host, Some(EngineTls { ca: file("ca.pem")?, cert: file("cert.pem")?, key: file("key.pem")? })))
}

pub(crate) fn factory(c: &ComponentConfig, env: &DriverEnv) -> Result<DynDriver> {
    let cfg: DockerConfig = c.options.parse()?;
    let (host, tls) = engine(&cfg, c, env, &|k| std::env::var(k).ok())?;
    let selector = match (cfg.container, cfg.label) {
        (Some(n), None) if !n.trim().is_empty() => Selector::Name(n.trim_start_matches('/').to_string()),
        (None, Some(l)) if l.contains('=') && !l.starts_with('=') => Selector::Label(l),
        (None, Some(_)) => return Err(c.options.error("label", "must be `key=value`")),
        (Some(_), Some(_)) => return Err(c.options.error("label", "give either `container` or `label`, not both")),
        _ => return Err(c.options.error("container", "a `docker` component needs `container` (name) or `label`")),
    };
    let ssh_config = cfg.ssh_config.as_ref().map(|p| env.base_dir.join(p));
    let ssh = match host.as_deref() {
        Some(h) => super::ssh::SshEngine::parse(h, ssh_config).map_err(|why| c.options.error("host", why))?,
        None => None,
    };
    if ssh.is_none() && cfg.ssh_config.is_some() {
        return Err(c.options.error("ssh_config", "is for an ssh://… `host`"));
    }
    let health_timeout = cfg.health_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(60));
    let min_uptime = cfg.min_uptime.map(|d| d.0).unwrap_or(Duration::from_secs(5));
    if min_uptime >= health_timeout {
        return Err(c.options.error("min_uptime", "must be shorter than `health_timeout`, which includes it"));
    }
    Ok(Arc::new(DockerDriver {
        selector,
        host,
        tls,
        ssh,
        tunnel: tokio::sync::Mutex::new(None),
        stop_grace: cfg.stop_grace.map(|d| d.0).unwrap_or(Duration::from_secs(10)),
        health_timeout,
        min_uptime,
        stopped: Mutex::new(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StackConfig;

    /// The docker component of a one-component config, and its driver environment.
    fn parts(dir: &std::path::Path, keys: &str) -> (DockerConfig, ComponentConfig, DriverEnv) {
        let text = format!("[[component]]\nname = \"web\"\ndriver = \"docker\"\ncontainer = \"web\"\n{keys}");
        let cfg = StackConfig::from_toml_str(&text, None, dir, &|_| None).unwrap();
        let c = cfg.components[0].clone();
        let env = DriverEnv { base_dir: dir.to_path_buf(), redactor: cfg.redactor.clone() };
        (c.options.parse().unwrap(), c, env)
    }

    #[test]
    fn the_engine_and_its_tls_come_from_the_keys_else_dockers_environment() {
        let t = tempfile::tempdir().unwrap();
        let certs = t.path().join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(certs.join(f), "x").unwrap();
        }
        let certs_s = certs.display().to_string();
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        // Nothing set: the local socket, no TLS.
        let (d, c, e) = parts(t.path(), "");
        let (host, tls) = engine(&d, &c, &e, &vars(&[])).unwrap();
        assert!(host.is_none() && tls.is_none());
        // Docker's variables, as the `docker` CLI reads them.
        let cert_env = |k: &str| match k {
            "DOCKER_HOST" => Some("tcp://engine:2376".to_string()),
            "DOCKER_TLS_VERIFY" => Some("1".to_string()),
            "DOCKER_CERT_PATH" => Some(certs_s.clone()),
            _ => None,
        };
        let (host, tls) = engine(&d, &c, &e, &cert_env).unwrap();
        assert_eq!(host.as_deref(), Some("tcp://engine:2376"));
        assert_eq!(tls.unwrap().key, certs.join("key.pem"));
        // The keys win over the environment; `tls_verify = false` turns TLS off.
        let (d, c, e) = parts(t.path(), "host = \"tcp://other:2375\"\ntls_verify = false\n");
        let (host, tls) = engine(&d, &c, &e, &cert_env).unwrap();
        assert_eq!(host.as_deref(), Some("tcp://other:2375"));
        assert!(tls.is_none());
        // A relative cert_path is the config directory's; a missing file is named.
        std::fs::remove_file(certs.join("key.pem")).unwrap();
        let (d, c, e) = parts(t.path(), "host = \"tcp://engine:2376\"\ntls_verify = true\ncert_path = \"certs\"\n");
        let err = engine(&d, &c, &e, &vars(&[])).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::ConfigInvalid);
        assert!(err.to_string().contains("key.pem is missing"), "{err}");
        // TLS to the local socket makes no sense.
        let (d, c, e) = parts(t.path(), "tls_verify = true\n");
        let err = engine(&d, &c, &e, &vars(&[])).unwrap_err();
        assert!(err.to_string().contains("tcp://"), "{err}");
    }

    #[test]
    fn ssh_hosts_are_checked_when_the_config_loads() {
        let t = tempfile::tempdir().unwrap();
        let err = |keys: &str| {
            let (_, c, e) = parts(t.path(), keys);
            factory(&c, &e).err().map(|e| e.to_string()).unwrap_or_default()
        };
        assert_eq!(err("host = \"ssh://deploy@docker-1:2222\"\nssh_config = \"ssh/config\"\n"), "");
        assert!(err("host = \"ssh://-oProxyCommand=x\"\n").contains("`host`"));
        assert!(err("host = \"ssh://box:port\"\n").contains("not a port"));
        assert!(err("ssh_config = \"ssh/config\"\n").contains("`ssh_config`"));
        assert!(err("host = \"ssh://box\"\ntls_verify = true\n").contains("tls_verify"));
    }
}
