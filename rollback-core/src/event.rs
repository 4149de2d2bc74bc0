//! Progress events: emitted by the executor and drivers, consumed by the CLI's
//! stderr progress and the bindings' callbacks.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::record::{StepAction, StepStatus};

crate::names::word_enum! {
    /// What an event reports.
    #[non_exhaustive]
    pub enum EventKind ("event kind") {
        /// A snapshot began capturing its components.
        SnapshotStarted = "snapshot_started",
        /// One component of a snapshot was captured.
        PartCaptured = "part_captured",
        /// A rollback began its safety snapshot.
        SafetySnapshot = "safety_snapshot",
        /// Writes of other clients to a component were fenced.
        FenceRaised = "fence_raised",
        /// The write fence on a component was lifted (or could not be).
        FenceLifted = "fence_lifted",
        /// A step began.
        StepStarted = "step_started",
        /// A step ended; `status` says how.
        StepFinished = "step_finished",
        /// Progress inside a step.
        Progress = "progress",
        /// A step failed; changed components are being put back.
        Compensating = "compensating",
        /// A rollback or drill ended (or was interrupted).
        Finished = "finished",
        /// A watch began.
        WatchStarted = "watch_started",
        /// A watch read a probe.
        WatchProbe = "watch_probe",
        /// A watch decided to roll back or to notify.
        WatchDecision = "watch_decision",
        /// A watch ended.
        WatchFinished = "watch_finished",
    }
}

crate::names::word_enum! {
    /// How the thing an event reports ended: a step, a probe reading, a watch's
    /// decision or the watch itself.
    #[non_exhaustive]
    pub enum EventStatus ("event status") {
        /// A step or a probe reading passed.
        Ok = "ok",
        /// A step, a rollback or a drill failed, or a watch could not start its rollback.
        Failed = "failed",
        /// A rollback or a drill ended with every step passed.
        Succeeded = "succeeded",
        /// A rollback or a drill failed and put every changed component back.
        Compensated = "compensated",
        /// A rollback or a drill stopped before its end; `resume` finishes it.
        Interrupted = "interrupted",
        /// A probe reading crossed a bound or failed.
        Bad = "bad",
        /// A watch decided to roll back.
        Rollback = "rollback",
        /// A watch decided to notify.
        Notify = "notify",
        /// A watch's decision was ignored by its policy.
        Ignore = "ignore",
        /// A watch's window ran out with no rollback.
        Elapsed = "elapsed",
        /// A watch was stopped with no rollback.
        Stopped = "stopped",
        /// A watch rolled back.
        RolledBack = "rolled_back",
        /// A dry-run watch would have rolled back.
        WouldRollBack = "would_roll_back",
    }
}

impl From<StepStatus> for EventStatus {
    fn from(s: StepStatus) -> Self {
        match s {
            StepStatus::Ok => EventStatus::Ok,
            StepStatus::Failed => EventStatus::Failed,
        }
    }
}

impl From<crate::record::Status> for EventStatus {
    fn from(s: crate::record::Status) -> Self {
        use crate::record::Status;
        match s {
            Status::Succeeded => EventStatus::Succeeded,
            Status::Failed => EventStatus::Failed,
            Status::Compensated => EventStatus::Compensated,
            Status::Interrupted => EventStatus::Interrupted,
        }
    }
}

impl From<crate::watch::PolicyAction> for EventStatus {
    fn from(a: crate::watch::PolicyAction) -> Self {
        use crate::watch::PolicyAction;
        match a {
            PolicyAction::Rollback => EventStatus::Rollback,
            PolicyAction::Notify => EventStatus::Notify,
            PolicyAction::Ignore => EventStatus::Ignore,
        }
    }
}

impl From<crate::watch::WatchOutcome> for EventStatus {
    fn from(o: crate::watch::WatchOutcome) -> Self {
        use crate::watch::WatchOutcome;
        match o {
            WatchOutcome::Elapsed => EventStatus::Elapsed,
            WatchOutcome::Stopped => EventStatus::Stopped,
            WatchOutcome::RolledBack => EventStatus::RolledBack,
            WatchOutcome::WouldRollBack => EventStatus::WouldRollBack,
            WatchOutcome::Failed => EventStatus::Failed,
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What it reports.
    pub kind: EventKind,
    /// Component concerned, if any.
    pub component: Option<String>,
    /// Step action, for step events.
    pub action: Option<StepAction>,
    /// The probe, for a watch's events.
    #[serde(default)]
    pub probe: Option<String>,
    /// Step index (0-based) and total.
    pub index: Option<usize>,
    /// Number of steps.
    pub total: Option<usize>,
    /// How a finished step, probe reading or watch ended.
    pub status: Option<EventStatus>,
    /// Human-readable text.
    pub message: String,
    /// For finished steps.
    pub duration_ms: Option<u64>,
}

impl Event {
    /// A free-form event.
    pub fn new(kind: EventKind, message: impl Into<String>) -> Self {
        Event {
            kind,
            component: None,
            action: None,
            probe: None,
            index: None,
            total: None,
            status: None,
            message: message.into(),
            duration_ms: None,
        }
    }

    /// Progress inside a step.
    pub fn progress(component: &str, message: impl Into<String>) -> Self {
        let mut e = Event::new(EventKind::Progress, message);
        e.component = Some(component.into());
        e
    }
}

/// A callback for events.
pub type EventCallback = Arc<dyn Fn(&Event) + Send + Sync>;

/// Where events go; cheap to clone.
#[derive(Clone, Default)]
pub struct EventSink {
    cb: Option<EventCallback>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.cb.is_some() { "EventSink(callback)" } else { "EventSink(none)" })
    }
}

impl EventSink {
    /// Sends events to `cb`.
    pub fn new(cb: Option<EventCallback>) -> Self {
        EventSink { cb }
    }

    /// Emits one event (callbacks must not block for long).
    pub fn emit(&self, e: Event) {
        if let Some(cb) = &self.cb {
            cb(&e);
        }
    }
}
