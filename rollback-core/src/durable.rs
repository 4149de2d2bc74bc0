//! Putting a file in place so that a crash at any moment leaves the old file or the
//! new one, whole, and never a file more readable than it should be. Every file the
//! library writes over another (the store's manifests, journals and records, files
//! put back by `files` and `sqlite`, pm2's dump and ecosystem file) goes through
//! [`replace`]; links and renames of whole directories sync their directory with
//! [`sync_dir`].

use std::fs::{self, File, OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{IoContext, Result};

/// Writes `dest` anew: `tmp` (on the same filesystem, usually beside `dest`) is
/// created with `mode` from its first byte, filled by `write` (which may also give
/// it an owner: a chown clears set-id bits, so it sets the mode again after one),
/// fsynced, renamed over `dest`, and the directory is fsynced so the rename
/// survives a power loss. On failure `tmp` is removed and `dest` is untouched.
pub(crate) fn replace(tmp: &Path, dest: &Path, mode: u32, write: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let r = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(tmp)
            .ctx(|| format!("cannot create {}", tmp.display()))?;
        // The umask may have narrowed what `mode` asked for.
        f.set_permissions(Permissions::from_mode(mode)).ctx(|| format!("cannot set the mode of {}", tmp.display()))?;
        write(&mut f)?;
        f.sync_all().ctx(|| format!("cannot sync {}", tmp.display()))?;
        drop(f);
        fs::rename(tmp, dest).ctx(|| format!("cannot rename {} over {}", tmp.display(), dest.display()))
    })();
    match r {
        Ok(()) => {
            sync_dir(dest);
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(tmp);
            Err(e)
        }
    }
}

/// Fsyncs the directory that holds `p`, so that a rename or link made in it is on
/// disk. Best effort: some filesystems refuse to sync a directory, and the data
/// itself was synced before.
pub(crate) fn sync_dir(p: &Path) {
    if let Some(d) = p.parent() {
        let d = if d.as_os_str().is_empty() { Path::new(".") } else { d };
        if let Ok(f) = File::open(d) {
            let _ = f.sync_all();
        }
    }
}

/// [`replace`] with `bytes`.
pub(crate) fn replace_with_bytes(tmp: &Path, dest: &Path, mode: u32, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    replace(tmp, dest, mode, |f| f.write_all(bytes).ctx(|| format!("cannot write {}", tmp.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_replaced_file_has_its_mode_from_the_first_byte_and_a_failed_write_leaves_the_old_one() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("secret.json");
        fs::write(&dest, "old").unwrap();
        let tmp = d.path().join(".secret.json.tmp");
        replace(&tmp, &dest, 0o600, |f| {
            // Seen while it is written: never wider than asked.
            assert_eq!(f.metadata().unwrap().mode() & 0o777, 0o600);
            use std::io::Write;
            f.write_all(b"new").map_err(crate::Error::from)
        })
        .unwrap();
        assert_eq!(fs::read_to_string(&dest).unwrap(), "new");
        assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o777, 0o600);
        assert!(!tmp.exists());

        let r = replace(&tmp, &dest, 0o644, |_| Err(crate::Error::unexpected("disk full")));
        assert!(r.is_err());
        assert_eq!(fs::read_to_string(&dest).unwrap(), "new", "a failed write changes nothing");
        assert!(!tmp.exists(), "and leaves nothing beside it");
    }
}
