//! Health checks: http, tcp, heartbeat file age, command, log error count.
//!
//! A check is retried until it passes or its timeout runs out, so it can gate a
//! component that is still starting. As the gate after a restore, a check judges the
//! version the restore put back, not the one it replaced: a heartbeat must have been
//! written after the restore began, and a log counts only the lines written from the
//! gate's start (the replaced version's error lines are why it was rolled back).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::config::{duration_from_secs, parse_duration};

/// One health check of a component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// What is checked.
    pub kind: HealthKind,
    /// How long to keep trying before the check fails.
    pub timeout: Duration,
    /// Pause between tries.
    pub interval: Duration,
}

/// The kinds of check. `Debug` shows an http URL without its user info.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum HealthKind {
    /// GET the URL; expect `status`, and optionally JSON fields equal to values and
    /// comparisons on the JSON body.
    Http {
        /// `http://host:port/path` or `https://…`.
        url: String,
        /// Expected status code.
        status: u16,
        /// Expected top-level JSON fields.
        json: Option<serde_json::Map<String, serde_json::Value>>,
        /// Request headers (`apikey`, `Authorization`, …).
        #[serde(default, skip_serializing_if = "Headers::is_empty")]
        headers: Headers,
        /// A CA file (PEM) trusted instead of the system's roots (https).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca: Option<PathBuf>,
        /// Comparisons that must hold on the JSON body.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        expect: Vec<Expect>,
    },
    /// Connect to `host:port`.
    Tcp {
        /// `host:port`.
        addr: String,
    },
    /// The file was modified within `max_age`.
    Heartbeat {
        /// The heartbeat file.
        file: PathBuf,
        /// Oldest acceptable modification.
        max_age: Duration,
    },
    /// Run argv; exit 0 is healthy.
    Command {
        /// Program and arguments (no shell).
        argv: Vec<String>,
    },
    /// At most `max` lines matching `regex` among the last `lines` lines of `file`.
    LogErrors {
        /// The log file.
        file: PathBuf,
        /// What counts as an error line.
        regex: String,
        /// Highest acceptable count.
        max: usize,
        /// How many trailing lines to read.
        lines: usize,
    },
}

impl std::fmt::Debug for HealthKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HealthKind::Http { url, status, json, headers, ca, expect } => f
                .debug_struct("Http")
                .field("url", &redact_userinfo(url))
                .field("status", status)
                .field("json", json)
                .field("headers", headers)
                .field("ca", ca)
                .field("expect", expect)
                .finish(),
            HealthKind::Tcp { addr } => f.debug_struct("Tcp").field("addr", addr).finish(),
            HealthKind::Heartbeat { file, max_age } => {
                f.debug_struct("Heartbeat").field("file", file).field("max_age", max_age).finish()
            }
            HealthKind::Command { argv } => f.debug_struct("Command").field("argv", argv).finish(),
            HealthKind::LogErrors { file, regex, max, lines } => f
                .debug_struct("LogErrors")
                .field("file", file)
                .field("regex", regex)
                .field("max", max)
                .field("lines", lines)
                .finish(),
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthResult {
    /// Short description of the check.
    pub check: String,
    /// Passed.
    pub ok: bool,
    /// What was seen.
    pub detail: String,
}

impl HealthCheck {
    /// A check of the given kind with the default timeout (10 s; for a heartbeat, its
    /// `max_age` from 10 s to 5 minutes) and interval (250 ms).
    pub fn new(kind: HealthKind) -> Self {
        let timeout = match &kind {
            // As a gate, a heartbeat check waits for the restored version's first beat,
            // which a healthy writer writes within `max_age`: the 10 s default would
            // fail a good restore of a writer that beats every 30 s (and compensation
            // would put the bad release back). Not more than 5 minutes, though: that
            // long the restored version runs unconfirmed.
            HealthKind::Heartbeat { max_age, .. } => (*max_age).clamp(Duration::from_secs(10), HEARTBEAT_GATE_MAX),
            _ => Duration::from_secs(10),
        };
        HealthCheck { kind, timeout, interval: Duration::from_millis(250) }
    }

    /// Parses the `health = [...]` list of a component.
    pub fn parse_list(v: serde_json::Value) -> Result<Vec<HealthCheck>, String> {
        let items = match v {
            serde_json::Value::Array(a) => a,
            o @ serde_json::Value::Object(_) => vec![o],
            _ => return Err("must be a list of checks like [{ http = \"http://…\" }]".into()),
        };
        items.into_iter().map(Self::parse_one).collect()
    }

