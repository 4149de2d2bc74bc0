//! The Python shapes of the core's types. Attributes for what scripts read, and
//! `to_dict()` / `to_json()` giving the core's own JSON (the record format of `docs/records.md`).

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use rollback_core as rb;
use rollback_core::Snapshot as _;
use serde::Serialize;

/// A JSON value as plain Python objects (dict, list, str, int, float, bool, None).
pub fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value;
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => s.into_pyobject(py)?.into_any(),
        Value::Array(a) => {
            let l = PyList::empty(py);
            for x in a {
                l.append(json_to_py(py, x)?)?;
            }
            l.into_any()
        }
        Value::Object(m) => {
            let d = PyDict::new(py);
            for (k, x) in m {
                d.set_item(k, json_to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}

/// A serializable value as plain Python objects.
pub fn to_py<'py, T: Serialize>(py: Python<'py>, v: &T) -> PyResult<Bound<'py, PyAny>> {
    let j = serde_json::to_value(v)
        .map_err(|e| crate::errors::to_py(py, rb::Error::unexpected("cannot convert a value").with_source(e)))?;
    json_to_py(py, &j)
}

/// Python's spelling of an optional string in a `repr`.
fn opt(v: Option<&str>) -> String {
    v.map(|s| format!("{s:?}")).unwrap_or_else(|| "None".into())
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

fn pretty<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// One capture of some or all components (`Stack.snapshot()`, `Stack.list()`).
///
/// `str(snapshot)` is its id, so a snapshot can be passed wherever an id is expected.
#[pyclass(frozen, module = "rollback", name = "Snapshot")]
pub struct Snapshot {
    pub(crate) inner: rb::SnapshotManifest,
}

#[pymethods]
impl Snapshot {
    /// Unique id, e.g. `20261123T100000123Z-3f9a1c`.
    #[getter]
    fn id(&self) -> &str {
        &self.inner.id
    }
    /// The operator's label, or None.
    #[getter]
    fn label(&self) -> Option<&str> {
        self.inner.label.as_deref()
    }
    /// When it was taken (timezone-aware UTC `datetime`).
    #[getter]
    fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.inner.created_at
    }
    /// Names of the components it holds, in phase order.
    #[getter]
    fn components(&self) -> Vec<String> {
        self.inner.components().into_iter().map(String::from).collect()
    }
    /// Whether the stack's health checks passed when it was taken (None: no checks).
    #[getter]
    fn healthy(&self) -> Option<bool> {
        self.inner.healthy
    }
    /// For a safety snapshot: the id of the rollback it protects.
    #[getter]
    fn safety_for(&self) -> Option<&str> {
        self.inner.safety_for.as_deref()
    }
    /// Total size of its stored artifacts, in bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.inner.size()
    }
    /// One dict per component: component, driver, phase, state, artifacts, capture_ms.
    #[getter]
    fn parts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.parts)
    }
    /// The manifest as plain Python objects.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner)
    }
    /// The manifest as JSON text.
    fn to_json(&self) -> String {
        pretty(&self.inner)
    }
    fn __str__(&self) -> &str {
        &self.inner.id
    }
    fn __repr__(&self) -> String {
        format!(
            "Snapshot(id={:?}, label={}, components={:?})",
            self.inner.id,
            opt(self.inner.label.as_deref()),
            self.inner.components()
        )
    }
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<Snapshot>().is_ok_and(|o| o.get().inner.id == self.inner.id)
    }
    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.inner.id.hash(&mut h);
        h.finish()
    }
}

/// The ordered steps a rollback would run; `str(plan)` is the preview for a person.
#[pyclass(frozen, module = "rollback", name = "Plan")]
pub struct Plan {
    pub(crate) inner: rb::Plan,
}

