//! `files`: a config directory (nested files, a 0600 secret, a relative link) and a
//! configured path that is itself a link into a shared directory; a deploy rewrites
//! a file, adds one, and puts a real file where the link was.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rollback_core::testkit::{async_trait, tree_digest, unique, Fixture, Trial};
use rollback_core::{ComponentConfig, Result};

const KNOWN_FAILURES: &[(Trial, &str)] = &[];

struct Files;

#[async_trait]
impl Fixture for Files {
    fn driver(&self) -> &str {
        "files"
    }

    async fn component(&self, name: &str, dir: &Path) -> Result<ComponentConfig> {
        let root = dir.join(name);
        tokio::fs::create_dir_all(root.join("config/profiles")).await?;
        tokio::fs::create_dir_all(root.join("shared")).await?;
        tokio::fs::write(root.join("config/app.json"), "{\"algo\": \"v1\"}\n").await?;
        tokio::fs::write(root.join("config/profiles/prod.json"), "{\"risk\": 1}\n").await?;
        tokio::fs::write(root.join("config/secret.env"), "TOKEN=x\n").await?;
        tokio::fs::set_permissions(root.join("config/secret.env"), std::fs::Permissions::from_mode(0o600)).await?;
        tokio::fs::symlink("profiles/prod.json", root.join("config/active.json")).await?;
        tokio::fs::write(root.join("shared/site.conf"), "upstream blue;\n").await?;
        tokio::fs::symlink("shared/site.conf", root.join("site.conf")).await?;
        let paths = vec![root.join("config").display().to_string(), root.join("site.conf").display().to_string()];
        Ok(ComponentConfig::new(name, "files").option("paths", paths))
    }

    async fn mutate(&self, name: &str, dir: &Path) -> Result<()> {
        let root = dir.join(name);
        tokio::fs::write(root.join("config/app.json"), format!("{{\"algo\": \"{}\"}}\n", unique("v")).as_bytes())
            .await?;
        tokio::fs::write(root.join(format!("config/profiles/{}.json", unique("new"))), "{}\n").await?;
        // The configured link replaced by a real file, as a deploy that copies does.
        tokio::fs::remove_file(root.join("site.conf")).await?;
        tokio::fs::write(root.join("site.conf"), unique("upstream green")).await?;
        Ok(())
    }

    async fn digest(&self, name: &str, dir: &Path) -> Result<String> {
        tree_digest(&dir.join(name)).await
    }

    async fn cleanup(&self, _name: &str, _dir: &Path) {}
}

rollback_core::behavior_tests!(Files, KNOWN_FAILURES);

/// Generated trees: nested directories, files of random bytes and odd names (some not
/// UTF-8), modes, links (relative, absolute, dangling), FIFOs and sockets; sometimes
/// the configured path is itself a link. Mutations rewrite, delete, add, chmod,
/// retarget, swap files and directories, and drop sockets into new directories.
mod property {
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use rollback_core::testkit::{async_trait, run_property, Cases, Gen, Generator, Inventory};
    use rollback_core::{ComponentConfig, Result};
    use sha2::{Digest, Sha256};

    struct FileTrees;

    fn file_name(g: &mut Gen) -> OsString {
        if g.chance(8) {
            // Linux names need not be UTF-8.
            let mut b = g.ident(6).into_bytes();
            b.extend_from_slice(&[0xff, 0xfe]);
            OsString::from_vec(b)
        } else {
            OsString::from(g.name(24))
        }
    }

    fn special(g: &mut Gen, at: &Path) -> std::io::Result<()> {
        if g.chance(50) {
            let st = std::process::Command::new("mkfifo").arg(at).status()?;
            if !st.success() {
                return Err(std::io::Error::other("mkfifo failed"));
            }
        } else {
            // The socket file stays after the listener is gone, as a crashed
            // service's does.
            std::os::unix::net::UnixListener::bind(at)?;
        }
        Ok(())
    }