    fn parse_one(v: serde_json::Value) -> Result<HealthCheck, String> {
        let serde_json::Value::Object(mut m) = v else {
            return Err("each check must be a table".into());
        };
        let dur = |m: &mut serde_json::Map<String, serde_json::Value>, k: &str| -> Result<Option<Duration>, String> {
            match m.remove(k) {
                None => Ok(None),
                Some(serde_json::Value::String(s)) => parse_duration(&s).map(Some).map_err(|e| format!("`{k}`: {e}")),
                Some(serde_json::Value::Number(n)) => {
                    duration_from_secs(n.as_f64().unwrap_or(f64::NAN)).map(Some).map_err(|e| format!("`{k}`: {e}"))
                }
                Some(o) => Err(format!("`{k}` = {o} is not a duration")),
            }
        };
        let string = |m: &mut serde_json::Map<String, serde_json::Value>, k: &str| -> Result<Option<String>, String> {
            match m.remove(k) {
                None => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s)),
                Some(o) => Err(format!("`{k}` = {o} must be a string")),
            }
        };
        let uint = |m: &mut serde_json::Map<String, serde_json::Value>, k: &str| -> Result<Option<u64>, String> {
            match m.remove(k) {
                None => Ok(None),
                Some(serde_json::Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
                Some(o) => Err(format!("`{k}` = {o} must be a non-negative integer")),
            }
        };
        let timeout = dur(&mut m, "timeout")?;
        if let Some(t) = timeout.filter(|t| !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(t)) {
            return Err(format!(
                "`timeout` = {} is out of range: it must be from {} to {}",
                humantime::format_duration(t),
                humantime::format_duration(MIN_TIMEOUT),
                humantime::format_duration(MAX_TIMEOUT)
            ));
        }
        let interval = dur(&mut m, "interval")?;
        if let Some(i) = interval.filter(|i| !(MIN_INTERVAL..=MAX_INTERVAL).contains(i)) {
            return Err(format!(
                "`interval` = {} is out of range: it must be from {} to {} (a check tried again without a pause \
                 keeps a core busy)",
                humantime::format_duration(i),
                humantime::format_duration(MIN_INTERVAL),
                humantime::format_duration(MAX_INTERVAL)
            ));
        }
        let kind = if let Some(url) = string(&mut m, "http")? {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(format!(
                    "http check `{}`: only http:// and https:// URLs are supported",
                    redact_userinfo(&url)
                ));
            }
            let status = match uint(&mut m, "status")?.unwrap_or(200) {
                s @ 100..=599 => s as u16,
                s => return Err(format!("`status` = {s} is not an HTTP status code (100 to 599)")),
            };
            let json = match m.remove("json") {
                None => None,
                Some(serde_json::Value::Object(o)) => Some(o),
                Some(o) => return Err(format!("`json` = {o} must be a table of field = value")),
            };
            let headers = match m.remove("headers") {
                None => Headers::default(),
                Some(serde_json::Value::Object(o)) => Headers(
                    o.into_iter()
                        .map(|(k, v)| match v {
                            serde_json::Value::String(v) => {
                                reqwest::header::HeaderName::from_bytes(k.as_bytes())
                                    .map_err(|_| format!("`headers`: `{k}` is not a header name"))?;
                                reqwest::header::HeaderValue::from_str(&v)
                                    .map_err(|_| format!("`headers`: the value of `{k}` cannot be sent in a header"))?;
                                Ok((k, v))
                            }
                            _ => Err(format!("`headers`: the value of `{k}` must be a string")),
                        })
                        .collect::<Result<_, String>>()?,
                ),
                Some(_) => return Err("`headers` must be a table of name = \"value\"".into()),
            };
            let ca = string(&mut m, "ca")?.map(PathBuf::from);
            let expect = match m.remove("expect") {
                None => Vec::new(),
                Some(serde_json::Value::String(e)) => vec![Expect::parse(&e)?],
                Some(serde_json::Value::Array(a)) => a
                    .into_iter()
                    .map(|e| match e {
                        serde_json::Value::String(e) => Expect::parse(&e),
                        o => Err(format!("`expect`: {o} must be a string like \"error_rate < 0.3\"")),
                    })
                    .collect::<Result<_, String>>()?,
                Some(o) => return Err(format!("`expect` = {o} must be a list like [\"error_rate < 0.3\"]")),
            };
            HealthKind::Http { url, status, json, headers, ca, expect }
        } else if let Some(addr) = string(&mut m, "tcp")? {
            HealthKind::Tcp { addr }
        } else if let Some(file) = string(&mut m, "heartbeat")? {
            let max_age = dur(&mut m, "max_age")?.unwrap_or(Duration::from_secs(60));
            HealthKind::Heartbeat { file: file.into(), max_age }
        } else if let Some(c) = m.remove("command") {
            let argv: Vec<String> =
                serde_json::from_value(c).map_err(|_| "`command` must be an argv list of strings".to_string())?;
            if argv.is_empty() {
                return Err("`command` must not be empty".into());
            }
            HealthKind::Command { argv }
        } else if let Some(file) = string(&mut m, "log_errors")? {
            let regex = string(&mut m, "regex")?.unwrap_or_else(|| "(?i)error".into());
            regex::Regex::new(&regex).map_err(|e| format!("`regex`: {e}"))?;
            let max = uint(&mut m, "max")?.unwrap_or(0) as usize;
            let lines = uint(&mut m, "lines")?.unwrap_or(1000) as usize;
            HealthKind::LogErrors { file: file.into(), regex, max, lines }
        } else {
            return Err("a check needs one of http, tcp, heartbeat, command, log_errors".into());
        };
        if let Some(k) = m.keys().next() {
            return Err(format!("unknown key `{k}` in a health check"));
        }
        let mut c = HealthCheck::new(kind);
        if let Some(t) = timeout {
            c.timeout = t;
        }
        if let Some(i) = interval {
            c.interval = i;
        }
        Ok(c)
    }

    /// A short description for plans and records.
    pub fn describe(&self) -> String {
        match &self.kind {
            HealthKind::Http { url, status, expect, .. } => {
                let mut d = format!("http {} → {status}", redact_userinfo(url));
                if !expect.is_empty() {
                    let e: Vec<String> = expect.iter().map(Expect::to_string).collect();
                    d.push_str(&format!(", {}", e.join(", ")));
                }
                d
            }
            HealthKind::Tcp { addr } => format!("tcp {addr}"),
            HealthKind::Heartbeat { file, max_age } => {
                format!("heartbeat {} < {}", file.display(), humantime::format_duration(*max_age))
            }
            HealthKind::Command { argv } => format!("command {}", argv.join(" ")),
            HealthKind::LogErrors { file, max, lines, .. } => {
                format!("log_errors {} ≤ {max} in last {lines} lines", file.display())
            }
        }
    }

    /// Tries once, for at most the check's `timeout`.
    ///
    /// One try may take the whole timeout: a check that answers in 12 s with
    /// `timeout = "30s"` passes (a fixed cap per try would fail it every time, and the
    /// health gate would then undo a good restore).
    pub async fn probe(&self, base_dir: &Path) -> HealthResult {
        self.probe_within(base_dir, self.timeout, None).await.0
    }

    /// One try within `limit`, and whether its failure is for good (trying again
    /// cannot make it pass).
    async fn probe_within(&self, base_dir: &Path, limit: Duration, after: Option<&After>) -> (HealthResult, bool) {
        let per_try = limit.max(Duration::from_millis(100));
        let r = tokio::time::timeout(per_try, self.probe_inner(base_dir, after)).await;
        let (ok, detail, lasting) = match r {
            Ok(Ok(d)) => (true, d, false),
            Ok(Err(f)) => (false, f.detail, f.lasting),
            Err(_) => (false, format!("no answer within {}", humantime::format_duration(per_try)), false),
        };
        (HealthResult { check: self.describe(), ok, detail }, lasting)
    }

    /// Tries until it passes or the timeout runs out; each try gets what is left.
    pub async fn wait(&self, base_dir: &Path) -> HealthResult {
        self.wait_inner(base_dir, None).await
    }

    /// Where this check's log ends now (a `log_errors` check whose file exists), so a
    /// later gate reads only what is written after this moment.
    pub(crate) fn log_mark(&self, base_dir: &Path) -> Option<LogMark> {
        match &self.kind {
            HealthKind::LogErrors { file, .. } => LogMark::of(&base_dir.join(file)),
            _ => None,
        }
    }

    /// Waits as [`HealthCheck::wait`] does, as the gate after a restore that ended at
    /// `restored_at`: a heartbeat counts only when written after it, and a log only
    /// for the lines written after `log` (where it ended then; `None`: it did not
    /// exist, so all of it), watched for at least one `interval`.
    pub(crate) async fn wait_after(
        &self,
        base_dir: &Path,
        restored_at: SystemTime,
        log: Option<LogMark>,
    ) -> HealthResult {
        self.wait_inner(base_dir, Some(&After { restored_at, log })).await
    }

    async fn wait_inner(&self, base_dir: &Path, after: Option<&After>) -> HealthResult {
        let started = Instant::now();
        // Bounded: a check built in code may carry any duration, and `Instant + d` panics
        // on overflow.
        let deadline = started + self.timeout.min(crate::config::MAX_DURATION);
        let interval = self.interval.min(MAX_INTERVAL);
        // A log read from the gate's start has nothing to say at once: it is watched
        // for an interval before it may pass.
        let watched = after.is_some() && matches!(self.kind, HealthKind::LogErrors { .. });
        loop {
            let (r, lasting) =
                self.probe_within(base_dir, deadline.saturating_duration_since(Instant::now()), after).await;
            let now = Instant::now();
            let watching = watched && r.ok && started.elapsed() < interval && now < deadline;
            if (r.ok && !watching) || lasting || (!watching && now + interval > deadline) {
                return r;
            }
            let pause = if watching { interval.saturating_sub(started.elapsed()) } else { interval };
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(now))).await;
        }
    }

    async fn probe_inner(&self, base_dir: &Path, after: Option<&After>) -> Result<String, Failure> {
        match &self.kind {
            HealthKind::Http { url, status, json, headers, ca, expect } => {
                let ca = ca.as_ref().map(|c| base_dir.join(c));
                let (code, body) = http_get(url, headers, ca.as_deref()).await?;
                if code != *status {
                    return Err(format!("status {code}, expected {status}").into());
                }
                if json.is_some() || !expect.is_empty() {
                    let v: serde_json::Value =
                        serde_json::from_slice(&body).map_err(|e| format!("body is not JSON: {e}"))?;
                    for (k, want) in json.iter().flatten() {
                        let got = v.get(k).cloned().unwrap_or(serde_json::Value::Null);
                        if &got != want {
                            return Err(format!("`{k}` is {got}, expected {want}").into());
                        }
                    }
                    for e in expect {
                        e.check(&v)?;
                    }
                }
                Ok(format!("status {code}"))
            }
            HealthKind::Tcp { addr } => Ok(tokio::net::TcpStream::connect(addr.as_str())
                .await
                .map(|_| "connected".to_string())
                .map_err(|e| format!("connect {addr}: {e}"))?),
            HealthKind::Heartbeat { file, max_age } => {
                let from = match after {
                    Some(a) => BeatsFrom::Restore(a.restored_at),
                    None => BeatsFrom::Any,
                };
                Ok(heartbeat(&base_dir.join(file), *max_age, from).await?)
            }
            HealthKind::Command { argv } => {
                // stdout is not read at all, and of stderr only the end is kept: a check
                // that prints a gigabyte must not take a gigabyte, nor put it into the
                // snapshot manifest and the record.
                let ran = run_program(argv, base_dir, None, 0, DETAIL_LIMIT)
                    .await
                    .map_err(|e| format!("cannot run `{}`: {e}", argv[0]))?;
                if ran.status.success() {
                    Ok("exit 0".into())
                } else {
                    Err(format!("{} {}", ran.status, ran.stderr.text().trim()).trim().to_string().into())
                }
            }
            HealthKind::LogErrors { file, regex, max, lines } => {
                let p = base_dir.join(file);
                let re = regex::Regex::new(regex).map_err(|e| e.to_string())?;
                let mark = after.and_then(|a| a.log.as_ref());
                let text = read_tail(&p, *lines, mark).await.map_err(|e| format!("{}: {e}", p.display()))?;
                let n = text.lines().rev().take(*lines).filter(|l| re.is_match(l)).count();
                let since = if after.is_some() { " written since the restore" } else { "" };
                if n > *max {
                    // Lines written stay written: trying again cannot bring the count down.
                    Err(Failure { detail: format!("{n} error lines{since} (max {max})"), lasting: after.is_some() })
                } else {
                    Ok(format!("{n} error lines{since}"))
                }
            }
        }
    }
}

