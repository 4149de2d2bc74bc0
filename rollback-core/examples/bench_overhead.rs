//! The Rust side of `benches/python_overhead.py`: the same calls the Python binding
//! makes, timed in-process from Rust, so the script can show the binding's overhead.
//!
//! ```text
//! bench_overhead assess CALLS ROUNDS
//! bench_overhead snapshot CONFIG COUNT
//! ```
//! `assess`: best of ROUNDS loops of CALLS calls; prints `{"op":"assess","ns_per_call":…}`.
//! `snapshot`: COUNT snapshots of the stack in CONFIG, each deleted again by `gc`;
//! prints `{"op":"snapshot","ms":[…]}` (one wall time per snapshot).

use std::hint::black_box;
use std::time::Instant;

use rollback_core::{assess, DataImpact, SnapshotOptions, Stack, Symptoms, Thresholds};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("assess") => {
            let calls: u64 = args.get(1).ok_or("CALLS")?.parse()?;
            let rounds: u64 = args.get(2).ok_or("ROUNDS")?.parse()?;
            let t = Thresholds::default();
            let mut best = f64::MAX;
            for _ in 0..rounds {
                let start = Instant::now();
                for _ in 0..calls {
                    // What the binding receives from Python: plain numbers and a word.
                    let s = Symptoms {
                        error_rate: black_box(0.31),
                        perf_degradation: black_box(0.55),
                        latency_ms: None,
                        data_impact: black_box("none").parse::<DataImpact>()?,
                        security: false,
                    };
                    black_box(assess(&s, &t).expect("valid symptoms"));
                }
                best = best.min(start.elapsed().as_nanos() as f64 / calls as f64);
            }
            println!("{{\"op\":\"assess\",\"ns_per_call\":{best:.1}}}");
        }
        Some("snapshot") => {
            let config = args.get(1).ok_or("CONFIG")?;
            let count: usize = args.get(2).ok_or("COUNT")?.parse()?;
            // Like the binding's runtime: multi-threaded, default worker count.
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let stack = Stack::load(config)?;
            let mut ms = Vec::with_capacity(count);
            for _ in 0..count {
                let start = Instant::now();
                let snap = rt.block_on(stack.snapshot(SnapshotOptions::default()))?;
                ms.push(start.elapsed().as_secs_f64() * 1000.0);
                black_box(snap);
                rt.block_on(stack.gc(Some(1), None))?;
            }
            let list: Vec<String> = ms.iter().map(|m| format!("{m:.3}")).collect();
            println!("{{\"op\":\"snapshot\",\"ms\":[{}]}}", list.join(","));
        }
        _ => return Err("usage: bench_overhead assess CALLS ROUNDS | snapshot CONFIG COUNT".into()),
    }
    Ok(())
}
