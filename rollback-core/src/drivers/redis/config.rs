//! The `redis` component's keys.

use super::*;

/// What a restore does with the key space.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Delete the keys matching `pattern`, then restore the captured ones.
    #[default]
    Replace,
    /// Restore the captured keys over what is there; other keys stay.
    Merge,
    /// Only delete the keys matching `pattern` (the runbooks' cache clear).
    Flush,
}

impl Mode {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Mode::Replace => "replace",
            Mode::Merge => "merge",
            Mode::Flush => "flush",
        }
    }
}

/// Keys of a `redis` component.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db`, or `rediss://` for TLS.
    pub url: String,
    /// A CA file (PEM) trusted instead of the system's roots (`rediss://`).
    #[serde(default)]
    pub ca: Option<String>,
    /// A client certificate and its key (PEM files), for servers that ask for one.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// The key of `client_cert` (PEM).
    #[serde(default)]
    pub client_key: Option<String>,
    /// `replace` (default), `merge` or `flush`.
    #[serde(default)]
    pub mode: Mode,
    /// Glob of the keys this component owns (default `*`: the whole db).
    #[serde(default = "default_pattern")]
    pub pattern: String,
    /// Fence the server's other ACL users' writes during a rollback (default true).
    #[serde(default = "yes")]
    pub fence: bool,
}

pub(super) fn default_pattern() -> String {
    "*".into()
}

pub(super) fn yes() -> bool {
    true
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url_passwords(&self.url))
            .field("mode", &self.mode)
            .field("pattern", &self.pattern)
            .finish()
    }
}
