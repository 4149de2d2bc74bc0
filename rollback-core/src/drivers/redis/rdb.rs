//! A value's hash, read from its `DUMP` payload alone.
//!
//! Why from the payload: the snapshot stores the payload, and the hash in its index
//! must describe exactly that payload. A second read of the key (`HGETALL`,
//! `SMEMBERS`) sees whatever a writer made of it in between, and the snapshot's
//! own restore then "differs" from it.
//!
//! Why the logical value and not the payload's bytes: Redis loads a small hash, set,
//! sorted set or list compactly (listpack, intset) whatever encoding it was dumped
//! in, and a hash table's member order depends on its history; the same value then
//! dumps to other bytes after a restore. So strings, lists, sets, hashes and sorted
//! sets are hashed by what a client reads from them, whatever their encoding.
//! Other types (streams, module types, encodings this reader does not know) are
//! fingerprinted by the payload's own CRC64 and length.
//!
//! The layouts read here are Redis's `rdb.c`, `listpack.c`, `ziplist.c` and
//! `intset.c` (RDB versions up to 11, Redis 7.x). A payload that does not parse
//! falls back to the fingerprint; it never panics.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

const STRING: u8 = 0;
const LIST: u8 = 1;
const SET: u8 = 2;
const ZSET: u8 = 3;
const HASH: u8 = 4;
const ZSET_2: u8 = 5;
const LIST_ZIPLIST: u8 = 10;
const SET_INTSET: u8 = 11;
const ZSET_ZIPLIST: u8 = 12;
const HASH_ZIPLIST: u8 = 13;
const LIST_QUICKLIST: u8 = 14;
const HASH_LISTPACK: u8 = 16;
const ZSET_LISTPACK: u8 = 17;
const LIST_QUICKLIST_2: u8 = 18;
const SET_LISTPACK: u8 = 20;

/// How a snapshot's value hashes were made; a live value is hashed the same way to
/// be compared with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hashing {
    /// Snapshots taken before values were read from their payloads: strings by
    /// SHA-256, hash-table sets and hashes by their sorted members, every other
    /// payload by its fingerprint.
    Legacy,
    /// Every value by what a client reads from it, whatever its encoding.
    Logical,
}

/// The hash of a string value (read with `MGET`, or from a string's payload).
pub(super) fn string_hash(value: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"s");
    h.update(value);
    first16(h.finalize().as_slice())
}

/// The hash of the value a `DUMP` payload holds.
pub(super) fn dump_hash(payload: &[u8], hashing: Hashing) -> [u8; 16] {
    let ty = payload.first().copied().unwrap_or(u8::MAX);
    let logical = match hashing {
        Hashing::Logical => logical_hash(payload),
        // What the first snapshots hashed by value: hash-table sets and hashes.
        Hashing::Legacy if ty == SET || ty == HASH => legacy_hash(payload),
        Hashing::Legacy => None,
    };
    logical.unwrap_or_else(|| fingerprint(payload))
}

/// The payload ends with its own CRC64: with the length, a fingerprint for free.
fn fingerprint(payload: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let tail = &payload[payload.len().saturating_sub(8)..];
    out[..tail.len()].copy_from_slice(tail);
    out[8..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    out
}

fn first16(d: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// A payload's body: the type byte, the value, then 2 bytes of RDB version and 8 of
/// CRC64, which are not part of the value.
fn body(payload: &[u8]) -> Option<Cur<'_>> {
    let end = payload.len().checked_sub(10)?;
    Some(Cur { b: payload.get(1..end)?, i: 0 })
}

/// An order-independent sum of per-member hashes: a set's (or a hash's, a sorted
/// set's) members come in the order of its encoding, which is not the value.
#[derive(Default)]
struct Members {
    sum: u128,
    count: u64,
}

impl Members {
    fn add(&mut self, parts: &[&[u8]]) {
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p);
        }
        self.sum = self.sum.wrapping_add(u128::from_le_bytes(first16(h.finalize().as_slice())));
        self.count += 1;
    }
    fn finish(&self, tag: u8) -> [u8; 16] {
        let mut h = Sha256::new();
        h.update([b'm', tag]);
        h.update(self.sum.to_le_bytes());
        h.update(self.count.to_le_bytes());
        first16(h.finalize().as_slice())
    }
}

