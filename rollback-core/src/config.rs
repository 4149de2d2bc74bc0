//! `rollback.toml`: the stack, its store, objectives, thresholds and components.
//!
//! Errors name the file, the line and the key. `${ENV}` references are expanded at
//! load time and the values registered with the stack's [`Redactor`], so they never
//! appear in snapshots, records, logs or errors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use toml::Spanned;

use crate::decision::Thresholds;
use crate::error::{Error, Result};
use crate::health::HealthCheck;
use crate::secret::{expand_env, Redactor};

/// A whole stack: where its store is, its objectives and its components.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// The file it was read from, if any.
    pub file: Option<PathBuf>,
    /// Directory that relative paths are resolved against (the config's directory).
    pub base_dir: PathBuf,
    /// Where snapshots, journals and records live.
    pub store_path: PathBuf,
    /// Recovery-time objectives per level.
    pub rto: Rto,
    /// Decision matrix thresholds.
    pub decision: Thresholds,
    /// Components in file order.
    pub components: Vec<ComponentConfig>,
    /// Secrets known to this stack.
    pub redactor: Redactor,
    /// Where rollbacks, resumes and drills are announced (`[[notify]]`).
    pub notify: Vec<crate::notify::NotifyConfig>,
    /// What `rollback watch` probes and when it rolls back (`[watch]`).
    pub watch: Option<crate::watch::WatchConfig>,
}

/// Recovery-time objectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rto {
    /// For a complete rollback.
    pub complete: Duration,
    /// For a phase rollback.
    pub phase: Duration,
    /// For a component rollback.
    pub component: Duration,
}

impl Default for Rto {
    fn default() -> Self {
        Rto {
            complete: Duration::from_secs(5 * 60),
            phase: Duration::from_secs(15 * 60),
            component: Duration::from_secs(30 * 60),
        }
    }
}

/// One component: a name, a driver, its place in the deploy order, and the
/// driver's own options.
#[derive(Debug, Clone)]
pub struct ComponentConfig {
    /// Unique name (`code`, `db`, ...).
    pub name: String,
    /// Driver name (`git`, `postgres`, ...).
    pub driver: String,
    /// Deploy order; rollbacks restore in reverse order.
    pub phase: i64,
    /// Components this one needs (it is stopped before them and started after).
    pub depends_on: Vec<String>,
    /// Health checks that gate this component after a restore.
    pub health: Vec<HealthCheck>,
    /// Per-step deadline for this component's steps.
    pub timeout: Option<Duration>,
    /// The driver's own keys, with `${ENV}` already expanded.
    pub options: DriverOptions,
}

impl ComponentConfig {
    /// A component with the given name and driver, phase 1, no options.
    pub fn new(name: impl Into<String>, driver: impl Into<String>) -> Self {
        ComponentConfig {
            name: name.into(),
            driver: driver.into(),
            phase: 1,
            depends_on: Vec::new(),
            health: Vec::new(),
            timeout: None,
            options: DriverOptions::default(),
        }
    }

    /// Sets the phase.
    pub fn phase(mut self, phase: i64) -> Self {
        self.phase = phase;
        self
    }

    /// Sets one driver option.
    pub fn option(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.options.values.insert(key.into(), value.into());
        self
    }

    /// Adds a dependency.
    pub fn depends_on(mut self, other: impl Into<String>) -> Self {
        self.depends_on.push(other.into());
        self
    }

    /// Adds a health check.
    pub fn health(mut self, check: HealthCheck) -> Self {
        self.health.push(check);
        self
    }
}

/// A driver's keys from its component table, with where each was written.
#[derive(Debug, Clone, Default)]
pub struct DriverOptions {
    values: serde_json::Map<String, serde_json::Value>,
    lines: BTreeMap<String, usize>,
    file: Option<PathBuf>,
    component: String,
    line: Option<usize>,
}

