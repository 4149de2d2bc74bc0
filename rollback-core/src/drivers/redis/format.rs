//! The redis snapshot files: length-prefixed binary records, streamed both ways.
//!
//! `redis/keys.bin`: `RBREDIS2`, then per key `u32 key_len, key, i64 expire_at_ms
//! (server clock, 0 = no TTL), u8 kind (0: DUMP payload, 1: a string's bytes),
//! u32 payload_len, payload, [16] value hash`, then
//! `u32::MAX, u64 count`. `redis/index.bin` (what verify and plan read, without the
//! payloads): `RBRIDX01`, then `u32 key_len, key, i64 expire_at_ms, [16] value hash`, then
//! the same trailer. Integers are little-endian.

use std::io::{self, BufReader, Read, Write};

use tokio::sync::mpsc::Sender;

use crate::error::{Error, ErrorKind, Result};
use crate::store::{ArtifactRef, ArtifactWriter, Store};

const KEYS_MAGIC: &[u8; 8] = b"RBREDIS2";
/// The payload is a DUMP (any type).
pub(super) const KIND_DUMP: u8 = 0;
/// The payload is a string value (restored with SET).
pub(super) const KIND_STRING: u8 = 1;
const INDEX_MAGIC: &[u8; 8] = b"RBRIDX01";
const END: u32 = u32::MAX;
/// Flush a batch to the server once its payloads reach this size, whatever the key
/// count. A restore holds a dozen batches at most (queued, being read, being written
/// and their encoded copies): 2 MB each keeps it to some 20-30 MB of values (8 MB
/// held near 100 MB), and small values still go 2,000 keys to a batch.
const BATCH_BYTES: usize = 2 << 20;

fn io_err(e: io::Error) -> Error {
    Error::new(ErrorKind::Unexpected, "cannot write the redis snapshot").with_source(e)
}

fn corrupt(what: &str) -> Error {
    Error::new(ErrorKind::Corrupt, format!("redis snapshot file is damaged: {what}"))
}

fn len32(n: usize) -> Result<[u8; 4]> {
    u32::try_from(n)
        .ok()
        .filter(|&n| n != END)
        .map(u32::to_le_bytes)
        .ok_or_else(|| Error::new(ErrorKind::Unsupported, "a key or value above 4 GiB cannot be captured"))
}

pub(super) struct KeysWriter(ArtifactWriter);

impl KeysWriter {
    pub(super) fn new(mut w: ArtifactWriter) -> Result<Self> {
        w.write_all(KEYS_MAGIC).map_err(io_err)?;
        Ok(KeysWriter(w))
    }
    pub(super) fn write(
        &mut self,
        key: &[u8],
        expire_at: i64,
        kind: u8,
        payload: &[u8],
        vhash: &[u8; 16],
    ) -> Result<()> {
        let w = &mut self.0;
        w.write_all(&len32(key.len())?).map_err(io_err)?;
        w.write_all(key).map_err(io_err)?;
        w.write_all(&expire_at.to_le_bytes()).map_err(io_err)?;
        w.write_all(&[kind]).map_err(io_err)?;
        w.write_all(&len32(payload.len())?).map_err(io_err)?;
        w.write_all(payload).map_err(io_err)?;
        w.write_all(vhash).map_err(io_err)
    }
    pub(super) fn finish(mut self, count: u64) -> Result<ArtifactRef> {
        self.0.write_all(&END.to_le_bytes()).map_err(io_err)?;
        self.0.write_all(&count.to_le_bytes()).map_err(io_err)?;
        self.0.finish()
    }
}

pub(super) struct IndexWriter(ArtifactWriter);

