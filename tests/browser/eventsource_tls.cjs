// A real browser against rt-server over TLS: headless Chromium opens ten
// EventSource streams on one page. Over HTTP/1.1 a browser holds at most six
// connections per host, so the seventh stream would wait forever; rt-server
// offers HTTP/2 by ALPN, and all ten share one connection and receive a
// published event. A WebSocket opened from the same page on the same listener
// (HTTP/1.1 by ALPN, wss://) echoes.
//
// Run: NODE_PATH=<dir with playwright-core> node tests/browser/eventsource_tls.cjs \
//        target/debug/rt-server cert.pem key.pem
// (.ci/run makes a self-signed certificate for 127.0.0.1 with openssl, and
// installs Debian's chromium and playwright-core outside the repository.)

const common = require("./common.cjs");
const { stop, launch, run } = common;

const [bin, cert, key] = process.argv.slice(2);
const STREAMS = 10;

function startServer() {
  return common.startServer(bin, ["--addr", "127.0.0.1:0", "--quiet", "--drain-secs", "2",
    "--tls-cert", cert, "--tls-key", key]);
}

async function main() {
  const { p, addr } = await startServer();
  const browser = await launch();
  try {
    // The certificate is self-signed, made for this run: accept it.
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    await page.goto(`https://${addr}/health`);
    const protocol = await page.evaluate(() => performance.getEntriesByType("navigation")[0].nextHopProtocol);
    if (protocol !== "h2") throw new Error(`the page came over ${protocol}, want h2`);

    await page.evaluate((n) => {
      window.opened = 0;
      window.got = new Array(n).fill(null);
      window.streams = [];
      for (let i = 0; i < n; i++) {
        const es = new EventSource("/events");
        es.onopen = () => { window.opened++; };
        es.onmessage = (e) => { window.got[i] = e.data; };
        window.streams.push(es);
      }
    }, STREAMS);
    await page.waitForFunction((n) => window.opened === n, STREAMS, { timeout: 15000 });
    // Every stream is subscribed once the server counts them (the page asks,
    // over the same HTTP/2 connection).
    await page.waitForFunction(async (n) => {
      const stats = await (await fetch("/stats")).json();
      return stats.subscribers === n;
    }, STREAMS, { timeout: 15000, polling: 50 });

    const status = await page.evaluate(async () =>
      (await fetch("/publish", { method: "POST", body: "to all ten" })).status);
    if (status !== 202) throw new Error(`publish answered ${status}`);
    await page.waitForFunction(() => window.got.every((d) => d === "to all ten"), null, { timeout: 15000 });

    const echoed = await page.evaluate(() => new Promise((resolve, reject) => {
      const ws = new WebSocket(`wss://${location.host}/echo`);
      ws.onopen = () => ws.send("hello over wss");
      ws.onmessage = (e) => { resolve(e.data); ws.close(); };
      ws.onerror = () => reject(new Error("WebSocket error"));
      setTimeout(() => reject(new Error("no echo in 15 s")), 15000);
    }));
    if (echoed !== "hello over wss") throw new Error(`echo was ${JSON.stringify(echoed)}`);
    // Still all ten, on HTTP/2, after the WebSocket came and went.
    const still = await page.evaluate(() => window.streams.filter((es) => es.readyState === EventSource.OPEN).length);
    if (still !== STREAMS) throw new Error(`${still} of ${STREAMS} streams open after the WebSocket`);
    console.log(`browser over TLS: page on ${protocol}, ${STREAMS} EventSource streams received the event, wss:// echoed: ok`);
  } finally {
    await browser.close();
    await stop(p);
  }
}

run(main);
