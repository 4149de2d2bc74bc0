#![doc = include_str!("docs.md")]

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::blocking;
use crate::config::{ComponentConfig, DurationValue};
use crate::driver::{Capability, Captured, Context, Drift, Driver, DynDriver};
use crate::drivers::releases::swap_link;
use crate::error::{Error, ErrorKind, Result};
use crate::registry::DriverEnv;
use crate::snapshot::Part;

/// Keys of a `pm2` component.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pm2Config {
    /// The pm2 app name (`name` in the ecosystem file).
    pub app: String,
    /// The ecosystem file: captured and written back by a restore (which does not run it).
    #[serde(default)]
    pub ecosystem: Option<String>,
    /// A releases root holding release dirs and a `current` link (optional).
    #[serde(default)]
    pub releases: Option<String>,
    /// Name of the link inside `releases` (default `current`).
    #[serde(default)]
    pub link: Option<String>,
    /// `PM2_HOME` of the daemon that runs the app (default: the environment's, else `~/.pm2`).
    #[serde(default)]
    pub pm2_home: Option<String>,
    /// The pm2 executable (default `pm2` on `PATH`).
    #[serde(default)]
    pub pm2_bin: Option<String>,
    /// How long every process may take to come online after a restore (default 60 s).
    #[serde(default)]
    pub online_timeout: Option<DurationValue>,
    /// How long a process must stay online to count (a crashing app flips online briefly; default 1 s).
    #[serde(default)]
    pub stable_for: Option<DurationValue>,
}

/// The `pm2` driver.
#[derive(Debug)]
pub struct Pm2Driver {
    app: String,
    ecosystem: Option<PathBuf>,
    releases: Option<PathBuf>,
    link: String,
    pm2_home: Option<PathBuf>,
    pm2_bin: String,
    online_timeout: Duration,
    stable_for: Duration,
    /// What [`Driver::restarts`] saw of each process at its last call.
    crashes: Mutex<CrashTally>,
}

/// Restarts after crashes, counted from pm2's process list across calls.
///
/// pm2's `restart_time` grows with every restart of a process, whether it crashed and
/// pm2 started it again, or a reload, a `pm2 restart`, a `cron_restart`, a watched file
/// or `max_memory_restart` asked for it. What tells them apart is `created_at`: pm2
/// sets it anew when a restart is asked for (its `resetState`) and leaves it as it is
/// when it starts a crashed process again. Between two calls, then, a process whose
/// `created_at` stayed restarted only after crashes, each counted; one whose
/// `created_at` changed was asked to restart, maybe several times, and its count
/// cannot tell those from crashes in between: none is counted for that interval (a
/// crash loop shows in the intervals without one). A restart asked for adds its 1 to
/// `restart_time` only once the process has stopped (at once for a reload; after the
/// graceful stop, which takes its time, for `pm2 restart` and `cron_restart`): seen
/// before that, it is owed to the next interval, until a start of the process after
/// it shows it came. `unstable_restarts` cannot serve: it counts only crashes within
/// `min_uptime` of a start, and goes back to 0 at every reload. Checked against pm2 6.
#[derive(Debug, Default)]
struct CrashTally {
    seen: HashMap<i64, Seen>,
    crashes: u64,
}

/// One process at the last call.
#[derive(Debug, Clone, Copy)]
struct Seen {
    created_at: Option<i64>,
    restart_time: u64,
    /// A restart asked for whose 1 has not shown in `restart_time` yet.
    owed: u64,
}

impl CrashTally {
    /// Adds the crash restarts since the last call and returns the total. A process
    /// seen for the first time, or started anew under a reused pm id (its count
    /// lower), is only recorded.
    fn observe(&mut self, procs: &[Value]) -> u64 {
        let mut seen = HashMap::new();
        for p in procs {
            // A reload lists the worker it replaces as `_old_<id>` for a moment.
            let Some(id) = p["pm_id"].as_i64() else { continue };
            let e = &p["pm2_env"];
            let created_at = e["created_at"].as_i64();
            let restart_time = e["restart_time"].as_u64().unwrap_or(0);
            // Started after the last restart asked for: whatever it adds is counted.
            let started = e["pm_uptime"].as_i64().zip(created_at).is_none_or(|(up, c)| up >= c);
            let mut now = Seen { created_at, restart_time, owed: 0 };
            if let Some(last) = self.seen.get(&id).filter(|l| l.restart_time <= restart_time) {
                let grown = restart_time - last.restart_time;
                let owed = if last.created_at != created_at {
                    1
                } else {
                    let asked = grown.min(last.owed);
                    self.crashes += grown - asked;
                    last.owed - asked
                };
                now.owed = if started { 0 } else { owed };
            }
            seen.insert(id, now);
        }
        self.seen = seen;
        self.crashes
    }
}

/// pm2 statuses of a process that runs, or is about to run again by itself.
fn is_running(status: &str) -> bool {
    matches!(status, "online" | "launching" | "waiting restart")
}

pub(crate) fn factory(c: &ComponentConfig, env: &DriverEnv) -> Result<DynDriver> {
    let cfg: Pm2Config = c.options.parse()?;
    if cfg.app.trim().is_empty() {
        return Err(c.options.error("app", "must name the pm2 app"));
    }
    let resolve = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            env.base_dir.join(p)
        }
    };
    let link = cfg.link.unwrap_or_else(|| "current".into());
    if link.contains('/') || link.is_empty() || link == ".." {
        return Err(c.options.error("link", "must be a plain file name inside `releases`"));
    }
    Ok(Arc::new(Pm2Driver {
        app: cfg.app,
        ecosystem: cfg.ecosystem.as_deref().map(resolve),
        releases: cfg.releases.as_deref().map(resolve),
        link,
        pm2_home: cfg.pm2_home.as_deref().map(resolve),
        pm2_bin: cfg.pm2_bin.unwrap_or_else(|| "pm2".into()),
        online_timeout: cfg.online_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(60)),
        stable_for: cfg.stable_for.map(|d| d.0).unwrap_or(Duration::from_secs(1)),
        crashes: Mutex::default(),
    }))
}

