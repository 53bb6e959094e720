//! `fn mcp`: the registry served to coding agents over the Model Context Protocol, on stdio.
//!
//! An MCP client (a coding agent, an editor) starts `fn mcp --root DIR` and speaks
//! JSON-RPC on its stdin and stdout; the server is the official Rust SDK (`rmcp`).
//! It offers five tools and one resource per entry:
//!
//! | tool | arguments | answer (structured content, also as text) |
//! |---|---|---|
//! | `search` | `query`, and `fn search`'s filters: `kind`, `lang`, `domain`, `tags`, `purity`, `tested`, `limit`, `fts` | `fn search --json` |
//! | `show` | `name` (entry name or ID, or crate name) | `fn show --json` |
//! | `deps` | `name`, `reverse`, `transitive` | `fn deps --json` |
//! | `check` | none | `fn check --json` on the root |
//! | `compose` | `names` (entries or crates) | the `Cargo.toml` lines of each and every registry crate they pull in, dependencies first ([`Composed`]) |
//!
//! Resources: every entry as `fn://NAME` (its ID when several languages share the
//! name), `text/markdown`, whose contents are the entry's `.md` file.
//!
//! The database is opened read-only for each request, so a new `fn index` is
//! seen at once, and a missing one is an error that says to run `cargo fn index`.
//! A failure the agent can act on (an unknown entry, an invalid query, a bad
//! argument) is a tool result with `isError: true` and the message; an unknown
//! tool or resource is a JSON-RPC error. Nothing a client sends ends the server
//! (a line that is not JSON, or longer than `rmcp`'s 16 MiB limit, is dropped);
//! it ends when the client closes stdin.
//!
//! # Example
//!
//! ```no_run
//! // What `fn mcp` runs: serve until the client closes stdin.
//! let root = std::path::PathBuf::from(".");
//! let db = root.join("registry/registry.db");
//! fn_tool::mcp::serve_stdio(root, db)?;
//! # Ok::<(), String>(())
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use rmcp::handler::server::common::schema_for_input;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::schemars::JsonSchema;
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use rusqlite::{Connection, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::json;
use crate::query::{self, Direction, Filters, Syntax};

mod compose;

pub use compose::{Composed, ComposedCrate, Requested, compose};

/// The URI scheme of the entry resources: `fn://NAME`.
pub const SCHEME: &str = "fn://";

/// The MIME type of an entry resource.
const MARKDOWN: &str = "text/markdown";

/// What `search` returns when the arguments give no `limit` (as `fn search`).
const DEFAULT_LIMIT: usize = 20;

/// Serves the registry at `root` (its database `db`) on stdin and stdout until
/// the client closes stdin.
///
/// # Errors
///
/// When the runtime cannot start or the client's first message is not a valid
/// MCP `initialize` (nothing was served).
pub fn serve_stdio(root: PathBuf, db: PathBuf) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let running = Server::new(root, db)
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| format!("MCP session did not start: {e}"))?;
        running
            .waiting()
            .await
            .map_err(|e| format!("MCP session failed: {e}"))?;
        Ok(())
    })
}

/// The MCP server: a registry root and its database.
#[derive(Debug, Clone)]
pub struct Server {
    root: PathBuf,
    db: PathBuf,
}

impl Server {
    /// A server of the registry at `root` whose index is `db`.
    pub fn new(root: PathBuf, db: PathBuf) -> Server {
        Server { root, db }
    }

