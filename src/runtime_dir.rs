//! The gateway's private runtime directory (`server.runtime_dir`), home of the pid file and
//! the graceful-upgrade socket.
//!
//! Fixed names in a shared directory such as `/tmp` let another local user pre-create the
//! pid file (or a symbolic link in its place) or the upgrade socket, and so make the gateway
//! overwrite a file of their choosing or hand its listening sockets to them. The default
//! directory is per user (`$XDG_RUNTIME_DIR/agentgate`, else `<temp dir>/agentgate-<uid>`),
//! created with mode 0700; an existing one is used only when it is a real directory (not a
//! symbolic link) owned by this process's user with no access for group or others, inside
//! a directory that others cannot rename it out of. Anything else is refused with the reason
//! and the fix.
//!
//! A pid file or upgrade socket configured elsewhere is checked with [`check_file_dir`]: its
//! directory must belong to this user or root and not be writable by group or others.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// Permission bits of group and others.
const GROUP_OTHER: u32 = 0o077;
/// Write permission of group and others.
const GROUP_OTHER_WRITE: u32 = 0o022;
/// The sticky bit: only an entry's owner may rename or remove it.
const STICKY: u32 = 0o1000;

/// The effective user id of this process (the owner of everything it creates).
pub fn current_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Creates `path` with mode 0700 if it is missing (its parent must exist), then checks
/// it: a directory, not a symbolic link, owned by this process's user, no permission bits
/// for group or others, and its parent either not writable by others or sticky.
pub fn prepare(path: &Path) -> io::Result<()> {
    let refuse = |why: String| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("server.runtime_dir {}: {why}", path.display()),
        )
    };
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(refuse(format!("cannot create it: {e}"))),
    }
    let meta = fs::symlink_metadata(path).map_err(|e| refuse(e.to_string()))?;
    let uid = current_uid();
    if meta.file_type().is_symlink() {
        return Err(refuse(
            "is a symbolic link; refusing to follow it (another user may have planted it)"
                .to_owned(),
        ));
    }
    if !meta.is_dir() {
        return Err(refuse("exists and is not a directory".to_owned()));
    }
    if meta.uid() != uid {
        return Err(refuse(format!(
            "is owned by uid {}, not by this process's user (uid {uid}); remove it or \
             choose another server.runtime_dir",
            meta.uid()
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & GROUP_OTHER != 0 {
        return Err(refuse(format!(
            "has mode {mode:04o}: group or others have access; it must be private \
             (chmod 700 it, or remove it and let the gateway create it)"
        )));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let parent_mode = fs::metadata(parent)
            .map_err(|e| refuse(format!("its parent: {e}")))?
            .permissions()
            .mode();
        if parent_mode & GROUP_OTHER_WRITE != 0 && parent_mode & STICKY == 0 {
            return Err(refuse(format!(
                "its parent {} is writable by other users and not sticky (mode {:04o}): \
                 they could move this directory away and put theirs in its place",
                parent.display(),
                parent_mode & 0o7777
            )));
        }
    }
    Ok(())
}

/// Checks the directory of a pid file or upgrade socket configured outside the runtime
/// directory (`key` names the setting): it must belong to this user or root and not be
/// writable by group or others, or another user could plant the file first.
pub fn check_file_dir(key: &str, file: &Path) -> io::Result<()> {
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let meta = fs::metadata(dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{key} {}: its directory: {e}", file.display()),
        )
    })?;
    let uid = current_uid();
    let mode = meta.permissions().mode() & 0o7777;
    if (meta.uid() != uid && meta.uid() != 0) || mode & GROUP_OTHER_WRITE != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{key} {}: its directory {} (uid {}, mode {mode:04o}) can be written by \
                 other users, who could plant the file first; use a directory of this \
                 user (uid {uid}) that only it can write, or leave {key} unset for the \
                 private server.runtime_dir",
                file.display(),
                dir.display(),
                meta.uid()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_private_and_reused() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("run");
        prepare(&dir).expect("created");
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        prepare(&dir).expect("reused");
    }

    #[test]
    fn open_modes_symlinks_and_files_are_refused() {
        let base = tempfile::tempdir().unwrap();
        let open = base.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare(&open).unwrap_err().to_string();
        assert!(e.contains("has mode 0777"), "{e}");

        let link = base.path().join("link");
        let private = base.path().join("private");
        fs::create_dir(&private).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&private, &link).unwrap();
        let e = prepare(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");

        let file = base.path().join("file");
        fs::write(&file, "").unwrap();
        let e = prepare(&file).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
    }

    #[test]
    fn file_dirs_writable_by_others_are_refused() {
        let base = tempfile::tempdir().unwrap();
        check_file_dir("server.pid_file", &base.path().join("a.pid")).expect("private dir");
        fs::set_permissions(base.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        let e = check_file_dir("server.pid_file", &base.path().join("a.pid"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("server.pid_file") && e.contains("mode 1777"),
            "{e}"
        );
    }
}
