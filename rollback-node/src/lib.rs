//! Node.js binding of rollback: the npm package `rollback`.
//!
//! Conversion and runtime glue only; every decision is rollback-core's. Long calls are
//! futures on napi's tokio runtime, so they return Promises and never block the event
//! loop. Errors cross as a marker-prefixed JSON reason that `index.js` turns
//! into `RollbackError`s with `code` and `component` (napi's async rejections carry only
//! a status and a message).

mod args;
mod convert;
mod inflight;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use rollback_core as rb;
use rollback_core::RollbackPlan as _;

use args::{opt, req, Field, Kind};
pub use convert::*;

/// Prefix of the reason of every error raised by the core; `index.js` looks for it.
const ERROR_PREFIX: &str = "ROLLBACK_ERROR:";

pub(crate) fn to_napi(e: rb::Error) -> napi::Error {
    let info = serde_json::json!({
        "code": e.kind().code(),
        "component": e.component(),
        "message": e.to_string(),
    });
    napi::Error::new(Status::GenericFailure, format!("{ERROR_PREFIX}{info}"))
}

fn config_error(message: impl Into<String>) -> napi::Error {
    to_napi(rb::Error::config(message))
}

/// Runs blocking store I/O off both the JS thread and the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> rb::Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| to_napi(rb::Error::unexpected("worker thread failed").with_source(e)))?
        .map_err(to_napi)
}

/// The JS callback of `onEvent`: receives the event alone (not Node's `(err, value)`).
pub type EventFn = ThreadsafeFunction<StepEvent, Unknown<'static>, StepEvent, Status, false>;

fn event_callback(f: Option<EventFn>) -> Option<rb::EventCallback> {
    let f = Arc::new(f?);
    Some(Arc::new(move |e: &rb::Event| {
        // Non-blocking: a slow JS callback must never stall a rollback step.
        f.call(StepEvent::from(e), ThreadsafeFunctionCallMode::NonBlocking);
    }))
}

/// `signal.addEventListener(type, listener)`.
type AddEventListener<'a> = Function<'a, FnArgs<(&'a str, Function<'a, (), ()>)>, Unknown<'a>>;

/// An `AbortSignal`, turned on the JS thread into a core `CancelToken` that its
/// 'abort' event cancels. Being `Send`, it can ride into an `async fn`.
pub struct Abort(rb::CancelToken);

