//! The executor: preflight, safety snapshot, journaled steps, compensation, record.
//!
//! Before each step the journal is written and fsynced, so a process killed at any
//! point can be finished by `resume` (restores are idempotent: the step in flight is
//! simply run again). The store lock keeps two rollbacks of one stack apart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::decision::Severity;
use crate::driver::{Context, Discard, Drift, FencePlan};
use crate::drivers::{InFlight, IN_FLIGHT};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, EventCallback, EventKind, EventSink};
use crate::notify::{Notification, NotifyOn};
use crate::plan::{Action, Plan, Scope};
use crate::record::{FenceWindow, Record, RecordKind, Status, StepAction, StepRecord, StepStatus};
use crate::snapshot::{Snapshot, SnapshotManifest};
use crate::stack::Stack;

/// Cooperative cancellation, checked at step boundaries.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks the running call to stop at the next step boundary.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether cancel was asked.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Options of a rollback.
#[derive(Clone, Default)]
pub struct RollbackOptions {
    /// Which components.
    pub scope: Scope,
    /// Why (`error_rate`, `latency`...).
    pub trigger: Option<String>,
    /// Severity from `assess`.
    pub severity: Option<Severity>,
    /// Skip the safety snapshot (then discarded changes are lost).
    pub no_safety_snapshot: bool,
    /// Receives events as they happen.
    pub on_event: Option<EventCallback>,
    /// Stops the rollback at the next step boundary.
    pub cancel: CancelToken,
    /// Default deadline of a step (components may set their own `timeout`).
    pub step_timeout: Option<Duration>,
    /// Set by `watch`: the decision that started this rollback, for the record.
    pub watch: Option<crate::watch::WatchDecision>,
}

impl std::fmt::Debug for RollbackOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RollbackOptions")
            .field("scope", &self.scope)
            .field("trigger", &self.trigger)
            .field("no_safety_snapshot", &self.no_safety_snapshot)
            .finish()
    }
}

pub(crate) const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "stage")]
enum Stage {
    Running,
    Compensating { error: String, verify_only: bool },
    Finished { status: Status },
}

/// The write-ahead journal of one rollback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Journal {
    format: u32,
    rollback_id: String,
    kind: RecordKind,
    snapshot_id: String,
    safety_snapshot_id: Option<String>,
    plan: Plan,
    trigger: Option<String>,
    #[serde(default, deserialize_with = "crate::record::lenient_severity")]
    severity: Option<Severity>,
    start_time: DateTime<Utc>,
    rto_target_ms: u64,
    step_timeout_ms: u64,
    /// Index of the step running (or to run next).
    next: usize,
    stage: Stage,
    done: Vec<StepRecord>,
    /// Components whose restore has started: compensation puts these back.
    touched: Vec<String>,
    /// Dependents stopped and not yet started.
    stopped: Vec<String>,
    verification: BTreeMap<String, Drift>,
    discarded: Vec<Discard>,
    notes: Vec<String>,
    resumed: bool,
    /// Discards measured and the safety snapshot taken (journals of earlier builds
    /// took them before the journal was written).
    #[serde(default = "yes")]
    prepared: bool,
    /// Whether `prepare` takes a safety snapshot.
    #[serde(default)]
    safety_wanted: bool,
    /// Write fences planned or raised and not yet lifted, by component. Journaled
    /// before a fence is raised, so `resume` and `abandon` lift what a killed run left.
    #[serde(default)]
    fences: BTreeMap<String, FenceState>,
    /// Fences lifted (or that could not be), for the record.
    #[serde(default)]
    fence_windows: Vec<FenceWindow>,
    /// The watch decision that started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    watch: Option<crate::watch::WatchDecision>,
    /// When each component's restore ended, and where its `log_errors` checks' logs
    /// ended then: its health gate judges only what the restored version wrote.
    #[serde(default)]
    gates: BTreeMap<String, GateStart>,
}

/// What a component's health gate reads from: the end of its restore.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct GateStart {
    at: DateTime<Utc>,
    /// Per health check, in order: where its log ended (`None`: not a log check, or
    /// the file did not exist yet).
    logs: Vec<Option<crate::health::LogMark>>,
}

/// A write fence of one component, as the journal keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FenceState {
    /// What lifting it puts back (see [`FencePlan::Ready`]).
    undo: serde_json::Value,
    /// How it fences, once raised.
    #[serde(default)]
    how: String,
    /// When it was raised; none while only planned.
    #[serde(default)]
    raised_at: Option<DateTime<Utc>>,
}

fn yes() -> bool {
    true
}

impl Journal {
    /// A journal at its first step, nothing done yet.
    pub(crate) fn new(
        rollback_id: String,
        kind: RecordKind,
        snap: &SnapshotManifest,
        plan: Plan,
        opts: &RollbackOptions,
        stack: &Stack,
        start_time: DateTime<Utc>,
    ) -> Journal {
        Journal {
            format: 1,
            rollback_id,
            kind,
            snapshot_id: snap.id.clone(),
            safety_snapshot_id: None,
            rto_target_ms: stack.rto_for(&plan.scope).as_millis() as u64,
            step_timeout_ms: opts.step_timeout.unwrap_or(DEFAULT_STEP_TIMEOUT).as_millis() as u64,
            plan,
            trigger: opts.trigger.clone(),
            severity: opts.severity,
            watch: opts.watch.clone(),
            start_time,
            next: 0,
            stage: Stage::Running,
            done: Vec::new(),
            touched: Vec::new(),
            stopped: Vec::new(),
            verification: BTreeMap::new(),
            discarded: Vec::new(),
            notes: Vec::new(),
            resumed: false,
            prepared: true,
            safety_wanted: false,
            fences: BTreeMap::new(),
            fence_windows: Vec::new(),
            gates: BTreeMap::new(),
        }
    }

