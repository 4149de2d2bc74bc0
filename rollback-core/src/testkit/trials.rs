//! The trials: each a promise of the driver contract, checked against the oracle.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::FutureExt;

use super::{Fixture, Outcome};
use crate::config::{ComponentConfig, StackConfig};
use crate::driver::{Capability, Context};
use crate::exec::RollbackOptions;
use crate::health::{HealthCheck, HealthKind};
use crate::plan::Scope;
use crate::record::{Record, Status};
use crate::snapshot::SnapshotManifest;
use crate::stack::{SnapshotOptions, Stack};

/// One promise of the driver contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Trial {
    /// Snapshot, mutate, roll back: verify equal, and the oracle's digest equal to the
    /// one taken before the mutation.
    RoundTrip,
    /// Two rollbacks to the same snapshot: the second succeeds and changes nothing.
    RollbackTwice,
    /// Snapshots A and B, then rollbacks A → B → A: each lands on its own state.
    RollbackAfterAnother,
    /// `restore` called twice in a row on the driver itself (with
    /// `Capability::idempotent_restore`, which `resume` relies on).
    IdempotentRestore,
    /// Plan, dry-run, verify and check after a mutation change nothing.
    ReadOnlyOperations,
    /// Verify is equal right after a snapshot, and names a difference after a mutation.
    VerifyDetectsMutation,
    /// The plan's discards are empty right after a snapshot and count the mutation's
    /// changes after it (none when [`super::Fixture::mutation_discards`] is false),
    /// with `Capability::discard_report`.
    DiscardsNameMutation,
    /// A rollback whose health gate fails ends `compensated` only if the component is
    /// then equal to the safety snapshot (oracle: the digest after the mutation);
    /// otherwise its status must not claim so.
    CompensationTruth,
    /// `perturb` really changes the component, and a rollback undoes it (with
    /// `Capability::perturb`).
    PerturbThenRollback,
    /// A drill succeeds and leaves the component as it was (with `Capability::perturb`).
    Drill,
    /// gc with `keep = 1` removes the older of two snapshots, frees what it pinned,
    /// and keeps the newer one usable.
    GcReleases,
    /// A capture whose manifest was never written (the process killed right after
    /// the driver's capture returned) is freed by `release_unfinished` given only its
    /// snapshot id, when the fixture can count what it pinned.
    UnfinishedCaptureReleased,
    /// `stop` stops the component and `start` starts it again, as the fixture's
    /// `running` sees it, both safe to repeat, and the component is then equal to a
    /// snapshot taken before (with `Capability::lifecycle`).
    Lifecycle,
}

impl Trial {
    /// Every trial, in the order [`super::run_behavior`] runs them.
    pub const ALL: &'static [Trial] = &[
        Trial::RoundTrip,
        Trial::RollbackTwice,
        Trial::RollbackAfterAnother,
        Trial::IdempotentRestore,
        Trial::ReadOnlyOperations,
        Trial::VerifyDetectsMutation,
        Trial::DiscardsNameMutation,
        Trial::CompensationTruth,
        Trial::PerturbThenRollback,
        Trial::Drill,
        Trial::GcReleases,
        Trial::UnfinishedCaptureReleased,
        Trial::Lifecycle,
    ];

    /// Snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Trial::RoundTrip => "round_trip",
            Trial::RollbackTwice => "rollback_twice",
            Trial::RollbackAfterAnother => "rollback_after_another",
            Trial::IdempotentRestore => "idempotent_restore",
            Trial::ReadOnlyOperations => "read_only_operations",
            Trial::VerifyDetectsMutation => "verify_detects_mutation",
            Trial::DiscardsNameMutation => "discards_name_mutation",
            Trial::CompensationTruth => "compensation_truth",
            Trial::PerturbThenRollback => "perturb_then_rollback",
            Trial::Drill => "drill",
            Trial::GcReleases => "gc_releases",
            Trial::UnfinishedCaptureReleased => "unfinished_capture_released",
            Trial::Lifecycle => "lifecycle",
        }
    }

    /// `None` when the capability calls for this trial; otherwise the flag that is off.
    fn not_applicable(self, cap: Capability) -> Option<&'static str> {
        match self {
            Trial::IdempotentRestore if !cap.idempotent_restore => Some("idempotent_restore is false"),
            Trial::DiscardsNameMutation if !cap.discard_report => Some("discard_report is false"),
            Trial::PerturbThenRollback | Trial::Drill if !cap.perturb => Some("perturb is false"),
            Trial::Lifecycle if !cap.lifecycle => Some("lifecycle is false"),
            _ => None,
        }
    }
}

