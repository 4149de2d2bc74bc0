//! Bounded mutation fuzzing of everything that reads input: the config loader, the
//! health-check parser, and the manifest, journal and record readers (and what
//! renders them), through the same entry points as the `cargo fuzz` targets in
//! `fuzz/`. Each target here runs a fixed number of seeded mutations of real
//! inputs, so a failure reproduces exactly and every `cargo test` covers them in
//! seconds; the coverage-guided runs go further, for a bounded time, in
//! `scripts/test-fuzz.sh`. None may panic.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Mutations per target: enough to reach the edges (huge numbers, NaN, truncation,
/// control characters) in a few seconds on two cores.
const ROUNDS: usize = 4000;

/// Values that have broken parsers before: huge, negative, not-a-number, empty.
const TOKENS: &[&str] = &[
    "1e30",
    "1e19",
    "1e300",
    "-1",
    "-0",
    "NaN",
    "inf",
    "70000",
    "18446744073709551616",
    "\"\"",
    "\"5m\"",
    "\"100000000y\"",
    "\"\\u0000\"",
    "[]",
    "{}",
    "null",
    "true",
    "\"${NOPE}\"",
    "\"$${x}\"",
    "0x10",
    "\n",
    "\"../../etc\"",
    "\"a\\nb\"",
    "9223372036854775807",
];

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.gen_range(1..6) {
        if v.is_empty() {
            v.extend_from_slice(TOKENS[rng.gen_range(0..TOKENS.len())].as_bytes());
            continue;
        }
        let at = rng.gen_range(0..v.len());
        match rng.gen_range(0..6) {
            0 => v[at] = rng.gen(),
            1 => v.truncate(at),
            2 => {
                let t = TOKENS[rng.gen_range(0..TOKENS.len())].as_bytes();
                v.splice(at..at, t.iter().copied());
            }
            3 => {
                // Replace a number (or a word) with a token.
                let end = (at..v.len()).find(|&i| !v[i].is_ascii_alphanumeric() && v[i] != b'.').unwrap_or(v.len());
                let t = TOKENS[rng.gen_range(0..TOKENS.len())].as_bytes();
                v.splice(at..end, t.iter().copied());
            }
            4 => {
                let len = rng.gen_range(0..(v.len() - at).min(64) + 1);
                let copy: Vec<u8> = v[at..at + len].to_vec();
                let to = rng.gen_range(0..v.len());
                v.splice(to..to, copy);
            }
            _ => {
                let end = (at + rng.gen_range(0..32)).min(v.len());
                v.drain(at..end);
            }
        }
    }
    v
}

fn fuzz(name: &str, seeds: &[Vec<u8>], mut target: impl FnMut(&[u8])) {
    let mut rng = StdRng::seed_from_u64(0x5eed ^ name.len() as u64);
    for seed in seeds {
        target(seed);
    }
    for i in 0..ROUNDS {
        let seed = &seeds[i % seeds.len()];
        let input = mutate(&mut rng, seed);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&input)));
        if r.is_err() {
            panic!("{name}: input #{i} panicked:\n{}", String::from_utf8_lossy(&input));
        }
    }
}

const CONFIG: &str = r#"
[store]
path = "snaps"
[rto]
complete = "5m"
phase = 900
[decision]
error_rate_high = 0.25
[[component]]
name = "code"
driver = "git"
repo = "/opt/app"
timeout = "30s"
[[component]]
name = "db"
driver = "postgres"
phase = 2
url = "postgres://app:${DB_PASSWORD}@127.0.0.1/trading"
depends_on = ["code"]
health = [{ tcp = "127.0.0.1:5432", timeout = 2 }, { http = "http://u:p@127.0.0.1:1/h", status = 200, json = { status = "ok" } }, { heartbeat = "hb", max_age = "30s", interval = "1s" }, { command = ["true"] }, { log_errors = "app.log", regex = "ERROR", max = 3, lines = 100 }]
"#;

#[test]
fn the_config_loader_never_panics() {
    let mut seeds = vec![CONFIG.as_bytes().to_vec()];
    seeds.push(include_bytes!("../../examples/hft-arbitrage/rollback.toml").to_vec());
    fuzz("config", &seeds, crate::fuzzing::config);
}

