// Drives the console's live board in Debian's Chromium, headless, for
// tests/integration/test_console_live.py, through a TCP proxy of its own between the
// browser and the read API so that the network can be cut and restored.
// Usage: node live.mjs <read API url> <reader key> <screenshot dir>
// Talks with the test by lines: prints {"step": ...} and reads the test's JSON answer on
// stdin; prints one last JSON object of what it saw (exit 1 on a failed step).
import net from "node:net";
import readline from "node:readline";
import { launch } from "./browser.mjs";

const [apiUrl, readerKey, shots] = process.argv.slice(2);
const api = new URL(apiUrl);
const answers = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function ask(step) {
  console.log(JSON.stringify({ step }));
  const { value, done } = await answers.next();
  if (done) throw new Error(`no answer to ${step}`);
  return JSON.parse(value);
}

// The network between the browser and the server: cut() drops every connection and stops
// listening (the browser's reconnects are refused), listen() takes the same port again.
const sockets = new Set();
let proxy = null;
let proxyPort = 0;
function listen() {
  return new Promise((resolve, reject) => {
    proxy = net.createServer((client) => {
      const upstream = net.connect(Number(api.port), api.hostname);
      const end = () => {
        for (const s of [client, upstream]) { s.destroy(); sockets.delete(s); }
      };
      for (const s of [client, upstream]) { sockets.add(s); s.on("error", end); s.on("close", end); }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    proxy.once("error", reject);
    proxy.listen(proxyPort, "127.0.0.1", () => { proxyPort = proxy.address().port; resolve(); });
  });
}
function cut() {
  return new Promise((resolve) => {
    proxy.close(() => resolve());
    for (const s of sockets) s.destroy();
    sockets.clear();
  });
}

const rowIds = (page) => page.$$eval("#rows tr", (trs) => trs.map((tr) => tr.dataset.patient));
const durations = (page, name) => page.evaluate(
  (n) => performance.getEntriesByName(n).map((e) => e.duration), name);

const seen = {};
const browser = await launch();
let step = "open";
try {
  await listen();
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(`http://127.0.0.1:${proxyPort}/console/`);
  seen.first_paint_ms = await page.evaluate(() => new Promise((resolve) => {
    new PerformanceObserver((list) => {
      const paint = list.getEntriesByName("first-contentful-paint")[0];
      if (paint) resolve(paint.startTime);
    }).observe({ type: "paint", buffered: true });
  }));

  step = "sign in";
  await page.fill("#key", readerKey);
  const signedIn = Date.now();
  await page.click("#signin button[type=submit]");
  await page.waitForSelector("#status:has-text('Live since')", { timeout: 20000 });
  seen.board_after_sign_in_ms = Date.now() - signedIn;
  seen.snapshot_render_ms = await durations(page, "board-snapshot");
  seen.rows_first = await rowIds(page);
  // When each alert's block first appears on the board (epoch ms, this machine's clock).
  await page.evaluate(() => {
    window.alertSeen = {};
    new MutationObserver(() => {
      const at = performance.timeOrigin + performance.now();
      for (const block of document.querySelectorAll("#rows [data-alert]")) {
        window.alertSeen[block.dataset.alert] ??= at;
      }
    }).observe(document.getElementById("rows"), { childList: true, subtree: true });
  });

  step = "live alerts";
  const published = await ask("publish");
  await page.waitForFunction((ids) => ids.every((id) => window.alertSeen[id]),
    published.alerts, { timeout: 60000 });
  await page.waitForSelector(`#rows tr[data-patient="${published.newcomer}"]`, { timeout: 20000 });
  seen.alert_seen_at = await page.evaluate(() => window.alertSeen);
  seen.delta_render_ms = await durations(page, "board-delta");
  seen.rows_live = await rowIds(page);
  seen.same_page = await page.evaluate(() => window.alertSeen !== undefined); // never reloaded
  await page.screenshot({ path: `${shots}/board-live.png` });

  step = "network cut";
  await cut();
  await page.waitForSelector("#status.lost", { timeout: 20000 });
  seen.lost_text = await page.textContent("#status");
  await page.screenshot({ path: `${shots}/reconnecting.png` });
  await page.waitForTimeout(2000);
  step = "network restored";
  await listen();
  await page.waitForSelector("#status:has-text('Live since')", { timeout: 30000 });
  seen.rows_after_reconnect = await rowIds(page);
  seen.alerts_after_reconnect = await page.$$eval("#rows [data-alert]",
    (blocks) => blocks.map((b) => b.dataset.alert));

  step = "revoked";
  await ask("revoke");
  await page.waitForSelector("#signin:not([hidden])", { timeout: 20000 });
  seen.revoked_error = await page.textContent("#signin-error");
  seen.rows_after_revoke = await page.$$eval("#rows tr", (trs) => trs.length);
  seen.key_after_revoke = await page.evaluate(() => sessionStorage.getItem("vitals.readerKey"));
  console.log(JSON.stringify({ done: true, ...seen }));
} catch (error) {
  console.log(JSON.stringify({ ...seen, failed_step: step, error: String(error) }));
  process.exitCode = 1;
} finally {
  await browser.close();
  await cut();
  process.stdin.destroy();
}
