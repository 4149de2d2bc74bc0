//! The promise by property: cases generated from a seed, checked by oracles that do
//! not come from the driver.
//!
//! A trial of the behaviour suite checks one promise on one hand-made component. A
//! [`Generator`] makes the components instead, from a [`Gen`] seeded per case: random
//! schemas, values at the edges of their types, odd names, file trees with links and
//! special files, histories with untracked and ignored files. For every case,
//! [`run_property`] checks the promise itself:
//!
//! 1. right after a snapshot, `verify` is equal;
//! 2. after one to three generated mutations, a rollback ends `succeeded`, `verify`
//!    is equal, and the generator's digest (read without the driver) is the one taken
//!    at the snapshot;
//! 3. nothing is lost unnamed: rolling back to the rollback's safety snapshot gives
//!    the digest the mutations left, and what the generator can no longer find by its
//!    own means ([`Generator::lost`]: an untracked file the driver should have kept,
//!    a socket no snapshot can hold) is named by the record, which then says
//!    `data_loss`;
//! 4. in about one case in four, the rollback's health gate fails instead: it must end
//!    `compensated` with the digest the mutations left, or not claim to.
//!
//! Cases come from the environment (see [`Cases::from_env`]): a fixed set by default,
//! so CI runs the same cases every time; a failure prints its seed, and
//! `ROLLBACK_PROPERTY_SEED=<seed>` replays that one case.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::Duration;

use futures_util::FutureExt;
use rand::{Rng, SeedableRng};

use super::async_trait;
use crate::config::{ComponentConfig, StackConfig};
use crate::error::Result;
use crate::exec::RollbackOptions;
use crate::health::{HealthCheck, HealthKind};
use crate::plan::Scope;
use crate::record::{Record, Status};
use crate::registry::Registry;
use crate::stack::{SnapshotOptions, Stack};

/// A seeded source of cases: the same seed makes the same choices.
pub struct Gen {
    rng: rand::rngs::StdRng,
    seed: u64,
}

impl Gen {
    /// A generator for one case.
    pub fn new(seed: u64) -> Self {
        Gen { rng: rand::rngs::StdRng::seed_from_u64(seed), seed }
    }

    /// The case's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            self.rng.gen_range(0..n)
        }
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        self.rng.gen_range(lo..=hi.max(lo))
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.rng.gen_range(0..100) < percent
    }

    /// Any 64 bits.
    pub fn u64(&mut self) -> u64 {
        self.rng.gen()
    }

    /// One of `items` (which must not be empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Up to `max_len` random bytes; sometimes none.
    pub fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let n = if self.chance(10) { 0 } else { self.below(max_len + 1) };
        (0..n).map(|_| self.rng.gen()).collect()
    }

    /// A name a careless deploy could give a table, key or file: letters, digits,
    /// spaces, quotes, a backtick, a semicolon, a dash or dot first, non-ASCII
    /// letters. Never empty, never `/` or NUL, at most `max` bytes (at least 1).
    pub fn name(&mut self, max: usize) -> String {
        const PARTS: &[&str] = &[
            "a", "b", "z", "Q", "0", "7", "_", "-", ".", " ", "'", "\"", "`", ";", "ü", "ß", "日", "🚀", "x y", "$1",
            "%s", "\\", "select", "NULL", "--",
        ];
        let max = max.max(1);
        let want = 1 + self.below(12);
        let mut s = String::new();
        for _ in 0..want {
            let p = *self.pick(PARTS);
            if s.len() + p.len() > max {
                break;
            }
            s.push_str(p);
        }
        if s.is_empty() || s.trim().is_empty() || s == "." || s == ".." {
            s = format!("n{}", self.below(1000));
        }
        s
    }

    /// A plain identifier (`[a-z][a-z0-9_]*`, at most `max` bytes), for where a name
    /// must be simple.
    pub fn ident(&mut self, max: usize) -> String {
        const FIRST: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
        const REST: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_";
        let n = 1 + self.below(max.clamp(1, 16));
        let mut s = String::with_capacity(n);
        s.push(*self.pick(FIRST) as char);
        for _ in 1..n {
            s.push(*self.pick(REST) as char);
        }
        s
    }

    /// Text at the edges: empty, spaces only, quotes and backslashes, newlines and
    /// tabs, 2-, 3- and 4-byte characters, a long run; never NUL.
    pub fn text(&mut self, max: usize) -> String {
        match self.below(8) {
            0 => String::new(),
            1 => " ".repeat(1 + self.below(3)),
            2 => "it's \"quoted\" \\ back\\slash".into(),
            3 => "line\nbreak\ttab\r\n".into(),
            4 => "ünïcødé ✓ 日本語 🚀".into(),
            5 => "x".repeat(self.below(max.max(1)) + 1),
            _ => {
                let n = self.below(max.clamp(1, 64) + 1);
                (0..n).map(|_| char::from(self.rng.gen_range(0x20u8..0x7f))).collect()
            }
        }
    }

    /// A whole number at the edges of 64 bits, or near zero, or anywhere.
    pub fn edge_i64(&mut self) -> i64 {
        match self.below(7) {
            0 => 0,
            1 => 1,
            2 => -1,
            3 => i64::MIN,
            4 => i64::MAX,
            5 => self.range(-1000, 1000),
            _ => self.rng.gen(),
        }
    }

    /// A finite float at the edges: zeros of both signs, the smallest and largest,
    /// a subnormal, or anywhere. (NaN and infinities are the generator's choice to
    /// add where its server keeps them.)
    pub fn edge_f64(&mut self) -> f64 {
        match self.below(8) {
            0 => 0.0,
            1 => -0.0,
            2 => f64::MIN_POSITIVE,
            3 => f64::MAX,
            4 => f64::MIN,
            5 => 5e-324,
            6 => 0.1 + 0.2,
            _ => self.rng.gen_range(-1e12..1e12),
        }
    }
}

