//! The calls with step boundaries (rollback, drill, resume, watch) in flight in each JS
//! environment, and what the end of that environment does to them.
//!
//! A worker thread that ends (`worker.terminate()`, an uncaught error, the pool that
//! owns it shutting down) tears its environment down while a rollback it started may be
//! in the middle of a step. napi-rs keeps the call's future running on its shared tokio
//! runtime only while some other environment still uses the addon: when the last one
//! goes, it shuts the runtime down and drops every future wherever it stands. A rollback
//! dropped that way writes no record and leaves an unfinished journal that locks every
//! later rollback of the stack until `resume`.
//!
//! So the first such call of an environment registers a cleanup hook that, when the
//! environment ends, asks each of its calls to stop at the next step boundary (the core's
//! `CancelToken`, as an aborted `signal` does) and waits until every one has returned,
//! that is, written its `interrupted` (or finished) record. Node runs an environment's
//! cleanup hooks in the reverse order of their registration; napi-rs registers the hook
//! that may shut the runtime down when the addon is loaded, before any call, so it runs
//! after this one and the runtime is still there to drive the calls to their boundary.
//! The wait is bounded by the step in progress, which its timeout bounds.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use napi::Env;
use rollback_core as rb;

/// The calls of one environment that the end of the environment must wait for.
#[derive(Default)]
pub(crate) struct Inflight {
    calls: Mutex<Calls>,
    idle: Condvar,
}

#[derive(Default)]
struct Calls {
    next: u64,
    tokens: BTreeMap<u64, rb::CancelToken>,
}

impl Inflight {
    // A poisoned lock only means a thread panicked while holding it; the map is still
    // consistent (every change to it is one insert or one remove), and the cleanup hook
    // must never panic: it runs inside a C callback of Node.
    fn lock(&self) -> MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The environment ends: stop every call at its next step boundary and wait for
    /// each to return (its record written).
    fn stop_and_wait(&self) {
        let mut calls = self.lock();
        for token in calls.tokens.values() {
            token.cancel();
        }
        while !calls.tokens.is_empty() {
            calls = self.idle.wait(calls).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Held by a call's future until the call returns; dropping it (the call returned, or
/// its future was dropped) lets the environment's end proceed.
pub(crate) struct Tracked {
    owner: Arc<Inflight>,
    id: u64,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut calls = self.owner.lock();
        calls.tokens.remove(&self.id);
        if calls.tokens.is_empty() {
            self.owner.idle.notify_all();
        }
    }
}

thread_local! {
    // One JS environment per thread (the main thread, or one per worker); keyed by the
    // environment anyway, so that a thread that ever hosts a second one gets its own hook.
    static CURRENT: RefCell<Option<(usize, Arc<Inflight>)>> = const { RefCell::new(None) };
}

/// Registers a call of the environment `env` that `cancel` stops at a step boundary.
/// Called on the JS thread, before the call's future is spawned.
pub(crate) fn track(env: &Env, cancel: &rb::CancelToken) -> napi::Result<Tracked> {
    let key = env.raw() as usize;
    let owner = CURRENT.with(|current| -> napi::Result<Arc<Inflight>> {
        let mut current = current.borrow_mut();
        if let Some((k, owner)) = current.as_ref() {
            if *k == key {
                return Ok(owner.clone());
            }
        }
        let owner = Arc::new(Inflight::default());
        env.add_env_cleanup_hook(owner.clone(), |owner| owner.stop_and_wait())?;
        *current = Some((key, owner.clone()));
        Ok(owner)
    })?;
    let id = {
        let mut calls = owner.lock();
        let id = calls.next;
        calls.next += 1;
        calls.tokens.insert(id, cancel.clone());
        id
    };
    Ok(Tracked { owner, id })
}
