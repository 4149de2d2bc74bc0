//! Watch: the runbooks' triggers, run by the tool. Probes run every `interval`; each
//! reading is rated by the decision matrix (or a probe's own bound); a probe that is
//! bad in `failure_limit` of the last `window` readings decides, and the policy for
//! that severity says whether to roll back, notify or ignore.
//!
//! One bad reading never rolls back. A watch rolls back at most once: after a
//! rollback (whatever its status) it stops, so a rollback that does not cure the
//! symptom cannot loop.
//!
//! A watch judges the deployed version: a log is read from where it ended when the
//! watch started, and only heartbeats written since then count. It ends on time: a
//! round still running when `--for` runs out or the watch is stopped is abandoned, and
//! its probes' processes are ended.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{duration_from_secs, parse_duration};
use crate::decision::{Severity, Thresholds};
use crate::error::{Error, Result};
use crate::event::{Event, EventCallback, EventKind, EventSink, EventStatus};
use crate::exec::{CancelToken, RollbackOptions};
use crate::health::{Headers, HealthCheck, HealthKind};
use crate::notify::{Notification, Notifier};
use crate::plan::Scope;
use crate::record::Record;
use crate::stack::Stack;

crate::names::word_enum! {
    /// What a policy does at a severity.
    pub enum PolicyAction ("policy action") {
        /// Roll back to the watched snapshot, then stop watching.
        Rollback = "rollback",
        /// Send a `watch` notification and keep watching.
        Notify = "notify",
        /// Only log it.
        Ignore = "ignore",
    }
}

/// What to do at each severity (`[watch.policy]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Default: roll back.
    pub critical: PolicyAction,
    /// Default: roll back.
    pub high: PolicyAction,
    /// Default: notify.
    pub medium: PolicyAction,
    /// Default: ignore.
    pub low: PolicyAction,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            critical: PolicyAction::Rollback,
            high: PolicyAction::Rollback,
            medium: PolicyAction::Notify,
            low: PolicyAction::Ignore,
        }
    }
}

impl Policy {
    /// The action at `s`.
    pub fn at(&self, s: Severity) -> PolicyAction {
        match s {
            Severity::Critical => self.critical,
            Severity::High => self.high,
            Severity::Medium => self.medium,
            Severity::Low => self.low,
        }
    }
}

/// The `[watch]` table of `rollback.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchConfig {
    /// Time between rounds of probes.
    pub interval: Duration,
    /// How many of the latest readings of a probe are weighed.
    pub window: usize,
    /// How many of them must be bad to decide.
    pub failure_limit: usize,
    /// Rounds at the start that measure the latency baseline (`perf = true` probes).
    pub baseline: usize,
    /// What to do at each severity.
    pub policy: Policy,
    /// The probes.
    pub probes: Vec<Probe>,
}

/// One `[[watch.probe]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// Its name in decisions and records.
    pub name: String,
    /// What it reads.
    pub kind: ProbeKind,
    /// How long one reading may take (default: the interval, at least 5 s).
    pub timeout: Option<Duration>,
    /// Severity of a failed reading, or of a crossed `bounds` entry (default: from
    /// the symptom, else high).
    pub severity: Severity,
    /// What a failed reading means: `security`, `data_loss`, `data_corruption`,
    /// `error_rate`, or a name of the operator's own. Named in decisions.
    pub symptom: Option<String>,
    /// This probe's own failure limit.
    pub failure_limit: Option<usize>,
    /// Metrics with a bound of their own: `accuracy < 0.5`.
    pub bounds: BTreeMap<String, Bound>,
}

/// The kinds of probe. `Debug` shows an http URL without its user info.
#[derive(Clone, PartialEq)]
pub enum ProbeKind {
    /// GET a URL: status, latency, numbers from the JSON body.
    Http {
        /// `http://…` or `https://…`.
        url: String,
        /// Expected status.
        status: u16,
        /// Request headers.
        headers: Headers,
        /// A CA file (PEM) trusted instead of the system's roots.
        ca: Option<PathBuf>,
        /// Symptom or metric name → path in the JSON body (`stats.error_rate`).
        metrics: BTreeMap<String, String>,
        /// Rate performance degradation against the latency measured at the start.
        perf: bool,
    },
    /// Lines of a log matching a regular expression, counted over the window.
    Log {
        /// The log file (rotation and truncation are followed).
        file: PathBuf,
        /// What counts.
        regex: String,
        /// Most matches tolerated within the window.
        threshold: u64,
    },
    /// A file's age.
    Heartbeat {
        /// The heartbeat file.
        file: PathBuf,
        /// Oldest acceptable beat.
        max_age: Duration,
    },
    /// A program: its exit status, or a number it prints (`metric`).
    Command {
        /// Program and arguments, no shell.
        argv: Vec<String>,
        /// The metric its last line of stdout is the value of.
        metric: Option<String>,
    },
    /// Restarts of a pm2 or docker component's processes within the window.
    Process {
        /// The component.
        component: String,
        /// Most restarts tolerated within the window.
        restarts: u64,
    },
}

impl std::fmt::Debug for ProbeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeKind::Http { url, status, headers, ca, metrics, perf } => f
                .debug_struct("Http")
                .field("url", &crate::health::redact_userinfo(url))
                .field("status", status)
                .field("headers", headers)
                .field("ca", ca)
                .field("metrics", metrics)
                .field("perf", perf)
                .finish(),
            ProbeKind::Log { file, regex, threshold } => {
                f.debug_struct("Log").field("file", file).field("regex", regex).field("threshold", threshold).finish()
            }
            ProbeKind::Heartbeat { file, max_age } => {
                f.debug_struct("Heartbeat").field("file", file).field("max_age", max_age).finish()
            }
            ProbeKind::Command { argv, metric } => {
                f.debug_struct("Command").field("argv", argv).field("metric", metric).finish()
            }
            ProbeKind::Process { component, restarts } => {
                f.debug_struct("Process").field("component", component).field("restarts", restarts).finish()
            }
        }
    }
}

/// A comparison that makes a metric bad: `< 0.5`, `> 2.0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    /// `<`, `<=`, `>`, `>=`.
    pub op: &'static str,
    /// The bound.
    pub value: f64,
}

impl Bound {
    fn parse(s: &str) -> std::result::Result<Bound, String> {
        let t = s.trim();
        for op in ["<=", ">=", "<", ">"] {
            if let Some(rest) = t.strip_prefix(op) {
                let value: f64 =
                    rest.trim().parse().map_err(|_| format!("`{s}`: `{}` is not a number", rest.trim()))?;
                if !value.is_finite() {
                    return Err(format!("`{s}`: the bound must be a finite number"));
                }
                return Ok(Bound { op, value });
            }
        }
        Err(format!("`{s}` must be a comparison such as \"< 0.5\" or \"> 2.0\""))
    }

    /// The value crosses the bound (is bad).
    pub fn crossed(&self, v: f64) -> bool {
        match self.op {
            "<" => v < self.value,
            "<=" => v <= self.value,
            ">" => v > self.value,
            _ => v >= self.value,
        }
    }
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.op, num(self.value))
    }
}

/// The least time a reading gets when its probe sets no `timeout`.
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest `interval` and probe `timeout`: a longer one is a typo for a shorter
/// unit, and would leave a deploy unwatched for that long.
const MAX_WATCH_DURATION: Duration = Duration::from_secs(24 * 3600);

