//! Human and JSON output. stdout carries the result; stderr carries progress and notes.

use std::io::Write;

use rollback_core::{CheckReport, Error, Event, EventStatus, Record, SnapshotManifest, Verification, WatchReport};

#[derive(Clone, Debug)]
pub struct Out {
    pub json: bool,
    pub quiet: bool,
}

impl Out {
    pub fn new(json: bool, quiet: bool) -> Self {
        Out { json, quiet }
    }

    pub fn json_value<T: serde::Serialize>(&self, v: &T) {
        let s = serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{s}");
    }

    /// A line for the operator on stderr.
    pub fn note(&self, s: &str) {
        if !self.quiet {
            eprintln!("{s}");
        }
    }

    pub fn error(&self, e: &Error) {
        if self.json {
            self.json_value(&serde_json::json!({
                "error": { "code": e.kind().code(), "kind": format!("{:?}", e.kind()), "component": e.component(), "message": e.to_string() }
            }));
        }
        eprintln!("error: {e}");
    }

    pub fn record(&self, r: &Record) {
        if self.json {
            self.json_value(r);
        } else {
            print!("{}", r.to_markdown());
            println!("\nrecord: {}", r.rollback_id);
        }
    }
}

pub fn bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

pub fn print_event(e: &Event) {
    let comp = e.component.as_deref().unwrap_or("");
    match e.kind.as_str() {
        "step_started" => eprintln!(
            "[{}/{}] {comp} {}: {}",
            e.index.map(|i| i + 1).unwrap_or(0),
            e.total.unwrap_or(0),
            e.action.map(|a| a.as_str()).unwrap_or(""),
            e.message
        ),
        "step_finished" => eprintln!(
            "[{}/{}] {comp} {} {} ({} ms){}",
            e.index.map(|i| i + 1).unwrap_or(0),
            e.total.unwrap_or(0),
            e.action.map(|a| a.as_str()).unwrap_or(""),
            e.status.map(|s| s.as_str()).unwrap_or(""),
            e.duration_ms.unwrap_or(0),
            if e.status == Some(EventStatus::Failed) { format!(": {}", e.message) } else { String::new() }
        ),
        "progress" => eprintln!("      {comp}: {}", e.message),
        // A watch runs for long: its lines carry the time, to line up with the app's logs.
        "watch_probe" => eprintln!(
            "{} watch: {} {}",
            chrono::Utc::now().format("%H:%M:%S%.3f"),
            if e.status == Some(EventStatus::Bad) { "BAD" } else { "ok " },
            e.message
        ),
        k if k.starts_with("watch_") => eprintln!("{} watch: {}", chrono::Utc::now().format("%H:%M:%S%.3f"), e.message),
        _ => eprintln!("{}", e.message),
    }
}

pub fn print_list(snaps: &[SnapshotManifest]) {
    if snaps.is_empty() {
        println!("no snapshots yet (rollback snapshot --label ...)");
        return;
    }
    println!("{:<28} {:<24} {:<20} {:>10} {:<7} components", "id", "label", "time (UTC)", "size", "healthy");
    for s in snaps {
        let label = match (&s.label, &s.safety_for) {
            (_, Some(r)) => format!("(safety for {})", &r[..r.len().min(14)]),
            (Some(l), None) => l.clone(),
            (None, None) => String::new(),
        };
        println!(
            "{:<28} {:<24} {:<20} {:>10} {:<7} {}",
            s.id,
            truncate(&label, 24),
            s.created_at.format("%Y-%m-%d %H:%M:%S"),
            bytes(s.size()),
            match s.healthy {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            },
            s.parts.iter().map(|p| p.component.as_str()).collect::<Vec<_>>().join(",")
        );
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

pub fn print_verification(v: &Verification) {
    for (c, d) in &v.components {
        if d.ok {
            println!("{c}: equal to snapshot {}", v.snapshot_id);
        } else {
            println!("{c}: DRIFT from snapshot {}", v.snapshot_id);
            for x in &d.differences {
                println!("  - {x}");
            }
        }
    }
}

pub fn print_history(h: &[Record]) {
    if h.is_empty() {
        println!("no rollbacks yet");
        return;
    }
    println!(
        "{:<28} {:<8} {:<10} {:<12} {:>9} {:<6} snapshot",
        "rollback", "kind", "level", "status", "duration", "rto"
    );
    for r in h {
        println!(
            "{:<28} {:<8} {:<10} {:<12} {:>7}ms {:<6} {}",
            r.rollback_id,
            r.kind,
            r.level,
            r.status.as_str(),
            r.duration_ms,
            if r.rto_met { "met" } else { "MISSED" },
            r.snapshot_id
        );
    }
}

pub fn print_watch(r: &WatchReport) {
    let secs = (r.end_time - r.start_time).num_milliseconds() as f64 / 1000.0;
    println!("watch {} after {} round(s) in {secs:.1} s (snapshot {})", r.outcome.as_str(), r.rounds, r.snapshot_id);
    for d in &r.decisions {
        println!(
            "  {} ({}): {}{}; {} ms from the first bad reading",
            d.action.as_str(),
            d.severity.as_str(),
            d.reason,
            if d.dry_run { " [dry run: nothing changed]" } else { "" },
            d.detect_ms
        );
    }
    if let Some(e) = &r.error {
        println!("  error: {e}");
    }
    for u in &r.undelivered {
        println!("  notification not delivered: {u}");
    }
}

pub fn print_check(r: &CheckReport) {
    for (c, x) in &r.components {
        println!("{} {c}: {}", if x.ok { "ok  " } else { "FAIL" }, x.detail);
    }
    match &r.newest_snapshot {
        Some((id, age)) => println!("newest snapshot: {id} ({} ago)", humanize(*age)),
        None => println!("newest snapshot: none — take one before the next deploy"),
    }
    match &r.newest_drill {
        Some((id, age)) => println!("newest drill: {id} ({} ago)", humanize(*age)),
        None => println!("newest drill: none — run `rollback drill` in staging"),
    }
    for id in &r.unfinished_rollbacks {
        println!("UNFINISHED rollback {id}: run `rollback resume {id}` (or `rollback abandon {id}`)");
    }
    for w in &r.warnings {
        println!("WARNING {w}");
    }
}

fn humanize(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86400),
    }
}
