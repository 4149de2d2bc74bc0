#![doc = include_str!("docs.md")]

mod capture;
mod config;
mod fence;
mod format;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use format::fuzz_readers;
mod pipe;
mod rdb;
mod restore;

pub use config::{Mode, RedisConfig};

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::ComponentConfig;
use crate::driver::{Capability, Captured, Context, Discard, Drift, Driver, DynDriver, FencePlan};
use crate::error::{Error, ErrorKind, Result};
use crate::registry::DriverEnv;
use crate::secret::{redact_url_passwords, Redactor};
use crate::snapshot::Part;
use crate::store::ArtifactRef;

use capture::Page;
use format::KeyRecord;
use rdb::Hashing;

/// Keys per SCAN call, and at most per read (reads are bounded by bytes too).
const BATCH: usize = 2000;
/// RESTORE pipelines in flight at once.
const RESTORE_IN_FLIGHT: usize = 4;
/// Pages being read at once during a scan. The server is the bottleneck; it idles
/// unless enough is queued: 1M keys took 3.5 s with 3, 2.8 s with 6, the same with 12
/// (medians of 5 here). Memory: bounded in bytes by `capture::BYTES_IN_FLIGHT`.
const DUMP_IN_FLIGHT: usize = 8;
const KEYS_ARTIFACT: &str = "redis/keys.bin";
const INDEX_ARTIFACT: &str = "redis/index.bin";
/// [`State::value_hash`] of snapshots whose values are hashed by what a client reads
/// from them ([`Hashing::Logical`]); absent (0) in the first snapshots.
const VALUE_HASH_LOGICAL: u32 = 2;
use format::{KIND_DUMP, KIND_STRING};

/// The `redis` driver.
pub struct RedisDriver {
    client: Client,
    mode: Mode,
    pattern: String,
    db: i64,
    /// `host:port/db`, for messages.
    target: String,
    redactor: Redactor,
    /// `fence = true`: fence other users' writes during a rollback.
    fence: bool,
    /// The password of [`fence::FENCE_USER`] while this process holds the fence: its
    /// connections log in as that user, the only one that may write.
    fence_auth: tokio::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for RedisDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDriver")
            .field("target", &self.target)
            .field("mode", &self.mode)
            .field("pattern", &self.pattern)
            .finish()
    }
}

pub(crate) fn factory(c: &ComponentConfig, env: &DriverEnv) -> Result<DynDriver> {
    let cfg: RedisConfig = c.options.parse()?;
    if cfg.pattern.is_empty() {
        return Err(c.options.error("pattern", "must not be empty (use \"*\" for the whole db)"));
    }
    let url_error = |e: redis::RedisError| {
        c.options.error(
            "url",
            format!(
                "`{}` is not a redis URL ({})",
                redact_url_passwords(&cfg.url),
                redact_url_passwords(&e.to_string())
            ),
        )
    };
    let tls = cfg.url.starts_with("rediss://");
    let wants_tls_keys = cfg.ca.is_some() || cfg.client_cert.is_some() || cfg.client_key.is_some();
    if wants_tls_keys && !tls {
        return Err(c.options.error("ca", "`ca`, `client_cert` and `client_key` need a `rediss://` url"));
    }
    crate::tls::install_provider();
    let client = if wants_tls_keys {
        let read = |key: &str, p: &Option<String>| -> Result<Option<Vec<u8>>> {
            p.as_ref()
                .map(|p| {
                    let path = env.base_dir.join(p);
                    std::fs::read(&path)
                        .map_err(|e| c.options.error(key, format!("cannot read {}: {e}", path.display())))
                })
                .transpose()
        };
        let client_tls = match (read("client_cert", &cfg.client_cert)?, read("client_key", &cfg.client_key)?) {
            (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig { client_cert, client_key }),
            (None, None) => None,
            _ => return Err(c.options.error("client_cert", "give both `client_cert` and `client_key`, or neither")),
        };
        let certs = redis::TlsCertificates { client_tls, root_cert: read("ca", &cfg.ca)? };
        Client::build_with_tls(cfg.url.as_str(), certs).map_err(url_error)?
    } else {
        Client::open(cfg.url.as_str()).map_err(url_error)?
    };
    let info = client.get_connection_info();
    if let Some(p) = &info.redis.password {
        env.redactor.add(p);
    }
    let target = format!("{}/{}", info.addr, info.redis.db);
    Ok(Arc::new(RedisDriver {
        db: info.redis.db,
        client,
        mode: cfg.mode,
        pattern: cfg.pattern,
        target,
        redactor: env.redactor.clone(),
        fence: cfg.fence,
        fence_auth: tokio::sync::Mutex::new(None),
    }))
}