/// How often a watch looks at its stop signal and its deadline, in a round of probes
/// as between rounds: it ends within this (and the few milliseconds it takes to end
/// the probes' processes) of being stopped or of the end of `--for`.
const STOP_POLL: Duration = Duration::from_millis(50);

/// The end of a command probe's stdout that is kept (its last line is the metric) and
/// of its stderr (its last line is the reason of a failed reading).
const PROBE_OUTPUT_LIMIT: usize = 4096;

/// The symptoms the decision matrix rates by itself (`[decision]` thresholds).
const MATRIX: &[&str] = &["error_rate", "perf_degradation", "latency_ms"];

fn num(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_string()
    }
}

type Map = serde_json::Map<String, serde_json::Value>;

fn take_dur(m: &mut Map, k: &str) -> std::result::Result<Option<Duration>, String> {
    match m.remove(k) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => parse_duration(&s).map(Some).map_err(|e| format!("`{k}`: {e}")),
        Some(serde_json::Value::Number(n)) => {
            duration_from_secs(n.as_f64().unwrap_or(f64::NAN)).map(Some).map_err(|e| format!("`{k}`: {e}"))
        }
        Some(o) => Err(format!("`{k}` = {o} is not a duration")),
    }
}

fn take_str(m: &mut Map, k: &str) -> std::result::Result<Option<String>, String> {
    match m.remove(k) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(o) => Err(format!("`{k}` = {o} must be a string")),
    }
}

fn take_count(m: &mut Map, k: &str, min: u64) -> std::result::Result<Option<u64>, String> {
    match m.remove(k) {
        None => Ok(None),
        Some(serde_json::Value::Number(n)) if n.as_u64().is_some_and(|v| v >= min && v <= 1_000_000) => Ok(n.as_u64()),
        Some(o) => Err(format!("`{k}` = {o} must be a whole number from {min} to 1000000")),
    }
}

fn take_bool(m: &mut Map, k: &str) -> std::result::Result<Option<bool>, String> {
    match m.remove(k) {
        None => Ok(None),
        Some(serde_json::Value::Bool(b)) => Ok(Some(b)),
        Some(o) => Err(format!("`{k}` = {o} must be true or false")),
    }
}

fn parse_severity(s: &str) -> std::result::Result<Severity, String> {
    s.parse::<Severity>().map_err(|e| e.message().to_string())
}

