//! `fn serve` end to end: the real binary on `127.0.0.1:0` over a temp copy of
//! the `good` fixture, asked with plain HTTP/1.1 over a `TcpStream`, and
//! compared with what the CLI prints for the same database.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

mod common;
use common::{copy_dir, fixture};

/// A running `fn serve` over its own copy of the fixture; killed when dropped.
struct Server {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&fixture(), dir.path());
        let mut child = Command::new(env!("CARGO_BIN_EXE_fn"))
            .args(["serve", "--addr", "127.0.0.1:0", "--root"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("fn serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("fn serve listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        Server { child, addr, dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn db(&self) -> PathBuf {
        self.root().join("registry/registry.db")
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// `GET path`: status, headers (lowercase names) and body.
    fn get(&self, path: &str) -> (u16, String, String) {
        let mut s = self.connect();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_lowercase(), body.to_string())
    }

    fn get_json(&self, path: &str) -> (u16, Value) {
        let (status, head, body) = self.get(path);
        assert!(head.contains("content-type: application/json"), "{head}");
        (status, serde_json::from_str(&body).unwrap())
    }

    /// The CLI's `--json` answer for the same database.
    fn cli_json(&self, args: &[&str]) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_fn"))
            .args(args)
            .arg("--json")
            .arg("--db")
            .arg(self.db())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn search_answers_what_fn_search_json_prints() {
    let s = Server::start();
    for (path, args) in [
        ("/api/search?q=greet", vec!["search", "greet"]),
        (
            "/api/search?q=greet&kind=function",
            vec!["search", "greet", "--kind", "function"],
        ),
        (
            "/api/search?q=greeting&tag=loud&tested=",
            vec!["search", "greeting", "--tag", "loud"],
        ),
        (
            "/api/search?q=gre*%20OR%20capitals&fts=1&limit=1",
            vec!["search", "gre* OR capitals", "--fts", "--limit", "1"],
        ),
    ] {
        let (status, api) = s.get_json(path);
        assert_eq!(status, 200, "{path}: {api}");
        assert!(!api["results"].as_array().unwrap().is_empty(), "{path}");
        assert_eq!(api, s.cli_json(&args), "{path}");
    }
}

#[test]
fn entries_answer_what_fn_show_json_prints() {
    let s = Server::start();
    let (status, shout) = s.get_json("/api/entries/shout");
    assert_eq!(status, 200);
    assert_eq!(shout, s.cli_json(&["show", "shout"]));
    assert_eq!(shout["used_by"], serde_json::json!([]));
    assert_eq!(shout["uses"][0]["id"], "Greeting_rust_core");
    // A crate without an entry of its name is shown as the crate.
    let (status, krate) = s.get_json("/api/entries/greeting");
    assert_eq!(status, 200);
    assert_eq!(krate["kind"], "crate");
    assert_eq!(krate, s.cli_json(&["show", "greeting"]));
    let (status, deps) = s.get_json("/api/deps/greet?reverse=1");
    assert_eq!(status, 200);
    assert_eq!(deps, s.cli_json(&["deps", "greet", "--reverse"]));
    // The page of an entry is a shell the script fills.
    let (status, head, page) = s.get("/entry/shout");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(page.contains(r#"data-name="shout""#), "{page}");
    assert!(!head.contains("access-control-allow-origin"), "{head}");
}

#[test]
fn an_unknown_entry_is_a_404_that_suggests_near_names() {
    let s = Server::start();
    let (status, v) = s.get_json("/api/entries/shuot");
    assert_eq!(status, 404);
    assert_eq!(v["error"], "no entry or crate named `shuot`");
    assert_eq!(v["suggestions"], serde_json::json!(["shout"]));
    let (status, _, page) = s.get("/entry/greet_ng");
    assert_eq!(status, 404);
    assert!(
        page.contains(r#"<a href="/entry/greeting">greeting</a>"#),
        "{page}"
    );
    let (status, _, _) = s.get("/graph/nothing_here.svg");
    assert_eq!(status, 404);
}

#[test]
fn a_bad_query_is_a_400_with_the_message() {
    let s = Server::start();
    let (status, v) = s.get_json("/api/search?q=AND%20(&fts=1");
    assert_eq!(status, 400);
    let msg = v["error"].as_str().unwrap();
    assert!(msg.starts_with("invalid FTS5 query \"AND (\""), "{msg}");
    let (status, _, page) = s.get("/?q=AND%20(&fts=1");
    assert_eq!(status, 400);
    assert!(page.contains("invalid FTS5 query"), "{page}");
    for bad in [
        "/api/search?q=x&kind=crate",
        "/api/search?q=x&purity=maybe",
        "/api/search?q=x&limit=ten",
        "/api/search?q=%20",
        "/api/search?q=--",
    ] {
        let (status, v) = s.get_json(bad);
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{bad}");
    }
}

#[test]
fn the_graph_is_well_formed_svg_with_the_neighbours() {
    let s = Server::start();
    let (status, head, svg) = s.get("/graph/greet.svg");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: image/svg+xml"), "{head}");
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg}"
    );
    assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
    assert_eq!(svg.matches("<g ").count(), svg.matches("</g>").count());
    assert_eq!(svg.matches("<a ").count(), svg.matches("</a>").count());
    // greet, what it uses (Greeting) and what uses it (shout), and nothing else.
    for id in ["greet_rust_core", "Greeting_rust_core", "shout_rust_core"] {
        assert!(svg.contains(&format!(r#"data-id="{id}""#)), "{id}: {svg}");
    }
    assert_eq!(svg.matches(r#"class="node""#).count(), 3);
    let (status, _, whole) = s.get("/graph.svg");
    assert_eq!(status, 200);
    assert_eq!(whole.matches(r#"class="node""#).count(), 4, "{whole}");
    let (status, g) = s.get_json("/api/graph?kind=function");
    assert_eq!(status, 200);
    assert_eq!(g["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(g["edges"][0]["from"], "shout_rust_core");
}

/// Reads the event stream until an event of type `event`; returns its data.
fn next_event(lines: &mut impl BufRead, event: &str) -> String {
    let mut current = String::new();
    loop {
        let mut line = String::new();
        let n = lines.read_line(&mut line).expect("the stream stays open");
        assert!(n > 0, "the stream ended before `{event}`");
        let line = line.trim_end();
        if let Some(e) = line.strip_prefix("event: ") {
            current = e.to_string();
        } else if let Some(data) = line.strip_prefix("data: ")
            && current == event
        {
            return data.to_string();
        } else if line.is_empty() {
            current.clear();
        }
    }
}

#[test]
fn a_new_entry_on_disk_is_announced_over_sse_and_found() {
    let s = Server::start();
    let (_, before) = s.get_json("/api/search?q=farewell");
    assert_eq!(before["results"], serde_json::json!([]));
    let mut stream = s.connect();
    write!(
        stream,
        "GET /api/events HTTP/1.1\r\nHost: {}\r\n\r\n",
        s.addr
    )
    .unwrap();
    let mut events = BufReader::new(stream);
    // Subscribed once the first comment arrives.
    let mut line = String::new();
    while line.trim_end() != ": ok" {
        line.clear();
        assert!(events.read_line(&mut line).unwrap() > 0);
    }

    // A new type, in the code and as an entry.
    let lib = s.root().join("crates/greeting/src/lib.rs");
    let code = std::fs::read_to_string(&lib).unwrap().replacen(
        "#[cfg(test)]",
        "/// A farewell.\npub struct Farewell {\n    /// Who leaves.\n    pub name: String,\n}\n\n#[cfg(test)]",
        1,
    );
    std::fs::write(&lib, code).unwrap();
    let entry = std::fs::read_to_string(s.root().join("types/core/Greeting.md"))
        .unwrap()
        .replace("name: Greeting", "name: Farewell")
        .replace("pub struct Greeting", "pub struct Farewell")
        .replace("A greeting to someone.", "A farewell to someone leaving.")
        .replace("  - name: volume\n    type: u8\n    desc: how loud.\n", "");
    let farewell = s.root().join("types/core/Farewell.md");
    std::fs::write(&farewell, &entry).unwrap();

    let data: Value = serde_json::from_str(&next_event(&mut events, "index")).unwrap();
    assert_eq!(data["entries"], 5);
    assert_eq!(
        data["rechecked"],
        Value::Null,
        "a new entry file: a full index"
    );
    let (status, after) = s.get_json("/api/search?q=farewell");
    assert_eq!(status, 200);
    assert_eq!(after["results"][0]["id"], "Farewell_rust_core");
    assert_eq!(after, s.cli_json(&["search", "farewell"]));

    // A broken entry: the problems are pushed, the last good index stays served.
    std::fs::write(
        &farewell,
        entry.replace("version: \"0.1.0\"", "version: 1.0"),
    )
    .unwrap();
    let data: Value = serde_json::from_str(&next_event(&mut events, "problems")).unwrap();
    let problem = &data["problems"][0];
    assert_eq!(problem["path"], "types/core/Farewell.md");
    assert!(
        problem["message"].as_str().unwrap().contains("version"),
        "{problem}"
    );
    let (_, status) = s.get_json("/api/status");
    assert_eq!(status["problems"][0]["path"], "types/core/Farewell.md");
    assert_eq!(status["entries"], 5);
    let (_, still) = s.get_json("/api/search?q=farewell");
    assert_eq!(still["results"][0]["id"], "Farewell_rust_core");

    // Removed: indexed again without it.
    std::fs::remove_file(&farewell).unwrap();
    let data: Value = serde_json::from_str(&next_event(&mut events, "index")).unwrap();
    assert_eq!(data["entries"], 4);

    // An edit of one entry: only that entry is checked and written again.
    let greeting = s.root().join("types/core/Greeting.md");
    let text = std::fs::read_to_string(&greeting).unwrap();
    std::fs::write(
        &greeting,
        text.replace("tags: [type, core]", "tags: [type, core, hello]"),
    )
    .unwrap();
    let data: Value = serde_json::from_str(&next_event(&mut events, "index")).unwrap();
    assert_eq!(
        (data["entries"].clone(), data["rechecked"].clone()),
        (4.into(), 1.into())
    );
    let (_, tagged) = s.get_json("/api/search?q=hello");
    assert_eq!(tagged["results"][0]["id"], "Greeting_rust_core");
    let (status, _) = s.get_json("/api/entries/Farewell");
    assert_eq!(status, 404);
}
