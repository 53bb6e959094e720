//! `fn mcp` end to end: the real binary, JSON-RPC over its stdin and stdout,
//! against the good fixture registry indexed into a temporary SQLite file.
//!
//! Every tool's answer is compared with what the CLI prints with `--json`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use serde_json::{Value, json};

/// How long one answer may take before the test fails (a hung server).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

fn good() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/good")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Indexes the good fixture into a fresh temp dir; returns (dir, db path).
fn good_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("registry.db");
    let out = Command::new(env!("CARGO_BIN_EXE_fn"))
        .args(["index", "--root", path(&good()), "--db", path(&db)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, db)
}

/// What `fn ARGS` prints on stdout, as JSON (it must succeed unless `check`).
fn cli_json(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_fn"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.code() == Some(0) || args[0] == "check",
        "fn {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("fn {args:?}: {e}"))
}

/// A client session with `fn mcp`: requests out, answers in (by a reader
/// thread, so a hung server fails the test instead of hanging it).
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    next_id: u64,
}

impl Session {
    /// Starts `fn mcp ARGS` and completes the MCP handshake; returns the
    /// session and the `initialize` result.
    fn start(args: &[&str]) -> (Session, Value) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fn"))
            .arg("mcp")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Session {
            stdin: child.stdin.take(),
            child,
            lines,
            next_id: 0,
        };
        let init = s.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "fn-mcp-test", "version": "1"},
            }),
        );
        s.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        (s, init)
    }

    fn send(&mut self, msg: &Value) {
        self.send_line(&msg.to_string());
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The whole JSON-RPC response to one request (`result` or `error`).
    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let line = self
                .lines
                .recv_timeout(ANSWER_TIMEOUT)
                .unwrap_or_else(|e| panic!("no answer to {method}: {e}"));
            let msg: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not JSON on stdout: {e}: {line}"));
            assert_eq!(msg["jsonrpc"], "2.0", "{msg}");
            // Notifications (no id) may come in between.
            if msg["id"] == json!(id) {
                return msg;
            }
        }
    }

    /// The `result` of a request that must succeed.
    fn result(&mut self, method: &str, params: Value) -> Value {
        let msg = self.request(method, params);
        assert!(msg.get("error").is_none(), "{method}: {msg}");
        msg["result"].clone()
    }

    /// A tool call's result (`isError` false or true).
    fn call(&mut self, tool: &str, arguments: Value) -> Value {
        self.result("tools/call", json!({"name": tool, "arguments": arguments}))
    }

    /// A successful tool call's structured answer, checked against its text.
    fn answer(&mut self, tool: &str, arguments: Value) -> Value {
        let res = self.call(tool, arguments.clone());
        assert_eq!(res["isError"], false, "{tool} {arguments}: {res}");
        let text = res["content"][0]["text"].as_str().expect("text content");
        let from_text: Value = serde_json::from_str(text).unwrap();
        assert_eq!(from_text, res["structuredContent"], "text = structured");
        from_text
    }

    /// A failed tool call's message.
    fn tool_error(&mut self, tool: &str, arguments: Value) -> String {
        let res = self.call(tool, arguments.clone());
        assert_eq!(res["isError"], true, "{tool} {arguments}: {res}");
        assert!(res.get("structuredContent").is_none(), "{res}");
        res["content"][0]["text"].as_str().unwrap().to_string()
    }

    /// Closes stdin and waits: the server must end by itself, successfully.
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        let mut stderr = self.child.stderr.take().unwrap();
        stderr.read_to_string(&mut err).unwrap();
        assert!(!err.contains("panicked"), "{err}");
        assert!(status.success(), "exit {status:?}: {err}");
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A failed assertion must not leave the server running.
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn initialize_then_list_tools_and_resources() {
    let (_dir, db) = good_db();
    let (mut s, init) = Session::start(&["--root", path(&good()), "--db", path(&db)]);
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18", "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "fn-registry");
    let caps = &init["result"]["capabilities"];
    assert!(
        caps["tools"].is_object() && caps["resources"].is_object(),
        "{caps}"
    );

    let tools = s.result("tools/list", json!({}));
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["search", "show", "deps", "check", "compose"]);
    for t in tools["tools"].as_array().unwrap() {
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
        assert!(!t["description"].as_str().unwrap().is_empty());
        assert_eq!(t["annotations"]["readOnlyHint"], true);
    }
    let search = &tools["tools"][0]["inputSchema"];
    assert_eq!(search["required"], json!(["query"]));
    for filter in [
        "kind", "lang", "domain", "tags", "purity", "tested", "limit", "fts",
    ] {
        assert!(search["properties"][filter].is_object(), "search {filter}");
    }

    let listed = s.result("resources/list", json!({}));
    let uris: Vec<(&str, &str)> = listed["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["mimeType"], "text/markdown", "{r}");
            (r["uri"].as_str().unwrap(), r["title"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        uris,
        [
            ("fn://Greeting", "Greeting_rust_core"),
            ("fn://Salutation", "Salutation_go_core"),
            ("fn://greet", "greet_rust_core"),
            ("fn://shout", "shout_rust_core"),
        ]
    );
    for (uri, file) in [
        ("fn://greet", "crates/greet/greet.md"),
        ("fn://Greeting", "types/core/Greeting.md"),
        ("fn://shout_rust_core", "crates/shout/shout.md"),
    ] {
        let read = s.result("resources/read", json!({"uri": uri}));
        let contents = &read["contents"][0];
        assert_eq!(contents["uri"], uri);
        assert_eq!(contents["mimeType"], "text/markdown");
        let want = std::fs::read_to_string(good().join(file)).unwrap();
        assert_eq!(contents["text"].as_str().unwrap(), want, "{uri}");
    }
    s.finish();
}

#[test]
fn every_tool_answers_what_the_cli_prints_with_json() {
    let (_dir, db) = good_db();
    let dbp = path(&db);
    let (mut s, _) = Session::start(&["--root", path(&good()), "--db", dbp]);

    for (args, cli) in [
        (json!({"query": "greet"}), vec!["greet"]),
        (json!({"query": "ws_send greet"}), vec!["ws_send greet"]),
        (
            json!({"query": "greet", "kind": "function", "tested": true}),
            vec!["greet", "--kind", "function", "--tested"],
        ),
        (
            json!({"query": "greet", "tags": ["loud"], "purity": "pure", "limit": 1}),
            vec!["greet", "--tag", "loud", "--purity", "pure", "--limit", "1"],
        ),
        (
            json!({"query": "salutation", "lang": "go", "domain": "core"}),
            vec!["salutation", "--lang", "go", "--domain", "core"],
        ),
        (
            json!({"query": "greet OR shout", "fts": true}),
            vec!["--fts", "greet OR shout"],
        ),
    ] {
        let mut all = vec!["search", "--json", "--db", dbp];
        all.extend(cli);
        let want = cli_json(&all);
        assert!(!want["results"].as_array().unwrap().is_empty(), "{all:?}");
        assert_eq!(s.answer("search", args), want, "{all:?}");
    }

    for name in [
        "greet",
        "shout_rust_core",
        "Greeting",
        "greeting",
        "Salutation",
    ] {
        let want = cli_json(&["show", name, "--json", "--db", dbp]);
        assert_eq!(s.answer("show", json!({"name": name})), want, "show {name}");
    }
    // `greeting` is a types-only crate: the crate view.
    assert_eq!(
        s.answer("show", json!({"name": "greeting"}))["kind"],
        "crate"
    );

    for (name, reverse, transitive) in [
        ("shout", false, false),
        ("shout", false, true),
        ("Greeting", true, false),
        ("Greeting", true, true),
    ] {
        let mut all = vec!["deps", name, "--json", "--db", dbp];
        if reverse {
            all.push("--reverse");
        }
        if transitive {
            all.push("--transitive");
        }
        let want = cli_json(&all);
        let got = s.answer(
            "deps",
            json!({"name": name, "reverse": reverse, "transitive": transitive}),
        );
        assert_eq!(got, want, "{all:?}");
    }
    // Defaults: direct dependencies.
    assert_eq!(
        s.answer("deps", json!({"name": "shout"})),
        cli_json(&["deps", "shout", "--json", "--db", dbp])
    );

    let want = cli_json(&["check", "--json", "--root", path(&good())]);
    assert_eq!(want["problems"], json!([]));
    assert_eq!(s.answer("check", json!({})), want);
    s.finish();
}

#[test]
fn check_reports_the_problems_of_a_broken_root() {
    // `check` reads the root, not the database: a broken fixture's problems
    // come back as the answer (not as a tool error), as `fn check --json` prints them.
    let (_dir, db) = good_db();
    let broken = good().join("../bad_semver");
    let (mut s, _) = Session::start(&["--root", path(&broken), "--db", path(&db)]);
    let want = cli_json(&["check", "--json", "--root", path(&broken)]);
    assert!(!want["problems"].as_array().unwrap().is_empty(), "{want}");
    assert_eq!(s.answer("check", json!({})), want);
    s.finish();
}

#[test]
fn compose_gives_lines_and_crates_in_dependency_order() {
    let (_dir, db) = good_db();
    let dbp = path(&db);
    let (mut s, _) = Session::start(&["--root", path(&good()), "--db", dbp]);

    let got = s.answer("compose", json!({"names": ["shout", "greet", "shout"]}));
    let crates: Vec<(&str, bool)> = got["crates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap(),
                c["requested"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        crates,
        [("greeting", false), ("greet", true), ("shout", true)]
    );
    assert_eq!(got["crates"][2]["uses"], json!(["greet", "greeting"]));
    assert_eq!(got["crates"][2]["version"], "0.2.0");
    let requested = got["requested"].as_array().unwrap();
    assert_eq!(requested.len(), 2, "repeats dropped: {got}");
    for (r, name) in requested.iter().zip(["shout", "greet"]) {
        assert_eq!(r["name"], name);
        assert_eq!(r["crate"], name);
        let shown = cli_json(&["show", name, "--json", "--db", dbp]);
        assert_eq!(r["id"], shown["id"]);
        assert_eq!(r["cargo"], shown["cargo"], "the lines `fn show` prints");
    }

    // A crate name works too (a types-only crate has no entry of its name).
    let got = s.answer("compose", json!({"names": ["greeting"]}));
    assert_eq!(got["requested"][0]["id"], Value::Null);
    assert_eq!(
        got["requested"][0]["cargo"],
        cli_json(&["show", "greeting", "--json", "--db", dbp])["cargo"]
    );
    assert_eq!(got["crates"].as_array().unwrap().len(), 1);

    let msg = s.tool_error("compose", json!({"names": ["shout", "nope", "zzz_top"]}));
    assert!(msg.contains("unknown nope, zzz_top"), "{msg}");
    assert!(msg.contains("no entry named `nope`"), "{msg}");
    let msg = s.tool_error("compose", json!({"names": ["Salutation"]}));
    assert!(msg.contains("go entry with no crate"), "{msg}");
    let msg = s.tool_error("compose", json!({"names": []}));
    assert!(msg.contains("`names` is empty"), "{msg}");
    s.finish();
}

#[test]
fn errors_are_answers_and_the_server_keeps_going() {
    let (_dir, db) = good_db();
    let (mut s, _) = Session::start(&["--root", path(&good()), "--db", path(&db)]);

    // An unknown tool is a JSON-RPC error naming it.
    let msg = s.request(
        "tools/call",
        json!({"name": "delete_everything", "arguments": {}}),
    );
    assert_eq!(msg["error"]["code"], -32602, "{msg}");
    let text = msg["error"]["message"].as_str().unwrap();
    assert!(text.contains("unknown tool `delete_everything`"), "{text}");

    // Bad arguments: a tool error the agent can read and fix.
    let msg = s.tool_error("search", json!({"query": 3}));
    assert!(
        msg.contains("invalid arguments for `search`: invalid type"),
        "{msg}"
    );
    let msg = s.tool_error("search", json!({}));
    assert!(msg.contains("missing field `query`"), "{msg}");
    let msg = s.tool_error("search", json!({"query": "x", "kind": "fn"}));
    assert!(msg.contains("unknown variant `fn`"), "{msg}");
    let msg = s.tool_error("deps", json!({"name": "shout", "transitve": true}));
    assert!(msg.contains("unknown field `transitve`"), "{msg}");
    let msg = s.tool_error("search", json!({"query": "x", "limit": -1}));
    assert!(msg.contains("invalid value: integer `-1`"), "{msg}");

    // Bad queries and unknown entries: the same messages as the CLI.
    let msg = s.tool_error("search", json!({"query": "NEAR(", "fts": true}));
    assert!(msg.starts_with("invalid FTS5 query"), "{msg}");
    let msg = s.tool_error("search", json!({"query": "***"}));
    assert!(msg.contains("no letters or digits"), "{msg}");
    let msg = s.tool_error("show", json!({"name": "gree"}));
    assert!(
        msg.contains("no entry named `gree`; similar: greet_rust_core"),
        "{msg}"
    );
    let msg = s.tool_error("deps", json!({"name": "nope"}));
    assert!(msg.contains("no entry named `nope`"), "{msg}");

    // Resources: an unknown entry, another scheme.
    let msg = s.request("resources/read", json!({"uri": "fn://nope"}));
    assert_eq!(msg["error"]["code"], -32002, "{msg}");
    assert!(
        msg["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no entry named `nope`")
    );
    let msg = s.request("resources/read", json!({"uri": "file:///etc/passwd"}));
    assert_eq!(msg["error"]["code"], -32602, "{msg}");

    // A line that is not JSON is dropped; the session goes on.
    s.send_line("{not json");
    let hits = s.answer("search", json!({"query": "greet"}));
    assert_eq!(hits["results"][0]["name"], "greet");
    s.finish();
}

#[test]
fn a_missing_database_says_to_run_fn_index() {
    let dir = tempfile::tempdir().unwrap();
    let none = dir.path().join("none.db");
    let (mut s, _) = Session::start(&["--root", path(&good()), "--db", path(&none)]);
    for (tool, args) in [
        ("search", json!({"query": "greet"})),
        ("show", json!({"name": "greet"})),
        ("deps", json!({"name": "greet"})),
        ("compose", json!({"names": ["greet"]})),
    ] {
        let msg = s.tool_error(tool, args);
        assert!(msg.contains("run `cargo fn index` first"), "{tool}: {msg}");
    }
    let msg = s.request("resources/list", json!({}));
    let text = msg["error"]["message"].as_str().unwrap_or_default();
    assert!(text.contains("run `cargo fn index` first"), "{msg}");
    // `check` reads the entries themselves and needs no index.
    assert_eq!(s.answer("check", json!({}))["problems"], json!([]));
    assert!(!none.exists(), "a read never creates the database");
    s.finish();
}
