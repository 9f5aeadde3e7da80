// Drives the console in Debian's Chromium, headless, for tests/integration/test_console.py.
// Usage: node drive.mjs <console url> <reader key> <alert id> <screenshot dir>
// Prints one JSON object of what it saw; exits 1 on a failed step (with the step's name).
import { launch } from "./browser.mjs";

const [url, readerKey, alertId, shots] = process.argv.slice(2);
const NOTE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script> called daughter';
const seen = {};
const browser = await launch();
let step = "open";
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const started = Date.now();
  await page.goto(url);
  seen.signin_visible = await page.isVisible("#signin");

  step = "wrong key";
  await page.fill("#key", "not-a-reader-key");
  await page.click("#signin button[type=submit]");
  await page.waitForSelector("#signin-error:not(:empty)");
  seen.wrong_key_error = await page.textContent("#signin-error");
  seen.wrong_key_board_hidden = await page.isHidden("#board");

  step = "sign in";
  await page.fill("#key", readerKey);
  await page.click("#signin button[type=submit]");
  await page.waitForSelector("#rows tr");
  seen.first_board_ms = Date.now() - started;
  seen.signin_hidden_after = await page.isHidden("#signin");
  seen.key_in_session_storage = await page.evaluate(() => !!sessionStorage.getItem("vitals.readerKey"));
  seen.key_in_local_storage = await page.evaluate(() => localStorage.length);
  seen.patients = await page.$$eval("#rows tr th", (cells) => cells.map((c) => c.textContent));
  seen.top_row_text = await page.textContent("#rows tr:first-child");
  await page.screenshot({ path: `${shots}/board.png`, fullPage: true });

  step = "acknowledge";
  await page.click("#rows tr:first-child button:has-text('Acknowledge')");
  await page.waitForSelector("#rows tr:first-child .ack");
  seen.ack_text = await page.textContent("#rows tr:first-child .ack");

  step = "outcome";
  const row = page.locator("#rows tr:first-child");
  await row.locator("select").first().selectOption("false_alarm");
  await row.locator("textarea").first().fill(NOTE);
  await row.locator("button:has-text('Record outcome')").first().click();
  await page.waitForFunction(
    (id) => !document.querySelector("#rows tr:first-child .ack"), alertId, { timeout: 10000 });
  seen.after_outcome_top_row = await page.textContent("#rows tr:first-child");
  seen.pwned = await page.evaluate(() => window.pwned || 0);
  await page.screenshot({ path: `${shots}/after-outcome.png`, fullPage: true });

  step = "refused action shown";
  seen.refusal = await page.evaluate(async (id) => {
    const answer = await fetch(`/v1/alerts/${id}/acknowledge`, { method: "POST",
      headers: { Authorization: `Bearer ${sessionStorage.getItem("vitals.readerKey")}` } });
    return answer.status;
  }, alertId);

  step = "sign out";
  await page.click("#signout");
  seen.signed_out = await page.isVisible("#signin");
  seen.key_after_signout = await page.evaluate(() => sessionStorage.getItem("vitals.readerKey"));
  console.log(JSON.stringify(seen));
} catch (error) {
  console.log(JSON.stringify({ ...seen, failed_step: step, error: String(error) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
