//! `host = "ssh://[user@]host[:port][/path/to/docker.sock]"`: an engine on another
//! machine, reached as `docker -H ssh://…` reaches it — through the system's `ssh`,
//! with the operator's keys, agent and `~/.ssh/config` (`ssh_config` names another
//! config file, passed as `-F`). ssh forwards a private local socket to the remote
//! engine's socket (`/var/run/docker.sock` unless the URL gives a path), and the
//! engine API goes through it.
//!
//! One tunnel per component, opened at first use and reused; `BatchMode`, so ssh never
//! prompts. It ends with the driver, and with the process however that ends: ssh gets
//! a parent-death signal, so a killed CLI leaves no ssh behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};

/// Where an `ssh://` engine is: what `ssh` connects to, and the remote socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SshEngine {
    /// `[user@]host`, as ssh takes it (an alias from the ssh config works).
    pub dest: String,
    pub port: Option<u16>,
    pub socket: String,
    /// `-F`: an ssh config file instead of `~/.ssh/config`.
    pub config: Option<PathBuf>,
}

impl SshEngine {
    /// Parses `ssh://[user@]host[:port][/path]`; `None` when it is not such a URL.
    pub(crate) fn parse(url: &str, config: Option<PathBuf>) -> std::result::Result<Option<SshEngine>, String> {
        let Some(rest) = url.strip_prefix("ssh://") else { return Ok(None) };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (dest, port) = match authority.rsplit_once(':') {
            Some((d, p)) => (d, Some(p.parse::<u16>().map_err(|_| format!("`{p}` is not a port"))?)),
            None => (authority, None),
        };
        let host = dest.rsplit('@').next().unwrap_or("");
        if host.is_empty() || dest.starts_with('-') || dest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must be ssh://[user@]host[:port][/path/to/docker.sock]".into());
        }
        let socket = if path.is_empty() || path == "/" { "/var/run/docker.sock".to_string() } else { path.to_string() };
        Ok(Some(SshEngine { dest: dest.to_string(), port, socket, config }))
    }
}

/// A running `ssh -L` and the private directory of its local socket.
#[derive(Debug)]
pub(crate) struct Tunnel {
    child: tokio::process::Child,
    dir: PathBuf,
}

impl Tunnel {
    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// Whether ssh still runs (a dropped connection ends it).
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Starts ssh and waits (up to 20 s) for the forwarded socket to appear.
    pub(crate) async fn open(e: &SshEngine) -> Result<Tunnel> {
        remove_stale_dirs();
        let dir =
            std::env::temp_dir().join(format!("rollback-ssh-{}-{:08x}", std::process::id(), rand::random::<u32>()));
        crate::store::create_private_dir(&dir).map_err(|err| {
            Error::new(ErrorKind::Unexpected, format!("cannot create {}", dir.display())).with_source(err)
        })?;
        let sock = dir.join("docker.sock");
        let err_file = std::fs::File::create(dir.join("ssh.err"))?;
        let mut cmd = tokio::process::Command::new("ssh");
        if let Some(c) = &e.config {
            cmd.arg("-F").arg(c);
        }
        if let Some(p) = e.port {
            cmd.arg("-p").arg(p.to_string());
        }
        cmd.args(["-nNT", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=15"])
            .arg("-L")
            .arg(format!("{}:{}", sock.display(), e.socket))
            .arg("--")
            .arg(&e.dest)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(err_file)
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        let mut tunnel = Tunnel {
            child: cmd.spawn().map_err(|err| {
                let kind = if err.kind() == std::io::ErrorKind::NotFound {
                    ErrorKind::Unreachable
                } else {
                    ErrorKind::Unexpected
                };
                Error::new(kind, "cannot run `ssh` (the OpenSSH client) for the ssh:// engine").with_source(err)
            })?,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if sock.exists() {
                return Ok(tunnel);
            }
            if !tunnel.alive() || Instant::now() > deadline {
                let why = last_line(&tunnel.dir.join("ssh.err"));
                return Err(Error::new(
                    ErrorKind::Unreachable,
                    format!(
                        "ssh to {} did not forward the engine's socket {}: {}",
                        e.dest,
                        e.socket,
                        if why.is_empty() { "no answer within 20 s".to_string() } else { why }
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes the socket directories of processes that are gone: a CLI killed with
/// SIGKILL (its ssh died with it) runs no destructor.
fn remove_stale_dirs() {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name.strip_prefix("rollback-ssh-").and_then(|r| r.split('-').next()) else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn last_line(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .chars()
        .take(300)
        .collect()
}

/// Asks the kernel to kill ssh when this process dies (`PR_SET_PDEATHSIG`): a CLI
/// killed with SIGKILL runs no destructor, and an `ssh -N` would otherwise run for ever.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // prctl(2), which is async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::SshEngine;

    #[test]
    fn ssh_urls_name_the_destination_port_and_socket() {
        let e = SshEngine::parse("ssh://deploy@docker-1:2222", None).unwrap().unwrap();
        assert_eq!(
            (e.dest.as_str(), e.port, e.socket.as_str()),
            ("deploy@docker-1", Some(2222), "/var/run/docker.sock")
        );
        let e = SshEngine::parse("ssh://box/run/user/1000/docker.sock", None).unwrap().unwrap();
        assert_eq!((e.dest.as_str(), e.port, e.socket.as_str()), ("box", None, "/run/user/1000/docker.sock"));
        assert_eq!(SshEngine::parse("tcp://x:2376", None).unwrap(), None);
        for bad in ["ssh://", "ssh://u@", "ssh://-oProxyCommand=x", "ssh://h:port", "ssh://a b"] {
            assert!(SshEngine::parse(bad, None).is_err(), "{bad}");
        }
    }
}
