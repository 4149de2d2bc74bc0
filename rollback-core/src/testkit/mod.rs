//! The driver contract, executable: one behaviour suite that every driver passes.
//!
//! A driver promises the same things whatever it restores: capture → restore →
//! verify equal; a restore safe to run twice; plan, dry-run, verify and check change
//! nothing; compensation that really puts the component back; capability flags that
//! tell the truth. This module checks those promises against the real component.
//!
//! A driver's test writes a [`Fixture`]: how to make a fresh component, how to change
//! it like a deploy would, and an *oracle* — a digest of the component's real state
//! read without the driver (a `git rev-parse`, a file tree hash, a `SELECT` through
//! the database's own client). [`run_behavior`] then runs every trial the driver's
//! [`Capability`](crate::Capability) calls for, each on a fresh component in a
//! fresh directory, and reports each by name.
//!
//! ```no_run
//! use std::path::Path;
//! use rollback_core::testkit::{self, async_trait, Fixture};
//! use rollback_core::{ComponentConfig, Result};
//!
//! struct NotesFixture;
//!
//! #[async_trait]
//! impl Fixture for NotesFixture {
//!     fn driver(&self) -> &str {
//!         "files"
//!     }
//!     async fn component(&self, name: &str, dir: &Path) -> Result<ComponentConfig> {
//!         let path = dir.join(name);
//!         tokio::fs::create_dir_all(&path).await?;
//!         tokio::fs::write(path.join("notes.txt"), "v1\n").await?;
//!         Ok(ComponentConfig::new(name, "files").option("paths", vec![path.display().to_string()]))
//!     }
//!     async fn mutate(&self, name: &str, dir: &Path) -> Result<()> {
//!         Ok(tokio::fs::write(dir.join(name).join("notes.txt"), testkit::unique("v")).await?)
//!     }
//!     async fn digest(&self, name: &str, dir: &Path) -> Result<String> {
//!         testkit::tree_digest(&dir.join(name)).await
//!     }
//!     async fn cleanup(&self, _name: &str, _dir: &Path) {}
//! }
//!
//! // In a `#[tokio::test]`:
//! async fn files_keeps_the_contract() {
//!     testkit::run_behavior(&NotesFixture).await.assert_passed(&[]);
//! }
//! ```

use std::fmt;
use std::path::Path;

pub use async_trait::async_trait;

use crate::config::ComponentConfig;
use crate::error::Result;
use crate::registry::Registry;

mod oracle;
pub mod property;
mod trials;

pub use oracle::{run, tree_digest, unique};
pub use property::{run_property, Cases, Gen, Generator, Inventory, PropertyReport};
pub use trials::Trial;

/// How the behaviour suite makes, changes, observes and removes one kind of component.
///
/// Every call gets the component's `name` (unique per trial: use it for databases,
/// key prefixes, directories) and `dir`, a fresh directory of the trial that is
/// removed after it. The store of the trial's stack is `dir/.rollback`.
#[async_trait]
pub trait Fixture: Send + Sync {
    /// The driver under test, as registered (`git`, `postgres`, ...).
    fn driver(&self) -> &str;

    /// Creates a fresh component (its database, directory or repository) and returns
    /// its config.
    async fn component(&self, name: &str, dir: &Path) -> Result<ComponentConfig>;

    /// Changes the component like a deploy would. Each call must change the digest
    /// again: the suite mutates several times in one trial.
    async fn mutate(&self, name: &str, dir: &Path) -> Result<()>;

    /// A digest of the component's real state, read without the driver: two states
    /// the operator would call equal have equal digests.
    async fn digest(&self, name: &str, dir: &Path) -> Result<String>;

    /// Removes what `component` created outside `dir` (databases, keys). Runs after
    /// every trial, passed or failed.
    async fn cleanup(&self, name: &str, dir: &Path);

    /// Whether a rollback after `mutate` throws something away (commits, rows, files,
    /// keys): the discards trial then expects the plan to count it. `false` for a
    /// mutation that loses nothing, like pointing a release link at a release that
    /// stays on disk: the trial then expects no discards.
    fn mutation_discards(&self) -> bool {
        true
    }

    /// How many resources outside the store snapshot `snapshot_id` pins (a git tag, a
    /// copy of the database); `None` when the fixture cannot tell. The gc trial checks
    /// that a removed snapshot pins nothing afterwards.
    async fn pinned(&self, _name: &str, _dir: &Path, _snapshot_id: &str) -> Result<Option<usize>> {
        Ok(None)
    }

    /// Whether the component runs (serves, accepts work), read without the driver.
    /// Required of a driver with `Capability::lifecycle`: the lifecycle trial checks
    /// that its `stop` stops and its `start` starts.
    async fn running(&self, _name: &str, _dir: &Path) -> Result<Option<bool>> {
        Ok(None)
    }

    /// The registry the trial's stack is built from; a driver from another crate
    /// registers itself here.
    fn registry(&self) -> Registry {
        Registry::with_default_drivers()
    }