/// What a capture keeps in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    target: String,
    db: i64,
    pattern: String,
    mode: Mode,
    keys: u64,
    with_ttl: u64,
    payload_bytes: u64,
    /// Order-independent digest of (key, value, has TTL) over every key.
    digest: String,
    server_version: String,
    /// Captured as a safety snapshot: the state before a rollback, which compensation
    /// puts back whole whatever the mode (a `flush` would otherwise clear the cache
    /// again instead of undoing the clear).
    #[serde(default)]
    safety: bool,
    /// How the index's value hashes were made (see [`VALUE_HASH_LOGICAL`]).
    #[serde(default)]
    value_hash: u32,
}

impl State {
    fn hashing(&self) -> Hashing {
        if self.value_hash == VALUE_HASH_LOGICAL {
            Hashing::Logical
        } else {
            Hashing::Legacy
        }
    }
}

/// One key as read from the server.
struct Entry {
    key: Vec<u8>,
    /// Absolute expiry in server milliseconds, or 0 for none.
    expire_at: i64,
    /// [`KIND_STRING`]: `payload` is the string itself; [`KIND_DUMP`]: a DUMP payload.
    kind: u8,
    payload: Vec<u8>,
    vhash: [u8; 16],
}

/// Order-independent accumulator of per-key hashes (a sum, so SCAN order does not matter).
#[derive(Default, Clone, Copy)]
struct Digest128 {
    sum: u128,
    count: u64,
}

impl Digest128 {
    fn add(&mut self, key: &[u8], vhash: &[u8; 16], ttl: bool) {
        let mut h = Sha256::new();
        h.update((key.len() as u64).to_le_bytes());
        h.update(key);
        h.update([ttl as u8]);
        h.update(vhash);
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        self.sum = self.sum.wrapping_add(u128::from_le_bytes(b));
        self.count += 1;
    }
    fn hex(&self) -> String {
        format!("{:032x}-{}", self.sum, self.count)
    }
}

/// Hasher for maps keyed by [`key_hash`] values: they are hashes already, and
/// hashing them again was a tenth of a capture's CPU at a million keys.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type ByKeyHash = BuildHasherDefault<PreHashed>;

fn key_hash(k: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    k.hash(&mut h);
    h.finish()
}

fn show_key(k: &[u8]) -> String {
    let s = String::from_utf8_lossy(k);
    let s: String = s.chars().map(|c| if c.is_control() { '?' } else { c }).take(80).collect();
    format!("`{s}`")
}

fn as_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

impl RedisDriver {
    fn err(&self, what: &str, e: redis::RedisError) -> Error {
        use redis::ErrorKind as K;
        let kind = if e.is_io_error() || e.is_connection_refusal() || e.is_timeout() || e.is_connection_dropped() {
            ErrorKind::Unreachable
        } else {
            match e.kind() {
                K::AuthenticationFailed => ErrorKind::PermissionDenied,
                K::BusyLoadingError | K::TryAgain => ErrorKind::Unreachable,
                K::InvalidClientConfig => ErrorKind::ConfigInvalid,
                _ => ErrorKind::Unexpected,
            }
        };
        let detail = self.redactor.redact(&e.to_string());
        let hint = match kind {
            ErrorKind::PermissionDenied => " (check the user/password in the URL)",
            ErrorKind::Unreachable => " (is the server running and reachable?)",
            _ => "",
        };
        let mut out = Error::new(kind, format!("redis {}: {what}: {detail}{hint}", self.target));
        if matches!(kind, ErrorKind::Unreachable) || matches!(e.kind(), K::BusyLoadingError | K::TryAgain) {
            out = out.set_temporary();
        }
        out
    }

