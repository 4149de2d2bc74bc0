//! Connections, the mapping of server errors into the core's, identifier quoting.

use std::error::Error as _;
use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use crate::error::{Error, ErrorKind, Result};

/// Where a component's database is, without its password (safe to print and store).
#[derive(Clone)]
pub(super) struct Target {
    pub(super) cfg: Config,
    pub(super) db: String,
    pub(super) desc: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.desc)
    }
}

impl Target {
    pub(super) fn new(mut cfg: Config) -> Target {
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
        let host = match cfg.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        let desc = format!("{user}@{host}:{port}/{db}");
        Target { cfg, db, desc }
    }

    /// The same server, another database (`postgres` for CREATE/ALTER DATABASE).
    pub(super) fn with_db(&self, db: &str) -> Target {
        let mut cfg = self.cfg.clone();
        cfg.dbname(db);
        Target::new(cfg)
    }

    pub(super) fn password(&self) -> Option<String> {
        self.cfg.get_password().map(|p| String::from_utf8_lossy(p).into_owned())
    }

    /// libpq environment for `pg_dump`: the password never goes on the command line.
    pub(super) fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            (
                "PGHOST",
                match self.cfg.get_hosts().first() {
                    Some(Host::Tcp(h)) => h.clone(),
                    Some(Host::Unix(p)) => p.display().to_string(),
                    None => "localhost".into(),
                },
            ),
            ("PGPORT", self.cfg.get_ports().first().copied().unwrap_or(5432).to_string()),
            ("PGUSER", self.cfg.get_user().unwrap_or("postgres").to_string()),
            ("PGDATABASE", self.db.clone()),
            ("PGCONNECT_TIMEOUT", "10".into()),
        ];
        if let Some(p) = self.password() {
            env.push(("PGPASSWORD", p));
        }
        env
    }

    pub(super) async fn connect(&self) -> Result<Client> {
        match self.cfg.connect(NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "postgres connection ended");
                    }
                });
                Ok(client)
            }
            Err(e) => Err(pg_error(&e, &format!("cannot connect to PostgreSQL {}", self.desc))),
        }
    }
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
