//! The driver trait: how one kind of component is captured, restored and verified.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::event::{Event, EventSink};
use crate::secret::Redactor;
use crate::snapshot::Part;
use crate::store::{ArtifactRef, Store};

/// What a driver can do; the planner and executor branch on it in one place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    /// Has `stop`/`start` (a service that must be stopped while what it depends on is restored).
    pub lifecycle: bool,
    /// Can say what a restore would discard.
    pub discard_report: bool,
    /// Can perturb its component for a drill.
    pub perturb: bool,
    /// Restores are safe to run again after a crash (required for `resume`).
    pub idempotent_restore: bool,
    /// Holds data other services write (a database, a cache). The executor stops
    /// the components that depend on it before its safety snapshot, and the record
    /// says so when nothing did.
    #[serde(default)]
    pub shared_data: bool,
    /// Can fence its writers while it is put back ([`Driver::plan_fence`]): the
    /// executor raises the fence before the safety snapshot and lifts it once the
    /// restore is done, so a write is either in the safety snapshot or refused.
    #[serde(default)]
    pub fence: bool,
}

/// Whether a component's writers can be fenced, and what lifting the fence needs.
#[derive(Debug, Clone, PartialEq)]
pub enum FencePlan {
    /// The fence can be raised. `undo` (never a secret) is what [`Driver::unfence`]
    /// needs to put the server back as it was; it is journaled before the fence is
    /// raised, so `resume` and `abandon` can lift a fence a killed run left up.
    Ready {
        /// What the fence changes, as it is now.
        undo: serde_json::Value,
    },
    /// No fence can be raised here; why, for the record.
    Unavailable {
        /// One line, e.g. "the role is not a superuser".
        reason: String,
    },
}

/// Everything a driver call may use besides its own config.
#[derive(Debug, Clone)]
pub struct Context {
    /// The component's name (for errors and events).
    pub component: String,
    /// The store artifacts go into and come from.
    pub store: Store,
    /// Directory relative paths are resolved against.
    pub base_dir: PathBuf,
    /// Redacts secrets from anything the driver reports.
    pub redactor: Redactor,
    /// The snapshot being captured or restored.
    pub snapshot_id: String,
    /// Set while capturing a safety snapshot: capture what is there, even if a
    /// normal snapshot would refuse it (a dirty git tree, for example).
    pub safety: bool,
    pub(crate) events: EventSink,
    /// Where a rollback step records the process groups it starts (see
    /// `drivers::process`); none outside a rollback.
    pub(crate) child_log: Option<PathBuf>,
    /// Lines for the record's `notes` (see [`Context::note`]); the executor shares one
    /// sink with every context of a step and moves its lines into the journal after it.
    pub(crate) notes: Arc<Mutex<Vec<String>>>,
}

impl Context {
    /// A context for calls outside the executor (tests, tools).
    pub fn new(component: impl Into<String>, store: Store, base_dir: impl Into<PathBuf>) -> Self {
        Context {
            component: component.into(),
            store,
            base_dir: base_dir.into(),
            redactor: Redactor::default(),
            snapshot_id: String::new(),
            safety: false,
            events: EventSink::default(),
            child_log: None,
            notes: Arc::default(),
        }
    }

