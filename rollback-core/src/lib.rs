#![deny(missing_docs)]
//! # rollback-core
//!
//! Snapshot every part of a deployed system — code, files, release links,
//! containers, processes, databases, caches — and put them back, in order,
//! verified, with a record of what happened.
//!
//! ```no_run
//! # async fn run() -> rollback_core::Result<()> {
//! use rollback_core::{Stack, SnapshotOptions, RollbackOptions, Scope};
//! let stack = Stack::load("rollback.toml")?;
//! let snap = stack.snapshot(SnapshotOptions { label: Some("pre-deploy".into()), ..Default::default() }).await?;
//! // ... deploy goes wrong ...
//! let record = stack.rollback(&snap.id, RollbackOptions { scope: Scope::Complete, ..Default::default() }).await?;
//! assert!(record.succeeded());
//! # Ok(()) }
//! ```
//!
//! The public traits are [`Driver`] (one kind of component), [`Snapshot`] (one
//! capture) and [`RollbackPlan`] (the steps of a rollback). A driver written in
//! another crate joins a stack through [`Registry::register`].

pub mod config;
pub mod decision;
pub mod driver;
pub mod drivers;
pub(crate) mod durable;
pub mod error;
pub mod event;
pub mod exec;
pub mod failpoint;
pub mod health;
mod names;
pub mod notify;
pub mod plan;
pub(crate) mod process;
pub mod record;
pub mod registry;
pub mod secret;
pub mod snapshot;
pub mod stack;
pub mod store;
mod tls;
pub mod watch;

#[cfg(test)]
mod fuzz_tests;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use config::{ComponentConfig, DriverOptions, Rto, StackConfig};
pub use decision::{assess, Assessment, DataImpact, Decision, Severity, Symptoms, Thresholds};
pub use driver::{Capability, Captured, Context, Discard, Drift, Driver, DynDriver, FencePlan};
pub use error::{Error, ErrorKind, Result};
pub use event::{Event, EventCallback, EventKind, EventStatus};
pub use exec::{CancelToken, RollbackOptions};
pub use health::{HealthCheck, HealthKind, HealthResult};
pub use plan::{Action, Level, Plan, RollbackPlan, Scope, Step};
pub use record::{FenceWindow, Record, RecordKind, Status, StepAction, StepRecord, StepStatus};
pub use registry::{DriverEnv, DriverFactory, Registry};
pub use secret::Redactor;
pub use snapshot::{Part, Snapshot, SnapshotManifest};
pub use stack::{CheckReport, GcReport, SnapshotOptions, Stack, Verification};
pub use store::{ArtifactRef, Store};
pub use watch::{WatchDecision, WatchOptions, WatchOutcome, WatchReport};
