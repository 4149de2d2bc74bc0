//! Times one driver operation for the benches in `benches/`: capture, restore or verify
//! of one component, one operation per process so that peak memory is per operation.
//!
//! ```text
//! datadrill STORE_DIR capture|restore|verify DRIVER KEY=VALUE...
//! ```
//! `capture` writes the part to `STORE_DIR/part.json`; `restore` and `verify` read it.
//! Prints one JSON line: `{"op", "ms", "peak_rss_mb", "bytes"}`.

use std::path::PathBuf;
use std::time::Instant;

use rollback_core::{ComponentConfig, Context, DriverEnv, Part, Registry, Store};

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        return Err("usage: datadrill STORE_DIR capture|restore|verify DRIVER KEY=VALUE...".into());
    }
    let dir = PathBuf::from(&args[0]);
    let op = args[1].as_str();
    let mut cfg = ComponentConfig::new("bench", args[2].as_str());
    for kv in &args[3..] {
        let (k, v) = kv.split_once('=').ok_or("options are KEY=VALUE")?;
        let v = match v.parse::<i64>() {
            Ok(n) => serde_json::Value::from(n),
            Err(_) => match v {
                "true" | "false" => serde_json::Value::from(v == "true"),
                _ => serde_json::Value::from(v),
            },
        };
        cfg = cfg.option(k, v);
    }
    let store = Store::open(dir.join("store"))?;
    let env = DriverEnv { base_dir: dir.clone(), redactor: Default::default() };
    let driver = Registry::with_default_drivers().build(&cfg, &env)?;
    let ctx = Context::new("bench", store, &dir);
    let part_file = dir.join("part.json");
    let t = Instant::now();
    let bytes = match op {
        "capture" => {
            let c = driver.capture(&ctx).await?;
            let part = Part {
                component: "bench".into(),
                driver: args[2].clone(),
                phase: 1,
                state: c.state,
                artifacts: c.artifacts,
                capture_ms: t.elapsed().as_millis() as u64,
            };
            std::fs::write(&part_file, serde_json::to_vec(&part)?)?;
            part.size()
        }
        "restore" | "verify" => {
            let part: Part = serde_json::from_slice(&std::fs::read(&part_file)?)?;
            if op == "restore" {
                driver.restore(&ctx, &part).await?;
            } else {
                let d = driver.verify(&ctx, &part).await?;
                if !d.ok {
                    return Err(format!("verify found drift: {:?}", d.differences).into());
                }
            }
            part.size()
        }
        other => return Err(format!("unknown operation `{other}`").into()),
    };
    println!(
        "{}",
        serde_json::json!({ "op": op, "ms": t.elapsed().as_millis() as u64, "peak_rss_mb": (peak_rss_mb() * 10.0).round() / 10.0, "bytes": bytes })
    );
    Ok(())
}
