//! Reading the key space: `SCAN` pages; per page the keys' sizes (`MEMORY USAGE`),
//! then reads of at most [`READ_BYTES`] each (`MGET` and `PTTL`, then `DUMP`),
//! several pages in flight and at most [`BYTES_IN_FLIGHT`] of values held at once.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::rdb::{self, Hashing};
use super::*;

/// Bytes of values read (by their `MEMORY USAGE` estimate) and not yet consumed, over
/// a whole scan. Counting keys instead held a page of up to 2,000 values at once:
/// 330 values of 512 KB peaked at 213 MB, 2,200 at 1.1 GB. 32 MB keeps the server
/// busy: small values still come 2,000 keys to a read.
const BYTES_IN_FLIGHT: u32 = 32 << 20;
/// Bytes of values one read (one `MGET`, one pipeline of `DUMP`s) asks for.
const READ_BYTES: u64 = 4 << 20;
/// What a key is taken to weigh when the server will not say (`MEMORY USAGE`
/// refused or renamed): reads of 64 keys.
const UNKNOWN_SIZE: u64 = READ_BYTES / 64;

/// Keys read from the server, with the share of the byte budget they hold until
/// the consumer drops them.
pub(super) struct Page {
    pub entries: Vec<Entry>,
    _held: OwnedSemaphorePermit,
}

/// What the reads of one scan share.
struct Reads<'a> {
    con: &'a MultiplexedConnection,
    clock: (i64, Instant),
    hashing: Hashing,
    budget: Arc<Semaphore>,
    /// `MEMORY USAGE` was refused once: every key weighs [`UNKNOWN_SIZE`].
    no_sizes: AtomicBool,
    tx: tokio::sync::mpsc::Sender<Page>,
}