    /// Resolves a configured path.
    pub fn resolve(&self, p: impl AsRef<Path>) -> PathBuf {
        let p = p.as_ref();
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Reports progress within a long step (shown on stderr, sent to callbacks).
    pub fn progress(&self, message: impl Into<String>) {
        let message = self.redactor.redact(&message.into());
        tracing::info!(component = %self.component, "{message}");
        self.events.emit(Event::progress(&self.component, message));
    }

    /// Adds a line to the record of the rollback this call is part of (its `notes`):
    /// what a reader of the record must know about how the step went, beyond its
    /// status (for example that a service was restarted rather than reloaded and
    /// refused requests meanwhile). Prefixed with the component; secrets redacted.
    /// Outside a rollback the line is only logged.
    pub fn note(&self, line: impl Into<String>) {
        let line = self.redactor.redact(&line.into());
        tracing::info!(component = %self.component, note = true, "{line}");
        self.notes.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{}: {line}", self.component));
    }

    /// Takes the lines [`Context::note`] gathered so far (from this context and every
    /// clone sharing its sink).
    pub(crate) fn take_notes(sink: &Mutex<Vec<String>>) -> Vec<String> {
        std::mem::take(&mut *sink.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What `capture` produced: state for the manifest and artifacts in the store.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    /// Driver-specific state (never secrets).
    pub state: serde_json::Value,
    /// Artifacts written with [`Store::artifact_writer`] and friends.
    pub artifacts: Vec<ArtifactRef>,
}

/// The difference between the current state and a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// Equal.
    pub ok: bool,
    /// What differs, one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<String>,
}

impl Drift {
    /// No difference.
    pub fn equal() -> Self {
        Drift { ok: true, differences: Vec::new() }
    }

    /// From a list of differences: equal when empty.
    pub fn from_differences(differences: Vec<String>) -> Self {
        Drift { ok: differences.is_empty(), differences }
    }
}

/// What a restore throws away: per table, key space, file set or commit range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Discard {
    /// Component.
    pub component: String,
    /// What (table, key space, path, branch).
    pub target: String,
    /// How much differs (rows, keys, files, commits).
    pub changes: u64,
    /// Unit of `changes`.
    pub unit: String,
    /// Whether it is kept so it can be read back: by the safety snapshot, or by the
    /// driver itself elsewhere (git's stash), as `target` then says.
    #[serde(default)]
    pub kept_in_safety_snapshot: bool,
    /// Whether a safety snapshot can keep it. False for what no capture holds (a
    /// socket or FIFO a restore removes): the executor then never marks it kept, and
    /// the record says data was lost.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub keepable: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Discard {
    /// `3 commits`, `1 commit`.
    pub fn amount(&self) -> String {
        if self.changes != 1 {
            return format!("{} {}", self.changes, self.unit);
        }
        // Units read "rows differing (…)", "schema facts differing", "rows: net …": the
        // plural is the first word ending in `s` (before any punctuation).
        let mut words: Vec<String> = self.unit.split(' ').map(str::to_string).collect();
        for w in words.iter_mut().take_while(|w| !w.starts_with('(')) {
            let end = w.trim_end_matches([':', ',']).len();
            if end > 1 && w[..end].ends_with('s') && !w[..end].ends_with("ss") {
                w.remove(end - 1);
                break;
            }
        }
        format!("1 {}", words.join(" "))
    }
}

/// A driver: capture, restore and verify one kind of component.
///
/// Implementations must be `Send + Sync` and are used as `Arc<dyn Driver>`. Only
/// `capture`, `restore` and `verify` are required. A crate outside `rollback-core`
/// can implement it and register a factory with [`crate::Registry::register`].
#[async_trait]
pub trait Driver: Send + Sync + Debug {
    /// The driver's name (`git`, `postgres`, ...).
    fn name(&self) -> &str;

    /// What it can do. The default, [`Capability::default()`], claims nothing: a flag
    /// is a promise the behaviour suite holds the driver to, so each is declared.
    fn capability(&self) -> Capability {
        Capability::default()
    }

    /// Captures the current state into the store.
    async fn capture(&self, ctx: &Context) -> Result<Captured>;

    /// Checks, changing nothing, that `restore(part)` can run: targets present,
    /// server reachable. Artifact checksums are checked by the executor.
    async fn preflight(&self, _ctx: &Context, _part: &Part) -> Result<()> {
        Ok(())
    }

    /// Puts the component back to `part`. Must be safe to run twice.
    async fn restore(&self, ctx: &Context, part: &Part) -> Result<()>;

    /// Compares the current state with `part`.
    async fn verify(&self, ctx: &Context, part: &Part) -> Result<Drift>;

    /// Stops the component (only with `Capability::lifecycle`).
    async fn stop(&self, _ctx: &Context) -> Result<()> {
        Ok(())
    }

    /// Starts the component (only with `Capability::lifecycle`).
    async fn start(&self, _ctx: &Context) -> Result<()> {
        Ok(())
    }

    /// What restoring `part` would discard (only with `Capability::discard_report`).
    async fn discards(&self, _ctx: &Context, _part: &Part) -> Result<Vec<Discard>> {
        Ok(Vec::new())
    }

    /// Changes the component for a drill (only with `Capability::perturb`).
    async fn perturb(&self, _ctx: &Context) -> Result<String> {
        Ok(String::new())
    }

    /// Reads, changing nothing, what raising a write fence would change (only with
    /// `Capability::fence`).
    async fn plan_fence(&self, _ctx: &Context) -> Result<FencePlan> {
        Ok(FencePlan::Unavailable { reason: format!("the {} driver has no write fence", self.name()) })
    }

    /// Raises the fence: until [`Driver::unfence`], no write of another client is
    /// acknowledged, while the driver's own connections still capture and restore.
    /// Returns how, one line for the record. Safe to run twice.
    async fn fence(&self, _ctx: &Context, _undo: &serde_json::Value) -> Result<String> {
        Ok(String::new())
    }

    /// Lifts the fence, putting back what `undo` recorded. Safe to run twice, and
    /// after a `fence` that never ran.
    async fn unfence(&self, _ctx: &Context, _undo: &serde_json::Value) -> Result<()> {
        Ok(())
    }

    /// Frees what the snapshot pinned outside the store (a git tag, an image tag)
    /// when `gc` removes it.
    async fn release(&self, _ctx: &Context, _part: &Part) -> Result<()> {
        Ok(())
    }

    /// Frees what a capture of `ctx.snapshot_id` may have pinned outside the store
    /// when the capture never finished (the process was killed before its manifest
    /// was written, so no `Part` names what it made). Pins must therefore be named
    /// from the snapshot id. Safe to run when nothing was pinned, and twice.
    async fn release_unfinished(&self, _ctx: &Context) -> Result<()> {
        Ok(())
    }