#[pymethods]
impl Plan {
    /// The snapshot rolled back to.
    #[getter]
    fn snapshot_id(&self) -> &str {
        &self.inner.snapshot_id
    }
    /// `complete`, `phase` or `component`.
    #[getter]
    fn level(&self) -> &'static str {
        self.inner.scope.level().as_str()
    }
    /// Components restored, in deploy order.
    #[getter]
    fn components(&self) -> Vec<String> {
        self.inner.components.clone()
    }
    /// Their phases.
    #[getter]
    fn phases(&self) -> Vec<i64> {
        self.inner.phases.clone()
    }
    /// One dict per step: component, action, description, predicted_ms.
    #[getter]
    fn steps<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.steps)
    }
    /// What the restore would discard: component, target, changes, unit, kept_in_safety_snapshot.
    #[getter]
    fn discards<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.discards)
    }
    /// Predicted duration of the whole plan, in milliseconds.
    #[getter]
    fn predicted_ms(&self) -> u64 {
        self.inner.predicted_ms
    }
    /// The plan as plain Python objects.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner)
    }
    /// The plan as JSON text.
    fn to_json(&self) -> String {
        pretty(&self.inner)
    }
    fn __str__(&self) -> String {
        rb::RollbackPlan::render(&self.inner)
    }
    fn __repr__(&self) -> String {
        format!(
            "Plan(snapshot_id={:?}, level={:?}, components={:?}, steps={})",
            self.inner.snapshot_id,
            self.inner.scope.level().as_str(),
            self.inner.components,
            self.inner.steps.len()
        )
    }
    fn __len__(&self) -> usize {
        self.inner.steps.len()
    }
}

/// The result of one rollback or drill, also written to the store (`docs/records.md`).
#[pyclass(frozen, module = "rollback", name = "Record")]
pub struct Record {
    pub(crate) inner: rb::Record,
}

#[pymethods]
impl Record {
    /// Id of this rollback (what `Stack.resume()` and `Stack.record()` take).
    #[getter]
    fn rollback_id(&self) -> &str {
        &self.inner.rollback_id
    }
    /// Snapshot rolled back to.
    #[getter]
    fn snapshot_id(&self) -> &str {
        &self.inner.snapshot_id
    }
    /// `rollback` or `drill`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind.as_str()
    }
    /// `complete`, `phase` or `component`.
    #[getter]
    fn level(&self) -> &'static str {
        self.inner.level.as_str()
    }
    /// Phases restored.
    #[getter]
    fn phases(&self) -> Vec<i64> {
        self.inner.phases.clone()
    }
    /// Components restored.
    #[getter]
    fn components(&self) -> Vec<String> {
        self.inner.components.clone()
    }
    /// Why it was started (`error_rate`, `latency`...), or None.
    #[getter]
    fn trigger(&self) -> Option<&str> {
        self.inner.trigger.as_deref()
    }
    /// Severity from `assess`, or None.
    #[getter]
    fn severity(&self) -> Option<&'static str> {
        self.inner.severity.map(rb::Severity::as_str)
    }
    /// Start (timezone-aware UTC `datetime`).
    #[getter]
    fn start_time(&self) -> chrono::DateTime<chrono::Utc> {
        self.inner.start_time
    }
    /// End (timezone-aware UTC `datetime`).
    #[getter]
    fn completion_time(&self) -> chrono::DateTime<chrono::Utc> {
        self.inner.completion_time
    }
    /// Wall time in milliseconds.
    #[getter]
    fn duration_ms(&self) -> u64 {
        self.inner.duration_ms
    }
    /// Recovery-time objective of this level, in milliseconds.
    #[getter]
    fn rto_target_ms(&self) -> u64 {
        self.inner.rto_target_ms
    }
    /// `duration_ms <= rto_target_ms`.
    #[getter]
    fn rto_met(&self) -> bool {
        self.inner.rto_met
    }
    /// `succeeded`, `failed`, `compensated` or `interrupted`.
    #[getter]
    fn status(&self) -> &str {
        self.inner.status.as_str()
    }
    /// True when the status is `succeeded`.
    #[getter]
    fn succeeded(&self) -> bool {
        self.inner.succeeded()
    }
    /// True when discarded changes cannot be read back from a safety snapshot.
    #[getter]
    fn data_loss(&self) -> bool {
        self.inner.data_loss
    }
    /// Snapshot taken just before the first change, or None.
    #[getter]
    fn safety_snapshot_id(&self) -> Option<&str> {
        self.inner.safety_snapshot_id.as_deref()
    }
    /// One dict per step run: component, action, status, duration_ms (and error).
    #[getter]
    fn steps<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.steps)
    }
    /// Per component: `{"ok": bool, "differences": [...]}`.
    #[getter]
    fn verification<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.verification)
    }
    /// What the restore discarded: component, target, changes, unit, kept_in_safety_snapshot.
    #[getter]
    fn discarded<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.discarded)
    }
    /// The first error when not succeeded, or None.
    #[getter]
    fn error(&self) -> Option<&str> {
        self.inner.error.as_deref()
    }
    /// True when it was finished by `resume`.
    #[getter]
    fn resumed(&self) -> bool {
        self.inner.resumed
    }
    /// Free-form notes (drill perturbations...).
    #[getter]
    fn notes(&self) -> Vec<String> {
        self.inner.notes.clone()
    }
    /// The record as plain Python objects (the same keys as `to_json()`).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner)
    }
    /// The record as JSON text, as the store holds it (`docs/records.md`).
    fn to_json(&self) -> String {
        self.inner.to_json()
    }
    /// The incident report, in Markdown.
    fn to_markdown(&self) -> String {
        self.inner.to_markdown()
    }
    fn __repr__(&self) -> String {
        format!(
            "Record(rollback_id={:?}, kind={:?}, level={:?}, status={:?}, duration_ms={})",
            self.inner.rollback_id,
            self.inner.kind.as_str(),
            self.inner.level.as_str(),
            self.inner.status.as_str(),
            self.inner.duration_ms
        )
    }
}

