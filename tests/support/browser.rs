//! Headless Chromium (Debian `chromium`): a page left open, and screenshots.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The flags every headless run gets.
const HEADLESS: [&str; 5] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
];

/// Headless Chromium showing `url` until dropped (then killed).
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Opens `url` in a fresh profile.
    pub fn open(url: &str) -> Self {
        Self::launch(url, None)
    }

    /// Opens `url` in a fresh profile that trusts the TLS certificates whose public key is
    /// `spki_der` (a DER SubjectPublicKeyInfo), as if a known CA had issued them: a test's
    /// self-signed certificate is accepted (and HTTP/2 negotiated as with any site) while
    /// every other certificate error still fails.
    pub fn open_trusting(url: &str, spki_der: &[u8]) -> Self {
        use base64::Engine as _;
        use sha2::Digest as _;
        let pin = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(spki_der));
        // Chromium honours this flag only with a --user-data-dir, which every launch sets.
        Self::launch(
            url,
            Some(format!("--ignore-certificate-errors-spki-list={pin}")),
        )
    }

    fn launch(url: &str, flag: Option<String>) -> Self {
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new("chromium")
            .args(HEADLESS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(flag)
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts (scripts/setup installs it)");
        Self {
            child,
            _profile: profile,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Longest a screenshot run may take before the test fails.
const SCREENSHOT_DEADLINE: Duration = Duration::from_secs(60);

/// Loads `url` in a `width`×`height` window and writes a PNG screenshot of it to `path`
/// once it has loaded (`--timeout` caps the wait for a page whose streams never finish
/// loading). Blocking.
pub fn screenshot(url: &str, path: &Path, (width, height): (u32, u32)) {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = Command::new("chromium")
        .args(HEADLESS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", path.display()))
        .arg(format!("--window-size={width},{height}"))
        .arg("--timeout=5000")
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts (scripts/setup installs it)");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("chromium status") {
            break status;
        }
        if started.elapsed() > SCREENSHOT_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium --screenshot did not finish within {SCREENSHOT_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "chromium --screenshot failed: {status}");
}
