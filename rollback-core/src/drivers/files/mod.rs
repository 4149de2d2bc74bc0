#![doc = include_str!("docs.md")]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::blocking;
use crate::config::ComponentConfig;
use crate::driver::{Capability, Captured, Context, Discard, Drift, Driver, DynDriver};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::registry::DriverEnv;
use crate::snapshot::Part;
use crate::store::Store;

/// Keys of a `files` component.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Files or directories.
    pub paths: Vec<String>,
}

/// The `files` driver.
#[derive(Debug)]
pub struct FilesDriver {
    paths: Vec<PathBuf>,
}

pub(crate) fn factory(c: &ComponentConfig, env: &DriverEnv) -> Result<DynDriver> {
    let cfg: FilesConfig = c.options.parse()?;
    if cfg.paths.is_empty() {
        return Err(c.options.error("paths", "must list at least one file or directory"));
    }
    let paths = cfg
        .paths
        .iter()
        .map(|p| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                env.base_dir.join(p)
            }
        })
        .collect();
    Ok(Arc::new(FilesDriver { paths }))
}

/// A path or file name byte for byte as the file system has it: Linux names need
/// not be UTF-8, and a lossy conversion would restore a different name beside the
/// real one. Kept in the manifest as the string itself when it is UTF-8 (as earlier
/// snapshots have it), otherwise as a NUL followed by the bytes in hex: no path holds
/// a NUL, so the two forms cannot be confused. Ordered by bytes, so a directory comes
/// before everything under it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
struct RawPath(Vec<u8>);

impl RawPath {
    fn of(p: &Path) -> Self {
        RawPath(p.as_os_str().as_bytes().to_vec())
    }

    fn as_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `self/name`, or `name` for the root itself.
    fn child(&self, name: &OsStr) -> Self {
        let mut b = self.0.clone();
        if !b.is_empty() {
            b.push(b'/');
        }
        b.extend_from_slice(name.as_bytes());
        RawPath(b)
    }

    fn encode(&self) -> String {
        match std::str::from_utf8(&self.0) {
            Ok(s) => s.to_string(),
            Err(_) => format!("\0{}", hex::encode(&self.0)),
        }
    }

    fn decode(s: &str) -> std::result::Result<Self, String> {
        match s.strip_prefix('\0') {
            Some(h) => hex::decode(h).map(RawPath).map_err(|e| format!("a non-UTF-8 path is not valid hex: {e}")),
            None => Ok(RawPath(s.as_bytes().to_vec())),
        }
    }
}

impl std::fmt::Display for RawPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_path().display().fmt(f)
    }
}

impl Serialize for RawPath {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for RawPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RawPath::decode(&s).map_err(serde::de::Error::custom)
    }
}

/// One entry under a captured root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
enum Entry {
    File { mode: u32, uid: u32, gid: u32, sha256: String, size: u64 },
    Dir { mode: u32, uid: u32, gid: u32 },
    Symlink { target: RawPath },
}

/// A configured path that was a symlink: the link itself, put back exactly by a
/// restore, while the root's entries are what it pointed at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RootLink {
    /// The configured path, where the link is.
    at: RawPath,
    /// Its target as written (relative or absolute).
    target: RawPath,
}

/// What was captured of one root: relative path ("" is the root itself) → entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Root {
    path: RawPath,
    entries: BTreeMap<RawPath, Entry>,
    /// The root did not exist (only in safety snapshots: restoring removes it). With
    /// `link`: the link was dangling, and only the link is restored.
    #[serde(default)]
    absent: bool,
    /// Set when the configured path was a symlink to `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link: Option<RootLink>,
}

