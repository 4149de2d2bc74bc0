//! Snapshots: one capture of some or all components of a stack at one moment.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::health::HealthResult;
use crate::store::ArtifactRef;

/// What every snapshot offers, whatever stores it.
pub trait Snapshot {
    /// Unique, file-name-safe id.
    fn id(&self) -> &str;
    /// The operator's label, if any.
    fn label(&self) -> Option<&str>;
    /// When it was taken.
    fn created_at(&self) -> DateTime<Utc>;
    /// Names of the components it holds.
    fn components(&self) -> Vec<&str>;
    /// The part of one component.
    fn part(&self, component: &str) -> Option<&Part>;
    /// Whether the stack's health checks passed when it was taken (`None`: no checks).
    fn healthy(&self) -> Option<bool>;
}

/// The manifest of a stored snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// Manifest format version.
    pub format: u32,
    /// Id, e.g. `20261123T100000Z-3f9a1c`.
    pub id: String,
    /// Operator's label.
    pub label: Option<String>,
    /// Capture time.
    pub created_at: DateTime<Utc>,
    /// Health at capture time (all components' checks passed).
    pub healthy: Option<bool>,
    /// Health results at capture time, per component.
    #[serde(default)]
    pub health: BTreeMap<String, Vec<HealthResult>>,
    /// Set on a safety snapshot: the rollback it protects.
    #[serde(default)]
    pub safety_for: Option<String>,
    /// One part per captured component.
    pub parts: Vec<Part>,
}

/// One component's share of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// Component name.
    pub component: String,
    /// Driver that captured it.
    pub driver: String,
    /// Phase at capture time.
    pub phase: i64,
    /// Driver-specific state (commit id, link target, image id...). Never secrets.
    pub state: serde_json::Value,
    /// Stored artifacts.
    #[serde(default)]
    pub artifacts: Vec<ArtifactRef>,
    /// How long capture took.
    pub capture_ms: u64,
}

impl Part {
    /// Total size of the artifacts.
    pub fn size(&self) -> u64 {
        self.artifacts.iter().map(|a| a.size).sum()
    }

    /// Finds an artifact by name.
    pub fn artifact(&self, name: &str) -> Option<&ArtifactRef> {
        self.artifacts.iter().find(|a| a.name == name)
    }

    /// The driver's state, typed: what each driver reads back from its own capture.
    /// A state that does not parse (a damaged manifest, or another driver's part) is
    /// `Corrupt`, naming the driver and the component.
    pub fn state_as<T: serde::de::DeserializeOwned>(&self) -> crate::Result<T> {
        serde_json::from_value(self.state.clone()).map_err(|e| {
            crate::Error::new(
                crate::ErrorKind::Corrupt,
                format!("the `{}` state of component `{}` in the snapshot is unreadable", self.driver, self.component),
            )
            .with_source(e)
        })
    }
}

impl SnapshotManifest {
    /// Total size of every artifact.
    pub fn size(&self) -> u64 {
        self.parts.iter().map(Part::size).sum()
    }
}

impl Snapshot for SnapshotManifest {
    fn id(&self) -> &str {
        &self.id
    }
    fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }
    fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    fn components(&self) -> Vec<&str> {
        self.parts.iter().map(|p| p.component.as_str()).collect()
    }
    fn part(&self, component: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.component == component)
    }
    fn healthy(&self) -> Option<bool> {
        self.healthy
    }
}

/// A new sortable, file-name-safe id: UTC time plus random hex.
pub fn new_id() -> String {
    format!("{}-{:06x}", Utc::now().format("%Y%m%dT%H%M%S%3fZ"), rand::random::<u32>() & 0xff_ffff)
}

impl SnapshotManifest {
    /// The part of a component that a plan selected from this snapshot.
    pub(crate) fn part_of(&self, component: &str) -> &Part {
        self.parts.iter().find(|p| p.component == component).expect("plans only name components of their snapshot")
    }
}