impl DriverOptions {
    /// Builds options from a JSON object (used by the bindings and in code).
    pub fn from_map(values: serde_json::Map<String, serde_json::Value>) -> Self {
        DriverOptions { values, ..Default::default() }
    }

    /// The raw values.
    pub fn values(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.values
    }

    /// Deserializes the driver's typed config; errors name the file, line and key.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        let value = serde_json::Value::Object(self.values.clone());
        serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
            let key = e.path().to_string();
            let key = key.split('.').next().unwrap_or("").to_string();
            let inner = e.into_inner().to_string();
            let unknown = inner.strip_prefix("unknown field `").and_then(|r| r.split('`').next());
            let key = if key.is_empty() || key == "?" { unknown.unwrap_or("").to_string() } else { key };
            self.error(&key, inner)
        })
    }

    /// An error about one key, naming file, line, component and key.
    pub fn error(&self, key: &str, message: impl std::fmt::Display) -> Error {
        let line = self.lines.get(key).copied().or(self.line);
        let mut at = String::new();
        if let Some(f) = &self.file {
            at.push_str(&f.display().to_string());
            if let Some(l) = line {
                at.push_str(&format!(":{l}"));
            }
            at.push_str(": ");
        }
        let key_part = if key.is_empty() { String::new() } else { format!(" key `{key}`:") };
        Error::config(format!("{at}component `{}`:{key_part} {message}", self.component))
            .with_component(self.component.clone())
    }
}

/// Where the store lives, resolved against the config directory.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRto {
    complete: Option<DurationValue>,
    phase: Option<DurationValue>,
    component: Option<DurationValue>,
}

/// A duration written as `"5m"`, `"250ms"` or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(f64),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) => parse_duration(&s).map(DurationValue).map_err(serde::de::Error::custom),
            Raw::N(n) => duration_from_secs(n).map(DurationValue).map_err(serde::de::Error::custom),
        }
    }
}

/// The longest duration any key accepts: ten years.
///
/// Why a bound at all: `Duration::from_secs_f64(1e30)` panics, and a timeout of
/// `1e19` seconds loads but overflows `Instant + timeout` at the health gate (and at
/// every `resume`). Nothing an operator means is longer than this.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A number of seconds as a duration: finite, not negative, at most [`MAX_DURATION`].
pub fn duration_from_secs(n: f64) -> std::result::Result<Duration, String> {
    if n.is_nan() || n < 0.0 {
        return Err(format!("`{n}` is not a duration (it must be a number of seconds, 0 or more)"));
    }
    if n > MAX_DURATION.as_secs_f64() {
        return Err(format!("`{n}` seconds is out of range (at most {} days)", MAX_DURATION.as_secs() / 86_400));
    }
    Ok(Duration::from_secs_f64(n))
}

/// Parses `"5m"`, `"1h 30m"`, `"250ms"`, or a bare number of seconds, at most
/// [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<f64>() {
        return duration_from_secs(n).map_err(|e| e.replacen(&format!("`{n}`"), &format!("`{s}`"), 1));
    }
    let d = humantime::parse_duration(t)
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. \"30s\", \"5m\""))?;
    if d > MAX_DURATION {
        return Err(format!("`{s}` is out of range (at most {} days)", MAX_DURATION.as_secs() / 86_400));
    }
    Ok(d)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDoc {
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    rto: RawRto,
    #[serde(default)]
    decision: Thresholds,
    #[serde(default)]
    component: Vec<Spanned<BTreeMap<Spanned<String>, Spanned<toml::Value>>>>,
    #[serde(default)]
    notify: Vec<Spanned<RawNotify>>,
    watch: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    kind: String,
    url: Option<String>,
    command: Option<Vec<String>>,
    on: Option<Vec<String>>,
    timeout: Option<DurationValue>,
    retries: Option<u32>,
    ca: Option<String>,
}

