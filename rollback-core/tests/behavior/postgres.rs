//! `postgres`: a database of its own per trial (tables, a sequence, a view); a deploy
//! inserts and updates rows. The oracle is `psql`. Both strategies run.

use std::path::Path;

use rollback_core::testkit::{async_trait, run, unique, Fixture, Trial};
use rollback_core::{ComponentConfig, Result};

const KNOWN_FAILURES: &[(Trial, &str)] = &[];

/// `ROLLBACK_POSTGRES_URL`: the server, without a database.
struct Postgres {
    strategy: &'static str,
}

fn base() -> String {
    super::setting("ROLLBACK_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432").trim_end_matches('/').to_string()
}

async fn psql(db: &str, sql: &str) -> Result<String> {
    let url = format!("{}/{db}", base());
    run("psql", &[url.as_str(), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql], None).await
}

#[async_trait]
impl Fixture for Postgres {
    fn driver(&self) -> &str {
        "postgres"
    }

    async fn component(&self, name: &str, _dir: &Path) -> Result<ComponentConfig> {
        psql("postgres", &format!("CREATE DATABASE \"{name}\"")).await?;
        psql(
            name,
            "CREATE TABLE accounts (id serial PRIMARY KEY, owner text NOT NULL, balance numeric(20,8));
             CREATE TABLE trades (id bigserial PRIMARY KEY, account int REFERENCES accounts, qty int);
             CREATE VIEW rich AS SELECT * FROM accounts WHERE balance > 100;
             INSERT INTO accounts (owner, balance) VALUES ('ada', 120.5), ('bob', 7), ('ünï', NULL);
             INSERT INTO trades (account, qty) VALUES (1, 10), (2, -3);",
        )
        .await?;
        Ok(ComponentConfig::new(name, "postgres")
            .option("url", format!("{}/{name}", base()))
            .option("strategy", self.strategy))
    }

    async fn mutate(&self, name: &str, _dir: &Path) -> Result<()> {
        let sql = format!(
            "INSERT INTO accounts (owner, balance) VALUES ('{}', 1); UPDATE accounts SET balance = balance + 1;
             DELETE FROM trades WHERE id = (SELECT min(id) FROM trades);",
            unique("carol")
        );
        psql(name, &sql).await.map(drop)
    }

    async fn digest(&self, name: &str, _dir: &Path) -> Result<String> {
        psql(
            name,
            "SELECT (SELECT string_agg(table_name || ':' || table_type, ',' ORDER BY table_name)
                       FROM information_schema.tables WHERE table_schema = 'public'),
                    (SELECT md5(string_agg(a::text, '|' ORDER BY a.id)) FROM accounts a),
                    (SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) FROM trades t),
                    (SELECT last_value || '/' || is_called FROM accounts_id_seq)",
        )
        .await
    }

    async fn cleanup(&self, name: &str, _dir: &Path) {
        // The database and the copies the fast strategy keeps beside it.
        let list =
            format!("SELECT datname FROM pg_database WHERE datname = '{name}' OR starts_with(datname, '{name}__')");
        for db in psql("postgres", &list).await.unwrap_or_default().lines() {
            let _ = psql("postgres", &format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")).await;
        }
    }

    async fn pinned(&self, name: &str, _dir: &Path, snapshot_id: &str) -> Result<Option<usize>> {
        let prefix = format!("{name}__rb_{}", snapshot_id.to_lowercase());
        let n = psql("postgres", &format!("SELECT count(*) FROM pg_database WHERE starts_with(datname, '{prefix}')"))
            .await?;
        Ok(Some(n.trim().parse().unwrap_or(usize::MAX)))
    }
}

mod dump {
    use super::*;
    rollback_core::behavior_tests!(Postgres { strategy: "dump" }, KNOWN_FAILURES);
}

mod fast {
    use super::*;
    rollback_core::behavior_tests!(Postgres { strategy: "fast" }, KNOWN_FAILURES);
}