    /// Runs `f` on the blocking pool (SQLite, file reads, `check`'s parse), so
    /// the transport keeps reading; a panic inside becomes an error.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Server) -> T + Send + 'static,
    ) -> Result<T, ErrorData> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(this))
            .await
            .map_err(|e| ErrorData::internal_error(format!("the request failed: {e}"), None))
    }

    fn open(&self) -> Result<Connection, String> {
        query::open(&self.db)
    }

    /// The folder the entries' paths are relative to: the root recorded at
    /// index time, else this server's root.
    fn indexed_root(&self, conn: &Connection) -> PathBuf {
        conn.query_row("SELECT value FROM meta WHERE key = 'root'", [], |r| {
            r.get::<_, String>(0)
        })
        .optional()
        .ok()
        .flatten()
        .map_or_else(|| self.root.clone(), PathBuf::from)
    }

    /// Runs one tool: `Ok` is its JSON answer, `Err` the message of a tool error.
    fn call(&self, name: &str, args: JsonObject) -> Result<Value, String> {
        match name {
            "search" => {
                let a: SearchArgs = parse(name, args)?;
                let filters = Filters {
                    kind: a.kind.map(|k| k.as_str().to_string()),
                    lang: a.lang,
                    domain: a.domain,
                    tags: a.tags,
                    purity: a.purity.map(|p| p.as_str().to_string()),
                    tested: a.tested,
                };
                let syntax = if a.fts { Syntax::Fts5 } else { Syntax::Words };
                let conn = self.open()?;
                let res = query::search(&conn, &a.query, syntax, &filters, a.limit)?;
                to_json(&res)
            }
            "show" => {
                let a: NameArgs = parse(name, args)?;
                let conn = self.open()?;
                to_json(&query::lookup(&conn, &a.name)?)
            }
            "deps" => {
                let a: DepsArgs = parse(name, args)?;
                let conn = self.open()?;
                let id = query::resolve(&conn, &a.name)?;
                let dir = if a.reverse {
                    Direction::UsedBy
                } else {
                    Direction::Uses
                };
                let edges = query::deps(&conn, &id, dir, a.transitive)?;
                Ok(json::deps(&id, dir, a.transitive, &edges))
            }
            "check" => {
                let _: NoArgs = parse(name, args)?;
                Ok(crate::check::check(&self.root)?.to_json())
            }
            "compose" => {
                let a: ComposeArgs = parse(name, args)?;
                let conn = self.open()?;
                to_json(&compose(&conn, &a.names)?)
            }
            // `call_tool` answers unknown names before calling this.
            other => Err(format!("unknown tool `{other}`")),
        }
    }

    /// Every entry as a resource, by name.
    fn resources(&self) -> Result<Vec<Resource>, String> {
        let conn = self.open()?;
        let e = |e: rusqlite::Error| e.to_string();
        let mut stmt = conn
            .prepare(
                "SELECT e.id, e.name, e.description,
                        (SELECT count(*) FROM entries o WHERE o.name = e.name)
                 FROM entries e ORDER BY e.name, e.id",
            )
            .map_err(e)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(e)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, description, same_name) = row.map_err(e)?;
            // A name several languages share would resolve to none of them.
            let key = if same_name > 1 { &id } else { &name };
            out.push(
                Resource::new(format!("{SCHEME}{key}"), key.clone())
                    .with_title(id.clone())
                    .with_description(description)
                    .with_mime_type(MARKDOWN),
            );
        }
        Ok(out)
    }

    /// The `.md` file of the entry `uri` names.
    fn read(&self, uri: &str) -> Result<String, ErrorData> {
        let Some(key) = uri.strip_prefix(SCHEME) else {
            return Err(ErrorData::invalid_params(
                format!("`{uri}` is not an entry: entry resources are {SCHEME}NAME"),
                None,
            ));
        };
        let internal = |m: String| ErrorData::internal_error(m, None);
        let conn = self.open().map_err(internal)?;
        let id = query::resolve(&conn, key)
            .map_err(|m| ErrorData::resource_not_found(format!("{uri}: {m}"), None))?;
        let entry_path: String = conn
            .query_row("SELECT entry_path FROM entries WHERE id = ?1", [&id], |r| {
                r.get(0)
            })
            .map_err(|e| internal(e.to_string()))?;
        let file = self.indexed_root(&conn).join(&entry_path);
        std::fs::read_to_string(&file).map_err(|e| {
            ErrorData::resource_not_found(
                format!(
                    "{uri}: cannot read {}: {e}; run `cargo fn index` again",
                    file.display()
                ),
                None,
            )
        })
    }
}

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new(
            "fn-registry",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        if !TOOLS.iter().any(|(t, _)| *t == name) {
            let known: Vec<&str> = TOOLS.iter().map(|(t, _)| *t).collect();
            return Err(ErrorData::invalid_params(
                format!("unknown tool `{name}`; the tools are {}", known.join(", ")),
                None,
            ));
        }
        let args = request.arguments.unwrap_or_default();
        let answer = self.blocking(move |s| s.call(&name, args)).await?;
        Ok(match answer {
            Ok(value) => CallToolResult::structured(value),
            Err(message) => CallToolResult::error(vec![ContentBlock::text(message)]),
        }
        .into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.blocking(|s| s.resources())
            .await?
            .map(ListResourcesResult::with_all_items)
            .map_err(|m| ErrorData::internal_error(m, None))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri;
        self.blocking(move |s| {
            let text = s.read(&uri)?;
            Ok(ReadResourceResult::new(vec![
                ResourceContents::text(text, uri).with_mime_type(MARKDOWN),
            ])
            .into())
        })
        .await?
    }
}

