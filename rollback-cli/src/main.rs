//! `rollback`: the operator's command line.

// Printing never panics here: after a hang-up (an ssh session that dropped) the
// terminal is gone, and std's print macros panic on a failed write. A rollback must
// not die half-way through for want of a place to print; its record is in the store.
macro_rules! println {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}
macro_rules! print {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}
macro_rules! eprintln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

macro_rules! eprint {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($t)*);
    }};
}

mod demo;
mod output;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use rollback_core::{
    CancelToken, DataImpact, Error, ErrorKind, Event, RollbackOptions, RollbackPlan, Scope, Severity, SnapshotOptions,
    Stack, Symptoms, Thresholds,
};

use crate::output::Out;

#[derive(Parser, Debug)]
#[command(name = "rollback", version, about = "Snapshot a deployed stack and roll it back, verified, with a record.")]
struct Cli {
    /// The stack's config file.
    #[arg(long, short = 'c', global = true, env = "ROLLBACK_CONFIG", default_value = "rollback.toml")]
    config: PathBuf,
    /// Print one JSON document on stdout and nothing else there.
    #[arg(long, global = true)]
    json: bool,
    /// Print only errors on stderr.
    #[arg(long, short = 'q', global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone, Default)]
struct ScopeArgs {
    /// complete | phase | component (default: complete, or implied by --phase/--component).
    #[arg(long)]
    level: Option<String>,
    /// A phase to roll back (repeatable).
    #[arg(long = "phase")]
    phases: Vec<i64>,
    /// A component to roll back (repeatable).
    #[arg(long = "component")]
    components: Vec<String>,
}

impl ScopeArgs {
    fn scope(&self) -> Result<Scope, Error> {
        Scope::from_parts(self.level.as_deref(), self.phases.clone(), self.components.clone())
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The self-contained tour: scratch stack, snapshot, bad deploy, assess, plan, rollback, verify.
    Demo {
        /// Where to build the scratch stack (default: a new temporary directory, kept).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Capture the stack (or some components); prints the snapshot id.
    Snapshot {
        /// A label, e.g. the version being replaced.
        #[arg(long)]
        label: Option<String>,
        /// Only this component (repeatable).
        #[arg(long = "component")]
        components: Vec<String>,
    },
    /// Snapshots: id, label, time, components, size.
    List,
    /// A snapshot's manifest.
    Show {
        /// Id, unique prefix, `latest` or `last-good`.
        snapshot: String,
    },
    /// The steps a rollback would run, with the predicted duration; changes nothing.
    Plan {
        /// Id, unique prefix, `latest` or `last-good`.
        snapshot: String,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Roll back to a snapshot; prints the record.
    Rollback {
        /// Id, unique prefix, `latest` or `last-good`.
        snapshot: String,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Why (error_rate, latency, data_corruption, ...).
        #[arg(long)]
        trigger: Option<String>,
        /// Severity from `assess`: low, medium, high or critical.
        #[arg(long)]
        severity: Option<Severity>,
        /// Plan and preflight only; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Skip the safety snapshot (what the rollback discards is then lost).
        #[arg(long)]
        no_safety_snapshot: bool,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Exit 0 when the current state equals the snapshot, 1 with a drift report otherwise.
    Verify {
        /// Id, unique prefix, `latest` or `last-good`.
        snapshot: String,
        /// Only this component (repeatable).
        #[arg(long = "component")]
        components: Vec<String>,
    },
    /// Severity and decision from the symptoms (decision matrix).
    Assess {
        /// Fraction of failing requests (0.31 or 31%).
        #[arg(long, value_parser = parse_fraction)]
        error_rate: f64,
        /// Fraction of performance lost (0.55 or 55%).
        #[arg(long, value_parser = parse_fraction)]
        perf_degradation: f64,
        /// Observed latency in milliseconds.
        #[arg(long)]
        latency_ms: Option<f64>,
        /// none | corruption | loss.
        #[arg(long, default_value = "none")]
        data_impact: DataImpact,
        /// A security issue is present.
        #[arg(long)]
        security: bool,
    },
    /// Rehearsal: snapshot, perturb, roll back, verify, timed against the objective.
    Drill {
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Finish a rollback that was interrupted, from its journal.
    Resume {
        /// Rollback id (or `latest` unfinished).
        record: String,
    },
    /// Give up an unfinished rollback without changing anything; its record lists
    /// what it had changed and what it left stopped.
    Abandon {
        /// Rollback id.
        record: String,
    },
    /// Past rollbacks and drills.
    History,
    /// One record.
    Report {
        /// Rollback id, prefix, `latest`, or path to a record's JSON.
        record: String,
        /// md | json.
        #[arg(long, default_value = "md")]
        format: String,
    },
    /// Retention: remove old snapshots (never the newest, never one in use).
    Gc {
        /// Keep this many newest snapshots.
        #[arg(long)]
        keep: Option<usize>,
        /// Remove snapshots older than this (e.g. 30d).
        #[arg(long, value_parser = parse_dur)]
        max_age: Option<std::time::Duration>,
    },
    /// Preflight: config valid, every driver reachable, age of the newest snapshot and drill.
    Check,
    /// Watch the stack with the `[watch]` probes and roll back (or notify) when the
    /// policy says so; exit 0 when the watch ended without a rollback, 1 when it
    /// rolled back (or, with --dry-run, would have).
    Watch {
        /// The snapshot to roll back to: id, unique prefix, `latest` or `last-good`.
        #[arg(default_value = "last-good")]
        snapshot: String,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Watch this long (a deploy window), then exit; without it, until Ctrl-C.
        #[arg(long = "for", value_parser = parse_dur)]
        duration: Option<std::time::Duration>,
        /// Decide and notify; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Probe each component's health checks once; exit 0 when all pass.
    Health {
        /// Only this component (repeatable).
        #[arg(long = "component")]
        components: Vec<String>,
    },
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let (num, pct) = match s.strip_suffix('%') {
        Some(n) => (n, true),
        None => (s, false),
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("`{s}` is not a number"))?;
    if !pct && v > 1.0 {
        // 1.7 could mean 1.7% or 170%: make the operator say which.
        return Err(format!("`{s}` is above 1; write a fraction (0.31) or a percentage (31%)"));
    }
    let v = if pct { v / 100.0 } else { v };
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("`{s}` is not between 0 and 1 (or 0% and 100%)"));
    }
    Ok(v)
}

fn parse_dur(s: &str) -> Result<std::time::Duration, String> {
    rollback_core::config::parse_duration(s)
}

fn exit_code(e: &Error) -> u8 {
    match e.kind() {
        ErrorKind::ConfigInvalid | ErrorKind::NotFound => 2,
        ErrorKind::Locked => 3,
        _ => 1,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = if cli.quiet { "error" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ROLLBACK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let out = Out::new(cli.json, cli.quiet);
    match rt.block_on(run(cli, out.clone())) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            out.error(&e);
            ExitCode::from(exit_code(&e))
        }
    }
}

/// Ctrl-C or SIGTERM (a service manager stopping the CLI) stop the rollback at the
/// next step boundary instead of killing it halfway through a restore.
///
/// A hang-up (SIGHUP: the terminal or ssh session is gone) does not stop it: the
/// rollback goes on to its end and writes its record, as under `nohup`.
fn cancel_on_interrupt(out: &Out) -> CancelToken {
    cancel_on_signal(out, "interrupt: stopping at the next step boundary (`rollback resume` finishes it)")
}

fn cancel_on_signal(out: &Out, message: &'static str) -> CancelToken {
    let cancel = CancelToken::new();
    if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::warn!("hang-up: the terminal is gone; going on to the end (see `rollback history`)");
            }
        });
    }
    let (c2, out2) = (cancel.clone(), out.clone());
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = tokio::signal::ctrl_c() => if r.is_err() { return },
            _ = term => {}
        }
        out2.note(message);
        c2.cancel();
    });
    cancel
}