fn hash_file(p: &Path) -> Result<(String, u64)> {
    let mut f = fs::File::open(p).ctx(|| format!("cannot read {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).ctx(|| format!("cannot read {}", p.display()))?;
        if k == 0 {
            break;
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
    Ok((hex::encode(h.finalize()), n))
}

/// A configured path that is itself a symlink (`sites-enabled/app.conf`) stands for
/// what it points at: that is what the application reads. The link is kept too, so
/// that a restore can put it back where a directory or file has replaced it.
fn resolve_root(p: &Path) -> std::io::Result<(PathBuf, Option<RootLink>)> {
    if fs::symlink_metadata(p)?.file_type().is_symlink() {
        let link = RootLink { at: RawPath::of(p), target: RawPath::of(&fs::read_link(p)?) };
        Ok((fs::canonicalize(p)?, Some(link)))
    } else {
        Ok((p.to_path_buf(), None))
    }
}

/// Walks a root without following symlinks below it. With `store`, file contents
/// are stored. A missing root is `NotFound`; entries that vanish during the walk are
/// skipped; any other error is returned.
fn scan(
    root: &Path,
    store: Option<(&Store, usize, &mut Vec<crate::store::ArtifactRef>)>,
) -> Result<BTreeMap<RawPath, Entry>> {
    let mut out = BTreeMap::new();
    let mut store = store;
    let mut stack = vec![(root.to_path_buf(), RawPath::default())];
    while let Some((p, rel)) = stack.pop() {
        let meta = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !rel.is_empty() => continue,
            Err(e) => return Err(e).ctx(|| format!("{} does not exist or cannot be read", p.display())),
        };
        let (mode, uid, gid) = (meta.mode() & 0o7777, meta.uid(), meta.gid());
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&p).ctx(|| format!("cannot read link {}", p.display()))?;
            out.insert(rel, Entry::Symlink { target: RawPath::of(&target) });
        } else if meta.is_dir() {
            for e in fs::read_dir(&p).ctx(|| format!("cannot list {}", p.display()))? {
                let e = e?;
                stack.push((e.path(), rel.child(&e.file_name())));
            }
            out.insert(rel, Entry::Dir { mode, uid, gid });
        } else if meta.is_file() {
            let (sha256, size) = match store.as_mut() {
                Some((s, idx, arts)) => {
                    let a = s.put_file(artifact_name(*idx, &rel), &p)?;
                    let r = (a.sha256.clone(), a.size);
                    arts.push(a);
                    r
                }
                None => hash_file(&p)?,
            };
            out.insert(rel, Entry::File { mode, uid, gid, sha256, size });
        }
        // Sockets, fifos and devices are not configuration: skipped.
    }
    Ok(out)
}

/// Sockets, FIFOs and devices the restore of `root` removes or replaces: those
/// inside a directory it removes (one added since the snapshot, or one where the
/// snapshot has a file or link), and those where the snapshot has an entry. A
/// capture skips them (they are not configuration), so no snapshot keeps them: the
/// plan and the record must name them.
fn special_files_removed(root: &Root, now: &BTreeMap<RawPath, Entry>) -> Vec<PathBuf> {
    let path = root.path.as_path();
    let is_special = |m: &fs::Metadata| !(m.is_file() || m.is_dir() || m.file_type().is_symlink());
    let mut out = BTreeSet::new();
    for (rel, got) in now {
        let removed_dir = matches!(got, Entry::Dir { .. }) && !matches!(root.entries.get(rel), Some(Entry::Dir { .. }));
        if !removed_dir {
            continue;
        }
        let mut stack = vec![join(path, rel)];
        while let Some(p) = stack.pop() {
            let Ok(rd) = fs::read_dir(&p) else { continue };
            for e in rd.flatten() {
                let Ok(m) = fs::symlink_metadata(e.path()) else { continue };
                if m.is_dir() {
                    stack.push(e.path());
                } else if is_special(&m) {
                    out.insert(e.path());
                }
            }
        }
    }
    for rel in root.entries.keys() {
        let p = join(path, rel);
        if fs::symlink_metadata(&p).is_ok_and(|m| is_special(&m)) {
            out.insert(p);
        }
    }
    out.into_iter().collect()
}

fn artifact_name(idx: usize, rel: &RawPath) -> String {
    format!("files/{idx}/{}", rel.encode())
}

/// The current entries of a root; a missing root has none.
/// How many entries a tree holds (itself included), without reading any content:
/// the plan counts what a restore removes, and must not hash a copied release to say so.
fn count_entries(root: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else { continue };
        n += 1;
        if meta.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    n
}

fn scan_now(root: &Path) -> Result<BTreeMap<RawPath, Entry>> {
    match scan(root, None) {
        Err(e) if e.kind() == ErrorKind::NotFound && fs::symlink_metadata(root).is_err() => Ok(BTreeMap::new()),
        r => r,
    }
}

fn join(root: &Path, rel: &RawPath) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel.as_path())
    }
}

fn roots_of(part: &Part) -> Result<Vec<Root>> {
    serde_json::from_value(part.state.get("roots").cloned().unwrap_or_default())
        .map_err(|e| Error::new(ErrorKind::Corrupt, "files snapshot has no readable `roots`").with_source(e))
}