impl TypeName for Abort {
    fn type_name() -> &'static str {
        "AbortSignal"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ValidateNapiValue for Abort {}

#[allow(unsafe_code)] // `FromNapiValue` is an unsafe trait method by napi's design.
impl FromNapiValue for Abort {
    unsafe fn from_napi_value(env: napi::sys::napi_env, value: napi::sys::napi_value) -> Result<Self> {
        // SAFETY: called by napi on the JS thread with a live value of this env.
        let signal = unsafe { Object::from_napi_value(env, value)? };
        let token = rb::CancelToken::new();
        if signal.get_named_property::<Option<bool>>("aborted")?.unwrap_or(false) {
            token.cancel();
            return Ok(Abort(token));
        }
        let env = Env::from_raw(env);
        let t = token.clone();
        let listener = env.create_function_from_closure::<(), (), _>("onAbort", move |_| {
            t.cancel();
            Ok(())
        })?;
        let add: AddEventListener = signal
            .get_named_property("addEventListener")
            .map_err(|_| Error::new(Status::InvalidArg, "`signal` must be an AbortSignal".to_string()))?;
        add.apply(signal, FnArgs::from(("abort", listener)))?;
        Ok(Abort(token))
    }
}

fn scope(level: Option<String>, phases: Option<Vec<i64>>, components: Option<Vec<String>>) -> Result<rb::Scope> {
    rb::Scope::from_parts(level.as_deref(), phases.unwrap_or_default(), components.unwrap_or_default()).map_err(to_napi)
}

/// A positive number of milliseconds as a duration; `what` names it in errors.
fn millis(what: &str, ms: f64) -> Result<std::time::Duration> {
    if !(ms.is_finite() && ms > 0.0) {
        return Err(config_error(format!("`{what}` = {ms} must be a positive number of milliseconds")));
    }
    rb::config::duration_from_secs(ms / 1000.0).map_err(|e| config_error(format!("`{what}`: {e}")))
}

fn rollback_options(o: RollbackOptions) -> Result<rb::RollbackOptions> {
    let step_timeout = match o.step_timeout_ms {
        Some(ms) => Some(millis("options.stepTimeoutMs", ms)?),
        None => None,
    };
    Ok(rb::RollbackOptions {
        scope: scope(o.level, o.phases, o.components)?,
        trigger: o.trigger,
        severity: o.severity.as_deref().map(str::parse::<rb::Severity>).transpose().map_err(to_napi)?,
        no_safety_snapshot: o.safety_snapshot == Some(false),
        on_event: event_callback(o.on_event),
        cancel: o.signal.map(|a| a.0).unwrap_or_default(),
        step_timeout,
        watch: None,
    })
}

fn watch_options(o: WatchOptions) -> Result<rb::WatchOptions> {
    let duration = match o.duration_ms {
        Some(ms) => Some(millis("options.durationMs", ms)?),
        None => None,
    };
    Ok(rb::WatchOptions {
        snapshot: o.snapshot,
        scope: scope(o.level, o.phases, o.components)?,
        duration,
        dry_run: o.dry_run == Some(true),
        on_event: event_callback(o.on_event),
        cancel: o.signal.map(|a| a.0).unwrap_or_default(),
    })
}

fn resolve_base_dir(dir: Option<String>) -> Result<PathBuf> {
    match dir {
        Some(d) => Ok(PathBuf::from(d)),
        None => std::env::current_dir()
            .map_err(|e| to_napi(rb::Error::config("cannot read the current directory").with_source(e))),
    }
}

fn env_var(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// Runs `fut` on napi's runtime; the Promise of its result.
///
/// Why not `#[napi] async fn` with `&self`: napi-rs hands the future a reference into
/// the JS object that wraps the `Stack`, and when a worker thread ends, Node finalizes
/// every object of its environment, references or not, and the Rust `Stack` is freed
/// under the future still running on the shared runtime (four workers terminated in
/// `snapshot()` aborted the process in `Store::snapshot_path`). So each method checks
/// its arguments on the JS thread and moves what it needs, a clone of the `Stack`
/// included, into a future that owns it all.
fn promise<T, F>(env: &Env, fut: F) -> Result<AsyncBlock<T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    AsyncBlockBuilder::new(fut).build(env)
}

/// [`promise`] for a call that `cancel` stops at a step boundary: the end of the JS
/// environment that started it (a worker ending) waits for it to write its record (see
/// `inflight`).
fn tracked_promise<T, F>(env: &Env, cancel: &rb::CancelToken, fut: F) -> Result<AsyncBlock<T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    let tracked = inflight::track(env, cancel)?;
    promise(env, async move {
        let r = fut.await;
        drop(tracked);
        r
    })
}

const SYMPTOMS: &[Field] = &[
    req("errorRate", Kind::Number),
    req("perfDegradation", Kind::Number),
    opt("latencyMs", Kind::Number),
    opt("dataImpact", Kind::Str),
    opt("security", Kind::Bool),
];
const SNAPSHOT_OPTIONS: &[Field] =
    &[opt("label", Kind::Str), opt("components", Kind::Strs), opt("onEvent", Kind::Func)];