/// Which cases to run.
#[derive(Debug, Clone)]
pub struct Cases {
    seeds: Vec<u64>,
}

impl Cases {
    /// The cases named by the environment, `default` of them if it names none:
    ///
    /// - `ROLLBACK_PROPERTY_SEED=<n>`: that one case (to replay a failure);
    /// - `ROLLBACK_PROPERTY_CASES=<n>`: how many;
    /// - `ROLLBACK_PROPERTY_BASE=<n>|random`: where the seeds start. By default the
    ///   same seeds every run, so a CI run is repeatable; `random` explores.
    pub fn from_env(default: usize) -> Cases {
        if let Some(seed) = std::env::var("ROLLBACK_PROPERTY_SEED").ok().and_then(|s| s.trim().parse().ok()) {
            return Cases { seeds: vec![seed] };
        }
        let n = std::env::var("ROLLBACK_PROPERTY_CASES").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(default);
        let base = match std::env::var("ROLLBACK_PROPERTY_BASE").ok().as_deref().map(str::trim) {
            Some("random") => rand::random(),
            Some(s) => s.parse().unwrap_or(0),
            None => 0,
        };
        Cases::starting_at(base, n)
    }

    /// Exactly these seeds: cases that once failed, kept as regressions (a seed's case
    /// changes if its generator does: keep a plain test beside it where one can be
    /// written).
    pub fn of(seeds: &[u64]) -> Cases {
        Cases { seeds: seeds.to_vec() }
    }

    /// `n` cases whose seeds follow from `base`.
    pub fn starting_at(base: u64, n: usize) -> Cases {
        Cases { seeds: (0..n as u64).map(|i| splitmix(base.wrapping_add(i))).collect() }
    }

    /// The seeds.
    pub fn seeds(&self) -> &[u64] {
        &self.seeds
    }
}

/// Spreads consecutive numbers over 64 bits (SplitMix64), so seeds 0, 1, 2 make
/// unrelated cases.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Every piece of content a component holds, as the generator's oracle reads it:
/// where it is (a path, a table and key) → a digest of it.
pub type Inventory = BTreeMap<String, String>;

/// Makes components at random and reads them without the driver.
#[async_trait]
pub trait Generator: Send + Sync {
    /// The driver under test, as registered.
    fn driver(&self) -> &str;

    /// Creates a fresh component from `g` (its schema, values, tree, history) and
    /// returns its config. `name` is unique per case; `dir` is the case's directory.
    async fn component(&self, g: &mut Gen, name: &str, dir: &Path) -> Result<ComponentConfig>;