/// What is at a root link's place now, when it is not that link.
fn link_drift(l: &RootLink) -> Option<String> {
    let at = l.at.as_path();
    let now = match fs::symlink_metadata(at) {
        Err(_) => "is missing".to_string(),
        Ok(m) if m.file_type().is_symlink() => match fs::read_link(at) {
            Ok(t) if t.as_os_str().as_bytes() == l.target.0.as_slice() => return None,
            Ok(t) => format!("points at {}", t.display()),
            Err(e) => format!("cannot be read ({e})"),
        },
        Ok(m) if m.is_dir() => "is a directory".to_string(),
        Ok(_) => "is a file".to_string(),
    };
    Some(format!("{}: was a link to {}, now {now}", l.at, l.target))
}

fn diff(root: &Root, now: &BTreeMap<RawPath, Entry>) -> Vec<String> {
    let mut d = Vec::new();
    let path = root.path.as_path();
    let show = |rel: &RawPath| join(path, rel).display().to_string();
    if let Some(l) = &root.link {
        d.extend(link_drift(l));
        if root.absent {
            // A dangling link: the link is all there is to compare.
            return d;
        }
    }
    if root.absent {
        if !now.is_empty() {
            d.push(format!("{} exists; it did not at the snapshot", root.path));
        }
        return d;
    }
    for (rel, want) in &root.entries {
        match now.get(rel) {
            None => d.push(format!("{} is missing", show(rel))),
            Some(got) if got != want => {
                let what = match (want, got) {
                    (Entry::File { sha256: a, .. }, Entry::File { sha256: b, .. }) if a != b => "content differs",
                    (Entry::File { mode: a, .. }, Entry::File { mode: b, .. })
                    | (Entry::Dir { mode: a, .. }, Entry::Dir { mode: b, .. })
                        if a != b =>
                    {
                        "mode differs"
                    }
                    (Entry::File { .. }, Entry::File { .. }) | (Entry::Dir { .. }, Entry::Dir { .. }) => {
                        "owner differs"
                    }
                    (Entry::Symlink { .. }, Entry::Symlink { .. }) => "link target differs",
                    _ => "kind differs",
                };
                d.push(format!("{}: {what}", show(rel)));
            }
            _ => {}
        }
    }
    for rel in now.keys() {
        if !root.entries.contains_key(rel) {
            d.push(format!("{} was added", show(rel)));
        }
    }
    d
}

fn chown(p: &Path, uid: u32, gid: u32) -> Result<()> {
    match std::os::unix::fs::lchown(p, Some(uid), Some(gid)) {
        Ok(()) => Ok(()),
        // Not root: the file keeps the restoring user's ownership; verify says so.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::warn!(path = %p.display(), "cannot restore file ownership (not permitted)");
            Ok(())
        }
        Err(e) => Err(e).ctx(|| format!("cannot set the owner of {}", p.display())),
    }
}

fn write_aside(dest: &Path, src: &Path, mode: u32, uid: u32, gid: u32) -> Result<()> {
    super::remove_stale_aside(dest);
    let tmp =
        super::aside_path(dest).ok_or_else(|| Error::config(format!("cannot write beside {}", dest.display())))?;
    crate::durable::replace(&tmp, dest, mode, |f| {
        let mut from = fs::File::open(src).ctx(|| format!("cannot read {}", src.display()))?;
        std::io::copy(&mut from, f).ctx(|| format!("cannot write {}", tmp.display()))?;
        match std::os::unix::fs::fchown(&*f, Some(uid), Some(gid)) {
            Ok(()) => {}
            // Not root: the file keeps the restoring user's ownership; verify says so.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                tracing::warn!(path = %dest.display(), "cannot restore file ownership (not permitted)");
            }
            Err(e) => return Err(e).ctx(|| format!("cannot set the owner of {}", tmp.display())),
        }
        // A chown clears set-id bits: the mode again.
        f.set_permissions(fs::Permissions::from_mode(mode)).ctx(|| format!("cannot chmod {}", tmp.display()))?;
        crate::failpoint::hit("files-written-aside");
        Ok(())
    })
}

fn remove_any(p: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    if meta.is_dir() {
        fs::remove_dir_all(p).ctx(|| format!("cannot remove {}", p.display()))
    } else {
        fs::remove_file(p).ctx(|| format!("cannot remove {}", p.display()))
    }
}

