//! Connections, the mapping of server errors into the core's, identifier quoting.

use std::error::Error as _;
use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use crate::error::{Error, ErrorKind, Result};
use crate::tls::{ClientTls, Roots, Verify};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PgSslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl PgSslMode {
    fn parse(s: &str) -> std::result::Result<PgSslMode, String> {
        Ok(match s {
            "disable" => PgSslMode::Disable,
            "allow" => PgSslMode::Allow,
            "prefer" => PgSslMode::Prefer,
            "require" => PgSslMode::Require,
            "verify-ca" => PgSslMode::VerifyCa,
            "verify-full" => PgSslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ))
            }
        })
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            PgSslMode::Disable => "disable",
            PgSslMode::Allow => "allow",
            PgSslMode::Prefer => "prefer",
            PgSslMode::Require => "require",
            PgSslMode::VerifyCa => "verify-ca",
            PgSslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS settings of a connection, as libpq reads them: the URL's `sslmode`,
/// `sslrootcert`, `sslcert` and `sslkey`, else `PGSSLMODE` and friends, else `prefer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PgTls {
    pub(super) mode: PgSslMode,
    /// A CA file, or `system` for the operating system's roots.
    pub(super) rootcert: Option<String>,
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
}

impl PgTls {
    /// How the server's certificate is checked, as libpq does: `require` with a root
    /// certificate given checks the chain like `verify-ca`.
    pub(super) fn verify(&self) -> Option<Verify> {
        match self.mode {
            PgSslMode::Disable => None,
            PgSslMode::Allow | PgSslMode::Prefer => Some(Verify::None),
            PgSslMode::Require if self.rootcert.is_some() => Some(Verify::Chain),
            PgSslMode::Require => Some(Verify::None),
            PgSslMode::VerifyCa => Some(Verify::Chain),
            PgSslMode::VerifyFull => Some(Verify::Full),
        }
    }

    fn client(&self) -> Result<ClientTls> {
        let verify = self.verify().unwrap_or(Verify::None);
        let roots = match self.rootcert.as_deref() {
            Some("system") => Roots::System,
            Some(p) => Roots::File(PathBuf::from(p)),
            None if verify != Verify::None => {
                return Err(Error::new(
                    ErrorKind::ConfigInvalid,
                    format!(
                        "sslmode={} needs the CA to check the server with: add sslrootcert=<CA file> \
                         (or sslrootcert=system) to the url",
                        self.mode.as_str()
                    ),
                ))
            }
            None => Roots::System,
        };
        let identity = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => {
                return Err(Error::new(
                    ErrorKind::ConfigInvalid,
                    "give both sslcert and sslkey for a client certificate, or neither",
                ))
            }
        };
        Ok(ClientTls { verify, roots, identity })
    }
}

/// Takes libpq's TLS parameters out of a connection string (URL or `key=value` form),
/// which tokio-postgres would refuse, and returns the rest with them.
pub(super) fn split_tls(
    url: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<(String, PgTls), String> {
    const KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];
    let mut found: std::collections::BTreeMap<&str, String> = Default::default();
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    match KEYS.iter().find(|x| **x == k) {
                        Some(key) => {
                            found.insert(key, percent_decode(v)?);
                        }
                        None => kept.push(pair),
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for (k, v, raw) in key_values(url)? {
            match KEYS.iter().find(|x| **x == k) {
                Some(key) => {
                    found.insert(key, v);
                }
                None => kept.push(raw),
            }
        }
        kept.join(" ")
    };
    let pick = |k: &str, var: &str| found.get(k).cloned().or_else(|| env(var).filter(|v| !v.is_empty()));
    let mode = match pick("sslmode", "PGSSLMODE") {
        Some(m) => PgSslMode::parse(&m)?,
        None => PgSslMode::Prefer,
    };
    let tls = PgTls {
        mode,
        rootcert: pick("sslrootcert", "PGSSLROOTCERT"),
        cert: pick("sslcert", "PGSSLCERT").map(PathBuf::from),
        key: pick("sslkey", "PGSSLKEY").map(PathBuf::from),
    };
    Ok((rest, tls))
}

fn percent_decode(s: &str) -> std::result::Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(x) => out.push(x),
                None => return Err("a `%` in the url's parameters is not followed by two hex digits".into()),
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a url parameter is not UTF-8".into())
}

