// A real browser against rt-server: headless Chromium's EventSource reads the
// stream (multi-line data, CRLF, named events), and when the server restarts it
// reconnects by itself, sends Last-Event-ID, and gets the documented `sse-reset`
// event, since the new server cannot replay what it missed.
//
// Run: NODE_PATH=<dir with playwright-core> node tests/browser/eventsource.cjs target/debug/rt-server
// (.ci/run installs Debian's chromium and playwright-core outside the repository.)

const common = require("./common.cjs");
const { stop, launch, run } = common;

const bin = process.argv[2];

function startServer(addr) {
  return common.startServer(bin, ["--addr", addr, "--quiet", "--retry-ms", "200", "--drain-secs", "2"]);
}

async function publish(addr, body, event) {
  const url = `http://${addr}/publish` + (event ? `?event=${event}` : "");
  const res = await fetch(url, { method: "POST", body });
  if (res.status !== 202) throw new Error(`publish answered ${res.status}`);
}

async function subscribers(addr, n) {
  const deadline = Date.now() + 15000;
  for (;;) {
    const stats = await (await fetch(`http://${addr}/stats`)).json();
    if (stats.subscribers === n) return stats;
    if (Date.now() > deadline) throw new Error(`subscribers stuck at ${stats.subscribers}, want ${n}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const state = (page, want) =>
  page.waitForFunction((w) => document.getElementById("state").textContent === w, want, { timeout: 15000 });
const items = (page, n) =>
  page.waitForFunction((n) => document.querySelectorAll("#events li").length >= n, n, { timeout: 15000 });

async function main() {
  let { p, addr } = await startServer("127.0.0.1:0");
  const browser = await launch();
  try {
    const page = await browser.newPage();
    await page.goto(`http://${addr}/`);
    await state(page, "open");
    await subscribers(addr, 1);
    await publish(addr, "line one\nline two");
    await publish(addr, "crlf\r\nhere", "note");
    await items(page, 2);

    // Restart the server on the same address: the stream ends, the browser
    // reconnects with Last-Event-ID: 2, which the new server never issued.
    await stop(p);
    ({ p } = await startServer(addr));
    await state(page, "open");
    const stats = await subscribers(addr, 1);
    await publish(addr, "after restart");
    await items(page, 4);

    const got = await page.$$eval("#events li", (lis) => lis.map((li) => li.textContent));
    const want = [
      "#1 line one\nline two",
      "#2 note: crlf\nhere",
      'reset {"last_event_id":"2","oldest_id":""}',
      "#1 after restart",
    ];
    const ok = JSON.stringify(got) === JSON.stringify(want) && stats.resets === 1;
    if (!ok) {
      throw new Error(`page shows ${JSON.stringify(got)}, want ${JSON.stringify(want)}; stats ${JSON.stringify(stats)}`);
    }
    console.log("browser EventSource: stream, named events, reconnect with Last-Event-ID and reset: ok");
  } finally {
    await browser.close();
    await stop(p);
  }
}

run(main);
