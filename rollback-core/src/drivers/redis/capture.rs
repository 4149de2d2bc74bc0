//! Reading the key space: `SCAN` pages, and per page one pipeline of `MGET`,
//! `PTTL` and `DUMP`, several pages in flight.

use super::rdb::{self, Hashing};
use super::*;

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

    /// Reads a page of keys: strings with one MGET (far cheaper for the server than a
    /// DUMP each), every other type with DUMP; PTTL for all. Keys gone meanwhile are
    /// dropped. Each value's hash is made from the very bytes that are kept.
    pub(super) async fn dump_page(
        &self,
        mut con: MultiplexedConnection,
        keys: Vec<Vec<u8>>,
        clock: (i64, Instant),
        hashing: Hashing,
    ) -> Result<Vec<Entry>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
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
        let now = clock.0 + clock.1.elapsed().as_millis() as i64;
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
            let vhash = rdb::dump_hash(&payload, hashing);
            out.push(Entry { key, expire_at, kind: KIND_DUMP, payload, vhash });
        }
        Ok(out)
    }

    /// Streams every key matching the pattern into `tx`: one task walks the SCAN
    /// cursor while up to `DUMP_IN_FLIGHT` pages are dumped. Memory: a few pages.
    pub(super) async fn scan_all(
        &self,
        con: &MultiplexedConnection,
        tx: tokio::sync::mpsc::Sender<Vec<Entry>>,
        hashing: Hashing,
    ) -> Result<u64> {
        // The cursor walks on its own connection: on the shared one each SCAN waited
        // behind the queued pages, and the server idled between walks.
        let mut c = self.connect().await?;
        let t0 = self.server_ms(&mut c).await?;
        let clock = (t0, Instant::now());
        // Sized up front when every key is wanted: growing the set rehashes it ~20 times.
        let expected = if self.pattern == "*" {
            let n: u64 = redis::cmd("DBSIZE").query_async(&mut c).await.map_err(|e| self.err("DBSIZE failed", e))?;
            n.min(8_000_000) as usize
        } else {
            0
        };
        let (ktx, krx) = tokio::sync::mpsc::channel::<Vec<Vec<u8>>>(DUMP_IN_FLIGHT);
        let walk = async move {
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
            Ok::<(), Error>(())
        };
        let pages = futures_util::stream::unfold(krx, |mut rx| async move { rx.recv().await.map(|k| (k, rx)) });
        let dump = async {
            let mut n = 0u64;
            let mut s = std::pin::pin!(pages
                .map(|keys| self.dump_page(con.clone(), keys, clock, hashing))
                .buffer_unordered(DUMP_IN_FLIGHT));
            while let Some(page) = s.next().await {
                let page = page?;
                n += page.len() as u64;
                if tx.send(page).await.is_err() {
                    return Err(Error::unexpected("the key consumer stopped"));
                }
            }
            Ok(n)
        };
        let (walked, dumped) = tokio::join!(walk, dump);
        let n = dumped?;
        walked?;
        Ok(n)
    }
}