/// `key=value` pairs of libpq's keyword form, each with its raw text (values may be
/// quoted with `'`, with `\'` and `\\` escapes).
fn key_values(s: &str) -> std::result::Result<Vec<(String, String, String)>, String> {
    let mut out = Vec::new();
    let mut it = s.char_indices().peekable();
    loop {
        while it.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            it.next();
        }
        let Some(&(start, _)) = it.peek() else { break };
        let mut key = String::new();
        while let Some(&(_, c)) = it.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            it.next();
        }
        while it.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            it.next();
        }
        if it.next().map(|(_, c)| c) != Some('=') {
            return Err(format!("`{key}` in the connection string has no `=`"));
        }
        while it.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            it.next();
        }
        let mut value = String::new();
        if it.peek().map(|(_, c)| *c) == Some('\'') {
            it.next();
            loop {
                match it.next().map(|(_, c)| c) {
                    Some('\\') => value.extend(it.next().map(|(_, c)| c)),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("the value of `{key}` has no closing quote")),
                }
            }
        } else {
            while let Some(&(_, c)) = it.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                it.next();
            }
        }
        let end = it.peek().map(|(i, _)| *i).unwrap_or(s.len());
        out.push((key, value, s[start..end].to_string()));
    }
    Ok(out)
}

/// A `.pgpass` line's password for this connection, as libpq finds it: the first line
/// whose host, port, database and user match (`*` matches anything).
pub(super) fn pgpass_lookup(text: &str, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => cur.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            continue;
        }
        let port = port.to_string();
        let matches = |f: &str, v: &str| f == "*" || f == v;
        let host_ok = matches(&fields[0], host) || (fields[0] == "localhost" && host.starts_with('/'));
        if host_ok && matches(&fields[1], &port) && matches(&fields[2], db) && matches(&fields[3], user) {
            return Some(fields[4].clone());
        }
    }
    None
}

/// Where a component's database is, without its password (safe to print and store).
#[derive(Clone)]
pub(super) struct Target {
    pub(super) cfg: Config,
    pub(super) db: String,
    pub(super) desc: String,
    pub(super) tls: PgTls,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.desc)
    }
}

impl Target {
    pub(super) fn new(mut cfg: Config, tls: PgTls) -> Target {
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(Duration::from_secs(10));
        }
        let user = cfg.get_user().unwrap_or("postgres").to_string();
        if cfg.get_user().is_none() {
            cfg.user(&user);
        }
        // libpq's default: the database named like the user.
        let db = cfg.get_dbname().unwrap_or(&user).to_string();
        cfg.dbname(&db);
        let desc = format!("{user}@{}:{}/{db}", host_of(&cfg), port_of(&cfg));
        Target { cfg, db, desc, tls }
    }

    /// The same server, another database (`postgres` for CREATE/ALTER DATABASE).
    pub(super) fn with_db(&self, db: &str) -> Target {
        let mut cfg = self.cfg.clone();
        cfg.dbname(db);
        Target::new(cfg, self.tls.clone())
    }

    pub(super) fn host(&self) -> String {
        host_of(&self.cfg)
    }

    pub(super) fn port(&self) -> u16 {
        port_of(&self.cfg)
    }

    pub(super) fn password(&self) -> Option<String> {
        self.cfg.get_password().map(|p| String::from_utf8_lossy(p).into_owned())
    }

    /// libpq environment for `pg_dump`: the password and the TLS settings never go on
    /// the command line.
    pub(super) fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PGHOST", self.host()),
            ("PGPORT", self.port().to_string()),
            ("PGUSER", self.cfg.get_user().unwrap_or("postgres").to_string()),
            ("PGDATABASE", self.db.clone()),
            ("PGCONNECT_TIMEOUT", "10".into()),
            ("PGSSLMODE", self.tls.mode.as_str().into()),
        ];
        if let Some(p) = self.password() {
            env.push(("PGPASSWORD", p));
        }
        if let Some(r) = &self.tls.rootcert {
            env.push(("PGSSLROOTCERT", r.clone()));
        }
        if let Some(c) = &self.tls.cert {
            env.push(("PGSSLCERT", c.display().to_string()));
        }
        if let Some(k) = &self.tls.key {
            env.push(("PGSSLKEY", k.display().to_string()));
        }
        env
    }

    pub(super) async fn connect(&self) -> Result<Client> {
        let what = || format!("cannot connect to PostgreSQL {}", self.desc);
        let conn_err = |e: &tokio_postgres::Error| {
            let err = pg_error(e, &what());
            match crate::tls::explain(e) {
                // Not temporary: a certificate does not fix itself between retries.
                Some(why) => Error::new(err.kind(), format!("{}: {why}", what())),
                None => err,
            }
        };
        let mut cfg = self.cfg.clone();
        match self.tls.mode {
            PgSslMode::Disable => {
                cfg.ssl_mode(SslMode::Disable);
                return cfg.connect(NoTls).await.map(spawn_conn).map_err(|e| conn_err(&e));
            }
            PgSslMode::Allow => {
                // libpq's `allow`: plaintext first, TLS only when the server refuses it.
                cfg.ssl_mode(SslMode::Disable);
                match cfg.connect(NoTls).await {
                    Ok(c) => return Ok(spawn_conn(c)),
                    Err(e) if e.as_db_error().is_none() && !e.is_closed() => return Err(conn_err(&e)),
                    Err(_) => {}
                }
                cfg.ssl_mode(SslMode::Require);
            }
            PgSslMode::Prefer => {
                cfg.ssl_mode(SslMode::Prefer);
            }
            PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull => {
                cfg.ssl_mode(SslMode::Require);
            }
        }
        let tls = crate::tls::client_config(&self.tls.client()?)?;
        let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
        cfg.connect(connector).await.map(spawn_conn).map_err(|e| conn_err(&e))
    }
}

