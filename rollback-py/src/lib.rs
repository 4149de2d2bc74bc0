//! Python binding of rollback: `import rollback`.
//!
//! Conversion, exceptions and runtime glue only; every decision is rollback-core's.
//! Sync methods release the GIL while the work runs on this module's tokio runtime
//! and take it back every 100 ms so Ctrl-C is seen: a rollback then stops at its
//! next step boundary with an `interrupted` record that `Stack.resume()` finishes.
//! `*_async` methods return coroutines that run on the same runtime once awaited.

mod args;
mod convert;
mod errors;
mod events;
mod log;
mod runtime;

use std::path::PathBuf;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyType};
use rollback_core as rb;

use args::Zero;
use convert::{Assessment, CheckReport, GcReport, Plan, Record, Snapshot, Verification};
use errors::{config, to_py};
use events::Delivery;
use runtime::Call;

/// An id from a `Snapshot`, a `Record` (its rollback id) or a string; `name` names
/// the argument in errors.
fn reference(py: Python<'_>, name: &str, obj: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = obj.cast::<Snapshot>() {
        return Ok(s.get().inner.id.clone());
    }
    if let Ok(r) = obj.cast::<Record>() {
        return Ok(r.get().inner.rollback_id.clone());
    }
    args::string(py, name, obj).map_err(|_| {
        config(
            py,
            format!(
                "`{name}` must be a Snapshot, a Record or an id string, not {}",
                obj.get_type().name().map(|n| n.to_string()).unwrap_or_default()
            ),
        )
    })
}

/// The core's callback of an `on_event` argument and the delivery that feeds it.
fn event_callback(
    py: Python<'_>,
    on_event: Option<&Bound<'_, PyAny>>,
) -> PyResult<(Option<rb::EventCallback>, Option<Delivery>)> {
    events::deliver(args::callback(py, "on_event", on_event)?)
}

/// The scope of `level`, `phases` and `components`, each checked.
fn scope(
    py: Python<'_>,
    level: Option<&Bound<'_, PyAny>>,
    phases: Option<&Bound<'_, PyAny>>,
    components: Option<&Bound<'_, PyAny>>,
) -> PyResult<rb::Scope> {
    let level = args::opt_string(py, "level", level)?;
    let phases = args::ints(py, "phases", phases)?;
    let components = args::strings(py, "components", components)?;
    rb::Scope::from_parts(level.as_deref(), phases.unwrap_or_default(), components.unwrap_or_default())
        .map_err(|e| to_py(py, e))
}

fn symptoms(
    py: Python<'_>,
    error_rate: &Bound<'_, PyAny>,
    perf_degradation: &Bound<'_, PyAny>,
    latency_ms: Option<&Bound<'_, PyAny>>,
    data_impact: &Bound<'_, PyAny>,
    security: Option<&Bound<'_, PyAny>>,
) -> PyResult<rb::Symptoms> {
    let data_impact = args::string(py, "data_impact", data_impact)?.parse().map_err(|e| to_py(py, e))?;
    Ok(rb::Symptoms {
        error_rate: args::number(py, "error_rate", error_rate)?,
        perf_degradation: args::number(py, "perf_degradation", perf_degradation)?,
        latency_ms: args::opt_millis(py, "latency_ms", latency_ms)?,
        data_impact,
        security: args::flag(py, "security", security, false)?,
    })
}

/// Applies the decision matrix with the default thresholds.
///
/// `error_rate` and `perf_degradation` are fractions (0.31 for 31 %), `latency_ms`
/// the observed latency (milliseconds, or a `timedelta`), `data_impact` one of `none`, `corruption`, `loss`, and
/// `security` whether a security issue is present (always critical). The worst
/// signal wins. Returns an `Assessment` with `.severity`, `.decision`, `.reasons`.
#[pyfunction]
#[pyo3(
    signature = (*, error_rate=None, perf_degradation=None, latency_ms=None, data_impact=None, security=None),
    text_signature = "(*, error_rate=0.0, perf_degradation=0.0, latency_ms=None, data_impact='none', security=False)"
)]
fn assess(
    py: Python<'_>,
    error_rate: Option<&Bound<'_, PyAny>>,
    perf_degradation: Option<&Bound<'_, PyAny>>,
    latency_ms: Option<&Bound<'_, PyAny>>,
    data_impact: Option<&Bound<'_, PyAny>>,
    security: Option<&Bound<'_, PyAny>>,
) -> PyResult<Assessment> {
    let s = symptoms_or_defaults(py, error_rate, perf_degradation, latency_ms, data_impact, security)?;
    Ok(ok_or_raise(py, rb::assess(&s, &rb::Thresholds::default()))?.into())
}

