//! The restore's fast path: RESTORE commands written straight onto a TCP connection
//! while a second task reads the replies, the way `redis-cli --pipe` mass-inserts.
//! A client library's per-command objects and reply values cost more than Redis
//! itself at a million keys.

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc::Receiver;

use super::format::{KeyRecord, KIND_STRING};
use crate::driver::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::secret::Redactor;

fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        bulk(out, a);
    }
}

/// Where and how to connect.
pub(super) struct Target<'a> {
    pub host: &'a str,
    pub port: u16,
    pub db: i64,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    /// `host:port/db`, for messages.
    pub name: &'a str,
    pub redactor: &'a Redactor,
}

impl Target<'_> {
    fn fail(&self, kind: ErrorKind, what: &str, detail: &str) -> Error {
        Error::new(kind, format!("redis {}: {what}: {}", self.name, self.redactor.redact(detail)))
    }
}

/// Restores the batches; returns (restored, skipped because expired).
pub(super) async fn restore(
    ctx: &Context,
    t: &Target<'_>,
    mut batches: Receiver<Result<Vec<KeyRecord>>>,
    clock: (i64, Instant),
) -> Result<(u64, u64)> {
    let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect((t.host, t.port)))
        .await
        .map_err(|_| t.fail(ErrorKind::Unreachable, "cannot connect", "no answer within 10 s"))?
        .map_err(|e| t.fail(ErrorKind::Unreachable, "cannot connect", &e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::with_capacity(1 << 16, r);
    let mut line = Vec::new();

    let mut hello = Vec::new();
    let mut expect = 1;
    if let Some(pw) = t.password {
        match t.username {
            Some(u) if !u.is_empty() => command(&mut hello, &[b"AUTH", u.as_bytes(), pw.as_bytes()]),
            _ => command(&mut hello, &[b"AUTH", pw.as_bytes()]),
        }
        expect += 1;
    }
    command(&mut hello, &[b"SELECT", t.db.to_string().as_bytes()]);
    w.write_all(&hello).await.map_err(|e| t.fail(ErrorKind::Unreachable, "cannot write", &e.to_string()))?;
    for _ in 0..expect {
        line.clear();
        r.read_until(b'\n', &mut line)
            .await
            .map_err(|e| t.fail(ErrorKind::Unreachable, "cannot read", &e.to_string()))?;
        if line.first() != Some(&b'+') {
            let msg = String::from_utf8_lossy(&line).trim().to_string();
            let kind = if msg.contains("WRONGPASS") || msg.contains("AUTH") || msg.contains("NOAUTH") {
                ErrorKind::PermissionDenied
            } else {
                ErrorKind::Unexpected
            };
            return Err(t.fail(kind, "the server refused the session", &msg));
        }
    }

    let writer = async move {
        let mut sent = 0u64;
        let mut keys = 0u64;
        let mut expired = 0u64;
        let mut buf = Vec::with_capacity(1 << 20);
        let mut last = Instant::now();
        while let Some(batch) = batches.recv().await {
            let batch = batch?;
            let now = clock.0 + clock.1.elapsed().as_millis() as i64;
            buf.clear();
            for k in &batch {
                // A key whose TTL ran out since the capture would be gone by now anyway.
                if k.expire_at != 0 && k.expire_at <= now + 1 {
                    expired += 1;
                    continue;
                }
                let at = k.expire_at.to_string();
                if k.kind == KIND_STRING {
                    // SET replaces a key of any type and clears its TTL.
                    command(&mut buf, &[b"SET", &k.key, &k.payload]);
                    sent += 1;
                    if k.expire_at != 0 {
                        command(&mut buf, &[b"PEXPIREAT", &k.key, at.as_bytes()]);
                        sent += 1;
                    }
                } else if k.expire_at != 0 {
                    command(&mut buf, &[b"RESTORE", &k.key, at.as_bytes(), &k.payload, b"REPLACE", b"ABSTTL"]);
                    sent += 1;
                } else {
                    command(&mut buf, &[b"RESTORE", &k.key, b"0", &k.payload, b"REPLACE"]);
                    sent += 1;
                }
                keys += 1;
            }
            w.write_all(&buf).await.map_err(|e| t.fail(ErrorKind::Unreachable, "cannot write", &e.to_string()))?;
            if last.elapsed() > Duration::from_secs(2) {
                last = Instant::now();
                ctx.progress(format!("restored {keys} keys"));
            }
        }
        // The end marker: its reply is the only `+PONG` on the wire.
        buf.clear();
        command(&mut buf, &[b"PING"]);
        w.write_all(&buf).await.map_err(|e| t.fail(ErrorKind::Unreachable, "cannot write", &e.to_string()))?;
        w.flush().await.map_err(|e| t.fail(ErrorKind::Unreachable, "cannot write", &e.to_string()))?;
        Ok::<_, Error>((sent, keys, expired, w))
    };
    let reader = async move {
        let mut ok = 0u64;
        let mut first_error: Option<String> = None;
        let mut errors = 0u64;
        loop {
            line.clear();
            let n = r
                .read_until(b'\n', &mut line)
                .await
                .map_err(|e| t.fail(ErrorKind::Unreachable, "cannot read", &e.to_string()))?;
            if n == 0 {
                return Err(t.fail(ErrorKind::Unreachable, "the server closed the connection", "during RESTORE"));
            }
            match line.first() {
                Some(b'+') if line.starts_with(b"+PONG") => break,
                Some(b'+') | Some(b':') => ok += 1,
                _ => {
                    errors += 1;
                    if first_error.is_none() {
                        first_error = Some(String::from_utf8_lossy(&line).trim().to_string());
                    }
                }
            }
        }
        Ok::<_, Error>((ok, errors, first_error))
    };
    // A failed side ends the other (a reader waiting for replies that never come).
    let ((sent, keys, expired, _w), (ok, errors, first_error)) = tokio::try_join!(writer, reader)?;
    if let Some(e) = first_error {
        let kind = if e.contains("checksum") || e.contains("version") {
            ErrorKind::Unsupported
        } else {
            ErrorKind::Unexpected
        };
        return Err(t.fail(kind, &format!("{errors} of {sent} commands failed"), &e));
    }
    if ok != sent {
        return Err(t.fail(ErrorKind::Unexpected, "RESTORE", &format!("{ok} replies for {sent} commands")));
    }
    Ok((keys, expired))
}