    /// Writes the journal durably (aside, fsync, rename, fsync the directory).
    pub(crate) fn save(&self, store: &crate::store::Store) -> Result<()> {
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|e| Error::unexpected("cannot encode journal").with_source(e))?;
        store.write_journal(&self.rollback_id, &bytes)
    }

    pub(crate) fn rollback_id(&self) -> &str {
        &self.rollback_id
    }

    pub(crate) fn push_note(&mut self, note: String) {
        self.notes.push(note);
    }

    pub(crate) fn is_finished(&self) -> bool {
        matches!(self.stage, Stage::Finished { .. })
    }

    /// Where it stands, for a person: "at step 3 of 7 (restore db)".
    pub(crate) fn position(&self) -> String {
        match (&self.stage, self.plan.steps.get(self.next)) {
            (Stage::Running, Some(st)) => format!(
                "at step {} of {} ({} {})",
                self.next + 1,
                self.plan.steps.len(),
                st.action.as_str(),
                st.component
            ),
            (Stage::Running, None) => "after its last step".into(),
            (Stage::Compensating { .. }, _) => "while putting changed components back".into(),
            (Stage::Finished { .. }, _) => "finished".into(),
        }
    }
}

pub(crate) struct Executor<'a> {
    stack: &'a Stack,
    events: EventSink,
    cancel: CancelToken,
    /// Blocking work of the steps run so far (see [`crate::drivers::blocking`]).
    in_flight: InFlight,
    /// Components whose timed-out work was still running when the executor stopped
    /// waiting: compensation leaves them alone rather than race that work.
    still_running: std::sync::Mutex<BTreeSet<String>>,
    /// Where the step running now records the process groups it starts.
    child_log: std::sync::Mutex<Option<std::path::PathBuf>>,
    /// The stack's `[[notify]]` targets.
    notifier: crate::notify::Notifier,
    /// What drivers noted for the record ([`Context::note`]) during the step running now.
    notes: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl<'a> Executor<'a> {
    pub(crate) fn new(stack: &'a Stack, on_event: Option<EventCallback>, cancel: CancelToken) -> Self {
        Executor {
            stack,
            events: EventSink::new(on_event),
            cancel,
            in_flight: InFlight::default(),
            still_running: Default::default(),
            notifier: crate::notify::Notifier::new(stack.config().notify.clone(), stack.config().redactor.clone()),
            child_log: Default::default(),
            notes: Default::default(),
        }
    }

    /// Ends what an earlier, killed run of this rollback's step left running (its
    /// process groups are recorded beside the journal), then records this run's.
    async fn adopt_children(&self, rollback_id: &str) -> Result<()> {
        let log = self.stack.store().root().join("journals").join(format!("{rollback_id}.children"));
        let l2 = log.clone();
        let ended = tokio::task::spawn_blocking(move || crate::process::end_recorded(&l2))
            .await
            .map_err(|e| Error::unexpected("cannot end earlier processes").with_source(e))?;
        if ended > 0 {
            self.emit(Event::new(
                EventKind::Progress,
                format!("ended {ended} process group(s) an interrupted run of this rollback left running"),
            ));
        }
        *self.child_log.lock().unwrap_or_else(|e| e.into_inner()) = Some(log);
        Ok(())
    }

    /// The step's processes ended by themselves: forget them (a daemon a restore
    /// started on purpose must never be ended by a later `resume`).
    fn step_children_done(&self) {
        if let Some(log) = self.child_log.lock().unwrap_or_else(|e| e.into_inner()).as_deref() {
            crate::process::clear_record(log);
        }
    }

    /// Runs a step's future with its blocking work counted; after a timeout, waits
    /// (at most `timeout` again) for that work to end: a thread cannot be stopped.
    async fn counted<T>(
        &self,
        component: &str,
        timeout: Duration,
        fut: impl std::future::Future<Output = Result<T>>,
        on_timeout: impl FnOnce() -> Error,
    ) -> Result<T> {
        match tokio::time::timeout(timeout, IN_FLIGHT.scope(self.in_flight.clone(), fut)).await {
            Ok(r) => r,
            Err(_) => {
                let err = on_timeout();
                if self.in_flight.running() > 0 {
                    self.emit(Event::progress(
                        component,
                        "timed out with work still running on a blocking thread; waiting for it to end",
                    ));
                    if !self.in_flight.wait_idle(timeout).await {
                        tracing::error!(component, "blocking work still running after twice the step timeout");
                        self.still_running.lock().unwrap_or_else(|e| e.into_inner()).insert(component.to_string());
                        return Err(Error::new(
                            err.kind(),
                            format!("{err}; its work was still running {} later", humantime::format_duration(timeout)),
                        ));
                    }
                }
                Err(err)
            }
        }
    }

    fn ctx(&self, component: &str, snapshot_id: &str) -> Context {
        let mut c = self.stack.context(component, snapshot_id);
        c.events = self.events.clone();
        c.child_log = self.child_log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        c.notes = self.notes.clone();
        c
    }

    fn emit(&self, e: Event) {
        self.events.emit(e);
    }

    fn save(&self, j: &Journal) -> Result<()> {
        j.save(self.stack.store())
    }

    /// Preflight: artifacts present and checksummed, drivers' targets ready. Changes nothing.
    pub(crate) async fn preflight(&self, snap: &SnapshotManifest, plan: &Plan) -> Result<()> {
        for name in &plan.components {
            let part = snap.parts.iter().find(|p| &p.component == name).expect("planned from snapshot");
            let store = self.stack.store().clone();
            let arts = part.artifacts.clone();
            tokio::task::spawn_blocking(move || -> Result<()> {
                for a in &arts {
                    store.check_artifact(a)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| Error::unexpected("preflight task failed").with_source(e))?
            .map_err(|e| e.with_component(name))?;
            let ctx = self.ctx(name, &snap.id);
            self.stack.driver(name)?.preflight(&ctx, part).await.map_err(|e| e.with_component(name))?;
        }
        Ok(())
    }

    pub(crate) async fn run(
        &self,
        snap: SnapshotManifest,
        plan: Plan,
        opts: &RollbackOptions,
        kind: RecordKind,
        rollback_id: Option<String>,
    ) -> Result<Record> {
        let start_time = Utc::now();
        let rollback_id = rollback_id.unwrap_or_else(crate::snapshot::new_id);
        self.preflight(&snap, &plan).await?;
        // The journal comes first: the dependents are stopped before the discards are
        // measured and the safety snapshot is taken (see `prepare`), and a crash
        // after a stop must be finished by `resume`, which starts them again.
        let mut j = Journal::new(rollback_id, kind, &snap, plan, opts, self.stack, start_time);
        j.prepared = false;
        j.safety_wanted = !opts.no_safety_snapshot;
        self.save(&j)?;
        self.notify(NotifyOn::Started, &j);
        self.drive(j, snap).await
    }

    /// Once the writers the plan stops are stopped, and before anything is restored:
    /// measures what the restore throws away, then keeps it in the safety snapshot.
    ///
    /// Why after the stops: a write a stopped service made between the safety
    /// snapshot and the restore was acknowledged to its client, yet in neither the
    /// restored state nor the safety snapshot. Stopped first, its last write is in
    /// the safety snapshot.
    async fn prepare(&self, j: &mut Journal, snap: &SnapshotManifest) -> Result<()> {
        let names = j.plan.components.clone();
        let unfenced = self.raise_fences(j, &names, &snap.id).await?;
        let mut discards = Vec::new();
        for name in &j.plan.components {
            let d = self.stack.driver(name)?;
            if d.capability().discard_report {
                let part = snap.part_of(name);
                discards.extend(d.discards(&self.ctx(name, &snap.id), part).await.map_err(|e| e.with_component(name))?);
            }
        }
        let safety_snapshot_id = if j.safety_wanted {
            self.emit(Event::new(EventKind::SafetySnapshot, "taking the safety snapshot"));
            let s = self
                .stack
                .capture(
                    Some(format!("safety before {}", j.rollback_id)),
                    j.plan.components.clone(),
                    Some(j.rollback_id.clone()),
                    &self.events,
                )
                .await
                .map_err(|e| {
                    Error::new(e.kind(), format!("safety snapshot failed: {e}"))
                        .with_component(e.component().unwrap_or("").to_string())
                })?;
            Some(s.id)
        } else {
            None
        };
        if safety_snapshot_id.is_none() {
            discards.extend(self.unkept_states(j, snap).await);
        }
        // A driver may keep what it discards itself (git's stash): only ever more kept.
        for d in &mut discards {
            d.kept_in_safety_snapshot |= safety_snapshot_id.is_some() && d.keepable;
        }
        j.plan.discards = discards.clone();
        j.discarded = discards;
        j.safety_snapshot_id = safety_snapshot_id;
        // A data component whose writers nothing stops: say so, never silently.
        for name in &j.plan.components {
            let writers_stopped = self
                .stack
                .config()
                .components
                .iter()
                .any(|c| c.depends_on.contains(name) && j.stopped.contains(&c.name));
            let fenced = j.fences.contains_key(name);
            if self.stack.driver(name)?.capability().shared_data && !writers_stopped && !fenced {
                let why = unfenced.get(name).map(|r| format!(" nor fenced ({r})")).unwrap_or_default();
                j.notes.push(format!(
                    "writers to `{name}` were not stopped{why} before its safety snapshot: a write made after the \
                     safety snapshot and before the restore is not kept. Declare the service that writes to it as a \
                     component with depends_on = [\"{name}\"] outside the rollback's scope, and it is stopped first"
                ));
            }
        }
        j.prepared = true;
        crate::failpoint::hit("safety-taken");
        Ok(())
    }

    /// Without a safety snapshot, what the restore throws away of components whose
    /// drivers cannot say it themselves (a service's state kept by a `command`, a
    /// container, a pm2 process): their current state, when it differs from the
    /// snapshot. Nothing keeps it, so the record must name it.
    async fn unkept_states(&self, j: &Journal, snap: &SnapshotManifest) -> Vec<Discard> {
        let mut out = Vec::new();
        for name in &j.plan.components {
            let Ok(d) = self.stack.driver(name) else { continue };
            if d.capability().discard_report {
                continue;
            }
            let redactor = &self.stack.config().redactor;
            let (target, changes, unit) = match d.verify(&self.ctx(name, &snap.id), snap.part_of(name)).await {
                Ok(drift) if drift.ok => continue,
                Ok(drift) => {
                    let mut shown: Vec<String> = drift.differences.iter().take(3).map(|x| redactor.redact(x)).collect();
                    if drift.differences.len() > 3 {
                        shown.push(format!("and {} more", drift.differences.len() - 3));
                    }
                    (
                        format!("its state before the rollback ({})", shown.join("; ")),
                        drift.differences.len().max(1) as u64,
                        "differences from the snapshot",
                    )
                }
                Err(e) => (
                    format!("its state before the rollback (could not be compared: {})", e.redacted(redactor)),
                    1,
                    "states not compared",
                ),
            };
            out.push(Discard {
                component: name.clone(),
                target,
                changes,
                unit: unit.into(),
                kept_in_safety_snapshot: false,
                keepable: true,
            });
        }
        out
    }

    /// Raises the write fence of each of `names` whose driver has one, journaling what
    /// lifting it needs before raising it. Returns why each unfenced one was not.
    async fn raise_fences(
        &self,
        j: &mut Journal,
        names: &[String],
        snapshot_id: &str,
    ) -> Result<BTreeMap<String, String>> {
        let mut unfenced = BTreeMap::new();
        for name in names {
            let d = self.stack.driver(name)?;
            if !d.capability().fence {
                continue;
            }
            let ctx = self.ctx(name, snapshot_id);
            if !j.fences.contains_key(name) {
                match d.plan_fence(&ctx).await.map_err(|e| e.with_component(name))? {
                    FencePlan::Ready { undo } => {
                        j.fences.insert(name.clone(), FenceState { undo, how: String::new(), raised_at: None });
                        // Before it is raised: a kill right after leaves a fence that
                        // `resume` or `abandon` knows how to lift.
                        self.save(j)?;
                    }
                    FencePlan::Unavailable { reason } => {
                        unfenced.insert(name.clone(), reason);
                        continue;
                    }
                }
            }
            let undo = j.fences[name].undo.clone();
            let how = d.fence(&ctx, &undo).await.map_err(|e| e.with_component(name))?;
            crate::failpoint::hit("fence-raised");
            if let Some(st) = j.fences.get_mut(name) {
                st.how = how.clone();
                st.raised_at.get_or_insert_with(Utc::now);
            }
            self.save(j)?;
            let mut ev = Event::new(EventKind::FenceRaised, format!("writes to {name} fenced: {how}"));
            ev.component = Some(name.clone());
            self.emit(ev);
        }
        Ok(unfenced)
    }

    /// Verifies a data component right after its restore, while its writers are
    /// still fenced or stopped: what they write once let go is theirs, and would make
    /// a later comparison with the snapshot fail. The `verify` step reports this
    /// result. When this comparison cannot run, the `verify` step compares later.
    async fn verify_before_writers(&self, j: &mut Journal, snap: &SnapshotManifest, component: &str) {
        let Ok(driver) = self.stack.driver(component) else { return };
        if !driver.capability().shared_data {
            return;
        }
        let ctx = self.ctx(component, &snap.id);
        let timeout = self.step_timeout(j, component, Action::Verify);
        let r = self
            .counted(component, timeout, driver.verify(&ctx, snap.part_of(component)), || {
                Error::new(ErrorKind::Timeout, "the comparison did not finish in time")
            })
            .await;
        match r {
            Ok(d) => {
                j.verification.insert(component.to_string(), d);
            }
            Err(e) => {
                tracing::warn!(component, error = %e, "cannot compare right after the restore; the verify step will")
            }
        }
    }

    /// Lifts every fence still up (the end of a rollback, whatever its outcome).
    async fn lift_fences(&self, j: &mut Journal, snapshot_id: &str) {
        for name in j.fences.keys().cloned().collect::<Vec<_>>() {
            lift_fence(self.stack, &self.events, j, &name, snapshot_id).await;
            let _ = self.save(j);
        }
    }

    /// A failed safety snapshot: the dependents stopped for it are started again and
    /// the rollback ends before anything was restored.
    async fn unprepare(&self, mut j: Journal, snap: &SnapshotManifest, e: Error) -> Result<Record> {
        let err = Error::new(e.kind(), format!("{e}; nothing was restored"))
            .with_component(e.component().unwrap_or("").to_string());
        self.start_stopped(&mut j, snap).await;
        if j.done.iter().all(|s| s.status == StepStatus::Ok) {
            // Back as it was: no record, as for a failed preflight.
            let _ = std::fs::remove_file(self.stack.store().journal_path(&j.rollback_id)?);
            if !self.stack.config().notify.is_empty() {
                // `started` went out: say how it ended, though no record is kept.
                let mut r = record_of(&j, Status::Failed);
                r.error = Some(format!("{err}; nothing was changed"));
                self.notifier.send(Notification::of(NotifyOn::Finished, &r, &self.stack_label()));
                for f in self.notifier.flush().await {
                    tracing::warn!(failure = %f, "notification not delivered");
                }
            }
            return Err(err);
        }
        j.stage = Stage::Compensating { error: err.to_string(), verify_only: false };
        let r = self.finish(j, Status::Failed)?;
        Ok(self.announce(NotifyOn::Finished, r).await)
    }

    pub(crate) async fn resume(&self, mut j: Journal) -> Result<Record> {
        if j.is_finished() || final_record(self.stack, &j.rollback_id).is_some() {
            return Err(Error::config(format!("rollback {} already finished; nothing to resume", j.rollback_id)));
        }
        // A rollback finished after this one was interrupted: resuming would undo it.
        if let Some(later) =
            self.stack.store().records_after(&j.rollback_id)?.into_iter().find(|r| {
                r.rollback_id != j.rollback_id && r.start_time > j.start_time && r.status != Status::Interrupted
            })
        {
            return Err(Error::config(format!(
                "rollback {} was interrupted, but rollback {} ran after it ({}); resuming would undo that one. \
                 Start a new rollback instead",
                j.rollback_id,
                later.rollback_id,
                later.status.as_str()
            )));
        }
        if let (Stage::Running, Some(step)) = (&j.stage, j.plan.steps.get(j.next)) {
            if step.action == Action::Restore && !self.stack.driver(&step.component)?.capability().idempotent_restore {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "the restore of `{}` was interrupted and its driver cannot safely run it again",
                        step.component
                    ),
                )
                .with_component(&step.component));
            }
        }
        let snap = self.stack.store().load_snapshot(&j.snapshot_id)?;
        j.resumed = true;
        j.notes.push(format!("resumed at step {} of {}", j.next + 1, j.plan.steps.len()));
        self.save(&j)?;
        // The fences a killed run left up are raised again, by this process: a fence
        // may let only the raising process's sessions write (redis logs them in as a
        // user whose password died with the killed run).
        for (name, st) in j.fences.clone() {
            let ctx = self.ctx(&name, &j.snapshot_id);
            let how = self.stack.driver(&name)?.fence(&ctx, &st.undo).await.map_err(|e| e.with_component(&name))?;
            if let Some(f) = j.fences.get_mut(&name) {
                f.how = how;
                f.raised_at.get_or_insert_with(Utc::now);
            }
        }
        self.save(&j)?;
        self.notify(NotifyOn::Resumed, &j);
        self.drive(j, snap).await
    }

    async fn drive(&self, mut j: Journal, snap: SnapshotManifest) -> Result<Record> {
        self.adopt_children(&j.rollback_id).await?;
        let total = j.plan.steps.len();
        if let Stage::Running = j.stage {
            while j.next < total {
                if self.cancel.is_cancelled() {
                    j.notes.push(format!("interrupted before step {} of {total}", j.next + 1));
                    self.save(&j)?;
                    let r = self.finish_interrupted(j)?;
                    return Ok(self.announce(NotifyOn::Interrupted, r).await);
                }
                let step = j.plan.steps[j.next].clone();
                if step.action != Action::Stop && !j.prepared {
                    if let Err(e) = self.prepare(&mut j, &snap).await {
                        return self.unprepare(j, &snap, e).await;
                    }
                    self.save(&j)?;
                }
                if step.action == Action::Restore && !j.touched.contains(&step.component) {
                    j.touched.push(step.component.clone());
                }
                // The journal names the step before it runs: a crash now resumes here.
                if let Err(e) = self.save(&j) {
                    // Without a journal a crash could not be resumed: stop changing
                    // things and put back what was changed.
                    tracing::error!(error = %e, "cannot write the journal");
                    j.stage =
                        Stage::Compensating { error: format!("cannot write the journal: {e}"), verify_only: false };
                    break;
                }
                let mut ev = Event::new(EventKind::StepStarted, step.description.clone());
                ev.component = Some(step.component.clone());
                ev.action = Some(step.action.into());
                ev.index = Some(j.next);
                ev.total = Some(total);
                self.emit(ev);
                let t = Instant::now();
                let timeout = self.step_timeout(&j, &step.component, step.action);
                let action = step.action;
                let result = self
                    .counted(&step.component, timeout, self.run_step(&mut j, &snap, action, &step.component), || {
                        Error::new(
                            ErrorKind::Timeout,
                            format!(
                                "{} did not finish within {}",
                                action.as_str(),
                                humantime::format_duration(timeout)
                            ),
                        )
                    })
                    .instrument(tracing::info_span!("step", component = %step.component, action = step.action.as_str()))
                    .await
                    .map_err(|e| e.with_component(&step.component).redacted(&self.stack.config().redactor));
                self.step_children_done();
                j.notes.extend(Context::take_notes(&self.notes));
                let ms = t.elapsed().as_millis() as u64;
                let mut ev = Event::new(EventKind::StepFinished, step.description.clone());
                ev.component = Some(step.component.clone());
                ev.action = Some(step.action.into());
                ev.index = Some(j.next);
                ev.total = Some(total);
                ev.duration_ms = Some(ms);
                ev.status = Some(StepStatus::of(result.is_ok()).into());
                if let Err(e) = &result {
                    ev.message = e.to_string();
                }
                self.emit(ev);
                match result {
                    Ok(()) => {
                        j.done.push(StepRecord {
                            component: step.component.clone(),
                            action: step.action.into(),
                            status: StepStatus::Ok,
                            duration_ms: ms,
                            error: None,
                        });
                        if step.action == Action::Stop {
                            j.stopped.push(step.component.clone());
                        }
                        if step.action == Action::Start {
                            j.stopped.retain(|c| c != &step.component);
                        }
                        crate::failpoint::hit("step-done");
                        j.next += 1;
                        if step.action == Action::Restore {
                            if let Ok(c) = self.stack.config().component(&step.component) {
                                let base = &self.stack.config().base_dir;
                                let logs = c.health.iter().map(|h| h.log_mark(base)).collect();
                                j.gates.insert(step.component.clone(), GateStart { at: Utc::now(), logs });
                            }
                            self.verify_before_writers(&mut j, &snap, &step.component).await;
                            if j.fences.contains_key(&step.component) {
                                // The step is journaled as done first: a kill before the
                                // lift leaves a fence for `resume` to lift, never a
                                // restore run again over writes made after the lift.
                                let _ = self.save(&j);
                                lift_fence(self.stack, &self.events, &mut j, &step.component, &snap.id).await;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(component = %step.component, error = %e, "step failed");
                        j.done.push(StepRecord {
                            component: step.component.clone(),
                            action: step.action.into(),
                            status: StepStatus::Failed,
                            duration_ms: ms,
                            error: Some(e.to_string()),
                        });
                        j.next += 1;
                        // A failed verify leaves the components restored (putting the bad
                        // deploy back would not help); anything earlier is compensated.
                        j.stage =
                            Stage::Compensating { error: e.to_string(), verify_only: step.action == Action::Verify };
                        if let Err(we) = self.save(&j) {
                            // Stopping here would leave the components changed so far as
                            // they are: put them back first, and say why `resume` cannot.
                            tracing::error!(error = %we, "cannot write the journal; compensating without it");
                            j.notes.push(format!("the journal could not be written ({we}); compensated without it"));
                        }
                        break;
                    }
                }
            }
        }
        let status = match j.stage.clone() {
            Stage::Running => {
                self.lift_fences(&mut j, &snap.id).await;
                Status::Succeeded
            }
            Stage::Compensating { verify_only: true, .. } => {
                self.start_stopped(&mut j, &snap).await;
                Status::Failed
            }
            Stage::Compensating { .. } => self.compensate(&mut j, &snap).await?,
            Stage::Finished { status } => status,
        };
        let r = self.finish(j, status)?;
        Ok(self.announce(NotifyOn::Finished, r).await)
    }

    /// Sends `event` about the rollback as the journal has it (only if there is a
    /// target: building the summary reads the journal).
    fn notify(&self, event: NotifyOn, j: &Journal) {
        if !self.stack.config().notify.is_empty() {
            self.notifier.send(Notification::of(event, &record_of(j, Status::Interrupted), &self.stack_label()));
        }
    }

    /// Sends `event` about the final record `r`, waits for every notification of
    /// this run, and writes the record again with a note for each not delivered.
    async fn announce(&self, event: NotifyOn, mut r: Record) -> Record {
        if self.stack.config().notify.is_empty() {
            return r;
        }
        self.notifier.send(Notification::of(event, &r, &self.stack_label()));
        let failed = self.notifier.flush().await;
        if !failed.is_empty() {
            r.notes.extend(failed.into_iter().map(|f| format!("notification not delivered: {f}")));
            if let Err(e) = self.stack.store().write_record(&r) {
                tracing::error!(error = %e, "cannot note the undelivered notifications in the record");
            }
        }
        r
    }

    /// The stack, as notifications name it: its config file, or its directory.
    fn stack_label(&self) -> String {
        let c = self.stack.config();
        c.file.as_ref().unwrap_or(&c.base_dir).display().to_string()
    }

    fn step_timeout(&self, j: &Journal, component: &str, action: Action) -> Duration {
        let cfg = self.stack.config().component(component).ok();
        let base = cfg.and_then(|c| c.timeout).unwrap_or(Duration::from_millis(j.step_timeout_ms));
        if action != Action::HealthGate {
            return base;
        }
        // A health gate may legitimately take as long as its checks' timeouts.
        let health: Duration = cfg.map(|c| c.health.iter().map(|h| h.timeout).sum()).unwrap_or_default();
        base.max(health + Duration::from_secs(5))
    }

    async fn run_step(&self, j: &mut Journal, snap: &SnapshotManifest, action: Action, component: &str) -> Result<()> {
        let driver = self.stack.driver(component)?;
        let ctx = self.ctx(component, &snap.id);
        match action {
            Action::Stop => driver.stop(&ctx).await,
            Action::Start => driver.start(&ctx).await,
            Action::Restore => driver.restore(&ctx, snap.part_of(component)).await,
            Action::HealthGate => {
                let c = self.stack.config().component(component)?;
                // The gate judges the version the restore put back, not the one it
                // replaced (whose error lines and beats are why it is rolled back): only
                // what was written since the restore ended counts. A journal of an
                // earlier build has no such mark: the journal's step durations since the
                // restore, summed, put that moment a little late, never early.
                let base = &self.stack.config().base_dir;
                let start = j.gates.get(component).cloned().unwrap_or_else(|| {
                    let since_ms: u64 = j
                        .done
                        .iter()
                        .rposition(|s| s.component == component && s.action == StepAction::Restore)
                        .map(|i| j.done[i..].iter().map(|s| s.duration_ms).sum())
                        .unwrap_or(0);
                    let at = Utc::now() - chrono::Duration::milliseconds(since_ms as i64);
                    GateStart { at, logs: c.health.iter().map(|h| h.log_mark(base)).collect() }
                });
                let restored_at = std::time::SystemTime::from(start.at);
                for (i, h) in c.health.iter().enumerate() {
                    let r = h.wait_after(base, restored_at, start.logs.get(i).copied().flatten()).await;
                    if !r.ok {
                        return Err(Error::new(
                            ErrorKind::VerificationFailed,
                            format!("health check `{}` failed: {}", r.check, r.detail),
                        ));
                    }
                }
                Ok(())
            }
            Action::Verify => {
                // A result here is the comparison made right after the restore (see
                // `verify_before_writers`): only that comparison comes before this step.
                let d = match j.verification.get(component) {
                    Some(d) => d.clone(),
                    None => driver.verify(&ctx, snap.part_of(component)).await?,
                };
                let ok = d.ok;
                let diffs = d.differences.join("; ");
                j.verification.insert(component.to_string(), d);
                if ok {
                    Ok(())
                } else {
                    Err(Error::new(ErrorKind::VerificationFailed, format!("differs from the snapshot: {diffs}")))
                }
            }
        }
    }

    /// Lifts the fences still up, then starts the services the rollback stopped.
    async fn start_stopped(&self, j: &mut Journal, snap: &SnapshotManifest) {
        self.lift_fences(j, &snap.id).await;
        for c in j.stopped.clone() {
            let t = Instant::now();
            let r = match self.stack.driver(&c) {
                Ok(d) => d.start(&self.ctx(&c, &snap.id)).await,
                Err(e) => Err(e),
            };
            self.step_children_done();
            j.done.push(StepRecord {
                component: c.clone(),
                action: StepAction::Start,
                status: StepStatus::of(r.is_ok()),
                duration_ms: t.elapsed().as_millis() as u64,
                error: r.err().map(|e| e.redacted(&self.stack.config().redactor).to_string()),
            });
            j.stopped.retain(|x| x != &c);
            let _ = self.save(j);
        }
    }

    /// Puts every touched component back from the safety snapshot.
    async fn compensate(&self, j: &mut Journal, snap: &SnapshotManifest) -> Result<Status> {
        self.emit(Event::new(EventKind::Compensating, "a step failed; putting changed components back"));
        self.notify(NotifyOn::Compensating, j);
        let Some(safety_id) = j.safety_snapshot_id.clone() else {
            j.notes.push("no safety snapshot: changed components could not be put back".into());
            self.start_stopped(j, snap).await;
            return Ok(Status::Failed);
        };
        let safety = self.stack.store().load_snapshot(&safety_id)?;
        // What a component depends on is put back before it (an upstream file before
        // the reload that reads it); components with no dependency between them are
        // undone in the reverse order of their restores.
        let mut undo: Vec<String> = j.touched.clone();
        undo.reverse();
        for c in crate::plan::dependencies_first(&undo, self.stack.config()) {
            let Some(part) = safety.part(&c) else { continue };
            if let Err(e) = self.fence_for_compensation(j, &c, &safety, snap).await {
                j.notes.push(format!(
                    "`{c}` was put back without a write fence ({}): a write made while it was being put back may be \
                     lost",
                    e.redacted(&self.stack.config().redactor)
                ));
            }
            let t = Instant::now();
            let driver = self.stack.driver(&c)?;
            let ctx = self.ctx(&c, &safety.id);
            let timeout = self.step_timeout(j, &c, Action::Restore);
            let busy = self.still_running.lock().unwrap_or_else(|e| e.into_inner()).contains(&c);
            let r = if busy {
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "not put back: its timed-out restore was still running; once it has ended, put it back \
                         with `rollback rollback {} --component {c}` (the safety snapshot)",
                        safety.id
                    ),
                ))
            } else {
                self.counted(
                    &c,
                    timeout,
                    async {
                        driver.restore(&ctx, part).await?;
                        let d = driver.verify(&ctx, part).await?;
                        if d.ok {
                            Ok(())
                        } else {
                            Err(Error::new(ErrorKind::VerificationFailed, d.differences.join("; ")))
                        }
                    },
                    || {
                        Error::new(
                            ErrorKind::Timeout,
                            format!("compensation did not finish within {}", humantime::format_duration(timeout)),
                        )
                    },
                )
                .await
            };
            self.step_children_done();
            j.done.push(StepRecord {
                component: c.clone(),
                action: StepAction::Compensate,
                status: StepStatus::of(r.is_ok()),
                duration_ms: t.elapsed().as_millis() as u64,
                error: r.err().map(|e| e.redacted(&self.stack.config().redactor).to_string()),
            });
            j.touched.retain(|x| x != &c);
            let _ = self.save(j);
            crate::failpoint::hit("compensated-one");
        }
        self.start_stopped(j, snap).await;
        // From the journal, not a local flag: a resumed compensation must remember
        // the failures before the crash.
        let all_ok = j.done.iter().filter(|s| s.action == StepAction::Compensate).all(|s| s.status == StepStatus::Ok);
        Ok(if all_ok { Status::Compensated } else { Status::Failed })
    }

    /// Before a component whose fence was lifted after its restore is put back from
    /// the safety snapshot: fences it again, and keeps in a snapshot of its own what
    /// its clients wrote since, which putting it back throws away.
    async fn fence_for_compensation(
        &self,
        j: &mut Journal,
        c: &str,
        safety: &SnapshotManifest,
        snap: &SnapshotManifest,
    ) -> Result<()> {
        let driver = self.stack.driver(c)?;
        if !driver.capability().fence || j.fences.contains_key(c) {
            return Ok(());
        }
        let names = [c.to_string()];
        if self.raise_fences(j, &names, &safety.id).await?.contains_key(c) {
            return Ok(());
        }
        if !driver.capability().discard_report {
            return Ok(());
        }
        // Its fence was lifted only after a restore that succeeded, so it held the
        // snapshot's state then: what differs from the snapshot now is what its
        // clients wrote since. (Against the safety snapshot, the count would also
        // hold what the restore itself changed.)
        let mut discards = driver.discards(&self.ctx(c, &snap.id), snap.part_of(c)).await?;
        if discards.iter().all(|d| d.changes == 0) {
            return Ok(());
        }
        let kept = self
            .stack
            .capture(
                Some(format!("before compensating {c} in {}", j.rollback_id)),
                names.to_vec(),
                Some(j.rollback_id.clone()),
                &self.events,
            )
            .await?;
        for d in &mut discards {
            d.target = format!("{} (written after the restore)", d.target);
            d.kept_in_safety_snapshot = true;
        }
        j.notes.push(format!(
            "what was written to `{c}` after its restore and before it was put back is kept in snapshot {}",
            kept.id
        ));
        j.discarded.extend(discards);
        self.save(j)
    }

    fn finish_interrupted(&self, mut j: Journal) -> Result<Record> {
        for (name, st) in &j.fences {
            if st.raised_at.is_some() {
                j.notes.push(format!(
                    "writes to `{name}` stay fenced ({}) until `rollback resume {id}` or `rollback abandon {id}`",
                    st.how,
                    id = j.rollback_id
                ));
            }
        }
        let r = record_of(&j, Status::Interrupted);
        self.stack.store().write_record(&r).map_err(|e| self.unrecorded(&j, Status::Interrupted, e))?;
        let mut e = Event::new(EventKind::Finished, "interrupted; `rollback resume` finishes it");
        e.status = Some(Status::Interrupted.into());
        self.emit(e);
        Ok(r)
    }

    /// The error of a rollback whose record could not be written: what it changed.
    fn unrecorded(&self, j: &Journal, status: Status, e: Error) -> Error {
        let restored: Vec<&str> = j
            .done
            .iter()
            .filter(|s| s.action == StepAction::Restore && s.status == StepStatus::Ok)
            .map(|s| s.component.as_str())
            .collect();
        Error::new(
            e.kind(),
            format!(
                "rollback {} ended {}, but its record could not be written ({e}); restored: {}; still stopped: {}",
                j.rollback_id,
                status.as_str(),
                or_none(&restored),
                or_none(&j.stopped),
            ),
        )
    }

    fn finish(&self, mut j: Journal, status: Status) -> Result<Record> {
        // Notes of the compensation's restores.
        j.notes.extend(Context::take_notes(&self.notes));
        let r = record_of(&j, status);
        self.stack.store().write_record(&r).map_err(|e| self.unrecorded(&j, status, e))?;
        j.stage = Stage::Finished { status };
        match self.save(&j) {
            Ok(()) => self.stack.store().retire_journal(&j.rollback_id),
            // The record is written and final: `resume` and `check` read it before the
            // journal, so an unfinished journal beside it is not run again.
            Err(e) => tracing::error!(error = %e, "cannot mark the journal finished; the record stands"),
        }
        let mut e = Event::new(EventKind::Finished, format!("rollback {}", status.as_str()));
        e.status = Some(status.into());
        e.duration_ms = Some(r.duration_ms);
        self.emit(e);
        Ok(r)
    }
}

