//! The JS shapes of the core's types: plain objects with camelCase fields.
//!
//! Output objects use `use_nullable` so every key is present (`null` when unset), as
//! in the record JSON of SPEC §6; inputs use optional keys.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use rollback_core as rb;

use crate::{to_napi, Abort, EventFn};

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn num(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------- inputs

/// Symptoms of an incident, for `assess` (SPEC §7).
#[napi(object, object_to_js = false)]
pub struct Symptoms {
    /// Fraction of requests failing, 0..1.
    pub error_rate: f64,
    /// Fraction of performance lost, 0..1.
    pub perf_degradation: f64,
    /// Observed latency in milliseconds.
    pub latency_ms: Option<f64>,
    /// Data impact (default `none`).
    #[napi(ts_type = "'none' | 'corruption' | 'loss'")]
    pub data_impact: Option<String>,
    /// A security issue is present (always critical).
    pub security: Option<bool>,
}

impl TryFrom<Symptoms> for rb::Symptoms {
    type Error = napi::Error;
    fn try_from(s: Symptoms) -> Result<Self> {
        let data_impact = match s.data_impact.as_deref() {
            None => rb::DataImpact::None,
            Some(d) => d.parse().map_err(to_napi)?,
        };
        Ok(rb::Symptoms {
            error_rate: s.error_rate,
            perf_degradation: s.perf_degradation,
            latency_ms: s.latency_ms,
            data_impact,
            security: s.security.unwrap_or(false),
        })
    }
}

/// Options of `snapshot`.
#[napi(object, object_to_js = false)]
#[derive(Default)]
pub struct SnapshotOptions {
    /// Operator's label, e.g. the version being deployed.
    pub label: Option<String>,
    /// Only these components (default: all).
    pub components: Option<Vec<String>>,
    /// Receives progress events as they happen.
    #[napi(ts_type = "(event: StepEvent) => void")]
    pub on_event: Option<EventFn>,
}

/// The scope of `plan`: `level` defaults to `component` when `components` are given,
/// `phase` when `phases` are, `complete` otherwise.
#[napi(object, object_to_js = false)]
#[derive(Default)]
pub struct ScopeOptions {
    /// Level of the rollback.
    #[napi(ts_type = "'complete' | 'phase' | 'component'")]
    pub level: Option<String>,
    /// Phases, for level `phase`.
    pub phases: Option<Vec<i64>>,
    /// Components, for level `component`.
    pub components: Option<Vec<String>>,
}

/// Options of `rollback` and `drill`.
#[napi(object, object_to_js = false)]
#[derive(Default)]
pub struct RollbackOptions {
    /// Level of the rollback.
    #[napi(ts_type = "'complete' | 'phase' | 'component'")]
    pub level: Option<String>,
    /// Phases, for level `phase`.
    pub phases: Option<Vec<i64>>,
    /// Components, for level `component`.
    pub components: Option<Vec<String>>,
    /// Why (`error_rate`, `latency`...), kept in the record.
    pub trigger: Option<String>,
    /// Severity from `assess`, kept in the record.
    #[napi(ts_type = "'low' | 'medium' | 'high' | 'critical'")]
    pub severity: Option<String>,
    /// Take the safety snapshot first (default true).
    pub safety_snapshot: Option<bool>,
    /// Default deadline of one step, in milliseconds.
    pub step_timeout_ms: Option<f64>,
    /// Receives step events as they happen.
    #[napi(ts_type = "(event: StepEvent) => void")]
    pub on_event: Option<EventFn>,
    /// Stops the rollback at the next step boundary; the record is then
    /// `interrupted` and `resume` finishes it.
    #[napi(ts_type = "AbortSignalLike")]
    pub signal: Option<Abort>,
}

/// Options of `verify`.
#[napi(object, object_to_js = false)]
#[derive(Default)]
pub struct VerifyOptions {
    /// Only these components (default: every component of the snapshot).
    pub components: Option<Vec<String>>,
    /// Reject with a `VERIFICATION` error naming the first differing component
    /// instead of resolving with `ok: false`.
    pub throw_on_drift: Option<bool>,
}

/// Options of `health`.
#[napi(object, object_to_js = false)]
#[derive(Default)]
pub struct HealthOptions {
    /// Only these components (default: every component).
    pub components: Option<Vec<String>>,
}

impl From<rb::HealthResult> for HealthResult {
    fn from(r: rb::HealthResult) -> Self {
        HealthResult { check: r.check, ok: r.ok, detail: r.detail }
    }
}

/// Options of `resume`.
#[napi(object, object_to_js = false)]
#[derive(Default)]
pub struct ResumeOptions {
    /// Receives step events as they happen.
    #[napi(ts_type = "(event: StepEvent) => void")]
    pub on_event: Option<EventFn>,
    /// Stops the resumed rollback again at the next step boundary; the record is then
    /// `interrupted` and another `resume` finishes it.
    #[napi(ts_type = "AbortSignalLike")]
    pub signal: Option<Abort>,
}

/// Options of `gc`.
#[napi(object, object_to_js = false)]
#[derive(Default)]
pub struct GcOptions {
    /// Keep the newest N snapshots (a whole number from 1).
    pub keep: Option<f64>,
    /// Keep snapshots younger than this (`"7d"`, `"12h"`).
    pub max_age: Option<String>,
}

// ---------------------------------------------------------------- outputs

/// The decision matrix's answer.
#[napi(object, object_from_js = false)]
pub struct Assessment {
    /// Worst severity of any signal.
    #[napi(ts_type = "'low' | 'medium' | 'high' | 'critical'")]
    pub severity: String,
    /// What to do.
    #[napi(ts_type = "'fix_forward' | 'fix_forward_or_rollback' | 'rollback' | 'immediate_rollback'")]
    pub decision: String,
    /// True for `rollback` and `immediate_rollback`.
    pub roll_back: bool,
    /// One line per signal that reached the severity.
    pub reasons: Vec<String>,
}

impl From<rb::Assessment> for Assessment {
    fn from(a: rb::Assessment) -> Self {
        let decision = match a.decision {
            rb::Decision::FixForward => "fix_forward",
            rb::Decision::FixForwardOrRollback => "fix_forward_or_rollback",
            rb::Decision::Rollback => "rollback",
            rb::Decision::ImmediateRollback => "immediate_rollback",
        };
        Assessment {
            severity: a.severity.as_str().to_string(),
            decision: decision.to_string(),
            roll_back: a.decision.should_roll_back(),
            reasons: a.reasons,
        }
    }
}

/// A progress event of a snapshot, rollback, drill or resume.
#[napi(object, object_from_js = false, use_nullable = true)]
#[derive(Clone)]
pub struct StepEvent {
    /// `snapshot_started`, `part_captured`, `safety_snapshot`, `step_started`,
    /// `step_finished`, `progress`, `compensating`, `finished`...
    pub kind: String,
    /// Component concerned.
    pub component: Option<String>,
    /// Step action.
    #[napi(ts_type = "'stop' | 'restore' | 'start' | 'health_gate' | 'verify' | 'compensate'")]
    pub action: Option<String>,
    /// The probe, on a watch's events.
    pub probe: Option<String>,
    /// Step index, 0-based.
    pub index: Option<u32>,
    /// Number of steps.
    pub total: Option<u32>,
    /// `ok` or `failed` on finished steps; the record's status on `finished`;
    /// `ok` or `bad` on a watch's probe readings; the policy's action on a watch's
    /// decision; the outcome when a watch finishes.
    pub status: Option<String>,
    /// For a person.
    pub message: String,
    /// On finished steps.
    pub duration_ms: Option<i64>,
}

impl From<&rb::Event> for StepEvent {
    fn from(e: &rb::Event) -> Self {
        StepEvent {
            kind: e.kind.as_str().to_string(),
            component: e.component.clone(),
            action: e.action.map(|a| a.as_str().to_string()),
            probe: e.probe.clone(),
            index: e.index.map(|i| i as u32),
            total: e.total.map(|i| i as u32),
            status: e.status.map(|s| s.as_str().to_string()),
            message: e.message.clone(),
            duration_ms: e.duration_ms.map(num),
        }
    }
}

/// A component of the stack.
#[napi(object, object_from_js = false)]
pub struct ComponentInfo {
    /// Name.
    pub name: String,
    /// Driver.
    pub driver: String,
    /// Phase (deploy order).
    pub phase: i64,
    /// Components it depends on.
    pub depends_on: Vec<String>,
}

impl From<&rb::ComponentConfig> for ComponentInfo {
    fn from(c: &rb::ComponentConfig) -> Self {
        ComponentInfo {
            name: c.name.clone(),
            driver: c.driver.clone(),
            phase: c.phase,
            depends_on: c.depends_on.clone(),
        }
    }
}

/// One health check's outcome.
#[napi(object, object_from_js = false)]
pub struct HealthResult {
    /// The check.
    pub check: String,
    /// Passed.
    pub ok: bool,
    /// What was seen.
    pub detail: String,
}

/// One component's share of a snapshot.
#[napi(object, object_from_js = false)]
pub struct SnapshotPart {
    /// Component.
    pub component: String,
    /// Driver that captured it.
    pub driver: String,
    /// Phase at capture time.
    pub phase: i64,
    /// Driver-specific state (commit, link target, image id...).
    pub state: serde_json::Value,
    /// Bytes of stored artifacts.
    pub size: i64,
    /// How long capture took.
    pub capture_ms: i64,
}

/// A snapshot.
#[napi(object, object_from_js = false, use_nullable = true)]
pub struct Snapshot {
    /// Id, e.g. `20261123T100000123Z-3f9a1c`.
    pub id: String,
    /// Operator's label.
    pub label: Option<String>,
    /// Capture time (RFC 3339, UTC).
    pub created_at: String,
    /// Whether the health checks passed at capture time (`null`: no checks).
    pub healthy: Option<bool>,
    /// Health results at capture time, per component.
    pub health: BTreeMap<String, Vec<HealthResult>>,
    /// On a safety snapshot: the rollback it protects.
    pub safety_for: Option<String>,
    /// Captured components, in phase order.
    pub components: Vec<String>,
    /// Bytes of stored artifacts.
    pub size: i64,
    /// One part per component.
    pub parts: Vec<SnapshotPart>,
}

impl From<&rb::SnapshotManifest> for Snapshot {
    fn from(m: &rb::SnapshotManifest) -> Self {
        Snapshot {
            id: m.id.clone(),
            label: m.label.clone(),
            created_at: time(&m.created_at),
            healthy: m.healthy,
            health: m
                .health
                .iter()
                .map(|(k, v)| {
                    let v = v
                        .iter()
                        .map(|h| HealthResult { check: h.check.clone(), ok: h.ok, detail: h.detail.clone() })
                        .collect();
                    (k.clone(), v)
                })
                .collect(),
            safety_for: m.safety_for.clone(),
            components: m.parts.iter().map(|p| p.component.clone()).collect(),
            size: num(m.size()),
            parts: m
                .parts
                .iter()
                .map(|p| SnapshotPart {
                    component: p.component.clone(),
                    driver: p.driver.clone(),
                    phase: p.phase,
                    state: p.state.clone(),
                    size: num(p.size()),
                    capture_ms: num(p.capture_ms),
                })
                .collect(),
        }
    }
}

/// What a restore throws away (changes since the snapshot).
#[napi(object, object_from_js = false)]
pub struct Discard {
    /// Component.
    pub component: String,
    /// Table, key space, file...
    pub target: String,
    /// How many changes.
    pub changes: i64,
    /// `rows`, `keys`...
    pub unit: String,
    /// Readable back from the safety snapshot.
    pub kept_in_safety_snapshot: bool,
}

impl From<&rb::Discard> for Discard {
    fn from(d: &rb::Discard) -> Self {
        Discard {
            component: d.component.clone(),
            target: d.target.clone(),
            changes: num(d.changes),
            unit: d.unit.clone(),
            kept_in_safety_snapshot: d.kept_in_safety_snapshot,
        }
    }
}

/// One step of a plan.
#[napi(object, object_from_js = false)]
pub struct PlanStep {
    /// Component.
    pub component: String,
    /// `stop`, `restore`, `start`, `health_gate` or `verify`.
    pub action: String,
    /// What it will do.
    pub description: String,
    /// Predicted duration (median of past runs).
    pub predicted_ms: i64,
}

/// The steps a rollback would run; `text` is the preview for a person.
#[napi(object, object_from_js = false)]
pub struct Plan {
    /// Snapshot rolled back to.
    pub snapshot_id: String,
    /// `complete`, `phase` or `component`.
    #[napi(ts_type = "'complete' | 'phase' | 'component'")]
    pub level: String,
    /// Phases restored.
    pub phases: Vec<i64>,
    /// Components restored.
    pub components: Vec<String>,
    /// Steps, in order.
    pub steps: Vec<PlanStep>,
    /// What the restore would discard.
    pub discards: Vec<Discard>,
    /// Predicted total.
    pub predicted_ms: i64,
    /// The preview, as `rollback plan` prints it.
    pub text: String,
}

impl Plan {
    pub(crate) fn from_core(p: &rb::Plan, text: String) -> Self {
        Plan {
            snapshot_id: p.snapshot_id.clone(),
            level: p.scope.level().to_string(),
            phases: p.phases.clone(),
            components: p.components.clone(),
            steps: p
                .steps
                .iter()
                .map(|s| PlanStep {
                    component: s.component.clone(),
                    action: s.action.as_str().to_string(),
                    description: s.description.clone(),
                    predicted_ms: num(s.predicted_ms),
                })
                .collect(),
            discards: p.discards.iter().map(Discard::from).collect(),
            predicted_ms: num(p.predicted_ms),
            text,
        }
    }
}

/// A component's comparison with a snapshot.
#[napi(object, object_from_js = false)]
pub struct Drift {
    /// Equal.
    pub ok: bool,
    /// What differs, for a person.
    pub differences: Vec<String>,
}

impl From<&rb::Drift> for Drift {
    fn from(d: &rb::Drift) -> Self {
        Drift { ok: d.ok, differences: d.differences.clone() }
    }
}

/// One component that differs from the snapshot.
#[napi(object, object_from_js = false)]
pub struct ComponentDrift {
    /// Component.
    pub component: String,
    /// What differs.
    pub differences: Vec<String>,
}

/// The result of `verify`.
#[napi(object, object_from_js = false)]
pub struct Verification {
    /// Snapshot compared with.
    pub snapshot_id: String,
    /// Every component equal.
    pub ok: bool,
    /// The components that differ (empty when `ok`).
    pub drift: Vec<ComponentDrift>,
    /// Every compared component.
    pub components: BTreeMap<String, Drift>,
}

impl From<&rb::Verification> for Verification {
    fn from(v: &rb::Verification) -> Self {
        Verification {
            snapshot_id: v.snapshot_id.clone(),
            ok: v.ok,
            drift: v
                .components
                .iter()
                .filter(|(_, d)| !d.ok)
                .map(|(c, d)| ComponentDrift { component: c.clone(), differences: d.differences.clone() })
                .collect(),
            components: v.components.iter().map(|(k, d)| (k.clone(), Drift::from(d))).collect(),
        }
    }
}

/// One executed step of a rollback.
#[napi(object, object_from_js = false, use_nullable = true)]
pub struct RecordStep {
    /// Component.
    pub component: String,
    /// What the step did.
    #[napi(ts_type = "'stop' | 'restore' | 'start' | 'health_gate' | 'verify' | 'compensate'")]
    pub action: String,
    /// How it ended.
    #[napi(ts_type = "'ok' | 'failed'")]
    pub status: String,
    /// Duration.
    pub duration_ms: i64,
    /// Error or detail.
    pub error: Option<String>,
}

/// The record of one rollback or drill (SPEC §6, camelCase).
#[napi(object, object_from_js = false, use_nullable = true)]
pub struct RollbackRecord {
    /// Id of this rollback (for `resume`, `record`, `report`).
    pub rollback_id: String,
    /// Snapshot rolled back to.
    pub snapshot_id: String,
    /// `rollback` or `drill`.
    #[napi(ts_type = "'rollback' | 'drill'")]
    pub kind: String,
    /// `complete`, `phase` or `component`.
    #[napi(ts_type = "'complete' | 'phase' | 'component'")]
    pub level: String,
    /// Phases restored.
    pub phases: Vec<i64>,
    /// Components restored.
    pub components: Vec<String>,
    /// Why it was started.
    pub trigger: Option<String>,
    /// Severity from `assess`.
    #[napi(ts_type = "'low' | 'medium' | 'high' | 'critical'")]
    pub severity: Option<String>,
    /// Start (RFC 3339, UTC).
    pub start_time: String,
    /// End (RFC 3339, UTC).
    pub completion_time: String,
    /// Wall time.
    pub duration_ms: i64,
    /// Recovery-time objective of this level.
    pub rto_target_ms: i64,
    /// `durationMs <= rtoTargetMs`.
    pub rto_met: bool,
    /// Outcome.
    #[napi(ts_type = "'succeeded' | 'failed' | 'compensated' | 'interrupted'")]
    pub status: String,
    /// True when discarded changes cannot be read back from a safety snapshot.
    pub data_loss: bool,
    /// Snapshot taken just before the first change.
    pub safety_snapshot_id: Option<String>,
    /// Steps in the order they ran.
    pub steps: Vec<RecordStep>,
    /// Per-component verification.
    pub verification: BTreeMap<String, Drift>,
    /// What the restore discarded.
    pub discarded: Vec<Discard>,
    /// The first error, when not succeeded.
    pub error: Option<String>,
    /// Finished by `resume`.
    pub resumed: bool,
    /// Notes (drill perturbations...).
    pub notes: Vec<String>,
    /// The watch decision that started this rollback.
    pub watch: Option<WatchDecision>,
}

/// A decision of `watch`: a probe bad in enough of its window.
#[napi(object, object_from_js = false, use_nullable = true)]
pub struct WatchDecision {
    /// The probe that decided.
    pub probe: String,
    /// The severity its window reached.
    #[napi(ts_type = "'low' | 'medium' | 'high' | 'critical'")]
    pub severity: String,
    /// What the policy says at that severity.
    #[napi(ts_type = "'rollback' | 'notify' | 'ignore'")]
    pub action: String,
    /// `api: error_rate 0.34 ≥ 0.25 (high) in 3 of the last 4 probes`.
    pub reason: String,
    /// Bad readings counted.
    pub bad: u32,
    /// Readings weighed.
    pub window: u32,
    /// The values of the latest bad reading.
    pub values: BTreeMap<String, f64>,
    /// The first bad reading counted (RFC 3339, UTC).
    pub first_bad_at: String,
    /// When it decided (RFC 3339, UTC).
    pub decided_at: String,
    /// From the first bad reading to the decision (to the rollback's start).
    pub detect_ms: i64,
    /// Decided in a dry run: nothing was changed.
    pub dry_run: bool,
}

impl From<&rb::WatchDecision> for WatchDecision {
    fn from(d: &rb::WatchDecision) -> Self {
        WatchDecision {
            probe: d.probe.clone(),
            severity: d.severity.as_str().to_string(),
            action: d.action.as_str().to_string(),
            reason: d.reason.clone(),
            bad: d.bad as u32,
            window: d.window as u32,
            values: d.values.clone().into_iter().collect(),
            first_bad_at: time(&d.first_bad_at),
            decided_at: time(&d.decided_at),
            detect_ms: num(d.detect_ms),
            dry_run: d.dry_run,
        }
    }
}

/// What `watch` did.
#[napi(object, object_from_js = false, use_nullable = true)]
pub struct WatchReport {
    /// How it ended.
    #[napi(ts_type = "'elapsed' | 'stopped' | 'rolled_back' | 'would_roll_back' | 'failed'")]
    pub outcome: String,
    /// The snapshot it watched over.
    pub snapshot_id: String,
    /// Rounds of probes run.
    pub rounds: i64,
    /// Start (RFC 3339, UTC).
    pub start_time: String,
    /// End (RFC 3339, UTC).
    pub end_time: String,
    /// Every decision, in order.
    pub decisions: Vec<WatchDecision>,
    /// The rollback's record, when it rolled back.
    pub record: Option<RollbackRecord>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Notifications that could not be delivered.
    pub undelivered: Vec<String>,
}

impl From<&rb::WatchReport> for WatchReport {
    fn from(r: &rb::WatchReport) -> Self {
        WatchReport {
            outcome: r.outcome.as_str().to_string(),
            snapshot_id: r.snapshot_id.clone(),
            rounds: num(r.rounds),
            start_time: time(&r.start_time),
            end_time: time(&r.end_time),
            decisions: r.decisions.iter().map(WatchDecision::from).collect(),
            record: r.record.as_ref().map(RollbackRecord::from),
            error: r.error.clone(),
            undelivered: r.undelivered.clone(),
        }
    }
}

/// Options of `watch`.
#[napi(object, object_to_js = false)]
#[derive(Default)]
pub struct WatchOptions {
    /// The snapshot to roll back to (default `last-good`).
    pub snapshot: Option<String>,
    /// Level of a rollback it starts.
    #[napi(ts_type = "'complete' | 'phase' | 'component'")]
    pub level: Option<String>,
    /// Phases, for level `phase`.
    pub phases: Option<Vec<i64>>,
    /// Components, for level `component`.
    pub components: Option<Vec<String>>,
    /// Watch this long, then resolve (a deploy window); none: until aborted.
    pub duration_ms: Option<f64>,
    /// Decide and notify; change nothing.
    pub dry_run: Option<bool>,
    /// Receives `watch_*` events (decisions), then the rollback's step events.
    #[napi(ts_type = "(event: StepEvent) => void")]
    pub on_event: Option<EventFn>,
    /// Stops the watch (and a rollback it started, at its next step boundary).
    #[napi(ts_type = "AbortSignalLike")]
    pub signal: Option<Abort>,
}

impl From<&rb::Record> for RollbackRecord {
    fn from(r: &rb::Record) -> Self {
        RollbackRecord {
            rollback_id: r.rollback_id.clone(),
            snapshot_id: r.snapshot_id.clone(),
            kind: r.kind.as_str().to_string(),
            level: r.level.as_str().to_string(),
            phases: r.phases.clone(),
            components: r.components.clone(),
            trigger: r.trigger.clone(),
            severity: r.severity.map(|s| s.as_str().to_string()),
            start_time: time(&r.start_time),
            completion_time: time(&r.completion_time),
            duration_ms: num(r.duration_ms),
            rto_target_ms: num(r.rto_target_ms),
            rto_met: r.rto_met,
            status: r.status.as_str().to_string(),
            data_loss: r.data_loss,
            safety_snapshot_id: r.safety_snapshot_id.clone(),
            steps: r
                .steps
                .iter()
                .map(|s| RecordStep {
                    component: s.component.clone(),
                    action: s.action.as_str().to_string(),
                    status: s.status.as_str().to_string(),
                    duration_ms: num(s.duration_ms),
                    error: s.error.clone(),
                })
                .collect(),
            verification: r.verification.iter().map(|(k, d)| (k.clone(), Drift::from(d))).collect(),
            discarded: r.discarded.iter().map(Discard::from).collect(),
            error: r.error.clone(),
            resumed: r.resumed,
            notes: r.notes.clone(),
            watch: r.watch.as_ref().map(WatchDecision::from),
        }
    }
}

/// One component's line of `check`.
#[napi(object, object_from_js = false)]
pub struct ComponentCheck {
    /// Reachable.
    pub ok: bool,
    /// What the driver saw, or the error.
    pub detail: String,
}

/// An id and its age.
#[napi(object, object_from_js = false)]
pub struct Aged {
    /// Snapshot or record id.
    pub id: String,
    /// Age in seconds.
    pub age_seconds: i64,
}

/// The result of `check`.
#[napi(object, object_from_js = false, use_nullable = true)]
pub struct CheckReport {
    /// Every component reachable.
    pub ok: bool,
    /// Per component.
    pub components: BTreeMap<String, ComponentCheck>,
    /// Newest regular snapshot.
    pub newest_snapshot: Option<Aged>,
    /// Newest drill record.
    pub newest_drill: Option<Aged>,
    /// Rollbacks left unfinished (`resume` them).
    pub unfinished_rollbacks: Vec<String>,
}

impl From<&rb::CheckReport> for CheckReport {
    fn from(c: &rb::CheckReport) -> Self {
        let aged = |x: &Option<(String, u64)>| x.as_ref().map(|(id, a)| Aged { id: id.clone(), age_seconds: num(*a) });
        CheckReport {
            ok: c.ok,
            components: c
                .components
                .iter()
                .map(|(k, v)| (k.clone(), ComponentCheck { ok: v.ok, detail: v.detail.clone() }))
                .collect(),
            newest_snapshot: aged(&c.newest_snapshot),
            newest_drill: aged(&c.newest_drill),
            unfinished_rollbacks: c.unfinished_rollbacks.clone(),
        }
    }
}

/// The result of `gc`.
#[napi(object, object_from_js = false)]
pub struct GcReport {
    /// Snapshots removed.
    pub removed: Vec<String>,
    /// Snapshots kept.
    pub kept: Vec<String>,
    /// Artifact files freed.
    pub freed_files: i64,
    /// Bytes freed.
    pub freed_bytes: i64,
}

impl From<&rb::GcReport> for GcReport {
    fn from(g: &rb::GcReport) -> Self {
        GcReport {
            removed: g.removed.clone(),
            kept: g.kept.clone(),
            freed_files: num(g.freed_files as u64),
            freed_bytes: num(g.freed_bytes),
        }
    }
}
