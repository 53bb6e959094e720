// The official TypeScript MCP SDK's client (npm @modelcontextprotocol/sdk, `Client` over
// `StdioClientTransport`) against `fn mcp` on this repository's registry: every tool,
// the resources, an error. Tool answers are compared with the CLI's `--json` output.
// Exits non-zero on any mismatch (a failed assertion).
//
//   cargo fn index   # registry/registry.db must exist
//   NODE_PATH=... node tests/mcp/client.mjs target/debug/fn /path/to/repo
import assert from "node:assert/strict"
import { execFileSync } from "node:child_process"
import fs from "node:fs"
import { createRequire } from "node:module"
import path from "node:path"

const require = createRequire(path.join(process.env.NODE_PATH, "x.js"))
const { Client } = require("@modelcontextprotocol/sdk/client/index.js")
const { StdioClientTransport } = require("@modelcontextprotocol/sdk/client/stdio.js")

const [bin, rootArg] = process.argv.slice(2)
assert.ok(bin && rootArg, "usage: client.mjs FN_BINARY REPO_ROOT")
const root = path.resolve(rootArg)
const db = path.join(root, "registry", "registry.db")

// What the CLI prints with --json for the same question.
const cli = (...args) => JSON.parse(execFileSync(bin, [...args, "--json"], { encoding: "utf8" }))

const transport = new StdioClientTransport({
	command: path.resolve(bin),
	args: ["mcp", "--root", root],
	stderr: "inherit",
})
const client = new Client({ name: "fn-registry-ci", version: "1.0.0" })
await client.connect(transport)
assert.equal(client.getServerVersion().name, "fn-registry")
assert.ok(client.getServerCapabilities().tools && client.getServerCapabilities().resources)

const { tools } = await client.listTools()
assert.deepEqual(tools.map((t) => t.name).sort(), ["check", "compose", "deps", "search", "show"])
for (const t of tools) assert.equal(t.inputSchema.type, "object", t.name)

// A successful call's structured answer, which its text content repeats.
const answer = async (name, args) => {
	const res = await client.callTool({ name, arguments: args })
	assert.equal(res.isError, false, `${name}: ${JSON.stringify(res.content)}`)
	assert.deepEqual(JSON.parse(res.content[0].text), res.structuredContent)
	return res.structuredContent
}

const search = await answer("search", { query: "ws_send" })
assert.equal(search.results[0].name, "ws_send")
assert.deepEqual(search, cli("search", "ws_send", "--db", db))

const show = await answer("show", { name: "ws_send" })
assert.equal(show.id, "ws_send_rust_infra")
assert.equal(show.cargo.workspace, "ws_send.workspace = true")
assert.ok(show.uses.some((e) => e.id === "ws_hub_rust_infra"), "ws_send uses ws_hub")
assert.deepEqual(show, cli("show", "ws_send", "--db", db))

const deps = await answer("deps", { name: "sse_encode", reverse: true, transitive: true })
assert.equal(deps.direction, "used_by")
assert.ok(deps.deps.some((e) => e.id === "sse_handler_rust_infra"), "sse_handler uses sse_encode")
assert.ok(deps.deps.some((e) => e.depth >= 2), "transitive users too")
assert.deepEqual(deps, cli("deps", "sse_encode", "--reverse", "--transitive", "--db", db))

const check = await answer("check", {})
assert.deepEqual(check.problems, [])
assert.ok(check.entries > 0)

const compose = await answer("compose", { names: ["ws_send", "sse_handler"] })
assert.deepEqual(compose.requested.map((r) => r.crate), ["ws_send", "sse_handler"])
assert.equal(compose.requested[1].cargo.workspace, "sse_handler.workspace = true")
const order = compose.crates.map((c) => c.name)
assert.equal(new Set(order).size, order.length, "each crate once")
for (const [i, c] of compose.crates.entries()) {
	for (const u of c.uses) assert.ok(order.indexOf(u) >= 0 && order.indexOf(u) < i, `${u} before ${c.name}`)
}
for (const needed of ["ws_hub", "http_types", "sse_broker", "sse_encode", "ws_send", "sse_handler"]) {
	assert.ok(order.includes(needed), `${needed} pulled in`)
}

const { resources } = await client.listResources()
const wsSend = resources.find((r) => r.uri === "fn://ws_send")
assert.ok(wsSend, "fn://ws_send listed")
assert.equal(wsSend.mimeType, "text/markdown")
assert.equal(resources.length, cli("check", "--root", root).entries, "one resource per entry")
const read = await client.readResource({ uri: "fn://ws_send" })
assert.equal(read.contents[0].mimeType, "text/markdown")
assert.equal(read.contents[0].text, fs.readFileSync(path.join(root, "crates/ws_send/ws_send.md"), "utf8"))

// Errors: an unknown entry is a tool error; an unknown tool, a protocol error.
const missing = await client.callTool({ name: "show", arguments: { name: "no_such_function" } })
assert.equal(missing.isError, true)
assert.match(missing.content[0].text, /no entry named `no_such_function`/)
await assert.rejects(client.callTool({ name: "no_such_tool", arguments: {} }), /unknown tool `no_such_tool`/)

await client.close()
console.log(`fn mcp: ${tools.length} tools and ${resources.length} resources through the TypeScript SDK client`)