/// Bounds of a check's `interval` and `timeout` in `rollback.toml`. An interval of 0
/// tried a failing check again without a pause (a core at 100 % for the whole
/// timeout); a gate of more than a day holds a rollback that long.
const MIN_INTERVAL: Duration = Duration::from_millis(10);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// The longest default timeout of a heartbeat check (its `max_age`, at least 10 s).
const HEARTBEAT_GATE_MAX: Duration = Duration::from_secs(300);
/// One try gets at least 100 ms whatever the timeout says.
const MIN_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Why a try failed, and whether for good.
struct Failure {
    detail: String,
    /// Trying again cannot make it pass.
    lasting: bool,
}

impl From<String> for Failure {
    fn from(detail: String) -> Failure {
        Failure { detail, lasting: false }
    }
}

/// What a gate judges from: what was written after the restore.
struct After {
    /// When the component's restore ended.
    restored_at: SystemTime,
    /// Where a `log_errors` file ended then (none: it did not exist).
    log: Option<LogMark>,
}

/// The end of a log file at one moment: the file (device, inode) and its length.
/// Journaled, so a resumed rollback's gate still reads from the restore on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct LogMark {
    id: (u64, u64),
    len: u64,
}

impl LogMark {
    fn of(p: &Path) -> Option<LogMark> {
        std::fs::metadata(p).ok().map(|m| LogMark { id: file_id(&m), len: m.len() })
    }
}

fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

/// Which beats of a heartbeat file count.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BeatsFrom {
    /// Any: the newest beat must be at most `max_age` old.
    Any,
    /// Only beats written after this time, the start of a restore: the gate waits for
    /// the restored version's first beat (one before is the replaced version's).
    Restore(SystemTime),
    /// Only beats written since a watch started: until the first one, the deployed
    /// version is bad once `max_age` has passed since the start (it had that long to
    /// beat), and good before. A beat from before the start neither vouches for it
    /// nor condemns it.
    Watch(SystemTime),
}

/// Reads a heartbeat file's age against `max_age`, counting the beats `from` says.
pub(crate) async fn heartbeat(p: &Path, max_age: Duration, from: BeatsFrom) -> Result<String, String> {
    let ms = |d: Duration| humantime::format_duration(trunc(d));
    let modified = match tokio::fs::metadata(p).await.and_then(|m| m.modified()) {
        Ok(t) => t,
        Err(e) => {
            return match from {
                // No file is no beat yet: judged as a beat from before the start.
                BeatsFrom::Watch(start) if e.kind() == std::io::ErrorKind::NotFound => {
                    let waited = start.elapsed().unwrap_or_default();
                    if waited > max_age {
                        Err(format!("no beat since the watch started {} ago: {}: {e}", ms(waited), p.display()))
                    } else {
                        Ok(format!("no beat yet since the watch started {} ago", ms(waited)))
                    }
                }
                _ => Err(format!("{}: {e}", p.display())),
            };
        }
    };
    // A beat from the future proves nothing (a clock step, a touch -d): a writer that
    // has stopped would look alive until that time comes.
    let age = match modified.elapsed() {
        Ok(age) => age,
        Err(e) if e.duration() <= Duration::from_secs(1) => Duration::ZERO,
        Err(e) => {
            return Err(format!(
                "last beat is {} in the future: the clock or the file is wrong",
                humantime::format_duration(trunc(e.duration()))
            ))
        }
    };
    match from {
        BeatsFrom::Restore(t) if modified < t => {
            let before = t.duration_since(modified).unwrap_or_default();
            Err(format!("no beat since the restore began (the last one is {} older)", ms(before)))
        }
        BeatsFrom::Watch(start) if modified < start => {
            let waited = start.elapsed().unwrap_or_default();
            if waited > max_age {
                Err(format!("no beat since the watch started {} ago", ms(waited)))
            } else {
                Ok(format!("no beat yet since the watch started {} ago", ms(waited)))
            }
        }
        _ if age > max_age => Err(format!("last beat {} ago", ms(age))),
        _ => Ok(format!("last beat {} ago", ms(age))),
    }
}

