//! The tokio runtime the binding owns, and the two ways Python waits on it.
//!
//! The runtime is built on first use and rebuilt in a forked child: tokio's worker
//! threads do not survive `fork()`, so a child that kept the parent's runtime would
//! hang on its first call. The parent's runtime is leaked in the child, never
//! dropped (dropping would try to join threads that no longer exist).

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3_async_runtimes::generic::{ContextExt, JoinError, Runtime as GenericRuntime};
use pyo3_async_runtimes::TaskLocals;
use rollback_core as rb;
use tokio::runtime::Runtime;

use crate::errors::to_py;
use crate::events::Delivery;

static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);

/// The process's runtime (a new one after `fork()`).
pub fn rt() -> &'static Runtime {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    match *slot {
        Some((p, r)) if p == pid => r,
        _ => {
            let r: &'static Runtime = Box::leak(Box::new(
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .thread_name("rollback-py")
                    .build()
                    .expect("cannot start the tokio runtime of the rollback module"),
            ));
            *slot = Some((pid, r));
            r
        }
    }
}

/// How often a sync call takes the GIL back to let Python run signal handlers.
const SIGNAL_TICK: Duration = Duration::from_millis(100);

/// Outcome of a sync wait.
enum Waited<T> {
    /// The call ran to its end.
    Done(rb::Result<T>),
    /// A signal handler raised (Ctrl-C: `KeyboardInterrupt`). With a cancel token, the
    /// call was asked to stop at its next step boundary and `Some(result)` is what it
    /// returned then; `None` when it was dropped mid-way (no token, or a second signal).
    Interrupted(PyErr, Option<rb::Result<T>>),
}

/// Runs `fut` on the runtime with the GIL released, waking every [`SIGNAL_TICK`] to
/// run Python's signal handlers (they only run on the main thread, with the GIL).
fn wait<T, F>(py: Python<'_>, fut: F, cancel: Option<rb::CancelToken>) -> PyResult<Waited<T>>
where
    T: Send + 'static,
    F: Future<Output = rb::Result<T>> + Send + 'static,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        // Blocking a runtime thread on the same runtime would deadlock. No Python code
        // of the user's runs on one (`on_event` callbacks have a thread of their own),
        // but a call from there must fail, not hang.
        return Err(to_py(
            py,
            rb::Error::config(
                "a blocking rollback call cannot be made from the module's runtime threads; use the *_async form",
            ),
        ));
    }
    let runtime = rt();
    let mut handle = runtime.spawn(fut);
    let joined = |r: Result<rb::Result<T>, tokio::task::JoinError>| {
        r.unwrap_or_else(|e| Err(rb::Error::unexpected("the rollback task failed").with_source(e)))
    };
    loop {
        let polled = py.detach(|| runtime.block_on(async { tokio::time::timeout(SIGNAL_TICK, &mut handle).await }));
        if let Ok(r) = polled {
            return Ok(Waited::Done(joined(r)));
        }
        let Err(signal) = py.check_signals() else { continue };
        let Some(token) = &cancel else {
            handle.abort();
            return Ok(Waited::Interrupted(signal, None));
        };
        token.cancel();
        tracing::warn!("interrupted: stopping at the next step boundary (interrupt again to stop at once)");
        loop {
            let polled = py.detach(|| runtime.block_on(async { tokio::time::timeout(SIGNAL_TICK, &mut handle).await }));
            if let Ok(r) = polled {
                return Ok(Waited::Interrupted(signal, Some(joined(r))));
            }
            if let Err(again) = py.check_signals() {
                handle.abort();
                return Ok(Waited::Interrupted(again, None));
            }
        }
    }
}

/// Cancels the token when dropped: an asyncio task cancelled while awaiting a
/// rollback lets the rollback stop at its next step boundary instead of dropping it
/// in the middle of a step.
struct CancelOnDrop(Option<rb::CancelToken>);

/// Aborts a task when dropped (the awaiting future was cancelled).
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.cancel();
        }
    }
}

/// An asyncio awaitable for `fut`, run on this module's runtime. `convert` builds
/// the Python value with the GIL held.
fn awaitable<'py, T, F, O>(
    py: Python<'py>,
    fut: F,
    cancel: Option<rb::CancelToken>,
    delivery: Option<Delivery>,
    convert: fn(T) -> PyResult<O>,
) -> PyResult<Bound<'py, PyAny>>
where
    T: Send + 'static,
    F: Future<Output = rb::Result<T>> + Send + 'static,
    O: for<'a> IntoPyObject<'a> + Send + 'static,
{
    pyo3_async_runtimes::generic::future_into_py::<PyRuntime, _, O>(py, async move {
        let with_token = cancel.is_some();
        let mut guard = CancelOnDrop(cancel);
        // Spawned, not awaited in place: when asyncio cancels, this future is dropped
        // but the rollback task runs on to the step boundary the token asks for.
        let task = rt().spawn(fut);
        // A call with no step boundaries (a snapshot, a verify) is ended when asyncio
        // cancels it: it must not go on holding the store lock for a caller that gave up.
        let _abort = AbortOnDrop((!with_token).then(|| task.abort_handle()));
        let r = task.await;
        guard.0 = None;
        // Every event reaches `on_event` before the awaitable completes.
        if let Some(d) = delivery {
            d.finish().await;
        }
        let r = r.unwrap_or_else(|e| Err(rb::Error::unexpected("the rollback task failed").with_source(e)));
        match r {
            Ok(v) => convert(v),
            Err(e) => Err(Python::attach(|py| to_py(py, e))),
        }
    })
}

