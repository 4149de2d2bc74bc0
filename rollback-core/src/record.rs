//! Records: what one rollback or drill did, as JSON (SPEC §6) and Markdown.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::decision::Severity;
use crate::driver::{Discard, Drift};
use crate::plan::{fmt_ms, Level};

/// Reads a severity without failing on an unknown word: a record must stay readable
/// (`rollback history`, `show`) whatever an older version wrote into it.
pub(crate) fn lenient_severity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Severity>, D::Error> {
    let word: Option<String> = Option::deserialize(d)?;
    Ok(word.and_then(|w| w.parse().ok()))
}

crate::names::word_enum! {
    /// Final status.
    pub enum Status ("status") {
        /// Every step passed.
        Succeeded = "succeeded",
        /// A step failed and the changed components could not all be put back.
        Failed = "failed",
        /// A step failed and every changed component was put back as it was.
        Compensated = "compensated",
        /// Stopped (signal, abort, crash) before the end; `resume` finishes it.
        Interrupted = "interrupted",
    }
}

crate::names::word_enum! {
    /// What a record is the record of.
    pub enum RecordKind ("kind") {
        /// A rollback to a snapshot.
        Rollback = "rollback",
        /// A drill: a snapshot, a perturbation, a rollback and its verification.
        Drill = "drill",
    }
}

crate::names::word_enum! {
    /// What an executed step did: a plan's [`Action`](crate::Action), or the
    /// compensation that put a component back after a failed step.
    pub enum StepAction ("step action") {
        /// Stopped a dependent service.
        Stop = "stop",
        /// Put the component back to the snapshot.
        Restore = "restore",
        /// Started a stopped service.
        Start = "start",
        /// Waited for health checks.
        HealthGate = "health_gate",
        /// Compared with the snapshot.
        Verify = "verify",
        /// Put a changed component back to the safety snapshot.
        Compensate = "compensate",
    }
}

impl From<crate::plan::Action> for StepAction {
    fn from(a: crate::plan::Action) -> Self {
        use crate::plan::Action;
        match a {
            Action::Stop => StepAction::Stop,
            Action::Restore => StepAction::Restore,
            Action::Start => StepAction::Start,
            Action::HealthGate => StepAction::HealthGate,
            Action::Verify => StepAction::Verify,
        }
    }
}

crate::names::word_enum! {
    /// How a step ended.
    pub enum StepStatus ("step status") {
        /// It did what it set out to do.
        Ok = "ok",
        /// It failed; the record's `error` says why.
        Failed = "failed",
    }
}

impl StepStatus {
    /// `Ok` when `ok`, else `Failed`.
    pub fn of(ok: bool) -> Self {
        if ok {
            StepStatus::Ok
        } else {
            StepStatus::Failed
        }
    }
}

/// One executed step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Component.
    pub component: String,
    /// What the step did.
    pub action: StepAction,
    /// How it ended.
    pub status: StepStatus,
    /// Duration.
    pub duration_ms: u64,
    /// Error or detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The record of one rollback or drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Id of this rollback.
    pub rollback_id: String,
    /// Snapshot rolled back to.
    pub snapshot_id: String,
    /// A rollback or a drill.
    pub kind: RecordKind,
    /// Complete, by phase or by component.
    pub level: Level,
    /// Phases restored.
    pub phases: Vec<i64>,
    /// Components restored.
    pub components: Vec<String>,
    /// Why it was started.
    pub trigger: Option<String>,
    /// Severity from `assess`, if given. A word this version does not know (in a
    /// record written by an older one, which took any word) reads as none.
    #[serde(default, deserialize_with = "lenient_severity")]
    pub severity: Option<Severity>,
    /// Start.
    pub start_time: DateTime<Utc>,
    /// End.
    pub completion_time: DateTime<Utc>,
    /// Wall time.
    pub duration_ms: u64,
    /// Objective for this level.
    pub rto_target_ms: u64,
    /// `duration_ms <= rto_target_ms`.
    pub rto_met: bool,
    /// Outcome.
    pub status: Status,
    /// True when discarded changes cannot be read back from a safety snapshot.
    pub data_loss: bool,
    /// Snapshot taken just before the first change.
    pub safety_snapshot_id: Option<String>,
    /// Steps in the order they ran (compensation included).
    pub steps: Vec<StepRecord>,
    /// Per-component verification.
    pub verification: BTreeMap<String, Drift>,
    /// What the restore discarded.
    #[serde(default)]
    pub discarded: Vec<Discard>,
    /// The first error, when not succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set when the rollback was finished by `resume`.
    #[serde(default)]
    pub resumed: bool,
    /// Free-form notes (drill perturbations, stashed changes...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The write fences held while data components were put back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fences: Vec<FenceWindow>,
    /// The watch decision that started this rollback: which probe, which values
    /// crossed which bound, and how long from the first bad reading to the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<crate::watch::WatchDecision>,
}

