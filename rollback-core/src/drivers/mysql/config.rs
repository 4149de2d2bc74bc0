//! The `mysql` component's keys, and the TLS options read from its url.

use super::*;

/// How a snapshot is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Schema and data streamed into the store (portable).
    #[default]
    Dump,
    /// In-server copies in a snapshot schema, swapped in with `RENAME TABLE`.
    Fast,
}

/// Keys of a `mysql` component.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// `mysql://user:password@host:port/database`, with `ssl-mode` and `ssl-ca` (and
    /// `ssl-cert`, `ssl-key`) as URL parameters.
    pub url: String,
    /// `dump` (default) or `fast`.
    #[serde(default)]
    pub strategy: Strategy,
    /// Only these tables (default: every base table of the database).
    pub tables: Option<Vec<String>>,
    /// Tables loaded at once during a restore (default 2).
    pub parallel: Option<usize>,
    /// `true`: restore with `LOAD DATA LOCAL INFILE` (falling back to INSERTs when the
    /// server refuses it). Default `false`: prepared multi-row INSERTs, as fast within
    /// noise on MariaDB 10.11 here, and needing no `local_infile` on the server.
    pub load_data: Option<bool>,
    /// Fence writers while the database is put back (default `true`): the server is
    /// made read-only for accounts without READ_ONLY ADMIN or SUPER, for the window.
    pub fence: Option<bool>,
}

impl std::fmt::Debug for MysqlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlConfig")
            .field("url", &redact_url_passwords(&self.url))
            .field("strategy", &self.strategy)
            .field("tables", &self.tables)
            .finish()
    }
}

/// MySQL's `--ssl-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SslMode {
    Disabled,
    Preferred,
    Required,
    VerifyCa,
    VerifyIdentity,
}

/// The TLS part of a connection: the mode, and the options when it may use TLS.
#[derive(Debug, Clone)]
pub(super) struct Tls {
    pub(super) mode: SslMode,
    pub(super) ssl: Option<mysql_async::SslOpts>,
}

/// Takes MySQL's TLS parameters (`ssl-mode`, `ssl-ca`, `ssl-cert`, `ssl-key`, also with
/// `_`) out of the url, which mysql_async would refuse, and makes its `SslOpts`.
pub(super) fn split_tls(url: &str, base: &std::path::Path) -> std::result::Result<(String, Tls), String> {
    let mut found: std::collections::BTreeMap<String, String> = Default::default();
    let rest = match url.split_once('?') {
        None => url.to_string(),
        Some((head, query)) => {
            let mut kept = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let key = k.replace('_', "-").to_ascii_lowercase();
                if matches!(key.as_str(), "ssl-mode" | "ssl-ca" | "ssl-cert" | "ssl-key") {
                    found.insert(key, v.to_string());
                } else {
                    kept.push(pair);
                }
            }
            if kept.is_empty() {
                head.to_string()
            } else {
                format!("{head}?{}", kept.join("&"))
            }
        }
    };
    let mode = match found.get("ssl-mode").map(|m| m.to_ascii_uppercase()).as_deref() {
        None | Some("PREFERRED") => SslMode::Preferred,
        Some("DISABLED") => SslMode::Disabled,
        Some("REQUIRED") => SslMode::Required,
        Some("VERIFY_CA") => SslMode::VerifyCa,
        Some("VERIFY_IDENTITY") => SslMode::VerifyIdentity,
        Some(other) => {
            return Err(format!(
                "ssl-mode `{other}` is not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY"
            ))
        }
    };
    if mode == SslMode::Disabled {
        return Ok((rest, Tls { mode, ssl: None }));
    }
    let path = |k: &str| found.get(k).map(|p| base.join(p));
    let verify = matches!(mode, SslMode::VerifyCa | SslMode::VerifyIdentity);
    let mut ssl = mysql_async::SslOpts::default()
        // Without verification any certificate goes, as the mysql client's REQUIRED.
        .with_danger_accept_invalid_certs(!verify)
        .with_disable_built_in_roots(true);
    ssl = match path("ssl-ca") {
        Some(ca) => {
            std::fs::metadata(&ca).map_err(|e| format!("ssl-ca {}: {e}", ca.display()))?;
            ssl.with_root_certs(vec![ca.into()])
        }
        // The system's roots (a managed database's certificate chains up to one).
        None => {
            let system = rustls_native_certs::load_native_certs().certs;
            if verify && system.is_empty() {
                return Err("ssl-mode VERIFY_CA/VERIFY_IDENTITY needs ssl-ca=<CA file> (no system roots found)".into());
            }
            ssl.with_root_certs(system.into_iter().map(|c| c.to_vec().into()).collect())
        }
    };
    match (path("ssl-cert"), path("ssl-key")) {
        (Some(c), Some(k)) => {
            ssl = ssl.with_client_identity(Some(mysql_async::ClientIdentity::new(c.into(), k.into())));
        }
        (None, None) => {}
        _ => return Err("give both ssl-cert and ssl-key for a client certificate, or neither".into()),
    }
    Ok((rest, Tls { mode, ssl: Some(ssl) }))
}