/// The most of a check's own output that goes into its detail.
const DETAIL_LIMIT: usize = 2048;

/// What a program run by a check, a watch probe or a notification left: its exit
/// status and the ends of its output.
pub(crate) struct Ran {
    pub(crate) status: std::process::ExitStatus,
    pub(crate) stdout: Kept,
    pub(crate) stderr: Kept,
}

/// The end of one output stream: at most `limit` bytes, and how many were dropped
/// before them.
pub(crate) struct Kept {
    bytes: VecDeque<u8>,
    limit: usize,
    dropped: u64,
}

impl Kept {
    fn new(limit: usize) -> Kept {
        Kept { bytes: VecDeque::new(), limit, dropped: 0 }
    }

    fn push(&mut self, b: &[u8]) {
        let b = if b.len() > self.limit {
            self.dropped += (b.len() - self.limit) as u64;
            &b[b.len() - self.limit..]
        } else {
            b
        };
        self.bytes.extend(b);
        if self.bytes.len() > self.limit {
            let over = self.bytes.len() - self.limit;
            self.bytes.drain(..over);
            self.dropped += over as u64;
        }
    }

    /// Bytes dropped from the start: the output was longer than what is kept.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// What is kept, decoded leniently, with `…` in front when the start was dropped.
    pub(crate) fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        let text = String::from_utf8_lossy(&[a, b].concat()).into_owned();
        if self.dropped > 0 {
            format!("…{text}")
        } else {
            text
        }
    }
}

/// How long the output of a program that has exited is still read: something it
/// started in the background may hold its pipes open for ever.
const PIPE_GRACE: Duration = Duration::from_millis(200);

/// Runs `argv` without a shell in `dir`, in a process group of its own, with `stdin`
/// (if any) on its standard input; keeps the last `keep_stdout` and `keep_stderr`
/// bytes of its output (0: not read). Dropping the future (a timeout, a stopped
/// watch) ends the whole group; a program that exits by itself keeps what it started.
///
/// Why bounded: a probe that printed with `yes` for 3 s took 1 GB when all of its
/// output was kept.
pub(crate) async fn run_program(
    argv: &[String],
    dir: &Path,
    stdin: Option<&[u8]>,
    keep_stdout: usize,
    keep_stderr: usize,
) -> std::io::Result<Ran> {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    let Some((prog, args)) = argv.split_first() else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "an empty command"));
    };
    let piped = |yes: bool| if yes { Stdio::piped() } else { Stdio::null() };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .current_dir(dir)
        .stdin(piped(stdin.is_some()))
        .stdout(piped(keep_stdout > 0))
        .stderr(piped(keep_stderr > 0))
        .kill_on_drop(true);
    crate::process::own_group(&mut cmd);
    let mut child = cmd.spawn()?;
    let mut group = crate::process::GroupGuard::unrecorded(child.id());
    let (mut out, mut err) = (Kept::new(keep_stdout), Kept::new(keep_stderr));
    let (feed, so, se) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let status = {
        let feed = async {
            if let (Some(mut w), Some(body)) = (feed, stdin) {
                // A program that does not read its stdin is fine: its exit status decides.
                let _ = w.write_all(body).await;
            }
        };
        let drain = async { tokio::join!(feed, pump(so, &mut out), pump(se, &mut err)) };
        tokio::pin!(drain);
        let exited = tokio::select! {
            _ = &mut drain => None,
            s = child.wait() => Some(s),
        };
        match exited {
            None => child.wait().await,
            Some(s) => {
                let _ = tokio::time::timeout(PIPE_GRACE, &mut drain).await;
                s
            }
        }
    }?;
    group.finished();
    Ok(Ran { status, stdout: out, stderr: err })
}