const SCOPE_OPTIONS: &[Field] = &[opt("level", Kind::Str), opt("phases", Kind::Ints), opt("components", Kind::Strs)];
const ROLLBACK_OPTIONS: &[Field] = &[
    opt("level", Kind::Str),
    opt("phases", Kind::Ints),
    opt("components", Kind::Strs),
    opt("trigger", Kind::Str),
    opt("severity", Kind::Str),
    opt("safetySnapshot", Kind::Bool),
    opt("stepTimeoutMs", Kind::Number),
    opt("onEvent", Kind::Func),
    opt("signal", Kind::Signal),
];
const WATCH_OPTIONS: &[Field] = &[
    opt("snapshot", Kind::Str),
    opt("level", Kind::Str),
    opt("phases", Kind::Ints),
    opt("components", Kind::Strs),
    opt("durationMs", Kind::Number),
    opt("dryRun", Kind::Bool),
    opt("onEvent", Kind::Func),
    opt("signal", Kind::Signal),
];
const VERIFY_OPTIONS: &[Field] = &[opt("components", Kind::Strs), opt("throwOnDrift", Kind::Bool)];
const RESUME_OPTIONS: &[Field] = &[opt("onEvent", Kind::Func), opt("signal", Kind::Signal)];
const HEALTH_OPTIONS: &[Field] = &[opt("components", Kind::Strs)];
const GC_OPTIONS: &[Field] = &[opt("keep", Kind::Count), opt("maxAge", Kind::Str)];

/// Applies the decision matrix with the default thresholds (SPEC §7). Synchronous.
#[napi(js_name = "assess", ts_args_type = "symptoms: Symptoms")]
pub fn assess_symptoms(symptoms: Unknown<'_>) -> Result<Assessment> {
    let symptoms: Symptoms = args::object("symptoms", symptoms, SYMPTOMS)?;
    Ok(Assessment::from(rb::assess(&symptoms.try_into()?, &rb::Thresholds::default()).map_err(to_napi)?))
}

/// A stack: the components of `rollback.toml` (or built in code), their drivers and
/// the store.
#[napi]
pub struct Stack {
    inner: rb::Stack,
}

#[napi]
impl Stack {
    /// Loads `rollback.toml` (relative paths in it resolve beside the file).
    #[napi(ts_args_type = "path: string")]
    pub fn load(env: &Env, path: Unknown<'_>) -> Result<AsyncBlock<Stack>> {
        let path = args::string("path", path)?;
        promise(env, async move {
            let inner = blocking(move || rb::Stack::load(path)).await?;
            Ok(Stack { inner })
        })
    }

    /// Builds a stack from TOML text, as if it were a `rollback.toml` in `baseDir`
    /// (default: the current directory).
    #[napi(factory, ts_args_type = "text: string, baseDir?: string | undefined | null")]
    pub fn from_toml(text: Unknown<'_>, base_dir: Option<Unknown<'_>>) -> Result<Stack> {
        let text = args::string("text", text)?;
        let base = resolve_base_dir(args::opt_string("baseDir", base_dir)?)?;
        let cfg = rb::StackConfig::from_toml_str(&text, None, &base, &env_var).map_err(to_napi)?;
        let inner = rb::Stack::new(cfg, &rb::Registry::with_default_drivers()).map_err(to_napi)?;
        Ok(Stack { inner })
    }

    /// Builds a stack from an object shaped like `rollback.toml`
    /// (`{ store, rto, decision, component: [{ name, driver, ... }], notify, watch }`).
    #[napi(factory, ts_args_type = "config: StackConfig, baseDir?: string | undefined | null")]
    pub fn from_config(config: Unknown<'_>, base_dir: Option<Unknown<'_>>) -> Result<Stack> {
        let config = args::json("config", config)?;
        let base = resolve_base_dir(args::opt_string("baseDir", base_dir)?)?;
        let cfg = rb::StackConfig::from_json(config, &base, &env_var).map_err(to_napi)?;
        let inner = rb::Stack::new(cfg, &rb::Registry::with_default_drivers()).map_err(to_napi)?;
        Ok(Stack { inner })
    }

    /// The components, in config order.
    #[napi(getter)]
    pub fn components(&self) -> Vec<ComponentInfo> {
        self.inner.config().components.iter().map(ComponentInfo::from).collect()
    }

    /// Where snapshots, journals and records live.
    #[napi(getter)]
    pub fn store_path(&self) -> String {
        self.inner.config().store_path.display().to_string()
    }

    /// Applies the decision matrix with this stack's `[decision]` thresholds. Synchronous.
    #[napi(ts_args_type = "symptoms: Symptoms")]
    pub fn assess(&self, symptoms: Unknown<'_>) -> Result<Assessment> {
        let symptoms: Symptoms = args::object("symptoms", symptoms, SYMPTOMS)?;
        Ok(Assessment::from(self.inner.assess(&symptoms.try_into()?).map_err(to_napi)?))
    }

