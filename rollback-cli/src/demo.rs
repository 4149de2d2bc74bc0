//! `rollback demo`: the whole incident on a scratch stack, no server needed.
//!
//! The scratch stack is a git repository (the code), a config directory, a
//! releases directory with a `current` link, and a health endpoint this process
//! serves itself. The endpoint answers from what is deployed, so a bad deploy
//! really breaks health and the rollback really repairs it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rollback_core::{
    assess, DataImpact, Error, RollbackOptions, RollbackPlan, Scope, SnapshotOptions, Stack, Symptoms, Thresholds,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::output::Out;

fn io(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::unexpected(format!("demo: {what}")).with_source(e)
}

fn git(what: &str) -> impl FnOnce(git2::Error) -> Error + '_ {
    move |e| Error::unexpected(format!("demo: {what}: {}", e.message()))
}

fn commit_all(repo: &git2::Repository, msg: &str) -> Result<(), Error> {
    let mut idx = repo.index().map_err(git("index"))?;
    idx.add_all(["*"], git2::IndexAddOption::DEFAULT, None).map_err(git("add"))?;
    idx.write().map_err(git("index write"))?;
    let tree = repo.find_tree(idx.write_tree().map_err(git("tree"))?).map_err(git("tree"))?;
    let sig = git2::Signature::now("Demo Deployer", "deploy@example.invalid").map_err(git("signature"))?;
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, msg, &tree, &parents).map_err(git("commit"))?;
    Ok(())
}

fn write(p: &Path, s: &str) -> Result<(), Error> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(io("mkdir"))?;
    }
    std::fs::write(p, s).map_err(io("write"))
}

