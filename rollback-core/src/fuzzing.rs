//! Entry points for the fuzzers: one function per reader of outside input, each
//! taking raw bytes and exercising what reads them and what then uses the result.
//! None may panic, whatever the bytes.
//!
//! Two harnesses call these: the coverage-guided `cargo fuzz` targets in `fuzz/`
//! (run for a bounded time by the test command) and the seeded mutation tests in
//! this crate, which run in every `cargo test`. Compiled only for those (the
//! `fuzzing` feature, or this crate's own tests); not part of the public API.

use std::path::Path;
use std::sync::OnceLock;

/// The config loader (`rollback.toml`), then what the planner and the health gate
/// read from what loaded.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let env = |k: &str| (k == "DB_PASSWORD").then(|| "pw".to_string());
    if let Ok(cfg) = crate::StackConfig::from_toml_str(text, None, Path::new("/srv"), &env) {
        for c in &cfg.components {
            for h in &c.health {
                let _ = h.describe();
                let _ = std::time::Instant::now().checked_add(h.timeout);
                let _ = std::time::Instant::now().checked_add(h.interval);
            }
        }
    }
}

/// The health-check list parser (the JSON form the bindings and `[[component]]
/// health` take).
pub fn health(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    if let Ok(checks) = crate::HealthCheck::parse_list(v) {
        for h in checks {
            let _ = h.describe();
        }
    }
}

/// The record reader, and both renderings of what it read (`history`, `show`).
pub fn record(data: &[u8]) {
    if let Ok(r) = serde_json::from_slice::<crate::Record>(data) {
        let _ = r.to_markdown();
        let _ = r.to_json();
    }
}

/// The snapshot manifest reader, and the id and artifact-path checks that guard
/// the store against a manifest naming files outside it.
pub fn manifest(data: &[u8]) {
    let Ok(m) = serde_json::from_slice::<crate::SnapshotManifest>(data) else { return };
    let _ = crate::store::validate_id(&m.id);
    let store = scratch().store();
    for p in &m.parts {
        for a in &p.artifacts {
            if let Ok(path) = store.artifact_path(a) {
                // A path the store hands out must stay inside it.
                assert!(path.starts_with(store.root()), "artifact path escapes the store: {path:?}");
            }
        }
    }
}

/// The journal reader `resume`, `check` and `history` use, and the interrupted
/// record built from what it read.
pub fn journal(data: &[u8]) {
    let s = scratch();
    let _guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
    let id = "20261201T000000000Z-abcdef";
    let Ok(path) = s.stack.store().journal_path(id) else { return };
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(j) = crate::exec::load_journal(&s.stack, id) {
        let _ = j.position();
        let _ = crate::exec::record_of(&j, crate::Status::Interrupted).to_markdown();
    }
    // History and check read every journal; a torn one is an error, not a panic.
    let _ = s.stack.history();
}

/// The redis snapshot readers (`index.bin`, then `keys.bin`): the bytes are stored
/// as an artifact whose checksum matches, so the readers themselves must cope.
#[cfg(feature = "driver-redis")]
pub fn redis_snapshot(data: &[u8]) {
    let s = scratch();
    let _guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
    crate::drivers::redis::fuzz_readers(s.stack.store(), data);
}

/// A store and a stack in a temporary directory, made once per process.
struct Scratch {
    stack: crate::Stack,
    lock: std::sync::Mutex<()>,
}

impl Scratch {
    fn store(&self) -> &crate::Store {
        self.stack.store()
    }
}

fn scratch() -> &'static Scratch {
    static S: OnceLock<Scratch> = OnceLock::new();
    S.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rollback-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let cfg = crate::StackConfig::new(&dir);
        let stack = crate::Stack::new(cfg, &crate::Registry::with_default_drivers()).expect("an empty stack");
        Scratch { stack, lock: std::sync::Mutex::new(()) }
    })
}
