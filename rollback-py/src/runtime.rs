//! The tokio runtime the binding owns, and the two ways Python waits on it: a
//! blocking wait, and a coroutine for asyncio.
//!
//! The runtime is built on first use and rebuilt in a forked child: tokio's worker
//! threads do not survive `fork()`, so a child that kept the parent's runtime would
//! hang on its first call. The parent's runtime is leaked in the child, never
//! dropped (dropping would try to join threads that no longer exist).
//!
//! The module's own threads (the runtime's, the event deliveries') reach Python only
//! through [`with_python`]: once the interpreter has begun to exit they stay away
//! from it. A call still running then (a task the script never awaited, a rollback
//! whose task was cancelled and runs on to its step boundary) ends without anyone to
//! tell, instead of panicking on an interpreter that is gone.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::IntoPyObjectExt;
use rollback_core as rb;
use tokio::runtime::Runtime;

use crate::errors::to_py;
use crate::events::{Abandon, Delivery};

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

/// Whether the module's threads may still attach to the interpreter.
struct Gate {
    /// The process it is about (a forked child starts open).
    pid: u32,
    /// The interpreter has begun to exit.
    closing: bool,
    /// Threads inside [`with_python`] now.
    inside: usize,
}

static GATE: Mutex<Gate> = Mutex::new(Gate { pid: 0, closing: false, inside: 0 });
static GATE_LEFT: Condvar = Condvar::new();

/// Runs `f` attached to the interpreter, from any thread; None once the interpreter
/// has begun to exit (or was never running).
///
/// `Python::attach` panics on an interpreter that has finalized, and attaching while
/// it finalizes ends the thread from under Rust: the interpreter's `atexit` (see
/// [`close_gate`]) closes this gate before either can happen.
pub fn with_python<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    {
        let mut g = GATE.lock().unwrap_or_else(PoisonError::into_inner);
        let pid = std::process::id();
        if g.pid != pid {
            *g = Gate { pid, closing: false, inside: 0 };
        }
        if g.closing {
            return None;
        }
        g.inside += 1;
    }
    let r = Python::try_attach(f);
    let mut g = GATE.lock().unwrap_or_else(PoisonError::into_inner);
    g.inside = g.inside.saturating_sub(1);
    if g.inside == 0 {
        GATE_LEFT.notify_all();
    }
    r
}

/// How long the interpreter's exit waits for a thread already attached (an
/// `on_event` callback running) to let go.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// Closes [`with_python`]'s gate and waits (up to [`EXIT_GRACE`]) for the threads
/// inside to leave. Called with the GIL released, from the `atexit` hook the module
/// registers: the threads inside may be waiting for the GIL to finish.
pub fn close_gate() {
    let mut g = GATE.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = std::process::id();
    if g.pid != pid {
        *g = Gate { pid, closing: false, inside: 0 };
    }
    g.closing = true;
    let deadline = Instant::now() + EXIT_GRACE;
    while g.inside > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        g = GATE_LEFT.wait_timeout(g, left).unwrap_or_else(PoisonError::into_inner).0;
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

/// How a blocking call that a signal interrupted tells Python what it returned when
/// it stopped (the signal's exception is the first argument).
pub type OnInterrupt<T> = fn(Python<'_>, &PyErr, Option<rb::Result<T>>) -> PyResult<()>;

/// One long call of a `Stack` method, prepared once: its future, its cancel token,
/// and how its result becomes a Python value. [`Call::wait`] runs it blocking (the
/// GIL released, Ctrl-C handled) and [`Call::coroutine`] as an asyncio coroutine, so
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
    /// by cancelling the task (or closing the coroutine) in the asyncio form.
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

    /// The coroutine of it, for asyncio: nothing runs before it is awaited (or made a
    /// task), as with any `async def`.
    pub fn coroutine(self, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        let convert = self.convert;
        let fut = self.fut;
        let fut: Pin<Box<dyn Future<Output = Settle> + Send>> = Box::pin(async move {
            let r = fut.await;
            Box::new(move |py: Python<'_>| -> PyResult<Py<PyAny>> {
                let v = r.map_err(|e| to_py(py, e))?;
                convert(v)?.into_py_any(py)
            }) as Settle
        });
        let pending =
            PendingCall { state: Mutex::new(State::Ready { fut, cancel: self.cancel, delivery: self.delivery }) };
        aio(py, "run")?.call1((pending,))
    }
}

/// Builds the Python value (or exception) of a finished call, with the GIL.
type Settle = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

enum State {
    /// Not started: its coroutine was not awaited yet.
    Ready {
        fut: Pin<Box<dyn Future<Output = Settle> + Send>>,
        cancel: Option<rb::CancelToken>,
        delivery: Option<Delivery>,
    },
    /// Running on the runtime.
    Running { cancel: Option<rb::CancelToken>, abort: tokio::task::AbortHandle, delivery: Option<Abandon> },
    /// Finished, given up, or never started.
    Closed,
}

/// One `*_async` call: the coroutine of `rollback._aio.run` starts it on the runtime
/// when it first runs, and cancels it when the coroutine is cancelled or closed.
#[pyclass(frozen, module = "rollback._rollback", name = "PendingCall")]
pub struct PendingCall {
    state: Mutex<State>,
}

#[pymethods]
impl PendingCall {
    /// Starts the call; when it ends, `loop.call_soon_threadsafe` settles `future`
    /// with its value or its exception.
    fn start(&self, py: Python<'_>, event_loop: Py<PyAny>, future: Py<PyAny>) -> PyResult<()> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let State::Ready { fut, cancel, delivery } = std::mem::replace(&mut *state, State::Closed) else {
            return Err(pyo3::exceptions::PyRuntimeError::new_err("this call was already started"));
        };
        let settle = aio(py, "settle")?.unbind();
        let abandon = delivery.as_ref().map(Delivery::abandoner);
        let task = rt().spawn(async move {
            let build = fut.await;
            // Every event reaches `on_event` before the coroutine returns.
            if let Some(d) = delivery {
                d.finish().await;
            }
            // None: the interpreter is exiting, and nobody is left to tell.
            let _ = with_python(move |py| {
                let (ok, value) = match build(py) {
                    Ok(v) => (true, v),
                    Err(e) => (false, e.into_value(py).into_any()),
                };
                // Fails only when the loop was closed: nobody awaits the result then.
                if let Err(e) = event_loop.call_method1(py, "call_soon_threadsafe", (settle, future, ok, value)) {
                    tracing::debug!("the result of an async call had no event loop to go to: {e}");
                }
            });
        });
        *state = State::Running { cancel, abort: task.abort_handle(), delivery: abandon };
        Ok(())
    }

    /// Gives the call up (its coroutine was cancelled or closed). A call with step
    /// boundaries (a rollback, a drill, a resume, a watch) is asked to stop at the
    /// next one, leaving an `interrupted` record that `Stack.resume()` finishes; one
    /// without (a snapshot, a verify) is ended at once, so that it does not go on
    /// holding the store lock for a caller that gave up. Events not delivered yet
    /// are dropped.
    fn cancel(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let State::Running { cancel, abort, delivery } = std::mem::replace(&mut *state, State::Closed) {
            match cancel {
                Some(token) => token.cancel(),
                None => abort.abort(),
            }
            if let Some(d) = delivery {
                d.abandon();
            }
        }
    }
}

/// A function of the `rollback._aio` module (the coroutine side of the calls).
fn aio<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let m = MODULE.get_or_try_init(py, || py.import("rollback._aio").map(Bound::unbind))?;
    m.bind(py).getattr(name)
}