fn valid_metric(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl WatchConfig {
    /// Parses `[watch]` (already `${ENV}`-expanded); `at` is `file:line` of the table,
    /// `probe_at(i)` of the i-th probe, for errors.
    pub(crate) fn parse(
        mut m: Map,
        at: &str,
        probe_at: &dyn Fn(usize) -> String,
    ) -> std::result::Result<WatchConfig, Error> {
        let bad = |msg: String| Error::config(format!("{at}: [watch]: {msg}"));
        let interval = take_dur(&mut m, "interval").map_err(bad)?.unwrap_or(Duration::from_secs(10));
        if interval < Duration::from_millis(100) {
            return Err(bad("`interval` must be at least 100ms".into()));
        }
        if interval > MAX_WATCH_DURATION {
            return Err(bad(format!("`interval` = {} is more than a day", humantime::format_duration(interval))));
        }
        let window = take_count(&mut m, "window", 1).map_err(bad)?.unwrap_or(4) as usize;
        let failure_limit = take_count(&mut m, "failure_limit", 1).map_err(bad)?.unwrap_or(3) as usize;
        if failure_limit > window {
            return Err(bad(format!(
                "`failure_limit` = {failure_limit} is more than `window` = {window}: no window could ever decide"
            )));
        }
        let baseline = take_count(&mut m, "baseline", 1).map_err(bad)?.unwrap_or(3) as usize;
        let mut policy = Policy::default();
        match m.remove("policy") {
            None => {}
            Some(serde_json::Value::Object(p)) => {
                for (k, v) in p {
                    let action = match v.as_str().map(str::parse::<PolicyAction>) {
                        Some(Ok(a)) => a,
                        _ => {
                            return Err(bad(format!(
                                "`policy.{k}` = {v} must be \"rollback\", \"notify\" or \"ignore\""
                            )))
                        }
                    };
                    match parse_severity(&k).map_err(|e| bad(format!("`policy.{k}`: {e}")))? {
                        Severity::Critical => policy.critical = action,
                        Severity::High => policy.high = action,
                        Severity::Medium => policy.medium = action,
                        Severity::Low => policy.low = action,
                    }
                }
            }
            Some(o) => return Err(bad(format!("`policy` = {o} must be a table like {{ medium = \"notify\" }}"))),
        }
        let probes = match m.remove("probe") {
            None => Vec::new(),
            Some(serde_json::Value::Array(a)) => a,
            Some(_) => return Err(bad("`probe` must be [[watch.probe]] tables".into())),
        };
        if let Some(k) = m.keys().next() {
            return Err(bad(format!(
                "unknown key `{k}` (keys: interval, window, failure_limit, baseline, policy, probe)"
            )));
        }
        let mut out = Vec::new();
        for (i, p) in probes.into_iter().enumerate() {
            let at = probe_at(i);
            let probe = Probe::parse(p, i).map_err(|(name, m)| match name {
                Some(n) => Error::config(format!("{at}: [[watch.probe]] `{n}`: {m}")),
                None => Error::config(format!("{at}: [[watch.probe]]: {m}")),
            })?;
            if let Some(f) = probe.failure_limit {
                if f > window {
                    return Err(Error::config(format!(
                        "{at}: [[watch.probe]] `{}`: `failure_limit` = {f} is more than the window ({window})",
                        probe.name
                    )));
                }
            }
            if out.iter().any(|o: &Probe| o.name == probe.name) {
                return Err(Error::config(format!("{at}: [[watch.probe]]: two probes are named `{}`", probe.name)));
            }
            out.push(probe);
        }
        if out.is_empty() {
            return Err(bad("no probes: add [[watch.probe]] tables (http, log, heartbeat, command, process)".into()));
        }
        Ok(WatchConfig { interval, window, failure_limit, baseline, policy, probes: out })
    }
}

impl Probe {
    fn parse(v: serde_json::Value, i: usize) -> std::result::Result<Probe, (Option<String>, String)> {
        let serde_json::Value::Object(mut m) = v else {
            return Err((None, "must be a table".into()));
        };
        let name = match take_str(&mut m, "name").map_err(|e| (None, e))? {
            Some(n) if crate::config::valid_name(&n) => n,
            Some(n) => return Err((None, format!("`{n}` is not a valid name (letters, digits, `-`, `_`, `.`)"))),
            None => format!("probe{}", i + 1),
        };
        let named = name.clone();
        Self::parse_named(name, &mut m).map_err(|e| (Some(named), e))
    }

    fn parse_named(name: String, m: &mut Map) -> std::result::Result<Probe, String> {
        let timeout = take_dur(m, "timeout")?;
        if timeout.is_some_and(|t| t.is_zero()) {
            return Err("`timeout` must be more than 0".into());
        }
        if let Some(t) = timeout.filter(|t| *t > MAX_WATCH_DURATION) {
            return Err(format!("`timeout` = {} is more than a day", humantime::format_duration(t)));
        }
        let symptom = take_str(m, "symptom")?;
        if let Some(sym) = &symptom {
            if !valid_metric(sym) {
                return Err(format!("`symptom` = \"{sym}\" is not a symptom name (letters, digits, `_`)"));
            }
        }
        // The decision matrix's own rows: a security issue and data loss are critical,
        // corruption high. Anything else a probe reports is high unless it says.
        let by_symptom = match symptom.as_deref() {
            Some("security" | "data_loss") => Severity::Critical,
            _ => Severity::High,
        };
        let severity = take_str(m, "severity")?.map(|s| parse_severity(&s)).transpose()?.unwrap_or(by_symptom);
        let failure_limit = take_count(m, "failure_limit", 1)?.map(|v| v as usize);
        let bounds: BTreeMap<String, Bound> = match m.remove("bounds") {
            None => BTreeMap::new(),
            Some(serde_json::Value::Object(o)) => o
                .into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => Bound::parse(&s).map(|b| (k, b)),
                    o => Err(format!("`bounds.{k}` = {o} must be a string like \"< 0.5\"")),
                })
                .collect::<std::result::Result<_, String>>()?,
            Some(o) => return Err(format!("`bounds` = {o} must be a table like {{ accuracy = \"< 0.5\" }}")),
        };
        let kind = if let Some(url) = take_str(m, "http")? {
            // The health check parser knows URLs, headers and CA files; reuse it.
            let mut h = Map::new();
            h.insert("http".into(), url.clone().into());
            for k in ["status", "headers", "ca"] {
                if let Some(v) = m.remove(k) {
                    h.insert(k.into(), v);
                }
            }
            let check = HealthCheck::parse_list(serde_json::Value::Object(h))?.remove(0);
            let HealthKind::Http { url, status, headers, ca, .. } = check.kind else {
                return Err("not an http probe".into());
            };
            let metrics: BTreeMap<String, String> = match m.remove("metrics") {
                None => BTreeMap::new(),
                Some(serde_json::Value::Object(o)) => o
                    .into_iter()
                    .map(|(k, v)| match v {
                        serde_json::Value::String(p) if !p.is_empty() && !p.split('.').any(str::is_empty) => Ok((k, p)),
                        o => Err(format!(
                            "`metrics.{k}` = {o} must be a path in the JSON body, like \"stats.error_rate\""
                        )),
                    })
                    .collect::<std::result::Result<_, String>>()?,
                Some(o) => {
                    return Err(format!("`metrics` = {o} must be a table like {{ error_rate = \"stats.error_rate\" }}"))
                }
            };
            let perf = take_bool(m, "perf")?.unwrap_or(false);
            ProbeKind::Http { url, status, headers, ca, metrics, perf }
        } else if let Some(file) = take_str(m, "log")? {
            let regex = take_str(m, "regex")?.unwrap_or_else(|| "ERROR|CRITICAL".into());
            regex::Regex::new(&regex).map_err(|e| format!("`regex`: {e}"))?;
            let threshold = take_count(m, "threshold", 0)?.unwrap_or(10);
            ProbeKind::Log { file: file.into(), regex, threshold }
        } else if let Some(file) = take_str(m, "heartbeat")? {
            let max_age = take_dur(m, "max_age")?.unwrap_or(Duration::from_secs(60));
            ProbeKind::Heartbeat { file: file.into(), max_age }
        } else if let Some(c) = m.remove("command") {
            let argv: Vec<String> =
                serde_json::from_value(c).map_err(|_| "`command` must be an argv list of strings".to_string())?;
            if argv.is_empty() || argv[0].is_empty() {
                return Err("`command` must not be empty".into());
            }
            let metric = take_str(m, "metric")?;
            ProbeKind::Command { argv, metric }
        } else if let Some(component) = take_str(m, "process")? {
            let restarts = take_count(m, "restarts", 0)?.unwrap_or(1);
            ProbeKind::Process { component, restarts }
        } else {
            return Err("a probe needs one of http, log, heartbeat, command, process".into());
        };
        if let Some(k) = m.keys().next() {
            return Err(format!("unknown key `{k}` for this kind of probe"));
        }
        // Every metric must be rated by something: the matrix or a bound of its own.
        let metrics: Vec<&str> = match &kind {
            ProbeKind::Http { metrics, .. } => metrics.keys().map(String::as_str).collect(),
            ProbeKind::Command { metric: Some(n), .. } => vec![n.as_str()],
            _ => Vec::new(),
        };
        for n in &metrics {
            if !valid_metric(n) {
                return Err(format!("`{n}` is not a metric name (letters, digits, `_`)"));
            }
            if !MATRIX.contains(n) && !bounds.contains_key(*n) {
                return Err(format!(
                    "metric `{n}` has no bound: add `bounds = {{ {n} = \"< 0.5\" }}` (or name it error_rate, \
                     perf_degradation or latency_ms for the decision matrix)"
                ));
            }
        }
        let measured = |b: &str| metrics.contains(&b) || (matches!(kind, ProbeKind::Http { .. }) && b == "latency_ms");
        if let Some(b) = bounds.keys().find(|b| !measured(b)) {
            return Err(format!("`bounds.{b}`: this probe does not read a metric named `{b}`"));
        }
        Ok(Probe { name, kind, timeout, severity, symptom, failure_limit, bounds })
    }

    /// A short description for events and records.
    pub fn describe(&self) -> String {
        match &self.kind {
            ProbeKind::Http { url, .. } => {
                let shown = reqwest::Url::parse(url)
                    .map(|u| format!("{}://{}{}", u.scheme(), u.host_str().unwrap_or("?"), u.path()))
                    .unwrap_or_else(|_| "(url)".into());
                format!("http {shown}")
            }
            ProbeKind::Log { file, regex, threshold } => {
                format!("log {} /{regex}/ ≤ {threshold} per window", file.display())
            }
            ProbeKind::Heartbeat { file, max_age } => {
                format!("heartbeat {} < {}", file.display(), humantime::format_duration(*max_age))
            }
            ProbeKind::Command { argv, .. } => format!("command {}", argv[0]),
            ProbeKind::Process { component, restarts } => {
                format!("process {component} ≤ {restarts} restart(s) per window")
            }
        }
    }
}

/// One reading of one probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// The probe.
    pub probe: String,
    /// When it was read.
    pub at: DateTime<Utc>,
    /// Whether it counts against the deploy.
    pub bad: bool,
    /// How bad (low when good).
    pub severity: Severity,
    /// What was seen: `error_rate 0.34 ≥ 0.25 (high)`, `status 500, expected 200`.
    pub detail: String,
    /// The numbers read (metrics, `latency_ms`, `perf_degradation`, counts).
    pub values: BTreeMap<String, f64>,
}

/// A decision of the watch: a probe bad in enough of its window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchDecision {
    /// The probe that decided.
    pub probe: String,
    /// The severity its window reached.
    pub severity: Severity,
    /// What the policy says at that severity.
    pub action: PolicyAction,
    /// `api: error_rate 0.34 ≥ 0.25 (high) in 3 of the last 4 probes`.
    pub reason: String,
    /// Bad readings in the window, and the window.
    pub bad: usize,
    /// Readings weighed.
    pub window: usize,
    /// The values of the latest bad reading.
    pub values: BTreeMap<String, f64>,
    /// The first bad reading among those counted.
    pub first_bad_at: DateTime<Utc>,
    /// When the watch decided.
    pub decided_at: DateTime<Utc>,
    /// From the first bad reading to the decision (to the rollback's start, when it rolls back).
    pub detect_ms: u64,
    /// Decided in a dry run: nothing was changed.
    #[serde(default)]
    pub dry_run: bool,
}