fn logical_hash(payload: &[u8]) -> Option<[u8; 16]> {
    let ty = *payload.first()?;
    let mut c = body(payload)?;
    let out = match ty {
        STRING => {
            let v = c.string()?;
            string_hash(&v)
        }
        LIST | LIST_ZIPLIST | LIST_QUICKLIST | LIST_QUICKLIST_2 => {
            let mut h = Sha256::new();
            h.update(b"l");
            let mut n = 0u64;
            list_elements(ty, &mut c, &mut |e: &[u8]| {
                h.update((e.len() as u64).to_le_bytes());
                h.update(e);
                n += 1;
            })?;
            h.update(n.to_le_bytes());
            first16(h.finalize().as_slice())
        }
        SET | SET_INTSET | SET_LISTPACK => {
            let mut m = Members::default();
            set_members(ty, &mut c, &mut |e: &[u8]| m.add(&[e]))?;
            m.finish(b's')
        }
        HASH | HASH_ZIPLIST | HASH_LISTPACK => {
            let mut m = Members::default();
            hash_pairs(ty, &mut c, &mut |f: &[u8], v: &[u8]| m.add(&[f, v]))?;
            m.finish(b'h')
        }
        ZSET | ZSET_2 | ZSET_ZIPLIST | ZSET_LISTPACK => {
            let mut m = Members::default();
            zset_members(ty, &mut c, &mut |e: &[u8], score: f64| m.add(&[e, &score.to_bits().to_le_bytes()[..]]))?;
            m.finish(b'z')
        }
        _ => return None,
    };
    // A value that does not end where the payload's trailer begins was misread.
    c.at_end().then_some(out)
}

/// The first snapshots' hash of a hash-table set or hash: its members (a hash's
/// field-value pairs) sorted, as `SMEMBERS` or `HGETALL` read them.
fn legacy_hash(payload: &[u8]) -> Option<[u8; 16]> {
    let ty = *payload.first()?;
    let mut c = body(payload)?;
    let mut units: Vec<Vec<u8>> = Vec::new();
    let unit = |parts: &[&[u8]]| {
        let mut u = Vec::new();
        for p in parts {
            u.extend_from_slice(&(p.len() as u64).to_le_bytes());
            u.extend_from_slice(p);
        }
        u
    };
    match ty {
        SET => set_members(ty, &mut c, &mut |e: &[u8]| units.push(unit(&[e])))?,
        HASH => hash_pairs(ty, &mut c, &mut |f: &[u8], v: &[u8]| units.push(unit(&[f, v])))?,
        _ => return None,
    }
    if !c.at_end() {
        return None;
    }
    units.sort_unstable();
    let mut h = Sha256::new();
    h.update([b'c', ty]);
    for u in units {
        h.update(&u);
    }
    Some(first16(h.finalize().as_slice()))
}

fn list_elements(ty: u8, c: &mut Cur<'_>, f: &mut dyn FnMut(&[u8])) -> Option<()> {
    match ty {
        LIST => {
            for _ in 0..c.len()? {
                f(&c.string()?);
            }
        }
        LIST_ZIPLIST => ziplist(&c.string()?, &mut |e| f(&e))?,
        LIST_QUICKLIST => {
            for _ in 0..c.len()? {
                ziplist(&c.string()?, &mut |e| f(&e))?;
            }
        }
        LIST_QUICKLIST_2 => {
            for _ in 0..c.len()? {
                // 1: a plain node (one element as it is), 2: a packed node (a listpack).
                match c.len()? {
                    1 => f(&c.string()?),
                    2 => listpack(&c.string()?, &mut |e| f(&e))?,
                    _ => return None,
                }
            }
        }
        _ => return None,
    }
    Some(())
}

fn set_members(ty: u8, c: &mut Cur<'_>, f: &mut dyn FnMut(&[u8])) -> Option<()> {
    match ty {
        SET => {
            for _ in 0..c.len()? {
                f(&c.string()?);
            }
        }
        SET_INTSET => intset(&c.string()?, &mut |e| f(&e))?,
        SET_LISTPACK => listpack(&c.string()?, &mut |e| f(&e))?,
        _ => return None,
    }
    Some(())
}

