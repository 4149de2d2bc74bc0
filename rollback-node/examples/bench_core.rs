//! The Rust side of benches/node_overhead.mjs: the same calls the Node bench makes,
//! straight on rollback-core, so the difference is the binding's overhead.
//!
//! `bench_core <dir-with-rollback.toml> <snapshots> <assess-calls>` prints one JSON line.

use std::hint::black_box;
use std::time::Instant;

use rollback_core::{assess, DataImpact, SnapshotOptions, Stack, Symptoms, Thresholds};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, snapshots, calls] = args.as_slice() else {
        return Err("usage: bench_core <dir> <snapshots> <assess-calls>".into());
    };
    let (snapshots, calls): (usize, usize) = (snapshots.parse()?, calls.parse()?);

    let t = Instant::now();
    for i in 0..calls {
        let s = Symptoms {
            error_rate: black_box(0.31 + (i % 3) as f64 * 0.01),
            perf_degradation: 0.55,
            latency_ms: Some(120.0),
            data_impact: DataImpact::None,
            security: false,
        };
        black_box(assess(&s, &Thresholds::default()).expect("valid symptoms"));
    }
    let assess_ns = t.elapsed().as_nanos() as f64 / calls.max(1) as f64;

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let stack = Stack::load(format!("{dir}/rollback.toml"))?;
    let mut ms = Vec::with_capacity(snapshots);
    rt.block_on(async {
        // Warm up (first store writes, page cache), as the Node side does.
        for _ in 0..snapshots.min(3) {
            stack.snapshot(SnapshotOptions::default()).await?;
        }
        for _ in 0..snapshots {
            let t = Instant::now();
            stack.snapshot(SnapshotOptions::default()).await?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        Ok::<_, rollback_core::Error>(())
    })?;
    let samples: Vec<String> = ms.iter().map(|m| format!("{m:.3}")).collect();
    println!("{{\"assess_ns\":{assess_ns:.1},\"snapshot_ms\":[{}]}}", samples.join(","));
    Ok(())
}