impl RedisDriver {
    pub(super) async fn scan_page(&self, con: &mut MultiplexedConnection, cursor: u64) -> Result<(u64, Vec<Vec<u8>>)> {
        redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&self.pattern)
            .arg("COUNT")
            .arg(BATCH)
            .query_async(con)
            .await
            .map_err(|e| self.err("SCAN failed", e))
    }

    /// Each key's estimated size in bytes, `None` for a key gone since the SCAN.
    async fn sizes(&self, r: &Reads<'_>, keys: &[Vec<u8>]) -> Result<Vec<Option<u64>>> {
        if !r.no_sizes.load(Ordering::Relaxed) {
            let mut p = redis::pipe();
            for k in keys {
                p.cmd("MEMORY").arg("USAGE").arg(k);
            }
            match p.query_async::<Vec<Option<u64>>>(&mut r.con.clone()).await {
                Ok(sizes) if sizes.len() == keys.len() => return Ok(sizes),
                Ok(_) => {
                    return Err(Error::unexpected(format!("redis {}: unexpected MEMORY USAGE reply", self.target)))
                }
                Err(e) if e.code().is_some() => {
                    tracing::warn!(server = %self.target, error = %self.redactor.redact(&e.to_string()),
                        "MEMORY USAGE refused: reading 64 keys at a time");
                    r.no_sizes.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(self.err("MEMORY USAGE failed", e)),
            }
        }
        Ok(vec![Some(UNKNOWN_SIZE); keys.len()])
    }

    /// Reads a SCAN page in reads of bounded bytes, each sent on as it is read.
    /// Returns how many keys were sent.
    async fn read_page(&self, r: &Reads<'_>, keys: Vec<Vec<u8>>) -> Result<u64> {
        let sizes = self.sizes(r, &keys).await?;
        let mut sent = 0u64;
        let mut chunk = Vec::new();
        let mut bytes = 0u64;
        let mut keys = keys.into_iter().zip(sizes).filter_map(|(k, s)| s.map(|s| (k, s))).peekable();
        while let Some((key, size)) = keys.next() {
            chunk.push(key);
            bytes += size;
            let full = match keys.peek() {
                None => true,
                Some((_, next)) => bytes + next > READ_BYTES || chunk.len() >= BATCH,
            };
            if !full {
                continue;
            }
            // Held until the consumer has written (or compared) these values. A value
            // larger than the whole budget waits for every other read to be consumed.
            let want = u32::try_from(bytes).unwrap_or(u32::MAX).clamp(1, BYTES_IN_FLIGHT);
            let held = r
                .budget
                .clone()
                .acquire_many_owned(want)
                .await
                .map_err(|_| Error::unexpected("the read budget was closed"))?;
            let entries = self.read_keys(r, std::mem::take(&mut chunk)).await?;
            bytes = 0;
            sent += entries.len() as u64;
            if r.tx.send(Page { entries, _held: held }).await.is_err() {
                return Err(Error::unexpected("the key consumer stopped"));
            }
        }
        Ok(sent)
    }

    /// Reads keys: strings with one MGET (far cheaper for the server than a DUMP
    /// each), every other type with DUMP; PTTL for all. Keys gone meanwhile are
    /// dropped. Each value's hash is made from the very bytes that are kept.
    async fn read_keys(&self, r: &Reads<'_>, keys: Vec<Vec<u8>>) -> Result<Vec<Entry>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut con = r.con.clone();
        let mut p = redis::pipe();
        {
            let mget = p.cmd("MGET");
            for k in &keys {
                mget.arg(k);
            }
        }
        for k in &keys {
            p.cmd("PTTL").arg(k);
        }
        let vals: Vec<Value> = p.query_async(&mut con).await.map_err(|e| self.err("MGET/PTTL failed", e))?;
        let now = r.clock.0 + r.clock.1.elapsed().as_millis() as i64;
        let mut vals = vals.into_iter();
        let strings = match vals.next() {
            Some(Value::Array(a)) => a,
            _ => return Err(Error::unexpected(format!("redis {}: unexpected MGET reply", self.target))),
        };
        let mut out = Vec::with_capacity(keys.len());
        let mut others = Vec::new();
        for ((key, v), t) in keys.into_iter().zip(strings).zip(vals) {
            let pttl = match t {
                Value::Int(n) => n,
                _ => -1,
            };
            if pttl == -2 {
                continue;
            }
            let expire_at = if pttl >= 0 { now + pttl.max(1) } else { 0 };
            match as_bytes(v) {
                Some(value) => {
                    let vhash = rdb::string_hash(&value);
                    out.push(Entry { key, expire_at, kind: KIND_STRING, payload: value, vhash });
                }
                None => others.push((key, expire_at)),
            }
        }
        if others.is_empty() {
            return Ok(out);
        }
        let mut p = redis::pipe();
        for (k, _) in &others {
            p.cmd("DUMP").arg(k);
        }
        let dumps: Vec<Value> = p.query_async(&mut con).await.map_err(|e| self.err("DUMP failed", e))?;
        for ((key, expire_at), d) in others.into_iter().zip(dumps) {
            let Some(payload) = as_bytes(d) else { continue };
            let vhash = rdb::dump_hash(&payload, r.hashing);
            out.push(Entry { key, expire_at, kind: KIND_DUMP, payload, vhash });
        }
        Ok(out)
    }

    /// Streams every key matching the pattern into `tx`: one task walks the SCAN
    /// cursor while up to `DUMP_IN_FLIGHT` pages are read. Memory: at most
    /// [`BYTES_IN_FLIGHT`] of values (by the server's estimate; a single larger value
    /// is read alone), plus 8 bytes per key to drop SCAN's duplicates.
    pub(super) async fn scan_all(
        &self,
        con: &MultiplexedConnection,
        tx: tokio::sync::mpsc::Sender<Page>,
        hashing: Hashing,
    ) -> Result<u64> {
        // The cursor walks on its own connection: on the shared one each SCAN waited
        // behind the queued pages, and the server idled between walks.
        let mut c = self.connect().await?;
        let t0 = self.server_ms(&mut c).await?;
        let reads = Reads {
            con,
            clock: (t0, Instant::now()),
            hashing,
            budget: Arc::new(Semaphore::new(BYTES_IN_FLIGHT as usize)),
            no_sizes: AtomicBool::new(false),
            tx,
        };
        let (ktx, krx) = tokio::sync::mpsc::channel::<Vec<Vec<u8>>>(DUMP_IN_FLIGHT);
        let walk = self.walk(c, ktx);
        let pages = futures_util::stream::unfold(krx, |mut rx| async move { rx.recv().await.map(|k| (k, rx)) });
        let read = async {
            let mut n = 0u64;
            let mut s = std::pin::pin!(pages.map(|keys| self.read_page(&reads, keys)).buffer_unordered(DUMP_IN_FLIGHT));
            while let Some(sent) = s.next().await {
                n += sent?;
            }
            Ok::<u64, Error>(n)
        };
        let (walked, read) = tokio::join!(walk, read);
        let n = read?;
        walked?;
        Ok(n)
    }

    /// Walks the SCAN cursor, sending each page's keys (each key once) into `ktx`.
    async fn walk(&self, mut c: MultiplexedConnection, ktx: tokio::sync::mpsc::Sender<Vec<Vec<u8>>>) -> Result<()> {
        // Sized up front when every key is wanted: growing the set rehashes it ~20 times.
        let expected = if self.pattern == "*" {
            let n: u64 = redis::cmd("DBSIZE").query_async(&mut c).await.map_err(|e| self.err("DBSIZE failed", e))?;
            n.min(8_000_000) as usize
        } else {
            0
        };
        let mut seen: HashSet<u64, ByKeyHash> = HashSet::with_capacity_and_hasher(expected, ByKeyHash::default());
        let mut cursor = 0u64;
        loop {
            let (next, mut keys) = self.scan_page(&mut c, cursor).await?;
            // SCAN may return a key twice (while the server rehashes): keep the first.
            keys.retain(|k| seen.insert(key_hash(k)));
            if !keys.is_empty() && ktx.send(keys).await.is_err() {
                break;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(())
    }

    /// The keys matching the pattern, each once, without their values.
    pub(super) async fn scan_keys(&self, mut f: impl FnMut(Vec<u8>)) -> Result<()> {
        let c = self.connect().await?;
        let (ktx, mut krx) = tokio::sync::mpsc::channel::<Vec<Vec<u8>>>(2);
        let consume = async {
            while let Some(keys) = krx.recv().await {
                keys.into_iter().for_each(&mut f);
            }
        };
        let (walked, ()) = tokio::join!(self.walk(c, ktx), consume);
        walked
    }
}