    /// Captures the components (all unless `components` is given).
    #[napi(ts_args_type = "options?: SnapshotOptions | undefined | null")]
    pub fn snapshot(&self, env: &Env, options: Option<Unknown<'_>>) -> Result<AsyncBlock<Snapshot>> {
        let o: SnapshotOptions = args::options("options", options, SNAPSHOT_OPTIONS)?.unwrap_or_default();
        let opts = rb::SnapshotOptions {
            label: o.label,
            components: o.components.unwrap_or_default(),
            on_event: event_callback(o.on_event),
        };
        let s = self.inner.clone();
        promise(env, async move {
            let m = s.snapshot(opts).await.map_err(to_napi)?;
            Ok(Snapshot::from(&m))
        })
    }

    /// Every snapshot, oldest first.
    #[napi]
    pub fn list(&self, env: &Env) -> Result<AsyncBlock<Vec<Snapshot>>> {
        let s = self.inner.clone();
        promise(env, async move {
            let all = blocking(move || s.list()).await?;
            Ok(all.iter().map(Snapshot::from).collect())
        })
    }

    /// One snapshot by id, unique prefix, `latest` or `last-good`.
    #[napi(ts_args_type = "snapshot: string")]
    pub fn show(&self, env: &Env, snapshot: Unknown<'_>) -> Result<AsyncBlock<Snapshot>> {
        let snapshot = args::string("snapshot", snapshot)?;
        let s = self.inner.clone();
        promise(env, async move {
            let m = blocking(move || s.resolve(&snapshot)).await?;
            Ok(Snapshot::from(&m))
        })
    }

    /// The steps a rollback to `snapshot` would run for the scope; changes nothing.
    #[napi(ts_args_type = "snapshot: string, options?: ScopeOptions | undefined | null")]
    pub fn plan(&self, env: &Env, snapshot: Unknown<'_>, options: Option<Unknown<'_>>) -> Result<AsyncBlock<Plan>> {
        let snapshot = args::string("snapshot", snapshot)?;
        let o: ScopeOptions = args::options("options", options, SCOPE_OPTIONS)?.unwrap_or_default();
        let sc = scope(o.level, o.phases, o.components)?;
        let s = self.inner.clone();
        promise(env, async move {
            let p = s.plan(&snapshot, &sc).await.map_err(to_napi)?;
            Ok(Plan::from_core(&p, p.render()))
        })
    }

    /// The plan, after running the rollback's preflight (artifacts present and
    /// checksummed, targets reachable); changes nothing. Rejects when preflight fails.
    #[napi(ts_args_type = "snapshot: string, options?: ScopeOptions | undefined | null")]
    pub fn dry_run(&self, env: &Env, snapshot: Unknown<'_>, options: Option<Unknown<'_>>) -> Result<AsyncBlock<Plan>> {
        let snapshot = args::string("snapshot", snapshot)?;
        let o: ScopeOptions = args::options("options", options, SCOPE_OPTIONS)?.unwrap_or_default();
        let sc = scope(o.level, o.phases, o.components)?;
        let s = self.inner.clone();
        promise(env, async move {
            let p = s.dry_run(&snapshot, &sc).await.map_err(to_napi)?;
            Ok(Plan::from_core(&p, p.render()))
        })
    }

    /// Rolls back to `snapshot`. Resolves with the record whatever its status
    /// (`succeeded`, `failed`, `compensated`, or `interrupted` after an abort, or when
    /// the worker thread that started it ends); rejects only when nothing was changed
    /// (bad input, failed preflight, lock held).
    #[napi(ts_args_type = "snapshot: string, options?: RollbackOptions | undefined | null")]
    pub fn rollback(
        &self,
        env: &Env,
        snapshot: Unknown<'_>,
        options: Option<Unknown<'_>>,
    ) -> Result<AsyncBlock<RollbackRecord>> {
        let snapshot = args::string("snapshot", snapshot)?;
        let o: RollbackOptions = args::options("options", options, ROLLBACK_OPTIONS)?.unwrap_or_default();
        let opts = rollback_options(o)?;
        let cancel = opts.cancel.clone();
        let s = self.inner.clone();
        tracked_promise(env, &cancel, async move {
            let r = s.rollback(&snapshot, opts).await.map_err(to_napi)?;
            Ok(RollbackRecord::from(&r))
        })
    }