fn hash_pairs(ty: u8, c: &mut Cur<'_>, f: &mut dyn FnMut(&[u8], &[u8])) -> Option<()> {
    match ty {
        HASH => {
            for _ in 0..c.len()? {
                let field = c.string()?;
                f(&field, &c.string()?);
            }
        }
        HASH_ZIPLIST | HASH_LISTPACK => {
            let blob = c.string()?;
            let mut field: Option<Vec<u8>> = None;
            let mut pair = |e: Cow<'_, [u8]>| match field.take() {
                None => field = Some(e.into_owned()),
                Some(k) => f(&k, &e),
            };
            if ty == HASH_ZIPLIST {
                ziplist(&blob, &mut pair)?;
            } else {
                listpack(&blob, &mut pair)?;
            }
            // Fields and values alternate: an odd count is a misread.
            if field.is_some() {
                return None;
            }
        }
        _ => return None,
    }
    Some(())
}

fn zset_members(ty: u8, c: &mut Cur<'_>, f: &mut dyn FnMut(&[u8], f64)) -> Option<()> {
    match ty {
        ZSET | ZSET_2 => {
            for _ in 0..c.len()? {
                let member = c.string()?;
                let score = if ty == ZSET_2 { f64::from_le_bytes(c.array()?) } else { c.text_double()? };
                f(&member, score);
            }
        }
        ZSET_ZIPLIST | ZSET_LISTPACK => {
            let blob = c.string()?;
            let mut member: Option<Vec<u8>> = None;
            let mut bad = false;
            let mut pair = |e: Cow<'_, [u8]>| match member.take() {
                None => member = Some(e.into_owned()),
                // Scores are kept as text (or as an integer, read here as its text).
                Some(m) => match std::str::from_utf8(&e).ok().and_then(|s| s.parse::<f64>().ok()) {
                    Some(score) => f(&m, score),
                    None => bad = true,
                },
            };
            if ty == ZSET_ZIPLIST {
                ziplist(&blob, &mut pair)?;
            } else {
                listpack(&blob, &mut pair)?;
            }
            if bad || member.is_some() {
                return None;
            }
        }
        _ => return None,
    }
    Some(())
}

/// A cursor over a payload.
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    fn at_end(&self) -> bool {
        self.i == self.b.len()
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.i.checked_add(n)?;
        let s = self.b.get(self.i..end)?;
        self.i = end;
        Some(s)
    }
    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    /// An RDB length: 6, 14, 32 or 64 bits (`rdbLoadLen`); `Err` carries the
    /// special encoding of a string (integer or LZF) instead.
    fn len_or_special(&mut self) -> Option<Result<u64, u8>> {
        let b = self.byte()?;
        Some(match b >> 6 {
            0 => Ok(u64::from(b & 0x3f)),
            1 => Ok((u64::from(b & 0x3f) << 8) | u64::from(self.byte()?)),
            2 if b == 0x80 => Ok(u64::from(u32::from_be_bytes(self.array()?))),
            2 if b == 0x81 => Ok(u64::from_be_bytes(self.array()?)),
            2 => return None,
            _ => Err(b & 0x3f),
        })
    }
    fn len(&mut self) -> Option<u64> {
        self.len_or_special()?.ok()
    }
    /// An RDB string: raw, an integer kept as one, or LZF-compressed.
    fn string(&mut self) -> Option<Cow<'a, [u8]>> {
        match self.len_or_special()? {
            Ok(n) => self.take(usize::try_from(n).ok()?).map(Cow::Borrowed),
            Err(0) => Some(Cow::Owned(i64::from(self.byte()? as i8).to_string().into_bytes())),
            Err(1) => Some(Cow::Owned(i16::from_le_bytes(self.array()?).to_string().into_bytes())),
            Err(2) => Some(Cow::Owned(i32::from_le_bytes(self.array()?).to_string().into_bytes())),
            Err(3) => {
                let clen = usize::try_from(self.len()?).ok()?;
                let len = usize::try_from(self.len()?).ok()?;
                lzf_decompress(self.take(clen)?, len).map(Cow::Owned)
            }
            Err(_) => None,
        }
    }
    /// A score of the oldest sorted-set encoding: a length byte, then text.
    fn text_double(&mut self) -> Option<f64> {
        match self.byte()? {
            253 => Some(f64::NAN),
            254 => Some(f64::INFINITY),
            255 => Some(f64::NEG_INFINITY),
            n => std::str::from_utf8(self.take(usize::from(n))?).ok()?.parse().ok(),
        }
    }
}