    /// Whether this fixture's trials must run one at a time in a test process: `true`
    /// when a rollback of one trial's component reaches past it (a write fence that
    /// holds the whole server), so that another trial's writes would be refused.
    fn serial(&self) -> bool {
        false
    }
}

/// How one trial ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check held.
    Passed,
    /// A check failed, or a step errored or panicked: what and why.
    Failed(String),
    /// The driver's capabilities do not call for this trial: which flag is off.
    NotApplicable(String),
}

/// One trial's name and outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialReport {
    /// Which trial.
    pub trial: Trial,
    /// How it ended.
    pub outcome: Outcome,
}

/// Every trial of one run of the suite, in the order they ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BehaviorReport {
    /// The driver under test.
    pub driver: String,
    /// One entry per trial, applicable or not.
    pub trials: Vec<TrialReport>,
}

impl BehaviorReport {
    /// The trials that failed, with their messages.
    pub fn failures(&self) -> Vec<(Trial, &str)> {
        self.trials
            .iter()
            .filter_map(|t| match &t.outcome {
                Outcome::Failed(m) => Some((t.trial, m.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Panics, naming every failed trial with its message, unless the only failures
    /// are the `known` ones (each a trial and why it fails). A known failure that now
    /// passes panics too, so the list is shortened when the bug is fixed.
    pub fn assert_passed(&self, known: &[(Trial, &str)]) {
        let mut problems = Vec::new();
        for (trial, message) in self.failures() {
            if !known.iter().any(|(k, _)| *k == trial) {
                problems.push(format!("{} / {trial}: {message}", self.driver));
            }
        }
        for (trial, reason) in known {
            match self.trials.iter().find(|t| t.trial == *trial).map(|t| &t.outcome) {
                Some(Outcome::Failed(_)) => {}
                Some(o) => problems.push(format!(
                    "{} / {trial} is listed as a known failure ({reason}) but ended {o}: remove it from the list",
                    self.driver
                )),
                None => {
                    problems.push(format!("{} / {trial} is listed as a known failure but did not run", self.driver))
                }
            }
        }
        assert!(problems.is_empty(), "behaviour suite:\n{self}\nproblems:\n  {}", problems.join("\n  "));
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Passed => f.write_str("passed"),
            Outcome::Failed(m) => write!(f, "FAILED: {m}"),
            Outcome::NotApplicable(why) => write!(f, "not applicable ({why})"),
        }
    }
}

impl fmt::Display for BehaviorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "driver `{}`:", self.driver)?;
        for t in &self.trials {
            writeln!(f, "  {:<28} {}", t.trial.as_str(), t.outcome)?;
        }
        Ok(())
    }
}

/// Runs every trial on `fixture`, each on a fresh component; never panics.
pub async fn run_behavior(fixture: &dyn Fixture) -> BehaviorReport {
    run_trials(fixture, Trial::ALL).await
}

/// Runs only the given trials (when a driver's test wants one trial per `#[test]`).
pub async fn run_trials(fixture: &dyn Fixture, which: &[Trial]) -> BehaviorReport {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = if fixture.serial() { Some(SERIAL.lock().await) } else { None };
    let mut out = Vec::new();
    for t in which {
        out.push(TrialReport { trial: *t, outcome: trials::run(fixture, *t).await });
    }
    BehaviorReport { driver: fixture.driver().to_string(), trials: out }
}

/// One `#[tokio::test]` per trial for a fixture, named after the trial, so a failure
/// reads `git::compensation_truth` in the test output and trials run in parallel.
///
/// `known` lists trials that fail because of a bug not fixed yet, each with why:
/// they must keep failing (a fixed one must leave the list).
///
/// ```text
/// const KNOWN_FAILURES: &[(Trial, &str)] = &[];
/// rollback_core::behavior_tests!(MyFixture, KNOWN_FAILURES);
/// ```
#[macro_export]
macro_rules! behavior_tests {
    ($fixture:expr, $known:expr) => {
        $crate::behavior_tests!(@each $fixture, $known;
            round_trip RoundTrip, rollback_twice RollbackTwice, rollback_after_another RollbackAfterAnother,
            idempotent_restore IdempotentRestore, read_only_operations ReadOnlyOperations,
            verify_detects_mutation VerifyDetectsMutation, discards_name_mutation DiscardsNameMutation,
            compensation_truth CompensationTruth, perturb_then_rollback PerturbThenRollback, drill Drill,
            gc_releases GcReleases, unfinished_capture_released UnfinishedCaptureReleased,
            lifecycle Lifecycle);
    };
    (@each $fixture:expr, $known:expr; $($name:ident $variant:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                use $crate::testkit::Trial;
                let report = $crate::testkit::run_trials(&$fixture, &[Trial::$variant]).await;
                let known: ::std::vec::Vec<(Trial, &str)> =
                    $known.iter().copied().filter(|(t, _)| *t == Trial::$variant).collect();
                report.assert_passed(&known);
            }
        )*

        #[test]
        fn every_trial_has_a_test() {
            use $crate::testkit::Trial;
            let here = [$(Trial::$variant),*];
            assert_eq!(here.as_slice(), Trial::ALL, "behavior_tests! and Trial::ALL list different trials");
        }
    };
}