    /// A connection that writes through this process's fence when one is up.
    async fn connect(&self) -> Result<MultiplexedConnection> {
        let mut con = self.connect_as_configured().await?;
        if let Some(pw) = self.fence_auth.lock().await.clone() {
            redis::cmd("AUTH")
                .arg(fence::FENCE_USER)
                .arg(pw)
                .query_async::<()>(&mut con)
                .await
                .map_err(|e| self.err("cannot log in as the fence's user", e))?;
        }
        Ok(con)
    }

    /// A connection as the url's user.
    async fn connect_as_configured(&self) -> Result<MultiplexedConnection> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Duration::from_secs(10))
            .set_response_timeout(Duration::from_secs(300));
        let mut con = self.client.get_multiplexed_async_connection_with_config(&cfg).await.map_err(|e| {
            match crate::tls::explain(&e) {
                // Not temporary: a certificate does not fix itself between retries.
                Some(why) => {
                    Error::new(ErrorKind::Unreachable, format!("cannot connect to redis {}: {why}", self.target))
                }
                None => self.err("cannot connect", e),
            }
        })?;
        redis::cmd("PING").query_async::<()>(&mut con).await.map_err(|e| self.err("cannot connect", e))?;
        Ok(con)
    }

    /// The server's clock in milliseconds (TTLs are restored against it, not ours).
    async fn server_ms(&self, con: &mut MultiplexedConnection) -> Result<i64> {
        let (s, us): (i64, i64) = redis::cmd("TIME").query_async(con).await.map_err(|e| self.err("TIME failed", e))?;
        Ok(s * 1000 + us / 1000)
    }

    async fn server_version(&self, con: &mut MultiplexedConnection) -> Result<String> {
        let info: String =
            redis::cmd("INFO").arg("server").query_async(con).await.map_err(|e| self.err("INFO failed", e))?;
        Ok(info.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("unknown").trim().to_string())
    }

    /// How many keys match the pattern now, with the first few names (keys only:
    /// no value is read).
    async fn count_live(&self) -> Result<(u64, Vec<Vec<u8>>)> {
        let mut n = 0u64;
        let mut first = Vec::new();
        self.scan_keys(|k| {
            n += 1;
            if first.len() < 10 {
                first.push(k);
            }
        })
        .await?;
        Ok((n, first))
    }

    fn describe_target(&self) -> String {
        if self.pattern == "*" {
            format!("db {}", self.db)
        } else {
            format!("keys `{}` of db {}", self.pattern, self.db)
        }
    }

    /// Compares the snapshot's index with the server. Memory: one small entry per
    /// snapshot key (the index is loaded; the server's keys stream past it).
    async fn compare(&self, ctx: &Context, con: &MultiplexedConnection, part: &Part) -> Result<Comparison> {
        let idx = part
            .artifact(INDEX_ARTIFACT)
            .ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("redis snapshot has no `{INDEX_ARTIFACT}`")))?
            .clone();
        let store = ctx.store.clone();
        let idx2 = idx.clone();
        let mut snap: HashMap<u64, ([u8; 16], i64), ByKeyHash> = super::blocking(move || {
            let mut m = HashMap::default();
            format::read_index(&store, &idx2, |e| {
                m.insert(key_hash(&e.key), (e.vhash, e.expire_at));
            })?;
            Ok(m)
        })
        .await?;
        let hashing = part.state_as::<State>()?.hashing();
        let mut c = con.clone();
        let now = self.server_ms(&mut c).await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Page>(2);
        let consume = async {
            let mut cmp = Comparison::default();
            while let Some(page) = rx.recv().await {
                for e in page.entries {
                    match snap.remove(&key_hash(&e.key)) {
                        None => cmp.note_added(&e.key),
                        Some((v, _)) if v != e.vhash => cmp.note_changed(&e.key, "value differs"),
                        Some((_, exp)) if (exp != 0) != (e.expire_at != 0) => {
                            cmp.note_changed(&e.key, if exp != 0 { "TTL was removed" } else { "a TTL was added" })
                        }
                        Some(_) => {}
                    }
                }
            }
            cmp
        };
        let (scanned, mut cmp) = tokio::join!(self.scan_all(con, tx, hashing), consume);
        scanned?;
        // Left in `snap`: missing now, unless their TTL ran out (a restore skips those too).
        snap.retain(|_, (_, exp)| *exp == 0 || *exp > now);
        cmp.removed = snap.len() as u64;
        if !snap.is_empty() {
            let store = ctx.store.clone();
            let names = super::blocking(move || {
                let mut names = Vec::new();
                format::read_index(&store, &idx, |e| {
                    if names.len() < 10 && snap.contains_key(&key_hash(&e.key)) {
                        names.push(e.key);
                    }
                })?;
                Ok(names)
            })
            .await?;
            for k in names {
                cmp.example(format!("key {} is missing", show_key(&k)));
            }
        }
        Ok(cmp)
    }
}