crate::names::word_enum! {
    /// How a watch ended.
    pub enum WatchOutcome ("watch outcome") {
        /// `--for` ran out with no rollback.
        Elapsed = "elapsed",
        /// Stopped (Ctrl-C, SIGTERM, cancel) with no rollback.
        Stopped = "stopped",
        /// It rolled back (see the record's status).
        RolledBack = "rolled_back",
        /// Dry run: it would have rolled back; nothing was changed.
        WouldRollBack = "would_roll_back",
        /// It decided to roll back and the rollback could not start (see `error`).
        Failed = "failed",
    }
}

/// What a watch did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchReport {
    /// How it ended.
    pub outcome: WatchOutcome,
    /// The snapshot it watched over.
    pub snapshot_id: String,
    /// Rounds of probes run to their end (not one abandoned by a stop or the end of `--for`).
    pub rounds: u64,
    /// When it started and ended.
    pub start_time: DateTime<Utc>,
    /// End.
    pub end_time: DateTime<Utc>,
    /// Every decision, in order (notifications and the rollback).
    pub decisions: Vec<WatchDecision>,
    /// The rollback's record, when it rolled back.
    pub record: Option<Record>,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Notifications that could not be delivered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undelivered: Vec<String>,
}

impl WatchReport {
    /// Ended with no rollback decided (exit 0 of `rollback watch`).
    pub fn clean(&self) -> bool {
        matches!(self.outcome, WatchOutcome::Elapsed | WatchOutcome::Stopped)
    }
}

/// Options of [`Stack::watch`].
#[derive(Clone, Default)]
pub struct WatchOptions {
    /// The snapshot to roll back to (default `last-good`).
    pub snapshot: Option<String>,
    /// Which components a rollback puts back.
    pub scope: Scope,
    /// Watch this long, then stop (a deploy window); none: until cancelled.
    pub duration: Option<Duration>,
    /// Decide and notify; change nothing.
    pub dry_run: bool,
    /// Receives `watch_*` events, then the rollback's.
    pub on_event: Option<EventCallback>,
    /// Stops the watch (and a rollback it started, at a step boundary).
    pub cancel: CancelToken,
}

impl std::fmt::Debug for WatchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchOptions")
            .field("snapshot", &self.snapshot)
            .field("scope", &self.scope)
            .field("duration", &self.duration)
            .field("dry_run", &self.dry_run)
            .finish()
    }
}

/// A probe's state between rounds.
struct ProbeState {
    readings: VecDeque<Reading>,
    /// Log probes: the followed file and the matches of each round in the window.
    log: Option<LogFollower>,
    counts: VecDeque<u64>,
    /// Latencies of the first rounds, then their median.
    baseline: Vec<f64>,
    baseline_ms: Option<f64>,
    /// Severity last notified for this probe; cleared when it is good again.
    notified: Option<Severity>,
    /// Whether the previous reading was bad (events on a change only).
    was_bad: Option<bool>,
    /// Process probes: the restart count at each round of the window.
    restart_counts: VecDeque<u64>,
}

