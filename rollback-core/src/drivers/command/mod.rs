#![doc = include_str!("docs.md")]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::io::Write;
use tokio::io::AsyncReadExt;

use crate::config::ComponentConfig;
use crate::driver::{Capability, Captured, Context, Drift, Driver, DynDriver};
use crate::error::{Error, ErrorKind, Result};
use crate::process;
use crate::registry::DriverEnv;
use crate::snapshot::Part;
use crate::store::{ArtifactRef, ArtifactWriter};

/// Keys of a `command` component.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// argv whose stdout is the state kept in the snapshot.
    pub capture: Vec<String>,
    /// argv that puts the state back; gets it on stdin and in `$ROLLBACK_STATE_FILE`.
    pub restore: Vec<String>,
    /// argv that exits 0 when the current state equals the snapshot's; absent:
    /// `capture` is run again and its output compared.
    pub verify: Option<Vec<String>>,
    /// Working directory (default: the config's directory).
    pub cwd: Option<String>,
    /// argv that stops the service (with `start`: the component then has a
    /// lifecycle, and is stopped while a component it depends on is restored).
    pub stop: Option<Vec<String>>,
    /// argv that starts the service again.
    pub start: Option<Vec<String>>,
}

/// The `command` driver.
#[derive(Debug)]
pub struct CommandDriver {
    cfg: CommandConfig,
    cwd: PathBuf,
}

pub(crate) fn factory(c: &ComponentConfig, env: &DriverEnv) -> Result<DynDriver> {
    let cfg: CommandConfig = c.options.parse()?;
    for (k, v) in [
        ("capture", Some(&cfg.capture)),
        ("restore", Some(&cfg.restore)),
        ("verify", cfg.verify.as_ref()),
        ("stop", cfg.stop.as_ref()),
        ("start", cfg.start.as_ref()),
    ] {
        if v.is_some_and(|v| v.is_empty() || v[0].is_empty()) {
            return Err(c.options.error(k, "must be a non-empty argv list, e.g. [\"/usr/bin/app\", \"dump\"]"));
        }
    }
    if cfg.stop.is_some() != cfg.start.is_some() {
        let missing = if cfg.stop.is_some() { "start" } else { "stop" };
        return Err(c
            .options
            .error(missing, "`stop` and `start` go together: a stopped service must be started again"));
    }
    let cwd = cfg.cwd.as_deref().map(|p| env.base_dir.join(p)).unwrap_or_else(|| env.base_dir.clone());
    Ok(Arc::new(CommandDriver { cfg, cwd }))
}

/// Where a command's stdout goes.
enum Sink {
    /// Into the store (capture), in bounded memory.
    Store(ArtifactWriter),
    /// Hashed only (re-capture compared with the stored state).
    Hash(Sha256, u64),
    /// Kept, up to a limit (restore and verify output, for messages).
    Keep(Vec<u8>),
}

impl Sink {
    fn take(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Store(w) => w.write_all(chunk),
            Sink::Hash(h, n) => {
                h.update(chunk);
                *n += chunk.len() as u64;
                Ok(())
            }
            Sink::Keep(v) => {
                let room = KEEP_LIMIT.saturating_sub(v.len());
                v.extend_from_slice(&chunk[..chunk.len().min(room)]);
                Ok(())
            }
        }
    }
}

const KEEP_LIMIT: usize = 64 * 1024;
/// How long output may stay open after the command exited (a daemon it started
/// may have inherited the pipe).
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

struct Output {
    ok: bool,
    status: String,
    stdout: Sink,
    stderr: String,
}

async fn drain<R: tokio::io::AsyncRead + Unpin>(mut r: R, mut sink: Sink) -> std::io::Result<Sink> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(sink);
        }
        sink.take(&buf[..n])?;
    }
}