impl IndexWriter {
    pub(super) fn new(mut w: ArtifactWriter) -> Result<Self> {
        w.write_all(INDEX_MAGIC).map_err(io_err)?;
        Ok(IndexWriter(w))
    }
    pub(super) fn write(&mut self, key: &[u8], expire_at: i64, vhash: &[u8; 16]) -> Result<()> {
        let w = &mut self.0;
        w.write_all(&len32(key.len())?).map_err(io_err)?;
        w.write_all(key).map_err(io_err)?;
        w.write_all(&expire_at.to_le_bytes()).map_err(io_err)?;
        w.write_all(vhash).map_err(io_err)
    }
    pub(super) fn finish(mut self, count: u64) -> Result<ArtifactRef> {
        self.0.write_all(&END.to_le_bytes()).map_err(io_err)?;
        self.0.write_all(&count.to_le_bytes()).map_err(io_err)?;
        self.0.finish()
    }
}

/// One key of `keys.bin`.
pub(super) struct KeyRecord {
    pub key: Vec<u8>,
    pub expire_at: i64,
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// One key of `index.bin`.
pub(super) struct IndexEntry {
    pub key: Vec<u8>,
    /// Absolute expiry (server ms), 0 for none.
    pub expire_at: i64,
    pub vhash: [u8; 16],
}

struct Reader<R: Read> {
    r: R,
}

impl<R: Read> Reader<R> {
    fn exact<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).map_err(|_| corrupt("truncated"))?;
        Ok(b)
    }
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        // Grown as bytes arrive, not allocated up front: a damaged length field
        // (up to 4 GiB) must cost what the file holds, not what it claims.
        let mut v = Vec::with_capacity(n.min(1 << 20));
        (&mut self.r).take(n as u64).read_to_end(&mut v).map_err(|_| corrupt("truncated"))?;
        if v.len() != n {
            return Err(corrupt("truncated"));
        }
        Ok(v)
    }
    /// The next key's length, or `None` at the trailer (whose count must match).
    fn next_len(&mut self, seen: u64) -> Result<Option<usize>> {
        let n = u32::from_le_bytes(self.exact::<4>()?);
        if n == END {
            let count = u64::from_le_bytes(self.exact::<8>()?);
            if count != seen {
                return Err(corrupt(&format!("trailer says {count} keys, found {seen}")));
            }
            return Ok(None);
        }
        Ok(Some(n as usize))
    }
}

/// Opens an artifact; `checked`: its checksum was verified just before (the restore
/// checks before deleting anything, and need not hash the file twice).
fn open(store: &Store, a: &ArtifactRef, magic: &[u8; 8], checked: bool) -> Result<Reader<BufReader<std::fs::File>>> {
    let p = if checked { store.artifact_path(a)? } else { store.check_artifact(a)? };
    let f = std::fs::File::open(&p).map_err(Error::from)?;
    let mut r = Reader { r: BufReader::with_capacity(1 << 20, f) };
    if &r.exact::<8>()? != magic {
        return Err(corrupt("unknown format"));
    }
    Ok(r)
}

/// Streams `keys.bin`, already checked, in batches into `tx` (run on a blocking thread).
pub(super) fn read_keys(
    store: &Store,
    a: &ArtifactRef,
    batch: usize,
    tx: &Sender<Result<Vec<KeyRecord>>>,
) -> Result<()> {
    let run = || -> Result<()> {
        let mut r = open(store, a, KEYS_MAGIC, true)?;
        let mut seen = 0u64;
        let mut cur = Vec::with_capacity(batch);
        let mut cur_bytes = 0usize;
        while let Some(klen) = r.next_len(seen)? {
            let key = r.bytes(klen)?;
            let expire_at = i64::from_le_bytes(r.exact::<8>()?);
            let kind = r.exact::<1>()?[0];
            if kind != KIND_DUMP && kind != KIND_STRING {
                return Err(corrupt("unknown record kind"));
            }
            let plen = u32::from_le_bytes(r.exact::<4>()?) as usize;
            let payload = r.bytes(plen)?;
            let _vhash = r.exact::<16>()?;
            seen += 1;
            cur_bytes += plen + klen;
            cur.push(KeyRecord { key, expire_at, kind, payload });
            if cur.len() >= batch || cur_bytes >= BATCH_BYTES {
                if tx.blocking_send(Ok(std::mem::take(&mut cur))).is_err() {
                    return Ok(()); // the restore stopped; its error is reported there
                }
                cur_bytes = 0;
            }
        }
        if !cur.is_empty() {
            let _ = tx.blocking_send(Ok(cur));
        }
        Ok(())
    };
    match run() {
        Ok(()) => Ok(()),
        Err(e) => {
            let msg = e.to_string();
            let _ = tx.blocking_send(Err(Error::new(e.kind(), msg)));
            Err(e)
        }
    }
}