async fn pump(r: Option<impl tokio::io::AsyncRead + Unpin>, keep: &mut Kept) {
    let Some(mut r) = r else { return };
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        keep.push(&buf[..n]);
    }
}

/// `http://***@host/` for `http://user:secret@host/` and `http://TOKEN@host/`: the
/// user may be a secret as much as the password (a token given as the user).
pub(crate) fn redact_userinfo(url: &str) -> String {
    if let Ok(mut u) = reqwest::Url::parse(url) {
        if u.username().is_empty() && u.password().is_none() {
            return url.to_string();
        }
        if u.set_username("").is_ok() && u.set_password(None).is_ok() {
            let shown = u.to_string();
            if let Some((scheme, rest)) = shown.split_once("://") {
                return format!("{scheme}://***@{rest}");
            }
        }
    }
    // Not a URL the client takes (its error quotes it): hide everything from the
    // scheme to the last `@`, wherever it is.
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rfind('@') {
            Some(i) => format!("{scheme}://***@{}", &rest[i + 1..]),
            None => url.to_string(),
        },
        None => match url.rfind('@') {
            Some(i) => format!("***@{}", &url[i + 1..]),
            None => url.to_string(),
        },
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    // Bytes, not `&s[..]`: the two characters after a `%` may be the start of a
    // multi-byte character, and slicing a `str` there panics. (And `from_str_radix`
    // would take `%+f` as 0x0f: it accepts a sign.)
    let hex = |c: u8| (c as char).to_digit(16);
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The end of a log holding at least `lines` lines (or the whole file), decoded
/// leniently: logs may hold binary garbage and may be gigabytes long. With `mark`,
/// only what was written after it: from the mark's length if the file is the same
/// and no shorter, else all of the file (it was rotated or truncated since).
async fn read_tail(p: &Path, lines: usize, mark: Option<&LogMark>) -> std::io::Result<String> {
    use tokio::io::AsyncSeekExt;
    let mut f = tokio::fs::File::open(p).await?;
    let meta = f.metadata().await?;
    let len = meta.len();
    let from = match mark {
        Some(m) if m.id == file_id(&meta) && len >= m.len => m.len,
        _ => 0,
    };
    let mut want: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(want).max(from);
        f.seek(std::io::SeekFrom::Start(start)).await?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        (&mut f).take(len - start).read_to_end(&mut buf).await?;
        let newlines = buf.iter().filter(|b| **b == b'\n').count();
        if start == from || newlines > lines || want >= 64 << 20 {
            // Drop a partial first line unless what is judged starts here.
            let whole = if start == from { 0 } else { buf.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1) };
            return Ok(String::from_utf8_lossy(&buf[whole..]).into_owned());
        }
        want *= 4;
    }
}

fn trunc(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// The most of a response body read for `json` and `expect` (a health endpoint that
/// streams forever must not take the memory of the process that runs the rollback).
const BODY_LIMIT: usize = 1 << 20;

/// How long the system's roots are trusted as read: reading them takes milliseconds,
/// and a watch probes every second.
const SYSTEM_ROOTS_FOR: Duration = Duration::from_secs(300);

/// The rustls configuration for an https check trusting `ca` (or the system's roots).
///
/// A CA file is read at every call (a few KiB) and the configuration rebuilt when its
/// bytes change: a long-running watch that cached it for the life of the process
/// failed every check after a CA rotation (and rolled back a healthy deploy), and
/// went on trusting the CA that was removed. Comparing bytes, not the modification
/// time or size, also sees a rotation within the same second to a file of the same
/// size (two certificates of one key type often are).
pub(crate) fn tls_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    use sha2::Digest;
    use std::collections::HashMap;
    use std::sync::Mutex;
    type Cache = Mutex<HashMap<Option<PathBuf>, (Vec<u8>, Instant, rustls::ClientConfig)>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let (key, roots, digest) = match ca {
        Some(p) => {
            let pem = std::fs::read(p).map_err(|e| format!("cannot read the CA file {}: {e}", p.display()))?;
            let digest = sha2::Sha256::digest(&pem).to_vec();
            (Some(p.to_path_buf()), crate::tls::Roots::Pem { file: p.to_path_buf(), pem }, digest)
        }
        None => (None, crate::tls::Roots::System, Vec::new()),
    };
    let cache = CACHE.get_or_init(Default::default);
    if let Some((d, at, cfg)) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        if *d == digest && (key.is_some() || at.elapsed() < SYSTEM_ROOTS_FOR) {
            return Ok(cfg.clone());
        }
    }
    let t = crate::tls::ClientTls { verify: crate::tls::Verify::Full, roots, identity: None };
    let cfg = crate::tls::client_config(&t).map_err(|e| e.message().to_string())?;
    cache.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (digest, Instant::now(), cfg.clone()));
    Ok(cfg)
}

