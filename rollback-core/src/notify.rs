//! Notifications: what a rollback, resume or drill tells the on-call channel, through
//! the `[[notify]]` entries of `rollback.toml`.
//!
//! - `webhook`: a JSON `POST` whose `text` field Slack and Mattermost incoming
//!   webhooks show as the message, with the structured summary beside it. Retried
//!   with backoff (0.5 s, 1 s, 2 s, …) on a network error, a 5xx or a 429.
//! - `command`: an argv run without a shell in the config file's directory (as health
//!   checks and watch probes are), the same JSON on its stdin; exit 0 is delivered.
//!   Ended with its process group at the timeout.
//!
//! Delivery never blocks or fails a rollback: each message goes out on a task of its
//! own, a rollback waits for them only once its record is written (at most the
//! targets' timeouts and retries), and a failed delivery becomes a note in the record.
//! A webhook URL is a secret (Slack's carries its token in the path): messages and
//! notes show its scheme and host only.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::record::Record;
use crate::secret::Redactor;

crate::names::word_enum! {
    /// When a notification is sent; `ALL` is in the order a rollback sends them.
    #[derive(PartialOrd, Ord)]
    pub enum NotifyOn ("event") {
        /// A rollback or drill began (before anything changes).
        Started = "started",
        /// An interrupted rollback is carried on by `resume`.
        Resumed = "resumed",
        /// A step failed and changed components are being put back.
        Compensating = "compensating",
        /// The rollback stopped at a step boundary (Ctrl-C, SIGTERM); `resume` finishes it.
        Interrupted = "interrupted",
        /// The rollback or drill ended, whatever its status.
        Finished = "finished",
        /// A watch decided to notify (or, in a dry run, that it would roll back).
        Watch = "watch",
    }
}

/// Where a notification goes.
#[derive(Clone, PartialEq)]
pub enum NotifyTarget {
    /// An http(s) endpoint that takes a JSON `POST`.
    Webhook {
        /// The URL (a secret: shown as scheme and host only).
        url: String,
        /// A CA file (PEM) trusted instead of the system's roots.
        ca: Option<PathBuf>,
    },
    /// A program given the JSON on its stdin.
    Command {
        /// Program and arguments, run without a shell.
        argv: Vec<String>,
        /// The directory it runs in: the config file's (a relative program or file it
        /// names is found there, whatever the directory of the process).
        dir: PathBuf,
    },
}

impl NotifyTarget {
    /// How the target is named in notes and logs: never the webhook's path or query.
    pub fn shown(&self) -> String {
        match self {
            NotifyTarget::Webhook { url, .. } => match reqwest::Url::parse(url) {
                Ok(u) => format!("webhook {}://{}/…", u.scheme(), u.host_str().unwrap_or("?")),
                Err(_) => "webhook (unparsable url)".into(),
            },
            NotifyTarget::Command { argv, .. } => {
                format!("command `{}`", argv.first().map(String::as_str).unwrap_or(""))
            }
        }
    }
}

impl std::fmt::Debug for NotifyTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

/// One `[[notify]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    /// Where it goes.
    pub target: NotifyTarget,
    /// The events it is sent on (`on = [...]`; every one by default).
    pub on: BTreeSet<NotifyOn>,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// Further attempts after a failed one (webhooks).
    pub retries: u32,
}

/// What is sent: `text` for chat, the rest for programs.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    /// One line a person reads first.
    pub text: String,
    /// Which event.
    pub event: NotifyOn,
    /// `rollback`, `drill` or `watch`.
    pub kind: String,
    /// The rollback's id (none for a watch decision).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub rollback_id: String,
    /// The snapshot it rolls back to.
    pub snapshot_id: String,
    /// The components in its scope.
    pub components: Vec<String>,
    /// The final status (`finished` and `interrupted` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Whether anything was discarded that is not kept in the safety snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_loss: Option<bool>,
    /// How long it took (`finished` and `interrupted` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What set it off (`--trigger`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// The watch's decision (`watch` events, and a rollback a watch started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<crate::watch::WatchDecision>,
    /// The machine it ran on.
    pub host: String,
    /// The stack's config file (or directory).
    pub stack: String,
}

impl Notification {
    /// A notification about `r` (a record, final or not yet).
    pub(crate) fn of(event: NotifyOn, r: &Record, stack: &str) -> Notification {
        let finished = matches!(event, NotifyOn::Finished | NotifyOn::Interrupted);
        let what = r.kind.as_str();
        let components = r.components.clone();
        let text = match event {
            NotifyOn::Started => format!(
                "{what} {} started on {}: back to snapshot {} ({}){}",
                r.rollback_id,
                host(),
                r.snapshot_id,
                components.join(", "),
                r.trigger.as_deref().map(|t| format!(", trigger: {t}")).unwrap_or_default()
            ),
            NotifyOn::Resumed => format!("{what} {} resumed on {}", r.rollback_id, host()),
            NotifyOn::Compensating => format!(
                "{what} {}: a step failed; putting the changed components back from the safety snapshot",
                r.rollback_id
            ),
            NotifyOn::Interrupted => format!(
                "{what} {} interrupted after {:.1} s: `rollback resume {}` finishes it",
                r.rollback_id,
                r.duration_ms as f64 / 1000.0,
                r.rollback_id
            ),
            NotifyOn::Watch => match &r.watch {
                Some(d) => format!("watch on {}: {}", host(), d.reason),
                None => format!("watch on {}", host()),
            },
            NotifyOn::Finished => format!(
                "{what} {} {} in {:.1} s{}{}",
                r.rollback_id,
                r.status.as_str(),
                r.duration_ms as f64 / 1000.0,
                if r.data_loss { "; DATA LOSS: see the record's discards" } else { "; no data lost" },
                r.error.as_deref().map(|e| format!("; {e}")).unwrap_or_default()
            ),
        };
        Notification {
            text,
            event,
            kind: what.into(),
            rollback_id: r.rollback_id.clone(),
            snapshot_id: r.snapshot_id.clone(),
            components,
            status: finished.then(|| r.status.as_str().to_string()),
            data_loss: finished.then_some(r.data_loss),
            duration_ms: finished.then_some(r.duration_ms),
            error: if finished { r.error.clone() } else { None },
            trigger: r.trigger.clone(),
            watch: r.watch.clone(),
            host: host(),
            stack: stack.to_string(),
        }
    }