/// Reads the index (keys and value hashes; no payloads), one entry at a time.
pub(super) fn read_index(store: &Store, a: &ArtifactRef, mut f: impl FnMut(IndexEntry)) -> Result<u64> {
    let mut r = open(store, a, INDEX_MAGIC, false)?;
    let mut n = 0u64;
    while let Some(klen) = r.next_len(n)? {
        let key = r.bytes(klen)?;
        let expire_at = i64::from_le_bytes(r.exact::<8>()?);
        let vhash = r.exact::<16>()?;
        f(IndexEntry { key, expire_at, vhash });
        n += 1;
    }
    Ok(n)
}

/// Runs both readers over `data`, stored as an artifact with a matching checksum
/// (for the fuzzers: the readers, not the checksum, must cope with damage).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_readers(store: &Store, data: &[u8]) {
    let Ok(a) = store.put_bytes("fuzz", data) else { return };
    let _ = read_index(store, &a, |_| {});
    // The keys reader blocks on a full channel: drain it on this thread.
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    std::thread::scope(|s| {
        s.spawn(|| {
            let _ = read_keys(store, &a, 2, &tx);
            drop(tx);
        });
        while rx.blocking_recv().is_some() {}
    });
    if let Ok(p) = store.artifact_path(&a) {
        let _ = std::fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The snapshot format readers never panic and never allocate what a damaged
    /// length field claims: seeded byte mutations of a real `keys.bin` and
    /// `index.bin`, each stored as an artifact whose checksum matches (so the readers,
    /// not the checksum, must cope).
    #[test]
    fn damaged_snapshot_files_are_errors_not_panics() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let mut k = KeysWriter::new(store.artifact_writer("keys.bin").unwrap()).unwrap();
        let mut ix = IndexWriter::new(store.artifact_writer("index.bin").unwrap()).unwrap();
        for i in 0..5u8 {
            let key = [b'k', i, 0xff, b'\n'];
            k.write(&key, i64::from(i) * 1000, if i % 2 == 0 { KIND_DUMP } else { KIND_STRING }, &[i; 7], &[i; 16])
                .unwrap();
            ix.write(&key, 0, &[i; 16]).unwrap();
        }
        let keys = store.read_artifact(&k.finish(5).unwrap()).unwrap();
        let index = store.read_artifact(&ix.finish(5).unwrap()).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..3000 {
            let (seed, is_keys) = if round % 2 == 0 { (&keys, true) } else { (&index, false) };
            let mut v = seed.clone();
            for _ in 0..rng.gen_range(1..4) {
                if v.is_empty() {
                    break;
                }
                let at = rng.gen_range(0..v.len());
                match rng.gen_range(0..3) {
                    0 => v[at] = rng.gen(),
                    1 => v.truncate(at),
                    // A length field set to the largest value it can hold.
                    _ => v.splice(at..(at + 4).min(v.len()), [0xfe, 0xff, 0xff, 0xff]).for_each(drop),
                }
            }
            let a = store.put_bytes("fuzz", &v).unwrap();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if is_keys {
                    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
                    let _ = read_keys(&store, &a, 2, &tx);
                    drop(tx);
                    while rx.try_recv().is_ok() {}
                } else {
                    let _ = read_index(&store, &a, |_| {});
                }
            }));
            assert!(r.is_ok(), "round {round} panicked on {v:?}");
        }
    }
}