impl fmt::Display for Trial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Long enough for a database dump and restore on a slow CI machine; a trial that
/// hangs fails with this instead of holding the whole suite.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(300);

type Checked<T = ()> = std::result::Result<T, String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Adds which step failed to a core error.
trait At<T> {
    fn at(self, step: &str) -> Checked<T>;
}

impl<T> At<T> for crate::Result<T> {
    fn at(self, step: &str) -> Checked<T> {
        self.map_err(|e| format!("{step}: {e}"))
    }
}

/// One trial's component, directory and stack.
struct Env<'a> {
    f: &'a dyn Fixture,
    name: String,
    dir: PathBuf,
    cfg: ComponentConfig,
    stack: Stack,
}

pub(super) async fn run(f: &dyn Fixture, trial: Trial) -> Outcome {
    let tmp = match tempfile::Builder::new().prefix("rollback-testkit-").tempdir() {
        Ok(t) => t,
        Err(e) => return Outcome::Failed(format!("cannot make the trial's directory: {e}")),
    };
    // Canonical: drivers compare resolved paths, and /tmp may be a link.
    let dir = std::fs::canonicalize(tmp.path()).unwrap_or_else(|_| tmp.path().to_path_buf());
    // Short, lower-case, valid as a component, database and key-prefix name, and
    // unique so trials of several drivers and runs never share a resource.
    let name = format!("kit_{}_{:08x}", short(trial), rand::random::<u32>());
    let outcome = match AssertUnwindSafe(tokio::time::timeout(TRIAL_TIMEOUT, set_up_and_run(f, trial, &name, &dir)))
        .catch_unwind()
        .await
    {
        Ok(Ok(Ok(None))) => Outcome::Passed,
        Ok(Ok(Ok(Some(why)))) => Outcome::NotApplicable(why.into()),
        Ok(Ok(Err(message))) => Outcome::Failed(message),
        Ok(Err(_)) => Outcome::Failed(format!("did not finish within {}", humantime::format_duration(TRIAL_TIMEOUT))),
        Err(panic) => Outcome::Failed(format!("panicked: {}", panic_message(&*panic))),
    };
    f.cleanup(&name, &dir).await;
    drop(tmp);
    outcome
}

fn short(t: Trial) -> String {
    t.as_str().split('_').map(|w| &w[..w.len().min(4)]).collect::<Vec<_>>().join("")
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

async fn set_up_and_run(f: &dyn Fixture, trial: Trial, name: &str, dir: &Path) -> Checked<Option<&'static str>> {
    let cfg = f.component(name, dir).await.at("fixture: component")?;
    ensure!(cfg.driver == f.driver(), "the fixture's component uses driver `{}`, not `{}`", cfg.driver, f.driver());
    let stack = stack_of(f, dir, cfg.clone())?;
    let cap = stack.driver(name).at("driver")?.capability();
    if let Some(why) = trial.not_applicable(cap) {
        return Ok(Some(why));
    }
    let env = Env { f, name: name.to_string(), dir: dir.to_path_buf(), cfg, stack };
    let result = run_trial(&env, trial).await;
    release_all(&env).await;
    result.map(|()| None)
}

/// Frees what every snapshot of the trial pinned outside the store (tags, database
/// copies): the fixture's cleanup cannot know their names, and the trial's store goes
/// with its directory.
async fn release_all(e: &Env<'_>) {
    let (Ok(snaps), Ok(driver)) = (e.stack.list(), e.stack.driver(&e.name)) else { return };
    for s in snaps {
        for p in s.parts.iter().filter(|p| p.component == e.name) {
            if let Err(err) = driver.release(&e.context(&s), p).await {
                tracing::warn!(component = %e.name, snapshot = %s.id, error = %err, "testkit: cannot release");
            }
        }
    }
}