    /// Watches with the `[watch]` probes of the config and rolls back (or notifies)
    /// when the policy says so, then resolves; or when `durationMs` runs out, or the
    /// `signal` aborts. `dryRun` decides and notifies, changing nothing. Rejects only
    /// on bad input (no `[watch]`, unknown snapshot).
    #[napi(ts_args_type = "options?: WatchOptions | undefined | null")]
    pub fn watch(&self, env: &Env, options: Option<Unknown<'_>>) -> Result<AsyncBlock<WatchReport>> {
        let o: WatchOptions = args::options("options", options, WATCH_OPTIONS)?.unwrap_or_default();
        let opts = watch_options(o)?;
        let cancel = opts.cancel.clone();
        let s = self.inner.clone();
        tracked_promise(env, &cancel, async move {
            let r = s.watch(opts).await.map_err(to_napi)?;
            Ok(WatchReport::from(&r))
        })
    }

    /// Compares the current state with `snapshot`.
    #[napi(ts_args_type = "snapshot: string, options?: VerifyOptions | undefined | null")]
    pub fn verify(
        &self,
        env: &Env,
        snapshot: Unknown<'_>,
        options: Option<Unknown<'_>>,
    ) -> Result<AsyncBlock<Verification>> {
        let snapshot = args::string("snapshot", snapshot)?;
        let o: VerifyOptions = args::options("options", options, VERIFY_OPTIONS)?.unwrap_or_default();
        let components = o.components.unwrap_or_default();
        let throw_on_drift = o.throw_on_drift == Some(true);
        let s = self.inner.clone();
        promise(env, async move {
            let v = s.verify(&snapshot, &components).await.map_err(to_napi)?;
            if throw_on_drift {
                if let Some((c, d)) = v.components.iter().find(|(_, d)| !d.ok) {
                    let msg = format!("differs from snapshot {}: {}", v.snapshot_id, d.differences.join("; "));
                    return Err(to_napi(rb::Error::new(rb::ErrorKind::VerificationFailed, msg).with_component(c)));
                }
            }
            Ok(Verification::from(&v))
        })
    }

    /// Rehearsal: snapshot, perturb, roll back, verify; the record says how long.
    #[napi(ts_args_type = "options?: RollbackOptions | undefined | null")]
    pub fn drill(&self, env: &Env, options: Option<Unknown<'_>>) -> Result<AsyncBlock<RollbackRecord>> {
        let o: RollbackOptions = args::options("options", options, ROLLBACK_OPTIONS)?.unwrap_or_default();
        let opts = rollback_options(o)?;
        let cancel = opts.cancel.clone();
        let s = self.inner.clone();
        tracked_promise(env, &cancel, async move {
            let r = s.drill(opts).await.map_err(to_napi)?;
            Ok(RollbackRecord::from(&r))
        })
    }

    /// Finishes an interrupted rollback (crash, kill, abort) from its journal;
    /// `rollbackId` may be `latest`. `signal` stops it again at the next step boundary.
    #[napi(ts_args_type = "rollbackId: string, options?: ResumeOptions | undefined | null")]
    pub fn resume(
        &self,
        env: &Env,
        rollback_id: Unknown<'_>,
        options: Option<Unknown<'_>>,
    ) -> Result<AsyncBlock<RollbackRecord>> {
        let rollback_id = args::string("rollbackId", rollback_id)?;
        let o: ResumeOptions = args::options("options", options, RESUME_OPTIONS)?.unwrap_or_default();
        let on_event = event_callback(o.on_event);
        let cancel = o.signal.map(|a| a.0).unwrap_or_default();
        let s = self.inner.clone();
        let c = cancel.clone();
        tracked_promise(env, &cancel, async move {
            let r = s.resume_with(&rollback_id, on_event, c).await.map_err(to_napi)?;
            Ok(RollbackRecord::from(&r))
        })
    }

