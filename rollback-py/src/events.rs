//! Delivering a call's events to its Python `on_event` callback, off the call's path.
//!
//! The core calls its event callback inline, on the runtime thread that runs the step.
//! A Python callback called there waits for the GIL and runs at Python's pace, and the
//! rollback waits with it: a callback that took 1 s made a rollback of about 10 ms
//! record `duration_ms: 7046`, and a slow callback could push a rollback past its RTO.
//! So the core's callback only queues a copy of the event; a thread of the call's own
//! takes them off the queue, in order, and calls Python with the GIL.
//!
//! The call waits for that thread before it returns (and before its coroutine
//! completes): when `rollback()` returns, every event has been delivered, yet the
//! record's times are the rollback's alone. Only Ctrl-C while waiting (or the asyncio
//! task being cancelled) gives up the events not delivered yet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use pyo3::prelude::*;
use rollback_core as rb;

enum Msg {
    Event(rb::Event),
    /// The call returned: deliver what came before, then stop.
    End,
}

/// The delivery thread's state, shared with the call that waits for it.
#[derive(Default)]
struct State {
    /// The thread has stopped.
    done: Mutex<bool>,
    stopped: Condvar,
    /// Drop the events not delivered yet (Ctrl-C, a cancelled task).
    abandon: AtomicBool,
}

impl State {
    fn finish(&self) {
        *self.done.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.stopped.notify_all();
    }

    /// Waits up to `timeout` for the thread to stop; whether it has.
    fn wait(&self, timeout: Option<Duration>) -> bool {
        let done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        let done = match timeout {
            Some(t) => self.stopped.wait_timeout_while(done, t, |d| !*d).unwrap_or_else(PoisonError::into_inner).0,
            None => self.stopped.wait_while(done, |d| !*d).unwrap_or_else(PoisonError::into_inner),
        };
        *done
    }
}

/// The delivery of one call's events; the call finishes it when it returns.
pub struct Delivery {
    tx: mpsc::Sender<Msg>,
    state: Arc<State>,
}

/// The core's callback for `cb` and the delivery that feeds it to Python, or neither.
pub fn deliver(cb: Option<Py<PyAny>>) -> PyResult<(Option<rb::EventCallback>, Option<Delivery>)> {
    let Some(cb) = cb else { return Ok((None, None)) };
    let (tx, rx) = mpsc::channel::<Msg>();
    let state = Arc::new(State::default());
    let s = state.clone();
    std::thread::Builder::new()
        .name("rollback-events".into())
        .spawn(move || pump(cb, rx, &s))
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("cannot start the event thread: {e}")))?;
    let sender = Mutex::new(tx.clone());
    let on_event: rb::EventCallback = Arc::new(move |e: &rb::Event| {
        // Never blocks: the queue is unbounded. Once the delivery stopped, events
        // (from a task that outlived its call) go nowhere.
        let _ = sender.lock().unwrap_or_else(PoisonError::into_inner).send(Msg::Event(e.clone()));
    });
    Ok((Some(on_event), Some(Delivery { tx, state })))
}

/// The delivery thread: each event to `cb`, in order, until the call ends.
fn pump(cb: Py<PyAny>, rx: mpsc::Receiver<Msg>, state: &State) {
    while let Ok(Msg::Event(e)) = rx.recv() {
        if state.abandon.load(Ordering::SeqCst) {
            break;
        }
        // None: the interpreter is exiting; nobody is left to tell.
        let delivered = crate::runtime::with_python(|py| {
            let r = crate::convert::to_py(py, &e).and_then(|d| cb.call1(py, (d,)));
            if let Err(err) = r {
                // A callback that raises must not stop a rollback.
                err.write_unraisable(py, Some(cb.bind(py)));
            }
        });
        if delivered.is_none() {
            break;
        }
    }
    // Drop the callback with the GIL (when it can still be had) rather than leave its
    // release to whichever thread next takes it.
    let _ = crate::runtime::with_python(|_| drop(cb));
    state.finish();
}

/// What gives a delivery up from elsewhere than the call that owns it (the
/// coroutine of an `*_async` call that was cancelled while its task runs on).
pub struct Abandon {
    tx: mpsc::Sender<Msg>,
    state: Arc<State>,
}

impl Abandon {
    /// Drops the events not delivered yet; the thread stops after the callback running.
    pub fn abandon(&self) {
        self.state.abandon.store(true, Ordering::SeqCst);
        let _ = self.tx.send(Msg::End);
    }
}

impl Delivery {
    fn end(&self) {
        let _ = self.tx.send(Msg::End);
    }

    /// Drops the events not delivered yet; the thread stops after the callback running.
    pub fn abandon(&self) {
        self.abandoner().abandon();
    }

    /// A handle that abandons this delivery.
    pub fn abandoner(&self) -> Abandon {
        Abandon { tx: self.tx.clone(), state: self.state.clone() }
    }

    /// Waits, the GIL released, until every event of the call was delivered, taking
    /// the GIL back every `tick` to run signal handlers. A signal (Ctrl-C) stops the
    /// waiting and drops what is left.
    pub fn finish_blocking(self, py: Python<'_>, tick: Duration) -> PyResult<()> {
        self.end();
        loop {
            let state = self.state.clone();
            if py.detach(move || state.wait(Some(tick))) {
                return Ok(());
            }
            if let Err(signal) = py.check_signals() {
                self.abandon();
                return Err(signal);
            }
        }
    }

    /// [`Delivery::finish_blocking`] for a coroutine's call; dropping the future (the call was
    /// aborted) drops what is left.
    pub async fn finish(self) {
        self.end();
        let state = self.state.clone();
        let _ = tokio::task::spawn_blocking(move || state.wait(None)).await;
    }
}

impl Drop for Delivery {
    // A call that never finished its delivery (its coroutine was never run, its wait
    // interrupted) leaves no thread behind delivering to a caller that is gone.
    fn drop(&mut self) {
        self.abandon();
    }
}