/// One `[[notify]]` entry, checked; `at` is `file:line` for errors.
fn notify_entry(
    n: RawNotify,
    at: &str,
    base_dir: &Path,
    redactor: &Redactor,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<crate::notify::NotifyConfig> {
    use crate::notify::{NotifyConfig, NotifyOn, NotifyTarget};
    let bad = |m: String| Error::config(format!("{at}: [[notify]]: {m}"));
    let target = match n.kind.as_str() {
        "webhook" => {
            if n.command.is_some() {
                return Err(bad("`command` is for kind = \"command\"".into()));
            }
            let url = expand_env(n.url.as_deref().ok_or_else(|| bad("a webhook needs `url`".into()))?, redactor, env)?;
            // Never the URL itself in a message: Slack's carries its token in the path.
            let parsed = reqwest::Url::parse(&url).ok().filter(|u| matches!(u.scheme(), "http" | "https"));
            let Some(parsed) = parsed else {
                return Err(bad("`url` must be an http:// or https:// URL".into()));
            };
            redactor.add(&url);
            if parsed.path().len() > 3 {
                redactor.add(parsed.path());
            }
            if let Some(q) = parsed.query() {
                redactor.add(q);
            }
            NotifyTarget::Webhook { url, ca: n.ca.map(|c| resolve(base_dir, &c)) }
        }
        "command" => {
            if n.url.is_some() || n.ca.is_some() {
                return Err(bad("`url` and `ca` are for kind = \"webhook\"".into()));
            }
            let argv = n
                .command
                .filter(|c| !c.is_empty())
                .ok_or_else(|| bad("a command needs `command`, a list of program and arguments".into()))?;
            let argv = argv.iter().map(|a| expand_env(a, redactor, env)).collect::<Result<Vec<_>>>()?;
            NotifyTarget::Command { argv, dir: base_dir.to_path_buf() }
        }
        other => return Err(bad(format!("`kind` must be \"webhook\" or \"command\", not \"{other}\""))),
    };
    let on = match n.on {
        None => NotifyOn::ALL.iter().copied().collect(),
        Some(list) => list
            .iter()
            .map(|e| {
                e.parse::<NotifyOn>().map_err(|_| {
                    let all: Vec<_> = NotifyOn::ALL.iter().map(|x| x.as_str()).collect();
                    bad(format!("unknown event `{e}` in `on` (events: {})", all.join(", ")))
                })
            })
            .collect::<Result<_>>()?,
    };
    let timeout = n.timeout.map(|t| t.0).unwrap_or(Duration::from_secs(5));
    if timeout.is_zero() {
        return Err(bad("`timeout` must be more than 0".into()));
    }
    let retries = n.retries.unwrap_or(2);
    if retries > 10 {
        return Err(bad(format!("`retries` is {retries}; at most 10")));
    }
    Ok(NotifyConfig { target, on, timeout, retries })
}

const COMMON_KEYS: &[&str] = &["name", "driver", "phase", "depends_on", "health", "timeout"];

impl StackConfig {
    /// An empty stack whose store is `base_dir/.rollback`.
    pub fn new(base_dir: impl Into<PathBuf>) -> Self {
        let base_dir = base_dir.into();
        StackConfig {
            file: None,
            store_path: base_dir.join(".rollback"),
            base_dir,
            rto: Rto::default(),
            decision: Thresholds::default(),
            components: Vec::new(),
            redactor: Redactor::default(),
            notify: Vec::new(),
            watch: None,
        }
    }

    /// Adds a component.
    pub fn with_component(mut self, c: ComponentConfig) -> Self {
        self.components.push(c);
        self
    }

    /// Reads and validates `rollback.toml`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("cannot read config file {}", path.display())).with_source(e))?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base = abs.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        Self::from_toml_str(&text, Some(path), &base, &|k| std::env::var(k).ok())
    }

    /// Parses a config from a JSON value shaped like `rollback.toml`
    /// (`{"store": {...}, "component": [{"name": ..., "driver": ...}]}`), as the
    /// bindings take it from a dict or an object. A null means "not set" (TOML has no
    /// null); relative paths resolve against `base_dir`.
    pub fn from_json(value: serde_json::Value, base_dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
            match v {
                serde_json::Value::Object(m) => serde_json::Value::Object(
                    m.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, strip_nulls(v))).collect(),
                ),
                serde_json::Value::Array(a) => serde_json::Value::Array(a.into_iter().map(strip_nulls).collect()),
                other => other,
            }
        }
        if !value.is_object() {
            return Err(Error::config("the config must be an object like {\"component\": [...]}"));
        }
        let as_toml = |e: &dyn std::fmt::Display| Error::config(format!("the config cannot be expressed as TOML: {e}"));
        let doc = toml::Value::try_from(strip_nulls(value)).map_err(|e| as_toml(&e))?;
        let text = toml::to_string(&doc).map_err(|e| as_toml(&e))?;
        Self::from_toml_str(&text, None, base_dir, env)
    }

    /// Parses a config from TOML text; `file` is used in error messages only.
    pub fn from_toml_str(
        text: &str,
        file: Option<&Path>,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let fname = file.map(|f| f.display().to_string()).unwrap_or_else(|| "<config>".into());
        let doc: RawDoc = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            let msg = e.message().trim().to_string();
            match line {
                Some(l) => Error::config(format!("{fname}:{l}: {msg}")),
                None => Error::config(format!("{fname}: {msg}")),
            }
        })?;
        let redactor = Redactor::default();
        let mut cfg = StackConfig::new(base_dir);
        cfg.file = file.map(Path::to_path_buf);
        cfg.redactor = redactor.clone();
        if let Some(p) = doc.store.path {
            let p = expand_env(&p, &redactor, env)?;
            cfg.store_path = resolve(base_dir, &p);
        }
        let d = Rto::default();
        cfg.rto = Rto {
            complete: doc.rto.complete.map(|v| v.0).unwrap_or(d.complete),
            phase: doc.rto.phase.map(|v| v.0).unwrap_or(d.phase),
            component: doc.rto.component.map(|v| v.0).unwrap_or(d.component),
        };
        cfg.decision = doc.decision;
        cfg.decision.validate().map_err(|m| Error::config(format!("{fname}: [decision]: {m}")))?;

        for table in doc.component {
            let tline = line_of(text, table.span().start);
            let table = table.into_inner();
            let mut values = serde_json::Map::new();
            let mut lines = BTreeMap::new();
            for (k, v) in table {
                let line = line_of(text, v.span().start);
                let key = k.into_inner();
                lines.insert(key.clone(), line);
                let json = toml_to_json(v.into_inner(), &redactor, env)
                    .map_err(|e| Error::config(format!("{fname}:{line}: key `{key}`: {}", e.message())))?;
                values.insert(key, json);
            }
            let at = |key: &str| format!("{fname}:{}", lines.get(key).copied().unwrap_or(tline));
            let name = match values.remove("name") {
                Some(serde_json::Value::String(s)) if valid_name(&s) => s,
                Some(v) => {
                    return Err(Error::config(format!(
                        "{}: key `name`: `{v}` is not a valid component name (letters, digits, `-`, `_`, `.`)",
                        at("name")
                    )))
                }
                None => return Err(Error::config(format!("{fname}:{tline}: [[component]] needs a `name`"))),
            };
            let driver = match values.remove("driver") {
                Some(serde_json::Value::String(s)) => s,
                _ => {
                    return Err(Error::config(format!(
                        "{}: component `{name}`: key `driver` is missing or not a string",
                        at("driver")
                    ))
                    .with_component(name))
                }
            };
            let phase = match values.remove("phase") {
                None => 1,
                Some(serde_json::Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or(1),
                Some(v) => {
                    return Err(Error::config(format!(
                        "{}: component `{name}`: key `phase`: `{v}` is not an integer",
                        at("phase")
                    ))
                    .with_component(name))
                }
            };
            let depends_on = match values.remove("depends_on") {
                None => Vec::new(),
                Some(v) => serde_json::from_value::<Vec<String>>(v).map_err(|_| {
                    Error::config(format!(
                        "{}: component `{name}`: key `depends_on` must be a list of component names",
                        at("depends_on")
                    ))
                    .with_component(name.clone())
                })?,
            };
            let health = match values.remove("health") {
                None => Vec::new(),
                Some(v) => HealthCheck::parse_list(v).map_err(|m| {
                    Error::config(format!("{}: component `{name}`: key `health`: {m}", at("health")))
                        .with_component(name.clone())
                })?,
            };
            let timeout = match values.remove("timeout") {
                None => None,
                Some(v) => Some(
                    serde_json::from_value::<DurationValue>(v)
                        .map_err(|e| {
                            Error::config(format!("{}: component `{name}`: key `timeout`: {e}", at("timeout")))
                                .with_component(name.clone())
                        })?
                        .0,
                ),
            };
            // A step that may take no time at all fails every run, yet `check` would
            // pass it: refuse it where the key is read.
            if timeout.is_some_and(|t| t.is_zero()) {
                return Err(Error::config(format!(
                    "{}: component `{name}`: key `timeout`: must be more than 0 (every step would time out at once)",
                    at("timeout")
                ))
                .with_component(name.clone()));
            }
            for k in COMMON_KEYS {
                lines.remove(*k);
            }
            cfg.components.push(ComponentConfig {
                options: DriverOptions {
                    values,
                    lines,
                    file: Some(PathBuf::from(&fname)),
                    component: name.clone(),
                    line: Some(tline),
                },
                name,
                driver,
                phase,
                depends_on,
                health,
                timeout,
            });
        }
        for n in doc.notify {
            let at = format!("{fname}:{}", line_of(text, n.span().start));
            cfg.notify.push(notify_entry(n.into_inner(), &at, base_dir, &redactor, env)?);
        }
        if let Some(w) = doc.watch {
            let at = format!("{fname}:{}", line_of(text, w.span().start));
            let serde_json::Value::Object(m) = toml_to_json(w.into_inner(), &redactor, env)? else {
                return Err(Error::config(format!("{at}: [watch] must be a table")));
            };
            // Probe tables carry no spans of their own: the n-th `[[watch.probe]]`
            // header is the n-th probe (inline arrays fall back to the table's line).
            let headers: Vec<usize> = text
                .match_indices("[[watch.probe]]")
                .filter(|(i, _)| text[..*i].rsplit('\n').next().is_some_and(|l| l.trim().is_empty()))
                .map(|(i, _)| line_of(text, i))
                .collect();
            let probe_at = |i: usize| headers.get(i).map(|l| format!("{fname}:{l}")).unwrap_or_else(|| at.clone());
            let w = crate::watch::WatchConfig::parse(m, &at, &probe_at)?;
            for (i, p) in w.probes.iter().enumerate() {
                if let crate::watch::ProbeKind::Process { component, .. } = &p.kind {
                    if !cfg.components.iter().any(|c| &c.name == component) {
                        return Err(Error::config(format!(
                            "{}: [[watch.probe]] `{}`: `process` names component `{component}`, which is not in \
                             this config",
                            probe_at(i),
                            p.name
                        )));
                    }
                }
            }
            cfg.watch = Some(w);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks names, dependencies and cycles.
    pub fn validate(&self) -> Result<()> {
        let mut seen = BTreeSet::new();
        for c in &self.components {
            if !valid_name(&c.name) {
                return Err(Error::config(format!("`{}` is not a valid component name", c.name)));
            }
            if !seen.insert(c.name.as_str()) {
                return Err(Error::config(format!("component `{}` is defined twice", c.name)).with_component(&c.name));
            }
            if c.options.component.is_empty() {
                // Built in code: still name the component in errors.
            }
        }
        for c in &self.components {
            for d in &c.depends_on {
                if !seen.contains(d.as_str()) {
                    return Err(Error::config(format!(
                        "component `{}` depends on `{d}`, which is not a component of this stack",
                        c.name
                    ))
                    .with_component(&c.name));
                }
                if d == &c.name {
                    return Err(
                        Error::config(format!("component `{}` depends on itself", c.name)).with_component(&c.name)
                    );
                }
            }
        }
        // Cycle check by depth-first search.
        fn visit<'a>(
            n: &'a str,
            cfg: &'a StackConfig,
            state: &mut BTreeMap<&'a str, u8>,
            path: &mut Vec<&'a str>,
        ) -> Result<()> {
            match state.get(n) {
                Some(2) => return Ok(()),
                Some(1) => {
                    path.push(n);
                    return Err(Error::config(format!("dependency cycle: {}", path.join(" -> "))));
                }
                _ => {}
            }
            state.insert(n, 1);
            path.push(n);
            if let Some(c) = cfg.components.iter().find(|c| c.name == n) {
                for d in &c.depends_on {
                    visit(d, cfg, state, path)?;
                }
            }
            path.pop();
            state.insert(n, 2);
            Ok(())
        }
        let mut state = BTreeMap::new();
        for c in &self.components {
            visit(&c.name, self, &mut state, &mut Vec::new())?;
        }
        Ok(())
    }

    /// The component of that name.
    pub fn component(&self, name: &str) -> Result<&ComponentConfig> {
        self.components.iter().find(|c| c.name == name).ok_or_else(|| {
            let known: Vec<_> = self.components.iter().map(|c| c.name.as_str()).collect();
            Error::not_found(format!("no component named `{name}` (components: {})", known.join(", ")))
        })
    }

    /// Resolves a path from the config against its directory.
    pub fn resolve(&self, p: &str) -> PathBuf {
        resolve(&self.base_dir, p)
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Component names end up in file names and messages: keep them plain.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s != "."
        && s != ".."
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

fn toml_to_json(
    v: toml::Value,
    redactor: &Redactor,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<serde_json::Value> {
    Ok(match v {
        toml::Value::String(s) => serde_json::Value::String(expand_env(&s, redactor, env)?),
        toml::Value::Integer(i) => serde_json::Value::from(i),
        toml::Value::Float(f) => serde_json::Value::from(f),
        toml::Value::Boolean(b) => serde_json::Value::Bool(b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(|x| toml_to_json(x, redactor, env)).collect::<Result<_>>()?)
        }
        toml::Value::Table(t) => {
            let mut m = serde_json::Map::new();
            for (k, v) in t {
                m.insert(k, toml_to_json(v, redactor, env)?);
            }
            serde_json::Value::Object(m)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<StackConfig> {
        StackConfig::from_toml_str(s, Some(Path::new("rollback.toml")), Path::new("/srv"), &|k| {
            (k == "DB_PASSWORD").then(|| "pa55word".to_string())
        })
    }

    #[test]
    fn a_config_object_reads_as_its_toml_would() {
        let env = |k: &str| (k == "DB_PASSWORD").then(|| "pa55word".to_string());
        let v = serde_json::json!({
            "store": {"path": "snaps", "unused": null},
            "component": [{"name": "code", "driver": "git", "repo": ".", "phase": null}],
        });
        let c = StackConfig::from_json(v, Path::new("/srv"), &env).unwrap();
        assert_eq!(c.store_path, Path::new("/srv/snaps"));
        assert_eq!((c.components[0].name.as_str(), c.components[0].phase), ("code", 1));
        for bad in
            [serde_json::json!([1]), serde_json::json!({"component": [{"name": "x", "driver": "git", "phase": "one"}]})]
        {
            let e = StackConfig::from_json(bad, Path::new("/srv"), &env).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::ConfigInvalid, "{e}");
        }
    }

    #[test]
    fn full_config_parses() {
        let c = parse(
            r#"
[store]
path = "snaps"
[rto]
complete = "5m"
[[component]]
name = "code"
driver = "git"
repo = "/opt/app"
[[component]]
name = "db"
driver = "postgres"
phase = 2
url = "postgres://app:${DB_PASSWORD}@127.0.0.1/trading"
depends_on = ["code"]
health = [{ tcp = "127.0.0.1:5432" }]
"#,
        )
        .unwrap();
        assert_eq!(c.store_path, PathBuf::from("/srv/snaps"));
        assert_eq!(c.components.len(), 2);
        assert_eq!(c.components[1].phase, 2);
        assert_eq!(c.redactor.redact("x pa55word y"), "x *** y");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = parse("[[component]]\nname = \"a\"\ndriver = \"git\"\nphase = \"two\"\n").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("rollback.toml:4"), "{m}");
        assert!(m.contains("`phase`"), "{m}");
        let e = parse("[rto]\ncomplete = \"soon\"\n").unwrap_err().to_string();
        assert!(e.contains("rollback.toml:2") && e.contains("soon"), "{e}");
        let e = parse("[[component]]\nname=\"a\"\ndriver=\"git\"\ndepends_on=[\"zz\"]\n").unwrap_err().to_string();
        assert!(e.contains("zz"), "{e}");
        let e = parse("[bogus]\n").unwrap_err().to_string();
        assert!(e.contains("rollback.toml:1") && e.contains("bogus"), "{e}");
    }

    #[test]
    fn driver_option_errors_point_at_the_key() {
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct G {
            repo: String,
        }
        let c = parse("[[component]]\nname = \"a\"\ndriver = \"git\"\nrepo = \"/x\"\nrepoo = 1\n").unwrap();
        let e = c.components[0].options.parse::<G>().unwrap_err().to_string();
        assert!(e.contains("rollback.toml:5") && e.contains("repoo"), "{e}");
    }

    #[test]
    fn out_of_range_values_are_errors_naming_the_key() {
        let comp = |extra: &str| format!("[[component]]\nname = \"a\"\ndriver = \"git\"\n{extra}\n");
        for (text, key) in [
            (comp("timeout = 1e30"), "`timeout`"),
            (comp("timeout = 1e19"), "`timeout`"),
            (comp("timeout = -1"), "`timeout`"),
            (comp("timeout = \"1e300\""), "`timeout`"),
            (comp("timeout = \"100000000y\""), "`timeout`"),
            (comp("timeout = \"0s\""), "`timeout`"),
            (comp("timeout = 0"), "`timeout`"),
            (comp("health = [{ tcp = \"127.0.0.1:1\", timeout = -1 }]"), "`health`"),
            (comp("health = [{ tcp = \"127.0.0.1:1\", timeout = 1e19 }]"), "`health`"),
            (comp("health = [{ tcp = \"127.0.0.1:1\", interval = 1e300 }]"), "`health`"),
            (comp("health = [{ http = \"http://127.0.0.1:1/\", status = 70000 }]"), "`health`"),
            (comp("health = [{ heartbeat = \"hb\", max_age = 1e300 }]"), "`health`"),
            ("[rto]\ncomplete = 1e300\n".to_string(), "rollback.toml:2"),
            ("[rto]\nphase = -5\n".to_string(), "rollback.toml:2"),
        ] {
            let e = parse(&text).expect_err(&text).to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        assert_eq!(parse_duration("3650d").unwrap(), MAX_DURATION);
        assert!(parse_duration("3651d").is_err());
        assert!(duration_from_secs(f64::NAN).is_err());
        assert!(duration_from_secs(f64::INFINITY).is_err());
    }

    #[test]
    fn cycles_are_refused() {
        let e = parse(
            "[[component]]\nname=\"a\"\ndriver=\"git\"\ndepends_on=[\"b\"]\n[[component]]\nname=\"b\"\ndriver=\"git\"\ndepends_on=[\"a\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cycle"), "{e}");
    }
}
