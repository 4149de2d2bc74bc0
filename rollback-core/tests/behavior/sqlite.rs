//! `sqlite`: a WAL database with a table, an index, a view and a trigger; a deploy
//! inserts and updates rows. The oracle is Python's own `sqlite3` module.

use std::path::Path;

use rollback_core::testkit::{async_trait, run, unique, Fixture, Trial};
use rollback_core::{ComponentConfig, Result};

const KNOWN_FAILURES: &[(Trial, &str)] = &[];

/// `ROLLBACK_SQLITE_RESTORE`: `rename` (default) or `online`.
struct Sqlite {
    restore: String,
}

fn fixture() -> Sqlite {
    Sqlite { restore: super::setting("ROLLBACK_SQLITE_RESTORE", "rename") }
}

const EXEC: &str = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.executescript(sys.argv[2])\nc.close()";
/// Schema and every row, in SQLite's own dump order, hashed.
const DUMP: &str = "import hashlib, sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n\
                    print(hashlib.sha256('\\n'.join(c.iterdump()).encode()).hexdigest())";

async fn python(code: &str, db: &Path, arg: &str) -> Result<String> {
    run("python3", &["-c", code, &db.display().to_string(), arg], None).await
}

#[async_trait]
impl Fixture for Sqlite {
    fn driver(&self) -> &str {
        "sqlite"
    }

    async fn component(&self, name: &str, dir: &Path) -> Result<ComponentConfig> {
        let db = dir.join(format!("{name}.db"));
        let schema = "PRAGMA journal_mode = WAL;
            CREATE TABLE accounts (id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, balance REAL);
            CREATE INDEX accounts_owner ON accounts (owner);
            CREATE VIEW rich AS SELECT * FROM accounts WHERE balance > 100;
            CREATE TRIGGER no_negative BEFORE UPDATE ON accounts WHEN NEW.balance < -1000
              BEGIN SELECT RAISE(ABORT, 'too negative'); END;
            INSERT INTO accounts (owner, balance) VALUES ('ada', 120.5), ('bob', 7), ('ünï', NULL);";
        python(EXEC, &db, schema).await?;
        Ok(ComponentConfig::new(name, "sqlite")
            .option("path", db.display().to_string())
            .option("restore", self.restore.as_str()))
    }

    async fn mutate(&self, name: &str, dir: &Path) -> Result<()> {
        let sql = format!(
            "INSERT INTO accounts (owner, balance) VALUES ('{}', 1); UPDATE accounts SET balance = balance + 1;",
            unique("carol")
        );
        python(EXEC, &dir.join(format!("{name}.db")), &sql).await.map(drop)
    }

    async fn digest(&self, name: &str, dir: &Path) -> Result<String> {
        python(DUMP, &dir.join(format!("{name}.db")), "").await
    }

    async fn cleanup(&self, _name: &str, _dir: &Path) {}
}

rollback_core::behavior_tests!(fixture(), KNOWN_FAILURES);