fn host_of(cfg: &Config) -> String {
    match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    }
}

fn port_of(cfg: &Config) -> u16 {
    cfg.get_ports().first().copied().unwrap_or(5432)
}

fn spawn_conn<S, T>((client, conn): (Client, tokio_postgres::Connection<S, T>)) -> Client
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    client
}

/// Converts a server/client error once, at the driver's edge. The message holds the
/// server's text (never the connection string: tokio-postgres does not echo it).
pub(super) fn pg_error(e: &tokio_postgres::Error, what: &str) -> Error {
    let (kind, temporary) = match e.code() {
        Some(c) if *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
            (ErrorKind::PermissionDenied, false)
        }
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => (ErrorKind::PermissionDenied, false),
        Some(c)
            if *c == SqlState::INVALID_CATALOG_NAME
                || *c == SqlState::UNDEFINED_TABLE
                || *c == SqlState::UNDEFINED_OBJECT =>
        {
            (ErrorKind::NotFound, false)
        }
        Some(c)
            if *c == SqlState::TOO_MANY_CONNECTIONS
                || *c == SqlState::CANNOT_CONNECT_NOW
                || *c == SqlState::OBJECT_IN_USE
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            (ErrorKind::Unexpected, true)
        }
        Some(_) => (ErrorKind::Unexpected, false),
        None if e.is_closed() => (ErrorKind::Unreachable, true),
        None => {
            let s = e.to_string();
            if s.contains("connecting") || s.contains("communicating") || s.contains("timeout") {
                (ErrorKind::Unreachable, true)
            } else {
                (ErrorKind::Unexpected, false)
            }
        }
    };
    let err = Error::new(kind, format!("{what}: {}", describe(e)));
    if temporary {
        err.set_temporary()
    } else {
        err
    }
}

