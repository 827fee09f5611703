//! [`Process`]: the real `agentgate serve` binary as a child process on a generated config,
//! its stdout read line by line (the port it bound, log lines).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `agentgate serve` on a config file; killed when dropped.
pub struct Process {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    lines: mpsc::Receiver<String>,
    /// Every stdout line [`line_where`](Self::line_where) has read so far.
    seen: Vec<String>,
    /// Where stderr goes, when [`start_capturing`](Self::start_capturing) started it.
    stderr: Option<std::path::PathBuf>,
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
        Self::spawn(toml, filter, false)
    }

    /// [`Process::start_with_log`], keeping stderr too: [`output`](Self::output) returns
    /// everything the process wrote.
    pub fn start_capturing(toml: &str, filter: &str) -> Self {
        Self::spawn(toml, filter, true)
    }

    fn spawn(toml: &str, filter: &str, capture_stderr: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("agentgate.toml");
        std::fs::write(&path, toml).expect("write config");
        let stderr_path = capture_stderr.then(|| dir.path().join("stderr.log"));
        let stderr = match &stderr_path {
            Some(file) => Stdio::from(std::fs::File::create(file).expect("stderr file")),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentgate"))
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", filter)
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("agentgate starts");
        let stdout = child.stdout.take().expect("piped stdout");
        // A thread keeps draining stdout, so the child never blocks on a full pipe.
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut process = Self {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            lines,
            seen: Vec::new(),
            stderr: stderr_path,
            config: path,
            _dir: dir,
        };
        let line = process.line_where(|l| l.contains("agentgate listening"));
        process.addr = listening_addr(&line)
            .unwrap_or_else(|| panic!("no address in the listening line: {line}"));
        process
    }

    /// The next stdout line for which `matches` holds; panics after 20 s or at exit.
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
    /// Replaces the config file (the running process sees it on [`hangup`](Self::hangup)).
    pub fn rewrite_config(&self, toml: &str) {
        std::fs::write(&self.config, toml).expect("rewrite config");
    }

    /// Sends SIGHUP: reload the config file.
    pub fn hangup(&self) {
        self.signal("-HUP");
    }

    /// Sends SIGTERM (graceful stop) and waits for the process to exit; panics if it is
    /// still running after 30 s.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for agentgate") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "agentgate still runs 30 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process wrote to stdout, then to stderr (when captured): call after
    /// [`terminate`](Self::terminate), once the output is complete.
    pub fn output(&mut self) -> String {
        // The reader thread ends at EOF, which follows the exit.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        let mut all = self.seen.join("\n");
        if let Some(file) = &self.stderr {
            all.push('\n');
            all.push_str(&std::fs::read_to_string(file).expect("stderr file"));
        }
        all
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

/// The first `127.0.0.1:PORT` of the "agentgate listening" line (text or JSON logs).
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let start = line.find("127.0.0.1:")?;
    let rest = &line[start..];
    let end = rest["127.0.0.1:".len()..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(rest.len(), |i| i + "127.0.0.1:".len());
    rest[..end].parse().ok()
}