/// What the server tells the client it is for.
const INSTRUCTIONS: &str = "The fn-registry: reusable real-time server functions (HTTP, WebSocket, SSE), \
one Rust crate each. `search` finds entries, `show` gives one with its Cargo.toml lines and example, \
`deps` walks what it uses or what uses it, `compose` gives the Cargo.toml lines and the crates a set of \
functions pulls in, `check` validates the registry against its code. Each entry's Markdown is the \
resource fn://NAME.";

/// The tools, with their descriptions.
const TOOLS: [(&str, &str); 5] = [
    (
        "search",
        "Ranked full-text search over entry names, descriptions, tags, signatures and bodies \
         (`fn search --json`). Punctuation is safe: `ws_send` and `web-socket` work as words.",
    ),
    (
        "show",
        "One entry by name or ID: every field, what it uses and what uses it, the Cargo.toml \
         lines to depend on its crate, its example (`fn show --json`). A crate no entry is named \
         after (a types-only crate such as `http_types`) answers with the crate.",
    ),
    (
        "deps",
        "The composition graph of one entry: what it uses, or (reverse) what uses it; direct \
         edges or (transitive) all of them, nearest first (`fn deps --json`).",
    ),
    (
        "check",
        "Validates every entry of the registry and that its metadata is true to the code \
         (`fn check --json`): the problems, as path, line and message; none when sound.",
    ),
    (
        "compose",
        "Given the functions (entry or crate names) an app uses: the Cargo.toml lines of each, \
         and every registry crate they pull in, each once, dependencies first.",
    ),
];

/// The tool list `tools/list` answers with.
fn tools() -> Vec<Tool> {
    TOOLS
        .iter()
        .map(|&(name, description)| {
            let schema = match name {
                "search" => schema::<SearchArgs>(),
                "show" => schema::<NameArgs>(),
                "deps" => schema::<DepsArgs>(),
                "compose" => schema::<ComposeArgs>(),
                _ => schema::<NoArgs>(),
            };
            Tool::new(name, description, schema).with_annotations(
                ToolAnnotations::new()
                    .read_only(true)
                    .idempotent(true)
                    .open_world(false),
            )
        })
        .collect()
}

/// The input schema of an argument type (a JSON object).
fn schema<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    // The argument types below are structs, so their schema is an object.
    schema_for_input::<T>().unwrap_or_default()
}

/// The arguments of tool `tool`, or a message saying what is wrong with them.
fn parse<T: DeserializeOwned>(tool: &str, args: JsonObject) -> Result<T, String> {
    serde_json::from_value(Value::Object(args))
        .map_err(|e| format!("invalid arguments for `{tool}`: {e}"))
}

