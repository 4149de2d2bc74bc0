//! `redis`: the keys under a prefix of its own per trial (every type, a TTL); a deploy
//! changes a string, adds a set member and a key. The oracle is `redis-cli` running a
//! script that reads every key in a canonical form.

use std::path::Path;

use rollback_core::testkit::{async_trait, run, unique, Fixture, Trial};
use rollback_core::{ComponentConfig, Result};

const KNOWN_FAILURES: &[(Trial, &str)] = &[];

/// `ROLLBACK_REDIS_URL` (the server) and `ROLLBACK_REDIS_DB` (default 9; trials share
/// it through their own key prefixes).
struct Redis {
    mode: &'static str,
}

fn url() -> String {
    let base = super::setting("ROLLBACK_REDIS_URL", "redis://127.0.0.1:6379").trim_end_matches('/').to_string();
    format!("{base}/{}", super::setting("ROLLBACK_REDIS_DB", "9"))
}

async fn cli(args: &[&str]) -> Result<String> {
    let u = url();
    let mut all = vec!["-u", u.as_str()];
    all.extend_from_slice(args);
    run("redis-cli", &all, None).await
}

/// Every key matching ARGV[1], with its type, value (members sorted where Redis keeps
/// no order) and whether it has a TTL; SHA-1 of all of it.
const DIGEST: &str = r#"
local keys = redis.call('KEYS', ARGV[1]); table.sort(keys); local out = {}
for _, k in ipairs(keys) do
  local t = redis.call('TYPE', k).ok; local v
  if t == 'string' then v = redis.call('GET', k)
  elseif t == 'list' then v = table.concat(redis.call('LRANGE', k, 0, -1), ',')
  elseif t == 'zset' then v = table.concat(redis.call('ZRANGE', k, 0, -1, 'WITHSCORES'), ',')
  else
    local m = (t == 'hash') and redis.call('HGETALL', k) or redis.call('SMEMBERS', k)
    if t == 'hash' then local p = {} for i = 1, #m, 2 do p[#p + 1] = m[i] .. '=' .. m[i + 1] end m = p end
    table.sort(m); v = table.concat(m, ',')
  end
  out[#out + 1] = k .. '|' .. t .. '|' .. v .. '|' .. tostring(redis.call('PTTL', k) > 0)
end
return redis.sha1hex(table.concat(out, '\n')) .. ' ' .. #keys"#;

#[async_trait]
impl Fixture for Redis {
    fn driver(&self) -> &str {
        "redis"
    }

    async fn component(&self, name: &str, _dir: &Path) -> Result<ComponentConfig> {
        let k = |s: &str| format!("{name}:{s}");
        cli(&["SET", &k("str"), "hello", "EX", "3600"]).await?;
        cli(&["HSET", &k("hash"), "a", "1", "b", "2"]).await?;
        cli(&["RPUSH", &k("list"), "x", "y", "z", "y"]).await?;
        cli(&["SADD", &k("set"), "m1", "m2", "m3"]).await?;
        cli(&["ZADD", &k("zset"), "1.5", "a", "2", "b"]).await?;
        Ok(ComponentConfig::new(name, "redis")
            .option("url", url())
            .option("pattern", format!("{name}:*"))
            .option("mode", self.mode))
    }

    async fn mutate(&self, name: &str, _dir: &Path) -> Result<()> {
        cli(&["SET", &format!("{name}:str"), &unique("deployed")]).await?;
        cli(&["SADD", &format!("{name}:set"), &unique("m")]).await?;
        cli(&["SET", &format!("{name}:{}", unique("new")), "1"]).await.map(drop)
    }

    async fn digest(&self, name: &str, _dir: &Path) -> Result<String> {
        cli(&["EVAL", DIGEST, "0", &format!("{name}:*")]).await
    }

    /// A rollback's fence takes write commands from every user of the server.
    fn serial(&self) -> bool {
        true
    }

    async fn cleanup(&self, name: &str, _dir: &Path) {
        let script = "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end";
        let _ = cli(&["EVAL", script, "0", &format!("{name}:*")]).await;
    }
}

rollback_core::behavior_tests!(Redis { mode: "replace" }, KNOWN_FAILURES);

/// `flush` (the runbooks' cache clear) restores no key by design, so only the trials
/// that hold for it run; its compensation must still put every key back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_mode() {
    let trials = [Trial::CompensationTruth, Trial::ReadOnlyOperations];
    rollback_core::testkit::run_trials(&Redis { mode: "flush" }, &trials).await.assert_passed(KNOWN_FAILURES);
}