impl CommandDriver {
    async fn run(&self, ctx: &Context, argv: &[String], state: Option<&ArtifactRef>, sink: Sink) -> Result<Output> {
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(&self.cwd)
            .env("ROLLBACK_COMPONENT", &ctx.component)
            .env("ROLLBACK_SNAPSHOT_ID", &ctx.snapshot_id)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        process::own_group(&mut cmd);
        // The program gets a private copy of the state: the store's object is shared
        // by every snapshot with the same content and must not be edited.
        let copy = match state {
            Some(a) => {
                let src = ctx.store.check_artifact(a)?;
                let p = ctx.store.tmp_dir().join(format!("state-{:016x}", rand::random::<u64>()));
                std::fs::copy(&src, &p).map_err(|e| Error::unexpected("cannot copy the state").with_source(e))?;
                let f =
                    std::fs::File::open(&p).map_err(|e| Error::unexpected("cannot open the state").with_source(e))?;
                cmd.env("ROLLBACK_STATE_FILE", &p).stdin(Stdio::from(f));
                Some(TempFile(p))
            }
            None => None,
        };
        let mut child = cmd.spawn().map_err(|e| {
            let kind =
                if e.kind() == std::io::ErrorKind::NotFound { ErrorKind::NotFound } else { ErrorKind::Unexpected };
            Error::new(kind, format!("cannot run `{}`", argv[0])).with_source(e)
        })?;
        let mut group = process::GroupGuard::new(ctx, child.id());
        // Restore and verify may start a daemon that keeps stdout open: their output
        // is only for messages, so it is not waited for.
        let tolerate_open = matches!(sink, Sink::Keep(_));
        let out = tokio::spawn(drain(child.stdout.take().expect("piped"), sink));
        let err = tokio::spawn(drain(child.stderr.take().expect("piped"), Sink::Keep(Vec::new())));
        let status = child.wait().await?;
        // It ran to its end: what it started on purpose (a daemon) stays.
        group.finished();
        let grace = |h: tokio::task::JoinHandle<std::io::Result<Sink>>| async move {
            match tokio::time::timeout(DRAIN_GRACE, h).await {
                Ok(Ok(Ok(s))) => Ok(s),
                Ok(Ok(Err(e))) => Err(Error::unexpected("cannot read the command's output").with_source(e)),
                Ok(Err(e)) => Err(Error::unexpected("output reader failed").with_source(e)),
                Err(_) => Err(Error::unexpected(format!(
                    "`{}` exited but its output stayed open (a background process holding stdout?)",
                    argv[0]
                ))),
            }
        };
        // Both at once: one after the other, a daemon holding both pipes cost twice the grace.
        let (stderr, stdout) = tokio::join!(grace(err), grace(out));
        let stderr = match stderr {
            Ok(Sink::Keep(v)) => v,
            Err(e) => {
                self.held_open(ctx, argv, "stderr", &e);
                Vec::new()
            }
            _ => Vec::new(),
        };
        let stdout = match stdout {
            Err(e) if tolerate_open => {
                self.held_open(ctx, argv, "stdout", &e);
                Sink::Keep(Vec::new())
            }
            r => r?,
        };
        drop(copy);
        let stderr = ctx.redactor.redact(String::from_utf8_lossy(&stderr).trim());
        let stderr = tail(&stderr, 600);
        Ok(Output { ok: status.success(), status: status.to_string(), stdout, stderr })
    }

    /// Says why the step took `DRAIN_GRACE` longer than the command did.
    fn held_open(&self, ctx: &Context, argv: &[String], stream: &str, e: &Error) {
        tracing::warn!(command = %argv[0], stream, error = %e, "command output held open after exit");
        ctx.progress(format!(
            "`{}` exited but its {stream} stayed open (a background process holding it?): stopped waiting after {} s; \
             redirect a daemon's output (`>log 2>&1`) to avoid the wait",
            argv[0],
            DRAIN_GRACE.as_secs()
        ));
    }

    async fn lifecycle(&self, ctx: &Context, what: &str, argv: Option<&[String]>) -> Result<()> {
        let Some(argv) = argv else { return Ok(()) };
        let o = self.run(ctx, argv, None, Sink::Keep(Vec::new())).await?;
        if !o.ok {
            return Err(self.failed(what, argv, &o));
        }
        Ok(())
    }