/// GET `url` (http or https, certificates checked against the system's roots or `ca`):
/// status and at most [`BODY_LIMIT`] bytes of body.
///
/// User info in the URL (`https://user:pass@host/`) becomes a Basic `Authorization`
/// header; it is never part of an error, and neither are header values.
pub(crate) async fn http_get(
    url: &str,
    headers: &Headers,
    ca: Option<&std::path::Path>,
) -> Result<(u16, Vec<u8>), String> {
    let shown = redact_userinfo(url);
    let mut u = reqwest::Url::parse(url).map_err(|e| format!("`{shown}` is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("`{shown}`: only http:// and https:// are supported"));
    }
    let user = (!u.username().is_empty()).then(|| percent_decode(u.username()));
    let pass = u.password().map(percent_decode);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(ca)?)
        // A redirect is an answer too: an endpoint that sends to a login page is not
        // healthy because the login page is.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("rollback")
        .build()
        .map_err(|e| format!("cannot build the http client: {}", e.without_url()))?;
    let mut req = client.get(u);
    if let Some(user) = user {
        req = req.basic_auth(user, pass);
    }
    for (k, v) in &headers.0 {
        req = req.header(k.as_str(), v.as_str());
    }
    let mut resp = req.send().await.map_err(|e| describe_http_error(&shown, e))?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe_http_error(&shown, e))? {
        let room = BODY_LIMIT - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= BODY_LIMIT {
            break;
        }
    }
    Ok((status, body))
}

/// The reason, with the URL left out (reqwest's messages carry it, password and all).
fn describe_http_error(shown: &str, e: reqwest::Error) -> String {
    let tls = crate::tls::explain(&e);
    let e = e.without_url();
    let mut s = format!("GET {shown}: {e}");
    match tls {
        Some(t) => s.push_str(&format!(": {t}")),
        None => {
            let mut src = std::error::Error::source(&e);
            while let Some(c) = src {
                s.push_str(&format!(": {c}"));
                src = c.source();
            }
        }
    }
    s
}

/// Request headers of an http check. `Debug` shows the names only: values such as
/// `apikey` are secrets (written as `${ENV}` in `rollback.toml`, and redacted).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Headers(pub std::collections::BTreeMap<String, String>);

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Headers {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The value at `path` (keys and array indexes, dot-separated) in `body`.
pub(crate) fn json_at<'a>(body: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    let mut cur = body;
    for key in path.split('.') {
        cur = match cur {
            serde_json::Value::Object(o) => o.get(key),
            serde_json::Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        }?;
    }
    Some(cur)
}

/// A comparison of a value in a JSON body: `error_rate < 0.3`, `status == "ok"`,
/// `checks.db.latency_ms <= 50` (a path of keys and array indexes, dot-separated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expect {
    /// Keys and indexes from the body's root.
    pub path: String,
    /// `==`, `!=`, `<`, `<=`, `>`, `>=`.
    pub op: String,
    /// A JSON value (a number for the ordering operators).
    pub value: serde_json::Value,
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.path, self.op, self.value)
    }
}