async fn run_trial(env: &Env<'_>, trial: Trial) -> Checked {
    match trial {
        Trial::RoundTrip => round_trip(env).await,
        Trial::RollbackTwice => rollback_twice(env).await,
        Trial::RollbackAfterAnother => rollback_after_another(env).await,
        Trial::IdempotentRestore => idempotent_restore(env).await,
        Trial::ReadOnlyOperations => read_only_operations(env).await,
        Trial::VerifyDetectsMutation => verify_detects_mutation(env).await,
        Trial::DiscardsNameMutation => discards_name_mutation(env).await,
        Trial::CompensationTruth => compensation_truth(env).await,
        Trial::PerturbThenRollback => perturb_then_rollback(env).await,
        Trial::Drill => drill(env).await,
        Trial::GcReleases => gc_releases(env).await,
        Trial::UnfinishedCaptureReleased => unfinished_capture_released(env).await,
        Trial::Lifecycle => lifecycle(env).await,
    }
}

fn stack_of(f: &dyn Fixture, dir: &Path, cfg: ComponentConfig) -> Checked<Stack> {
    let config = StackConfig::new(dir).with_component(cfg);
    Stack::new(config, &f.registry()).at("building the stack")
}

impl Env<'_> {
    async fn digest(&self, when: &str) -> Checked<String> {
        self.f.digest(&self.name, &self.dir).await.at(&format!("fixture: digest {when}"))
    }

    /// Mutates and checks the oracle sees it: a mutation the digest misses would make
    /// every later comparison vacuous.
    async fn mutate(&self, before: &str) -> Checked<String> {
        self.f.mutate(&self.name, &self.dir).await.at("fixture: mutate")?;
        let after = self.digest("after the mutation").await?;
        ensure!(after != before, "fixture: the mutation did not change the digest ({after})");
        Ok(after)
    }

    async fn snapshot(&self, stack: &Stack) -> Checked<SnapshotManifest> {
        stack.snapshot(SnapshotOptions { label: Some("testkit".into()), ..Default::default() }).await.at("snapshot")
    }

    async fn rollback(&self, stack: &Stack, snap: &SnapshotManifest) -> Checked<Record> {
        let opts = RollbackOptions { scope: Scope::Complete, trigger: Some("testkit".into()), ..Default::default() };
        stack.rollback(&snap.id, opts).await.at(&format!("rollback to {}", snap.id))
    }

    async fn rollback_ok(&self, snap: &SnapshotManifest) -> Checked<Record> {
        let r = self.rollback(&self.stack, snap).await?;
        ensure!(r.status == Status::Succeeded, "rollback to {} ended {}: {}", snap.id, r.status.as_str(), why(&r));
        Ok(r)
    }

    async fn verify_equal(&self, snap: &SnapshotManifest, when: &str) -> Checked {
        let v = self.stack.verify(&snap.id, &[]).await.at(&format!("verify {when}"))?;
        ensure!(v.ok, "verify {when} found differences: {:?}", v.components.get(&self.name).map(|d| &d.differences));
        Ok(())
    }

    async fn same(&self, expected: &str, when: &str) -> Checked {
        let now = self.digest(when).await?;
        ensure!(now == expected, "the oracle's digest {when} is {now}, expected {expected}");
        Ok(())
    }

    fn context(&self, snap: &SnapshotManifest) -> Context {
        let mut c = Context::new(&self.name, self.stack.store().clone(), &self.dir);
        c.snapshot_id = snap.id.clone();
        c
    }
}

/// What went wrong in a record: its error and every failed step.
fn why(r: &Record) -> String {
    let mut parts: Vec<String> = r.error.iter().cloned().collect();
    for s in r.steps.iter().filter(|s| s.status != "ok") {
        parts.push(format!("step {} {}: {}", s.component, s.action, s.error.as_deref().unwrap_or("failed")));
    }
    parts.join("; ")
}

