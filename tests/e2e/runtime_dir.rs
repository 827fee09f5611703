//! The pid file and the upgrade socket live in a private runtime directory, on the real
//! binary: created 0700, files 0600, and a directory or pid file another user could have
//! planted is refused. A graceful upgrade still hands the listening sockets over, through a
//! 0600 socket.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use crate::client::{Client, within};
use crate::gateway::{KEY, SECRET, blocking};
use crate::process::Process;

fn config(listen: &str, server_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "{listen}"
threads = 1
{server_extra}
[auth]
api_keys = ["{KEY}"]
stream_token_secret = "{SECRET}"
[agent]
dispatch = "none"
"#
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// `XDG_RUNTIME_DIR` for a child: a private temporary directory.
fn xdg() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

async fn create_session(addr: std::net::SocketAddr) -> StatusCode {
    let client = Client::new(addr);
    client
        .send_call(client.post("/v2/sessions").bearer(KEY).json(&json!({})))
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_dir_is_created_private_and_the_pid_file_0600() {
    let xdg = xdg();
    let mut gateway = blocking(|| {
        Process::start_with(
            &config("127.0.0.1:0", ""),
            "info",
            &[],
            &[("XDG_RUNTIME_DIR", xdg.path())],
        )
    });
    let dir = xdg.path().join("agentgate");
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    let pid_file = dir.join(format!("agentgate-{}.pid", gateway.addr.port()));
    assert_eq!(mode(&pid_file), 0o600, "{}", pid_file.display());
    assert_eq!(
        std::fs::read_to_string(&pid_file).expect("pid file").trim(),
        gateway.pid().to_string()
    );
    // Serving (so its signal handlers are in place), then a graceful stop.
    assert_eq!(create_session(gateway.addr).await, StatusCode::CREATED);
    let status = blocking(|| gateway.terminate());
    assert!(status.success(), "graceful stop: {status:?}");
    assert!(!pid_file.exists(), "removed at exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_dir_open_to_others_or_planted_is_refused() {
    let toml = config("127.0.0.1:0", "");

    // Open to everyone (as if pre-created by another user in a shared directory).
    let xdg_open = xdg();
    let open = xdg_open.path().join("agentgate");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let (status, output) =
        blocking(|| Process::refused(&toml, &[("XDG_RUNTIME_DIR", xdg_open.path())]));
    assert!(!status.success());
    assert!(
        output.contains("server.runtime_dir") && output.contains("has mode 0777"),
        "{output}"
    );
    assert_eq!(std::fs::read_dir(&open).expect("readable").count(), 0);

    // A symbolic link to a private directory of ours.
    let xdg_link = xdg();
    let target = xdg_link.path().join("elsewhere");
    std::fs::create_dir(&target).expect("mkdir");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::os::unix::fs::symlink(&target, xdg_link.path().join("agentgate")).expect("symlink");
    let (status, output) =
        blocking(|| Process::refused(&toml, &[("XDG_RUNTIME_DIR", xdg_link.path())]));
    assert!(!status.success());
    assert!(output.contains("symbolic link"), "{output}");

    // Another user's directory, private or not (only root can make one).
    let xdg_other = xdg();
    let other = xdg_other.path().join("agentgate");
    std::fs::create_dir(&other).expect("mkdir");
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    if std::os::unix::fs::chown(&other, Some(65534), Some(65534)).is_ok() {
        let (status, output) =
            blocking(|| Process::refused(&toml, &[("XDG_RUNTIME_DIR", xdg_other.path())]));
        assert!(!status.success());
        assert!(output.contains("owned by uid 65534"), "{output}");
    } else {
        eprintln!("not root: the other-owner case is covered by the unit tests' mode checks only");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pid_file_symlink_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    let pid_file = dir.path().join("gw.pid");
    std::os::unix::fs::symlink(&victim, &pid_file).expect("symlink");
    let toml = config(
        "127.0.0.1:0",
        &format!("pid_file = \"{}\"", pid_file.display()),
    );
    let xdg = xdg();
    let (status, output) = blocking(|| Process::refused(&toml, &[("XDG_RUNTIME_DIR", xdg.path())]));
    assert!(!status.success());
    assert!(
        output.contains("gw.pid") && output.contains("symbolic link"),
        "{output}"
    );
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_upgrade_hands_the_sockets_over_a_0600_socket() {
    let xdg = xdg();
    let env = [("XDG_RUNTIME_DIR", xdg.path())];
    let mut old = blocking(|| Process::start_with(&config("127.0.0.1:0", ""), "info", &[], &env));
    let addr = old.addr;
    assert_eq!(create_session(addr).await, StatusCode::CREATED);

    // The successor, on the same (now known) port, waits on the upgrade socket.
    let new_toml = config(&addr.to_string(), "");
    let new = blocking(|| Process::start_with(&new_toml, "info", &["--upgrade"], &env));
    let sock: PathBuf = xdg
        .path()
        .join("agentgate")
        .join(format!("agentgate-{}.upgrade.sock", addr.port()));
    within("the successor to bind its upgrade socket", async {
        while !sock.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(mode(&sock), 0o600, "{}", sock.display());
    let uid = std::fs::symlink_metadata(&sock).expect("socket").uid();
    assert_eq!(uid, std::fs::metadata(xdg.path()).expect("xdg").uid());

    // SIGQUIT: the old process hands over and exits; the port keeps answering, now by the
    // successor, whose pid the pid file names.
    old.quit();
    assert!(blocking(move || old.wait_exit()).success());
    assert_eq!(create_session(addr).await, StatusCode::CREATED);
    let pid_file = xdg
        .path()
        .join("agentgate")
        .join(format!("agentgate-{}.pid", addr.port()));
    assert_eq!(
        std::fs::read_to_string(&pid_file).expect("pid file").trim(),
        new.pid().to_string()
    );
    assert!(
        !sock.exists(),
        "the upgrade socket is removed after the transfer"
    );
}
