//! The receiving end of a graceful upgrade: the new process takes the listening sockets
//! over the upgrade socket, which only processes of its own user can use.
//!
//! pingora's own receiver (`Fds::get_from_sock`) makes the socket mode 0666 (following a
//! symbolic link at that path) and takes sockets from whoever connects first, so any local
//! user could hand the new process listening sockets of their choosing while it waits.
//! This one binds the socket with mode 0600, refuses to replace anything at the path but a
//! stale socket of its own user, and accepts a transfer only from a peer whose
//! `SO_PEERCRED` user is its own. The wire format is pingora's (the old process still sends
//! with `Fds::send_to_sock`): one message, the bind addresses space-separated, the file
//! descriptors as `SCM_RIGHTS`.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::socket::{self, ControlMessageOwned, MsgFlags, UnixAddr, sockopt};
use nix::sys::stat::{Mode, umask};

/// How long the new process waits for the old one to send its sockets (pingora waits
/// about 6 s; a person sends the SIGQUIT by hand).
pub const RECEIVE_WAIT: Duration = Duration::from_secs(30);

/// Most listening sockets one transfer carries (pingora's limit).
const MAX_FDS: usize = 32;
/// Largest list of bind addresses (pingora's buffer).
const MAX_PAYLOAD: usize = 2048;
/// How often the waiting process looks for the old one's connection.
const POLL: Duration = Duration::from_millis(50);
/// How long a connected peer may take to send its message.
const MESSAGE_WAIT: Duration = Duration::from_secs(5);

/// Waits up to `wait` on the upgrade socket `path` for the old process's listening
/// sockets; returns them as `(bind address, fd)`. The socket file is removed afterwards.
pub fn receive(path: &Path, wait: Duration) -> io::Result<Vec<(String, RawFd)>> {
    let context =
        |e: io::Error| io::Error::new(e.kind(), format!("upgrade socket {}: {e}", path.display()));
    remove_stale(path).map_err(context)?;
    let listener = bind_private(path).map_err(context)?;
    let received = accept_own_user(&listener, wait).and_then(|peer| receive_fds(&peer));
    let _ = std::fs::remove_file(path);
    received.map_err(context)
}

/// Checks, before the old process sends, that `path` is a socket of this process's user
/// (what [`receive`] binds): a socket planted by someone else is not sent anything.
pub fn check_receiver(path: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    let uid = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_socket() || meta.uid() != uid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a socket of this user (uid {uid}); not handing the listening \
                 sockets to it",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Removes a socket of this user left at `path` by an earlier attempt; refuses anything else.
fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.file_type().is_socket() && meta.uid() == nix::unistd::geteuid().as_raw() {
        return std::fs::remove_file(path);
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "something else than a socket of this user is in the way; refusing to replace it",
    ))
}

/// Binds `path` with mode 0600. The umask is process-wide, so it is narrowed only around
/// the bind; a file another thread creates meanwhile can only come out more private.
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    let previous = umask(Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    umask(previous);
    bound
}

/// The first connection from a process of this user within `wait`; others are dropped.
fn accept_own_user(listener: &UnixListener, wait: Duration) -> io::Result<UnixStream> {
    listener.set_nonblocking(true)?;
    let uid = nix::unistd::geteuid().as_raw();
    let deadline = Instant::now() + wait;
    loop {
        match listener.accept() {
            Ok((peer, _)) => {
                let peer_uid = socket::getsockopt(&peer, sockopt::PeerCredentials)
                    .map_err(io::Error::from)?
                    .uid();
                if peer_uid == uid {
                    return Ok(peer);
                }
                tracing::warn!(
                    peer_uid,
                    "upgrade socket: refused a transfer from another user"
                );
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no listening sockets arrived within {wait:?} (send SIGQUIT to the old process)"
                        ),
                    ));
                }
                std::thread::sleep(POLL);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads the one message of a transfer: bind addresses and their descriptors.
fn receive_fds(peer: &UnixStream) -> io::Result<Vec<(String, RawFd)>> {
    peer.set_nonblocking(false)?;
    peer.set_read_timeout(Some(MESSAGE_WAIT))?;
    let mut payload = [0u8; MAX_PAYLOAD];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (bytes, fds) = {
        let mut iov = [IoSliceMut::new(&mut payload)];
        let msg = socket::recvmsg::<UnixAddr>(
            peer.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            // Not inherited by anything this process runs.
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let mut fds = Vec::new();
        for control in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(received) = control {
                fds.extend(received);
            }
        }
        (msg.bytes, fds)
    };
    let binds: Option<Vec<String>> = std::str::from_utf8(&payload[..bytes])
        .ok()
        .map(|text| text.split_ascii_whitespace().map(str::to_owned).collect());
    match binds {
        Some(binds) if binds.len() == fds.len() && !fds.is_empty() => {
            Ok(binds.into_iter().zip(fds).collect())
        }
        _ => {
            for fd in fds {
                let _ = nix::unistd::close(fd);
            }
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the transfer did not pair one bind address with each socket",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use pingora::server::Fds;

    use super::*;

    #[test]
    fn sockets_arrive_from_pingora_sender_over_a_0600_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("up.sock");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let sender = {
            let (path, addr, fd) = (path.clone(), addr.clone(), listener.as_raw_fd());
            std::thread::spawn(move || {
                while check_receiver(&path).is_err() {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let mode = std::fs::symlink_metadata(&path)
                    .unwrap()
                    .permissions()
                    .mode();
                let mut fds = Fds::new();
                fds.add(addr, fd);
                fds.send_to_sock(path.to_str().unwrap()).unwrap();
                mode & 0o777
            })
        };
        let received = receive(&path, Duration::from_secs(20)).expect("received");
        assert_eq!(sender.join().unwrap(), 0o600);
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].0, addr);
        assert!(!path.exists(), "removed after the transfer");
        let _ = nix::unistd::close(received[0].1);
    }

    #[test]
    fn anything_but_a_stale_own_socket_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("up.sock");
        std::fs::write(&path, "not a socket").unwrap();
        let e = receive(&path, Duration::from_millis(1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert!(check_receiver(&path).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
    }
}
