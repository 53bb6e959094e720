//! The servers `ws-bench` runs against: rt-server, and with `--peers` the
//! peer hubs of `tools/ws_peers/` (Node `ws`, uWebSockets.js, Go gorilla).

use std::process::{Command, Stdio};

use bench_support::server::Spec;

use crate::args::Args;

/// The servers of the run: rt-server (unless `--no-server`), then with
/// `--peers` the peer hubs installed by `tools/ws_peers/install.sh`.
pub(crate) fn targets(a: &Args) -> Result<Vec<Spec>, String> {
    let mut out = Vec::new();
    if !a.no_server {
        let path = a.server.rt_server();
        if path.exists() {
            // What a benchmark measures is not a limit: open them by name.
            out.push(Spec::rt_server(
                path,
                &a.server.server_cores,
                a.server.server_threads,
                &[
                    "--quiet",
                    "--allow-any-origin",
                    "--message-rate",
                    "0",
                    "--insecure-bearer-names",
                ],
            ));
        } else if a.peers {
            println!(
                "ws-bench: {} not found, running the peers only (build it with `cargo build --release -p rt_server`)",
                path.display()
            );
        } else {
            return Err(format!(
                "{} not found; run `cargo build --release -p rt_server -p ws_bench` first",
                path.display()
            ));
        }
    }
    if a.peers {
        let modules = &a.node_modules;
        for (pkg, _) in [("ws", ()), ("@trufflesuite/uws-js-unofficial", ())] {
            if !modules.join(pkg).join("package.json").exists() {
                return Err(format!(
                    "{pkg} is not installed in {}; run tools/ws_peers/install.sh",
                    modules.display()
                ));
            }
        }
        // The same check the hubs make: exact versions and uWebSockets.js's native module.
        let check = a.peers_dir.join("check.js");
        let status = Command::new(&a.node)
            .arg(&check)
            .env("NODE_PATH", modules)
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run {} {}: {e}", a.node.display(), check.display()))?;
        if !status.success() {
            return Err(format!(
                "the peer check failed ({} {}); see above, or rerun tools/ws_peers/install.sh",
                a.node.display(),
                check.display()
            ));
        }
        for (name, script) in [("node-ws", "ws_hub.js"), ("uWS.js", "uws_hub.js")] {
            out.push(Spec {
                name,
                program: a.node.clone(),
                args: vec![
                    a.peers_dir.join(script).display().to_string(),
                    "--port".into(),
                    "0".into(),
                ],
                env: vec![("NODE_PATH".into(), modules.clone())],
                cores: a.server.server_cores.clone(),
            });
        }
        // The Go peer, when install.sh could build it (Go and gorilla's source installed).
        let gorilla = modules
            .parent()
            .map(|d| d.join("gorilla_hub"))
            .filter(|p| p.exists());
        match gorilla {
            Some(program) => out.push(Spec {
                name: "gorilla",
                program,
                args: vec!["--port".into(), "0".into()],
                env: vec![],
                cores: a.server.server_cores.clone(),
            }),
            None => println!(
                "ws-bench: no gorilla_hub beside {}: the Go peer is skipped (tools/ws_peers/install.sh builds it when golang-go and golang-github-gorilla-websocket-dev are installed)",
                modules.display()
            ),
        }
    }
    Ok(out)
}
