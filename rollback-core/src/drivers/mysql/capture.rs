//! Captures: `dump` streams each table from one consistent read view into the
//! store; `fast` copies it into a snapshot schema on the server.

use super::*;

impl MysqlDriver {
    pub(super) async fn capture_dump(
        &self,
        ctx: &Context,
        conn: &mut Conn,
        tables: &[String],
    ) -> Result<(Vec<TableState>, Vec<ArtifactRef>)> {
        let mut states = Vec::new();
        let mut selects = Vec::new();
        for t in tables {
            let create = self
                .show_create(conn, &self.db, t)
                .await?
                .ok_or_else(|| Error::not_found(format!("mysql {}: table {} vanished", self.target, q(t))))?;
            let (columns, select, json) = self.stored_columns(conn, t).await?;
            states.push(TableState { name: t.clone(), create, columns, rows: 0, checksum: None, artifact: None, json });
            selects.push(select);
        }
        // One read view for every table: consistent while writers run, and no locks.
        conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await
            .map_err(|e| self.err("cannot set the isolation level", e))?;
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .await
            .map_err(|e| self.err("cannot start the snapshot transaction", e))?;
        let mut artifacts = Vec::new();
        for (i, st) in states.iter_mut().enumerate() {
            let name = format!("mysql/data/{i}.tsv");
            let t0 = Instant::now();
            let (rows, art) = self.stream_table(ctx, conn, st, &selects[i], &name).await?;
            st.rows = rows;
            st.checksum = self.checksum(conn, &self.db, &st.name).await?;
            st.artifact = Some(name);
            ctx.progress(format!(
                "captured {} ({rows} rows, {} bytes) in {} ms",
                q(&st.name),
                art.size,
                t0.elapsed().as_millis()
            ));
            artifacts.push(art);
        }
        conn.query_drop("COMMIT").await.map_err(|e| self.err("cannot end the snapshot transaction", e))?;
        Ok((states, artifacts))
    }

