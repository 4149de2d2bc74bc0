//! The stack: config + drivers + store. The one entry point the CLI and the
//! bindings use.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::config::StackConfig;
use crate::decision::{assess, Assessment, Symptoms};
use crate::driver::{Context, Drift, DynDriver};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, EventCallback, EventKind, EventSink};
use crate::exec::{self, CancelToken, Executor, RollbackOptions};
use crate::health::HealthResult;
use crate::plan::{self, Action, Plan, Scope};
use crate::record::{Record, RecordKind, Status, StepStatus};
use crate::registry::{DriverEnv, Registry};
use crate::snapshot::{new_id, Part, Snapshot, SnapshotManifest};
use crate::store::Store;

/// A loaded stack, cheap to clone and share across threads.
#[derive(Clone, Debug)]
pub struct Stack {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: StackConfig,
    store: Store,
    drivers: BTreeMap<String, DynDriver>,
}

/// Options of a snapshot.
#[derive(Clone, Default)]
pub struct SnapshotOptions {
    /// Operator's label.
    pub label: Option<String>,
    /// Only these components (all when empty).
    pub components: Vec<String>,
    /// Receives events.
    pub on_event: Option<EventCallback>,
}

/// The result of `verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Snapshot compared with.
    pub snapshot_id: String,
    /// Every component equal.
    pub ok: bool,
    /// Per component.
    pub components: BTreeMap<String, Drift>,
}

/// The result of `check`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// Everything reachable.
    pub ok: bool,
    /// Per component: reachable, and what was seen.
    pub components: BTreeMap<String, ComponentCheck>,
    /// Newest snapshot and its age.
    pub newest_snapshot: Option<(String, u64)>,
    /// Newest drill and its age (seconds).
    pub newest_drill: Option<(String, u64)>,
    /// Rollbacks left unfinished (resume them).
    pub unfinished_rollbacks: Vec<String>,
    /// What an operator should fix that does not stop a rollback (a store readable
    /// by other users).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// One component's line of `check`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentCheck {
    /// Reachable.
    pub ok: bool,
    /// What the driver saw, or the error.
    pub detail: String,
}

/// The result of `gc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GcReport {
    /// Snapshots removed.
    pub removed: Vec<String>,
    /// Snapshots kept.
    pub kept: Vec<String>,
    /// Artifacts freed.
    pub freed_files: usize,
    /// Bytes freed.
    pub freed_bytes: u64,
}

impl Stack {
    /// Loads `rollback.toml` with the default drivers.
    pub fn load(path: impl AsRef<Path>) -> Result<Stack> {
        Stack::new(StackConfig::load(path)?, &Registry::with_default_drivers())
    }

    /// Builds a stack from a config and a registry (add your own drivers to it).
    pub fn new(config: StackConfig, registry: &Registry) -> Result<Stack> {
        config.validate()?;
        let env = DriverEnv { base_dir: config.base_dir.clone(), redactor: config.redactor.clone() };
        let mut drivers = BTreeMap::new();
        for c in &config.components {
            let d = registry.build(c, &env).map_err(|e| e.redacted(&config.redactor))?;
            drivers.insert(c.name.clone(), Arc::new(crate::driver::Named(d)) as DynDriver);
        }
        let store = Store::open(&config.store_path)?;
        Ok(Stack { inner: Arc::new(Inner { config, store, drivers }) })
    }