/// How a blocking call that a signal interrupted tells Python what it returned when
/// it stopped (the signal's exception is the first argument).
pub type OnInterrupt<T> = fn(Python<'_>, &PyErr, Option<rb::Result<T>>) -> PyResult<()>;

/// One long call of a `Stack` method, prepared once: its future, its cancel token,
/// and how its result becomes a Python value. [`Call::wait`] runs it blocking (the
/// GIL released, Ctrl-C handled) and [`Call::awaitable`] as an asyncio awaitable, so
/// a method and its `*_async` twin share every line but the last.
pub struct Call<T, O> {
    fut: Pin<Box<dyn Future<Output = rb::Result<T>> + Send>>,
    cancel: Option<rb::CancelToken>,
    convert: fn(T) -> PyResult<O>,
    on_interrupt: Option<OnInterrupt<T>>,
    delivery: Option<Delivery>,
}

impl<T, O> Call<T, O>
where
    T: Send + 'static,
    O: for<'a> IntoPyObject<'a> + Send + 'static,
{
    /// A call with no step boundary to stop at: Ctrl-C (or cancelling the asyncio
    /// task) drops it. Nothing is left half-written: a snapshot's manifest is written
    /// last, a check or a verify changes nothing.
    pub fn new(fut: impl Future<Output = rb::Result<T>> + Send + 'static, convert: fn(T) -> PyResult<O>) -> Self {
        Call { fut: Box::pin(fut), cancel: None, convert, on_interrupt: None, delivery: None }
    }

    /// A call whose events `delivery` hands to Python: the call returns once it has
    /// delivered them all.
    pub fn delivering(mut self, delivery: Option<Delivery>) -> Self {
        self.delivery = delivery;
        self
    }

    /// A call that stops at its next step boundary when `cancel` is cancelled: by
    /// Ctrl-C in the blocking form (then `on_interrupt` reports what it returned),
    /// by cancelling the task in the asyncio form.
    pub fn cancellable(mut self, cancel: rb::CancelToken, on_interrupt: OnInterrupt<T>) -> Self {
        self.cancel = Some(cancel);
        self.on_interrupt = Some(on_interrupt);
        self
    }

    /// Runs it to its end with the GIL released, then waits for its events to be
    /// delivered.
    pub fn wait(self, py: Python<'_>) -> PyResult<O> {
        match wait(py, self.fut, self.cancel)? {
            Waited::Done(r) => {
                if let Some(d) = self.delivery {
                    if let Err(signal) = d.finish_blocking(py, SIGNAL_TICK) {
                        if let Some(report) = self.on_interrupt {
                            report(py, &signal, Some(r))?;
                        }
                        return Err(signal);
                    }
                }
                (self.convert)(r.map_err(|e| to_py(py, e))?)
            }
            Waited::Interrupted(signal, result) => {
                // Stopping was asked for: the events not delivered yet are dropped.
                drop(self.delivery);
                if let Some(report) = self.on_interrupt {
                    report(py, &signal, result)?;
                }
                Err(signal)
            }
        }
    }

    /// The asyncio awaitable of it.
    pub fn awaitable(self, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        awaitable(py, self.fut, self.cancel, self.delivery, self.convert)
    }
}

/// pyo3-async-runtimes' view of [`rt`] (its own tokio runtime is a global that
/// cannot be rebuilt after `fork()`).
pub struct PyRuntime;

tokio::task_local! {
    static TASK_LOCALS: std::cell::OnceCell<TaskLocals>;
}

/// A join error of the runtime.
pub struct TaskJoinError(tokio::task::JoinError);

impl JoinError for TaskJoinError {
    fn is_panic(&self) -> bool {
        self.0.is_panic()
    }
    fn into_panic(self) -> Box<dyn std::any::Any + Send + 'static> {
        self.0.into_panic()
    }
}

type Joined = Pin<Box<dyn Future<Output = Result<(), TaskJoinError>> + Send>>;

impl GenericRuntime for PyRuntime {
    type JoinError = TaskJoinError;
    type JoinHandle = Joined;

    fn spawn<F>(fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let h = rt().spawn(fut);
        Box::pin(async move { h.await.map_err(TaskJoinError) })
    }

    fn spawn_blocking<F>(f: F) -> Self::JoinHandle
    where
        F: FnOnce() + Send + 'static,
    {
        let h = rt().spawn_blocking(f);
        Box::pin(async move { h.await.map_err(TaskJoinError) })
    }
}

impl ContextExt for PyRuntime {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let cell = std::cell::OnceCell::new();
        let _ = cell.set(locals);
        Box::pin(TASK_LOCALS.scope(cell, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS.try_with(|c| c.get().cloned()).unwrap_or_default()
    }
}