    /// Fills `dir` with up to `n` random entries, `depth` levels down.
    fn fill(g: &mut Gen, dir: &Path, n: usize, depth: usize) -> std::io::Result<()> {
        for _ in 0..n {
            let p = dir.join(file_name(g));
            if std::fs::symlink_metadata(&p).is_ok() {
                continue;
            }
            match g.below(100) {
                0..=54 => {
                    let content = if g.chance(50) { g.text(200).into_bytes() } else { g.bytes(4096) };
                    std::fs::write(&p, content)?;
                    let mode = *g.pick(&[0o644, 0o600, 0o755, 0o444, 0o640]);
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
                }
                55..=74 if depth > 0 => {
                    std::fs::create_dir(&p)?;
                    let n = 1 + g.below(4);
                    fill(g, &p, n, depth - 1)?;
                    let mode = *g.pick(&[0o755, 0o700, 0o750]);
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
                }
                55..=89 => {
                    let target = match g.below(4) {
                        0 => PathBuf::from("/etc/hostname"),
                        1 => PathBuf::from("../elsewhere"),
                        2 => PathBuf::from(g.name(12)),
                        _ => PathBuf::from("does/not/exist"),
                    };
                    std::os::unix::fs::symlink(target, &p)?;
                }
                _ => special(g, &p)?,
            }
        }
        Ok(())
    }

    /// Every entry under `root`, walked without following links.
    fn entries(root: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(p) = stack.pop() {
            let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
            if m.is_dir() {
                for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                    stack.push(e.path());
                }
            }
            out.push((p, m));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn is_special(m: &std::fs::Metadata) -> bool {
        !(m.is_file() || m.is_dir() || m.file_type().is_symlink())
    }

    #[async_trait]
    impl Generator for FileTrees {
        fn driver(&self) -> &str {
            "files"
        }

        async fn component(&self, g: &mut Gen, name: &str, dir: &Path) -> Result<ComponentConfig> {
            let root = dir.join(name);
            std::fs::create_dir(&root)?;
            let n = 2 + g.below(8);
            fill(g, &root, n, 2)?;
            // Something to change, always.
            std::fs::write(root.join("app.conf"), g.text(64))?;
            let configured = if g.chance(20) {
                // The configured path is a link to the real directory.
                let link = dir.join(format!("{name}-link"));
                std::os::unix::fs::symlink(&root, &link)?;
                link
            } else {
                root
            };
            Ok(ComponentConfig::new(name, "files").option("paths", vec![configured.display().to_string()]))
        }

        async fn mutate(&self, g: &mut Gen, name: &str, dir: &Path) -> Result<()> {
            let root = dir.join(name);
            let all: Vec<(PathBuf, std::fs::Metadata)> =
                entries(&root).into_iter().filter(|(p, m)| p != &root && !is_special(m)).collect();
            let pick = |g: &mut Gen| all.get(g.below(all.len())).map(|(p, m)| (p.clone(), m.clone()));
            for _ in 0..1 + g.below(4) {
                match g.below(8) {
                    0 => {
                        if let Some((p, _)) = pick(g).filter(|(_, m)| m.is_file()) {
                            // An earlier change may have replaced it.
                            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
                                std::fs::write(&p, g.bytes(512))?;
                            }
                        }
                    }
                    1 => {
                        if let Some((p, m)) = pick(g) {
                            if m.is_dir() {
                                let _ = std::fs::remove_dir_all(&p);
                            } else {
                                let _ = std::fs::remove_file(&p);
                            }
                        }
                    }
                    2 => {
                        if let Some((p, _)) =
                            pick(g).filter(|(p, _)| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
                        {
                            let mode = *g.pick(&[0o600, 0o755, 0o444, 0o604]);
                            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
                        }
                    }
                    3 => {
                        // A file turned into a directory, or the other way round.
                        if let Some((p, m)) = pick(g).filter(|(p, m)| {
                            std::fs::symlink_metadata(p).is_ok_and(|now| now.file_type() == m.file_type())
                        }) {
                            if m.is_dir() {
                                std::fs::remove_dir_all(&p)?;
                                std::fs::write(&p, g.text(32))?;
                            } else {
                                std::fs::remove_file(&p)?;
                                std::fs::create_dir(&p)?;
                                std::fs::write(p.join("inside"), g.text(32))?;
                            }
                        }
                    }
                    4 => {
                        if let Some((p, _)) = pick(g)
                            .filter(|(p, _)| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()))
                        {
                            std::fs::remove_file(&p)?;
                            std::os::unix::fs::symlink(g.name(10), &p)?;
                        }
                    }
                    5 => {
                        // A service's runtime directory: a socket or FIFO in a new dir.
                        let d = root.join(format!("run-{}", g.ident(6)));
                        if std::fs::symlink_metadata(&d).is_err() {
                            std::fs::create_dir(&d)?;
                            special(g, &d.join("app.sock"))?;
                        }
                    }
                    _ => {
                        let base = pick(g)
                            .filter(|(p, _)| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()))
                            .map(|(p, _)| p)
                            .unwrap_or(root.clone());
                        let n = 1 + g.below(3);
                        fill(g, &base, n, 1)?;
                    }
                }
            }
            // Always at least one change a snapshot holds.
            let conf = root.join("app.conf");
            if std::fs::symlink_metadata(&conf).is_ok_and(|m| m.is_dir()) {
                std::fs::remove_dir_all(&conf)?;
            }
            std::fs::write(conf, format!("{}{}", g.text(64), g.u64()))?;
            Ok(())
        }