/// Puts a root link back exactly. What replaced it (a directory or a file) is
/// removed: it is in the safety snapshot, which records the path as it is now.
fn restore_link(l: &RootLink) -> Result<()> {
    if link_drift(l).is_none() {
        return Ok(());
    }
    let at = l.at.as_path();
    if fs::symlink_metadata(at).map(|m| m.is_dir()).unwrap_or(false) {
        // A rename cannot put a link over a directory.
        remove_any(at)?;
    }
    super::releases::swap_link(at, l.target.as_path())
}

fn restore_root(store: &Store, part: &Part, idx: usize, root: &Root) -> Result<()> {
    let path = root.path.as_path();
    if let (Some(l), true) = (&root.link, root.absent) {
        // A dangling link at capture time: there is no content to restore.
        return restore_link(l);
    }
    if root.absent {
        return remove_any(path);
    }
    restore_content(store, part, idx, root)?;
    // The content first, then the link to it: the link never points at a half-restored tree.
    match &root.link {
        Some(l) => restore_link(l),
        None => Ok(()),
    }
}

fn restore_content(store: &Store, part: &Part, idx: usize, root: &Root) -> Result<()> {
    let path = root.path.as_path();
    let now = scan_now(path)?;
    // Paths added since go first, deepest first and without following links: once a
    // link is restored, a path below it would lead somewhere else (a shared dir).
    let extra: BTreeSet<&RawPath> = now.keys().filter(|k| !root.entries.contains_key(*k)).collect();
    for rel in extra.into_iter().rev() {
        remove_any(&join(path, rel))?;
    }
    // Then parents before children (the entries are ordered by bytes: a directory
    // comes before its children).
    let mut dirs = Vec::new();
    for (rel, want) in &root.entries {
        let dest = join(path, rel);
        let got = fs::symlink_metadata(&dest).ok().and(now.get(rel));
        if got == Some(want) {
            continue;
        }
        match want {
            Entry::Dir { mode, uid, gid } => {
                if !matches!(got, Some(Entry::Dir { .. })) {
                    remove_any(&dest)?;
                    fs::create_dir_all(&dest).ctx(|| format!("cannot create {}", dest.display()))?;
                }
                chown(&dest, *uid, *gid)?;
                dirs.push((dest, *mode));
            }
            Entry::File { mode, uid, gid, .. } => {
                let name = artifact_name(idx, rel);
                let a = part.artifact(&name).ok_or_else(|| {
                    Error::new(ErrorKind::Corrupt, format!("artifact `{name}` is not in the snapshot"))
                })?;
                let src = store.check_artifact(a)?;
                if matches!(got, Some(Entry::Dir { .. })) {
                    remove_any(&dest)?;
                }
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent).ctx(|| format!("cannot create {}", parent.display()))?;
                }
                write_aside(&dest, &src, *mode, *uid, *gid)?;
            }
            Entry::Symlink { target } => {
                if matches!(got, Some(Entry::Dir { .. })) {
                    remove_any(&dest)?;
                }
                super::releases::swap_link(&dest, target.as_path())?;
            }
        }
    }
    // Directory modes last, deepest first: a read-only directory must not block
    // writing its children.
    for (dest, mode) in dirs.into_iter().rev() {
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))
            .ctx(|| format!("cannot set mode of {}", dest.display()))?;
    }
    Ok(())
}

#[async_trait]
impl Driver for FilesDriver {
    fn name(&self) -> &str {
        "files"
    }

    fn capability(&self) -> Capability {
        Capability { discard_report: true, perturb: true, idempotent_restore: true, ..Default::default() }
    }

    async fn capture(&self, ctx: &Context) -> Result<Captured> {
        let store = ctx.store.clone();
        let paths = self.paths.clone();
        let safety = ctx.safety;
        blocking(move || {
            let mut arts = Vec::new();
            let mut roots = Vec::new();
            for (i, p) in paths.iter().enumerate() {
                let (path, link) = match resolve_root(p) {
                    Ok(r) => r,
                    // The broken state a safety snapshot must still record: restoring it
                    // removes the path again, or puts back the dangling link.
                    Err(_) if safety => {
                        let link =
                            fs::read_link(p).ok().map(|t| RootLink { at: RawPath::of(p), target: RawPath::of(&t) });
                        roots.push(Root { path: RawPath::of(p), entries: BTreeMap::new(), absent: true, link });
                        continue;
                    }
                    Err(e) => return Err(e).ctx(|| format!("{} does not exist or cannot be read", p.display())),
                };
                let entries = scan(&path, Some((&store, i, &mut arts)))?;
                roots.push(Root { path: RawPath::of(&path), entries, absent: false, link });
            }
            let files: usize = roots.iter().map(|r| r.entries.len()).sum();
            Ok(Captured { state: serde_json::json!({ "roots": roots, "entries": files }), artifacts: arts })
        })
        .await
    }