/// Lifts one component's fence, trying a few times (a fence left up refuses every
/// write), and records its window. Does not save the journal.
async fn lift_fence(stack: &Stack, events: &EventSink, j: &mut Journal, name: &str, snapshot_id: &str) {
    let Some(st) = j.fences.get(name).cloned() else { return };
    let mut ctx = stack.context(name, snapshot_id);
    ctx.events = events.clone();
    let result = match stack.driver(name) {
        Ok(d) => {
            let mut r = Ok(());
            for attempt in 0..3 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                r = d.unfence(&ctx, &st.undo).await;
                if r.is_ok() {
                    break;
                }
            }
            r
        }
        Err(e) => Err(e),
    };
    j.fences.remove(name);
    let Some(raised_at) = st.raised_at else {
        return;
    };
    let window_ms = (Utc::now() - raised_at).num_milliseconds().max(0) as u64;
    let error = result.err().map(|e| {
        let e = e.redacted(&stack.config().redactor);
        tracing::error!(component = name, error = %e, "cannot lift the write fence");
        format!("{e}; lift it by hand (the fence: {})", st.how)
    });
    let mut ev = Event::new(
        EventKind::FenceLifted,
        match &error {
            None => format!("writes to {name} accepted again after {window_ms} ms"),
            Some(e) => format!("the fence on {name} could not be lifted: {e}"),
        },
    );
    ev.component = Some(name.to_string());
    ev.duration_ms = Some(window_ms);
    events.emit(ev);
    j.fence_windows.push(FenceWindow { component: name.to_string(), how: st.how, window_ms, error });
}