/// [`symptoms`] with the defaults of `assess`'s signature: rates 0, no data impact.
fn symptoms_or_defaults(
    py: Python<'_>,
    error_rate: Option<&Bound<'_, PyAny>>,
    perf_degradation: Option<&Bound<'_, PyAny>>,
    latency_ms: Option<&Bound<'_, PyAny>>,
    data_impact: Option<&Bound<'_, PyAny>>,
    security: Option<&Bound<'_, PyAny>>,
) -> PyResult<rb::Symptoms> {
    let zero = 0.0_f64.into_pyobject(py)?.into_any();
    let none = "none".into_pyobject(py)?.into_any();
    symptoms(
        py,
        error_rate.unwrap_or(&zero),
        perf_degradation.unwrap_or(&zero),
        latency_ms,
        data_impact.unwrap_or(&none),
        security,
    )
}

fn ok_or_raise<T>(py: Python<'_>, r: rb::Result<T>) -> PyResult<T> {
    r.map_err(|e| to_py(py, e))
}

/// Ctrl-C during a blocking rollback, drill or resume: the call was asked to stop at
/// its next step boundary, and the `KeyboardInterrupt` carries the `interrupted`
/// record as `.record` (None when a second Ctrl-C stopped it in the middle of a step).
fn record_interrupted(py: Python<'_>, signal: &PyErr, result: Option<rb::Result<rb::Record>>) -> PyResult<()> {
    let value = signal.value(py);
    let (note, record) = match result {
        Some(Ok(rec)) if rec.status != rb::Status::Interrupted => {
            // It had ended when the signal came (while its events were being delivered).
            let note = format!(
                "rollback {} had ended (status {}); the events not delivered yet were dropped",
                rec.rollback_id,
                rec.status.as_str()
            );
            (note, Some(Py::new(py, Record { inner: rec })?.into_any()))
        }
        Some(Ok(rec)) => {
            let note = format!(
                "rollback {} stopped at a step boundary (status {}); finish it with stack.resume({:?})",
                rec.rollback_id,
                rec.status.as_str(),
                rec.rollback_id
            );
            (note, Some(Py::new(py, Record { inner: rec })?.into_any()))
        }
        Some(Err(e)) => (format!("interrupted; the call then failed: {e}"), None),
        None => {
            ("stopped in the middle of a step; the journal lets stack.resume(\"latest\") finish it".to_string(), None)
        }
    };
    let _ = value.setattr("record", record);
    if value.str().map(|s| s.to_string()).unwrap_or_default().is_empty() {
        let _ = value.setattr("args", (note.clone(),));
    }
    tracing::warn!("{note}");
    Ok(())
}

/// Ctrl-C during a blocking watch: the `KeyboardInterrupt` carries the watch's
/// report as `.report`.
fn report_interrupted(py: Python<'_>, signal: &PyErr, result: Option<rb::Result<rb::WatchReport>>) -> PyResult<()> {
    let report = match result {
        Some(Ok(r)) => Some(watch_report(r)?),
        _ => None,
    };
    let _ = signal.value(py).setattr("report", report);
    Ok(())
}

fn to_record(inner: rb::Record) -> PyResult<Record> {
    Ok(Record { inner })
}

/// A stack: the components of a `rollback.toml` (or of TOML text given in code),
/// their drivers and the store of snapshots, journals and records.
///
/// Every long method has a blocking form that releases the GIL and an `*_async`
/// form returning a coroutine. `with stack.guard(label=...)` snapshots on entry and
/// rolls back when the block raises.
#[pyclass(frozen, module = "rollback", name = "Stack")]
struct Stack {
    inner: rb::Stack,
}

/// The checked arguments of a rollback or a drill, but its `on_event`.
struct RollbackArgs {
    scope: rb::Scope,
    trigger: Option<String>,
    severity: Option<rb::Severity>,
    no_safety_snapshot: bool,
    step_timeout: Option<std::time::Duration>,
}

#[allow(clippy::too_many_arguments)]
fn rollback_args(
    py: Python<'_>,
    level: Option<&Bound<'_, PyAny>>,
    phases: Option<&Bound<'_, PyAny>>,
    components: Option<&Bound<'_, PyAny>>,
    trigger: Option<&Bound<'_, PyAny>>,
    severity: Option<&Bound<'_, PyAny>>,
    safety_snapshot: Option<&Bound<'_, PyAny>>,
    step_timeout: Option<&Bound<'_, PyAny>>,
) -> PyResult<RollbackArgs> {
    let severity = match args::opt_string(py, "severity", severity)? {
        Some(s) => Some(s.parse::<rb::Severity>().map_err(|e| to_py(py, e))?),
        None => None,
    };
    let scope = scope(py, level, phases, components)?;
    let trigger = args::opt_string(py, "trigger", trigger)?;
    let no_safety_snapshot = !args::flag(py, "safety_snapshot", safety_snapshot, true)?;
    let step_timeout = args::duration(py, "step_timeout", step_timeout, Zero::Refused)?;
    Ok(RollbackArgs { scope, trigger, severity, no_safety_snapshot, step_timeout })
}

