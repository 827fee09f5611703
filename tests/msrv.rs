//! The minimum supported Rust version (`rust-version` in the workspace's `Cargo.toml`) holds
//! for the whole build: no crate in the dependency graph, at the versions `Cargo.lock` pins,
//! declares a newer `rust-version`. (The workspace's own code is held to it by clippy's
//! `incompatible_msrv` lint, which reads the same field, in the test command's clippy run.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;

/// `1.88` / `1.88.0` as comparable numbers.
fn version(text: &str) -> (u64, u64, u64) {
    let mut parts = text.split('.').map(|p| p.parse::<u64>().expect("a number"));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[test]
fn every_dependency_builds_with_the_declared_msrv() {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--all-features",
            "--locked",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    let ours = packages
        .iter()
        .find(|p| p["name"] == env!("CARGO_PKG_NAME"))
        .and_then(|p| p["rust_version"].as_str())
        .expect("the workspace declares rust-version");
    assert_eq!(ours, env!("CARGO_PKG_RUST_VERSION"));
    let msrv = version(ours);
    let newer: Vec<String> = packages
        .iter()
        .filter_map(|p| {
            let declared = p["rust_version"].as_str()?;
            (version(declared) > msrv)
                .then(|| format!("{} {} needs {declared}", p["name"], p["version"]))
        })
        .collect();
    assert!(
        packages.len() > 100,
        "the whole graph is listed: {}",
        packages.len()
    );
    assert!(
        newer.is_empty(),
        "rust-version {ours} is not enough for: {newer:#?} (raise it in Cargo.toml, README \
         and CHANGELOG, or pin an older version)"
    );
}