    fn failed(&self, what: &str, argv: &[String], o: &Output) -> Error {
        Error::unexpected(format!(
            "{what} command `{}` failed ({}){}",
            argv.join(" "),
            o.status,
            if o.stderr.is_empty() { String::new() } else { format!(": {}", o.stderr) }
        ))
    }
}

/// Removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn state_artifact(part: &Part) -> Result<&ArtifactRef> {
    part.artifact("state").ok_or_else(|| Error::new(ErrorKind::Corrupt, "command snapshot has no state"))
}

fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

#[async_trait]
impl Driver for CommandDriver {
    fn name(&self) -> &str {
        "command"
    }

    fn capability(&self) -> Capability {
        Capability { lifecycle: self.cfg.stop.is_some(), idempotent_restore: true, ..Default::default() }
    }

    async fn stop(&self, ctx: &Context) -> Result<()> {
        self.lifecycle(ctx, "stop", self.cfg.stop.as_deref()).await
    }

    async fn start(&self, ctx: &Context) -> Result<()> {
        self.lifecycle(ctx, "start", self.cfg.start.as_deref()).await
    }

    async fn capture(&self, ctx: &Context) -> Result<Captured> {
        let w = ctx.store.artifact_writer("state")?;
        let o = self.run(ctx, &self.cfg.capture, None, Sink::Store(w)).await?;
        if !o.ok {
            return Err(self.failed("capture", &self.cfg.capture, &o));
        }
        let Sink::Store(w) = o.stdout else { unreachable!("capture streams into the store") };
        let a = w.finish()?;
        Ok(Captured { state: serde_json::json!({ "bytes": a.size }), artifacts: vec![a] })
    }

    async fn restore(&self, ctx: &Context, part: &Part) -> Result<()> {
        let a = state_artifact(part)?;
        let o = self.run(ctx, &self.cfg.restore, Some(a), Sink::Keep(Vec::new())).await?;
        if !o.ok {
            return Err(self.failed("restore", &self.cfg.restore, &o));
        }
        Ok(())
    }

    async fn verify(&self, ctx: &Context, part: &Part) -> Result<Drift> {
        let a = state_artifact(part)?;
        match &self.cfg.verify {
            Some(argv) => {
                let o = self.run(ctx, argv, Some(a), Sink::Keep(Vec::new())).await?;
                Ok(if o.ok {
                    Drift::equal()
                } else {
                    let out = match &o.stdout {
                        Sink::Keep(v) => ctx.redactor.redact(String::from_utf8_lossy(v).trim()),
                        _ => String::new(),
                    };
                    Drift::from_differences(vec![format!(
                        "verify command exited {}: {}",
                        o.status,
                        tail(if out.is_empty() { &o.stderr } else { &out }, 400)
                    )])
                })
            }
            None => {
                let o = self.run(ctx, &self.cfg.capture, None, Sink::Hash(Sha256::new(), 0)).await?;
                if !o.ok {
                    return Err(self.failed("capture", &self.cfg.capture, &o));
                }
                let Sink::Hash(h, n) = o.stdout else { unreachable!("hash sink") };
                Ok(if hex::encode(h.finalize()) == a.sha256 && n == a.size {
                    Drift::equal()
                } else {
                    Drift::from_differences(vec!["capture output differs from the snapshot's".into()])
                })
            }
        }
    }

    fn describe_restore(&self, _part: &Part) -> String {
        format!("run `{}` with the captured state on stdin", self.cfg.restore.join(" "))
    }

    async fn check(&self, _ctx: &Context) -> Result<String> {
        let prog = &self.cfg.capture[0];
        let found = if prog.contains('/') {
            self.cwd.join(prog).exists()
        } else {
            std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(prog).exists())).unwrap_or(false)
        };
        if found {
            Ok(format!("`{prog}` found"))
        } else {
            Err(Error::not_found(format!("capture program `{prog}` not found")))
        }
    }
}
