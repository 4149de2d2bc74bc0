//! Plans: the ordered steps a rollback would run, computed before anything runs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::StackConfig;
use crate::driver::{Discard, DynDriver};
use crate::error::{Error, Result};
use crate::snapshot::SnapshotManifest;

/// Which components a rollback covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "level")]
pub enum Scope {
    /// Every component in the snapshot.
    #[default]
    Complete,
    /// The components of these phases.
    Phase {
        /// Phases.
        phases: Vec<i64>,
    },
    /// These components.
    Component {
        /// Component names.
        components: Vec<String>,
    },
}

crate::names::word_enum! {
    /// How much a rollback covers: the level of its [`Scope`].
    pub enum Level ("level") {
        /// Every component in the snapshot.
        Complete = "complete",
        /// The components of some phases.
        Phase = "phase",
        /// Some components.
        Component = "component",
    }
}

impl Scope {
    /// The scope's level.
    pub fn level(&self) -> Level {
        match self {
            Scope::Complete => Level::Complete,
            Scope::Phase { .. } => Level::Phase,
            Scope::Component { .. } => Level::Component,
        }
    }

    /// Builds a scope from the CLI's/bindings' words.
    pub fn from_parts(level: Option<&str>, phases: Vec<i64>, components: Vec<String>) -> Result<Scope> {
        let level = match level {
            Some(l) => l.parse()?,
            None if !components.is_empty() => Level::Component,
            None if !phases.is_empty() => Level::Phase,
            None => Level::Complete,
        };
        match level {
            Level::Complete => {
                if !phases.is_empty() || !components.is_empty() {
                    return Err(Error::config("level `complete` takes no --phase or --component"));
                }
                Ok(Scope::Complete)
            }
            Level::Phase => {
                if phases.is_empty() {
                    return Err(Error::config("level `phase` needs at least one --phase N"));
                }
                Ok(Scope::Phase { phases: dedup(&phases) })
            }
            Level::Component => {
                if components.is_empty() {
                    return Err(Error::config("level `component` needs at least one --component NAME"));
                }
                Ok(Scope::Component { components: dedup(&components) })
            }
        }
    }
}

crate::names::word_enum! {
    /// What a step does.
    #[derive(PartialOrd, Ord)]
    pub enum Action ("action") {
        /// Stop a dependent service.
        Stop = "stop",
        /// Put the component back to the snapshot.
        Restore = "restore",
        /// Start a stopped service.
        Start = "start",
        /// Wait for health checks.
        HealthGate = "health_gate",
        /// Compare with the snapshot.
        Verify = "verify",
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Component.
    pub component: String,
    /// Action.
    pub action: Action,
    /// What it will do, for a person.
    pub description: String,
    /// Predicted duration.
    pub predicted_ms: u64,
}

/// What every plan offers.
pub trait RollbackPlan {
    /// The snapshot it rolls back to.
    fn snapshot_id(&self) -> &str;
    /// Its scope.
    fn scope(&self) -> &Scope;
    /// The steps, in order.
    fn steps(&self) -> &[Step];
    /// Sum of the steps' predicted durations.
    fn predicted_duration(&self) -> Duration {
        Duration::from_millis(self.steps().iter().map(|s| s.predicted_ms).sum())
    }
    /// A preview for a person.
    fn render(&self) -> String;
}

/// A computed plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Snapshot rolled back to.
    pub snapshot_id: String,
    /// Scope.
    pub scope: Scope,
    /// Components restored.
    pub components: Vec<String>,
    /// Their phases.
    pub phases: Vec<i64>,
    /// Steps in order.
    pub steps: Vec<Step>,
    /// What the restore would discard.
    #[serde(default)]
    pub discards: Vec<Discard>,
    /// Predicted total.
    pub predicted_ms: u64,
}

