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
    sh_blocks(markdown, |block| {
        block.contains("curl") && block.contains("localhost:8080")
    })
}

/// The fenced ```sh blocks of `markdown` (indented ones too) for which `wanted` holds.
fn sh_blocks(markdown: &str, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim() == "```sh" => current = Some(String::new()),
            Some(block) if line.trim() == "```" => {
                if wanted(block) {
                    blocks.push(std::mem::take(block));
                }
                current = None;
            }
            Some(block) => {
                block.push_str(line.trim_start());
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

#[test]
fn the_readme_tls_example_runs_as_written() {
    let [make_cert] = &sh_blocks(README, |b| b.contains("openssl req"))[..] else {
        panic!("one README block makes the certificate");
    };
    let [call] = &sh_blocks(README, |b| b.contains("https://localhost:8443"))[..] else {
        panic!("one README block calls the TLS listener");
    };
    let dir = tempfile::tempdir().expect("dir");
    let in_dir = |script: &str| bash(&format!("cd {:?}\n{script}", dir.path()), &[]);
    let (ok, output) = in_dir(make_cert);
    assert!(ok, "{make_cert}\n--- output:\n{output}");
    // The reference config with its [server.tls] uncommented as the README says (port 0).
    let toml = config().replace(
        "\n# [server.tls]\n# listen = [\"0.0.0.0:8443\"]\n# [[server.tls.certificates]]\n",
        &format!(
            "\n[server.tls]\nlisten = [\"127.0.0.1:0\"]\n[[server.tls.certificates]]\n\
             chain = {:?}\nkey = {:?}\n# ",
            dir.path().join("cert.pem"),
            dir.path().join("key.pem")
        ),
    );
    assert!(
        toml.contains("\n[server.tls]\n"),
        "the reference config has [server.tls]"
    );
    let gateway = Process::start(&toml);
    let tls = gateway.addrs[1];
    let (ok, output) =
        in_dir(&call.replace("localhost:8443", &format!("localhost:{}", tls.port())));
    assert!(ok, "{call}\n--- output:\n{output}");
    assert!(output.contains("\"status\":\"ok\""), "{output}");
}