impl Stack {
    /// Watches the stack with the `[watch]` probes and rolls back (or notifies) when
    /// the policy says so. Returns when `duration` runs out, `cancel` is set, or after
    /// a rollback; errors only on bad input (no `[watch]`, unknown snapshot).
    pub async fn watch(&self, opts: WatchOptions) -> Result<WatchReport> {
        let cfg = self
            .config()
            .watch
            .clone()
            .ok_or_else(|| Error::config("no [watch] table in the config: add one with [[watch.probe]] entries"))?;
        let snapshot = opts.snapshot.clone().unwrap_or_else(|| "last-good".into());
        let snap = self.resolve_target(&snapshot)?;
        self.build_plan(&snap, &opts.scope)?;
        // A watch that could not roll back when it decides to is no watch: say so now.
        if let Some(j) = crate::exec::unfinished_journals(self)?.into_iter().next() {
            let id = j.rollback_id();
            return Err(Error::new(
                crate::ErrorKind::Locked,
                format!(
                    "rollback {id} is unfinished, so a watch could not roll back: finish it with \
                     `rollback resume {id}`, or give it up with `rollback abandon {id}`"
                ),
            ));
        }
        for p in &cfg.probes {
            if let ProbeKind::Process { component, .. } = &p.kind {
                let d = self
                    .driver(component)
                    .map_err(|e| Error::config(format!("[[watch.probe]] `{}`: {}", p.name, e.message())))?;
                if d.restarts(&self.context(component, &snap.id)).await?.is_none() {
                    return Err(Error::config(format!(
                        "[[watch.probe]] `{}`: component `{component}` (driver {}) runs no processes whose \
                         restarts can be counted; process probes take pm2 and docker components",
                        p.name,
                        d.name()
                    )));
                }
            }
        }
        let events = EventSink::new(opts.on_event.clone());
        let notifier = Notifier::new(self.config().notify.clone(), self.config().redactor.clone());
        let start_time = Utc::now();
        let started = Instant::now();
        // None when out of the clock's range: no deadline a watch could reach.
        let deadline = opts.duration.and_then(|d| started.checked_add(d));
        // Heartbeats are judged from here: the deploy being watched wrote them.
        let watch_start = SystemTime::from(start_time);
        let mut states: Vec<ProbeState> = cfg
            .probes
            .iter()
            .map(|p| ProbeState {
                readings: VecDeque::new(),
                log: match &p.kind {
                    ProbeKind::Log { file, regex, .. } => {
                        Some(LogFollower::start(self.config().resolve(&file.to_string_lossy()), regex))
                    }
                    _ => None,
                },
                counts: VecDeque::new(),
                baseline: Vec::new(),
                baseline_ms: None,
                notified: None,
                was_bad: None,
                restart_counts: VecDeque::new(),
            })
            .collect();
        let mut report = WatchReport {
            outcome: WatchOutcome::Stopped,
            snapshot_id: snap.id.clone(),
            rounds: 0,
            start_time,
            end_time: start_time,
            decisions: Vec::new(),
            record: None,
            error: None,
            undelivered: Vec::new(),
        };
        let mut e = Event::new(
            EventKind::WatchStarted,
            format!(
                "watching {} probe(s) every {}; {} bad of the last {} decide; rolls back to {}{}",
                cfg.probes.len(),
                humantime::format_duration(cfg.interval),
                cfg.failure_limit,
                cfg.window,
                snap.id,
                if opts.dry_run { " (dry run: changes nothing)" } else { "" }
            ),
        );
        e.total = Some(cfg.probes.len());
        events.emit(e);
        tracing::info!(probes = cfg.probes.len(), snapshot = %snap.id, dry_run = opts.dry_run, "watch started");

        let mut next_round = Instant::now();
        'watch: loop {
            // Sleep to the next round in short steps: a cancel is seen within STOP_POLL.
            loop {
                if opts.cancel.is_cancelled() {
                    report.outcome = WatchOutcome::Stopped;
                    break 'watch;
                }
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    report.outcome = WatchOutcome::Elapsed;
                    break 'watch;
                }
                if now >= next_round {
                    break;
                }
                let until = deadline.map_or(next_round, |d| d.min(next_round));
                tokio::time::sleep(until.saturating_duration_since(now).min(STOP_POLL)).await;
            }
            next_round += cfg.interval;
            if next_round < Instant::now() {
                // A round that took longer than the interval: the next starts now, not
                // in a burst of rounds to catch up.
                next_round = Instant::now();
            }
            report.rounds += 1;
            let round = futures_util::future::join_all(cfg.probes.iter().zip(states.iter_mut()).map(|(p, st)| {
                // Default: the interval, but never under 5 s. A reading that is only slow
                // (`pm2 jlist` starts Node: half a second) is not a failed one; a slow
                // http answer is rated by its latency instead.
                let timeout = p.timeout.unwrap_or(cfg.interval.max(DEFAULT_PROBE_TIMEOUT));
                let (window, baseline) = (cfg.window, cfg.baseline);
                async move {
                    match tokio::time::timeout(timeout, self.read(p, st, window, baseline, watch_start)).await {
                        Ok(r) => r,
                        Err(_) => Raw::Failed(format!("no answer within {}", humantime::format_duration(timeout))),
                    }
                }
            }));
            // A stop or the end of the window does not wait for a round in progress (a
            // hung probe held a stop for its whole timeout, 14 s, and `--for 5s` ran
            // 6.2 s): the round is dropped, which ends its probes' process groups.
            let round = tokio::select! {
                r = round => r,
                _ = stop_or_deadline(&opts.cancel, deadline) => {
                    report.rounds -= 1;
                    report.outcome =
                        if opts.cancel.is_cancelled() { WatchOutcome::Stopped } else { WatchOutcome::Elapsed };
                    tracing::info!(outcome = report.outcome.as_str(), "watch: a round of probes was abandoned");
                    break 'watch;
                }
            };
            let thresholds = self.config().decision;
            for ((p, st), raw) in cfg.probes.iter().zip(states.iter_mut()).zip(round) {
                let mut reading = rate(p, raw, &thresholds);
                // A probe's URL or command may carry a `${ENV}` secret; an error quotes it.
                reading.detail = self.config().redactor.redact(&reading.detail);
                if st.was_bad != Some(reading.bad) || reading.bad {
                    let mut e = Event::new(EventKind::WatchProbe, format!("{}: {}", p.name, reading.detail));
                    e.probe = Some(p.name.clone());
                    e.status = Some(if reading.bad { EventStatus::Bad } else { EventStatus::Ok });
                    events.emit(e);
                }
                st.was_bad = Some(reading.bad);
                st.readings.push_back(reading);
                while st.readings.len() > cfg.window {
                    st.readings.pop_front();
                }
            }
            // Each probe's window is decided on its own: a probe bad at the same severity
            // as another (or a lower one) is notified too, not hidden behind it while it
            // stays bad. The worst decision to roll back, if any, rolls back.
            let mut rollback: Option<WatchDecision> = None;
            for (p, st) in cfg.probes.iter().zip(states.iter_mut()) {
                let limit = p.failure_limit.unwrap_or(cfg.failure_limit);
                let Some(mut d) = decide(p, &st.readings, limit, cfg.window, &cfg.policy) else {
                    st.notified = None;
                    continue;
                };
                d.dry_run = opts.dry_run;
                match d.action {
                    PolicyAction::Ignore => {
                        tracing::info!(probe = %d.probe, reason = %d.reason, "watch: ignored by policy");
                    }
                    PolicyAction::Notify => {
                        if st.notified.is_some_and(|s| s >= d.severity) {
                            continue;
                        }
                        st.notified = Some(d.severity);
                        self.announce_decision(&notifier, &events, &d, &snap.id);
                        report.decisions.push(d);
                    }
                    PolicyAction::Rollback => {
                        if rollback.as_ref().is_none_or(|b| d.severity > b.severity) {
                            rollback = Some(d);
                        }
                    }
                }
            }
            let Some(mut d) = rollback else { continue };
            match d.action {
                PolicyAction::Ignore | PolicyAction::Notify => {}
                PolicyAction::Rollback if opts.dry_run => {
                    self.announce_decision(&notifier, &events, &d, &snap.id);
                    report.decisions.push(d);
                    report.outcome = WatchOutcome::WouldRollBack;
                    break 'watch;
                }
                PolicyAction::Rollback => {
                    d.detect_ms = (Utc::now() - d.first_bad_at).num_milliseconds().max(0) as u64;
                    let mut e =
                        Event::new(EventKind::WatchDecision, format!("{} → rolling back to {}", d.reason, snap.id));
                    e.probe = Some(d.probe.clone());
                    e.status = Some(d.action.into());
                    events.emit(e);
                    tracing::warn!(probe = %d.probe, reason = %d.reason, "watch: rolling back");
                    report.decisions.push(d.clone());
                    let r = self
                        .rollback(
                            &snap.id,
                            RollbackOptions {
                                scope: opts.scope.clone(),
                                trigger: Some(format!("watch: {}", d.reason)),
                                severity: Some(d.severity),
                                on_event: opts.on_event.clone(),
                                cancel: opts.cancel.clone(),
                                watch: Some(d),
                                ..Default::default()
                            },
                        )
                        .await;
                    match r {
                        Ok(r) => {
                            report.outcome = WatchOutcome::RolledBack;
                            report.record = Some(r);
                        }
                        Err(e) => {
                            report.outcome = WatchOutcome::Failed;
                            report.error = Some(e.to_string());
                        }
                    }
                    break 'watch;
                }
            }
        }
        report.undelivered = notifier.flush().await;
        report.end_time = Utc::now();
        let mut e = Event::new(
            EventKind::WatchFinished,
            format!("watch {} after {} round(s)", report.outcome.as_str(), report.rounds),
        );
        e.status = Some(report.outcome.into());
        e.duration_ms = Some(started.elapsed().as_millis() as u64);
        events.emit(e);
        Ok(report)
    }

    fn announce_decision(&self, notifier: &Notifier, events: &EventSink, d: &WatchDecision, snapshot_id: &str) {
        let what = match (d.action, d.dry_run) {
            (PolicyAction::Rollback, true) => "would roll back (dry run: nothing was changed)".to_string(),
            (a, _) => a.as_str().to_string(),
        };
        let mut e = Event::new(EventKind::WatchDecision, format!("{} → {what}", d.reason));
        e.probe = Some(d.probe.clone());
        e.status = Some(d.action.into());
        events.emit(e);
        tracing::warn!(probe = %d.probe, reason = %d.reason, action = %what, "watch decided");
        let label = self.config().file.as_ref().map(|f| f.display().to_string());
        let stack = label.unwrap_or_else(|| self.config().base_dir.display().to_string());
        notifier.send(Notification::watch(d, &what, snapshot_id, &stack));
    }

    /// Takes one raw reading of `p`; `watch_start` is when the watch started.
    async fn read(
        &self,
        p: &Probe,
        st: &mut ProbeState,
        window: usize,
        baseline_rounds: usize,
        watch_start: SystemTime,
    ) -> Raw {
        let base = &self.config().base_dir;
        match &p.kind {
            ProbeKind::Http { url, status, headers, ca, metrics, perf } => {
                let ca = ca.as_ref().map(|c| base.join(c));
                let t0 = Instant::now();
                let (code, body) = match crate::health::http_get(url, headers, ca.as_deref()).await {
                    Ok(r) => r,
                    Err(e) => return Raw::Failed(e),
                };
                let latency = t0.elapsed().as_secs_f64() * 1000.0;
                if code != *status {
                    return Raw::Failed(format!("status {code}, expected {status}"));
                }
                let mut values = BTreeMap::new();
                values.insert("latency_ms".to_string(), latency);
                if *perf {
                    match st.baseline_ms {
                        Some(b) => {
                            values.insert("perf_degradation".into(), (1.0 - b / latency.max(0.001)).clamp(0.0, 1.0));
                        }
                        None => {
                            st.baseline.push(latency);
                            if st.baseline.len() >= baseline_rounds {
                                let mut v = st.baseline.clone();
                                v.sort_by(f64::total_cmp);
                                st.baseline_ms = Some(v[v.len() / 2].max(1.0));
                            }
                        }
                    }
                }
                if !metrics.is_empty() {
                    let v: serde_json::Value = match serde_json::from_slice(&body) {
                        Ok(v) => v,
                        Err(e) => return Raw::Failed(format!("body is not JSON: {e}")),
                    };
                    for (name, path) in metrics {
                        match crate::health::json_at(&v, path).and_then(serde_json::Value::as_f64) {
                            Some(x) => {
                                values.insert(name.clone(), x);
                            }
                            None => return Raw::Failed(format!("`{path}` is not a number in the body")),
                        }
                    }
                }
                Raw::Values(values)
            }
            ProbeKind::Log { threshold, .. } => {
                let Some(f) = st.log.as_mut() else { return Raw::Failed("no log follower".into()) };
                let n = match f.poll() {
                    Ok(n) => n,
                    Err(e) => return Raw::Failed(e),
                };
                st.counts.push_back(n);
                while st.counts.len() > window {
                    st.counts.pop_front();
                }
                let total: u64 = st.counts.iter().sum();
                let mut values = BTreeMap::new();
                values.insert("matches".to_string(), total as f64);
                if total > *threshold {
                    Raw::Over(format!("{total} matching lines in the window (more than {threshold})"), values)
                } else {
                    Raw::Values(values)
                }
            }
            ProbeKind::Heartbeat { file, max_age } => {
                let from = crate::health::BeatsFrom::Watch(watch_start);
                match crate::health::heartbeat(&base.join(file), *max_age, from).await {
                    Ok(_) => Raw::Values(BTreeMap::new()),
                    Err(why) => Raw::Failed(why),
                }
            }
            ProbeKind::Command { argv, metric } => match run_command(argv, base, metric.is_some()).await {
                Ok((true, out)) => match metric {
                    None => Raw::Values(BTreeMap::new()),
                    Some(m) => {
                        let last = out.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
                        match last.parse::<f64>() {
                            Ok(v) if v.is_finite() => Raw::Values(BTreeMap::from([(m.clone(), v)])),
                            _ => Raw::Failed(format!("printed `{}`, not a number for `{m}`", trunc(last, 80))),
                        }
                    }
                },
                Ok((false, why)) => Raw::Failed(why),
                Err(e) => Raw::Failed(e),
            },
            ProbeKind::Process { component, restarts: limit } => {
                let count = match self.driver(component) {
                    Ok(d) => d.restarts(&self.context(component, "")).await,
                    Err(e) => Err(e),
                };
                let count = match count {
                    Ok(Some(c)) => c,
                    Ok(None) => return Raw::Failed(format!("`{component}` has no restart count")),
                    Err(e) => return Raw::Failed(e.to_string()),
                };
                let restarts = &mut st.restart_counts;
                restarts.push_back(count);
                // The count at the start of the window: restarts since then.
                while restarts.len() > window + 1 {
                    restarts.pop_front();
                }
                let since = count.saturating_sub(restarts.iter().copied().min().unwrap_or(count));
                let values = BTreeMap::from([("restarts".to_string(), since as f64)]);
                if since > *limit {
                    Raw::Over(format!("{since} restarts within the window (more than {limit}): a crash loop"), values)
                } else {
                    Raw::Values(values)
                }
            }
        }
    }
}

