//! The suite can fail: a driver that breaks the contract is caught by the trials,
//! and by the oracle when the driver's own verify lies.

use std::path::Path;
use std::sync::Arc;

use rollback_core::testkit::{async_trait, run_trials, tree_digest, unique, Fixture, Outcome, Trial};
use rollback_core::{Capability, Captured, ComponentConfig, Context, Drift, Driver, Part, Registry, Result};

/// Captures nothing, restores nothing, and says every state is equal.
#[derive(Debug)]
struct Liar;

#[async_trait]
impl Driver for Liar {
    fn name(&self) -> &str {
        "liar"
    }
    fn capability(&self) -> Capability {
        Capability { idempotent_restore: true, ..Capability::default() }
    }
    async fn capture(&self, _ctx: &Context) -> Result<Captured> {
        Ok(Captured::default())
    }
    async fn restore(&self, _ctx: &Context, _part: &Part) -> Result<()> {
        Ok(())
    }
    async fn verify(&self, _ctx: &Context, _part: &Part) -> Result<Drift> {
        Ok(Drift::equal())
    }
}

struct LiarFixture;

#[async_trait]
impl Fixture for LiarFixture {
    fn driver(&self) -> &str {
        "liar"
    }
    async fn component(&self, name: &str, dir: &Path) -> Result<ComponentConfig> {
        tokio::fs::write(dir.join(name), "v1").await?;
        Ok(ComponentConfig::new(name, "liar"))
    }
    async fn mutate(&self, name: &str, dir: &Path) -> Result<()> {
        Ok(tokio::fs::write(dir.join(name), unique("v")).await?)
    }
    async fn digest(&self, name: &str, dir: &Path) -> Result<String> {
        tree_digest(&dir.join(name)).await
    }
    async fn cleanup(&self, _name: &str, _dir: &Path) {}
    fn registry(&self) -> Registry {
        let mut r = Registry::empty();
        r.register("liar", |_, _| Ok(Arc::new(Liar)));
        r
    }
}

#[tokio::test]
async fn a_driver_that_restores_nothing_fails_its_trials() {
    let report = run_trials(&LiarFixture, Trial::ALL).await;
    let outcome = |t: Trial| report.trials.iter().find(|r| r.trial == t).map(|r| r.outcome.clone()).unwrap();
    for t in [Trial::RoundTrip, Trial::RollbackTwice, Trial::RollbackAfterAnother, Trial::IdempotentRestore] {
        let Outcome::Failed(m) = outcome(t) else { panic!("{t} passed for a driver that restores nothing:\n{report}") };
        assert!(m.contains("oracle's digest"), "{t}: the oracle, not the driver's verify, must catch it: {m}");
    }
    assert!(matches!(outcome(Trial::VerifyDetectsMutation), Outcome::Failed(m) if m.contains("says equal")));
    assert!(matches!(outcome(Trial::Drill), Outcome::NotApplicable(_)), "{report}");
    let panicked = std::panic::catch_unwind(|| report.assert_passed(&[]));
    assert!(panicked.is_err(), "assert_passed accepted failures");
    // A known failure that passes is an error too: the list must shrink when fixed.
    let known = [(Trial::ReadOnlyOperations, "not broken")];
    assert!(std::panic::catch_unwind(|| report.assert_passed(&known)).is_err());
}
