//! The behaviour suite: every built-in driver against the driver contract
//! (`rollback_core::testkit`), each on the real thing: repositories, directories,
//! and the PostgreSQL, MariaDB and Redis servers named by `ROLLBACK_<DRIVER>_*`
//! (default: this machine's, which `scripts/services.sh` starts), dockerd
//! (`scripts/setup-docker.sh`) and pm2 (`scripts/setup-pm2.sh`). A missing server
//! fails its driver's trials; nothing is skipped. Dokku alone cannot run here: its
//! fixture drives a mock of its documented commands, and says so.
//!
//! One file per driver: its fixture, its `KNOWN_FAILURES` (trials that fail because
//! of a driver bug not fixed yet, each with the reason), and one test per trial.

mod command;
mod docker;
mod dokku;
mod files;
mod git;
mod mysql;
mod pm2;
mod postgres;
mod redis;
mod releases;
mod selftest;
mod sqlite;

/// A setting from the environment, or this machine's default.
fn setting(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}
