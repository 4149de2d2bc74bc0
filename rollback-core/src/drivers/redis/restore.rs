//! Putting keys back: the delete of the keys matching the pattern, then the
//! snapshot's keys, streamed onto the connection.

use super::*;

impl RedisDriver {
    /// Deletes the keys matching the pattern (FLUSHDB when it is `*`). Returns how many.
    pub(super) async fn delete_matching(&self, ctx: &Context, con: &mut MultiplexedConnection) -> Result<u64> {
        if self.pattern == "*" {
            let n: u64 = redis::cmd("DBSIZE").query_async(con).await.map_err(|e| self.err("DBSIZE failed", e))?;
            // ASYNC: the key space is empty at once; memory is freed in the background.
            redis::cmd("FLUSHDB")
                .arg("ASYNC")
                .query_async::<()>(con)
                .await
                .map_err(|e| self.err("FLUSHDB failed", e))?;
            ctx.progress(format!("flushed db {} ({n} keys)", self.db));
            return Ok(n);
        }
        let mut n = 0u64;
        let mut cursor = 0u64;
        loop {
            let (next, keys) = self.scan_page(con, cursor).await?;
            if !keys.is_empty() {
                let mut c = redis::cmd("UNLINK");
                for k in &keys {
                    c.arg(k);
                }
                let d: u64 = c.query_async(con).await.map_err(|e| self.err("UNLINK failed", e))?;
                n += d;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        ctx.progress(format!("deleted {n} keys matching `{}` in db {}", self.pattern, self.db));
        Ok(n)
    }

    pub(super) async fn restore_keys(
        &self,
        ctx: &Context,
        con: &MultiplexedConnection,
        part: &Part,
    ) -> Result<(u64, u64)> {
        let art = part
            .artifact(KEYS_ARTIFACT)
            .ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("redis snapshot has no `{KEYS_ARTIFACT}`")))?
            .clone();
        let mut c = con.clone();
        let server_now = self.server_ms(&mut c).await?;
        let clock = (server_now, Instant::now());
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<KeyRecord>>>(RESTORE_IN_FLIGHT + 2);
        let store = ctx.store.clone();
        let reader = tokio::task::spawn_blocking(move || format::read_keys(&store, &art, BATCH, &tx));
        let info = self.client.get_connection_info();
        let fence_pw = self.fence_auth.lock().await.clone();
        if let redis::ConnectionAddr::Tcp(host, port) = &info.addr {
            let (username, password) = match &fence_pw {
                Some(pw) => (Some(fence::FENCE_USER), Some(pw.as_str())),
                None => (info.redis.username.as_deref(), info.redis.password.as_deref()),
            };
            let target = pipe::Target {
                host,
                port: *port,
                db: self.db,
                username,
                password,
                name: &self.target,
                redactor: &self.redactor,
            };
            let r = pipe::restore(ctx, &target, rx, clock).await;
            let read = reader.await.map_err(|e| Error::unexpected("the snapshot reader failed").with_source(e))?;
            let r = r?;
            read?;
            return Ok(r);
        }
        // TLS and unix sockets: through the client library.
        let batches = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        let restored = std::sync::atomic::AtomicU64::new(0);
        let expired = std::sync::atomic::AtomicU64::new(0);
        let last_report = std::sync::Mutex::new(Instant::now());
        batches
            .map(|b| {
                let mut con = con.clone();
                let (restored, expired, last_report) = (&restored, &expired, &last_report);
                async move {
                    let batch = b?;
                    let now = clock.0 + clock.1.elapsed().as_millis() as i64;
                    let mut p = redis::pipe();
                    let mut k = 0u64;
                    for r in &batch {
                        // A key whose TTL ran out since the capture would be gone by now anyway.
                        if r.expire_at != 0 && r.expire_at <= now + 1 {
                            expired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            continue;
                        }
                        if r.kind == KIND_STRING {
                            p.cmd("SET").arg(&r.key).arg(&r.payload).ignore();
                            if r.expire_at != 0 {
                                p.cmd("PEXPIREAT").arg(&r.key).arg(r.expire_at).ignore();
                            }
                        } else {
                            p.cmd("RESTORE").arg(&r.key).arg(r.expire_at).arg(&r.payload).arg("REPLACE");
                            if r.expire_at != 0 {
                                p.arg("ABSTTL");
                            }
                            p.ignore();
                        }
                        k += 1;
                    }
                    if k > 0 {
                        p.query_async::<()>(&mut con).await.map_err(|e| self.err("RESTORE failed", e))?;
                    }
                    let total = restored.fetch_add(k, std::sync::atomic::Ordering::Relaxed) + k;
                    if let Ok(mut t) = last_report.lock() {
                        if t.elapsed() > Duration::from_secs(2) {
                            *t = Instant::now();
                            ctx.progress(format!("restored {total} keys"));
                        }
                    }
                    Ok::<(), Error>(())
                }
            })
            .buffer_unordered(RESTORE_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        reader.await.map_err(|e| Error::unexpected("the snapshot reader failed").with_source(e))??;
        Ok((restored.into_inner(), expired.into_inner()))
    }
}