/// A reading before it is rated.
enum Raw {
    /// The probe failed outright (down, wrong status, stale, exit ≠ 0, …).
    Failed(String),
    /// A count over its limit, with the numbers.
    Over(String, BTreeMap<String, f64>),
    /// Numbers, rated by the matrix or the probe's bounds.
    Values(BTreeMap<String, f64>),
}

/// Rates a raw reading: the matrix for error rate, degradation and latency; the
/// probe's bounds for the rest (and for a matrix symptom it bounds itself).
fn rate(p: &Probe, raw: Raw, t: &Thresholds) -> Reading {
    let at = Utc::now();
    let mk = |bad: bool, severity: Severity, detail: String, values: BTreeMap<String, f64>| Reading {
        probe: p.name.clone(),
        at,
        bad,
        severity,
        detail,
        values,
    };
    let failed = |why: String| {
        let sym = p.symptom.as_deref().map(|s| format!("{}: ", s.replace('_', " "))).unwrap_or_default();
        format!("{sym}{why} ({})", p.severity.as_str())
    };
    let values = match raw {
        Raw::Failed(why) => return mk(true, p.severity, failed(why), BTreeMap::new()),
        Raw::Over(why, values) => return mk(true, p.severity, failed(why), values),
        Raw::Values(v) => v,
    };
    let mut worst: Option<(Severity, String)> = None;
    let mut seen = Vec::new();
    for (name, &v) in &values {
        let rated = if let Some(b) = p.bounds.get(name) {
            b.crossed(v).then(|| (p.severity, format!("{name} {} {b}", num(v))))
        } else {
            match name.as_str() {
                "error_rate" | "perf_degradation" if !(0.0..=1.0).contains(&v) => {
                    Some((p.severity, format!("{name} {} is not a fraction between 0 and 1", num(v))))
                }
                "error_rate" => ladder(name, v, t.error_rate_medium, t.error_rate_high, t.error_rate_critical),
                "perf_degradation" => ladder(name, v, t.perf_medium, t.perf_high, t.perf_critical),
                "latency_ms" => (v > t.latency_high_ms)
                    .then(|| (Severity::High, format!("latency_ms {} > {}", num(v), num(t.latency_high_ms)))),
                _ => None,
            }
        };
        match rated {
            Some((s, why)) if worst.as_ref().is_none_or(|(w, _)| s > *w) => worst = Some((s, why)),
            Some(_) => {}
            None => seen.push(format!("{name} {}", num(v))),
        }
    }
    match worst {
        Some((s, why)) => mk(true, s, format!("{why} ({})", s.as_str()), values),
        None => {
            let detail = if seen.is_empty() { "ok".to_string() } else { seen.join(", ") };
            mk(false, Severity::Low, detail, values)
        }
    }
}

/// The matrix's ladder for one symptom: none when below medium.
fn ladder(name: &str, v: f64, medium: f64, high: f64, critical: f64) -> Option<(Severity, String)> {
    if v > critical {
        Some((Severity::Critical, format!("{name} {} > {}", num(v), num(critical))))
    } else if v >= high {
        Some((Severity::High, format!("{name} {} ≥ {}", num(v), num(high))))
    } else if v >= medium {
        Some((Severity::Medium, format!("{name} {} ≥ {}", num(v), num(medium))))
    } else {
        None
    }
}