        /// Names, kinds, modes, link targets and contents, in name order; sockets and
        /// FIFOs left out (no snapshot holds them: `lost` accounts for them).
        async fn digest(&self, name: &str, dir: &Path) -> Result<String> {
            let root = dir.join(name);
            let mut h = Sha256::new();
            for (p, m) in entries(&root) {
                if is_special(&m) {
                    continue;
                }
                h.update(p.strip_prefix(&root).unwrap_or(&p).as_os_str().as_bytes());
                h.update([0]);
                h.update((m.permissions().mode() & 0o7777).to_le_bytes());
                if m.file_type().is_symlink() {
                    h.update(b"L");
                    h.update(std::fs::read_link(&p)?.as_os_str().as_bytes());
                } else if m.is_dir() {
                    h.update(b"D");
                } else {
                    h.update(b"F");
                    h.update(Sha256::digest(std::fs::read(&p)?));
                }
                h.update([0xff]);
            }
            let link = dir.join(format!("{name}-link"));
            if let Ok(t) = std::fs::read_link(&link) {
                h.update(t.as_os_str().as_bytes());
            }
            Ok(hex::encode(h.finalize()))
        }

        async fn cleanup(&self, _name: &str, _dir: &Path) {}

        /// The sockets and FIFOs: no snapshot holds them. Keyed as the record shows a
        /// path; the value is the path's bytes (a name need not be UTF-8).
        async fn inventory(&self, name: &str, dir: &Path) -> Result<Inventory> {
            Ok(entries(&dir.join(name))
                .into_iter()
                .filter(|(_, m)| is_special(m))
                .map(|(p, _)| (p.display().to_string(), hex::encode(p.as_os_str().as_bytes())))
                .collect())
        }

        async fn lost(&self, _name: &str, _dir: &Path, before: &Inventory) -> Result<Vec<String>> {
            let gone = |bytes: &String| {
                let p = PathBuf::from(OsString::from_vec(hex::decode(bytes).unwrap_or_default()));
                std::fs::symlink_metadata(p).is_err()
            };
            Ok(before.iter().filter(|(_, b)| gone(b)).map(|(shown, _)| shown.clone()).collect())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn generated_trees_round_trip_and_lose_nothing_unnamed() {
        run_property(&FileTrees, &Cases::from_env(24)).await.assert_passed();
    }
}
