// Drives the console's patient and alarm-burden views in Debian's Chromium, headless, for
// tests/integration/test_console_views.py, and watches an alert left alone escalate.
// Usage: node views.mjs <console url> <reader key> <patient id> <left-alone patient>
//   <dir of the README's screenshots (`make screenshots`)> <dir of the other screenshots>
// Prints one JSON object of what it saw; exits 1 on a failed step (with the step's name).
import { launch } from "./browser.mjs";

const [url, readerKey, patientId, aloneId, shots, scratch] = process.argv.slice(2);
const seen = {};
const browser = await launch();
const charts = (page) => page.$$eval("#patient-charts figure", (figures) => figures.map((f) => ({
  caption: f.querySelector("figcaption").textContent,
  lines: f.querySelectorAll("path.line, circle.dot").length,
  label: f.querySelector("svg")?.getAttribute("aria-label") || null,
})));
let step = "sign in";
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(url);
  await page.fill("#key", readerKey);
  await page.click("#signin button[type=submit]");
  await page.waitForSelector(`#rows tr th a:text-is("${aloneId}")`);
  seen.escalated_before = await page.locator("#rows tr", { hasText: aloneId }).locator(".esc").count();

  step = "open the patient view from the board";
  await page.click(`#rows tr th a:text-is("${patientId}")`);
  await page.waitForSelector("#patient:not([hidden])");
  seen.hash = await page.evaluate(() => location.hash);
  seen.board_hidden = await page.isHidden("#board");
  seen.title = await page.textContent("#patient-title");
  await page.waitForSelector("#patient-status:has-text('Updated')", { timeout: 20000 });
  seen.charts_24h = await charts(page);
  seen.history = await page.$$eval("#patient-history tr", (rows) => rows.map((r) => r.textContent));
  seen.note_html = await page.$$eval("#patient-history q.note", (qs) => qs.map((q) => q.innerHTML));
  seen.devices = await page.$$eval("#patient-devices li", (items) => items.map((i) => i.textContent));
  seen.pressed_24h = await page.getAttribute("#patient-ranges button[data-range='24h']", "aria-pressed");
  await page.screenshot({ path: `${shots}/console-patient.png`, fullPage: true });

  step = "zoom to the last hour with the keyboard";
  await page.focus("#patient-ranges button[data-range='1h']");
  await page.keyboard.press("Enter");
  await page.waitForSelector("#patient-ranges button[data-range='1h'][aria-pressed='true']");
  await page.waitForSelector("#patient-status:has-text('Updated')", { timeout: 20000 });
  seen.charts_1h = await charts(page);

  step = "tablet width";
  await page.setViewportSize({ width: 800, height: 1100 });
  seen.tablet_outcome_visible = await page.isVisible("#patient-history td:nth-child(5)");
  seen.tablet_overflow = await page.evaluate(
    () => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  await page.screenshot({ path: `${scratch}/console-patient-tablet.png`, fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });

  step = "alarm burden";
  await page.click("nav#views a[href='#burden']");
  await page.waitForSelector("#burden-rows tr");
  seen.burden_rows = await page.$$eval("#burden-rows tr", (rows) =>
    rows.map((r) => [...r.children].map((c) => c.textContent)));
  seen.burden_summary = await page.textContent("#burden-summary");
  await page.screenshot({ path: `${shots}/console-burden.png`, fullPage: true });

  step = "back to the board: the alert left alone escalates";
  await page.goBack();
  await page.goBack();
  await page.waitForSelector("#board:not([hidden])");
  seen.patient_hidden_on_board = await page.isHidden("#patient");
  const alone = page.locator("#rows tr", { hasText: aloneId }).locator(".esc");
  await alone.first().waitFor({ timeout: 60000 });
  seen.escalated_text = await alone.first().textContent();
  await page.screenshot({ path: `${scratch}/console-escalated.png`, fullPage: true });

  step = "sign out";
  await page.click("#signout");
  seen.views_hidden_after_signout = await page.isHidden("#views")
    && await page.isHidden("#patient") && await page.isHidden("#burden");
  console.log(JSON.stringify(seen));
} catch (error) {
  console.log(JSON.stringify({ ...seen, failed_step: step, error: String(error) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