    /// Changes the component like a deploy would, from `g`. It must change the digest.
    async fn mutate(&self, g: &mut Gen, name: &str, dir: &Path) -> Result<()>;

    /// A digest of what a snapshot of the component holds, read without the driver
    /// (leaving out what no snapshot can hold, like a socket: [`Generator::lost`]
    /// accounts for that).
    async fn digest(&self, name: &str, dir: &Path) -> Result<String>;

    /// Removes what `component` made outside `dir`. Runs after every case.
    async fn cleanup(&self, name: &str, dir: &Path);

    /// Content a snapshot does not hold: what the driver promises to keep another way
    /// (git's untracked files, kept in the stash or a ref) and what nothing can keep
    /// (a socket), read without the driver. Taken just before the rollback; the
    /// default is none.
    async fn inventory(&self, _name: &str, _dir: &Path) -> Result<Inventory> {
        Ok(Inventory::new())
    }

    /// Of `before` (an inventory taken before the rollback), what can no longer be
    /// found, by the generator's own means, after it: those must be named by the
    /// record as lost.
    async fn lost(&self, _name: &str, _dir: &Path, _before: &Inventory) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// The registry stacks are built from.
    fn registry(&self) -> Registry {
        Registry::with_default_drivers()
    }
}

/// How the cases of one run ended.
#[derive(Debug, Clone)]
pub struct PropertyReport {
    /// The driver under test.
    pub driver: String,
    /// Seeds run.
    pub seeds: Vec<u64>,
    /// The failed cases: seed and what broke.
    pub failures: Vec<(u64, String)>,
}

impl PropertyReport {
    /// Panics naming each failed case, its seed and how to replay it.
    pub fn assert_passed(&self) {
        assert!(self.failures.is_empty(), "{self}");
    }
}

impl fmt::Display for PropertyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "driver `{}`: {} of {} generated cases failed",
            self.driver,
            self.failures.len(),
            self.seeds.len()
        )?;
        for (seed, why) in &self.failures {
            writeln!(f, "  seed {seed}: {why}\n    replay: ROLLBACK_PROPERTY_SEED={seed}")?;
        }
        Ok(())
    }
}

type Checked<T = ()> = std::result::Result<T, String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

trait At<T> {
    fn at(self, step: &str) -> Checked<T>;
}

impl<T> At<T> for crate::Result<T> {
    fn at(self, step: &str) -> Checked<T> {
        self.map_err(|e| format!("{step}: {e}"))
    }
}

/// Long enough for a database of a few thousand generated rows on a slow machine.
const CASE_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs every case of `cases` on `g`, one after another; never panics.
pub async fn run_property(g: &dyn Generator, cases: &Cases) -> PropertyReport {
    let mut failures = Vec::new();
    for &seed in cases.seeds() {
        if let Err(why) = run_case(g, seed).await {
            failures.push((seed, why));
        }
    }
    PropertyReport { driver: g.driver().to_string(), seeds: cases.seeds().to_vec(), failures }
}