/// A write fence a rollback held on a component: writes of other clients were
/// refused from its start to its end, so none was acknowledged and then lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FenceWindow {
    /// Component.
    pub component: String,
    /// How, e.g. "connection limit 0 on database `app`; 2 sessions ended".
    pub how: String,
    /// From raising the fence to lifting it.
    pub window_ms: u64,
    /// Set when the fence could not be lifted: what failed, and how to lift it by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Record {
    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The incident report.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let title = if self.kind == RecordKind::Drill { "Rollback drill" } else { "Rollback" };
        s.push_str(&format!("# {title} {}\n\n", self.rollback_id));
        s.push_str("| | |\n|---|---|\n");
        s.push_str(&format!("| Status | **{}** |\n", self.status.as_str()));
        s.push_str(&format!("| Snapshot | `{}` |\n", self.snapshot_id));
        s.push_str(&format!(
            "| Level | {}{} |\n",
            self.level,
            if self.phases.is_empty() {
                String::new()
            } else {
                format!(" (phases {})", self.phases.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "))
            }
        ));
        s.push_str(&format!("| Components | {} |\n", self.components.join(", ")));
        s.push_str(&format!("| Trigger | {} |\n", self.trigger.as_deref().unwrap_or("—")));
        s.push_str(&format!("| Severity | {} |\n", self.severity.map(Severity::as_str).unwrap_or("—")));
        s.push_str(&format!("| Started | {} |\n", self.start_time.to_rfc3339()));
        s.push_str(&format!("| Completed | {} |\n", self.completion_time.to_rfc3339()));
        s.push_str(&format!(
            "| Duration | {} against an objective of {} — {} |\n",
            fmt_ms(self.duration_ms),
            fmt_ms(self.rto_target_ms),
            if self.rto_met { "met" } else { "**missed**" }
        ));
        s.push_str(&format!("| Data loss | {} |\n", if self.data_loss { "**yes**" } else { "no" }));
        s.push_str(&format!(
            "| Safety snapshot | {} |\n",
            self.safety_snapshot_id.as_deref().map(|x| format!("`{x}`")).unwrap_or_else(|| "none".into())
        ));
        if self.resumed {
            s.push_str("| Resumed | yes (finished from its journal) |\n");
        }
        if let Some(e) = &self.error {
            s.push_str(&format!("\n**Error:** {e}\n"));
        }
        if let Some(w) = &self.watch {
            s.push_str("\n## Watch\n\n");
            s.push_str(&format!("- Decided by probe `{}` ({} severity): {}\n", w.probe, w.severity.as_str(), w.reason));
            let values: Vec<String> = w.values.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            if !values.is_empty() {
                s.push_str(&format!("- Values read: {}\n", values.join(", ")));
            }
            s.push_str(&format!(
                "- First bad reading {}; rollback started {} later\n",
                w.first_bad_at.to_rfc3339(),
                fmt_ms(w.detect_ms)
            ));
        }
        s.push_str("\n## Timeline\n\n| # | component | action | status | duration |\n|---|---|---|---|---|\n");
        for (i, st) in self.steps.iter().enumerate() {
            s.push_str(&format!(
                "| {} | {} | {} | {}{} | {} |\n",
                i + 1,
                st.component,
                st.action,
                st.status,
                st.error.as_deref().map(|e| format!(": {}", e.replace('|', "\\|"))).unwrap_or_default(),
                fmt_ms(st.duration_ms)
            ));
        }
        s.push_str("\n## Discarded\n\n");
        if self.discarded.is_empty() {
            s.push_str("Nothing written since the snapshot was discarded.\n");
        } else {
            for d in &self.discarded {
                s.push_str(&format!(
                    "- {} `{}`: {}{}\n",
                    d.component,
                    d.target,
                    d.amount(),
                    if d.kept_in_safety_snapshot { " — kept in the safety snapshot" } else { " — **not kept**" }
                ));
            }
        }
        if !self.fences.is_empty() {
            s.push_str("\n## Write fences\n\n");
            for f in &self.fences {
                s.push_str(&format!("- {}: {} for {}", f.component, f.how, fmt_ms(f.window_ms)));
                match &f.error {
                    Some(e) => s.push_str(&format!(" — **not lifted**: {e}\n")),
                    None => s.push('\n'),
                }
            }
        }
        s.push_str("\n## Verification\n\n");
        if self.verification.is_empty() {
            s.push_str("Not verified.\n");
        }
        for (c, d) in &self.verification {
            if d.ok {
                s.push_str(&format!("- {c}: equal to the snapshot\n"));
            } else {
                s.push_str(&format!("- {c}: **differs**\n"));
                for x in &d.differences {
                    s.push_str(&format!("  - {x}\n"));
                }
            }
        }
        if !self.notes.is_empty() {
            s.push_str("\n## Notes\n\n");
            for n in &self.notes {
                s.push_str(&format!("- {n}\n"));
            }
        }
        s
    }
}