/// An app's environment as pm2 holds it (`pm2_env.env`), without the keys pm2 makes
/// up at every start. Its `Debug` shows the keys only: the values are secrets.
#[derive(Clone, PartialEq, Default)]
struct Env(Map<String, Value>);

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Keys pm2 writes into `pm2_env.env` itself when it starts an app: `unique_id` (a new
/// UUID each time), `PM2_HOME` and one named after the app (its module settings). A
/// reload from an ecosystem file drops them again, so they come and go with how the
/// app was last started and say nothing about it.
const PM2_OWN_ENV_KEYS: &[&str] = &["unique_id", "PM2_HOME"];

impl Env {
    fn of(pm2_env: &Value) -> Env {
        let mut e = pm2_env["env"].as_object().cloned().unwrap_or_default();
        for k in PM2_OWN_ENV_KEYS {
            e.remove(*k);
        }
        if let Some(name) = pm2_env["name"].as_str() {
            e.remove(name);
        }
        Env(e)
    }
}

/// `added A, B; removed C; changed D`: which keys differ, never their values.
fn key_differences(have: &Map<String, Value>, want: &Map<String, Value>) -> Option<String> {
    let pick = |f: &dyn Fn(&String) -> bool| -> Vec<&str> {
        have.keys().chain(want.keys()).filter(|k| f(k)).map(String::as_str).collect()
    };
    let mut added = pick(&|k| have.contains_key(k) && !want.contains_key(k));
    let mut removed = pick(&|k| !have.contains_key(k) && want.contains_key(k));
    let mut changed = pick(&|k| matches!((have.get(k), want.get(k)), (Some(a), Some(b)) if a != b));
    let mut parts = Vec::new();
    for (what, keys) in [("added", &mut added), ("removed", &mut removed), ("changed", &mut changed)] {
        keys.sort_unstable();
        keys.dedup();
        if !keys.is_empty() {
            parts.push(format!("{what} {}", keys.join(", ")));
        }
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// pm2 options kept under the same name in `pm2_env` and in an app declaration: what a
/// `pm2 start` needs, besides name, script, cwd, log paths, exec mode, instances and env,
/// to bring the app back as it ran.
const CARRIED_OPTIONS: &[&str] = &[
    "args",
    "node_args",
    "exec_interpreter",
    "namespace",
    "max_memory_restart",
    "kill_timeout",
    "kill_retry_time",
    "listen_timeout",
    "wait_ready",
    "shutdown_with_message",
    "autorestart",
    "autostart",
    "max_restarts",
    "min_uptime",
    "restart_delay",
    "exp_backoff_restart_delay",
    "cron_restart",
    "stop_exit_codes",
    "watch",
    "ignore_watch",
    "watch_delay",
    "merge_logs",
    "log_date_format",
    "log_type",
    "time",
    "disable_logs",
    "instance_var",
    "increment_var",
    "source_map_support",
    "treekill",
    "vizion",
    "automation",
    "pmx",
    "windowsHide",
    "uid",
    "gid",
];

/// Options pm2 fills in with these values when it (re)starts an app by name; seen
/// here with pm2 6: absent after `pm2 start ecosystem.config.js`, present after a
/// `pm2 stop` + `pm2 start <name>`.
const PM2_DEFAULTS: &[(&str, bool)] = &[("watch", false), ("merge_logs", true)];

/// The app's declaration for `pm2 start`, built from what pm2 runs (`pm2_env` of its
/// first process) and the number of processes. Holds the environment: an artifact,
/// never the manifest.
fn definition(raw: &[Value]) -> Option<Value> {
    let first = raw.first()?;
    let e = &first["pm2_env"];
    let mut d = Map::new();
    d.insert("name".into(), e["name"].clone());
    d.insert("script".into(), e["pm_exec_path"].clone());
    d.insert("cwd".into(), e["pm_cwd"].clone());
    d.insert("exec_mode".into(), e["exec_mode"].clone());
    d.insert("instances".into(), json!(raw.len()));
    d.insert("env".into(), Value::Object(Env::of(e).0));
    for k in CARRIED_OPTIONS {
        if let Some(v) = e.get(*k).filter(|v| !v.is_null()) {
            d.insert((*k).into(), v.clone());
        }
    }
    // pm2 appends `-<pm id>` to log and pid paths per process; the declaration holds the
    // path it was given, so that restarts (new ids) compare equal.
    let id = e["pm_id"].as_i64().unwrap_or(-1);
    for (from, to, ext) in [
        ("pm_out_log_path", "out_file", "log"),
        ("pm_err_log_path", "error_file", "log"),
        ("pm_pid_path", "pid_file", "pid"),
    ] {
        if let Some(p) = e[from].as_str() {
            let suffix = format!("-{id}.{ext}");
            let p = p.strip_suffix(&suffix).map(|b| format!("{b}.{ext}")).unwrap_or_else(|| p.to_string());
            d.insert(to.into(), json!(p));
        }
    }
    Some(Value::Object(d))
}

/// Options of the running app that differ from the snapshot's declaration, besides
/// what [`Pm2Driver::process_drift`] names (environment, instances, exec mode).
fn settings_drift(raw: &[Value], want: &Want) -> Option<String> {
    let (Some(Value::Object(have)), Some(Value::Object(w))) = (definition(raw), want.definition.as_ref()) else {
        return None;
    };
    let strip = |m: &Map<String, Value>, other: &Map<String, Value>| {
        let mut m = m.clone();
        for k in ["env", "instances", "exec_mode"] {
            m.remove(k);
        }
        // pm2 writes some options with their default value on its own (`pm2 start
        // <name>` of a stopped app adds `watch: false`, `merge_logs: true`): a default
        // on one side and nothing on the other is the same setting.
        for (k, default) in PM2_DEFAULTS {
            if !other.contains_key(*k) && m.get(*k) == Some(&Value::Bool(*default)) {
                m.remove(*k);
            }
        }
        m
    };
    key_differences(&strip(&have, w), &strip(w, &have))
        .map(|d| format!("the app's pm2 options differ from the snapshot's: {d}"))
}

/// One pm2 process of the app, as `pm2 jlist` shows it (its env only for comparison:
/// it holds secrets and stays out of [`Proc::summary`]).
#[derive(Debug, Clone, PartialEq)]
struct Proc {
    pm_id: i64,
    pid: i64,
    status: String,
    version: Option<String>,
    exec_mode: String,
    instances: Value,
    pm_cwd: String,
    uptime_ms: i64,
    /// The process's real working directory (`/proc/<pid>/cwd`): the release it runs.
    real_cwd: Option<PathBuf>,
    env: Env,
    /// Names of the variables the process really runs with: pm2 hands a process every
    /// top-level key of its `pm2_env`, where a reload leaves keys its `env` no longer lists.
    process_env_keys: Vec<String>,
}

/// Top-level `pm2_env` keys pm2 sets itself that a process sees besides its `env`.
const PM2_OWN_TOP_LEVEL_KEYS: &[&str] = &["NODE_APP_INSTANCE"];

/// The names among `pm2_env`'s top-level keys that are environment variables: those its
/// `env` lists, and any named like one (pm2's own options are lower case; a reload
/// removes a variable from `env` but leaves it at the top level, and in the process).
fn process_env_keys(pm2_env: &Value) -> Vec<String> {
    let listed = pm2_env["env"].as_object();
    let is_var_name = |k: &str| {
        k.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && k.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    };
    let own = |k: &str| {
        PM2_OWN_ENV_KEYS.contains(&k) || PM2_OWN_TOP_LEVEL_KEYS.contains(&k) || pm2_env["name"].as_str() == Some(k)
    };
    pm2_env
        .as_object()
        .map(|o| {
            o.keys()
                .filter(|k| *k != "env" && !own(k))
                .filter(|k| is_var_name(k) || listed.is_some_and(|l| l.contains_key(*k)))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

impl Proc {
    fn from_json(p: &Value) -> Proc {
        let e = &p["pm2_env"];
        let pid = p["pid"].as_i64().unwrap_or(0);
        let real_cwd = if pid > 0 { std::fs::read_link(format!("/proc/{pid}/cwd")).ok() } else { None };
        Proc {
            pm_id: p["pm_id"].as_i64().unwrap_or(-1),
            pid,
            status: e["status"].as_str().unwrap_or("unknown").to_string(),
            version: e["version"].as_str().filter(|v| !v.is_empty() && *v != "N/A").map(String::from),
            exec_mode: e["exec_mode"].as_str().unwrap_or("").to_string(),
            instances: e["instances"].clone(),
            pm_cwd: e["pm_cwd"].as_str().unwrap_or("").to_string(),
            uptime_ms: e["pm_uptime"].as_i64().unwrap_or(0),
            real_cwd,
            env: Env::of(e),
            process_env_keys: process_env_keys(e),
        }
    }

    /// Variables the process runs with that `want_env` does not have.
    fn stale_keys<'a>(&'a self, want_env: &Map<String, Value>) -> Vec<&'a str> {
        self.process_env_keys.iter().filter(|k| !want_env.contains_key(*k)).map(String::as_str).collect()
    }

    fn summary(&self) -> Value {
        json!({
            "pm_id": self.pm_id,
            "status": self.status,
            "version": self.version,
            "exec_mode": self.exec_mode,
            "instances": self.instances,
            "pm_cwd": self.pm_cwd,
            "real_cwd": self.real_cwd,
        })
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// What the snapshot wants running.
struct Want {
    count: usize,
    /// How many of them were not running (stopped, errored: a kill switch): a restore
    /// leaves them stopped, and never starts an app the snapshot has stopped.
    stopped: usize,
    version: Option<String>,
    release_dir: Option<PathBuf>,
    exec_mode: Option<String>,
    /// The app's declaration with its environment (snapshots taken before the driver
    /// stored it have none: their restores reload the app as it is).
    definition: Option<Value>,
    /// Variables the processes already ran with at capture that their declaration did
    /// not list (left by an earlier `--update-env` reload): names only. Verify names
    /// only leftovers newer than the snapshot; a restore starts the app without any.
    stale_env: BTreeSet<String>,
}

impl Want {
    fn env(&self) -> Option<&Map<String, Value>> {
        self.definition.as_ref().and_then(|d| d["env"].as_object())
    }

    fn running(&self) -> usize {
        self.count - self.stopped
    }

    /// What runs now, as a [`Want`], for putting it back when a restore fails.
    fn of_running(raw: &[Value], procs: &[Proc]) -> Want {
        Want {
            count: procs.len(),
            stopped: procs.iter().filter(|p| !is_running(&p.status)).count(),
            version: procs.iter().find_map(|p| p.version.clone()),
            release_dir: None,
            exec_mode: procs.first().map(|p| p.exec_mode.clone()),
            definition: definition(raw),
            stale_env: BTreeSet::new(),
        }
    }
}

impl Pm2Driver {
    fn link_path(&self) -> Option<PathBuf> {
        self.releases.as_ref().map(|r| r.join(&self.link))
    }

    /// The `PM2_HOME` pm2 will use, resolved as pm2 does: the configured one, else the
    /// environment's, else `~/.pm2`.
    fn effective_home(&self) -> Option<PathBuf> {
        self.pm2_home
            .clone()
            .or_else(|| std::env::var_os("PM2_HOME").filter(|h| !h.is_empty()).map(PathBuf::from))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pm2")))
    }

    fn pm2_home_desc(&self) -> String {
        self.effective_home().map(|p| p.display().to_string()).unwrap_or_else(|| "the default PM2_HOME".into())
    }

    /// Fails unless a pm2 daemon listens in the `PM2_HOME`, without starting one.
    ///
    /// Every pm2 command starts a daemon when none answers, so a wrong `pm2_home` would
    /// otherwise leave a stray daemon behind and read as "the app is not running" (or,
    /// for `check`, as a healthy empty list). Connecting to the daemon's RPC socket is
    /// the one test that starts nothing and cannot be fooled by a stale `pm2.pid`.
    async fn ensure_daemon(&self) -> Result<()> {
        let Some(home) = self.effective_home() else {
            return Err(Error::config("no `pm2_home` is configured and neither PM2_HOME nor HOME is set"));
        };
        let sock = home.join("rpc.sock");
        tokio::net::UnixStream::connect(&sock).await.map(drop).map_err(|e| {
            Error::new(
                ErrorKind::Unreachable,
                format!(
                    "no pm2 daemon runs for PM2_HOME {} (nothing answers on {}); check `pm2_home`, \
                     or start the daemon there (`pm2 resurrect`): the driver never starts one",
                    home.display(),
                    sock.display()
                ),
            )
            .with_source(e)
        })
    }

    /// Runs pm2; stdout on success, an error with the (redacted) tail of its output otherwise.
    /// Refuses to run when no daemon answers (pm2 would start one).
    async fn pm2(&self, ctx: &Context, args: &[&str]) -> Result<String> {
        self.ensure_daemon().await?;
        let mut cmd = tokio::process::Command::new(&self.pm2_bin);
        cmd.args(args).stdin(std::process::Stdio::null());
        // Set before every call: without it pm2 starts a second daemon under ~/.pm2.
        if let Some(h) = &self.pm2_home {
            cmd.env("PM2_HOME", h);
        }
        cmd.env("FORCE_COLOR", "0").env("PM2_DISCRETE_MODE", "true");
        let out = crate::process::output(ctx, cmd, Some(Duration::from_secs(120))).await.map_err(|e| match e {
            crate::process::RunError::Timeout => {
                Error::new(ErrorKind::Timeout, format!("`pm2 {}` did not finish within 120s", args.join(" ")))
            }
            crate::process::RunError::Spawn(e) | crate::process::RunError::Wait(e) => {
                let kind = if e.kind() == std::io::ErrorKind::NotFound {
                    ErrorKind::Unreachable
                } else {
                    ErrorKind::Unexpected
                };
                Error::new(kind, format!("cannot run `{}` (set `pm2_bin`)", self.pm2_bin)).with_source(e)
            }
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            let text = format!("{}\n{}", stdout, String::from_utf8_lossy(&out.stderr));
            let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(Error::unexpected(ctx.redactor.redact(&format!(
                "`pm2 {}` failed ({}): {}",
                args.first().copied().unwrap_or(""),
                out.status,
                tail.join(" | ")
            ))));
        }
        Ok(stdout)
    }

    /// The app's processes from `pm2 jlist`.
    async fn procs(&self, ctx: &Context) -> Result<Vec<Proc>> {
        Ok(self.raw_procs(ctx).await?.iter().map(Proc::from_json).collect())
    }

    /// The app's entries of `pm2 jlist` as pm2 prints them, by pm id (they hold the
    /// environment: keep them out of anything reported).
    async fn raw_procs(&self, ctx: &Context) -> Result<Vec<Value>> {
        let out = self.pm2(ctx, &["jlist"]).await?;
        // A daemon being spawned prints lines before the JSON array.
        let list = out
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Value>(l.trim()).ok().filter(|v| v.is_array()))
            .ok_or_else(|| {
                Error::unexpected(format!("`pm2 jlist` printed no process list (PM2_HOME {})", self.pm2_home_desc()))
            })?;
        let mut procs: Vec<Value> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["name"].as_str() == Some(self.app.as_str()))
            .cloned()
            .collect();
        procs.sort_by_key(|p| p["pm_id"].as_i64().unwrap_or(-1));
        Ok(procs)
    }

    fn read_target(&self) -> Result<Option<PathBuf>> {
        let Some(link) = self.link_path() else { return Ok(None) };
        std::fs::read_link(&link).map(Some).map_err(|e| {
            let kind =
                if e.kind() == std::io::ErrorKind::NotFound { ErrorKind::NotFound } else { ErrorKind::Unexpected };
            Error::new(kind, format!("{} is not a readable symlink", link.display())).with_source(e)
        })
    }

    fn release_dir(&self, target: &Path) -> PathBuf {
        let p = if target.is_absolute() {
            target.to_path_buf()
        } else {
            self.releases.clone().unwrap_or_default().join(target)
        };
        std::fs::canonicalize(&p).unwrap_or(p)
    }

    fn want(&self, ctx: &Context, part: &Part) -> Result<Want> {
        let procs = part.state.get("processes").and_then(|p| p.as_array()).ok_or_else(|| {
            Error::new(
                ErrorKind::Corrupt,
                format!("the snapshot part is not a pm2 capture (driver `{}`, no `processes`)", part.driver),
            )
        })?;
        let definition = match part.artifact("app") {
            Some(a) => Some(serde_json::from_slice::<Value>(&ctx.store.read_artifact(a)?).map_err(|e| {
                Error::new(ErrorKind::Corrupt, "the snapshot's pm2 app declaration cannot be parsed").with_source(e)
            })?),
            None => None,
        };
        Ok(Want {
            count: procs.len(),
            // Older snapshots have every process's status too.
            stopped: procs.iter().filter(|p| !p["status"].as_str().is_some_and(is_running)).count(),
            version: procs.iter().find_map(|p| p["version"].as_str().map(String::from)),
            release_dir: part.state["release_dir"].as_str().map(PathBuf::from),
            exec_mode: procs.iter().find_map(|p| p["exec_mode"].as_str().map(String::from)),
            definition,
            stale_env: part.state["stale_env"]
                .as_array()
                .map(|a| a.iter().filter_map(|k| k.as_str().map(String::from)).collect())
                .unwrap_or_default(),
        })
    }

    /// Differences between the running processes and what the snapshot wants.
    fn process_drift(&self, procs: &[Proc], want: &Want, stable: Option<Duration>) -> Vec<String> {
        let mut d = Vec::new();
        if want.count == 0 {
            if !procs.is_empty() {
                d.push(format!("app `{}` runs, the snapshot has it absent", self.app));
            }
            return d;
        }
        if procs.is_empty() {
            d.push(format!("app `{}` is not in the pm2 list", self.app));
            return d;
        }
        if procs.len() != want.count {
            d.push(format!("{} processes, the snapshot had {}", procs.len(), want.count));
        }
        let running = procs.iter().filter(|p| is_running(&p.status)).count();
        if want.stopped > 0 && running != want.running() {
            if want.running() == 0 {
                d.push(format!(
                    "app `{}` runs ({running} of {} processes), the snapshot has it stopped",
                    self.app,
                    procs.len()
                ));
            } else {
                d.push(format!(
                    "{running} of {} processes run, the snapshot had {} of {} running",
                    procs.len(),
                    want.running(),
                    want.count
                ));
            }
        }
        for p in procs {
            let runs = is_running(&p.status);
            // Stopped processes are named one by one only when the snapshot has every
            // process running; otherwise the count above says it.
            if (!runs && want.stopped == 0) || (runs && p.status != "online") {
                d.push(format!("process {} is {}", p.pm_id, p.status));
                continue;
            }
            if let Some(s) = stable.filter(|_| runs) {
                if now_ms() - p.uptime_ms < s.as_millis() as i64 {
                    d.push(format!("process {} has been online for less than {}ms", p.pm_id, s.as_millis()));
                }
            }
            if let Some(m) = want.exec_mode.as_ref().filter(|m| **m != p.exec_mode) {
                d.push(format!("process {} runs in {}, the snapshot has {m}", p.pm_id, p.exec_mode));
            }
            if let Some(diff) = want.env().and_then(|w| key_differences(&p.env.0, w)) {
                d.push(format!("process {}'s environment differs from the snapshot's: {diff}", p.pm_id));
            }
            let stale: Vec<&str> = want
                .env()
                .map(|w| {
                    p.stale_keys(w)
                        .into_iter()
                        .filter(|k| !p.env.0.contains_key(*k) && !want.stale_env.contains(*k))
                        .collect()
                })
                .unwrap_or_default();
            if !stale.is_empty() {
                d.push(format!(
                    "process {} runs with {}, which its pm2 environment no longer lists (a reload leaves them)",
                    p.pm_id,
                    stale.join(", ")
                ));
            }
            // A stopped process keeps the version and directory of its last run; the
            // release link and the declaration (script, cwd) say what it would run.
            if !runs {
                continue;
            }
            if want.version.is_some() && p.version != want.version {
                d.push(format!(
                    "process {} runs version {}, the snapshot has {}",
                    p.pm_id,
                    p.version.as_deref().unwrap_or("none"),
                    want.version.as_deref().unwrap_or("none")
                ));
            }
            if let (Some(w), Some(real)) = (&want.release_dir, &p.real_cwd) {
                if real != w {
                    d.push(format!(
                        "process {} runs in {}, the snapshot's release is {}",
                        p.pm_id,
                        real.display(),
                        w.display()
                    ));
                }
            }
        }
        d
    }

    /// Brings the app to what `want` declares, with as little interruption as pm2 allows.
    ///
    /// When pm2 runs the app in the snapshot's exec mode and its processes run with no
    /// variable the snapshot lacks: `pm2 startOrReload` of the snapshot's declaration (in
    /// cluster mode pm2 replaces one worker at a time, each once its successor listens:
    /// no request is refused), with `pm2 scale` first when more processes run than the
    /// snapshot had, and after when fewer (a scale starts or ends single workers while
    /// the others serve). Otherwise `pm2 delete` + `pm2 start` of it, the one way pm2
    /// changes the exec mode or takes a variable out of a running process (a reload
    /// merges variables and never removes one): requests are refused until the app is up
    /// again, and the record says so. In fork mode pm2 reloads by restarting each
    /// process, which the record says too.
    ///
    /// Never `--update-env` and never the ecosystem file: pm2 would copy the
    /// environment of whoever runs the rollback into the app, or leave keys a deploy
    /// added. A reload from a declaration replaces `pm2_env.env` with its `env`; a
    /// start keeps only the declared `env` through `filter_env`. Last, the processes the
    /// snapshot has stopped are stopped.
    async fn apply(&self, ctx: &Context, want: &Want) -> Result<()> {
        let procs = self.procs(ctx).await?;
        let Some(def) = &want.definition else {
            // A snapshot without a declaration (older driver): reload the app as pm2 has it.
            if procs.is_empty() {
                return Err(Error::not_found(format!(
                    "app `{}` is not in the pm2 list and the snapshot holds no declaration to start it from \
                     (taken by an older version of this driver)",
                    self.app
                )));
            }
            ctx.progress(format!("pm2 reload {}", self.app));
            self.pm2(ctx, &["reload", &self.app]).await?;
            return self.stop_extra(ctx, want).await;
        };
        let want_mode = want.exec_mode.as_deref().unwrap_or("?");
        let want_env = def["env"].as_object().cloned().unwrap_or_default();
        let mut stale: Vec<&str> = procs.iter().flat_map(|p| p.stale_keys(&want_env)).collect();
        stale.sort_unstable();
        stale.dedup();
        let restart_why = match procs.first() {
            None => None,
            Some(p) if want.exec_mode.as_ref().is_some_and(|m| procs.iter().any(|p| p.exec_mode != *m)) => {
                Some(format!("it runs in {}, the snapshot has {want_mode}, which a reload cannot change", p.exec_mode))
            }
            Some(_) if !stale.is_empty() => Some(format!(
                "its processes run with {}, which the snapshot does not have and a reload cannot remove",
                stale.join(", ")
            )),
            Some(_) => None,
        };
        // `filter_env: [""]` keeps every variable of the pm2 command's own environment
        // out of a started app (each name contains ""): it gets exactly the declared `env`.
        let mut app = def.clone();
        app["filter_env"] = json!([""]);
        let file = ctx.store.tmp_dir().join(format!("pm2-{:08x}.json", rand::random::<u32>()));
        let body = serde_json::to_vec(&json!({ "apps": [app] }))
            .map_err(|e| Error::unexpected("cannot encode the pm2 app declaration").with_source(e))?;
        let (tmp, f) = (ctx.store.tmp_dir(), file.clone());
        // The declaration holds the app's secrets: 0600, in the store's private tmp/.
        blocking(move || crate::store::replace_durable(&tmp, &f, &body)).await?;
        let path = file.to_string_lossy().to_string();
        let n = want.count.to_string();
        let r = async {
            if let Some(why) = &restart_why {
                ctx.progress(format!(
                    "pm2 delete {}: {why} (requests are refused until it is started again)",
                    self.app
                ));
                self.pm2(ctx, &["delete", &self.app]).await?;
                ctx.note(format!(
                    "app `{}` was restarted (pm2 delete + start), not reloaded: {why}; requests were refused until \
                     it was up again",
                    self.app
                ));
            }
            if procs.is_empty() || restart_why.is_some() {
                ctx.progress(format!(
                    "pm2 start {} ({} processes, {want_mode}) with the snapshot's environment",
                    self.app, want.count
                ));
                return self.pm2(ctx, &["start", &path, "--only", &self.app]).await.map(drop);
            }
            if procs.len() > want.count {
                ctx.progress(format!("pm2 scale {} {n} (from {} processes)", self.app, procs.len()));
                self.pm2(ctx, &["scale", &self.app, &n]).await?;
            }
            ctx.progress(format!(
                "pm2 startOrReload {} ({} processes, {want_mode}) with the snapshot's environment",
                self.app,
                procs.len().min(want.count)
            ));
            self.pm2(ctx, &["startOrReload", &path, "--only", &self.app]).await?;
            if procs.len() < want.count {
                ctx.progress(format!("pm2 scale {} {n} (from {} processes)", self.app, procs.len()));
                self.pm2(ctx, &["scale", &self.app, &n]).await?;
            }
            if want.exec_mode.as_deref() == Some("fork_mode") {
                ctx.note(format!(
                    "app `{}` runs in fork mode, where pm2 reloads by restarting each process: requests to a \
                     process were refused while it restarted",
                    self.app
                ));
            }
            Ok(())
        }
        .await;
        let _ = std::fs::remove_file(&file);
        r?;
        self.stop_extra(ctx, want).await
    }

    /// Stops processes until as many run as the snapshot had running (the highest pm
    /// ids first): a snapshot with some processes stopped.
    async fn stop_extra(&self, ctx: &Context, want: &Want) -> Result<()> {
        if want.stopped == 0 {
            return Ok(());
        }
        let mut running: Vec<i64> =
            self.procs(ctx).await?.iter().filter(|p| is_running(&p.status)).map(|p| p.pm_id).collect();
        running.sort_unstable();
        let extra = running.len().saturating_sub(want.running());
        for id in running.iter().rev().take(extra) {
            ctx.progress(format!("pm2 stop {id} (process of `{}` stopped in the snapshot)", self.app));
            self.pm2(ctx, &["stop", &id.to_string()]).await?;
        }
        Ok(())
    }

    async fn wait_online(&self, ctx: &Context, want: &Want, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let mut last_report = Instant::now();
        loop {
            let procs = self.procs(ctx).await?;
            let drift = self.process_drift(&procs, want, Some(self.stable_for));
            if drift.is_empty() {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "app `{}` did not come online within {}s: {}",
                        self.app,
                        timeout.as_secs(),
                        drift.join("; ")
                    ),
                ));
            }
            if last_report.elapsed() > Duration::from_secs(2) {
                ctx.progress(format!("waiting for app `{}` to be online: {}", self.app, drift.join("; ")));
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn ecosystem_content(&self) -> Result<Option<Vec<u8>>> {
        match &self.ecosystem {
            Some(p) => std::fs::read(p).map(Some).map_err(|e| {
                let kind = Error::from(e).kind();
                Error::new(kind, format!("cannot read the ecosystem file {}", p.display()))
            }),
            None => Ok(None),
        }
    }

    /// Writes the ecosystem file back with the mode and owner it has now: it may hold
    /// passwords, and a file written aside and renamed over it would get the umask's
    /// mode (0644) and the rollback user as owner.
    async fn write_ecosystem(&self, bytes: Vec<u8>) -> Result<()> {
        let Some(p) = self.ecosystem.clone() else { return Ok(()) };
        blocking(move || {
            use std::io::Write;
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let meta = std::fs::metadata(&p)?;
            let tmp = p.with_extension(format!("rollback-{:08x}", rand::random::<u32>()));
            crate::durable::replace(&tmp, &p, meta.permissions().mode() & 0o7777, |f| {
                f.write_all(&bytes)?;
                if (meta.uid(), meta.gid()) != (f.metadata()?.uid(), f.metadata()?.gid()) {
                    std::os::unix::fs::fchown(&*f, Some(meta.uid()), Some(meta.gid()))?;
                    // A chown clears set-id bits: the mode again.
                    f.set_permissions(std::fs::Permissions::from_mode(meta.permissions().mode() & 0o7777))?;
                }
                Ok(())
            })
        })
        .await
        .map_err(|e| {
            Error::new(e.kind(), "cannot write the ecosystem file back (with its mode and owner)").with_source(e)
        })
    }

    async fn capture_inner(&self, ctx: &Context) -> Result<Captured> {
        let raw = match self.raw_procs(ctx).await {
            // No daemon, nothing runs: what a safety snapshot records as it is.
            Err(e) if ctx.safety && e.kind() == ErrorKind::Unreachable && self.ensure_daemon().await.is_err() => {
                Vec::new()
            }
            r => r?,
        };
        let procs: Vec<Proc> = raw.iter().map(Proc::from_json).collect();
        // A safety snapshot records "not running" so that undoing a rollback that
        // started the app deletes it again.
        if procs.is_empty() && !ctx.safety {
            return Err(Error::not_found(format!(
                "app `{}` is not in the pm2 list (PM2_HOME {})",
                self.app,
                self.pm2_home_desc()
            )));
        }
        let target = self.read_target()?;
        let mut state = json!({
            "app": self.app,
            "processes": procs.iter().map(Proc::summary).collect::<Vec<_>>(),
        });
        if let Some(t) = &target {
            let dir = self.release_dir(t);
            if !dir.is_dir() {
                return Err(Error::not_found(format!(
                    "the release link points at {}, which is not a directory",
                    dir.display()
                )));
            }
            state["target"] = json!(t);
            state["release_dir"] = json!(dir);
            state["release"] = json!(dir.file_name().map(|n| n.to_string_lossy().to_string()));
        }
        let mut artifacts = Vec::new();
        if let Some(def) = definition(&raw) {
            state["exec_mode"] = def["exec_mode"].clone();
            state["instances"] = def["instances"].clone();
            let declared = def["env"].as_object().cloned().unwrap_or_default();
            let stale: BTreeSet<&str> = procs
                .iter()
                .flat_map(|p| p.stale_keys(&declared).into_iter().filter(|k| !p.env.0.contains_key(*k)))
                .collect();
            state["stale_env"] = json!(stale);
            let bytes = serde_json::to_vec(&def)
                .map_err(|e| Error::unexpected("cannot encode the pm2 app declaration").with_source(e))?;
            artifacts.push(ctx.store.put_bytes("app", &bytes)?);
        }
        if let Some(bytes) = self.ecosystem_content()? {
            let a = ctx.store.put_bytes("ecosystem", &bytes)?;
            state["ecosystem"] = json!(self.ecosystem);
            state["ecosystem_sha256"] = json!(a.sha256);
            artifacts.push(a);
        }
        Ok(Captured { state, artifacts })
    }

    /// `pm2 save --force`: the daemon's dump (what `pm2 resurrect` starts after a
    /// reboot) gets the restored process list; without it a reboot brings back the
    /// deploy's. `--force` saves an empty list too (pm2 otherwise keeps the old dump).
    /// It saves every app of the daemon as it runs now, not only this one.
    async fn persist(&self, ctx: &Context) -> Result<()> {
        if self.ensure_daemon().await.is_err() {
            // No daemon: the restore left nothing running, and nothing was started.
            return Ok(());
        }
        ctx.progress("pm2 save --force".to_string());
        self.pm2(ctx, &["save", "--force"]).await.map(drop)
    }

    async fn restore_inner(&self, ctx: &Context, part: &Part) -> Result<()> {
        self.restore_unsaved(ctx, part).await?;
        self.persist(ctx).await
    }

    async fn restore_unsaved(&self, ctx: &Context, part: &Part) -> Result<()> {
        let want = self.want(ctx, part)?;
        if want.count == 0 {
            // No daemon: the app runs nowhere, as the snapshot wants.
            if self.ensure_daemon().await.is_ok() && !self.procs(ctx).await?.is_empty() {
                ctx.progress(format!("pm2 delete {} (not running in the snapshot)", self.app));
                self.pm2(ctx, &["delete", &self.app]).await?;
            }
            if let (Some(t), Some(link)) = (part.state["target"].as_str().map(PathBuf::from), self.link_path()) {
                if self.read_target().ok().flatten().as_ref() != Some(&t) {
                    blocking(move || swap_link(&link, &t)).await?;
                }
            }
            return Ok(());
        }
        if want.running() == 0 {
            return self.restore_stopped(ctx, part, &want).await;
        }
        let target = part.state["target"].as_str().map(PathBuf::from);
        let eco_bytes = match part.artifact("ecosystem") {
            Some(a) if self.ecosystem.is_some() => Some(ctx.store.read_artifact(a)?),
            _ => None,
        };
        let old_target = self.read_target().ok().flatten();
        let old_eco = self.ecosystem_content().ok().flatten();
        let old_raw = self.raw_procs(ctx).await?;
        let old_procs: Vec<Proc> = old_raw.iter().map(Proc::from_json).collect();

        let link_same = target.is_none() || old_target == target;
        let eco_same = eco_bytes.is_none() || old_eco == eco_bytes;
        if link_same
            && eco_same
            && self.process_drift(&old_procs, &want, None).is_empty()
            && settings_drift(&old_raw, &want).is_none()
        {
            ctx.progress(format!("app `{}` already runs the snapshot's release", self.app));
            return Ok(());
        }

        if let (Some(t), Some(link)) = (&target, self.link_path()) {
            if !link_same {
                ctx.progress(format!("{} -> {}", link.display(), t.display()));
                let (l, t) = (link.clone(), t.clone());
                blocking(move || swap_link(&l, &t)).await?;
            }
        }
        if let Some(b) = &eco_bytes {
            if !eco_same {
                self.write_ecosystem(b.clone()).await?;
            }
        }
        let attempt = async {
            self.apply(ctx, &want).await?;
            self.wait_online(ctx, &want, self.online_timeout).await
        }
        .await;
        let Err(e) = attempt else { return Ok(()) };

        // Put back what was running: the previous link and ecosystem, reloaded.
        ctx.progress(format!("app `{}` failed to come online; putting the previous release back", self.app));
        let mut notes = Vec::new();
        if let (Some(old), Some(link)) = (&old_target, self.link_path()) {
            if !link_same {
                let (l, t) = (link.clone(), old.clone());
                match blocking(move || swap_link(&l, &t)).await {
                    Ok(()) => notes.push(format!("the link was put back to {}", old.display())),
                    Err(b) => notes.push(format!("putting the link back to {} failed: {b}", old.display())),
                }
            }
        }
        if let Some(b) = old_eco.filter(|_| !eco_same) {
            match self.write_ecosystem(b).await {
                Ok(()) => notes.push("the ecosystem file was put back".into()),
                Err(b) => notes.push(format!("putting the ecosystem file back failed: {b}")),
            }
        }
        if old_procs.is_empty() {
            match self.pm2(ctx, &["delete", &self.app]).await {
                Ok(_) => notes.push(format!("app `{}` was deleted again", self.app)),
                Err(b) => notes.push(format!("deleting app `{}` again failed: {b}", self.app)),
            }
        } else {
            match self.apply(ctx, &Want::of_running(&old_raw, &old_procs)).await {
                Ok(()) => notes.push(format!("app `{}` was reloaded", self.app)),
                Err(b) => notes.push(format!("reloading app `{}` failed: {b}", self.app)),
            }
        }
        Err(Error::new(e.kind(), format!("{}; {}", e.message(), notes.join(", "))))
    }

    /// The snapshot has the app stopped (a kill switch): it is stopped first, and never
    /// started, not even for a moment; then the link and the ecosystem file are put back.
    ///
    /// pm2 keeps the settings of a stopped app (environment, options, instances) and
    /// changes them only by starting it: a reload or restart of a stopped app starts
    /// it, and one started with `autostart: false` can then not be started by name. So
    /// settings that differ from the snapshot's stay, the record says which, and verify
    /// reports them: the rollback does not count as succeeded, and the app stays stopped.
    async fn restore_stopped(&self, ctx: &Context, part: &Part, want: &Want) -> Result<()> {
        let procs = self.procs(ctx).await?;
        if procs.iter().any(|p| is_running(&p.status)) {
            ctx.progress(format!("pm2 stop {} (stopped in the snapshot)", self.app));
            self.pm2(ctx, &["stop", &self.app]).await?;
        }
        if let (Some(t), Some(link)) = (part.state["target"].as_str().map(PathBuf::from), self.link_path()) {
            if self.read_target().ok().flatten().as_ref() != Some(&t) {
                ctx.progress(format!("{} -> {}", link.display(), t.display()));
                blocking(move || swap_link(&link, &t)).await?;
            }
        }
        if let Some(a) = part.artifact("ecosystem").filter(|_| self.ecosystem.is_some()) {
            let bytes = ctx.store.read_artifact(a)?;
            if self.ecosystem_content().ok().flatten().as_ref() != Some(&bytes) {
                self.write_ecosystem(bytes).await?;
            }
        }
        let raw = self.raw_procs(ctx).await?;
        let mut left = self.process_drift(&raw.iter().map(Proc::from_json).collect::<Vec<_>>(), want, None);
        left.extend(settings_drift(&raw, want));
        if !left.is_empty() {
            ctx.note(format!(
                "app `{}` is stopped as in the snapshot, but pm2 holds settings for it that differ from the \
                 snapshot's ({}): pm2 changes them only by starting the app, which the snapshot has stopped; \
                 `pm2 delete` and a start from the ecosystem file apply them",
                self.app,
                left.join("; ")
            ));
        }
        Ok(())
    }

    async fn verify_inner(&self, ctx: &Context, part: &Part) -> Result<Drift> {
        let want = self.want(ctx, part)?;
        let mut d = Vec::new();
        if let Some(t) = part.state["target"].as_str() {
            match self.read_target() {
                Ok(Some(cur)) if cur == Path::new(t) => {}
                Ok(Some(cur)) => d.push(format!("the release link points at {}, the snapshot has {t}", cur.display())),
                Ok(None) => d.push("no `releases` configured, the snapshot has a release link".into()),
                Err(e) => d.push(e.to_string()),
            }
        }
        let raw = self.raw_procs(ctx).await?;
        d.extend(self.process_drift(&raw.iter().map(Proc::from_json).collect::<Vec<_>>(), &want, None));
        d.extend(settings_drift(&raw, &want));
        if let (Some(a), Some(_)) = (part.artifact("ecosystem"), &self.ecosystem) {
            let cur = self.ecosystem_content()?.unwrap_or_default();
            let sum = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&cur));
            if sum != a.sha256 {
                d.push("the ecosystem file differs".into());
            }
        }
        Ok(Drift::from_differences(d))
    }
}

#[async_trait]
impl Driver for Pm2Driver {
    fn name(&self) -> &str {
        "pm2"
    }

    fn capability(&self) -> Capability {
        Capability { lifecycle: true, idempotent_restore: true, ..Default::default() }
    }

    async fn capture(&self, ctx: &Context) -> Result<Captured> {
        self.capture_inner(ctx).await
    }

    async fn preflight(&self, ctx: &Context, part: &Part) -> Result<()> {
        let r = async {
            self.want(ctx, part)?;
            if let Some(dir) = part.state["release_dir"].as_str() {
                if !Path::new(dir).is_dir() {
                    return Err(Error::not_found(format!("release directory {dir} is gone")));
                }
                if self.releases.is_none() {
                    return Err(Error::config("the snapshot has a release link but no `releases` is configured"));
                }
            }
            self.procs(ctx).await.map(|_| ())
        };
        r.await
    }

    async fn restore(&self, ctx: &Context, part: &Part) -> Result<()> {
        self.restore_inner(ctx, part).await
    }

    async fn verify(&self, ctx: &Context, part: &Part) -> Result<Drift> {
        self.verify_inner(ctx, part).await
    }

    async fn stop(&self, ctx: &Context) -> Result<()> {
        ctx.progress(format!("pm2 stop {}", self.app));
        self.pm2(ctx, &["stop", &self.app]).await.map(|_| ())
    }

    async fn start(&self, ctx: &Context) -> Result<()> {
        ctx.progress(format!("pm2 start {}", self.app));
        self.pm2(ctx, &["start", &self.app]).await.map(|_| ())
    }

    fn describe_restore(&self, part: &Part) -> String {
        let release =
            part.state["release"].as_str().map(|r| format!("point the release link at {r}, ")).unwrap_or_default();
        let procs = part.state["processes"].as_array().cloned().unwrap_or_default();
        let stopped = procs.iter().filter(|p| !p["status"].as_str().is_some_and(is_running)).count();
        if !procs.is_empty() && stopped == procs.len() {
            return format!(
                "pm2 stop `{}` (stopped in the snapshot; never started), {release}put the ecosystem file back; \
                 settings pm2 holds for the stopped app that differ from the snapshot's stay (pm2 changes them only \
                 by starting it) and are reported",
                self.app
            );
        }
        let mode = part.state["exec_mode"].as_str().unwrap_or("");
        let instances = part.state["instances"]
            .as_u64()
            .map(|n| format!(" ({n} instance{}, {mode})", if n == 1 { "" } else { "s" }))
            .unwrap_or_default();
        let how = if mode == "fork_mode" {
            "fork mode: pm2 reloads by restarting each process, so requests to a process are refused while it \
             restarts"
        } else {
            "one worker at a time, each replaced once its successor listens: no request refused"
        };
        format!(
            "{release}pm2 reload `{}`{instances} from the snapshot's declaration and environment ({how}; `pm2 scale` \
             when the instance count differs); restarted instead (pm2 delete + start: requests refused until it is \
             up, noted in the record) when it runs in another exec mode or with environment variables the snapshot \
             lacks, which a reload cannot change; wait until every process is online{}{}",
            self.app,
            part.state["processes"][0]["version"].as_str().map(|v| format!(" with version {v}")).unwrap_or_default(),
            if stopped > 0 {
                format!(", then stop {stopped} process(es) stopped in the snapshot")
            } else {
                String::new()
            }
        )
    }

    async fn check(&self, ctx: &Context) -> Result<String> {
        let procs = self.procs(ctx).await?;
        let online = procs.iter().filter(|p| p.status == "online").count();
        Ok(format!("pm2 app `{}`: {online}/{} online (PM2_HOME {})", self.app, procs.len(), self.pm2_home_desc()))
    }

    /// Restarts of the app's processes after they crashed (exited when nobody asked
    /// them to), counted by this driver across calls (see [`CrashTally`]): a reload, a
    /// `pm2 restart`, a `cron_restart` or a watched file are not counted. The first call
    /// only takes stock.
    async fn restarts(&self, ctx: &Context) -> Result<Option<u64>> {
        let raw = self.raw_procs(ctx).await?;
        Ok(Some(self.crashes.lock().unwrap_or_else(|e| e.into_inner()).observe(&raw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One process of `pm2 jlist` with the fields the tally reads.
    fn proc(id: i64, created_at: i64, uptime: i64, restart_time: u64) -> Value {
        json!({ "pm_id": id, "pm2_env": { "created_at": created_at, "pm_uptime": uptime, "restart_time": restart_time } })
    }

    #[test]
    fn crashes_count_and_restarts_asked_for_do_not() {
        let mut t = CrashTally::default();
        assert_eq!(t.observe(&[proc(0, 100, 100, 0)]), 0, "the first look only takes stock");
        // Two crashes: pm2 started it again, `created_at` stayed.
        assert_eq!(t.observe(&[proc(0, 100, 900, 2)]), 2);
        // A reload: `created_at` and the count change together.
        assert_eq!(t.observe(&[proc(0, 1000, 1000, 3)]), 2);
        // `pm2 restart` / `cron_restart` seen while the old process stops: `created_at`
        // is new, the count not yet grown; it grows in the next interval.
        assert_eq!(t.observe(&[proc(0, 2000, 1000, 3)]), 2);
        assert_eq!(t.observe(&[proc(0, 2000, 2600, 4)]), 2);
        // Several restarts asked for in one interval, crashes or not: none counted.
        assert_eq!(t.observe(&[proc(0, 5000, 5100, 9)]), 2);
        // A crash after that counts again.
        assert_eq!(t.observe(&[proc(0, 5000, 6000, 10)]), 3);
        // A restart asked for of a process that was not running adds nothing: once it
        // has started, nothing is owed any more.
        assert_eq!(t.observe(&[proc(0, 7000, 7100, 10)]), 3);
        assert_eq!(t.observe(&[proc(0, 7000, 8000, 11)]), 4);
    }

    #[test]
    fn a_reused_pm_id_and_reload_leftovers_are_not_counted() {
        let mut t = CrashTally::default();
        t.observe(&[proc(0, 100, 100, 5), proc(1, 100, 100, 5)]);
        // The app deleted and started again: ids reused, counts from 0; and the worker a
        // reload replaces listed as `_old_1`.
        let old = json!({ "pm_id": "_old_1", "pm2_env": { "created_at": 1, "pm_uptime": 1, "restart_time": 50 } });
        assert_eq!(t.observe(&[proc(0, 900, 900, 0), proc(1, 900, 900, 1), old]), 0);
        assert_eq!(t.observe(&[proc(0, 900, 950, 1), proc(1, 900, 900, 1)]), 1);
    }

    #[test]
    fn running_statuses() {
        assert!(is_running("online") && is_running("launching") && is_running("waiting restart"));
        assert!(!is_running("stopped") && !is_running("errored") && !is_running("stopping"));
    }
}