/// Serves `/health` from the deployed release: healthy when `current/HEALTH`
/// says ok and the config's algorithm is one the release supports.
async fn serve(listener: tokio::net::TcpListener, root: PathBuf) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let root = root.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let release_ok = std::fs::read_to_string(root.join("releases/current/HEALTH"))
                .map(|s| s.trim() == "ok")
                .unwrap_or(false);
            let algo = std::fs::read_to_string(root.join("config/strategy.json")).unwrap_or_default();
            let config_ok = algo.contains("\"algorithm\": \"arb-v1\"");
            let (code, body) = if release_ok && config_ok {
                ("200 OK", r#"{"status":"healthy"}"#.to_string())
            } else {
                (
                    "503 Service Unavailable",
                    r#"{"status":"unhealthy","error":"order router rejects quotes"}"#.to_string(),
                )
            };
            let resp = format!(
                "HTTP/1.1 {code}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

pub async fn run(dir: Option<PathBuf>, out: &Out) -> Result<u8, Error> {
    let root = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d).map_err(io("create --dir"))?;
            if std::fs::read_dir(&d).map_err(io("read --dir"))?.next().is_some() {
                return Err(Error::config(format!("{} is not empty; give an empty or new directory", d.display())));
            }
            d
        }
        None => tempfile::Builder::new().prefix("rollback-demo-").tempdir().map_err(io("tempdir"))?.keep(),
    };
    let root = std::fs::canonicalize(&root).map_err(io("canonicalize"))?;
    let say = |s: &str| {
        if !out.json {
            println!("{s}");
        }
    };
    say(&format!("== rollback demo in {}", root.display()));

    // The stack as it runs before the deploy.
    let app = root.join("app");
    let repo = git2::Repository::init(&app).map_err(git("init"))?;
    write(&app.join("engine.py"), "def quote(bid, ask):\n    return (bid + ask) / 2\n")?;
    write(&app.join("VERSION"), "1.0.0\n")?;
    write(&app.join(".gitignore"), "*.log\n")?;
    commit_all(&repo, "v1.0.0: arbitrage engine")?;
    write(&root.join("config/strategy.json"), "{\n  \"algorithm\": \"arb-v1\",\n  \"max_position\": 100\n}\n")?;
    write(&root.join("releases/v1.0.0/HEALTH"), "ok\n")?;
    write(&root.join("releases/v1.1.0/HEALTH"), "broken: quote feed schema mismatch\n")?;
    std::os::unix::fs::symlink("v1.0.0", root.join("releases/current")).map_err(io("symlink"))?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(io("bind"))?;
    let port = listener.local_addr().map_err(io("addr"))?.port();
    tokio::spawn(serve(listener, root.clone()));
    let health_url = format!("http://127.0.0.1:{port}/health");

    let toml = format!(
        r#"# Written by `rollback demo`.
[rto]
complete = "30s"

[[component]]
name = "code"
driver = "git"
phase = 1
repo = "app"

[[component]]
name = "config"
driver = "files"
phase = 2
paths = ["config"]

[[component]]
name = "engine"
driver = "releases"
phase = 3
root = "releases"
depends_on = ["config"]
health = [{{ http = "{health_url}", status = 200, json = {{ status = "healthy" }}, timeout = "5s" }}]
"#
    );
    let cfg_path = root.join("rollback.toml");
    write(&cfg_path, &toml)?;
    let stack = Stack::load(&cfg_path)?;
    say(&format!("stack: code (git), config (files), engine (releases, health {health_url})"));

    // 1. Before the deploy.
    let snap =
        stack.snapshot(SnapshotOptions { label: Some("pre-deploy v1.0.0".into()), ..Default::default() }).await?;
    say(&format!(
        "\n1. snapshot {} (healthy: {})",
        snap.id,
        snap.healthy.map(|h| h.to_string()).unwrap_or_else(|| "-".into())
    ));

    // 2. The bad deploy: new code, new config, new release.
    write(&app.join("engine.py"), "def quote(bid, ask):\n    return bid  # v1.1.0: 'faster' quoting\n")?;
    write(&app.join("VERSION"), "1.1.0\n")?;
    commit_all(&repo, "v1.1.0: faster quoting")?;
    write(&root.join("config/strategy.json"), "{\n  \"algorithm\": \"arb-v2\",\n  \"max_position\": 500\n}\n")?;
    write(&root.join("config/feature-flags.json"), "{ \"aggressive_fills\": true }\n")?;
    swap(&root.join("releases/current"), "v1.1.0")?;
    say("2. deployed v1.1.0: code, config and release changed");

    // 3. Detect and assess.
    let probe = rollback_core::HealthCheck::parse_list(serde_json::json!([{ "http": health_url, "timeout": "2s" }]))
        .map_err(rollback_core::Error::config)?
        .remove(0);
    let mut failures = 0;
    let probes = 20;
    for _ in 0..probes {
        if !probe.probe(&root).await.ok {
            failures += 1;
        }
    }
    let symptoms = Symptoms {
        error_rate: failures as f64 / probes as f64,
        perf_degradation: 0.0,
        latency_ms: None,
        data_impact: DataImpact::None,
        security: false,
    };
    let a = assess(&symptoms, &Thresholds::default())?;
    say(&format!(
        "3. health: {failures}/{probes} probes failed → severity {}, decision: {} ({})",
        a.severity.as_str(),
        a.decision.as_str(),
        a.reasons.join("; ")
    ));

    // 4. Plan.
    let plan = stack.plan(&snap.id, &Scope::Complete).await?;
    say("\n4. plan (changes nothing):");
    if !out.json {
        for l in plan.render().lines() {
            println!("   {l}");
        }
    }

    // 5. Roll back.
    let events: rollback_core::EventCallback = Arc::new(|_e: &rollback_core::Event| {});
    let record = stack
        .rollback(
            &snap.id,
            RollbackOptions {
                scope: Scope::Complete,
                trigger: Some("error_rate".into()),
                severity: Some(a.severity),
                on_event: Some(events),
                ..Default::default()
            },
        )
        .await?;
    say(&format!(
        "\n5. rollback {}: {} in {} ms (objective {} ms)",
        record.rollback_id,
        record.status.as_str(),
        record.duration_ms,
        record.rto_target_ms
    ));

    // 6. Verify independently.
    let v = stack.verify(&snap.id, &[]).await?;
    let healthy = probe.probe(&root).await.ok;
    say(&format!(
        "6. verify: {}; health endpoint: {}",
        if v.ok { "every component equals the snapshot" } else { "DRIFT" },
        if healthy { "200 healthy" } else { "still failing" }
    ));
    say(&format!("\nThe record ({}), also in {}:", record.rollback_id, stack.store().root().join("records").display()));
    println!("{}", record.to_json());
    say(&format!("\nScratch stack kept in {} (delete it when done).", root.display()));
    Ok(if record.succeeded() && v.ok && healthy { 0 } else { 1 })
}

fn swap(link: &Path, target: &str) -> Result<(), Error> {
    let tmp = link.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(io("symlink"))?;
    std::fs::rename(&tmp, link).map_err(io("rename"))
}
