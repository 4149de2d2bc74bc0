//! Helpers for fixtures' oracles: they read the real state without any driver code.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Runs `program args…` (no shell) in `cwd` and returns its stdout; a non-zero exit
/// is an error quoting stderr. For oracles that ask a service's own client (`psql`,
/// `mysql`, `redis-cli`, `git`).
pub async fn run(program: &str, args: &[&str], cwd: Option<&Path>) -> Result<String> {
    let mut c = tokio::process::Command::new(program);
    c.args(args).stdin(Stdio::null()).kill_on_drop(true);
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    let out = c.output().await.map_err(|e| Error::unexpected(format!("cannot run `{program}`")).with_source(e))?;
    if !out.status.success() {
        return Err(Error::unexpected(format!(
            "`{program} {}` exited with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    String::from_utf8(out.stdout).map_err(|e| Error::unexpected(format!("`{program}` wrote non-UTF-8")).with_source(e))
}

/// A fresh value for a mutation: `prefix` and random hex, different on every call.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// SHA-256 over a file tree: every entry's relative path, type, permission bits,
/// symlink target and file content, in name order. An absent path has its own digest,
/// so "deleted" differs from "empty".
pub async fn tree_digest(root: &Path) -> Result<String> {
    let root = root.to_path_buf();
    // Walking a tree is blocking work; keep it off the async threads.
    crate::drivers::blocking(move || tree_digest_blocking(&root)).await
}

fn tree_digest_blocking(root: &Path) -> Result<String> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;

    let mut h = Sha256::new();
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    if std::fs::symlink_metadata(root).is_err() {
        return Ok("absent".into());
    }
    while let Some(rel) = stack.pop() {
        // `root.join("")` adds a trailing slash, which fails when the root is a file.
        let path = if rel.as_os_str().is_empty() { root.to_path_buf() } else { root.join(&rel) };
        let meta = std::fs::symlink_metadata(&path)?;
        let ft = meta.file_type();
        h.update(rel.as_os_str().as_bytes());
        h.update([0]);
        h.update((meta.permissions().mode() & 0o7777).to_le_bytes());
        if ft.is_symlink() {
            h.update(b"L");
            h.update(std::fs::read_link(&path)?.as_os_str().as_bytes());
        } else if ft.is_dir() {
            h.update(b"D");
            let mut names: Vec<_> =
                std::fs::read_dir(&path)?.map(|e| e.map(|e| e.file_name())).collect::<std::io::Result<_>>()?;
            // Popped last-in first-out: push in reverse so entries are hashed in name order.
            names.sort();
            for n in names.into_iter().rev() {
                stack.push(rel.join(n));
            }
        } else if ft.is_file() {
            h.update(b"F");
            h.update(Sha256::digest(std::fs::read(&path)?));
        } else {
            h.update(b"O");
        }
        h.update([0xff]);
    }
    Ok(hex::encode(h.finalize()))
}