    async fn restore(&self, ctx: &Context, part: &Part) -> Result<()> {
        let roots = roots_of(part)?;
        let store = ctx.store.clone();
        let part = part.clone();
        blocking(move || {
            for (i, r) in roots.iter().enumerate() {
                restore_root(&store, &part, i, r)?;
            }
            Ok(())
        })
        .await
    }

    async fn verify(&self, _ctx: &Context, part: &Part) -> Result<Drift> {
        let roots = roots_of(part)?;
        blocking(move || {
            let mut d = Vec::new();
            for r in &roots {
                match scan_now(r.path.as_path()) {
                    Ok(now) => d.extend(diff(r, &now)),
                    Err(e) => d.push(e.to_string()),
                }
            }
            Ok(Drift::from_differences(d))
        })
        .await
    }

    async fn discards(&self, ctx: &Context, part: &Part) -> Result<Vec<Discard>> {
        let roots = roots_of(part)?;
        let component = ctx.component.clone();
        blocking(move || {
            let mut out = Vec::new();
            for r in &roots {
                let now = scan_now(r.path.as_path())?;
                let special = special_files_removed(r, &now);
                if !special.is_empty() {
                    let mut shown: Vec<String> = special.iter().take(5).map(|p| p.display().to_string()).collect();
                    if special.len() > 5 {
                        shown.push(format!("and {} more", special.len() - 5));
                    }
                    out.push(Discard {
                        component: component.clone(),
                        target: format!("sockets, FIFOs or device files no snapshot can keep: {}", shown.join(", ")),
                        changes: special.len() as u64,
                        unit: "special files removed".into(),
                        kept_in_safety_snapshot: false,
                        keepable: false,
                    });
                }
                let mut n = diff(r, &now).len() as u64;
                // A directory or file where the link was is removed with everything in it.
                if let Some(l) = r.link.as_ref().filter(|l| link_drift(l).is_some()) {
                    let at = l.at.as_path();
                    if fs::symlink_metadata(at).map(|m| !m.file_type().is_symlink()).unwrap_or(false) {
                        n += count_entries(at);
                    }
                }
                if n > 0 {
                    out.push(Discard {
                        component: component.clone(),
                        target: r.link.as_ref().map(|l| &l.at).unwrap_or(&r.path).to_string(),
                        changes: n,
                        unit: "paths".into(),
                        kept_in_safety_snapshot: false,
                        keepable: true,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn preflight(&self, ctx: &Context, part: &Part) -> Result<()> {
        for r in roots_of(part)? {
            let places = std::iter::once(&r.path).chain(r.link.as_ref().map(|l| &l.at));
            for p in places {
                let parent = p.as_path().parent().unwrap_or(Path::new("/"));
                if !parent.is_dir() {
                    return Err(Error::not_found(format!("{} does not exist", parent.display())));
                }
            }
        }
        let _ = ctx;
        Ok(())
    }

    async fn perturb(&self, _ctx: &Context) -> Result<String> {
        let first = self.paths[0].clone();
        blocking(move || {
            let target = if first.is_dir() { first.join(".rollback-drill") } else { first.clone() };
            let mut f = fs::OpenOptions::new().create(true).append(true).open(&target)?;
            std::io::Write::write_all(&mut f, b"\n# rollback drill\n")?;
            Ok(format!("appended a line to {}", target.display()))
        })
        .await
    }

    fn describe_restore(&self, part: &Part) -> String {
        let n = part.state.get("entries").and_then(|v| v.as_u64()).unwrap_or(0);
        let what = if n == 1 { "1 path".to_string() } else { format!("{n} paths") };
        format!("write back {what} atomically (write aside, rename), remove paths added since")
    }

    async fn check(&self, _ctx: &Context) -> Result<String> {
        for p in &self.paths {
            fs::symlink_metadata(p).ctx(|| format!("{} does not exist", p.display()))?;
        }
        Ok(format!("{} paths present", self.paths.len()))
    }
}