async fn round_trip(e: &Env<'_>) -> Checked {
    let before = e.digest("before the snapshot").await?;
    ensure!(before == e.digest("read twice").await?, "fixture: the digest of an unchanged component is not stable");
    let snap = e.snapshot(&e.stack).await?;
    e.same(&before, "after the snapshot").await?;
    e.mutate(&before).await?;
    e.rollback_ok(&snap).await?;
    e.verify_equal(&snap, "after the rollback").await?;
    e.same(&before, "after the rollback").await
}

async fn rollback_twice(e: &Env<'_>) -> Checked {
    let before = e.digest("before the snapshot").await?;
    let snap = e.snapshot(&e.stack).await?;
    e.mutate(&before).await?;
    e.rollback_ok(&snap).await?;
    e.same(&before, "after the first rollback").await?;
    e.rollback_ok(&snap).await?;
    e.verify_equal(&snap, "after the second rollback").await?;
    e.same(&before, "after the second rollback").await
}

async fn rollback_after_another(e: &Env<'_>) -> Checked {
    let da = e.digest("of A").await?;
    let a = e.snapshot(&e.stack).await?;
    let db = e.mutate(&da).await?;
    let b = e.snapshot(&e.stack).await?;
    e.mutate(&db).await?;
    e.rollback_ok(&a).await?;
    e.same(&da, "after the rollback to A").await?;
    e.rollback_ok(&b).await?;
    e.verify_equal(&b, "after the rollback to B").await?;
    e.same(&db, "after the rollback to B").await?;
    e.rollback_ok(&a).await?;
    e.verify_equal(&a, "after the rollback back to A").await?;
    e.same(&da, "after the rollback back to A").await
}

async fn idempotent_restore(e: &Env<'_>) -> Checked {
    let before = e.digest("before the snapshot").await?;
    let snap = e.snapshot(&e.stack).await?;
    e.mutate(&before).await?;
    let driver = e.stack.driver(&e.name).at("driver")?;
    let part = snap.parts.iter().find(|p| p.component == e.name).ok_or("the snapshot has no part for the component")?;
    let ctx = e.context(&snap);
    driver.restore(&ctx, part).await.at("first restore")?;
    e.same(&before, "after the first restore").await?;
    driver.restore(&ctx, part).await.at("second restore (declared idempotent)")?;
    let d = driver.verify(&ctx, part).await.at("verify after the second restore")?;
    ensure!(d.ok, "verify after the second restore found differences: {:?}", d.differences);
    e.same(&before, "after the second restore").await
}

async fn read_only_operations(e: &Env<'_>) -> Checked {
    let before = e.digest("before the snapshot").await?;
    let snap = e.snapshot(&e.stack).await?;
    let mutated = e.mutate(&before).await?;
    e.stack.plan(&snap.id, &Scope::Complete).await.at("plan")?;
    e.same(&mutated, "after plan").await?;
    e.stack.dry_run(&snap.id, &Scope::Complete).await.at("dry run")?;
    e.same(&mutated, "after a dry run").await?;
    e.stack.verify(&snap.id, &[]).await.at("verify")?;
    e.same(&mutated, "after verify").await?;
    let c = e.stack.check().await.at("check")?;
    ensure!(c.ok, "check found the component unreachable: {:?}", c.components.get(&e.name));
    e.same(&mutated, "after check").await
}

async fn verify_detects_mutation(e: &Env<'_>) -> Checked {
    let before = e.digest("before the snapshot").await?;
    let snap = e.snapshot(&e.stack).await?;
    e.verify_equal(&snap, "right after the snapshot").await?;
    e.mutate(&before).await?;
    let v = e.stack.verify(&snap.id, &[]).await.at("verify after the mutation")?;
    let d = v.components.get(&e.name).ok_or("verify has no entry for the component")?;
    ensure!(!d.ok && !v.ok, "verify after the mutation says equal");
    ensure!(!d.differences.is_empty(), "verify says unequal but names no difference");
    Ok(())
}

