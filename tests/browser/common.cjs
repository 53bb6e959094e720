// What the browser tests share: starting a server binary that prints its
// address on its first stdout line, stopping it, launching Debian's Chromium
// with playwright-core, and running a test's main with a clear failure.

const { chromium } = require("playwright-core");
const { spawn } = require("child_process");
const readline = require("readline");

const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";

// Starts `bin args...`; resolves to { p, addr } once its first stdout line
// names http(s)://ADDR, rejects if it exits first or prints something else.
function startServer(bin, args) {
  return new Promise((resolve, reject) => {
    const p = spawn(bin, args, { stdio: ["ignore", "pipe", "inherit"] });
    const onExit = (code) => reject(new Error(`${bin} exited with ${code} before listening`));
    p.once("exit", onExit);
    readline.createInterface({ input: p.stdout }).once("line", (line) => {
      p.off("exit", onExit);
      const m = line.match(/https?:\/\/(\S+)/);
      m ? resolve({ p, addr: m[1] }) : reject(new Error(`unexpected first line: ${line}`));
    });
  });
}

// SIGTERM, then resolves when the process has exited (at once if it has).
function stop(p) {
  return new Promise((resolve) => {
    if (p.exitCode !== null || p.signalCode !== null) return resolve();
    p.once("exit", resolve);
    p.kill("SIGTERM");
  });
}

function launch() {
  return chromium.launch({
    executablePath: chromiumPath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

// Runs `main`; any failure is printed with its stack and exits 1.
function run(main) {
  main().catch((e) => {
    console.error(`browser test failed: ${e.stack || e}`);
    process.exit(1);
  });
}

module.exports = { startServer, stop, launch, run };