    /// Probes each component's health checks once (every component, or `components`):
    /// `{ component: [{ check, ok, detail }] }`, redacted.
    #[napi(
        ts_args_type = "options?: HealthOptions | undefined | null",
        ts_return_type = "Promise<Record<string, Array<HealthResult>>>"
    )]
    pub fn health(
        &self,
        env: &Env,
        options: Option<Unknown<'_>>,
    ) -> Result<AsyncBlock<std::collections::HashMap<String, Vec<HealthResult>>>> {
        let o: HealthOptions = args::options("options", options, HEALTH_OPTIONS)?.unwrap_or_default();
        let components = o.components.unwrap_or_default();
        let s = self.inner.clone();
        promise(env, async move {
            let h = s.health(&components).await.map_err(to_napi)?;
            Ok(h.into_iter().map(|(c, v)| (c, v.into_iter().map(HealthResult::from).collect())).collect())
        })
    }

    /// Past records, oldest first.
    #[napi]
    pub fn history(&self, env: &Env) -> Result<AsyncBlock<Vec<RollbackRecord>>> {
        let s = self.inner.clone();
        promise(env, async move {
            let all = blocking(move || s.history()).await?;
            Ok(all.iter().map(RollbackRecord::from).collect())
        })
    }

    /// One record by id, prefix, `latest`, or path.
    #[napi(ts_args_type = "reference: string")]
    pub fn record(&self, env: &Env, reference: Unknown<'_>) -> Result<AsyncBlock<RollbackRecord>> {
        let reference = args::string("reference", reference)?;
        let s = self.inner.clone();
        promise(env, async move {
            let r = blocking(move || s.record(&reference)).await?;
            Ok(RollbackRecord::from(&r))
        })
    }

    /// One record as the incident report (`md`, default) or as SPEC §6 JSON (`json`).
    #[napi(ts_args_type = "reference: string, format?: 'md' | 'json'")]
    pub fn report(&self, env: &Env, reference: Unknown<'_>, format: Option<Unknown<'_>>) -> Result<AsyncBlock<String>> {
        let reference = args::string("reference", reference)?;
        let json = match args::opt_string("format", format)?.as_deref() {
            None | Some("md") => false,
            Some("json") => true,
            Some(f) => return Err(config_error(format!("format `{f}` is not one of md, json"))),
        };
        let s = self.inner.clone();
        promise(env, async move {
            let r = blocking(move || s.record(&reference)).await?;
            Ok(if json { r.to_json() } else { r.to_markdown() })
        })
    }

    /// Preflight of the stack: drivers reachable, age of the newest snapshot and drill.
    #[napi]
    pub fn check(&self, env: &Env) -> Result<AsyncBlock<CheckReport>> {
        let s = self.inner.clone();
        promise(env, async move {
            let r = s.check().await.map_err(to_napi)?;
            Ok(CheckReport::from(&r))
        })
    }

    /// Retention: keeps the newest `keep` snapshots and those younger than `maxAge`
    /// (`"7d"`, `"12h"`); never the newest one, nor one an unfinished rollback uses.
    #[napi(ts_args_type = "options?: GcOptions | undefined | null")]
    pub fn gc(&self, env: &Env, options: Option<Unknown<'_>>) -> Result<AsyncBlock<GcReport>> {
        let o: GcOptions = args::options("options", options, GC_OPTIONS)?.unwrap_or_default();
        // `args` checked it: a whole number from 1 that a JS number holds exactly.
        let keep = o.keep.map(|k| k as usize);
        let max_age = match o.max_age {
            Some(a) => {
                Some(rb::config::parse_duration(&a).map_err(|e| config_error(format!("options.maxAge `{a}`: {e}")))?)
            }
            None => None,
        };
        let s = self.inner.clone();
        promise(env, async move {
            let r = s.gc(keep, max_age).await.map_err(to_napi)?;
            Ok(GcReport::from(&r))
        })
    }
}