/// The server's message (with detail and hint) or the chain of causes.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(d) = db.detail() {
            s.push_str(&format!("; {d}"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; hint: {h}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}

/// `"name"` with embedded quotes doubled: the only safe way to put a name in SQL.
pub(super) fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `"schema"."name"`.
pub(super) fn qname(schema: &str, name: &str) -> String {
    format!("{}.{}", ident(schema), ident(name))
}

/// A `pg_dump -t/-n` pattern matching exactly this name (quotes make `*?.` literal).
pub(super) fn dump_pattern(parts: &[&str]) -> String {
    parts.iter().map(|p| ident(p)).collect::<Vec<_>>().join(".")
}

/// `schema.table`, `table` (schema `public`) or quoted `"a.b"."c"` as in SQL.
pub(super) fn parse_qualified(s: &str) -> std::result::Result<(String, String), String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut quoted_part = false;
    while let Some(c) = chars.next() {
        if c == '"' && cur.is_empty() && !quoted_part {
            quoted_part = true;
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        cur.push('"');
                    }
                    Some('"') => break,
                    Some(x) => cur.push(x),
                    None => return Err(format!("unclosed quote in `{s}`")),
                }
            }
        } else if c == '.' && parts.is_empty() {
            parts.push(std::mem::take(&mut cur));
            quoted_part = false;
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    match parts.as_slice() {
        [t] if !t.is_empty() => Ok(("public".into(), t.clone())),
        [s2, t] if !s2.is_empty() && !t.is_empty() => Ok((s2.clone(), t.clone())),
        _ => Err(format!("`{s}` is not a table name (`table` or `schema.table`)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_leave_the_url_as_libpq_reads_them() {
        let none = |_: &str| None;
        let (rest, t) = split_tls(
            "postgres://u:p%40ss@db.example.supabase.co:5432/postgres?sslmode=verify-full&sslrootcert=%2Fca.pem&application_name=x",
            &none,
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p%40ss@db.example.supabase.co:5432/postgres?application_name=x");
        assert_eq!(t.mode, PgSslMode::VerifyFull);
        assert_eq!(t.rootcert.as_deref(), Some("/ca.pem"));
        assert_eq!(t.verify(), Some(Verify::Full));
        // Keyword form, quoted values; the environment only fills what the url lacks.
        let env = |k: &str| match k {
            "PGSSLMODE" => Some("verify-ca".to_string()),
            "PGSSLCERT" => Some("/c.pem".to_string()),
            _ => None,
        };
        let (rest, t) = split_tls("host=db user=u sslmode = require sslrootcert='/my ca.pem' dbname=x", &env).unwrap();
        assert_eq!(rest, "host=db user=u dbname=x");
        assert_eq!((t.mode, t.rootcert.as_deref()), (PgSslMode::Require, Some("/my ca.pem")));
        assert_eq!(t.cert, Some(PathBuf::from("/c.pem")));
        // `require` with a CA checks the chain, as libpq does; the default is `prefer`.
        assert_eq!(t.verify(), Some(Verify::Chain));
        let (_, t) = split_tls("postgres://h/db", &none).unwrap();
        assert_eq!((t.mode, t.verify()), (PgSslMode::Prefer, Some(Verify::None)));
        let (_, t) = split_tls("postgres://h/db", &env).unwrap();
        assert_eq!(t.mode, PgSslMode::VerifyCa);
        assert!(split_tls("postgres://h/db?sslmode=verify_full", &none).unwrap_err().contains("verify-full"));
        assert!(split_tls("host=db sslrootcert='/x", &none).is_err());
    }

    #[test]
    fn pgpass_lines_match_as_libpq_matches_them() {
        let text = "# comment\nother:5432:*:u:nope\ndb.example:*:trading:u:pa\\:ss\n*:*:*:*:fallback\n";
        assert_eq!(pgpass_lookup(text, "db.example", 6432, "trading", "u").as_deref(), Some("pa:ss"));
        assert_eq!(pgpass_lookup(text, "db.example", 5432, "other", "u").as_deref(), Some("fallback"));
        assert_eq!(pgpass_lookup("h:1:d:u:x\n", "h", 2, "d", "u"), None);
    }

    #[test]
    fn names_parse_and_quote() {
        assert_eq!(parse_qualified("orders").unwrap(), ("public".into(), "orders".into()));
        assert_eq!(parse_qualified("trade.orders").unwrap(), ("trade".into(), "orders".into()));
        assert_eq!(parse_qualified("\"a.b\".\"c\"\"d\"").unwrap(), ("a.b".into(), "c\"d".into()));
        assert_eq!(
            parse_qualified("x\"; DROP TABLE y; --").unwrap(),
            ("public".into(), "x\"; DROP TABLE y; --".into())
        );
        assert!(parse_qualified("").is_err());
        assert_eq!(ident("x\"; DROP TABLE y; --"), "\"x\"\"; DROP TABLE y; --\"");
    }
}