/// LZF (`lzf_d.c`): literal runs and back references, into exactly `len` bytes.
fn lzf_decompress(input: &[u8], len: usize) -> Option<Vec<u8>> {
    // Grown as it is written: a length the payload claims is not allocated up front.
    let mut out: Vec<u8> = Vec::with_capacity(len.min(1 << 20));
    let mut i = 0;
    while i < input.len() {
        let ctrl = usize::from(input[i]);
        i += 1;
        if ctrl < 32 {
            let run = input.get(i..i + ctrl + 1)?;
            out.extend_from_slice(run);
            i += ctrl + 1;
        } else {
            let mut n = ctrl >> 5;
            if n == 7 {
                n += usize::from(*input.get(i)?);
                i += 1;
            }
            let back = ((ctrl & 0x1f) << 8) + usize::from(*input.get(i)?) + 1;
            i += 1;
            let from = out.len().checked_sub(back)?;
            // Byte by byte: a reference may overlap what it writes.
            for k in 0..n + 2 {
                let b = out[from + k];
                out.push(b);
            }
        }
        if out.len() > len {
            return None;
        }
    }
    (out.len() == len).then_some(out)
}

/// The elements of a listpack (`listpack.c`); integers as their decimal text, as a
/// client reads them.
fn listpack(blob: &[u8], f: &mut dyn FnMut(Cow<'_, [u8]>)) -> Option<()> {
    let mut c = Cur { b: blob, i: 0 };
    c.take(6)?; // total bytes (u32), element count (u16)
    loop {
        let start = c.i;
        let b = c.byte()?;
        let int = |v: i64| Cow::Owned(v.to_string().into_bytes());
        let elem: Cow<'_, [u8]> = if b & 0x80 == 0 {
            int(i64::from(b & 0x7f))
        } else if b & 0xc0 == 0x80 {
            Cow::Borrowed(c.take(usize::from(b & 0x3f))?)
        } else if b & 0xe0 == 0xc0 {
            let u = (i64::from(b & 0x1f) << 8) | i64::from(c.byte()?);
            int(if u >= 1 << 12 { u - (1 << 13) } else { u })
        } else if b & 0xf0 == 0xe0 {
            let n = (usize::from(b & 0x0f) << 8) | usize::from(c.byte()?);
            Cow::Borrowed(c.take(n)?)
        } else {
            match b {
                0xf0 => {
                    let n = usize::try_from(u32::from_le_bytes(c.array()?)).ok()?;
                    Cow::Borrowed(c.take(n)?)
                }
                0xf1 => int(i64::from(i16::from_le_bytes(c.array()?))),
                0xf2 => {
                    let [x, y, z] = c.array()?;
                    int(i64::from(i32::from_le_bytes([0, x, y, z]) >> 8))
                }
                0xf3 => int(i64::from(i32::from_le_bytes(c.array()?))),
                0xf4 => int(i64::from_le_bytes(c.array()?)),
                0xff => return c.at_end().then_some(()),
                _ => return None,
            }
        };
        // Each entry ends with its own length, in 1 to 5 bytes, for walking backwards.
        let l = c.i - start;
        let backlen = match l {
            0..=127 => 1,
            128..=16382 => 2,
            16383..=2097150 => 3,
            2097151..=268435454 => 4,
            _ => 5,
        };
        c.take(backlen)?;
        f(elem);
    }
}

/// The elements of a ziplist (`ziplist.c`, Redis before 7.0).
fn ziplist(blob: &[u8], f: &mut dyn FnMut(Cow<'_, [u8]>)) -> Option<()> {
    let mut c = Cur { b: blob, i: 0 };
    c.take(10)?; // total bytes (u32), offset of the tail (u32), element count (u16)
    loop {
        let first = c.byte()?;
        if first == 0xff {
            return c.at_end().then_some(());
        }
        // The previous entry's length: one byte, or 0xfe and four more.
        if first == 0xfe {
            c.take(4)?;
        }
        let b = c.byte()?;
        let int = |v: i64| Cow::Owned(v.to_string().into_bytes());
        let elem: Cow<'_, [u8]> = match b >> 6 {
            0 => Cow::Borrowed(c.take(usize::from(b & 0x3f))?),
            1 => {
                let n = (usize::from(b & 0x3f) << 8) | usize::from(c.byte()?);
                Cow::Borrowed(c.take(n)?)
            }
            2 if b == 0x80 => {
                let n = usize::try_from(u32::from_be_bytes(c.array()?)).ok()?;
                Cow::Borrowed(c.take(n)?)
            }
            2 => return None,
            _ => match b {
                0xc0 => int(i64::from(i16::from_le_bytes(c.array()?))),
                0xd0 => int(i64::from(i32::from_le_bytes(c.array()?))),
                0xe0 => int(i64::from_le_bytes(c.array()?)),
                0xf0 => {
                    let [x, y, z] = c.array()?;
                    int(i64::from(i32::from_le_bytes([0, x, y, z]) >> 8))
                }
                0xfe => int(i64::from(c.byte()? as i8)),
                0xf1..=0xfd => int(i64::from(b & 0x0f) - 1),
                _ => return None,
            },
        };
        f(elem);
    }
}

