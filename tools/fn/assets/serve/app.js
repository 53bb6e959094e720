// fn serve: renders the pages from the JSON API and refreshes them when the
// server publishes a new index on /api/events (Server-Sent Events).
// No framework, no build step; text goes into the page through textContent only.
"use strict";

// el("li", {class: "x"}, "text", child, ...): an element with attributes and children.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const $ = (id) => document.getElementById(id);
const entryHref = (name) => "/entry/" + encodeURIComponent(name);
// An ID is NAME_LANG_DOMAIN; lang and domain are single words.
const idName = (id) => id.split("_").slice(0, -2).join("_") || id;

async function getJSON(url) {
  const res = await fetch(url, { headers: { accept: "application/json" } });
  let body = null;
  try {
    body = await res.json();
  } catch (_) {
    body = { error: `${res.status} ${res.statusText}` };
  }
  return { status: res.status, ok: res.ok, body };
}

// ---- live refresh -------------------------------------------------------

const refreshers = [];
function onIndex(f) {
  refreshers.push(f);
}

function showIndexed(status) {
  const s = $("indexed");
  if (!s) return;
  const when = status.indexed_at ? new Date(status.indexed_at * 1000).toLocaleTimeString() : "?";
  s.textContent = `${status.entries} entries, indexed at ${when} (#${status.generation})`;
  s.dataset.generation = status.generation;
}

function showProblems(problems) {
  const box = $("problems");
  if (!box) return;
  box.replaceChildren();
  if (!problems || problems.length === 0) {
    box.hidden = true;
    return;
  }
  box.append(
    el("strong", {}, `${problems.length} problem(s) in the entries on disk; still showing the previous index:`),
    el("ul", {}, problems.slice(0, 20).map((p) => el("li", {}, el("code", {}, `${p.path}:${p.line}`), " ", p.message))),
  );
  box.hidden = false;
}

async function loadStatus() {
  const { ok, body } = await getJSON("/api/status");
  if (ok) {
    showIndexed(body);
    showProblems(body.problems);
  }
}

function connect() {
  const live = $("live");
  const es = new EventSource("/api/events");
  es.onopen = () => {
    live.textContent = "live";
    live.className = "live on";
  };
  es.onerror = () => {
    live.textContent = "reconnecting";
    live.className = "live off";
  };
  es.addEventListener("index", async (ev) => {
    const data = JSON.parse(ev.data);
    showIndexed({ ...data });
    showProblems([]);
    for (const f of refreshers) {
      try {
        await f();
      } catch (e) {
        console.error(e);
      }
    }
    document.body.dataset.generation = data.generation;
  });
  es.addEventListener("problems", (ev) => {
    showProblems(JSON.parse(ev.data).problems);
  });
  // A resumed stream that missed events: reload the data.
  es.addEventListener("sse-reset", () => refreshers.forEach((f) => f()));
}

// ---- search -------------------------------------------------------------

function badges(e) {
  return el("span", { class: "badges" },
    el("span", { class: `badge kind-${e.kind}` }, e.kind),
    el("span", { class: "badge" }, e.domain),
    el("span", { class: "badge" }, e.purity),
    el("span", { class: `badge ${e.tested ? "tested" : "untested"}` }, e.tested ? "tested" : "untested"),
  );
}