async fn discards_name_mutation(e: &Env<'_>) -> Checked {
    let before = e.digest("before the snapshot").await?;
    let snap = e.snapshot(&e.stack).await?;
    let changes = |p: &crate::plan::Plan| p.discards.iter().filter(|d| d.component == e.name).map(|d| d.changes).sum();
    let p = e.stack.plan(&snap.id, &Scope::Complete).await.at("plan right after the snapshot")?;
    let n: u64 = changes(&p);
    ensure!(n == 0, "right after the snapshot the plan discards {n} changes: {:?}", p.discards);
    e.mutate(&before).await?;
    let p = e.stack.plan(&snap.id, &Scope::Complete).await.at("plan after the mutation")?;
    let n: u64 = changes(&p);
    if !e.f.mutation_discards() {
        ensure!(n == 0, "the mutation loses nothing, yet the plan discards {n} changes: {:?}", p.discards);
        return Ok(());
    }
    ensure!(n > 0, "after the mutation the plan discards nothing: {:?}", p.discards);
    ensure!(
        p.discards.iter().filter(|d| d.changes > 0).all(|d| !d.target.is_empty() && !d.unit.is_empty()),
        "a discard names no target or unit: {:?}",
        p.discards
    );
    Ok(())
}

async fn compensation_truth(e: &Env<'_>) -> Checked {
    // A check that can never pass: the rollback's health gate fails after the restore.
    let failing = HealthCheck {
        kind: HealthKind::Command { argv: vec!["false".into()] },
        timeout: Duration::from_millis(200),
        interval: Duration::from_millis(50),
    };
    let stack = stack_of(e.f, &e.dir, e.cfg.clone().health(failing))?;
    let before = e.digest("before the snapshot").await?;
    let snap = e.snapshot(&stack).await?;
    let mutated = e.mutate(&before).await?;
    let r = e.rollback(&stack, &snap).await?;
    ensure!(r.status != Status::Succeeded, "the health gate cannot pass, yet the rollback ended succeeded");
    ensure!(
        r.steps.iter().any(|s| s.action == "health_gate" && s.status == "failed"),
        "the rollback ended {} without a failed health gate: {}",
        r.status.as_str(),
        why(&r)
    );
    if r.status != Status::Compensated {
        ensure!(r.status == Status::Failed, "ended {} instead of compensated or failed", r.status.as_str());
        return Ok(());
    }
    let safety = r.safety_snapshot_id.as_deref().ok_or("compensated without a safety snapshot")?;
    let v = stack.verify(safety, &[]).await.at("verify against the safety snapshot")?;
    ensure!(
        v.ok,
        "the record says compensated, but the component differs from the safety snapshot: {:?}",
        v.components.get(&e.name).map(|d| &d.differences)
    );
    let now = e.digest("after the compensation").await?;
    ensure!(
        now == mutated,
        "the record says compensated, but the oracle's digest is {now}, not the state before the rollback \
         ({mutated}){}",
        if now == before { ": the snapshot's state was left in place" } else { "" }
    );
    Ok(())
}

async fn perturb_then_rollback(e: &Env<'_>) -> Checked {
    let before = e.digest("before the snapshot").await?;
    let snap = e.snapshot(&e.stack).await?;
    let driver = e.stack.driver(&e.name).at("driver")?;
    driver.perturb(&e.context(&snap)).await.at("perturb")?;
    let now = e.digest("after perturb").await?;
    ensure!(now != before, "perturb changed nothing the oracle sees");
    e.rollback_ok(&snap).await?;
    e.verify_equal(&snap, "after the rollback").await?;
    e.same(&before, "after the rollback").await
}

async fn drill(e: &Env<'_>) -> Checked {
    let before = e.digest("before the drill").await?;
    let opts = RollbackOptions { scope: Scope::Complete, trigger: Some("testkit".into()), ..Default::default() };
    let r = e.stack.drill(opts).await.at("drill")?;
    ensure!(r.status == Status::Succeeded, "the drill ended {}: {}", r.status.as_str(), why(&r));
    let tag = format!("perturbed {}:", e.name);
    ensure!(r.notes.iter().any(|n| n.starts_with(&tag)), "the drill did not perturb the component: {:?}", r.notes);
    e.verify_equal(&e.stack.resolve(&r.snapshot_id).at("the drill's snapshot")?, "after the drill").await?;
    e.same(&before, "after the drill").await
}