    /// A watch's decision to notify (or, in a dry run, to roll back); `what` is the
    /// action in words.
    pub(crate) fn watch(d: &crate::watch::WatchDecision, what: &str, snapshot_id: &str, stack: &str) -> Notification {
        Notification {
            text: format!("watch on {}: {} ({} severity) → {what}", host(), d.reason, d.severity.as_str()),
            event: NotifyOn::Watch,
            kind: "watch".into(),
            rollback_id: String::new(),
            snapshot_id: snapshot_id.to_string(),
            components: Vec::new(),
            status: None,
            data_loss: None,
            duration_ms: None,
            error: None,
            trigger: None,
            watch: Some(d.clone()),
            host: host(),
            stack: stack.to_string(),
        }
    }
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// Sends a stack's notifications and keeps what could not be delivered.
#[derive(Clone)]
pub(crate) struct Notifier {
    targets: Arc<Vec<NotifyConfig>>,
    redactor: Redactor,
    pending: Arc<Mutex<Vec<tokio::task::JoinHandle<Option<String>>>>>,
}

impl Notifier {
    pub(crate) fn new(targets: Vec<NotifyConfig>, redactor: Redactor) -> Notifier {
        Notifier { targets: Arc::new(targets), redactor, pending: Default::default() }
    }

    /// Sends `n` to every target that wants its event, each on a task of its own.
    pub(crate) fn send(&self, n: Notification) {
        let body = match serde_json::to_vec(&n) {
            Ok(b) => Arc::new(b),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a notification");
                return;
            }
        };
        for t in self.targets.iter().filter(|t| t.on.contains(&n.event)) {
            let (t, body, redactor, event) = (t.clone(), body.clone(), self.redactor.clone(), n.event);
            let task = tokio::spawn(async move {
                match deliver(&t, &body).await {
                    Ok(()) => None,
                    Err(why) => {
                        let why = redactor.redact(&format!("{} ({}): {why}", t.target.shown(), event.as_str()));
                        tracing::warn!(failure = %why, "a notification was not delivered");
                        Some(why)
                    }
                }
            });
            if let Ok(mut p) = self.pending.lock() {
                p.push(task);
            }
        }
    }

    /// Waits for every message sent so far; returns one line per failed delivery.
    pub(crate) async fn flush(&self) -> Vec<String> {
        let tasks: Vec<_> = self.pending.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
        let mut failed = Vec::new();
        for t in tasks {
            match t.await {
                Ok(Some(why)) => failed.push(why),
                Ok(None) => {}
                Err(e) => failed.push(format!("a notification task failed: {e}")),
            }
        }
        failed
    }
}

async fn deliver(t: &NotifyConfig, body: &[u8]) -> Result<(), String> {
    match &t.target {
        NotifyTarget::Webhook { url, ca } => {
            let mut backoff = Duration::from_millis(500);
            let mut attempt = 0;
            loop {
                match post(url, ca.as_deref(), body, t.timeout).await {
                    Ok(()) => return Ok(()),
                    Err((why, retry)) if retry && attempt < t.retries => {
                        tracing::info!(attempt, reason = %why, "notification not delivered; trying again");
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                        attempt += 1;
                    }
                    Err((why, _)) => {
                        let tries = attempt + 1;
                        return Err(format!("{why} (after {tries} attempt{})", if tries == 1 { "" } else { "s" }));
                    }
                }
            }
        }
        NotifyTarget::Command { argv, dir } => run(argv, dir, body, t.timeout).await,
    }
}

/// One `POST`; the error says whether another attempt may help.
async fn post(url: &str, ca: Option<&std::path::Path>, body: &[u8], timeout: Duration) -> Result<(), (String, bool)> {
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(crate::health::tls_config(ca).map_err(|e| (e, false))?)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .user_agent("rollback")
        .build()
        .map_err(|e| (format!("cannot build the http client: {}", e.without_url()), false))?;
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| (http_error(e), true))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err((format!("answered {status}"), status.is_server_error() || status.as_u16() == 429))
    }
}

/// reqwest's message and its causes ("connection refused"), without the URL.
fn http_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}

/// Runs a notify command in `dir` with the JSON on its stdin, in a process group of
/// its own that is ended at the timeout. Only the end of its stderr is kept.
async fn run(argv: &[String], dir: &std::path::Path, body: &[u8], timeout: Duration) -> Result<(), String> {
    let ran = tokio::time::timeout(timeout, crate::health::run_program(argv, dir, Some(body), 0, 4096))
        .await
        .map_err(|_| format!("did not finish in {} s; its process group was ended", timeout.as_secs_f64()))?
        .map_err(|e| format!("cannot run it: {e}"))?;
    if ran.status.success() {
        Ok(())
    } else {
        let err = ran.stderr.text();
        let tail: String = err.trim().lines().last().unwrap_or("").chars().take(200).collect();
        Err(format!("exited with {}{}", ran.status, if tail.is_empty() { String::new() } else { format!(": {tail}") }))
    }
}