impl RollbackPlan for Plan {
    fn snapshot_id(&self) -> &str {
        &self.snapshot_id
    }
    fn scope(&self) -> &Scope {
        &self.scope
    }
    fn steps(&self) -> &[Step] {
        &self.steps
    }
    fn render(&self) -> String {
        let mut s = format!(
            "Plan: {} rollback to snapshot {} ({} component{}: {})\n",
            self.scope.level(),
            self.snapshot_id,
            self.components.len(),
            if self.components.len() == 1 { "" } else { "s" },
            self.components.join(", ")
        );
        for (i, st) in self.steps.iter().enumerate() {
            s.push_str(&format!(
                "  {:>2}. {:<12} {:<11} {} (~{})\n",
                i + 1,
                st.component,
                st.action.as_str(),
                st.description,
                fmt_ms(st.predicted_ms)
            ));
        }
        s.push_str(&format!("Predicted duration: {}\n", fmt_ms(self.predicted_ms)));
        if self.discards.is_empty() {
            s.push_str("Discards: nothing written since the snapshot is known to be lost.\n");
        } else {
            s.push_str("Discards (changes since the snapshot that the restore throws away):\n");
            for d in &self.discards {
                s.push_str(&format!(
                    "  - {} {}: {}{}\n",
                    d.component,
                    d.target,
                    d.amount(),
                    if d.kept_in_safety_snapshot { " (kept in the safety snapshot)" } else { "" }
                ));
            }
        }
        s
    }
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

pub(crate) fn fmt_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// The names in their first order, each once. A component named twice
/// (`--component db --component db`) is one component: planned twice, two captures
/// of a `fast` database would collide and drop a kept copy.
pub(crate) fn dedup<T: Clone + PartialEq>(items: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for i in items {
        if !out.contains(i) {
            out.push(i.clone());
        }
    }
    out
}

/// `names` reordered so that each comes after every name it depends on (directly or
/// through components outside `names`); otherwise in their given order.
pub(crate) fn dependencies_first(names: &[String], cfg: &StackConfig) -> Vec<String> {
    fn deps_of(n: &str, cfg: &StackConfig, out: &mut BTreeSet<String>) {
        for d in cfg.component(n).map(|c| c.depends_on.clone()).unwrap_or_default() {
            // The config refuses cycles; `insert` also stops one here.
            if out.insert(d.clone()) {
                deps_of(&d, cfg, out);
            }
        }
    }
    let deps: BTreeMap<&str, BTreeSet<String>> = names
        .iter()
        .map(|n| {
            let mut s = BTreeSet::new();
            deps_of(n, cfg, &mut s);
            (n.as_str(), s)
        })
        .collect();
    let mut left: Vec<String> = dedup(names);
    let mut out = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let i = left.iter().position(|n| !left.iter().any(|m| deps[n.as_str()].contains(m))).unwrap_or(0);
        out.push(left.remove(i));
    }
    out
}

/// The components a scope selects from a snapshot, validated.
pub(crate) fn select(scope: &Scope, snap: &SnapshotManifest, cfg: &StackConfig) -> Result<Vec<String>> {
    let names: Vec<String> = match scope {
        Scope::Complete => snap.parts.iter().map(|p| p.component.clone()).collect(),
        Scope::Phase { phases } => {
            let sel: Vec<String> =
                snap.parts.iter().filter(|p| phases.contains(&p.phase)).map(|p| p.component.clone()).collect();
            if sel.is_empty() {
                let have: BTreeSet<i64> = snap.parts.iter().map(|p| p.phase).collect();
                return Err(Error::config(format!(
                    "snapshot {} has no component in phase(s) {:?} (its phases: {:?})",
                    snap.id, phases, have
                )));
            }
            sel
        }
        Scope::Component { components } => {
            for c in components {
                if !snap.parts.iter().any(|p| &p.component == c) {
                    let have: Vec<_> = snap.parts.iter().map(|p| p.component.as_str()).collect();
                    return Err(Error::config(format!(
                        "snapshot {} has no component `{c}` (it has: {})",
                        snap.id,
                        have.join(", ")
                    )));
                }
            }
            dedup(components)
        }
    };
    for n in &names {
        let c = cfg.component(n).map_err(|_| {
            Error::config(format!("snapshot {} holds component `{n}`, which is not in the current config", snap.id))
        })?;
        let part = snap.parts.iter().find(|p| &p.component == n).expect("selected from snapshot");
        if c.driver != part.driver {
            return Err(Error::config(format!(
                "component `{n}` is a `{}` component now, but the snapshot holds a `{}` capture",
                c.driver, part.driver
            ))
            .with_component(n));
        }
    }
    Ok(names)
}