#[derive(Default)]
struct Comparison {
    added: u64,
    changed: u64,
    removed: u64,
    examples: Vec<String>,
}

impl Comparison {
    fn example(&mut self, s: String) {
        if self.examples.len() < 20 {
            self.examples.push(s);
        }
    }
    fn note_added(&mut self, k: &[u8]) {
        self.added += 1;
        self.example(format!("key {} was added", show_key(k)));
    }
    fn note_changed(&mut self, k: &[u8], what: &str) {
        self.changed += 1;
        self.example(format!("key {}: {what}", show_key(k)));
    }
}

/// The mode a restore, verify or plan of a part uses: a safety snapshot of a `flush`
/// component is restored like `replace`, since undoing a cache clear means putting
/// the keys back.
fn mode_for(configured: Mode, safety: bool) -> Mode {
    if safety && configured == Mode::Flush {
        Mode::Replace
    } else {
        configured
    }
}

fn version_major(v: &str) -> u32 {
    v.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0)
}

#[async_trait]
impl Driver for RedisDriver {
    fn name(&self) -> &str {
        "redis"
    }

    fn capability(&self) -> Capability {
        Capability {
            shared_data: true,
            discard_report: true,
            perturb: true,
            idempotent_restore: true,
            fence: true,
            ..Default::default()
        }
    }

    async fn plan_fence(&self, _ctx: &Context) -> Result<FencePlan> {
        self.plan_write_fence().await
    }

    async fn fence(&self, ctx: &Context, undo: &serde_json::Value) -> Result<String> {
        self.raise_write_fence(ctx, undo).await
    }

    async fn unfence(&self, ctx: &Context, undo: &serde_json::Value) -> Result<()> {
        self.lift_write_fence(ctx, undo).await
    }