    /// The config.
    pub fn config(&self) -> &StackConfig {
        &self.inner.config
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The driver of a component.
    pub fn driver(&self, component: &str) -> Result<DynDriver> {
        self.inner.drivers.get(component).cloned().ok_or_else(|| {
            Error::not_found(format!(
                "no component named `{component}` (components: {})",
                self.inner.drivers.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    pub(crate) fn context(&self, component: &str, snapshot_id: &str) -> Context {
        let mut c = Context::new(component, self.inner.store.clone(), self.inner.config.base_dir.clone());
        c.redactor = self.inner.config.redactor.clone();
        c.snapshot_id = snapshot_id.to_string();
        c
    }

    pub(crate) fn rto_for(&self, scope: &Scope) -> Duration {
        let r = &self.inner.config.rto;
        match scope {
            Scope::Complete => r.complete,
            Scope::Phase { .. } => r.phase,
            Scope::Component { .. } => r.component,
        }
    }

    fn redact(&self, e: Error) -> Error {
        e.redacted(&self.inner.config.redactor)
    }

    /// Applies the decision matrix with this stack's thresholds.
    pub fn assess(&self, s: &Symptoms) -> Result<Assessment> {
        assess(s, &self.inner.config.decision)
    }

    /// Captures the components (all when `opts.components` is empty).
    pub async fn snapshot(&self, opts: SnapshotOptions) -> Result<SnapshotManifest> {
        let names = if opts.components.is_empty() {
            self.inner.config.components.iter().map(|c| c.name.clone()).collect()
        } else {
            for c in &opts.components {
                self.inner.config.component(c)?;
            }
            plan::dedup(&opts.components)
        };
        if let Some(l) = &opts.label {
            if l.len() > 200 || l.chars().any(char::is_control) {
                return Err(Error::config("a label must be at most 200 printable characters"));
            }
        }
        // A snapshot taken while a rollback runs would capture a half-restored stack.
        let _lock = self.inner.store.lock_patiently(true).await?;
        self.capture(opts.label.clone(), names, None, &EventSink::new(opts.on_event.clone()))
            .await
            .map_err(|e| self.redact(e))
    }

    pub(crate) async fn capture(
        &self,
        label: Option<String>,
        names: Vec<String>,
        safety_for: Option<String>,
        events: &EventSink,
    ) -> Result<SnapshotManifest> {
        let id = new_id();
        let created_at = Utc::now();
        // Before any driver pins something outside the store under this id.
        self.inner.store.begin_capture(&id, &names)?;
        events.emit(Event::new(EventKind::SnapshotStarted, format!("snapshot {id}: {}", names.join(", "))));
        let mut set = JoinSet::new();
        for name in names.iter().cloned() {
            let driver = self.driver(&name)?;
            let mut ctx = self.context(&name, &id);
            ctx.events = events.clone();
            let cfg = self.inner.config.component(&name)?.clone();
            ctx.safety = safety_for.is_some();
            // A capture is bounded like a step: a hung one would otherwise hold the
            // store lock (shared) for ever, and every rollback would exit 3.
            let limit = cfg.timeout.unwrap_or(exec::DEFAULT_STEP_TIMEOUT);
            set.spawn(async move {
                let t = Instant::now();
                let span = tracing::info_span!("capture", component = %name);
                let r = match tokio::time::timeout(limit, tracing::Instrument::instrument(driver.capture(&ctx), span))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(Error::new(
                        ErrorKind::Timeout,
                        format!("capture did not finish within {}", humantime::format_duration(limit)),
                    )),
                };
                let ms = t.elapsed().as_millis() as u64;
                // A snapshot records whether the stack was healthy, for `last-good`. A
                // safety snapshot is never last-good, and is taken inside a rollback,
                // its writers fenced: probing there would only make the fence window
                // longer and run the checks' commands against a stack half put back.
                let health = if r.is_ok() && !cfg.health.is_empty() && !ctx.safety {
                    let mut v = Vec::new();
                    for h in &cfg.health {
                        v.push(h.probe(&ctx.base_dir).await);
                    }
                    Some(v)
                } else {
                    None
                };
                (name, cfg.phase, driver.name().to_string(), r, ms, health)
            });
        }
        let mut parts = Vec::new();
        let mut health: BTreeMap<String, Vec<HealthResult>> = BTreeMap::new();
        let mut first_err = None;
        while let Some(j) = set.join_next().await {
            let (name, phase, driver, r, ms, h) =
                j.map_err(|e| Error::unexpected("capture task failed").with_source(e))?;
            match r {
                Ok(c) => {
                    crate::failpoint::hit(&format!("part-captured:{name}"));
                    let mut ev = Event::new(EventKind::PartCaptured, format!("{name}: captured in {ms} ms"));
                    ev.component = Some(name.clone());
                    ev.duration_ms = Some(ms);
                    events.emit(ev);
                    parts.push(Part {
                        component: name.clone(),
                        driver,
                        phase,
                        state: c.state,
                        artifacts: c.artifacts,
                        capture_ms: ms,
                    });
                    if let Some(h) = h {
                        // Check descriptions and details may quote URLs, argv or stderr.
                        health.insert(name, h.into_iter().map(|r| self.redact_health(r)).collect());
                    }
                }
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e.with_component(&name));
                    }
                }
            }
        }
        if let Some(e) = first_err {
            // No manifest will name the parts that did succeed: free what they pinned
            // outside the store (tags, server-side copies), or every failed snapshot
            // would leave a database copy behind.
            for p in &parts {
                if let Ok(d) = self.driver(&p.component) {
                    if let Err(re) = d.release(&self.context(&p.component, &id), p).await {
                        tracing::warn!(component = %p.component, error = %re, "cannot release a part of a failed snapshot");
                    }
                }
            }
            // The failed parts too (a copy made before a timeout); the note goes only
            // once all of it is released, or the next gc tries again.
            let note = crate::store::UnfinishedCapture { id: id.clone(), components: names, started_at: created_at };
            if self.release_unfinished_capture(&note).await {
                self.inner.store.end_capture(&id)?;
            }
            return Err(e);
        }
        parts.sort_by(|a, b| a.phase.cmp(&b.phase).then(a.component.cmp(&b.component)));
        let healthy = if health.is_empty() { None } else { Some(health.values().flatten().all(|r| r.ok)) };
        let m = SnapshotManifest { format: 1, id, label, created_at, healthy, health, safety_for, parts };
        self.inner.store.write_snapshot(&m)?;
        crate::failpoint::hit("snapshot-written");
        self.inner.store.end_capture(&m.id)?;
        tracing::info!(snapshot = %m.id, parts = m.parts.len(), "snapshot written");
        Ok(m)
    }

    /// Releases what captures killed before their manifest was written pinned
    /// outside the store (tags, database copies), found by their snapshot ids. The
    /// caller holds the exclusive lock, so none of them is still running. Returns
    /// the ids still pending (a driver could not release: the next call retries).
    pub(crate) async fn release_unfinished_captures(&self) -> Result<Vec<String>> {
        let mut pending = Vec::new();
        for c in self.inner.store.unfinished_captures() {
            // Killed after its manifest was written: a finished snapshot, whose pins
            // are its own. Only the note is left over.
            let finished = self.inner.store.has_snapshot(&c.id);
            if finished || self.release_unfinished_capture(&c).await {
                if !finished {
                    tracing::info!(snapshot = %c.id, "released what an interrupted capture pinned");
                }
                self.inner.store.end_capture(&c.id)?;
            } else {
                pending.push(c.id);
            }
        }
        Ok(pending)
    }

    /// [`Stack::release_unfinished_captures`] within 10 s, before a rollback or resume:
    /// an unreachable server must not hold up the rollback that an outage calls for.
    /// What is not released by then stays noted for the next one, or `gc`.
    async fn release_some_unfinished_captures(&self) {
        match tokio::time::timeout(Duration::from_secs(10), self.release_unfinished_captures()).await {
            Ok(Ok(pending)) if pending.is_empty() => {}
            Ok(Ok(pending)) => tracing::warn!(?pending, "interrupted captures still pin things; `rollback gc` retries"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot release what interrupted captures pinned; `rollback gc` retries")
            }
            Err(_) => {
                tracing::warn!("releasing what interrupted captures pinned takes long; `rollback gc` finishes it")
            }
        }
    }

    /// Asks each component's driver to release what a capture of `c.id` pinned;
    /// true when all did.
    async fn release_unfinished_capture(&self, c: &crate::store::UnfinishedCapture) -> bool {
        let mut all = true;
        for name in &c.components {
            // A component since removed from the config: nothing here can free it.
            let Ok(d) = self.driver(name) else {
                tracing::warn!(component = %name, snapshot = %c.id, "not in the config any more: what its capture pinned stays");
                continue;
            };
            let r = tokio::time::timeout(Duration::from_secs(60), d.release_unfinished(&self.context(name, &c.id)))
                .await
                .unwrap_or_else(|_| Err(Error::new(ErrorKind::Timeout, "no answer within 60 s")));
            if let Err(e) = r {
                tracing::warn!(component = %name, snapshot = %c.id, error = %self.redact(e), "cannot release what an interrupted capture pinned");
                all = false;
            }
        }
        all
    }

    /// Every snapshot, oldest first.
    pub fn list(&self) -> Result<Vec<SnapshotManifest>> {
        self.inner.store.list_snapshots()
    }

    /// Resolves an id, prefix, `latest` or `last-good`.
    pub fn resolve(&self, reference: &str) -> Result<SnapshotManifest> {
        self.inner.store.resolve_snapshot(reference)
    }

    /// Resolves the target of a rollback. Like [`Stack::resolve`], but a prefix that
    /// does not reach past the date of the id (`2026`, `20261207`) is refused, naming
    /// the snapshot it would have picked: such a prefix picks a snapshot by accident
    /// (a bare year that happens to match one id), and the rollback changes the stack.
    /// Callers that asked a person to confirm the snapshot pass its full id.
    pub fn resolve_target(&self, reference: &str) -> Result<SnapshotManifest> {
        let snap = self.resolve(reference)?;
        if reference != snap.id && is_date_prefix(reference) {
            return Err(Error::config(format!(
                "`{reference}` is only part of a date; it matches snapshot {} ({}taken {}). Give its id, or a \
                 prefix longer than its date",
                snap.id,
                snap.label.as_deref().map(|l| format!("\"{l}\", ")).unwrap_or_default(),
                snap.created_at.format("%Y-%m-%d %H:%M:%S UTC")
            )));
        }
        Ok(snap)
    }

    /// The plan of a rollback to `snapshot` for `scope`; changes nothing.
    pub async fn plan(&self, snapshot: &str, scope: &Scope) -> Result<Plan> {
        let snap = self.resolve(snapshot)?;
        let mut plan = self.build_plan(&snap, scope)?;
        for name in &plan.components {
            let d = self.driver(name)?;
            if d.capability().discard_report {
                let part = snap.part(name).ok_or_else(|| Error::not_found(name.clone()))?;
                let found = d
                    .discards(&self.context(name, &snap.id), part)
                    .await
                    .map_err(|e| self.redact(e.with_component(name)))?;
                plan.discards.extend(found);
            }
        }
        Ok(plan)
    }

    pub(crate) fn build_plan(&self, snap: &SnapshotManifest, scope: &Scope) -> Result<Plan> {
        plan::build(scope, snap, &self.inner.config, &self.inner.drivers, &self.step_history())
    }

    /// Median duration of each (component, action) in recent records: the plan's
    /// prediction. Only the newest records are read: a store keeps every record, and
    /// each plan and rollback comes here (1,500 records made a plan four times slower).
    fn step_history(&self) -> BTreeMap<(String, Action), u64> {
        let mut all: BTreeMap<(String, Action), Vec<u64>> = BTreeMap::new();
        for r in self.inner.store.recent_records(RECENT_RECORDS).unwrap_or_default() {
            for s in r.steps.iter().filter(|s| s.status == StepStatus::Ok) {
                let a = match s.action.as_str() {
                    "stop" => Action::Stop,
                    "restore" => Action::Restore,
                    "start" => Action::Start,
                    "health_gate" => Action::HealthGate,
                    "verify" => Action::Verify,
                    _ => continue,
                };
                all.entry((s.component.clone(), a)).or_default().push(s.duration_ms);
            }
        }
        all.into_iter()
            .map(|(k, mut v)| {
                v.sort_unstable();
                (k, v[v.len() / 2])
            })
            .collect()
    }

    /// Runs preflight for a rollback without changing anything (`--dry-run`).
    pub async fn dry_run(&self, snapshot: &str, scope: &Scope) -> Result<Plan> {
        let snap = self.resolve_target(snapshot)?;
        let plan = self.plan(&snap.id, scope).await?;
        let _lock = self.inner.store.lock_patiently(false).await?;
        Executor::new(self, None, Default::default()).preflight(&snap, &plan).await.map_err(|e| self.redact(e))?;
        Ok(plan)
    }

    /// Rolls back to `snapshot`. Returns the record (also written to the store),
    /// whatever its status; errors only when nothing was changed (bad input,
    /// failed preflight, lock held).
    pub async fn rollback(&self, snapshot: &str, opts: RollbackOptions) -> Result<Record> {
        self.rollback_kind(snapshot, opts, RecordKind::Rollback).await
    }

    async fn rollback_kind(&self, snapshot: &str, opts: RollbackOptions, kind: RecordKind) -> Result<Record> {
        refuse_cancelled(&opts.cancel)?;
        let _lock = self.lock_exclusive().await?;
        let snap = self.resolve_target(snapshot)?;
        self.run_locked(&snap, opts, kind, None).await
    }

    /// Takes the lock for work that changes the stack: refuses while an earlier
    /// rollback is unfinished, and clears what interrupted work left in `tmp/`.
    ///
    /// Why refuse: a new rollback over an unfinished one would strand it for good
    /// (`resume` refuses once a later rollback ran; the components it stopped stay
    /// stopped; its snapshots stay pinned). The operator finishes it or gives it up.
    async fn lock_exclusive(&self) -> Result<crate::store::StoreLock> {
        let lock = self.inner.store.lock_patiently(false).await?;
        if let Some(j) = exec::unfinished_journals(self)?.into_iter().next() {
            let id = j.rollback_id();
            return Err(Error::new(
                ErrorKind::Locked,
                format!(
                    "rollback {id} is unfinished (stopped {}); finish it with `rollback resume {id}`, or give it up \
                     with `rollback abandon {id}` (its record then lists what it left changed)",
                    j.position()
                ),
            ));
        }
        self.inner.store.clean_tmp();
        self.release_some_unfinished_captures().await;
        Ok(lock)
    }

    /// Runs a rollback to `snap`; the caller holds the store lock.
    async fn run_locked(
        &self,
        snap: &SnapshotManifest,
        opts: RollbackOptions,
        kind: RecordKind,
        plan_and_id: Option<(Plan, String)>,
    ) -> Result<Record> {
        let snap = snap.clone();
        let (plan, id) = match plan_and_id {
            Some((p, id)) => (p, Some(id)),
            None => (self.build_plan(&snap, &opts.scope)?, None),
        };
        Executor::new(self, opts.on_event.clone(), opts.cancel.clone())
            .run(snap, plan, &opts, kind, id)
            .await
            .map_err(|e| self.redact(e))
    }

    /// Gives up an unfinished rollback without changing anything: its record
    /// (status `failed`) lists what it had changed and what it left stopped, and new
    /// rollbacks may run again.
    pub async fn abandon(&self, rollback_id: &str) -> Result<Record> {
        let _lock = self.inner.store.lock_patiently(false).await?;
        let j = exec::load_journal(self, rollback_id)?;
        if !exec::unfinished_journals(self)?.iter().any(|u| u.rollback_id() == j.rollback_id()) {
            return Err(Error::config(format!("rollback {rollback_id} is finished; there is nothing to abandon")));
        }
        exec::abandon(self, j).await.map_err(|e| self.redact(e))
    }

    /// Finishes a rollback interrupted by a crash, kill or cancel, from its journal.
    pub async fn resume(&self, rollback_id: &str, on_event: Option<EventCallback>) -> Result<Record> {
        self.resume_with(rollback_id, on_event, CancelToken::default()).await
    }

    /// [`Stack::resume`] that `cancel` stops at the next step boundary, with status
    /// `interrupted` (resume it again later).
    pub async fn resume_with(
        &self,
        rollback_id: &str,
        on_event: Option<EventCallback>,
        cancel: CancelToken,
    ) -> Result<Record> {
        let _lock = self.inner.store.lock_patiently(false).await?;
        self.inner.store.clean_tmp();
        // A safety snapshot the killed run was taking is retaken under a new id.
        self.release_some_unfinished_captures().await;
        let id = if rollback_id == "latest" {
            exec::unfinished(self)?
                .into_iter()
                .map(|(id, _, _)| id)
                .max()
                .ok_or_else(|| Error::not_found("no unfinished rollback to resume"))?
        } else if let Ok(r) = self.inner.store.load_record(rollback_id) {
            r.rollback_id
        } else {
            rollback_id.to_string()
        };
        let j = exec::load_journal(self, &id)?;
        Executor::new(self, on_event, cancel).resume(j).await.map_err(|e| self.redact(e))
    }

    /// Compares the current state with a snapshot.
    pub async fn verify(&self, snapshot: &str, components: &[String]) -> Result<Verification> {
        let snap = self.resolve(snapshot)?;
        let names: Vec<String> = if components.is_empty() {
            snap.parts.iter().map(|p| p.component.clone()).collect()
        } else {
            components.to_vec()
        };
        let mut set = JoinSet::new();
        for n in names {
            let part = snap
                .parts
                .iter()
                .find(|p| p.component == n)
                .cloned()
                .ok_or_else(|| Error::config(format!("snapshot {} has no component `{n}`", snap.id)))?;
            let d = self.driver(&n)?;
            let ctx = self.context(&n, &snap.id);
            set.spawn(async move {
                let r = d.verify(&ctx, &part).await.map_err(|e| e.with_component(&n));
                (n, r)
            });
        }
        let mut out = BTreeMap::new();
        while let Some(j) = set.join_next().await {
            let (n, r) = j.map_err(|e| Error::unexpected("verify task failed").with_source(e))?;
            out.insert(n, r.map_err(|e| self.redact(e))?);
        }
        Ok(Verification { snapshot_id: snap.id, ok: out.values().all(|d| d.ok), components: out })
    }

    /// Rehearsal: snapshot, perturb, roll back, verify; the record says how long.
    pub async fn drill(&self, opts: RollbackOptions) -> Result<Record> {
        let names: Vec<String> = match &opts.scope {
            Scope::Complete => self.inner.config.components.iter().map(|c| c.name.clone()).collect(),
            Scope::Phase { phases } => self
                .inner
                .config
                .components
                .iter()
                .filter(|c| phases.contains(&c.phase))
                .map(|c| c.name.clone())
                .collect(),
            Scope::Component { components } => plan::dedup(components),
        };
        if names.is_empty() {
            return Err(Error::config("the drill's scope selects no component"));
        }
        for n in &names {
            self.inner.config.component(n)?;
        }
        refuse_cancelled(&opts.cancel)?;
        // One exclusive lock for the whole cycle: nothing may start between the
        // perturbation and the rollback that undoes it.
        let _lock = self.lock_exclusive().await?;
        let t = Instant::now();
        let events = EventSink::new(opts.on_event.clone());
        let snap =
            self.capture(Some("drill".into()), names.clone(), None, &events).await.map_err(|e| self.redact(e))?;
        let snapshot_ms = t.elapsed().as_millis();
        let mut notes = vec![format!("drill snapshot {} took {snapshot_ms} ms", snap.id)];
        // The journal comes before the perturbation: a drill killed after perturbing
        // is then an unfinished rollback to the drill snapshot, which `check` lists,
        // `history` shows and `resume` finishes.
        let plan = self.build_plan(&snap, &opts.scope)?;
        let rollback_id = new_id();
        let mut j =
            exec::Journal::new(rollback_id.clone(), RecordKind::Drill, &snap, plan.clone(), &opts, self, Utc::now());
        j.push_note(format!("drill perturbation of {} started; `rollback resume` puts it back", names.join(", ")));
        j.save(&self.inner.store)?;
        crate::failpoint::hit("drill-journaled");
        for n in &names {
            let d = self.driver(n)?;
            if d.capability().perturb {
                // A failed perturbation is noted; the rollback below still puts
                // everything back to the drill snapshot.
                match d.perturb(&self.context(n, &snap.id)).await {
                    Ok(what) => notes.push(format!("perturbed {n}: {what}")),
                    Err(e) => notes.push(format!("could not perturb {n}: {}", self.redact(e))),
                }
            } else {
                notes.push(format!("{n}: driver `{}` has no drill perturbation; restored in place", d.name()));
            }
        }
        crate::failpoint::hit("drill-perturbed");
        let mut rec = self.run_locked(&snap, opts, RecordKind::Drill, Some((plan, rollback_id))).await?;
        rec.notes.splice(0..0, notes);
        self.inner.store.write_record(&rec)?;
        Ok(rec)
    }

    /// Probes each component's health checks once (all components when
    /// `components` is empty). Check descriptions and details are redacted: they may
    /// quote URLs with passwords, argv and stderr.
    pub async fn health(&self, components: &[String]) -> Result<BTreeMap<String, Vec<HealthResult>>> {
        let names: Vec<String> = if components.is_empty() {
            self.inner.config.components.iter().map(|c| c.name.clone()).collect()
        } else {
            plan::dedup(components)
        };
        let mut out = BTreeMap::new();
        for n in names {
            let c = self.inner.config.component(&n)?;
            let mut results = Vec::new();
            for h in &c.health {
                results.push(self.redact_health(h.probe(&self.inner.config.base_dir).await));
            }
            out.insert(n, results);
        }
        Ok(out)
    }

    fn redact_health(&self, mut r: HealthResult) -> HealthResult {
        let redactor = &self.inner.config.redactor;
        r.check = redactor.redact(&r.check);
        r.detail = redactor.redact(&r.detail);
        r
    }

    /// Past records, oldest first. A rollback or drill that was killed before it
    /// could write a record is listed too, as `interrupted`, with the command that
    /// finishes it — unless a rollback is running now (it may be that one).
    pub fn history(&self) -> Result<Vec<Record>> {
        let mut all = self.inner.store.list_records()?;
        // Held exclusively by a running rollback: its journal is not a crash.
        let Ok(_probe) = self.inner.store.lock_shared() else { return Ok(all) };
        for j in exec::unfinished_journals(self)? {
            if all.iter().any(|r| r.rollback_id == j.rollback_id()) {
                continue;
            }
            let mut r = exec::record_of(&j, Status::Interrupted);
            r.completion_time = r.start_time;
            r.duration_ms = 0;
            r.error = Some(format!(
                "interrupted {} with no record (the process was killed); `rollback resume {}` finishes it",
                j.position(),
                j.rollback_id()
            ));
            all.push(r);
        }
        all.sort_by(|a, b| a.start_time.cmp(&b.start_time).then(a.rollback_id.cmp(&b.rollback_id)));
        Ok(all)
    }

    /// One record by id, prefix, `latest`, or path.
    pub fn record(&self, reference: &str) -> Result<Record> {
        self.inner.store.load_record(reference)
    }

    /// Preflight of the stack: every driver reachable, age of the newest snapshot and drill.
    pub async fn check(&self) -> Result<CheckReport> {
        let mut components = BTreeMap::new();
        for c in &self.inner.config.components {
            let d = self.driver(&c.name)?;
            let ctx = self.context(&c.name, "");
            let r = tokio::time::timeout(Duration::from_secs(15), d.check(&ctx))
                .await
                .unwrap_or_else(|_| Err(Error::new(ErrorKind::Timeout, "no answer within 15 s")));
            components.insert(
                c.name.clone(),
                match r {
                    Ok(detail) => ComponentCheck { ok: true, detail },
                    Err(e) => ComponentCheck { ok: false, detail: self.redact(e.with_component(&c.name)).to_string() },
                },
            );
        }
        let now = Utc::now();
        let age = |t: chrono::DateTime<Utc>| (now - t).num_seconds().max(0) as u64;
        let newest_snapshot =
            self.list()?.into_iter().rfind(|s| s.safety_for.is_none()).map(|s| (s.id.clone(), age(s.created_at)));
        let newest_drill = self
            .history()?
            .into_iter()
            .rfind(|r| r.kind == RecordKind::Drill)
            .map(|r| (r.rollback_id.clone(), age(r.completion_time)));
        let unfinished_rollbacks = exec::unfinished(self)?.into_iter().map(|(id, _, _)| id).collect();
        let mut warnings = self.inner.store.permission_warnings(5);
        // `check` takes no lock: such a capture may still be running.
        for c in self.inner.store.unfinished_captures() {
            if !self.inner.store.has_snapshot(&c.id) {
                warnings.push(format!(
                    "snapshot {} of {} began {} s ago and has no manifest: still running, or killed; \
                     `rollback gc` releases what a killed one pinned outside the store",
                    c.id,
                    c.components.join(", "),
                    age(c.started_at)
                ));
            }
        }
        Ok(CheckReport {
            ok: components.values().all(|c| c.ok),
            components,
            newest_snapshot,
            newest_drill,
            unfinished_rollbacks,
            warnings,
        })
    }

    /// Retention: removes snapshots beyond the newest `keep` and older than `max_age`
    /// (both, when both are given). Never removes the newest snapshot, the last good
    /// one, nor one an unfinished rollback uses.
    ///
    /// Safety snapshots follow the same limits, counted among themselves: with
    /// `keep = N` the safety snapshots of the newest N rollbacks stay.
    ///
    /// A snapshot is forgotten before what it pinned is released: its manifest moves
    /// to `gc/` (so no rollback can pick a half-released snapshot), then tags and
    /// server-side copies are released, then the entry goes. A gc killed in between
    /// is finished by the next one.
    pub async fn gc(&self, keep: Option<usize>, max_age: Option<Duration>) -> Result<GcReport> {
        let _lock = self.inner.store.lock_patiently(false).await?;
        self.inner.store.clean_tmp();
        self.finish_releases().await?;
        self.release_unfinished_captures().await?;
        let mut in_use: std::collections::BTreeSet<String> = Default::default();
        for (_, snap, safety) in exec::unfinished(self)? {
            in_use.insert(snap);
            in_use.extend(safety);
        }
        let mut snaps = self.list()?;
        snaps.reverse(); // newest first
        let now = Utc::now();
        let last_good = snaps.iter().find(|s| s.safety_for.is_none() && s.healthy == Some(true)).map(|s| s.id.clone());
        let mut removed = Vec::new();
        let mut kept = Vec::new();
        let mut regular_seen = 0usize;
        let mut safety_seen = 0usize;
        for s in snaps {
            let regular = s.safety_for.is_none();
            let seen = if regular { &mut regular_seen } else { &mut safety_seen };
            *seen += 1;
            let beyond_keep = keep.map(|k| *seen > k.max(1));
            let too_old = max_age.map(|m| (now - s.created_at).to_std().unwrap_or_default() > m);
            // Both limits given: a snapshot goes only when it is beyond both.
            let expired = match (beyond_keep, too_old) {
                (Some(a), Some(b)) => a && b,
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => false,
            };
            let protected =
                (regular && regular_seen == 1) || last_good.as_deref() == Some(s.id.as_str()) || in_use.contains(&s.id);
            let remove = expired && !protected;
            if remove {
                self.inner.store.forget_snapshot(&s.id)?;
                crate::failpoint::hit("gc-forgotten");
                self.release_forgotten(&s).await?;
                removed.push(s.id);
            } else {
                kept.push(s.id);
            }
        }
        let (freed_files, freed_bytes) = self.inner.store.sweep_objects()?;
        Ok(GcReport { removed, kept, freed_files, freed_bytes })
    }

    /// Releases what a forgotten snapshot pinned (tags, spare copies), then drops
    /// its entry in `gc/`.
    async fn release_forgotten(&self, s: &SnapshotManifest) -> Result<()> {
        for p in &s.parts {
            if let Ok(d) = self.driver(&p.component) {
                if let Err(e) = d.release(&self.context(&p.component, &s.id), p).await {
                    tracing::warn!(component = %p.component, error = %e, "could not release snapshot resources");
                }
            }
        }
        self.inner.store.drop_forgotten(&s.id)
    }

    /// Finishes the releases of a gc that was killed after forgetting snapshots.
    async fn finish_releases(&self) -> Result<()> {
        for s in self.inner.store.list_forgotten()? {
            tracing::info!(snapshot = %s.id, "finishing the release of a snapshot an interrupted gc forgot");
            self.release_forgotten(&s).await?;
        }
        Ok(())
    }
}

/// How many of the newest records the plan's predictions are drawn from.
const RECENT_RECORDS: usize = 100;

/// Whether a snapshot reference is a prefix that stops within the date of an id
/// (`YYYYMMDD`, the first 8 characters of `20261207T165410123Z-1a2b3c`).
fn is_date_prefix(reference: &str) -> bool {
    reference.len() <= 8 && reference.bytes().all(|b| b.is_ascii_digit())
}

/// A call cancelled before it starts changes nothing: no lock, no safety snapshot,
/// no journal that a later `resume` would carry out.
fn refuse_cancelled(cancel: &CancelToken) -> Result<()> {
    if cancel.is_cancelled() {
        return Err(Error::new(ErrorKind::Cancelled, "cancelled before it started; nothing was changed"));
    }
    Ok(())
}

impl Record {
    /// True when the status is `succeeded`.
    pub fn succeeded(&self) -> bool {
        self.status == Status::Succeeded
    }
}