async fn run_case(g: &dyn Generator, seed: u64) -> Checked {
    let tmp = tempfile::Builder::new().prefix("rollback-property-").tempdir().map_err(|e| e.to_string())?;
    let dir = std::fs::canonicalize(tmp.path()).unwrap_or_else(|_| tmp.path().to_path_buf());
    let name = format!("prop_{:08x}", seed as u32 ^ rand::random::<u32>());
    let r = AssertUnwindSafe(tokio::time::timeout(CASE_TIMEOUT, case(g, seed, &name, &dir))).catch_unwind().await;
    g.cleanup(&name, &dir).await;
    match r {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(format!("did not finish within {}", humantime::format_duration(CASE_TIMEOUT))),
        Err(p) => Err(format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

fn stack_of(g: &dyn Generator, dir: &Path, cfg: ComponentConfig) -> Checked<Stack> {
    Stack::new(StackConfig::new(dir).with_component(cfg), &g.registry()).at("building the stack")
}

async fn case(g: &dyn Generator, seed: u64, name: &str, dir: &Path) -> Checked {
    let mut rng = Gen::new(seed);
    let cfg = g.component(&mut rng, name, dir).await.at("generator: component")?;
    let compensate = rng.chance(25);
    let cfg = if compensate {
        cfg.health(HealthCheck {
            kind: HealthKind::Command { argv: vec!["false".into()] },
            timeout: Duration::from_millis(200),
            interval: Duration::from_millis(50),
        })
    } else {
        cfg
    };
    let stack = stack_of(g, dir, cfg)?;
    let before = g.digest(name, dir).await.at("generator: digest at the snapshot")?;
    let snap = stack
        .snapshot(SnapshotOptions { label: Some(format!("property {seed}")), ..Default::default() })
        .await
        .at("snapshot")?;
    let v = stack.verify(&snap.id, &[]).await.at("verify right after the snapshot")?;
    ensure!(v.ok, "verify right after the snapshot found drift: {:?}", v.components);

    for _ in 0..1 + rng.below(3) {
        g.mutate(&mut rng, name, dir).await.at("generator: mutate")?;
    }
    let mutated = g.digest(name, dir).await.at("generator: digest after the mutations")?;
    ensure!(mutated != before, "generator: the mutations did not change the digest");
    let inventory = g.inventory(name, dir).await.at("generator: inventory before the rollback")?;

    let r = stack
        .rollback(&snap.id, RollbackOptions { scope: Scope::Complete, ..Default::default() })
        .await
        .at("rollback")?;
    let lost = g.lost(name, dir, &inventory).await.at("generator: what is lost")?;
    check_named(&r, &lost)?;
    if compensate {
        ensure!(r.status != Status::Succeeded, "the health gate cannot pass, yet the rollback ended succeeded");
        if r.status == Status::Compensated {
            let now = g.digest(name, dir).await.at("generator: digest after the compensation")?;
            ensure!(
                now == mutated,
                "ended compensated, but the component is not as the mutations left it: {}",
                summary(&r)
            );
        }
        return Ok(());
    }
    ensure!(r.status == Status::Succeeded, "the rollback ended {}: {}", r.status.as_str(), summary(&r));
    let v = stack.verify(&snap.id, &[]).await.at("verify after the rollback")?;
    ensure!(v.ok, "verify after the rollback found drift: {:?}", v.components);
    let now = g.digest(name, dir).await.at("generator: digest after the rollback")?;
    ensure!(now == before, "succeeded and verified equal, but the oracle differs from the snapshot: {now} vs {before}");

    // What the rollback discarded is in its safety snapshot: putting that back gives
    // the state the mutations left.
    let safety = r.safety_snapshot_id.clone().ok_or("no safety snapshot")?;
    let back = stack
        .rollback(&safety, RollbackOptions { scope: Scope::Complete, ..Default::default() })
        .await
        .at("rollback to the safety snapshot")?;
    ensure!(back.status == Status::Succeeded, "the rollback to the safety snapshot ended {}", summary(&back));
    let again = g.digest(name, dir).await.at("generator: digest after the safety snapshot")?;
    ensure!(
        again == mutated,
        "the safety snapshot does not hold the state the rollback replaced: {again} vs {mutated} (record: {})",
        summary(&r)
    );
    Ok(())
}

/// Everything lost must be named by a discard, and the record must say data was lost.
fn check_named(r: &Record, lost: &[String]) -> Checked {
    if lost.is_empty() {
        return Ok(());
    }
    ensure!(r.data_loss, "lost {lost:?}, yet the record says data_loss: false: {}", summary(r));
    let unnamed: Vec<&String> = lost
        .iter()
        .filter(|l| !r.discarded.iter().any(|d| !d.kept_in_safety_snapshot && d.target.contains(l.as_str())))
        .collect();
    ensure!(unnamed.is_empty(), "lost and not named by the record's discards: {unnamed:?}: {}", summary(r));
    Ok(())
}

fn summary(r: &Record) -> String {
    let failed: Vec<String> = r
        .steps
        .iter()
        .filter(|s| s.status.as_str() != "ok")
        .map(|s| format!("{} {}: {}", s.action, s.component, s.error.clone().unwrap_or_default()))
        .collect();
    format!(
        "status {}, data_loss {}, failed steps {failed:?}, discards {:?}, notes {:?}",
        r.status.as_str(),
        r.data_loss,
        r.discarded
            .iter()
            .map(|d| format!("{} ({}, kept {})", d.target, d.amount(), d.kept_in_safety_snapshot))
            .collect::<Vec<_>>(),
        r.notes
    )
}