async fn gc_releases(e: &Env<'_>) -> Checked {
    let da = e.digest("of A").await?;
    let a = e.snapshot(&e.stack).await?;
    let db = e.mutate(&da).await?;
    let b = e.snapshot(&e.stack).await?;
    let pinned = |id: String| async move { e.f.pinned(&e.name, &e.dir, &id).await.at("fixture: pinned") };
    let b_before = pinned(b.id.clone()).await?;
    let report = e.stack.gc(Some(1), None).await.at("gc")?;
    ensure!(report.removed == vec![a.id.clone()], "gc keep=1 removed {:?}, expected [{}]", report.removed, a.id);
    ensure!(report.kept.contains(&b.id), "gc did not keep the newest snapshot: {:?}", report.kept);
    if let Some(n) = pinned(a.id.clone()).await? {
        ensure!(n == 0, "the removed snapshot {} still pins {n} resources", a.id);
    }
    ensure!(pinned(b.id.clone()).await? == b_before, "gc changed what the kept snapshot {} pins", b.id);
    ensure!(e.stack.resolve(&a.id).is_err(), "the removed snapshot {} can still be resolved", a.id);
    e.verify_equal(&b, "against the kept snapshot after gc").await?;
    // What the kept snapshot pins must still work: roll back to it.
    e.mutate(&db).await?;
    e.rollback_ok(&b).await?;
    e.same(&db, "after a rollback to the kept snapshot").await
}

async fn unfinished_capture_released(e: &Env<'_>) -> Checked {
    let driver = e.stack.driver(&e.name).at("the driver")?;
    let mut ctx = Context::new(&e.name, e.stack.store().clone(), &e.dir);
    ctx.snapshot_id = crate::snapshot::new_id();
    // What a killed `rollback snapshot` leaves: the driver's pins, and no manifest.
    driver.capture(&ctx).await.at("capture")?;
    let pinned = e.f.pinned(&e.name, &e.dir, &ctx.snapshot_id).await.at("fixture: pinned")?;
    driver.release_unfinished(&ctx).await.at("release_unfinished")?;
    if let Some(n) = e.f.pinned(&e.name, &e.dir, &ctx.snapshot_id).await.at("fixture: pinned")? {
        ensure!(n == 0, "a capture without a manifest still pins {n} of {pinned:?} resources after release_unfinished");
    }
    driver.release_unfinished(&ctx).await.at("release_unfinished, a second time")?;
    // A snapshot taken the normal way is untouched by it and still rolls back.
    let before = e.digest("before").await?;
    let s = e.snapshot(&e.stack).await?;
    let mut other = Context::new(&e.name, e.stack.store().clone(), &e.dir);
    other.snapshot_id = crate::snapshot::new_id();
    driver.release_unfinished(&other).await.at("release_unfinished of another id")?;
    e.mutate(&before).await?;
    e.rollback_ok(&s).await?;
    e.same(&before, "after a rollback past an unfinished capture").await
}

async fn lifecycle(e: &Env<'_>) -> Checked {
    let running = || async { e.f.running(&e.name, &e.dir).await.at("fixture: running") };
    let Some(up) = running().await? else {
        return Err("the driver has lifecycle, and the fixture's `running` cannot tell whether it runs".into());
    };
    ensure!(up, "the fresh component does not run");
    let snap = e.snapshot(&e.stack).await?;
    let driver = e.stack.driver(&e.name).at("the driver")?;
    let ctx = e.context(&snap);
    for round in ["", " a second time"] {
        driver.stop(&ctx).await.at(&format!("stop{round}"))?;
        ensure!(running().await? == Some(false), "the component still runs after stop{round}");
    }
    for round in ["", " a second time"] {
        driver.start(&ctx).await.at(&format!("start{round}"))?;
        ensure!(running().await? == Some(true), "the component does not run after start{round}");
    }
    e.verify_equal(&snap, "after stop and start").await
}