/// `a, b`, or `none`.
fn or_none<S: AsRef<str>>(names: &[S]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(", ")
    }
}

/// The record of a journal's rollback as it stands.
pub(crate) fn record_of(j: &Journal, status: Status) -> Record {
    let completion_time = Utc::now();
    let duration_ms = (completion_time - j.start_time).num_milliseconds().max(0) as u64;
    // A compensated rollback puts the state before it back, so what it would have
    // discarded is back in place, unless no snapshot could hold it.
    let data_loss = j
        .discarded
        .iter()
        .any(|d| !d.kept_in_safety_snapshot && d.changes > 0 && (status != Status::Compensated || !d.keepable));
    let error = match &j.stage {
        Stage::Compensating { error, .. } => Some(error.clone()),
        _ => j.done.iter().find(|s| s.status == StepStatus::Failed).and_then(|s| s.error.clone()),
    };
    Record {
        rollback_id: j.rollback_id.clone(),
        snapshot_id: j.snapshot_id.clone(),
        kind: j.kind,
        level: j.plan.scope.level(),
        phases: j.plan.phases.clone(),
        components: j.plan.components.clone(),
        trigger: j.trigger.clone(),
        severity: j.severity,
        start_time: j.start_time,
        completion_time,
        duration_ms,
        rto_target_ms: j.rto_target_ms,
        rto_met: duration_ms <= j.rto_target_ms,
        status,
        data_loss,
        safety_snapshot_id: j.safety_snapshot_id.clone(),
        steps: j.done.clone(),
        verification: j.verification.clone(),
        discarded: j.discarded.clone(),
        error,
        resumed: j.resumed,
        notes: j.notes.clone(),
        fences: j.fence_windows.clone(),
        watch: j.watch.clone(),
    }
}