#[test]
fn the_health_check_parser_never_panics() {
    let seeds = vec![
        br#"[{"http": "http://127.0.0.1:1/health", "status": 200, "json": {"status": "healthy"}, "timeout": "2s"}]"#
            .to_vec(),
        br#"[{"tcp": "127.0.0.1:5432", "interval": 0.25}, {"heartbeat": "hb", "max_age": 30}]"#.to_vec(),
        br#"{"log_errors": "app.log", "regex": "(?i)error", "max": 3, "lines": 100}"#.to_vec(),
        br#"[{"command": ["sh", "-c", "exit 0"], "timeout": 1e3}]"#.to_vec(),
    ];
    fuzz("health", &seeds, crate::fuzzing::health);
}

fn sample_record() -> crate::Record {
    let json = serde_json::json!({
        "rollback_id": "20261201T000000000Z-abcdef", "snapshot_id": "20261130T000000000Z-012345",
        "kind": "rollback", "level": "phase", "phases": [2], "components": ["db", "code"],
        "trigger": "error_rate", "severity": "high",
        "start_time": "2026-12-01T00:00:00Z", "completion_time": "2026-12-01T00:00:05Z",
        "duration_ms": 5000, "rto_target_ms": 300000, "rto_met": true, "status": "compensated",
        "data_loss": false, "safety_snapshot_id": "20261201T000000001Z-fedcba",
        "steps": [{"component": "db", "action": "restore", "status": "failed", "duration_ms": 12, "error": "boom"},
                  {"component": "db", "action": "compensate", "status": "ok", "duration_ms": 30}],
        "verification": {"db": {"ok": false, "differences": ["table t: 3 rows differ"]}},
        "discarded": [{"component": "db", "target": "table t", "changes": 1, "unit": "rows differing (x)", "kept_in_safety_snapshot": true}],
        "error": "boom", "resumed": true, "notes": ["resumed at step 2 of 4"]
    });
    serde_json::from_value(json).expect("a valid record")
}

#[test]
fn record_and_manifest_readers_and_renderers_never_panic() {
    let record = serde_json::to_vec_pretty(&sample_record()).unwrap();
    fuzz("record", &[record], crate::fuzzing::record);
    let manifest = serde_json::json!({
        "format": 1, "id": "20261130T000000000Z-012345", "label": "v1.2.0", "created_at": "2026-11-30T00:00:00Z",
        "healthy": true, "health": {"db": [{"check": "tcp x", "ok": true, "detail": "connected"}]},
        "parts": [{"component": "db", "driver": "postgres", "phase": 2, "state": {"tables": 3},
                   "artifacts": [{"name": "dump", "sha256": "00", "size": 1}], "capture_ms": 5}]
    });
    fuzz("manifest", &[serde_json::to_vec_pretty(&manifest).unwrap()], crate::fuzzing::manifest);
}

#[test]
fn the_journal_reader_never_panics() {
    let d = tempfile::tempdir().unwrap();
    let cfg = crate::StackConfig::new(d.path());
    let stack = crate::Stack::new(cfg, &crate::Registry::with_default_drivers()).unwrap();
    let snap = crate::SnapshotManifest {
        format: 1,
        id: "20261130T000000000Z-012345".into(),
        label: None,
        created_at: chrono::Utc::now(),
        healthy: None,
        health: Default::default(),
        safety_for: None,
        parts: Vec::new(),
    };
    let plan = crate::Plan {
        snapshot_id: snap.id.clone(),
        scope: crate::Scope::Complete,
        components: vec!["db".into()],
        phases: vec![1],
        steps: vec![crate::Step {
            component: "db".into(),
            action: crate::Action::Restore,
            description: "restore".into(),
            predicted_ms: 1,
        }],
        discards: Vec::new(),
        predicted_ms: 1,
    };
    let j = crate::exec::Journal::new(
        "20261201T000000000Z-abcdef".into(),
        crate::RecordKind::Rollback,
        &snap,
        plan,
        &Default::default(),
        &stack,
        chrono::Utc::now(),
    );
    let seed = serde_json::to_vec_pretty(&j).unwrap();
    fuzz("journal", &[seed], crate::fuzzing::journal);
}