/// The decision of one probe's window: the highest severity at which at least
/// `limit` of its readings are bad.
fn decide(
    p: &Probe,
    readings: &VecDeque<Reading>,
    limit: usize,
    window: usize,
    policy: &Policy,
) -> Option<WatchDecision> {
    for s in [Severity::Critical, Severity::High, Severity::Medium, Severity::Low] {
        let bad: Vec<&Reading> = readings.iter().filter(|r| r.bad && r.severity >= s).collect();
        if bad.len() < limit {
            continue;
        }
        let (first, last) = (bad[0], bad[bad.len() - 1]);
        let decided_at = Utc::now();
        return Some(WatchDecision {
            probe: p.name.clone(),
            severity: s,
            action: policy.at(s),
            reason: format!("{}: {} in {} of the last {} probes", p.name, last.detail, bad.len(), readings.len()),
            bad: bad.len(),
            window,
            values: last.values.clone(),
            first_bad_at: first.at,
            decided_at,
            detect_ms: (decided_at - first.at).num_milliseconds().max(0) as u64,
            dry_run: false,
        });
    }
    None
}

/// Returns once `cancel` is set or `deadline` has passed.
async fn stop_or_deadline(cancel: &CancelToken, deadline: Option<Instant>) {
    loop {
        let now = Instant::now();
        if cancel.is_cancelled() || deadline.is_some_and(|d| now >= d) {
            return;
        }
        let step = deadline.map_or(STOP_POLL, |d| d.saturating_duration_since(now).min(STOP_POLL));
        tokio::time::sleep(step).await;
    }
}

fn trunc(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// Runs a probe command without a shell in `dir`, in its own process group (ended when
/// the probe's timeout, the end of the window or a stop drops this future): exit
/// status and the end of stdout (or, when it failed, the last line of stderr). Only
/// the last 4 KiB of each are kept, and stdout is not read at all without `metric`.
async fn run_command(
    argv: &[String],
    dir: &std::path::Path,
    metric: bool,
) -> std::result::Result<(bool, String), String> {
    let keep_stdout = if metric { PROBE_OUTPUT_LIMIT } else { 0 };
    let ran = crate::health::run_program(argv, dir, None, keep_stdout, PROBE_OUTPUT_LIMIT)
        .await
        .map_err(|e| format!("cannot run `{}`: {e}", argv[0]))?;
    if ran.status.success() {
        Ok((true, ran.stdout.text().trim().to_string()))
    } else {
        let err = ran.stderr.text();
        let last = err.trim().lines().last().unwrap_or("").trim_start_matches('…');
        let cut = if ran.stderr.dropped() > 0 {
            format!(" (stderr cut: {} bytes before its last 4 KiB not kept)", ran.stderr.dropped())
        } else {
            String::new()
        };
        Ok((
            false,
            format!(
                "{}{}{cut}",
                ran.status,
                if last.is_empty() { String::new() } else { format!(": {}", trunc(last, 200)) }
            ),
        ))
    }
}

/// Follows a log file like `tail -F`: counts new lines matching a regex, across
/// rotation (the file renamed and a new one created: the rest of the old one is read,
/// then the new one from its start) and truncation (read again from the start).
struct LogFollower {
    path: PathBuf,
    re: Option<regex::Regex>,
    file: Option<(std::fs::File, (u64, u64))>,
    offset: u64,
    partial: Vec<u8>,
}

/// The most a round reads of a log: a log that grows faster than this is far over
/// any threshold already, and memory stays bounded.
const LOG_ROUND_LIMIT: u64 = 64 << 20;

impl LogFollower {
    fn start(path: PathBuf, regex: &str) -> LogFollower {
        let mut f = LogFollower { path, re: regex::Regex::new(regex).ok(), file: None, offset: 0, partial: Vec::new() };
        // Lines already there when the watch starts are not this deploy's news.
        if let Ok(file) = std::fs::File::open(&f.path) {
            if let Ok(m) = file.metadata() {
                f.offset = m.len();
                f.file = Some((file, inode(&m)));
            }
        }
        f
    }

    /// Matching lines appended since the last poll.
    fn poll(&mut self) -> std::result::Result<u64, String> {
        use std::io::{Read, Seek, SeekFrom};
        let mut n = 0;
        let mut budget = LOG_ROUND_LIMIT;
        // What is left in the file we have open (the old one, after a rotation).
        if let Some((file, _)) = self.file.as_mut() {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            if len < self.offset {
                // Truncated in place (copytruncate): read again from the start.
                self.offset = 0;
                self.partial.clear();
            }
            file.seek(SeekFrom::Start(self.offset)).map_err(|e| format!("{}: {e}", self.path.display()))?;
            let mut buf = Vec::new();
            let got = file.take(budget).read_to_end(&mut buf).map_err(|e| format!("{}: {e}", self.path.display()))?;
            budget -= got as u64;
            self.offset += got as u64;
            n += self.count(&buf);
        }
        // A different file at the path now: rotation. Read the new one from its start.
        let current = std::fs::metadata(&self.path).ok().map(|m| inode(&m));
        let open = self.file.as_ref().map(|(_, i)| *i);
        if current.is_some() && current != open {
            if let Ok(mut file) = std::fs::File::open(&self.path) {
                let ino = file.metadata().map(|m| inode(&m)).unwrap_or_default();
                self.partial.clear();
                let mut buf = Vec::new();
                let got = (&mut file)
                    .take(budget)
                    .read_to_end(&mut buf)
                    .map_err(|e| format!("{}: {e}", self.path.display()))?;
                self.offset = got as u64;
                n += self.count(&buf);
                self.file = Some((file, ino));
            }
        }
        Ok(n)
    }

    fn count(&mut self, buf: &[u8]) -> u64 {
        let Some(re) = &self.re else { return 0 };
        self.partial.extend_from_slice(buf);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            // A line still being written; a runaway line without newlines is cut.
            if self.partial.len() > 1 << 20 {
                self.partial.clear();
            }
            return 0;
        };
        let whole: Vec<u8> = self.partial.drain(..=end).collect();
        String::from_utf8_lossy(&whole).lines().filter(|l| re.is_match(l)).count() as u64
    }
}