/// The result of `Stack.verify()`: truthy when every component equals the snapshot.
#[pyclass(frozen, module = "rollback", name = "Verification")]
pub struct Verification {
    pub(crate) inner: rb::Verification,
}

#[pymethods]
impl Verification {
    /// Snapshot compared with.
    #[getter]
    fn snapshot_id(&self) -> &str {
        &self.inner.snapshot_id
    }
    /// Every component equal.
    #[getter]
    fn ok(&self) -> bool {
        self.inner.ok
    }
    /// The components that differ: `{component: [difference, ...]}` (empty when equal).
    #[getter]
    fn drift<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (c, x) in self.inner.components.iter().filter(|(_, x)| !x.ok) {
            d.set_item(c, x.differences.clone())?;
        }
        Ok(d)
    }
    /// Every component compared: `{component: {"ok": bool, "differences": [...]}}`.
    #[getter]
    fn components<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.components)
    }
    /// Raises `VerificationError` naming the first differing component; returns None when equal.
    fn raise_for_drift(&self, py: Python<'_>) -> PyResult<()> {
        match self.inner.components.iter().find(|(_, d)| !d.ok) {
            None => Ok(()),
            Some((c, d)) => Err(crate::errors::to_py(
                py,
                rb::Error::new(
                    rb::ErrorKind::VerificationFailed,
                    format!("differs from snapshot {}: {}", self.inner.snapshot_id, d.differences.join("; ")),
                )
                .with_component(c),
            )),
        }
    }
    /// The verification as plain Python objects.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner)
    }
    /// The verification as JSON text.
    fn to_json(&self) -> String {
        pretty(&self.inner)
    }
    fn __bool__(&self) -> bool {
        self.inner.ok
    }
    fn __repr__(&self) -> String {
        let drift: Vec<&String> = self.inner.components.iter().filter(|(_, d)| !d.ok).map(|(c, _)| c).collect();
        format!(
            "Verification(ok={}, snapshot_id={:?}, drift={:?})",
            py_bool(self.inner.ok),
            self.inner.snapshot_id,
            drift
        )
    }
}

/// The decision matrix's answer (`docs/decision-matrix.md`).
#[pyclass(frozen, module = "rollback", name = "Assessment")]
pub struct Assessment {
    inner: rb::Assessment,
}

impl From<rb::Assessment> for Assessment {
    fn from(inner: rb::Assessment) -> Self {
        Assessment { inner }
    }
}