/// A watch's own events go to stderr unless `--quiet` (a watch runs for long, often
/// under a pipeline: its decisions must be in the log); a rollback it starts shows its
/// steps on a terminal only, as `rollback` does.
fn watch_progress(out: &Out) -> Option<rollback_core::EventCallback> {
    if out.quiet {
        return None;
    }
    let terminal = std::io::stderr().is_terminal();
    Some(Arc::new(move |e: &Event| {
        if e.kind.as_str().starts_with("watch_") || terminal {
            output::print_event(e)
        }
    }))
}

fn progress(out: &Out) -> Option<rollback_core::EventCallback> {
    if out.quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    Some(Arc::new(|e: &Event| output::print_event(e)))
}

async fn run(cli: Cli, out: Out) -> Result<u8, Error> {
    let load = || Stack::load(&cli.config);
    match cli.command {
        Command::Demo { dir } => demo::run(dir, &out).await,
        Command::Snapshot { label, components } => {
            let stack = load()?;
            let snap = stack.snapshot(SnapshotOptions { label, components, on_event: progress(&out) }).await?;
            if out.json {
                out.json_value(&snap);
            } else {
                println!("{}", snap.id);
                out.note(&format!(
                    "snapshot {} of {} component(s), {}, healthy: {}",
                    snap.id,
                    snap.parts.len(),
                    output::bytes(snap.size()),
                    snap.healthy.map(|h| h.to_string()).unwrap_or_else(|| "no checks".into())
                ));
            }
            Ok(0)
        }
        Command::List => {
            let snaps = load()?.list()?;
            if out.json {
                out.json_value(&snaps);
            } else {
                output::print_list(&snaps);
            }
            Ok(0)
        }
        Command::Show { snapshot } => {
            let s = load()?.resolve(&snapshot)?;
            if out.json {
                out.json_value(&s);
            } else {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            }
            Ok(0)
        }
        Command::Plan { snapshot, scope } => {
            let plan = load()?.plan(&snapshot, &scope.scope()?).await?;
            if out.json {
                out.json_value(&plan);
            } else {
                print!("{}", plan.render());
            }
            Ok(0)
        }
        Command::Rollback { snapshot, scope, trigger, severity, dry_run, no_safety_snapshot, yes } => {
            let stack = load()?;
            let scope = scope.scope()?;
            if dry_run {
                let plan = stack.dry_run(&snapshot, &scope).await?;
                if out.json {
                    out.json_value(&serde_json::json!({ "dry_run": true, "preflight": "ok", "plan": plan }));
                } else {
                    print!("{}", plan.render());
                    println!("Preflight passed. Dry run: nothing was changed.");
                }
                return Ok(0);
            }
            let mut snapshot = snapshot;
            if !yes && std::io::stdin().is_terminal() && !out.json {
                // The person confirms the snapshot by its id: a prefix they typed (even
                // one the core would refuse as too short) is shown resolved.
                let snap = stack.resolve(&snapshot)?;
                let plan = stack.plan(&snap.id, &scope).await?;
                if snap.id != snapshot {
                    eprintln!(
                        "`{snapshot}` is snapshot {}{}, taken {}.",
                        snap.id,
                        snap.label.as_deref().map(|l| format!(" (\"{l}\")")).unwrap_or_default(),
                        snap.created_at.format("%Y-%m-%d %H:%M:%S UTC")
                    );
                }
                snapshot = snap.id;
                eprint!("{}Roll back now? [y/N] ", plan.render());
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).ok();
                if !matches!(line.trim(), "y" | "Y" | "yes") {
                    eprintln!("Nothing was changed.");
                    return Ok(1);
                }
            }
            let cancel = cancel_on_interrupt(&out);
            let record = stack
                .rollback(
                    &snapshot,
                    RollbackOptions {
                        scope,
                        trigger,
                        severity,
                        no_safety_snapshot,
                        on_event: progress(&out),
                        cancel,
                        step_timeout: None,
                        watch: None,
                    },
                )
                .await?;
            out.record(&record);
            Ok(if record.succeeded() { 0 } else { 1 })
        }
        Command::Verify { snapshot, components } => {
            let v = load()?.verify(&snapshot, &components).await?;
            if out.json {
                out.json_value(&v);
            } else {
                output::print_verification(&v);
            }
            Ok(if v.ok { 0 } else { 1 })
        }
        Command::Assess { error_rate, perf_degradation, latency_ms, data_impact, security } => {
            // Thresholds come from the config when there is one; the matrix needs no stack.
            let thresholds = if cli.config.exists() {
                rollback_core::StackConfig::load(&cli.config)?.decision
            } else {
                Thresholds::default()
            };
            let a = rollback_core::assess(
                &Symptoms { error_rate, perf_degradation, latency_ms, data_impact, security },
                &thresholds,
            )?;
            if out.json {
                out.json_value(&a);
            } else {
                println!("severity: {}", a.severity.as_str());
                println!("decision: {}", a.decision.as_str());
                println!("because:  {}", a.reasons.join("; "));
            }
            Ok(0)
        }
        Command::Drill { scope } => {
            let stack = load()?;
            let record = stack
                .drill(RollbackOptions {
                    scope: scope.scope()?,
                    trigger: Some("drill".into()),
                    on_event: progress(&out),
                    cancel: cancel_on_interrupt(&out),
                    ..Default::default()
                })
                .await?;
            out.record(&record);
            Ok(if record.succeeded() { 0 } else { 1 })
        }
        Command::Resume { record } => {
            let r = load()?.resume_with(&record, progress(&out), cancel_on_interrupt(&out)).await?;
            out.record(&r);
            Ok(if r.succeeded() { 0 } else { 1 })
        }
        Command::Abandon { record } => {
            let r = load()?.abandon(&record).await?;
            out.record(&r);
            Ok(0)
        }
        Command::History => {
            let h = load()?.history()?;
            if out.json {
                out.json_value(&h);
            } else {
                output::print_history(&h);
            }
            Ok(0)
        }
        Command::Report { record, format } => {
            let r = load()?.record(&record)?;
            match format.as_str() {
                "json" => println!("{}", r.to_json()),
                "md" if out.json => out.json_value(&r),
                "md" => print!("{}", r.to_markdown()),
                f => return Err(Error::config(format!("--format `{f}` is not one of md, json"))),
            }
            Ok(0)
        }
        Command::Gc { keep, max_age } => {
            if keep.is_none() && max_age.is_none() {
                return Err(Error::config("gc needs --keep N and/or --max-age DUR"));
            }
            let r = load()?.gc(keep, max_age).await?;
            if out.json {
                out.json_value(&r);
            } else {
                println!(
                    "removed {} snapshot(s), kept {}, freed {} in {} artifact(s)",
                    r.removed.len(),
                    r.kept.len(),
                    output::bytes(r.freed_bytes),
                    r.freed_files
                );
                for id in &r.removed {
                    println!("  removed {id}");
                }
            }
            Ok(0)
        }
        Command::Health { components } => {
            let h = load()?.health(&components).await?;
            let ok = h.values().flatten().all(|r| r.ok);
            if out.json {
                out.json_value(&h);
            } else {
                for (c, results) in &h {
                    if results.is_empty() {
                        println!("     {c}: no health checks");
                    }
                    for r in results {
                        println!("{} {c}: {} — {}", if r.ok { "ok  " } else { "FAIL" }, r.check, r.detail);
                    }
                }
            }
            Ok(if ok { 0 } else { 1 })
        }
        Command::Watch { snapshot, scope, duration, dry_run } => {
            let stack = load()?;
            let cancel = cancel_on_signal(
                &out,
                "interrupt: the watch stops (a rollback it started stops at the next step boundary; \
                 `rollback resume` finishes it)",
            );
            let report = stack
                .watch(rollback_core::WatchOptions {
                    snapshot: Some(snapshot),
                    scope: scope.scope()?,
                    duration,
                    dry_run,
                    on_event: watch_progress(&out),
                    cancel,
                })
                .await?;
            if out.json {
                out.json_value(&report);
            } else {
                output::print_watch(&report);
                if let Some(r) = &report.record {
                    out.record(r);
                }
            }
            let cut_short = duration.is_some() && report.outcome == rollback_core::WatchOutcome::Stopped;
            if cut_short {
                out.note("the watch was stopped before the end of its --for window: it cannot vouch for the deploy");
            }
            Ok(if report.clean() && !cut_short { 0 } else { 1 })
        }
        Command::Check => {
            let r = load()?.check().await?;
            if out.json {
                out.json_value(&r);
            } else {
                output::print_check(&r);
            }
            Ok(if r.ok { 0 } else { 1 })
        }
    }
}