fn inode(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(bounds: &[(&str, &str)]) -> Probe {
        Probe {
            name: "api".into(),
            kind: ProbeKind::Heartbeat { file: "hb".into(), max_age: Duration::from_secs(1) },
            timeout: None,
            severity: Severity::High,
            symptom: None,
            failure_limit: None,
            bounds: bounds.iter().map(|(k, v)| (k.to_string(), Bound::parse(v).unwrap())).collect(),
        }
    }

    fn values(v: &[(&str, f64)]) -> Raw {
        Raw::Values(v.iter().map(|(k, x)| (k.to_string(), *x)).collect())
    }

    #[test]
    fn readings_are_rated_by_the_matrix_or_their_bound() {
        let t = Thresholds::default();
        let r = rate(&probe(&[]), values(&[("error_rate", 0.34)]), &t);
        assert!(r.bad);
        assert_eq!(r.severity, Severity::High);
        assert_eq!(r.detail, "error_rate 0.34 ≥ 0.25 (high)");
        let r = rate(&probe(&[]), values(&[("error_rate", 0.05), ("latency_ms", 12.0)]), &t);
        assert!(!r.bad, "{r:?}");
        let r = rate(&probe(&[]), values(&[("latency_ms", 812.0)]), &t);
        assert_eq!((r.bad, r.severity), (true, Severity::High));
        let r = rate(&probe(&[("accuracy", "< 0.5")]), values(&[("accuracy", 0.42)]), &t);
        assert_eq!(r.detail, "accuracy 0.42 < 0.5 (high)");
        let r = rate(&probe(&[("error_rate", "> 0.3")]), values(&[("error_rate", 0.2)]), &t);
        assert!(!r.bad, "a bound of the probe's own replaces the matrix: {r:?}");
        let r = rate(&probe(&[]), values(&[("error_rate", f64::NAN)]), &t);
        assert!(r.bad, "a monitor that sends NaN has lost sight of its service");
    }

    fn reading(bad: bool, s: Severity) -> Reading {
        Reading { probe: "api".into(), at: Utc::now(), bad, severity: s, detail: "x".into(), values: BTreeMap::new() }
    }

    #[test]
    fn n_of_the_last_m_decide_and_one_bad_reading_does_not() {
        let p = probe(&[]);
        let pol = Policy::default();
        let w: VecDeque<_> =
            [reading(false, Severity::Low), reading(true, Severity::High), reading(false, Severity::Low)].into();
        assert!(decide(&p, &w, 3, 4, &pol).is_none());
        let w: VecDeque<_> = [
            reading(true, Severity::Critical),
            reading(false, Severity::Low),
            reading(true, Severity::High),
            reading(true, Severity::Medium),
        ]
        .into();
        let d = decide(&p, &w, 3, 4, &pol).unwrap();
        // Three bad, but only two at high or above: the window decides medium.
        assert_eq!(d.severity, Severity::Medium);
        assert_eq!(d.action, PolicyAction::Notify);
        assert!(d.reason.ends_with("in 3 of the last 4 probes"), "{}", d.reason);
        let d = decide(&p, &w, 2, 4, &pol).unwrap();
        assert_eq!((d.severity, d.action), (Severity::High, PolicyAction::Rollback));
    }

    fn parse(toml_text: &str) -> std::result::Result<WatchConfig, String> {
        let v: toml::Value = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        let j = serde_json::to_value(v).unwrap();
        let serde_json::Value::Object(m) = j else { unreachable!() };
        WatchConfig::parse(m, "rollback.toml:1", &|i| format!("rollback.toml:{}", i + 2)).map_err(|e| e.to_string())
    }

    #[test]
    fn a_symptom_sets_the_severity_of_a_failed_reading_and_names_it() {
        let c = parse(
            "[[probe]]\nname = \"audit\"\ncommand = [\"./audit\"]\nsymptom = \"security\"\n\
             [[probe]]\nname = \"recon\"\ncommand = [\"./recon\"]\nsymptom = \"data_corruption\"\n\
             [[probe]]\nname = \"pnl\"\ncommand = [\"./pnl\"]\nsymptom = \"data_loss\"\nseverity = \"medium\"\n",
        )
        .unwrap();
        let sev: Vec<Severity> = c.probes.iter().map(|p| p.severity).collect();
        assert_eq!(sev, [Severity::Critical, Severity::High, Severity::Medium], "its own severity wins");
        let r = rate(&c.probes[0], Raw::Failed("exit status: 1".into()), &Thresholds::default());
        assert_eq!(r.detail, "security: exit status: 1 (critical)");
        assert!(parse("[[probe]]\ncommand = [\"x\"]\nsymptom = \"no way\"\n").unwrap_err().contains("`symptom`"));
    }

    #[test]
    fn config_errors_name_the_probe_and_the_key() {
        let ok = parse(
            "interval = \"1s\"\nwindow = 4\nfailure_limit = 3\npolicy = { medium = \"rollback\" }\n\
             [[probe]]\nname = \"api\"\nhttp = \"http://127.0.0.1:1/health\"\nmetrics = { error_rate = \"stats.error_rate\", accuracy = \"m.acc\" }\nbounds = { accuracy = \"< 0.5\" }\n\
             [[probe]]\nlog = \"app.log\"\n[[probe]]\nprocess = \"api\"\nrestarts = 2\n",
        )
        .unwrap();
        assert_eq!(ok.probes.len(), 3);
        assert_eq!(ok.probes[1].name, "probe2");
        assert_eq!(ok.policy.medium, PolicyAction::Rollback);
        for (text, want) in [
            ("[[probe]]\nhttp = \"http://h\"\nmetrics = { accuracy = \"a\" }\n", "metric `accuracy` has no bound"),
            ("[[probe]]\nlog = \"a\"\nregex = \"(\"\n", "`regex`"),
            ("window = 2\nfailure_limit = 3\n[[probe]]\nlog = \"a\"\n", "no window could ever decide"),
            (
                "[[probe]]\nname = \"x\"\nheartbeat = \"hb\"\nstatus = 200\n",
                "[[watch.probe]] `x`: unknown key `status`",
            ),
            ("", "no probes"),
            ("interval = \"10ms\"\n[[probe]]\nlog = \"a\"\n", "at least 100ms"),
            ("interval = \"2d\"\n[[probe]]\nlog = \"a\"\n", "`interval` = 2days is more than a day"),
            (
                "[[probe]]\nname = \"t\"\nlog = \"a\"\ntimeout = \"30h\"\n",
                "`t`: `timeout` = 1day 6h is more than a day",
            ),
            ("policy = { high = \"panic\" }\n[[probe]]\nlog = \"a\"\n", "policy.high"),
            (
                "[[probe]]\nname = \"a\"\nlog = \"x\"\n[[probe]]\nname = \"a\"\nlog = \"y\"\n",
                "two probes are named `a`",
            ),
            ("[[probe]]\ncommand = [\"x\"]\nbounds = { cost = \"> 1\" }\n", "does not read a metric named `cost`"),
            ("[[probe]]\nhttp = \"ftp://h\"\n", "only http:// and https://"),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_log_is_followed_across_truncation_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        std::fs::write(&log, "ERROR before the watch\n").unwrap();
        let mut f = LogFollower::start(log.clone(), "ERROR");
        assert_eq!(f.poll().unwrap(), 0, "old lines are not counted");
        let append = |s: &str| {
            use std::io::Write;
            std::fs::OpenOptions::new().append(true).create(true).open(&log).unwrap().write_all(s.as_bytes()).unwrap();
        };
        append("INFO a\nERROR b\nERROR c\nERR");
        assert_eq!(f.poll().unwrap(), 2);
        append("OR d, finished later\n");
        assert_eq!(f.poll().unwrap(), 1, "a line split across polls counts once");
        std::fs::write(&log, "").unwrap();
        append("ERROR after truncation\n");
        assert_eq!(f.poll().unwrap(), 1);
        append("ERROR last of the old file\n");
        std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
        append("ERROR first of the new file\nERROR second\n");
        assert_eq!(f.poll().unwrap(), 3, "the rest of the old file and all of the new one");
        assert_eq!(f.poll().unwrap(), 0);
    }
}