/// The members of an intset (`intset.c`): its width (2, 4 or 8), its count, then
/// the integers, little-endian.
fn intset(blob: &[u8], f: &mut dyn FnMut(Cow<'_, [u8]>)) -> Option<()> {
    let mut c = Cur { b: blob, i: 0 };
    let width = u32::from_le_bytes(c.array()?);
    let n = u32::from_le_bytes(c.array()?);
    for _ in 0..n {
        let v = match width {
            2 => i64::from(i16::from_le_bytes(c.array()?)),
            4 => i64::from(i32::from_le_bytes(c.array()?)),
            8 => i64::from_le_bytes(c.array()?),
            _ => return None,
        };
        f(Cow::Owned(v.to_string().into_bytes()));
    }
    c.at_end().then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lzf_back_references_may_overlap_what_they_write() {
        // A literal run "abc", then 9 bytes from 3 back: "abcabcabc".
        let packed = [2, b'a', b'b', b'c', 7 << 5, 0, 2];
        assert_eq!(lzf_decompress(&packed, 12).as_deref(), Some(&b"abcabcabcabc"[..]));
        assert_eq!(lzf_decompress(&packed, 11), None, "more than the length given is refused");
        assert_eq!(lzf_decompress(&packed, 13), None, "less than the length given is refused");
        assert_eq!(lzf_decompress(&[5, b'x'], 6), None, "a run past the input is refused");
        assert_eq!(lzf_decompress(&[1 << 5, 9], 4), None, "a reference before the start is refused");
    }

    /// Ziplists come only from servers before 7.0: built here by hand from
    /// `ziplist.c`'s layout, with each kind of entry.
    #[test]
    fn ziplist_entries_read_as_a_client_reads_them() {
        let zl = [
            &[0u8; 10][..],                        // header
            &[0x00, 0x02, b'a', b'b'],             // "ab"
            &[0x04, 0xf8],                         // 7, kept in the encoding byte
            &[0x02, 0xc0, 0x2c, 0x01],             // 300, 16 bits
            &[0x04, 0xf0, 0x90, 0xee, 0xfe],       // -70000, 24 bits
            &[0x05, 0xfe, 0xfb],                   // -5, 8 bits
            &[0xfe, 0, 1, 0, 0, 0x40, 0x01, b'z'], // "z" with a 5-byte previous length and a 14-bit length
            &[0xff],
        ]
        .concat();
        let mut got = Vec::new();
        ziplist(&zl, &mut |e| got.push(String::from_utf8(e.into_owned()).unwrap())).unwrap();
        assert_eq!(got, ["ab", "7", "300", "-70000", "-5", "z"]);
        assert_eq!(ziplist(&zl[..zl.len() - 1], &mut |_| {}), None, "no end marker");
    }

    /// The oracle: each value as the server's own read commands return it.
    async fn read_back(c: &mut redis::aio::MultiplexedConnection, key: &str) -> (String, [u8; 16], [u8; 16]) {
        let q = |cmd: &str| {
            let mut c = redis::cmd(cmd);
            c.arg(key);
            c
        };
        let ty: String = q("TYPE").query_async(c).await.unwrap();
        let enc: String = redis::cmd("OBJECT").arg("ENCODING").arg(key).query_async(c).await.unwrap();
        let sorted = |units: Vec<Vec<u8>>, tag: u8| {
            let mut units = units;
            units.sort_unstable();
            let mut h = Sha256::new();
            h.update([b'c', tag]);
            for u in units {
                h.update(&u);
            }
            first16(h.finalize().as_slice())
        };
        let unit = |parts: &[&[u8]]| {
            parts.iter().flat_map(|p| [&(p.len() as u64).to_le_bytes()[..], p].concat()).collect::<Vec<u8>>()
        };
        let (logical, legacy) = match ty.as_str() {
            "string" => {
                let v: Vec<u8> = q("GET").query_async(c).await.unwrap();
                (string_hash(&v), [0; 16])
            }
            "list" => {
                let items: Vec<Vec<u8>> = q("LRANGE").arg(0).arg(-1).query_async(c).await.unwrap();
                let mut h = Sha256::new();
                h.update(b"l");
                for e in &items {
                    h.update((e.len() as u64).to_le_bytes());
                    h.update(e);
                }
                h.update((items.len() as u64).to_le_bytes());
                (first16(h.finalize().as_slice()), [0; 16])
            }
            "set" => {
                let items: Vec<Vec<u8>> = q("SMEMBERS").query_async(c).await.unwrap();
                let mut m = Members::default();
                items.iter().for_each(|e| m.add(&[e]));
                (m.finish(b's'), sorted(items.iter().map(|e| unit(&[e])).collect(), SET))
            }
            "hash" => {
                let items: Vec<(Vec<u8>, Vec<u8>)> = q("HGETALL").query_async(c).await.unwrap();
                let mut m = Members::default();
                items.iter().for_each(|(f, v)| m.add(&[f, v]));
                (m.finish(b'h'), sorted(items.iter().map(|(f, v)| unit(&[f, v])).collect(), HASH))
            }
            "zset" => {
                let items: Vec<(Vec<u8>, String)> =
                    q("ZRANGE").arg(0).arg(-1).arg("WITHSCORES").query_async(c).await.unwrap();
                let mut m = Members::default();
                for (e, s) in &items {
                    let score: f64 = s.parse().unwrap();
                    m.add(&[e, &score.to_bits().to_le_bytes()[..]]);
                }
                (m.finish(b'z'), [0; 16])
            }
            other => panic!("no oracle for {other}"),
        };
        (format!("{ty}/{enc}"), logical, legacy)
    }

    /// Every encoding this server makes (strings kept as integers, compressed or
    /// raw; listpacks, quicklists, intsets of each width, hash tables, skiplists),
    /// dumped by the server: the payload's hash equals the hash of what the server's
    /// read commands return.
    #[tokio::test]
    async fn payload_hashes_equal_what_the_client_reads() {
        let base = std::env::var("ROLLBACK_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let client = redis::Client::open(format!("{}/8", base.trim_end_matches('/'))).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.expect("Redis must run on 127.0.0.1:6379");
        let p = format!("rbtest:rdb:{:08x}:", rand::random::<u32>());
        let k = |s: &str| format!("{p}{s}");
        let mut cmds: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut cmd = |args: &[&[u8]]| cmds.push(args.iter().map(|a| a.to_vec()).collect());
        let big = |n: usize, f: &dyn Fn(usize) -> String| (0..n).map(f).collect::<Vec<_>>();
        cmd(&[b"SET", k("int8").as_bytes(), b"-7"]);
        cmd(&[b"SET", k("int16").as_bytes(), b"3000"]);
        cmd(&[b"SET", k("int32").as_bytes(), b"-2000000000"]);
        cmd(&[b"SET", k("int64").as_bytes(), b"9000000000000"]);
        cmd(&[b"SET", k("lzf").as_bytes(), "abcdefgh".repeat(500).as_bytes()]);
        cmd(&[b"SET", k("raw").as_bytes(), b"\x00\xff binary\r\n"]);
        cmd(&[b"SET", k("empty").as_bytes(), b""]);
        let mut list = vec![b"RPUSH".to_vec(), k("list-small").into_bytes()];
        list.extend(["a", "-1", "300", "70000", "-5000000000", "x"].map(|s| s.as_bytes().to_vec()));
        cmds.push(list);
        let items = big(2000, &|i| if i % 3 == 0 { i.to_string() } else { format!("item-{i}-{}", "y".repeat(i % 90)) });
        let mut list = vec![b"RPUSH".to_vec(), k("list-long").into_bytes()];
        list.extend(items.iter().map(|s| s.as_bytes().to_vec()));
        cmds.push(list);
        let mut list = vec![b"RPUSH".to_vec(), k("list-wide").into_bytes()];
        list.extend((0..4).map(|i| format!("{i}{}", "w".repeat(20_000)).into_bytes()));
        cmds.push(list);
        for (name, members) in [
            ("set-int16", vec!["1".to_string(), "-2".into(), "300".into()]),
            ("set-int32", vec!["1".to_string(), "-70000".into()]),
            ("set-int64", vec!["1".to_string(), "-5000000000".into()]),
            ("set-small", vec!["a".to_string(), "b".into(), "17".into()]),
            ("set-table", big(300, &|i| format!("m{i}"))),
        ] {
            let mut c = vec![b"SADD".to_vec(), k(name).into_bytes()];
            c.extend(members.into_iter().map(String::into_bytes));
            cmds.push(c);
        }
        for (name, n, width) in [("hash-small", 5, 3), ("hash-table", 300, 3), ("hash-wide", 3, 2000)] {
            let mut c = vec![b"HSET".to_vec(), k(name).into_bytes()];
            for i in 0..n {
                c.push(format!("f{i}").into_bytes());
                c.push(if i % 2 == 0 { (i * 1000).to_string() } else { "v".repeat(width) }.into_bytes());
            }
            cmds.push(c);
        }
        for (name, n) in [("zset-small", 6), ("zset-skiplist", 300)] {
            let mut c = vec![b"ZADD".to_vec(), k(name).into_bytes()];
            for i in 0..n {
                let score = match i {
                    0 => "-inf".to_string(),
                    1 => "inf".to_string(),
                    2 => "3".to_string(),
                    _ => (i as f64 / 7.0).to_string(),
                };
                c.push(score.into_bytes());
                c.push(format!("z{i}").into_bytes());
            }
            cmds.push(c);
        }
        let mut pipe = redis::pipe();
        for a in &cmds {
            let mut c = redis::cmd(std::str::from_utf8(&a[0]).unwrap());
            for x in &a[1..] {
                c.arg(x);
            }
            pipe.add_command(c).ignore();
        }
        let _: () = pipe.query_async(&mut c).await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{p}*")).query_async(&mut c).await.unwrap();
        assert_eq!(keys.len(), cmds.len());
        let mut seen = std::collections::BTreeSet::new();
        for key in &keys {
            let payload: Vec<u8> = redis::cmd("DUMP").arg(key).query_async(&mut c).await.unwrap();
            let (enc, logical, legacy) = read_back(&mut c, key).await;
            assert_eq!(dump_hash(&payload, Hashing::Logical), logical, "{key} ({enc}): {payload:?}");
            if payload[0] == SET || payload[0] == HASH {
                assert_eq!(
                    dump_hash(&payload, Hashing::Legacy),
                    legacy,
                    "{key} ({enc}), as the first snapshots hashed it"
                );
            }
            seen.insert(format!("{enc} (rdb type {})", payload[0]));
        }
        let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut c).await.unwrap();
        // The encodings a Redis 7.0 makes from these values, each read at least once.
        let seen = seen.into_iter().collect::<Vec<_>>().join(", ");
        for enc in [
            "string/int",
            "string/raw",
            "list/quicklist",
            "set/intset",
            "set/hashtable",
            "hash/listpack",
            "hash/hashtable",
            "zset/listpack",
            "zset/skiplist",
        ] {
            assert!(seen.contains(enc), "{enc} not among {seen}");
        }
        println!("{seen}");
    }

    #[test]
    fn damaged_payloads_fall_back_to_the_fingerprint_without_panicking() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        // A listpack hash {a: 1, b: "xy"} with a made-up trailer.
        let lp = [19, 0, 0, 0, 4, 0, 0x81, b'a', 2, 1, 1, 0x81, b'b', 2, 0x82, b'x', b'y', 3, 0xff];
        let mut payload = vec![HASH_LISTPACK, lp.len() as u8];
        payload.extend_from_slice(&lp);
        payload.extend_from_slice(&[0u8; 10]);
        let mut m = Members::default();
        m.add(&[b"a", b"1"]);
        m.add(&[b"b", b"xy"]);
        assert_eq!(dump_hash(&payload, Hashing::Logical), m.finish(b'h'), "the hand-made payload parses");
        for round in 0..5000 {
            let mut v = payload.clone();
            for _ in 0..rng.gen_range(1..4) {
                if v.is_empty() {
                    break;
                }
                let at = rng.gen_range(0..v.len());
                match rng.gen_range(0..3) {
                    0 => v[at] = rng.gen(),
                    1 => v.truncate(at),
                    _ => v.insert(at, rng.gen()),
                }
            }
            let r = std::panic::catch_unwind(|| (dump_hash(&v, Hashing::Logical), dump_hash(&v, Hashing::Legacy)));
            assert!(r.is_ok(), "round {round} panicked on {v:?}");
        }
    }
}