fn to_json(v: &impl Serialize) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

/// `search`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    /// Words to look for (every one must match, the last also as a prefix), or an
    /// FTS5 expression with `fts`.
    query: String,
    /// Only entries of this kind.
    kind: Option<KindArg>,
    /// Only entries of this language (`rust`, `go`, ...).
    lang: Option<String>,
    /// Only entries of this domain (`infra`, `core`, ...).
    domain: Option<String>,
    /// Only entries with every one of these tags.
    #[serde(default)]
    tags: Vec<String>,
    /// Only pure or only impure entries.
    purity: Option<PurityArg>,
    /// Only entries that have tests.
    #[serde(default)]
    tested: bool,
    /// How many results at most (default 20).
    #[serde(default = "default_limit")]
    limit: usize,
    /// Treat `query` as an FTS5 expression (AND, OR, NOT, NEAR, "phrases", prefix*).
    #[serde(default)]
    fts: bool,
}

fn default_limit() -> usize {
    DEFAULT_LIMIT
}

/// An entry kind.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(rename_all = "lowercase")]
enum KindArg {
    Function,
    Type,
    Component,
}

impl KindArg {
    fn as_str(self) -> &'static str {
        match self {
            KindArg::Function => "function",
            KindArg::Type => "type",
            KindArg::Component => "component",
        }
    }
}

/// An entry's purity.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(rename_all = "lowercase")]
enum PurityArg {
    Pure,
    Impure,
}

impl PurityArg {
    fn as_str(self) -> &'static str {
        match self {
            PurityArg::Pure => "pure",
            PurityArg::Impure => "impure",
        }
    }
}

/// `show`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
struct NameArgs {
    /// Entry name or ID (`ws_send`, `ws_send_rust_infra`), or crate name (`http_types`).
    name: String,
}

/// `deps`' arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
struct DepsArgs {
    /// Entry name or ID.
    name: String,
    /// What depends on the entry instead of what it depends on.
    #[serde(default)]
    reverse: bool,
    /// Follow the graph all the way, not only direct edges.
    #[serde(default)]
    transitive: bool,
}

/// `compose`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
struct ComposeArgs {
    /// The functions the app uses: entry names or IDs, or crate names.
    #[schemars(length(min = 1))]
    names: Vec<String>,
}

/// `check` takes no arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_an_object_schema() {
        let tools = tools();
        assert_eq!(tools.len(), TOOLS.len());
        for t in &tools {
            assert_eq!(
                t.input_schema.get("type").and_then(Value::as_str),
                Some("object"),
                "{}",
                t.name
            );
        }
        let search = &tools[0];
        let props = search.input_schema["properties"].as_object().unwrap();
        for p in [
            "query", "kind", "lang", "domain", "tags", "purity", "tested", "limit", "fts",
        ] {
            assert!(props.contains_key(p), "search has `{p}`");
        }
        assert_eq!(
            search.input_schema["required"],
            serde_json::json!(["query"])
        );
    }

    #[test]
    fn bad_arguments_are_messages() {
        let args = |v: Value| v.as_object().cloned().unwrap();
        let e =
            parse::<SearchArgs>("search", args(serde_json::json!({"querry": "x"}))).unwrap_err();
        assert!(
            e.starts_with("invalid arguments for `search`: unknown field `querry`"),
            "{e}"
        );
        let e = parse::<SearchArgs>(
            "search",
            args(serde_json::json!({"query": "x", "kind": "fn"})),
        )
        .unwrap_err();
        assert!(e.contains("unknown variant `fn`"), "{e}");
        let a: SearchArgs = parse("search", args(serde_json::json!({"query": "x"}))).unwrap();
        assert_eq!((a.limit, a.fts, a.tested), (DEFAULT_LIMIT, false, false));
    }
}