function searchPage() {
  const form = $("search");
  const fields = ["q", "kind", "domain", "tag", "purity"];
  const params = new URLSearchParams(location.search);
  for (const f of fields) {
    if (params.has(f) && $(f).tagName !== "SELECT") $(f).value = params.get(f);
  }
  $("tested").checked = ["1", "on", "true"].includes(params.get("tested"));
  $("fts").checked = ["1", "on", "true"].includes(params.get("fts"));
  const selected = (id) => {
    if (params.has(id)) {
      const v = params.get(id);
      if (![...$(id).options].some((o) => o.value === v)) $(id).append(el("option", {}, v));
      $(id).value = v;
    }
  };
  selected("kind");
  selected("purity");

  async function facets() {
    const { ok, body } = await getJSON("/api/facets");
    if (!ok) return;
    const domain = $("domain");
    const current = domain.value || params.get("domain") || "";
    domain.replaceChildren(el("option", { value: "" }, "any domain"), ...body.domains.map((d) => el("option", {}, d)));
    if (current && !body.domains.includes(current)) domain.append(el("option", {}, current));
    domain.value = current;
    $("tags").replaceChildren(...body.tags.map((t) => el("option", { value: t })));
  }

  function query() {
    const p = new URLSearchParams();
    for (const f of fields) {
      const v = $(f).value.trim();
      if (v) p.set(f, v);
    }
    if ($("tested").checked) p.set("tested", "1");
    if ($("fts").checked) p.set("fts", "1");
    return p;
  }

  let seq = 0;
  async function run() {
    const p = query();
    history.replaceState(null, "", p.toString() ? "/?" + p : "/");
    const mine = ++seq;
    const results = $("results");
    const error = $("error");
    if (!p.get("q")) {
      results.replaceChildren();
      error.hidden = true;
      $("summary").textContent = "Type words to search names, descriptions, tags, signatures and entry text.";
      return;
    }
    const { ok, body } = await getJSON("/api/search?" + p);
    if (mine !== seq) return; // a newer search is under way
    if (!ok) {
      results.replaceChildren();
      error.textContent = body.error;
      error.hidden = false;
      $("summary").textContent = "";
      return;
    }
    error.hidden = true;
    results.dataset.query = body.query;
    const n = body.results.length;
    $("summary").textContent = n === 0
      ? `No entry matches “${body.query}”.`
      : `${n} result${n === 1 ? "" : "s"}` + (body.matched === "any" ? " (no entry matches every word; these match some)" : "");
    results.replaceChildren(
      ...body.results.map((h) =>
        el("li", { class: "result", "data-id": h.id },
          el("div", { class: "head" }, el("a", { href: entryHref(h.name), class: "name" }, h.name), " ", badges(h)),
          el("code", { class: "signature" }, h.signature),
          el("p", { class: "description" }, inline(h.description)),
        ),
      ),
    );
  }

  let timer = null;
  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(run, 120);
  };
  form.addEventListener("input", soon);
  form.addEventListener("change", soon);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    run();
  });
  onIndex(async () => {
    await facets();
    await run();
  });
  facets();
  run();
}

// ---- entry --------------------------------------------------------------

function section(title, ...content) {
  return el("section", { class: "part" }, el("h2", {}, title), ...content);
}

// Text with `code` spans.
function inline(text) {
  return text.split(/`([^`]+)`/).map((part, i) => (i % 2 === 1 ? el("code", {}, part) : part));
}

// Markdown as an entry holds it: code fences become <pre>, the rest paragraphs.
function markdown(text) {
  const out = [];
  const parts = text.split(/^```[^\n]*\n?/m);
  parts.forEach((part, i) => {
    if (i % 2 === 1) {
      out.push(el("pre", {}, el("code", {}, part.replace(/\n$/, ""))));
    } else {
      for (const para of part.split(/\n\s*\n/)) {
        if (para.trim()) out.push(el("p", {}, inline(para.trim())));
      }
    }
  });
  return out;
}

// One line per entry at the other end, with every relation to it.
function edgeList(edges, cls) {
  if (edges.length === 0) return el("p", { class: "none" }, "nothing");
  const byId = new Map();
  for (const e of edges) {
    if (!byId.has(e.id)) byId.set(e.id, { kind: e.kind, rels: [] });
    byId.get(e.id).rels.push(e.rel);
  }
  return el("ul", { class: `edges ${cls}` },
    [...byId].map(([id, e]) => el("li", {}, el("a", { href: entryHref(idName(id)) }, idName(id)), " ",
      el("span", { class: "meta" }, `${e.kind} via ${e.rels.join(", ")}`))));
}

function cargoLines(c) {
  const lines = [
    `${c.workspace}    # in this workspace`,
    `${c.path}    # this checkout, from any project`,
  ];
  if (c.git) lines.push(`${c.git}    # the repository`);
  lines.push(`${c.version}    # crates.io`);
  return section("Depend on it", el("p", {}, "Cargo.toml [dependencies], one of:"), el("pre", { class: "cargo" }, lines.join("\n")));
}

