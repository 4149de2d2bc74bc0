//! `mysql`: a database of its own per trial (a foreign key, an auto-increment
//! counter, a trigger); a deploy inserts, updates and deletes rows. The oracle is the
//! `mysql` client. Both strategies run.

use std::path::Path;

use rollback_core::testkit::{async_trait, run, unique, Fixture, Trial};
use rollback_core::{ComponentConfig, Result};

const KNOWN_FAILURES: &[(Trial, &str)] = &[];

/// `ROLLBACK_MYSQL_URL`: `mysql://user[:password]@host:port`, without a database.
struct Mysql {
    strategy: &'static str,
}

fn base() -> String {
    super::setting("ROLLBACK_MYSQL_URL", "mysql://root@127.0.0.1:3306").trim_end_matches('/').to_string()
}

/// The client's arguments for the server in `base()`.
async fn mysql(db: &str, sql: &str) -> Result<String> {
    let rest = base().trim_start_matches("mysql://").to_string();
    let (cred, addr) = rest.rsplit_once('@').unwrap_or(("root", rest.as_str()));
    let (user, password) = cred.split_once(':').map_or((cred, None), |(u, p)| (u, Some(p)));
    let (host, port) = addr.split_once(':').unwrap_or((addr, "3306"));
    let (u, h, p, pw) =
        (format!("-u{user}"), format!("-h{host}"), format!("-P{port}"), password.map(|p| format!("-p{p}")));
    let mut args = vec![u.as_str(), h.as_str(), p.as_str(), "--protocol=TCP", "-N", "-B", "-e", sql];
    args.extend(pw.as_deref());
    args.extend((!db.is_empty()).then_some(db));
    run("mysql", &args, None).await
}

#[async_trait]
impl Fixture for Mysql {
    fn driver(&self) -> &str {
        "mysql"
    }

    async fn component(&self, name: &str, _dir: &Path) -> Result<ComponentConfig> {
        mysql("", &format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4")).await?;
        mysql(
            name,
            "CREATE TABLE accounts (id INT AUTO_INCREMENT PRIMARY KEY, owner VARCHAR(100) NOT NULL,
               balance DECIMAL(20,8)) ENGINE=InnoDB;
             CREATE TABLE trades (id BIGINT AUTO_INCREMENT PRIMARY KEY, account INT, qty INT,
               FOREIGN KEY (account) REFERENCES accounts (id)) ENGINE=InnoDB;
             CREATE TRIGGER qty_nonzero BEFORE INSERT ON trades FOR EACH ROW SET NEW.qty = IF(NEW.qty = 0, 1, NEW.qty);
             INSERT INTO accounts (owner, balance) VALUES ('ada', 120.5), ('bob', 7), ('ünï', NULL);
             INSERT INTO trades (account, qty) VALUES (1, 10), (2, -3);",
        )
        .await?;
        Ok(ComponentConfig::new(name, "mysql")
            .option("url", format!("{}/{name}", base()))
            .option("strategy", self.strategy))
    }

    async fn mutate(&self, name: &str, _dir: &Path) -> Result<()> {
        let sql = format!(
            "INSERT INTO accounts (owner, balance) VALUES ('{}', 1); UPDATE accounts SET balance = balance + 1;
             DELETE FROM trades ORDER BY id LIMIT 1;",
            unique("carol")
        );
        mysql(name, &sql).await.map(drop)
    }

    async fn digest(&self, name: &str, _dir: &Path) -> Result<String> {
        // The tables, their schema as the server shows it (AUTO_INCREMENT counters
        // included), the triggers, then the rows.
        mysql(
            name,
            "SELECT GROUP_CONCAT(TABLE_NAME ORDER BY TABLE_NAME) FROM information_schema.TABLES
               WHERE TABLE_SCHEMA = DATABASE();
             SHOW CREATE TABLE accounts; SHOW CREATE TABLE trades;
             SELECT TRIGGER_NAME, EVENT_MANIPULATION, ACTION_TIMING, ACTION_STATEMENT
               FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE();
             SELECT MD5(GROUP_CONCAT(CONCAT_WS(':', id, owner, balance) ORDER BY id SEPARATOR '|')) FROM accounts;
             SELECT MD5(GROUP_CONCAT(CONCAT_WS(':', id, account, qty) ORDER BY id SEPARATOR '|')) FROM trades;",
        )
        .await
    }

    async fn cleanup(&self, name: &str, _dir: &Path) {
        let _ = mysql("", &format!("DROP DATABASE IF EXISTS `{name}`")).await;
    }

    async fn pinned(&self, name: &str, _dir: &Path, snapshot_id: &str) -> Result<Option<usize>> {
        // The `fast` copy's schema and its ready copy, named from the database and the id.
        let schema = format!("CONCAT('_rollback_', LEFT(SHA2(CONCAT('{name}', CHAR(0), '{snapshot_id}'), 256), 12))");
        let n = mysql(
            "",
            &format!(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ({schema}, CONCAT({schema}, '_r'))"
            ),
        )
        .await?;
        Ok(Some(n.trim().parse().unwrap_or(usize::MAX)))
    }
}

mod dump {
    use super::*;
    rollback_core::behavior_tests!(Mysql { strategy: "dump" }, KNOWN_FAILURES);
}

mod fast {
    use super::*;
    rollback_core::behavior_tests!(Mysql { strategy: "fast" }, KNOWN_FAILURES);
}