fn decision_name(d: rb::Decision) -> &'static str {
    match d {
        rb::Decision::FixForward => "fix_forward",
        rb::Decision::FixForwardOrRollback => "fix_forward_or_rollback",
        rb::Decision::Rollback => "rollback",
        rb::Decision::ImmediateRollback => "immediate_rollback",
    }
}

#[pymethods]
impl Assessment {
    /// `low`, `medium`, `high` or `critical`.
    #[getter]
    fn severity(&self) -> &'static str {
        self.inner.severity.as_str()
    }
    /// `fix_forward`, `fix_forward_or_rollback`, `rollback` or `immediate_rollback`.
    #[getter]
    fn decision(&self) -> &'static str {
        decision_name(self.inner.decision)
    }
    /// True for `rollback` and `immediate_rollback`.
    #[getter]
    fn should_roll_back(&self) -> bool {
        self.inner.decision.should_roll_back()
    }
    /// One line per signal that reached the severity.
    #[getter]
    fn reasons(&self) -> Vec<String> {
        self.inner.reasons.clone()
    }
    /// `{"severity", "decision", "should_roll_back", "reasons"}`.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("severity", self.severity())?;
        d.set_item("decision", self.decision())?;
        d.set_item("should_roll_back", self.should_roll_back())?;
        d.set_item("reasons", self.reasons())?;
        Ok(d)
    }
    fn __repr__(&self) -> String {
        format!(
            "Assessment(severity={:?}, decision={:?}, reasons={:?})",
            self.severity(),
            self.decision(),
            self.inner.reasons
        )
    }
}

/// The result of `Stack.check()`: truthy when every component is reachable.
#[pyclass(frozen, module = "rollback", name = "CheckReport")]
pub struct CheckReport {
    pub(crate) inner: rb::CheckReport,
}

#[pymethods]
impl CheckReport {
    /// Every component reachable.
    #[getter]
    fn ok(&self) -> bool {
        self.inner.ok
    }
    /// Per component: `{"ok": bool, "detail": str}`.
    #[getter]
    fn components<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.components)
    }
    /// `(id, age_seconds)` of the newest snapshot, or None.
    #[getter]
    fn newest_snapshot(&self) -> Option<(String, u64)> {
        self.inner.newest_snapshot.clone()
    }
    /// `(id, age_seconds)` of the newest drill, or None.
    #[getter]
    fn newest_drill(&self) -> Option<(String, u64)> {
        self.inner.newest_drill.clone()
    }
    /// Rollbacks left unfinished: `Stack.resume(id)` finishes them.
    #[getter]
    fn unfinished_rollbacks(&self) -> Vec<String> {
        self.inner.unfinished_rollbacks.clone()
    }
    /// The report as plain Python objects.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner)
    }
    /// The report as JSON text.
    fn to_json(&self) -> String {
        pretty(&self.inner)
    }
    fn __bool__(&self) -> bool {
        self.inner.ok
    }
    fn __repr__(&self) -> String {
        format!(
            "CheckReport(ok={}, unfinished_rollbacks={:?})",
            py_bool(self.inner.ok),
            self.inner.unfinished_rollbacks
        )
    }
}

/// The result of `Stack.gc()`.
#[pyclass(frozen, module = "rollback", name = "GcReport")]
pub struct GcReport {
    pub(crate) inner: rb::GcReport,
}

#[pymethods]
impl GcReport {
    /// Snapshots removed.
    #[getter]
    fn removed(&self) -> Vec<String> {
        self.inner.removed.clone()
    }
    /// Snapshots kept.
    #[getter]
    fn kept(&self) -> Vec<String> {
        self.inner.kept.clone()
    }
    /// Artifact files freed.
    #[getter]
    fn freed_files(&self) -> usize {
        self.inner.freed_files
    }
    /// Bytes freed.
    #[getter]
    fn freed_bytes(&self) -> u64 {
        self.inner.freed_bytes
    }
    /// The report as plain Python objects.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner)
    }
    fn __repr__(&self) -> String {
        format!("GcReport(removed={:?}, kept={})", self.inner.removed, self.inner.kept.len())
    }
}
