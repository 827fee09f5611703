//! [`Process`]: the real `agentgate serve` binary as a child process on a generated config,
//! its stdout read line by line (the port it bound, log lines).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `agentgate serve` on a config file; killed when dropped.
pub struct Process {
    child: Child,
    /// Where it listens (the first address of its listening line).
    pub addr: SocketAddr,
    /// Every address of its listening line: `server.listen`, then `server.tls.listen`.
    pub addrs: Vec<SocketAddr>,
    /// Where its admin listener listens, when `server.admin_listen` is set.
    pub admin: Option<SocketAddr>,
    lines: mpsc::Receiver<String>,
    /// Every output line [`line_where`](Self::line_where) and
    /// [`lines_until`](Self::lines_until) have read so far.
    seen: Vec<String>,
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    /// Starts the binary on `toml` and waits for its "listening" line to learn the port.
    pub fn start(toml: &str) -> Self {
        Self::start_with_log(toml, "info")
    }

    /// [`Process::start`] with `RUST_LOG` set to `filter`.
    pub fn start_with_log(toml: &str, filter: &str) -> Self {
        Self::start_with(toml, filter, &[], &[])
    }

    /// [`Process::start`] with `RUST_LOG` set to `filter`, more `serve` arguments (such as
    /// `--upgrade`) and environment variables. `XDG_RUNTIME_DIR` defaults to the process's
    /// own temporary directory, so its runtime directory (pid file, upgrade socket) is
    /// private to the test.
    pub fn start_with(toml: &str, filter: &str, args: &[&str], env: &[(&str, &Path)]) -> Self {
        let (child, lines, config, dir) = spawn(toml, filter, args, env);
        let mut process = Self {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            addrs: Vec::new(),
            admin: None,
            lines,
            seen: Vec::new(),
            config,
            _dir: dir,
        };
        let line = process
            .line_where(|l| l.contains("agentgate listening") || l.contains("admin listener"));
        let line = if line.contains("admin listener") {
            process.admin = Some(
                listening_addr(&line)
                    .unwrap_or_else(|| panic!("no address in the admin line: {line}")),
            );
            process.line_where(|l| l.contains("agentgate listening"))
        } else {
            line
        };
        process.addr = listening_addr(&line)
            .unwrap_or_else(|| panic!("no address in the listening line: {line}"));
        process.addrs = line
            .match_indices("127.0.0.1:")
            .filter_map(|(at, _)| listening_addr(&line[at..]))
            .collect();
        process
    }

    /// Runs `serve` on `toml` expecting it to refuse to start: returns its exit status and
    /// everything it printed. Panics if it starts listening instead, or runs on for 30 s.
    pub fn refused(toml: &str, env: &[(&str, &Path)]) -> (ExitStatus, String) {
        let (mut child, lines, _config, _dir) = spawn(toml, "info", &[], env);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut output = String::new();
        loop {
            while let Ok(line) = lines.try_recv() {
                assert!(
                    !line.contains("agentgate listening"),
                    "agentgate started instead of refusing: {output}{line}"
                );
                output.push_str(&line);
                output.push('\n');
            }
            if let Some(status) = child.try_wait().expect("wait for agentgate") {
                // The reader thread ends with the pipe; take what it has left.
                while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
                    output.push_str(&line);
                    output.push('\n');
                }
                return (status, output);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("agentgate neither started nor exited within 30 s: {output}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next output line (stdout or stderr) for which `matches` holds; panics after 20 s
    /// or at exit.
    pub fn line_where(&mut self, matches: impl Fn(&str) -> bool) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(e) => panic!("no matching line from agentgate: {e}"),
            }
        }
    }
}

impl Process {
    /// Every stdout line up to and including the first for which `matches` holds, then
    /// whatever else has arrived by then; panics after 20 s or at exit.
    pub fn lines_until(&mut self, matches: impl Fn(&str) -> bool) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => {
                    let done = matches(&line);
                    self.seen.push(line.clone());
                    lines.push(line);
                    if done {
                        let rest: Vec<String> = self.lines.try_iter().collect();
                        self.seen.extend(rest.iter().cloned());
                        lines.extend(rest);
                        return lines;
                    }
                }
                Err(e) => panic!("no matching line from agentgate: {e}; got {lines:#?}"),
            }
        }
    }

    /// Replaces the config file (the running process sees it on [`hangup`](Self::hangup)).
    pub fn rewrite_config(&self, toml: &str) {
        std::fs::write(&self.config, toml).expect("rewrite config");
    }

    /// Sends SIGHUP: reload the config file.
    pub fn hangup(&self) {
        self.signal("-HUP");
    }

    /// Sends SIGQUIT: hand the listening sockets to a `serve --upgrade` successor, then
    /// drain and exit.
    pub fn quit(&self) {
        self.signal("-QUIT");
    }

    /// Waits for the process to exit; panics if it is still running after 30 s.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for agentgate") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "agentgate still runs 30 s later"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process wrote to stdout and stderr (both are read into one line
    /// channel): call after [`terminate`](Self::terminate), once the output is complete.
    pub fn output(&mut self) -> String {
        // The reader threads end at EOF, which follows the exit.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    /// Sends SIGTERM (graceful stop) and waits for the process to exit; panics if it is
    /// still running after 30 s.
    pub fn terminate(&mut self) -> ExitStatus {
        self.stop_gracefully();
        self.wait_exit()
    }

    /// Sends SIGTERM (graceful stop) without waiting.
    pub fn stop_gracefully(&self) {
        self.signal("-TERM");
    }

    fn signal(&self, which: &str) {
        let sent = Command::new("kill")
            .args([which, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {which} failed");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `agentgate serve --config <toml in a new temp dir> <args>`; its stdout and stderr
/// arrive as lines on the receiver.
fn spawn(
    toml: &str,
    filter: &str,
    args: &[&str],
    env: &[(&str, &Path)],
) -> (
    Child,
    mpsc::Receiver<String>,
    std::path::PathBuf,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("agentgate.toml");
    std::fs::write(&path, toml).expect("write config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_agentgate"));
    command
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .args(args)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", filter)
        .env("XDG_RUNTIME_DIR", dir.path());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("agentgate starts");
    // Threads keep draining both pipes, so the child never blocks on a full one; stderr is
    // echoed (it used to be inherited) and read too, for refusals printed there.
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let out = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if out.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, lines, path, dir)
}

/// The first `127.0.0.1:PORT` of the "agentgate listening" line (text or JSON logs).
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let start = line.find("127.0.0.1:")?;
    let rest = &line[start..];
    let end = rest["127.0.0.1:".len()..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(rest.len(), |i| i + "127.0.0.1:".len());
    rest[..end].parse().ok()
}