impl Expect {
    /// Parses `path op value`.
    pub fn parse(s: &str) -> Result<Expect, String> {
        let ops = ["==", "!=", "<=", ">=", "<", ">"];
        let (i, op) = ops
            .iter()
            .filter_map(|op| s.find(op).map(|i| (i, *op)))
            .min_by_key(|(i, op)| (*i, std::cmp::Reverse(op.len())))
            .ok_or_else(|| format!("`{s}` has no comparison (==, !=, <, <=, >, >=)"))?;
        let path = s[..i].trim();
        let raw = s[i + op.len()..].trim();
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(format!("`{s}`: the path before `{op}` must be keys separated by dots"));
        }
        let value: serde_json::Value = serde_json::from_str(raw).map_err(|_| {
            format!("`{s}`: `{raw}` is not a JSON value (a number, \"text\" in double quotes, true, false, null)")
        })?;
        if !matches!(op, "==" | "!=") && !value.is_number() {
            return Err(format!("`{s}`: `{op}` compares numbers; `{raw}` is not one"));
        }
        Ok(Expect { path: path.to_string(), op: op.to_string(), value })
    }

    /// Holds for `body`; else what was found.
    fn check(&self, body: &serde_json::Value) -> Result<(), String> {
        let cur = json_at(body, &self.path).ok_or_else(|| format!("`{}` is not in the body", self.path))?;
        let holds = match self.op.as_str() {
            "==" => cur == &self.value,
            "!=" => cur != &self.value,
            op => {
                let (Some(a), Some(b)) = (cur.as_f64(), self.value.as_f64()) else {
                    return Err(format!("`{}` is {cur}, not a number", self.path));
                };
                match op {
                    "<" => a < b,
                    "<=" => a <= b,
                    ">" => a > b,
                    _ => a >= b,
                }
            }
        };
        if holds {
            Ok(())
        } else {
            Err(format!("`{}` is {cur}, expected {} {}", self.path, self.op, self.value))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `health` fuzz target: a `%` followed by a multi-byte character in
    /// a URL's credentials panicked (a `str` sliced inside a character).
    #[test]
    fn percent_decoding_takes_any_text_after_a_percent_sign() {
        assert_eq!(percent_decode("a%41%e9"), "aA\u{fffd}", "a byte that is not UTF-8 is replaced");
        assert_eq!(percent_decode("%a\u{17f}"), "%a\u{17f}");
        assert_eq!(percent_decode("%\u{17f}1"), "%\u{17f}1");
        assert_eq!(percent_decode("%%\u{17f}"), "%%\u{17f}");
        assert_eq!(percent_decode("%+f"), "%+f", "a sign is not a hex digit");
        assert_eq!(percent_decode("100%"), "100%");
        let checks = serde_json::json!([{"http": "http://127.0%%%%\u{17f}1@\u{17f}\u{17f}s1:1/"}]);
        let _ = HealthCheck::parse_list(checks);
    }

    #[test]
    fn parses_every_kind() {
        let v = serde_json::json!([
            {"http": "http://127.0.0.1:1/health", "status": 200, "json": {"status": "healthy"}, "timeout": "2s"},
            {"tcp": "127.0.0.1:5432"},
            {"heartbeat": "hb", "max_age": "30s"},
            {"command": ["true"]},
            {"log_errors": "app.log", "regex": "ERROR", "max": 3, "lines": 100}
        ]);
        let l = HealthCheck::parse_list(v).unwrap();
        assert_eq!(l.len(), 5);
        assert_eq!(l[0].timeout, Duration::from_secs(2));
        assert!(HealthCheck::parse_list(serde_json::json!([{"nope": 1}])).is_err());
        assert!(HealthCheck::parse_list(serde_json::json!([{"tcp": "x", "extra": 1}])).is_err());
    }

    #[test]
    fn kept_output_is_its_end_and_says_it_was_cut() {
        let mut k = Kept::new(4);
        k.push(b"ab");
        assert_eq!((k.text().as_str(), k.dropped()), ("ab", 0));
        k.push(b"cdef");
        assert_eq!((k.text().as_str(), k.dropped()), ("…cdef", 2));
        let mut k = Kept::new(4);
        k.push(b"abcdefgh");
        assert_eq!((k.text().as_str(), k.dropped()), ("…efgh", 4));
    }

    #[test]
    fn user_info_is_hidden_user_and_password_alike() {
        assert_eq!(redact_userinfo("http://ops:hunter2@h/x"), "http://***@h/x");
        assert_eq!(redact_userinfo("https://ghp_T0ken@h:8443/x?y=1"), "https://***@h:8443/x?y=1");
        assert_eq!(redact_userinfo("http://[::1]:80/x"), "http://[::1]:80/x", "no user info: as written");
        assert_eq!(redact_userinfo("http://u%40x:p@ss@127.0.0.1:1:2/h"), "http://***@127.0.0.1:1:2/h", "unparsable");
        assert_eq!(crate::secret::base64(b"ops:p@ss"), "b3BzOnBAc3M=");
    }

    #[test]
    fn expectations_parse_and_compare() {
        let body = serde_json::json!({"status": "ok", "error_rate": 0.34, "checks": [{"ms": 12}]});
        let e = |s: &str| Expect::parse(s).unwrap().check(&body);
        assert!(e("status == \"ok\"").is_ok());
        assert!(e("error_rate <= 0.5").is_ok());
        assert_eq!(e("error_rate < 0.3").unwrap_err(), "`error_rate` is 0.34, expected < 0.3");
        assert!(e("checks.0.ms >= 12").is_ok());
        assert!(e("checks.1.ms > 0").unwrap_err().contains("not in the body"));
        assert!(e("status > 1").unwrap_err().contains("not a number"));
        assert!(Expect::parse("error_rate 0.3").is_err());
        assert!(Expect::parse("status < \"ok\"").is_err());
        assert!(Expect::parse("status == ok").unwrap_err().contains("not a JSON value"));
        assert!(Expect::parse(". == 1").is_err());
        assert_eq!(Expect::parse("a.b!=1").unwrap().op, "!=");
    }

    #[test]
    fn header_values_stay_out_of_debug_output() {
        let l = HealthCheck::parse_list(serde_json::json!([
            {"http": "https://h/health", "headers": {"apikey": "k-123"}, "expect": ["error_rate < 0.3"]}
        ]))
        .unwrap();
        assert!(!format!("{l:?}").contains("k-123"));
        assert!(l[0].describe().contains("error_rate < 0.3"));
        assert!(HealthCheck::parse_list(serde_json::json!([{"http": "https://h", "headers": {"a b": "x"}}])).is_err());
        assert!(HealthCheck::parse_list(serde_json::json!([{"http": "ftp://h"}])).is_err());
    }
}