    /// Streams one table's rows into an artifact; a blocking thread writes while rows arrive.
    pub(super) async fn stream_table(
        &self,
        ctx: &Context,
        conn: &mut Conn,
        st: &TableState,
        columns: &str,
        name: &str,
    ) -> Result<(u64, ArtifactRef)> {
        let mut w = ctx.store.artifact_writer(name)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        let writer = tokio::task::spawn_blocking(move || -> Result<ArtifactRef> {
            while let Some(chunk) = rx.blocking_recv() {
                w.write_all(&chunk).map_err(Error::from)?;
            }
            w.finish()
        });
        let select = format!("SELECT {columns} FROM {}", qt(&self.db, &st.name));
        let mut n = 0u64;
        let read = async {
            let mut res =
                conn.query_iter(select).await.map_err(|e| self.err(&format!("cannot read {}", q(&st.name)), e))?;
            let mut buf = Vec::with_capacity(CHUNK + 64 * 1024);
            while let Some(row) = res.next().await.map_err(|e| self.err(&format!("cannot read {}", q(&st.name)), e))? {
                for (i, v) in row.unwrap_raw().into_iter().enumerate() {
                    if i > 0 {
                        buf.push(b'\t');
                    }
                    match v {
                        None | Some(Value::NULL) => sql::push_field(&mut buf, None),
                        Some(Value::Bytes(b)) => sql::push_field(&mut buf, Some(&b)),
                        Some(other) => {
                            sql::push_field(&mut buf, Some(other.as_sql(true).trim_matches('\'').as_bytes()))
                        }
                    }
                }
                buf.push(b'\n');
                n += 1;
                if buf.len() >= CHUNK {
                    let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 64 * 1024));
                    if tx.send(full).await.is_err() {
                        break;
                    }
                }
            }
            if !buf.is_empty() {
                let _ = tx.send(buf).await;
            }
            Ok::<(), Error>(())
        }
        .await;
        drop(tx);
        let art = writer.await.map_err(|e| Error::unexpected("the snapshot writer failed").with_source(e))??;
        read?;
        Ok((n, art))
    }

    /// The schema a `fast` snapshot copies into (and `_r` for its ready copy): named
    /// from the database and the snapshot id, so that what a killed capture made can
    /// be found again without its manifest.
    pub(super) fn snapshot_schema_name(&self, snapshot_id: &str) -> String {
        if snapshot_id.is_empty() {
            return format!("_rollback_{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        }
        let h = Sha256::digest(format!("{}\0{snapshot_id}", self.db).as_bytes());
        format!("_rollback_{}", &hex::encode(h)[..12])
    }

    pub(super) async fn capture_fast(
        &self,
        ctx: &Context,
        conn: &mut Conn,
        tables: &[String],
    ) -> Result<(Vec<TableState>, String)> {
        let schema = self.snapshot_schema_name(&ctx.snapshot_id);
        conn.query_drop(format!("CREATE DATABASE {}", q(&schema)))
            .await
            .map_err(|e| self.err("cannot create the snapshot schema (needs CREATE privilege)", e))?;
        let r = async {
            let mut states = Vec::new();
            for t in tables {
                let create = self
                    .show_create(conn, &self.db, t)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("mysql {}: table {} vanished", self.target, q(t))))?;
                // The copy reads through the binary protocol: no FLOAT text to mind.
                let (columns, _, json) = self.stored_columns(conn, t).await?;
                conn.query_drop(format!("CREATE TABLE {} LIKE {}", qt(&schema, t), qt(&self.db, t)))
                    .await
                    .map_err(|e| self.err(&format!("cannot create the copy of {}", q(t)), e))?;
                states.push(TableState {
                    name: t.clone(),
                    create,
                    columns,
                    rows: 0,
                    checksum: None,
                    artifact: None,
                    json,
                });
            }
            // DDL above commits implicitly. Every table is then read in one read view,
            // as `dump` reads it: consistent across tables while writers run, and no
            // lock on their rows. (An `INSERT … SELECT` here takes a shared lock on every
            // source row until the commit: trading writes waited for the whole copy.)
            conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .await
                .map_err(|e| self.err("cannot set the isolation level", e))?;
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                .await
                .map_err(|e| self.err("cannot start the snapshot transaction", e))?;
            let mut writer = self.connect().await?;
            for st in &states {
                let t0 = Instant::now();
                let n = self.copy_rows(conn, &mut writer, st, &schema).await?;
                ctx.progress(format!("copied {} ({n} rows) in {} ms", q(&st.name), t0.elapsed().as_millis()));
            }
            let _ = writer.disconnect().await;
            conn.query_drop("COMMIT").await.map_err(|e| self.err("cannot end the snapshot transaction", e))?;
            for st in &mut states {
                st.checksum = self.checksum(conn, &schema, &st.name).await?;
                st.rows = self.count(conn, &schema, &st.name).await?;
            }
            Ok::<_, Error>(states)
        }
        .await;
        match r {
            Ok(states) => Ok((states, schema)),
            Err(e) => {
                let _ = conn.query_drop("ROLLBACK").await;
                let _ = conn.query_drop(format!("DROP DATABASE IF EXISTS {}", q(&schema))).await;
                Err(e)
            }
        }
    }

    /// Streams the rows of `st` as `reader`'s read view sees them into
    /// `schema`.`st.name` through `writer`, in prepared multi-row INSERTs; the next
    /// batch is read while one is written. Returns the rows copied.
    pub(super) async fn copy_rows(
        &self,
        reader: &mut Conn,
        writer: &mut Conn,
        st: &TableState,
        schema: &str,
    ) -> Result<u64> {
        let ncols = st.columns.len();
        let per = INSERT_ROWS.min(60_000 / ncols.max(1)).max(1);
        let cols = st.columns.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
        let one = value_marks(st);
        let stmt_for = |n: usize| {
            format!("INSERT INTO {} ({cols}) VALUES {}", qt(schema, &st.name), vec![one.as_str(); n].join(","))
        };
        let full = writer.prep(stmt_for(per)).await.map_err(|e| self.err("cannot prepare the INSERT", e))?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Value>>(2);
        let select = format!("SELECT {cols} FROM {}", qt(&self.db, &st.name));
        let read = async move {
            // The binary protocol: each value as the server stores it. The text
            // protocol prints a FLOAT with 6 significant digits (1234567 as 1234570).
            let mut res =
                reader.exec_iter(select, ()).await.map_err(|e| self.err(&format!("cannot read {}", q(&st.name)), e))?;
            let mut batch = Vec::with_capacity(per * ncols);
            let mut n = 0u64;
            while let Some(row) = res.next().await.map_err(|e| self.err(&format!("cannot read {}", q(&st.name)), e))? {
                batch.extend(row.unwrap_raw().into_iter().map(|v| v.unwrap_or(Value::NULL)));
                n += 1;
                if batch.len() == per * ncols && tx.send(std::mem::take(&mut batch)).await.is_err() {
                    // The writer failed: its error is the one reported.
                    return Ok(n);
                }
            }
            if !batch.is_empty() {
                let _ = tx.send(batch).await;
            }
            Ok::<u64, Error>(n)
        };
        // Owns `rx`: when it fails, the reader's next send fails and the read stops.
        let write = async move {
            while let Some(batch) = rx.recv().await {
                let rows = batch.len() / ncols.max(1);
                let r = if rows == per {
                    writer.exec_drop(&full, batch).await
                } else {
                    writer.exec_drop(stmt_for(rows), batch).await
                };
                r.map_err(|e| self.err(&format!("cannot copy {}", q(&st.name)), e))?;
            }
            Ok::<(), Error>(())
        };
        let (n, w) = tokio::join!(read, write);
        w?;
        n
    }
}
