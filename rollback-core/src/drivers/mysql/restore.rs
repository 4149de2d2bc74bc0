//! Restores: a ready copy of each table is built beside the live one (from the
//! snapshot schema or the stored dump), then swapped in by one atomic RENAME.

use super::*;

impl MysqlDriver {
    /// Copies the snapshot schema into `<schema>_r`, tables as captured (foreign keys
    /// are added after a swap, as on every restore), indexes built after the load.
    pub(super) async fn build_ready_copy(&self, ctx: &Context, schema: &str, tables: &[TableState]) -> Result<String> {
        let t0 = Instant::now();
        let ready = format!("{schema}_r");
        let mut conn = self.connect().await?;
        conn.query_drop(format!("CREATE DATABASE {}", q(&ready)))
            .await
            .map_err(|e| self.err("cannot create the ready-copy schema", e))?;
        let ready_ref = ready.as_str();
        // Owned items: borrowed ones trip the compiler's higher-ranked lifetime check here.
        let built = futures_util::stream::iter(tables.to_vec())
            .map(|t| {
                let ready = ready_ref;
                async move {
                    let t = &t;
                    let split = sql::split_create(&t.create, &t.name, ready, &t.name).ok_or_else(|| {
                        Error::new(
                            ErrorKind::Corrupt,
                            format!("the captured CREATE TABLE of {} is not understood", q(&t.name)),
                        )
                    })?;
                    let mut conn = self.connect().await?;
                    self.fill(&mut conn, t, &split, ready, &t.name, schema).await?;
                    let _ = conn.disconnect().await;
                    Ok::<(), Error>(())
                }
            })
            .buffer_unordered(self.parallel)
            .collect::<Vec<_>>()
            .await;
        if let Some(e) = built.into_iter().find_map(|r| r.err()) {
            let _ = conn.query_drop(format!("DROP DATABASE IF EXISTS {}", q(&ready))).await;
            return Err(e);
        }
        let _ = conn.disconnect().await;
        ctx.progress(format!(
            "built the ready copy `{ready}` of {} tables in {} ms",
            tables.len(),
            t0.elapsed().as_millis()
        ));
        Ok(ready)
    }

    /// Creates `schema`.`name` from `split`, copies the rows of `source`.`t` in, then
    /// builds the indexes: once, sorted, faster than maintaining them row by row.
    pub(super) async fn fill(
        &self,
        conn: &mut Conn,
        t: &TableState,
        split: &sql::SplitCreate,
        schema: &str,
        name: &str,
        source: &str,
    ) -> Result<()> {
        conn.query_drop(&split.create)
            .await
            .map_err(|e| self.err(&format!("cannot create the new {}", q(&t.name)), e))?;
        let cols = t.columns.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
        conn.query_drop(format!(
            "INSERT INTO {} ({cols}) SELECT {cols} FROM {}",
            qt(schema, name),
            qt(source, &t.name)
        ))
        .await
        .map_err(|e| self.err(&format!("cannot copy {} from the snapshot", q(&t.name)), e))?;
        self.add_indexes(conn, t, split, schema, name).await
    }

    pub(super) async fn add_indexes(
        &self,
        conn: &mut Conn,
        t: &TableState,
        split: &sql::SplitCreate,
        schema: &str,
        name: &str,
    ) -> Result<()> {
        if split.indexes.is_empty() {
            return Ok(());
        }
        let adds = split.indexes.iter().map(|x| format!("ADD {x}")).collect::<Vec<_>>().join(", ");
        conn.query_drop(format!("ALTER TABLE {} {adds}", qt(schema, name)))
            .await
            .map_err(|e| self.err(&format!("cannot build the indexes of {}", q(&t.name)), e))
    }

    /// The ready copy, when this snapshot still has a whole one.
    pub(super) async fn ready_copy(&self, conn: &mut Conn, st: &State) -> Result<Option<String>> {
        let (Strategy::Fast, Some(ready)) = (st.strategy, &st.ready_schema) else {
            return Ok(None);
        };
        let have: BTreeSet<String> = self.list_tables(conn, ready).await?.into_iter().collect();
        if st.tables.iter().all(|t| have.contains(&t.name)) {
            return Ok(Some(ready.clone()));
        }
        // Taken by an earlier restore (or part-taken by one that was killed; its swap
        // is all or nothing, so what is left is not a whole copy): copy instead.
        conn.query_drop(format!("DROP DATABASE IF EXISTS {}", q(ready)))
            .await
            .map_err(|e| self.err("cannot drop the used ready copy", e))?;
        Ok(None)
    }

