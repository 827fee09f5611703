//! The `agentgate` binary's `check-config` command, and `serve`'s refusal of a file that
//! does not check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn check(contents: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, contents).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agentgate"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn reference_config_is_ok() {
    let (ok, stdout, _) = check(agentgate_config::REFERENCE_TOML);
    assert!(ok);
    assert!(stdout.trim_end().ends_with(": OK"), "{stdout}");
}

#[test]
fn errors_are_listed_with_line_and_column_and_fail() {
    let (ok, _, stderr) = check(
        "[server]\nlisen = \"x\"\n[auth]\napi_keys = [\"0123456789abcdef\"]\nstream_token_secret = \"short\"\n",
    );
    assert!(!ok);
    assert!(stderr.contains("gw.toml:2:1: server.lisen"), "{stderr}");

    let (ok, _, stderr) = check(
        "[auth]\napi_keys = [\"0123456789abcdef\"]\nstream_token_secret = \"short\"\n[sse]\nheartbeat_secs = 0\n",
    );
    assert!(!ok);
    assert!(
        stderr.contains("gw.toml:3:23: auth.stream_token_secret"),
        "{stderr}"
    );
    assert!(
        stderr.contains("gw.toml:5:18: sse.heartbeat_secs"),
        "{stderr}"
    );
    assert!(stderr.contains("2 error(s)"), "{stderr}");
}

#[test]
fn a_non_loopback_admin_listener_needs_an_admin_token() {
    const AUTH: &str = "[auth]\napi_keys = [\"0123456789abcdef\"]\nstream_token_secret = \"0123456789abcdef0123456789abcdef\"\n";
    let open = format!("[server]\nadmin_listen = \"0.0.0.0:9901\"\n{AUTH}");
    let (ok, _, stderr) = check(&open);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("server.admin_tokens")
            && stderr.contains("0.0.0.0:9901")
            && stderr.contains("not a loopback address"),
        "{stderr}"
    );
    // `serve` refuses the same file before binding anything.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, &open).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agentgate"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server.admin_tokens"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let guarded = format!(
        "[server]\nadmin_listen = \"0.0.0.0:9901\"\nadmin_tokens = [\"admin-token-0123456789\"]\n{AUTH}"
    );
    let (ok, stdout, stderr) = check(&guarded);
    assert!(ok, "{stderr}");
    assert!(stdout.trim_end().ends_with(": OK"), "{stdout}");

    // Short tokens and bad host names are named.
    let bad = format!("[server]\nadmin_hosts = [\"gw:9901\"]\nadmin_tokens = [\"short\"]\n{AUTH}");
    let (ok, _, stderr) = check(&bad);
    assert!(!ok);
    assert!(stderr.contains("server.admin_hosts[0]"), "{stderr}");
    assert!(
        stderr.contains("server.admin_tokens[0]") && !stderr.contains("\"short\""),
        "{stderr}"
    );
}

/// The reference file listening on every interface instead of loopback.
fn reference_on_all_interfaces() -> String {
    let src = agentgate_config::REFERENCE_TOML.replace(
        "\nlisten = [\"127.0.0.1:8080\"]\n",
        "\nlisten = [\"0.0.0.0:0\"]\n",
    );
    assert_ne!(
        src,
        agentgate_config::REFERENCE_TOML,
        "listen line not found"
    );
    src
}

#[test]
fn published_credentials_are_refused_off_loopback() {
    let (ok, _, stderr) = check(&reference_on_all_interfaces());
    assert!(
        !ok,
        "check-config accepted published credentials on 0.0.0.0"
    );
    for key in ["auth.api_keys[0]", "auth.stream_token_secret"] {
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!(": {key}: ")))
            .unwrap_or_else(|| panic!("{key} not reported: {stderr}"));
        assert!(line.contains("published"), "{line}");
        assert!(line.contains("openssl rand"), "{line}");
    }
    assert!(
        !stderr.contains("change-me"),
        "a value was echoed: {stderr}"
    );
}

#[test]
fn published_credentials_on_loopback_are_a_warning() {
    let (ok, stdout, stderr) = check(agentgate_config::REFERENCE_TOML);
    assert!(ok, "{stderr}");
    assert!(stdout.trim_end().ends_with(": OK"), "{stdout}");
    assert!(
        stderr.contains("warning: auth.api_keys[0] is an example value published"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: auth.stream_token_secret"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_published_credentials_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    // No admin listener: nothing else binds before the refusal.
    let src = reference_on_all_interfaces().replace("\nadmin_listen = ", "\n# admin_listen = ");
    std::fs::write(&path, src).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A gateway that starts serving never exits by itself: stop it and fail.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(!stdout.contains("agentgate listening"), "{stdout}");
    assert!(
        stderr.contains("auth.api_keys[0]") && stderr.contains("openssl rand"),
        "{stderr}"
    );
}

#[test]
fn check_config_takes_the_file_as_serve_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, agentgate_config::REFERENCE_TOML).unwrap();
    for args in [&["--config"][..], &["-c"][..], &[][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_agentgate"))
            .arg("check-config")
            .args(args)
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(stdout.trim_end().ends_with(": OK"), "{args:?}: {stdout}");
    }
    // One file, named one way.
    let out = Command::new(env!("CARGO_BIN_EXE_agentgate"))
        .arg("check-config")
        .arg(&path)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