    async fn capture(&self, ctx: &Context) -> Result<Captured> {
        let t = Instant::now();
        let mut con = self.connect().await?;
        let server_version = self.server_version(&mut con).await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Page>(4);
        let keys_w = ctx.store.artifact_writer(KEYS_ARTIFACT)?;
        let index_w = ctx.store.artifact_writer(INDEX_ARTIFACT)?;
        // Pages go to a blocking writer; each page holds its share of the scan's byte
        // budget until it is written.
        let pctx = ctx.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<(ArtifactRef, ArtifactRef, Digest128, u64, u64)> {
            let mut last = Instant::now();
            let mut kw = format::KeysWriter::new(keys_w)?;
            let mut iw = format::IndexWriter::new(index_w)?;
            let mut digest = Digest128::default();
            let (mut with_ttl, mut bytes) = (0u64, 0u64);
            while let Some(page) = rx.blocking_recv() {
                for e in page.entries {
                    let ttl = e.expire_at != 0;
                    with_ttl += ttl as u64;
                    bytes += e.payload.len() as u64;
                    digest.add(&e.key, &e.vhash, ttl);
                    kw.write(&e.key, e.expire_at, e.kind, &e.payload, &e.vhash)?;
                    iw.write(&e.key, e.expire_at, &e.vhash)?;
                }
                if last.elapsed() > Duration::from_secs(2) {
                    last = Instant::now();
                    pctx.progress(format!("captured {} keys", digest.count));
                }
            }
            Ok((kw.finish(digest.count)?, iw.finish(digest.count)?, digest, with_ttl, bytes))
        });
        let scanned = self.scan_all(&con, tx, Hashing::Logical).await;
        let written = writer.await.map_err(|e| Error::unexpected("the snapshot writer failed").with_source(e))?;
        scanned?;
        let (keys_ref, index_ref, digest, with_ttl, payload_bytes) = written?;
        ctx.progress(format!(
            "captured {} keys ({} with a TTL, {} bytes) from {} in {} ms",
            digest.count,
            with_ttl,
            payload_bytes,
            self.describe_target(),
            t.elapsed().as_millis()
        ));
        let state = State {
            target: self.target.clone(),
            db: self.db,
            pattern: self.pattern.clone(),
            mode: self.mode,
            keys: digest.count,
            with_ttl,
            payload_bytes,
            digest: digest.hex(),
            server_version,
            safety: ctx.safety,
            value_hash: VALUE_HASH_LOGICAL,
        };
        Ok(Captured {
            state: serde_json::to_value(&state).map_err(|e| Error::unexpected("cannot encode state").with_source(e))?,
            artifacts: vec![keys_ref, index_ref],
        })
    }

    async fn preflight(&self, _ctx: &Context, part: &Part) -> Result<()> {
        let st = part.state_as::<State>()?;
        let mut con = self.connect().await?;
        let now = self.server_version(&mut con).await?;
        // RESTORE refuses payloads from a newer RDB version: say so before changing anything.
        if version_major(&now) < version_major(&st.server_version) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "redis {}: the snapshot was taken from Redis {} and this server runs {}; RESTORE cannot read newer payloads",
                    self.target, st.server_version, now
                ),
            ));
        }
        if version_major(&now) < 5 && st.with_ttl > 0 {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("redis {}: Redis {now} has no RESTORE ABSTTL (5.0+)", self.target),
            ));
        }
        Ok(())
    }

    async fn restore(&self, ctx: &Context, part: &Part) -> Result<()> {
        let st = part.state_as::<State>()?;
        if st.pattern != self.pattern || st.db != self.db {
            tracing::warn!(component = %ctx.component, "restoring a snapshot taken with another pattern or db");
        }
        let mode = mode_for(self.mode, st.safety);
        let t = Instant::now();
        let mut con = self.connect().await?;
        if mode != Mode::Flush {
            // A damaged snapshot must be refused before the first key is deleted.
            let art = part
                .artifact(KEYS_ARTIFACT)
                .ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("redis snapshot has no `{KEYS_ARTIFACT}`")))?
                .clone();
            let store = ctx.store.clone();
            super::blocking(move || store.check_artifact(&art).map(|_| ())).await?;
        }
        let deleted = match mode {
            Mode::Replace | Mode::Flush => self.delete_matching(ctx, &mut con).await?,
            Mode::Merge => 0,
        };
        crate::failpoint::hit("redis-deleted");
        if mode == Mode::Flush {
            ctx.progress(format!("flush mode: deleted {deleted} keys; nothing restored"));
            return Ok(());
        }
        let (restored, expired) = self.restore_keys(ctx, &con, part).await?;
        let mut msg = format!(
            "{} mode{}: restored {restored} keys into {} in {} ms",
            mode.as_str(),
            if mode != self.mode { " (a safety snapshot is put back whole)" } else { "" },
            self.describe_target(),
            t.elapsed().as_millis()
        );
        if expired > 0 {
            msg.push_str(&format!("; skipped {expired} keys whose TTL ran out since the snapshot"));
            tracing::warn!(component = %ctx.component, expired, "keys expired since the snapshot were not restored");
        }
        ctx.progress(msg);
        Ok(())
    }

    async fn verify(&self, ctx: &Context, part: &Part) -> Result<Drift> {
        let mode = mode_for(self.mode, part.state_as::<State>()?.safety);
        let con = self.connect().await?;
        if mode == Mode::Flush {
            let (n, first) = self.count_live().await?;
            if n == 0 {
                return Ok(Drift::equal());
            }
            let mut d = vec![format!(
                "flush mode: {n} keys match `{}` in db {} (expected none after a cache clear)",
                self.pattern, self.db
            )];
            d.extend(first.iter().map(|k| format!("key {} is present", show_key(k))));
            return Ok(Drift::from_differences(d));
        }
        let cmp = self.compare(ctx, &con, part).await?;
        let drift = match mode {
            Mode::Merge => cmp.changed + cmp.removed,
            _ => cmp.changed + cmp.removed + cmp.added,
        };
        if drift == 0 {
            return Ok(Drift::equal());
        }
        let mut d = vec![format!(
            "{}: {} keys added, {} changed, {} missing since the snapshot",
            self.describe_target(),
            cmp.added,
            cmp.changed,
            cmp.removed
        )];
        let examples = cmp.examples.into_iter().filter(|e| mode != Mode::Merge || !e.ends_with("was added"));
        d.extend(examples);
        Ok(Drift::from_differences(d))
    }

    async fn discards(&self, ctx: &Context, part: &Part) -> Result<Vec<Discard>> {
        let mode = mode_for(self.mode, part.state_as::<State>()?.safety);
        let con = self.connect().await?;
        let (changes, unit) = match mode {
            Mode::Flush => {
                let (n, _) = self.count_live().await?;
                (n, "keys (deleted by the cache clear)".to_string())
            }
            Mode::Merge => {
                let cmp = self.compare(ctx, &con, part).await?;
                (
                    cmp.changed,
                    format!("keys (changed since the snapshot, overwritten; {} added keys are kept)", cmp.added),
                )
            }
            Mode::Replace => {
                let cmp = self.compare(ctx, &con, part).await?;
                (
                    cmp.added + cmp.changed + cmp.removed,
                    format!(
                        "keys ({} added, {} changed, {} removed since the snapshot)",
                        cmp.added, cmp.changed, cmp.removed
                    ),
                )
            }
        };
        if changes == 0 {
            return Ok(Vec::new());
        }
        Ok(vec![Discard {
            component: ctx.component.clone(),
            target: self.describe_target(),
            changes,
            unit,
            kept_in_safety_snapshot: false,
            keepable: true,
        }])
    }

    async fn perturb(&self, _ctx: &Context) -> Result<String> {
        if self.pattern.contains(['[', '\\']) {
            return Ok(format!("pattern `{}` has character classes; no key written", self.pattern));
        }
        let key = self.pattern.replace('*', "rollback-drill").replace('?', "x");
        let mut con = self.connect().await?;
        redis::cmd("SET")
            .arg(&key)
            .arg(format!("drill {}", chrono::Utc::now().to_rfc3339()))
            .query_async::<()>(&mut con)
            .await
            .map_err(|e| self.err("SET failed", e))?;
        Ok(format!("wrote key `{key}` in db {}", self.db))
    }

    fn describe_restore(&self, part: &Part) -> String {
        let n = part.state.get("keys").and_then(|v| v.as_u64()).unwrap_or(0);
        let del = if self.pattern == "*" {
            format!("FLUSHDB db {}", self.db)
        } else {
            format!("delete keys matching `{}` in db {}", self.pattern, self.db)
        };
        let safety = part.state.get("safety").and_then(|v| v.as_bool()).unwrap_or(false);
        match mode_for(self.mode, safety) {
            Mode::Replace => format!("{del}, then RESTORE {n} keys with their TTLs (pipelined)"),
            Mode::Merge => format!("RESTORE ... REPLACE {n} captured keys into db {} (other keys kept)", self.db),
            Mode::Flush => format!("{del} (cache clear; nothing restored)"),
        }
    }

    async fn check(&self, _ctx: &Context) -> Result<String> {
        let mut con = self.connect().await?;
        let v = self.server_version(&mut con).await?;
        let n: u64 = redis::cmd("DBSIZE").query_async(&mut con).await.map_err(|e| self.err("DBSIZE failed", e))?;
        let tls = match self.client.get_connection_info().addr {
            redis::ConnectionAddr::TcpTls { insecure: true, .. } => "TLS, certificate not verified (#insecure)",
            redis::ConnectionAddr::TcpTls { .. } => "TLS, certificate and host name verified",
            redis::ConnectionAddr::Unix(_) => "unix socket",
            _ => "NOT encrypted",
        };
        Ok(format!("redis {v} at {}: {n} keys in db {}; {tls}", self.target, self.db))
    }
}