/// Loads a journal for `resume`.
pub(crate) fn load_journal(stack: &Stack, rollback_id: &str) -> Result<Journal> {
    let mut p = stack.store().journal_path(rollback_id)?;
    if !p.exists() {
        // Finished: moved aside (see `Store::retire_journal`).
        let finished = stack.store().finished_journal_path(rollback_id)?;
        if finished.exists() {
            p = finished;
        }
    }
    let data = std::fs::read(&p).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::not_found(format!("no journal for rollback `{rollback_id}`"))
        } else {
            Error::from(e)
        }
    })?;
    serde_json::from_slice(&data)
        .map_err(|e| Error::new(ErrorKind::Corrupt, format!("journal of `{rollback_id}` is unreadable")).with_source(e))
}

/// The record of a rollback when it has a final status (not `interrupted`).
fn final_record(stack: &Stack, rollback_id: &str) -> Option<Record> {
    let p = stack.store().root().join("records").join(format!("{rollback_id}.json"));
    let r: Record = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
    (r.status != Status::Interrupted).then_some(r)
}

/// Journals of rollbacks that are not finished (what `resume` can finish), oldest
/// first. An unreadable journal is an error, not skipped: the snapshots it uses
/// would look free to `gc`, and the components it changed would be forgotten.
pub(crate) fn unfinished_journals(stack: &Stack) -> Result<Vec<Journal>> {
    let mut out = Vec::new();
    let dir = stack.store().root().join("journals");
    for e in std::fs::read_dir(&dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(id) = name.strip_suffix(".json") {
            // A final record closes the rollback whatever its journal says: the
            // journal may be the write that failed. Read only when the journal
            // alone does not settle it, since every rollback start comes here.
            match load_journal(stack, id) {
                // Left here by an earlier build, or by a crash before it was moved:
                // moved now, so the next rollback does not read it again.
                Ok(j) if j.is_finished() => stack.store().retire_journal(id),
                Ok(_) | Err(_) if final_record(stack, id).is_some() => {}
                // Moved aside as finished by another process since the listing.
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Ok(j) => out.push(j),
                Err(err) => {
                    return Err(Error::new(
                        ErrorKind::Corrupt,
                        format!(
                            "the journal {} is unreadable ({err}); nothing that depends on knowing which rollbacks \
                             are unfinished can run until it is repaired or moved out of the store",
                            e.path().display()
                        ),
                    ))
                }
            }
        }
    }
    out.sort_by(|a, b| a.start_time.cmp(&b.start_time).then(a.rollback_id.cmp(&b.rollback_id)));
    Ok(out)
}

