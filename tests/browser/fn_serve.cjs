// A real browser against `fn serve`: headless Chromium searches the registry,
// opens an entry page (its "used by" list and its graph), and sees a new entry
// written on disk appear in open pages without a reload (the server re-indexes
// and tells them over Server-Sent Events). Works on a temp copy of the
// repository's registry, never on the repository's own files.
//
// Run: NODE_PATH=<dir with playwright-core> node tests/browser/fn_serve.cjs target/debug/fn [REPO]
// Screenshots: target/screenshots/fn-serve-{search,entry}.png (the README's
// docs/img/fn-serve.png is a copy of the entry page, refreshed by hand: the test
// never writes into the repository).

const { execFileSync } = require("child_process");
const common = require("./common.cjs");
const { stop, launch } = common;
const fs = require("fs");
const os = require("os");
const path = require("path");

const bin = path.resolve(process.argv[2] || "target/debug/fn");
const repo = path.resolve(process.argv[3] || ".");
const shots = path.join(repo, "target", "screenshots");

// What indexing reads: the workspace manifest, the crates, the type entries,
// and the test files entries name.
function copyRegistry() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fn-serve-"));
  for (const part of ["Cargo.toml", "crates", "types", "tests"]) {
    fs.cpSync(path.join(repo, part), path.join(dir, part), {
      recursive: true,
      filter: (src) => !/(^|\/)(target|node_modules)(\/|$)/.test(path.relative(repo, src)),
    });
  }
  return dir;
}

function startServer(root) {
  return common.startServer(bin, ["serve", "--root", root, "--addr", "127.0.0.1:0"]);
}

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function main() {
  const root = copyRegistry();
  try {
    await run(root);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

async function run(root) {
  const { p, addr } = await startServer(root);
  const db = path.join(root, "registry", "registry.db");
  const browser = await launch();
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));

    // Search: typing `ws_send` lists ws_send first.
    await page.goto(`http://${addr}/`);
    await page.waitForFunction(() => document.getElementById("live").textContent === "live", null, { timeout: 15000 });
    await page.locator("#q").pressSequentially("ws_send", { delay: 30 });
    await page.waitForFunction(() => document.getElementById("results").dataset.query === "ws_send", null, { timeout: 15000 });
    await page.waitForSelector('#results li[data-id="ws_send_rust_infra"]', { timeout: 15000 });
    const first = await page.$eval("#results li .name", (a) => a.textContent);
    check(first === "ws_send", `first result is ${first}, want ws_send`);
    check(new URL(page.url()).search === "?q=ws_send", `the URL keeps the query: ${page.url()}`);
    fs.mkdirSync(shots, { recursive: true });
    await page.screenshot({ path: path.join(shots, "fn-serve-search.png") });

    // Its page: "used by" lists what `fn deps ws_send --reverse` lists.
    await Promise.all([page.waitForURL(`http://${addr}/entry/ws_send`), page.click('#results li[data-id="ws_send_rust_infra"] a.name')]);
    await page.waitForSelector("#used-by a", { timeout: 15000 });
    const deps = JSON.parse(execFileSync(bin, ["deps", "ws_send", "--reverse", "--json", "--db", db]));
    const want = [...new Set(deps.deps.map((d) => d.id.split("_").slice(0, -2).join("_")))].sort();
    check(want.length > 0, "something uses ws_send");
    const usedBy = (await page.$$eval("#used-by a", (as) => as.map((a) => a.textContent))).sort();
    check(JSON.stringify(usedBy) === JSON.stringify(want), `used by ${JSON.stringify(usedBy)}, want ${JSON.stringify(want)}`);

    // The graph: an svg with ws_send and each of its users as nodes.
    await page.waitForSelector("#graph svg g.node", { timeout: 15000 });
    const nodes = await page.$$eval("#graph svg g.node", (gs) => gs.map((g) => g.dataset.id));
    for (const d of deps.deps.concat([{ id: "ws_send_rust_infra" }])) {
      check(nodes.includes(d.id), `graph nodes ${JSON.stringify(nodes)} lack ${d.id}`);
    }
    await page.screenshot({ path: path.join(shots, "fn-serve-entry.png"), fullPage: true });

    // Live refresh: a search for a type that does not exist yet, and the whole graph, stay open.
    const search = await context.newPage();
    await search.goto(`http://${addr}/?q=FnServeProbe`);
    await search.waitForFunction(() => document.getElementById("summary").textContent.startsWith("No entry matches"), null, { timeout: 15000 });
    const graph = await context.newPage();
    await graph.goto(`http://${addr}/graph`);
    await graph.waitForSelector("#graph svg g.node", { timeout: 15000 });
    for (const pg of [page, search, graph]) {
      await pg.waitForFunction(() => document.getElementById("live").textContent === "live", null, { timeout: 15000 });
      await pg.evaluate(() => { window.notReloaded = true; });
    }
    const generation = await page.$eval("#indexed", (s) => Number(s.dataset.generation));

    // The new type, in the copy's code and as an entry.
    fs.appendFileSync(path.join(root, "crates/http_types/src/lib.rs"),
      "\n/// A probe the browser test adds.\npub struct FnServeProbe;\n");
    fs.writeFileSync(path.join(root, "types/infra/FnServeProbe.md"), `---
name: FnServeProbe
kind: type
lang: rust
domain: infra
version: "0.1.0"
purity: pure
signature: "pub struct FnServeProbe"
description: A probe the browser test adds to see open pages refresh.
tags: [type, infra, probe]
uses_functions: []
uses_types: []
returns: []
returns_optional: false
error_type: ""
imports: []
output: ""
tested: false
tests: []
test_file_path: ""
file_path: crates/http_types/src/lib.rs
---
`);
    await search.waitForSelector('#results li[data-id="FnServeProbe_rust_infra"]', { timeout: 30000 });
    await graph.waitForSelector('#graph svg g.node[data-id="FnServeProbe_rust_infra"]', { timeout: 30000 });
    await page.waitForFunction((g) => Number(document.getElementById("indexed").dataset.generation) > g, generation, { timeout: 30000 });
    for (const pg of [page, search, graph]) {
      check(await pg.evaluate(() => window.notReloaded === true), `${pg.url()} was reloaded`);
    }
    check(errors.length === 0, `page errors: ${errors.join("; ")}`);
    console.log(`browser fn serve: search, entry page (used by ${usedBy.join(", ")}), graph, live refresh without reload: ok`);
  } finally {
    await browser.close();
    await stop(p);
  }
}

common.run(main);
