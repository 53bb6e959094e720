// A real browser against realtime-demo: three Chromium pages chat, two in
// room A and one in room B; a message said in A reaches the other page in A
// and not the page in B. The dashboard's SSE updates arrive; its drop button
// closes the stream, reopens it three seconds later from the last id, and the
// ids the page received are contiguous, with the missed ones replayed.
// Screenshots go to target/screenshots/demo-chat.png and demo-dashboard.png.
//
// Run: NODE_PATH=<dir with playwright-core> node tests/browser/demo.cjs target/debug/realtime-demo
// (.ci/run installs Debian's chromium and playwright-core outside the repository.)

const common = require("./common.cjs");
const { stop, launch, run } = common;
const fs = require("fs");
const path = require("path");

const bin = process.argv[2];
const shots = path.join("target", "screenshots");
const WAIT = { timeout: 15000 };

function startServer() {
  return common.startServer(bin, ["--addr", "127.0.0.1:0"]);
}

// A page of its own browser context (its own connection pool), connected as
// `name` and in `room`.
async function chatter(browser, addr, name, room) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 600 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  await page.goto(`http://${addr}/`);
  await page.fill("#name", name);
  await page.click("#connect");
  await page.waitForFunction((n) => document.getElementById("chat-state").textContent === `connected as ${n}`, name, WAIT);
  await page.fill("#room", room);
  await page.click("#join");
  await page.waitForFunction((r) => document.getElementById("current-room").textContent === r, room, WAIT);
  return { page, errors };
}

const said = (page, text) =>
  page.waitForFunction((t) => window.demo.messages.some((m) => m.from !== null && m.text === t), text, WAIT);
const texts = (page) => page.evaluate(() => window.demo.messages.filter((m) => m.from !== null).map((m) => m.text));

async function say(page, text) {
  await page.fill("#text", text);
  await page.click("#send");
}

async function main() {
  const { p, addr } = await startServer();
  const browser = await launch();
  try {
    const ana = await chatter(browser, addr, "ana", "A");
    const bob = await chatter(browser, addr, "bob", "A");
    const cy = await chatter(browser, addr, "cy", "B");

    // Who is here, on both pages of room A.
    for (const { page } of [ana, bob]) {
      await page.waitForFunction(() =>
        [...document.querySelectorAll("#members li")].map((li) => li.textContent).join(",") === "ana,bob", null, WAIT);
    }

    await say(ana.page, "hello from ana");
    await said(bob.page, "hello from ana");
    await say(bob.page, "hi ana!");
    await said(ana.page, "hi ana!");
    // Both messages were queued for room A before cy says anything: had cy
    // got one, it would be in its log before its own message.
    await say(cy.page, "hello from cy");
    await said(cy.page, "hello from cy");
    const cyGot = await texts(cy.page);
    if (JSON.stringify(cyGot) !== JSON.stringify(["hello from cy"])) {
      throw new Error(`the page in room B shows ${JSON.stringify(cyGot)}, want only its own message`);
    }
    const anaGot = await texts(ana.page);
    if (JSON.stringify(anaGot) !== JSON.stringify(["hello from ana", "hi ana!"])) {
      throw new Error(`ana's page shows ${JSON.stringify(anaGot)}`);
    }
    console.log("chat: a message in room A reached the other page in A and not the page in B: ok");

    // The dashboard: updates arrive, and count the three chat connections.
    const dash = ana.page;
    await dash.waitForFunction(() => window.demo.ids.length >= 2, null, WAIT);
    await dash.waitForFunction(() =>
      document.getElementById("ws-connections").textContent === "3" &&
      document.getElementById("rooms").textContent === "2", null, WAIT);
    const memory = await dash.textContent("#memory");
    if (!/MiB$/.test(memory)) throw new Error(`memory shows ${memory}`);

    // Drop the stream: it resumes from the last id, the missed events are
    // replayed, and then live ones follow.
    const before = await dash.evaluate(() => window.demo.ids.length);
    await dash.click("#drop");
    await dash.waitForFunction(() => window.demo.state.startsWith("dropped after #"), null, WAIT);
    await dash.waitForFunction(() => window.demo.state.startsWith("open, resumed after #"), null, WAIT);
    await dash.waitForFunction((n) => window.demo.ids.length >= n + 4, before, WAIT);
    const d = await dash.evaluate(() => window.demo);
    const contiguous = d.ids.every((id, i) => id === d.ids[0] + i);
    if (!contiguous || d.gaps.length !== 0 || d.resets !== 0) {
      throw new Error(`ids ${JSON.stringify(d.ids)}, gaps ${JSON.stringify(d.gaps)}, resets ${d.resets}`);
    }
    if (d.replayed.length < 1 || d.resumes !== 1) {
      throw new Error(`after a 3 s drop, replayed ${JSON.stringify(d.replayed)}, resumes ${d.resumes}`);
    }
    const summary = await dash.textContent("#id-summary");
    if (!summary.includes("no gap")) throw new Error(`the page says: ${summary}`);
    console.log(`dashboard: ${d.ids.length} events #${d.ids[0]}..#${d.ids[d.ids.length - 1]}, ` +
      `dropped and resumed, ${d.replayed.length} replayed, no gap: ok`);

    fs.mkdirSync(shots, { recursive: true });
    // The whole page of a chatter in room A after the resume: chat and dashboard.
    await dash.screenshot({ path: path.join(shots, "demo-chat.png"), fullPage: true });
    await dash.locator("#dashboard").screenshot({ path: path.join(shots, "demo-dashboard.png") });

    const errors = [...ana.errors, ...bob.errors, ...cy.errors];
    if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  } finally {
    await browser.close();
    await stop(p);
  }
}

run(main);