    /// Creates `_rollback_new_<i>` for each table and fills it (from the dump, or from
    /// the snapshot schema), then swaps every table in with one atomic RENAME TABLE.
    pub(super) async fn restore_tables(&self, ctx: &Context, part: &Part, st: &State) -> Result<()> {
        let t0 = Instant::now();
        let mut conn = self.connect().await?;
        self.drop_leftovers(&mut conn).await?;
        if !self.database_exists(&mut conn, &self.db).await? {
            return Err(Error::not_found(format!("mysql {}: database `{}` does not exist", self.target, self.db)));
        }
        // What is there now (a listed table may have been dropped since the snapshot).
        let now_tables = self.list_tables(&mut conn, &self.db).await?;
        let mut plans = Vec::new();
        for (i, t) in st.tables.iter().enumerate() {
            let tmp = format!("{TMP_NEW}{i}");
            let split = sql::split_create(&t.create, &t.name, &self.db, &tmp).ok_or_else(|| {
                Error::new(ErrorKind::Corrupt, format!("the captured CREATE TABLE of {} is not understood", q(&t.name)))
            })?;
            plans.push((i, t.clone(), tmp, split));
        }
        let ready = self.ready_copy(&mut conn, st).await?;
        let loaded = match &ready {
            Some(r) => {
                ctx.progress(format!("taking the ready copy `{r}`: no rows to copy"));
                Vec::new()
            }
            None => {
                futures_util::stream::iter(plans.clone())
                    .map(|(_, t, tmp, split)| async move {
                        let mut conn = self.connect().await?;
                        let t1 = Instant::now();
                        match st.strategy {
                            Strategy::Dump => {
                                conn.query_drop(&split.create)
                                    .await
                                    .map_err(|e| self.err(&format!("cannot create the new {}", q(&t.name)), e))?;
                                self.load_dump(ctx, &mut conn, part, &t, &tmp).await?;
                                self.add_indexes(&mut conn, &t, &split, &self.db, &tmp).await?;
                            }
                            Strategy::Fast => {
                                let schema = st.snapshot_schema.as_deref().unwrap_or_default();
                                self.fill(&mut conn, &t, &split, &self.db, &tmp, schema).await?;
                            }
                        }
                        ctx.progress(format!(
                            "loaded {} ({} rows) in {} ms",
                            q(&t.name),
                            t.rows,
                            t1.elapsed().as_millis()
                        ));
                        Ok::<(), Error>(())
                    })
                    .buffer_unordered(self.parallel)
                    .collect::<Vec<_>>()
                    .await
            }
        };
        if let Some(e) = loaded.into_iter().find_map(|r| r.err()) {
            let _ = self.drop_leftovers(&mut conn).await;
            return Err(e);
        }
        // The swap: every table at once, or none.
        let wanted: BTreeSet<&str> = st.tables.iter().map(|t| t.name.as_str()).collect();
        let mut renames = Vec::new();
        let mut old = 0usize;
        for t in &now_tables {
            // Whole-database scope: tables created since the snapshot go too.
            if wanted.contains(t.as_str()) || !st.scoped {
                renames.push(format!("{} TO {}", qt(&self.db, t), qt(&self.db, &format!("{TMP_OLD}{old}"))));
                old += 1;
            }
        }
        // A view that took a table's place goes aside in the same RENAME (a whole-database
        // safety snapshot keeps it; a scoped restore was refused at preflight).
        self.refuse_views_in_the_way(&mut conn, st).await?;
        for v in self.views_in_the_way(&mut conn, st).await? {
            renames.push(format!("{} TO {}", qt(&self.db, &v), qt(&self.db, &format!("{TMP_OLD}{old}"))));
            old += 1;
        }
        for (_, t, tmp, _) in &plans {
            let from = match &ready {
                Some(r) => qt(r, &t.name),
                None => qt(&self.db, tmp),
            };
            renames.push(format!("{from} TO {}", qt(&self.db, &t.name)));
        }
        let t_swap = Instant::now();
        conn.query_drop(format!("RENAME TABLE {}", renames.join(", ")))
            .await
            .map_err(|e| self.err("the atomic RENAME TABLE swap failed (nothing was swapped)", e))?;
        crate::failpoint::hit("mysql-swapped");
        let swap_ms = t_swap.elapsed().as_millis();
        // The old tables go first: they still hold the foreign key and trigger names
        // (both unique per database), and their triggers go with them.
        self.drop_leftovers(&mut conn).await?;
        self.create_triggers(&mut conn, &st.triggers).await?;
        for (_, t, _, split) in &plans {
            if !split.foreign_keys.is_empty() {
                let adds = split.foreign_keys.iter().map(|x| format!("ADD {x}")).collect::<Vec<_>>().join(", ");
                conn.query_drop(format!("ALTER TABLE {} {adds}", qt(&self.db, &t.name)))
                    .await
                    .map_err(|e| self.err(&format!("cannot restore the foreign keys of {}", q(&t.name)), e))?;
            }
        }
        if let Some(r) = &ready {
            // Empty now; a later restore of this snapshot copies from the snapshot schema.
            conn.query_drop(format!("DROP DATABASE IF EXISTS {}", q(r)))
                .await
                .map_err(|e| self.err("cannot drop the emptied ready-copy schema", e))?;
        }
        ctx.progress(format!(
            "restored {} tables of {} in {} ms (atomic swap: {swap_ms} ms)",
            st.tables.len(),
            self.db,
            t0.elapsed().as_millis()
        ));
        Ok(())
    }

