//! The README's shell examples that talk to a running gateway, run as written: each `sh`
//! block that calls `curl … localhost:8080` runs in `bash -eu` against the real binary (the
//! reference configuration with `dispatch = "none"`, on port 0), with `$ID` a fresh session
//! of the README's key. `curl` is wrapped with `--fail-with-body`, so an example the gateway
//! refuses (a 415, a 400...) fails the test with the gateway's answer.

use std::process::Command;

use super::process::Process;

const README: &str = include_str!("../../README.md");

/// The fenced ```sh blocks of `markdown` that call the gateway on localhost:8080.
fn gateway_examples(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_end() == "```sh" => current = Some(String::new()),
            Some(block) if line.trim_end() == "```" => {
                if block.contains("curl") && block.contains("localhost:8080") {
                    blocks.push(std::mem::take(block));
                }
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// The reference configuration serving on a free loopback port, driven by the test.
fn config() -> String {
    let toml = agentgate_config::REFERENCE_TOML
        .replace(
            "\nlisten = [\"127.0.0.1:8080\"]\n",
            "\nlisten = [\"127.0.0.1:0\"]\n",
        )
        .replace("\nadmin_listen = ", "\n# admin_listen = ")
        .replace("\ndispatch = \"demo\"\n", "\ndispatch = \"none\"\n");
    assert!(toml.contains("127.0.0.1:0") && toml.contains("dispatch = \"none\""));
    toml
}

fn bash(script: &str, env: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new("bash");
    command.arg("-euc").arg(script);
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_readme_curl_example_runs_as_written() {
    let examples = gateway_examples(README);
    // The agent-driven block (events, complete, state, metrics) and the tools block.
    assert!(
        examples.len() >= 2,
        "README examples not found: {examples:#?}"
    );
    let gateway = Process::start(&config());
    let base = format!("{}", gateway.addr);
    let key = "Authorization: Bearer dev-api-key-change-me";
    let prelude = "curl() { command curl --fail-with-body \"$@\"; }\n";
    for example in examples {
        // A session of its own per example, made the way the README's quick start makes one.
        let (ok, created) = bash(
            &format!("{prelude}curl -s -X POST {base}/v2/sessions -H \"$KEY\""),
            &[("KEY", key)],
        );
        assert!(ok, "creating a session: {created}");
        let created: serde_json::Value = serde_json::from_str(&created).expect("JSON");
        let id = created["id"].as_str().expect("session id");
        let script = example.replace("localhost:8080", &base);
        let (ok, output) = bash(&format!("{prelude}{script}"), &[("ID", id), ("KEY", key)]);
        assert!(
            ok,
            "README example failed:\n{example}\n--- output:\n{output}"
        );
        assert!(
            !output.contains("\"error\""),
            "{example}\n--- output:\n{output}"
        );
    }
}