/// Ids of rollbacks whose journal is not finished: (rollback, snapshot, safety snapshot).
pub(crate) fn unfinished(stack: &Stack) -> Result<Vec<(String, String, Option<String>)>> {
    Ok(unfinished_journals(stack)?.into_iter().map(|j| (j.rollback_id, j.snapshot_id, j.safety_snapshot_id)).collect())
}

/// Gives up an unfinished rollback: its journal is closed and a `failed` record says
/// what it had changed and what is still stopped. Nothing is put back.
pub(crate) async fn abandon(stack: &Stack, mut j: Journal) -> Result<Record> {
    // A fence left up refuses every write: lifted whatever else is left.
    let snapshot_id = j.snapshot_id.clone();
    for name in j.fences.keys().cloned().collect::<Vec<_>>() {
        lift_fence(stack, &EventSink::default(), &mut j, &name, &snapshot_id).await;
    }
    let restored: Vec<String> = j.touched.clone();
    let stopped = j.stopped.clone();
    let position = j.position();
    j.notes.push(format!(
        "abandoned by the operator {position}; left as they were — restore started: {}; still stopped: {}",
        or_none(&restored),
        or_none(&stopped),
    ));
    if let Some(s) = &j.safety_snapshot_id {
        j.notes.push(format!("the state before it is the safety snapshot {s}"));
    }
    let mut r = record_of(&j, Status::Failed);
    r.error = Some(format!("abandoned {position}"));
    stack.store().write_record(&r)?;
    j.stage = Stage::Finished { status: Status::Failed };
    j.save(stack.store())?;
    stack.store().retire_journal(&j.rollback_id);
    Ok(r)
}
