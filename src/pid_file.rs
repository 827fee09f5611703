//! The pid file (`server.pid_file`): this process's id, for `kill -HUP $(cat PIDFILE)`.
//!
//! Created exclusively (`O_CREAT|O_EXCL`, which also refuses to follow a symbolic link)
//! with mode 0600. When the name is taken:
//!
//! - a symbolic link, something that is not a regular file, or another user's file is
//!   refused (it was not left by this gateway);
//! - a file naming a live process is refused, except by `serve --upgrade`, whose
//!   predecessor still runs and hands over to it;
//! - a file naming a process that is gone is stale: it is replaced atomically (a new file
//!   created exclusively beside it, then renamed over it).
//!
//! The file is removed when this process ends, unless a successor has written its own pid
//! there since.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::runtime_dir::current_uid;

/// This process's pid file; removed on drop unless another process (a graceful upgrade's
/// successor) has written its own pid there since.
#[derive(Debug)]
pub struct PidFile(PathBuf);

impl PidFile {
    /// Writes this process's id to `path` (see the module docs for what a taken name
    /// means). `upgrading`: this process takes over from the one named in the file.
    pub fn create(path: PathBuf, upgrading: bool) -> io::Result<Self> {
        let refuse = |why: String| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("pid file {}: {why}", path.display()),
            )
        };
        match write_new(&path) {
            Ok(()) => return Ok(Self(path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(refuse(format!("cannot create it: {e}"))),
        }
        let meta = fs::symlink_metadata(&path).map_err(|e| refuse(e.to_string()))?;
        if meta.file_type().is_symlink() {
            return Err(refuse(
                "is a symbolic link; refusing to follow it (remove it if it is yours)".to_owned(),
            ));
        }
        if !meta.file_type().is_file() {
            return Err(refuse("exists and is not a regular file".to_owned()));
        }
        let uid = current_uid();
        if meta.uid() != uid {
            return Err(refuse(format!(
                "belongs to uid {}, not to this process's user (uid {uid})",
                meta.uid()
            )));
        }
        let previous = fs::read_to_string(&path)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok());
        if let Some(pid) = previous.filter(|&pid| is_alive(pid))
            && !upgrading
        {
            return Err(refuse(format!(
                "process {pid} named in it is running (another agentgate on this port?); \
                 stop it, or upgrade with `serve --upgrade`"
            )));
        }
        // Stale (or the predecessor's, when upgrading): replace it in one step.
        let name = path.file_name().map_or_else(
            || "agentgate.pid".into(),
            |n| n.to_string_lossy().into_owned(),
        );
        let fresh = path.with_file_name(format!(".{name}.{}.new", std::process::id()));
        write_new(&fresh).map_err(|e| refuse(format!("cannot create {}: {e}", fresh.display())))?;
        fs::rename(&fresh, &path).map_err(|e| {
            let _ = fs::remove_file(&fresh);
            refuse(format!("cannot replace it: {e}"))
        })?;
        Ok(Self(path))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// Creates `path` exclusively with mode 0600 and writes this process's id to it.
fn write_new(path: &Path) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())
}

/// Whether process `pid` exists (signal 0: permission checks only, nothing is sent).
fn is_alive(pid: i32) -> bool {
    if pid <= 0 || u32::try_from(pid).is_ok_and(|p| p == std::process::id()) {
        return false; // not a process id; or ours, left by an earlier life of this pid
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(errno) => errno == nix::errno::Errno::EPERM, // alive, another user's
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.0).is_ok_and(|m| m.file_type().is_file())
            && fs::read_to_string(&self.0)
                .is_ok_and(|pid| pid.trim() == std::process::id().to_string());
        if ours {
            let _ = fs::remove_file(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn created_0600_stale_replaced_live_refused_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.pid");
        let pid = PidFile::create(path.clone(), false).expect("created");
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
        drop(pid);
        assert!(!path.exists(), "removed on drop");

        // A live process's file (pid 1 always runs) is refused, unless upgrading.
        fs::write(&path, "1\n").unwrap();
        let e = PidFile::create(path.clone(), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("process 1"), "{e}");
        let upgraded = PidFile::create(path.clone(), true).expect("upgrade replaces");
        assert_eq!(
            fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
        drop(upgraded);

        // Garbage (no live pid) is stale: replaced, 0600.
        fs::write(&path, "not a pid\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let _pid = PidFile::create(path.clone(), false).expect("stale replaced");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn symlinks_are_refused_and_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        fs::write(&target, "precious\n").unwrap();
        let path = dir.path().join("a.pid");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let e = PidFile::create(path, false).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");
    }
}