#[allow(clippy::too_many_arguments)]
fn rollback_options(
    py: Python<'_>,
    level: Option<&Bound<'_, PyAny>>,
    phases: Option<&Bound<'_, PyAny>>,
    components: Option<&Bound<'_, PyAny>>,
    trigger: Option<&Bound<'_, PyAny>>,
    severity: Option<&Bound<'_, PyAny>>,
    safety_snapshot: Option<&Bound<'_, PyAny>>,
    on_event: Option<&Bound<'_, PyAny>>,
    step_timeout: Option<&Bound<'_, PyAny>>,
) -> PyResult<(rb::RollbackOptions, Option<Delivery>)> {
    let a = rollback_args(py, level, phases, components, trigger, severity, safety_snapshot, step_timeout)?;
    // Last: it starts the delivery thread, which nothing after it may leave behind.
    let (on_event, delivery) = event_callback(py, on_event)?;
    let opts = rb::RollbackOptions {
        scope: a.scope,
        trigger: a.trigger,
        severity: a.severity,
        no_safety_snapshot: a.no_safety_snapshot,
        on_event,
        cancel: rb::CancelToken::new(),
        step_timeout: a.step_timeout,
        watch: None,
    };
    Ok((opts, delivery))
}

#[allow(clippy::too_many_arguments)]
fn watch_options(
    py: Python<'_>,
    snapshot: Option<&Bound<'_, PyAny>>,
    level: Option<&Bound<'_, PyAny>>,
    phases: Option<&Bound<'_, PyAny>>,
    components: Option<&Bound<'_, PyAny>>,
    duration: Option<&Bound<'_, PyAny>>,
    dry_run: Option<&Bound<'_, PyAny>>,
    on_event: Option<&Bound<'_, PyAny>>,
) -> PyResult<(rb::WatchOptions, Option<Delivery>)> {
    let snapshot = snapshot.filter(|s| !s.is_none()).map(|s| reference(py, "snapshot", s)).transpose()?;
    let scope = scope(py, level, phases, components)?;
    let duration = args::duration(py, "duration", duration, Zero::Refused)?;
    let dry_run = args::flag(py, "dry_run", dry_run, false)?;
    let (on_event, delivery) = event_callback(py, on_event)?;
    let opts = rb::WatchOptions { snapshot, scope, duration, dry_run, on_event, cancel: rb::CancelToken::new() };
    Ok((opts, delivery))
}

/// A watch report as a dict, its `record` (when it rolled back) a `Record`.
fn watch_report(r: rb::WatchReport) -> PyResult<Py<PyAny>> {
    let record = r.record.clone();
    let mut v = serde_json::to_value(&r)
        .map_err(|e| PyRuntimeError::new_err(format!("cannot encode the watch report: {e}")))?;
    if let Some(m) = v.as_object_mut() {
        m.remove("record");
    }
    Python::attach(|py| {
        let d = convert::json_to_py(py, &v)?;
        let rec = match record {
            Some(inner) => Py::new(py, Record { inner })?.into_any(),
            None => py.None(),
        };
        d.set_item("record", rec)?;
        Ok(d.unbind())
    })
}