    /// Loads one table's dump, hashing the bytes as they go: a damaged artifact fails
    /// the load before anything is swapped in.
    pub(super) async fn load_dump(
        &self,
        ctx: &Context,
        conn: &mut Conn,
        part: &Part,
        t: &TableState,
        tmp: &str,
    ) -> Result<()> {
        let name = t.artifact.as_deref().unwrap_or_default();
        let art = part
            .artifact(name)
            .ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("mysql snapshot has no `{name}`")))?
            .clone();
        let path = ctx.store.artifact_path(&art)?;
        let (targets, set) = load_targets(t);
        let seen: Arc<Mutex<Option<(String, u64)>>> = Arc::default();
        let mut loaded = false;
        if self.load_data {
            let file = tokio::fs::File::open(&path).await.map_err(|e| {
                Error::new(ErrorKind::Corrupt, format!("artifact `{name}` is missing from the store")).with_source(e)
            })?;
            let slot = seen.clone();
            let stream = futures_util::stream::unfold(Some((file, Sha256::new(), 0u64)), move |st| {
                let slot = slot.clone();
                async move {
                    let (mut f, mut h, n) = st?;
                    let mut buf = vec![0u8; CHUNK];
                    match tokio::io::AsyncReadExt::read(&mut f, &mut buf).await {
                        Ok(0) => {
                            if let Ok(mut s) = slot.lock() {
                                *s = Some((hex::encode(h.finalize()), n));
                            }
                            None
                        }
                        Ok(k) => {
                            buf.truncate(k);
                            h.update(&buf);
                            Some((Ok(Bytes::from(buf)), Some((f, h, n + k as u64))))
                        }
                        Err(e) => Some((Err(e), None)),
                    }
                }
            });
            conn.set_infile_handler(async move { Ok(stream.boxed()) });
            let load = format!(
                "LOAD DATA LOCAL INFILE 'rollback' INTO TABLE {} CHARACTER SET binary \
                 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({targets}){set}",
                qt(&self.db, tmp)
            );
            match conn.query_drop(load).await {
                Ok(()) => loaded = true,
                // Local infile disabled on the server (or client): fall back to INSERTs.
                Err(mysql_async::Error::Server(e)) if matches!(e.code, 1148 | 3948 | 4166) => {
                    tracing::info!(component = %ctx.component, "LOAD DATA LOCAL is refused by the server; using multi-row INSERTs");
                }
                Err(e) => return Err(self.err(&format!("cannot load {}", q(&t.name)), e)),
            }
        }
        if !loaded {
            *seen.lock().map_err(|_| Error::unexpected("poisoned"))? =
                Some(self.insert_rows(conn, &path, t, tmp).await?);
        }
        let got = seen.lock().map_err(|_| Error::unexpected("poisoned"))?.clone();
        match got {
            Some((sha, size)) if sha == art.sha256 && size == art.size => Ok(()),
            _ => Err(Error::new(
                ErrorKind::Corrupt,
                format!("artifact `{name}` fails its checksum; refusing to use it (nothing was swapped in)"),
            )),
        }
    }

    /// The INSERT path: multi-row prepared INSERTs of `INSERT_ROWS` rows. Returns the
    /// file's (sha256, size).
    pub(super) async fn insert_rows(
        &self,
        conn: &mut Conn,
        path: &std::path::Path,
        t: &TableState,
        tmp: &str,
    ) -> Result<(String, u64)> {
        use tokio::io::AsyncBufReadExt;
        let ncols = t.columns.len();
        let per = INSERT_ROWS.min(60_000 / ncols.max(1)).max(1);
        let cols = t.columns.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
        let one = value_marks(t);
        let stmt_for =
            |n: usize| format!("INSERT INTO {} ({cols}) VALUES {}", qt(&self.db, tmp), vec![one.as_str(); n].join(","));
        let full = conn.prep(stmt_for(per)).await.map_err(|e| self.err("cannot prepare the INSERT", e))?;
        let f = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::new(ErrorKind::Corrupt, "a data artifact is missing").with_source(e))?;
        let mut r = tokio::io::BufReader::with_capacity(CHUNK, f);
        let mut h = Sha256::new();
        let mut size = 0u64;
        let mut line = Vec::new();
        let mut params: Vec<Value> = Vec::with_capacity(per * ncols);
        let mut rows = 0usize;
        loop {
            line.clear();
            let n = r.read_until(b'\n', &mut line).await.map_err(Error::from)?;
            if n == 0 {
                break;
            }
            h.update(&line);
            size += n as u64;
            let body = line.strip_suffix(b"\n").unwrap_or(&line);
            let vals = sql::parse_line(body, ncols)
                .ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("the data of {} is damaged", q(&t.name))))?;
            params.extend(vals.into_iter().map(|v| v.map(Value::Bytes).unwrap_or(Value::NULL)));
            rows += 1;
            if rows == per {
                conn.exec_drop(&full, std::mem::take(&mut params))
                    .await
                    .map_err(|e| self.err(&format!("cannot insert into {}", q(&t.name)), e))?;
                rows = 0;
            }
        }
        if rows > 0 {
            conn.exec_drop(stmt_for(rows), params)
                .await
                .map_err(|e| self.err(&format!("cannot insert into {}", q(&t.name)), e))?;
        }
        Ok((hex::encode(h.finalize()), size))
    }
}