    /// One line for the plan: what `restore(part)` will do.
    fn describe_restore(&self, part: &Part) -> String {
        format!("restore {} from snapshot state", part.driver)
    }

    /// Checks the target is reachable; returns a line for `rollback check`.
    async fn check(&self, _ctx: &Context) -> Result<String> {
        Ok("ok".into())
    }

    /// How many times the component's processes have been restarted after crashing
    /// so far (exits nobody asked for: a reload, a restart an operator or a schedule
    /// asked for is not counted), for `watch`'s crash-loop probe; `None` for drivers
    /// that run no processes. A counter: the probe reads the growth within its window
    /// (a count set back reads as no restart).
    async fn restarts(&self, _ctx: &Context) -> Result<Option<u64>> {
        Ok(None)
    }
}

/// A shared driver.
pub type DynDriver = Arc<dyn Driver>;

/// A stack's driver for one component: every error it returns names the component
/// and has the stack's secrets redacted, here once instead of in each driver.
#[derive(Debug)]
pub(crate) struct Named(pub(crate) DynDriver);

fn named(ctx: &Context, e: crate::Error) -> crate::Error {
    e.redacted(&ctx.redactor).with_component(&ctx.component)
}

#[async_trait]
impl Driver for Named {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn capability(&self) -> Capability {
        self.0.capability()
    }
    async fn capture(&self, ctx: &Context) -> Result<Captured> {
        self.0.capture(ctx).await.map_err(|e| named(ctx, e))
    }
    async fn preflight(&self, ctx: &Context, part: &Part) -> Result<()> {
        self.0.preflight(ctx, part).await.map_err(|e| named(ctx, e))
    }
    async fn restore(&self, ctx: &Context, part: &Part) -> Result<()> {
        self.0.restore(ctx, part).await.map_err(|e| named(ctx, e))
    }
    async fn verify(&self, ctx: &Context, part: &Part) -> Result<Drift> {
        self.0.verify(ctx, part).await.map_err(|e| named(ctx, e))
    }
    async fn stop(&self, ctx: &Context) -> Result<()> {
        self.0.stop(ctx).await.map_err(|e| named(ctx, e))
    }
    async fn start(&self, ctx: &Context) -> Result<()> {
        self.0.start(ctx).await.map_err(|e| named(ctx, e))
    }
    async fn discards(&self, ctx: &Context, part: &Part) -> Result<Vec<Discard>> {
        self.0.discards(ctx, part).await.map_err(|e| named(ctx, e))
    }
    async fn perturb(&self, ctx: &Context) -> Result<String> {
        self.0.perturb(ctx).await.map_err(|e| named(ctx, e))
    }
    async fn plan_fence(&self, ctx: &Context) -> Result<FencePlan> {
        self.0.plan_fence(ctx).await.map_err(|e| named(ctx, e))
    }
    async fn fence(&self, ctx: &Context, undo: &serde_json::Value) -> Result<String> {
        self.0.fence(ctx, undo).await.map_err(|e| named(ctx, e))
    }
    async fn unfence(&self, ctx: &Context, undo: &serde_json::Value) -> Result<()> {
        self.0.unfence(ctx, undo).await.map_err(|e| named(ctx, e))
    }
    async fn release(&self, ctx: &Context, part: &Part) -> Result<()> {
        self.0.release(ctx, part).await.map_err(|e| named(ctx, e))
    }
    async fn release_unfinished(&self, ctx: &Context) -> Result<()> {
        self.0.release_unfinished(ctx).await.map_err(|e| named(ctx, e))
    }
    fn describe_restore(&self, part: &Part) -> String {
        self.0.describe_restore(part)
    }
    async fn check(&self, ctx: &Context) -> Result<String> {
        self.0.check(ctx).await.map_err(|e| named(ctx, e))
    }
    async fn restarts(&self, ctx: &Context) -> Result<Option<u64>> {
        self.0.restarts(ctx).await.map_err(|e| named(ctx, e))
    }
}

#[cfg(test)]
mod tests {
    use super::Discard;

    fn amount(changes: u64, unit: &str) -> String {
        Discard {
            component: "c".into(),
            target: "t".into(),
            changes,
            unit: unit.into(),
            kept_in_safety_snapshot: false,
            keepable: true,
        }
        .amount()
    }

    #[test]
    fn one_change_reads_singular() {
        assert_eq!(
            amount(1, "rows differing (inserted, updated or deleted)"),
            "1 row differing (inserted, updated or deleted)"
        );
        assert_eq!(amount(1, "schema facts differing (columns)"), "1 schema fact differing (columns)");
        assert_eq!(amount(1, "rows: net row-count change +1"), "1 row: net row-count change +1");
        assert_eq!(amount(1, "commits"), "1 commit");
        assert_eq!(amount(2, "rows differing (x)"), "2 rows differing (x)");
        assert_eq!(amount(1, "access"), "1 access");
    }
}