/// Orders the steps: stop dependents, restore in reverse phase order, start,
/// health-gate, verify.
pub(crate) fn build(
    scope: &Scope,
    snap: &SnapshotManifest,
    cfg: &StackConfig,
    drivers: &BTreeMap<String, DynDriver>,
    history: &BTreeMap<(String, Action), u64>,
) -> Result<Plan> {
    let selected = select(scope, snap, cfg)?;
    let sel: BTreeSet<&str> = selected.iter().map(String::as_str).collect();
    let phase_of = |n: &str| cfg.component(n).map(|c| c.phase).unwrap_or(1);
    let predict = |c: &str, a: Action, default: u64| history.get(&(c.to_string(), a)).copied().unwrap_or(default);

    // Dependents: components outside the scope that (transitively) depend on one in it
    // and can be stopped.
    let mut dependents: BTreeSet<String> = BTreeSet::new();
    let mut changed = true;
    while changed {
        changed = false;
        for c in &cfg.components {
            if sel.contains(c.name.as_str()) || dependents.contains(&c.name) {
                continue;
            }
            if c.depends_on.iter().any(|d| sel.contains(d.as_str()) || dependents.contains(d)) {
                dependents.insert(c.name.clone());
                changed = true;
            }
        }
    }
    let stoppable: Vec<String> =
        dependents.into_iter().filter(|n| drivers.get(n).is_some_and(|d| d.capability().lifecycle)).collect();

    // Within a phase, what a component depends on is restored first, so a component
    // that applies another's state (a reload after a config file) sees it restored.
    let depth = |n: &str| -> usize {
        fn d(n: &str, cfg: &StackConfig, seen: usize) -> usize {
            if seen > 64 {
                return 0;
            }
            cfg.component(n)
                .map(|c| c.depends_on.iter().map(|x| 1 + d(x, cfg, seen + 1)).max().unwrap_or(0))
                .unwrap_or(0)
        }
        d(n, cfg, 0)
    };
    let mut restore_order = selected.clone();
    restore_order.sort_by(|a, b| phase_of(b).cmp(&phase_of(a)).then(depth(a).cmp(&depth(b))).then(a.cmp(b)));
    let mut forward = restore_order.clone();
    forward.reverse();
    let mut stop_order = stoppable.clone();
    stop_order.sort_by(|a, b| phase_of(b).cmp(&phase_of(a)).then(depth(b).cmp(&depth(a))).then(a.cmp(b)));
    let mut start_order = stop_order.clone();
    start_order.reverse();

    let mut steps = Vec::new();
    for n in &stop_order {
        steps.push(Step {
            component: n.clone(),
            action: Action::Stop,
            description: format!("stop `{n}` (depends on what is restored)"),
            predicted_ms: predict(n, Action::Stop, 500),
        });
    }
    for n in &restore_order {
        let part = snap.parts.iter().find(|p| &p.component == n).expect("selected");
        let d = &drivers[n];
        steps.push(Step {
            component: n.clone(),
            action: Action::Restore,
            description: d.describe_restore(part),
            predicted_ms: predict(n, Action::Restore, part.capture_ms.max(10)),
        });
    }
    for n in &start_order {
        steps.push(Step {
            component: n.clone(),
            action: Action::Start,
            description: format!("start `{n}`"),
            predicted_ms: predict(n, Action::Start, 500),
        });
    }
    for n in forward.iter().chain(start_order.iter()) {
        let c = cfg.component(n)?;
        if !c.health.is_empty() {
            let checks: Vec<String> = c.health.iter().map(|h| h.describe()).collect();
            steps.push(Step {
                component: n.clone(),
                action: Action::HealthGate,
                description: format!("wait for health: {}", checks.join("; ")),
                predicted_ms: predict(n, Action::HealthGate, 200),
            });
        }
    }
    for n in &forward {
        steps.push(Step {
            component: n.clone(),
            action: Action::Verify,
            description: "compare with the snapshot".into(),
            predicted_ms: predict(n, Action::Verify, 50),
        });
    }
    // Descriptions may quote argv or URLs: they go into journals and records.
    for s in &mut steps {
        s.description = cfg.redactor.redact(&s.description);
    }
    let predicted_ms = steps.iter().map(|s| s.predicted_ms).sum();
    let mut phases: Vec<i64> = selected.iter().map(|n| phase_of(n)).collect::<BTreeSet<_>>().into_iter().collect();
    phases.sort();
    Ok(Plan {
        snapshot_id: snap.id.clone(),
        scope: scope.clone(),
        components: forward,
        phases,
        steps,
        discards: Vec::new(),
        predicted_ms,
    })
}