fn env_var(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// `base_dir`, or the current directory, made absolute.
fn base_dir(py: Python<'_>, base_dir: Option<&Bound<'_, PyAny>>) -> PyResult<PathBuf> {
    let base = match args::opt_path(py, "base_dir", base_dir)? {
        Some(d) => d,
        None => std::env::current_dir()
            .map_err(|e| to_py(py, rb::Error::config("cannot read the current directory").with_source(e)))?,
    };
    Ok(std::path::absolute(&base).unwrap_or(base))
}

fn json_result(v: serde_json::Value) -> PyResult<Py<PyAny>> {
    Python::attach(|py| Ok(convert::json_to_py(py, &v)?.unbind()))
}

#[pymethods]
impl Stack {
    /// Loads `rollback.toml` (relative paths in it resolve beside the file).
    #[classmethod]
    fn load(_cls: &Bound<'_, PyType>, py: Python<'_>, path: &Bound<'_, PyAny>) -> PyResult<Stack> {
        let path = args::path(py, "path", path)?;
        let inner = ok_or_raise(py, py.detach(|| rb::Stack::load(path)))?;
        Ok(Stack { inner })
    }

    /// Builds a stack from TOML text, as if it were a `rollback.toml` in `base_dir`
    /// (default: the current directory). `${ENV}` references are expanded.
    #[classmethod]
    #[pyo3(signature = (text, base_dir=None))]
    fn from_toml(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        text: &Bound<'_, PyAny>,
        base_dir: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Stack> {
        let text = args::string(py, "text", text)?;
        let base = self::base_dir(py, base_dir)?;
        let inner = py.detach(|| {
            let cfg = rb::StackConfig::from_toml_str(&text, None, &base, &env_var)?;
            rb::Stack::new(cfg, &rb::Registry::with_default_drivers())
        });
        Ok(Stack { inner: ok_or_raise(py, inner)? })
    }

    /// Builds a stack from a dict shaped like `rollback.toml`
    /// (`{"store": {...}, "rto": {...}, "component": [{"name": ..., "driver": ...}]}`).
    /// Paths may be `pathlib.Path`s and durations `timedelta`s.
    #[classmethod]
    #[pyo3(signature = (config, base_dir=None))]
    fn from_dict(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        config: &Bound<'_, PyAny>,
        base_dir: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Stack> {
        let value = args::config_json(py, "config", config)?;
        let base = self::base_dir(py, base_dir)?;
        let inner = py.detach(|| {
            let cfg = rb::StackConfig::from_json(value, &base, &env_var)?;
            rb::Stack::new(cfg, &rb::Registry::with_default_drivers())
        });
        Ok(Stack { inner: ok_or_raise(py, inner)? })
    }

    /// Component names, in config order.
    #[getter]
    fn components(&self) -> Vec<String> {
        self.inner.config().components.iter().map(|c| c.name.clone()).collect()
    }

    /// Where snapshots, journals and records live.
    #[getter]
    fn store_path(&self) -> PathBuf {
        self.inner.config().store_path.clone()
    }

    /// The config file, or None for a stack built in code.
    #[getter]
    fn config_file(&self) -> Option<PathBuf> {
        self.inner.config().file.clone()
    }

    /// Applies the decision matrix with this stack's `[decision]` thresholds.
    #[pyo3(
        signature = (*, error_rate=None, perf_degradation=None, latency_ms=None, data_impact=None, security=None),
        text_signature = "($self, *, error_rate=0.0, perf_degradation=0.0, latency_ms=None, data_impact='none', security=False)"
    )]
    fn assess(
        &self,
        py: Python<'_>,
        error_rate: Option<&Bound<'_, PyAny>>,
        perf_degradation: Option<&Bound<'_, PyAny>>,
        latency_ms: Option<&Bound<'_, PyAny>>,
        data_impact: Option<&Bound<'_, PyAny>>,
        security: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Assessment> {
        let s = symptoms_or_defaults(py, error_rate, perf_degradation, latency_ms, data_impact, security)?;
        Ok(ok_or_raise(py, self.inner.assess(&s))?.into())
    }

    /// Every snapshot, oldest first.
    fn list(&self, py: Python<'_>) -> PyResult<Vec<Snapshot>> {
        let s = self.inner.clone();
        let all = ok_or_raise(py, py.detach(move || s.list()))?;
        Ok(all.into_iter().map(|inner| Snapshot { inner }).collect())
    }

    /// One snapshot by id, unique prefix, `latest` or `last-good`.
    fn show(&self, py: Python<'_>, snapshot: &Bound<'_, PyAny>) -> PyResult<Snapshot> {
        let r = reference(py, "snapshot", snapshot)?;
        let s = self.inner.clone();
        Ok(Snapshot { inner: ok_or_raise(py, py.detach(move || s.resolve(&r)))? })
    }

    /// Runs the preflight of a rollback (artifacts checksummed, targets reachable)
    /// without changing anything, and returns its plan.
    #[pyo3(signature = (snapshot, *, level=None, phases=None, components=None))]
    fn dry_run(
        &self,
        py: Python<'_>,
        snapshot: &Bound<'_, PyAny>,
        level: Option<&Bound<'_, PyAny>>,
        phases: Option<&Bound<'_, PyAny>>,
        components: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Plan> {
        let r = reference(py, "snapshot", snapshot)?;
        let sc = scope(py, level, phases, components)?;
        let s = self.inner.clone();
        Call::new(async move { s.dry_run(&r, &sc).await }, |inner| Ok(Plan { inner })).wait(py)
    }

    /// Past records (rollbacks and drills), oldest first.
    fn history(&self, py: Python<'_>) -> PyResult<Vec<Record>> {
        let s = self.inner.clone();
        let all = ok_or_raise(py, py.detach(move || s.history()))?;
        Ok(all.into_iter().map(|inner| Record { inner }).collect())
    }

    /// One record by id, unique prefix, `latest`, or path.
    fn record(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<Record> {
        let r = reference(py, "id", id)?;
        let s = self.inner.clone();
        Ok(Record { inner: ok_or_raise(py, py.detach(move || s.record(&r)))? })
    }

    /// A context manager that takes a snapshot on entry (given to `as`) and, when
    /// the block raises, rolls back to it before the exception propagates, with
    /// the rollback's `Record` as its `rollback_record` attribute (or the error that
    /// stopped the rollback as `rollback_error`). A block that ends normally changes
    /// nothing.
    ///
    /// `label`, `components` and `on_event` go to the snapshot; `components`,
    /// `level`, `phases`, `trigger` (default: the exception's class name),
    /// `severity`, `safety_snapshot`, `on_event` and `step_timeout` to the rollback.
    /// Every argument is checked here, before the snapshot.
    #[pyo3(
        signature = (*, label=None, components=None, level=None, phases=None, trigger=None, severity=None, safety_snapshot=None, on_event=None, step_timeout=None),
        text_signature = "($self, *, label=None, components=None, level=None, phases=None, trigger=None, severity=None, safety_snapshot=True, on_event=None, step_timeout=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn guard<'py>(
        slf: &Bound<'py, Self>,
        label: Option<&Bound<'py, PyAny>>,
        components: Option<&Bound<'py, PyAny>>,
        level: Option<&Bound<'py, PyAny>>,
        phases: Option<&Bound<'py, PyAny>>,
        trigger: Option<&Bound<'py, PyAny>>,
        severity: Option<&Bound<'py, PyAny>>,
        safety_snapshot: Option<&Bound<'py, PyAny>>,
        on_event: Option<&Bound<'py, PyAny>>,
        step_timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let a =
            GuardArgs { label, components, level, phases, trigger, severity, safety_snapshot, on_event, step_timeout };
        a.guard(slf, "Guard")
    }

    /// `guard()` for `async with`: the snapshot and the rollback are the `*_async`
    /// calls, so the event loop runs on while they do. A task cancelled inside the
    /// block rolls back too.
    #[pyo3(
        signature = (*, label=None, components=None, level=None, phases=None, trigger=None, severity=None, safety_snapshot=None, on_event=None, step_timeout=None),
        text_signature = "($self, *, label=None, components=None, level=None, phases=None, trigger=None, severity=None, safety_snapshot=True, on_event=None, step_timeout=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn guard_async<'py>(
        slf: &Bound<'py, Self>,
        label: Option<&Bound<'py, PyAny>>,
        components: Option<&Bound<'py, PyAny>>,
        level: Option<&Bound<'py, PyAny>>,
        phases: Option<&Bound<'py, PyAny>>,
        trigger: Option<&Bound<'py, PyAny>>,
        severity: Option<&Bound<'py, PyAny>>,
        safety_snapshot: Option<&Bound<'py, PyAny>>,
        on_event: Option<&Bound<'py, PyAny>>,
        step_timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let a =
            GuardArgs { label, components, level, phases, trigger, severity, safety_snapshot, on_event, step_timeout };
        a.guard(slf, "AsyncGuard")
    }

    fn __repr__(&self) -> String {
        format!(
            "Stack(config_file={}, components={:?})",
            self.inner
                .config()
                .file
                .as_ref()
                .map(|f| format!("{:?}", f.display().to_string()))
                .unwrap_or_else(|| "None".into()),
            self.components()
        )
    }
}

/// The arguments of `Stack.guard()` / `guard_async()`, as given.
struct GuardArgs<'a, 'py> {
    label: Option<&'a Bound<'py, PyAny>>,
    components: Option<&'a Bound<'py, PyAny>>,
    level: Option<&'a Bound<'py, PyAny>>,
    phases: Option<&'a Bound<'py, PyAny>>,
    trigger: Option<&'a Bound<'py, PyAny>>,
    severity: Option<&'a Bound<'py, PyAny>>,
    safety_snapshot: Option<&'a Bound<'py, PyAny>>,
    on_event: Option<&'a Bound<'py, PyAny>>,
    step_timeout: Option<&'a Bound<'py, PyAny>>,
}

impl<'py> GuardArgs<'_, 'py> {
    /// Checks every argument as `snapshot()` and `rollback()` would (a bad one must
    /// fail here, not when the block has raised and the rollback is needed), then
    /// builds the `rollback._guard` class `class` with the arguments of each call.
    fn guard(&self, stack: &Bound<'py, Stack>, class: &str) -> PyResult<Bound<'py, PyAny>> {
        let py = stack.py();
        args::opt_string(py, "label", self.label)?;
        args::strings(py, "components", self.components)?;
        rollback_args(
            py,
            self.level,
            self.phases,
            self.components,
            self.trigger,
            self.severity,
            self.safety_snapshot,
            self.step_timeout,
        )?;
        args::callback(py, "on_event", self.on_event)?;
        let given = |d: &Bound<'py, PyDict>, k: &str, v: Option<&Bound<'py, PyAny>>| -> PyResult<()> {
            match v.filter(|v| !v.is_none()) {
                Some(v) => d.set_item(k, v),
                None => Ok(()),
            }
        };
        let snapshot = PyDict::new(py);
        given(&snapshot, "label", self.label)?;
        given(&snapshot, "components", self.components)?;
        given(&snapshot, "on_event", self.on_event)?;
        let rollback = PyDict::new(py);
        given(&rollback, "components", self.components)?;
        given(&rollback, "level", self.level)?;
        given(&rollback, "phases", self.phases)?;
        given(&rollback, "trigger", self.trigger)?;
        given(&rollback, "severity", self.severity)?;
        given(&rollback, "safety_snapshot", self.safety_snapshot)?;
        given(&rollback, "on_event", self.on_event)?;
        given(&rollback, "step_timeout", self.step_timeout)?;
        py.import("rollback._guard")?.getattr(class)?.call1((stack, snapshot, rollback))
    }
}

/// Declares a blocking `Stack` method and its `*_async` twin from one body. The body
/// checks the arguments and returns the [`Call`]; the blocking method waits for it
/// (GIL released, Ctrl-C handled), the twin returns its coroutine. So the
/// two forms cannot drift apart in what they accept, check or return.
///
/// A flag's default is `None` in the signature (an argument taken as any object, so
/// that `1` for `True` is a `ConfigError` naming it, not PyO3's `TypeError`);
/// `text_signature` then shows the default it stands for.
macro_rules! sync_and_async {
    ($(
        $(#[doc = $doc:literal])*
        #[pyo3(signature = $sig:tt $(, text_signature = $ts:literal)?)]
        $(#[async_doc = $adoc:literal])?
        fn $name:ident / $aname:ident (&$self:ident, $py:ident $(, $arg:ident : $ty:ty)* $(,)?) -> $out:ty $body:block
    )*) => {
        #[pymethods]
        impl Stack {
            $(
                $(#[doc = $doc])*
                #[pyo3(signature = $sig $(, text_signature = $ts)?)]
                #[allow(clippy::too_many_arguments)]
                fn $name(&$self, $py: Python<'_>, $($arg: $ty),*) -> PyResult<$out> {
                    let call: Call<_, $out> = $body;
                    call.wait($py)
                }

                #[doc = concat!("`", stringify!($name), "()` as a coroutine: nothing runs until it is awaited or made a task. Bad arguments raise at once." $(, " ", $adoc)?)]
                #[pyo3(signature = $sig $(, text_signature = $ts)?)]
                #[allow(clippy::too_many_arguments)]
                fn $aname<'py>(&$self, $py: Python<'py>, $($arg: $ty),*) -> PyResult<Bound<'py, PyAny>> {
                    let call: Call<_, $out> = $body;
                    call.coroutine($py)
                }
            )*
        }
    };
}

sync_and_async! {
    /// Captures the components (all unless `components` is given) and returns the
    /// `Snapshot`. `on_event` receives progress events (dicts) as they happen.
    #[pyo3(signature = (*, label=None, components=None, on_event=None))]
    #[async_doc = "Cancelling the task abandons the capture; nothing is listed."]
    fn snapshot / snapshot_async(
        &self,
        py,
        label: Option<&Bound<'_, PyAny>>,
        components: Option<&Bound<'_, PyAny>>,
        on_event: Option<&Bound<'_, PyAny>>,
    ) -> Snapshot {
        let label = args::opt_string(py, "label", label)?;
        let components = args::strings(py, "components", components)?.unwrap_or_default();
        let (on_event, delivery) = event_callback(py, on_event)?;
        let s = self.inner.clone();
        let opts = rb::SnapshotOptions { label, components, on_event };
        Call::new(async move { s.snapshot(opts).await }, |inner| Ok(Snapshot { inner })).delivering(delivery)
    }

    /// The steps a rollback to `snapshot` would run for the scope; changes nothing.
    /// `level` defaults to `component` when `components` are given, `phase` when
    /// `phases` are, `complete` otherwise. `str(plan)` is the preview.
    #[pyo3(signature = (snapshot, *, level=None, phases=None, components=None))]
    fn plan / plan_async(
        &self,
        py,
        snapshot: &Bound<'_, PyAny>,
        level: Option<&Bound<'_, PyAny>>,
        phases: Option<&Bound<'_, PyAny>>,
        components: Option<&Bound<'_, PyAny>>,
    ) -> Plan {
        let r = reference(py, "snapshot", snapshot)?;
        let sc = scope(py, level, phases, components)?;
        let s = self.inner.clone();
        Call::new(async move { s.plan(&r, &sc).await }, |inner| Ok(Plan { inner }))
    }

    /// Rolls back to `snapshot` and returns the `Record`, whatever its status
    /// (`succeeded`, `failed`, `compensated`, `interrupted`). Raises only when nothing
    /// was changed (bad input, failed preflight, lock held).
    ///
    /// Ctrl-C stops it at the next step boundary and raises `KeyboardInterrupt` whose
    /// `.record` is the `interrupted` record; `resume()` finishes it.
    #[pyo3(
        signature = (snapshot, *, level=None, phases=None, components=None, trigger=None, severity=None, safety_snapshot=None, on_event=None, step_timeout=None),
        text_signature = "($self, snapshot, *, level=None, phases=None, components=None, trigger=None, severity=None, safety_snapshot=True, on_event=None, step_timeout=None)"
    )]
    #[async_doc = "Cancelling the task stops the rollback at its next step boundary (its record is then `interrupted`)."]
    fn rollback / rollback_async(
        &self,
        py,
        snapshot: &Bound<'_, PyAny>,
        level: Option<&Bound<'_, PyAny>>,
        phases: Option<&Bound<'_, PyAny>>,
        components: Option<&Bound<'_, PyAny>>,
        trigger: Option<&Bound<'_, PyAny>>,
        severity: Option<&Bound<'_, PyAny>>,
        safety_snapshot: Option<&Bound<'_, PyAny>>,
        on_event: Option<&Bound<'_, PyAny>>,
        step_timeout: Option<&Bound<'_, PyAny>>,
    ) -> Record {
        let r = reference(py, "snapshot", snapshot)?;
        let (o, delivery) = rollback_options(
            py,
            level,
            phases,
            components,
            trigger,
            severity,
            safety_snapshot,
            on_event,
            step_timeout,
        )?;
        let cancel = o.cancel.clone();
        let s = self.inner.clone();
        Call::new(async move { s.rollback(&r, o).await }, to_record)
            .cancellable(cancel, record_interrupted)
            .delivering(delivery)
    }

    /// Watches the stack with the `[watch]` probes of its config and rolls back to
    /// `snapshot` (default `last-good`) when the policy says so, then stops; or until
    /// `duration` (`"10m"`, seconds, a `timedelta`) runs out. `dry_run` decides and
    /// notifies, changing nothing. Decisions arrive through `on_event` as `watch_*`
    /// events. Returns a dict: `outcome` (`elapsed`, `stopped`, `rolled_back`,
    /// `would_roll_back`, `failed`), `rounds`, `decisions`, `record` (a `Record` when
    /// it rolled back). Ctrl-C stops it and raises `KeyboardInterrupt` whose
    /// `.report` is that dict.
    #[pyo3(
        signature = (snapshot=None, *, level=None, phases=None, components=None, duration=None, dry_run=None, on_event=None),
        text_signature = "($self, snapshot=None, *, level=None, phases=None, components=None, duration=None, dry_run=False, on_event=None)"
    )]
    #[async_doc = "Cancelling the task stops the watch (and a rollback it started, at its next step boundary)."]
    fn watch / watch_async(
        &self,
        py,
        snapshot: Option<&Bound<'_, PyAny>>,
        level: Option<&Bound<'_, PyAny>>,
        phases: Option<&Bound<'_, PyAny>>,
        components: Option<&Bound<'_, PyAny>>,
        duration: Option<&Bound<'_, PyAny>>,
        dry_run: Option<&Bound<'_, PyAny>>,
        on_event: Option<&Bound<'_, PyAny>>,
    ) -> Py<PyAny> {
        let (o, delivery) = watch_options(py, snapshot, level, phases, components, duration, dry_run, on_event)?;
        let cancel = o.cancel.clone();
        let s = self.inner.clone();
        Call::new(async move { s.watch(o).await }, watch_report)
            .cancellable(cancel, report_interrupted)
            .delivering(delivery)
    }

    /// Compares the current state with `snapshot` (every component of it, or
    /// `components`). The `Verification` is truthy when equal; `.drift` says what differs.
    #[pyo3(signature = (snapshot, *, components=None))]
    fn verify / verify_async(
        &self,
        py,
        snapshot: &Bound<'_, PyAny>,
        components: Option<&Bound<'_, PyAny>>,
    ) -> Verification {
        let r = reference(py, "snapshot", snapshot)?;
        let components = args::strings(py, "components", components)?.unwrap_or_default();
        let s = self.inner.clone();
        Call::new(async move { s.verify(&r, &components).await }, |inner| Ok(Verification { inner }))
    }

    /// Rehearsal: snapshot, perturb, roll back, verify, timed against the objective.
    /// Returns the drill's `Record`; Ctrl-C behaves as in `rollback()`.
    #[pyo3(
        signature = (*, level=None, phases=None, components=None, trigger=None, safety_snapshot=None, on_event=None, step_timeout=None),
        text_signature = "($self, *, level=None, phases=None, components=None, trigger=None, safety_snapshot=True, on_event=None, step_timeout=None)"
    )]
    #[async_doc = "Cancelling the task stops the drill at its next step boundary."]
    fn drill / drill_async(
        &self,
        py,
        level: Option<&Bound<'_, PyAny>>,
        phases: Option<&Bound<'_, PyAny>>,
        components: Option<&Bound<'_, PyAny>>,
        trigger: Option<&Bound<'_, PyAny>>,
        safety_snapshot: Option<&Bound<'_, PyAny>>,
        on_event: Option<&Bound<'_, PyAny>>,
        step_timeout: Option<&Bound<'_, PyAny>>,
    ) -> Record {
        let (o, delivery) =
            rollback_options(py, level, phases, components, trigger, None, safety_snapshot, on_event, step_timeout)?;
        let cancel = o.cancel.clone();
        let s = self.inner.clone();
        Call::new(async move { s.drill(o).await }, to_record)
            .cancellable(cancel, record_interrupted)
            .delivering(delivery)
    }

    /// Finishes a rollback interrupted by Ctrl-C, a crash or a kill, from its journal.
    /// `rollback_id` may be a `Record`, an id, or `latest`. Ctrl-C (or cancelling
    /// `resume_async`) stops it again at the next step boundary.
    #[pyo3(signature = (rollback_id=None, *, on_event=None))]
    fn resume / resume_async(
        &self,
        py,
        rollback_id: Option<&Bound<'_, PyAny>>,
        on_event: Option<&Bound<'_, PyAny>>,
    ) -> Record {
        let id = rollback_id
            .filter(|r| !r.is_none())
            .map(|r| reference(py, "rollback_id", r))
            .transpose()?
            .unwrap_or_else(|| "latest".into());
        let (cb, delivery) = event_callback(py, on_event)?;
        let s = self.inner.clone();
        let cancel = rb::CancelToken::new();
        let c2 = cancel.clone();
        Call::new(async move { s.resume_with(&id, cb, c2).await }, to_record)
            .cancellable(cancel, record_interrupted)
            .delivering(delivery)
    }

    /// Preflight of the stack: config valid, every driver reachable, age of the newest
    /// snapshot and drill, unfinished rollbacks. Truthy when everything is reachable.
    #[pyo3(signature = ())]
    fn check / check_async(&self, py) -> CheckReport {
        let s = self.inner.clone();
        Call::new(async move { s.check().await }, |inner| Ok(CheckReport { inner }))
    }

    /// Probes each component's health checks once (all components, or `components`):
    /// `{component: [{"check": str, "ok": bool, "detail": str}, ...]}`.
    #[pyo3(signature = (*, components=None))]
    fn health / health_async(&self, py, components: Option<&Bound<'_, PyAny>>) -> Py<PyAny> {
        let components = args::strings(py, "components", components)?.unwrap_or_default();
        for n in &components {
            ok_or_raise(py, self.inner.config().component(n))?;
        }
        let s = self.inner.clone();
        Call::new(
            async move {
                let r = s.health(&components).await?;
                serde_json::to_value(r)
                    .map_err(|e| rb::Error::unexpected("cannot encode health results").with_source(e))
            },
            json_result,
        )
    }

    /// Retention: keeps the newest `keep` snapshots and those younger than `max_age`
    /// (`"7d"`, `"12h"`, seconds or a `timedelta`); never the newest one, nor one an
    /// unfinished rollback uses.
    #[pyo3(signature = (*, keep=None, max_age=None))]
    fn gc / gc_async(&self, py, keep: Option<&Bound<'_, PyAny>>, max_age: Option<&Bound<'_, PyAny>>) -> GcReport {
        let keep = args::count(py, "keep", keep, 1)?;
        let max_age = args::duration(py, "max_age", max_age, Zero::Allowed)?;
        let s = self.inner.clone();
        Call::new(async move { s.gc(keep, max_age).await }, |inner| Ok(GcReport { inner }))
    }
}

/// Closes the way back into Python for the module's threads: registered with
/// `atexit`, which runs before the interpreter finalizes.
#[pyfunction]
fn _close(py: Python<'_>) {
    py.detach(runtime::close_gate);
}

fn py_atexit(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let close = wrap_pyfunction!(_close, m)?;
    m.py().import("atexit")?.call_method1("register", (close,))?;
    Ok(())
}

/// The native part of the `rollback` package.
#[pymodule]
fn _rollback(m: &Bound<'_, PyModule>) -> PyResult<()> {
    log::install();
    errors::register(m)?;
    m.add_class::<Stack>()?;
    m.add_class::<Snapshot>()?;
    m.add_class::<Plan>()?;
    m.add_class::<Record>()?;
    m.add_class::<Verification>()?;
    m.add_class::<Assessment>()?;
    m.add_class::<CheckReport>()?;
    m.add_class::<GcReport>()?;
    m.add_function(wrap_pyfunction!(assess, m)?)?;
    // Before the interpreter finalizes, the module's threads must stop reaching it.
    py_atexit(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