function renderEntry(s) {
  const kv = (k, v) => (v ? [el("dt", {}, k), el("dd", {}, v)] : []);
  const parts = [
    el("h1", {}, s.name, " ", badges(s)),
    el("p", { class: "id" }, s.id, ` · ${s.lang} · v${s.version}`),
    el("pre", { class: "signature" }, el("code", {}, s.signature)),
    el("p", { class: "description" }, inline(s.description)),
  ];
  if (s.params.length) {
    parts.push(section("Parameters", el("dl", {}, s.params.map((p) => [el("dt", {}, el("code", {}, p.name)), el("dd", {}, inline(p.desc))]))));
  }
  if (s.members.length) {
    parts.push(section("Members", el("dl", {}, s.members.map((m) => [
      el("dt", {}, el("code", {}, m.name + (m.type ? `: ${m.type}` : "")), " ", el("span", { class: "meta" }, m.role)),
      el("dd", {}, inline(m.desc))]))));
  }
  parts.push(el("dl", { class: "facts" },
    kv("output", s.output),
    kv("error type", s.error_type && el("a", { href: entryHref(idName(s.error_type)) }, idName(s.error_type))),
    kv("imports", s.imports.join(", ")),
    kv("tags", s.tags.join(", ")),
    kv("file", s.file_path),
    kv("entry", s.entry_path),
    kv("crate", s.crate && (s.crate === s.name ? s.crate : el("a", { href: entryHref(s.crate) }, s.crate))),
  ));
  parts.push(el("div", { class: "deps" },
    section("Uses", edgeList(s.uses, "uses")),
    section("Used by", el("div", { id: "used-by" }, edgeList(s.used_by, "used-by")))));
  if (s.cargo) parts.push(cargoLines(s.cargo));
  if (s.tests.length) {
    parts.push(section(`Tests (${s.tests.length})`, el("p", { class: "meta" }, s.test_file_path || ""),
      el("ul", { class: "tests" }, s.tests.map((t) => el("li", {}, t)))));
  } else {
    parts.push(section("Tests", el("p", { class: "none" }, "untested")));
  }
  if (s.example) parts.push(section("Example", ...markdown(s.example)));
  if (s.notes) parts.push(section("Notes", ...markdown(s.notes)));
  return parts;
}

function renderCrate(c) {
  const api = (title, list) => list.length
    ? section(title, el("ul", { class: "api" }, list.map((f) => el("li", {}, el("code", {}, f.signature), f.doc ? el("p", {}, inline(f.doc)) : null))))
    : null;
  return [
    el("h1", {}, c.name, " ", el("span", { class: "badges" }, el("span", { class: "badge kind-crate" }, "crate"))),
    el("p", { class: "id" }, `v${c.version} · ${c.path}`),
    el("p", { class: "description" }, inline(c.description)),
    section("Entries", c.entries.length
      ? el("ul", { class: "edges" }, c.entries.map((e) => el("li", {}, el("a", { href: entryHref(e.name) }, e.name), " ", el("span", { class: "meta" }, e.kind), " ", inline(e.description))))
      : el("p", { class: "none" }, "none")),
    api("Functions", c.functions),
    api("Re-exports", c.re_exports),
    section("Used by (crates)", c.used_by.length
      ? el("ul", { class: "edges used-by" }, c.used_by.map((n) => el("li", {}, el("a", { href: entryHref(n) }, n))))
      : el("p", { class: "none" }, "nothing")),
    cargoLines(c.cargo),
  ];
}

async function loadGraph() {
  const box = $("graph");
  if (!box) return;
  let src = box.dataset.src;
  const only = $("functions-only");
  if (only && only.checked) src += "?kind=function";
  const res = await fetch(src);
  if (!res.ok) {
    box.replaceChildren(el("p", { class: "error" }, `the graph is not available (${res.status})`));
    return;
  }
  // The server's own SVG (names escaped there); parsed as SVG, not as HTML.
  const doc = new DOMParser().parseFromString(await res.text(), "image/svg+xml");
  const svg = doc.documentElement;
  if (svg.nodeName !== "svg") return;
  box.replaceChildren(document.importNode(svg, true));
}

function entryPage() {
  const article = $("entry");
  const name = article.dataset.name;
  async function load() {
    const { status, ok, body } = await getJSON("/api/entries/" + encodeURIComponent(name));
    if (!ok) {
      article.replaceChildren(el("h1", {}, name), el("p", { class: "error", id: "error" },
        status === 404 ? `${body.error}: it was removed from the registry.` : body.error));
      $("graph").replaceChildren();
      return;
    }
    article.replaceChildren(...(body.kind === "crate" ? renderCrate(body) : renderEntry(body)).filter(Boolean));
    document.title = `${name} · fn registry`;
    await loadGraph();
  }
  onIndex(load);
  load();
}

function graphPage() {
  $("functions-only").addEventListener("change", loadGraph);
  onIndex(loadGraph);
  loadGraph();
}

document.addEventListener("DOMContentLoaded", () => {
  connect();
  loadStatus();
  const page = document.body.dataset.page;
  if (page === "search") searchPage();
  else if (page === "entry") entryPage();
  else if (page === "graph") graphPage();
});
