//! Progress events: emitted by the executor and drivers, consumed by the CLI's
//! stderr progress and the bindings' callbacks.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `snapshot_started`, `part_captured`, `step_started`, `step_finished`,
    /// `progress`, `compensating`, `finished`.
    pub kind: String,
    /// Component concerned, if any.
    pub component: Option<String>,
    /// Step action, for step events.
    pub action: Option<String>,
    /// Step index (0-based) and total.
    pub index: Option<usize>,
    /// Number of steps.
    pub total: Option<usize>,
    /// `ok` / `failed` for finished steps.
    pub status: Option<String>,
    /// Human-readable text.
    pub message: String,
    /// For finished steps.
    pub duration_ms: Option<u64>,
}

impl Event {
    /// A free-form event.
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        Event {
            kind: kind.into(),
            component: None,
            action: None,
            index: None,
            total: None,
            status: None,
            message: message.into(),
            duration_ms: None,
        }
    }

    /// Progress inside a step.
    pub fn progress(component: &str, message: impl Into<String>) -> Self {
        let mut e = Event::new("progress", message);
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
