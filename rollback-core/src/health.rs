//! Health checks: http, tcp, heartbeat file age, command, log error count.
//!
//! A check is retried until it passes or its timeout runs out, so it can gate a
//! component that is still starting.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// The kinds of check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum HealthKind {
    /// GET the URL; expect `status`, and optionally JSON fields equal to values.
    Http {
        /// `http://host:port/path`.
        url: String,
        /// Expected status code.
        status: u16,
        /// Expected top-level JSON fields.
        json: Option<serde_json::Map<String, serde_json::Value>>,
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
    /// A check of the given kind with the default timeout (10 s) and interval (250 ms).
    pub fn new(kind: HealthKind) -> Self {
        HealthCheck { kind, timeout: Duration::from_secs(10), interval: Duration::from_millis(250) }
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
        let interval = dur(&mut m, "interval")?;
        let kind = if let Some(url) = string(&mut m, "http")? {
            if !url.starts_with("http://") {
                return Err(format!("http check `{url}`: only http:// URLs are supported"));
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
            HealthKind::Http { url, status, json }
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
            HealthKind::Http { url, status, .. } => format!("http {} → {status}", redact_userinfo(url)),
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
    pub async fn probe(&self, base_dir: &std::path::Path) -> HealthResult {
        self.probe_within(base_dir, self.timeout).await
    }

    async fn probe_within(&self, base_dir: &std::path::Path, limit: Duration) -> HealthResult {
        let per_try = limit.max(Duration::from_millis(100));
        let r = tokio::time::timeout(per_try, self.probe_inner(base_dir)).await;
        let (ok, detail) = match r {
            Ok(Ok(d)) => (true, d),
            Ok(Err(d)) => (false, d),
            Err(_) => (false, format!("no answer within {}", humantime::format_duration(per_try))),
        };
        HealthResult { check: self.describe(), ok, detail }
    }

    /// Tries until it passes or the timeout runs out; each try gets what is left.
    pub async fn wait(&self, base_dir: &std::path::Path) -> HealthResult {
        let deadline = Instant::now() + self.timeout;
        loop {
            let r = self.probe_within(base_dir, deadline.saturating_duration_since(Instant::now())).await;
            if r.ok || Instant::now() + self.interval > deadline {
                return r;
            }
            tokio::time::sleep(self.interval).await;
        }
    }

    async fn probe_inner(&self, base_dir: &std::path::Path) -> Result<String, String> {
        match &self.kind {
            HealthKind::Http { url, status, json } => {
                let (code, body) = http_get(url).await?;
                if code != *status {
                    return Err(format!("status {code}, expected {status}"));
                }
                if let Some(fields) = json {
                    let v: serde_json::Value =
                        serde_json::from_slice(&body).map_err(|e| format!("body is not JSON: {e}"))?;
                    for (k, want) in fields {
                        let got = v.get(k).cloned().unwrap_or(serde_json::Value::Null);
                        if &got != want {
                            return Err(format!("`{k}` is {got}, expected {want}"));
                        }
                    }
                }
                Ok(format!("status {code}"))
            }
            HealthKind::Tcp { addr } => tokio::net::TcpStream::connect(addr.as_str())
                .await
                .map(|_| "connected".to_string())
                .map_err(|e| format!("connect {addr}: {e}")),
            HealthKind::Heartbeat { file, max_age } => {
                let p = base_dir.join(file);
                let meta = tokio::fs::metadata(&p).await.map_err(|e| format!("{}: {e}", p.display()))?;
                let modified = meta.modified().map_err(|e| format!("{}: {e}", p.display()))?;
                // A beat from the future proves nothing (a clock step, a touch -d): a
                // writer that has stopped would look alive until that time comes.
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
                if age > *max_age {
                    Err(format!("last beat {} ago", humantime::format_duration(trunc(age))))
                } else {
                    Ok(format!("last beat {} ago", humantime::format_duration(trunc(age))))
                }
            }
            HealthKind::Command { argv } => {
                // stdout is not read at all, and of stderr only the end is kept: a check
                // that prints a gigabyte must not take a gigabyte, nor put it into the
                // snapshot manifest and the record.
                let mut child = tokio::process::Command::new(&argv[0])
                    .args(&argv[1..])
                    .current_dir(base_dir)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| format!("cannot run `{}`: {e}", argv[0]))?;
                let stderr = child.stderr.take().expect("piped");
                let (status, tail) = tokio::join!(child.wait(), read_tail_of(stderr, DETAIL_LIMIT));
                let status = status.map_err(|e| format!("`{}`: {e}", argv[0]))?;
                if status.success() {
                    Ok("exit 0".into())
                } else {
                    Err(format!("{status} {}", tail.trim()).trim().to_string())
                }
            }
            HealthKind::LogErrors { file, regex, max, lines } => {
                let p = base_dir.join(file);
                let re = regex::Regex::new(regex).map_err(|e| e.to_string())?;
                let text = read_tail(&p, *lines).await.map_err(|e| format!("{}: {e}", p.display()))?;
                let n = text.lines().rev().take(*lines).filter(|l| re.is_match(l)).count();
                if n > *max {
                    Err(format!("{n} error lines (max {max})"))
                } else {
                    Ok(format!("{n} error lines"))
                }
            }
        }
    }
}

/// The most of a check's own output that goes into its detail.
const DETAIL_LIMIT: usize = 2048;

/// Reads `r` to its end and keeps the last `limit` bytes, decoded leniently.
async fn read_tail_of(mut r: impl tokio::io::AsyncRead + Unpin, limit: usize) -> String {
    let mut keep: std::collections::VecDeque<u8> = std::collections::VecDeque::with_capacity(limit);
    let mut buf = [0u8; 8192];
    let mut cut = false;
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        keep.extend(&buf[..n]);
        if keep.len() > limit {
            keep.drain(..keep.len() - limit);
            cut = true;
        }
    }
    let text = String::from_utf8_lossy(keep.make_contiguous()).into_owned();
    if cut {
        format!("…{text}")
    } else {
        text
    }
}

/// `http://user:***@host/` for `http://user:secret@host/`.
fn redact_userinfo(url: &str) -> String {
    match split_url(url) {
        Ok(u) if u.password.is_some() => {
            format!("{}{}:***@{}{}", u.scheme, u.user.unwrap_or_default(), u.authority, u.path)
        }
        _ => url.to_string(),
    }
}

struct Url<'a> {
    scheme: &'a str,
    user: Option<String>,
    password: Option<String>,
    /// `host:port` (no user info).
    authority: &'a str,
    path: &'a str,
}

