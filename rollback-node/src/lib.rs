//! Node.js binding of rollback: the npm package `rollback`.
//!
//! Conversion and runtime glue only; every decision is rollback-core's. Long calls are
//! `#[napi] async fn`s on napi's tokio runtime, so they return Promises and never block
//! the event loop. Errors cross as a marker-prefixed JSON reason that `index.js` turns
//! into `RollbackError`s with `code` and `component` (napi's async rejections carry only
//! a status and a message).

mod convert;

use std::path::PathBuf;
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use rollback_core as rb;
use rollback_core::RollbackPlan as _;

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

fn rollback_options(o: RollbackOptions) -> Result<rb::RollbackOptions> {
    let step_timeout = match o.step_timeout_ms {
        Some(ms) if !(ms.is_finite() && ms > 0.0) => {
            return Err(config_error("stepTimeoutMs must be a positive number"))
        }
        Some(ms) => {
            Some(rb::config::duration_from_secs(ms / 1000.0).map_err(|e| config_error(format!("stepTimeoutMs: {e}")))?)
        }
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
        Some(ms) if !(ms.is_finite() && ms > 0.0) => return Err(config_error("durationMs must be a positive number")),
        Some(ms) => {
            Some(rb::config::duration_from_secs(ms / 1000.0).map_err(|e| config_error(format!("durationMs: {e}")))?)
        }
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

/// Applies the decision matrix with the default thresholds (SPEC §7). Synchronous.
#[napi(js_name = "assess")]
pub fn assess_symptoms(symptoms: Symptoms) -> Result<Assessment> {
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
    #[napi]
    pub async fn load(path: String) -> Result<Stack> {
        let inner = blocking(move || rb::Stack::load(path)).await?;
        Ok(Stack { inner })
    }

    /// Builds a stack from TOML text, as if it were a `rollback.toml` in `baseDir`
    /// (default: the current directory).
    #[napi(factory)]
    pub fn from_toml(text: String, base_dir: Option<String>) -> Result<Stack> {
        let base = resolve_base_dir(base_dir)?;
        let cfg = rb::StackConfig::from_toml_str(&text, None, &base, &env_var).map_err(to_napi)?;
        let inner = rb::Stack::new(cfg, &rb::Registry::with_default_drivers()).map_err(to_napi)?;
        Ok(Stack { inner })
    }

    /// Builds a stack from an object shaped like `rollback.toml`
    /// (`{ store, rto, decision, component: [{ name, driver, ... }] }`).
    #[napi(factory, ts_args_type = "config: StackConfig, baseDir?: string | undefined | null")]
    pub fn from_config(config: serde_json::Value, base_dir: Option<String>) -> Result<Stack> {
        let base = resolve_base_dir(base_dir)?;
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
    #[napi]
    pub fn assess(&self, symptoms: Symptoms) -> Result<Assessment> {
        Ok(Assessment::from(self.inner.assess(&symptoms.try_into()?).map_err(to_napi)?))
    }

    /// Captures the components (all unless `components` is given).
    #[napi]
    pub async fn snapshot(&self, options: Option<SnapshotOptions>) -> Result<Snapshot> {
        let o = options.unwrap_or_default();
        let m = self
            .inner
            .snapshot(rb::SnapshotOptions {
                label: o.label,
                components: o.components.unwrap_or_default(),
                on_event: event_callback(o.on_event),
            })
            .await
            .map_err(to_napi)?;
        Ok(Snapshot::from(&m))
    }

    /// Every snapshot, oldest first.
    #[napi]
    pub async fn list(&self) -> Result<Vec<Snapshot>> {
        let s = self.inner.clone();
        let all = blocking(move || s.list()).await?;
        Ok(all.iter().map(Snapshot::from).collect())
    }

    /// One snapshot by id, unique prefix, `latest` or `last-good`.
    #[napi]
    pub async fn show(&self, snapshot: String) -> Result<Snapshot> {
        let s = self.inner.clone();
        let m = blocking(move || s.resolve(&snapshot)).await?;
        Ok(Snapshot::from(&m))
    }

    /// The steps a rollback to `snapshot` would run for the scope; changes nothing.
    #[napi]
    pub async fn plan(&self, snapshot: String, options: Option<ScopeOptions>) -> Result<Plan> {
        let o = options.unwrap_or_default();
        let sc = scope(o.level, o.phases, o.components)?;
        let p = self.inner.plan(&snapshot, &sc).await.map_err(to_napi)?;
        Ok(Plan::from_core(&p, p.render()))
    }

    /// The plan, after running the rollback's preflight (artifacts present and
    /// checksummed, targets reachable); changes nothing. Rejects when preflight fails.
    #[napi]
    pub async fn dry_run(&self, snapshot: String, options: Option<ScopeOptions>) -> Result<Plan> {
        let o = options.unwrap_or_default();
        let sc = scope(o.level, o.phases, o.components)?;
        let p = self.inner.dry_run(&snapshot, &sc).await.map_err(to_napi)?;
        Ok(Plan::from_core(&p, p.render()))
    }

    /// Rolls back to `snapshot`. Resolves with the record whatever its status
    /// (`succeeded`, `failed`, `compensated`, or `interrupted` after an abort); rejects
    /// only when nothing was changed (bad input, failed preflight, lock held).
    #[napi]
    pub async fn rollback(&self, snapshot: String, options: Option<RollbackOptions>) -> Result<RollbackRecord> {
        let opts = rollback_options(options.unwrap_or_default())?;
        let r = self.inner.rollback(&snapshot, opts).await.map_err(to_napi)?;
        Ok(RollbackRecord::from(&r))
    }

    /// Watches with the `[watch]` probes of the config and rolls back (or notifies)
    /// when the policy says so, then resolves; or when `durationMs` runs out, or the
    /// `signal` aborts. `dryRun` decides and notifies, changing nothing. Rejects only
    /// on bad input (no `[watch]`, unknown snapshot).
    #[napi]
    pub async fn watch(&self, options: Option<WatchOptions>) -> Result<WatchReport> {
        let opts = watch_options(options.unwrap_or_default())?;
        let r = self.inner.watch(opts).await.map_err(to_napi)?;
        Ok(WatchReport::from(&r))
    }

    /// Compares the current state with `snapshot`.
    #[napi]
    pub async fn verify(&self, snapshot: String, options: Option<VerifyOptions>) -> Result<Verification> {
        let o = options.unwrap_or_default();
        let v = self.inner.verify(&snapshot, &o.components.unwrap_or_default()).await.map_err(to_napi)?;
        if o.throw_on_drift == Some(true) {
            if let Some((c, d)) = v.components.iter().find(|(_, d)| !d.ok) {
                let msg = format!("differs from snapshot {}: {}", v.snapshot_id, d.differences.join("; "));
                return Err(to_napi(rb::Error::new(rb::ErrorKind::VerificationFailed, msg).with_component(c)));
            }
        }
        Ok(Verification::from(&v))
    }

    /// Rehearsal: snapshot, perturb, roll back, verify; the record says how long.
    #[napi]
    pub async fn drill(&self, options: Option<RollbackOptions>) -> Result<RollbackRecord> {
        let opts = rollback_options(options.unwrap_or_default())?;
        let r = self.inner.drill(opts).await.map_err(to_napi)?;
        Ok(RollbackRecord::from(&r))
    }

    /// Finishes an interrupted rollback (crash, kill, abort) from its journal;
    /// `rollbackId` may be `latest`.
    #[napi]
    pub async fn resume(&self, rollback_id: String, options: Option<ResumeOptions>) -> Result<RollbackRecord> {
        let on_event = event_callback(options.and_then(|o| o.on_event));
        let r = self.inner.resume(&rollback_id, on_event).await.map_err(to_napi)?;
        Ok(RollbackRecord::from(&r))
    }

    /// Probes each component's health checks once (every component, or `components`):
    /// `{ component: [{ check, ok, detail }] }`, redacted.
    #[napi]
    pub async fn health(
        &self,
        options: Option<HealthOptions>,
    ) -> Result<std::collections::HashMap<String, Vec<HealthResult>>> {
        let components = options.unwrap_or_default().components.unwrap_or_default();
        let h = self.inner.health(&components).await.map_err(to_napi)?;
        Ok(h.into_iter().map(|(c, v)| (c, v.into_iter().map(HealthResult::from).collect())).collect())
    }

    /// Past records, oldest first.
    #[napi]
    pub async fn history(&self) -> Result<Vec<RollbackRecord>> {
        let s = self.inner.clone();
        let all = blocking(move || s.history()).await?;
        Ok(all.iter().map(RollbackRecord::from).collect())
    }

    /// One record by id, prefix, `latest`, or path.
    #[napi]
    pub async fn record(&self, reference: String) -> Result<RollbackRecord> {
        let s = self.inner.clone();
        let r = blocking(move || s.record(&reference)).await?;
        Ok(RollbackRecord::from(&r))
    }

    /// One record as the incident report (`md`, default) or as SPEC §6 JSON (`json`).
    #[napi(ts_args_type = "reference: string, format?: 'md' | 'json'")]
    pub async fn report(&self, reference: String, format: Option<String>) -> Result<String> {
        let json = match format.as_deref() {
            None | Some("md") => false,
            Some("json") => true,
            Some(f) => return Err(config_error(format!("format `{f}` is not one of md, json"))),
        };
        let s = self.inner.clone();
        let r = blocking(move || s.record(&reference)).await?;
        Ok(if json { r.to_json() } else { r.to_markdown() })
    }

    /// Preflight of the stack: drivers reachable, age of the newest snapshot and drill.
    #[napi]
    pub async fn check(&self) -> Result<CheckReport> {
        let r = self.inner.check().await.map_err(to_napi)?;
        Ok(CheckReport::from(&r))
    }

    /// Retention: keeps the newest `keep` snapshots and those younger than `maxAge`
    /// (`"7d"`, `"12h"`); never the newest one, nor one an unfinished rollback uses.
    #[napi]
    pub async fn gc(&self, options: Option<GcOptions>) -> Result<GcReport> {
        let o = options.unwrap_or_default();
        let keep = match o.keep {
            Some(k) if k < 1.0 || k.fract() != 0.0 => return Err(config_error("keep must be a whole number >= 1")),
            Some(k) => Some(k as usize),
            None => None,
        };
        let max_age = match o.max_age {
            Some(a) => Some(rb::config::parse_duration(&a).map_err(|e| config_error(format!("maxAge `{a}`: {e}")))?),
            None => None,
        };
        let r = self.inner.gc(keep, max_age).await.map_err(to_napi)?;
        Ok(GcReport::from(&r))
    }
}