fn split_url(url: &str) -> Result<Url<'_>, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| "only http:// is supported".to_string())?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (user, password, authority) = match authority.rsplit_once('@') {
        Some((info, host)) => {
            let (u, p) = match info.split_once(':') {
                Some((u, p)) => (u, Some(percent_decode(p))),
                None => (info, None),
            };
            (Some(percent_decode(u)), p, host)
        }
        None => (None, None, authority),
    };
    Ok(Url { scheme: "http://", user, password, authority, path })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
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
/// leniently: logs may hold binary garbage and may be gigabytes long.
async fn read_tail(p: &std::path::Path, lines: usize) -> std::io::Result<String> {
    use tokio::io::AsyncSeekExt;
    let mut f = tokio::fs::File::open(p).await?;
    let len = f.metadata().await?.len();
    let mut want: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(want);
        f.seek(std::io::SeekFrom::Start(start)).await?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        (&mut f).take(len - start).read_to_end(&mut buf).await?;
        let newlines = buf.iter().filter(|b| **b == b'\n').count();
        if start == 0 || newlines > lines || want >= 64 << 20 {
            // Drop a partial first line unless the file starts here.
            let from = if start == 0 { 0 } else { buf.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1) };
            return Ok(String::from_utf8_lossy(&buf[from..]).into_owned());
        }
        want *= 4;
    }
}

fn trunc(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// A minimal HTTP/1.1 GET for local health endpoints (no TLS): status and body.
///
/// User info in the URL (`http://user:pass@host/`) becomes a Basic `Authorization`
/// header; it is never part of the address connected to, nor of an error.
pub async fn http_get(url: &str) -> Result<(u16, Vec<u8>), String> {
    let u = split_url(url).map_err(|e| format!("`{}`: {e}", redact_userinfo(url)))?;
    let (authority, path) = (u.authority, u.path);
    let path = if path.starts_with('?') { format!("/{path}") } else { path.to_string() };
    // `[::1]` alone has no port: the colon inside the brackets is not one.
    let has_port = match authority.rfind(']') {
        Some(i) => authority[i..].contains(':'),
        None => authority.contains(':'),
    };
    let addr = if has_port { authority.to_string() } else { format!("{authority}:80") };
    let addr = addr.replace(['[', ']'], "");
    let addr = match addr.rsplit_once(':') {
        Some((h, p)) if h.contains(':') => format!("[{h}]:{p}"),
        _ => addr,
    };
    let mut s = tokio::net::TcpStream::connect(&addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let auth = match (&u.user, &u.password) {
        (Some(user), pass) => {
            let creds = format!("{user}:{}", pass.as_deref().unwrap_or(""));
            format!("Authorization: Basic {}\r\n", crate::secret::base64(creds.as_bytes()))
        }
        _ => String::new(),
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\n{auth}User-Agent: rollback\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    // Read the head, then exactly the body (Content-Length), to the end of the
    // chunks, or to EOF: a server that keeps the connection open must not stall us.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Err("malformed HTTP response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("malformed status line `{}`", head.lines().next().unwrap_or("")))?;
    let lower = head.to_ascii_lowercase();
    let chunked = lower.contains("transfer-encoding: chunked");
    let length =
        lower.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
    let mut body = buf[head_end + 4..].to_vec();
    loop {
        let done = match (length, chunked) {
            (Some(n), _) => body.len() >= n,
            (None, true) => body.ends_with(b"0\r\n\r\n"),
            (None, false) => false,
        };
        if done || body.len() > 4 << 20 {
            break;
        }
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    if let Some(n) = length {
        body.truncate(n);
    }
    if chunked {
        body = dechunk(&body)?;
    }
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
        let size_s = String::from_utf8_lossy(&b[..nl]);
        let size = usize::from_str_radix(size_s.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size".to_string())?;
        b = &b[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = b.get(size + 2..).unwrap_or(&[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn urls_split_with_user_info_and_ipv6() {
        let u = split_url("http://ops:p%40ss@127.0.0.1:8080/health?x=1").unwrap();
        assert_eq!((u.user.as_deref(), u.password.as_deref()), (Some("ops"), Some("p@ss")));
        assert_eq!((u.authority, u.path), ("127.0.0.1:8080", "/health?x=1"));
        assert_eq!(redact_userinfo("http://ops:hunter2@h/x"), "http://ops:***@h/x");
        assert_eq!(crate::secret::base64(b"ops:p@ss"), "b3BzOnBAc3M=");
        assert_eq!(split_url("http://[::1]").unwrap().authority, "[::1]");
    }

    #[test]
    fn dechunks() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(), b"abcde");
    }
}
